//! Serving the launcher socket: identify, check trust, place the peer at
//! accept (before it can fork unseen), then settle the job's id from an
//! optional hello.
use std::{
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use super::{
    adopt::{self, AdoptRules},
    hello::{Hello, HelloLimits, MAX_HELLO, Reply},
    limits::{self, Limit, LimitsError},
    peer::{Peer, PeerError},
    placement,
    rate::RegistrationRate,
    stats::{Outcome, RegistrationStats},
    trust::TrustList,
};
use crate::{
    jobs::{
        JobKey, JobMeta, JobTable,
        discovery::{self, Discovery},
        task_cgroup,
    },
    system::{log_every::LogEvery, shares::Shares, token_bucket::Rate, wake::Wake},
};

/// Connections handled at once; more are answered "busy" and closed.
const MAX_CONNECTIONS: usize = 4096;

pub struct LauncherConfig {
    pub trust: TrustList,
    pub adopt: AdoptRules,
    /// Resource managers' job layouts: a launcher inside such a job joins it.
    pub discovery: Arc<Discovery>,
    pub max_jobs_per_user: usize,
    /// Launcher connections a non-root uid may hold at once.
    pub max_connections_per_user: usize,
    /// Connections a non-root uid may open, per second and in a burst.
    pub registration_rate: Rate,
    pub hello_limits: HelloLimits,
    pub hello_timeout: Duration,
    pub mount: PathBuf,
    pub root_dir: PathBuf,
    pub root_in_hierarchy: String,
}

pub struct Registrar {
    config: LauncherConfig,
    table: Arc<Mutex<JobTable>>,
    stats: Arc<RegistrationStats>,
    wake: Arc<Wake>,
    sequence: AtomicU64,
    /// Registrations refused for the limits they would leave.
    limit_refusals: Mutex<LogEvery>,
}

#[derive(Debug, Error)]
enum PlaceError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("uid {uid} has {limit} registered tasks running already (--jobs.max-per-user)")]
    OverLimit { uid: u32, limit: usize },
    #[error(
        "pid {pid} is bound by {limit}: moving it into a task cgroup would leave that limit, so it is not registered (run it in a cgroup without limits, or have --adopt.cgroup adopt its cgroup)"
    )]
    WouldLeaveLimit { pid: i32, limit: Limit },
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error("making the job cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a peer was put.
struct Placed {
    cgroup_id: u64,
    path: String,
    /// The peer is inside a resource manager's job the daemon found: it
    /// joins that job (name, labels) instead of making one.
    joined: Option<JobKey>,
    /// The task cgroup the daemon made for it (not an adopted one).
    task_dir: Option<PathBuf>,
}

impl Registrar {
    pub fn new(
        config: LauncherConfig,
        table: Arc<Mutex<JobTable>>,
        stats: Arc<RegistrationStats>,
        wake: Arc<Wake>,
    ) -> Self {
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            config,
            table,
            stats,
            wake,
            // Unique task directory names across daemon restarts.
            sequence: AtomicU64::new(start),
            limit_refusals: Mutex::new(LogEvery::new(REFUSALS_LOG_EVERY)),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the peer in a new task cgroup of a provisional job (or adopts
    /// its resource manager's cgroup). Blocking: cgroupfs and /proc work.
    fn place(
        &self,
        peer: &Peer,
        provisional: &JobKey,
        meta: JobMeta,
    ) -> Result<Placed, PlaceError> {
        let current = peer.cgroup()?;
        if let Some(placed) = self.join_discovered(peer, &current)? {
            return Ok(placed);
        }
        let dir = JobTable::dir(&self.config.mount, &current);
        if self.config.adopt.adopts(&current) && adopt::manager_owned(&self.config.mount, &dir) {
            let id = std::fs::metadata(&dir)
                .map_err(|source| PlaceError::Cgroup { path: dir, source })?
                .ino();
            let mut table = self.table();
            if let Some(key) = table.job_of_cgroup(id) {
                // Adopted already (a second launcher in the same step): it
                // joins that job. Re-pointing the cgroup at a new job would
                // leave the first running with no cgroup for ever.
                return Ok(Placed {
                    cgroup_id: id,
                    path: current,
                    joined: Some(key),
                    task_dir: None,
                });
            }
            table.register_job(provisional, meta, &current, SystemTime::now());
            table.adopt_cgroup(id, &current, provisional);
            drop(table);
            self.wake.wake();
            return Ok(Placed {
                cgroup_id: id,
                path: current,
                joined: None,
                task_dir: None,
            });
        }
        self.check_limits(peer, &current)?;
        let reserved = {
            let mut table = self.table();
            let limit = self.config.max_jobs_per_user;
            if peer.uid != 0 && table.task_cgroups_of(peer.uid) >= limit {
                return Err(PlaceError::OverLimit {
                    uid: peer.uid,
                    limit,
                });
            }
            table.register_job(provisional, meta, "", SystemTime::now());
            // Reserved under the lock of the check: concurrent registrations
            // of one uid cannot all pass it before any counts.
            let reserved = self.task_cgroup_name(peer);
            table.expect_cgroup(&self.task_cgroup_path(&reserved), provisional);
            reserved
        };
        let (id, path, dir) = match self.make_task_cgroup(provisional, reserved) {
            Ok(made) => made,
            Err(e) => {
                self.table().abandon(provisional);
                return Err(e);
            }
        };
        let source = JobTable::dir(&self.config.mount, &current);
        let moved = placement::move_tree(peer.pid, peer.pidfd(), (&current, &source), &dir);
        // Armed whatever happened: an empty task cgroup is removed at the
        // next sample like any other.
        self.table().arm(id);
        match moved {
            Ok(count) => log::debug!("moved {count} processes of pid {} into {path}", peer.pid),
            Err(e) => {
                // The job never got going (the peer exited, most likely):
                // settle it under its silent id so it ends like any other,
                // instead of lingering unseen.
                let _ = self.settle(
                    peer,
                    &Placed {
                        cgroup_id: id,
                        path: path.clone(),
                        joined: None,
                        task_dir: Some(dir.clone()),
                    },
                    None,
                );
                if e.raw_os_error() == Some(libc::ESRCH) {
                    return Err(PeerError::Gone.into());
                }
                return Err(PlaceError::Cgroup {
                    path: dir,
                    source: e,
                });
            }
        }
        Ok(Placed {
            cgroup_id: id,
            path,
            joined: None,
            task_dir: Some(dir),
        })
    }

    /// Refuses a move that would take the peer out of a limit (see
    /// [`limits`]): a process never leaves a limit by registering.
    fn check_limits(&self, peer: &Peer, current: &str) -> Result<(), PlaceError> {
        let Some(limit) =
            limits::left_by_move(&self.config.mount, current, &self.config.root_in_hierarchy)?
        else {
            return Ok(());
        };
        let due = self
            .limit_refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(1, std::time::Instant::now());
        if let Some(since) = due {
            log::warn!(
                "launcher refused: pid {} (uid {}) is bound by {limit}, which a task cgroup would leave ({since} such refusals since the last such line)",
                peer.pid,
                peer.uid
            );
        }
        Err(PlaceError::WouldLeaveLimit {
            pid: peer.pid,
            limit,
        })
    }

    /// The resource manager's job (found by discovery) the peer runs in,
    /// by its v2 cgroup or its cgroup in the watched v1 hierarchy.
    fn join_discovered(&self, peer: &Peer, v2: &str) -> Result<Option<Placed>, PlaceError> {
        let v1 = match self.config.discovery.v1() {
            Some(v1) => peer
                .v1_cgroup(&v1.controller)?
                .map(|path| discovery::v1_table_path(&v1.controller, &path)),
            None => None,
        };
        let table = self.table();
        let found = table.discovered_job_containing(v2).or_else(|| {
            v1.as_deref()
                .and_then(|p| table.discovered_job_containing(p))
        });
        Ok(found.map(|(cgroup_id, path, key)| Placed {
            cgroup_id,
            path,
            joined: Some(key),
            task_dir: None,
        }))
    }

    /// A fresh task cgroup name for `peer`.
    fn task_cgroup_name(&self, peer: &Peer) -> String {
        task_cgroup::name(peer.pid, self.sequence.fetch_add(1, Ordering::Relaxed))
    }

    fn task_cgroup_path(&self, name: &str) -> String {
        format!(
            "{}/{name}",
            self.config.root_in_hierarchy.trim_end_matches('/')
        )
    }

    /// Makes the task cgroup reserved as `name` (expected for `key`), or
    /// the next free name if that one exists.
    fn make_task_cgroup(
        &self,
        key: &JobKey,
        mut name: String,
    ) -> Result<(u64, String, PathBuf), PlaceError> {
        loop {
            let path = self.task_cgroup_path(&name);
            let dir = self.config.root_dir.join(&name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // The reservation moves to the next name in one step.
                    let next = format!("{name}-{}", self.sequence.fetch_add(1, Ordering::Relaxed));
                    let mut table = self.table();
                    table.made_cgroup(&path, None);
                    table.expect_cgroup(&self.task_cgroup_path(&next), key);
                    name = next;
                    continue;
                }
                Err(source) => {
                    self.table().made_cgroup(&path, None);
                    return Err(PlaceError::Cgroup { path: dir, source });
                }
            }
            let id = match std::fs::metadata(&dir) {
                Ok(metadata) => metadata.ino(),
                Err(source) => {
                    self.table().made_cgroup(&path, None);
                    let _ = std::fs::remove_dir(&dir);
                    return Err(PlaceError::Cgroup { path: dir, source });
                }
            };
            task_cgroup::record(&dir, key);
            self.table().made_cgroup(&path, Some(id));
            return Ok((id, path, dir));
        }
    }

    /// Settles the job's id and metadata from a hello (or silence).
    fn settle(
        &self,
        peer: &Peer,
        placed: &Placed,
        hello: Option<&Hello>,
    ) -> Result<JobKey, String> {
        let launcher = peer.exe_name();
        if let Some(key) = &placed.joined {
            // The resource manager's job id stands; the launcher adds its
            // name and labels to it.
            let meta = JobMeta {
                name: hello.and_then(|h| h.name.clone()).unwrap_or_default(),
                user: None,
                labels: hello.map(|h| h.labels.clone()).unwrap_or_default(),
                launcher,
            };
            self.table().join(key, meta);
            return Ok(key.clone());
        }
        let silent_id = format!("{launcher}_{}", peer.pid);
        let Some(hello) = hello else {
            let key = JobKey {
                uid: peer.uid,
                jobid: silent_id,
            };
            let meta = JobMeta {
                launcher,
                ..Default::default()
            };
            self.table().settle(placed.cgroup_id, &key, meta);
            self.record_settled(placed, &key);
            return Ok(key);
        };
        let uid = match &hello.user {
            Some(user) => uid_of(user).ok_or_else(|| format!("unknown user {user:?}"))?,
            None => peer.uid,
        };
        let key = JobKey {
            uid,
            jobid: hello.job_id.clone().unwrap_or(silent_id),
        };
        let meta = JobMeta {
            name: hello.name.clone().unwrap_or_default(),
            user: hello.user.clone(),
            labels: hello.labels.clone(),
            launcher,
        };
        self.table().settle(placed.cgroup_id, &key, meta);
        self.record_settled(placed, &key);
        Ok(key)
    }

    /// The settled id goes on the task cgroup too, for a restart that
    /// comes before the next save of the registry.
    fn record_settled(&self, placed: &Placed, key: &JobKey) {
        if let Some(dir) = &placed.task_dir {
            task_cgroup::record(dir, key);
        }
    }
}

fn uid_of(user: &str) -> Option<u32> {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// How often refusals of a uid over its share are logged (with their count).
const OVER_SHARE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often refusals for the limits a move would leave are logged.
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);

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
                            "launcher connections refused: uid {uid} (and {count} refusals in all since the last such line) over its share of {}",
                            shares.per_holder()
                        );
                    }
                    refuse(
                        stream,
                        format!(
                            "uid {uid} holds {} launcher connections already (--socket.max-connections-per-user)",
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

async fn handle(mut stream: UnixStream, registrar: &Arc<Registrar>) {
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
            "untrusted launcher refused: pid {} uid {} gid {} runs {:?} (as its mount namespace names it), which is not a trusted file",
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
