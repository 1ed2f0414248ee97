//! The per-job counters of [`crate::job_counters`] in /metrics: each row's
//! family, and a job's samples of it.
use monitor_common::CgroupCounters;

use super::job_text::{JobFamily, SampleWriter};
use crate::{
    job_counters::{Figure, JobCounter},
    system::time::seconds,
};

/// The family a row is served as.
pub(super) fn family(row: &JobCounter) -> JobFamily {
    JobFamily {
        name: row.family,
        help: row.help,
        unit: row.unit.clone(),
        metric_type: row.metric_type,
        optional: false,
    }
}

/// The samples of `rows`, one family each.
pub(super) fn write_samples(rows: &[JobCounter], c: &CgroupCounters, out: &mut SampleWriter) {
    for row in rows {
        match &row.figure {
            Figure::Count(field) => out.u64(&[], (field.get)(c)),
            Figure::Seconds(field) => out.f64(&[], seconds((field.get)(c))),
            Figure::Split { label, parts } => {
                for part in parts {
                    out.u64(&[(label, part.label_value)], (part.field.get)(c));
                }
            }
        }
        out.end_family();
    }
}
