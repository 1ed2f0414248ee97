use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::*;
use crate::bench::{
    bpf_stats::RunStats,
    daemon_cost::Phase,
    job_slowdown::Kind,
    registrations::{RegistrationRound, Run},
    retention::RetentionRound,
    system::Environment,
};

fn report() -> Report {
    let run = |registrations: usize, wall_s: f64, latency_ms: Vec<f64>| Run {
        registrations,
        failures: 0,
        wall_s,
        latency_ms,
    };
    let round = RegistrationRound {
        back_to_back: run(5000, 2.5, vec![1.0, 2.0, 50.0]),
        solo: run(200, 0.2, vec![0.5, 0.6]),
        paced: run(2000, 2.0, vec![0.7, 0.9]),
        scraped: run(2000, 2.0, vec![0.8, 12.0]),
        scrapes_ms: vec![150.0, 170.0],
    };
    let mut report = Report::new(
        Environment {
            date: "2030-01-01 00:00 UTC".into(),
            kernel: "6.18".into(),
            cpu_model: "test".into(),
            cpus: 2,
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
        },
        1,
        5,
    );
    report.foreign_programs = vec![0, 0];
    report.registrations = Some(RegistrationResult {
        launchers: 100,
        per_launcher: 50,
        finished_jobs: 10_000,
        rounds: vec![round],
        first_failure: None,
    });
    report
}

/// A report of the current layout, and one of the layout before it.
const EXISTING: &str = "# Benchmark results\n\nintro\n\n## Machine\n\nm\n\n## Method\n\nold method\n\n\
## 8. /metrics and memory with 1000 jobs\n\nscale\n\n## Goals\n\n\
| Goal | Measured | Target | Result |\n|---|---|---|---|\n\
| pipe ping-pong slowdown | +14.0% | <= 1% | MISS |\n\
| daemon RSS with 1000 jobs | 14.4 MB | <= 20 MB | PASS |\n";

const OLD_LAYOUT: &str = "# Benchmark results\n\nintro\n\n## Machine\n\nm\n\n\
## 1. Cost per program run (bpf_stats)\n\nold cost\n\n\
## 3. /metrics and memory with 1000 jobs\n\nscale\n\n\
## 5. Cost per run of the memory, IO and network programs (bpf_stats)\n\ngone\n\n\
## 6. IO-heavy job slowdown\n\nold io\n\n## Goals\n\n\
| Goal | Measured | Target | Result |\n|---|---|---|---|\n\
| pipe ping-pong slowdown | +15.5% | <= 5% | MISS |\n\
| sched_switch cost per run | 3.30x the floor | <= 3x the empty program | MISS |\n\
| daemon RSS with 1000 jobs | 17.2 MB | <= 20 MB | PASS |\n";

#[test]
fn an_only_run_replaces_its_own_parts_and_keeps_the_rest() {
    let merged = merge(EXISTING, &report());
    assert!(merged.starts_with("# Benchmark results\n\nintro\n\n## Machine\n\nm\n\n## Method\n\n"));
    assert!(!merged.contains("old method"));
    assert!(merged.contains(
        "## 8. /metrics and memory with 1000 jobs\n\nscale\n\n## 9. Launcher registrations\n\n_This section"
    ));
    assert!(merged.contains("| pipe ping-pong slowdown | +14.0% | <= 1% | MISS |"));
    assert!(merged.contains("| daemon RSS with 1000 jobs | 14.4 MB | <= 20 MB | PASS |"));
    assert!(
        merged.contains(
            "| registrations per second, 100 concurrent launchers | 2000/s | >= 1000/s |"
        )
    );
    // Goals in section order: ping-pong, scale, registrations.
    let ping = merged.find("| pipe ping-pong").unwrap();
    let rss = merged.find("| daemon RSS with 1000").unwrap();
    let reg = merged.find("| registrations per second").unwrap();
    assert!(ping < rss && rss < reg);
    // Again: replaced, not repeated.
    let again = merge(&merged, &report());
    assert_eq!(again.matches("## 9. Launcher registrations").count(), 1);
    assert_eq!(again.matches("| registrations per second").count(), 1);
    assert_eq!(
        again
            .matches("| registration latency p99, paced at 1000/s |")
            .count(),
        1
    );
    assert_eq!(
        again
            .matches("| registration latency p99, paced at 1000/s, two scrapes of 10000 finished jobs running |")
            .count(),
        1
    );
    assert_eq!(again.matches("| pipe ping-pong slowdown").count(), 1);
}

