//! The report as text (colour and bars on a terminal, plain when piped)
//! and as JSON. Every figure in the text is also in the JSON, under the
//! names of the job API.
//!
//! [`text`] lays the report out; [`style`] colours it and draws its bars;
//! [`format`] words its numbers.
mod format;
mod style;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use self::style::Style;
use self::{
    format::{NOTE_WIDTH, duration, percent, plural, seconds, state, wrap},
    style::{efficiency_health, memory_health, wait_health},
};
use super::figures::{CpusFrom, MemoryFrom, NodeReport, Report, Severity};
use crate::client::{
    jobs::{bytes, elapsed, utc},
    printable::printable,
};

/// `report` with every text a user may have chosen (ids, names, node
/// names, and the notes that quote them) safe to print.
fn printable_report(report: &Report) -> Report {
    let clean = |text: &String| printable(text).into_owned();
    let mut report = report.clone();
    for field in [
        &mut report.jobid,
        &mut report.user,
        &mut report.name,
        &mut report.source,
    ] {
        *field = clean(field);
    }
    report.memory_peak_node = report.memory_peak_node.as_ref().map(clean);
    for node in &mut report.nodes {
        node.node = clean(&node.node);
    }
    for note in &mut report.notes {
        note.text = clean(&note.text);
    }
    report
}

/// Lines of the text report: sections, and label-value lines under them.
struct Text {
    out: String,
    style: Style,
}

impl Text {
    fn heading(&mut self, heading: &str) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{}", self.style.bold(heading));
    }

    fn line(&mut self, label: &str, value: &str) {
        let _ = writeln!(self.out, "  {label:<13}{value}");
    }
}

/// The text report of one job.
pub fn text(report: &Report, style: Style) -> String {
    let report = &printable_report(report);
    let mut text = Text {
        out: String::new(),
        style,
    };
    let t = &report.totals;
    let mut title = format!("Job {} of {}", report.jobid, report.user);
    if !report.name.is_empty() {
        let _ = write!(title, ": {}", report.name);
    }
    text.heading(&title);
    text.line("State", state(report.state));
    let nodes: Vec<&str> = report.nodes.iter().map(|n| n.node.as_str()).collect();
    match nodes.as_slice() {
        [node] => text.line("Node", node),
        _ => text.line("Nodes", &format!("{}: {}", nodes.len(), nodes.join(", "))),
    }
    text.line("Started", &format!("{} UTC", utc(report.start_time)));
    let ended = report.end_time.map_or_else(
        || "still running".to_string(),
        |end| format!("{} UTC", utc(end)),
    );
    text.line("Ended", &ended);
    text.line("Elapsed", &duration(report.elapsed_seconds));
    text.line("Source", &report.source);

    text.heading("CPU");
    let cpu = if t.cpu_seconds >= 60.0 {
        format!("{} ({})", seconds(t.cpu_seconds), elapsed(t.cpu_seconds))
    } else {
        seconds(t.cpu_seconds)
    };
    text.line("CPU time", &cpu);
    let efficiency = match (report.cpu_efficiency, report.cpus_allocated) {
        (Some(efficiency), Some(cpus)) => format!(
            "{}  of {} over the elapsed time{}",
            style.share(efficiency, efficiency_health(efficiency)),
            plural(cpus, "CPU", "CPUs"),
            cpus_origin(&report.nodes)
        ),
        _ => "not known (no CPU count for the job)".to_string(),
    };
    text.line("Efficiency", &efficiency);
    let wait = match report.runqueue_wait_share {
        Some(share) => format!(
            "{}  of the CPU time waiting for a CPU ({})",
            style.share(share, wait_health(share)),
            seconds(t.runqueue_wait_seconds)
        ),
        None => seconds(t.runqueue_wait_seconds),
    };
    text.line("Run-queue", &wait);
    text.line(
        "Switches",
        &format!(
            "{} voluntary, {} involuntary",
            t.context_switches.voluntary, t.context_switches.involuntary
        ),
    );

    text.heading("Memory");
    text.line("RSS peak", &memory_peak(report, style));
    text.line("RSS now", &bytes(t.memory_rss_bytes));
    text.line("Page faults", &t.page_faults.to_string());
    let kills = t.oom_kills.to_string();
    text.line(
        "OOM kills",
        &if t.oom_kills > 0 {
            style.paint("31", &kills)
        } else {
            kills
        },
    );

    text.heading("Processes");
    text.line(
        "Started",
        &format!(
            "{}, {}, {}",
            plural(t.processes_started, "process", "processes"),
            plural(t.threads_started, "thread", "threads"),
            plural(t.execs, "exec", "execs")
        ),
    );
    text.line(
        "Exited",
        &plural(t.processes_exited, "process", "processes"),
    );
    text.line("Tasks now", &t.tasks.to_string());

    text.heading("IO");
    text.line(
        "Read",
        &format!(
            "{} in {}; {} from storage",
            bytes(t.io_read_bytes),
            plural(t.io_read_calls, "call", "calls"),
            bytes(t.block_read_bytes)
        ),
    );
    text.line(
        "Written",
        &format!(
            "{} in {}; {} to storage",
            bytes(t.io_write_bytes),
            plural(t.io_write_calls, "call", "calls"),
            bytes(t.block_write_bytes)
        ),
    );
    let n = &t.network;
    text.line(
        "Network",
        &format!(
            "received {} in {}, sent {} in {}",
            bytes(n.rx_bytes),
            plural(n.rx_packets, "packet", "packets"),
            bytes(n.tx_bytes),
            plural(n.tx_packets, "packet", "packets")
        ),
    );

    if report.nodes.len() > 1 || report.source.starts_with("Prometheus") {
        text.heading("Nodes");
        for row in node_table(&report.nodes) {
            let _ = writeln!(text.out, "  {}", row.trim_end());
        }
    }

    if !report.notes.is_empty() {
        text.heading("Notes");
        for note in &report.notes {
            let (mark, code) = match note.severity {
                Severity::Warning => ("!", "33"),
                Severity::Info => ("-", "2"),
            };
            // The mark's escape codes take no room on the screen.
            let wrapped = wrap(&note.text, "  x ", "    ", NOTE_WIDTH);
            let painted = wrapped.replacen('x', &style.paint(code, mark), 1);
            let _ = writeln!(text.out, "{painted}");
        }
    }
    text.out
}

