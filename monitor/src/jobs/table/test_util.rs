//! What the job table's tests share.
use std::time::SystemTime;

use monitor_common::CgroupCounters;

use super::{Added, JobKey, JobMeta, JobTable};

pub const T: SystemTime = SystemTime::UNIX_EPOCH;

pub fn counters(cpu_ns: u64, execs: u64) -> CgroupCounters {
    CgroupCounters {
        cpu_ns,
        execs,
        ..Default::default()
    }
}

pub fn key(uid: u32, jobid: &str) -> JobKey {
    JobKey {
        uid,
        jobid: jobid.into(),
    }
}

/// Registers a provisional job with one made cgroup, as the registrar does.
pub fn register(table: &mut JobTable, id: u64, path: &str, provisional: &JobKey) {
    assert!(table.register_job(provisional, JobMeta::default(), path, T));
    table.expect_cgroup(path, provisional);
    table.made_cgroup(path, Some(id));
    // The mkdir event arrives after: already known.
    assert_eq!(table.add_cgroup(id, path, 0, T), Added::AlreadyKnown);
    table.arm(id);
}
