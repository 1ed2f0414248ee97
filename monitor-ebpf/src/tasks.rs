//! Crediting what the kernel already counts per task to the task's job.
//!
//! The kernel keeps, in every `task_struct`, the CPU time, run-queue wait,
//! context switches, page faults and IO that cgroup files and /proc show.
//! Instead of tracing each switch, wakeup, syscall and fault, the programs
//! read those counters at the few moments that matter and credit the
//! difference since the last reading to the cgroup the task was in:
//! - every sample, for every job task (the `task_iter` iterator);
//! - when a task moves to another cgroup (`cgroup_attach_task`);
//! - when a thread exits (`sched_process_exit`), and once more when it is
//!   freed (`sched_process_free`), for the CPU its exit itself used.
//!
//! [`TaskState`] remembers, per task, the cgroup it was last credited to and
//! its counters then. A task born in a job starts from its own zeros (the
//! kernel zeroes them at fork); a task that enters a job later starts from
//! what it had counted when it entered, so nothing it did before is the job's.
//!
//! An entry is keyed by the task's address, which a later task gets once
//! the first is freed. The free program drops the entry first, but on this
//! kernel about one free in a few hundred goes unseen (the task's memory is
//! reused with no sched_process_free seen): so each entry also holds the
//! task's `start_time`, and an entry found with another start is an
//! earlier task's, dropped (and counted, `task_free_missed`) rather than
//! taken as the new task's baseline: that made a short job read 0 CPU.
//!
//! Two programs may credit one task at once (the iterator on one CPU, the
//! task's own exit on another). Every remembered counter is advanced with a
//! compare-and-swap to the larger reading, and only the advance is credited:
//! each increment of a task's counters is credited exactly once.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
};
use monitor_common::{CgroupCounters, DropReason, NO_V1, TaskCounters, TaskState, V1_TAG};

use crate::{
    atomics::{atomic_add, compare_exchange},
    config::{discovery, layout},
    maps::{TASK_STATE, TASK_STATE_COUNT, count_drop, counters_of, slot_of},
};

/// `PF_EXITING` in `task_struct.flags`: the task is past `exit_signals`,
/// the exit programs credit it from there.
const PF_EXITING: u32 = 0x0000_0004;
/// How long after its exit a task's entry is dropped if its free was not
/// seen: well past any RCU grace period before a reaped task is freed.
const UNFREED_AFTER_NS: u64 = 60_000_000_000;

/// The boot clock (the one `exited` is in), in ns.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Nanoseconds since boot-clock instant `then`.
#[inline(always)]
fn ns_since(then: u64) -> u64 {
    now_ns().saturating_sub(then)
}

/// Hash map update flag: only if the key is new.
const BPF_NOEXIST: u64 = 1;
/// errno of an insert whose key exists.
const EEXIST: i32 = 17;

/// A kernel value at `addr`, through the checked helper.
#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper checks the read; a bad address gives an error.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// A task the programs read: by address through the checked helper (raw
/// tracepoints, whose arguments are plain numbers), or through a typed
/// pointer whose fields are plain loads the verifier checks against the
/// kernel's BTF (the task iterator: no helper call per field).
pub trait Task: Copy {
    /// The task_struct's address: the state map's key.
    fn key(self) -> u64;
    /// The value at byte `offset` of the task_struct.
    fn field<T: Copy>(self, offset: u64) -> Option<T>;
    /// The cgroup v2 id: task->cgroups->dfl_cgrp->kn->id.
    fn cgroup(self) -> Option<u64>;
    /// The id of its cgroup in the watched v1 hierarchy, tagged with
    /// [`V1_TAG`]: task->cgroups->subsys[i]->cgroup->kn->id. Call only
    /// when one is watched.
    fn v1_cgroup(self) -> Option<u64>;
}

/// Whether a v1 hierarchy is watched for resource managers' jobs (hybrid
/// and v1 hosts, where their job cgroups are v1 cgroups).
#[inline(always)]
pub fn v1_watched() -> bool {
    discovery!(v1_subsys) != NO_V1
}

/// The offset of the watched v1 controller's css in `css_set`.
#[inline(always)]
fn v1_css_offset() -> u64 {
    layout!(css_set_subsys) + 8 * u64::from(discovery!(v1_subsys))
}

