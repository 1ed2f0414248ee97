//! Registration outcomes, for `monitor_registrations_total{result}`.
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Registered with a hello.
    Ok,
    /// Registered without a hello (silent peer, e.g. Apptainer's starter).
    Silent,
    /// The peer's executable is not trusted.
    Untrusted,
    /// The hello was malformed, oversize, or claimed what it may not.
    Invalid,
    /// The peer was gone before it could be placed.
    Exited,
    /// The per-user cap of live jobs was reached.
    OverLimit,
    /// Moving the peer would have taken it out of a cgroup limit.
    CgroupLimits,
    /// The uid registered faster than `--socket.registration-rate` allows.
    RateLimited,
    /// The daemon failed (cgroup or kernel error).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Silent,
        Outcome::Untrusted,
        Outcome::Invalid,
        Outcome::Exited,
        Outcome::OverLimit,
        Outcome::CgroupLimits,
        Outcome::RateLimited,
        Outcome::Error,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Silent => "silent",
            Outcome::Untrusted => "untrusted",
            Outcome::Invalid => "invalid",
            Outcome::Exited => "exited",
            Outcome::OverLimit => "over_limit",
            Outcome::CgroupLimits => "cgroup_limits",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Default)]
pub struct RegistrationStats {
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl RegistrationStats {
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }
}
