//! `/metrics`: collectors that encode the latest snapshot, one per concern
//! (jobs, kernel programs, the daemon itself), node_exporter style.
mod api;
mod daemon;
pub mod encode;
pub mod exposition;
#[cfg(test)]
mod golden;
mod job_resources;
mod jobs;
mod kernel;
mod launcher;

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::{api::ApiStats, daemon::snapshot::SharedSnapshot, launcher::stats::RegistrationStats};

/// The registry served at the telemetry path.
pub fn registry(
    shared: Arc<SharedSnapshot>,
    registrations: Arc<RegistrationStats>,
    api: Arc<ApiStats>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(api::ApiCollector(api)));
    registry.register_collector(Box::new(launcher::LauncherCollector(registrations)));
    registry.register_collector(Box::new(jobs::JobCollector(shared.clone())));
    registry.register_collector(Box::new(job_resources::JobResourceCollector(
        shared.clone(),
    )));
    registry.register_collector(Box::new(kernel::KernelCollector(shared.clone())));
    registry.register_collector(Box::new(daemon::DaemonCollector(shared)));
    registry
}

/// Encodes `registry` as OpenMetrics text.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
