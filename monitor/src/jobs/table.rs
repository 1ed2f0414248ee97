//! The job table: cgroup ids to jobs, live and finished jobs, and how
//! per-cgroup counters roll up into a job.
//!
//! A job is either registered by a launcher over the socket (identified by
//! the peer's uid and the job id it claims, one cgroup per registering task,
//! or the resource manager's cgroup it was adopted in), or a directory made
//! by hand directly under the monitored root (named by the directory, owned
//! by the directory's owner), or a resource manager's job directory a
//! discovery layout matches (named and owned as the layout says). Cgroups
//! below a known cgroup join its job.
//! A removed cgroup keeps its entry until its final values are read (see
//! [`JobTable::finalizable`]); a job is finished when its last cgroup is.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use monitor_common::CgroupCounters;

use super::{
    discovery::{self, Discovery},
    registry::{Registry, SavedCgroup, SavedJob},
};
use crate::system::{
    cgroupfs::job_of,
    ids::{IdMap, IdSet},
    time::{from_unix_seconds, unix_seconds},
};

/// Labels a discovered job takes from the launchers that join it, in all.
const MAX_JOINED_LABELS: usize = 32;

/// How long after a cgroup's removal its counters are read for the last
/// time: the last task's final switch-out can come just after the rmdir.
pub const FINAL_READ_GRACE: Duration = Duration::from_millis(50);

/// Jobs are per uid: two users' job "42" are two jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub uid: u32,
    pub jobid: String,
}

/// What a launcher said about its job (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMeta {
    pub name: String,
    /// The user name, when a root launcher set it.
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Basename of the executable that registered the job.
    pub launcher: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A directory made under the monitored root by someone else, or a
    /// resource manager's job directory (see [`super::discovery`]).
    Directory,
    /// Registered over the launcher socket.
    Registered,
}

#[derive(Debug, Clone)]
struct CgroupEntry {
    job: JobKey,
    /// Path in the hierarchy, e.g. `/monitor.slice/task-42`.
    path: String,
    removed_at: Option<Instant>,
    /// False while the registrar is still moving tasks in: an empty cgroup
    /// then does not end its job.
    armed: bool,
    /// Made by the daemon, so removed by it when the job ends.
    owned: bool,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub key: JobKey,
    pub meta: JobMeta,
    pub origin: Origin,
    /// Path of the job's first cgroup.
    pub cgroup: String,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// Shown in /metrics: a registration is hidden until its id is settled.
    pub visible: bool,
    /// Final values of the job's cgroups already removed.
    retired: CgroupCounters,
    /// Latest values of the job's live cgroups.
    live: CgroupCounters,
    pub tasks: u64,
    /// A resource manager's job whose layout names no owner: hidden until
    /// one of its tasks' uid does (see [`JobTable::resolve_identity`]).
    pub owner_pending: bool,
    /// Its directory is named by a SLUID: hidden until one of its tasks'
    /// `SLURM_JOB_ID` names it.
    pub jobid_pending: bool,
}

impl Job {
    fn new(key: JobKey, origin: Origin, cgroup: &str, start: SystemTime) -> Self {
        Self {
            key,
            meta: JobMeta::default(),
            origin,
            cgroup: cgroup.to_string(),
            start,
            end: None,
            visible: origin == Origin::Directory,
            retired: CgroupCounters::default(),
            live: CgroupCounters::default(),
            tasks: 0,
            owner_pending: false,
            jobid_pending: false,
        }
    }

    pub fn totals(&self) -> CgroupCounters {
        let mut total = self.retired;
        total.add(&self.live);
        total
    }
}

/// A discovered job whose owner or id its tasks are to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIdentity {
    pub key: JobKey,
    /// The owner is to be found (else it is `key.uid`).
    pub owner: bool,
    /// The id is to be found (else it is `key.jobid`).
    pub jobid: bool,
    pub cgroups: Vec<String>,
}

/// What [`JobTable::add_cgroup`] made of a cgroup.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    NewJob,
    JoinedJob,
    AlreadyKnown,
    NotAJob,
}

/// Cgroups of registered jobs the sampler found empty.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EmptyCgroups {
    /// Cgroups the daemon made (to rmdir), deepest first.
    pub owned: Vec<(u64, String)>,
    /// Adopted cgroups (left in place; only their counting ends).
    pub adopted: Vec<u64>,
}

/// One sample's figures of a job, summed over its live cgroups.
#[derive(Default)]
struct JobSample {
    live: CgroupCounters,
    tasks: u64,
}

#[derive(Debug)]
pub struct JobTable {
    root: String,
    cgroups: IdMap<u64, CgroupEntry>,
    paths: HashMap<String, u64>,
    /// Paths the registrar is about to make, and the job each is for.
    expected: HashMap<String, JobKey>,
    live: BTreeMap<JobKey, Job>,
    finished: BTreeMap<JobKey, Job>,
    /// Adopted cgroups the kernel side does not count yet (the sampler,
    /// which owns the maps, starts counting them).
    untracked: Vec<u64>,
    /// Jobs finished since [`JobTable::take_ended`] was last called: their
    /// profiles are due.
    ended: Vec<Job>,
    /// Bumped by every change to what [`JobTable::export`] returns, so the
    /// registry is saved only when it changed.
    generation: u64,
    /// Resource managers' job layouts.
    discovery: Arc<Discovery>,
}

