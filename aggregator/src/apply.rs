//! Applying log records to the hot store, exactly once per contribution.
//!
//! A record is a series-minute ([`Record`]) or a cumulative series' running totals
//! ([`TotalsRecord`], Prometheus remote write's counters). Totals become per-minute increases
//! here, where a series' samples meet in log order: each sample is differenced against the series'
//! last total, kept in the hot store and written with the cells and the offset in the same fenced
//! write ([`HotStore::totals`]), so a replayed record finds the state it left and counts nothing
//! twice. The rules are `thermo_core::cumulative`'s with no start times: a series' first total is
//! only its reference (what it gained before is unknown), a total below the last one is a reset
//! (counted whole), a sample not after the last one (a re-sent request) counts nothing. A
//! request's increases of one minute are one contribution `(source, seq)` of that minute's
//! counter cell.

use crate::config::AggregatorConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use thermo_core::aggregate::{fnv1a, Aggregate, Counter};
use thermo_core::codec::{HotCell, LogValue, Record, TotalsRecord};
use thermo_core::cumulative::{step, Point, Step};
use thermo_core::key::MetricKey;
use thermo_core::window::minute_start;
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
    /// A cumulative series' last total is forgotten after this long without one (checked hourly
    /// for the assigned partitions): the hot retention.
    pub totals_max_idle_secs: i64,
}

