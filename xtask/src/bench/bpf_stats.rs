//! Run time and run count of one kernel program, as bpf_stats counts them.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunStats {
    pub run_time_ns: f64,
    pub run_count: f64,
}

impl RunStats {
    /// bpf_stats of program `name` of a loaded object.
    pub fn of(ebpf: &aya::Ebpf, name: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let info = ebpf
            .program(name)
            .with_context(|| format!("{name} vanished"))?
            .info()
            .with_context(|| format!("reading the stats of {name}"))?;
        Ok(Self {
            run_time_ns: info.run_time().as_nanos() as f64,
            run_count: info.run_count() as f64,
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            run_time_ns: self.run_time_ns - earlier.run_time_ns,
            run_count: self.run_count - earlier.run_count,
        }
    }

    /// Mean cost of one run; `None` when the program did not run.
    pub fn ns_per_run(self) -> Option<f64> {
        (self.run_count > 0.0).then(|| self.run_time_ns / self.run_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_run_of_a_window() {
        let before = RunStats {
            run_time_ns: 1000.0,
            run_count: 10.0,
        };
        let after = RunStats {
            run_time_ns: 3000.0,
            run_count: 20.0,
        };
        assert_eq!(after.since(before).ns_per_run(), Some(200.0));
        assert_eq!(before.since(before).ns_per_run(), None);
    }
}
