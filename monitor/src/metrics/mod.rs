//! `/metrics`: collectors that encode the latest snapshot, one per concern
//! (jobs, kernel programs, the daemon itself), node_exporter style.
mod api;
mod counter_rows;
mod daemon;
pub mod encode;
pub mod exposition;
#[cfg(test)]
mod golden;
mod job_files;
mod job_series;
pub mod job_text;
mod jobs;
mod kernel;
mod launcher;

use std::sync::Arc;

use prometheus_client::{encoding::text::encode_registry, registry::Registry};

use self::exposition::Format;
use crate::{api::ApiStats, launcher::stats::RegistrationStats, snapshot::SharedSnapshot};

/// What the telemetry path serves: the per-job families (written from the
/// jobs' cached samples, see [`job_series`]) between the collectors that
/// come before them and those after, in the order they always had.
#[derive(Debug)]
pub struct Exposition {
    before_jobs: Registry,
    shared: Arc<SharedSnapshot>,
    after_jobs: Registry,
}

impl Exposition {
    pub fn new(
        shared: Arc<SharedSnapshot>,
        registrations: Arc<RegistrationStats>,
        api: Arc<ApiStats>,
    ) -> Self {
        let mut before_jobs = Registry::default();
        before_jobs.register_collector(Box::new(api::ApiCollector(api)));
        before_jobs.register_collector(Box::new(launcher::LauncherCollector(registrations)));
        let mut after_jobs = Registry::default();
        after_jobs.register_collector(Box::new(kernel::KernelCollector(shared.clone())));
        after_jobs.register_collector(Box::new(daemon::DaemonCollector(shared.clone())));
        Exposition {
            before_jobs,
            shared,
            after_jobs,
        }
    }

    /// The text of a scrape in `format`.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        let before = registry_text(&self.before_jobs, format)?;
        let after = registry_text(&self.after_jobs, format)?;
        let mut out = String::with_capacity(before.len() + after.len() + 16);
        out.push_str(&before);
        job_series::write(&mut out, &self.shared.latest().jobs, format);
        out.push_str(&after);
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        Ok(out)
    }
}

/// A registry's families in `format` (no `# EOF`).
fn registry_text(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    encode_registry(&mut text, registry)?;
    Ok(match format {
        Format::OpenMetrics => text,
        Format::Prometheus => exposition::to_prometheus_text(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn exposition_of(snapshot: Snapshot) -> Exposition {
        let shared = Arc::new(SharedSnapshot::default());
        shared.publish(snapshot);
        Exposition::new(shared, Default::default(), Default::default())
    }

    #[test]
    fn cached_rendering_equals_uncached() {
        // A running job with every cgroup file, a finished one with none;
        // names and labels that need escaping.
        let snapshot = golden::snapshot();
        let exposition = exposition_of(snapshot.clone());
        let uncached = |format| {
            let fresh: Vec<_> = snapshot
                .jobs
                .iter()
                .map(|j| job_series::encode(j))
                .collect();
            let fresh: Vec<_> = fresh.iter().collect();
            let mut out = String::new();
            job_series::write_encoded(&mut out, &fresh, format);
            out
        };
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let first = exposition.render(format).unwrap();
            assert!(
                snapshot
                    .jobs
                    .iter()
                    .all(|job| job.series.get::<job_text::EncodedJob>().is_some())
            );
            let cached = exposition.render(format).unwrap();
            assert_eq!(cached, first);
            assert!(cached.contains(&uncached(format)));
        }
        // A cgroup-file family no job has is left out, descriptor too.
        let finished_only = exposition_of(Snapshot {
            jobs: snapshot.jobs[1..].to_vec(),
            ..Snapshot::default()
        })
        .render(Format::OpenMetrics)
        .unwrap();
        assert!(finished_only.contains("\nmonitor_job_cpu_seconds_total{jobid=\"task-7\""));
        assert!(!finished_only.contains("monitor_job_cpus_allocated"));
        // A copy of a view may be changed: it starts with nothing cached.
        let copy = (*snapshot.jobs[0]).clone();
        assert!(copy.series.get::<job_text::EncodedJob>().is_none());
    }

    #[test]
    fn the_cache_holds_less_than_the_text_it_serves() {
        let snapshot = golden::snapshot();
        let exposition = exposition_of(snapshot.clone());
        let empty = exposition_of(Snapshot::default());
        let text = exposition.render(Format::OpenMetrics).unwrap();
        let jobs_text = text.len() - empty.render(Format::OpenMetrics).unwrap().len();
        let cached: usize = snapshot
            .jobs
            .iter()
            .filter_map(|job| job.series.get::<job_text::EncodedJob>())
            .map(job_text::EncodedJob::heap_bytes)
            .sum();
        assert!(
            cached * 2 < jobs_text,
            "{cached} cached for {jobs_text} served"
        );
    }
}
