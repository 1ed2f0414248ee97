//! `cargo xtask package`: the Debian package, built with dpkg-deb from the
//! release binary and the files under packaging/: the binary at
//! /usr/sbin/monitor, the systemd unit, /etc/default/monitor (a conffile),
//! the docs and the Apptainer lines, and maintainer scripts that unload the
//! pinned programs when the package is removed.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{build, util::run};

/// Builds the package; its path.
pub fn package() -> anyhow::Result<PathBuf> {
    let binary = build::build_release()?;
    let root = workspace_root()?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out = root.join("target/debian");
    let tree = out.join(format!("monitor_{version}_{arch}"));
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    let put = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let dest = tree.join(to.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().context("a file in a directory")?)?;
        fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let packaging = root.join("packaging");
    put(&binary, "/usr/sbin/monitor", 0o755)?;
    put(
        &packaging.join("systemd/monitor.service"),
        "/lib/systemd/system/monitor.service",
        0o644,
    )?;
    put(
        &packaging.join("debian/default"),
        "/etc/default/monitor",
        0o644,
    )?;
    put(
        &root.join("README.md"),
        "/usr/share/doc/monitor/README.md",
        0o644,
    )?;
    put(
        &root.join("METRICS.md"),
        "/usr/share/doc/monitor/METRICS.md",
        0o644,
    )?;
    put(
        &packaging.join("apptainer/apptainer.conf.example"),
        "/usr/share/doc/monitor/examples/apptainer.conf",
        0o644,
    )?;
    put(
        &packaging.join("web/web-config.yml.example"),
        "/usr/share/doc/monitor/examples/web-config.yml",
        0o644,
    )?;
    // Rules and dashboards for the site's Prometheus and Grafana.
    for (from, to) in [
        (
            "prometheus/monitor.rules.yml",
            "prometheus/monitor.rules.yml",
        ),
        (
            "prometheus/monitor.alerts.yml",
            "prometheus/monitor.alerts.yml",
        ),
        (
            "prometheus/monitor.rules.test.yml",
            "prometheus/monitor.rules.test.yml",
        ),
        ("grafana/monitor-node.json", "grafana/monitor-node.json"),
        ("grafana/monitor-job.json", "grafana/monitor-job.json"),
    ] {
        put(
            &packaging.join(from),
            &format!("/usr/share/monitor/{to}"),
            0o644,
        )?;
    }
    for script in ["postinst", "prerm", "postrm"] {
        put(
            &packaging.join("debian").join(script),
            &format!("/DEBIAN/{script}"),
            0o755,
        )?;
    }
    fs::write(tree.join("DEBIAN/conffiles"), "/etc/default/monitor\n")?;
    fs::write(tree.join("DEBIAN/control"), control(version, &arch))?;
    let deb = out.join(format!("monitor_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(&deb))
    .context("building the package (dpkg-deb)")?;
    eprintln!("xtask: package: {}", deb.display());
    Ok(deb)
}

fn control(version: &str, arch: &str) -> String {
    format!(
        "Package: monitor\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: monitor developers <monitor@localhost>\n\
         Section: admin\n\
         Priority: optional\n\
         Depends: libc6\n\
         Description: kernel-level job monitor for HPC nodes\n \
         eBPF programs attribute what every job uses (CPU, run-queue wait,\n \
         context switches, memory, IO, network) to the job's cgroup; the daemon\n \
         serves it to Prometheus. Finds Slurm's jobs with no job-script change.\n"
    )
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask sits in the workspace")?
        .to_path_buf())
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
