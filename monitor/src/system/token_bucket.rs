//! Rates per holder: a token bucket for each (a uid registering jobs), so
//! one holder's flood is refused while everyone else, and the holder's own
//! steady pace, go through.
use std::{collections::HashMap, hash::Hash, time::Instant};

/// Holders tracked at once. A full bucket holds no information, so full
/// ones are forgotten first; past this many holders all spending at once,
/// new holders are refused (fail closed) until one refills.
const MAX_HOLDERS: usize = 65_536;

/// A sustained rate with a burst, per holder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second; 0: no limit.
    pub per_second: f64,
    /// Tokens a bucket holds at most (and starts with).
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct TokenBuckets<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    max_holders: usize,
}

impl<K: Hash + Eq + Copy> TokenBuckets<K> {
    pub fn new(rate: Rate) -> Self {
        Self::with_capacity(rate, MAX_HOLDERS)
    }

    fn with_capacity(rate: Rate, max_holders: usize) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
            max_holders,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token of `holder`'s at `now`; false when it has none.
    pub fn take(&mut self, holder: K, now: Instant) -> bool {
        if self.rate.per_second <= 0.0 {
            return true;
        }
        let burst = f64::from(self.rate.burst);
        if !self.buckets.contains_key(&holder) && self.buckets.len() >= self.max_holders {
            self.forget_full(now);
            if self.buckets.len() >= self.max_holders {
                return false;
            }
        }
        let bucket = self.buckets.entry(holder).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Drops the buckets that have refilled: they would start full anyway.
    fn forget_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rate.per_second, f64::from(self.rate.burst));
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens + elapsed * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    #[test]
    fn a_burst_then_the_sustained_rate_per_holder() {
        let mut buckets = TokenBuckets::new(RATE);
        let t0 = Instant::now();
        assert!((0..3).all(|_| buckets.take(1u32, t0)), "the burst");
        assert!(!buckets.take(1, t0), "over the burst");
        assert!(buckets.take(2, t0), "another holder has its own bucket");
        assert!(
            buckets.take(1, t0 + Duration::from_millis(500)),
            "refilled one"
        );
        assert!(!buckets.take(1, t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| buckets.take(1, later)) && !buckets.take(1, later),
            "refills up to the burst, not beyond"
        );
    }

    #[test]
    fn no_rate_means_no_limit() {
        let mut buckets = TokenBuckets::new(Rate {
            per_second: 0.0,
            burst: 1,
        });
        let now = Instant::now();
        assert!((0..1000).all(|_| buckets.take(7u32, now)));
    }

    #[test]
    fn holders_are_bounded_and_full_buckets_are_forgotten_first() {
        let mut buckets = TokenBuckets::with_capacity(RATE, 2);
        let t0 = Instant::now();
        assert!(buckets.take(1u32, t0) && buckets.take(2, t0));
        assert!(!buckets.take(3, t0), "two holders spending: a third waits");
        let refilled = t0 + Duration::from_secs(1);
        assert!(buckets.take(3, refilled), "full buckets make room");
        assert!(buckets.buckets.len() <= 2);
    }
}
