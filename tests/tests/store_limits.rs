//! Issue 13, item 5, the store's half: what one user leaves behind in the
//! state store and asks of the job API is bounded. A user pages through
//! the API (a default page, a largest page refused with a 400, `monitor
//! jobs` and `monitor report` following the pages); a user's flood of jobs
//! evicts that user's own stored profiles first; and a full disk (an
//! operator's condition, so run as root) leaves the daemon serving, its
//! memory bounded, its drops counted, the kernel's counter slots free, and
//! writing again once space is back.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use monitor_tests::{
    Daemon, Metrics,
    counter_map::{MAP_FULL, counter_entries},
    cpu_shared,
    daemon::binary,
    jobs_api::{api_jobs, api_page, with_id},
    launcher::{check_others_may_run, monitor_run},
    process::{NOBODY, run_as, run_ok},
    require_root_or_skip,
};
use serde_json::Value;

/// As the test user: nobody, from `/`.
fn as_nobody(command: &mut Command) -> &mut Command {
    run_as(command, NOBODY, NOBODY).current_dir("/")
}

/// Runs `monitor run --job-id ID -- /bin/true`, as nobody when `nobody`.
fn short_job(daemon: &Daemon, jobid: &str, nobody: bool) -> anyhow::Result<()> {
    let mut command = monitor_run(daemon.socket())?;
    command.args(["--require", "--job-id", jobid, "--", "/bin/true"]);
    if nobody {
        as_nobody(&mut command);
    }
    run_ok(&mut command, "a short job", Duration::from_secs(30))
}

