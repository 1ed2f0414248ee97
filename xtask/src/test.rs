//! `cargo xtask test`: every test. Formatting and lints first, the parsers'
//! fuzz targets (30 s each), unit tests of the userspace crates, then the
//! privileged end-to-end tests against the real daemon binary.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    build,
    fuzz::{self, FuzzArgs},
    toolchain,
    util::{cargo, is_root, run},
};

pub fn test(args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the end-to-end tests load kernel programs and make cgroups: run `sudo -E cargo xtask test`"
        );
    }
    formatted_and_lint_free()?;
    // Then: unprivileged and quick, a parser crash fails the run before
    // anything is installed or loaded into the kernel. A test-name filter
    // asks for some tests only: the fuzz targets are then left out.
    if args.is_empty() {
        fuzz::fuzz(&FuzzArgs {
            seconds: 30,
            targets: Vec::new(),
        })?;
    } else {
        eprintln!("xtask: a test filter was given: the fuzz targets are not run");
    }
    ensure_promtool()?;
    ensure_slurm()?;
    ensure_web_tools()?;
    let binary = build::build_release()?;
    unload_test_pins(&binary);
    let result = run(cargo()
        .env("MONITOR_BIN", &binary)
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "monitor-ebpf",
        ])
        .args(args))
    .context("tests failed");
    // Each test daemon unloads its own programs; a killed test run cannot,
    // and pinned programs would go on running on every context switch.
    unload_test_pins(&binary);
    result?;
    the_try_out_leaves_nothing_loaded()?;
    the_package_installs_serves_and_removes_cleanly()
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace
/// (the eBPF crate builds only for its own target, with its own checks).
fn formatted_and_lint_free() -> anyhow::Result<()> {
    run(toolchain::nightly_fmt()?.args(["--all", "--check"]))
        .context("the code is not formatted: run `cargo +nightly fmt --all`")?;
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems (see above)")
}

/// The Debian package: built, installed with dpkg, its unit's ExecStart
/// (with the packaged /etc/default/monitor) run by hand with the unit's
/// capability bounding set and no-new-privs, as systemd would; it serves
/// /metrics; removed, it leaves no program of ours loaded.
fn the_package_installs_serves_and_removes_cleanly() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

    use monitor_tests::http;

    use crate::bench::system::foreign_programs;

    eprintln!("xtask: the Debian package");
    let deb = crate::package::package()?;
    let before = programs_settled();
    run(Command::new("dpkg").arg("-i").arg(&deb)).context("dpkg -i")?;
    let unit = std::fs::read_to_string("/lib/systemd/system/monitor.service")?;
    let defaults = std::fs::read_to_string("/etc/default/monitor")?;
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let exec = field(&unit, "ExecStart=").context("no ExecStart in the unit")?;
    let args = field(&defaults, "MONITOR_ARGS=").unwrap_or_default();
    let exec = exec.replace("$MONITOR_ARGS", &args);
    let caps = field(&unit, "CapabilityBoundingSet=").context("no CapabilityBoundingSet")?;
    let bounding: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut words = exec.split_whitespace();
    let program = words.next().context("an empty ExecStart")?;
    let mut daemon = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg("--no-new-privs")
        .arg(program)
        .args(words)
        .spawn()
        .context("starting the packaged ExecStart")?;
    let address = ([127, 0, 0, 1], 9959).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        if let Ok(body) = http::get(address, "/metrics") {
            break body.contains("monitor_build_info");
        }
        if Instant::now() >= deadline || daemon.try_wait()?.is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: a signal to the daemon this function started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait()?;
    let pinned = foreign_programs();
    run(Command::new("dpkg").args(["--purge", "monitor"])).context("dpkg --purge")?;
    let after = programs_settled_to(before);
    eprintln!(
        "xtask: package: {before} programs of ours before, {pinned} pinned after the daemon stopped, {after} after removal"
    );
    if !served {
        bail!("the packaged daemon ({exec}, bounding set {caps}) never served /metrics on :9959");
    }
    if after > before {
        bail!(
            "removing the package left {} programs loaded",
            after - before
        );
    }
    Ok(())
}

