//! Loading the object (or reattaching to a pinned set) and verifying every
//! program into the kernel, before anything is attached.
use std::path::Path;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{
        BtfTracePoint, CgroupSkb, CgroupSock, Iter, RawTracePoint, TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use monitor_common::{
    CGROUP_PROBES, CgroupCounters, Discovery, FieldOffsets, KernelLayout, ROOT_PREFIX_MAX,
    RootPrefix,
};

use super::{
    BTF_TRACEPOINTS, CGROUP_SKBS, CGROUP_SOCKS, COUNTER_MAPS, DAEMON_MAPS, MapSizes, ProbeError,
    Probes, RAW_TRACEPOINTS, TASK_ITER, TRACEPOINTS, TRACKED_TASK_ITER, pinning::Pinning,
};
use crate::kernel::{
    changed_flags::ChangedFlags,
    counters::{CounterSlots, KernelMaps},
    pins::{self, PinSet},
    task_iter::TaskIterator,
};

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
    pub(super) fn program<P>(
        &mut self,
        name: &'static str,
    ) -> Result<(&mut P, &mut Pinning), ProbeError>
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
