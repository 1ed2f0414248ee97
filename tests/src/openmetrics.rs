//! A small parser for the OpenMetrics text the daemon serves: enough to
//! find one sample by name and labels. The benchmarks read the daemon's
//! figures with it too.
use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One scrape, parsed.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// The text as served, for error messages and promtool.
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_where(text, |_| true)
    }

    /// Like [`Metrics::parse`], keeping only the samples named one of
    /// `names`; other lines are skipped unparsed, so reading a few figures
    /// out of a scrape of thousands of jobs costs little.
    pub fn parse_only(text: &str, names: &[&str]) -> anyhow::Result<Self> {
        Self::parse_where(text, |name| names.contains(&name))
    }

    fn parse_where(text: &str, keep: impl Fn(&str) -> bool) -> anyhow::Result<Self> {
        let samples = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .filter(|(_, line)| keep(sample_name(line)))
            .map(|(n, line)| {
                parse_sample(line).with_context(|| format!("line {}: {line:?}", n + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            samples,
            text: text.to_string(),
        })
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// The value of the one sample matching `name` and `labels`, if any.
    /// More than one match is an error: the selector was too loose.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<Option<f64>> {
        let mut found = self.matching(name, labels);
        let first = found.next();
        if let Some(second) = found.next() {
            bail!(
                "{name} {labels:?} matches more than one series, e.g. {:?} and {:?}",
                first,
                second
            );
        }
        Ok(first.map(|s| s.value))
    }

    /// Like [`Metrics::find`], but the series must exist.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        self.find(name, labels)?.ok_or_else(|| {
            anyhow!(
                "no series {name} with labels {labels:?} in /metrics:\n{}",
                self.text
            )
        })
    }

    /// The sum of every sample matching `name` and `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        // + 0.0: an empty sum is -0.0.
        self.matching(name, labels).map(|s| s.value).sum::<f64>() + 0.0
    }
}

/// The name a sample line starts with (the whole line if it has no value).
fn sample_name(line: &str) -> &str {
    line.find(['{', ' ']).map_or(line, |end| &line[..end])
}

/// `name{k="v",...} value [timestamp] [# exemplar]`
fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next().context("no value")?;
    let value = value
        .parse::<f64>()
        .with_context(|| format!("bad value {value:?}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, rest) = text.split_once("=\"").context("label without =\"")?;
        let (value, rest) = parse_quoted(rest)?;
        labels.insert(key.to_string(), value);
        text = rest;
    }
}

/// Reads an escaped label value up to its closing quote.
fn parse_quoted(text: &str) -> anyhow::Result<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some(other) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    bail!("unterminated label value")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP monitor_job_cpu_seconds CPU.
# TYPE monitor_job_cpu_seconds counter
# UNIT monitor_job_cpu_seconds seconds
monitor_job_cpu_seconds_total{jobid="a",user="root"} 1.5
monitor_job_cpu_seconds_total{jobid="b \"q\", c",user="root"} 2
monitor_job_context_switches_total{jobid="a",user="root",kind="voluntary"} 3
monitor_job_context_switches_total{jobid="a",user="root",kind="involuntary"} 4
monitor_samples_total 7
# EOF
"#;

    #[test]
    fn finds_samples_by_name_and_label_subset() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(
            m.value("monitor_job_cpu_seconds_total", &[("jobid", "a")])
                .unwrap(),
            1.5
        );
        assert_eq!(
            m.value("monitor_job_cpu_seconds_total", &[("jobid", "b \"q\", c")])
                .unwrap(),
            2.0
        );
        assert_eq!(m.value("monitor_samples_total", &[]).unwrap(), 7.0);
        let involuntary = [("jobid", "a"), ("kind", "involuntary")];
        assert_eq!(
            m.value("monitor_job_context_switches_total", &involuntary)
                .unwrap(),
            4.0
        );
        assert!(
            m.find("monitor_job_context_switches_total", &[("jobid", "a")])
                .is_err(),
            "ambiguous"
        );
        assert_eq!(
            m.find("monitor_job_cpu_seconds_total", &[("jobid", "zz")])
                .unwrap(),
            None
        );
    }

    #[test]
    fn sums_and_a_parse_of_some_names_only() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(
            m.sum("monitor_job_context_switches_total", &[("jobid", "a")]),
            7.0
        );
        assert_eq!(m.sum("monitor_job_cpu_seconds_total", &[]), 3.5);
        assert_eq!(m.sum("monitor_job_tasks", &[]), 0.0);
        let some = Metrics::parse_only(TEXT, &["monitor_samples_total"]).unwrap();
        assert_eq!(some.samples.len(), 1);
        assert_eq!(some.value("monitor_samples_total", &[]).unwrap(), 7.0);
        // Lines of other names are not even parsed.
        let garbled = format!("{TEXT}other{{a=\"1\" 2\n");
        assert!(Metrics::parse(&garbled).is_err());
        assert!(Metrics::parse_only(&garbled, &["monitor_samples_total"]).is_ok());
    }

    #[test]
    fn refuses_garbage() {
        assert!(Metrics::parse("x{a=\"1\" 2\n").is_err());
        assert!(Metrics::parse("x notanumber\n").is_err());
    }
}
