//! Loading the kernel programs, attaching them, and handing out their maps;
//! or reattaching to a set pinned by an earlier run (see [`super::pins`]).
//! Dropping [`Probes`] detaches what is not pinned.
use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, Iter,
        ProgramInfo, RawTracePoint, TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use monitor_common::{
    CGROUP_PROBES, CgroupCounters, Discovery, FieldOffsets, KernelLayout, ROOT_PREFIX_MAX,
    RootPrefix,
};
use thiserror::Error;

use super::{
    changed_flags::{ChangedFlags, ChangedFlagsError},
    counters::{CounterSlots, CountersError, KernelMaps},
    pins::{self, PinSet},
    task_iter::{IterError, IterRun, TaskIterator},
};

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    ChangedFlags(#[from] ChangedFlagsError),
    #[error(
        "the daemon was built without its kernel programs (the eBPF toolchain was missing). \
         Rebuild with `cargo xtask build-ebpf` (or `cargo xtask run`)"
    )]
    EmptyObject,
    #[error("the monitored cgroup root's path is longer than {ROOT_PREFIX_MAX} bytes: {0}")]
    RootTooLong(String),
    #[error("loading the kernel programs: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("kernel program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("at least one task must be tracked (--bpf.max-tasks), not {0}")]
    TaskMap(u32),
    #[error("the number of cgroup slots must be a power of two, at least {CGROUP_PROBES}, not {0}")]
    CgroupSlots(u32),
    #[error(transparent)]
    Counters(#[from] CountersError),
    #[error(
        "attaching {program} to the raw tracepoint {tracepoint}: {source} \
         (the scheduler programs need Linux 5.18 or newer)"
    )]
    RawTracepoint {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("opening the cgroup v2 root {path} for the network programs: {source}")]
    CgroupRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {what} at {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "the link of {program} cannot be pinned: this kernel has no BPF links for it \
         (Linux 5.15 or newer has); run with --bpf.pin-path= to keep the programs in the daemon"
    )]
    Link {
        program: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("reattaching to the pinned map {path}")]
    Reattach {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Pins(#[from] pins::PinError),
    #[error("the programs were reattached from pins: nothing is left to attach")]
    NotLoaded,
    #[error("reading the kernel's BTF for the task iterator: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error(transparent)]
    Iter(#[from] IterError),
}

/// Classic tracepoints (fields at format-file offsets) and their programs.
const TRACEPOINTS: [(&str, &str, &str); 4] = [
    // Cgroup events first, so a cgroup made while the daemon starts is seen.
    ("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    ("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("oom_mark_victim", "oom", "mark_victim"),
];
/// cgroup_skb programs, attached to the cgroup v2 root.
const CGROUP_SKBS: [(&str, CgroupSkbAttachType); 2] = [
    ("net_ingress", CgroupSkbAttachType::Ingress),
    ("net_egress", CgroupSkbAttachType::Egress),
];
/// Socket creation and release on the cgroup v2 root: which v1 job a
/// socket is of (see `monitor-ebpf/src/probes/network.rs`).
const CGROUP_SOCKS: [&str; 2] = ["net_sock_create", "net_sock_release"];
/// Raw tracepoints (the kernel's TP_PROTO arguments: task pointers); the
/// program is named after its tracepoint. The task's own lifecycle (born,
/// moved, exited, freed): none is on a per-switch, per-syscall or
/// per-fault path.
const RAW_TRACEPOINTS: [&str; 4] = [
    "task_newtask",
    "cgroup_attach_task",
    "sched_process_exit",
    "sched_process_free",
];
/// BTF tracepoints (typed arguments: fields loaded directly): rss_stat, on
/// the page-fault path, for the memory peak.
const BTF_TRACEPOINTS: [&str; 1] = ["rss_stat"];
/// The walk of every task of the node: the daemon runs it when job tasks
/// may be untracked (see [`Walk::EveryTask`]).
pub const TASK_ITER: &str = "task_iter";
/// The walk of the tasks the programs track, run at every other sample.
pub const TRACKED_TASK_ITER: &str = "tracked_task_iter";

/// Which tasks a sample's credit walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Every task of the node (10,000 tasks: ~6 ms of the kernel's own
    /// iteration before any work). Takes in job tasks the programs did not
    /// see enter their job: those there before the programs, in a cgroup
    /// adopted while running, or past a move's thread walk.
    EveryTask,
    /// Only the tasks the programs track: the jobs' tasks.
    JobTasks,
}

/// Every program name, for per-program metrics.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    TRACEPOINTS
        .iter()
        .map(|(program, _, _)| *program)
        .chain(RAW_TRACEPOINTS)
        .chain(BTF_TRACEPOINTS)
        .chain(CGROUP_SKBS.iter().map(|(program, _)| *program))
        .chain(CGROUP_SOCKS)
        .chain([TASK_ITER, TRACKED_TASK_ITER])
}

/// Map sizes, from the daemon's flags.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// Cgroup counter slots; a power of two.
    pub cgroups: u32,
    /// Job tasks tracked at once (TASK_STATE entries).
    pub tasks: u32,
}

