//! Reading figures out of the daemon's OpenMetrics text.
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
        .sum::<f64>()
        + 0.0
}

/// The sum over every series of family `name`.
pub fn sum(text: &str, name: &str) -> f64 {
    // + 0.0: an empty sum is -0.0.
    samples(text, name).map(|(_, value)| value).sum::<f64>() + 0.0
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
monitor_bpf_program_run_seconds_total{program="task_iter"} 0.000455046
monitor_bpf_program_runs_total{program="task_iter"} 572
"#;

    #[test]
    fn single_values() {
        assert_eq!(value(TEXT, "monitor_samples_total"), Some(4.0));
        assert_eq!(value(TEXT, "monitor_samples"), None);
    }

    #[test]
    fn sums_of_a_family() {
        assert_eq!(sum(TEXT, "monitor_job_context_switches_total"), 19.0);
        assert_eq!(sum(TEXT, "monitor_job_tasks"), 0.0);
    }

    #[test]
    fn sums_match_whole_labels() {
        assert_eq!(
            sum_with_label(TEXT, "monitor_job_context_switches_total", "jobid=\"j1\""),
            12.0
        );
    }
}
