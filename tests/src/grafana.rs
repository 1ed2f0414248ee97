//! The Grafana dashboards of packaging/grafana: their panels, their
//! queries (panel targets and `label_values` variables) and Grafana's
//! variables filled in, for promtool (tests/tests/prometheus_rules.rs) and
//! for a live Prometheus (tests/tests/report.rs).
use std::{fs, path::Path};

use anyhow::{Context as _, ensure};
use serde_json::Value;

/// In packaging/grafana.
pub const NODE_DASHBOARD: &str = "monitor-node.json";
pub const JOB_DASHBOARD: &str = "monitor-job.json";

/// A dashboard query, and where it is (for messages).
#[derive(Debug, Clone)]
pub struct Query {
    pub source: String,
    pub expr: String,
}

/// A dashboard of packaging/grafana, parsed.
pub fn dashboard(name: &str) -> anyhow::Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/grafana")
        .join(name);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every panel, those in rows included; rows themselves hold no query.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
            if panel["type"] != "row" {
                out.push(panel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A data source Grafana resolves in each installation: a template
/// variable, never one installation's data source uid.
pub fn portable_datasource(datasource: &Value) -> bool {
    datasource["uid"]
        .as_str()
        .is_some_and(|uid| uid.starts_with('$'))
}

/// Every query of a dashboard: its panels' targets, and the selectors of
/// its `label_values(...)` variables. Fails on a panel without a portable
/// data source or without a query.
pub fn queries(name: &str, dashboard: &Value) -> anyhow::Result<Vec<Query>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if !portable_datasource(&panel["datasource"]) {
            problems.push(format!(
                "panel {title:?}: data source {} is not a template variable",
                panel["datasource"]
            ));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        for target in targets {
            let ref_id = target["refId"].as_str().unwrap_or("?");
            if !target["datasource"].is_null() && !portable_datasource(&target["datasource"]) {
                problems.push(format!(
                    "panel {title:?} query {ref_id}: data source {} is not a template variable",
                    target["datasource"]
                ));
            }
            match target["expr"].as_str().map(str::trim) {
                Some(expr) if !expr.is_empty() => found.push(Query {
                    source: format!("{name} panel {title:?} query {ref_id}"),
                    expr: expr.to_string(),
                }),
                _ => problems.push(format!("panel {title:?} query {ref_id} has no expr")),
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let var = variable["name"].as_str().unwrap_or("?");
        // Older Grafana saves the query as a string, newer as an object.
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        match label_values_selector(query) {
            Some(selector) => found.push(Query {
                source: format!("{name} variable {var}"),
                expr: selector.to_string(),
            }),
            None => problems.push(format!(
                "variable {var}: {query:?} is not label_values(SELECTOR, LABEL)"
            )),
        }
    }
    ensure!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    Ok(found)
}

/// The series selector of `label_values(SELECTOR, LABEL)`.
pub fn label_values_selector(query: &str) -> Option<&str> {
    let args = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = args.rsplit_once(',')?;
    (!label.trim().is_empty()).then_some(selector.trim())
}

/// `expr` with Grafana's `$name` and `${name}` / `${name:format}` filled in
/// from `variables` (name, value); an unknown variable is an error. A `$`
/// not followed by a name (a regex anchor) stays.
pub fn substitute(expr: &str, variables: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .with_context(|| format!("unclosed ${{ in {expr:?}"))?;
            // The format only changes how several values are joined.
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            after.split_at(end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let value = variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| *value)
            .with_context(|| format!("unknown Grafana variable ${name} in {expr:?}"))?;
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}
