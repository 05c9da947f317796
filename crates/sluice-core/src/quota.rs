//! An upstream's call budget: a per-second rate and a daily quota.
//!
//! Public data portals count calls per key per day and reset at midnight in their
//! own time zone (KST for data.go.kr), so the daily budget here resets at midnight
//! in a configured zone, read from the injectable [`Clock`]. The per-second rate is
//! a GCRA limiter from `governor`. Callers wait for a per-second slot up to a bound;
//! a spent daily budget is refused at once with the time until the reset.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Gcra, RateLimiter};
use thiserror::Error;

use crate::Clock;

/// The budget refused a call.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaExceeded {
    /// The daily quota is spent.
    #[error("daily quota of {limit} calls is spent; it resets in {}s", retry_after.as_secs())]
    Daily {
        /// The configured daily limit.
        limit: u64,
        /// Time until the quota resets.
        retry_after: Duration,
    },
    /// No per-second slot became free within the allowed wait.
    #[error("rate limit of {per_second} calls per second reached")]
    PerSecond {
        /// The configured rate.
        per_second: u32,
        /// Time until a slot is free.
        retry_after: Duration,
    },
}

impl QuotaExceeded {
    /// How long a client should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Daily { retry_after, .. } | Self::PerSecond { retry_after, .. } => *retry_after,
        }
    }
}

/// An upstream's call budget, shared by the gateway and batch jobs.
#[async_trait]
pub trait Quota: Send + Sync + fmt::Debug + 'static {
    /// Takes one call from the budget, waiting up to `max_wait` for a per-second
    /// slot.
    ///
    /// # Errors
    ///
    /// [`QuotaExceeded`] when the daily budget is spent or no slot frees up in time.
    async fn acquire(&self, max_wait: Duration) -> Result<(), QuotaExceeded>;

    /// Calls left today, if a daily quota is configured.
    fn remaining_today(&self) -> Option<u64>;

    /// Marks today's budget as spent (the upstream itself said so).
    fn exhaust_today(&self);

    /// The budget's limits and what is left of today's, for the API and the
    /// dashboard.
    fn snapshot(&self) -> QuotaSnapshot;
}

/// An upstream budget's limits and state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QuotaSnapshot {
    /// Calls a second, if limited.
    pub per_second: Option<u32>,
    /// Calls a day, if limited.
    pub per_day: Option<u64>,
    /// Calls left today (with a daily limit).
    pub remaining: Option<u64>,
    /// When the current day began, Unix milliseconds (with a daily limit).
    pub day_started_at_ms: Option<i64>,
    /// When the daily budget resets, Unix milliseconds (with a daily limit).
    pub resets_at_ms: Option<i64>,
}

impl QuotaSnapshot {
    /// Calls spent today (with a daily limit).
    pub fn used(&self) -> Option<u64> {
        Some(self.per_day?.saturating_sub(self.remaining?))
    }

    /// When today's budget runs out at the average rate of today so far, Unix
    /// milliseconds: `None` without a daily limit or before any call; a value
    /// past [`Self::resets_at_ms`] means it lasts until the reset.
    pub fn projected_exhaustion_ms(&self, now_ms: i64) -> Option<i64> {
        let used = self.used()?;
        let remaining = self.remaining?;
        if remaining == 0 {
            return Some(now_ms);
        }
        let elapsed = (now_ms - self.day_started_at_ms?).max(1) as f64;
        if used == 0 {
            return None;
        }
        let rate = used as f64 / elapsed;
        Some(now_ms + (remaining as f64 / rate) as i64)
    }
}

/// A quota kept in this process.
pub struct LocalQuota {
    per_second: Option<(u32, DefaultDirectRateLimiter)>,
    per_day: Option<u64>,
    tz: Tz,
    clock: Arc<dyn Clock>,
    day: Mutex<(NaiveDate, u64)>,
}

impl fmt::Debug for LocalQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQuota")
            .field("per_second", &self.per_second.as_ref().map(|p| p.0))
            .field("per_day", &self.per_day)
            .field("tz", &self.tz)
            .finish()
    }
}

