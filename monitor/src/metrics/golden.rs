//! The golden `/metrics` test: a fixed snapshot rendered in both formats the
//! web port serves and compared, byte for byte, with the checked-in metrics
//! reference, METRICS.md (node_exporter's `fixtures/e2e-output.txt` is the
//! model; see [`reference`]). Every exposed name is thus greppable there,
//! and a change to any family, help text, label or number format shows up
//! as a diff in review. One file for both formats and the reference: a new
//! counter changes one generated file.
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p monitor golden`
//! rewrites the file; commit it with the change.
mod reference;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use monitor_common::{CgroupCounters, DROP_REASONS};

use super::{Exposition, exposition::Format};
use crate::{
    api::ApiStats,
    kernel::program_stats::ProgramStats,
    launcher::stats::{Outcome, RegistrationStats},
    snapshot::{CgroupFileStats, Health, JobView, MapFill, SharedSnapshot, Snapshot},
    store::StoreFigures,
};

/// The build_info revision changes with every commit: shown as this.
const REVISION: &str = "REVISION";

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Every counter set, each to a distinct value (a family that showed
/// another's number would show in the diff). Filled by name through the
/// counters' serde form, so a new counter needs no line here; the memory
/// pair is set by hand, as its rules (current clamped at 0, peak at least
/// current) want.
fn counters(base: u64) -> CgroupCounters {
    let mut fields = serde_json::to_value(CgroupCounters::default()).expect("plain numbers");
    let map = fields.as_object_mut().expect("a struct");
    for (i, value) in map.values_mut().enumerate() {
        *value = serde_json::json!(base * (1_000 + 7 * i as u64));
    }
    map.insert(
        "rss_delta_bytes".into(),
        serde_json::json!(base * 1_048_576),
    );
    map.insert("rss_peak_bytes".into(), serde_json::json!(base * 2_097_152));
    serde_json::from_value(fields).expect("every field set")
}

pub(super) fn snapshot() -> Snapshot {
    let running = JobView {
        jobid: "4242".into(),
        user: "alice".into(),
        uid: 1000,
        name: "lammps \"in.lj\" \\ run".into(),
        launcher: "slurm".into(),
        labels: BTreeMap::from([
            ("partition".into(), "gpu".into()),
            ("step".into(), "0\nnext".into()),
        ]),
        cgroup: "/system.slice/slurmstepd.scope/job_4242".into(),
        counters: counters(2),
        files: CgroupFileStats {
            memory_current: Some(3_145_728),
            memory_peak: Some(4_194_304),
            io_read_bytes: Some(8_192),
            io_write_bytes: Some(24_576),
            cpus_allocated: Some(4),
            memory_limit_bytes: Some(8_589_934_592),
        },
        tasks: 12,
        start: at(1_764_460_800),
        end: None,
        series: Default::default(),
    };
    let finished = JobView {
        jobid: "task-7".into(),
        user: "bob".into(),
        uid: 1001,
        name: String::new(),
        launcher: String::new(),
        labels: BTreeMap::new(),
        cgroup: "/monitor.slice/task-7".into(),
        counters: counters(1),
        files: CgroupFileStats::default(),
        tasks: 0,
        start: at(1_764_460_000),
        end: Some(at(1_764_460_061)),
        series: Default::default(),
    };
    let mut drops = [0; DROP_REASONS];
    for (i, drop) in drops.iter_mut().enumerate() {
        *drop = i as u64 * 3;
    }
    Snapshot {
        jobs: vec![Arc::new(running), Arc::new(finished)],
        health: Health {
            programs: vec![
                ProgramStats {
                    name: "tracked_task_iter",
                    run_time: Duration::from_micros(4_500),
                    run_count: 10_003,
                },
                ProgramStats {
                    name: "rss_stat",
                    run_time: Duration::from_micros(230),
                    run_count: 1_000,
                },
            ],
            bpf_stats_enabled: true,
            maps: vec![
                MapFill {
                    name: "CGROUP_COUNTERS",
                    entries: 2,
                    capacity: 16_384,
                },
                MapFill {
                    name: "TASK_STATE",
                    entries: 12,
                    capacity: 16_384,
                },
            ],
            drops,
            sample_duration: Duration::from_micros(8_480),
            task_iter_duration: Duration::from_micros(6_850),
            sample_success: true,
            samples: 120,
            sample_errors: 1,
            cgroup_events: 14,
            rescans: 2,
            orphaned_cgroups: 1,
            jobs_evicted: 3,
            store: Some(StoreFigures::default()),
        },
    }
}

/// `/metrics` of [`snapshot`]: OpenMetrics, and the Prometheus text format.
fn rendered() -> (String, String) {
    let shared = Arc::new(SharedSnapshot::default());
    shared.publish(snapshot());
    let registrations = Arc::new(RegistrationStats::default());
    for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
        for _ in 0..i {
            registrations.count(outcome);
        }
    }
    let exposition = Exposition::new(shared, registrations, Arc::new(ApiStats::default()));
    let render = |format| {
        exposition
            .render(format)
            .expect("rendering a fixed snapshot")
            .replace(env!("MONITOR_GIT_REVISION"), REVISION)
    };
    (render(Format::OpenMetrics), render(Format::Prometheus))
}

/// METRICS.md, at the top of the workspace.
fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../METRICS.md")
}

fn checked_in() -> String {
    std::fs::read_to_string(reference_path()).expect("reading METRICS.md")
}

/// Under `UPDATE_GOLDEN=1` the whole-file test rewrites the file, and the
/// others do not read it meanwhile.
fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Panics, saying where `actual` first differs from `expected`.
fn compare(what: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let first = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    panic!(
        "{what} differs from the rendered /metrics from line {}:\n  expected: {:?}\n  actual:   {:?}\n\
         If the change is intended: UPDATE_GOLDEN=1 cargo test -p monitor golden",
        first + 1,
        expected.lines().nth(first),
        actual.lines().nth(first),
    );
}

/// One format's scrape, against its section of METRICS.md.
fn check_scrape(heading: &str, actual: &str) {
    if updating() {
        return;
    }
    let text = checked_in();
    let expected = reference::scrape(&text, heading).expect("METRICS.md has the section");
    compare(&format!("METRICS.md, {heading:?},"), expected, actual);
}

#[test]
fn golden_openmetrics() {
    check_scrape(reference::OPENMETRICS_HEADING, &rendered().0);
}

#[test]
fn golden_prometheus_text() {
    check_scrape(reference::PROMETHEUS_HEADING, &rendered().1);
}

/// The whole file: the families' table too.
#[test]
fn golden_metrics_reference() {
    let (openmetrics, prometheus) = rendered();
    let actual = reference::document(&openmetrics, &prometheus);
    if updating() {
        std::fs::write(reference_path(), actual).expect("writing METRICS.md");
        return;
    }
    compare("METRICS.md", &checked_in(), &actual);
}
