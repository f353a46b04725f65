//! Roll-ups from the hot store into cold storage, and the hand-over that trims Redis.
//!
//! It works on any [`Catalog`] (Redis's, or the embedded store's in standalone mode) and any
//! [`ColdStore`] (S3, or a local directory). One compactor runs at a time (the catalog's lease).
//! Every cycle:
//! 1. **1m**: each pending hour that ended at least `cold_lag_secs` ago is written as one Parquet
//!    object per tenant (`res=1m`, one hour of minutes). If the hour already has an object (late
//!    data), the object's rows absorb the hot cells by contribution, so nothing is counted twice
//!    however often this runs. The hour leaves `pending` only if no write came in meanwhile, and its
//!    day is marked dirty at 5m.
//! 2. **5m / 1h**: each dirty day (week) with no pending hour is rebuilt from its finer objects and
//!    written whole; a rebuilt day marks its week dirty at 1h.
//! 3. **trim**: hours rolled up and older than the hot retention are deleted from Redis — only
//!    after S3 acknowledged their object, and not if new cells arrived since.
//! 4. **retention**: objects older than their resolution's retention are deleted.
//!
//! A failed S3 call aborts the cycle: what was not acknowledged is not marked (its hour stays
//! pending, its chunk dirty) and nothing is trimmed; the next cycle retries.

use std::collections::BTreeMap;
use std::time::Duration;
use thermo_core::aggregate::Aggregate;
use thermo_core::codec::{Absorbed, HotCell};
use thermo_core::key::MetricKey;
use thermo_core::window::now_s;
use thermo_core::window::{chunks_in, Resolution};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::catalog::{object_key, Catalog};
use thermo_store::cold::ColdStore;
use thermo_store::cold_format::{self, ColdRow};
use thermo_store::hot::HotStore;
use thermo_store::{off_thread, StoreError};

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorSettings {
    pub prefix: String,
    /// Seconds after a window's chunk ends before it is rolled up.
    pub lag_secs: i64,
    pub interval: Duration,
    pub hot_retention_secs: i64,
    /// Retention of 1m, 5m and 1h objects, seconds.
    pub retention_secs: [i64; 3],
}

impl From<&crate::AggregatorConfig> for CompactorSettings {
    fn from(cfg: &crate::AggregatorConfig) -> Self {
        Self {
            prefix: cfg.cold_prefix.clone(),
            lag_secs: cfg.cold_lag_secs,
            interval: Duration::from_secs(cfg.cold_interval_secs.max(1)),
            hot_retention_secs: cfg.hot_retention_hours * 3600,
            retention_secs: [
                cfg.retention_1m_days * 86_400,
                cfg.retention_5m_days * 86_400,
                cfg.retention_1h_days * 86_400,
            ],
        }
    }
}

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub objects_written: u64,
    pub hours_rolled: u64,
    pub chunks_rebuilt: u64,
    pub hours_trimmed: u64,
    pub objects_deleted: u64,
}

pub struct Compactor<C, K> {
    cold: C,
    catalog: K,
    s: CompactorSettings,
    owner: String,
}

impl<C: ColdStore, K: Catalog> Compactor<C, K> {
    pub fn new(cold: C, catalog: K, s: CompactorSettings) -> Self {
        let owner = format!("{}-{}", std::process::id(), now_s());
        Self {
            cold,
            catalog,
            s,
            owner,
        }
    }

