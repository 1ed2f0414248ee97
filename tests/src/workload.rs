//! Driving the `workload` helper binary (tests/src/bin/workload.rs) step by
//! step: it prints `WORD key=value ...` lines with the kernel's own figures
//! and waits for a line on stdin before each next step.
use std::{
    collections::BTreeMap,
    process::{Command, ExitStatus, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use crate::process::{ChildGuard, Lines};

/// The longest a workload step may take on a busy two-core machine.
pub const STEP: Duration = Duration::from_secs(60);

/// One line of the helper: its first word and its `key=value` numbers.
#[derive(Debug, Clone)]
pub struct Report {
    pub line: String,
    fields: BTreeMap<String, u64>,
}

impl Report {
    /// Parses `word k=v k2=v2`.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields = line
            .split_whitespace()
            .skip(1)
            .map(|field| {
                let (key, value) = field
                    .split_once('=')
                    .with_context(|| format!("{field:?} in {line:?} is not key=value"))?;
                let value = value
                    .parse()
                    .with_context(|| format!("{key}={value:?} in {line:?} is not a number"))?;
                Ok((key.to_string(), value))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            line: line.to_string(),
            fields,
        })
    }

    pub fn get(&self, key: &str) -> anyhow::Result<u64> {
        self.fields
            .get(key)
            .copied()
            .ok_or_else(|| anyhow!("no {key}= in the workload's line {:?}", self.line))
    }
}

/// A running helper with piped stdin and stdout.
pub struct Workload {
    child: ChildGuard,
    lines: Lines,
}

impl Workload {
    /// Spawns `command` (a helper command, already set up to join its job)
    /// with stdin and stdout piped.
    pub fn spawn(command: &mut Command, what: &str) -> anyhow::Result<Self> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(command, what)?;
        let lines = child.lines()?;
        Ok(Self { child, lines })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the line starting with `word`, at most `timeout`.
    pub fn expect(&self, word: &str, timeout: Duration) -> anyhow::Result<Report> {
        let rest = self.lines.expect(word, timeout)?;
        Report::parse(&format!("{word} {rest}"))
    }

    /// Lets the helper go on to its next step.
    pub fn proceed(&mut self) -> anyhow::Result<()> {
        self.child.write_stdin(b"go\n")
    }

    /// Sends one step to `workload steps` and returns its answer, which
    /// must start with `answer`.
    pub fn step(&mut self, step: &str, answer: &str, timeout: Duration) -> anyhow::Result<Report> {
        self.child.write_stdin(format!("{step}\n").as_bytes())?;
        self.expect(answer, timeout)
            .with_context(|| format!("after the step {step:?}"))
    }

    /// Closes stdin (the helper's cue to exit) and waits for it.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.child.close_stdin();
        self.child.wait(timeout)
    }

    /// Waits for the helper to exit by itself.
    pub fn wait(self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.child.wait(timeout)
    }
}

/// Spawns a helper that runs to its end by itself: stdin closed, stdout and
/// stderr piped for [`ChildGuard::wait_with_output`] and [`report_of`].
pub fn spawn_to_end(command: &mut Command, what: &str) -> anyhow::Result<ChildGuard> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(command, what)
}

/// The line starting with `word` of a helper that ran to its end, which
/// must have exited 0.
pub fn report_of(output: &Output, what: &str, word: &str) -> anyhow::Result<Report> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{what} failed ({}); stdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(word))
        .with_context(|| format!("{what} printed no `{word} ...` line:\n{stdout}"))?;
    Report::parse(line)
}

/// Runs a helper to its end (at most `timeout`; it must exit 0) and
/// returns its line starting with `word`.
pub fn run_to_end(
    command: &mut Command,
    what: &str,
    word: &str,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let output = spawn_to_end(command, what)?.wait_with_output(timeout)?;
    report_of(&output, what, word)
}
