//! Job API requests refused.
use std::sync::Arc;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::encode::family;
use crate::api::ApiStats;

#[derive(Debug)]
pub struct ApiCollector(pub Arc<ApiStats>);

impl Collector for ApiCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut f = family(
            &mut encoder,
            "monitor_api_requests_refused",
            "Job API requests answered 400 by reason: page_too_large (a limit over \
             --api.max-page-size), bad_cursor (a before= the API never gave).",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in self.0.refused() {
            f.counter_u64(&[("reason", reason)], count)?;
        }
        Ok(())
    }
}
