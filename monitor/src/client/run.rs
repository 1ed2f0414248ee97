//! `monitor run`: register, then exec the command in place, so the job's
//! process is the command itself and its exit status is the command's.
//! Monitoring must never stop a job: if the daemon cannot register it, the
//! command runs anyway with a warning, unless `--require`.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::{net::UnixStream, process::CommandExt},
    process::{Command, ExitCode},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{cli::RunArgs, launcher::hello::Reply};

/// How long to wait for the daemon's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status when --require and the job could not be registered (EX_TEMPFAIL).
const EXIT_NOT_REGISTERED: u8 = 75;
/// Batch systems' job id variables, in order of preference.
const JOB_ID_VARIABLES: [&str; 4] = ["SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID"];

#[derive(Serialize)]
struct Hello<'a> {
    job_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
}

pub fn run(args: RunArgs) -> ExitCode {
    let job_id = args.job_id.clone().unwrap_or_else(default_job_id);
    match register(&args, &job_id) {
        Ok(reply) => log::debug!(
            "registered job {job_id} in {}",
            reply.cgroup.unwrap_or_default()
        ),
        Err(e) if args.require => {
            eprintln!("monitor run: error: job {job_id} not registered: {e:#}");
            return ExitCode::from(EXIT_NOT_REGISTERED);
        }
        Err(e) => eprintln!("monitor run: warning: job {job_id} runs unmonitored: {e:#}"),
    }
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let error = Command::new(program).args(rest).exec();
    eprintln!(
        "monitor run: cannot run {}: {error}",
        program.to_string_lossy()
    );
    // As a shell does: 127 not found, 126 not executable.
    ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn register(args: &RunArgs, job_id: &str) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(&args.socket_path).with_context(|| {
        format!(
            "connecting to {} (is the daemon running?)",
            args.socket_path.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let hello = Hello {
        job_id,
        name: args.name.as_deref(),
        labels: args
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let mut line = serde_json::to_string(&hello)?;
    line.push('\n');
    // A daemon that refuses us at once (untrusted, over the cap) answers and
    // hangs up before reading the hello: the write then fails, but the
    // answer saying why is waiting to be read.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if answer.trim().is_empty() {
        sent.context("sending the hello")?;
        read.context("reading the daemon's answer")?;
        bail!("the daemon closed the connection without an answer");
    }
    let reply: Reply = serde_json::from_str(answer.trim())
        .with_context(|| format!("unreadable answer {answer:?}"))?;
    if !reply.ok {
        bail!(
            "the daemon refused: {}",
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(reply)
}

fn default_job_id() -> String {
    JOB_ID_VARIABLES
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("run-{}-{secs}", std::process::id())
        })
}
