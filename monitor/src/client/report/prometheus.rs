//! The job from Prometheus: its series on every node whose daemon
//! Prometheus scrapes (each node is an `instance`), over a range, so a
//! finished job still answers after its daemon has dropped it from
//! /metrics. One instant query per figure: counters by `max_over_time`
//! (the last value of a counter is its highest), gauges by
//! `last_over_time`, each reduced by (user, instance) so a node scraped by
//! two scrape jobs counts once. The sum over nodes is the report's.
use std::{collections::BTreeMap, time::Duration};

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

use super::figures::{Counts, CpusFrom, JobInput, MemoryFrom, NodeInput};
use crate::client::http::{self, HttpError, percent_encode};

#[derive(Debug, Error)]
pub enum PromError {
    #[error("--prometheus {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("asking Prometheus at {url}")]
    Http {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error("Prometheus at {url} answered {status} to {query}: {body}")]
    Status {
        url: String,
        status: String,
        query: String,
        body: String,
    },
    #[error("Prometheus at {url} failed {query}: {error}")]
    Query {
        url: String,
        query: String,
        error: String,
    },
    #[error("Prometheus at {url} answered {query} with what its query API never gives: {why}")]
    Answer {
        url: String,
        query: String,
        why: String,
    },
}

/// A Prometheus server's query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// `host:port`, to connect to and for the Host header.
    authority: String,
    /// A path prefix (`--web.route-prefix`, or a proxy's), without a trailing `/`.
    prefix: String,
    /// `Basic ...`, from the URL's `user:password@`.
    authorization: Option<String>,
    /// The URL without its password, for messages.
    pub url: String,
}

impl Prometheus {
    /// `http://[USER:PASSWORD@]HOST[:PORT][/PREFIX]` (the scheme may be left out).
    pub fn new(url: &str) -> Result<Self, PromError> {
        let bad = |why| PromError::BadUrl {
            url: url.to_string(),
            why,
        };
        let rest = match url.split_once("://") {
            None => url,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "https is not supported: give Prometheus' plain http:// address (on the cluster \
                     network, or through a local proxy)",
                ));
            }
            Some(_) => return Err(bad("expected an http:// address")),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path.trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() || host.starts_with(':') {
            return Err(bad("no host"));
        }
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let authorization = userinfo.map(|userinfo| {
            let credentials = percent_decode(userinfo);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        Ok(Self {
            url: format!("http://{authority}{prefix}"),
            authority,
            prefix,
            authorization,
        })
    }

    /// An instant query at Unix time `time`: the samples of its vector.
    pub fn query(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PromError> {
        let body = format!("query={}&time={time:.3}", percent_encode(promql));
        let mut request = format!(
            "POST {}/api/v1/query HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let response =
            http::tcp_exchange(&self.authority, request.as_bytes()).map_err(|source| {
                PromError::Http {
                    url: self.url.clone(),
                    source,
                }
            })?;
        // Prometheus answers a bad query with 400 or 422 and its error in the JSON.
        match (response.status, parse_answer(&response.body)) {
            (200, Ok(samples)) => Ok(samples),
            (_, Err(Failure::Query(error))) => Err(PromError::Query {
                url: self.url.clone(),
                query: promql.to_string(),
                error,
            }),
            (200, Err(Failure::Answer(why))) => Err(PromError::Answer {
                url: self.url.clone(),
                query: promql.to_string(),
                why,
            }),
            _ => Err(PromError::Status {
                url: self.url.clone(),
                status: response.status_line,
                query: promql.to_string(),
                body: response.body,
            }),
        }
    }
}

/// `%XX` escapes of a URL's user information, decoded.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// One sample of an instant vector: its labels and `[time, "value"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    pub value: (f64, String),
}

impl Sample {
    /// The value, when it is a finite number.
    fn number(&self) -> Option<f64> {
        self.value.1.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, PartialEq)]
enum Failure {
    /// Prometheus said the query failed.
    Query(String),
    /// Not an answer of the query API.
    Answer(String),
}

fn parse_answer(body: &str) -> Result<Vec<Sample>, Failure> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| Failure::Answer(format!("{e}: {body}")))?;
    if answer.status != "success" {
        return Err(Failure::Query(
            answer
                .error
                .unwrap_or_else(|| format!("status {}", answer.status)),
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| Failure::Answer("no data".to_string()))?;
    if data.result_type != "vector" {
        return Err(Failure::Answer(format!(
            "a {} instead of a vector",
            data.result_type
        )));
    }
    serde_json::from_value(data.result).map_err(|e| Failure::Answer(e.to_string()))
}

/// What was found of a job on one node (one user's, one instance's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub cpus: Option<f64>,
    pub memory_limit: Option<f64>,
    pub name: Option<String>,
    pub counts: Counts,
}

/// How a series is read over the range.
#[derive(Debug, Clone, Copy)]
enum Over {
    /// Counters (and the peak): their highest value is their last.
    Max,
    /// Gauges: the last value.
    Last,
}

type Setter = fn(&mut Found, &str, f64);

/// One figure: its metric, how it is read, the label splitting it (kind,
/// direction) and where it goes.
struct Figure {
    metric: &'static str,
    over: Over,
    split: Option<&'static str>,
    set: Setter,
}

/// A count from a sample value (counts are whole numbers).
fn whole(value: f64) -> u64 {
    value.max(0.0).round() as u64
}

