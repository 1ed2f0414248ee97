//! The sample's snapshot: each shown job's view (kept while its figures do
//! not change, the restored finished jobs among them), and the daemon's health.
use std::sync::Arc;

use monitor_common::CgroupCounters;

use super::Sampler;
use crate::{
    daemon::users::UserNames,
    jobs::{JobKey, allocation::Allocation, table::Job},
    kernel::program_stats,
    snapshot::{CgroupFileStats, JobView, MapFill, Snapshot},
    system::{ids::KeyMap, memory::ShrinkSparse},
};

/// Jobs whose views are built per hold of the job table's lock (see
/// [`Sampler::publish`]): well under 1 ms of holding.
const JOBS_PER_LOCK: usize = 250;

/// What the job views are made of besides the job table, and the views
/// last published.
#[derive(Default)]
pub(super) struct JobViews {
    users: UserNames,
    /// Cgroup-file cross-checks per job, from the last sample.
    pub files: KeyMap<JobKey, CgroupFileStats>,
    /// What each job was given (read when it is first seen, then with the
    /// cross-checks); kept for its finished jobs' profiles.
    pub allocations: KeyMap<JobKey, Allocation>,
    /// The job table's generation when the live jobs were last looked at
    /// for ones with no allocation read (see `Sampler::read_allocations`).
    pub allocations_looked_at: Option<u64>,
    /// Each shown job's view as last published, and the sample that last
    /// published it: a job whose figures did not change (a finished job,
    /// a sleeping one) keeps its view instead of being copied anew.
    published: KeyMap<JobKey, (Arc<JobView>, u64)>,
}

impl Sampler {
    pub(super) fn publish(&mut self) {
        let table = self.table.clone();
        let sample = self.health.samples;
        // A chunk of jobs at a time, the job table's lock let go between
        // chunks: registrations wait for it, and one hold over every view
        // (2,000 live jobs changing, 10,000 finished ones) took tens of ms.
        // A job enters the finished set only in this thread (at a sample),
        // so none can appear twice there; a job that registers or ends
        // meanwhile is shown once or, for this sample, not at all.
        let mut jobs: Vec<Arc<JobView>> = Vec::new();
        for finished in [false, true] {
            let mut after: Option<JobKey> = None;
            loop {
                let table = super::lock(&table);
                let mut taken = 0;
                let mut last = None;
                let chunk = if finished {
                    table.finished_after(after.as_ref())
                } else {
                    table.live_after(after.as_ref())
                };
                for job in chunk.take(JOBS_PER_LOCK) {
                    taken += 1;
                    if job.visible {
                        jobs.push(self.views.current(job, sample));
                    }
                    last = Some(&job.key);
                }
                if taken < JOBS_PER_LOCK {
                    break;
                }
                after = last.cloned();
            }
        }
        self.views.forget_unpublished(sample);
        if let Some(figures) = self.persistence.figures() {
            self.health.store = Some(figures);
        }
        self.shared.publish(Snapshot {
            jobs,
            health: self.health.clone(),
        });
    }

    /// The kernel side's health at the sample: the maps' fill (of
    /// TASK_STATE, its entry count as read for the sample's walk) and the
    /// programs' run figures.
    pub(super) fn read_kernel_health(&mut self, tracked_tasks: Option<u64>) {
        self.health.maps = vec![
            MapFill {
                name: "CGROUP_COUNTERS",
                entries: self.probes.counters.occupied() as u64,
                capacity: u64::from(self.probes.counters.capacity()),
            },
            MapFill {
                name: "TASK_STATE",
                entries: tracked_tasks.unwrap_or(0),
                capacity: u64::from(self.probes.sizes.tasks),
            },
        ];
        self.health.bpf_stats_enabled = self.config.bpf_stats_held || program_stats::enabled();
        self.health.programs = program_stats::read(&self.probes);
    }
}

impl JobViews {
    /// `job`'s view: the one last published if nothing in it changed
    /// (compared in place, nothing copied), else a new one; remembered as
    /// published at `sample`.
    pub fn current(&mut self, job: &Job, sample: u64) -> Arc<JobView> {
        let counters = job.totals();
        let files = self.files_of(job);
        let users = &mut self.users;
        // One lookup for the usual case, a job whose view is unchanged.
        if let Some((view, published)) = self.published.get_mut(&job.key) {
            let user = match &job.meta.user {
                Some(user) => user.as_str(),
                None => users.name(job.key.uid),
            };
            let unchanged = view.counters == counters
                && view.files == files
                && view.tasks == job.tasks
                && view.end == job.end
                && view.start == job.start
                && view.user == user
                && view.name == job.meta.name
                && view.launcher == job.meta.launcher
                && view.labels == job.meta.labels
                && view.cgroup == job.cgroup;
            if unchanged {
                *published = sample;
                return view.clone();
            }
        }
        let view = Arc::new(self.view_with(job, counters, files));
        match self.published.get_mut(&job.key) {
            Some(entry) => *entry = (view.clone(), sample),
            None => {
                self.published
                    .insert(job.key.clone(), (view.clone(), sample));
            }
        }
        view
    }