impl JobTable {
    /// `root` is the monitored root in hierarchy form (`/monitor.slice`).
    pub fn new(root: &str) -> Self {
        Self {
            root: root.trim_end_matches('/').to_string(),
            cgroups: IdMap::default(),
            paths: HashMap::new(),
            expected: HashMap::new(),
            live: BTreeMap::new(),
            finished: BTreeMap::new(),
            untracked: Vec::new(),
            ended: Vec::new(),
            generation: 0,
            discovery: Arc::default(),
        }
    }

    /// Takes resource managers' job directories that `discovery` describes
    /// as jobs.
    pub fn with_discovery(mut self, discovery: Arc<Discovery>) -> Self {
        self.discovery = discovery;
        self
    }

    /// The monitored root in hierarchy form.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Changes with every change to the exported registry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Jobs finished since the last call, with their final values.
    pub fn take_ended(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.ended)
    }

    /// The running jobs and their cgroups, for the state store.
    pub fn export(&self) -> Registry {
        let mut cgroups: HashMap<&JobKey, Vec<SavedCgroup>> = HashMap::new();
        for (id, entry) in &self.cgroups {
            cgroups.entry(&entry.job).or_default().push(SavedCgroup {
                id: *id,
                path: entry.path.clone(),
                owned: entry.owned,
            });
        }
        let jobs = self
            .live
            .values()
            .map(|job| {
                let mut cgroups = cgroups.remove(&job.key).unwrap_or_default();
                cgroups.sort_by_key(|c| c.id);
                SavedJob {
                    uid: job.key.uid,
                    jobid: job.key.jobid.clone(),
                    name: job.meta.name.clone(),
                    user: job.meta.user.clone(),
                    labels: job.meta.labels.clone(),
                    launcher: job.meta.launcher.clone(),
                    registered: job.origin == Origin::Registered,
                    cgroup: job.cgroup.clone(),
                    start: unix_seconds(job.start),
                    visible: job.visible,
                    owner_pending: job.owner_pending,
                    jobid_pending: job.jobid_pending,
                    retired: job.retired,
                    cgroups,
                }
            })
            .collect();
        Registry { jobs }
    }

    /// Adds what cgroup `id` counted before its counters restarted from zero
    /// (programs reloaded) to its job. False when the cgroup is unknown.
    pub fn credit(&mut self, id: u64, counters: &CgroupCounters) -> bool {
        self.generation += 1;
        let Some(entry) = self.cgroups.get(&id) else {
            return false;
        };
        let Some(job) = self.live.get_mut(&entry.job) else {
            return false;
        };
        job.retired.add(counters);
        true
    }

    /// Takes up the running jobs an earlier run saved (before the walk of
    /// the root, so their cgroups keep their jobs). Returns the cgroup ids,
    /// for the caller to find their counter slots.
    pub fn import(&mut self, registry: Registry) -> Vec<u64> {
        self.generation += 1;
        let mut ids = Vec::new();
        for saved in registry.jobs {
            let key = JobKey {
                uid: saved.uid,
                jobid: saved.jobid,
            };
            let origin = if saved.registered {
                Origin::Registered
            } else {
                Origin::Directory
            };
            let start = from_unix_seconds(saved.start);
            let mut job = Job::new(key.clone(), origin, &saved.cgroup, start);
            job.meta = JobMeta {
                name: saved.name,
                user: saved.user,
                labels: saved.labels,
                launcher: saved.launcher,
            };
            // A registration in flight when the earlier run stopped (saved
            // before its id was settled): its launcher's connection went
            // with that run, so it is settled now under the id it had, as
            // a silent launcher's job, and ends when its cgroups empty.
            job.visible = saved.visible || saved.registered;
            job.owner_pending = saved.owner_pending;
            job.jobid_pending = saved.jobid_pending;
            job.retired = saved.retired;
            if saved.registered && saved.cgroups.is_empty() {
                // Saved between its registration and its cgroup's making:
                // nothing ran in it, nothing would ever end it.
                continue;
            }
            self.live.insert(key.clone(), job);
            for cgroup in saved.cgroups {
                if self.cgroups.contains_key(&cgroup.id) {
                    continue;
                }
                self.insert_cgroup(cgroup.id, &cgroup.path, key.clone(), true, cgroup.owned);
                ids.push(cgroup.id);
            }
        }
        ids
    }

    /// Adopted cgroups to start counting (emptied by the call).
    pub fn take_untracked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.untracked)
    }

    pub fn knows(&self, id: u64) -> bool {
        self.cgroups.contains_key(&id)
    }

    /// Records a cgroup seen under the root (event or walk).
    pub fn add_cgroup(&mut self, id: u64, path: &str, uid: u32, created: SystemTime) -> Added {
        if self.cgroups.contains_key(&id) {
            return Added::AlreadyKnown;
        }
        if let Some(key) = self.expected.remove(path) {
            self.insert_cgroup(id, path, key, false, true);
            return Added::JoinedJob;
        }
        // Below a known cgroup: the same job.
        if let Some(parent) = path.rsplit_once('/').map(|(parent, _)| parent)
            && let Some(key) = self
                .paths
                .get(parent)
                .and_then(|p| self.cgroups.get(p))
                .map(|e| e.job.clone())
        {
            self.insert_cgroup(id, path, key, true, false);
            return Added::JoinedJob;
        }
        if let Some(found) = self.discovery.job_of(path) {
            // A resource manager's job, counted in place; it ends when the
            // resource manager removes its directory.
            let key = JobKey {
                uid: found.uid.unwrap_or(uid),
                jobid: found.jobid,
            };
            let added = if self.live.contains_key(&key) {
                Added::JoinedJob
            } else {
                self.finished.remove(&key);
                let mut job = Job::new(key.clone(), Origin::Directory, path, created);
                // The directory's owner is the resource manager's (root).
                job.owner_pending = found.uid.is_none();
                job.jobid_pending = found.jobid_from_tasks;
                job.visible = !job.owner_pending && !job.jobid_pending;
                self.live.insert(key.clone(), job);
                Added::NewJob
            };
            self.insert_cgroup(id, path, key, true, false);
            return added;
        }
        let Some(dir) = job_of(&self.root, path) else {
            return Added::NotAJob;
        };
        let is_top = path
            .rsplit_once('/')
            .is_some_and(|(parent, _)| parent == self.root);
        if !is_top {
            // A child seen before its parent (a walk of a half-made tree):
            // its parent's job will be made; count it there if we can.
            log::debug!("cgroup {path} seen before its parent");
            return Added::NotAJob;
        }
        let key = JobKey {
            uid,
            jobid: dir.to_string(),
        };
        // A job of the same key in retention leaves: one series per job.
        self.finished.remove(&key);
        self.live.insert(
            key.clone(),
            Job::new(key.clone(), Origin::Directory, path, created),
        );
        self.insert_cgroup(id, path, key, true, false);
        Added::NewJob
    }

    /// Records a task cgroup of the daemon's (see [`super::task_cgroup`])
    /// found under the root: unless the registrar is making it now or it
    /// is known, it was made for a registration no saved registry holds
    /// (the earlier run stopped before saving it), and is `key`'s
    /// registered job again, removed and ended when it empties.
    pub fn add_task_cgroup(
        &mut self,
        id: u64,
        path: &str,
        key: JobKey,
        created: SystemTime,
    ) -> Added {
        if self.cgroups.contains_key(&id) || self.expected.contains_key(path) {
            return self.add_cgroup(id, path, key.uid, created);
        }
        let added = if self.live.contains_key(&key) {
            Added::JoinedJob
        } else {
            self.finished.remove(&key);
            let mut job = Job::new(key.clone(), Origin::Registered, path, created);
            job.visible = true;
            self.live.insert(key.clone(), job);
            Added::NewJob
        };
        self.insert_cgroup(id, path, key, true, true);
        added
    }

    fn insert_cgroup(&mut self, id: u64, path: &str, job: JobKey, armed: bool, owned: bool) {
        self.generation += 1;
        if let Some(live) = self.live.get_mut(&job)
            && live.cgroup.is_empty()
        {
            live.cgroup = path.to_string();
        }
        self.paths.insert(path.to_string(), id);
        self.cgroups.insert(
            id,
            CgroupEntry {
                job,
                path: path.to_string(),
                removed_at: None,
                armed,
                owned,
            },
        );
    }

    /// Starts a registered job (or returns false when it is live already).
    pub fn register_job(
        &mut self,
        key: &JobKey,
        meta: JobMeta,
        cgroup: &str,
        start: SystemTime,
    ) -> bool {
        if self.live.contains_key(key) {
            return false;
        }
        self.finished.remove(key);
        let mut job = Job::new(key.clone(), Origin::Registered, cgroup, start);
        job.meta = meta;
        self.live.insert(key.clone(), job);
        self.generation += 1;
        true
    }

    /// The registrar is about to make `path` for `key`'s job.
    pub fn expect_cgroup(&mut self, path: &str, key: &JobKey) {
        self.expected.insert(path.to_string(), key.clone());
    }

    /// The registrar made `path` (id `id`), or gave up on it (`None`).
    pub fn made_cgroup(&mut self, path: &str, id: Option<u64>) {
        let Some(key) = self.expected.remove(path) else {
            return;
        };
        if let Some(id) = id
            && !self.cgroups.contains_key(&id)
        {
            self.insert_cgroup(id, path, key, false, true);
        }
    }

    /// Counts a resource manager's cgroup for `key` without moving anything.
    pub fn adopt_cgroup(&mut self, id: u64, path: &str, key: &JobKey) {
        match self.cgroups.get_mut(&id) {
            // Adopted again by a later task of the same job: nothing to do.
            Some(entry) if entry.job == *key && entry.removed_at.is_none() => {}
            _ => {
                self.insert_cgroup(id, path, key.clone(), true, false);
                self.untracked.push(id);
            }
        }
    }

    /// The live job counting cgroup `id`, if any.
    pub fn job_of_cgroup(&self, id: u64) -> Option<JobKey> {
        self.cgroups
            .get(&id)
            .filter(|entry| entry.removed_at.is_none() && self.live.contains_key(&entry.job))
            .map(|entry| entry.job.clone())
    }

    /// The registrar finished moving tasks into cgroup `id`.
    pub fn arm(&mut self, id: u64) {
        if let Some(entry) = self.cgroups.get_mut(&id) {
            entry.armed = true;
        }
    }

    /// Settles the id of the job that cgroup `id` was provisionally given:
    /// the cgroup joins `key`'s job (made if needed, with `meta`), and the
    /// provisional job goes if that was its only cgroup. Returns false when
    /// the cgroup is unknown.
    pub fn settle(&mut self, id: u64, key: &JobKey, meta: JobMeta) -> bool {
        self.generation += 1;
        let Some(entry) = self.cgroups.get_mut(&id) else {
            return false;
        };
        let provisional = std::mem::replace(&mut entry.job, key.clone());
        if provisional != *key {
            let still_used = self.cgroups.values().any(|e| e.job == provisional);
            let old = if still_used {
                None
            } else {
                self.live.remove(&provisional)
            };
            match self.live.get_mut(key) {
                Some(job) => {
                    if let Some(old) = old {
                        job.retired.add(&old.retired);
                        job.start = job.start.min(old.start);
                    }
                }
                None => {
                    self.finished.remove(key);
                    let mut job = old.unwrap_or_else(|| {
                        let path = self
                            .cgroups
                            .get(&id)
                            .map(|e| e.path.clone())
                            .unwrap_or_default();
                        Job::new(key.clone(), Origin::Registered, &path, SystemTime::now())
                    });
                    job.key = key.clone();
                    job.meta = meta.clone();
                    self.live.insert(key.clone(), job);
                }
            }
        }
        if let Some(job) = self.live.get_mut(key) {
            if job.meta.name.is_empty() && job.meta.labels.is_empty() {
                job.meta = meta;
            }
            job.visible = true;
        }
        true
    }

    /// The discovered job (a resource manager's) whose cgroup `path` is or
    /// is below: the deepest known cgroup on the way up, with its path and
    /// job.
    pub fn discovered_job_containing(&self, path: &str) -> Option<(u64, String, JobKey)> {
        let mut at = path;
        loop {
            if let Some(&id) = self.paths.get(at)
                && let Some(entry) = self.cgroups.get(&id)
                && entry.removed_at.is_none()
                && let Some(job) = self.live.get(&entry.job)
                && self.discovery.job_of(&job.cgroup).is_some()
            {
                return Some((id, at.to_string(), entry.job.clone()));
            }
            match at.rsplit_once('/') {
                Some((parent, _)) if !parent.is_empty() && !parent.ends_with(':') => at = parent,
                _ => return None,
            }
        }
    }

    /// Live jobs whose owner or id is still to be found, with their
    /// cgroups.
    pub fn pending_identities(&self) -> Vec<PendingIdentity> {
        self.live
            .values()
            .filter(|job| job.owner_pending || job.jobid_pending)
            .map(|job| PendingIdentity {
                key: job.key.clone(),
                owner: job.owner_pending,
                jobid: job.jobid_pending,
                cgroups: self
                    .cgroups
                    .values()
                    .filter(|e| e.job == job.key && e.removed_at.is_none())
                    .map(|e| e.path.clone())
                    .collect(),
            })
            .collect()
    }

    /// Job `key`'s owner is `uid` and its id `jobid` (as one of its tasks
    /// says, where its layout did not): it is keyed and shown so from now on.
    pub fn resolve_identity(&mut self, key: &JobKey, uid: u32, jobid: String) {
        let Some(mut job) = self.live.remove(key) else {
            return;
        };
        self.generation += 1;
        let new = JobKey { uid, jobid };
        for entry in self.cgroups.values_mut() {
            if entry.job == *key {
                entry.job = new.clone();
            }
        }
        job.key = new.clone();
        job.owner_pending = false;
        job.jobid_pending = false;
        job.visible = true;
        self.finished.remove(&new);
        match self.live.get_mut(&new) {
            Some(existing) => {
                existing.retired.add(&job.retired);
                existing.start = existing.start.min(job.start);
            }
            None => {
                self.live.insert(new, job);
            }
        }
    }

    /// A launcher inside live job `key` (a resource manager's) adds its
    /// name and labels to it.
    pub fn join(&mut self, key: &JobKey, meta: JobMeta) {
        let Some(job) = self.live.get_mut(key) else {
            return;
        };
        self.generation += 1;
        if job.meta.name.is_empty() {
            job.meta.name = meta.name;
        }
        // Every task of the job may join it: the labels of all of them
        // together stay within what one hello may carry.
        for (name, value) in meta.labels {
            if job.meta.labels.len() >= MAX_JOINED_LABELS && !job.meta.labels.contains_key(&name) {
                break;
            }
            job.meta.labels.entry(name).or_insert(value);
        }
        if job.meta.launcher.is_empty() {
            job.meta.launcher = meta.launcher;
        }
    }

    /// Drops a registered job that never got a cgroup (its registration failed).
    pub fn abandon(&mut self, key: &JobKey) {
        self.generation += 1;
        let used = self.cgroups.values().any(|e| e.job == *key)
            || self.expected.values().any(|k| k == key);
        if !used {
            self.live.remove(key);
        }
    }

    /// Task cgroups of a uid the daemon made and has not removed, those
    /// being made included: what the per-user cap bounds.
    pub fn task_cgroups_of(&self, uid: u32) -> usize {
        let made = self
            .cgroups
            .values()
            .filter(|e| e.owned && e.removed_at.is_none() && e.job.uid == uid)
            .count();
        made + self.expected.values().filter(|k| k.uid == uid).count()
    }

    /// Marks a cgroup removed; its final values are read after the grace.
    pub fn remove_cgroup(&mut self, id: u64, now: Instant) {
        if let Some(entry) = self.cgroups.get_mut(&id) {
            entry.removed_at.get_or_insert(now);
        }
    }

    /// Ids of live cgroups, with their paths and jobs, for task counting.
    pub fn live_cgroups(&self) -> impl Iterator<Item = (u64, &str, &JobKey)> {
        self.cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none())
            .map(|(id, e)| (*id, e.path.as_str(), &e.job))
    }

    /// Known cgroups whose directories no longer exist, per `exists`.
    pub fn vanished(&self, exists: impl Fn(&str) -> bool) -> Vec<u64> {
        self.cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none() && !exists(&e.path))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Is this cgroup removed long enough ago to read its final values?
    pub fn finalizable(&self, id: u64, now: Instant) -> bool {
        self.cgroups
            .get(&id)
            .and_then(|e| e.removed_at)
            .is_some_and(|at| now.duration_since(at) >= FINAL_READ_GRACE)
    }

    /// Applies one sample: `readings` has the summed counters of every
    /// known cgroup read this round; `tasks` the thread count per cgroup id.
    /// Cgroups that are finalizable get folded into their job for good and
    /// are returned, so the caller can free their map entries.
    pub fn apply_sample(
        &mut self,
        readings: &[(u64, CgroupCounters)],
        tasks: &IdMap<u64, u64>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Vec<u64> {
        // Summed per job through a hash of each cgroup's job key, then
        // handed to the jobs in one pass: searching the ordered job map by
        // key for each of 1,000 cgroups was a string comparison ten times
        // over, every sample.
        let mut sums: HashMap<&JobKey, JobSample> = HashMap::with_capacity(self.live.len());
        for (id, entry) in &self.cgroups {
            let threads = tasks.get(id).copied().unwrap_or(0);
            if threads > 0 && entry.removed_at.is_none() {
                sums.entry(&entry.job).or_default().tasks += threads;
            }
        }
        let mut finalized = Vec::new();
        for (id, counters) in readings {
            let Some(entry) = self.cgroups.get(id) else {
                continue;
            };
            if self.finalizable(*id, now) {
                if let Some(job) = self.live.get_mut(&entry.job) {
                    job.retired.add(counters);
                    finalized.push(*id);
                }
            } else {
                sums.entry(&entry.job).or_default().live.add(counters);
            }
        }
        for job in self.live.values_mut() {
            let sum = sums.remove(&job.key).unwrap_or_default();
            job.live = sum.live;
            job.tasks = sum.tasks;
        }
        for id in &finalized {
            self.retire(*id, wall_now);
        }
        // Removed cgroups whose map entry was never there (map full, or a
        // cgroup the walk raced): drop them too.
        let read: IdSet<u64> = readings.iter().map(|(id, _)| *id).collect();
        let stale: Vec<u64> = self
            .cgroups
            .keys()
            .filter(|id| self.finalizable(**id, now) && !read.contains(id))
            .copied()
            .collect();
        for id in stale {
            self.retire(id, wall_now);
        }
        finalized
    }

    fn retire(&mut self, id: u64, wall_now: SystemTime) {
        self.generation += 1;
        let Some(entry) = self.cgroups.remove(&id) else {
            return;
        };
        if self.paths.get(&entry.path) == Some(&id) {
            self.paths.remove(&entry.path);
        }
        let last = !self.cgroups.values().any(|e| e.job == entry.job)
            && !self.expected.values().any(|k| *k == entry.job);
        if last && let Some(mut job) = self.live.remove(&entry.job) {
            job.end = Some(wall_now);
            job.tasks = 0;
            job.live = CgroupCounters::default();
            if job.owner_pending || job.jobid_pending {
                // Never seen with a task of a user: shown as its
                // directory's owner's, under its directory's id, rather
                // than lost.
                job.owner_pending = false;
                job.jobid_pending = false;
                job.visible = true;
            }
            if job.visible {
                self.ended.push(job.clone());
                self.finished.insert(job.key.clone(), job);
            }
        }
    }

    /// Cgroups of registered jobs with no task left (per `tasks`, threads by
    /// cgroup id): the caller removes the ones the daemon made and stops
    /// counting adopted ones. A job ends when its last cgroup is gone, so
    /// "no task in any of its cgroups" ends it; a task that re-registers
    /// elsewhere leaves no empty cgroup behind. Cgroups still being filled
    /// (unarmed) and jobs whose id is not settled yet are left alone.
    pub fn empty_cgroups(&self, tasks: &IdMap<u64, u64>) -> EmptyCgroups {
        let mut empty = EmptyCgroups::default();
        for (id, entry) in &self.cgroups {
            // The job is looked up last: most cgroups have tasks.
            if !entry.armed || entry.removed_at.is_some() || tasks.get(id).copied().unwrap_or(0) > 0
            {
                continue;
            }
            let registered = self
                .live
                .get(&entry.job)
                .is_some_and(|job| job.origin == Origin::Registered && job.visible);
            if !registered {
                continue;
            }
            if entry.owned {
                empty.owned.push((*id, entry.path.clone()));
            } else {
                empty.adopted.push(*id);
            }
        }
        // Children before parents.
        empty
            .owned
            .sort_by_key(|(_, p)| std::cmp::Reverse(p.matches('/').count()));
        empty
    }

    /// Forgets finished jobs that ended more than `retention` ago.
    pub fn expire(&mut self, retention: Duration, wall_now: SystemTime) {
        self.finished.retain(|_, job| {
            job.end
                .and_then(|end| wall_now.duration_since(end).ok())
                .is_none_or(|age| age <= retention)
        });
    }

    /// Takes a finished job out of the retention before its time (its
    /// profile went to the store when it ended).
    pub fn forget_finished(&mut self, key: &JobKey) {
        self.finished.remove(key);
    }

    pub fn live_jobs(&self) -> impl Iterator<Item = &Job> {
        self.live.values()
    }

    pub fn finished_jobs(&self) -> impl Iterator<Item = &Job> {
        self.finished.values()
    }

    /// The finished jobs after `key` (all of them for None), in key order.
    pub fn finished_after(&self, key: Option<&JobKey>) -> impl Iterator<Item = &Job> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = key.map_or(Unbounded, Excluded);
        self.finished.range((start, Unbounded)).map(|(_, job)| job)
    }

    /// The directory of a cgroup path: under `mount` (the v2 mount), or in
    /// the watched v1 hierarchy for a v1 path (`freezer:/slurm/...`).
    pub fn dir(mount: &Path, path: &str) -> PathBuf {
        discovery::dir(mount, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(cpu_ns: u64, execs: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_ns,
            execs,
            ..Default::default()
        }
    }

    fn key(uid: u32, jobid: &str) -> JobKey {
        JobKey {
            uid,
            jobid: jobid.into(),
        }
    }

    const T: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn descendants_roll_up_into_their_job() {
        let mut table = JobTable::new("/monitor.slice");
        assert_eq!(
            table.add_cgroup(10, "/monitor.slice/a", 0, T),
            Added::NewJob
        );
        assert_eq!(
            table.add_cgroup(11, "/monitor.slice/a/step0", 0, T),
            Added::JoinedJob
        );
        assert_eq!(
            table.add_cgroup(12, "/monitor.slice/b", 0, T),
            Added::NewJob
        );
        assert_eq!(
            table.add_cgroup(13, "/system.slice/x", 0, T),
            Added::NotAJob
        );
        assert_eq!(
            table.add_cgroup(10, "/monitor.slice/a", 0, T),
            Added::AlreadyKnown
        );
        table.apply_sample(
            &[
                (10, counters(5, 1)),
                (11, counters(7, 2)),
                (12, counters(1, 0)),
            ],
            &IdMap::from_iter([(10, 1), (11, 2)]),
            Instant::now(),
            T,
        );
        let a = table.live_jobs().find(|j| j.key.jobid == "a").unwrap();
        assert_eq!(a.totals(), counters(12, 3));
        assert_eq!(a.tasks, 3);
    }

    #[test]
    fn removed_cgroups_keep_their_final_values() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.add_cgroup(11, "/monitor.slice/a/step0", 0, T);
        let start = Instant::now();
        table.remove_cgroup(11, start);
        // Within the grace the removed cgroup still counts as live.
        let freed = table.apply_sample(
            &[(10, counters(1, 0)), (11, counters(9, 1))],
            &IdMap::default(),
            start,
            T,
        );
        assert!(freed.is_empty());
        let later = start + FINAL_READ_GRACE;
        let freed = table.apply_sample(
            &[(10, counters(2, 0)), (11, counters(10, 1))],
            &IdMap::default(),
            later,
            T,
        );
        assert_eq!(freed, vec![11]);
        table.apply_sample(&[(10, counters(3, 0))], &IdMap::default(), later, T);
        let a = table.live_jobs().next().unwrap();
        assert_eq!(a.totals(), counters(13, 1));
    }

    #[test]
    fn a_job_ends_with_its_last_cgroup_and_expires_after_retention() {
        let mut table = JobTable::new("/monitor.slice");
        let t0 = T + Duration::from_secs(1000);
        table.add_cgroup(10, "/monitor.slice/a", 0, t0);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(
            &[(10, counters(4, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            t0,
        );
        assert_eq!(table.live_jobs().count(), 0);
        let done = table.finished_jobs().next().unwrap();
        assert_eq!((done.totals(), done.end), (counters(4, 1), Some(t0)));
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(60));
        assert_eq!(table.finished_jobs().count(), 1);
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(61));
        assert_eq!(table.finished_jobs().count(), 0);
    }

    #[test]
    fn a_new_job_replaces_a_finished_one_of_the_same_key() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(&[], &IdMap::default(), now + FINAL_READ_GRACE, T);
        assert_eq!(table.finished_jobs().count(), 1);
        table.add_cgroup(20, "/monitor.slice/a", 0, T);
        assert_eq!(
            (table.finished_jobs().count(), table.live_jobs().count()),
            (0, 1)
        );
    }

    #[test]
    fn finished_jobs_are_taken_in_key_order_after_a_cursor() {
        let mut table = JobTable::new("/monitor.slice");
        let now = Instant::now();
        for (id, name) in [(10, "c"), (11, "a"), (12, "b")] {
            table.add_cgroup(id, &format!("/monitor.slice/{name}"), 0, T);
            table.remove_cgroup(id, now);
        }
        table.apply_sample(&[], &IdMap::default(), now + FINAL_READ_GRACE, T);
        let ids = |after: Option<&JobKey>| -> Vec<String> {
            table
                .finished_after(after)
                .map(|job| job.key.jobid.clone())
                .collect()
        };
        assert_eq!(ids(None), ["a", "b", "c"]);
        assert_eq!(ids(Some(&key(0, "a"))), ["b", "c"]);
        assert_eq!(ids(Some(&key(0, "c"))), Vec::<String>::new());
        // A cursor that is no longer a key (its job went meanwhile) still
        // resumes after it.
        assert_eq!(ids(Some(&key(0, "ab"))), ["b", "c"]);
    }

    /// Registers a provisional job with one made cgroup, as the registrar does.
    fn register(table: &mut JobTable, id: u64, path: &str, provisional: &JobKey) {
        assert!(table.register_job(provisional, JobMeta::default(), path, T));
        table.expect_cgroup(path, provisional);
        table.made_cgroup(path, Some(id));
        // The mkdir event arrives after: already known.
        assert_eq!(table.add_cgroup(id, path, 0, T), Added::AlreadyKnown);
        table.arm(id);
    }

    #[test]
    fn tasks_of_one_user_and_job_id_join_one_job_and_users_are_apart() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(1000, "run_1"));
        register(&mut table, 2, "/monitor.slice/task-2", &key(1000, "run_2"));
        register(&mut table, 3, "/monitor.slice/task-3", &key(2000, "run_3"));
        assert!(table.settle(1, &key(1000, "42"), JobMeta::default()));
        assert!(table.settle(2, &key(1000, "42"), JobMeta::default()));
        assert!(table.settle(3, &key(2000, "42"), JobMeta::default()));
        let keys: Vec<&JobKey> = table.live_jobs().map(|j| &j.key).collect();
        assert_eq!(keys, vec![&key(1000, "42"), &key(2000, "42")]);
        table.apply_sample(
            &[
                (1, counters(1, 1)),
                (2, counters(2, 1)),
                (3, counters(4, 1)),
            ],
            &IdMap::default(),
            Instant::now(),
            T,
        );
        let totals: Vec<u64> = table.live_jobs().map(|j| j.totals().cpu_ns).collect();
        assert_eq!(totals, vec![3, 4]);
    }

    #[test]
    fn registrations_are_hidden_until_settled() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(0, "starter_1"));
        assert!(!table.live_jobs().next().unwrap().visible);
        table.settle(1, &key(0, "starter_1"), JobMeta::default());
        assert!(table.live_jobs().next().unwrap().visible);
    }

    #[test]
    fn empty_cgroups_of_registered_jobs_go_but_not_while_moving_tasks() {
        let mut table = JobTable::new("/monitor.slice");
        let job = key(1000, "42");
        assert!(table.register_job(&job, JobMeta::default(), "/monitor.slice/task-1", T));
        table.expect_cgroup("/monitor.slice/task-1", &job);
        assert_eq!(table.task_cgroups_of(1000), 1);
        table.made_cgroup("/monitor.slice/task-1", Some(1));
        table.settle(1, &job, JobMeta::default());
        table.adopt_cgroup(7, "/system.slice/slurmstepd.scope/job_42/step_0", &job);
        assert_eq!(
            table.task_cgroups_of(1000),
            1,
            "adopted cgroups are not the daemon's"
        );
        let now = Instant::now();
        assert_eq!(
            table.empty_cgroups(&IdMap::default()),
            EmptyCgroups {
                owned: vec![],
                adopted: vec![7]
            },
            "task-1 is not armed yet"
        );
        table.arm(1);
        let busy = IdMap::from_iter([(1, 2), (7, 1)]);
        assert_eq!(
            table.empty_cgroups(&busy),
            EmptyCgroups::default(),
            "tasks are running"
        );
        assert_eq!(
            table.empty_cgroups(&IdMap::from_iter([(7, 1)])),
            EmptyCgroups {
                owned: vec![(1, "/monitor.slice/task-1".into())],
                adopted: vec![]
            },
            "one empty cgroup goes while the job lives on"
        );
        table.remove_cgroup(1, now);
        table.remove_cgroup(7, now);
        table.apply_sample(
            &[(1, counters(5, 1)), (7, counters(6, 0))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let done = table.finished_jobs().next().unwrap();
        assert_eq!(done.totals(), counters(11, 1));
    }

    /// A saved start no `SystemTime` holds panicked in import, as it did
    /// for stored profiles: it is taken as the epoch.
    #[test]
    fn a_saved_start_past_what_system_time_holds_is_the_epoch() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(2, "/monitor.slice/dir", 0, T);
        let mut saved = table.export();
        saved.jobs[0].start = 1e19;
        let mut restarted = JobTable::new("/monitor.slice");
        assert_eq!(restarted.import(saved), vec![2]);
        let job = restarted.live_jobs().next().unwrap();
        assert_eq!(job.start, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn the_registry_round_trips_running_jobs_and_ended_jobs_are_reported_once() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(1000, "run_1"));
        let meta = JobMeta {
            name: "lammps".into(),
            ..Default::default()
        };
        table.settle(1, &key(1000, "42"), meta);
        table.add_cgroup(2, "/monitor.slice/dir", 0, T);
        let now = Instant::now();
        table.add_cgroup(3, "/monitor.slice/dir/step", 0, T);
        table.remove_cgroup(3, now);
        table.apply_sample(
            &[(3, counters(7, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let saved = table.export();
        let json = serde_json::to_string(&saved).unwrap();
        let generation = table.generation();
        table.arm(1);
        table.remove_cgroup(2, now);
        assert_eq!(table.generation(), generation, "nothing exported changed");
        table.credit(1, &counters(1, 0));
        assert_ne!(
            table.generation(),
            generation,
            "a job's retired values changed"
        );

        let mut restarted = JobTable::new("/monitor.slice");
        let mut ids = restarted.import(serde_json::from_str(&json).unwrap());
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(restarted.export(), saved);
        assert_eq!(
            restarted.add_cgroup(1, "/monitor.slice/task-1", 1000, T),
            Added::AlreadyKnown
        );
        let dir = restarted
            .live_jobs()
            .find(|j| j.key.jobid == "dir")
            .unwrap();
        assert_eq!(
            dir.totals(),
            counters(7, 1),
            "a removed cgroup's values survive the restart"
        );
        let job = restarted.live_jobs().find(|j| j.key.jobid == "42").unwrap();
        assert_eq!(
            (job.meta.name.as_str(), job.origin, job.visible),
            ("lammps", Origin::Registered, true)
        );

        restarted.remove_cgroup(1, now);
        restarted.apply_sample(
            &[(1, counters(5, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let ended = restarted.take_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].key.jobid.as_str(), ended[0].totals()),
            ("42", counters(5, 1))
        );
        assert!(restarted.take_ended().is_empty());
    }

    #[test]
    fn registrations_in_flight_at_a_restart_are_settled_or_dropped() {
        let mut table = JobTable::new("/monitor.slice");
        // Placed, its hello not in yet.
        register(
            &mut table,
            1,
            "/monitor.slice/task-1-1",
            &key(1000, "run_1"),
        );
        // Registered, its cgroup not made yet.
        assert!(table.register_job(&key(1000, "run_2"), JobMeta::default(), "", T));
        let json = serde_json::to_string(&table.export()).unwrap();

        let mut restarted = JobTable::new("/monitor.slice");
        assert_eq!(
            restarted.import(serde_json::from_str(&json).unwrap()),
            vec![1]
        );
        let jobs: Vec<(&JobKey, bool)> =
            restarted.live_jobs().map(|j| (&j.key, j.visible)).collect();
        assert_eq!(jobs, vec![(&key(1000, "run_1"), true)]);
        assert_eq!(
            restarted.empty_cgroups(&IdMap::default()).owned,
            vec![(1, "/monitor.slice/task-1-1".to_string())],
            "removed once empty, ending its job"
        );
    }

    #[test]
    fn a_task_cgroup_no_registry_holds_is_its_recorded_job_again() {
        let mut table = JobTable::new("/monitor.slice");
        let path = "/monitor.slice/task-7-1";
        assert_eq!(
            table.add_task_cgroup(2, path, key(1000, "42"), T),
            Added::NewJob
        );
        let job = table.live_jobs().next().unwrap();
        assert_eq!(
            (&job.key, job.origin, job.visible),
            (&key(1000, "42"), Origin::Registered, true)
        );
        assert_eq!(
            table.task_cgroups_of(1000),
            1,
            "the daemon's, under the cap"
        );
        assert_eq!(
            table.empty_cgroups(&IdMap::default()).owned,
            vec![(2, path.to_string())]
        );
        // One the registrar is making now is its registration's.
        let making = "/monitor.slice/task-8-1";
        assert!(table.register_job(&key(1000, "run_8"), JobMeta::default(), "", T));
        table.expect_cgroup(making, &key(1000, "run_8"));
        assert_eq!(
            table.add_task_cgroup(3, making, key(0, "task-8-1"), T),
            Added::JoinedJob
        );
        assert!(table.live_jobs().all(|j| j.key.jobid != "task-8-1"));
    }

    #[test]
    fn directory_jobs_are_not_ended_by_the_daemon() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.apply_sample(&[], &IdMap::default(), Instant::now(), T);
        assert_eq!(
            table.empty_cgroups(&IdMap::default()),
            EmptyCgroups::default()
        );
    }
}
