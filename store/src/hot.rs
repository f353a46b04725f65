//! The hot store contract: recent per-minute cells of every series.
//!
//! Writes come from aggregators, one per log partition at a time. A write is one atomic
//! [`HotWrite`]: new cell states plus the partition's applied offset, accepted only if the stored
//! offset still equals `expected_offset` (a fence against a consumer that lost its partition).
//! Records at or below the stored offset were applied already and are skipped by the caller.

use crate::StoreError;
use std::future::Future;
use thermo_core::aggregate::MetricType;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;

/// A log partition, as `topic` and number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: i32,
}

/// One atomic write of an aggregator.
#[derive(Debug, Clone)]
pub struct HotWrite {
    pub partition: PartitionId,
    /// The offset the writer read before merging (`-1`: none yet).
    pub expected_offset: i64,
    /// The last offset this write applies.
    pub new_offset: i64,
    /// The topic's partition count, which places every series (`crate::log::partition_of`):
    /// stored for readers that find a series' partition from its key (0: not known, nothing
    /// stored).
    pub partitions: u32,
    /// `(series, minute, new state, type)`.
    pub cells: Vec<(MetricKey, i64, HotCell)>,
    /// `(series, time ms, total)`: the new last total of cumulative series (see
    /// [`HotStore::totals`]), kept with the cells and the offset in the same atomic write.
    pub totals: Vec<(MetricKey, i64, f64)>,
}

/// Hot storage: per-minute cells of every series for the last `retention` seconds.
pub trait HotStore: Send + Sync + 'static {
    /// The last applied offset of `partition`, `-1` if none.
    fn offset(
        &self,
        partition: &PartitionId,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The current cells of `partition` for `(series, minute)` pairs, in order (`None` where
    /// there is none).
    fn cells(
        &self,
        partition: &PartitionId,
        wanted: &[(MetricKey, i64)],
    ) -> impl Future<Output = Result<Vec<Option<HotCell>>, StoreError>> + Send;

    /// The last total kept of each cumulative series of `partition` (Prometheus remote write's
    /// counters), as `(time ms, total)`, in order (`None` where there is none): what the next
    /// sample of the series is differenced against.
    fn totals(
        &self,
        partition: &PartitionId,
        series: &[MetricKey],
    ) -> impl Future<Output = Result<Vec<Option<(i64, f64)>>, StoreError>> + Send;

    /// Forgets the totals of `partition`'s cumulative series whose last total is before
    /// `before_ms` (a series silent that long starts over: its next total is a reference).
    /// Returns how many were forgotten.
    fn prune_totals(
        &self,
        partition: &PartitionId,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Applies `write` atomically. `Ok(false)` if fenced: the stored offset was not
    /// `expected_offset`, and nothing was written.
    fn write(&self, write: HotWrite) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The tenant's metric names with their types.
    fn metrics(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<(String, MetricType)>, StoreError>> + Send;

    /// Series of `tenant`'s metric `name` that have data at or after `since_minute`.
    fn series(
        &self,
        tenant: &str,
        name: &str,
        since_minute: i64,
    ) -> impl Future<Output = Result<Vec<MetricKey>, StoreError>> + Send;

    /// For each of `tenant`'s metrics, the number of its series that have data at or after
    /// `since_minute` (metrics with none are left out): the index's counts, nothing read.
    fn series_counts(
        &self,
        tenant: &str,
        since_minute: i64,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// For each hour start, when (unix seconds) it was first rolled up into cold storage, if it was.
    fn rolled_up(
        &self,
        hours: &[i64],
    ) -> impl Future<Output = Result<Vec<Option<i64>>, StoreError>> + Send;

    /// Every cell of `series` for minutes in `[from_minute, to_minute)`, by minute ascending.
    fn read_range(
        &self,
        series: &[MetricKey],
        from_minute: i64,
        to_minute: i64,
    ) -> impl Future<Output = Result<Vec<Vec<(i64, HotCell)>>, StoreError>> + Send;
}

/// A shared store is a store (standalone mode shares one between its roles).
impl<T: HotStore> HotStore for std::sync::Arc<T> {
    async fn offset(&self, partition: &PartitionId) -> Result<i64, StoreError> {
        (**self).offset(partition).await
    }
    async fn cells(
        &self,
        partition: &PartitionId,
        wanted: &[(MetricKey, i64)],
    ) -> Result<Vec<Option<HotCell>>, StoreError> {
        (**self).cells(partition, wanted).await
    }
    async fn totals(
        &self,
        partition: &PartitionId,
        series: &[MetricKey],
    ) -> Result<Vec<Option<(i64, f64)>>, StoreError> {
        (**self).totals(partition, series).await
    }
    async fn prune_totals(
        &self,
        partition: &PartitionId,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        (**self).prune_totals(partition, before_ms).await
    }
    async fn write(&self, write: HotWrite) -> Result<bool, StoreError> {
        (**self).write(write).await
    }
    async fn metrics(&self, tenant: &str) -> Result<Vec<(String, MetricType)>, StoreError> {
        (**self).metrics(tenant).await
    }
    async fn series(
        &self,
        tenant: &str,
        name: &str,
        since_minute: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        (**self).series(tenant, name, since_minute).await
    }
    async fn series_counts(
        &self,
        tenant: &str,
        since_minute: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        (**self).series_counts(tenant, since_minute).await
    }
    async fn rolled_up(&self, hours: &[i64]) -> Result<Vec<Option<i64>>, StoreError> {
        (**self).rolled_up(hours).await
    }
    async fn read_range(
        &self,
        series: &[MetricKey],
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<Vec<(i64, HotCell)>>, StoreError> {
        (**self).read_range(series, from_minute, to_minute).await
    }
}
