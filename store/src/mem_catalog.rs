//! The cold-storage catalog of the embedded hot store ([`MemHot`]): the same state machine as the
//! Redis catalog (see [`crate::catalog`]), kept in the store's memory and made durable through its
//! write-ahead file.
//!
//! - A hot write marks its hours pending and bumps their write versions in the same atomic step as
//!   the cells (replaying the write replays the marks).
//! - Every other change is one [`CatalogOp`] frame in the write-ahead file, `fsync`ed before it is
//!   applied; conditions (the version of `finish`, the pending check of `trim`, the sequence of
//!   `clear_dirty`) are evaluated before logging, so a logged op always applies.
//! - A snapshot of the file holds the whole [`CatalogState`] as one frame.
//! - The compactor lease is in memory only: one process, one compactor.
//!
//! Op body: `"TC" 0x01 u8 kind, …` — kind 1 finish `iv hour`; 2 trim `iv hour`; 3 mark cold
//! `u8 res, iv chunk, iv at`; 4 unmark cold `u8 res, iv chunk`; 5 mark dirty `u8 res, iv chunk`;
//! 6 clear dirty `u8 res, iv chunk, uv seq`. Snapshot body: `"TS" 0x01` then, in order, pending
//! (`uv n, n × (iv hour, uv version)`), trim (`uv n, n × iv`), rolled-at (`uv n, n × (iv, iv)`),
//! the dirty sequence (`uv`), and per resolution 1m, 5m, 1h: cold (`uv n, n × (iv chunk, uv
//! generation)`) and dirty (`uv n, n × (iv chunk, uv seq)`).

use crate::catalog::Catalog;
use crate::mem_hot::{MemHot, Mutation};
use crate::StoreError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use thermo_core::codec::{CodecError, Reader, Writer};
use thermo_core::window::now_s;
use thermo_core::window::{window_start, Resolution};

/// What the catalog holds (inside the embedded store's state).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogState {
    /// Pending hour → write version.
    pending: BTreeMap<i64, u64>,
    /// Hours rolled up and still in the hot store.
    trim: BTreeSet<i64>,
    /// Hour → when it was first rolled up (unix seconds).
    rolled_at: BTreeMap<i64, i64>,
    dirty_seq: u64,
    /// Per resolution (1m, 5m, 1h): chunk → generation.
    cold: [BTreeMap<i64, u64>; 3],
    /// Per resolution: chunk → sequence number of its dirty mark.
    dirty: [BTreeMap<i64, u64>; 3],
}

/// One logged catalog change.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogOp {
    Finish {
        hour: i64,
    },
    Trim {
        hour: i64,
    },
    MarkCold {
        res: Resolution,
        chunk: i64,
        at: i64,
    },
    UnmarkCold {
        res: Resolution,
        chunk: i64,
    },
    MarkDirty {
        res: Resolution,
        chunk: i64,
    },
    ClearDirty {
        res: Resolution,
        chunk: i64,
        seq: u64,
    },
}

fn res_of(i: u8) -> Result<Resolution, CodecError> {
    Resolution::ALL
        .get(usize::from(i))
        .copied()
        .ok_or_else(|| bad("unknown resolution"))
}

fn bad(problem: &str) -> CodecError {
    CodecError {
        what: "catalog log",
        problem: problem.into(),
    }
}

impl CatalogState {
    /// A hot write touched `minute`: its hour is pending, with a new version.
    pub(crate) fn touched(&mut self, minute: i64) {
        *self.pending.entry(window_start(minute, 3600)).or_insert(0) += 1;
    }

    pub(crate) fn rolled_at(&self, hour: i64) -> Option<i64> {
        self.rolled_at.get(&hour).copied()
    }

    /// Whether `op` changes anything (only such ops are logged).
    pub(crate) fn applies(&self, op: &CatalogOp) -> bool {
        match op {
            CatalogOp::Finish { .. } | CatalogOp::MarkCold { .. } | CatalogOp::MarkDirty { .. } => {
                true
            }
            CatalogOp::Trim { hour } => !self.pending.contains_key(hour),
            CatalogOp::UnmarkCold { res, chunk } => self.cold[res.index()].contains_key(chunk),
            CatalogOp::ClearDirty { res, chunk, seq } => {
                self.dirty[res.index()].get(chunk) == Some(seq)
            }
        }
    }

