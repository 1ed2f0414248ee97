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

fn daemon_cost_result() -> DaemonCostResult {
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
    DaemonCostResult {
        jobs: 1000,
        threads_per_job: 10,
        window: Duration::from_secs(20),
        with_jobs: vec![phase(1000, 0.1, 3.0)],
        without_jobs: vec![phase(0, 0.05, 1.0)],
    }
}

fn retention_result() -> RetentionResult {
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
    RetentionResult {
        jobs: 10_000,
        max_cgroups: 32_768,
        rounds: vec![round],
    }
}

fn full_report() -> Report {
    use crate::bench::program_cost::{Cell, Workload, WorkloadCost};
    let mut report = report();
    let cells = BTreeMap::from([
        (
            "bench_floor".to_string(),
            Cell {
                ns_per_run: Some(30.0),
                runs_per_s: 5000.0,
            },
        ),
        (
            "rss_stat".to_string(),
            Cell {
                ns_per_run: Some(60.0),
                runs_per_s: 70.0,
            },
        ),
    ]);
    report.cost = Some(CostResult {
        attached: vec!["rss_stat".into(), "task_newtask".into()],
        not_attached: vec!["oom_mark_victim".into()],
        workloads: Workload::ALL
            .iter()
            .map(|w| WorkloadCost {
                workload: *w,
                seconds: 5.0,
                cells: cells.clone(),
                all_ns_per_s: 12_345.0,
                event_ns: 99_000.0,
            })
            .collect(),
        job_counters: vec![("execs".into(), 100.0)],
        no_oom: None,
        round_trips: 200_000,
        io_blocks: 200_000,
        net_bytes: 200_000_000,
        cpu: 1,
    });
    report.slowdown = Some(SlowdownResult {
        without_us: vec![10.0, 11.0],
        with_us: vec![10.05, 11.3],
        round_trips: 200_000,
        cpu: 1,
    });
    report.io = Some(slowdown(Kind::Io, 1.01));
    report.io_outside = Some(slowdown(Kind::IoOutside, 1.02));
    report.faults = Some(slowdown(Kind::Faults, 1.01));
    report.network = Some(slowdown(Kind::Network, 0.99));
    report.processes = Some(slowdown(Kind::Processes, 1.01));
    report.daemon_cost = Some(daemon_cost_result());
    report.retention = Some(retention_result());
    report.scale = Some(scale_result(30.0));
    report
}

/// `report` with nothing but the registrations.
fn only_registrations() -> Report {
    report()
}

/// `report` with one more benchmark's result and no registrations.
fn only(set: impl FnOnce(&mut Report)) -> Report {
    let mut partial = report();
    partial.registrations = None;
    set(&mut partial);
    partial
}

/// The goal rows of `document`'s goals table, first cells (the key) first.
fn goal_rows_of(document: &str) -> Vec<&str> {
    markdown::block(document, GOALS)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("| `"))
        .collect()
}

#[test]
fn every_part_of_a_full_report_is_in_its_marked_block() {
    let full = full_report().markdown();
    for bench in Benchmark::ALL {
        let section = markdown::block(&full, &bench.key())
            .unwrap_or_else(|| panic!("no block for {bench:?}"));
        assert!(
            section.starts_with(&format!("## {}. ", bench.number())),
            "{section}"
        );
    }
    assert!(
        markdown::block(&full, MACHINE)
            .unwrap()
            .starts_with("## Machine\n")
    );
    assert!(
        markdown::block(&full, METHOD)
            .unwrap()
            .starts_with("## Method\n")
    );
    assert!(full.contains(
        "<!-- bench:daemon-cost -->\n## 7. The daemon's own cost with 1000 jobs and 10000 tasks\n\n"
    ));
    assert!(full.ends_with("|\n\n<!-- /bench:goals -->\n"), "{full}");
    let keys: Vec<&str> = goal_rows_of(&full)
        .iter()
        .map(|row| row.split(" | ").next().unwrap())
        .collect();
    assert_eq!(keys.len(), 17);
    assert_eq!(keys[0], "| `slowdown`");
    assert_eq!(keys[15], "| `retention`");
    assert_eq!(keys[16], "| `processes`");
}