/// The cgroup `task` counts under, and whether that is a job's: its v2
/// cgroup if that is a job's; else, where a v1 hierarchy is watched, its
/// cgroup there if that is a job's; else its v2 cgroup, no job's.
#[inline(always)]
pub fn job_cgroup(task: impl Task) -> Option<(u64, bool)> {
    let v2 = task.cgroup()?;
    if slot_of(v2).is_some() {
        return Some((v2, true));
    }
    if v1_watched()
        && let Some(v1) = task.v1_cgroup()
        && slot_of(v1).is_some()
    {
        return Some((v1, true));
    }
    Some((v2, false))
}

/// The job cgroup of the current task, if it is in one (see [`job_cgroup`];
/// the v2 id through the helper, the cheap common case).
#[inline(always)]
pub fn current_job_cgroup() -> Option<u64> {
    // SAFETY: helpers without arguments.
    let v2 = unsafe { bpf_get_current_cgroup_id() };
    if slot_of(v2).is_some() {
        return Some(v2);
    }
    if !v1_watched() {
        return None;
    }
    let v1 = TaskAt(unsafe { bpf_get_current_task() }).v1_cgroup()?;
    slot_of(v1).map(|_| v1)
}

/// A task by address (raw tracepoint arguments).
#[derive(Clone, Copy)]
pub struct TaskAt(pub u64);

impl Task for TaskAt {
    #[inline(always)]
    fn key(self) -> u64 {
        self.0
    }

    #[inline(always)]
    fn field<T: Copy>(self, offset: u64) -> Option<T> {
        read(self.0 + offset)
    }

    #[inline(always)]
    fn cgroup(self) -> Option<u64> {
        let css_set: u64 = read(self.0 + layout!(task_cgroups))?;
        let cgroup: u64 = read(css_set + layout!(css_set_dfl_cgrp))?;
        let kn: u64 = read(cgroup + layout!(cgroup_kn))?;
        read(kn + layout!(kernfs_node_id))
    }

    #[inline(always)]
    fn v1_cgroup(self) -> Option<u64> {
        let css_set: u64 = read(self.0 + layout!(task_cgroups))?;
        let css: u64 = read(css_set + v1_css_offset())?;
        let cgroup: u64 = read(css + layout!(css_cgroup))?;
        let kn: u64 = read(cgroup + layout!(cgroup_kn))?;
        read::<u64>(kn + layout!(kernfs_node_id)).map(|id| id | V1_TAG)
    }
}

/// A task by typed (BTF) pointer, with its address.
#[derive(Clone, Copy)]
pub struct TypedTask {
    pub task: *const u8,
    pub address: u64,
}

/// The value at byte `offset` of typed kernel pointer `base`. The offsets
/// are load-time constants the verifier sees as such, so it checks the
/// load against the kernel's BTF; such a load cannot fault.
#[inline(always)]
fn load<T: Copy>(base: *const u8, offset: u64) -> T {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) }
}

impl Task for TypedTask {
    #[inline(always)]
    fn key(self) -> u64 {
        self.address
    }

    #[inline(always)]
    fn field<T: Copy>(self, offset: u64) -> Option<T> {
        Some(load(self.task, offset))
    }

    #[inline(always)]
    fn cgroup(self) -> Option<u64> {
        let css_set: *const u8 = load(self.task, layout!(task_cgroups));
        let cgroup: *const u8 = load(css_set, layout!(css_set_dfl_cgrp));
        let kn: *const u8 = load(cgroup, layout!(cgroup_kn));
        Some(load(kn, layout!(kernfs_node_id)))
    }

    #[inline(always)]
    fn v1_cgroup(self) -> Option<u64> {
        let css_set: *const u8 = load(self.task, layout!(task_cgroups));
        let css: *const u8 = load(css_set, v1_css_offset());
        let cgroup: *const u8 = load(css, layout!(css_cgroup));
        let kn: *const u8 = load(cgroup, layout!(cgroup_kn));
        Some(load::<u64>(kn, layout!(kernfs_node_id)) | V1_TAG)
    }
}

/// Who `task` is, with its address: its `start_time` (see
/// [`TaskState::start_ns`]).
#[inline(always)]
pub fn start_of(task: impl Task) -> Option<u64> {
    task.field(layout!(task_start_time))
}

/// Whether `task` is exiting (or its flags cannot be read).
#[inline(always)]
pub fn is_exiting(task: impl Task) -> bool {
    task.field::<u32>(layout!(task_flags))
        .is_none_or(|flags| flags & PF_EXITING != 0)
}