impl From<&AggregatorConfig> for Settings {
    fn from(c: &AggregatorConfig) -> Self {
        Self {
            batch_max_records: c.batch_max_records.max(1),
            batch_max_wait: Duration::from_millis(c.batch_max_wait_ms),
            totals_max_idle_secs: c.hot_retention_hours * 3600,
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
    /// Totals that only set their series' reference (its first), or came not after its last one.
    pub totals_references: u64,
    pub totals_stale: u64,
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
        // Cumulative series → their totals records in offset order.
        let mut totals: BTreeMap<MetricKey, Vec<(TotalsRecord, Option<i64>)>> = BTreeMap::new();
        for r in records {
            if r.offset <= expected {
                out.replayed += 1;
                continue;
            }
            let key = std::str::from_utf8(&r.key)
                .ok()
                .and_then(|k| MetricKey::parse(k).ok());
            let (Some(key), Ok(value)) = (key, LogValue::decode(&r.value)) else {
                *out.dropped.entry("corrupt").or_insert(0) += 1;
                tracing::warn!(
                    partition = r.partition,
                    offset = r.offset,
                    "undecodable record skipped"
                );
                continue;
            };
            match value {
                LogValue::Minute(rec) => match too_old(lateness, rec.minute, now_s) {
                    Some(reason) => *out.dropped.entry(reason).or_insert(0) += 1,
                    None => groups
                        .entry((key, rec.minute))
                        .or_default()
                        .push((rec, r.produced_ms)),
                },
                LogValue::Totals(rec) => totals.entry(key).or_default().push((rec, r.produced_ms)),
            }
        }
        let series: Vec<MetricKey> = totals.keys().cloned().collect();
        let last_totals = hot.totals(partition, &series).await?;
        let mut new_totals = Vec::new();
        for ((key, recs), last) in totals.into_iter().zip(last_totals) {
            let mut last = last.map(|(time_ms, value)| Point {
                start_ms: 0,
                time_ms,
                value,
            });
            let before = last.clone();
            for (rec, produced_ms) in recs {
                // This request's increases of the series, by minute.
                let mut increases: BTreeMap<i64, f64> = BTreeMap::new();
                for (time_ms, value) in rec.samples.iter().copied() {
                    let p = Point {
                        start_ms: 0,
                        time_ms,
                        value,
                    };
                    match step(last.as_ref(), &p, i64::MAX) {
                        Step::Delta(d) => {
                            *increases
                                .entry(minute_start(time_ms.div_euclid(1000)))
                                .or_default() += d;
                        }
                        Step::Reference => out.totals_references += 1,
                        Step::Stale => {
                            out.totals_stale += 1;
                            continue;
                        }
                    }
                    last = Some(p);
                }
                for (minute, increase) in increases {
                    if let Some(reason) = too_old(lateness, minute, now_s) {
                        *out.dropped.entry(reason).or_insert(0) += 1;
                        continue;
                    }
                    let minute_rec = Record {
                        source: rec.source.clone(),
                        seq: rec.seq,
                        minute,
                        agg: Aggregate::Counter(Counter {
                            sum: increase,
                            samples: 1,
                        }),
                    };
                    groups
                        .entry((key.clone(), minute))
                        .or_default()
                        .push((minute_rec, produced_ms));
                }
            }
            if let Some(p) = last.filter(|p| Some(p) != before.as_ref()) {
                new_totals.push((key, p.time_ms, p.value));
            }
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
            totals: new_totals,
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

/// Why a minute is not accepted any more (`None`: it is).
fn too_old(lateness: Lateness, minute: i64, now_s: i64) -> Option<&'static str> {
    match lateness {
        Lateness::HotOnly { retention_secs } if minute < now_s - retention_secs => {
            Some("beyond_retention")
        }
        Lateness::Cold { max_age_secs, .. } if minute < now_s - max_age_secs => Some("too_old"),
        _ => None,
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
        let totals_references = self.metrics.counter(
            "totals_references_total",
            "cumulative totals (Prometheus remote write counters) that only set their series' \
             reference: its first total, what it gained before unknown",
        );
        let totals_stale = self.metrics.counter(
            "totals_stale_total",
            "cumulative totals not after their series' last one (a re-sent request): counted nothing",
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
        let totals_pruned = self.metrics.counter(
            "totals_pruned_total",
            "cumulative series' last totals forgotten after the hot retention without a new one",
        );
        // When the assigned partitions' old totals were last pruned (None: not yet).
        let mut last_prune: Option<tokio::time::Instant> = None;
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
            let assigned_now = self.consumer.assignment();
            let due = last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600));
            if due && !assigned_now.is_empty() {
                last_prune = Some(tokio::time::Instant::now());
                let before_ms = (now_s() - self.settings.totals_max_idle_secs).saturating_mul(1000);
                for p in assigned_now {
                    let pid = PartitionId {
                        topic: self.consumer.topic().to_string(),
                        partition: p,
                    };
                    match self.hot.prune_totals(&pid, before_ms).await {
                        Ok(n) => totals_pruned.inc_by(n),
                        Err(e) => {
                            // Tried again in an hour; the totals only take room meanwhile.
                            self.metrics.errors.with_label_values(&["hot_store"]).inc();
                            tracing::warn!(partition = p, "old totals not pruned: {e}");
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
                totals_references.inc_by(applied.totals_references);
                totals_stale.inc_by(applied.totals_stale);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use thermo_store::mem_hot::MemHot;

    const NOW: i64 = 1_800_000_000; // unix s; the samples are in the hour before
    const T0: i64 = (NOW - 1800) * 1000; // unix ms, a minute start

    fn pid() -> PartitionId {
        PartitionId {
            topic: "t".into(),
            partition: 0,
        }
    }

    fn key(name: &str) -> MetricKey {
        MetricKey::new("acme", name, vec![]).unwrap()
    }

    /// A totals record of `series` at `offset`: request `seq` of source `prom`.
    fn totals(offset: i64, series: &str, seq: u64, samples: &[(i64, f64)]) -> LogRecord {
        LogRecord {
            partition: 0,
            offset,
            key: key(series).encode().into_bytes(),
            value: TotalsRecord {
                source: "prom".into(),
                seq,
                samples: samples.to_vec(),
            }
            .encode(),
            produced_ms: Some(NOW * 1000),
        }
    }

    async fn apply(hot: &MemHot, records: &[LogRecord]) -> Applied {
        let lateness = Lateness::HotOnly {
            retention_secs: 48 * 3600,
        };
        apply_partition(hot, &pid(), 1, records, lateness, NOW, false)
            .await
            .unwrap()
    }

    /// The counter sums of `series`, by minute start (unix s).
    async fn increases(hot: &MemHot, series: &str) -> BTreeMap<i64, f64> {
        let cells = hot
            .read_range(&[key(series)], 0, NOW + 60)
            .await
            .unwrap()
            .remove(0);
        cells
            .into_iter()
            .map(|(m, c)| match c.agg {
                Aggregate::Counter(c) => (m, c.sum),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn totals_become_per_minute_increases_once_whatever_is_replayed_or_resent() {
        let hot = MemHot::new();
        let m = |i: i64| T0 / 1000 + 60 * i; // minute i's start
                                             // The first total is the reference; then +5 in minute 0.
        let a = apply(
            &hot,
            &[totals(
                0,
                "req_total",
                1,
                &[(T0 + 1_000, 10.0), (T0 + 16_000, 15.0)],
            )],
        )
        .await;
        assert_eq!((a.totals_references, a.merged), (1, 1));
        assert_eq!(
            increases(&hot, "req_total").await,
            BTreeMap::from([(m(0), 5.0)])
        );
        // The next request: +10 in minute 1, a reset (3 counts whole) and +5 in minute 2.
        let next = totals(
            1,
            "req_total",
            2,
            &[
                (T0 + 61_000, 25.0),
                (T0 + 121_000, 3.0),
                (T0 + 136_000, 8.0),
            ],
        );
        apply(&hot, std::slice::from_ref(&next)).await;
        let want = BTreeMap::from([(m(0), 5.0), (m(1), 10.0), (m(2), 8.0)]);
        assert_eq!(increases(&hot, "req_total").await, want);
        assert_eq!(
            hot.totals(&pid(), &[key("req_total")]).await.unwrap(),
            vec![Some((T0 + 136_000, 8.0))]
        );
        // The same record again (a replay after a crash): skipped by its offset.
        let a = apply(&hot, std::slice::from_ref(&next)).await;
        assert_eq!((a.replayed, a.merged), (1, 0));
        // The same request sent again (a sender's retry, a new record): every total is stale.
        let a = apply(
            &hot,
            &[totals(
                2,
                "req_total",
                2,
                &[
                    (T0 + 61_000, 25.0),
                    (T0 + 121_000, 3.0),
                    (T0 + 136_000, 8.0),
                ],
            )],
        )
        .await;
        assert_eq!((a.totals_stale, a.merged), (3, 0));
        assert_eq!(increases(&hot, "req_total").await, want);
        // A minute record and a totals record of other series in one batch.
        let minute = LogRecord {
            partition: 0,
            offset: 3,
            key: key("hits").encode().into_bytes(),
            value: Record {
                source: "agent".into(),
                seq: 1,
                minute: m(3),
                agg: Aggregate::Counter(Counter {
                    sum: 4.0,
                    samples: 4,
                }),
            }
            .encode(),
            produced_ms: None,
        };
        apply(
            &hot,
            &[
                minute,
                totals(
                    4,
                    "err_total",
                    3,
                    &[(T0 + 181_000, 1.0), (T0 + 200_000, 2.0)],
                ),
            ],
        )
        .await;
        assert_eq!(increases(&hot, "hits").await, BTreeMap::from([(m(3), 4.0)]));
        assert_eq!(
            increases(&hot, "err_total").await,
            BTreeMap::from([(m(3), 1.0)])
        );
    }

    proptest! {
        /// Model: whatever batches the log is read in, and however often requests are re-sent
        /// (each re-send a new record after the original), the increases written add up to the
        /// model's: the sum over consecutive distinct totals of the difference, or of the later
        /// total when it went down.
        #[test]
        fn totals_count_once_across_batches_and_resends(
            steps in proptest::collection::vec((0u32..3, any::<bool>()), 1..40),
            requests in proptest::collection::vec(1usize..4, 1..20),
            resend in proptest::collection::vec(any::<bool>(), 20),
            batch in 1usize..6,
        ) {
            // A series' totals: each step gains 0..3 or, flagged, resets to the gain.
            let mut samples = Vec::new();
            let mut total = 0.0;
            for (i, (gain, reset)) in steps.iter().enumerate() {
                total = if *reset { f64::from(*gain) } else { total + f64::from(*gain) };
                samples.push((T0 + 1_000 * i as i64, total));
            }
            let mut want = 0.0;
            for w in samples.windows(2) {
                let (a, b) = (w[0].1, w[1].1);
                want += if b >= a { b - a } else { b };
            }
            // Cut into requests, some re-sent right after.
            let mut records = Vec::new();
            let (mut at, mut offset) = (0, 0);
            for (r, n) in requests.iter().enumerate() {
                let part = &samples[at.min(samples.len())..(at + n).min(samples.len())];
                at += n;
                if part.is_empty() { break; }
                let copies = if resend[r % 20] { 2 } else { 1 };
                for _ in 0..copies {
                    records.push(totals(offset, "s_total", r as u64, part));
                    offset += 1;
                }
            }
            if at < samples.len() {
                records.push(totals(offset, "s_total", 99, &samples[at..]));
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let hot = MemHot::new();
            for chunk in records.chunks(batch) {
                rt.block_on(apply(&hot, chunk));
            }
            let got: f64 = rt.block_on(increases(&hot, "s_total")).values().sum();
            prop_assert_eq!(got, want);
        }
    }
}
