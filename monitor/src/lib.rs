//! `monitor`: the node daemon and its command-line clients, as a library so
//! the fuzz targets (`fuzz/`) reach the parsers; `main.rs` only calls
//! [`main`]. The parsers' modules are public, the rest stays private.
pub mod api;
mod cli;
mod client;
mod daemon;
mod job_counters;
mod jobs;
pub mod kernel;
pub mod launcher;
mod metrics;
pub mod profile;
mod service;
mod snapshot;
pub mod store;
mod system;
mod web;

use clap::Parser as _;

/// The command line: the daemon or one of the clients.
pub fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Daemon(args) => {
            init_logging(args.log_level);
            service::run(*args)
        }
        cli::Command::Run(args) => {
            init_logging(log::LevelFilter::Warn);
            return client::run::run(args);
        }
        cli::Command::Jobs(args) => {
            init_logging(log::LevelFilter::Warn);
            client::jobs::run(args)
        }
        cli::Command::Report(args) => {
            init_logging(log::LevelFilter::Warn);
            client::report::run(args)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("monitor: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp_millis()
        .init();
}
