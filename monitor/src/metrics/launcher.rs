//! Launcher registrations by outcome.
use std::sync::Arc;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::encode::family;
use crate::launcher::stats::{Outcome, RegistrationStats};

#[derive(Debug)]
pub struct LauncherCollector(pub Arc<RegistrationStats>);

impl Collector for LauncherCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut f = family(
            &mut encoder,
            "monitor_registrations",
            "Launcher connections by result: ok, silent (no hello), untrusted, invalid (bad hello), \
             exited (gone before placed), over_limit (--jobs.max-per-user, \
             --socket.max-connections-per-user), cgroup_limits (a move would leave a cgroup \
             limit), rate_limited (--socket.registration-rate), error.",
            None,
            MetricType::Counter,
        )?;
        for outcome in Outcome::ALL {
            f.counter_u64(&[("result", outcome.label())], self.0.get(outcome))?;
        }
        Ok(())
    }
}
