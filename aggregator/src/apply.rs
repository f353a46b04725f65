//! Applying log records to the hot store, exactly once per contribution.

use crate::config::AggregatorConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use thermo_core::aggregate::fnv1a;
use thermo_core::codec::{HotCell, Record};
use thermo_core::key::MetricKey;
use thermo_core::window::now_s;
use thermo_core::window::window_start;
use thermo_runtime::telemetry::{Readiness, SelfMetrics};
use thermo_store::hot::{HotStore, HotWrite, PartitionId};
use thermo_store::log::{partition_of, LogConsumer, LogRecord};
use thermo_store::StoreError;

/// A decoded record and when it was produced (unix ms), if known.
type Contribution = (Record, Option<i64>);

/// Which old minutes are still accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// No cold storage: minutes older than the hot retention are dropped (`beyond_retention`).
    HotOnly { retention_secs: i64 },
    /// Cold storage: a minute produced after its hour was rolled up, when the hour ended more than
    /// `grace_secs` ago, is dropped (`late`); one older than `max_age_secs` is dropped (`too_old`).
    Cold { grace_secs: i64, max_age_secs: i64 },
}

/// Tunables of the apply loop.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
    pub lateness: Lateness,
}

impl From<&AggregatorConfig> for Settings {
    fn from(c: &AggregatorConfig) -> Self {
        Self {
            batch_max_records: c.batch_max_records.max(1),
            batch_max_wait: Duration::from_millis(c.batch_max_wait_ms),
            lateness: if c.cold_enabled {
                Lateness::Cold {
                    grace_secs: c.late_grace_secs,
                    max_age_secs: c.retention_1m_days * 86_400,
                }
            } else {
                Lateness::HotOnly {
                    retention_secs: c.hot_retention_hours * 3600,
                }
            },
        }
    }
}

/// What one partition's apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Set when the hot store is behind the records read (it lost data, or the log's committed
    /// offset ran ahead of it): nothing was applied, and the partition must be re-read from this
    /// offset (`-1`: from the earliest retained record).
    pub rewind_to: Option<i64>,
    /// Records skipped because the hot store already had their offset.
    pub replayed: u64,
    /// Contributions skipped because their cell already held them.
    pub duplicates: u64,
    /// Records merged.
    pub merged: u64,
    /// Records refused, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Cells written.
    pub cells: u64,
}

