//! Loading the kernel programs, attaching them, and handing out their maps.
//! Dropping [`Probes`] detaches everything.
use std::{fs::File, path::Path, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, PerfEvent, RawTracePoint, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use monitor_common::{CGROUP_PROBES, FieldOffsets, ROOT_PREFIX_MAX, RootPrefix};
use thiserror::Error;

use super::counters::{CounterSlots, CountersError, KernelMaps};

#[derive(Debug, Error)]
pub enum ProbeError {
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
    #[error("the number of task slots must be a power of two, not {0}")]
    TaskSlots(u32),
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
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listing online CPUs: {0}")]
    OnlineCpus(#[source] std::io::Error),
}

/// Classic tracepoints (fields at format-file offsets) and their programs.
const TRACEPOINTS: [(&str, &str, &str); 9] = [
    // Cgroup events first, so a cgroup made while the daemon starts is seen.
    ("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    ("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("rss_stat", "kmem", "rss_stat"),
    ("page_fault_user", "exceptions", "page_fault_user"),
    ("oom_mark_victim", "oom", "mark_victim"),
    ("block_bio_queue", "block", "block_bio_queue"),
];
/// The IO programs and the syscall exits each serves (see monitor-ebpf's vfs_io.rs).
const SYSCALL_PROGRAMS: [(&str, &[&str]); 3] = [
    (
        "sys_exit_read_family",
        &["sys_exit_read", "sys_exit_readv", "sys_exit_pread64", "sys_exit_preadv", "sys_exit_preadv2"],
    ),
    (
        "sys_exit_write_family",
        &["sys_exit_write", "sys_exit_writev", "sys_exit_pwrite64", "sys_exit_pwritev", "sys_exit_pwritev2"],
    ),
    ("sys_exit_copy_family", &["sys_exit_sendfile64", "sys_exit_copy_file_range"]),
];
/// cgroup_skb programs, attached to the cgroup v2 root.
const CGROUP_SKBS: [(&str, CgroupSkbAttachType); 2] =
    [("net_ingress", CgroupSkbAttachType::Ingress), ("net_egress", CgroupSkbAttachType::Egress)];
/// Raw tracepoints (the kernel's TP_PROTO arguments) for the hottest hooks;
/// the program is named after its tracepoint.
const RAW_TRACEPOINTS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];
const CPU_FLUSH: &str = "cpu_flush";

/// Every program name, for per-program metrics.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    TRACEPOINTS
        .iter()
        .map(|(program, _, _)| *program)
        .chain(RAW_TRACEPOINTS)
        .chain(SYSCALL_PROGRAMS.iter().map(|(program, _)| *program))
        .chain(CGROUP_SKBS.iter().map(|(program, _)| *program))
        .chain([CPU_FLUSH])
}

/// Map sizes, from the daemon's flags.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// Cgroup counter slots; a power of two.
    pub cgroups: u32,
    /// Task slots; a power of two.
    pub task_slots: u32,
}

pub struct Probes {
    ebpf: Ebpf,
    pub counters: CounterSlots,
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    pub sizes: MapSizes,
}

impl Probes {
    /// Loads the object with the offsets and monitored root baked in.
    /// `root_in_hierarchy` is e.g. `/monitor.slice`.
    pub fn load(object: &[u8], offsets: &FieldOffsets, root_in_hierarchy: &str, sizes: MapSizes) -> Result<Self, ProbeError> {
        if object.is_empty() {
            return Err(ProbeError::EmptyObject);
        }
        if !sizes.task_slots.is_power_of_two() {
            return Err(ProbeError::TaskSlots(sizes.task_slots));
        }
        if !sizes.cgroups.is_power_of_two() || sizes.cgroups < CGROUP_PROBES {
            return Err(ProbeError::CgroupSlots(sizes.cgroups));
        }
        let prefix = root_prefix(root_in_hierarchy)?;
        let constants = FieldOffsets {
            task_slot_mask: sizes.task_slots - 1,
            cgroup_slot_mask: sizes.cgroups - 1,
            ..*offsets
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("FIELD_OFFSETS", &constants, true)
            .override_global("ROOT_PREFIX", &prefix, true)
            .map_max_entries("CGROUP_INDEX", sizes.cgroups)
            .map_max_entries("CGROUP_COUNTERS", sizes.cgroups)
            .map_max_entries("CGROUP_RSS", sizes.cgroups)
            .map_max_entries("TASK_SLOTS", sizes.task_slots)
            .load(object)
            .map_err(ProbeError::Load)?;
        let maps = KernelMaps::new(
            take_map(&mut ebpf, "CGROUP_INDEX")?,
            take_map(&mut ebpf, "CGROUP_COUNTERS")?,
            take_map(&mut ebpf, "CGROUP_RSS")?,
        )?;
        let counters = CounterSlots::new(maps)?;
        let events = take_map(&mut ebpf, "CGROUP_EVENTS")?;
        let drops = take_map(&mut ebpf, "DROPS")?;
        Ok(Self {
            ebpf,
            counters,
            events,
            drops,
            sizes,
        })
    }

    /// Attaches the cgroup event programs only: call [`Self::attach_rest`]
    /// after the initial walk of the monitored root.
    pub fn attach_cgroup_events(&mut self) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[..2] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        Ok(())
    }