#[test]
fn an_only_run_replaces_exactly_its_own_section_and_goals() {
    let full = full_report().markdown();
    let merged = merge(&full, &only(|r| r.scale = Some(scale_result(40.0))));
    for bench in Benchmark::ALL {
        let (before, after) = (
            markdown::block(&full, &bench.key()),
            markdown::block(&merged, &bench.key()),
        );
        if bench == Benchmark::Scale {
            let after = after.unwrap();
            assert!(after.starts_with(
                "## 8. /metrics and memory with 1000 jobs\n\n_This section: `cargo xtask bench --only`, 2030-01-01 00:00 UTC, 1 rounds;"
            ));
            assert!(after.contains("| /metrics, p99 | 40.00 ms | <= 20 ms | MISS"));
        } else {
            assert_eq!(before, after, "{bench:?}");
        }
    }
    assert_eq!(
        markdown::block(&full, MACHINE),
        markdown::block(&merged, MACHINE)
    );
    // Same rows, in the same order, but scale's.
    let (before, after) = (goal_rows_of(&full), goal_rows_of(&merged));
    assert_eq!(before.len(), after.len());
    for (before, after) in before.iter().zip(&after) {
        if before.starts_with("| `scale` |") {
            assert!(after.starts_with("| `scale` |"));
        } else {
            assert_eq!(before, after);
        }
    }
    assert!(
        merged.contains("| `scale` | /metrics p99 with 1000 jobs | 40.00 ms | <= 20 ms | MISS")
    );
    // Again: replaced, not repeated; merging is stable.
    let again = merge(&merged, &only(|r| r.scale = Some(scale_result(40.0))));
    assert_eq!(again, merged);
    assert_eq!(again.matches("<!-- bench:scale -->").count(), 1);
}

#[test]
fn sections_a_report_lacks_go_in_their_place() {
    let existing = full_report().markdown();
    let mut partial_existing = full_report();
    partial_existing.io = None;
    partial_existing.retention = None;
    let existing_without = partial_existing.markdown();
    assert!(markdown::block(&existing_without, "io").is_none());
    let merged = merge(
        &existing_without,
        &only(|r| r.io = Some(slowdown(Kind::Io, 1.2))),
    );
    let io = merged.find("<!-- bench:io -->").unwrap();
    let slowdown = merged.find("<!-- /bench:slowdown -->").unwrap();
    let io_outside = merged.find("<!-- bench:io-outside -->").unwrap();
    assert!(slowdown < io && io < io_outside);
    assert!(markdown::block(&merged, "retention").is_none());
    let rows = goal_rows_of(&merged);
    let io_row = rows.iter().position(|r| r.starts_with("| `io` |")).unwrap();
    assert!(rows[io_row - 1].starts_with("| `slowdown` |"));
    assert!(rows[io_row + 1].starts_with("| `io-outside` |"));
    assert!(rows[io_row].contains("| +20.0% | <= 2% | MISS"));
    // The full report's io section had other figures.
    assert_ne!(
        markdown::block(&existing, "io"),
        markdown::block(&merged, "io")
    );
}

#[test]
fn parts_of_benchmarks_that_exist_no_more_are_dropped() {
    let existing = full_report().markdown().replace(
        "<!-- /bench:goals -->",
        "| `sched-switch` | sched_switch cost per run | 3.30x | <= 3x | MISS |\n<!-- /bench:goals -->",
    ) + "<!-- bench:sched-switch -->\n## 12. Gone\n\ngone\n\n<!-- /bench:sched-switch -->\n";
    let merged = merge(&existing, &only_registrations());
    assert!(!merged.contains("sched_switch cost per run"));
    assert!(!merged.contains("gone"));
    assert_eq!(goal_rows_of(&merged).len(), 17);
}

#[test]
fn without_an_earlier_marked_report_the_partial_one_is_written_whole() {
    for existing in [
        "",
        "# Benchmark results\n\n## 9. Launcher registrations\n\nearlier figures\n\n## Goals\n\n",
    ] {
        let merged = merge(existing, &only_registrations());
        assert_eq!(merged, only_registrations().markdown());
        assert!(!merged.contains("earlier figures"));
        assert!(merged.contains("<!-- bench:registrations -->\n## 9. Launcher registrations\n\n"));
    }
}