impl LocalQuota {
    /// A budget of `per_second` calls a second (burst of the same size) and
    /// `per_day` calls a day, the day ending at midnight in `tz`.
    pub fn new(
        per_second: Option<NonZeroU32>,
        per_day: Option<u64>,
        tz: Tz,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let today = local_date(&tz, clock.now_millis());
        Self {
            per_second: per_second.map(|n| (n.get(), RateLimiter::direct(Gcra::per_second(n)))),
            per_day,
            tz,
            clock,
            day: Mutex::new((today, 0)),
        }
    }

    fn midnight_ms(&self, date: NaiveDate, fallback: i64) -> i64 {
        date.and_hms_opt(0, 0, 0)
            .and_then(|m| self.tz.from_local_datetime(&m).earliest())
            .map_or(fallback, |m| m.timestamp_millis())
    }

    /// The limits and today's state.
    fn snapshot_with(&self, remaining: Option<u64>) -> QuotaSnapshot {
        let now = self.clock.now_millis();
        let daily = self.per_day.is_some();
        let today = local_date(&self.tz, now);
        QuotaSnapshot {
            per_second: self.per_second.as_ref().map(|p| p.0),
            per_day: self.per_day,
            remaining: remaining.filter(|_| daily),
            day_started_at_ms: daily.then(|| self.midnight_ms(today, now)),
            resets_at_ms: daily.then(|| now + self.until_reset(now).as_millis() as i64),
        }
    }

    fn until_reset(&self, now: i64) -> Duration {
        let today = local_date(&self.tz, now);
        let next = today.succ_opt().unwrap_or(today);
        // A zone whose midnight falls in a DST gap: the day starts an hour later.
        let midnight = self.midnight_ms(next, now + 3_600_000);
        Duration::from_millis((midnight - now).max(1_000) as u64)
    }

    fn check_daily(&self, take: bool) -> Result<(), QuotaExceeded> {
        let Some(limit) = self.per_day else {
            return Ok(());
        };
        let now = self.clock.now_millis();
        let today = local_date(&self.tz, now);
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        if day.0 != today {
            *day = (today, 0);
        }
        if day.1 >= limit {
            return Err(QuotaExceeded::Daily {
                limit,
                retry_after: self.until_reset(now),
            });
        }
        if take {
            day.1 += 1;
        }
        Ok(())
    }
}

fn local_date(tz: &Tz, millis: i64) -> NaiveDate {
    let utc: DateTime<Utc> = DateTime::from_timestamp_millis(millis).unwrap_or_default();
    let local = utc.with_timezone(tz);
    NaiveDate::from_ymd_opt(local.year(), local.month(), local.day()).unwrap_or_default()
}

#[async_trait]
impl Quota for LocalQuota {
    async fn acquire(&self, max_wait: Duration) -> Result<(), QuotaExceeded> {
        self.check_daily(false)?;
        if let Some((per_second, limiter)) = &self.per_second {
            let deadline = tokio::time::Instant::now() + max_wait;
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        if tokio::time::Instant::now() + wait > deadline {
                            return Err(QuotaExceeded::PerSecond {
                                per_second: *per_second,
                                retry_after: wait.max(Duration::from_secs(1)),
                            });
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        self.check_daily(true)
    }

    fn remaining_today(&self) -> Option<u64> {
        let limit = self.per_day?;
        let today = local_date(&self.tz, self.clock.now_millis());
        let day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        if day.0 != today {
            return Some(limit);
        }
        Some(limit.saturating_sub(day.1))
    }

    fn exhaust_today(&self) {
        if let Some(limit) = self.per_day {
            let today = local_date(&self.tz, self.clock.now_millis());
            let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
            *day = (today, limit);
        }
    }

    fn snapshot(&self) -> QuotaSnapshot {
        self.snapshot_with(self.remaining_today())
    }
}

/// GCRA per-second limit and daily counter in one atomic step.
///
/// KEYS[1] theoretical arrival time (ms), KEYS[2] today's counter.
/// ARGV: emission interval ms (0 = no rate limit), burst, max wait ms,
/// daily limit (-1 = none), counter TTL ms.
/// Returns {status, value, used}: status 0 = go after `value` ms, 1 = daily quota
/// spent, 2 = no slot within the wait (`value` = ms until one frees).
const SHARED_QUOTA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[4])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if limit >= 0 and used >= limit then return {1, 0, used} end
local wait = 0
local interval = tonumber(ARGV[1])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  wait = tat - interval * (tonumber(ARGV[2]) - 1) - now
  if wait < 0 then wait = 0 end
  if wait > tonumber(ARGV[3]) then return {2, wait, used} end
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
end
if limit >= 0 then
  used = redis.call('INCR', KEYS[2])
  if used == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
end
return {0, wait, used}
";

/// An upstream's budget shared by every node through Redis.
///
/// The per-second rate is a GCRA kept in Redis and the daily quota a counter per
/// local date, both updated by one Lua script, so that concurrent nodes never
/// overspend. Redis's own clock paces the rate, so node clocks need not agree.
/// While Redis does not answer, each node falls back to its own [`LocalQuota`]
/// (the outage is logged once by [`crate::Backend`]).
pub struct RedisQuota {
    redis: Arc<crate::Redis>,
    name: String,
    local: LocalQuota,
    script: redis::Script,
    /// Calls left today as last seen in Redis; -1 before the first answer.
    remaining: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuota")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish()
    }
}

