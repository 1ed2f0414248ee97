//! Refusals logged at most once per interval, with how many there were:
//! a flood must not flood the log too.
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    since: u64,
}

impl LogEvery {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            since: 0,
        }
    }

    /// Notes `count` more events at `now`; Some(events since the last
    /// line, these included) when a line is due.
    pub fn note(&mut self, count: u64, now: Instant) -> Option<u64> {
        self.since += count;
        if self.since == 0
            || self
                .last
                .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let mut log = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(1, t0), Some(1), "the first is logged at once");
        assert_eq!(log.note(1, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.note(3, t0 + Duration::from_secs(9)), None);
        assert_eq!(log.note(1, t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(
            log.note(0, t0 + Duration::from_secs(30)),
            None,
            "nothing new"
        );
    }
}
