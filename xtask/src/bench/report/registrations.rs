//! Section 9: launcher registrations.
use std::fmt::Write as _;

use super::{
    Outcome, Report, Section,
    goal::{Goal, Unit},
    markdown::{row, table},
};
use crate::bench::{
    registrations::{
        PACED_INTERVAL, PACED_REGISTRATIONS, RegistrationResult, RegistrationRound, Run, SCRAPERS,
        SOLO_REGISTRATIONS,
    },
    retention::JOB_RETENTION,
};

const MIN_PER_SECOND: f64 = 1000.0;
/// Paced at 1,000 registrations/s offered, alone and while /metrics is
/// scraped with the finished jobs in retention.
const MAX_P99_MS: f64 = 10.0;

/// Judged on the paced runs: back to back, the p99 is set by Little's law
/// (the section says why), so it is shown, not a goal. Every goal asks
/// that no registration of its runs failed.
fn goals(r: &RegistrationResult) -> [Goal; 3] {
    let launchers = r.launchers;
    let offered = r.offered_per_second();
    let jobs = r.finished_jobs;
    let back_to_back: fn(&RegistrationRound) -> &Run = |round| &round.back_to_back;
    let paced: fn(&RegistrationRound) -> &Run = |round| &round.paced;
    let scraped: fn(&RegistrationRound) -> &Run = |round| &round.scraped;
    let p99 = |run: fn(&RegistrationRound) -> &Run| r.median_of(|round| run(round).p99_ms());
    [
        Goal::at_least(
            format!("registrations per second, {launchers} concurrent launchers"),
            r.median_of(|round| round.back_to_back.per_second()),
            MIN_PER_SECOND,
            Unit::PerSecond,
        )
        .provided(r.failures_of(back_to_back) == 0),
        Goal::at_most(
            format!("registration latency p99, paced at {offered:.0}/s"),
            p99(paced),
            MAX_P99_MS,
            Unit::Milliseconds,
        )
        .provided(r.failures_of(paced) == 0),
        Goal::at_most(
            format!(
                "registration latency p99, paced at {offered:.0}/s, two scrapes of {jobs} finished jobs running"
            ),
            p99(scraped),
            MAX_P99_MS,
            Unit::Milliseconds,
        )
        .provided(r.failures_of(scraped) == 0),
    ]
}

impl Outcome for RegistrationResult {
    fn goals(&self) -> Vec<Goal> {
        goals(self).into()
    }

    fn section(&self, report: &Report) -> Section {
        let r = self;
        let launchers = r.launchers;
        let jobs = r.finished_jobs;
        let offered = r.offered_per_second();
        let little = f64::from(launchers) / (MAX_P99_MS / 1000.0);
        let mut out = format!(
            "{launchers} launcher processes (`xtask bench` re-executed as a hidden worker, trusted with \
             `--trust.path`) start together; each makes {} registrations in a row: connect, send \
             `{{\"job_id\":\"bench-<launcher>-<n>\"}}`, read the answer (which must be ok), close. Every \
             registration makes a task cgroup and moves the launcher into it (its previous job, now empty, \
             ends at the next sample; `--job.retention 2s`). Latency: connect to answer received, every \
             registration of the round. Per second: all registrations of the round over the time from the \
             first launcher's start to the last one's end. Then one launcher alone makes {SOLO_REGISTRATIONS} registrations \
             (\"alone\": the cost of one registration without queueing). Then \"paced\": the {launchers} \
             launchers again, each registering once every {} ms (schedules spread evenly, so \
             {offered:.0} registrations/s offered), {PACED_REGISTRATIONS} each; latency counts from when a registration was due. \
             Then \"scraped\": the same paced run against a second daemon that holds {jobs} finished jobs in its \
             retention (`--job.retention {JOB_RETENTION}`; made, counted and removed as in the finished-jobs \
             benchmark, every profile written before the launchers start), while {SCRAPERS} threads GET its \
             /metrics back to back from the launchers' go to their last answer (scrapes: how many finished, \
             and their median). The paced run's own jobs join that retention as they end. A second daemon, \
             fresh each round: the first keeps its short retention, so the other runs measure what they \
             measured before, and a daemon kept over rounds would hold {} more finished jobs each round. \
             Both daemons sample every 1 s.\n\n\
             Back to back, the launchers never pause, so {launchers} registrations are always in flight: by \
             Little's law the mean latency is {launchers} / throughput, and a p99 of {MAX_P99_MS} ms \
             would need more than {little:.0} registrations/s. So the latency goals are judged on the paced runs, \
             at the rate the throughput goal asks for; the back-to-back p99 is shown, not judged.\n\n{}\n{}\n",
            r.per_launcher,
            PACED_INTERVAL.as_millis(),
            launchers * PACED_REGISTRATIONS,
            back_to_back_table(r),
            paced_table(r),
        );
        let goals: Vec<String> = goals(r)
            .iter()
            .map(|goal| {
                format!(
                    "{} {}: **{}**",
                    goal.name,
                    goal.target(),
                    goal.verdict(report.trusted)
                )
            })
            .collect();
        let _ = writeln!(out, "Goals: {}.\n", goals.join("; "));
        if let Some(failure) = &r.first_failure {
            let _ = writeln!(out, "A registration failed: `{failure}`\n");
        }
        Section {
            title: "Launcher registrations".into(),
            body: out,
        }
    }
}