impl RedisQuota {
    /// The budget of upstream `name`, with the same limits as `local`, which is
    /// also the fallback while Redis is down.
    pub fn new(redis: Arc<crate::Redis>, name: &str, local: LocalQuota) -> Self {
        Self {
            redis,
            name: name.to_owned(),
            local,
            script: redis::Script::new(SHARED_QUOTA_LUA),
            remaining: std::sync::atomic::AtomicI64::new(-1),
        }
    }

    /// Today's counter key; both keys share a hash tag, so they sit in one cluster slot.
    fn keys(&self, now: i64) -> (String, String) {
        let date = local_date(&self.local.tz, now);
        (
            self.redis.key("q", &format!("{{{}}}:rate", self.name)),
            self.redis
                .key("q", &format!("{{{}}}:day:{date}", self.name)),
        )
    }
}

#[async_trait]
impl Quota for RedisQuota {
    async fn acquire(&self, max_wait: Duration) -> Result<(), QuotaExceeded> {
        let per_second = self.local.per_second.as_ref().map(|p| p.0);
        if per_second.is_none() && self.local.per_day.is_none() {
            return Ok(());
        }
        let now = self.local.clock.now_millis();
        let (rate_key, day_key) = self.keys(now);
        let interval = per_second.map_or(0, |n| (1000 / u64::from(n.max(1))).max(1));
        let limit = self.local.per_day.map_or(-1, |l| l as i64);
        let ttl = self.local.until_reset(now).as_millis() as u64 + 3_600_000;
        let mut inv = self.script.key(&rate_key);
        inv.key(&day_key)
            .arg(interval)
            .arg(per_second.unwrap_or(1))
            .arg(max_wait.as_millis() as u64)
            .arg(limit)
            .arg(ttl);
        match self.redis.eval::<(i64, i64, i64)>("quota", inv).await {
            Ok((0, wait, used)) => {
                if limit >= 0 {
                    self.remaining
                        .store((limit - used).max(0), std::sync::atomic::Ordering::Relaxed);
                }
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                Ok(())
            }
            Ok((1, _, _)) => {
                self.remaining
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                Err(QuotaExceeded::Daily {
                    limit: limit.max(0) as u64,
                    retry_after: self.local.until_reset(now),
                })
            }
            Ok((_, wait, _)) => Err(QuotaExceeded::PerSecond {
                per_second: per_second.unwrap_or(0),
                retry_after: Duration::from_millis(wait.max(0) as u64).max(Duration::from_secs(1)),
            }),
            Err(_) => self.local.acquire(max_wait).await,
        }
    }

    fn remaining_today(&self) -> Option<u64> {
        self.local.per_day?;
        match self.remaining.load(std::sync::atomic::Ordering::Relaxed) {
            r if r >= 0 && self.redis.health().degraded().is_none() => Some(r as u64),
            _ => self.local.remaining_today(),
        }
    }

    fn exhaust_today(&self) {
        self.local.exhaust_today();
        let Some(limit) = self.local.per_day else {
            return;
        };
        self.remaining
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let now = self.local.clock.now_millis();
        let (_, day_key) = self.keys(now);
        let ttl = self.local.until_reset(now).as_millis() as u64 + 3_600_000;
        let redis = self.redis.clone();
        tokio::spawn(async move {
            let cmd = redis::cmd("SET")
                .arg(day_key)
                .arg(limit)
                .arg("PX")
                .arg(ttl)
                .to_owned();
            let _ = redis.query::<()>("quota", &cmd).await;
        });
    }