#[test]
fn sections_of_an_older_layout_are_renumbered_or_dropped() {
    let merged = merge(OLD_LAYOUT, &report());
    assert!(merged.contains("## 1. Cost per program run (bpf_stats)\n\nold cost"));
    assert!(merged.contains("## 8. /metrics and memory with 1000 jobs\n\nscale"));
    assert!(!merged.contains("## 3. /metrics"));
    assert!(!merged.contains("gone"));
    // The old IO section's title is the new section 3's.
    assert!(merged.contains("## 3. IO-heavy job slowdown\n\nold io"));
    assert!(!merged.contains("sched_switch cost per run"));
    assert!(merged.contains("| daemon RSS with 1000 jobs | 17.2 MB |"));
    let sections: Vec<&str> = merged
        .lines()
        .filter(|l| l.starts_with("## ") && is_numbered(&format!("{l}\n")))
        .collect();
    assert_eq!(
        sections,
        [
            "## 1. Cost per program run (bpf_stats)",
            "## 3. IO-heavy job slowdown",
            "## 8. /metrics and memory with 1000 jobs",
            "## 9. Launcher registrations",
        ]
    );
}

fn slowdown(kind: Kind, with: f64) -> JobSlowdownResult {
    JobSlowdownResult {
        kind,
        without_s: vec![1.0, 1.0],
        with_s: vec![with, with],
        repeats: 3,
        size: match kind {
            Kind::Faults => 1 << 30,
            _ => 200_000,
        },
        cpus: (1, 1),
        credited: 3.0 * 102_400_000.0,
        rss_peak: (kind == Kind::Faults).then_some(0.0),
        faults_per_run: None,
    }
}

#[test]
fn slowdowns_have_their_own_sections_and_goals() {
    let mut partial = report();
    partial.registrations = None;
    partial.io = Some(slowdown(Kind::Io, 1.2));
    partial.io_outside = Some(slowdown(Kind::IoOutside, 1.005));
    partial.faults = Some(slowdown(Kind::Faults, 1.01));
    partial.network = Some(slowdown(Kind::Network, 1.01));
    let merged = merge(EXISTING, &partial);
    assert!(merged.contains("## 3. IO-heavy job slowdown\n\n_This section"));
    assert!(merged.contains("## 4. dd outside any job\n\n_This section"));
    assert!(merged.contains("## 5. Page-fault-heavy job slowdown\n\n_This section"));
    assert!(merged.contains("## 6. Network-heavy job slowdown\n\n_This section"));
    assert!(merged.contains("| IO-heavy job slowdown (dd, 512-byte blocks) | +20.0% | <= 2% |"));
    assert!(merged.contains("| dd outside any job, slowdown | +0.5% | <= 1% |"));
    assert!(merged.contains("| network-heavy job slowdown (loopback TCP) | +1.0% | <= 5% |"));
    // No RSS counted for the page-fault job: the figure is not judged.
    assert!(merged.contains(
        "| page-fault-heavy job slowdown (1 GiB in 4 KiB pages) | +1.0% (RSS not counted: rss_stat did not run) | <= 3% | INVALID |"
    ));
    // The others' rows stay; a second run replaces its own.
    assert!(merged.contains("| pipe ping-pong slowdown | +14.0% | <= 1% | MISS |"));
    partial.network = None;
    let again = merge(&merged, &partial);
    assert_eq!(again.matches("| IO-heavy job slowdown").count(), 1);
    assert_eq!(again.matches("| network-heavy job slowdown").count(), 1);
    assert_eq!(again.matches("## 3. IO-heavy").count(), 1);
    assert_eq!(again.matches("## 6. Network-heavy").count(), 1);
}

#[test]
fn the_daemons_own_cost_is_judged_with_its_jobs() {
    let phase = |jobs: u32, daemon_cpu_s: f64, iterator_ms: f64| Phase {
        jobs,
        job_tasks: f64::from(jobs * 10),
        node_tasks: 10_120.0,
        window_s: 20.0,
        daemon_cpu_s,
        quiet_daemon_cpu_s: daemon_cpu_s * 0.9,
        quiet_window_s: 20.0,
        programs: BTreeMap::from([(
            "tracked_task_iter".to_string(),
            RunStats {
                run_time_ns: iterator_ms * 1e6 * 20.0,
                run_count: 10_121.0 * 20.0,
            },
        )]),
        samples: 20.0,
        sample_ms: vec![6.0, 7.0, 8.0],
        credit_ms: vec![3.0, 3.5, 4.0],
        floor_walk_ms: vec![0.5, 0.6],
        floor: RunStats {
            run_time_ns: 1e6,
            run_count: 20_242.0,
        },
    };
    let mut partial = report();
    partial.registrations = None;
    partial.daemon_cost = Some(DaemonCostResult {
        jobs: 1000,
        threads_per_job: 10,
        window: Duration::from_secs(20),
        with_jobs: vec![phase(1000, 0.1, 3.0)],
        without_jobs: vec![phase(0, 0.05, 1.0)],
    });
    // The second window: 0.09 s of 20 s, 0.45%. The only program is the
    // walk, which ran in the daemon's read: in that 0.09 s already.
    let merged = merge(EXISTING, &partial);
    assert!(
        merged.contains(
            "## 7. The daemon's own cost with 1000 jobs and 10000 tasks\n\n_This section"
        )
    );
    assert!(merged.contains(
        "| daemon CPU with 1000 jobs and 10000 tasks | 0.450% of one core | <= 1% | PASS"
    ));
    assert!(merged.contains("| one sample with 10000 job tasks | 7.00 ms | <= 15 ms | PASS"));
    let d = partial.daemon_cost.as_ref().unwrap();
    assert!((d.credit_ns_per_job_task() - 200.0).abs() < 1e-6);
    let again = merge(&merged, &partial);
    assert_eq!(again.matches("| daemon CPU with").count(), 1);
}

