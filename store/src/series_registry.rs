//! The series registry: which series each tenant has written lately, for the partitioner's
//! cardinality limits (active series per tenant, new series per tenant per hour).
//!
//! A tenant's series is *active* while it was last seen less than `window_secs` ago (the
//! partitioner's `active_series_window_hours`, the hot retention by default); a series is *new*
//! when it is not active. [`SeriesRegistry::admit`] takes the distinct series of one request and,
//! in one atomic step, refreshes the known ones and admits new ones while the tenant's limits
//! allow: a known series is never refused, a new one is refused when the tenant already has
//! `max_active` active series or has admitted `max_new_per_hour` new series in this clock hour
//! (UTC). Refused series are not recorded, so the same series is refused again until room frees
//! up: when active series age out of the window, or the hour turns.
//!
//! Backends: this process's memory ([`MemSeriesRegistry`]: standalone, or a single partitioner)
//! and Redis ([`crate::redis_series::RedisSeriesRegistry`]: shared by every partitioner replica,
//! each request's check and update one script, so replicas never admit more than the limit
//! between them). [`crate::series_suite`] is the conformance suite both pass.

use crate::StoreError;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A tenant's series limits; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeriesLimits {
    /// Active series at most.
    pub max_active: u64,
    /// New series per clock hour at most.
    pub max_new_per_hour: u64,
}

/// The limit that refused a new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesLimit {
    /// The tenant had `max_active` active series.
    MaxActiveSeries,
    /// The tenant had admitted `max_new_per_hour` new series this hour.
    MaxNewSeriesPerHour,
}

impl SeriesLimit {
    /// The name of the limit's setting (`max_active_series`, `max_new_series_per_hour`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxActiveSeries => "max_active_series",
            Self::MaxNewSeriesPerHour => "max_new_series_per_hour",
        }
    }

    /// The limit's value in `limits`.
    pub fn value(self, limits: SeriesLimits) -> u64 {
        match self {
            Self::MaxActiveSeries => limits.max_active,
            Self::MaxNewSeriesPerHour => limits.max_new_per_hour,
        }
    }
}

/// What [`SeriesRegistry::admit`] decided for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admitted {
    /// Indices into the series given of those refused, ascending.
    pub refused: Vec<usize>,
    /// The limit that refused the first refused series.
    pub limit: Option<SeriesLimit>,
    /// The tenant's active series afterwards.
    pub active: u64,
    /// New series the tenant was admitted this hour, afterwards.
    pub new_this_hour: u64,
}

/// Which limit, if any, refuses one more new series.
pub fn limit_reached(limits: SeriesLimits, active: u64, new_this_hour: u64) -> Option<SeriesLimit> {
    if limits.max_active > 0 && active >= limits.max_active {
        Some(SeriesLimit::MaxActiveSeries)
    } else if limits.max_new_per_hour > 0 && new_this_hour >= limits.max_new_per_hour {
        Some(SeriesLimit::MaxNewSeriesPerHour)
    } else {
        None
    }
}

/// The clock hour (UTC) of `now_s`, as its start in unix seconds.
pub fn hour_of(now_s: i64) -> i64 {
    now_s - now_s.rem_euclid(3600)
}

/// A registry of each tenant's recent series.
pub trait SeriesRegistry: Send + Sync + 'static {
    /// Records the distinct `series` of one request of `tenant` as seen at `now_s`: known ones
    /// (seen within `window_secs` before `now_s`) are refreshed, new ones admitted in order while
    /// `limits` allow, the rest refused.
    fn admit(
        &self,
        tenant: &str,
        series: &[String],
        limits: SeriesLimits,
        now_s: i64,
        window_secs: i64,
    ) -> impl Future<Output = Result<Admitted, StoreError>> + Send;
}

/// One tenant's series in memory.
#[derive(Default)]
struct Tenant {
    /// Series → when it was last seen.
    seen: HashMap<String, i64>,
    /// (last seen, series), to age series out in order.
    by_time: BTreeSet<(i64, String)>,
    /// The hour `new` counts in, and its count.
    hour: i64,
    new: u64,
}

impl Tenant {
    /// Forgets series last seen before `cutoff`.
    fn expire(&mut self, cutoff: i64) {
        while let Some((t, s)) = self.by_time.first().cloned() {
            if t >= cutoff {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&s);
        }
    }

    fn touch(&mut self, series: &str, now_s: i64) {
        if let Some(old) = self.seen.insert(series.to_string(), now_s) {
            self.by_time.remove(&(old, series.to_string()));
        }
        self.by_time.insert((now_s, series.to_string()));
    }
}

/// The registry in this process's memory: exact, not shared with other processes.
#[derive(Default, Clone)]
pub struct MemSeriesRegistry {
    tenants: Arc<Mutex<HashMap<String, Tenant>>>,
}

impl MemSeriesRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn admit_now(
        &self,
        tenant: &str,
        series: &[String],
        limits: SeriesLimits,
        now_s: i64,
        window_secs: i64,
    ) -> Admitted {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let t = tenants.entry(tenant.to_string()).or_default();
        t.expire(now_s - window_secs);
        let hour = hour_of(now_s);
        if t.hour != hour {
            t.hour = hour;
            t.new = 0;
        }
        let mut out = Admitted::default();
        for (i, s) in series.iter().enumerate() {
            if !t.seen.contains_key(s.as_str()) {
                if let Some(limit) = limit_reached(limits, t.seen.len() as u64, t.new) {
                    out.limit.get_or_insert(limit);
                    out.refused.push(i);
                    continue;
                }
                t.new += 1;
            }
            t.touch(s, now_s);
        }
        out.active = t.seen.len() as u64;
        out.new_this_hour = t.new;
        out
    }
}

impl SeriesRegistry for MemSeriesRegistry {
    async fn admit(
        &self,
        tenant: &str,
        series: &[String],
        limits: SeriesLimits,
        now_s: i64,
        window_secs: i64,
    ) -> Result<Admitted, StoreError> {
        // About a microsecond per series: a large request is handled on a blocking thread.
        if series.len() <= 256 {
            return Ok(self.admit_now(tenant, series, limits, now_s, window_secs));
        }
        let (me, tenant, series) = (self.clone(), tenant.to_string(), series.to_vec());
        crate::off_thread("series registry", move || {
            Ok(me.admit_now(&tenant, &series, limits, now_s, window_secs))
        })
        .await
    }
}

/// Either backend, chosen by configuration.
pub enum AnySeriesRegistry {
    Memory(MemSeriesRegistry),
    Redis(crate::redis_series::RedisSeriesRegistry),
}

impl SeriesRegistry for AnySeriesRegistry {
    async fn admit(
        &self,
        tenant: &str,
        series: &[String],
        limits: SeriesLimits,
        now_s: i64,
        window_secs: i64,
    ) -> Result<Admitted, StoreError> {
        match self {
            Self::Memory(m) => m.admit(tenant, series, limits, now_s, window_secs).await,
            Self::Redis(r) => r.admit(tenant, series, limits, now_s, window_secs).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_passes_the_series_registry_suite() {
        crate::series_suite::run(&MemSeriesRegistry::new(), "suite").await;
    }
}
