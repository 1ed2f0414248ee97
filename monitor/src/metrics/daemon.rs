//! The daemon's own health: sampling, job counts, cgroup bookkeeping, build.
use std::sync::Arc;

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::MetricType, registry::Unit,
};

use super::encode::family;
use crate::snapshot::SharedSnapshot;

#[derive(Debug)]
pub struct DaemonCollector(pub Arc<SharedSnapshot>);

impl Collector for DaemonCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.latest();
        let health = &snapshot.health;

        let f = family(
            &mut encoder,
            "monitor_sample_duration",
            "How long the last sample of the kernel maps took.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        f.single_gauge(health.sample_duration.as_secs_f64())?;
        let f = family(
            &mut encoder,
            "monitor_task_credit_duration",
            "How long the last sample's walk of the job tasks took (part of the sample: it credits every job task's kernel counters).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        f.single_gauge(health.task_iter_duration.as_secs_f64())?;
        let f = family(
            &mut encoder,
            "monitor_sample_success",
            "1 if the last sample succeeded.",
            None,
            MetricType::Gauge,
        )?;
        f.single_gauge_i64(i64::from(health.sample_success))?;
        let f = family(
            &mut encoder,
            "monitor_samples",
            "Samples taken.",
            None,
            MetricType::Counter,
        )?;
        f.single_counter(health.samples)?;
        let f = family(
            &mut encoder,
            "monitor_sample_errors",
            "Samples that failed.",
            None,
            MetricType::Counter,
        )?;
        f.single_counter(health.sample_errors)?;

        let running = snapshot.jobs.iter().filter(|j| j.end.is_none()).count();
        let finished = snapshot.jobs.len() - running;
        let mut f = family(
            &mut encoder,
            "monitor_jobs",
            "Jobs known to the daemon, by state.",
            None,
            MetricType::Gauge,
        )?;
        f.gauge_i64(&[("state", "running")], running as i64)?;
        f.gauge_i64(&[("state", "finished")], finished as i64)?;
        let mut f = family(
            &mut encoder,
            "monitor_jobs_evicted",
            "Finished jobs taken out of /metrics before their --job.retention ended, by reason: per_user_limit \
             (their user had --job.retention.max-per-user more recent ones). Their profiles stay in the state store and the job API.",
            None,
            MetricType::Counter,
        )?;
        f.counter_u64(&[("reason", "per_user_limit")], health.jobs_evicted)?;

        let f = family(
            &mut encoder,
            "monitor_cgroup_events",
            "Cgroup creations and removals under the monitored root received from the kernel.",
            None,
            MetricType::Counter,
        )?;
        f.single_counter(health.cgroup_events)?;
        let f = family(
            &mut encoder,
            "monitor_cgroup_rescans",
            "Walks of the monitored root (at start, and after lost events).",
            None,
            MetricType::Counter,
        )?;
        f.single_counter(health.rescans)?;
        let f = family(
            &mut encoder,
            "monitor_orphaned_cgroups",
            "Counted cgroups that matched no job when read (made and removed while events were lost).",
            None,
            MetricType::Counter,
        )?;
        f.single_counter(health.orphaned_cgroups)?;

        if let Some(store) = &health.store {
            let f = family(
                &mut encoder,
                "monitor_state_profiles_written",
                "Finished jobs' profiles written to the state store.",
                None,
                MetricType::Counter,
            )?;
            f.single_counter(store.profiles_written)?;
            let f = family(
                &mut encoder,
                "monitor_state_profiles_pending",
                "Profiles handed to the state store and not yet on disk.",
                None,
                MetricType::Gauge,
            )?;
            f.single_gauge_i64(i64::try_from(store.profiles_pending).unwrap_or(i64::MAX))?;
            let f = family(
                &mut encoder,
                "monitor_state_profiles_stored",
                "Profiles in the state store.",
                None,
                MetricType::Gauge,
            )?;
            f.single_gauge_i64(i64::try_from(store.profiles_stored).unwrap_or(i64::MAX))?;
            let mut f = family(
                &mut encoder,
                "monitor_state_profiles_dropped",
                "Finished jobs' profiles dropped before reaching the state store: store_unavailable, held in memory past --state.max-pending while commits failed.",
                None,
                MetricType::Counter,
            )?;
            f.counter_u64(
                &[("reason", "store_unavailable")],
                store.dropped_unavailable,
            )?;
            let f = family(
                &mut encoder,
                "monitor_state_commit_errors",
                "Failed state store commits (retried; profiles are held in memory up to --state.max-pending).",
                None,
                MetricType::Counter,
            )?;
            f.single_counter(store.commit_errors)?;
            let f = family(
                &mut encoder,
                "monitor_state_commits",
                "State store commits.",
                None,
                MetricType::Counter,
            )?;
            f.single_counter(store.commits)?;
            let mut f = family(
                &mut encoder,
                "monitor_state_profiles_pruned",
                "Profiles deleted from the state store: retention, older than --state.retention; max_profiles, the oldest of the users keeping the most, past --state.max-profiles.",
                None,
                MetricType::Counter,
            )?;
            f.counter_u64(&[("reason", "retention")], store.pruned_retention)?;
            f.counter_u64(&[("reason", "max_profiles")], store.pruned_max_profiles)?;
            let f = family(
                &mut encoder,
                "monitor_state_commit_duration",
                "How long the last state store commit took (with its fsync).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            f.single_gauge(store.last_commit_duration.as_secs_f64())?;
        }

        let mut f = family(
            &mut encoder,
            "monitor_build_info",
            "Build of the running daemon; always 1.",
            None,
            MetricType::Gauge,
        )?;
        f.gauge_i64(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("MONITOR_GIT_REVISION")),
            ],
            1,
        )?;
        Ok(())
    }
}
