//! Exponential backoff with full jitter, for every retry loop that waits.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `attempt` (0-based): uniform in `[0, cap]`, to the
/// millisecond, where `cap` is `base` doubled `attempt` times (at most 20) and
/// bounded by `max` ("full jitter": retries that failed together spread out
/// instead of hitting the same backend again in lockstep).
pub fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max);
    let ms = cap.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(300));
        for attempt in 0..6 {
            for _ in 0..50 {
                let d = full_jitter(base, max, attempt);
                let cap = (100u64 << attempt).min(300);
                assert!(d <= Duration::from_millis(cap), "{d:?} > {cap}");
            }
        }
        assert_eq!(full_jitter(Duration::ZERO, max, 3), Duration::ZERO);
        assert!(full_jitter(base, max, u32::MAX) <= max);
    }
}