/// Applies one partition's records (in offset order) to `hot`. Retries when fenced; returns the
/// store's error when it is unavailable (nothing was written then).
///
/// `allow_gap` accepts a first record beyond `stored offset + 1` (after one rewind found that the
/// log has no records in between, e.g. they left its retention); otherwise such a gap asks for a
/// rewind, so that a hot store that lost data is rebuilt from the log.
pub async fn apply_partition<H: HotStore>(
    hot: &H,
    partition: &PartitionId,
    partitions: u32,
    records: &[LogRecord],
    lateness: Lateness,
    now_s: i64,
    allow_gap: bool,
) -> Result<Applied, StoreError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(Applied::default());
    };
    loop {
        let mut out = Applied::default();
        let expected = hot.offset(partition).await?;
        if first.offset > expected + 1 && !allow_gap {
            out.rewind_to = Some(if expected < 0 { -1 } else { expected + 1 });
            return Ok(out);
        }
        // (series, minute) → contributions in offset order, with when they were produced.
        let mut groups: BTreeMap<(MetricKey, i64), Vec<Contribution>> = BTreeMap::new();
        for r in records {
            if r.offset <= expected {
                out.replayed += 1;
                continue;
            }
            let key = std::str::from_utf8(&r.key)
                .ok()
                .and_then(|k| MetricKey::parse(k).ok());
            let (Some(key), Ok(rec)) = (key, Record::decode(&r.value)) else {
                *out.dropped.entry("corrupt").or_insert(0) += 1;
                tracing::warn!(
                    partition = r.partition,
                    offset = r.offset,
                    "undecodable record skipped"
                );
                continue;
            };
            match lateness {
                Lateness::HotOnly { retention_secs } if rec.minute < now_s - retention_secs => {
                    *out.dropped.entry("beyond_retention").or_insert(0) += 1;
                    continue;
                }
                Lateness::Cold { max_age_secs, .. } if rec.minute < now_s - max_age_secs => {
                    *out.dropped.entry("too_old").or_insert(0) += 1;
                    continue;
                }
                _ => {}
            }
            groups
                .entry((key, rec.minute))
                .or_default()
                .push((rec, r.produced_ms));
        }
        if let Lateness::Cold { grace_secs, .. } = lateness {
            // Late: the hour ended more than the grace period ago, and the record was produced
            // after the hour was rolled up. A record produced before the roll-up (a backfill
            // still being applied when the compactor got to its hour) is not late.
            let hours: Vec<i64> = groups
                .keys()
                .map(|(_, m)| window_start(*m, 3600))
                .filter(|h| now_s - (h + 3600) > grace_secs)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let rolled: BTreeMap<i64, i64> = hours
                .iter()
                .copied()
                .zip(hot.rolled_up(&hours).await?)
                .filter_map(|(h, at)| at.map(|at| (h, at)))
                .collect();
            if !rolled.is_empty() {
                groups.retain(|(key, m), recs| {
                    let Some(rolled_at) = rolled.get(&window_start(*m, 3600)) else {
                        return true;
                    };
                    let before = recs.len();
                    recs.retain(|(_, produced_ms)| {
                        produced_ms.is_some_and(|p| p.div_euclid(1000) < *rolled_at)
                    });
                    let late = before - recs.len();
                    if late > 0 {
                        *out.dropped.entry("late").or_insert(0) += late as u64;
                        tracing::warn!(series = %key, minute = m, "late minute dropped: it arrived after its hour was rolled up, beyond the grace period");
                    }
                    !recs.is_empty()
                });
            }
        }
        if last.offset <= expected {
            return Ok(out);
        }
        let wanted: Vec<(MetricKey, i64)> = groups.keys().cloned().collect();
        let existing = hot.cells(partition, &wanted).await?;
        let mut cells = Vec::with_capacity(groups.len());
        for (((key, minute), recs), cell) in groups.into_iter().zip(existing) {
            let mut cell = cell;
            let mut changed = false;
            for (rec, _) in recs {
                let src = fnv1a(rec.source.as_bytes());
                match &mut cell {
                    Some(c) if c.has(src, rec.seq) => out.duplicates += 1,
                    Some(c) => match c.agg.merge(&rec.agg) {
                        Ok(()) => {
                            c.contributors.push((src, rec.seq));
                            out.merged += 1;
                            changed = true;
                        }
                        Err(e) => {
                            *out.dropped.entry("type_conflict").or_insert(0) += 1;
                            tracing::warn!(series = %key, minute, "record refused: {e}");
                        }
                    },
                    None => {
                        cell = Some(HotCell {
                            contributors: vec![(src, rec.seq)],
                            agg: rec.agg,
                        });
                        out.merged += 1;
                        changed = true;
                    }
                }
            }
            if let (true, Some(c)) = (changed, cell) {
                cells.push((key, minute, c));
            }
        }
        out.cells = cells.len() as u64;
        let write = HotWrite {
            partition: partition.clone(),
            expected_offset: expected,
            new_offset: last.offset,
            partitions,
            cells,
        };
        if hot.write(write).await? {
            return Ok(out);
        }
        tracing::info!(
            partition = partition.partition,
            "hot write fenced (another aggregator advanced the partition); re-reading"
        );
    }
}

/// The consume → apply → commit loop.
pub struct Worker<C, H> {
    consumer: C,
    hot: H,
    metrics: SelfMetrics,
    ready: Readiness,
    settings: Settings,
}

impl<C: LogConsumer, H: HotStore> Worker<C, H> {
    pub fn new(
        consumer: C,
        hot: H,
        metrics: SelfMetrics,
        ready: Readiness,
        settings: Settings,
    ) -> Self {
        Self {
            consumer,
            hot,
            metrics,
            ready,
            settings,
        }
    }

