//! Medians and percentiles of a handful of noisy samples.

/// The median; the mean of the middle two for an even count. `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let sorted = sorted(values);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The median of the paired ratios `with[i] / without[i] - 1`: each round
/// ran both sides back to back, so its ratio cancels what drifts between
/// rounds (load from others, CPU frequency). `NAN` if none.
pub fn median_slowdown(without: &[f64], with: &[f64]) -> f64 {
    let ratios: Vec<f64> = without
        .iter()
        .zip(with)
        .map(|(without, with)| with / without - 1.0)
        .collect();
    median(&ratios).unwrap_or(f64::NAN)
}

/// Nearest-rank percentile (`p` in 0..=100). `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let sorted = sorted(values);
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdowns_are_medians_of_paired_ratios() {
        // A drift that doubles both sides in the last rounds cancels.
        let without = [1.0, 1.0, 2.0, 2.0, 2.0];
        let with = [1.01, 1.01, 2.02, 2.02, 2.02];
        assert!((median_slowdown(&without, &with) - 0.01).abs() < 1e-12);
        assert!(median_slowdown(&[], &[]).is_nan());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
