//! The log contract: keyed records produced by partitioners, consumed by a group of aggregators.
//!
//! Guarantees a backend must give: records with the same key land in the same partition in the order
//! produced; a consumer sees each partition's records in offset order; `send_all` returns `Ok` only
//! once every record is durably acknowledged (for Kafka: idempotent producer, `acks=all`).
//!
//! Which partition: thermo places every record itself, with [`partition_of`] (64-bit FNV-1a of the
//! record's key, the series' metric key `tenant/name{tags}`, modulo the topic's partitions), in the
//! Kafka backend as in the embedded log, rather than leaving it to a client library's partitioner.
//! So whoever knows a series' key and the partition count knows where the series lives (the
//! aggregator that owns it, and its Redis hash slot with Redis Cluster). Adding partitions to the
//! topic moves series between partitions, as any hash partitioning does.

use crate::StoreError;
use std::future::Future;
use std::time::Duration;

/// The partition of a record with `key` in a topic of `partitions` partitions (at least 1):
/// `fnv1a_64(key) % partitions`. Never change it: it places every series.
pub fn partition_of(key: &[u8], partitions: u32) -> i32 {
    let n = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which fits an i32 (Kafka's partition ids).
    i32::try_from(thermo_core::aggregate::fnv1a(key) % n).unwrap_or(0)
}

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

    /// The topic's partition count (Kafka: read from the broker, waiting up to 5 s).
    fn partition_count(&mut self) -> Result<u32, StoreError>;

    /// Makes the next records of `partition` start at `offset` (`-1`: the earliest retained).
    fn seek(&mut self, partition: i32, offset: i64) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed apart (a few lines of Python) from FNV-1a's definition.
    const PINNED: [i32; 4] = [0, 11, 2, 11];

    /// Pinned: these placements are on disk and in Redis; a change here moves every series.
    #[test]
    fn partitions_are_fnv1a_of_the_key() {
        assert_eq!(thermo_core::aggregate::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        let placed: Vec<i32> = [
            "acme/http.requests{route=/a}",
            "acme/http.requests{route=/b}",
            "default/up",
            "globex/orders{site=globex,via=g-w}",
        ]
        .iter()
        .map(|k| partition_of(k.as_bytes(), 12))
        .collect();
        assert_eq!(placed, PINNED);
        for n in [1, 2, 7, 64, 1000] {
            for i in 0..500 {
                let p = partition_of(format!("t/m{{i={i}}}").as_bytes(), n);
                assert!((0..n as i32).contains(&p));
            }
        }
        assert_eq!(partition_of(b"anything", 0), 0, "0 partitions counts as 1");
    }
}
