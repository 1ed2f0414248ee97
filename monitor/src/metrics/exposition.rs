//! Exposition formats. prometheus-client writes OpenMetrics text; the
//! classic Prometheus text format (0.0.4) is served to clients that do not
//! ask for OpenMetrics (curl, promtool, older scrapers), as node_exporter does.
//! The two differ, for what this daemon emits, in three ways: a counter's
//! HELP and TYPE lines name the family without `_total` in OpenMetrics, and
//! OpenMetrics has `# UNIT` and `# EOF` lines.
use std::collections::HashSet;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text format a scrape is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The classic Prometheus text format, 0.0.4.
    Prometheus,
}

impl Format {
    /// What this Accept header asks for.
    pub fn accepted(accept: Option<&str>) -> Self {
        if wants_openmetrics(accept) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// Does this Accept header ask for OpenMetrics?
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// Rewrites OpenMetrics text into the classic Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "\
# HELP monitor_job_cpu_seconds CPU time.
# TYPE monitor_job_cpu_seconds counter
# UNIT monitor_job_cpu_seconds seconds
monitor_job_cpu_seconds_total{jobid=\"a\",user=\"root\"} 1.5
# HELP monitor_job_tasks Tasks.
# TYPE monitor_job_tasks gauge
monitor_job_tasks{jobid=\"a\",user=\"root\"} 3
# EOF
";

    #[test]
    fn counters_get_total_in_help_and_type_and_openmetrics_lines_go() {
        let text = to_prometheus_text(OPENMETRICS);
        assert_eq!(
            text,
            "\
# HELP monitor_job_cpu_seconds_total CPU time.
# TYPE monitor_job_cpu_seconds_total counter
monitor_job_cpu_seconds_total{jobid=\"a\",user=\"root\"} 1.5
# HELP monitor_job_tasks Tasks.
# TYPE monitor_job_tasks gauge
monitor_job_tasks{jobid=\"a\",user=\"root\"} 3
"
        );
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(None));
    }
}