    /// Applies `op` (the hot cells of a trimmed hour are removed by the store).
    pub(crate) fn apply(&mut self, op: &CatalogOp) {
        match *op {
            CatalogOp::Finish { hour } => {
                self.pending.remove(&hour);
                self.trim.insert(hour);
            }
            CatalogOp::Trim { hour } => {
                self.trim.remove(&hour);
            }
            CatalogOp::MarkCold { res, chunk, at } => {
                *self.cold[res.index()].entry(chunk).or_insert(0) += 1;
                if res == Resolution::OneMinute {
                    self.rolled_at.entry(chunk).or_insert(at);
                }
            }
            CatalogOp::UnmarkCold { res, chunk } => {
                self.cold[res.index()].remove(&chunk);
                if res == Resolution::OneMinute {
                    self.rolled_at.remove(&chunk);
                }
            }
            CatalogOp::MarkDirty { res, chunk } => {
                self.dirty_seq += 1;
                self.dirty[res.index()].insert(chunk, self.dirty_seq);
            }
            CatalogOp::ClearDirty { res, chunk, seq } => {
                if self.dirty[res.index()].get(&chunk) == Some(&seq) {
                    self.dirty[res.index()].remove(&chunk);
                }
            }
        }
    }

    /// Sets when `hour` was rolled up (tests).
    pub(crate) fn set_rolled_at(&mut self, hour: i64, at: i64) {
        self.rolled_at.entry(hour).or_insert(at);
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TS\x01");
        w.uv(self.pending.len() as u64);
        for (h, v) in &self.pending {
            w.iv(*h);
            w.uv(*v);
        }
        w.uv(self.trim.len() as u64);
        for h in &self.trim {
            w.iv(*h);
        }
        w.uv(self.rolled_at.len() as u64);
        for (h, at) in &self.rolled_at {
            w.iv(*h);
            w.iv(*at);
        }
        w.uv(self.dirty_seq);
        for i in 0..3 {
            for map in [&self.cold[i], &self.dirty[i]] {
                w.uv(map.len() as u64);
                for (c, n) in map {
                    w.iv(*c);
                    w.uv(*n);
                }
            }
        }
        w.buf
    }

    /// Decodes a snapshot body after its 3-byte header.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let mut s = Self::default();
        for _ in 0..r.len(2)? {
            s.pending.insert(r.iv()?, r.uv()?);
        }
        for _ in 0..r.len(1)? {
            s.trim.insert(r.iv()?);
        }
        for _ in 0..r.len(2)? {
            s.rolled_at.insert(r.iv()?, r.iv()?);
        }
        s.dirty_seq = r.uv()?;
        for i in 0..3 {
            for map in [&mut s.cold[i], &mut s.dirty[i]] {
                for _ in 0..r.len(2)? {
                    map.insert(r.iv()?, r.uv()?);
                }
            }
        }
        Ok(s)
    }
}

impl CatalogOp {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TC\x01");
        match *self {
            CatalogOp::Finish { hour } => {
                w.bytes(&[1]);
                w.iv(hour);
            }
            CatalogOp::Trim { hour } => {
                w.bytes(&[2]);
                w.iv(hour);
            }
            CatalogOp::MarkCold { res, chunk, at } => {
                w.bytes(&[3, res.index() as u8]);
                w.iv(chunk);
                w.iv(at);
            }
            CatalogOp::UnmarkCold { res, chunk } => {
                w.bytes(&[4, res.index() as u8]);
                w.iv(chunk);
            }
            CatalogOp::MarkDirty { res, chunk } => {
                w.bytes(&[5, res.index() as u8]);
                w.iv(chunk);
            }
            CatalogOp::ClearDirty { res, chunk, seq } => {
                w.bytes(&[6, res.index() as u8]);
                w.iv(chunk);
                w.uv(seq);
            }
        }
        w.buf
    }

    /// Decodes an op body after its 3-byte header.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let kind = r.u8()?;
        if kind <= 2 {
            let hour = r.iv()?;
            return match kind {
                1 => Ok(CatalogOp::Finish { hour }),
                2 => Ok(CatalogOp::Trim { hour }),
                _ => Err(bad("unknown op")),
            };
        }
        let res = res_of(r.u8()?)?;
        let chunk = r.iv()?;
        match kind {
            3 => Ok(CatalogOp::MarkCold {
                res,
                chunk,
                at: r.iv()?,
            }),
            4 => Ok(CatalogOp::UnmarkCold { res, chunk }),
            5 => Ok(CatalogOp::MarkDirty { res, chunk }),
            6 => Ok(CatalogOp::ClearDirty {
                res,
                chunk,
                seq: r.uv()?,
            }),
            _ => Err(bad("unknown op")),
        }
    }
}

