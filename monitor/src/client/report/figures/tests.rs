use super::*;

fn node(name: &str, cpu: f64, start: f64, end: Option<f64>) -> NodeInput {
    NodeInput {
        node: name.into(),
        start_time: start,
        end_time: end,
        cpus: Some((4, CpusFrom::Cpuset)),
        memory: Some((1 << 30, MemoryFrom::Limit)),
        counts: Counts {
            cpu_seconds: cpu,
            memory_rss_peak_bytes: 100 << 20,
            ..Default::default()
        },
    }
}

fn job(nodes: Vec<NodeInput>) -> JobInput {
    JobInput {
        jobid: "42".into(),
        user: "alice".into(),
        name: "lammps".into(),
        source: "test".into(),
        nodes,
    }
}

fn kinds(report: &Report) -> Vec<NoteKind> {
    report.notes.iter().map(|n| n.kind).collect()
}

#[test]
fn efficiency_is_cpu_time_over_elapsed_times_cpus() {
    // 4 CPUs for 100 s, 300 CPU seconds used: 75%.
    let report = report(&job(vec![node("n1", 300.0, 1000.0, Some(1100.0))]), 5000.0);
    assert_eq!(report.state, State::Finished);
    assert_eq!(report.elapsed_seconds, 100.0);
    assert_eq!(report.cpus_allocated, Some(4));
    assert_eq!(report.cpu_efficiency, Some(0.75));
    assert_eq!(report.nodes[0].cpu_efficiency, Some(0.75));
    assert_eq!(report.end_time, Some(1100.0));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn several_nodes_sum_and_weigh_each_node_by_its_own_time() {
    // n1: 4 CPUs x 100 s, 200 s used; n2: 4 CPUs x 50 s, 200 s used.
    let nodes = vec![
        node("n1", 200.0, 1000.0, Some(1100.0)),
        node("n2", 200.0, 1020.0, Some(1070.0)),
    ];
    let report = report(&job(nodes), 5000.0);
    assert_eq!(report.totals.cpu_seconds, 400.0);
    assert_eq!(report.cpus_allocated, Some(8));
    assert_eq!(report.cpu_efficiency, Some(400.0 / 600.0));
    assert_eq!(report.nodes[1].cpu_efficiency, Some(1.0));
    assert_eq!((report.start_time, report.elapsed_seconds), (1000.0, 100.0));
    assert_eq!(report.totals.memory_rss_peak_bytes, 200 << 20);
}

#[test]
fn a_running_node_makes_the_job_running_until_now() {
    let nodes = vec![
        node("n1", 10.0, 1000.0, Some(1100.0)),
        node("n2", 10.0, 1000.0, None),
    ];
    let report = report(&job(nodes), 1200.0);
    assert_eq!(report.state, State::Running);
    assert_eq!(report.end_time, None);
    assert_eq!(report.elapsed_seconds, 200.0);
    assert_eq!(report.nodes[1].state, State::Running);
    assert_eq!(report.nodes[1].elapsed_seconds, 200.0);
}

#[test]
fn low_efficiency_is_flagged_but_not_for_a_short_job() {
    let idle = report(&job(vec![node("n1", 40.0, 0.0, Some(100.0))]), 100.0);
    assert_eq!(idle.cpu_efficiency, Some(0.1));
    assert_eq!(kinds(&idle), vec![NoteKind::LowEfficiency]);
    assert!(idle.notes[0].text.contains("10.0%"), "{:?}", idle.notes);
    assert!(idle.notes[0].text.contains("0.40 of its 4 CPUs"));
    // 5 ms of CPU in a job whose end came at the next sample.
    let short = report(&job(vec![node("n1", 0.005, 0.0, Some(0.3))]), 1.0);
    assert_eq!(kinds(&short), vec![NoteKind::ShortJob]);
    assert!(short.notes[0].text.contains("exact"));
}

#[test]
fn memory_near_its_limit_and_oom_kills_are_flagged_per_node() {
    let mut n2 = node("n2", 300.0, 0.0, Some(100.0));
    n2.counts.memory_rss_peak_bytes = 980 << 20;
    n2.counts.oom_kills = 1;
    let report = report(&job(vec![node("n1", 300.0, 0.0, Some(100.0)), n2]), 100.0);
    assert_eq!(report.memory_peak_node.as_deref(), Some("n2"));
    assert_eq!(report.memory_peak_ratio, Some(980.0 / 1024.0));
    assert_eq!(
        kinds(&report),
        vec![NoteKind::OomKilled, NoteKind::MemoryNearLimit]
    );
    assert!(
        report.notes[0]
            .text
            .contains("killed 1 task of the job on n2")
    );
    assert!(
        report.notes[1]
            .text
            .contains("95.7% of its memory limit on n2")
    );
}

#[test]
fn run_queue_wait_share_is_wait_over_cpu_time() {
    let mut n1 = node("n1", 300.0, 0.0, Some(100.0));
    n1.counts.runqueue_wait_seconds = 150.0;
    let report = report(&job(vec![n1]), 100.0);
    assert_eq!(report.runqueue_wait_share, Some(0.5));
    assert_eq!(kinds(&report), vec![NoteKind::RunqueueWait]);
    assert!(report.notes[0].text.starts_with(
        "your job waited 50.0% of its CPU time for a CPU: it ran more threads than cores"
    ));
}

#[test]
fn fallbacks_are_said_and_unknowns_left_out() {
    let mut n1 = node("n1", 100.0, 0.0, Some(100.0));
    n1.cpus = Some((2, CpusFrom::Node));
    n1.memory = Some((8 << 30, MemoryFrom::NodeMemTotal));
    let report = report(&job(vec![n1]), 100.0);
    assert_eq!(report.cpu_efficiency, Some(0.5));
    assert_eq!(
        kinds(&report),
        vec![NoteKind::CpusFromNode, NoteKind::MemoryFromNode]
    );
    assert!(report.notes[0].text.contains("all 2 CPUs of the node"));

    let mut n2 = node("n2", 100.0, 0.0, Some(100.0));
    n2.cpus = None;
    n2.memory = None;
    let report = super::report(&job(vec![node("n1", 100.0, 0.0, Some(100.0)), n2]), 100.0);
    // Only n1's CPU over n1's CPUs.
    assert_eq!(report.cpu_efficiency, Some(0.25));
    assert_eq!(report.cpus_allocated, Some(4));
    assert_eq!(report.nodes[1].memory_peak_ratio, None);
    assert_eq!(kinds(&report), vec![NoteKind::CpusUnknown]);
    assert!(report.notes[0].text.starts_with("n2 report no CPUs"));
}

#[test]
fn nothing_to_divide_by_gives_no_ratio() {
    let mut n1 = node("n1", 0.0, 100.0, Some(100.0));
    n1.cpus = Some((0, CpusFrom::Cpuset));
    let report = report(&job(vec![n1]), 100.0);
    assert_eq!(report.cpu_efficiency, None);
    assert_eq!(report.runqueue_wait_share, None);
    let empty = super::report(&job(Vec::new()), 100.0);
    assert_eq!((empty.elapsed_seconds, empty.cpu_efficiency), (0.0, None));
}
