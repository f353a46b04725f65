//! An in-memory hot store: the same contract as Redis (fenced writes, per-partition offsets,
//! series and metric indexes), for tests, benchmarks and embedded use. Nothing survives the
//! process; retention is not enforced.

use crate::hot::{HotStore, HotWrite, PartitionId};
use crate::StoreError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use thermo_core::aggregate::MetricType;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;

#[derive(Default)]
struct Inner {
    offsets: BTreeMap<PartitionId, i64>,
    cells: BTreeMap<MetricKey, BTreeMap<i64, HotCell>>,
    types: BTreeMap<(String, String), MetricType>,
    rolled: BTreeSet<i64>,
}

/// Hot store in memory.
#[derive(Default)]
pub struct MemHot {
    inner: Mutex<Inner>,
}

impl MemHot {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a cell directly (tests and benchmarks).
    pub fn insert(&self, key: MetricKey, minute: i64, cell: HotCell) {
        let mut g = self.lock();
        g.types.insert(
            (key.tenant().to_string(), key.name().to_string()),
            cell.agg.metric_type(),
        );
        g.cells.entry(key).or_default().insert(minute, cell);
    }

    /// Removes a cell (tests: a trim).
    pub fn remove(&self, key: &MetricKey, minute: i64) {
        if let Some(c) = self.lock().cells.get_mut(key) {
            c.remove(&minute);
        }
    }

    /// Marks an hour as rolled up into cold storage.
    pub fn mark_rolled(&self, hour: i64) {
        self.lock().rolled.insert(hour);
    }
}

impl HotStore for MemHot {
    async fn offset(&self, partition: &PartitionId) -> Result<i64, StoreError> {
        Ok(self.lock().offsets.get(partition).copied().unwrap_or(-1))
    }

    async fn cells(&self, wanted: &[(MetricKey, i64)]) -> Result<Vec<Option<HotCell>>, StoreError> {
        let g = self.lock();
        Ok(wanted
            .iter()
            .map(|(k, m)| g.cells.get(k).and_then(|c| c.get(m)).cloned())
            .collect())
    }

    async fn write(&self, w: HotWrite) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if g.offsets.get(&w.partition).copied().unwrap_or(-1) != w.expected_offset {
            return Ok(false);
        }
        for (k, minute, cell) in w.cells {
            g.types.insert(
                (k.tenant().to_string(), k.name().to_string()),
                cell.agg.metric_type(),
            );
            g.cells.entry(k).or_default().insert(minute, cell);
        }
        g.offsets.insert(w.partition, w.new_offset);
        Ok(true)
    }

    async fn metrics(&self, tenant: &str) -> Result<Vec<(String, MetricType)>, StoreError> {
        Ok(self
            .lock()
            .types
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, n), ty)| (n.clone(), *ty))
            .collect())
    }

    async fn series(
        &self,
        tenant: &str,
        name: &str,
        since: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        Ok(self
            .lock()
            .cells
            .iter()
            .filter(|(k, c)| {
                k.tenant() == tenant && k.name() == name && c.range(since..).next().is_some()
            })
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn rolled_up(&self, hours: &[i64]) -> Result<Vec<bool>, StoreError> {
        let g = self.lock();
        Ok(hours.iter().map(|h| g.rolled.contains(h)).collect())
    }

    async fn read_range(
        &self,
        series: &[MetricKey],
        from: i64,
        to: i64,
    ) -> Result<Vec<Vec<(i64, HotCell)>>, StoreError> {
        let g = self.lock();
        Ok(series
            .iter()
            .map(|k| {
                g.cells
                    .get(k)
                    .map(|c| c.range(from..to).map(|(m, c)| (*m, c.clone())).collect())
                    .unwrap_or_default()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::aggregate::{Aggregate, Counter};

    #[tokio::test]
    async fn writes_are_fenced_by_the_partition_offset() {
        let h = MemHot::new();
        let p = PartitionId {
            topic: "t".into(),
            partition: 0,
        };
        let k = MetricKey::new("acme", "req", vec![]).unwrap();
        let cell = HotCell {
            contributors: vec![(1, 1)],
            agg: Aggregate::Counter(Counter {
                sum: 2.0,
                samples: 1,
            }),
        };
        let w = |expected, new| HotWrite {
            partition: p.clone(),
            expected_offset: expected,
            new_offset: new,
            cells: vec![(k.clone(), 60, cell.clone())],
        };
        assert!(h.write(w(-1, 5)).await.unwrap());
        assert!(
            !h.write(w(-1, 6)).await.unwrap(),
            "a stale writer is fenced"
        );
        assert_eq!(h.offset(&p).await.unwrap(), 5);
        assert_eq!(
            h.read_range(std::slice::from_ref(&k), 0, 120)
                .await
                .unwrap()[0]
                .len(),
            1
        );
        assert_eq!(
            h.metrics("acme").await.unwrap(),
            vec![("req".to_string(), MetricType::Counter)]
        );
        assert_eq!(h.series("acme", "req", 61).await.unwrap().len(), 0);
    }
}
