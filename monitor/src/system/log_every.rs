//! Logging a repeated condition at most once per interval, with how many
//! times it happened since the last line (the launcher's over-share
//! refusals follow the same pattern).
use std::time::{Duration, Instant};

/// How often a repeated condition is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts occurrences; says when one is due to be logged.
#[derive(Debug, Default)]
pub struct LogEvery {
    last: Option<Instant>,
    since: u64,
}

impl LogEvery {
    /// Records `n` occurrences; Some(how many since the last line) when a
    /// line is due now (the first time, then once per [`LOG_EVERY`]).
    pub fn hit(&mut self, n: u64) -> Option<u64> {
        self.since += n;
        let due = self.last.is_none_or(|last| last.elapsed() >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_counts_until_the_interval_ends() {
        let mut log = LogEvery::default();
        assert_eq!(log.hit(2), Some(2));
        assert_eq!(log.hit(1), None);
        assert_eq!(log.hit(3), None);
        log.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(log.hit(1), Some(5));
    }
}