impl MapSizes {
    /// Entries of the jobs' address-space table: room for one per tracked
    /// task (processes are fewer), a power of two for open addressing.
    pub fn mm_slots(&self) -> u32 {
        self.tasks
            .max(1024)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31)
    }
}

/// The maps the daemon itself reads and writes; every other map lives on
/// through the programs that use it.
const DAEMON_MAPS: [&str; 7] = [
    "CGROUP_INDEX",
    "CGROUP_COUNTERS",
    "CGROUP_RSS",
    "CGROUP_CHANGED",
    "CGROUP_EVENTS",
    "DROPS",
    "TASK_STATE_COUNT",
];
/// The maps an upgrade reads from the set it replaces (also in older builds).
const COUNTER_MAPS: usize = 3;

pub struct Probes {
    /// The loaded object; None when reattached to pins.
    ebpf: Option<Ebpf>,
    pinning: Pinning,
    pub counters: CounterSlots,
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    /// How many tasks the programs track (TASK_STATE entries).
    pub tracked_tasks: Array<MapData, u64>,
    pub sizes: MapSizes,
    /// The walk of every task, once attached (or reattached).
    iterator: Option<TaskIterator>,
    /// The walk of the tracked tasks; None in a set pinned without it.
    tracked: Option<TaskIterator>,
}

/// Where this run's programs, links and maps are pinned, if anywhere.
#[derive(Default)]
struct Pinning {
    /// The set being pinned by a fresh load, until [`Probes::commit_pins`].
    staging: Option<PinSet>,
    /// The committed set (reattached to, or committed by this run).
    dir: Option<PathBuf>,
    /// Pinned links: the pins keep them attached after the daemon exits.
    links: Vec<PinnedLink>,
    /// Links kept only by the daemon (the iterator's, when not pinning).
    unpinned: Vec<FdLink>,
    links_per_program: std::collections::HashMap<&'static str, usize>,
}

impl Pinning {
    /// Pins `link` of `program` (when pinning; otherwise the program keeps it).
    fn pin_link(&mut self, program: &'static str, link: FdLink) -> Result<(), ProbeError> {
        let Some(set) = &self.staging else {
            return Ok(());
        };
        // Numbered per program, so a program's first link has a known name.
        let n = self.links_per_program.entry(program).or_default();
        let path = set.link_path(program, *n);
        *n += 1;
        let pinned = link.pin(&path).map_err(|source| ProbeError::Pin {
            what: "link",
            path,
            source,
        })?;
        self.links.push(pinned);
        Ok(())
    }