/// The kernel's counters of `task` now.
#[inline(always)]
pub fn counters_of_task(task: impl Task) -> Option<TaskCounters> {
    // The first six u64 members of task_io_accounting, in this order.
    let io = layout!(task_ioac);
    let min_flt: u64 = task.field(layout!(task_min_flt))?;
    let maj_flt: u64 = task.field(layout!(task_maj_flt))?;
    Some(TaskCounters {
        cpu_ns: task.field(layout!(task_sum_exec_runtime))?,
        run_delay_ns: task.field(layout!(task_run_delay))?,
        nvcsw: task.field(layout!(task_nvcsw))?,
        nivcsw: task.field(layout!(task_nivcsw))?,
        faults: min_flt.wrapping_add(maj_flt),
        rchar: task.field(io)?,
        wchar: task.field(io + 8)?,
        syscr: task.field(io + 16)?,
        syscw: task.field(io + 24)?,
        read_bytes: task.field(io + 32)?,
        write_bytes: task.field(io + 40)?,
    })
}

#[inline(always)]
fn state_of(task: u64) -> Option<&'static mut TaskState> {
    // SAFETY: values stay valid while the entry exists; entries are removed
    // only when the task is freed (or leaves every job).
    TASK_STATE.get_ptr_mut(task).map(|p| unsafe { &mut *p })
}

/// Starts tracking `task` (which started at `start`) in job cgroup
/// `cgroup` from `counters`.
#[inline(always)]
pub fn track(task: u64, start: u64, cgroup: u64, counters: TaskCounters) {
    let state = TaskState {
        cgroup,
        start_ns: start,
        freed: 0,
        exited: 0,
        credited: counters,
    };
    match TASK_STATE.insert(task, state, BPF_NOEXIST) {
        Ok(()) => {
            if let Some(count) = TASK_STATE_COUNT.get_ptr_mut(0) {
                atomic_add(count, 1u64);
            }
        }
        // Tracked already by another program just now: it has a baseline.
        // (An earlier task's entry at this address was dropped by the
        // caller, see [`forget_stale`].)
        Err(e) if e == -EEXIST => {}
        Err(_) => count_drop(DropReason::TaskMapFull),
    }
}

/// Whether `state` is that of the task that started at `start` (not of an
/// earlier task at the same address whose free went unseen).
#[inline(always)]
fn is_of(state: &TaskState, start: u64) -> bool {
    // SAFETY: an aligned u64 in a map value.
    unsafe { core::ptr::read_volatile(&state.start_ns) == start }
}

/// The entry of `task` (which started at `start`), if it is tracked. An
/// entry at its address that is an earlier task's (see [`is_of`]) is
/// dropped, and the task is then untracked.
#[inline(always)]
fn own_state(task: u64, start: u64) -> Option<&'static mut TaskState> {
    let state = state_of(task)?;
    if is_of(state, start) {
        return Some(state);
    }
    drop_stale(task);
    None
}

/// Drops the entry at `task`'s address if it is an earlier task's, before
/// `task` is tracked from its birth.
#[inline(always)]
pub fn forget_stale(task: u64, start: u64) {
    let _ = own_state(task, start);
}

/// Forgets an entry found to be an earlier task's (see [`is_of`]).
#[inline(always)]
fn drop_stale(task: u64) {
    count_drop(DropReason::TaskFreeMissed);
    untrack(task);
}

/// Stops tracking `task` (it was freed, or left every job).
#[inline(always)]
pub fn untrack(task: u64) {
    if TASK_STATE.remove(task).is_ok()
        && let Some(count) = TASK_STATE_COUNT.get_ptr_mut(0)
    {
        atomic_add(count, u64::MAX); // minus one
    }
}

/// Advances `*credited` to `now` if that is larger, returning by how much.
/// A compare-and-swap, tried up to `TRIES` times: if a concurrent creditor
/// of the same task advanced it first, what is left (its reading to ours)
/// stays uncredited until the next credit reads the counter again. Each
/// increment of a task's counters is thus credited exactly once. The last
/// credit, at free, tries again instead ([`LAST`]): nothing comes after it.
#[inline(always)]
fn advance<const TRIES: usize>(credited: *mut u64, now: u64) -> u64 {
    if TRIES == ONCE {
        // The same without a loop: the verifier walks every path of the
        // programs that sync up to 256 threads, each branch counts.
        // SAFETY: an aligned u64 in a map value.
        let old = unsafe { core::ptr::read_volatile(credited) };
        return if now > old && compare_exchange(credited, old, now) == old {
            now - old
        } else {
            0
        };
    }
    for _ in 0..TRIES {
        // SAFETY: an aligned u64 in a map value.
        let old = unsafe { core::ptr::read_volatile(credited) };
        if now <= old {
            return 0;
        }
        if compare_exchange(credited, old, now) == old {
            return now - old;
        }
    }
    0
}