/// `cargo xtask run` (the README's try-out), stopped with SIGINT as Ctrl-C
/// stops it, leaves no program of ours loaded. Run here, after the tests:
/// it is this binary's own `run`, which builds with cargo (not possible
/// under the test run's cargo lock).
fn the_try_out_leaves_nothing_loaded() -> anyhow::Result<()> {
    use std::{net::SocketAddr, os::unix::process::CommandExt as _, time::Duration};

    use monitor_tests::http;

    use crate::bench::system::foreign_programs;

    eprintln!("xtask: the try-out (`cargo xtask run`) stopped with SIGINT");
    let dir = std::env::temp_dir().join(format!("xtask-try-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = monitor_tests::daemon::free_port()?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let v2 = monitor_tests::cgroup::v2_mount()?;
    let root = v2.join(format!("xtask-try-out-{}.slice", std::process::id()));
    let before = programs_settled();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg("--")
        .args(["--web.listen-address", &address.to_string()])
        .arg("--cgroup.root")
        .arg(&root)
        .arg("--socket.path")
        .arg(dir.join("launcher.sock"))
        .arg("--state.dir")
        .arg(dir.join("state"))
        .process_group(0)
        .spawn()
        .context("starting `xtask run`")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let served = loop {
        if http::get(address, "/metrics").is_ok() {
            break true;
        }
        if std::time::Instant::now() >= deadline || child.try_wait()?.is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let during = foreign_programs();
    // Ctrl-C: SIGINT to the whole foreground process group.
    // SAFETY: a signal to the process group this function made.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = child.wait().context("waiting for `xtask run`")?;
    let after = programs_settled_to(before);
    let _ = std::fs::remove_dir(&root);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "xtask: try-out: {before} programs of ours loaded before, {during} while it ran, {after} after it stopped ({status})"
    );
    if !served || during <= before {
        bail!("the try-out never served /metrics with its programs loaded");
    }
    if after > before {
        bail!(
            "the try-out left {} of its programs loaded after it stopped",
            after - before
        );
    }
    Ok(())
}

/// Unloads what test daemons pinned (`/sys/fs/bpf/monitor-test-*`).
fn unload_test_pins(binary: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("monitor-test-")
        {
            continue;
        }
        let status = Command::new(binary)
            .args(["daemon", "--cleanup", "--bpf.pin-path"])
            .arg(entry.path())
            .stdout(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("xtask: could not unload {}", entry.path().display());
        }
    }
}

/// The Slurm tests run a real one-node Slurm: install Debian's slurmctld,
/// slurmd, slurm-client and munge when any is missing.
fn ensure_slurm() -> anyhow::Result<()> {
    let binaries = ["slurmctld", "slurmd", "sbatch", "munged"];
    let found = |binary: &&str| {
        which::which(binary).is_ok()
            || ["/usr/sbin", "/usr/bin"]
                .iter()
                .any(|dir| std::path::Path::new(dir).join(binary).exists())
    };
    if binaries.iter().all(found) {
        return Ok(());
    }
    eprintln!(
        "xtask: Slurm or munge is missing; installing Debian's slurmctld, slurmd, slurm-client and munge"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "slurmctld",
            "slurmd",
            "slurm-client",
            "munge",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing Slurm (apt-get install slurmctld slurmd slurm-client munge)")
}

/// The web-config tests make certificates and password hashes as a site
/// does (openssl, htpasswd) and fetch with curl: install what is missing.
fn ensure_web_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("openssl", "openssl"),
        ("htpasswd", "apache2-utils"),
        ("curl", "curl"),
    ]
    .into_iter()
    .filter(|(binary, _)| which::which(binary).is_err())
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} for the web-config tests",
        missing.join(", ")
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {} (apt-get install)", missing.join(" ")))
}

/// `promtool check metrics` is one of the tests, and another scrapes the
/// daemon with the real Prometheus server: install Debian's prometheus
/// package (both binaries) when either is missing.
fn ensure_promtool() -> anyhow::Result<()> {
    if which::which("promtool").is_ok() && which::which("prometheus").is_ok() {
        return Ok(());
    }
    eprintln!("xtask: promtool or prometheus is missing; installing Debian's prometheus package");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing promtool and prometheus (apt-get install prometheus)")
}

/// Our programs loaded, once the count is down to `expected` or 10 s have
/// passed: the kernel frees a program after its last link and descriptor
/// go, an RCU grace period later.
fn programs_settled_to(expected: usize) -> usize {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = crate::bench::system::foreign_programs();
        if now <= expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Our programs loaded once the count has stopped falling (earlier test
/// daemons' programs are freed a grace period after they exit), waiting at
/// most 10 s.
fn programs_settled() -> usize {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = crate::bench::system::foreign_programs();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = crate::bench::system::foreign_programs();
        if now >= last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}