    /// Pins a link taken from its program (when pinning).
    fn pin_taken<L>(&mut self, program: &'static str, link: L) -> Result<(), ProbeError>
    where
        FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
    {
        let link = FdLink::try_from(link).map_err(|source| ProbeError::Link { program, source })?;
        self.pin_link(program, link)
    }

    fn pin_program(
        &self,
        name: &'static str,
        program: &mut aya::programs::Program,
    ) -> Result<(), ProbeError> {
        let Some(set) = &self.staging else {
            return Ok(());
        };
        let path = set.program_path(name);
        program.pin(&path).map_err(|source| ProbeError::Pin {
            what: "program",
            path,
            source,
        })
    }
}

impl Probes {
    /// Loads the object with the offsets and monitored root baked in.
    /// `root_in_hierarchy` is e.g. `/monitor.slice`.
    /// With `pins`, the daemon's maps are pinned there at once and every
    /// program and link as it is attached; [`Self::commit_pins`] completes the set.
    pub fn load(
        object: &[u8],
        offsets: &FieldOffsets,
        layout: &KernelLayout,
        root_in_hierarchy: &str,
        discovery: &Discovery,
        sizes: MapSizes,
        pins: Option<PinSet>,
    ) -> Result<Self, ProbeError> {
        if object.is_empty() {
            return Err(ProbeError::EmptyObject);
        }
        if sizes.tasks == 0 {
            return Err(ProbeError::TaskMap(sizes.tasks));
        }
        if !sizes.cgroups.is_power_of_two() || sizes.cgroups < CGROUP_PROBES {
            return Err(ProbeError::CgroupSlots(sizes.cgroups));
        }
        let prefix = root_prefix(root_in_hierarchy)?;
        let constants = constants(offsets, sizes);
        let mut ebpf = EbpfLoader::new()
            .override_global("FIELD_OFFSETS", &constants, true)
            .override_global("KERNEL_LAYOUT", layout, true)
            .override_global("ROOT_PREFIX", &prefix, true)
            .override_global("DISCOVERY", discovery, true)
            .map_max_entries("CGROUP_INDEX", sizes.cgroups)
            .map_max_entries("CGROUP_COUNTERS", sizes.cgroups)
            .map_max_entries("CGROUP_RSS", sizes.cgroups)
            .map_max_entries("CGROUP_CHANGED", sizes.cgroups)
            .map_max_entries("TASK_STATE", sizes.tasks)
            .map_max_entries("MM_SLOTS", sizes.mm_slots())
            .load(object)
            .map_err(ProbeError::Load)?;
        let mut maps = Vec::with_capacity(DAEMON_MAPS.len());
        for name in DAEMON_MAPS {
            let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
            if let Some(set) = &pins {
                let path = set.map_path(name);
                map.pin(&path).map_err(|source| ProbeError::Pin {
                    what: "map",
                    path,
                    source,
                })?;
            }
            maps.push((name, map));
        }
        let pinning = Pinning {
            staging: pins,
            ..Default::default()
        };
        let mut probes = Self::from_maps(Some(ebpf), pinning, maps, sizes)?;
        probes.load_programs()?;
        Ok(probes)
    }

    /// Takes up a set pinned by an earlier run: its programs are running
    /// (they never stopped), so only the daemon's maps are opened.
    pub fn reattach(dir: &Path, sizes: MapSizes) -> Result<Self, ProbeError> {
        let maps = open_pinned_maps(dir, &DAEMON_MAPS)?;
        let pinning = Pinning {
            dir: Some(dir.to_path_buf()),
            ..Default::default()
        };
        let mut probes = Self::from_maps(None, pinning, maps, sizes)?;
        // The programs claim counter slots themselves; the daemon only finds them.
        probes.counters.stop_claiming();
        probes.counters.resync()?;
        probes.iterator = Some(pinned_iterator(dir, TASK_ITER)?);
        probes.tracked = pinned_iterator(dir, TRACKED_TASK_ITER).ok();
        Ok(probes)
    }

    /// What a pinned set of another build counted per cgroup, read before
    /// it is unloaded so an upgrade carries running jobs' counts over.
    /// Fails (and nothing is carried) when the counter layout changed.
    pub fn read_pinned_counters(dir: &Path) -> Result<Vec<(u64, CgroupCounters)>, ProbeError> {
        // Only the counter maps, which every build has; typing the counter
        // map checks the value layout.
        let mut maps = open_pinned_maps(dir, &DAEMON_MAPS[..COUNTER_MAPS])?.into_iter();
        let mut old = counter_slots(&mut maps)?;
        old.stop_claiming();
        // Reading the whole slot index takes a while: before the last credit.
        old.resync()?;
        // A set that credits tasks at samples credits them once more now,
        // so what its tasks did since its last sample is carried too. (Sets
        // of older builds, which credited at every switch, have none.)
        if let Ok(iterator) = pinned_iterator(dir, TASK_ITER) {
            iterator.run()?;
        }
        let mut found = Vec::new();
        for id in old.ids() {
            if let Some(counters) = old.read(id)? {
                found.push((id, counters));
            }
        }
        Ok(found)
    }