    /// Attaches the scheduler, process, memory, IO and network programs, and
    /// the per-CPU timer that credits running tasks every `flush_period`.
    /// `cgroup_v2_root` is the mount point of the v2 hierarchy.
    pub fn attach_rest(&mut self, flush_period: Duration, cgroup_v2_root: &Path) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[2..] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        for (program, tracepoints) in SYSCALL_PROGRAMS {
            self.attach_tracepoints(program, "syscalls", tracepoints)?;
        }
        let root = File::open(cgroup_v2_root).map_err(|source| ProbeError::CgroupRoot {
            path: cgroup_v2_root.to_path_buf(),
            source,
        })?;
        for (program, attach_type) in CGROUP_SKBS {
            self.attach_cgroup_skb(program, attach_type, &root)?;
        }
        for name in RAW_TRACEPOINTS {
            self.attach_raw_tracepoint(name)?;
        }
        let program: &mut PerfEvent = self.program_of(CPU_FLUSH)?;
        program.load().map_err(|source| ProbeError::Program { name: CPU_FLUSH, source })?;
        let cpus = online_cpus().map_err(|(_, e)| ProbeError::OnlineCpus(e))?;
        let period_ns = u64::try_from(flush_period.as_nanos()).unwrap_or(u64::MAX).max(1_000_000);
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(period_ns),
                    false,
                )
                .map_err(|source| ProbeError::Program { name: CPU_FLUSH, source })?;
        }
        Ok(())
    }

    /// The program `name` of the object, as its aya type.
    fn program_of<P>(&mut self, name: &'static str) -> Result<&mut P, ProbeError>
    where
        for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })
    }

    /// One program on several tracepoints of a category.
    fn attach_tracepoints(&mut self, program: &'static str, category: &str, names: &[&str]) -> Result<(), ProbeError> {
        let tracepoint: &mut TracePoint = self.program_of(program)?;
        tracepoint.load().map_err(|source| ProbeError::Program { name: program, source })?;
        for name in names {
            tracepoint
                .attach(category, name)
                .map_err(|source| ProbeError::Program { name: program, source })?;
        }
        log::debug!("attached {program} to {} {category} tracepoints", names.len());
        Ok(())
    }

    fn attach_cgroup_skb(&mut self, name: &'static str, attach_type: CgroupSkbAttachType, root: &File) -> Result<(), ProbeError> {
        let program: &mut CgroupSkb = self.program_of(name)?;
        program.load().map_err(|source| ProbeError::Program { name, source })?;
        // A BPF link in single mode: the mode this kernel accepts for the
        // root (see TOOLCHAIN notes); dropped with the daemon.
        program
            .attach(root, attach_type, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::Program { name, source })?;
        log::debug!("attached {name} to the cgroup v2 root");
        Ok(())
    }

    fn attach_raw_tracepoint(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let program: &mut RawTracePoint = self.program_of(name)?;
        program.load().map_err(|source| ProbeError::Program { name, source })?;
        program.attach(name).map_err(|source| ProbeError::RawTracepoint {
            program: name,
            tracepoint: name,
            source,
        })?;
        log::debug!("attached {name} to raw tracepoint {name}");
        Ok(())
    }

    pub fn program(&self, name: &str) -> Option<&aya::programs::Program> {
        self.ebpf.program(name)
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
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
        let err = Probes::load(&[], &FieldOffsets::default(), "/m", MapSizes { cgroups: 1024, task_slots: 1 })
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cargo xtask build-ebpf"), "{err}");
    }
}
