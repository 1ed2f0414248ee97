//! Section 10: finished jobs: profiles written, /metrics, the job API and RSS.
use super::{
    Outcome, Report, Section,
    goal::{Goal, Unit},
    markdown::{mb, mb_f, row, table},
};
use crate::bench::{
    retention::{API_GETS, JOB_RETENTION, POLL, RetentionResult, RetentionRound},
    scale::SETTLE_SAMPLES,
};

/// With the finished jobs in retention (10,000 of them).
const MAX_SCRAPE_MS: f64 = 200.0;
/// Megabytes of 10^6 bytes.
const MAX_RSS_MB: f64 = 50.0;

/// The scrape's median and p99, and the daemon's RSS, with every finished
/// job in retention.
fn goals(r: &RetentionResult) -> [Goal; 3] {
    let jobs = r.jobs;
    [
        Goal::at_most(
            format!("/metrics median with {jobs} finished jobs"),
            r.scrape_median_ms(),
            MAX_SCRAPE_MS,
            Unit::Milliseconds,
        ),
        Goal::at_most(
            format!("/metrics p99 with {jobs} finished jobs"),
            r.scrape_p99_ms(),
            MAX_SCRAPE_MS,
            Unit::Milliseconds,
        ),
        Goal::at_most(
            format!("daemon RSS with {jobs} finished jobs"),
            mb_f(r.rss_kib()),
            MAX_RSS_MB,
            Unit::Megabytes,
        ),
    ]
}

impl Outcome for RetentionResult {
    fn goals(&self) -> Vec<Goal> {
        goals(self).into()
    }

