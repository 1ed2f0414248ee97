//! Registrations per uid per second (`--socket.registration-rate`, with a
//! burst): checked at accept, before anything else is done for the
//! connection, so a flood costs the daemon one answer per connection.
use std::time::{Duration, Instant};

use crate::system::{
    log_every::LogEvery,
    token_bucket::{Rate, TokenBuckets},
};

/// How often refusals are logged (with their count).
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct RegistrationRate {
    buckets: TokenBuckets<u32>,
    log: LogEvery,
}

impl RegistrationRate {
    pub fn new(rate: Rate) -> Self {
        Self {
            buckets: TokenBuckets::new(rate),
            log: LogEvery::new(LOG_EVERY),
        }
    }

    /// None when `uid` may register at `now`; else the error to answer.
    /// Root is exempt: it could stop the daemon anyway, and root-run
    /// launchers (a resource manager's) register for every user at once.
    pub fn refusal(&mut self, uid: u32, now: Instant) -> Option<String> {
        if uid == 0 || self.buckets.take(uid, now) {
            return None;
        }
        let Rate { per_second, burst } = self.buckets.rate();
        if let Some(count) = self.log.note(1, now) {
            log::warn!(
                "launcher connections refused: uid {uid} (and {count} refusals in all since the last such line) over the registration rate of {per_second}/s with a burst of {burst} (--socket.registration-rate, --socket.registration-burst)"
            );
        }
        Some(format!(
            "uid {uid} registers faster than {per_second}/s (burst {burst}): try again later (--socket.registration-rate)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_exempt_and_users_get_a_reason() {
        let mut rate = RegistrationRate::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        let now = Instant::now();
        assert!((0..100).all(|_| rate.refusal(0, now).is_none()));
        assert!(rate.refusal(1000, now).is_none());
        let refusal = rate.refusal(1000, now).expect("over the burst");
        assert!(refusal.contains("--socket.registration-rate"), "{refusal}");
    }
}
