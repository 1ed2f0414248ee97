//! Memory, IO and network per job against the kernel's own numbers: the
//! workload (tests/src/bin/workload.rs) reads them from inside its process
//! (/proc/self/status, /proc/self/io, getrusage) right when they matter and
//! prints them; every test prints both sides and the difference.
use std::{os::unix::process::ExitStatusExt as _, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use monitor_tests::{
    Daemon, JobCgroup, Metrics,
    accuracy::{SETTLE_SAMPLES, relative_difference},
    cpu_exclusive, cpu_shared,
    memcg::MemoryLimit,
    require_root_or_skip, skip_or_fail,
    workload::{self, Report, STEP, Workload},
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const MIB: f64 = 1024.0 * 1024.0;

const RSS: &str = "monitor_job_memory_rss_bytes";
const RSS_PEAK: &str = "monitor_job_memory_rss_peak_bytes";

fn of_job(metrics: &Metrics, name: &str, job: &JobCgroup) -> anyhow::Result<f64> {
    metrics.value(name, &[("jobid", job.name.as_str())])
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / MIB)
}

/// The helper running `args` inside `job`, stdin and stdout piped.
fn workload(job: &JobCgroup, args: &[&str]) -> anyhow::Result<Workload> {
    Workload::spawn(
        job.command(WORKLOAD)?.args(args),
        &format!("workload {}", args.join(" ")),
    )
}

/// Runs the helper with `args` in `job` to its end (it must exit 0) and
/// returns its line starting with `word`.
fn run_to_end(job: &JobCgroup, args: &[&str], word: &str) -> anyhow::Result<Report> {
    let what = format!("workload {}", args.join(" "));
    workload::run_to_end(job.command(WORKLOAD)?.args(args), &what, word, STEP)
}

/// Waits until the daemon shows the job's processes resident (their first
/// rss_stat events summed), then returns a scrape `samples` later.
fn resident_baseline(daemon: &Daemon, job: &JobCgroup, samples: u32) -> anyhow::Result<Metrics> {
    let (seen, metrics) = daemon.wait_for(20, |m| of_job(m, RSS, job).is_ok_and(|v| v > 0.0))?;
    if !seen {
        bail!(
            "{RSS} of job {} stayed 0 while its workload runs:\n{}",
            job.name,
            metrics.text
        );
    }
    if samples == 0 {
        return Ok(metrics);
    }
    daemon.metrics_after_samples(samples)
}

/// 300 MiB allocated, touched and freed (munmap) by a process that then
/// stays: the job's peak is the process's VmHWM, and its RSS falls back.
#[test]
fn memory_peak_matches_vmhwm_and_rss_returns_to_baseline() -> anyhow::Result<()> {
    const ALLOCATED_MIB: u32 = 300;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("memory")?;
    let mut work = workload(&job, &["memory", &ALLOCATED_MIB.to_string(), "0"])?;
    let ready = work.expect("ready", STEP)?;
    let before = resident_baseline(&daemon, &job, 2)?;
    let baseline = of_job(&before, RSS, &job)?;

    work.proceed()?;
    let touched = work.expect("touched", STEP)?;
    let freed = work.expect("freed", STEP)?;
    let after = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let peak = of_job(&after, RSS_PEAK, &job)?;
    let current = of_job(&after, RSS, &job)?;
    // Its exit unmaps everything from another context (curr=0 events).
    work.finish(STEP)?;
    let gone = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let after_exit = of_job(&gone, RSS, &job)?;

    let hwm = freed.get("hwm")? as f64;
    let error = relative_difference(peak, hwm);
    let allocated = f64::from(ALLOCATED_MIB) * MIB;
    let returned = current - baseline;
    let kernel_rss = freed.get("rss")? as f64;
    println!(
        "memory: peak {peak:.0} B ({}) vs VmHWM {hwm:.0} B ({}), difference {:.3}%; \
         RSS before {baseline:.0} B (kernel VmRSS {} B), with {ALLOCATED_MIB} MiB touched the kernel \
         said VmRSS {} B, after freeing {current:.0} B vs VmRSS {kernel_rss:.0} B ({:+.2} MiB from the \
         baseline, {:.3}% of the allocation); after it exited {after_exit:.0} B",
        mib(peak),
        mib(hwm),
        error * 100.0,
        ready.get("rss")?,
        touched.get("rss")?,
        returned / MIB,
        returned.abs() / allocated * 100.0,
    );
    assert!(
        error <= 0.05,
        "{RSS_PEAK} {peak:.0} B is not within 5% of the process's VmHWM {hwm:.0} B ({:.3}%)",
        error * 100.0
    );
    assert!(
        returned.abs() <= 0.02 * allocated,
        "after freeing {ALLOCATED_MIB} MiB the job's RSS is {current:.0} B, {:+.2} MiB from its \
         baseline {baseline:.0} B (the process itself says VmRSS {kernel_rss:.0} B)",
        returned / MIB
    );
    assert_eq!(
        after_exit, 0.0,
        "the job's only process exited, yet {RSS} is {after_exit:.0} B"
    );
    Ok(())
}

/// Memory a process outside the job faults into the job's address space
/// (process_vm_writev: the rss_stat events fire in the writer's context,
/// curr=0) counts in the job that owns the address space.
#[test]
fn memory_faulted_in_from_outside_counts_in_the_owning_job() -> anyhow::Result<()> {
    const REMOTE_MIB: usize = 64;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("remote")?;
    let mut work = workload(&job, &["steps"])?;
    let mapped = work.step(&format!("map {REMOTE_MIB}"), "mapped", STEP)?;
    let before = of_job(&resident_baseline(&daemon, &job, 2)?, RSS, &job)?;

    // Written from this test process, which is in no job.
    // One MiB of this process, written REMOTE_MIB times in one call (a
    // small buffer: other tests fork copies of this process).
    let len = REMOTE_MIB << 20;
    let local = vec![7u8; 1 << 20];
    let local_iov = vec![
        libc::iovec {
            iov_base: local.as_ptr().cast_mut().cast(),
            iov_len: local.len(),
        };
        REMOTE_MIB
    ];
    let remote_iov = libc::iovec {
        iov_base: mapped.get("addr")? as usize as *mut libc::c_void,
        iov_len: len,
    };
    let pid = libc::pid_t::try_from(work.id())?;
    // SAFETY: REMOTE_MIB iovecs of one readable local MiB; the remote range
    // is the workload's own fresh mapping, checked by the kernel.
    let written = unsafe {
        libc::process_vm_writev(
            pid,
            local_iov.as_ptr(),
            REMOTE_MIB as libc::c_ulong,
            &remote_iov,
            1,
            0,
        )
    };
    if written != len as isize {
        bail!(
            "process_vm_writev wrote {written} of {len} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    let state = work.step("state", "state", STEP)?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let (rss, peak) = (
        of_job(&metrics, RSS, &job)?,
        of_job(&metrics, RSS_PEAK, &job)?,
    );
    work.finish(STEP)?;

    let kernel = state.get("rss")? as f64;
    let error = relative_difference(rss, kernel);
    println!(
        "remote faults: job RSS {} before, {} after {REMOTE_MIB} MiB written in by another process \
         (VmRSS {}, difference {:.3}%), peak {}",
        mib(before),
        mib(rss),
        mib(kernel),
        error * 100.0,
        mib(peak)
    );
    assert!(
        error <= 0.05,
        "{RSS} {rss:.0} B is not within 5% of the process's VmRSS {kernel:.0} B ({:.3}%) after another \
         process faulted {REMOTE_MIB} MiB into it",
        error * 100.0
    );
    Ok(())
}

/// A 250 ms spike of 200 MiB between two samples 1 s apart: no sample sees
/// it, the peak does.
#[test]
fn memory_spike_between_samples_shows_in_the_peak() -> anyhow::Result<()> {
    const SPIKE_MIB: u32 = 200;
    const HOLD_MS: u32 = 250;
    const ATTEMPTS: u32 = 3;
    if !require_root_or_skip() {
        return Ok(());
    }
    // Timing: the spike must fit between two samples.
    let _machine = cpu_exclusive();
    let daemon = Daemon::start_with(&["--sample.interval", "1s"])?;
    let spike = f64::from(SPIKE_MIB) * MIB;
    for attempt in 1..=ATTEMPTS {
        let job = daemon.create_job(&format!("spike{attempt}"))?;
        let mut work = workload(
            &job,
            &["memory", &SPIKE_MIB.to_string(), &HOLD_MS.to_string()],
        )?;
        work.expect("ready", STEP)?;
        resident_baseline(&daemon, &job, 0)?;
        // Right after a fresh sample, so the spike ends before the next.
        let before = daemon.metrics_after_samples(1)?;
        let samples_before = before.value("monitor_samples_total", &[])?;
        work.proceed()?;
        let started = Instant::now();
        let touched = work.expect("touched", STEP)?;
        let freed = work.expect("freed", STEP)?;
        let lasted = started.elapsed();
        let samples_during =
            daemon.metrics()?.value("monitor_samples_total", &[])? - samples_before;
        let after = daemon.metrics_after_samples(1)?;
        work.finish(STEP)?;

        let (rss_before, peak_before) = (
            of_job(&before, RSS, &job)?,
            of_job(&before, RSS_PEAK, &job)?,
        );
        let (rss_after, peak_after) = (of_job(&after, RSS, &job)?, of_job(&after, RSS_PEAK, &job)?);
        let hwm = freed.get("hwm")? as f64;
        println!(
            "spike attempt {attempt}: {SPIKE_MIB} MiB for {HOLD_MS} ms (touch to free {lasted:?}, \
             {samples_during} samples meanwhile): RSS before {}, after {}; peak before {}, after {} \
             vs VmHWM {} (difference {:.3}%), VmRSS at the top {}",
            mib(rss_before),
            mib(rss_after),
            mib(peak_before),
            mib(peak_after),
            mib(hwm),
            relative_difference(peak_after, hwm) * 100.0,
            mib(touched.get("rss")? as f64),
        );
        if samples_during > 0.0 {
            // The machine was slow: a sample may have seen the spike.
            println!("spike attempt {attempt}: a sample fell inside the spike; again");
            continue;
        }
        for (when, rss) in [("before", rss_before), ("after", rss_after)] {
            assert!(
                rss < spike / 4.0,
                "the job's RSS at the sample {when} the spike is {rss:.0} B: not the small baseline expected"
            );
        }
        // Half, not a quarter as for the RSS: the peak may hold the moment
        // between fork and exec when the workload was a copy of this test
        // process (see memory_peak_leaves_out_the_launchers_copy).
        assert!(
            peak_before < spike / 2.0,
            "the job's peak before the spike is already {peak_before:.0} B"
        );
        assert!(
            peak_after >= spike,
            "{RSS_PEAK} {peak_after:.0} B after a {SPIKE_MIB} MiB spike no sample saw (VmHWM {hwm:.0} B)"
        );
        assert!(
            relative_difference(peak_after, hwm) <= 0.05,
            "{RSS_PEAK} {peak_after:.0} B is not within 5% of the process's VmHWM {hwm:.0} B"
        );
        return Ok(());
    }
    panic!(
        "in {ATTEMPTS} attempts a sample always fell inside the spike: the machine is too slow to judge"
    );
}

/// 100 MiB written to a file (and fsynced), then read back: the job's
/// read and write bytes against the process's own rchar and wchar.
#[test]
fn file_io_matches_proc_io() -> anyhow::Result<()> {
    const FILE_MIB: u32 = 100;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("fileio")?;
    let dir = std::env::temp_dir();
    let dir = dir
        .to_str()
        .context("temporary directory path is not UTF-8")?;
    let io = run_to_end(&job, &["io", dir, &FILE_MIB.to_string()], "io")?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;

    let figures = [
        ("read bytes", "monitor_job_io_read_bytes_total", "rchar"),
        ("write bytes", "monitor_job_io_write_bytes_total", "wchar"),
        ("read calls", "monitor_job_io_read_calls_total", "syscr"),
        ("write calls", "monitor_job_io_write_calls_total", "syscw"),
    ];
    let mut errors = Vec::new();
    for (what, series, key) in figures {
        let ours = of_job(&metrics, series, &job)?;
        let kernel = io.get(key)? as f64;
        let error = relative_difference(ours, kernel);
        println!(
            "io {what}: monitor {ours:.0}, /proc/PID/io {key} {kernel:.0}, difference {:+.0} ({:.4}%)",
            ours - kernel,
            error * 100.0
        );
        if key.starts_with("sys") {
            // Calls are a few hundred: exec's own reads of the binary and
            // the loader's count in the kernel's figure; printed, not judged.
            continue;
        }
        if error > 0.01 {
            errors.push(format!(
                "{series} {ours:.0} is not within 1% of {key} {kernel:.0} ({:.3}%)",
                error * 100.0
            ));
        }
    }
    let block_write = of_job(&metrics, "monitor_job_block_write_bytes_total", &job)?;
    let block_read = of_job(&metrics, "monitor_job_block_read_bytes_total", &job)?;
    println!(
        "io block: monitor write {block_write:.0} B (fsync in the job) vs /proc/PID/io write_bytes {}, \
         read {block_read:.0} B vs read_bytes {}",
        io.get("write_bytes")?,
        io.get("read_bytes")?
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// Every call the kernel counts in rchar and wchar counts here too: 1 MiB
/// calls taking turns among write, writev, pwrite64, pwritev, pwritev2 and
/// read, readv, pread64, preadv, preadv2 (any one missing is 20% of its
/// side), then sendfile and copy_file_range of a quarter each; an O_DIRECT
/// read and the fsync put this process's own bios on the block layer.
#[test]
fn every_read_and_write_call_counts() -> anyhow::Result<()> {
    const FILE_MIB: u32 = 40;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("allcalls")?;
    let dir = std::env::temp_dir();
    let dir = dir
        .to_str()
        .context("temporary directory path is not UTF-8")?;
    let io = run_to_end(&job, &["io", dir, &FILE_MIB.to_string(), "all"], "io")?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;

    let file = f64::from(FILE_MIB) * MIB;
    // write_bytes as /proc/PID/io has it: what the job caused to be
    // written, dirtied pages later cancelled (the copies, removed before
    // writeback) included, since a counter cannot go back down.
    let written = io.get("write_bytes")?;
    let mut errors = Vec::new();
    for (series, key, kernel, tolerance) in [
        (
            "monitor_job_io_read_bytes_total",
            "rchar",
            io.get("rchar")?,
            0.01,
        ),
        (
            "monitor_job_io_write_bytes_total",
            "wchar",
            io.get("wchar")?,
            0.01,
        ),
        // Direct IO and the fsync: bios this process submitted itself.
        (
            "monitor_job_block_read_bytes_total",
            "read_bytes",
            io.get("read_bytes")?,
            0.05,
        ),
        (
            "monitor_job_block_write_bytes_total",
            "write_bytes",
            written,
            0.05,
        ),
    ] {
        let ours = of_job(&metrics, series, &job)?;
        let kernel = kernel as f64;
        let error = relative_difference(ours, kernel);
        println!(
            "all calls: {series} {ours:.0} vs /proc/PID/io {key} {kernel:.0} ({:.4}%)",
            error * 100.0
        );
        if error > tolerance || ours < file {
            errors.push(format!(
                "{series} {ours:.0} is not within {:.0}% of {key} {kernel:.0} ({:.3}%), or below the \
                 file's {file:.0} B",
                tolerance * 100.0,
                error * 100.0
            ));
        }
    }
    for (series, key) in [
        ("monitor_job_io_read_calls_total", "syscr"),
        ("monitor_job_io_write_calls_total", "syscw"),
    ] {
        println!(
            "all calls: {series} {} vs {key} {}",
            of_job(&metrics, series, &job)?,
            io.get(key)?
        );
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// 50 MB over loopback TCP from the job to itself: both directions count
/// the payload plus at most 2% of headers and acknowledgements (and of
/// retransmissions, where the kernel itself says there were any); and
/// both are within 1% of what TCP_INFO of the two sockets says went out.
#[test]
fn loopback_tcp_counts_payload_plus_headers() -> anyhow::Result<()> {
    const PAYLOAD: u64 = 50_000_000;
    /// IPv4 (20) + TCP (20) + timestamps (12): every segment but the SYNs.
    const HEADERS: u64 = 52;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("network")?;
    let net = run_to_end(&job, &["net", &PAYLOAD.to_string()], "net")?;
    assert_eq!(
        (net.get("sent")?, net.get("received")?),
        (PAYLOAD, PAYLOAD),
        "the workload did not move the whole payload"
    );
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let retransmitted = net.get("tcp_bytes_retrans")?;
    let segments = net.get("tcp_segs_out")?;
    // Loopback: every segment one socket sends, the other receives.
    let kernel = (net.get("tcp_bytes_sent")? + segments * HEADERS) as f64;
    let payload = PAYLOAD as f64;
    let upper = (PAYLOAD + retransmitted) as f64 * 1.02;
    let mut errors = Vec::new();
    for direction in ["tx", "rx"] {
        let labels = [("jobid", job.name.as_str()), ("direction", direction)];
        let bytes = metrics.value("monitor_job_network_bytes_total", &labels)?;
        let packets = metrics.value("monitor_job_network_packets_total", &labels)?;
        let overhead = bytes / payload - 1.0;
        let error = relative_difference(bytes, kernel);
        println!(
            "network {direction}: {bytes:.0} B in {packets:.0} packets for a payload of {PAYLOAD} B \
             ({:+.3}%); TCP_INFO: {kernel:.0} B ({} B sent, {retransmitted} B of them \
             retransmitted, {segments} segments out, {} in), difference {:.3}%",
            overhead * 100.0,
            net.get("tcp_bytes_sent")?,
            net.get("tcp_segs_in")?,
            error * 100.0
        );
        if !(payload..=upper).contains(&bytes) {
            errors.push(format!(
                "{direction} {bytes:.0} B is not between the payload {PAYLOAD} B and 2% more than it \
                 and the {retransmitted} B retransmitted ({:+.3}%)",
                overhead * 100.0
            ));
        }
        if error > 0.01 {
            errors.push(format!(
                "{direction} {bytes:.0} B is not within 1% of the {kernel:.0} B the sockets' TCP_INFO \
                 accounts for ({:.3}%)",
                error * 100.0
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// The workload's `figures` line, run to its end in `job`, and the job's
/// final metrics once it is finished.
fn figures_and_final_metrics(
    daemon: &Daemon,
    job: &JobCgroup,
    args: &[&str],
) -> anyhow::Result<(Report, Metrics)> {
    let figures = run_to_end(job, args, "figures")?;
    let metrics = daemon.finish_job(job, SETTLE_SAMPLES)?;
    Ok((figures, metrics))
}

/// Compares each (series, kernel key) with the workload's figures: prints
/// both and the difference, returns the ones off by more than `tolerance`.
fn compare_figures(
    test: &str,
    metrics: &Metrics,
    job: &JobCgroup,
    figures: &Report,
    pairs: &[(&str, &str, &[&str])],
    tolerance: f64,
) -> anyhow::Result<Vec<String>> {
    let mut errors = Vec::new();
    for (series, source, keys) in pairs {
        let ours = of_job(metrics, series, job)?;
        let kernel = keys
            .iter()
            .map(|key| figures.get(key))
            .sum::<anyhow::Result<u64>>()? as f64;
        let error = relative_difference(ours, kernel);
        let what = keys.join("+");
        println!(
            "{test}: {series} {ours:.0} vs {source} {what} {kernel:.0}, difference {:+.0} ({:.4}%, bar {}%)",
            ours - kernel,
            error * 100.0,
            tolerance * 100.0
        );
        if error.is_nan() || error > tolerance {
            errors.push(format!(
                "{series} {ours:.0} is not within {}% of the process's {source} {what} {kernel:.0} \
                 ({:+.0}, {:.4}%)",
                tolerance * 100.0,
                ours - kernel,
                error * 100.0
            ));
        }
    }
    Ok(errors)
}

/// 32 MiB written to a file in 2 KiB write(2) calls and read back in 2 KiB
/// read(2) calls (16,384 each way): the job's bytes and calls against the process's own
/// /proc/PID/io, exec and loader reads included, within 0.1%. The workload
/// reads /proc/self/io as its last act; what follows (that read itself and
/// the line it prints) is a handful of calls and a few hundred bytes.
#[test]
fn io_bytes_and_calls_match_proc_io() -> anyhow::Result<()> {
    const FILE_MIB: u32 = 32;
    const CHUNK: u32 = 2048;
    const TOLERANCE: f64 = 0.001;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("smallio")?;
    let dir = std::env::temp_dir();
    let dir = dir
        .to_str()
        .context("temporary directory path is not UTF-8")?;
    let (figures, metrics) = figures_and_final_metrics(
        &daemon,
        &job,
        &["small-io", dir, &FILE_MIB.to_string(), &CHUNK.to_string()],
    )?;
    let calls = u64::from(FILE_MIB) * (1 << 20) / u64::from(CHUNK);
    assert!(
        figures.get("syscw")? >= calls && figures.get("syscr")? >= calls,
        "the workload made fewer than {calls} calls each way: {}",
        figures.line
    );
    let errors = compare_figures(
        "io",
        &metrics,
        &job,
        &figures,
        &[
            (
                "monitor_job_io_read_bytes_total",
                "/proc/PID/io",
                &["rchar"],
            ),
            (
                "monitor_job_io_write_bytes_total",
                "/proc/PID/io",
                &["wchar"],
            ),
            (
                "monitor_job_io_read_calls_total",
                "/proc/PID/io",
                &["syscr"],
            ),
            (
                "monitor_job_io_write_calls_total",
                "/proc/PID/io",
                &["syscw"],
            ),
        ],
        TOLERANCE,
    )?;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// 64 MiB mapped, touched page by page and unmapped, four times (65,536
/// faults): the job's page faults against the process's own minflt +
/// majflt (/proc/PID/stat fields 10 and 12) within 0.5%.
#[test]
fn page_faults_match_proc_stat() -> anyhow::Result<()> {
    const MAP_MIB: u32 = 64;
    const ROUNDS: u32 = 4;
    const TOLERANCE: f64 = 0.005;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("faults")?;
    let (figures, metrics) = figures_and_final_metrics(
        &daemon,
        &job,
        &["faults", &MAP_MIB.to_string(), &ROUNDS.to_string()],
    )?;
    let pages = u64::from(MAP_MIB * ROUNDS) * (1 << 20) / 4096;
    assert!(
        figures.get("minflt")? + figures.get("majflt")? >= pages,
        "the workload touched {pages} fresh pages, yet the kernel counted fewer faults: {}",
        figures.line
    );
    let errors = compare_figures(
        "page faults",
        &metrics,
        &job,
        &figures,
        &[(
            "monitor_job_page_faults_total",
            "/proc/PID/stat",
            &["minflt", "majflt"],
        )],
        TOLERANCE,
    )?;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// Faults of a job touching `touch_mib` MiB: (ours, the kernel's minor +
/// major faults of the process up to its `freed` line).
fn faults_of(daemon: &Daemon, name: &str, touch_mib: u32) -> anyhow::Result<(f64, f64)> {
    let job = daemon.create_job(name)?;
    let mut work = workload(&job, &["memory", &touch_mib.to_string(), "0"])?;
    work.expect("ready", STEP)?;
    work.proceed()?;
    work.expect("touched", STEP)?;
    let freed = work.expect("freed", STEP)?;
    work.finish(STEP)?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let ours = of_job(&metrics, "monitor_job_page_faults_total", &job)?;
    let kernel = freed.get("faults")? as f64;
    println!(
        "page faults touching {touch_mib} MiB: monitor {ours:.0}, the process's minflt+majflt {kernel:.0} \
         ({:+.2}%)",
        (ours / kernel - 1.0) * 100.0
    );
    Ok((ours, kernel))
}

#[test]
fn page_faults_rise_with_memory_touched() -> anyhow::Result<()> {
    const SMALL_MIB: u32 = 64;
    const LARGE_MIB: u32 = 256;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let (small, small_kernel) = faults_of(&daemon, "faults-small", SMALL_MIB)?;
    let (large, large_kernel) = faults_of(&daemon, "faults-large", LARGE_MIB)?;
    // One fault per 4 KiB page touched (the workload asks for no huge pages).
    let extra_pages = f64::from(LARGE_MIB - SMALL_MIB) * MIB / 4096.0;
    println!(
        "page faults: {LARGE_MIB} MiB minus {SMALL_MIB} MiB: monitor {:.0}, kernel {:.0}, pages {extra_pages:.0}",
        large - small,
        large_kernel - small_kernel
    );
    assert!(
        small > 0.0,
        "no page faults counted for a job touching {SMALL_MIB} MiB"
    );
    assert!(
        large - small >= 0.9 * extra_pages,
        "touching {LARGE_MIB} MiB counted {large:.0} faults, {SMALL_MIB} MiB {small:.0}: \
         expected at least {:.0} more (90% of the {extra_pages:.0} extra pages)",
        0.9 * extra_pages
    );
    Ok(())
}

/// A job allocating past a 64 MiB limit is OOM-killed once, and counted once.
#[test]
fn oom_kill_counted_once() -> anyhow::Result<()> {
    const LIMIT: u64 = 64 << 20;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("oom")?;
    let limit = match MemoryLimit::apply(&job, LIMIT)? {
        Ok(limit) => limit,
        Err(why) => {
            skip_or_fail(&format!("cannot limit a job's memory on this host: {why}"));
            return Ok(());
        }
    };
    let mut command: Command = job.command(WORKLOAD)?;
    command.arg("oom");
    limit.join(&mut command)?;
    let status = Workload::spawn(&mut command, "workload oom")?.wait(STEP)?;
    let kernel = limit.kernel_oom_kills()?;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the workload was not killed by the OOM killer under {} ({status}); kernel oom_kill {kernel}",
        limit.describe()
    );
    let oom_kills = "monitor_job_oom_kills_total";
    let (seen, _) = daemon.wait_for(20, |m| of_job(m, oom_kills, &job).is_ok_and(|v| v >= 1.0))?;
    // More samples: a second count would show now.
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let ours = of_job(&metrics, oom_kills, &job)?;
    println!(
        "oom: monitor {ours} OOM kills, kernel oom_kill {kernel} ({}), workload {status}",
        limit.describe()
    );
    assert!(seen, "no OOM kill counted for job oom within 20 samples");
    assert_eq!(kernel, 1, "the kernel itself counted {kernel} OOM kills");
    assert_eq!(ours, 1.0, "{oom_kills} is {ours}, expected 1");
    Ok(())
}

/// The OOM killer runs in the context of the task that ran out of memory,
/// not of its victim: a job allocating past a limit it shares with another
/// job's (idle, preferred) process gets that process killed, and the kill
/// counts in the victim's job, not in the allocator's.
#[test]
fn oom_kill_counted_in_the_victims_job() -> anyhow::Result<()> {
    const LIMIT: u64 = 128 << 20;
    const VICTIM_MIB: u32 = 80;
    const ALLOCATOR_MIB: u32 = 64;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let victim_job = daemon.create_job("victim")?;
    let allocator_job = daemon.create_job("allocator")?;
    // Below the daemon's root on pure v2 hosts: both jobs share it.
    let limit = match MemoryLimit::apply_below(daemon.root(), LIMIT)? {
        Ok(limit) => limit,
        Err(why) => {
            skip_or_fail(&format!(
                "cannot limit the jobs' memory on this host: {why}"
            ));
            return Ok(());
        }
    };
    let spawn = |job: &JobCgroup, what: &str| -> anyhow::Result<Workload> {
        let mut command = job.command(WORKLOAD)?;
        command.arg("steps");
        limit.join(&mut command)?;
        Workload::spawn(&mut command, what)
    };
    let mut victim = spawn(&victim_job, "the victim")?;
    victim.step(&format!("map {VICTIM_MIB}"), "mapped", STEP)?;
    victim.step("touch 0", "touched", STEP)?;
    // The OOM killer's first choice, whatever the sizes.
    std::fs::write(format!("/proc/{}/oom_score_adj", victim.id()), "1000")
        .context("setting the victim's oom_score_adj")?;
    let mut allocator = spawn(&allocator_job, "the allocator")?;
    allocator.step(&format!("map {ALLOCATOR_MIB}"), "mapped", STEP)?;
    // Together past the limit: the victim goes, then the touch completes.
    let touched = allocator.step("touch 0", "touched", STEP)?;
    let victim_status = victim.wait(STEP)?;
    let kernel = limit.kernel_oom_kills()?;
    let oom_kills = "monitor_job_oom_kills_total";
    let (seen, _) = daemon.wait_for(20, |m| {
        of_job(m, oom_kills, &victim_job).is_ok_and(|v| v >= 1.0)
    })?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let (ours_victim, ours_allocator) = (
        of_job(&metrics, oom_kills, &victim_job)?,
        of_job(&metrics, oom_kills, &allocator_job)?,
    );
    allocator.finish(STEP)?;
    println!(
        "oom in another job's context: victim job {ours_victim}, allocating job {ours_allocator}, \
         kernel oom_kill {kernel} ({}); victim {victim_status}, allocator still alive at VmRSS {}",
        limit.describe(),
        mib(touched.get("rss")? as f64)
    );
    assert_eq!(
        victim_status.signal(),
        Some(libc::SIGKILL),
        "the victim was not OOM-killed ({victim_status}); kernel oom_kill {kernel}"
    );
    assert!(
        seen,
        "no OOM kill counted for the victim's job within 20 samples"
    );
    assert_eq!(kernel, 1, "the kernel itself counted {kernel} OOM kills");
    assert_eq!(
        (ours_victim, ours_allocator),
        (1.0, 0.0),
        "{oom_kills}: victim's job {ours_victim}, allocating job {ours_allocator}; expected 1 and 0"
    );
    Ok(())
}