/// Tries of a credit with later credits to come.
pub const ONCE: usize = 1;
/// Tries of the last credit: a walk of TASK_STATE that read the task before
/// it was marked freed may advance each counter once more meanwhile.
pub const LAST: usize = 3;

/// Credits what `task` counted since `state` was last advanced to the
/// cgroup `state` names (atomically: the iterator may be preempted by
/// another program crediting the same cgroup on this CPU).
#[inline(always)]
pub fn credit<const TRIES: usize>(state: &mut TaskState, now: &TaskCounters) {
    let last = &mut state.credited;
    let cpu = advance::<TRIES>(&mut last.cpu_ns, now.cpu_ns);
    let wait = advance::<TRIES>(&mut last.run_delay_ns, now.run_delay_ns);
    let voluntary = advance::<TRIES>(&mut last.nvcsw, now.nvcsw);
    let involuntary = advance::<TRIES>(&mut last.nivcsw, now.nivcsw);
    let faults = advance::<TRIES>(&mut last.faults, now.faults);
    let rchar = advance::<TRIES>(&mut last.rchar, now.rchar);
    let wchar = advance::<TRIES>(&mut last.wchar, now.wchar);
    let syscr = advance::<TRIES>(&mut last.syscr, now.syscr);
    let syscw = advance::<TRIES>(&mut last.syscw, now.syscw);
    let read_bytes = advance::<TRIES>(&mut last.read_bytes, now.read_bytes);
    let write_bytes = advance::<TRIES>(&mut last.write_bytes, now.write_bytes);
    let Some(mut counters) = counters_of(state.cgroup) else {
        // The cgroup's counters were read for the last time and freed.
        return;
    };
    let c: &mut CgroupCounters = &mut counters;
    add(&mut c.cpu_ns, cpu);
    add(&mut c.runqueue_wait_ns, wait);
    add(&mut c.voluntary_switches, voluntary);
    add(&mut c.involuntary_switches, involuntary);
    add(&mut c.page_faults, faults);
    add(&mut c.io_read_bytes, rchar);
    add(&mut c.io_write_bytes, wchar);
    add(&mut c.io_read_calls, syscr);
    add(&mut c.io_write_calls, syscw);
    add(&mut c.block_read_bytes, read_bytes);
    add(&mut c.block_write_bytes, write_bytes);
}

#[inline(always)]
fn add(counter: &mut u64, value: u64) {
    if value != 0 {
        atomic_add(counter, value);
    }
}

/// Why [`sync`] is called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A sample: credit what the task did since the last credit.
    Sample,
    /// The task may have changed cgroup: credit the cgroup it left, but
    /// only if it did change.
    Attach,
}

/// Brings the accounting of live `task` up to date: credits the cgroup it
/// was last credited to, then follows it to the cgroup it is in now (a
/// job: tracked from here; not a job: forgotten). Returns that job
/// cgroup's id, if the task is a live task of one.
#[inline(always)]
pub fn sync(task: impl Task, moment: Moment) -> Option<u64> {
    let (cgroup, in_job) = job_cgroup(task)?;
    sync_in(task, cgroup, in_job, moment)
}

/// [`sync`] for a task known to be in `cgroup` (a job's if `in_job`): the
/// threads of a process moved as a whole are all where its leader is.
#[inline(always)]
pub fn sync_in(task: impl Task, cgroup: u64, in_job: bool, moment: Moment) -> Option<u64> {
    if moment == Moment::Sample && !in_job {
        // Most tasks of a node: done after the cgroup id and the slot
        // lookup (inlined array reads), without a map lookup. A tracked
        // task leaves a job only through cgroup_attach_task, which syncs it.
        return None;
    }
    // An exiting task is credited by the exit programs; one past
    // exit_signals is not moved by cgroup_attach_task either.
    if is_exiting(task) {
        return None;
    }
    sync_live(task, cgroup, in_job, moment);
    in_job.then_some(cgroup)
}