    /// `maps` in [`DAEMON_MAPS`] order.
    fn from_maps(
        ebpf: Option<Ebpf>,
        pinning: Pinning,
        maps: Vec<(&'static str, Map)>,
        sizes: MapSizes,
    ) -> Result<Self, ProbeError> {
        let mut maps = maps.into_iter();
        let mut counters = counter_slots(&mut maps)?;
        let mut next = || maps.next().ok_or(ProbeError::MissingMap("(daemon map)"));
        counters.watch_changes(ChangedFlags::map(next()?.1)?);
        let events = typed(next()?)?;
        let drops = typed(next()?)?;
        let tracked_tasks = typed(next()?)?;
        Ok(Self {
            ebpf,
            pinning,
            counters,
            events,
            drops,
            tracked_tasks,
            sizes,
            iterator: None,
            tracked: None,
        })
    }

    /// Completes the pinned set (after every program is attached): from
    /// here on the programs outlive the daemon. Returns its directory.
    pub fn commit_pins(&mut self) -> Result<Option<PathBuf>, ProbeError> {
        if let Some(set) = self.pinning.staging.take() {
            self.pinning.dir = Some(set.commit()?);
        }
        Ok(self.pinning.dir.clone())
    }

    /// Whether the programs came from pins rather than this run's load.
    pub fn reattached(&self) -> bool {
        self.ebpf.is_none()
    }

    /// Attaches the cgroup event programs only: call [`Self::attach_rest`]
    /// after the initial walk of the monitored root.
    pub fn attach_cgroup_events(&mut self) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[..2] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        Ok(())
    }

    /// Attaches the task, memory and network programs, and the task
    /// iterator. `cgroup_v2_root` is the mount point of the v2 hierarchy.
    pub fn attach_rest(&mut self, cgroup_v2_root: &Path) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[2..] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        let root = File::open(cgroup_v2_root).map_err(|source| ProbeError::CgroupRoot {
            path: cgroup_v2_root.to_path_buf(),
            source,
        })?;
        for (program, attach_type) in CGROUP_SKBS {
            self.attach_cgroup_skb(program, attach_type, &root)?;
        }
        for program in CGROUP_SOCKS {
            self.attach_cgroup_sock(program, &root)?;
        }
        for name in RAW_TRACEPOINTS {
            self.attach_raw_tracepoint(name)?;
        }
        for name in BTF_TRACEPOINTS {
            self.attach_btf_tracepoint(name)?;
        }
        self.attach_task_iter()?;
        self.attach_tracked_task_iter()
    }

    /// Whether [`Walk::JobTasks`] walks TASK_STATE (a set pinned by an
    /// older build walks every task instead).
    pub fn walks_tracked_tasks(&self) -> bool {
        self.tracked.is_some()
    }

    /// Entries in TASK_STATE (kept by the programs), if readable.
    pub fn tracked_task_count(&self) -> Option<u64> {
        self.tracked_tasks.get(&0, 0).ok()
    }

    /// Runs a walk: every job task's counters are credited to its cgroup
    /// up to now. A set pinned without the walk of tracked tasks walks
    /// every task.
    pub fn credit_tasks(&self, walk: Walk) -> Result<IterRun, ProbeError> {
        let iterator = match (walk, &self.tracked) {
            (Walk::JobTasks, Some(tracked)) => tracked,
            _ => self.iterator.as_ref().ok_or(ProbeError::NotLoaded)?,
        };
        Ok(iterator.run()?)
    }

    /// Loads (verifies) every program into the kernel, pinning each when
    /// pinning, before anything is attached: an upgrade unloads the old set
    /// only after this, so the verifier's time is not a gap in counting.
    fn load_programs(&mut self) -> Result<(), ProbeError> {
        for (program, _, _) in TRACEPOINTS {
            self.load_one::<TracePoint>(program)?;
        }
        for name in RAW_TRACEPOINTS {
            self.load_one::<RawTracePoint>(name)?;
        }
        for (program, _) in CGROUP_SKBS {
            self.load_one::<CgroupSkb>(program)?;
        }
        for program in CGROUP_SOCKS {
            self.load_one::<CgroupSock>(program)?;
        }
        let btf = Btf::from_sys_fs().map_err(ProbeError::KernelBtf)?;
        for name in BTF_TRACEPOINTS {
            let (program, _) = self.program::<BtfTracePoint>(name)?;
            program
                .load(name, &btf)
                .map_err(|source| ProbeError::Program { name, source })?;
            self.pin_program(name)?;
        }
        for (name, target) in [(TASK_ITER, "task"), (TRACKED_TASK_ITER, "bpf_map_elem")] {
            let (iter, _) = self.program::<Iter>(name)?;
            iter.load(target, &btf)
                .map_err(|source| ProbeError::Program { name, source })?;
            self.pin_program(name)?;
        }
        Ok(())
    }

    /// Loads program `name` into the kernel (and pins it when pinning).
    fn load_one<P>(&mut self, name: &'static str) -> Result<(), ProbeError>
    where
        P: Loadable,
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let (typed, _) = self.program::<P>(name)?;
        load_typed(typed, name)?;
        self.pin_program(name)
    }