    /// Runs cycles until `shutdown` resolves.
    pub async fn run(
        self,
        metrics: SelfMetrics,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let written = metrics.counter("cold_objects_written_total", "cold objects written");
        let trimmed = metrics.counter(
            "hours_trimmed_total",
            "hours deleted from Redis after S3 held them",
        );
        let failures = metrics.counter(
            "cold_cycle_failures_total",
            "compactor cycles aborted by a storage error",
        );
        let cycles = metrics.counter(
            "cold_cycles_total",
            "compactor cycles completed (this process held the lease)",
        );
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.s.interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    // Let another aggregator take over at once.
                    let _ = self.catalog.release(&self.owner).await;
                    return;
                }
                _ = tick.tick() => {}
            }
            match self.catalog.lease(&self.owner, self.lease_ms()).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!("compactor lease: {e}");
                    continue;
                }
            }
            match self.cycle(now_s()).await {
                Ok(r) => {
                    written.inc_by(r.objects_written);
                    trimmed.inc_by(r.hours_trimmed);
                    // Last: a scrape that sees this cycle counted sees what it did.
                    cycles.inc();
                    if r != CycleReport::default() {
                        tracing::info!(?r, "compactor cycle");
                    }
                }
                Err(e) => {
                    failures.inc();
                    tracing::warn!("compactor cycle aborted, retrying next cycle: {e}");
                }
            }
        }
    }

    /// How long a lease lasts: several cycles, and never less than a slow S3 call.
    fn lease_ms(&self) -> u64 {
        (self.s.interval.as_millis() as u64)
            .saturating_mul(6)
            .max(60_000)
    }

    /// One cycle at time `now`.
    pub async fn cycle(&self, now: i64) -> Result<CycleReport, StoreError> {
        let mut r = CycleReport::default();
        self.roll_hours(now, &mut r).await?;
        self.rebuild(Resolution::FiveMinutes, now, &mut r).await?;
        self.rebuild(Resolution::OneHour, now, &mut r).await?;
        self.trim(now, &mut r).await?;
        self.expire(now, &mut r).await?;
        Ok(r)
    }

    async fn tenant_series(&self, tenant: &str, since: i64) -> Result<Vec<MetricKey>, StoreError> {
        let hot = self.catalog.hot();
        let mut out = Vec::new();
        for (name, _) in hot.metrics(tenant).await? {
            out.extend(hot.series(tenant, &name, since).await?);
        }
        Ok(out)
    }

    async fn read_object(&self, key: &str) -> Result<Vec<ColdRow>, StoreError> {
        match self.cold.get(key).await? {
            Some(bytes) => {
                off_thread("decoding a cold object", move || cold_format::decode(bytes)).await
            }
            None => Ok(Vec::new()),
        }
    }

    async fn roll_hours(&self, now: i64, r: &mut CycleReport) -> Result<(), StoreError> {
        let pending = self
            .catalog
            .pending_hours(now - 3600 - self.s.lag_secs)
            .await?;
        if pending.is_empty() {
            return Ok(());
        }
        let tenants = self.catalog.tenants().await?;
        // Which hours already have objects (late data): read once, only this loop adds to it.
        let rolled = self.catalog.cold_chunks(Resolution::OneMinute).await?;
        for (hour, version) in pending {
            // A catch-up can take long: keep the lease while working, stop if it was lost.
            if !self.catalog.lease(&self.owner, self.lease_ms()).await? {
                return Ok(());
            }
            let has_object = rolled.contains_key(&hour);
            for tenant in &tenants {
                let series = self.tenant_series(tenant, hour).await?;
                let cells = self
                    .catalog
                    .hot()
                    .read_range(&series, hour, hour + 3600)
                    .await?;
                let mut rows: BTreeMap<(MetricKey, i64), HotCell> = BTreeMap::new();
                let key = object_key(&self.s.prefix, tenant, Resolution::OneMinute, hour);
                if has_object {
                    for row in self.read_object(&key).await? {
                        rows.insert((row.series, row.window_start), row.cell);
                    }
                }
                let mut touched = false;
                for (k, minutes) in series.iter().zip(cells) {
                    for (minute, cell) in minutes {
                        touched = true;
                        match rows.get_mut(&(k.clone(), minute)) {
                            None => {
                                rows.insert((k.clone(), minute), cell);
                            }
                            Some(row) => {
                                if let Ok(Absorbed::Conflict) | Err(_) = row.absorb(&cell) {
                                    tracing::warn!(series = %k, minute, "cold row and hot cell disagree; kept the larger");
                                }
                            }
                        }
                    }
                }
                if !touched {
                    continue;
                }
                let rows: Vec<ColdRow> = rows
                    .into_iter()
                    .map(|((series, window_start), cell)| ColdRow {
                        series,
                        window_start,
                        cell,
                    })
                    .collect();
                let body = off_thread("encoding a cold object", move || {
                    cold_format::encode(Resolution::OneMinute, rows)
                })
                .await?;
                self.cold.put(&key, body).await?;
                r.objects_written += 1;
            }
            self.catalog.mark_cold(Resolution::OneMinute, hour).await?;
            self.catalog
                .mark_dirty(
                    Resolution::FiveMinutes,
                    Resolution::FiveMinutes.chunk_start(hour),
                )
                .await?;
            if self.catalog.finish_hour(hour, &version).await? {
                r.hours_rolled += 1;
            }
        }
        Ok(())
    }

    async fn rebuild(
        &self,
        res: Resolution,
        now: i64,
        r: &mut CycleReport,
    ) -> Result<(), StoreError> {
        let Some(finer) = res.finer() else {
            return Ok(());
        };
        let len = res.chunk_seconds();
        let dirty = self.catalog.dirty(res).await?;
        if dirty.is_empty() {
            return Ok(());
        }
        let finer_dirty: Vec<i64> = self
            .catalog
            .dirty(finer)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let finer_chunks = self.catalog.cold_chunks(finer).await?;
        let own_chunks = self.catalog.cold_chunks(res).await?;
        let tenants = self.catalog.tenants().await?;
        for (chunk, seq) in dirty {
            if chunk + len + self.s.lag_secs > now
                || self.catalog.any_pending(chunk, chunk + len).await?
                || finer_dirty.iter().any(|c| *c >= chunk && *c < chunk + len)
            {
                continue;
            }
            for tenant in &tenants {
                let key = object_key(&self.s.prefix, tenant, res, chunk);
                let mut windows: BTreeMap<(MetricKey, i64), Aggregate> = BTreeMap::new();
                // Windows whose finer chunk has no object any more (its retention is shorter)
                // keep their state from the existing object: a rebuild never loses them.
                if own_chunks.contains_key(&chunk) {
                    for row in self.read_object(&key).await? {
                        if !finer_chunks.contains_key(&finer.chunk_start(row.window_start)) {
                            windows.insert((row.series, row.window_start), row.cell.agg);
                        }
                    }
                }
                for f in
                    chunks_in(finer, chunk, chunk + len).filter(|f| finer_chunks.contains_key(f))
                {
                    for row in self
                        .read_object(&object_key(&self.s.prefix, tenant, finer, f))
                        .await?
                    {
                        let w = res.start(row.window_start);
                        match windows.get_mut(&(row.series.clone(), w)) {
                            Some(a) => {
                                if let Err(e) = a.merge(&row.cell.agg) {
                                    tracing::warn!(series = %row.series, "roll-up skipped a window: {e}");
                                }
                            }
                            None => {
                                windows.insert((row.series, w), row.cell.agg);
                            }
                        }
                    }
                }
                if windows.is_empty() {
                    continue;
                }
                let rows = windows
                    .into_iter()
                    .map(|((series, window_start), agg)| ColdRow {
                        series,
                        window_start,
                        cell: HotCell {
                            contributors: Vec::new(),
                            agg,
                        },
                    })
                    .collect();
                let body = off_thread("encoding a cold object", move || {
                    cold_format::encode(res, rows)
                })
                .await?;
                self.cold.put(&key, body).await?;
                r.objects_written += 1;
            }
            self.catalog.mark_cold(res, chunk).await?;
            if let Some(coarser) = res.coarser() {
                self.catalog
                    .mark_dirty(coarser, coarser.chunk_start(chunk))
                    .await?;
            }
            self.catalog.clear_dirty(res, chunk, seq).await?;
            r.chunks_rebuilt += 1;
        }
        Ok(())
    }

    async fn trim(&self, now: i64, r: &mut CycleReport) -> Result<(), StoreError> {
        let until = now - self.s.hot_retention_secs - 3600;
        for hour in self.catalog.trimmable_hours(until).await? {
            if self.catalog.trim_hour(hour).await? {
                r.hours_trimmed += 1;
            }
        }
        Ok(())
    }

    async fn expire(&self, now: i64, r: &mut CycleReport) -> Result<(), StoreError> {
        let tenants = self.catalog.tenants().await?;
        for res in Resolution::ALL {
            let cutoff = now - self.s.retention_secs[res.index()];
            for (chunk, _) in self.catalog.cold_chunks(res).await? {
                if chunk + res.chunk_seconds() > cutoff {
                    continue;
                }
                for tenant in &tenants {
                    self.cold
                        .delete(&object_key(&self.s.prefix, tenant, res, chunk))
                        .await?;
                    r.objects_deleted += 1;
                }
                self.catalog.unmark_cold(res, chunk).await?;
            }
        }
        Ok(())
    }
}