/// The catalog of a shared embedded store.
#[derive(Clone)]
pub struct MemCatalog {
    hot: Arc<MemHot>,
}

impl MemCatalog {
    pub fn new(hot: Arc<MemHot>) -> Self {
        Self { hot }
    }

    fn op(&self, op: CatalogOp) -> Result<bool, StoreError> {
        self.hot
            .mutate(|s| s.catalog.applies(&op).then_some(Mutation::Catalog(op)))
    }

    fn read<T>(&self, f: impl FnOnce(&CatalogState) -> T) -> T {
        f(&self.hot.state().catalog)
    }
}

impl Catalog for MemCatalog {
    type Hot = MemHot;

    fn hot(&self) -> &MemHot {
        &self.hot
    }

    async fn lease(&self, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        Ok(self.hot.lease(owner, ttl_ms))
    }

    async fn release(&self, owner: &str) -> Result<(), StoreError> {
        self.hot.release(owner);
        Ok(())
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.hot.tenants())
    }

    async fn pending_hours(&self, until: i64) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(self.read(|c| {
            c.pending
                .range(..=until)
                .map(|(h, v)| (*h, v.to_string()))
                .collect()
        }))
    }

    async fn any_pending(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        Ok(from < to && self.read(|c| c.pending.range(from..to).next().is_some()))
    }

    async fn finish_hour(&self, hour: i64, version: &str) -> Result<bool, StoreError> {
        self.hot.mutate(|s| {
            let current = s.catalog.pending.get(&hour).map(u64::to_string);
            (current.as_deref() == Some(version))
                .then_some(Mutation::Catalog(CatalogOp::Finish { hour }))
        })
    }

    async fn trimmable_hours(&self, until: i64) -> Result<Vec<i64>, StoreError> {
        Ok(self.read(|c| c.trim.range(..=until).copied().collect()))
    }

    async fn trim_hour(&self, hour: i64) -> Result<bool, StoreError> {
        self.op(CatalogOp::Trim { hour })
    }

    async fn cold_chunks(&self, res: Resolution) -> Result<BTreeMap<i64, u64>, StoreError> {
        Ok(self.read(|c| c.cold[res.index()].clone()))
    }

    async fn mark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        self.op(CatalogOp::MarkCold {
            res,
            chunk,
            at: now_s(),
        })
        .map(drop)
    }

    async fn unmark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        self.op(CatalogOp::UnmarkCold { res, chunk }).map(drop)
    }

    async fn mark_dirty(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        self.op(CatalogOp::MarkDirty { res, chunk }).map(drop)
    }

    async fn dirty(&self, res: Resolution) -> Result<Vec<(i64, f64)>, StoreError> {
        Ok(self.read(|c| {
            c.dirty[res.index()]
                .iter()
                .map(|(k, s)| (*k, *s as f64))
                .collect()
        }))
    }

    async fn clear_dirty(&self, res: Resolution, chunk: i64, seq: f64) -> Result<bool, StoreError> {
        self.op(CatalogOp::ClearDirty {
            res,
            chunk,
            seq: seq as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::{HotStore, HotWrite, PartitionId};
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::codec::HotCell;
    use thermo_core::key::MetricKey;

    const H: i64 = 1_700_002_800; // an hour start

    fn write(offset: i64, minute: i64) -> HotWrite {
        HotWrite {
            totals: Vec::new(),
            partition: PartitionId {
                topic: "t".into(),
                partition: 0,
            },
            expected_offset: offset - 1,
            new_offset: offset,
            partitions: 1,
            cells: vec![(
                MetricKey::new("acme", "req", vec![]).unwrap(),
                minute,
                HotCell {
                    contributors: vec![(1, offset as u64)],
                    agg: Aggregate::Counter(Counter {
                        sum: 1.0,
                        samples: 1,
                    }),
                },
            )],
        }
    }

    async fn cells_in(hot: &MemHot, from: i64, to: i64) -> usize {
        let k = MetricKey::new("acme", "req", vec![]).unwrap();
        hot.read_range(&[k], from, to).await.unwrap()[0].len()
    }

    /// The whole hand-over on the embedded store, with a reopen (replay) after every step and a
    /// snapshot in the middle: the catalog comes back exactly as it was.
    #[tokio::test]
    async fn the_catalog_follows_writes_and_survives_reopen_and_snapshot() {
        let dir = std::env::temp_dir().join(format!("thermo-memcat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("hot.log");
        let open = |compact: u64| MemCatalog::new(Arc::new(MemHot::open(&path, compact).unwrap()));

        let c = open(1 << 20);
        assert!(c.hot().write(write(0, H + 60)).await.unwrap());
        assert!(c.hot().write(write(1, H + 120)).await.unwrap());
        assert!(c.hot().write(write(2, H + 3600)).await.unwrap());
        assert_eq!(c.tenants().await.unwrap(), vec!["acme".to_string()]);
        let pending = c.pending_hours(H).await.unwrap();
        assert_eq!(
            pending,
            vec![(H, "2".to_string())],
            "two writes into hour H"
        );
        assert!(c.any_pending(H, H + 3600).await.unwrap());
        assert!(!c.any_pending(H + 7200, H + 10_800).await.unwrap());

        // A roll-up that read version 1 does not finish the hour; version 2 does.
        c.mark_cold(Resolution::OneMinute, H).await.unwrap();
        c.mark_dirty(Resolution::FiveMinutes, 0).await.unwrap();
        assert!(!c.finish_hour(H, "1").await.unwrap());
        assert!(c.finish_hour(H, "2").await.unwrap());
        drop(c);

        let c = open(1 << 20);
        assert_eq!(c.pending_hours(H).await.unwrap(), vec![]);
        assert_eq!(c.trimmable_hours(H).await.unwrap(), vec![H]);
        assert_eq!(
            c.cold_chunks(Resolution::OneMinute).await.unwrap(),
            [(H, 1)].into()
        );
        let rolled = c.hot().rolled_up(&[H, H + 3600]).await.unwrap();
        assert!(rolled[0].is_some() && rolled[1].is_none());
        let dirty = c.dirty(Resolution::FiveMinutes).await.unwrap();
        assert_eq!(dirty, vec![(0, 1.0)]);

        // A newer dirty mark is not lost to a clear of the older one.
        c.mark_dirty(Resolution::FiveMinutes, 0).await.unwrap();
        assert!(!c
            .clear_dirty(Resolution::FiveMinutes, 0, 1.0)
            .await
            .unwrap());
        assert!(c
            .clear_dirty(Resolution::FiveMinutes, 0, 2.0)
            .await
            .unwrap());
        assert!(c.dirty(Resolution::FiveMinutes).await.unwrap().is_empty());

        // A late write makes the hour pending again: it cannot be trimmed until rolled again.
        assert!(c.hot().write(write(3, H + 180)).await.unwrap());
        assert!(!c.trim_hour(H).await.unwrap());
        assert_eq!(cells_in(c.hot(), H, H + 3600).await, 3);
        let v = c.pending_hours(H).await.unwrap()[0].1.clone();
        c.mark_cold(Resolution::OneMinute, H).await.unwrap();
        assert!(c.finish_hour(H, &v).await.unwrap());
        assert!(c.trim_hour(H).await.unwrap());
        assert_eq!(cells_in(c.hot(), H, H + 3600).await, 0, "hour H trimmed");
        assert_eq!(
            cells_in(c.hot(), H + 3600, H + 7200).await,
            1,
            "next hour kept"
        );
        drop(c);

        // Reopen with a tiny snapshot threshold: the next op rewrites the file as a snapshot.
        let c = open(64);
        assert_eq!(
            cells_in(c.hot(), H, H + 3600).await,
            0,
            "the trim was logged"
        );
        c.mark_cold(Resolution::OneHour, 0).await.unwrap();
        let before = (
            c.cold_chunks(Resolution::OneMinute).await.unwrap(),
            c.cold_chunks(Resolution::OneHour).await.unwrap(),
            c.pending_hours(i64::MAX).await.unwrap(),
            c.trimmable_hours(i64::MAX).await.unwrap(),
        );
        assert_eq!(before.0, [(H, 2)].into(), "generation 2 after the rewrite");
        assert_eq!(before.2, vec![(H + 3600, "1".to_string())]);
        drop(c);
        let c = open(1 << 20);
        let after = (
            c.cold_chunks(Resolution::OneMinute).await.unwrap(),
            c.cold_chunks(Resolution::OneHour).await.unwrap(),
            c.pending_hours(i64::MAX).await.unwrap(),
            c.trimmable_hours(i64::MAX).await.unwrap(),
        );
        assert_eq!(before, after);
        assert_eq!(cells_in(c.hot(), H, H + 7200).await, 1);
        c.unmark_cold(Resolution::OneMinute, H).await.unwrap();
        assert_eq!(c.hot().rolled_up(&[H]).await.unwrap(), vec![None]);

        // Every cell trimmed, then a snapshot: the tenant and its metric index remain (as in
        // Redis), so retention still finds the tenant's objects.
        assert!(c.finish_hour(H + 3600, "1").await.unwrap());
        assert!(c.trim_hour(H + 3600).await.unwrap());
        drop(c);
        let c = open(64);
        c.mark_dirty(Resolution::OneHour, 0).await.unwrap(); // snapshots
        drop(c);
        let c = open(1 << 20);
        assert_eq!(cells_in(c.hot(), 0, i64::MAX).await, 0);
        assert_eq!(c.tenants().await.unwrap(), vec!["acme".to_string()]);
        assert_eq!(c.hot().metrics("acme").await.unwrap().len(), 1);
        assert_eq!(c.dirty(Resolution::OneHour).await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn one_lease_holder_at_a_time() {
        let c = MemCatalog::new(Arc::new(MemHot::new()));
        assert!(c.lease("a", 60_000).await.unwrap());
        assert!(c.lease("a", 60_000).await.unwrap(), "renewed by its holder");
        assert!(!c.lease("b", 60_000).await.unwrap());
        c.release("a").await.unwrap();
        assert!(c.lease("b", 0).await.unwrap());
        assert!(
            c.lease("a", 60_000).await.unwrap(),
            "an expired lease is free"
        );
    }

    #[test]
    fn ops_and_snapshots_round_trip() {
        let ops = [
            CatalogOp::Finish { hour: -3600 },
            CatalogOp::Trim { hour: H },
            CatalogOp::MarkCold {
                res: Resolution::OneHour,
                chunk: 604_800,
                at: 5,
            },
            CatalogOp::UnmarkCold {
                res: Resolution::OneMinute,
                chunk: H,
            },
            CatalogOp::MarkDirty {
                res: Resolution::FiveMinutes,
                chunk: 86_400,
            },
            CatalogOp::ClearDirty {
                res: Resolution::FiveMinutes,
                chunk: 86_400,
                seq: 7,
            },
        ];
        let mut state = CatalogState::default();
        for op in &ops {
            let body = op.encode();
            let mut r = Reader::new(&body[3..], "test");
            assert_eq!(&CatalogOp::decode(&mut r).unwrap(), op);
            state.apply(op);
        }
        state.touched(H + 59);
        let body = state.encode();
        let mut r = Reader::new(&body[3..], "test");
        assert_eq!(CatalogState::decode(&mut r).unwrap(), state);
        assert_eq!(r.remaining(), 0);
    }
}
