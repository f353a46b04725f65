//! The series limits of the partitioner: active series per tenant and new series per tenant per
//! hour (`max_active_series`, `max_new_series_per_hour`, overrides in `tenant_series_limits`).
//!
//! Each request's distinct series go to the series registry
//! ([`thermo_store::series_registry`]), which admits the known ones and the new ones that fit in
//! one atomic step; in Redis when `redis_url` is set, so that every replica counts the same
//! series. The request's refused series are left out of what is produced and the answer is 429
//! naming the limit ([`crate::IngestError::SeriesLimited`]); its other series are accepted.
//!
//! A series the registry confirmed is remembered here for [`REFRESH_SECS`] (at most
//! [`KNOWN_MAX`] of them), and skips the registry until then: a tenant's steady traffic costs the
//! registry one call per series every few minutes, not one per series-minute. Its last-seen time
//! in the registry lags by up to that much, against a window of hours.
//!
//! When the registry cannot be reached, series are accepted unchecked (counted in
//! `errors_total{kind="series_registry"}`): the limits protect the system, and the log and the
//! aggregators take the data as before; nothing is lost.

use crate::config::PartitionerConfig;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::series_registry::{
    hour_of, AnySeriesRegistry, SeriesLimit, SeriesLimits, SeriesRegistry,
};

/// How long a confirmed series skips the registry.
pub const REFRESH_SECS: i64 = 300;
/// Confirmed series remembered at most (about 100 bytes each); beyond, the memory is cleared.
pub const KNOWN_MAX: usize = 1 << 20;

/// New series of one request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: SeriesLimit,
    /// The limit's value for the tenant.
    pub max: u64,
    /// The refused series (metric keys).
    pub series: BTreeSet<String>,
    /// Seconds until the limit may have room: the next hour for `max_new_series_per_hour`;
    /// `None` for `max_active_series` (room comes when series age out).
    pub retry_after_secs: Option<u64>,
}

/// The partitioner's side of the series limits.
pub struct SeriesGate {
    registry: AnySeriesRegistry,
    default: SeriesLimits,
    overrides: BTreeMap<String, SeriesLimits>,
    window_secs: i64,
    /// Series → when the registry last confirmed it.
    known: Arc<Mutex<FxHashMap<String, i64>>>,
    active: IntGaugeVec,
    new_this_hour: IntGaugeVec,
    refused: IntCounterVec,
    unchecked: IntCounter,
}

impl SeriesGate {
    /// The gate of `cfg`'s limits over `registry`, or `None` when no series limit is set.
    pub fn new(
        cfg: &PartitionerConfig,
        registry: AnySeriesRegistry,
        metrics: &SelfMetrics,
    ) -> Option<Self> {
        if !cfg.limits_series() {
            return None;
        }
        let default = SeriesLimits {
            max_active: cfg.max_active_series,
            max_new_per_hour: cfg.max_new_series_per_hour,
        };
        let overrides = cfg
            .tenant_series_limits
            .iter()
            .map(|(t, o)| {
                let limits = SeriesLimits {
                    max_active: o.max_active_series.unwrap_or(default.max_active),
                    max_new_per_hour: o
                        .max_new_series_per_hour
                        .unwrap_or(default.max_new_per_hour),
                };
                (t.clone(), limits)
            })
            .collect();
        Some(Self {
            registry,
            default,
            overrides,
            window_secs: cfg.active_series_window_hours.max(1) * 3600,
            known: Arc::default(),
            active: metrics.gauge_vec(
                "tenant_active_series",
                "Active series of each tenant, as of its last request that checked a new or stale series",
                &["tenant"],
            ),
            new_this_hour: metrics.gauge_vec(
                "tenant_new_series_this_hour",
                "New series each tenant was admitted this clock hour, as of its last checked request",
                &["tenant"],
            ),
            refused: metrics.counter_vec(
                "series_refused_total",
                "New series refused by a series limit, by tenant and limit",
                &["tenant", "limit"],
            ),
            unchecked: metrics.errors.with_label_values(&["series_registry"]),
        })
    }

    /// The series limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> SeriesLimits {
        self.overrides.get(tenant).copied().unwrap_or(self.default)
    }

    /// Checks the `unconfirmed` series (metric keys, from [`Self::unconfirmed`]) of one request
    /// of `tenant` at `now_s`: the refusal of those over a limit, if any.
    pub async fn check(
        &self,
        tenant: &str,
        unconfirmed: Vec<String>,
        now_s: i64,
    ) -> Option<Refusal> {
        if unconfirmed.is_empty() {
            return None;
        }
        let limits = self.limits(tenant);
        let admitted = match self
            .registry
            .admit(tenant, &unconfirmed, limits, now_s, self.window_secs)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.unchecked.inc();
                tracing::warn!(
                    tenant,
                    "series registry unavailable, series accepted unchecked: {e}"
                );
                return None;
            }
        };
        self.active
            .with_label_values(&[tenant])
            .set(i64::try_from(admitted.active).unwrap_or(i64::MAX));
        self.new_this_hour
            .with_label_values(&[tenant])
            .set(i64::try_from(admitted.new_this_hour).unwrap_or(i64::MAX));
        let mut refused = BTreeSet::new();
        let mut unconfirmed: Vec<Option<String>> = unconfirmed.into_iter().map(Some).collect();
        for i in admitted.refused {
            if let Some(s) = unconfirmed.get_mut(i).and_then(Option::take) {
                refused.insert(s);
            }
        }
        self.confirm(unconfirmed.into_iter().flatten().collect(), now_s)
            .await;
        let limit = admitted.limit.filter(|_| !refused.is_empty())?;
        self.refused
            .with_label_values(&[tenant, limit.name()])
            .inc_by(refused.len() as u64);
        let retry_after_secs = match limit {
            SeriesLimit::MaxNewSeriesPerHour => Some((hour_of(now_s) + 3600 - now_s) as u64),
            SeriesLimit::MaxActiveSeries => None,
        };
        Some(Refusal {
            limit,
            max: limit.value(limits),
            series: refused,
            retry_after_secs,
        })
    }

    /// Those of a request's distinct `series` not confirmed by the registry within
    /// [`REFRESH_SECS`] before `now_s`: what [`Self::check`] takes. About 50 ns a series, so
    /// the caller runs it where it decodes the request (a large one on a blocking thread).
    pub fn unconfirmed<'a>(
        &self,
        series: impl Iterator<Item = &'a str>,
        now_s: i64,
    ) -> Vec<String> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        series
            .filter(|s| !matches!(known.get(*s), Some(at) if now_s - at < REFRESH_SECS))
            .map(str::to_string)
            .collect()
    }

    /// Remembers `series` as confirmed at `now_s` (many on a blocking thread).
    async fn confirm(&self, series: Vec<String>, now_s: i64) {
        let small = series.len() <= 1024;
        let known = self.known.clone();
        let insert = move || {
            let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
            for s in series {
                if known.len() >= KNOWN_MAX {
                    known.clear();
                }
                known.insert(s, now_s);
            }
        };
        if small {
            insert();
        } else {
            let _ = tokio::task::spawn_blocking(insert).await;
        }
    }
}
