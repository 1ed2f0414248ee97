//! The serving part of the daemon's life: the launcher socket, the API
//! socket and the web port, until SIGTERM or SIGINT.
//!
//! The launcher socket has an async runtime of its own: a job's start
//! waits on its registration, and on shared workers a registration queued
//! behind the web port's work (writing a 19 MB /metrics body of 10,000
//! finished jobs to each of two scrapers took the p99 of registrations
//! past 10 ms).
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use super::startup::{CgroupRoot, JobState, LauncherRules};
use crate::{
    api::ApiState,
    cli::DaemonArgs,
    launcher::server::{LauncherConfig, Registrar},
    store::StoreReader,
    web::WebConfigSource,
};

/// What the servers need, made before any of them starts: an error here
/// stops the daemon before it listens anywhere.
pub struct Servers {
    /// The web port and the API socket.
    runtime: tokio::runtime::Runtime,
    /// The launcher socket alone (see the module's comment).
    launcher_runtime: tokio::runtime::Runtime,
    exposition: crate::metrics::Exposition,
    api: ApiState,
    registrar: Arc<Registrar>,
    web_config: Arc<WebConfigSource>,
}

impl Servers {
    pub fn new(
        args: &DaemonArgs,
        web_config: Arc<WebConfigSource>,
        jobs: JobState,
        launcher_rules: LauncherRules,
        cgroups: CgroupRoot,
        store: Option<Arc<StoreReader>>,
    ) -> anyhow::Result<Self> {
        let runtime = async_runtime("web")?;
        let launcher_runtime = async_runtime("launchers")?;
        let api_stats = Arc::new(crate::api::ApiStats::default());
        let exposition = crate::metrics::Exposition::new(
            jobs.snapshot.clone(),
            jobs.registrations.clone(),
            api_stats.clone(),
        );
        let api = ApiState {
            shared: jobs.snapshot,
            store,
            private: args.api_private,
            pages: crate::api::PageSizes::new(args.api_page_size, args.api_max_page_size)?,
            stats: api_stats,
        };
        let launcher_config = LauncherConfig {
            trust: launcher_rules.trust,
            adopt: launcher_rules.adopt,
            discovery: jobs.discovery,
            max_jobs_per_user: args.max_jobs_per_user,
            max_connections_per_user: args.max_connections_per_user as usize,
            registration_rate: crate::system::token_bucket::Rate {
                per_second: args.registration_rate,
                burst: args.registration_burst,
            },
            hello_limits: args.hello_limits(),
            hello_timeout: args.hello_timeout,
            mount: cgroups.mount,
            root_dir: cgroups.dir,
            root_in_hierarchy: cgroups.in_hierarchy,
        };
        let registrar = Arc::new(Registrar::new(
            launcher_config,
            jobs.table,
            jobs.registrations,
            jobs.wake,
            jobs.spares,
        ));
        Ok(Self {
            runtime,
            launcher_runtime,
            exposition,
            api,
            registrar,
            web_config,
        })
    }

    /// Serves the launcher socket, the API socket and the web port until
    /// SIGTERM or SIGINT, then removes the sockets.
    pub fn serve_until_signal(self, args: &DaemonArgs) -> anyhow::Result<()> {
        let Self {
            runtime,
            launcher_runtime,
            exposition,
            api,
            registrar,
            web_config,
        } = self;
        let web_limits = crate::web::Limits::new(args.max_connections as usize);
        let listener = {
            // Registered with the launcher runtime's IO driver, which polls it.
            let _inside = launcher_runtime.enter();
            crate::launcher::socket::bind(&args.socket_path)?
        };
        log::info!("launcher socket at {}", args.socket_path.display());
        let launchers = launcher_runtime.spawn(crate::launcher::server::serve(listener, registrar));
        let served = runtime.block_on(async {
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
        // Held connections (silent launchers) end with it; a placement in
        // flight is given a moment to finish.
        launcher_runtime.shutdown_timeout(LAUNCHERS_SHUTDOWN);
        served
    }
}

/// Two async workers (and their blocking pool) named `name`.
fn async_runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} async runtime"))
}

/// How long a stopping daemon waits for registrations being placed.
const LAUNCHERS_SHUTDOWN: Duration = Duration::from_secs(1);

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