/// `(cpuset)` or `(the node's: the job has no cpuset)`.
fn cpus_origin(nodes: &[NodeReport]) -> &'static str {
    if nodes.iter().any(|n| n.cpus_from == Some(CpusFrom::Node)) {
        " (all the node's: the job has no cpuset)"
    } else if nodes.iter().any(|n| n.cpus_allocated.is_none()) {
        " (the nodes with a cpuset)"
    } else {
        " (its cpuset)"
    }
}

/// The peak, and against what: the limit of the node closest to it.
fn memory_peak(report: &Report, style: Style) -> String {
    let t = &report.totals;
    let several = report.nodes.len() > 1;
    let peak = if several {
        format!("{} summed over the nodes", bytes(t.memory_rss_peak_bytes))
    } else {
        bytes(t.memory_rss_peak_bytes)
    };
    let worst = report
        .memory_peak_node
        .as_ref()
        .and_then(|node| report.nodes.iter().find(|n| &n.node == node));
    let Some(row) = worst else {
        return peak;
    };
    let (Some(ratio), Some(limit)) = (row.memory_peak_ratio, row.memory_limit_bytes) else {
        return peak;
    };
    let of = match row.memory_limit_from {
        Some(MemoryFrom::NodeMemTotal) => {
            format!("of the node's {} (MemTotal: no limit)", bytes(limit))
        }
        _ => format!("of the {} limit", bytes(limit)),
    };
    let place = if several {
        format!(
            "; closest to its limit on {}: {}",
            row.node,
            bytes(row.counts.memory_rss_peak_bytes)
        )
    } else {
        String::new()
    };
    format!(
        "{peak}{place}  {}  {of}",
        style.share(ratio, memory_health(ratio))
    )
}

const NODE_HEADER: [&str; 7] = [
    "NODE",
    "STATE",
    "CPU",
    "EFFICIENCY",
    "RSS PEAK",
    "OF LIMIT",
    "WAIT",
];

/// One row per node, columns aligned.
fn node_table(nodes: &[NodeReport]) -> Vec<String> {
    let na = || "-".to_string();
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            [
                n.node.clone(),
                state(n.state).to_string(),
                seconds(n.counts.cpu_seconds),
                n.cpu_efficiency.map_or_else(na, percent),
                bytes(n.counts.memory_rss_peak_bytes),
                n.memory_peak_ratio.map_or_else(na, percent),
                n.runqueue_wait_share.map_or_else(na, percent),
            ]
        })
        .collect();
    let mut widths = NODE_HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format = |cells: [&str; 7]| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    std::iter::once(format(NODE_HEADER))
        .chain(
            rows.iter()
                .map(|row| format(row.each_ref().map(String::as_str))),
        )
        .collect()
}

/// The reports as JSON: an array, one object per job.
pub fn json(reports: &[Report]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(reports)
}