/// `monitor ARGS --socket.path SOCKET` as nobody; its output, which must be a success.
fn monitor_as_nobody(daemon: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(binary()?);
    command
        .args(args)
        .arg("--socket.path")
        .arg(daemon.socket())
        .env_remove("MONITOR_SOCKET");
    let output = as_nobody(&mut command)
        .output()
        .with_context(|| format!("running monitor {args:?}"))?;
    ensure!(
        output.status.success(),
        "monitor {args:?} as nobody failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The API socket's raw answer to `GET path`, asked by nobody: the status
/// code, the headers and the body.
fn api_socket_get_as_nobody(daemon: &Daemon, path: &str) -> anyhow::Result<(u16, String, String)> {
    let api_socket = daemon.socket().with_extension("api.sock");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-i", "--max-time", "10", "--unix-socket"])
        .arg(&api_socket)
        .arg(format!("http://monitor{path}"));
    let Output {
        status,
        stdout,
        stderr,
    } = as_nobody(&mut command).output().context("running curl")?;
    ensure!(
        status.success(),
        "curl {path} as nobody: {}",
        String::from_utf8_lossy(&stderr)
    );
    let text = String::from_utf8(stdout).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of headers in the answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((code, head.to_string(), body.to_string()))
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .filter_map(|job| job["jobid"].as_str().map(str::to_string))
        .collect()
}

fn state_stat(metrics: &Metrics, name: &str) -> anyhow::Result<f64> {
    metrics.value(name, &[])
}

#[test]
fn a_user_pages_through_the_job_api_and_the_clients_show_every_job() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_others_may_run(&binary()?)?;
    let daemon = Daemon::start_with(&["--api.page-size", "3", "--api.max-page-size", "5"])?;
    // Eight jobs, and one job id run four times (four runs, one report each).
    let jobs: Vec<String> = (0..8).map(|n| format!("page-{n}")).collect();
    for id in &jobs {
        short_job(&daemon, id, true)?;
    }
    for run in 1..=4 {
        short_job(&daemon, "again", true)?;
        // A run still in the table would take the next one in (tasks that
        // register the same id join one job): each ends before the next.
        let (ended, _) = monitor_tests::jobs_api::wait_for_jobs(
            &daemon,
            "state=finished",
            Duration::from_secs(30),
            |jobs| with_id(jobs, "again").len() == run,
        )?;
        ensure!(ended, "run {run} of job again did not end");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = api_jobs(&daemon, "state=finished")?;
        let again = with_id(&listed, "again").len();
        if jobs.iter().all(|id| with_id(&listed, id).len() == 1) && again == 4 {
            break listed;
        }
        ensure!(
            Instant::now() < deadline,
            "not every job finished: {:?}",
            ids(&listed)
        );
        std::thread::sleep(daemon.sample_interval());
    };
    assert_eq!(listed.len(), 12, "{:?}", ids(&listed));

    // The raw API, asked by the user on the API socket: a default page of 3
    // and the next page named in a Link header.
    let (code, head, body) = api_socket_get_as_nobody(&daemon, "/api/v1/jobs?state=finished")?;
    assert_eq!(code, 200, "{head}\n{body}");
    let page: Vec<Value> = serde_json::from_str(&body)?;
    assert_eq!(page.len(), 3, "the default page: {body}");
    let next = monitor_tests::http::next_link(&head)
        .with_context(|| format!("a full page names no next one:\n{head}"))?;
    assert!(
        next.contains("state=finished") && next.contains("before="),
        "{next}"
    );
    // Following the links lists every job once, most recent first.
    let mut paged = page;
    let mut next = Some(next);
    let mut pages = 1;
    while let Some(path) = next {
        let (page, following) = api_page(&daemon, &path)?;
        assert!(page.len() <= 3, "{path}: {} jobs", page.len());
        paged.extend(page);
        next = following;
        pages += 1;
        ensure!(pages <= 10, "the pages never end");
    }
    assert_eq!(ids(&paged), ids(&listed));
    let ends: Vec<f64> = paged
        .iter()
        .filter_map(|j| j["end_time"].as_f64())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] >= w[1]), "{ends:?}");

    // Over the largest page: a clear 400, not a silent cut.
    let (code, _, body) = api_socket_get_as_nobody(&daemon, "/api/v1/jobs?limit=6")?;
    assert_eq!(code, 400, "{body}");
    let error: Value = serde_json::from_str(&body)?;
    let message = error["error"].as_str().context("no error message")?;
    assert!(message.contains("--api.max-page-size"), "{message}");
    let (code, _, _) = api_socket_get_as_nobody(&daemon, "/api/v1/jobs?limit=5")?;
    assert_eq!(code, 200);
    let (code, _, body) = api_socket_get_as_nobody(&daemon, "/api/v1/jobs?before=junk")?;
    assert_eq!(code, 400, "{body}");
    let metrics = daemon.metrics()?;
    let refused =
        |reason| metrics.value("monitor_api_requests_refused_total", &[("reason", reason)]);
    assert_eq!(refused("page_too_large")?, 1.0);
    assert_eq!(refused("bad_cursor")?, 1.0);
    let warned = daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("requests refused since the last such line"))
        .count();
    assert_eq!(
        warned,
        1,
        "refusals logged once per interval:\n{}",
        daemon.stderr()
    );

    // The clients show what they showed before paging: every job.
    let cli: Vec<Value> =
        serde_json::from_str(&monitor_as_nobody(&daemon, &["jobs", "--all", "--json"])?)?;
    let mut shown = ids(&cli);
    let mut expected = ids(&listed);
    shown.sort();
    expected.sort();
    assert_eq!(shown, expected, "monitor jobs --all --json");
    let table = monitor_as_nobody(&daemon, &["jobs", "--all"])?;
    for id in &jobs {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id)),
            "monitor jobs --all has no row for {id}:\n{table}"
        );
    }
    let report: Value =
        serde_json::from_str(&monitor_as_nobody(&daemon, &["report", "again", "--json"])?)?;
    assert_eq!(
        report.as_array().map(Vec::len),
        Some(4),
        "monitor report again: every run over two pages: {report:#}"
    );
    Ok(())
}