    fn snapshot(&self) -> QuotaSnapshot {
        self.local.snapshot_with(self.remaining_today())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    /// A budget of `n` calls a second on the system clock, no daily quota.
    fn per_second(n: u32) -> LocalQuota {
        LocalQuota::new(
            NonZeroU32::new(n),
            None,
            chrono_tz::UTC,
            Arc::new(crate::SystemClock),
        )
    }

    // 2026-11-25T14:59:00Z = 23:59 in Seoul.
    const BEFORE_KST_MIDNIGHT: i64 = 1_795_705_140_000;

    #[tokio::test]
    async fn daily_quota_resets_at_midnight_in_its_zone() {
        let clock = ManualClock::new(BEFORE_KST_MIDNIGHT);
        let q = LocalQuota::new(
            None,
            Some(3),
            chrono_tz::Asia::Seoul,
            Arc::new(clock.clone()),
        );
        for _ in 0..3 {
            q.acquire(Duration::ZERO).await.unwrap();
        }
        assert_eq!(q.remaining_today(), Some(0));
        let err = q.acquire(Duration::ZERO).await.unwrap_err();
        assert_eq!(
            err,
            QuotaExceeded::Daily {
                limit: 3,
                retry_after: Duration::from_secs(60)
            }
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(q.remaining_today(), Some(3));
        q.acquire(Duration::ZERO).await.unwrap();
        assert_eq!(q.remaining_today(), Some(2));
    }

    #[tokio::test]
    async fn utc_day_differs_from_kst_day() {
        let clock = ManualClock::new(BEFORE_KST_MIDNIGHT);
        let q = LocalQuota::new(None, Some(1), chrono_tz::UTC, Arc::new(clock.clone()));
        q.acquire(Duration::ZERO).await.unwrap();
        clock.advance(Duration::from_secs(120)); // past KST midnight, not UTC's
        assert!(q.acquire(Duration::ZERO).await.is_err());
    }

    #[tokio::test]
    async fn per_second_refuses_beyond_the_wait_bound() {
        let q = per_second(5);
        for _ in 0..5 {
            q.acquire(Duration::ZERO).await.unwrap();
        }
        let err = q.acquire(Duration::ZERO).await.unwrap_err();
        assert!(matches!(
            err,
            QuotaExceeded::PerSecond { per_second: 5, .. }
        ));
        // Waiting is allowed: a slot frees within 200 ms at 5/s.
        q.acquire(Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn one_per_second_means_one() {
        let q = per_second(1);
        q.acquire(Duration::ZERO).await.unwrap();
        let r = q.acquire(Duration::from_millis(300)).await;
        assert!(r.is_err(), "{r:?}");
    }

    #[tokio::test]
    async fn a_snapshot_shows_the_day_and_projects_exhaustion() {
        let clock = Arc::new(crate::ManualClock::new(1_700_000_000_000));
        let q = LocalQuota::new(None, Some(100), chrono_tz::UTC, clock.clone());
        let s = q.snapshot();
        assert_eq!(
            (s.per_day, s.remaining, s.used()),
            (Some(100), Some(100), Some(0))
        );
        let start = s.day_started_at_ms.unwrap();
        assert_eq!(s.resets_at_ms.unwrap() - start, 86_400_000);
        assert_eq!(s.projected_exhaustion_ms(clock.now_millis()), None);
        // 10 calls in the first hour: 90 left last 9 more hours.
        clock.set(start + 3_600_000);
        for _ in 0..10 {
            q.acquire(Duration::ZERO).await.unwrap();
        }
        let s = q.snapshot();
        assert_eq!((s.remaining, s.used()), (Some(90), Some(10)));
        assert_eq!(
            s.projected_exhaustion_ms(start + 3_600_000),
            Some(start + 10 * 3_600_000)
        );
        let none = LocalQuota::new(None, None, chrono_tz::UTC, clock);
        assert_eq!(none.snapshot(), QuotaSnapshot::default());
    }

    #[tokio::test]
    async fn exhaust_today_spends_the_budget() {
        let q = LocalQuota::new(None, Some(10), chrono_tz::UTC, Arc::new(crate::SystemClock));
        q.exhaust_today();
        assert_eq!(q.remaining_today(), Some(0));
    }
}