/// The back-to-back and lone launchers, per round and the medians.
fn back_to_back_table(r: &RegistrationResult) -> String {
    let failed = |round: &RegistrationRound| round.back_to_back.failures + round.solo.failures;
    let mut rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .enumerate()
        .map(|(i, round)| {
            let run = &round.back_to_back;
            row([
                &(i + 1).to_string(),
                &run.registrations.to_string(),
                &format!("{:.2}", run.wall_s),
                &format!("{:.0}", run.per_second()),
                &format!("{:.2}", run.p50_ms()),
                &format!("{:.2}", run.p99_ms()),
                &format!("{:.2}", run.max_ms()),
                &format!("{:.2}", round.solo.p50_ms()),
                &format!("{:.2}", round.solo.p99_ms()),
                &failed(round).to_string(),
            ])
        })
        .collect();
    let median = |figure: fn(&Run) -> f64, of: fn(&RegistrationRound) -> &Run| {
        r.median_of(|round| figure(of(round)))
    };
    let back_to_back: fn(&RegistrationRound) -> &Run = |round| &round.back_to_back;
    let solo: fn(&RegistrationRound) -> &Run = |round| &round.solo;
    rows.push(row([
        "**median**",
        "",
        "",
        &format!("**{:.0}**", median(Run::per_second, back_to_back)),
        &format!("**{:.2}**", median(Run::p50_ms, back_to_back)),
        &format!("**{:.2}**", median(Run::p99_ms, back_to_back)),
        "",
        &format!("**{:.2}**", median(Run::p50_ms, solo)),
        &format!("**{:.2}**", median(Run::p99_ms, solo)),
        &r.rounds.iter().map(failed).sum::<usize>().to_string(),
    ]));
    table(
        &[
            "Round",
            "Registrations",
            "Wall (s)",
            "Per second",
            "p50 (ms)",
            "p99 (ms)",
            "Max (ms)",
            "Alone p50 (ms)",
            "Alone p99 (ms)",
            "Failed",
        ],
        &rows,
    )
}

/// The paced runs, alone and scraped, per round and the medians.
fn paced_table(r: &RegistrationResult) -> String {
    let failed = |round: &RegistrationRound| round.paced.failures + round.scraped.failures;
    let mut rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .enumerate()
        .map(|(i, round)| {
            row([
                &(i + 1).to_string(),
                &format!("{:.0}", round.paced.per_second()),
                &format!("{:.2}", round.paced.p50_ms()),
                &format!("{:.2}", round.paced.p99_ms()),
                &format!("{:.0}", round.scraped.per_second()),
                &format!("{:.2}", round.scraped.p50_ms()),
                &format!("{:.2}", round.scraped.p99_ms()),
                &round.scrapes_ms.len().to_string(),
                &format!("{:.1}", round.scrape_median_ms()),
                &failed(round).to_string(),
            ])
        })
        .collect();
    let median = |figure: fn(&Run) -> f64, of: fn(&RegistrationRound) -> &Run| {
        r.median_of(|round| figure(of(round)))
    };
    let paced: fn(&RegistrationRound) -> &Run = |round| &round.paced;
    let scraped: fn(&RegistrationRound) -> &Run = |round| &round.scraped;
    rows.push(row([
        "**median**",
        &format!("**{:.0}**", median(Run::per_second, paced)),
        &format!("**{:.2}**", median(Run::p50_ms, paced)),
        &format!("**{:.2}**", median(Run::p99_ms, paced)),
        &format!("**{:.0}**", median(Run::per_second, scraped)),
        &format!("**{:.2}**", median(Run::p50_ms, scraped)),
        &format!("**{:.2}**", median(Run::p99_ms, scraped)),
        &format!(
            "**{:.0}**",
            r.median_of(|round| round.scrapes_ms.len() as f64)
        ),
        &format!(
            "**{:.1}**",
            r.median_of(RegistrationRound::scrape_median_ms)
        ),
        &r.rounds.iter().map(failed).sum::<usize>().to_string(),
    ]));
    table(
        &[
            "Round",
            "Paced: per second",
            "Paced p50 (ms)",
            "Paced p99 (ms)",
            "Scraped: per second",
            "Scraped p50 (ms)",
            "Scraped p99 (ms)",
            "Scrapes",
            "Scrape p50 (ms)",
            "Failed",
        ],
        &rows,
    )
}
