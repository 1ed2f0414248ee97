//! Section 9: launcher registrations.
use std::fmt::Write as _;

use super::{MAX_REGISTRATION_P99_MS, MIN_REGISTRATIONS_PER_S, Report, heading, row, table};
use crate::bench::{
    Benchmark,
    registrations::{PACED_INTERVAL, PACED_REGISTRATIONS, SOLO_REGISTRATIONS},
};

impl Report {
    pub(super) fn registrations_section(&self) -> String {
        let Some(r) = &self.registrations else {
            return String::new();
        };
        let mut rows: Vec<Vec<String>> = r
            .rounds
            .iter()
            .enumerate()
            .map(|(i, round)| {
                row([
                    &(i + 1).to_string(),
                    &round.registrations.to_string(),
                    &format!("{:.2}", round.wall_s),
                    &format!("{:.0}", round.per_second()),
                    &format!("{:.2}", round.p50_ms()),
                    &format!("{:.2}", round.p99_ms()),
                    &format!("{:.2}", round.max_ms()),
                    &format!("{:.2}", round.solo_p50_ms()),
                    &format!("{:.2}", round.solo_p99_ms()),
                    &format!("{:.0}", round.paced_per_second),
                    &format!("{:.2}", round.paced_p50_ms()),
                    &format!("{:.2}", round.paced_p99_ms()),
                    &round.failures.to_string(),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            "",
            "",
            &format!("**{:.0}**", r.per_second()),
            &format!("**{:.2}**", r.p50_ms()),
            &format!("**{:.2}**", r.p99_ms()),
            "",
            &format!("**{:.2}**", r.solo_p50_ms()),
            &format!("**{:.2}**", r.solo_p99_ms()),
            &format!("**{:.0}**", r.paced_per_second()),
            &format!("**{:.2}**", r.paced_p50_ms()),
            &format!("**{:.2}**", r.paced_p99_ms()),
            &r.failures().to_string(),
        ]));
        let launchers = r.launchers;
        let little = f64::from(launchers) / (MAX_REGISTRATION_P99_MS / 1000.0);
        let offered = f64::from(launchers) / PACED_INTERVAL.as_secs_f64();
        let mut out = format!(
            "{}\n\n\
             {launchers} launcher processes (`xtask bench` re-executed as a hidden worker, trusted with \
             `--trust.path`) start together; each makes {} registrations in a row: connect, send \
             `{{\"job_id\":\"bench-<launcher>-<n>\"}}`, read the answer (which must be ok), close. Every \
             registration makes a task cgroup and moves the launcher into it (its previous job, now empty, \
             ends at the next sample; `--job.retention 2s`). Latency: connect to answer received, every \
             registration of the round. Per second: all registrations of the round over the time from the \
             first launcher's start to the last one's end. Then one launcher alone makes {SOLO_REGISTRATIONS} registrations \
             (\"alone\": the cost of one registration without queueing). Then \"paced\": the {launchers} \
             launchers again, each registering once every {} ms (schedules spread evenly, so \
             {offered:.0} registrations/s offered), {PACED_REGISTRATIONS} each; latency counts from when a registration was due. \
             The daemon samples every 1 s.\n\n\
             Back to back, the launchers never pause, so {launchers} registrations are always in flight: by \
             Little's law the mean latency is {launchers} / throughput, and a p99 of {MAX_REGISTRATION_P99_MS} ms \
             would need more than {little:.0} registrations/s. The goals are judged on the back-to-back run, as \
             specified; the paced run shows the latency at the goal's rate.\n\n{}\n",
            heading(Benchmark::Registrations),
            r.per_launcher,
            PACED_INTERVAL.as_millis(),
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
                    "Paced: per second",
                    "Paced p50 (ms)",
                    "Paced p99 (ms)",
                    "Failed",
                ],
                &rows
            )
        );
        let _ = writeln!(
            out,
            "Goals: >= {MIN_REGISTRATIONS_PER_S:.0}/s: **{}**; p99 <= {MAX_REGISTRATION_P99_MS} ms: **{}**.\n",
            self.verdict(r.per_second() >= MIN_REGISTRATIONS_PER_S && r.failures() == 0),
            self.verdict(r.p99_ms() <= MAX_REGISTRATION_P99_MS)
        );
        if let Some(failure) = &r.first_failure {
            let _ = writeln!(out, "A registration failed: `{failure}`\n");
        }
        out
    }
}
