//! `monitor report JOBID`: one job's report, what Princeton's `jobstats
//! JOBID` and Slurm's `seff JOBID` give, plus what only the kernel's own
//! counts tell: run-queue wait (threads waiting for a CPU), the memory
//! peak between samples, execs, switches, IO calls and network.
//!
//! Named `report` because it is the verb users type after a job, as they
//! type `seff` or `jobstats`: `monitor jobs` lists jobs, `monitor report`
//! explains one. (`stats` would suggest raw numbers; `efficiency` only one
//! of the figures.)
//!
//! Where the figures come from:
//! - by default the local daemon's job API (the socket `monitor jobs`
//!   reads): the job on this node, its cpuset and memory limit where its
//!   cgroups set them, else this node's CPUs and MemTotal, said so;
//! - with `--prometheus URL`, Prometheus' query API: the job on every node
//!   whose daemon it scrapes, summed, with a row per node.
//!
//! The modules: [`local`] and [`prometheus`] gather, [`figures`] computes
//! (pure functions), [`render`] writes text or JSON.
pub mod figures;
mod local;
mod prometheus;
mod render;

use std::{
    io::{IsTerminal as _, Write as _},
    time::SystemTime,
};

use anyhow::{Context as _, bail};

use self::{
    figures::{JobInput, Report},
    local::NodeFacts,
    prometheus::Prometheus,
    render::Style,
};
use crate::cli::{ReportArgs, api_socket};

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let jobs = match &args.prometheus {
        Some(url) => from_prometheus(&args, url, now)?,
        None => from_daemon(&args)?,
    };
    let reports: Vec<Report> = jobs.iter().map(|job| figures::report(job, now)).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", render::json(&reports).context("writing JSON")?)?;
    } else {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let style = Style::choose(args.color, std::io::stdout().is_terminal(), no_color);
        let texts: Vec<String> = reports.iter().map(|r| render::text(r, style)).collect();
        write!(out, "{}", texts.join("\n"))?;
    }
    out.flush()?;
    Ok(())
}

fn from_daemon(args: &ReportArgs) -> anyhow::Result<Vec<JobInput>> {
    let socket = api_socket(&args.socket_path);
    let Some(jobs) = local::jobs(&socket, &args.jobid)? else {
        bail!(
            "no job {:?} on this node's daemon (neither running nor in its state store); \
             for a job of other nodes, use --prometheus",
            args.jobid
        );
    };
    let users: Vec<&str> = jobs.iter().map(|job| job.user.as_str()).collect();
    let chosen: Vec<_> = jobs
        .iter()
        .filter(|job| args.user.as_ref().is_none_or(|user| *user == job.user))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no job {:?} of user {:?} on this node's daemon (that id is {}'s)",
            args.jobid,
            args.user.as_deref().unwrap_or_default(),
            users.join(", ")
        );
    }
    let node = NodeFacts::of_this_node();
    let source = format!("the local daemon ({})", socket.display());
    Ok(chosen
        .into_iter()
        .map(|job| local::input(job, &node, &source))
        .collect())
}

fn from_prometheus(args: &ReportArgs, url: &str, now: f64) -> anyhow::Result<Vec<JobInput>> {
    let prometheus = Prometheus::new(url)?;
    let jobs = prometheus::gather(
        &prometheus,
        &args.jobid,
        args.user.as_deref(),
        args.range,
        now,
    )?;
    if jobs.is_empty() {
        let of_user = args
            .user
            .as_ref()
            .map(|user| format!(" of user {user:?}"))
            .unwrap_or_default();
        bail!(
            "no job {:?}{of_user} in Prometheus at {} over the last {} (a longer --range finds older jobs)",
            args.jobid,
            prometheus.url,
            prometheus::humantime(args.range)
        );
    }
    Ok(jobs)
}