    /// Pins loaded program `name` (when pinning).
    fn pin_program(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let ebpf = self.ebpf.as_mut().ok_or(ProbeError::NotLoaded)?;
        let program = ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?;
        self.pinning.pin_program(name, program)
    }

    /// Loaded program `name`, typed, with the pinning state, as two borrows.
    fn program<P>(&mut self, name: &'static str) -> Result<(&mut P, &mut Pinning), ProbeError>
    where
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let ebpf = self.ebpf.as_mut().ok_or(ProbeError::NotLoaded)?;
        let program = ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?;
        let typed: &mut P = program
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })?;
        Ok((typed, &mut self.pinning))
    }

    /// One program on several tracepoints of a category.
    fn attach_tracepoints(
        &mut self,
        program: &'static str,
        category: &str,
        names: &[&str],
    ) -> Result<(), ProbeError> {
        let (tracepoint, pinning) = self.program::<TracePoint>(program)?;
        for name in names {
            let id = tracepoint
                .attach(category, name)
                .map_err(|source| ProbeError::Program {
                    name: program,
                    source,
                })?;
            if pinning.staging.is_some() {
                let link = tracepoint
                    .take_link(id)
                    .map_err(|source| ProbeError::Program {
                        name: program,
                        source,
                    })?;
                pinning.pin_taken(program, link)?;
            }
        }
        log::debug!(
            "attached {program} to {} {category} tracepoints",
            names.len()
        );
        Ok(())
    }

    fn attach_cgroup_skb(
        &mut self,
        name: &'static str,
        attach_type: CgroupSkbAttachType,
        root: &File,
    ) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<CgroupSkb>(name)?;
        // A BPF link in single mode: the mode this kernel accepts for the
        // root (see TOOLCHAIN notes).
        let id = program
            .attach(root, attach_type, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_taken(name, link)?;
        }
        log::debug!("attached {name} to the cgroup v2 root");
        Ok(())
    }

    fn attach_cgroup_sock(&mut self, name: &'static str, root: &File) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<CgroupSock>(name)?;
        let id = program
            .attach(root, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_taken(name, link)?;
        }
        log::debug!("attached {name} to the cgroup v2 root");
        Ok(())
    }

    fn attach_raw_tracepoint(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<RawTracePoint>(name)?;
        let id = program
            .attach(name)
            .map_err(|source| ProbeError::RawTracepoint {
                program: name,
                tracepoint: name,
                source,
            })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_link(name, FdLink::from(link))?;
        }
        log::debug!("attached {name} to raw tracepoint {name}");
        Ok(())
    }

    fn attach_btf_tracepoint(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<BtfTracePoint>(name)?;
        let id = program
            .attach()
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_link(name, FdLink::from(link))?;
        }
        log::debug!("attached {name} to BTF tracepoint {name}");
        Ok(())
    }

    fn attach_task_iter(&mut self) -> Result<(), ProbeError> {
        let (iter, _) = self.program::<Iter>(TASK_ITER)?;
        let id = iter.attach().map_err(|source| ProbeError::Program {
            name: TASK_ITER,
            source,
        })?;
        let link = iter.take_link(id).map_err(|source| ProbeError::Program {
            name: TASK_ITER,
            source,
        })?;
        let link = FdLink::try_from(link).map_err(|source| ProbeError::Link {
            program: TASK_ITER,
            source,
        })?;
        self.iterator = Some(TaskIterator::new(&link)?);
        if self.pinning.staging.is_some() {
            self.pinning.pin_link(TASK_ITER, link)?;
        } else {
            // Unpinned: the link lives as long as the daemon.
            self.pinning.unpinned.push(link);
        }
        log::debug!("task iterator attached");
        Ok(())
    }

    /// Links the walk of tracked tasks to TASK_STATE, pinned when pinning
    /// (the link keeps the map).
    fn attach_tracked_task_iter(&mut self) -> Result<(), ProbeError> {
        let ebpf = self.ebpf.as_mut().ok_or(ProbeError::NotLoaded)?;
        let map = match ebpf.map("TASK_STATE") {
            Some(Map::HashMap(data)) => data.fd().as_fd(),
            _ => return Err(ProbeError::MissingMap("TASK_STATE")),
        };
        let program = ebpf
            .program(TRACKED_TASK_ITER)
            .ok_or(ProbeError::MissingProgram(TRACKED_TASK_ITER))?;
        let program = program.fd().map_err(|source| ProbeError::Program {
            name: TRACKED_TASK_ITER,
            source,
        })?;
        let iterator = TaskIterator::over_map(program.as_fd(), map)?;
        if let Some(set) = &self.pinning.staging {
            iterator.pin(&set.link_path(TRACKED_TASK_ITER, 0))?;
        }
        self.tracked = Some(iterator);
        log::debug!("walk of tracked tasks attached");
        Ok(())
    }

    /// The kernel's information on program `name` (run time and count).
    pub fn program_info(&self, name: &str) -> Option<ProgramInfo> {
        match (&self.ebpf, &self.pinning.dir) {
            (Some(ebpf), _) => ebpf.program(name)?.info().ok(),
            (None, Some(dir)) => ProgramInfo::from_pin(pins::program_path(dir, name)).ok(),
            (None, None) => None,
        }
    }
}

