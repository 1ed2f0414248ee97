//! The text of the per-job series, written by hand in the bytes
//! prometheus-client writes (its label escaping, dtoa and itoa numbers), so
//! a job's samples can be encoded once per job view and copied into every
//! scrape after: a finished job's view stays the same for its whole
//! retention, and at 10,000 finished jobs encoding them afresh was most of
//! a scrape's time.
use prometheus_client::{metrics::MetricType, registry::Unit};

use super::exposition::Format;

/// One per-job metric family: what its descriptor says.
#[derive(Clone)]
pub struct JobFamily {
    /// Without the unit and without `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub metric_type: MetricType,
    /// Left out (descriptor too) when no job has a sample in it.
    pub optional: bool,
}

impl JobFamily {
    pub const fn gauge(name: &'static str, help: &'static str, unit: Option<Unit>) -> Self {
        JobFamily {
            name,
            help,
            unit,
            metric_type: MetricType::Gauge,
            optional: false,
        }
    }

    fn is_counter(&self) -> bool {
        matches!(self.metric_type, MetricType::Counter)
    }

    /// `# HELP`, `# TYPE` (and in OpenMetrics `# UNIT`) lines. The classic
    /// format names a counter's family with `_total` and has no units (see
    /// [`super::exposition`]).
    pub fn write_descriptor(&self, out: &mut String, format: Format) {
        let total = format == Format::Prometheus && self.is_counter();
        for (line, tail) in [
            ("# HELP ", self.help),
            ("# TYPE ", self.metric_type.as_str()),
        ] {
            out.push_str(line);
            self.push_name(out);
            if total {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(tail);
            out.push('\n');
        }
        if let (Format::OpenMetrics, Some(unit)) = (format, &self.unit) {
            out.push_str("# UNIT ");
            self.push_name(out);
            out.push(' ');
            out.push_str(unit.as_str());
            out.push('\n');
        }
    }

    /// What each sample line starts with: the sample name and `{`.
    pub fn sample_prefix(&self) -> String {
        let mut prefix = String::with_capacity(self.name.len() + 16);
        self.push_name(&mut prefix);
        if self.is_counter() {
            prefix.push_str("_total");
        }
        prefix.push('{');
        prefix
    }

    fn push_name(&self, out: &mut String) {
        out.push_str(self.name);
        if let Some(unit) = &self.unit {
            out.push('_');
            out.push_str(unit.as_str());
        }
    }
}

/// One job's samples of every job family, without the parts every job
/// shares: a sample line is the family's [`JobFamily::sample_prefix`], then
/// [`EncodedJob::labels`], then one of the family's lines here (the
/// family's extra labels, `}`, the value and a newline).
#[derive(Debug)]
pub struct EncodedJob {
    /// `jobid="...",user="..."`, escaped.
    pub labels: Box<str>,
    samples: Box<str>,
    /// Where each family's lines end in `samples`, in family order.
    ends: Box<[u32]>,
}

impl EncodedJob {
    /// The lines of family `index` (none, one or more).
    pub fn lines(&self, index: usize) -> &str {
        let end = self.ends[index] as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        &self.samples[start..end]
    }

    /// Families it has lines (or none) of.
    pub fn families(&self) -> usize {
        self.ends.len()
    }

    /// Bytes held (the text and the offsets): what the tests weigh the
    /// cache by.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.labels.len() + self.samples.len() + self.ends.len() * size_of::<u32>()
    }
}

/// Builds an [`EncodedJob`]: a job's samples, family by family.
pub struct SampleWriter {
    labels: String,
    samples: String,
    ends: Vec<u32>,
}

impl SampleWriter {
    pub fn new(jobid: &str, user: &str, families: usize) -> Self {
        let mut labels = String::with_capacity(jobid.len() + user.len() + 16);
        push_label(&mut labels, "jobid", jobid);
        labels.push(',');
        push_label(&mut labels, "user", user);
        SampleWriter {
            labels,
            samples: String::with_capacity(families * 24),
            ends: Vec::with_capacity(families),
        }
    }

    /// A sample of a counter or gauge with a float value.
    pub fn f64(&mut self, extra: &[(&str, &str)], value: f64) {
        self.push_labels(extra);
        self.samples.push_str(dtoa::Buffer::new().format(value));
        self.samples.push('\n');
    }

    pub fn u64(&mut self, extra: &[(&str, &str)], value: u64) {
        self.push_labels(extra);
        self.samples.push_str(itoa::Buffer::new().format(value));
        self.samples.push('\n');
    }

    pub fn i64(&mut self, extra: &[(&str, &str)], value: i64) {
        self.push_labels(extra);
        self.samples.push_str(itoa::Buffer::new().format(value));
        self.samples.push('\n');
    }

    /// Ends the current family (with however many samples it got).
    pub fn end_family(&mut self) {
        // A job's samples are far below 4 GiB (hello sizes are bounded).
        self.ends
            .push(u32::try_from(self.samples.len()).unwrap_or(u32::MAX));
    }

    pub fn finish(self) -> EncodedJob {
        EncodedJob {
            labels: self.labels.into_boxed_str(),
            samples: self.samples.into_boxed_str(),
            ends: self.ends.into_boxed_slice(),
        }
    }

    fn push_labels(&mut self, extra: &[(&str, &str)]) {
        for (key, value) in extra {
            self.samples.push(',');
            push_label(&mut self.samples, key, value);
        }
        self.samples.push_str("} ");
    }
}

/// `key="value"`, the value escaped as prometheus-client escapes it.
fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    let mut last = 0;
    for (index, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            b'\n' => "\\n",
            _ => continue,
        };
        out.push_str(&value[last..index]);
        out.push_str(escaped);
        last = index + 1;
    }
    out.push_str(&value[last..]);
    out.push('"');
}
