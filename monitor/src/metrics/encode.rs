//! Small helpers over prometheus-client's descriptor encoder.
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

/// One metric family: a name, help, type and unit, then samples by label set.
pub struct Family<'e, 'd> {
    encoder: prometheus_client::encoding::MetricEncoder<'e>,
    _d: std::marker::PhantomData<&'d ()>,
}

pub fn family<'e>(
    encoder: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
    unit: Option<&'e Unit>,
    metric_type: MetricType,
) -> Result<Family<'e, 'e>, std::fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, unit, metric_type)?,
        _d: std::marker::PhantomData,
    })
}

impl Family<'_, '_> {
    pub fn counter<L: EncodeLabelSet>(
        &mut self,
        labels: &L,
        value: f64,
    ) -> Result<(), std::fmt::Error> {
        ConstCounter::new(value).encode(self.encoder.encode_family(labels)?)
    }

    pub fn counter_u64<L: EncodeLabelSet>(
        &mut self,
        labels: &L,
        value: u64,
    ) -> Result<(), std::fmt::Error> {
        ConstCounter::new(value).encode(self.encoder.encode_family(labels)?)
    }

    pub fn gauge_i64<L: EncodeLabelSet>(
        &mut self,
        labels: &L,
        value: i64,
    ) -> Result<(), std::fmt::Error> {
        ConstGauge::new(value).encode(self.encoder.encode_family(labels)?)
    }
}

impl Family<'_, '_> {
    /// A sample without labels (no `{}` in the output).
    pub fn single_gauge(self, value: f64) -> Result<(), std::fmt::Error> {
        ConstGauge::new(value).encode(self.encoder)
    }

    pub fn single_gauge_i64(self, value: i64) -> Result<(), std::fmt::Error> {
        ConstGauge::new(value).encode(self.encoder)
    }

    pub fn single_counter(self, value: u64) -> Result<(), std::fmt::Error> {
        ConstCounter::new(value).encode(self.encoder)
    }
}
