//! Refusals logged at most once per interval, with how many there were:
//! a user repeating a refused registration cannot flood the log.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    since: u64,
}

impl LogEvery {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::default(),
        }
    }

    /// Counts one event; calls `log` with the count since the last line
    /// (this one included) when a line is due.
    pub fn note(&self, log: impl FnOnce(u64)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.since += 1;
        if state.last.is_none_or(|last| last.elapsed() >= self.every) {
            log(state.since);
            state.last = Some(Instant::now());
            state.since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let log = LogEvery::new(Duration::from_secs(3600));
        let mut lines = Vec::new();
        for _ in 0..5 {
            log.note(|since| lines.push(since));
        }
        assert_eq!(lines, vec![1]);
        let log = LogEvery::new(Duration::ZERO);
        log.note(|since| lines.push(since));
        log.note(|since| lines.push(since));
        assert_eq!(lines, vec![1, 1, 1]);
    }
}
