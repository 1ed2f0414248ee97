//! Reading figures out of the daemon's OpenMetrics text.
use super::bpf_stats::RunStats;

/// The value of one series, written exactly as in the text (`name` or
/// `name{labels}`).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The sum over every series of family `name` whose labels contain `label`
/// (e.g. `jobid="j1"`).
pub fn sum_with_label(text: &str, name: &str, label: &str) -> f64 {
    samples(text, name)
        .filter(|(labels, _)| labels.split(',').any(|l| l == label))
        .map(|(_, value)| value)
        .sum()
}

/// Every value of label `key` in family `name`, in order of appearance.
pub fn label_values(text: &str, name: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=\"");
    samples(text, name)
        .filter_map(|(labels, _)| {
            labels.split(',').find_map(|l| {
                l.strip_prefix(&prefix)?
                    .strip_suffix('"')
                    .map(str::to_string)
            })
        })
        .collect()
}

/// A program's run time and count as the daemon reports them.
pub fn program_stats(text: &str, program: &str) -> Option<RunStats> {
    let seconds = value(
        text,
        &format!("monitor_bpf_program_run_seconds_total{{program=\"{program}\"}}"),
    )?;
    let runs = value(
        text,
        &format!("monitor_bpf_program_runs_total{{program=\"{program}\"}}"),
    )?;
    Some(RunStats {
        run_time_ns: seconds * 1e9,
        run_count: runs,
    })
}

/// `(labels, value)` of every series of family `name` (labels without braces).
/// Label values with commas are not expected in the families read here.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, rest) = rest.split_once("} ")?;
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE monitor_samples counter
monitor_samples_total 4
monitor_job_context_switches_total{jobid="j1",user="root",kind="voluntary"} 10
monitor_job_context_switches_total{jobid="j1",user="root",kind="involuntary"} 2
monitor_job_context_switches_total{jobid="j10",user="root",kind="voluntary"} 7
monitor_bpf_program_run_seconds_total{program="sched_switch"} 0.000455046
monitor_bpf_program_runs_total{program="sched_switch"} 572
monitor_bpf_program_runs_total{program="cpu_flush"} 4
"#;

    #[test]
    fn single_values() {
        assert_eq!(value(TEXT, "monitor_samples_total"), Some(4.0));
        assert_eq!(value(TEXT, "monitor_samples"), None);
    }

    #[test]
    fn sums_match_whole_labels() {
        assert_eq!(
            sum_with_label(TEXT, "monitor_job_context_switches_total", "jobid=\"j1\""),
            12.0
        );
    }

    #[test]
    fn programs() {
        let names = label_values(TEXT, "monitor_bpf_program_runs_total", "program");
        assert_eq!(names, ["sched_switch", "cpu_flush"]);
        let stats = program_stats(TEXT, "sched_switch").unwrap();
        assert_eq!(stats.run_count, 572.0);
        assert!((stats.run_time_ns - 455_046.0).abs() < 1e-3);
        assert!(program_stats(TEXT, "cpu_flush").is_none());
    }
}