/// Loads a typed program into the kernel.
fn load_typed<P: Loadable>(program: &mut P, name: &'static str) -> Result<(), ProbeError> {
    program
        .load_into_kernel()
        .map_err(|source| ProbeError::Program { name, source })
}

/// The program types the daemon loads (their `load` has no common trait in aya).
trait Loadable {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError>;
}

macro_rules! loadable {
    ($($ty:ty),*) => {$(
        impl Loadable for $ty {
            fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError> {
                self.load()
            }
        }
    )*};
}
loadable!(TracePoint, CgroupSkb, CgroupSock, RawTracePoint);

/// The globals baked into the programs.
pub fn constants(offsets: &FieldOffsets, sizes: MapSizes) -> FieldOffsets {
    FieldOffsets {
        cgroup_slot_mask: sizes.cgroups - 1,
        mm_slot_mask: sizes.mm_slots() - 1,
        ..*offsets
    }
}

/// The counter slots over the first [`COUNTER_MAPS`] of `maps` (in
/// [`DAEMON_MAPS`] order).
fn counter_slots(
    maps: &mut impl Iterator<Item = (&'static str, Map)>,
) -> Result<CounterSlots, ProbeError> {
    let mut next = || maps.next().ok_or(ProbeError::MissingMap("(counter map)"));
    let kernel_maps = KernelMaps::new(typed(next()?)?, typed(next()?)?, typed(next()?)?)?;
    Ok(CounterSlots::new(kernel_maps)?)
}

/// Iterator `program` of a pinned set.
fn pinned_iterator(dir: &Path, program: &'static str) -> Result<TaskIterator, ProbeError> {
    let path = pins::link_path(dir, program, 0);
    let link =
        PinnedLink::from_pin(&path).map_err(|source| ProbeError::Link { program, source })?;
    Ok(TaskIterator::new(&FdLink::from(link))?)
}

/// `names` of the maps pinned in `dir`, in that order.
fn open_pinned_maps(
    dir: &Path,
    names: &[&'static str],
) -> Result<Vec<(&'static str, Map)>, ProbeError> {
    names
        .iter()
        .map(|&name| {
            let path = pins::map_path(dir, name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map(|map| (name, map))
                .map_err(|source| ProbeError::Reattach { path, source })
        })
        .collect()
}

fn typed<T>((name, map): (&'static str, Map)) -> Result<T, ProbeError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

/// `/monitor.slice` -> `/monitor.slice/`: only strict descendants match.
fn root_prefix(root_in_hierarchy: &str) -> Result<RootPrefix, ProbeError> {
    let mut text = root_in_hierarchy.trim_end_matches('/').to_string();
    text.push('/');
    if text.len() > ROOT_PREFIX_MAX {
        return Err(ProbeError::RootTooLong(root_in_hierarchy.to_string()));
    }
    let mut prefix = RootPrefix::EMPTY;
    prefix.bytes[..text.len()].copy_from_slice(text.as_bytes());
    prefix.len = text.len() as u32;
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_with_one_slash() {
        let p = root_prefix("/monitor.slice").unwrap();
        assert_eq!(&p.bytes[..p.len as usize], b"/monitor.slice/");
        let p = root_prefix("/").unwrap();
        assert_eq!(&p.bytes[..p.len as usize], b"/");
    }

    #[test]
    fn overlong_root_is_refused() {
        assert!(root_prefix(&"/x".repeat(200)).is_err());
    }

    #[test]
    fn empty_object_is_refused_with_a_hint() {
        let sizes = MapSizes {
            cgroups: 1024,
            tasks: 1,
        };
        let err = Probes::load(
            &[],
            &FieldOffsets::default(),
            &KernelLayout::default(),
            "/m",
            &Discovery::OFF,
            sizes,
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("cargo xtask build-ebpf"), "{err}");
    }
}
