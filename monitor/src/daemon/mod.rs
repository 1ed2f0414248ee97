//! `monitor daemon`: start-up, the sample thread, the HTTP server, shutdown.
pub mod sampler;
pub mod snapshot;
mod users;
pub mod wake;

use std::{
    sync::{Arc, Mutex, atomic::AtomicBool},
    thread,
};

use anyhow::Context as _;

use self::{
    sampler::{Sampler, SamplerConfig},
    snapshot::SharedSnapshot,
    wake::Wake,
};
use crate::{
    cli::DaemonArgs,
    jobs::JobTable,
    launcher::{
        adopt::AdoptRules,
        server::{LauncherConfig, Registrar},
        stats::RegistrationStats,
        trust::TrustList,
    },
    kernel::{
        self, EBPF_OBJECT,
        probes::{MapSizes, Probes},
        program_stats,
    },
    system::{cgroupfs, privileges, tracefs},
};

pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    privileges::require_root()?;
    raise_fd_limit();
    if EBPF_OBJECT.is_empty() {
        // Say so before touching the system.
        return Err(kernel::probes::ProbeError::EmptyObject.into());
    }
    let tracefs = tracefs::ensure_mounted()?;
    let mount = cgroupfs::find_v2_mount()?;
    let v2_mount = mount.clone();
    let root_dir = args.cgroup_root.clone().unwrap_or_else(|| mount.join("monitor.slice"));
    cgroupfs::ensure_dir(&root_dir)?;
    let root_in_hierarchy = cgroupfs::path_in_hierarchy(&mount, &root_dir)?;
    log::info!(
        "cgroup v2 at {}; jobs are the child cgroups of {}",
        mount.display(),
        root_dir.display()
    );

    let offsets = monitor_common::FieldOffsets {
        task_sum_exec_runtime: kernel::offsets::task_runtime_offset(),
        ..kernel::offsets::from_tracefs(&tracefs)?
    };
    let sizes = MapSizes {
        cgroups: args.max_cgroups,
        task_slots: args.task_slots,
    };
    let probes = Probes::load(EBPF_OBJECT, &offsets, &root_in_hierarchy, sizes)?;
    let _stats = if args.bpf_stats {
        Some(program_stats::enable().context("enabling bpf_stats (--bpf.stats)")?)
    } else {
        None
    };

    let adopt = AdoptRules::new(&args.adopt_cgroups).context("--adopt.cgroup")?;
    let trust = TrustList::new(&args.trust_paths, args.trust_self);
    for path in trust.paths() {
        log::info!("trusted launcher: {}", path.display());
    }

    let shared = Arc::new(SharedSnapshot::default());
    let table = Arc::new(Mutex::new(JobTable::new(&root_in_hierarchy)));
    let wake = Arc::new(Wake::new().context("making the sampler's wake-up pipe")?);
    let registrations = Arc::new(RegistrationStats::default());
    let launcher_config = LauncherConfig {
        trust,
        adopt,
        max_jobs_per_user: args.max_jobs_per_user,
        hello_timeout: args.hello_timeout,
        mount: mount.clone(),
        root_dir: root_dir.clone(),
        root_in_hierarchy: root_in_hierarchy.clone(),
    };
    let config = SamplerConfig {
        mount,
        root_dir,
        interval: args.sample_interval,
        retention: args.job_retention,
        bpf_stats_held: args.bpf_stats,
    };
    let mut sampler = Sampler::new(probes, table.clone(), wake.clone(), config, shared.clone());
    // Counter slots of the cgroups already there are claimed here before the
    // cgroup_mkdir program, which claims them for new ones, is attached: the
    // two never claim at once. The second walk catches cgroups made during
    // the attach (see kernel/counters.rs); after it only the kernel claims
    // (and the launcher side, for the rare adopted cgroup).
    sampler.reconcile().context("walking the monitored cgroup root")?;
    sampler.probes_mut().attach_cgroup_events()?;
    sampler.reconcile().context("walking the monitored cgroup root")?;
    sampler.probes_mut().counters.stop_claiming();
    sampler.probes_mut().attach_rest(args.sample_interval, &v2_mount)?;
    log::info!("kernel programs attached");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler_thread = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sampler.run(&stop))
            .context("starting the sampler thread")?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let registry = crate::metrics::registry(shared.clone(), registrations.clone());
    let registrar = Arc::new(Registrar::new(launcher_config, table, registrations, wake));
    let served = runtime.block_on(async {
        let listener = crate::launcher::socket::bind(&args.socket_path)?;
        log::info!("launcher socket at {}", args.socket_path.display());
        let launchers = tokio::spawn(crate::launcher::server::serve(listener, registrar));
        let served = crate::web::serve(args.listen_address, &args.telemetry_path, registry, shared, shutdown_signal()).await;
        launchers.abort();
        let _ = std::fs::remove_file(&args.socket_path);
        served
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if sampler_thread.join().is_err() {
        log::error!("the sampler thread panicked");
    }
    // Dropping the sampler dropped the programs and their links: detached.
    log::info!("kernel programs detached; bye");
    served
}

/// Every held launcher connection (a silent Apptainer starter keeps its
/// open while its container runs) is a file descriptor: lift the soft limit
/// to the hard one, as servers do, instead of failing at systemd's 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("reading the open-file limit: {e}"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
}