    fn section(&self, report: &Report) -> Section {
        let r = self;
        let [scrape_median, scrape_p99, rss_goal] = goals(r);
        let trusted = report.trusted;
        let jobs = r.jobs;
        let mut rows: Vec<Vec<String>> = r
            .rounds
            .iter()
            .enumerate()
            .map(|(i, round)| {
                row([
                    &(i + 1).to_string(),
                    &format!("{:.2}", round.rmdir_s),
                    &format!("{:.2}", round.written_s),
                    &format!("{:.0}", round.profiles_per_second(jobs)),
                    &format!("{:.0}", round.commits),
                    &format!("{:.0}", round.last_commit_ms),
                    &format!("{:.0}", round.ring_full),
                    &format!("{:.0}", round.burst_sample_ms),
                    &format!("{:.2}", round.finished_s),
                    &format!("{:.2}", round.store_bytes() as f64 / 1e6),
                    &format!("{:.1}", round.scrape_median_ms()),
                    &format!("{:.1}", round.scrape_p99_ms()),
                    &format!("{:.1}", mb(round.rss_kib)),
                    &format!("{:.1}", round.api_median_ms()),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            &format!("**{:.2}**", r.median_of(|round| round.rmdir_s)),
            &format!("**{:.2}**", r.written_s()),
            &format!("**{:.0}**", r.profiles_per_second()),
            &format!("**{:.0}**", r.median_of(|round| round.commits)),
            &format!("**{:.0}**", r.median_of(|round| round.last_commit_ms)),
            &format!("**{:.0}**", r.median_of(|round| round.ring_full)),
            &format!("**{:.0}**", r.median_of(|round| round.burst_sample_ms)),
            &format!("**{:.2}**", r.finished_s()),
            &format!("**{:.2}**", r.store_bytes() / 1e6),
            &format!("**{:.1}**", r.scrape_median_ms()),
            &format!("**{:.1}**", r.scrape_p99_ms()),
            &format!("**{:.1}**", mb_f(r.rss_kib())),
            &format!("**{:.1}**", r.api_median_ms()),
        ]));
        let rss = mb_f(r.rss_kib());
        let api_jobs = r
            .rounds
            .iter()
            .map(|round| round.api_jobs)
            .min()
            .unwrap_or(0);
        let most =
            |figure: fn(&RetentionRound) -> f64| r.rounds.iter().map(figure).fold(0.0, f64::max);
        let summary = vec![
            row([
                "Profiles written per second",
                &format!(
                    "{:.0}/s (all {jobs} in {:.2} s)",
                    r.profiles_per_second(),
                    r.written_s()
                ),
                "",
                "",
            ]),
            row([
                &format!("All {jobs} finished in /metrics after"),
                &format!("{:.2} s", r.finished_s()),
                "",
                "",
            ]),
            row([
                "State store (jobs.db + WAL)",
                &format!(
                    "{:.2} MB ({:.0} bytes per job)",
                    r.store_bytes() / 1e6,
                    r.store_bytes() / f64::from(jobs)
                ),
                "",
                "",
            ]),
            row([
                "/metrics, median",
                &format!("{:.2} ms", r.scrape_median_ms()),
                &scrape_median.target(),
                scrape_median.verdict(trusted),
            ]),
            row([
                "/metrics, p99",
                &format!("{:.2} ms", r.scrape_p99_ms()),
                &scrape_p99.target(),
                scrape_p99.verdict(trusted),
            ]),
            row([
                "/metrics body",
                &format!("{:.0} bytes", r.median_of(|round| round.body_bytes as f64)),
                "",
                "",
            ]),
            row([
                "Daemon VmRSS",
                &format!("{rss:.1} MB ({:.0} KiB)", r.rss_kib()),
                &rss_goal.target(),
                rss_goal.verdict(trusted),
            ]),
            row([
                "Daemon VmHWM (peak RSS)",
                &format!("{:.1} MB", mb_f(r.median_of(|round| round.hwm_kib as f64))),
                "",
                "",
            ]),
            row([
                "/api/v1/jobs, median",
                &format!(
                    "{:.2} ms ({:.0} bytes, at least {api_jobs} jobs listed)",
                    r.api_median_ms(),
                    r.median_of(|round| round.api_bytes as f64)
                ),
                "",
                "",
            ]),
            row([
                "Daemon's last map sample took",
                &format!(
                    "{:.2} ms",
                    r.median_of(|round| round.sample_ms.unwrap_or(f64::NAN))
                ),
                "",
                "",
            ]),
            row([
                "Cgroups refused by the full counter map (most in a round)",
                &format!("{:.0}", most(|round| round.map_full)),
                "",
                "",
            ]),
        ];
        let body = format!(
            "Each round starts a fresh daemon (`--job.retention {JOB_RETENTION}`, `--bpf.max-cgroups {}`, an \
             empty `--state.dir` on the workspace's disk; it samples every 1 s), makes {jobs} job directories \
             under its root (no process in them), waits until all are running and one more sample was taken, then \
             removes them all back to back. Written after: from the first rmdir until \
             `monitor_state_profiles_written_total` reached {jobs}; finished after: until \
             `monitor_jobs{{state=\"finished\"}}` did; both read from /metrics every {} ms, each taken when the \
             GET that first showed it returned. A job ends at the first sample at least 50 ms (the grace for its final \
             read) after its rmdir, so written after includes waiting for that sample. Profiles/s = {jobs} / written \
             after. Commits: state store transactions that wrote them; last commit: \
             `monitor_state_commit_duration_seconds` then (fsync included). Events lost: cgroup events dropped \
             during the rmdirs for a full event ring (`monitor_bpf_lost_events_total{{reason=\"cgroup_event_ring_full\"}}`); \
             the daemon then finds the removed directories by walking the root at the next sample, and they \
             end a sample later. Slowest sample: the longest \
             `monitor_sample_duration_seconds` seen meanwhile (the sample that ends the jobs and hands their \
             profiles over). Store: jobs.db plus its WAL \
             afterwards. Then, {SETTLE_SAMPLES} samples later with all {jobs} finished jobs in /metrics, {} \
             back-to-back GETs of /metrics (median and p99 per round, then the median over rounds), VmRSS and \
             VmHWM from /proc/PID/status, and {API_GETS} GETs of `/api/v1/jobs` (which merges the retention with \
             the store). MB are 10^6 bytes.\n\n{}\n{}\n",
            r.max_cgroups,
            POLL.as_millis(),
            r.rounds.first().map_or(0, |round| round.scrape_ms.len()),
            table(
                &[
                    "Round",
                    "rmdirs (s)",
                    "Written after (s)",
                    "Profiles/s",
                    "Commits",
                    "Last commit (ms)",
                    "Events lost",
                    "Slowest sample (ms)",
                    "Finished after (s)",
                    "Store (MB)",
                    "/metrics p50 (ms)",
                    "/metrics p99 (ms)",
                    "RSS (MB)",
                    "API p50 (ms)",
                ],
                &rows
            ),
            table(&["Measure", "Value", "Goal", "Result"], &summary)
        );
        Section {
            title: format!(
                "Finished jobs: profiles written, and /metrics with {jobs} in retention"
            ),
            body,
        }
    }
}
