//! One launcher connection: identify and check the peer, place it, read
//! its hello (if any) and answer it; a silent peer's connection is held
//! until it closes or the peer exits.
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use super::{
    place::{PlaceError, Placed},
    registrar::{HelloTaken, Registrar},
};
use crate::{
    jobs::{JobKey, JobMeta},
    launcher::{
        hello::{MAX_HELLO, Reply},
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
    // A duplicate of the socket for the blocking task: it reads a hello
    // already sent there (see `early_hello`), and owns what it reads from.
    let early_reader = stream.as_fd().try_clone_to_owned().ok();
    let (peer, placed, early) = {
        let registrar = registrar.clone();
        match tokio::task::spawn_blocking(move || {
            let placed = registrar.place(&peer, &provisional, meta);
            let early = match (&placed, &early_reader) {
                (Ok(placed), Some(reader)) => {
                    early_hello(reader).map(|line| registrar.take_hello(&peer, placed, &line))
                }
                _ => None,
            };
            (peer, placed, early)
        })
        .await
        {
            Ok((peer, Ok(placed), early)) => (peer, placed, early),
            Ok((_, Err(PlaceError::Peer(PeerError::Gone)), _)) => return Outcome::Exited,
            Ok((_, Err(e), _)) => {
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

    let (peer, placed, taken) = match early {
        Some(taken) => (peer, placed, taken),
        None => {
            let read = read_hello(stream, registrar.config.hello_timeout).await;
            let Some(taken) = take_off_workers(registrar, peer, placed, read).await else {
                return Outcome::Error;
            };
            taken
        }
    };
    let HelloTaken {
        said,
        refusal,
        settled,
    } = taken;
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
            let registrar = registrar.clone();
            let _ = off_workers(move || registrar.settle(&peer, &placed, None)).await;
            reply(stream, &Reply::error(message)).await;
            Outcome::Invalid
        }
        (false, None, _) => {
            *held = Some(peer);
            Outcome::Silent
        }
    }
}

/// A hello line the launcher has sent already (most send it as they
/// connect), read without waiting: the blocking task that placed the peer
/// then settles it too, one hand-over between threads fewer for each
/// registration (each one a wait for a CPU on a busy node). Nothing is
/// read unless a whole line is there; otherwise the async side reads it.
fn early_hello(socket: &OwnedFd) -> Option<Vec<u8>> {
    let mut buffer = [0u8; MAX_HELLO];
    let peeked = recv(socket, &mut buffer, libc::MSG_PEEK)?;
    let end = buffer.get(..peeked)?.iter().position(|&b| b == b'\n')?;
    // The line and its newline, no more: what follows is the peer's.
    let mut line = vec![0u8; end + 1];
    let read = recv(socket, &mut line, 0)?;
    (read == end + 1).then(|| {
        line.truncate(end);
        line
    })
}

/// recv(2) without waiting; None on an error or nothing there.
fn recv(socket: &OwnedFd, buffer: &mut [u8], flags: libc::c_int) -> Option<usize> {
    // SAFETY: a buffer of the length given, and a socket this owns.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(read).ok().filter(|n| *n > 0)
}

/// What the async side read of the hello, taken on the blocking pool (see
/// [`off_workers`]). A hello that cannot be taken still leaves the job
/// measured, under its silent id: nothing is lost.
async fn take_off_workers(
    registrar: &Arc<Registrar>,
    peer: Peer,
    placed: Placed,
    read: HelloRead,
) -> Option<(Peer, Placed, HelloTaken)> {
    let registrar = registrar.clone();
    off_workers(move || {
        let taken = match read {
            HelloRead::Line(line) => registrar.take_hello(&peer, &placed, &line),
            HelloRead::TooLong => registrar.take_silence(
                &peer,
                &placed,
                Some(format!("hello longer than {MAX_HELLO} bytes")),
            ),
            HelloRead::Silent | HelloRead::Closed => registrar.take_silence(&peer, &placed, None),
        };
        (peer, placed, taken)
    })
    .await
}

/// `work` on the blocking pool: settling takes the job table's lock,
/// which a sample holds for milliseconds, and may ask NSS for a user;
/// neither may stall the async workers that serve the sockets. None if
/// it panicked (logged).
async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work)
        .await
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

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::unix::net::UnixStream as StdStream};

    use super::*;

    fn reader(stream: &StdStream) -> OwnedFd {
        stream.as_fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn a_whole_hello_line_is_read_and_what_follows_left() {
        let (mut launcher, daemon) = StdStream::pair().unwrap();
        launcher.write_all(b"{\"job_id\":\"42\"}\nmore").unwrap();
        assert_eq!(
            early_hello(&reader(&daemon)).as_deref(),
            Some(&b"{\"job_id\":\"42\"}"[..])
        );
        let mut rest = [0u8; 16];
        let read = recv(&reader(&daemon), &mut rest, 0);
        assert_eq!(read.map(|n| &rest[..n]), Some(&b"more"[..]));
    }

    #[test]
    fn nothing_is_read_without_a_whole_line() {
        let (mut launcher, daemon) = StdStream::pair().unwrap();
        assert_eq!(early_hello(&reader(&daemon)), None);
        launcher.write_all(b"{\"job_id\":").unwrap();
        assert_eq!(early_hello(&reader(&daemon)), None);
        // Left for the async side to read.
        let mut rest = [0u8; 16];
        let read = recv(&reader(&daemon), &mut rest, 0);
        assert_eq!(read.map(|n| &rest[..n]), Some(&b"{\"job_id\":"[..]));
        // A line longer than a hello may be is not taken here either.
        launcher.write_all(&vec![b'x'; MAX_HELLO]).unwrap();
        launcher.write_all(b"\n").unwrap();
        assert_eq!(early_hello(&reader(&daemon)), None);
    }
}
