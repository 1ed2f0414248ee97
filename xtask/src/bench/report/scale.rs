//! Section 8: /metrics and the daemon's memory with many jobs.
use super::{MAX_RSS_MB, MAX_SCRAPE_MS, Report, heading, mb, row, table};
use crate::bench::Benchmark;

impl Report {
    pub(super) fn scale_section(&self) -> String {
        let Some(s) = &self.scale else {
            return String::new();
        };
        let rss = mb(s.rss_kib);
        let rows = vec![
            row([
                "/metrics, median",
                &format!("{:.2} ms", s.median_ms()),
                &format!("<= {MAX_SCRAPE_MS} ms"),
                self.verdict(s.median_ms() <= MAX_SCRAPE_MS),
            ]),
            row([
                "/metrics, p99",
                &format!("{:.2} ms", s.p99_ms()),
                &format!("<= {MAX_SCRAPE_MS} ms"),
                self.verdict(s.p99_ms() <= MAX_SCRAPE_MS),
            ]),
            row(["/metrics body", &format!("{} bytes", s.body_bytes), "", ""]),
            row([
                "Daemon VmRSS",
                &format!("{rss:.1} MB ({} KiB)", s.rss_kib),
                &format!("<= {MAX_RSS_MB} MB"),
                self.verdict(rss <= MAX_RSS_MB),
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
        format!(
            "{} {} jobs\n\nMB are 10^6 bytes.\n\n{}\n",
            heading(Benchmark::Scale),
            s.jobs,
            table(&["Measure", "Value", "Goal", "Result"], &rows)
        )
    }
}
