//! The start-up steps [`super::run`] takes in order, from the process's
//! limits to the running sampler thread.
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::Context as _;

use crate::{
    cli::DaemonArgs,
    daemon::sampler::{Sampler, SamplerConfig},
    jobs::{
        JobKey, JobMeta, JobTable,
        discovery::Discovery,
        registry::Registry,
        spares::{SpareConfig, SpareDemand, SpareMaker},
        table::Job,
        task_cgroup,
    },
    kernel::{probes::Probes, program_stats},
    launcher::{adopt::AdoptRules, stats::RegistrationStats, trust::TrustList},
    snapshot::{JobView, SharedSnapshot},
    store::{Store, StoreHandle, StoreReader},
    system::{cgroupfs, wake::Wake},
    web::WebConfigSource,
};

/// Lifts the open-file limit, grows the descriptor table and caps
/// malloc's arenas before any thread starts.
pub fn prepare_process() {
    raise_fd_limit();
    grow_fd_table();
    crate::system::memory::limit_arenas();
}

/// `--web.config.file`, read once here so a bad file stops the start.
pub fn open_web_config(args: &DaemonArgs) -> anyhow::Result<Arc<WebConfigSource>> {
    let web_config = Arc::new(
        WebConfigSource::open(args.web_config_file.as_deref()).context("--web.config.file")?,
    );
    if args.web_config_file.is_some() {
        log::info!("web port: {}", web_config.current().describe());
    }
    Ok(web_config)
}

/// The cgroup v2 hierarchy and the monitored root in it.
pub struct CgroupRoot {
    /// Where cgroup v2 is mounted.
    pub mount: PathBuf,
    /// The monitored root: jobs are its child cgroups.
    pub dir: PathBuf,
    /// `dir` as the kernel names it, from the hierarchy's root.
    pub in_hierarchy: String,
}

/// Finds the cgroup v2 mount and makes the monitored root (`--cgroup.root`,
/// by default `monitor.slice` under the mount) if it is missing.
pub fn prepare_cgroup_root(args: &DaemonArgs) -> anyhow::Result<CgroupRoot> {
    let mount = cgroupfs::find_v2_mount()?;
    let dir = args
        .cgroup_root
        .clone()
        .unwrap_or_else(|| mount.join("monitor.slice"));
    cgroupfs::ensure_dir(&dir)?;
    // Before the first walk of the root, which would take them for jobs.
    match task_cgroup::remove_unused_spares(&dir) {
        Ok(0) => {}
        Ok(count) => log::info!("removed {count} spare task cgroups an earlier run left"),
        Err(e) => log::warn!("looking for spare task cgroups an earlier run left: {e}"),
    }
    let in_hierarchy = cgroupfs::path_in_hierarchy(&mount, &dir)?;
    if args.favordynmods {
        favor_dynamic_moves();
    }
    log::info!(
        "cgroup v2 at {}; jobs are the child cgroups of {}",
        mount.display(),
        dir.display()
    );
    Ok(CgroupRoot {
        mount,
        dir,
        in_hierarchy,
    })
}

/// `--cgroup.favordynmods`: a failure is logged, not fatal (registrations
/// work without it, only with a longer tail).
fn favor_dynamic_moves() {
    use crate::system::favordynmods::{self, Outcome};
    match favordynmods::ensure() {
        Ok(Outcome::AlreadySet) => log::debug!("the cgroup v2 hierarchy has favordynmods already"),
        Ok(Outcome::Set { mount }) => log::info!(
            "set favordynmods on the cgroup v2 hierarchy ({}), its other options and the \
             mount's flags kept: moving a registering process no longer waits for an RCU grace \
             period (--cgroup.favordynmods=false leaves it alone)",
            mount.display()
        ),
        Err(e) => log::warn!(
            "cgroup v2 without favordynmods, so registrations may wait for RCU grace periods \
             at high rates: {e}"
        ),
    }
}

/// The resource managers' job layouts (`--discover.layout`) the daemon
/// finds jobs by, besides the monitored root's and registered ones.
pub fn find_job_layouts(args: &DaemonArgs) -> anyhow::Result<Discovery> {
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
    Ok(discovery)
}

