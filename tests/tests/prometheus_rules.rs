//! The Prometheus rules and Grafana dashboards in packaging/: promtool
//! accepts the rules and passes their unit tests, every alert and recording
//! rule has such tests, every dashboard query is PromQL promtool parses once
//! Grafana's variables are filled in, the queries and rules name only
//! metrics the daemon serves (METRICS.md, the reference the golden test
//! keeps equal to the code; the README names no others), and the job
//! dashboard shows every per-job family of it.
//!
//! No daemon and no root: only promtool (Debian's `prometheus` package,
//! which `cargo xtask test` installs).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use monitor_tests::{
    ChildGuard,
    grafana::{
        JOB_DASHBOARD, NODE_DASHBOARD, Query, dashboard, label_values_selector, queries, substitute,
    },
    launcher::TempDir,
    prometheus::promtool_or_skip,
};
use regex::Regex;

const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// In packaging/prometheus.
const RULE_FILES: [&str; 2] = ["monitor.rules.yml", "monitor.alerts.yml"];
const RULE_TESTS: &str = "monitor.rules.test.yml";

/// What Grafana puts in for its variables when it runs a query.
const VARIABLES: [(&str, &str); 9] = [
    ("jobid", "42"),
    ("user", "alice"),
    ("instance", "node01:9959"),
    ("datasource", "prometheus"),
    ("__rate_interval", "4m"),
    ("__interval", "1m"),
    ("__interval_ms", "60000"),
    ("__range", "6h"),
    ("__range_s", "21600"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is a directory of the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs promtool with `args` in `dir`; fails quoting everything it said.
fn run_promtool(promtool: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let what = format!("promtool {}", args.join(" "));
    let mut command = Command::new(promtool);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = ChildGuard::spawn(&mut command, &what)?.wait_with_output(PROMTOOL_TIMEOUT)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "{what} (in {}) failed ({}):\n{said}",
        dir.display(),
        output.status
    );
    println!("{what}:\n{said}");
    Ok(said)
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() -> anyhow::Result<()> {
    let Some(promtool) = promtool_or_skip() else {
        return Ok(());
    };
    let dir = workspace().join("packaging/prometheus");
    let mut check = vec!["check", "rules"];
    check.extend(RULE_FILES);
    run_promtool(&promtool, &dir, &check)?;
    run_promtool(&promtool, &dir, &["test", "rules", RULE_TESTS])?;
    Ok(())
}

/// promtool runs only the cases written: make sure none is missing.
#[test]
fn every_alert_and_recording_rule_is_unit_tested() -> anyhow::Result<()> {
    let dir = workspace().join("packaging/prometheus");
    let tests = read(&dir.join(RULE_TESTS))?;
    let cases = alert_cases(&tests)?;
    let checked: BTreeSet<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- expr: "))
        .map(str::trim)
        .collect();
    let mut missing = Vec::new();
    let (mut alerts, mut records) = (0, 0);
    for file in RULE_FILES {
        let rules = read(&dir.join(file))?;
        for line in rules.lines().map(str::trim) {
            if let Some(alert) = line.strip_prefix("- alert: ") {
                alerts += 1;
                let (fires, quiet) = cases.get(alert).copied().unwrap_or_default();
                if !fires {
                    missing.push(format!("{file}: no case where {alert} fires"));
                }
                if !quiet {
                    missing.push(format!("{file}: no case where {alert} stays quiet"));
                }
            } else if let Some(record) = line.strip_prefix("- record: ") {
                records += 1;
                if !checked.contains(record) {
                    missing.push(format!("{file}: no promql_expr_test of {record}"));
                }
            }
        }
    }
    ensure!(
        alerts > 0 && records > 0,
        "found {alerts} alerts and {records} recording rules in {RULE_FILES:?}"
    );
    ensure!(
        missing.is_empty(),
        "{RULE_TESTS} misses cases:\n{}",
        missing.join("\n")
    );
    Ok(())
}

/// Per alert name in a promtool test file: (a case expects it firing, a
/// case expects it quiet). Each `alertname:` is followed by its
/// `exp_alerts:`, `[]` when nothing should fire.
fn alert_cases(tests: &str) -> anyhow::Result<BTreeMap<String, (bool, bool)>> {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            current = Some(name.trim().to_string());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current
                .take()
                .with_context(|| format!("exp_alerts without an alertname: {line:?}"))?;
            let case = cases.entry(name).or_default();
            if expected.trim() == "[]" {
                case.1 = true;
            } else {
                case.0 = true;
            }
        }
    }
    Ok(cases)
}

