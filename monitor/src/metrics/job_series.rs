//! Every per-job family, written from the jobs' cached samples: the
//! exposition format wants each family's lines together under one
//! descriptor, so a scrape walks the families and, in each, copies every
//! job's lines of it.
use std::sync::{Arc, LazyLock};

use super::{
    counter_rows,
    exposition::Format,
    job_files,
    job_text::{EncodedJob, JobFamily, SampleWriter},
    jobs,
};
use crate::{
    job_counters::{ACTIVITY, RESOURCES},
    snapshot::JobView,
};

/// The per-job families in the order they are served (and [`encode`]
/// writes them).
static FAMILIES: LazyLock<Vec<JobFamily>> = LazyLock::new(|| {
    let activity = ACTIVITY.iter().map(counter_rows::family);
    let resources = RESOURCES.iter().map(counter_rows::family);
    activity
        .chain(jobs::FAMILIES.iter().cloned())
        .chain(resources)
        .chain(job_files::FAMILIES.iter().cloned())
        .collect()
});

fn families() -> impl Iterator<Item = &'static JobFamily> {
    FAMILIES.iter()
}

/// `job`'s samples of every family, encoded afresh.
pub fn encode(job: &JobView) -> EncodedJob {
    let mut out = SampleWriter::new(&job.jobid, &job.user, FAMILIES.len());
    counter_rows::write_samples(ACTIVITY, &job.counters, &mut out);
    jobs::write_samples(job, &mut out);
    counter_rows::write_samples(RESOURCES, &job.counters, &mut out);
    job_files::write_samples(job, &mut out);
    let encoded = out.finish();
    debug_assert_eq!(encoded.families(), FAMILIES.len());
    encoded
}

/// `job`'s samples, encoded at its view's first scrape and kept in its
/// [`crate::snapshot::SeriesCache`]; None if that cache holds something else.
fn cached(job: &JobView) -> Option<&EncodedJob> {
    job.series.get_or_init(|| encode(job))
}

/// Appends every per-job family of `jobs` to `out`.
pub fn write(out: &mut String, jobs: &[Arc<JobView>], format: Format) {
    let cached: Option<Vec<&EncodedJob>> = jobs.iter().map(|job| cached(job)).collect();
    match cached {
        Some(encoded) => write_encoded(out, &encoded, format),
        // Only this encoder fills the caches, so never; still no reason
        // to fail a scrape.
        None => {
            let fresh: Vec<EncodedJob> = jobs.iter().map(|job| encode(job)).collect();
            let fresh: Vec<&EncodedJob> = fresh.iter().collect();
            write_encoded(out, &fresh, format);
        }
    }
}

/// Appends every per-job family of the `jobs` encoded already.
pub fn write_encoded(out: &mut String, jobs: &[&EncodedJob], format: Format) {
    let shown: Vec<Shown> = families()
        .enumerate()
        .filter(|(index, family)| {
            !family.optional || jobs.iter().any(|job| !job.lines(*index).is_empty())
        })
        .map(|(index, family)| Shown {
            index,
            family,
            prefix: family.sample_prefix(),
        })
        .collect();
    // One allocation for the whole text (tens of MB at 10,000 jobs).
    out.reserve(size(jobs, &shown));
    for Shown {
        index,
        family,
        prefix,
    } in &shown
    {
        family.write_descriptor(out, format);
        for job in jobs {
            for line in job.lines(*index).split_inclusive('\n') {
                out.push_str(prefix);
                out.push_str(&job.labels);
                out.push_str(line);
            }
        }
    }
}

/// A family that is served, and its sample lines' start.
struct Shown {
    index: usize,
    family: &'static JobFamily,
    prefix: String,
}

/// The bytes [`write_encoded`] appends, descriptors but roughly.
fn size(jobs: &[&EncodedJob], shown: &[Shown]) -> usize {
    const DESCRIPTOR: usize = 512;
    let samples: usize = jobs
        .iter()
        .map(|job| {
            shown
                .iter()
                .map(|Shown { index, prefix, .. }| {
                    let lines = job.lines(*index);
                    let count = lines.bytes().filter(|b| *b == b'\n').count();
                    lines.len() + count * (prefix.len() + job.labels.len())
                })
                .sum::<usize>()
        })
        .sum();
    samples + shown.len() * DESCRIPTOR
}
