//! An in-memory cache of decoded cold objects, bounded in bytes, least recently used out first.
//!
//! An entry is keyed by object key *and* generation (the catalog's count of rewrites of that
//! chunk): asking for a generation other than the cached one is a miss and drops the old entry, so
//! a rewritten object is never served stale. The size of an entry is the byte length of the object
//! as stored (Parquet), not of its decoded rows; an object larger than the whole cache is not
//! cached.
//!
//! Self-metrics: `thermo_read_service_cold_cache_hits_total`, `..._cold_cache_misses_total` and the
//! gauge `..._cold_cache_bytes` (bytes held).

use prometheus::{IntCounter, IntGauge};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::cold_format::ColdRow;

/// The rows of one cold object, by metric name.
#[derive(Debug, Default)]
pub struct DecodedObject {
    by_metric: HashMap<String, Vec<ColdRow>>,
}

impl DecodedObject {
    pub fn new(rows: Vec<ColdRow>) -> Self {
        let mut by_metric: HashMap<String, Vec<ColdRow>> = HashMap::new();
        for r in rows {
            by_metric
                .entry(r.series.name().to_string())
                .or_default()
                .push(r);
        }
        Self { by_metric }
    }

    /// The rows of metric `name` (empty if the object has none).
    pub fn rows(&self, name: &str) -> &[ColdRow] {
        self.by_metric.get(name).map_or(&[], Vec::as_slice)
    }
}

struct Slot {
    generation: u64,
    object: Arc<DecodedObject>,
    bytes: u64,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    slots: HashMap<String, Slot>,
    /// Last use → key; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
    bytes: u64,
    tick: u64,
}

impl Lru {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, key: &str) {
        if let Some(s) = self.slots.remove(key) {
            self.order.remove(&s.tick);
            self.bytes -= s.bytes;
        }
    }

    fn evict_to(&mut self, capacity: u64) {
        while self.bytes > capacity {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(s) = self.slots.remove(&key) {
                self.bytes -= s.bytes;
            }
        }
    }
}

/// The decoded-object cache; cheap to share behind an `Arc`.
pub struct ColdCache {
    capacity: u64,
    lru: Mutex<Lru>,
    hits: IntCounter,
    misses: IntCounter,
    bytes: IntGauge,
}

impl ColdCache {
    /// A cache of at most `capacity` bytes, counting into the given metrics.
    pub fn new(capacity: u64, hits: IntCounter, misses: IntCounter, bytes: IntGauge) -> Self {
        Self {
            capacity,
            lru: Mutex::new(Lru::default()),
            hits,
            misses,
            bytes,
        }
    }

    /// A cache of at most `capacity` bytes with its self-metrics registered in `metrics`.
    pub fn with_metrics(capacity: u64, metrics: &SelfMetrics) -> Self {
        Self::new(
            capacity,
            metrics.counter(
                "cold_cache_hits_total",
                "cold object reads served by the cache",
            ),
            metrics.counter(
                "cold_cache_misses_total",
                "cold object reads that went to the cold store",
            ),
            metrics.gauge(
                "cold_cache_bytes",
                "bytes of cold objects held in the cache",
            ),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that matters
        // for a cache (worst case: a wrong byte count until entries are evicted).
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached object `key` at `generation`; counts a hit or a miss. A cached entry of another
    /// generation is dropped.
    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<DecodedObject>> {
        let mut lru = self.lock();
        let found = match lru.slots.get(key) {
            Some(s) if s.generation == generation => Some((s.tick, s.object.clone())),
            Some(_) => {
                lru.remove(key);
                None
            }
            None => None,
        };
        let Some((old_tick, object)) = found else {
            self.misses.inc();
            self.bytes.set(lru.bytes as i64);
            return None;
        };
        let tick = lru.next_tick();
        lru.order.remove(&old_tick);
        lru.order.insert(tick, key.to_string());
        if let Some(s) = lru.slots.get_mut(key) {
            s.tick = tick;
        }
        self.hits.inc();
        Some(object)
    }

    /// Caches `object` (stored size `bytes`) as `key` at `generation`, evicting the least recently
    /// used entries beyond the capacity.
    pub fn insert(&self, key: &str, generation: u64, object: Arc<DecodedObject>, bytes: u64) {
        let mut lru = self.lock();
        lru.remove(key);
        if bytes <= self.capacity {
            let tick = lru.next_tick();
            lru.order.insert(tick, key.to_string());
            lru.slots.insert(
                key.to_string(),
                Slot {
                    generation,
                    object,
                    bytes,
                    tick,
                },
            );
            lru.bytes += bytes;
            lru.evict_to(self.capacity);
        }
        self.bytes.set(lru.bytes as i64);
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: u64) -> ColdCache {
        ColdCache::new(
            capacity,
            IntCounter::new("h", "h").unwrap(),
            IntCounter::new("m", "m").unwrap(),
            IntGauge::new("b", "b").unwrap(),
        )
    }

    fn obj() -> Arc<DecodedObject> {
        Arc::new(DecodedObject::default())
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let c = cache(100);
        c.insert("a", 1, obj(), 40);
        c.insert("b", 1, obj(), 40);
        assert!(c.get("a", 1).is_some()); // a is now more recent than b
        c.insert("c", 1, obj(), 40); // 120 > 100: b goes
        assert_eq!(c.bytes(), 80);
        assert!(c.get("b", 1).is_none());
        assert!(c.get("a", 1).is_some());
        assert!(c.get("c", 1).is_some());
        c.insert("big", 1, obj(), 101); // larger than the cache: not kept, nothing evicted
        assert!(c.get("big", 1).is_none());
        assert_eq!(c.bytes(), 80);
        assert_eq!(c.bytes.get(), 80);
        c.insert("d", 1, obj(), 100); // evicts both others
        assert_eq!(c.bytes(), 100);
        assert!(c.get("a", 1).is_none() && c.get("c", 1).is_none());
    }

    #[test]
    fn counts_hits_and_misses() {
        let c = cache(1000);
        assert!(c.get("a", 1).is_none());
        c.insert("a", 1, obj(), 10);
        assert!(c.get("a", 1).is_some());
        assert!(c.get("a", 1).is_some());
        assert_eq!((c.hits.get(), c.misses.get()), (2, 1));
    }

    #[test]
    fn another_generation_is_a_miss_and_drops_the_old_entry() {
        let c = cache(1000);
        c.insert("a", 1, obj(), 10);
        assert!(c.get("a", 2).is_none());
        assert_eq!(c.bytes(), 0);
        assert!(c.get("a", 1).is_none()); // the stale entry is gone
        c.insert("a", 2, obj(), 30);
        c.insert("a", 3, obj(), 20); // a re-insert replaces, never adds up
        assert_eq!(c.bytes(), 20);
        assert!(c.get("a", 3).is_some());
        assert_eq!((c.hits.get(), c.misses.get()), (1, 2));
    }

    #[test]
    fn rows_are_indexed_by_metric() {
        use thermo_core::aggregate::{Aggregate, Counter};
        use thermo_core::codec::HotCell;
        use thermo_core::key::MetricKey;
        let row = |name: &str| ColdRow {
            series: MetricKey::new("t", name, vec![]).unwrap(),
            window_start: 0,
            cell: HotCell {
                contributors: vec![],
                agg: Aggregate::Counter(Counter::default()),
            },
        };
        let o = DecodedObject::new(vec![row("a"), row("b"), row("a")]);
        assert_eq!(o.rows("a").len(), 2);
        assert_eq!(o.rows("b").len(), 1);
        assert!(o.rows("c").is_empty());
    }
}
