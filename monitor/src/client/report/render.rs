//! The report as text (colour and bars on a terminal, plain when piped)
//! and as JSON. Every figure in the text is also in the JSON, under the
//! names of the job API.
use std::fmt::Write as _;

use super::figures::{
    CpusFrom, HIGH_WAIT_SHARE, LOW_EFFICIENCY, MEMORY_NEAR_LIMIT, MemoryFrom, NodeReport, Report,
    Severity, State,
};
use crate::{
    cli::ColorChoice,
    client::{
        jobs::{bytes, elapsed, utc},
        printable::printable,
    },
};

/// Width of a bar, in characters.
const BAR_WIDTH: usize = 20;

/// What the text may use beyond plain characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
    pub bars: bool,
}

impl Style {
    /// `auto`: bars on a terminal, and colour there unless NO_COLOR is set
    /// (to anything non-empty, as no-color.org asks).
    pub fn choose(choice: ColorChoice, terminal: bool, no_color: bool) -> Self {
        match choice {
            ColorChoice::Always => Self {
                colour: true,
                bars: true,
            },
            ColorChoice::Never => Self {
                colour: false,
                bars: false,
            },
            ColorChoice::Auto => Self {
                colour: terminal && !no_color,
                bars: terminal,
            },
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// A share with its bar (on a terminal), coloured by how it stands.
    fn share(self, fraction: f64, health: Health) -> String {
        let text = percent(fraction);
        let code = match health {
            Health::Good => "32",
            Health::Fair => "33",
            Health::Poor => "31",
        };
        if self.bars {
            format!(
                "{} {}",
                self.paint(code, &bar(fraction, BAR_WIDTH)),
                self.paint(code, &format!("{text:>6}"))
            )
        } else {
            text
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Good,
    Fair,
    Poor,
}

fn efficiency_health(efficiency: f64) -> Health {
    if efficiency < LOW_EFFICIENCY {
        Health::Poor
    } else if efficiency < 2.0 * LOW_EFFICIENCY {
        Health::Fair
    } else {
        Health::Good
    }
}

fn memory_health(ratio: f64) -> Health {
    if ratio > MEMORY_NEAR_LIMIT {
        Health::Poor
    } else if ratio > 0.75 {
        Health::Fair
    } else {
        Health::Good
    }
}

fn wait_health(share: f64) -> Health {
    if share > HIGH_WAIT_SHARE {
        Health::Poor
    } else if share > HIGH_WAIT_SHARE / 4.0 {
        Health::Fair
    } else {
        Health::Good
    }
}

/// `61.2%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `4.512 s`: CPU and wait times to the millisecond, under a second to
/// the microsecond (cpu.stat's own resolution): a 2 ms job shows its 2 ms.
pub fn seconds(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.6} s")
    } else {
        format!("{value:.3} s")
    }
}

/// Width notes are wrapped to.
const NOTE_WIDTH: usize = 96;

/// `text` in lines of at most `width` characters (a longer word stays
/// whole), the first after `first`, the others after `indent`.
fn wrap(text: &str, first: &str, indent: &str, width: usize) -> String {
    let mut out = String::from(first);
    let mut column = first.chars().count();
    let start = column;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if column > start && column + 1 + len > width {
            out.push('\n');
            out.push_str(indent);
            column = indent.chars().count();
        } else if column > start {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
    }
    out
}

/// A bar of `width` characters in unicode blocks, in eighths; the rest light shade.
fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut out = "█".repeat(full);
    if full < width {
        if part > 0 {
            out.push(PARTS[part]);
        }
        let used = full + usize::from(part > 0);
        out.push_str(&"░".repeat(width - used));
    }
    out
}

fn state(state: State) -> &'static str {
    match state {
        State::Running => "running",
        State::Finished => "finished",
    }
}

/// `00:12:07 (727.0 s)`, or `0.33s` for a short time.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        elapsed(seconds)
    } else {
        format!("{} ({seconds:.1} s)", elapsed(seconds))
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::figures::{Counts, JobInput, NodeInput, report};

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
}
