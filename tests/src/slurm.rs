//! A real one-node Slurm for the tests: Debian's slurmctld and slurmd
//! (`cargo xtask test` installs them) with proctrack/cgroup, task/cgroup and
//! jobacct_gather/cgroup on this host's v1 controllers, munged, a
//! configuration of its own in a temporary directory, and a non-root user
//! to submit as. Stopped, its state and cgroups removed, when dropped.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The user jobs are submitted as (made when missing, a system user).
pub const USER: &str = "monitor-slurm";
/// How long Slurm gets to come up, and a job to run.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
    node: String,
    pub uid: u32,
}

impl Slurm {
    /// Writes the configuration, starts munged (unless running), slurmctld
    /// and slurmd, and waits until the node is idle.
    pub fn start() -> anyhow::Result<Self> {
        let node = hostname()?;
        let dir = std::env::temp_dir().join(format!("monitor-slurm-{}", std::process::id()));
        for sub in ["state", "spool", "log"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("making {}", dir.join(sub).display()))?;
        }
        let conf = dir.join("slurm.conf");
        fs::write(&conf, slurm_conf(&dir, &node, memory_mib()?))?;
        fs::write(dir.join("cgroup.conf"), CGROUP_CONF)?;
        let uid = ensure_user()?;
        ensure_munged()?;
        let slurm = Self {
            dir,
            conf,
            node,
            uid,
        };
        slurm.daemon("slurmctld", &["-i"])?;
        slurm.daemon("slurmd", &[])?;
        slurm.wait_until_idle()?;
        Ok(slurm)
    }

    fn daemon(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(name)
            .args(args)
            .arg("-f")
            .arg(&self.conf)
            .env("SLURM_CONF", &self.conf)
            .status()
            .with_context(|| format!("starting {name}"))?;
        if !status.success() {
            bail!(
                "{name} did not start ({status}); its log:\n{}",
                self.log(name)
            );
        }
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join("log").join(format!("{name}.log"))).unwrap_or_default()
    }

    fn wait_until_idle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.client("sinfo", &["-h", "-o", "%T"]);
            if let Ok(out) = &out
                && String::from_utf8_lossy(&out.stdout).trim() == "idle"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the Slurm node is not idle after {START_TIMEOUT:?}: {out:?}\nslurmctld:\n{}\nslurmd:\n{}",
                    self.log("slurmctld"),
                    self.log("slurmd")
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs Slurm client `program` as root with this Slurm's configuration.
    fn client(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .with_context(|| format!("running {program}"))
    }

    /// A command that runs Slurm client `program` as [`USER`].
    pub fn as_user(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", USER, "--", program])
            .env("SLURM_CONF", &self.conf)
            .current_dir("/tmp");
        command
    }

    /// `sbatch --wrap script` as [`USER`]; the job's id.
    pub fn sbatch(&self, script: &str) -> anyhow::Result<String> {
        self.sbatch_with(&[], script)
    }

    /// `sbatch options... --wrap script` as [`USER`]; the job's id.
    pub fn sbatch_with(&self, options: &[&str], script: &str) -> anyhow::Result<String> {
        let out = self
            .as_user("sbatch")
            .args(["--parsable", "--chdir=/tmp", "--output=/dev/null"])
            .args(options)
            .args(["--wrap", script])
            .output()
            .context("running sbatch")?;
        if !out.status.success() {
            bail!(
                "sbatch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let id = id.split(';').next().unwrap_or_default().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("sbatch printed no job id: {id:?}");
        }
        Ok(id)
    }

    /// Whether job `id` is still queued or running.
    pub fn active(&self, id: &str) -> anyhow::Result<bool> {
        let out = self.client("squeue", &["-h", "-j", id, "-o", "%T"])?;
        Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
    }

    /// Waits until job `id` left the queue (at most `timeout`).
    pub fn wait_done(&self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.active(id)? {
            if Instant::now() >= deadline {
                bail!("Slurm job {id} still active after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until job `id` runs (at most `timeout`).
    pub fn wait_running(&self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.client("squeue", &["-h", "-j", id, "-o", "%T"])?;
            if String::from_utf8_lossy(&out.stdout).trim() == "RUNNING" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("Slurm job {id} not running after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The job's directory in v1 controller hierarchy `mount` (as Debian's
    /// Slurm names it: `slurm_<node>/uid_<uid>/job_<id>`).
    pub fn job_dir(&self, mount: &Path, id: &str) -> PathBuf {
        mount
            .join(format!("slurm_{}", self.node))
            .join(format!("uid_{}", self.uid))
            .join(format!("job_{id}"))
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = self.client("scancel", &["-u", USER]);
        let _ = self.client("scontrol", &["shutdown"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        for pid_file in ["slurmd.pid", "slurmctld.pid"] {
            let Ok(pid) = fs::read_to_string(self.dir.join(pid_file)) else {
                continue;
            };
            let pid = pid.trim();
            while Path::new("/proc").join(pid).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: a signal to a pid we started (still ours if alive).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const CGROUP_CONF: &str = "CgroupPlugin=cgroup/v1\n\
    CgroupMountpoint=/sys/fs/cgroup\n\
    ConstrainCores=yes\n\
    ConstrainRAMSpace=yes\n";

fn slurm_conf(dir: &Path, node: &str, memory_mib: u64) -> String {
    let d = dir.display();
    format!(
        "ClusterName=monitortest\n\
         SlurmctldHost={node}\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         ProctrackType=proctrack/cgroup\n\
         TaskPlugin=task/cgroup\n\
         JobAcctGatherType=jobacct_gather/cgroup\n\
         AccountingStorageType=accounting_storage/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core_Memory\n\
         MpiDefault=none\n\
         ReturnToService=2\n\
         StateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/log/slurmctld.log\n\
         SlurmdLogFile={d}/log/slurmd.log\n\
         NodeName={node} CPUs=2 RealMemory={memory_mib} State=UNKNOWN\n\
         PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP\n"
    )
}

fn hostname() -> anyhow::Result<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname")?;
    Ok(name.trim().to_string())
}

/// Memory Slurm may hand out: half the machine's.
fn memory_mib() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kib / 1024 / 2)
}

/// [`USER`]'s uid, made a system user first when missing.
fn ensure_user() -> anyhow::Result<u32> {
    let uid = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    };
    let out = Command::new("id").args(["-u", USER]).output()?;
    if let Some(uid) = uid(&out).filter(|_| out.status.success()) {
        return Ok(uid);
    }
    let status = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/bin/sh", USER])
        .status()
        .context("running useradd")?;
    if !status.success() {
        bail!("useradd {USER} failed ({status})");
    }
    let out = Command::new("id").args(["-u", USER]).output()?;
    uid(&out).with_context(|| format!("no uid for {USER} after useradd"))
}

/// munged running with a key (Debian's package makes one at install).
fn ensure_munged() -> anyhow::Result<()> {
    let running = Command::new("pgrep").args(["-x", "munged"]).output()?;
    if running.status.success() {
        return Ok(());
    }
    let key = Path::new("/etc/munge/munge.key");
    if !key.exists() {
        let status = Command::new("mungekey")
            .args(["--create", "--force"])
            .status()?;
        if !status.success() {
            bail!("mungekey --create failed ({status})");
        }
        Command::new("chown")
            .args(["munge:munge", "/etc/munge/munge.key"])
            .status()?;
    }
    fs::create_dir_all("/run/munge")?;
    Command::new("chown")
        .args(["munge:munge", "/run/munge"])
        .status()?;
    let status = Command::new("runuser")
        .args(["-u", "munge", "--", "munged"])
        .status()
        .context("starting munged")?;
    if !status.success() {
        bail!("munged did not start ({status})");
    }
    Ok(())
}
