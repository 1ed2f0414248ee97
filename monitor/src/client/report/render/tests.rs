use super::{format::wrap, style::bar, *};
use crate::{
    cli::ColorChoice,
    client::report::figures::{Counts, JobInput, NodeInput, report},
};

fn sample(nodes: usize) -> Report {
    let node = |i: usize| NodeInput {
        node: format!("n{i}:9959"),
        start_time: 1_795_000_000.0,
        end_time: Some(1_795_000_100.0),
        cpus: Some((2, CpusFrom::Cpuset)),
        memory: Some((1 << 30, MemoryFrom::Limit)),
        counts: Counts {
            cpu_seconds: 150.0 + i as f64,
            runqueue_wait_seconds: 1.5,
            memory_rss_peak_bytes: 512 << 20,
            oom_kills: u64::from(i == 1),
            ..Default::default()
        },
    };
    report(
        &JobInput {
            jobid: "42".into(),
            user: "alice".into(),
            name: "lammps".into(),
            source: "local daemon".into(),
            nodes: (0..nodes).map(node).collect(),
        },
        1_795_000_200.0,
    )
}

#[test]
fn plain_text_has_every_figure_and_no_escape() {
    let text = text(&sample(1), Style::choose(ColorChoice::Never, true, false));
    for expected in [
        "Job 42 of alice: lammps",
        "State        finished",
        "Node         n0:9959",
        "Started      2026-11-18 11:06:40 UTC",
        "Elapsed      00:01:40 (100.0 s)",
        "CPU time     150.000 s (00:02:30)",
        "Run-queue    1.0%  of the CPU time waiting for a CPU (1.500 s)",
        "Efficiency   75.0%  of 2 CPUs over the elapsed time (its cpuset)",
        "RSS peak     512.0MiB  50.0%  of the 1.0GiB limit",
        "OOM kills    0",
        "Started      0 processes, 0 threads, 0 execs",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains('\x1b') && !text.contains('█'), "{text}");
    assert!(
        !text.contains("Nodes"),
        "one local node has no node table:\n{text}"
    );
}

#[test]
fn a_terminal_gets_bars_and_colour_unless_no_color() {
    let coloured = text(&sample(1), Style::choose(ColorChoice::Auto, true, false));
    assert!(
        coloured.contains("\x1b[32m███████████████░░░░░"),
        "{coloured}"
    );
    let no_color = Style::choose(ColorChoice::Auto, true, true);
    assert_eq!(
        no_color,
        Style {
            colour: false,
            bars: true
        }
    );
    let piped = Style::choose(ColorChoice::Auto, false, false);
    assert_eq!(
        piped,
        Style {
            colour: false,
            bars: false
        }
    );
    assert_eq!(bar(0.0, 4), "░░░░");
    assert_eq!(bar(1.5, 4), "████");
    assert_eq!(bar(0.5625, 4), "██▎░");
}

#[test]
fn several_nodes_get_a_table_and_notes() {
    let text = text(&sample(3), Style::choose(ColorChoice::Never, false, false));
    assert!(
        text.contains("Nodes        3: n0:9959, n1:9959, n2:9959"),
        "{text}"
    );
    assert!(
        text.contains("NODE     STATE     CPU        EFFICIENCY"),
        "{text}"
    );
    assert!(
        text.contains("n1:9959  finished  151.000 s  75.5%"),
        "{text}"
    );
    assert!(text.contains("CPU time     453.000 s"), "{text}");
    assert!(
        text.contains("! the OOM killer killed 1 task of the job on n1:9959"),
        "{text}"
    );
}

#[test]
fn short_times_keep_their_microseconds_and_notes_wrap() {
    assert_eq!(seconds(0.001841788), "0.001842 s");
    assert_eq!(seconds(12.34567), "12.346 s");
    assert_eq!(wrap("aa bb cc", "  - ", "    ", 9), "  - aa bb\n    cc");
    assert_eq!(
        wrap("averylongword x", "- ", "  ", 5),
        "- averylongword\n  x"
    );
}

#[test]
fn json_has_the_same_figures() {
    let value: serde_json::Value = serde_json::from_str(&json(&[sample(2)]).unwrap()).unwrap();
    let job = &value[0];
    assert_eq!(job["cpu_seconds"], 301.0);
    assert_eq!(job["cpu_efficiency"], 301.0 / 400.0);
    assert_eq!(job["state"], "finished");
    assert_eq!(job["nodes"][1]["cpu_seconds"], 151.0);
    assert_eq!(job["nodes"][1]["cpus_from"], "cpuset");
    assert_eq!(job["notes"][0]["kind"], "oom_killed");
    assert_eq!(job["context_switches"]["voluntary"], 0);
}