/// A rules file with each query as a recording rule, for promtool to parse.
fn as_recording_rules(queries: &[Query]) -> anyhow::Result<String> {
    let mut yaml = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let expr = substitute(&query.expr, &VARIABLES).with_context(|| query.source.clone())?;
        writeln!(yaml, "      # {}", query.source.replace('\n', " "))?;
        writeln!(yaml, "      - record: dashboard:query_{i}")?;
        yaml.push_str("        expr: |-\n");
        for line in expr.lines() {
            writeln!(yaml, "          {line}")?;
        }
    }
    Ok(yaml)
}

#[test]
fn dashboards_have_portable_data_sources_and_their_variables() -> anyhow::Result<()> {
    for (name, variables) in [
        (NODE_DASHBOARD, &["datasource", "instance"][..]),
        (JOB_DASHBOARD, &["datasource", "jobid", "user"][..]),
    ] {
        let dashboard = dashboard(name)?;
        ensure!(
            dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty()),
            "{name} has no uid (links between the dashboards use it)"
        );
        let list = dashboard["templating"]["list"]
            .as_array()
            .with_context(|| format!("{name} has no templating.list"))?;
        for variable in variables {
            ensure!(
                list.iter().any(|v| v["name"] == *variable),
                "{name} has no ${variable} variable"
            );
        }
        // Import works anywhere because every panel takes this variable.
        ensure!(
            list.iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{name} has no Prometheus data source variable"
        );
        let queries = queries(name, &dashboard)?;
        ensure!(!queries.is_empty(), "{name} has no query");
    }
    Ok(())
}

#[test]
fn dashboard_queries_are_valid_promql() -> anyhow::Result<()> {
    let Some(promtool) = promtool_or_skip() else {
        return Ok(());
    };
    let mut all = Vec::new();
    for name in [NODE_DASHBOARD, JOB_DASHBOARD] {
        all.extend(queries(name, &dashboard(name)?)?);
    }
    let rules = as_recording_rules(&all)?;
    let dir = TempDir::new("dashboard-queries")?;
    fs::write(dir.0.join("dashboards.rules.yml"), &rules)?;
    if let Err(error) = run_promtool(
        &promtool,
        &dir.0,
        &["check", "rules", "dashboards.rules.yml"],
    ) {
        // promtool names the failing rules ("dashboard:query_N"): say which
        // panels' queries those are.
        let said = format!("{error:#}");
        let named: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| said.contains(&format!("\"dashboard:query_{i}\"")))
            .map(|(i, query)| format!("dashboard:query_{i} is {}:\n  {}", query.source, query.expr))
            .collect();
        if named.is_empty() {
            bail!("{said}\nthe rules checked:\n{rules}");
        }
        bail!("{said}\n{}", named.join("\n"));
    }
    Ok(())
}

