//! Serving the launcher socket: identify, check trust, place the peer at
//! accept (before it can fork unseen), then settle the job's id from an
//! optional hello.
//!
//! Here the accept loop; [`connection`] serves each connection,
//! [`place`] puts the peer in a cgroup, [`registrar`] settles its job.
mod connection;
mod place;
mod registrar;

use std::{sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use self::connection::handle;
pub use self::registrar::{LauncherConfig, Registrar};
use super::{hello::Reply, rate::RegistrationRate, stats::Outcome};
use crate::system::{log_every::LogEvery, shares::Shares};

/// Connections handled at once; more are answered "busy" and closed.
const MAX_CONNECTIONS: usize = 4096;

/// How often refusals of a uid over its share are logged (with their count).
const OVER_SHARE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts launcher connections until the runtime shuts down.
pub async fn serve(listener: UnixListener, registrar: Arc<Registrar>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Checked before a global slot is taken: no uid can hold them all.
    let shares = Shares::<u32>::new(registrar.config.max_connections_per_user);
    let mut over_share = LogEvery::new(OVER_SHARE_LOG_EVERY);
    // Checked first of all: a refused connection costs no share, no
    // identification, no cgroup.
    let mut rate = RegistrationRate::new(registrar.config.registration_rate);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accepting a launcher connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = stream
            .peer_cred()
            .map(|cred| cred.uid())
            .unwrap_or(u32::MAX);
        if let Some(refusal) = rate.refusal(uid, std::time::Instant::now()) {
            registrar.stats.count(Outcome::RateLimited);
            refuse(stream, refusal);
            continue;
        }
        let share = if uid == 0 {
            None
        } else {
            match shares.take(uid) {
                Some(share) => Some(share),
                None => {
                    registrar.stats.count(Outcome::OverLimit);
                    if let Some(count) = over_share.note(1, std::time::Instant::now()) {
                        log::warn!(
                            "launcher connections refused: uid {uid} (and {count} refusals in \
                             all since the last such line) over its share of {}",
                            shares.per_holder()
                        );
                    }
                    refuse(
                        stream,
                        format!(
                            "uid {uid} holds {} launcher connections already \
                             (--socket.max-connections-per-user)",
                            shares.per_holder()
                        ),
                    );
                    continue;
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream, "daemon busy: too many launcher connections".into());
            continue;
        };
        let registrar = registrar.clone();
        tokio::spawn(async move {
            handle(stream, &registrar).await;
            drop((permit, share));
        });
    }
}

/// Answers a connection refused at accept with its error line, off the
/// accept loop, and closes it.
fn refuse(stream: UnixStream, message: String) {
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream
            .write_all(Reply::error(message).line().as_bytes())
            .await;
    });
}
