//! The value parsers clap calls for flags whose values need more than
//! `FromStr`.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub(super) use crate::system::duration::parse_duration;

pub(super) fn parse_listen_address(value: &str) -> Result<SocketAddr, String> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    full.parse()
        .map_err(|e| format!("{e}: expected HOST:PORT or :PORT, e.g. :9959 or 127.0.0.1:9959"))
}

pub(super) fn parse_telemetry_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') && value.len() > 1 {
        Ok(value.to_string())
    } else {
        Err("must start with / and not be / itself (the landing page is there)".into())
    }
}

pub(super) fn parse_cgroup_slots(value: &str) -> Result<u32, String> {
    power_of_two_at_least(value, 64)
}

fn power_of_two_at_least(value: &str, min: u32) -> Result<u32, String> {
    let n: u32 = value.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() && n >= min {
        Ok(n)
    } else {
        Err(format!("must be a power of two, at least {min}"))
    }
}

pub(super) fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}

pub(super) fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a rate per second (0 or more)")),
    }
}

/// A path, or empty (clap's own path parser refuses an empty value, which
/// `--bpf.pin-path` gives a meaning: pin nothing).
pub(super) fn path_or_empty(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}
