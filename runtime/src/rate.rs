//! Per-tenant rate limits: a token bucket per tenant (GCRA, the `governor` crate), in tokens per
//! second: series-minutes on the partitioner (`rate_limit_per_sec`), queries on the read service
//! (`query_rate_per_sec`).
//!
//! A tenant's bucket refills at its rate (the default, or the tenant's override) and holds
//! `burst_secs` seconds of it. A request takes as many tokens as it carries; when they are not
//! there the caller refuses it with 429 and `Retry-After` ([`Verdict::Wait`]). The buckets live in
//! this process's memory: each replica enforces the rate on what it receives.

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Unix milliseconds now (`thermo_core::window::now_ms` in a service); injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// thermo's clock (unix milliseconds, injectable in tests) as governor's.
#[derive(Clone)]
struct MsClock(Clock);

impl GovernorClock for MsClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(((self.0)().max(0) as u64).saturating_mul(1_000_000))
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, MsClock, NoOpMiddleware<Nanos>>;

/// What a tenant's bucket says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Not now: the tokens are there after this long.
    Wait(Duration),
    /// Never: more tokens than the bucket holds.
    TooBig {
        burst: u32,
    },
}

/// The buckets of every tenant seen, made on first use.
pub struct RateLimits {
    default_rate: u32,
    overrides: BTreeMap<String, u32>,
    burst_secs: u32,
    clock: MsClock,
    buckets: Mutex<HashMap<String, Option<Arc<Bucket>>>>,
}

impl RateLimits {
    /// `default_rate`: tokens per second of a tenant without an override (0: no limit).
    pub fn new(
        default_rate: u32,
        overrides: BTreeMap<String, u32>,
        burst_secs: u32,
        clock: Clock,
    ) -> Self {
        Self {
            default_rate,
            overrides,
            burst_secs: burst_secs.max(1),
            clock: MsClock(clock),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate of `tenant` (0: no limit).
    pub fn rate(&self, tenant: &str) -> u32 {
        self.overrides
            .get(tenant)
            .copied()
            .unwrap_or(self.default_rate)
    }

    /// The size of `tenant`'s bucket, in tokens.
    fn burst(&self, tenant: &str) -> u32 {
        self.rate(tenant).saturating_mul(self.burst_secs)
    }

    fn bucket(&self, tenant: &str) -> Option<Arc<Bucket>> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets
            .entry(tenant.to_string())
            .or_insert_with(|| {
                let rate = NonZeroU32::new(self.rate(tenant))?;
                let burst = NonZeroU32::new(self.burst(tenant))?;
                let quota = Quota::per_second(rate).allow_burst(burst);
                Some(Arc::new(RateLimiter::direct_with_clock(
                    quota,
                    self.clock.clone(),
                )))
            })
            .clone()
    }

    /// Takes `n` tokens from `tenant`'s bucket if they are there.
    pub fn check(&self, tenant: &str, n: usize) -> Verdict {
        let Some(bucket) = self.bucket(tenant) else {
            return Verdict::Allowed;
        };
        let burst = self.burst(tenant);
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 {
                Verdict::Allowed
            } else {
                Verdict::TooBig { burst }
            };
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Verdict::Allowed,
            Ok(Err(not_until)) => Verdict::Wait(not_until.wait_time_from(self.clock.now())),
            Err(_) => Verdict::TooBig { burst },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn a_bucket_refills_at_the_rate_and_holds_the_burst() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let t = now.clone();
        let limits = RateLimits::new(
            10,
            [("big".to_string(), 100), ("free".to_string(), 0)].into(),
            6,
            Arc::new(move || t.load(Ordering::SeqCst)),
        );
        // 10/s with 6 s of burst: 60 at once, then nothing until time passes.
        assert_eq!(limits.check("acme", 60), Verdict::Allowed);
        assert_eq!(
            limits.check("acme", 1),
            Verdict::Wait(Duration::from_millis(100))
        );
        now.fetch_add(1_000, Ordering::SeqCst);
        assert_eq!(limits.check("acme", 10), Verdict::Allowed);
        assert_eq!(limits.check("acme", 61), Verdict::TooBig { burst: 60 });
        // Tenants have buckets of their own; an override of 0 is no limit.
        assert_eq!(limits.check("big", 600), Verdict::Allowed);
        assert_eq!(limits.check("other", 60), Verdict::Allowed);
        assert_eq!(limits.check("free", 1_000_000), Verdict::Allowed);
        assert_eq!(limits.check("acme", 0), Verdict::Allowed);
    }
}
