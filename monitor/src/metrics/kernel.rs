//! The kernel programs' own health: run time and count (bpf_stats), map
//! fill, and what the programs had to drop.
use std::sync::Arc;

use monitor_common::DropReason;
use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::MetricType, registry::Unit,
};

use super::encode::family;
use crate::snapshot::SharedSnapshot;

#[derive(Debug)]
pub struct KernelCollector(pub Arc<SharedSnapshot>);

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.latest();
        let health = &snapshot.health;

        let f = family(
            &mut encoder,
            "monitor_bpf_stats_enabled",
            "1 when the kernel counts program run time (kernel.bpf_stats_enabled or --bpf.stats).",
            None,
            MetricType::Gauge,
        )?;
        f.single_gauge_i64(i64::from(health.bpf_stats_enabled))?;
        let mut f = family(
            &mut encoder,
            "monitor_bpf_program_run",
            "Time spent in each kernel program (counts only while bpf_stats is enabled).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for program in &health.programs {
            f.counter(&[("program", program.name)], program.run_time.as_secs_f64())?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_bpf_program_runs",
            "Runs of each kernel program (counts only while bpf_stats is enabled).",
            None,
            MetricType::Counter,
        )?;
        for program in &health.programs {
            f.counter_u64(&[("program", program.name)], program.run_count)?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_bpf_map_entries",
            "Entries in each kernel map.",
            None,
            MetricType::Gauge,
        )?;
        for map in &health.maps {
            f.gauge_i64(
                &[("map", map.name)],
                i64::try_from(map.entries).unwrap_or(i64::MAX),
            )?;
        }
        let entries = Unit::Other("entries".into());
        let mut f = family(
            &mut encoder,
            "monitor_bpf_map_capacity",
            "Capacity of each kernel map, in entries.",
            Some(&entries),
            MetricType::Gauge,
        )?;
        for map in &health.maps {
            f.gauge_i64(
                &[("map", map.name)],
                i64::try_from(map.capacity).unwrap_or(i64::MAX),
            )?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_bpf_lost_events",
            "Events the kernel programs had to drop, by reason.",
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            f.counter_u64(&[("reason", reason.label())], health.drops[reason as usize])?;
        }
        Ok(())
    }
}
