//! `monitor jobs`: running and finished jobs as a table (like squeue and
//! sacct), or as the API's JSON, read from the daemon's job API socket.
use std::{io::Write as _, path::Path, time::SystemTime};

use anyhow::{Context as _, bail};

use super::{
    http::{self, percent_encode},
    printable::printable,
};
use crate::{
    cli::{JobsArgs, api_socket},
    profile::{JobJson, JobState},
    system::time::seconds,
};

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let socket = api_socket(&args.socket_path);
    let mut query = Vec::new();
    if !args.all {
        let since = SystemTime::now()
            .checked_sub(args.since)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let since = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        query.push(format!("since={since}"));
    }
    if let Some(user) = &args.user {
        query.push(format!("user={}", percent_encode(user)));
    }
    let path = if query.is_empty() {
        "/api/v1/jobs".to_string()
    } else {
        format!("/api/v1/jobs?{}", query.join("&"))
    };
    let jobs = get_all(&socket, path)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &jobs).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&jobs, SystemTime::now()))?;
    }
    Ok(())
}

/// Every page of a job list: the daemon answers a page at a time
/// (`--api.page-size`), each naming the next.
fn get_all(socket: &Path, path: String) -> anyhow::Result<Vec<JobJson>> {
    let mut jobs = Vec::new();
    let mut next = Some(path);
    while let Some(path) = next {
        let response = get(socket, &path)?;
        let page: Vec<JobJson> = serde_json::from_str(&response.body)
            .context("the daemon's answer is not a job list")?;
        jobs.extend(page);
        next = response.next_page;
    }
    Ok(jobs)
}

/// GET over the API socket; a 200 answer.
fn get(socket: &Path, path: &str) -> anyhow::Result<http::Response> {
    let response = http::unix_get(socket, path).with_context(|| {
        format!(
            "asking the daemon's job API at {} (is `monitor daemon` running? \
             set --socket.path or MONITOR_SOCKET to its launcher socket)",
            socket.display()
        )
    })?;
    if response.status != 200 {
        bail!(
            "the daemon answered {}: {}",
            response.status_line,
            response.body
        );
    }
    Ok(response)
}

const HEADER: [&str; 9] = [
    "JOBID",
    "USER",
    "STATE",
    "START (UTC)",
    "ELAPSED",
    "CPU",
    "RSS_PEAK",
    "TASKS",
    "NAME",
];

fn table(jobs: &[JobJson], now: SystemTime) -> String {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|job| {
            let end = job.end_time.unwrap_or(now);
            [
                printable(&job.jobid).into_owned(),
                printable(&job.user).into_owned(),
                match job.state {
                    JobState::Running => "RUNNING".into(),
                    JobState::Finished => "FINISHED".into(),
                },
                utc(job.start_time),
                elapsed(end - job.start_time),
                elapsed(seconds(job.counters.cpu_ns)),
                bytes(job.counters.rss_peak()),
                job.tasks.to_string(),
                printable(&job.name).into_owned(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// `[D-]HH:MM:SS`, as squeue shows times; sub-second times keep two decimals.
pub(super) fn elapsed(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 60.0 {
        return format!("{seconds:.2}s");
    }
    let total = seconds as u64;
    let (days, rest) = (total / 86_400, total % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (days to civil date: Howard Hinnant's algorithm).
pub(super) fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_sizes() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_000_000.0), "2026-11-18 11:06:40");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(elapsed(0.012), "0.01s");
        assert_eq!(elapsed(3_725.0), "01:02:05");
        assert_eq!(elapsed(90_061.0), "1-01:01:01");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 << 20), "3.0MiB");
    }
}
