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
    pub retired: CgroupCounters,
    pub cgroups: Vec<SavedCgroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCgroup {
    pub id: u64,
    pub path: String,
    /// Made by the daemon (removed by it when empty), not adopted.
    pub owned: bool,
}

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
        let json = serde_json::to_string(&counters).unwrap();
        let back: CgroupCounters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, counters);
        // Fields an older daemon did not write read as zero.
        let old: CgroupCounters = serde_json::from_str(r#"{"cpu_ns":3}"#).unwrap();
        assert_eq!(old.cpu_ns, 3);
    }
}
