//! The job from Prometheus: its series on every node whose daemon
//! Prometheus scrapes (each node is an `instance`), over a range, so a
//! finished job still answers after its daemon has dropped it from
//! /metrics. One instant query per figure: counters by `max_over_time`
//! (the last value of a counter is its highest), gauges by
//! `last_over_time`, each reduced by (user, instance) so a node scraped by
//! two scrape jobs counts once. The sum over nodes is the report's.
//!
//! [`query_api`] asks Prometheus; [`series`] says which series are asked
//! for and where each lands; here the queries are built and their answers
//! assembled into jobs.
mod query_api;
mod series;

use std::{collections::BTreeMap, time::Duration};

pub use self::query_api::{PromError, Prometheus};
use self::series::{FIGURES, Figure, Found, Over, whole};
use super::figures::{CpusFrom, JobInput, MemoryFrom, NodeInput};

/// A PromQL string literal.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{jobid="42",user="alice"}`.
fn selector(jobid: &str, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("{{jobid={},user={}}}", quote(jobid), quote(user)),
        None => format!("{{jobid={}}}", quote(jobid)),
    }
}

fn promql(figure: &Figure, selector: &str, range: Duration) -> String {
    let over = match figure.over {
        Over::Max => "max_over_time",
        Over::Last => "last_over_time",
    };
    let by = match figure.split {
        Some(split) => format!("user, instance, {split}"),
        None => "user, instance".to_string(),
    };
    format!(
        "max by ({by}) ({over}({}{selector}[{}s]))",
        figure.metric,
        range.as_secs().max(1)
    )
}

/// Every node's share of the job(s) with id `jobid` (of `user`, if
/// given) at Unix time `now`, looking back `range`: one job per user.
pub fn gather(
    prometheus: &Prometheus,
    jobid: &str,
    user: Option<&str>,
    range: Duration,
    now: f64,
) -> Result<Vec<JobInput>, PromError> {
    let selector = selector(jobid, user);
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for figure in &FIGURES {
        for sample in prometheus.query(&promql(figure, &selector, range), now)? {
            let Some(value) = sample.number() else {
                continue;
            };
            let key = (
                sample.label("user").to_string(),
                sample.label("instance").to_string(),
            );
            let split = figure.split.map_or("", |label| sample.label(label));
            (figure.set)(found.entry(key).or_default(), split, value);
        }
    }
    let names = format!(
        "max by (user, instance, name) (last_over_time(monitor_job_info{selector}[{}s]))",
        range.as_secs().max(1)
    );
    for sample in prometheus.query(&names, now)? {
        let key = (
            sample.label("user").to_string(),
            sample.label("instance").to_string(),
        );
        if let Some(node) = found.get_mut(&key) {
            node.name = Some(sample.label("name").to_string());
        }
    }
    let source = format!(
        "Prometheus {}, over the last {}",
        prometheus.url,
        humantime(range)
    );
    Ok(assemble(jobid, found, &source))
}

/// `1d`, `6h`, `90s`: a range as typed.
pub fn humantime(range: Duration) -> String {
    let secs = range.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One job per user from the nodes found, nodes in `instance` order. A
/// node without a start time (never seen by a complete scrape) is left out.
fn assemble(jobid: &str, found: BTreeMap<(String, String), Found>, source: &str) -> Vec<JobInput> {
    let mut jobs: BTreeMap<String, JobInput> = BTreeMap::new();
    for ((user, instance), node) in found {
        let Some(start) = node.start else {
            log::warn!("{instance} has series of job {jobid} but no start time: left out");
            continue;
        };
        let job = jobs.entry(user.clone()).or_insert_with(|| JobInput {
            jobid: jobid.to_string(),
            user,
            name: String::new(),
            source: source.to_string(),
            nodes: Vec::new(),
        });
        if job.name.is_empty()
            && let Some(name) = &node.name
        {
            job.name.clone_from(name);
        }
        job.nodes.push(NodeInput {
            node: instance,
            start_time: start,
            end_time: node.end,
            cpus: node
                .cpus
                .map(whole)
                .filter(|&n| n > 0)
                .map(|n| (n, CpusFrom::Cpuset)),
            memory: node
                .memory_limit
                .map(whole)
                .filter(|&b| b > 0)
                .map(|b| (b, MemoryFrom::Limit)),
            counts: node.counts,
        });
    }
    jobs.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::figures::Counts;

    #[test]
    fn builds_queries_over_the_range() {
        let selector = selector("42", Some("al\"ice"));
        assert_eq!(selector, r#"{jobid="42",user="al\"ice"}"#);
        let cpu = &FIGURES[4];
        assert_eq!(
            promql(cpu, &selector, Duration::from_secs(3600)),
            concat!(
                r#"max by (user, instance) (max_over_time(monitor_job_cpu_seconds_total"#,
                r#"{jobid="42",user="al\"ice"}[3600s]))"#
            )
        );
        let switches = FIGURES
            .iter()
            .find(|f| f.metric == "monitor_job_context_switches_total")
            .unwrap();
        assert!(
            promql(switches, "{}", Duration::from_secs(60))
                .starts_with("max by (user, instance, kind) (")
        );
        assert_eq!(humantime(Duration::from_secs(86_400)), "1d");
        assert_eq!(humantime(Duration::from_secs(5400)), "90m");
    }

    #[test]
    fn nodes_are_grouped_into_one_job_per_user() {
        let mut found = BTreeMap::new();
        let node = |cpu: f64, cpus: Option<f64>| Found {
            start: Some(100.0),
            end: Some(200.0),
            cpus,
            memory_limit: None,
            name: Some("lammps".into()),
            counts: Counts {
                cpu_seconds: cpu,
                ..Default::default()
            },
        };
        found.insert(
            ("alice".to_string(), "n2:9959".to_string()),
            node(2.0, Some(4.0)),
        );
        found.insert(
            ("alice".to_string(), "n1:9959".to_string()),
            node(1.0, None),
        );
        found.insert(("bob".to_string(), "n1:9959".to_string()), node(5.0, None));
        found.insert(
            ("bob".to_string(), "n3:9959".to_string()),
            Found {
                start: None,
                ..node(7.0, None)
            },
        );
        let jobs = assemble("42", found, "test");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].user, "alice");
        assert_eq!(jobs[0].name, "lammps");
        let nodes: Vec<&str> = jobs[0].nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(nodes, ["n1:9959", "n2:9959"]);
        assert_eq!(jobs[0].nodes[1].cpus, Some((4, CpusFrom::Cpuset)));
        assert_eq!(jobs[0].nodes[0].cpus, None);
        assert_eq!(jobs[1].nodes.len(), 1, "a node without a start is left out");
    }
}