/// `--bpf.stats`: the kernel times every program while the guard is held.
pub fn enable_bpf_stats(args: &DaemonArgs) -> anyhow::Result<Option<program_stats::StatsGuard>> {
    if !args.bpf_stats {
        return Ok(None);
    }
    let guard = program_stats::enable().context("enabling bpf_stats (--bpf.stats)")?;
    Ok(Some(guard))
}

/// Who may register jobs on the launcher socket, and which cgroups it may
/// adopt.
pub struct LauncherRules {
    pub adopt: AdoptRules,
    pub trust: TrustList,
}

pub fn read_launcher_rules(args: &DaemonArgs) -> anyhow::Result<LauncherRules> {
    let adopt = AdoptRules::new(&args.adopt_cgroups).context("--adopt.cgroup")?;
    let trust = TrustList::new(&args.trust_paths, args.trust_self);
    for path in trust.paths() {
        log::info!("trusted launcher: {}", path.display());
    }
    Ok(LauncherRules { adopt, trust })
}

/// What the sampler, the launcher socket and the web port share.
pub struct JobState {
    pub snapshot: Arc<SharedSnapshot>,
    pub discovery: Arc<Discovery>,
    pub table: Arc<Mutex<JobTable>>,
    /// Wakes the sampler early (a registration, a release).
    pub wake: Arc<Wake>,
    pub registrations: Arc<RegistrationStats>,
    /// Tells the spare task cgroup maker a spare was taken.
    pub spares: Arc<SpareDemand>,
}

impl JobState {
    pub fn new(cgroups: &CgroupRoot, discovery: Discovery) -> anyhow::Result<Self> {
        let discovery = Arc::new(discovery);
        let table = JobTable::new(&cgroups.in_hierarchy).with_discovery(discovery.clone());
        Ok(Self {
            snapshot: Arc::new(SharedSnapshot::default()),
            discovery,
            table: Arc::new(Mutex::new(table)),
            wake: Arc::new(Wake::new().context("making the sampler's wake-up pipe")?),
            registrations: Arc::new(RegistrationStats::default()),
            spares: Arc::new(SpareDemand::default()),
        })
    }
}

/// The state store as a restart finds it, and its writer.
pub struct StateStore {
    pub writer: StoreHandle,
    /// The running jobs the last run saved.
    pub registry: Option<Registry>,
    /// For the job API; None (logged) when the store cannot be read.
    pub reader: Option<Arc<StoreReader>>,
    /// Jobs that finished within `--job.retention` before the restart.
    pub recently_finished: Vec<Job>,
}

/// Opens the state store (`--state.dir`), reads what the last run left in
/// it and starts its writer thread.
pub fn open_state_store(args: &DaemonArgs) -> anyhow::Result<StateStore> {
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
    Ok(StateStore {
        writer,
        registry,
        reader,
        recently_finished,
    })
}

/// The sampler, holding the programs, with the saved running jobs taken
/// up: their cgroups keep their jobs before the root is first walked.
pub fn take_up_saved_jobs(
    args: &DaemonArgs,
    probes: Probes,
    jobs: &JobState,
    cgroups: &CgroupRoot,
    store: StateStore,
) -> anyhow::Result<Sampler> {
    let config = SamplerConfig {
        mount: cgroups.mount.clone(),
        root_dir: cgroups.dir.clone(),
        interval: args.sample_interval,
        retention: args.job_retention,
        max_finished_per_user: usize::try_from(args.max_finished_per_user).unwrap_or(usize::MAX),
        bpf_stats_held: args.bpf_stats,
        discovery: jobs.discovery.clone(),
    };
    let mut sampler = Sampler::new(
        probes,
        jobs.table.clone(),
        jobs.wake.clone(),
        config,
        jobs.snapshot.clone(),
    )
    .with_store(store.writer)
    .with_recently_finished(store.recently_finished);
    if let Some(registry) = store.registry {
        sampler
            .restore(registry)
            .context("taking up the saved running jobs")?;
    }
    Ok(sampler)
}

/// Counter slots per spare task cgroup at most.
const SLOTS_PER_SPARE: u32 = 16;

