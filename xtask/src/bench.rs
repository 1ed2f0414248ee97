//! `cargo xtask bench` (filled in by the benchmark work).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn bench(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
