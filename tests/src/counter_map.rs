//! The daemon's per-cgroup counter map (`CGROUP_COUNTERS`) as `/metrics`
//! shows it: slots taken, slots in all, and events lost for want of a slot.
use crate::openmetrics::Metrics;

/// The `map` label of the counter map's series.
pub const COUNTER_MAP: [(&str, &str); 1] = [("map", "CGROUP_COUNTERS")];
/// The `reason` label of events lost because the counter map was full.
pub const MAP_FULL: [(&str, &str); 1] = [("reason", "cgroup_map_full")];

/// Counter slots taken.
pub fn counter_entries(metrics: &Metrics) -> anyhow::Result<f64> {
    metrics.value("monitor_bpf_map_entries", &COUNTER_MAP)
}

/// The counter map's fill in one scrape: (entries, capacity, drops for lack of a slot).
pub fn counter_map(metrics: &Metrics) -> anyhow::Result<(f64, f64, f64)> {
    Ok((
        counter_entries(metrics)?,
        metrics.value("monitor_bpf_map_capacity_entries", &COUNTER_MAP)?,
        metrics.value("monitor_bpf_lost_events_total", &MAP_FULL)?,
    ))
}
