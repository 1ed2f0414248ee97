//! The registry of running jobs as the state store keeps it, so a restarted
//! daemon knows which cgroups belong to which job (a registered job's id is
//! nowhere in the cgroup tree) and what its already-removed cgroups counted.
//! Serialized by field name: a newer daemon reads an older registry.
use std::collections::BTreeMap;

use monitor_common::CgroupCounters;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub jobs: Vec<SavedJob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedJob {
    pub uid: u32,
    pub jobid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub launcher: String,
    pub registered: bool,
    pub cgroup: String,
    /// Unix seconds.
    pub start: f64,
    pub visible: bool,
    /// A resource manager's job whose owner is still to be found.
    #[serde(default)]
    pub owner_pending: bool,
    /// A resource manager's job whose id is still to be found.
    #[serde(default)]
    pub jobid_pending: bool,
    /// Final values of the job's cgroups already removed.
    pub retired: SavedCounters,
    pub cgroups: Vec<SavedCgroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCgroup {
    pub id: u64,
    pub path: String,
    /// Made by the daemon (removed by it when empty), not adopted.
    pub owned: bool,
}

/// [`CgroupCounters`] by field name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedCounters {
    pub cpu_ns: u64,
    pub runqueue_wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub processes_started: u64,
    pub threads_started: u64,
    pub execs: u64,
    pub process_exits: u64,
    pub page_faults: u64,
    pub oom_kills: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub io_read_calls: u64,
    pub io_write_calls: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
    pub rss_delta_bytes: i64,
    pub rss_peak_bytes: u64,
}

/// Both directions list every field once; a field added to one side and
/// not the other fails to compile.
macro_rules! convert {
    ($from:ty => $to:ident: $($field:ident),*) => {
        impl From<&$from> for $to {
            fn from(c: &$from) -> Self {
                $to { $($field: c.$field),* }
            }
        }
    };
}
convert!(CgroupCounters => SavedCounters: cpu_ns, runqueue_wait_ns, voluntary_switches, involuntary_switches,
    processes_started, threads_started, execs, process_exits, page_faults, oom_kills, io_read_bytes,
    io_write_bytes, io_read_calls, io_write_calls, block_read_bytes, block_write_bytes, net_rx_bytes,
    net_tx_bytes, net_rx_packets, net_tx_packets, rss_delta_bytes, rss_peak_bytes);
convert!(SavedCounters => CgroupCounters: cpu_ns, runqueue_wait_ns, voluntary_switches, involuntary_switches,
    processes_started, threads_started, execs, process_exits, page_faults, oom_kills, io_read_bytes,
    io_write_bytes, io_read_calls, io_write_calls, block_read_bytes, block_write_bytes, net_rx_bytes,
    net_tx_bytes, net_rx_packets, net_tx_packets, rss_delta_bytes, rss_peak_bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_by_name() {
        let counters = CgroupCounters {
            cpu_ns: 1,
            rss_delta_bytes: -5,
            rss_peak_bytes: 7,
            net_tx_packets: 9,
            ..Default::default()
        };
        let json = serde_json::to_string(&SavedCounters::from(&counters)).unwrap();
        let back: SavedCounters = serde_json::from_str(&json).unwrap();
        assert_eq!(CgroupCounters::from(&back), counters);
        // Fields an older daemon did not write read as zero.
        let old: SavedCounters = serde_json::from_str(r#"{"cpu_ns":3}"#).unwrap();
        assert_eq!(old.cpu_ns, 3);
    }
}
