//! Times as the daemon shows and stores them: seconds as f64, Unix times.
//! At the bottom layer: the sampler, the job table, profiles, the API and
//! the encoders all use them.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds as seconds.
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `t` as a Unix time (0 for a time before the epoch).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The inverse of [`unix_seconds`], for times read back from the state
/// store: the epoch for what no `SystemTime` holds (negative, NaN, past
/// i64::MAX seconds), where adding the duration to the epoch would panic.
pub fn from_unix_seconds(seconds: f64) -> SystemTime {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .unwrap_or(UNIX_EPOCH)
}