#[inline(always)]
fn sync_live(task: impl Task, cgroup: u64, in_job: bool, moment: Moment) {
    let Some(start) = start_of(task) else {
        return;
    };
    // After an earlier task's entry, this one starts afresh, as if
    // untracked (one path on, not a copy of the untracked one: the move
    // program syncs up to 64 threads, and the verifier walks each branch).
    match own_state(task.key(), start) {
        Some(state) => {
            if state.cgroup == cgroup {
                if moment == Moment::Attach {
                    // A move in a v1 hierarchy, or within the same cgroup.
                    return;
                }
                if !ran_since_credit(task, state) {
                    // Asleep since: every counter is where it was (the
                    // kernel counts a task's waits, switches, faults and IO
                    // only as it runs). The common case, done in one read.
                    return;
                }
            }
            if let Some(now) = counters_of_task(task) {
                credit::<ONCE>(state, &now);
            }
            if state.cgroup != cgroup {
                if in_job {
                    state.cgroup = cgroup;
                } else {
                    untrack(task.key());
                }
            }
        }
        None if in_job => {
            // Entered a job (or was there before the programs were): its
            // counts so far are not this job's.
            if let Some(now) = counters_of_task(task) {
                track(task.key(), start, cgroup, now);
            }
        }
        None => {}
    }
}

/// Whether `task` was on a CPU since `state` was last credited.
#[inline(always)]
fn ran_since_credit(task: impl Task, state: &TaskState) -> bool {
    task.field::<u64>(layout!(task_sum_exec_runtime))
        .is_none_or(|cpu| {
            // SAFETY: an aligned u64 in a map value.
            cpu != unsafe { core::ptr::read_volatile(&state.credited.cpu_ns) }
        })
}

/// Brings `task`, found by a walk of TASK_STATE with its `state`, up to
/// date (see [`crate::probes`]' `tracked_task_iter`); returns its job cgroup
/// if it is live. The task's memory is read through the checked helper:
/// the walk holds no reference on the task, so it may be freed meanwhile,
/// and what was read is credited only if `state` was not marked freed after.
#[inline(always)]
pub fn sync_tracked(task: TaskAt, state: &mut TaskState) -> Option<u64> {
    // SAFETY (the volatile reads): aligned u64s in a map value.
    let (freed, exited) = unsafe {
        (
            core::ptr::read_volatile(&state.freed),
            core::ptr::read_volatile(&state.exited),
        )
    };
    if exited != 0 && freed == 0 && ns_since(exited) > UNFREED_AFTER_NS {
        // Exited long ago and never freed as far as the programs saw:
        // its free went unseen (or it is a zombie nobody reaps, whose
        // exit's last few ms are then not counted).
        drop_stale(task.key());
        return None;
    }
    if freed != 0 || exited != 0 {
        // The exit and free programs credit it; it is no longer live.
        return None;
    }
    let cpu: u64 = task.field(layout!(task_sum_exec_runtime))?;
    if cpu == unsafe { core::ptr::read_volatile(&state.credited.cpu_ns) } {
        // Asleep since its last credit, the common case, done in one read
        // of the task: every counter is where it was (the kernel counts a
        // task's waits, switches, faults and IO only as it runs), and it is
        // still live (a task exits by running, and its exit marks it).
        return Some(state.cgroup);
    }
    // No check of who the task is here (a helper call per running task
    // of every sample): an entry whose free went unseen has exited, so it
    // never gets here, and the moves, births and exits check it.
    if is_exiting(task) {
        return None;
    }
    let now = counters_of_task(task)?;
    if is_freed(state) {
        return None;
    }
    credit::<ONCE>(state, &now);
    Some(state.cgroup)
}

/// Whether `state`'s task is being freed. A compare-and-swap that changes
/// nothing: a full barrier, so the task's memory read before it was read
/// first.
#[inline(always)]
fn is_freed(state: &mut TaskState) -> bool {
    compare_exchange(&mut state.freed, 0, 0) != 0
}

/// The last credit of `task`, which is being freed, and the end of its
/// tracking. Marked freed first, so a concurrent walk of TASK_STATE drops
/// what it read of the task from here on.
#[inline(always)]
pub fn release(task: TaskAt) {
    let Some(state) = start_of(task).and_then(|start| own_state(task.key(), start)) else {
        return;
    };
    compare_exchange(&mut state.freed, 0, 1);
    if let Some(now) = counters_of_task(task) {
        credit::<LAST>(state, &now);
    }
    untrack(task.key());
}

/// Credits exiting `task` (its counters only grow until it is freed), and
/// marks it exited for the walk of TASK_STATE. Nothing for a task not
/// tracked: its baseline is unknown.
#[inline(always)]
pub fn settle(task: impl Task) {
    // An earlier task's entry is dropped: this exiting task was never tracked.
    if let Some(state) = start_of(task).and_then(|start| own_state(task.key(), start)) {
        // SAFETY: an aligned u64 in a map value.
        unsafe { core::ptr::write_volatile(&mut state.exited, now_ns().max(1)) };
        if let Some(now) = counters_of_task(task) {
            credit::<ONCE>(state, &now);
        }
    }
}