#[test]
fn one_users_flood_of_jobs_evicts_its_own_stored_profiles_first() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_others_may_run(&binary()?)?;
    // No retention in /metrics: the API then shows exactly what the store keeps.
    let daemon = Daemon::start_with(&["--state.max-profiles", "20", "--job.retention", "0s"])?;
    let kept: Vec<String> = (0..3).map(|n| format!("root-{n}")).collect();
    for id in &kept {
        short_job(&daemon, id, false)?;
    }
    const FLOOD: usize = 30;
    for n in 0..FLOOD {
        short_job(&daemon, &format!("flood-{n}"), true)?;
    }
    let written = (kept.len() + FLOOD) as f64;
    // Pruned right after the commit that went past the bound.
    let (done, _) = daemon.wait_for(100, |m| {
        m.value("monitor_state_profiles_written_total", &[])
            .is_ok_and(|n| n >= written)
            && m.value("monitor_state_profiles_stored", &[])
                .is_ok_and(|n| n <= 20.0)
    })?;
    ensure!(
        done,
        "not every profile was written, or the store kept more than 20"
    );
    // Two more samples: the last jobs have left the daemon's memory too
    // (retention 0 s), so the API lists the store alone.
    let metrics = daemon.metrics_after_samples(2)?;
    let stored = state_stat(&metrics, "monitor_state_profiles_stored")?;
    assert!(
        stored <= 20.0,
        "{stored} profiles stored, at most 20 wanted"
    );
    let pruned = metrics.value(
        "monitor_state_profiles_pruned_total",
        &[("reason", "max_profiles")],
    )?;
    assert_eq!(stored + pruned, written, "stored {stored}, pruned {pruned}");

    let listed = api_jobs(&daemon, "state=finished")?;
    for id in &kept {
        assert_eq!(
            with_id(&listed, id).len(),
            1,
            "another user's job {id} was pruned for the flood: {:?}",
            ids(&listed)
        );
    }
    // Which of the flood's own go first is by end time, and jobs ending
    // in one sample share it: the unit tests check that order.
    let flood_kept = listed
        .iter()
        .filter(|job| {
            job["jobid"]
                .as_str()
                .is_some_and(|id| id.starts_with("flood-"))
        })
        .count();
    assert_eq!(
        flood_kept as f64,
        stored - kept.len() as f64,
        "{:?}",
        ids(&listed)
    );
    assert_eq!(listed.len() as f64, stored, "{:?}", ids(&listed));
    Ok(())
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("monitor-small-disk-{}", std::process::id()));
        let _ = Command::new("umount").arg(&dir).status();
        fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mount -t tmpfs on {} failed",
            dir.display()
        );
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> anyhow::Result<PathBuf> {
        let path = self.0.join("filler");
        let mut file = fs::File::create(&path)?;
        let block = vec![0u8; 4096];
        loop {
            match file.write_all(&block).and_then(|()| file.sync_data()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(path),
                Err(e) => bail!("filling {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

const UNAVAILABLE: [(&str, &str); 1] = [("reason", "store_unavailable")];

/// Issue 13, item 5: a full disk under `--state.dir`. An operator's
/// condition (a user filling a shared disk is one way there), so the test
/// makes it as root on a small tmpfs of its own.
#[test]
fn a_full_disk_bounds_what_is_held_counts_drops_frees_slots_and_recovers() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let disk = SmallDisk::mount("2m")?;
    let state = disk.path().join("state");
    const HELD: usize = 5;
    // 64 counter slots: more jobs than that end while the disk is full.
    let state_flag = state.to_string_lossy().into_owned();
    let held = HELD.to_string();
    let daemon = Daemon::start_with(&[
        "--state.dir",
        &state_flag,
        "--state.max-pending",
        &held,
        "--bpf.max-cgroups",
        "64",
        "--job.retention",
        "10m",
    ])?;
    short_job(&daemon, "before-full", false)?;
    let (written, _) = daemon.wait_for(50, |m| {
        m.value("monitor_state_profiles_written_total", &[])
            .is_ok_and(|n| n >= 1.0)
    })?;
    ensure!(written, "the first profile was not written");

    let before_full = daemon.metrics()?;
    let idle_entries = counter_entries(&before_full)?;
    let written_before_full = state_stat(&before_full, "monitor_state_profiles_written_total")?;
    let filler = disk.fill()?;
    let full_at = Instant::now();
    const JOBS: usize = 100;
    let jobs: Vec<String> = (0..JOBS).map(|n| format!("full-{n}")).collect();
    // In groups of four, each group's slots back before the next starts:
    // fewer cgroups at once than a cgroup has slots to probe (8), so none
    // finds them all taken, unless slots stay held for the store.
    for group in jobs.chunks(4) {
        for id in group {
            short_job(&daemon, id, false)?;
        }
        let (freed, metrics) =
            daemon.wait_for(50, |m| counter_entries(m).is_ok_and(|n| n <= idle_entries))?;
        ensure!(
            freed,
            "the counter slots of {group:?} were not freed while the store could not write: \
             {:?} of 64 taken",
            counter_entries(&metrics)
        );
    }
    let (ended, metrics) = daemon.wait_for(50, |m| {
        jobs.iter().all(|id| {
            m.find("monitor_job_end_time_seconds", &[("jobid", id)])
                .is_ok_and(|v| v.is_some())
        })
    })?;
    ensure!(ended, "not every job ended while the disk was full");
    assert!(
        state_stat(&metrics, "monitor_state_commit_errors_total")? > 0.0,
        "no commit failed: the disk was not full for the store"
    );
    // Bounded: what the store cannot take is dropped and counted.
    let pending = state_stat(&metrics, "monitor_state_profiles_pending")?;
    assert!(
        pending <= HELD as f64,
        "{pending} profiles held, at most {HELD}"
    );
    let dropped = metrics.value("monitor_state_profiles_dropped_total", &UNAVAILABLE)?;
    // SQLite may still fill pages its files already hold after the disk
    // is full, so a few commits can succeed: every job is written, held
    // or dropped and counted, none unaccounted.
    let written =
        state_stat(&metrics, "monitor_state_profiles_written_total")? - written_before_full;
    assert!(
        dropped + pending + written >= JOBS as f64,
        "{dropped} dropped, {pending} held and {written} written of {JOBS} jobs"
    );
    // The counter slots went back although nothing was committed: every
    // job was counted, none lost for want of a slot.
    assert_eq!(
        metrics.value("monitor_bpf_lost_events_total", &MAP_FULL)?,
        0.0
    );
    for id in &jobs {
        let cpu = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", id)])?;
        assert!(cpu > 0.0, "job {id} has no CPU time: {cpu}");
    }
    // Logged at most once per 10 s, not once per drop or failure.
    let log = daemon.stderr();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    let allowed = 1 + full_at.elapsed().as_secs() as usize / 10;
    let drop_lines = lines("cannot be written: dropped");
    assert!(
        (1..=allowed).contains(&drop_lines),
        "{drop_lines} drop lines in {:?}:\n{log}",
        full_at.elapsed()
    );
    assert!(
        lines("failed commits since the last such line") <= allowed + 1,
        "commit failures logged too often:\n{log}"
    );

    // Space again: the held profiles are written at the next retry (within
    // 10 s), then new ones as always.
    fs::remove_file(&filler)?;
    let before = state_stat(&metrics, "monitor_state_profiles_written_total")?;
    let written = |m: &Metrics| m.value("monitor_state_profiles_written_total", &[]);
    let (recovered, metrics) = daemon.wait_for(150, |m| {
        written(m).is_ok_and(|n| n >= before + pending)
            && m.value("monitor_state_profiles_pending", &[])
                .is_ok_and(|n| n == 0.0)
    })?;
    ensure!(
        recovered,
        "the held profiles were not written once space was back: {:?}",
        written(&metrics)
    );
    let before = written(&metrics)?;
    short_job(&daemon, "after-full", false)?;
    let (stored, metrics) = daemon.wait_for(50, |m| written(m).is_ok_and(|n| n > before))?;
    ensure!(
        stored,
        "a new profile was not written: {:?}",
        written(&metrics)
    );
    assert_eq!(
        state_stat(&metrics, "monitor_state_profiles_pending")?,
        0.0,
        "nothing held once the store writes"
    );
    Ok(())
}
