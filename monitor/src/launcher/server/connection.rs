//! One launcher connection: identify and check the peer, place it, read
//! its hello (if any) and answer it; a silent peer's connection is held
//! until it closes or the peer exits.
use std::{os::fd::AsFd, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use super::{
    place::{PlaceError, Placed},
    registrar::Registrar,
};
use crate::{
    jobs::{JobKey, JobMeta},
    launcher::{
        hello::{Hello, MAX_HELLO, Reply},
        peer::{Peer, PeerError},
        stats::Outcome,
    },
};

pub(super) async fn handle(mut stream: UnixStream, registrar: &Arc<Registrar>) {
    let mut held = None;
    let outcome = register(&mut stream, registrar, &mut held).await;
    // Counted when settled, not when the peer hangs up (which for a silent
    // Apptainer starter is when its container ends).
    registrar.stats.count(outcome);
    if outcome == Outcome::Silent {
        // Apptainer keeps the connection open while its container runs.
        // Held until it closes or the peer that made it exits (it may have
        // passed the socket on to a process that never closes it): a
        // socket and a pidfd each.
        let exited = async {
            match held {
                Some(peer) => peer.exit().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait_for_close(&mut stream) => {}
            () = exited => {}
        }
    }
}

async fn register(
    stream: &mut UnixStream,
    registrar: &Arc<Registrar>,
    held: &mut Option<Peer>,
) -> Outcome {
    let peer = match Peer::identify(stream.as_fd()) {
        Ok(peer) => peer,
        Err(PeerError::Gone) => return Outcome::Exited,
        Err(e) => {
            log::warn!("launcher connection: {e}");
            reply(stream, &Reply::error(&e)).await;
            return Outcome::Error;
        }
    };
    if registrar.config.trust.trusted_path(peer.exe_file).is_none() {
        // The path is the peer's view (see trust.rs): logged, not believed.
        log::warn!(
            "untrusted launcher refused: pid {} uid {} gid {} runs {:?} (as its mount namespace \
             names it), which is not a trusted file",
            peer.pid,
            peer.uid,
            peer.gid,
            peer.exe
        );
        reply(
            stream,
            &Reply::error(format!(
                "untrusted launcher: {:?} is not a trusted file",
                peer.exe
            )),
        )
        .await;
        return Outcome::Untrusted;
    }
    let provisional = JobKey {
        uid: peer.uid,
        jobid: format!("{}_{}", peer.exe_name(), peer.pid),
    };
    let meta = JobMeta {
        launcher: peer.exe_name(),
        ..Default::default()
    };
    let (peer, placed) = {
        let registrar = registrar.clone();
        match tokio::task::spawn_blocking(move || {
            let placed = registrar.place(&peer, &provisional, meta);
            (peer, placed)
        })
        .await
        {
            Ok((peer, Ok(placed))) => (peer, placed),
            Ok((_, Err(PlaceError::Peer(PeerError::Gone)))) => return Outcome::Exited,
            Ok((_, Err(e))) => {
                let outcome = match e {
                    PlaceError::OverLimit { .. } => Outcome::OverLimit,
                    PlaceError::WouldLeaveLimit { .. } => Outcome::CgroupLimits,
                    _ => Outcome::Error,
                };
                if outcome != Outcome::CgroupLimits {
                    // Those are logged at most every REFUSALS_LOG_EVERY.
                    log::warn!("registering a launcher: {e}");
                }
                reply(stream, &Reply::error(&e)).await;
                return outcome;
            }
            Err(e) => {
                log::error!("registration task failed: {e}");
                return Outcome::Error;
            }
        }
    };

    // A hello that cannot be taken still leaves the job measured, under
    // its silent id: nothing is lost.
    let (hello, refusal) = match read_hello(stream, registrar.config.hello_timeout).await {
        HelloRead::Line(line) => {
            match Hello::parse_within(&line, peer.uid == 0, &registrar.config.hello_limits) {
                Ok(hello) => (Some(hello), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        HelloRead::TooLong => (None, Some(format!("hello longer than {MAX_HELLO} bytes"))),
        HelloRead::Silent | HelloRead::Closed => (None, None),
    };
    let said = hello.is_some();
    let Some((peer, placed, settled)) = settle_off_workers(registrar, peer, placed, hello).await
    else {
        return Outcome::Error;
    };
    match (said, refusal, settled) {
        (_, Some(refusal), _) => {
            reply(stream, &Reply::error(refusal)).await;
            Outcome::Invalid
        }
        (true, None, Ok(key)) => {
            reply(stream, &Reply::ok(&key.jobid, &placed.path)).await;
            Outcome::Ok
        }
        (true, None, Err(message)) => {
            let _ = settle_off_workers(registrar, peer, placed, None).await;
            reply(stream, &Reply::error(message)).await;
            Outcome::Invalid
        }
        (false, None, _) => {
            *held = Some(peer);
            Outcome::Silent
        }
    }
}

/// [`Registrar::settle`] on the blocking pool: it takes the job table's
/// lock, which a sample holds for milliseconds, and may ask NSS for a
/// user; neither may stall the async workers that serve the sockets.
async fn settle_off_workers(
    registrar: &Arc<Registrar>,
    peer: Peer,
    placed: Placed,
    hello: Option<Hello>,
) -> Option<(Peer, Placed, Result<JobKey, String>)> {
    let registrar = registrar.clone();
    let settled = tokio::task::spawn_blocking(move || {
        let settled = registrar.settle(&peer, &placed, hello.as_ref());
        (peer, placed, settled)
    })
    .await;
    settled
        .inspect_err(|e| log::error!("settling a registration failed: {e}"))
        .ok()
}

enum HelloRead {
    Line(Vec<u8>),
    TooLong,
    /// Nothing within the deadline.
    Silent,
    /// Closed without a complete line.
    Closed,
}

async fn read_hello(stream: &mut UnixStream, timeout: Duration) -> HelloRead {
    let mut line = Vec::with_capacity(256);
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                // A last line without its newline still counts.
                Ok(0) if !line.is_empty() => return HelloRead::Line(std::mem::take(&mut line)),
                Ok(0) | Err(_) => return HelloRead::Closed,
                Ok(n) => {
                    let chunk = &buf[..n];
                    if let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                        line.extend_from_slice(&chunk[..end]);
                        return if line.len() < MAX_HELLO {
                            HelloRead::Line(std::mem::take(&mut line))
                        } else {
                            HelloRead::TooLong
                        };
                    }
                    line.extend_from_slice(chunk);
                    if line.len() >= MAX_HELLO {
                        return HelloRead::TooLong;
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(HelloRead::Silent)
}

async fn wait_for_close(stream: &mut UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn reply(stream: &mut UnixStream, reply: &Reply) {
    // The peer may be gone already: nothing to do about it.
    let _ = stream.write_all(reply.line().as_bytes()).await;
}
