//! An in-memory cache of what cold reads decoded, bounded in bytes, least recently used out first.
//!
//! It holds, per object, the parsed footer (or that the object is missing), the page index of each
//! row group read, and the rows of each selection (metric and filters) a query read ([`Entry`]).
//! An entry is keyed by a name *and* the object's generation (the catalog's count of rewrites of
//! that chunk): asking for a generation other than the cached one is a miss and drops the old
//! entry, so a rewritten object is never served stale. The size of an entry is the memory it holds
//! (estimated from its contents: [`rows_bytes`], `Footer::mem_bytes`, `RowGroupIndex::mem_bytes`);
//! an entry larger than the whole cache is not cached.
//!
//! Self-metrics: `thermo_read_service_cold_cache_hits_total`, `..._cold_cache_misses_total` (one per
//! lookup of an entry) and the gauge `..._cold_cache_bytes` (bytes held).

use prometheus::{IntCounter, IntGauge};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use thermo_core::aggregate::Aggregate;
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::cold_format::ColdRow;
use thermo_store::cold_select::{Footer, RowGroupIndex};

/// One cached thing.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The object does not exist (a tenant without data in a chunk has no object there).
    Missing,
    /// The object's footer.
    Footer(Arc<Footer>),
    /// The page index of one row group.
    Index(Arc<RowGroupIndex>),
    /// The rows of one selection.
    Rows(Arc<Vec<ColdRow>>),
}

/// Memory held by `rows`, estimated: the rows themselves, their keys' strings and their states'
/// allocations (contributions, an HDR histogram's counts, a set's members).
pub fn rows_bytes(rows: &[ColdRow]) -> u64 {
    let fixed = std::mem::size_of::<ColdRow>() as u64;
    rows.iter()
        .map(|r| {
            let key = r.series.tenant().len()
                + r.series.name().len()
                + r.series
                    .tags()
                    .iter()
                    .map(|(k, v)| 48 + k.len() + v.len())
                    .sum::<usize>();
            let agg = match &r.cell.agg {
                Aggregate::Histogram(h) => 64 + h.hdr.distinct_values() * 8,
                Aggregate::Set(s) => s.members.len() * 40,
                _ => 0,
            };
            fixed + (key + r.cell.contributors.capacity() * 16 + agg) as u64
        })
        .sum()
}

struct Slot {
    generation: u64,
    entry: Entry,
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

/// The cold read cache; cheap to share behind an `Arc`.
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
                "cold cache lookups (footers, page indexes, selected rows) served from memory",
            ),
            metrics.counter(
                "cold_cache_misses_total",
                "cold cache lookups that had to read the cold store",
            ),
            metrics.gauge(
                "cold_cache_bytes",
                "memory held by the cold cache (estimated from its entries)",
            ),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that matters
        // for a cache (worst case: a wrong byte count until entries are evicted).
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached entry `key` at `generation`; counts a hit or a miss. A cached entry of another
    /// generation is dropped.
    pub fn get(&self, key: &str, generation: u64) -> Option<Entry> {
        let mut lru = self.lock();
        let found = match lru.slots.get(key) {
            Some(s) if s.generation == generation => Some((s.tick, s.entry.clone())),
            Some(_) => {
                lru.remove(key);
                None
            }
            None => None,
        };
        let Some((old_tick, entry)) = found else {
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
        Some(entry)
    }

    /// Caches `entry` (holding `bytes` of memory) as `key` at `generation`, evicting the least
    /// recently used entries beyond the capacity.
    pub fn insert(&self, key: &str, generation: u64, entry: Entry, bytes: u64) {
        let mut lru = self.lock();
        lru.remove(key);
        if bytes <= self.capacity {
            let tick = lru.next_tick();
            lru.order.insert(tick, key.to_string());
            lru.slots.insert(
                key.to_string(),
                Slot {
                    generation,
                    entry,
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

    fn obj() -> Entry {
        Entry::Missing
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
    fn rows_bytes_counts_what_the_rows_allocate() {
        use thermo_core::aggregate::{Counter, Hist};
        use thermo_core::codec::HotCell;
        use thermo_core::key::MetricKey;
        let key = MetricKey::new("t", "abc", vec![("k".into(), "vv".into())]).unwrap();
        let row = |agg: Aggregate, contributors: Vec<(u64, u64)>| ColdRow {
            series: key.clone(),
            window_start: 0,
            cell: HotCell { contributors, agg },
        };
        let fixed = std::mem::size_of::<ColdRow>() as u64;
        let key_bytes = 1 + 3 + 48 + 1 + 2;
        let counter = row(Aggregate::Counter(Counter::default()), vec![(1, 2)]);
        assert_eq!(
            rows_bytes(std::slice::from_ref(&counter)),
            fixed + key_bytes + 16
        );
        let mut h = Hist::new();
        h.record(5.0, 1);
        let counts = h.hdr.distinct_values() as u64 * 8;
        let hist = row(Aggregate::Histogram(h), vec![]);
        assert_eq!(
            rows_bytes(&[counter, hist]),
            2 * fixed + 2 * key_bytes + 16 + 64 + counts
        );
    }
}
