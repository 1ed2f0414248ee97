//! Section 8: /metrics and the daemon's memory with many jobs.
use super::{
    Outcome, Report, Section,
    goal::{Goal, Unit},
    markdown::{mb, row, table},
};
use crate::bench::scale::ScaleResult;

const MAX_SCRAPE_MS: f64 = 20.0;
/// Megabytes of 10^6 bytes.
const MAX_RSS_MB: f64 = 20.0;

/// The scrape's median and p99, and the daemon's RSS.
fn goals(s: &ScaleResult) -> [Goal; 3] {
    let jobs = s.jobs;
    [
        Goal::at_most(
            format!("/metrics median with {jobs} jobs"),
            s.median_ms(),
            MAX_SCRAPE_MS,
            Unit::Milliseconds,
        ),
        Goal::at_most(
            format!("/metrics p99 with {jobs} jobs"),
            s.p99_ms(),
            MAX_SCRAPE_MS,
            Unit::Milliseconds,
        ),
        Goal::at_most(
            format!("daemon RSS with {jobs} jobs"),
            mb(s.rss_kib),
            MAX_RSS_MB,
            Unit::Megabytes,
        ),
    ]
}

impl Outcome for ScaleResult {
    fn section(&self, report: &Report) -> Section {
        let s = self;
        let [median, p99, rss] = goals(s);
        let trusted = report.trusted;
        let rows = vec![
            row([
                "/metrics, median",
                &format!("{:.2} ms", s.median_ms()),
                &median.target(),
                median.verdict(trusted),
            ]),
            row([
                "/metrics, p99",
                &format!("{:.2} ms", s.p99_ms()),
                &p99.target(),
                p99.verdict(trusted),
            ]),
            row(["/metrics body", &format!("{} bytes", s.body_bytes), "", ""]),
            row([
                "Daemon VmRSS",
                &format!("{:.1} MB ({} KiB)", rss.measured, s.rss_kib),
                &rss.target(),
                rss.verdict(trusted),
            ]),
            row([
                "Daemon VmHWM (peak RSS)",
                &format!("{:.1} MB ({} KiB)", mb(s.hwm_kib), s.hwm_kib),
                "",
                "",
            ]),
            row([
                "Daemon's last map sample took",
                &s.sample_ms
                    .map_or_else(|| "unknown".into(), |ms| format!("{ms:.2} ms")),
                "",
                "",
            ]),
        ];
        Section {
            title: format!("/metrics and memory with {} jobs", s.jobs),
            body: format!(
                "MB are 10^6 bytes.\n\n{}\n",
                table(&["Measure", "Value", "Goal", "Result"], &rows)
            ),
        }
    }

    fn goals(&self) -> Vec<Goal> {
        goals(self).into()
    }
}