#[test]
fn the_method_is_brought_up_to_date() {
    let existing = full_report()
        .markdown()
        .replace("- **Slowdowns**", "- **Old slowdowns**");
    let merged = merge(&existing, &only_registrations());
    assert!(!merged.contains("Old slowdowns"));
    assert_eq!(
        markdown::block(&merged, METHOD),
        Some(method_section().as_str())
    );
}

fn scale_result(p99_ms: f64) -> ScaleResult {
    ScaleResult {
        jobs: 1000,
        scrape_ms: vec![10.0, 12.0, p99_ms],
        body_bytes: 900_000,
        rss_kib: 15_000,
        hwm_kib: 16_000,
        sample_ms: Some(7.5),
    }
}

/// The goals of `report` as (benchmark, name, shown figure, target, verdict).
fn judged(report: &Report) -> Vec<(Benchmark, String, String, String, &'static str)> {
    report
        .goals()
        .into_iter()
        .map(|(bench, g)| {
            (
                bench,
                g.name.clone(),
                g.measured_text(),
                g.target(),
                g.verdict(report.trusted),
            )
        })
        .collect()
}

#[test]
fn registration_latency_is_judged_on_the_paced_runs() {
    let report = only_registrations();
    let goals: Vec<(String, bool)> = report
        .goals()
        .into_iter()
        .map(|(_, goal)| (goal.name.clone(), goal.met()))
        .collect();
    assert_eq!(
        goals,
        [
            (
                "registrations per second, 100 concurrent launchers".to_string(),
                true
            ),
            ("registration latency p99, paced at 1000/s".to_string(), true),
            (
                "registration latency p99, paced at 1000/s, two scrapes of 10000 finished jobs running"
                    .to_string(),
                false
            ),
        ]
    );
    let section = report.registrations.as_ref().unwrap().section(&report).body;
    assert!(section.contains("| **median** |  |  | **2000** | **2.00** |"));
    assert!(section.contains(
        "Goals: registrations per second, 100 concurrent launchers >= 1000/s: **PASS (too few rounds to judge)**"
    ));
}

#[test]
fn a_failed_registration_misses_its_goal_whatever_the_figure() {
    let mut report = only_registrations();
    report.trusted = true;
    if let Some(r) = report.registrations.as_mut() {
        r.rounds[0].paced.failures = 1;
    }
    let paced = &judged(&report)[1];
    assert_eq!(paced.1, "registration latency p99, paced at 1000/s");
    assert_eq!((paced.2.as_str(), paced.4), ("0.90 ms", "MISS"));
}

