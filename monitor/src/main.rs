//! `monitor`: the node daemon and its command-line clients.
mod api;
mod cli;
mod client;
mod daemon;
mod jobs;
mod kernel;
mod launcher;
mod metrics;
mod profile;
mod store;
mod system;
mod web;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Daemon(args) => {
            init_logging(args.log_level);
            daemon::run(*args)
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
