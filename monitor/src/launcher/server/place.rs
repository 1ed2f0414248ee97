//! Placing a peer at accept, before it can fork unseen: into the job a
//! resource manager made (found by discovery), into its own cgroup where
//! [`AdoptRules`](crate::launcher::adopt::AdoptRules) adopt it, or into a
//! new task cgroup of a provisional job.
use std::{os::unix::fs::MetadataExt, path::PathBuf, sync::atomic::Ordering, time::SystemTime};

use thiserror::Error;

use super::registrar::Registrar;
use crate::{
    jobs::{JobKey, JobMeta, JobTable, discovery, task_cgroup},
    launcher::{
        adopt,
        limits::{self, Limit, LimitsError},
        peer::{Peer, PeerError},
        placement,
    },
};

#[derive(Debug, Error)]
pub(super) enum PlaceError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("uid {uid} has {limit} registered tasks running already (--jobs.max-per-user)")]
    OverLimit { uid: u32, limit: usize },
    #[error(
        "pid {pid} is bound by {limit}: moving it into a task cgroup would leave that limit, so \
         it is not registered (run it in a cgroup without limits, or have --adopt.cgroup adopt \
         its cgroup)"
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

/// The task cgroup a registration gets: a spare made ahead (see
/// [`crate::jobs::spares`]) or a name to make now.
enum Reserved {
    Spare { id: u64, path: String },
    Name(String),
}

/// Where a peer was put.
pub(super) struct Placed {
    pub(super) cgroup_id: u64,
    pub(super) path: String,
    /// The peer is inside a resource manager's job the daemon found: it
    /// joins that job (name, labels) instead of making one.
    pub(super) joined: Option<JobKey>,
    /// The task cgroup the daemon made for it (not an adopted one).
    pub(super) task_dir: Option<PathBuf>,
}

impl Registrar {
    /// Puts the peer in a new task cgroup of a provisional job (or adopts
    /// its resource manager's cgroup). Blocking: cgroupfs and /proc work.
    pub(super) fn place(
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
            // Taken or reserved under the lock of the check: concurrent
            // registrations of one uid cannot all pass it before any counts.
            match table.take_spare(provisional) {
                Some((id, path)) => Reserved::Spare { id, path },
                None => {
                    let name = self.task_cgroup_name(peer);
                    table.expect_cgroup(&self.task_cgroup_path(&name), provisional);
                    Reserved::Name(name)
                }
            }
        };
        let (id, path, dir) = match reserved {
            Reserved::Spare { id, path } => {
                self.spares.taken();
                let dir = JobTable::dir(&self.config.mount, &path);
                task_cgroup::record(&dir, provisional);
                (id, path, dir)
            }
            Reserved::Name(name) => match self.make_task_cgroup(provisional, name) {
                Ok(made) => made,
                Err(e) => {
                    self.table().abandon(provisional);
                    return Err(e);
                }
            },
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
        if task_cgroup::name_under(&self.config.root_in_hierarchy, current).is_some() {
            // From one of the daemon's task cgroups (a launcher run inside
            // a registered job) to another: the daemon sets no limit on
            // them, so none is left, and the cgroup files are not read
            // (ms while other cgroups are made and removed).
            return Ok(());
        }
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
                "launcher refused: pid {} (uid {}) is bound by {limit}, which a task cgroup \
                 would leave ({since} such refusals since the last such line)",
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
}
