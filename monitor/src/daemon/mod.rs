//! `monitor daemon`: start-up, the sample thread, the HTTP server, shutdown.
pub mod sampler;
pub mod snapshot;
mod users;

use std::{
    sync::{Arc, atomic::AtomicBool},
    thread,
};

use anyhow::Context as _;

use self::{
    sampler::{Sampler, SamplerConfig},
    snapshot::SharedSnapshot,
};
use crate::{
    cli::DaemonArgs,
    kernel::{
        self, EBPF_OBJECT,
        probes::{MapSizes, Probes},
        program_stats,
    },
    system::{cgroupfs, privileges, tracefs},
};

pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    privileges::require_root()?;
    if EBPF_OBJECT.is_empty() {
        // Say so before touching the system.
        return Err(kernel::probes::ProbeError::EmptyObject.into());
    }
    let tracefs = tracefs::ensure_mounted()?;
    let mount = cgroupfs::find_v2_mount()?;
    let root_dir = args.cgroup_root.clone().unwrap_or_else(|| mount.join("monitor.slice"));
    cgroupfs::ensure_dir(&root_dir)?;
    let root_in_hierarchy = cgroupfs::path_in_hierarchy(&mount, &root_dir)?;
    log::info!(
        "cgroup v2 at {}; jobs are the child cgroups of {}",
        mount.display(),
        root_dir.display()
    );

    let offsets = kernel::offsets::from_tracefs(&tracefs)?;
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

    let shared = Arc::new(SharedSnapshot::default());
    let config = SamplerConfig {
        mount,
        root_dir,
        interval: args.sample_interval,
        retention: args.job_retention,
        bpf_stats_held: args.bpf_stats,
    };
    let mut sampler = Sampler::new(probes, &root_in_hierarchy, config, shared.clone());
    // Counter slots of the cgroups already there are claimed here before the
    // cgroup_mkdir program, which claims them for new ones, is attached: the
    // two never claim at once. The second walk catches cgroups made during
    // the attach (see kernel/counters.rs); after it only the kernel claims.
    sampler.reconcile().context("walking the monitored cgroup root")?;
    sampler.probes_mut().attach_cgroup_events()?;
    sampler.reconcile().context("walking the monitored cgroup root")?;
    sampler.probes_mut().counters.stop_claiming();
    sampler.probes_mut().attach_rest(args.sample_interval)?;
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
    let registry = crate::metrics::registry(shared);
    let served = runtime.block_on(crate::web::serve(
        args.listen_address,
        &args.telemetry_path,
        registry,
        shutdown_signal(),
    ));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if sampler_thread.join().is_err() {
        log::error!("the sampler thread panicked");
    }
    // Dropping the sampler dropped the programs and their links: detached.
    log::info!("kernel programs detached; bye");
    served
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
