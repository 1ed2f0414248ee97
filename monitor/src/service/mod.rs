//! `monitor daemon`: start-up, the sample thread, the HTTP server, shutdown.
//! The composition root: it wires the sampler (`crate::daemon`), the
//! launcher socket, the API and the web port together, so it sits at the top
//! with the command line.
mod programs;
mod serve;
mod startup;

use self::{
    serve::Servers,
    startup::{JobState, SamplerThread},
};
use crate::{
    cli::DaemonArgs,
    system::{privileges, tracefs},
};

/// The daemon's life, step by step: each step uses what the ones before it
/// made, and the comments say why a step is where it is.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    privileges::require_root()?;
    if args.cleanup {
        return programs::cleanup(&args);
    }
    startup::prepare_process();
    // Say so before touching the system.
    programs::refuse_empty_object()?;
    // Before anything is loaded: a bad file stops the start with the key named.
    let web_config = startup::open_web_config(&args)?;
    let tracefs = tracefs::ensure_mounted()?;
    let cgroups = startup::prepare_cgroup_root(&args)?;
    let kernel = programs::read_kernel_facts(&tracefs)?;
    let discovery = startup::find_job_layouts(&args)?;
    let (probes, upgrade) = programs::load_or_adopt(&args, &kernel, &cgroups, &discovery)?;
    // Held until the daemon returns: bpf_stats is on while it runs.
    let _stats = startup::enable_bpf_stats(&args)?;
    let launcher_rules = startup::read_launcher_rules(&args)?;
    let jobs = JobState::new(&cgroups, discovery)?;
    let store = startup::open_state_store(&args)?;
    let reader = store.reader.clone();
    // The saved jobs are taken up before the first walk of the root, so
    // their cgroups keep their jobs instead of coming back as plain ones.
    let mut sampler = startup::take_up_saved_jobs(&args, probes, &jobs, &cgroups, store)?;
    programs::attach(&mut sampler, upgrade, &cgroups.mount)?;
    let sampler = SamplerThread::start(sampler)?;
    // From the main thread, at the default priority (see SpareMaker::start).
    let spares = startup::start_spare_maker(&args, &cgroups, &jobs)?;
    // The sockets open only now, the programs attached and the sampler
    // running: a job registered on them is counted from its first task.
    let servers = Servers::new(&args, web_config, jobs, launcher_rules, cgroups, reader)?;
    let served = servers.serve_until_signal(&args);
    // No registration takes one now: the free spares go.
    drop(spares);
    sampler.stop();
    startup::say_goodbye(&args);
    served
}