    /// Gives back the room of jobs gone (see [`ShrinkSparse`]).
    pub fn shrink_if_sparse(&mut self) {
        self.files.shrink_if_sparse();
        self.allocations.shrink_if_sparse();
        self.published.shrink_if_sparse();
    }

    /// Forgets the views of jobs not published at `sample` (gone from
    /// /metrics).
    pub fn forget_unpublished(&mut self, sample: u64) {
        self.published
            .retain(|_, (_, published)| *published == sample);
    }

    /// `job`'s view, made afresh.
    pub fn view(&mut self, job: &Job) -> JobView {
        let files = self.files_of(job);
        self.view_with(job, job.totals(), files)
    }

    /// What the cgroup files and the allocation say of `job`.
    fn files_of(&self, job: &Job) -> CgroupFileStats {
        let mut files = self.files.get(&job.key).cloned().unwrap_or_default();
        if let Some(allocation) = self.allocations.get(&job.key) {
            files.cpus_allocated = allocation.cpus;
            files.memory_limit_bytes = allocation.memory_limit_bytes;
        }
        files
    }

    fn view_with(
        &mut self,
        job: &Job,
        counters: CgroupCounters,
        files: CgroupFileStats,
    ) -> JobView {
        let user = job
            .meta
            .user
            .clone()
            .unwrap_or_else(|| self.users.name(job.key.uid).to_string());
        JobView {
            counters,
            files,
            jobid: job.key.jobid.clone(),
            uid: job.key.uid,
            user,
            name: job.meta.name.clone(),
            launcher: job.meta.launcher.clone(),
            labels: job.meta.labels.clone(),
            cgroup: job.cgroup.clone(),
            tasks: job.tasks,
            start: job.start,
            end: job.end,
            series: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use monitor_common::CgroupCounters;

    use super::*;
    use crate::jobs::JobTable;

    fn table() -> JobTable {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, SystemTime::UNIX_EPOCH);
        table.add_cgroup(11, "/monitor.slice/b", 0, SystemTime::UNIX_EPOCH);
        table
    }

    fn job<'t>(table: &'t JobTable, jobid: &str) -> &'t Job {
        table
            .live_jobs()
            .find(|job| job.key.jobid == jobid)
            .unwrap()
    }

    #[test]
    fn a_view_is_kept_while_its_figures_do_not_change() {
        let mut table = table();
        let mut views = JobViews::default();
        let first = views.current(job(&table, "a"), 1);
        let again = views.current(job(&table, "a"), 2);
        assert!(Arc::ptr_eq(&first, &again), "nothing copied");

        let busy = CgroupCounters {
            cpu_ns: 5,
            ..Default::default()
        };
        assert!(table.credit(10, &busy));
        let changed = views.current(job(&table, "a"), 3);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.counters.cpu_ns, 5);
        assert!(Arc::ptr_eq(&changed, &views.current(job(&table, "a"), 4)));
    }

    #[test]
    fn views_not_published_at_the_sample_are_forgotten() {
        let table = table();
        let mut views = JobViews::default();
        let a = views.current(job(&table, "a"), 1);
        views.current(job(&table, "b"), 1);
        views.current(job(&table, "a"), 2);
        views.forget_unpublished(2);
        assert_eq!(views.published.len(), 1);
        assert!(Arc::ptr_eq(&a, &views.published[&a_key()].0));
    }

    fn a_key() -> JobKey {
        JobKey {
            uid: 0,
            jobid: "a".into(),
        }
    }

    #[test]
    fn a_view_says_what_the_job_was_given() {
        let table = table();
        let mut views = JobViews::default();
        views.files.insert(
            a_key(),
            CgroupFileStats {
                memory_current: Some(7),
                ..Default::default()
            },
        );
        let before = views.current(job(&table, "a"), 1);
        views.allocations.insert(
            a_key(),
            Allocation {
                cpus: Some(4),
                memory_limit_bytes: Some(1 << 30),
            },
        );
        let view = views.current(job(&table, "a"), 2);
        assert!(!Arc::ptr_eq(&before, &view), "the allocation changed it");
        assert_eq!(view.files.memory_current, Some(7));
        assert_eq!(view.files.cpus_allocated, Some(4));
        assert_eq!(view.files.memory_limit_bytes, Some(1 << 30));
        assert_eq!(views.view(job(&table, "a")).files, view.files);
    }
}