const FIGURES: [Figure; 24] = [
    Figure {
        metric: "monitor_job_start_time_seconds",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.start = Some(v),
    },
    Figure {
        metric: "monitor_job_end_time_seconds",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.end = Some(v),
    },
    Figure {
        metric: "monitor_job_cpus_allocated",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.cpus = Some(v),
    },
    Figure {
        metric: "monitor_job_memory_limit_bytes",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.memory_limit = Some(v),
    },
    Figure {
        metric: "monitor_job_cpu_seconds_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.cpu_seconds = v,
    },
    Figure {
        metric: "monitor_job_runqueue_wait_seconds_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.runqueue_wait_seconds = v,
    },
    Figure {
        metric: "monitor_job_context_switches_total",
        over: Over::Max,
        split: Some("kind"),
        set: |f, kind, v| match kind {
            "voluntary" => f.counts.context_switches.voluntary = whole(v),
            "involuntary" => f.counts.context_switches.involuntary = whole(v),
            _ => {}
        },
    },
    Figure {
        metric: "monitor_job_processes_started_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.processes_started = whole(v),
    },
    Figure {
        metric: "monitor_job_threads_started_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.threads_started = whole(v),
    },
    Figure {
        metric: "monitor_job_execs_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.execs = whole(v),
    },
    Figure {
        metric: "monitor_job_processes_exited_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.processes_exited = whole(v),
    },
    Figure {
        metric: "monitor_job_tasks",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.counts.tasks = whole(v),
    },
    Figure {
        metric: "monitor_job_memory_rss_bytes",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.counts.memory_rss_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_memory_rss_peak_bytes",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.memory_rss_peak_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_page_faults_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.page_faults = whole(v),
    },
    Figure {
        metric: "monitor_job_oom_kills_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.oom_kills = whole(v),
    },
    Figure {
        metric: "monitor_job_io_read_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_read_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_io_write_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_write_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_io_read_calls_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_read_calls = whole(v),
    },
    Figure {
        metric: "monitor_job_io_write_calls_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_write_calls = whole(v),
    },
    Figure {
        metric: "monitor_job_block_read_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.block_read_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_block_write_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.block_write_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_network_bytes_total",
        over: Over::Max,
        split: Some("direction"),
        set: |f, direction, v| match direction {
            "rx" => f.counts.network.rx_bytes = whole(v),
            "tx" => f.counts.network.tx_bytes = whole(v),
            _ => {}
        },
    },
    Figure {
        metric: "monitor_job_network_packets_total",
        over: Over::Max,
        split: Some("direction"),
        set: |f, direction, v| match direction {
            "rx" => f.counts.network.rx_packets = whole(v),
            "tx" => f.counts.network.tx_packets = whole(v),
            _ => {}
        },
    },
];

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

    #[test]
    fn reads_addresses() {
        let plain = Prometheus::new("http://prom:9090").unwrap();
        assert_eq!(
            (plain.authority.as_str(), plain.prefix.as_str()),
            ("prom:9090", "")
        );
        assert_eq!(plain.authorization, None);
        let full = Prometheus::new("HTTP://alice:p%40ss@[::1]:9090/prometheus/").unwrap();
        assert_eq!(full.authority, "[::1]:9090");
        assert_eq!(full.prefix, "/prometheus");
        assert_eq!(full.url, "http://[::1]:9090/prometheus");
        // base64("alice:p@ss")
        assert_eq!(
            full.authorization.as_deref(),
            Some("Basic YWxpY2U6cEBzcw==")
        );
        assert_eq!(Prometheus::new("prom").unwrap().authority, "prom:80");
        for bad in ["https://prom:9090", "ftp://prom", "http://", "http://:9090"] {
            assert!(Prometheus::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_queries_over_the_range() {
        let selector = selector("42", Some("al\"ice"));
        assert_eq!(selector, r#"{jobid="42",user="al\"ice"}"#);
        let cpu = &FIGURES[4];
        assert_eq!(
            promql(cpu, &selector, Duration::from_secs(3600)),
            r#"max by (user, instance) (max_over_time(monitor_job_cpu_seconds_total{jobid="42",user="al\"ice"}[3600s]))"#
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
    fn parses_answers_and_failures() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"n1:9959","user":"alice"},"value":[1700000000.5,"12.25"]},
            {"metric":{"instance":"n2:9959","user":"alice"},"value":[1700000000.5,"NaN"]}]}}"#;
        let samples = parse_answer(body).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].number(), Some(12.25));
        assert_eq!(samples[0].label("instance"), "n1:9959");
        assert_eq!(samples[1].number(), None);
        assert_eq!(
            parse_answer(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            Err(Failure::Query("parse error".into()))
        );
        assert!(matches!(parse_answer("<html>"), Err(Failure::Answer(_))));
        assert!(matches!(
            parse_answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#),
            Err(Failure::Answer(_))
        ));
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

    #[test]
    fn figures_land_where_they_belong() {
        let mut found = Found::default();
        for figure in &FIGURES {
            for split in ["", "voluntary", "involuntary", "rx", "tx"] {
                (figure.set)(&mut found, split, 3.0);
            }
        }
        let c = &found.counts;
        assert_eq!(
            (found.start, found.end, found.cpus),
            (Some(3.0), Some(3.0), Some(3.0))
        );
        assert_eq!((c.cpu_seconds, c.runqueue_wait_seconds), (3.0, 3.0));
        assert_eq!(
            (c.context_switches.voluntary, c.context_switches.involuntary),
            (3, 3)
        );
        assert_eq!((c.network.rx_packets, c.network.tx_bytes), (3, 3));
        assert_eq!((c.block_write_bytes, c.oom_kills, c.tasks), (3, 3, 3));
        assert_eq!(percent_decode("a%2Fb%zz"), b"a/b%zz");
    }
}