#[test]
fn finished_job_goals_are_not_taken_for_the_scale_ones() {
    let round = RetentionRound {
        rmdir_s: 0.5,
        written_s: 2.0,
        finished_s: 2.5,
        commits: 3.0,
        last_commit_ms: 120.0,
        db_bytes: 30_000_000,
        wal_bytes: 1_000_000,
        scrape_ms: vec![100.0, 150.0],
        body_bytes: 8_000_000,
        rss_kib: 40_000,
        hwm_kib: 60_000,
        api_ms: vec![300.0],
        api_bytes: 20_000_000,
        api_jobs: 10_000,
        sample_ms: Some(30.0),
        burst_sample_ms: 300.0,
        map_full: 0.0,
        ring_full: 0.0,
    };
    let mut partial = report();
    partial.registrations = None;
    partial.retention = Some(RetentionResult {
        jobs: 10_000,
        max_cgroups: 32_768,
        rounds: vec![round],
    });
    let merged = merge(EXISTING, &partial);
    assert!(merged.contains(
        "## 10. Finished jobs: profiles written, and /metrics with 10000 in retention\n\n_This section"
    ));
    assert!(merged.contains("| Profiles written per second | 5000/s (all 10000 in 2.00 s) |"));
    assert!(merged.contains("| /metrics p99 with 10000 finished jobs | 150.00 ms | <= 200 ms |"));
    assert!(merged.contains("| daemon RSS with 10000 finished jobs | 41.0 MB | <= 50 MB |"));
    let again = merge(&merged, &partial);
    assert_eq!(
        again
            .matches("| daemon RSS with 10000 finished jobs")
            .count(),
        1
    );
    assert_eq!(
        again
            .matches("| daemon RSS with 1000 jobs | 14.4 MB")
            .count(),
        1
    );
    assert_eq!(again.matches("## 10. Finished jobs").count(), 1);
}

#[test]
fn without_an_earlier_report_the_partial_one_is_written_whole() {
    let merged = merge("", &report());
    assert!(merged.contains("## 9. Launcher registrations"));
    assert!(merged.contains("## Goals"));
}

#[test]
fn every_section_starts_with_its_heading() {
    for (bench, title) in TITLES {
        let expected = format!("## {}. {title}", order(bench) + 1);
        assert_eq!(heading(bench), expected);
        assert_eq!(
            section_bench(&format!("{expected} and more\n")),
            Some(bench)
        );
    }
    assert_eq!(section_bench("## Goals\n"), None);
    assert_eq!(section_bench("## 5. Cost per run of the memory\n"), None);
}

#[test]
fn registration_latency_is_judged_on_the_paced_runs() {
    let report = report();
    let goals: Vec<(String, bool)> = report
        .goals()
        .into_iter()
        .filter(|goal| goal.bench == Benchmark::Registrations)
        .map(|goal| (goal.what, goal.pass))
        .collect();
    assert_eq!(
        goals,
        [
            (
                "registrations per second, 100 concurrent launchers".to_string(),
                true
            ),
            (
                "registration latency p99, paced at 1000/s".to_string(),
                true
            ),
            (
                "registration latency p99, paced at 1000/s, two scrapes of 10000 finished jobs running"
                    .to_string(),
                false
            ),
        ]
    );
    // The back-to-back p99 goal of an earlier report goes; its figure stays in the section.
    let existing = format!(
        "{EXISTING}| registration latency p99, 100 concurrent launchers | 74.43 ms | <= 10 ms | MISS |\n"
    );
    let merged = merge(&existing, &report);
    assert!(!merged.contains("| registration latency p99, 100 concurrent launchers"));
    let section = report.registrations_section();
    assert!(section.contains("| **median** |  |  | **2000** | **2.00** |"));
    assert!(
        section.contains(
            "Goals: registrations per second, 100 concurrent launchers >= 1000/s: **PASS"
        )
    );
}