/// Every metric name the daemon serves: the first column of METRICS.md's
/// table (the golden test in monitor/src/metrics keeps it equal to what
/// the code renders).
fn documented_metrics() -> anyhow::Result<BTreeSet<String>> {
    let reference = read(&workspace().join("METRICS.md"))?;
    let mut names = BTreeSet::new();
    for row in reference.lines().filter(|l| l.starts_with("| `monitor_")) {
        let first = row.split(" | ").next().unwrap_or_default();
        names.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    ensure!(
        names.len() > 20,
        "only {} metrics found in METRICS.md's table: {names:?}",
        names.len()
    );
    Ok(names)
}

/// Metric names in the README's "## Metrics" section: each code span that
/// starts with `monitor_`, with its label set (`name{a,b}` at the end)
/// dropped and alternatives (`a_{x,y}_b`) expanded.
fn readme_metrics() -> anyhow::Result<BTreeSet<String>> {
    let readme = read(&workspace().join("README.md"))?;
    let start = readme
        .find("\n## Metrics\n")
        .context("README.md has no \"## Metrics\" section")?
        + 1;
    let section = &readme[start..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    // Fences hold three backticks, which would pair the wrong ones.
    let text: Vec<&str> = section
        .lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect();
    let mut names = BTreeSet::new();
    for span in text.join("\n").split('`').skip(1).step_by(2) {
        if span.starts_with("monitor_") {
            names.extend(expand_metric(span));
        }
    }
    for name in &names {
        ensure!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "README.md's metrics: {name:?} is not a metric name (a code span this test misreads?)"
        );
    }
    ensure!(
        names.len() > 20,
        "only {} metrics found in README.md's metrics section: {names:?}",
        names.len()
    );
    Ok(names)
}

/// `a_{x,y}_b` is `a_x_b` and `a_y_b`; `name{label,...}` is `name`.
fn expand_metric(span: &str) -> Vec<String> {
    let Some(open) = span.find('{') else {
        return vec![span.to_string()];
    };
    match span[open..].find('}').map(|close| open + close) {
        Some(close) if close + 1 < span.len() => {
            let (head, tail) = (&span[..open], &span[close + 1..]);
            span[open + 1..close]
                .split(',')
                .flat_map(|alternative| expand_metric(&format!("{head}{alternative}{tail}")))
                .collect()
        }
        _ => vec![span[..open].to_string()],
    }
}

/// `__name__` matchers: the operator and the quoted value.
fn name_matchers() -> Regex {
    Regex::new(r#"__name__\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#).expect("a valid regex")
}

/// The metric names a `text` selects with `__name__=~"..."` regexes,
/// anchored as Prometheus anchors them.
fn name_regexes(text: &str) -> anyhow::Result<Vec<Regex>> {
    name_matchers()
        .captures_iter(text)
        .filter(|c| &c[1] == "=~")
        .map(|c| Regex::new(&format!("^(?:{})$", &c[2])).context("a __name__ regex"))
        .collect()
}

/// The metric names `text` uses: words starting with `monitor_`, recording
/// rules' names (which hold colons) and `__name__` regexes excluded.
fn monitor_metrics_in(text: &str) -> BTreeSet<String> {
    let text = name_matchers().replace_all(text, |c: &regex::Captures| match &c[1] {
        "=" | "!=" => format!(" {} ", &c[2]),
        _ => String::new(),
    });
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("monitor_") && !word.contains(':'))
        .map(str::to_string)
        .collect()
}

/// promtool parses a misspelt metric name happily: only this catches it.
#[test]
fn dashboards_and_rules_name_only_documented_metrics() -> anyhow::Result<()> {
    let documented = documented_metrics()?;
    let mut unknown = Vec::new();
    for name in [NODE_DASHBOARD, JOB_DASHBOARD] {
        for query in queries(name, &dashboard(name)?)? {
            for metric in monitor_metrics_in(&query.expr) {
                if !documented.contains(&metric) {
                    unknown.push(format!("{}: {metric}", query.source));
                }
            }
            for regex in name_regexes(&query.expr)? {
                if !documented.iter().any(|name| regex.is_match(name)) {
                    unknown.push(format!("{}: any of {regex}", query.source));
                }
            }
        }
    }
    let dir = workspace().join("packaging/prometheus");
    for file in RULE_FILES.into_iter().chain([RULE_TESTS]) {
        for metric in monitor_metrics_in(&read(&dir.join(file))?) {
            if !documented.contains(&metric) {
                unknown.push(format!("{file}: {metric}"));
            }
        }
    }
    ensure!(
        unknown.is_empty(),
        "metrics the daemon does not serve (METRICS.md does not list them):\n{}",
        unknown.join("\n")
    );
    Ok(())
}

/// The README's metrics section explains figures; it names none the
/// daemon does not serve.
#[test]
fn readme_names_only_served_metrics() -> anyhow::Result<()> {
    let served = documented_metrics()?;
    let unknown: Vec<String> = readme_metrics()?.difference(&served).cloned().collect();
    ensure!(
        unknown.is_empty(),
        "README.md's \"Metrics\" section names metrics METRICS.md does not list: {unknown:?}"
    );
    Ok(())
}

#[test]
fn job_dashboard_shows_every_per_job_family() -> anyhow::Result<()> {
    let families: BTreeSet<String> = documented_metrics()?
        .into_iter()
        .filter(|name| name.starts_with("monitor_job_"))
        .collect();
    let queries = queries(JOB_DASHBOARD, &dashboard(JOB_DASHBOARD)?)?;
    let named: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| monitor_metrics_in(&query.expr))
        .collect();
    // A query selecting by a name regex shows every family it matches (the
    // table of every per-job figure: a new counter needs no new panel).
    let mut regexes = Vec::new();
    for query in &queries {
        regexes.extend(name_regexes(&query.expr)?);
    }
    let missing: Vec<&String> = families
        .iter()
        .filter(|name| !named.contains(*name) && !regexes.iter().any(|r| r.is_match(name)))
        .collect();
    ensure!(
        missing.is_empty(),
        "{JOB_DASHBOARD} has no query of {missing:?} (METRICS.md lists them)"
    );
    Ok(())
}

