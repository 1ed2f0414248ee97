//! `monitor daemon`: start-up, the sample thread, the HTTP server, shutdown.
mod finished_cap;
pub mod sampler;
pub mod snapshot;
mod users;
pub mod wake;

use std::sync::{Arc, Mutex, atomic::AtomicBool};

use anyhow::Context as _;

use self::{
    sampler::{Sampler, SamplerConfig},
    snapshot::SharedSnapshot,
    wake::Wake,
};
use crate::{
    api::ApiState,
    cli::DaemonArgs,
    jobs::registry::Registry,
    jobs::{JobTable, discovery::Discovery},
    kernel::{
        self, EBPF_OBJECT,
        pins::{self, PinDir, StampInputs},
        probes::{self, MapSizes, Probes, Walk},
        program_stats,
    },
    launcher::{
        adopt::AdoptRules,
        server::{LauncherConfig, Registrar},
        stats::RegistrationStats,
        trust::TrustList,
    },
    store::{Store, StoreReader},
    system::{bpffs, cgroupfs, privileges, tracefs},
    web::WebConfigSource,
};

pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    privileges::require_root()?;
    if args.cleanup {
        return cleanup(&args);
    }
    raise_fd_limit();
    crate::system::memory::limit_arenas();
    if EBPF_OBJECT.is_empty() {
        // Say so before touching the system.
        return Err(kernel::probes::ProbeError::EmptyObject.into());
    }
    // Before anything is loaded: a bad file stops the start with the key named.
    let web_config = Arc::new(
        WebConfigSource::open(args.web_config_file.as_deref()).context("--web.config.file")?,
    );
    if args.web_config_file.is_some() {
        log::info!("web port: {}", web_config.current().describe());
    }
    let web_limits = crate::web::Limits::new(args.max_connections as usize);
    let tracefs = tracefs::ensure_mounted()?;
    let mount = cgroupfs::find_v2_mount()?;
    let v2_mount = mount.clone();
    let root_dir = args
        .cgroup_root
        .clone()
        .unwrap_or_else(|| mount.join("monitor.slice"));
    cgroupfs::ensure_dir(&root_dir)?;
    let root_in_hierarchy = cgroupfs::path_in_hierarchy(&mount, &root_dir)?;
    log::info!(
        "cgroup v2 at {}; jobs are the child cgroups of {}",
        mount.display(),
        root_dir.display()
    );

    let offsets = kernel::offsets::from_tracefs(&tracefs)?;
    let layout = kernel::offsets::kernel_layout()?;
    let sizes = MapSizes {
        cgroups: args.max_cgroups,
        tasks: args.max_tasks,
    };
    let discovery = if args.discover_off {
        Discovery::default()
    } else {
        Discovery::new(&args.discover_layouts).context("--discover.layout")?
    };
    discovery.publish_v1_mount();
    if discovery.is_off() {
        log::info!(
            "no resource manager's job layouts: only the monitored root's and registered jobs"
        );
    }
    if let Some(v1) = discovery.v1() {
        log::info!(
            "resource managers' jobs: v1 hierarchy {} (id {}) at {}",
            v1.controller,
            v1.hierarchy,
            v1.mount.display()
        );
    }
    let kernel_discovery = discovery.kernel_filter();
    let constants = format!(
        "{:?} {layout:?} {kernel_discovery:?}",
        probes::constants(&offsets, sizes)
    );
    let stamp = StampInputs {
        object: EBPF_OBJECT,
        constants: constants.as_bytes(),
        root: &root_in_hierarchy,
        cgroup_slots: sizes.cgroups,
        max_tasks: sizes.tasks,
        cgroup_v2_mount: &mount,
    }
    .stamp();
    let (probes, upgrade) = load_or_reattach(
        &args,
        &offsets,
        &layout,
        &root_in_hierarchy,
        &kernel_discovery,
        sizes,
        &stamp,
    )?;
    let reattached = probes.reattached();
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
    let discovery = Arc::new(discovery);
    let table = Arc::new(Mutex::new(
        JobTable::new(&root_in_hierarchy).with_discovery(discovery.clone()),
    ));
    let wake = Arc::new(Wake::new().context("making the sampler's wake-up pipe")?);
    let registrations = Arc::new(RegistrationStats::default());
    let launcher_config = LauncherConfig {
        trust,
        adopt,
        discovery: discovery.clone(),
        max_jobs_per_user: args.max_jobs_per_user,
        max_connections_per_user: args.max_connections_per_user as usize,
        registration_rate: crate::system::token_bucket::Rate {
            per_second: args.registration_rate,
            burst: args.registration_burst,
        },
        hello_limits: args.hello_limits(),
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
        max_finished_per_user: usize::try_from(args.max_finished_per_user).unwrap_or(usize::MAX),
        bpf_stats_held: args.bpf_stats,
        discovery,
    };
    let store = Store::open(&args.state_dir).context("opening the state store (--state.dir)")?;
    let registry = saved_registry(&store);
    let reader = match StoreReader::open(&args.state_dir) {
        Ok(reader) => Some(Arc::new(reader)),
        Err(e) => {
            log::error!("the job API cannot read the state store: {e}");
            None
        }
    };
    let recently_finished = reader
        .as_deref()
        .map(|reader| recently_finished(reader, args.job_retention))
        .unwrap_or_default();
    let writer_config = crate::store::WriterConfig {
        retention: (!args.state_retention.is_zero()).then_some(args.state_retention),
        max_profiles: (args.state_max_profiles > 0).then_some(args.state_max_profiles),
        max_pending: usize::try_from(args.state_max_pending).unwrap_or(usize::MAX),
    };
    let writer = crate::store::spawn_writer(store, writer_config)
        .context("starting the state store writer")?;
    log::info!(
        "state store at {}",
        args.state_dir.join(crate::store::DB_FILE).display()
    );
    let mut sampler = Sampler::new(probes, table.clone(), wake.clone(), config, shared.clone())
        .with_store(writer)
        .with_recently_finished(recently_finished);
    if let Some(registry) = registry {
        sampler
            .restore(registry)
            .context("taking up the saved running jobs")?;
    }
    // Counter slots of the cgroups already there are claimed here before the
    // cgroup_mkdir program, which claims them for new ones, is attached: the
    // two never claim at once. The second walk catches cgroups made during
    // the attach (see kernel/counters.rs); after it only the kernel claims
    // (and the launcher side, for the rare adopted cgroup).
    if reattached {
        // The programs never stopped: events queued while the daemon was
        // away are drained, and the walk finds what the events missed.
        sampler
            .catch_up()
            .context("catching up with the pinned programs")?;
    } else {
        sampler
            .reconcile()
            .context("walking the monitored cgroup root")?;
        sampler.probes_mut().attach_cgroup_events()?;
        sampler
            .reconcile()
            .context("walking the monitored cgroup root")?;
        sampler.probes_mut().counters.stop_claiming();
        sampler.probes_mut().attach_rest(&v2_mount)?;
        // An upgrade: the old programs' counts are read (their tasks
        // credited once more) right before the new ones take baselines for
        // the tasks already in jobs, and unloaded right after.
        let carried = upgrade
            .as_ref()
            .map(Upgrade::read_old_counts)
            .unwrap_or_default();
        sampler.probes_mut().credit_tasks(Walk::EveryTask)?;
        if let Some(upgrade) = &upgrade {
            upgrade.unload_old()?;
        }
        sampler.carry_over(&carried);
        match sampler.probes_mut().commit_pins()? {
            Some(dir) => log::info!("kernel programs attached and pinned at {}", dir.display()),
            None => log::info!("kernel programs attached (not pinned: they stop with the daemon)"),
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler_thread = {
        let stop = stop.clone();
        crate::system::vital_thread::spawn("sampler", move || sampler.run(&stop))
            .context("starting the sampler thread")?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let api_stats = Arc::new(crate::api::ApiStats::default());
    let exposition =
        crate::metrics::Exposition::new(shared.clone(), registrations.clone(), api_stats.clone());
    let api = ApiState {
        shared: shared.clone(),
        store: reader,
        private: args.api_private,
        pages: crate::api::PageSizes::new(args.api_page_size, args.api_max_page_size)?,
        stats: api_stats,
    };
    let registrar = Arc::new(Registrar::new(launcher_config, table, registrations, wake));
    let served = runtime.block_on(async {
        let listener = crate::launcher::socket::bind(&args.socket_path)?;
        log::info!("launcher socket at {}", args.socket_path.display());
        let launchers = tokio::spawn(crate::launcher::server::serve(listener, registrar));
        let api_socket = crate::cli::api_socket(&args.socket_path);
        let api_server = {
            let (api, path) = (api.clone(), api_socket.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::web::serve_api_socket(&path, api, web_limits).await {
                    log::error!("{e:#} (`monitor jobs` cannot reach the daemon; the web port still serves the API)");
                }
            })
        };
        let reloads = tokio::spawn(reload_on_hangup(web_config.clone()));
        let web = crate::web::WebServer {
            address: args.listen_address,
            telemetry_path: &args.telemetry_path,
            source: web_config,
            limits: web_limits,
        };
        let served = crate::web::serve(web, exposition, api, shutdown_signal()).await;
        reloads.abort();
        launchers.abort();
        api_server.abort();
        let _ = std::fs::remove_file(&args.socket_path);
        let _ = std::fs::remove_file(&api_socket);
        served
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if sampler_thread.join().is_err() {
        log::error!("the sampler thread panicked");
    }
    if args.pin_path.as_os_str().is_empty() {
        // Dropping the sampler dropped the programs and their links: detached.
        log::info!("kernel programs detached; bye");
    } else {
        log::info!(
            "kernel programs stay pinned at {} and keep counting; `monitor daemon --cleanup` unloads them; bye",
            args.pin_path.display()
        );
    }
    served
}

/// Sets pinned by another build or configuration, replaced by this run's:
/// they keep counting until [`Upgrade::read_old_counts`] and
/// [`Upgrade::unload_old`], right before and after the new programs take
/// their baselines, so the switch-over is as short as can be.
struct Upgrade {
    pins: PinDir,
    stamp: String,
}

impl Upgrade {
    /// What every old set's cgroups counted (each old task iterator run
    /// once more first), to carry over.
    fn read_old_counts(&self) -> Vec<(u64, monitor_common::CgroupCounters)> {
        let mut carried = Vec::new();
        for dir in self.pins.complete_sets() {
            match Probes::read_pinned_counters(&dir) {
                Ok(counts) => carried.extend(counts),
                Err(e) => log::warn!(
                    "cannot read the counters pinned at {} ({e:#}): running jobs' counts restart from zero",
                    dir.display()
                ),
            }
        }
        carried
    }

    fn unload_old(&self) -> anyhow::Result<()> {
        for old in self.pins.remove_others(&self.stamp)? {
            log::warn!(
                "unloaded the kernel programs pinned at {} (another build or configuration); \
                 running jobs keep what they counted, only the switch-over is missed",
                old.display()
            );
        }
        Ok(())
    }
}

/// Takes up the programs an earlier run pinned with the same stamp, or
/// loads (and verifies) them afresh; sets pinned by another configuration
/// are left counting, for the caller to replace once the new ones are
/// attached.
fn load_or_reattach(
    args: &DaemonArgs,
    offsets: &monitor_common::FieldOffsets,
    layout: &monitor_common::KernelLayout,
    root_in_hierarchy: &str,
    discovery: &monitor_common::Discovery,
    sizes: MapSizes,
    stamp: &str,
) -> anyhow::Result<(Probes, Option<Upgrade>)> {
    let load = |pins| {
        Probes::load(
            EBPF_OBJECT,
            offsets,
            layout,
            root_in_hierarchy,
            discovery,
            sizes,
            pins,
        )
    };
    if args.pin_path.as_os_str().is_empty() {
        return Ok((load(None)?, None));
    }
    bpffs::ensure_parent_mounted(&args.pin_path)?;
    // Root's alone before anything pinned there is taken up or added.
    crate::system::secure_dir::ensure(&args.pin_path, 0o700).context("--bpf.pin-path")?;
    let pins = PinDir::new(args.pin_path.clone());
    if let Some(dir) = pins.existing(stamp)
        && pins::link_count(&dir) > 0
    {
        match Probes::reattach(&dir, sizes) {
            Ok(probes) => {
                log::info!(
                    "reattached to the kernel programs pinned at {}: counting never stopped",
                    dir.display()
                );
                return Ok((probes, None));
            }
            Err(e) => log::warn!(
                "cannot reattach to {}: {e:#}; loading the programs afresh",
                dir.display()
            ),
        }
    }
    let probes = load(Some(pins.stage(stamp)?))?;
    Ok((
        probes,
        Some(Upgrade {
            pins,
            stamp: stamp.to_string(),
        }),
    ))
}

/// `monitor daemon --cleanup`: unpins everything (the programs go with
/// their last reference, so once the daemon is stopped nothing is left).
fn cleanup(args: &DaemonArgs) -> anyhow::Result<()> {
    if args.pin_path.as_os_str().is_empty() {
        anyhow::bail!("--cleanup needs --bpf.pin-path (the directory to unload)");
    }
    let pins = PinDir::new(args.pin_path.clone());
    let removed = pins.remove()?;
    if removed.is_empty() {
        println!("nothing pinned under {}", args.pin_path.display());
    }
    for dir in removed {
        println!("unloaded {}", dir.display());
    }
    Ok(())
}

/// The running jobs an earlier run saved; an unreadable registry is logged
/// and skipped (its jobs come back as plain directories where they can).
fn saved_registry(store: &Store) -> Option<Registry> {
    let text = match store.registry() {
        Ok(text) => text?,
        Err(e) => {
            log::error!("reading the saved job registry: {e}");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(registry) => Some(registry),
        Err(e) => {
            log::error!(
                "the saved job registry does not parse ({e}); running jobs are taken up from the cgroup tree only"
            );
            None
        }
    }
}

/// Jobs that finished within `retention` (before a restart), from the
/// store, so /metrics keeps them as if the daemon had never stopped.
fn recently_finished(
    reader: &StoreReader,
    retention: std::time::Duration,
) -> Vec<snapshot::JobView> {
    let since = std::time::SystemTime::now()
        .checked_sub(retention)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let query = crate::store::ProfileQuery {
        since: Some(since),
        ..Default::default()
    };
    match reader.profiles(&query) {
        Ok(texts) => crate::profile::restore_stored(&texts),
        Err(e) => {
            log::error!("reading recently finished jobs from the state store: {e}");
            Vec::new()
        }
    }
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

/// SIGHUP rereads `--web.config.file` (`systemctl reload monitor`).
async fn reload_on_hangup(source: Arc<WebConfigSource>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        log::warn!(
            "cannot catch SIGHUP: the web configuration is reread only when its files change"
        );
        return;
    };
    while hangups.recv().await.is_some() {
        log::info!("SIGHUP: rereading the web configuration");
        source.reload();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
}
