//! Retry policy: exponential backoff with full jitter.
//!
//! Attempt `n` (1-based) that failed waits a random time in
//! `[0, min(max, base * factor^(n-1))]` ("full jitter", as in the AWS architecture
//! blog's comparison): retries of many tasks that failed together spread out
//! instead of hitting the upstream again in lockstep.

use std::time::Duration;

use rand::Rng;

/// How a task name retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The cap of the first retry's wait.
    pub base: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// The longest wait.
    pub max: Duration,
    /// Full jitter (true) or the exact exponential delay (false, for tests).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: crate::task::DEFAULT_MAX_ATTEMPTS,
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The exponential cap of the wait after failed attempt `attempt` (1-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.base.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The wait before the next attempt after failed attempt `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt);
        if !self.jitter || cap.is_zero() {
            return cap;
        }
        let ms = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_exponentially_up_to_the_max() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(1),
            jitter: false,
        };
        let caps: Vec<u128> = (1..=6).map(|a| p.cap(a).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_spreads() {
        let p = RetryPolicy {
            base: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let waits: Vec<Duration> = (0..200).map(|_| p.backoff(3)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter should spread waits: {distinct:?}"
        );
    }
}