#[test]
fn grafana_variables_are_filled_in() -> anyhow::Result<()> {
    assert_eq!(
        substitute(
            r#"rate(x{jobid="$jobid",user=~"${user}"}[$__rate_interval])"#,
            &VARIABLES
        )?,
        r#"rate(x{jobid="42",user=~"alice"}[4m])"#
    );
    assert_eq!(
        substitute("$__range_s / ${__interval:text} $__range", &VARIABLES)?,
        "21600 / 1m 6h"
    );
    // A regex anchor is not a variable.
    assert_eq!(substitute(r#"x{a=~"b$"}"#, &VARIABLES)?, r#"x{a=~"b$"}"#);
    let Err(error) = substitute("x[$jobId]", &VARIABLES) else {
        bail!("an unknown variable was accepted");
    };
    assert!(error.to_string().contains("$jobId"), "{error:#}");
    Ok(())
}

#[test]
fn readme_metric_spans_are_read_as_names() {
    assert_eq!(
        expand_metric("monitor_job_cgroup_io_{read,write}_bytes_total"),
        [
            "monitor_job_cgroup_io_read_bytes_total",
            "monitor_job_cgroup_io_write_bytes_total"
        ]
    );
    assert_eq!(
        expand_metric("monitor_job_info{jobid,user,label_*}"),
        ["monitor_job_info"]
    );
    assert_eq!(expand_metric("monitor_job_tasks"), ["monitor_job_tasks"]);
    assert_eq!(
        label_values_selector(r#"label_values(monitor_job_info{user=~"$user"}, jobid)"#),
        Some(r#"monitor_job_info{user=~"$user"}"#)
    );
    assert_eq!(
        monitor_metrics_in(
            "sum(rate(monitor_job_cpu_seconds_total[5m])) / jobid:monitor_job_cpus_allocated:sum"
        ),
        BTreeSet::from(["monitor_job_cpu_seconds_total".to_string()])
    );
    // A name regex is no name; a name matched exactly is one.
    let every = r#"{__name__=~"monitor_job_.+", __name__!="monitor_job_info", jobid="$jobid"}"#;
    assert_eq!(
        monitor_metrics_in(every),
        BTreeSet::from(["monitor_job_info".to_string()])
    );
    let regexes = name_regexes(every).expect("a valid regex");
    assert_eq!(regexes.len(), 1);
    assert!(regexes[0].is_match("monitor_job_widgets_total"));
    assert!(!regexes[0].is_match("xmonitor_job_widgets_total"));
}