/// The maker of spare task cgroups, until it is dropped (which removes
/// the free ones).
pub fn start_spare_maker(
    args: &DaemonArgs,
    cgroups: &CgroupRoot,
    jobs: &JobState,
) -> anyhow::Result<SpareMaker> {
    // Each spare holds a counter slot: a small map keeps most for jobs.
    let count = args
        .spare_cgroups
        .min(usize::try_from(args.max_cgroups / SLOTS_PER_SPARE).unwrap_or(usize::MAX));
    if count < args.spare_cgroups {
        log::info!(
            "{count} spare task cgroups, not {}: at most one per {SLOTS_PER_SPARE} counter \
             slots (--bpf.max-cgroups)",
            args.spare_cgroups
        );
    }
    let config = SpareConfig {
        root_dir: cgroups.dir.clone(),
        root_in_hierarchy: cgroups.in_hierarchy.clone(),
        count,
    };
    SpareMaker::start(
        config,
        cgroups.mount.clone(),
        jobs.table.clone(),
        jobs.spares.clone(),
    )
    .context("starting the spare task cgroup maker")
}

/// The sampler on its own thread, until [`Self::stop`].
pub struct SamplerThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SamplerThread {
    pub fn start(sampler: Sampler) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            crate::system::vital_thread::spawn("sampler", move || {
                crate::system::priority::lower_this_thread("the sampler");
                sampler.run(&stop)
            })
            .context("starting the sampler thread")?
        };
        Ok(Self { stop, thread })
    }

    /// Asks the sampler to stop and waits for it: with it go the programs
    /// it holds (they stay loaded only if pinned).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            log::error!("the sampler thread panicked");
        }
    }
}

/// The last line: whether the programs went with the daemon.
pub fn say_goodbye(args: &DaemonArgs) {
    if args.pin_path.as_os_str().is_empty() {
        // Dropping the sampler dropped the programs and their links: detached.
        log::info!("kernel programs detached; bye");
    } else {
        log::info!(
            "kernel programs stay pinned at {} and keep counting; `monitor daemon --cleanup` unloads them; bye",
            args.pin_path.display()
        );
    }
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
fn recently_finished(reader: &StoreReader, retention: std::time::Duration) -> Vec<Job> {
    let since = std::time::SystemTime::now()
        .checked_sub(retention)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let query = crate::store::ProfileQuery {
        since: Some(since),
        ..Default::default()
    };
    match reader.profiles(&query) {
        Ok(texts) => crate::profile::restore_stored(&texts)
            .into_iter()
            .map(finished_job)
            .collect(),
        Err(e) => {
            log::error!("reading recently finished jobs from the state store: {e}");
            Vec::new()
        }
    }
}

/// A stored profile's job as the job table holds a finished one.
fn finished_job(view: JobView) -> Job {
    let key = JobKey {
        uid: view.uid,
        jobid: view.jobid,
    };
    let meta = JobMeta {
        name: view.name,
        user: Some(view.user),
        labels: view.labels,
        launcher: view.launcher,
    };
    let mut job = Job::restored(key, meta, &view.cgroup, view.start, view.end, view.counters);
    job.tasks = view.tasks;
    job
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

/// Descriptors the table has room for from the start (32 KiB of kernel
/// memory): the daemon's own, the web port's 64 connections and a burst
/// of launcher connections.
const FD_TABLE: libc::c_int = 4096;

/// Grows the descriptor table now, while the process has one thread: in a
/// threaded process each doubling of the table waits for an RCU grace
/// period (4-16 ms traced here), and every thread that opens a descriptor
/// meanwhile (a launcher's accept, a cgroup file) waits with it. A fresh
/// daemon met such waits in its first burst of registrations.
fn grow_fd_table() {
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    let highest = FD_TABLE.min(libc::c_int::try_from(soft).unwrap_or(FD_TABLE)) - 1;
    if highest <= 0 {
        return;
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: duplicates a descriptor this function owns to the lowest
    // free one at or above `highest`, then closes the duplicate.
    unsafe {
        let copy = libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest);
        if copy >= 0 {
            libc::close(copy);
        }
    }
}
