//! `/metrics`: collectors that encode the latest snapshot, one per concern
//! (jobs, kernel programs, the daemon itself), node_exporter style.
mod api;
mod daemon;
pub mod encode;
pub mod exposition;
#[cfg(test)]
mod golden;
mod job_resources;
mod job_series;
pub mod job_text;
mod jobs;
mod kernel;
mod launcher;

use std::sync::Arc;

use prometheus_client::{encoding::text::encode_registry, registry::Registry};

use self::exposition::Format;
use crate::{api::ApiStats, daemon::snapshot::SharedSnapshot, launcher::stats::RegistrationStats};

/// What the telemetry path serves: the per-job families (written from the
/// jobs' cached samples, see [`job_series`]) between the collectors that
/// come before them and those after, in the order they always had.
#[derive(Debug)]
pub struct Exposition {
    before_jobs: Registry,
    shared: Arc<SharedSnapshot>,
    after_jobs: Registry,
}

pub fn exposition(
    shared: Arc<SharedSnapshot>,
    registrations: Arc<RegistrationStats>,
    api: Arc<ApiStats>,
) -> Exposition {
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

impl Exposition {
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
mod fixture;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::snapshot::Snapshot;

    fn exposition_of(snapshot: Snapshot) -> Exposition {
        let shared = Arc::new(SharedSnapshot::default());
        shared.publish(snapshot);
        exposition(shared, Default::default(), Default::default())
    }

    /// The text prometheus-client wrote for the fixture before the job
    /// series were cached (kept as it was rendered then, but for the build's
    /// revision).
    fn golden(format: Format) -> String {
        let text = match format {
            Format::OpenMetrics => include_str!("testdata/fixture.openmetrics"),
            Format::Prometheus => include_str!("testdata/fixture.prom"),
        };
        text.replace("@REVISION@", env!("MONITOR_GIT_REVISION"))
    }

    #[test]
    fn renders_the_bytes_prometheus_client_rendered() {
        let exposition = exposition_of(fixture::snapshot());
        for _first_then_cached in 0..2 {
            for format in [Format::OpenMetrics, Format::Prometheus] {
                assert_eq!(exposition.render(format).unwrap(), golden(format));
            }
        }
    }

    #[test]
    fn cached_rendering_equals_uncached() {
        let snapshot = fixture::snapshot();
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
            assert!(snapshot.jobs.iter().all(|job| job.series.get().is_some()));
            let cached = exposition.render(format).unwrap();
            assert_eq!(cached, first);
            assert!(cached.contains(&uncached(format)));
        }
        // A cgroup-file family no job has is left out, descriptor too.
        let without_files = exposition_of(Snapshot {
            jobs: snapshot.jobs[1..].to_vec(),
            ..Snapshot::default()
        })
        .render(Format::OpenMetrics)
        .unwrap();
        assert!(without_files.contains("\nmonitor_job_cpus_allocated{jobid=\"bench-7-42\""));
        assert!(!without_files.contains("monitor_job_memory_limit_bytes"));
        // A copy of a view may be changed: it starts with nothing cached.
        let copy = (*snapshot.jobs[0]).clone();
        assert!(copy.series.get().is_none());
    }

    #[test]
    fn the_cache_holds_less_than_the_text_it_serves() {
        let snapshot = fixture::snapshot();
        let exposition = exposition_of(snapshot.clone());
        let empty = exposition_of(Snapshot::default());
        let text = exposition.render(Format::OpenMetrics).unwrap();
        let jobs_text = text.len() - empty.render(Format::OpenMetrics).unwrap().len();
        let cached: usize = snapshot
            .jobs
            .iter()
            .filter_map(|job| job.series.get())
            .map(job_text::EncodedJob::heap_bytes)
            .sum();
        assert!(
            cached * 2 < jobs_text,
            "{cached} cached for {jobs_text} served"
        );
    }
}
