//! The log contract: keyed records produced by partitioners, consumed by a group of aggregators.
//!
//! Guarantees a backend must give: records with the same key land in the same partition in the order
//! produced; a consumer sees each partition's records in offset order; `send_all` returns `Ok` only
//! once every record is durably acknowledged (for Kafka: idempotent producer, `acks=all`).

use crate::StoreError;
use std::future::Future;
use std::time::Duration;

/// One consumed record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// When the record was produced (unix ms), if the backend knows.
    pub produced_ms: Option<i64>,
}

/// Produces keyed records.
pub trait LogProducer: Send + Sync + 'static {
    /// Sends every `(key, value)`; `Ok` only when all are acknowledged.
    fn send_all(
        &self,
        records: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Consumes a topic as a member of a group.
pub trait LogConsumer: Send + 'static {
    /// The topic consumed.
    fn topic(&self) -> &str;

    /// Up to `max` records, waiting at most `wait` for the first one.
    fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<LogRecord>, StoreError>> + Send;

    /// Records that the group has processed every record below `next_offset` of each partition.
    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), StoreError>;

    /// Partitions currently assigned to this member.
    fn assignment(&self) -> Vec<i32>;

    /// Makes the next records of `partition` start at `offset` (`-1`: the earliest retained).
    fn seek(&mut self, partition: i32, offset: i64) -> Result<(), StoreError>;
}
