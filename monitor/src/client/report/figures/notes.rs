//! The report's plain-language notes: what is off (warnings), and how to
//! read figures that stand on a fallback.
use super::{
    CpusFrom, HIGH_WAIT_SHARE, LOW_EFFICIENCY, MEMORY_NEAR_LIMIT, MemoryFrom, Note, NoteKind,
    Report, SHORT_JOB_SECONDS, Severity,
};

/// "on node X" when the job ran on more than one node.
fn on_node(report: &Report, node: &str) -> String {
    if report.nodes.len() > 1 {
        format!(" on {node}")
    } else {
        String::new()
    }
}

/// The plain-language notes: what is off first (warnings), then how to
/// read figures that stand on a fallback.
pub fn notes(report: &Report) -> Vec<Note> {
    let mut notes = Vec::new();
    let mut note = |kind, severity, text: String| {
        notes.push(Note {
            kind,
            severity,
            text,
        })
    };
    let kills = report.totals.oom_kills;
    if kills > 0 {
        let nodes: Vec<&str> = report
            .nodes
            .iter()
            .filter(|n| n.counts.oom_kills > 0)
            .map(|n| n.node.as_str())
            .collect();
        let place = if report.nodes.len() > 1 {
            format!(" on {}", nodes.join(", "))
        } else {
            String::new()
        };
        let tasks = if kills == 1 { "task" } else { "tasks" };
        note(
            NoteKind::OomKilled,
            Severity::Warning,
            format!(
                "the OOM killer killed {kills} {tasks} of the job{place}: it ran out of memory. \
                 Ask for more memory, or make it use less."
            ),
        );
    }
    if let (Some(ratio), Some(node)) = (report.memory_peak_ratio, &report.memory_peak_node)
        && ratio > MEMORY_NEAR_LIMIT
        && let Some(row) = report.nodes.iter().find(|n| &n.node == node)
    {
        let of = match row.memory_limit_from {
            Some(MemoryFrom::NodeMemTotal) => "the node's memory",
            _ => "its memory limit",
        };
        note(
            NoteKind::MemoryNearLimit,
            Severity::Warning,
            format!(
                "the memory peak reached {:.1}% of {of}{}: one larger input and it is killed. \
                 Ask for more memory to be safe.",
                ratio * 100.0,
                on_node(report, node)
            ),
        );
    }
    let short = report.elapsed_seconds < SHORT_JOB_SECONDS;
    if let (Some(efficiency), Some(cpus)) = (report.cpu_efficiency, report.cpus_allocated)
        && efficiency < LOW_EFFICIENCY
        && !short
    {
        let busy = efficiency * cpus as f64;
        note(
            NoteKind::LowEfficiency,
            Severity::Warning,
            format!(
                "CPU efficiency is {:.1}%: the job kept {busy:.2} of its {cpus} CPUs busy on \
                 average. Ask for fewer CPUs, or check that the program really runs in parallel \
                 (threads, MPI ranks).",
                efficiency * 100.0
            ),
        );
    }
    if let Some(share) = report.runqueue_wait_share
        && share > HIGH_WAIT_SHARE
    {
        note(
            NoteKind::RunqueueWait,
            Severity::Warning,
            format!(
                "your job waited {:.1}% of its CPU time for a CPU: it ran more threads than \
                 cores. Start as many threads or ranks as CPUs allocated (OMP_NUM_THREADS, ranks \
                 per node).",
                share * 100.0
            ),
        );
    }
    if short {
        note(
            NoteKind::ShortJob,
            Severity::Info,
            format!(
                "the job ran for {:.2} s. Its figures are exact all the same (the kernel counts \
                 from its first instruction), but its end is known only to a sample interval, so \
                 its efficiency is not judged.",
                report.elapsed_seconds
            ),
        );
    }
    let by_node: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.cpus_from == Some(CpusFrom::Node))
        .map(|n| n.node.as_str())
        .collect();
    if !by_node.is_empty() {
        let cpus: Vec<String> = report
            .nodes
            .iter()
            .filter(|n| n.cpus_from == Some(CpusFrom::Node))
            .filter_map(|n| n.cpus_allocated.map(|c| c.to_string()))
            .collect();
        note(
            NoteKind::CpusFromNode,
            Severity::Info,
            format!(
                "the job has no cpuset, so what it was given is not known: its efficiency is \
                 against all {} CPUs of the node.",
                cpus.join(" + ")
            ),
        );
    }
    let unknown: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.cpus_allocated.is_none())
        .map(|n| n.node.as_str())
        .collect();
    if !unknown.is_empty() {
        let which = if unknown.len() == report.nodes.len() {
            "its nodes report".to_string()
        } else {
            format!("{} report", unknown.join(", "))
        };
        note(
            NoteKind::CpusUnknown,
            Severity::Info,
            format!(
                "{which} no CPUs allocated (the job has no cpuset there): efficiency is computed \
                 only where they are known."
            ),
        );
    }
    if report
        .nodes
        .iter()
        .any(|n| n.memory_limit_from == Some(MemoryFrom::NodeMemTotal))
    {
        note(
            NoteKind::MemoryFromNode,
            Severity::Info,
            "the job has no memory limit: its memory peak is compared with the node's memory \
             (MemTotal)."
                .to_string(),
        );
    }
    notes
}
