use std::{path::PathBuf, time::Duration};

use clap::{CommandFactory, Parser as _};

use super::*;
use crate::launcher::hello::HelloLimits;

#[test]
fn cli_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_are_sane() {
    let cli = Cli::parse_from(["monitor", "daemon"]);
    let Command::Daemon(args) = cli.command else {
        panic!("not the daemon");
    };
    assert_eq!(args.socket_path, PathBuf::from(DEFAULT_SOCKET));
    assert!(args.trust_self);
    assert_eq!(args.listen_address, "0.0.0.0:9959".parse().unwrap());
    assert_eq!(args.telemetry_path, "/metrics");
    assert_eq!(args.sample_interval, Duration::from_secs(1));
    assert_eq!(args.job_retention, Duration::from_secs(300));
    assert_eq!(args.max_cgroups, 16384);
    assert_eq!(
        (args.registration_rate, args.registration_burst),
        (20.0, 500)
    );
    assert_eq!(args.max_finished_per_user, 2000);
    assert_eq!(args.hello_limits(), HelloLimits::default());
}

#[test]
fn run_takes_labels_and_a_command() {
    let cli = Cli::parse_from([
        "monitor", "run", "--job-id", "7", "--label", "a=b=c", "--", "sleep", "--help",
    ]);
    let Command::Run(args) = cli.command else {
        panic!("not run");
    };
    assert_eq!(args.job_id.as_deref(), Some("7"));
    assert_eq!(args.labels, vec![("a".to_string(), "b=c".to_string())]);
    assert_eq!(args.command, vec!["sleep", "--help"]);
    assert!(Cli::try_parse_from(["monitor", "run"]).is_err());
    assert!(Cli::try_parse_from(["monitor", "run", "--label", "x", "--", "true"]).is_err());
}

#[test]
fn report_takes_a_job_id_and_its_sources() {
    let cli = Cli::parse_from(["monitor", "report", "42", "--user", "alice"]);
    let Command::Report(args) = cli.command else {
        panic!("not report");
    };
    assert_eq!(
        (args.jobid.as_str(), args.user.as_deref()),
        ("42", Some("alice"))
    );
    assert_eq!(args.range, Duration::from_secs(86_400));
    assert_eq!(args.color, ColorChoice::Auto);
    assert!(args.prometheus.is_none() && !args.json);
    assert!(Cli::try_parse_from(["monitor", "report"]).is_err());
    assert!(Cli::try_parse_from(["monitor", "report", "1", "--color", "sometimes"]).is_err());
}

#[test]
fn bad_flags_are_refused() {
    for bad in [
        vec!["monitor", "daemon", "--sample.interval", "0s"],
        vec!["monitor", "daemon", "--web.listen-address", "nonsense"],
        vec!["monitor", "daemon", "--web.telemetry-path", "metrics"],
        vec!["monitor", "daemon", "--bpf.max-tasks", "0"],
        vec!["monitor", "daemon", "--bpf.task-slots", "-1"],
        vec!["monitor", "daemon", "--bpf.max-cgroups", "10000"],
        vec!["monitor", "daemon", "--bpf.max-cgroups", "32"],
        vec!["monitor", "daemon", "--socket.registration-rate", "-1"],
        vec!["monitor", "daemon", "--socket.registration-rate", "NaN"],
        vec!["monitor", "daemon", "--socket.registration-burst", "0"],
        vec!["monitor", "daemon", "--job.retention.max-per-user", "0"],
        vec!["monitor", "daemon", "--socket.max-name-bytes", "5000"],
    ] {
        assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
    }
}
