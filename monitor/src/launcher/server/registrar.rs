//! The registrar: what the launcher server knows (its configuration, the
//! job table), and how a placed peer's job is settled from its hello (or
//! its silence). Placing the peer is in [`super::place`].
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use super::place::Placed;
use crate::{
    jobs::{JobKey, JobMeta, JobTable, discovery::Discovery, spares::SpareDemand, task_cgroup},
    launcher::{
        adopt::AdoptRules,
        hello::{Hello, HelloLimits},
        peer::Peer,
        stats::RegistrationStats,
        trust::TrustList,
    },
    system::{log_every::LogEvery, token_bucket::Rate, wake::Wake},
};

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
    pub(super) config: LauncherConfig,
    pub(super) table: Arc<Mutex<JobTable>>,
    pub(super) stats: Arc<RegistrationStats>,
    pub(super) wake: Arc<Wake>,
    pub(super) sequence: AtomicU64,
    /// Registrations refused for the limits they would leave.
    pub(super) limit_refusals: Mutex<LogEvery>,
    /// Told when a spare task cgroup is taken.
    pub(super) spares: Arc<SpareDemand>,
}

impl Registrar {
    pub fn new(
        config: LauncherConfig,
        table: Arc<Mutex<JobTable>>,
        stats: Arc<RegistrationStats>,
        wake: Arc<Wake>,
        spares: Arc<SpareDemand>,
    ) -> Self {
        Self {
            config,
            table,
            stats,
            wake,
            // Unique task directory names across daemon restarts.
            sequence: AtomicU64::new(task_cgroup::first_sequence()),
            limit_refusals: Mutex::new(LogEvery::new(REFUSALS_LOG_EVERY)),
            spares,
        }
    }

    pub(super) fn table(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles the job's id and metadata from a hello (or silence).
    pub(super) fn settle(
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

    /// Takes a hello `line` read as the peer was placed (see
    /// `connection::early_hello`): parsed, and the job settled by it, or
    /// under the silent id when it is refused. Blocking, as [`Self::settle`].
    pub(super) fn take_hello(&self, peer: &Peer, placed: &Placed, line: &[u8]) -> HelloTaken {
        match Hello::parse_within(line, peer.uid == 0, &self.config.hello_limits) {
            Ok(hello) => HelloTaken {
                said: true,
                refusal: None,
                settled: self.settle(peer, placed, Some(&hello)),
            },
            Err(e) => self.take_silence(peer, placed, Some(e.to_string())),
        }
    }

    /// No hello taken (none came, or `refusal` says why one was refused):
    /// the job is settled under its silent id, still measured.
    pub(super) fn take_silence(
        &self,
        peer: &Peer,
        placed: &Placed,
        refusal: Option<String>,
    ) -> HelloTaken {
        HelloTaken {
            said: false,
            refusal,
            settled: self.settle(peer, placed, None),
        }
    }

    /// The settled id goes on the task cgroup too, for a restart that
    /// comes before the next save of the registry.
    fn record_settled(&self, placed: &Placed, key: &JobKey) {
        if let Some(dir) = &placed.task_dir {
            task_cgroup::record(dir, key);
        }
    }
}

/// What [`Registrar::take_hello`] made of a hello.
pub(super) struct HelloTaken {
    /// A hello was taken (not refused).
    pub(super) said: bool,
    pub(super) refusal: Option<String>,
    pub(super) settled: Result<JobKey, String>,
}

fn uid_of(user: &str) -> Option<u32> {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// How often refusals for the limits a move would leave are logged.
pub(super) const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);
