//! `cargo xtask`: set-up, build, run, test and benchmark the job monitor.
mod bench;
mod build;
mod fuzz;
mod package;
mod run;
mod test;
mod toolchain;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    about = "Build, run, test and benchmark the job monitor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the eBPF toolchain if missing (rust-src, bpf-linker) and build the kernel programs.
    BuildEbpf,
    /// Build everything (release) with the kernel programs embedded.
    Build,
    /// Build, then start the daemon with working defaults (extra args go to `monitor daemon`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: the fuzz targets (30 s each), unit tests, then the privileged end-to-end tests (as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the parsers' fuzz targets (cargo-fuzz, nightly), 30 s each unless told.
    Fuzz(fuzz::FuzzArgs),
    /// Run the benchmarks and write bench/RESULTS.md.
    Bench(bench::BenchArgs),
    /// Build the Debian package (target/debian/monitor_<version>_<arch>.deb).
    Package,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf => build::build_ebpf().map(|object| {
            println!("kernel programs: {}", object.display());
        }),
        Command::Build => build::build_release().map(|_| ()),
        Command::Run { args } => run::run(&args),
        Command::Test { args } => test::test(&args),
        Command::Fuzz(args) => fuzz::fuzz(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Package => package::package().map(|_| ()),
    }
}