    /// Runs until `shutdown` resolves; a batch in progress is finished (or left uncommitted) first.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let replayed = self
            .metrics
            .counter("replayed_total", "records skipped: offset already applied");
        let duplicates = self.metrics.counter(
            "duplicates_total",
            "contributions skipped: already merged (sender retry)",
        );
        let cells = self.metrics.counter(
            "cells_written_total",
            "series-minute cells written to the hot store",
        );
        let rewinds = self.metrics.counter(
            "rewinds_total",
            "partitions re-read because the hot store was behind the log",
        );
        // Partitions just rewound, with the offset they were rewound to: a gap there is real.
        let mut rewound: BTreeMap<i32, i64> = BTreeMap::new();
        let assigned = self.metrics.gauge(
            "assigned_partitions",
            "log partitions assigned to this aggregator",
        );
        let misplaced = self.metrics.counter(
            "records_misplaced_total",
            "records in another partition than their key's (written before thermo placed \
             records itself, or before the partition count changed): readers look for their \
             series in the key's partition",
        );
        tokio::pin!(shutdown);
        let mut last_assignment: Option<Vec<i32>> = None;
        // The topic's partition count: read again whenever the assignment changes (adding
        // partitions rebalances the group).
        let mut partitions = 0u32;
        loop {
            let assignment = self.consumer.assignment();
            assigned.set(assignment.len() as i64);
            if last_assignment.as_ref() != Some(&assignment) {
                // Every change of the group's assignment, for post-mortems of rebalances.
                tracing::info!(partitions = ?assignment, "log partitions assigned");
                last_assignment = Some(assignment);
                partitions = 0;
            }
            if partitions == 0 {
                match self.consumer.partition_count() {
                    Ok(n) => partitions = n,
                    Err(e) => {
                        // Nothing is applied before the count is known: readers need it.
                        self.metrics.errors.with_label_values(&["log"]).inc();
                        tracing::warn!("the topic's partition count could not be read: {e}");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        }
                    }
                }
            }
            let polled = tokio::select! {
                _ = &mut shutdown => break,
                r = self.consumer.poll(self.settings.batch_max_records, self.settings.batch_max_wait) => r,
            };
            let records = match polled {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.errors.with_label_values(&["log"]).inc();
                    tracing::warn!("log poll failed: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            self.metrics.received.inc_by(records.len() as u64);
            let mut by_partition: BTreeMap<i32, Vec<LogRecord>> = BTreeMap::new();
            for r in records {
                if partition_of(&r.key, partitions) != r.partition {
                    misplaced.inc();
                }
                by_partition.entry(r.partition).or_default().push(r);
            }
            let mut commits = Vec::new();
            for (p, recs) in by_partition {
                let pid = PartitionId {
                    topic: self.consumer.topic().to_string(),
                    partition: p,
                };
                let mut backoff = Duration::from_millis(100);
                let allow_gap = rewound.remove(&p).is_some();
                let applied = loop {
                    match apply_partition(
                        &self.hot,
                        &pid,
                        partitions,
                        &recs,
                        self.settings.lateness,
                        now_s(),
                        allow_gap,
                    )
                    .await
                    {
                        Ok(a) => {
                            self.ready.set_ready();
                            break a;
                        }
                        Err(e) if !e.retryable() => {
                            // Undecodable state: retrying cannot help. Count, log, move on.
                            self.metrics
                                .dropped
                                .with_label_values(&["corrupt_state"])
                                .inc_by(recs.len() as u64);
                            tracing::error!(
                                partition = p,
                                records = recs.len(),
                                "records skipped: {e}"
                            );
                            break Applied::default();
                        }
                        Err(e) => {
                            self.metrics.errors.with_label_values(&["hot_store"]).inc();
                            self.ready.set_not_ready(format!("hot store: {e}"));
                            tracing::warn!(
                                partition = p,
                                "hot store write failed, retrying in {backoff:?}: {e}"
                            );
                            tokio::select! {
                                // Stopping now loses nothing: nothing of this batch was written
                                // or committed, so it is read again after the restart.
                                _ = &mut shutdown => {
                                    tracing::info!("shutdown while the hot store is unavailable: batch left uncommitted");
                                    return;
                                }
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                if let Some(to) = applied.rewind_to {
                    rewinds.inc();
                    tracing::warn!(
                        partition = p,
                        from = recs[0].offset,
                        to,
                        "hot store is behind the log: re-reading the partition"
                    );
                    if let Err(e) = self.consumer.seek(p, to) {
                        self.metrics.errors.with_label_values(&["seek"]).inc();
                        tracing::warn!(partition = p, "seek failed: {e}");
                    }
                    rewound.insert(p, to);
                    continue;
                }
                replayed.inc_by(applied.replayed);
                duplicates.inc_by(applied.duplicates);
                cells.inc_by(applied.cells);
                self.metrics.sent.inc_by(applied.merged);
                for (reason, n) in &applied.dropped {
                    self.metrics.dropped.with_label_values(&[reason]).inc_by(*n);
                }
                if let Some(last) = recs.last() {
                    commits.push((p, last.offset + 1));
                }
            }
            if let Err(e) = self.consumer.commit(&commits) {
                // The hot store holds the offsets; a failed commit only means some replays later.
                self.metrics.errors.with_label_values(&["commit"]).inc();
                tracing::warn!("offset commit failed: {e}");
            }
        }
    }
}
