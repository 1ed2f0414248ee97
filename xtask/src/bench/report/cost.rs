//! Section 1: every attached program's cost per run and runs per second,
//! under each workload.
use super::{
    Outcome, Report, Section,
    goal::Goal,
    markdown::{opt, row, table},
};
use crate::bench::{
    floor, lifecycle, page_faults, pingpong,
    program_cost::{Cell, CostResult, IDLE, Workload},
};

/// Table order: per-fault, per-task lifecycle, per-sample, per-packet,
/// per-cgroup programs. Others follow, sorted.
const ORDER: [&str; 15] = [
    "rss_stat",
    "task_newtask",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_free",
    "cgroup_attach_task",
    "tracked_task_iter",
    "task_iter",
    "net_ingress",
    "net_egress",
    "net_sock_create",
    "net_sock_release",
    "cgroup_mkdir",
    "cgroup_rmdir",
    "oom_mark_victim",
];

impl Outcome for CostResult {
    fn section(&self, _: &Report) -> Section {
        let cost = self;
        let mut programs: Vec<&str> = cost.attached.iter().map(String::as_str).collect();
        programs.sort_by_key(|name| (ORDER.iter().position(|o| o == name), name.to_string()));
        let mut out = format!("{}\n\n", method(cost));
        if !cost.not_attached.is_empty() {
            out += &format!(
                "**In the object but not attached by the daemon: {}.** Their rows are empty: \
                 what they would cost is not in any figure here.\n\n",
                cost.not_attached.join(", ")
            );
        }
        let header: Vec<&str> = std::iter::once("Program")
            .chain(Workload::ALL.iter().map(|w| w.label()))
            .collect();
        let rows_of = |cell_text: &dyn Fn(&Cell) -> String| -> Vec<Vec<String>> {
            let mut rows: Vec<Vec<String>> = std::iter::once(floor::PROGRAM)
                .chain(programs.iter().copied())
                .map(|name| {
                    let label = if name == floor::PROGRAM {
                        format!("{name} (empty, on sched_switch; reference)")
                    } else {
                        name.to_string()
                    };
                    std::iter::once(label)
                        .chain(
                            cost.workloads
                                .iter()
                                .map(|w| w.cells.get(name).map_or_else(|| "-".into(), cell_text)),
                        )
                        .collect()
                })
                .collect();
            for name in &cost.not_attached {
                rows.push(
                    std::iter::once(format!("{name} (not attached)"))
                        .chain(cost.workloads.iter().map(|_| "-".to_string()))
                        .collect(),
                );
            }
            rows
        };
        out += "ns per run (median over rounds; - when it did not run):\n\n";
        out += &table(&header, &rows_of(&|c| opt(c.ns_per_run, 0)));
        out += "\nRuns per second:\n\n";
        out += &table(&header, &rows_of(&|c| runs_per_second(c.runs_per_s)));
        out += "\nAll the daemon's programs together (the floor aside), per window:\n\n";
        out += &table(
            &[
                "Workload",
                "Window (s)",
                "Run time (µs per s)",
                "% of one core",
                "Per unit of work (the walks aside)",
                "Context switches per s (floor runs)",
            ],
            &summary_rows(cost),
        );
        out += "\n";
        out += &counters(cost);
        Section {
            title: "Cost per program run, by workload (bpf_stats)".into(),
            body: out,
        }
    }

    /// Costs are shown, not judged: the daemon's own cost (section 7) is.
    fn goals(&self) -> Vec<Goal> {
        Vec::new()
    }
}

fn method(cost: &CostResult) -> String {
    let oom = match &cost.no_oom {
        None => format!(
            "a process of a second job, limited to {} MiB (a child v1 memory cgroup below xtask's own \
             on hybrid hosts, memory.max on cgroup v2), touching memory until the OOM killer ends it",
            lifecycle::OOM_LIMIT >> 20
        ),
        Some(why) => format!("no OOM kill ({why})"),
    };
    format!(
        "One daemon with `--bpf.stats` for the whole benchmark; the empty program `bench_floor` from \
         the same object is attached to the sched_switch raw tracepoint next to it, as a reference: the \
         least a program run costs (the hook and bpf_stats' own clock reads), and, by its runs, the \
         context switches of each window. Each round runs every workload once, each in its own window: \
         **idle** ({} s of nothing but the node's background and the daemon's samples); **ping-pong** \
         ({} round trips and {} of warm-up over two pipes, both processes pinned to CPU {cpu}, in a \
         job); **dd in a job** (`dd if=/dev/zero of=<file> bs=512 count={}`, pinned to CPU {cpu}); \
         **dd outside jobs** (the same in the v2 root, where no program takes its job path); **page \
         faults** ({} MiB of fresh anonymous memory touched in 4 KiB pages by a new process in the \
         job, MADV_NOHUGEPAGE, then unmapped); **network** ({} bytes over loopback TCP in 64 KiB \
         writes, in the job); **processes** (in the job: {} fork+exec+exit of `/bin/true`, {} child \
         cgroups made and removed, {} moves of a process between two child cgroups, and {oom}). \
         Every run of a program counts, the job's and every other task's on the node. \
         `tracked_task_iter` runs once per job task visited by each sample's walk (a walk a second), \
         `task_iter` once per task of the node when the daemon walks every task (at start), so their \
         ns/run is per task.",
        IDLE.as_secs(),
        cost.round_trips,
        pingpong::WARMUP,
        cost.io_blocks,
        page_faults::BYTES >> 20,
        cost.net_bytes,
        lifecycle::EXECS,
        lifecycle::NESTED_CGROUPS,
        lifecycle::MOVES,
        cpu = cost.cpu,
    )
}

fn summary_rows(cost: &CostResult) -> Vec<Vec<String>> {
    cost.workloads
        .iter()
        .map(|w| {
            let per_unit = cost.units(w.workload).map_or_else(
                || "-".to_string(),
                |(units, unit)| format!("{:.1} ns per {unit}", w.event_ns / units),
            );
            let switches = w
                .cells
                .get(floor::PROGRAM)
                .map_or(0.0, |c: &Cell| c.runs_per_s);
            row([
                w.workload.label(),
                &format!("{:.2}", w.seconds),
                &format!("{:.1}", w.all_ns_per_s / 1000.0),
                &format!("{:.4}%", w.all_ns_per_s / 1e9 * 100.0),
                &per_unit,
                &runs_per_second(switches),
            ])
        })
        .collect()
}

fn counters(cost: &CostResult) -> String {
    let list = cost
        .job_counters
        .iter()
        .map(|(what, value)| format!("{what} {value:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "What the daemon counted for the job after the last window (the OOM kills in the second \
         job): {list}.\n\n"
    )
}

fn runs_per_second(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
