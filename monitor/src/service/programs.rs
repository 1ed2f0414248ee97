//! The kernel programs at start-up: loaded afresh or taken up from the pins
//! an earlier run left, then attached in the order that keeps every cgroup
//! counted; and `--cleanup`, which unloads them.
use std::path::Path;

use anyhow::Context as _;
use monitor_common::{FieldOffsets, KernelLayout};

use super::startup::CgroupRoot;
use crate::{
    cli::DaemonArgs,
    daemon::sampler::Sampler,
    jobs::discovery::Discovery,
    kernel::{
        self, EBPF_OBJECT,
        pins::{self, PinDir, StampInputs},
        probes::{self, MapSizes, Probes, Walk},
    },
    system::bpffs,
};

/// A daemon built without the kernel programs (see monitor/build.rs)
/// stops here, before it touches the system.
pub fn refuse_empty_object() -> anyhow::Result<()> {
    if EBPF_OBJECT.is_empty() {
        return Err(probes::ProbeError::EmptyObject.into());
    }
    Ok(())
}

/// What the programs are told about this kernel at load time.
pub struct KernelFacts {
    offsets: FieldOffsets,
    layout: KernelLayout,
}

/// Tracepoint field offsets from tracefs and struct layouts from BTF.
pub fn read_kernel_facts(tracefs: &Path) -> anyhow::Result<KernelFacts> {
    Ok(KernelFacts {
        offsets: kernel::offsets::from_tracefs(tracefs)?,
        layout: kernel::offsets::kernel_layout()?,
    })
}

/// Loads the programs, or takes up those pinned by an earlier run of the
/// same build and configuration (the stamp says which): see
/// [`load_or_reattach`].
pub fn load_or_adopt(
    args: &DaemonArgs,
    kernel: &KernelFacts,
    cgroups: &CgroupRoot,
    discovery: &Discovery,
) -> anyhow::Result<(Probes, Option<Upgrade>)> {
    let KernelFacts { offsets, layout } = kernel;
    let sizes = MapSizes {
        cgroups: args.max_cgroups,
        tasks: args.max_tasks,
    };
    let kernel_discovery = discovery.kernel_filter();
    let constants = format!(
        "{:?} {layout:?} {kernel_discovery:?}",
        probes::constants(offsets, sizes)
    );
    let stamp = StampInputs {
        object: EBPF_OBJECT,
        constants: constants.as_bytes(),
        root: &cgroups.in_hierarchy,
        cgroup_slots: sizes.cgroups,
        max_tasks: sizes.tasks,
        cgroup_v2_mount: &cgroups.mount,
    }
    .stamp();
    load_or_reattach(
        args,
        offsets,
        layout,
        &cgroups.in_hierarchy,
        &kernel_discovery,
        sizes,
        &stamp,
    )
}

/// Starts counting: claims the counter slots of the cgroups already there,
/// attaches the programs (or, reattached, catches up with what they queued),
/// replaces an upgraded set and pins the new one.
pub fn attach(
    sampler: &mut Sampler,
    upgrade: Option<Upgrade>,
    v2_mount: &Path,
) -> anyhow::Result<()> {
    // Counter slots of the cgroups already there are claimed here before the
    // cgroup_mkdir program, which claims them for new ones, is attached: the
    // two never claim at once. The second walk catches cgroups made during
    // the attach (see kernel/counters.rs); after it only the kernel claims
    // (and the launcher side, for the rare adopted cgroup).
    if sampler.probes_mut().reattached() {
        // The programs never stopped: events queued while the daemon was
        // away are drained, and the walk finds what the events missed.
        sampler
            .catch_up()
            .context("catching up with the pinned programs")?;
        return Ok(());
    }
    sampler
        .reconcile()
        .context("walking the monitored cgroup root")?;
    sampler.probes_mut().attach_cgroup_events()?;
    sampler
        .reconcile()
        .context("walking the monitored cgroup root")?;
    sampler.probes_mut().counters.stop_claiming();
    sampler.probes_mut().attach_rest(v2_mount)?;
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
    Ok(())
}

/// Sets pinned by another build or configuration, replaced by this run's:
/// they keep counting until [`Upgrade::read_old_counts`] and
/// [`Upgrade::unload_old`], right before and after the new programs take
/// their baselines, so the switch-over is as short as can be.
pub struct Upgrade {
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
    offsets: &FieldOffsets,
    layout: &KernelLayout,
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
pub fn cleanup(args: &DaemonArgs) -> anyhow::Result<()> {
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