#[test]
fn every_goal_is_judged_and_printed_from_its_declaration() {
    let mut report = full_report();
    report.trusted = true;
    let goals = judged(&report);
    let row = |name: &str| {
        goals
            .iter()
            .find(|g| g.1 == name)
            .map(|g| (g.0, g.2.as_str(), g.3.as_str(), g.4))
            .unwrap_or_else(|| panic!("no goal {name}"))
    };
    assert_eq!(
        row("pipe ping-pong slowdown"),
        (Benchmark::Slowdown, "+1.6%", "<= 1%", "MISS")
    );
    assert_eq!(
        row("IO-heavy job slowdown (dd, 512-byte blocks)"),
        (Benchmark::Io, "+1.0%", "<= 2%", "PASS")
    );
    assert_eq!(
        row("dd outside any job, slowdown"),
        (Benchmark::IoOutside, "+2.0%", "<= 1%", "MISS")
    );
    // No RSS counted for the page-fault job: the figure is not judged.
    assert_eq!(
        row("page-fault-heavy job slowdown (1 GiB in 4 KiB pages)"),
        (
            Benchmark::Faults,
            "+1.0% (RSS not counted: rss_stat did not run)",
            "<= 3%",
            "INVALID"
        )
    );
    assert_eq!(
        row("network-heavy job slowdown (loopback TCP)"),
        (Benchmark::Network, "-1.0%", "<= 5%", "PASS")
    );
    // The second window: 0.09 s of 20 s, 0.45%. The only program is the
    // walk, which ran in the daemon's read: in that 0.09 s already.
    assert_eq!(
        row("daemon CPU with 1000 jobs and 10000 tasks"),
        (Benchmark::DaemonCost, "0.450% of one core", "<= 1%", "PASS")
    );
    assert_eq!(
        row("one sample with 10000 job tasks"),
        (Benchmark::DaemonCost, "7.00 ms", "<= 15 ms", "PASS")
    );
    assert_eq!(
        row("/metrics p99 with 1000 jobs"),
        (Benchmark::Scale, "30.00 ms", "<= 20 ms", "MISS")
    );
    assert_eq!(
        row("daemon RSS with 1000 jobs"),
        (Benchmark::Scale, "15.4 MB", "<= 20 MB", "PASS")
    );
    assert_eq!(
        row("registrations per second, 100 concurrent launchers"),
        (Benchmark::Registrations, "2000/s", ">= 1000/s", "PASS")
    );
    assert_eq!(
        row("/metrics p99 with 10000 finished jobs"),
        (Benchmark::Retention, "150.00 ms", "<= 200 ms", "PASS")
    );
    assert_eq!(
        row("daemon RSS with 10000 finished jobs"),
        (Benchmark::Retention, "41.0 MB", "<= 50 MB", "PASS")
    );
    let d = report.daemon_cost.as_ref().unwrap();
    assert!((d.credit_ns_per_job_task() - 200.0).abs() < 1e-6);
}

#[test]
fn sections_show_the_goals_verdicts() {
    let mut report = full_report();
    report.trusted = true;
    let full = report.markdown();
    let section = |bench: Benchmark| markdown::block(&full, &bench.key()).unwrap();
    assert!(section(Benchmark::Slowdown).contains("= +1.6%; goal <= 1%: **MISS**."));
    assert!(section(Benchmark::Faults).contains("slowdown = +1.0%; goal <= 3%: **INVALID**."));
    assert!(section(Benchmark::DaemonCost).contains("| <= 1% | PASS |"));
    assert!(section(Benchmark::Scale).contains("| /metrics, p99 | 30.00 ms | <= 20 ms | MISS |"));
    assert!(
        section(Benchmark::Retention)
            .contains("| Daemon VmRSS | 41.0 MB (40000 KiB) | <= 50 MB | PASS |")
    );
    assert!(
        section(Benchmark::Retention)
            .contains("| Profiles written per second | 5000/s (all 10000 in 2.00 s) |")
    );
    assert!(report.summary().contains(
        "  INVALID page-fault-heavy job slowdown (1 GiB in 4 KiB pages): +1.0% (RSS not counted: rss_stat did not run) (goal <= 3%)"
    ));
}

#[test]
fn benchmark_keys_are_the_only_flags_names() {
    for bench in Benchmark::ALL {
        assert_eq!(Benchmark::from_key(&bench.key()), Some(bench));
    }
    assert_eq!(Benchmark::DaemonCost.key(), "daemon-cost");
    assert_eq!(Benchmark::IoOutside.key(), "io-outside");
    assert_eq!(Benchmark::from_key(GOALS), None);
}

/// bench/RESULTS.md as checked in.
const RESULTS: &str = include_str!("../../../../bench/RESULTS.md");

#[test]
fn the_checked_in_results_are_kept_whole_by_a_run_of_nothing() {
    let mut nothing = report();
    nothing.registrations = None;
    let merged = merge(RESULTS, &nothing);
    // Only the method is rewritten, by the code's own.
    let method = |document: &str| markdown::block(document, METHOD).unwrap().to_string();
    assert_eq!(
        merged.replace(&method(&merged), ""),
        RESULTS.replace(&method(RESULTS), "")
    );
    for bench in Benchmark::ALL {
        assert!(
            markdown::block(RESULTS, &bench.key()).is_some(),
            "{bench:?}"
        );
    }
    assert_eq!(
        merge::goal_rows(markdown::block(RESULTS, GOALS).unwrap()).count(),
        17
    );
}
