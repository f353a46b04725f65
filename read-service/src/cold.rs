//! The read side of cold storage: a snapshot of the catalog ([`ColdView`]) and reads of the
//! selected series of objects through the cache ([`ColdReader`]).

use crate::cache::{rows_bytes, ColdCache, Entry};
use bytes::Bytes;
use prometheus::IntCounter;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::catalog::{object_key, Catalog};
use thermo_store::cold::ColdStore;
use thermo_store::cold_format::{corrupt, ColdRow};
use thermo_store::cold_select::{
    coalesce, read_rows, select_keys, Footer, RowGroupIndex, Sparse, Tail, TAIL_GUESS,
};
use thermo_store::{off_thread, StoreError};

/// What the catalog said when a query started: which chunks have objects (with their
/// generations), which coarse chunks are dirty, which hours have hot cells not yet rolled up.
///
/// The default (empty) view means "no cold storage": every hour is read from Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColdView {
    /// Chunk start → generation, per resolution.
    pub cold: BTreeMap<Resolution, BTreeMap<i64, u64>>,
    /// Chunks of 5m / 1h to be rebuilt (their objects, if any, are stale).
    pub dirty: BTreeMap<Resolution, BTreeSet<i64>>,
    /// Hour starts with hot cells that are not in a 1m object yet (`thermo:pending`).
    pub pending: BTreeSet<i64>,
}

fn is_empty_in<T>(set: Option<&BTreeSet<T>>, from: T, to: T) -> bool
where
    T: Ord,
{
    set.is_none_or(|s| s.range(from..to).next().is_none())
}

impl ColdView {
    /// The generation of the object of chunk `chunk` of `res`, if it has one.
    pub fn generation(&self, res: Resolution, chunk: i64) -> Option<u64> {
        self.cold.get(&res)?.get(&chunk).copied()
    }

    /// The generation of the 5m / 1h object of `chunk` if that object is complete: it exists, it
    /// is not dirty, no finer coarse chunk inside it is dirty, and no hour inside it has hot cells
    /// that are not rolled up (a late minute). Otherwise the chunk must be computed from finer data.
    pub fn usable(&self, res: Resolution, chunk: i64) -> Option<u64> {
        let generation = self.generation(res, chunk)?;
        let end = chunk + res.chunk_seconds();
        let mut level = Some(res);
        while let Some(r) = level.filter(|r| *r != Resolution::OneMinute) {
            if !is_empty_in(self.dirty.get(&r), chunk, end) {
                return None;
            }
            level = r.finer();
        }
        is_empty_in(Some(&self.pending), chunk, end).then_some(generation)
    }

    /// Reads the parts of the catalog a query at resolution `res` ending before `until` needs.
    ///
    /// Order matters, because the compactor moves a chunk along `pending` → `dirty(5m)` →
    /// `dirty(1h)` → clean, marking the next state before it clears the previous one: reading the
    /// states in the same order, a chunk is always seen in at least one of them while its coarse
    /// objects are stale.
    pub async fn load<K: Catalog>(
        catalog: &K,
        res: Resolution,
        until: i64,
    ) -> Result<Self, StoreError> {
        let mut v = ColdView {
            pending: catalog
                .pending_hours(until)
                .await?
                .into_iter()
                .map(|(h, _)| h)
                .collect(),
            ..Self::default()
        };
        let levels: Vec<Resolution> = Resolution::ALL.into_iter().filter(|r| *r <= res).collect();
        for r in levels.iter().filter(|r| r.finer().is_some()) {
            let dirty = catalog.dirty(*r).await?;
            v.dirty
                .insert(*r, dirty.into_iter().map(|(c, _)| c).collect());
        }
        for r in levels {
            v.cold.insert(r, catalog.cold_chunks(r).await?);
        }
        Ok(v)
    }
}

/// The counters of cold reads: objects skipped as corrupt, bytes fetched, and rows decoded.
#[derive(Clone)]
pub struct ColdCounters {
    pub corrupt: IntCounter,
    pub bytes_read: IntCounter,
    pub rows_decoded: IntCounter,
    pub keys_decoded: IntCounter,
}

impl ColdCounters {
    /// The counters, registered in `metrics`.
    pub fn with_metrics(metrics: &SelfMetrics) -> Self {
        Self {
            corrupt: metrics.counter(
                "cold_objects_corrupt_total",
                "cold objects that could not be decoded and were skipped",
            ),
            bytes_read: metrics.counter(
                "cold_bytes_read_total",
                "bytes read from the cold store (footers, page indexes, pages)",
            ),
            rows_decoded: metrics.counter(
                "cold_rows_decoded_total",
                "rows of cold objects whose window and state were decoded",
            ),
            keys_decoded: metrics.counter(
                "cold_keys_decoded_total",
                "series keys of cold objects decoded to find the selected series",
            ),
        }
    }

    /// Counters registered nowhere (tests, benchmarks).
    pub fn unregistered() -> Self {
        let c = |n: &str| IntCounter::new(n, n).unwrap_or_else(|_| unreachable!("valid name"));
        Self {
            corrupt: c("corrupt"),
            bytes_read: c("bytes_read"),
            rows_decoded: c("rows_decoded"),
            keys_decoded: c("keys_decoded"),
        }
    }
}

/// Which rows of an object one read wants.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub tenant: &'a str,
    pub metric: &'a str,
    pub filters: &'a [(String, String)],
}

impl Want<'_> {
    /// Whether `key` is a series of the metric with every tag of the filters.
    pub fn matches(&self, key: &MetricKey) -> bool {
        key.name() == self.metric
            && self
                .filters
                .iter()
                .all(|(k, v)| key.tag(k) == Some(v.as_str()))
    }

    /// The cache name of this selection in object `key`.
    fn cache_key(&self, key: &str) -> String {
        let mut filters: Vec<&(String, String)> = self.filters.iter().collect();
        filters.sort();
        let filters: Vec<String> = filters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{key}?{}{{{}}}", self.metric, filters.join(","))
    }
}

/// Reads the selected rows of cold objects: footer, page index, then only the pages of the
/// selected series ([`thermo_store::cold_select`]), each step through the cache.
pub struct ColdReader<C> {
    store: C,
    prefix: String,
    cache: ColdCache,
    counters: ColdCounters,
}

impl<C: ColdStore> ColdReader<C> {
    pub fn new(store: C, prefix: &str, cache: ColdCache, counters: ColdCounters) -> Self {
        Self {
            store,
            prefix: prefix.to_string(),
            cache,
            counters,
        }
    }

    pub fn cache(&self) -> &ColdCache {
        &self.cache
    }

    pub fn counters(&self) -> &ColdCounters {
        &self.counters
    }

    /// The rows of `want` in `tenant`'s chunk `chunk` of `res` at `generation` (every window of
    /// the chunk). `None` if the object is corrupt (logged and counted); empty if it is missing
    /// (deleted by retention after the catalog was read, or the tenant has no data there).
    pub async fn rows(
        &self,
        want: Want<'_>,
        res: Resolution,
        chunk: i64,
        generation: u64,
    ) -> Result<Option<Arc<Vec<ColdRow>>>, StoreError> {
        let key = object_key(&self.prefix, want.tenant, res, chunk);
        let name = want.cache_key(&key);
        if let Some(Entry::Rows(rows)) = self.cache.get(&name, generation) {
            return Ok(Some(rows));
        }
        match self.select(&key, generation, want).await {
            Ok(rows) => {
                let rows = Arc::new(rows);
                self.cache.insert(
                    &name,
                    generation,
                    Entry::Rows(rows.clone()),
                    rows_bytes(&rows) + name.len() as u64,
                );
                Ok(Some(rows))
            }
            Err(e @ StoreError::Corrupt { .. }) => {
                self.counters.corrupt.inc();
                tracing::warn!(%key, "skipped cold object: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn select(
        &self,
        key: &str,
        generation: u64,
        want: Want<'_>,
    ) -> Result<Vec<ColdRow>, StoreError> {
        let Some(footer) = self.footer(key, generation).await? else {
            return Ok(Vec::new());
        };
        let range = footer.key_range(want.tenant, want.metric, want.filters);
        let mut rows = Vec::new();
        for rg in footer.row_groups(&range) {
            let index = self.index(key, generation, &footer, rg).await?;
            let pages = index.key_fetch(&range);
            if pages.runs.is_empty() {
                continue;
            }
            let mut sparse = Sparse::new(footer.size());
            self.fetch(key, &footer, &pages.fetch, &mut sparse).await?;
            self.counters.keys_decoded.inc_by(pages.keys_decoded);
            let sparse = Arc::new(sparse);
            let (f, i, s, r) = (footer.clone(), index.clone(), sparse.clone(), range.clone());
            let want_owned = (want.metric.to_string(), want.filters.to_vec());
            let selected = off_thread("selecting series", move || {
                let w = Want {
                    tenant: "",
                    metric: &want_owned.0,
                    filters: &want_owned.1,
                };
                select_keys(&f, &i, &s, &pages, &r, |k| w.matches(k))
            })
            .await?;
            if selected.runs.is_empty() {
                continue;
            }
            let mut sparse = Arc::unwrap_or_clone(sparse);
            self.fetch(key, &footer, &index.data_fetch(&selected), &mut sparse)
                .await?;
            let (f, sparse) = (footer.clone(), Arc::new(sparse));
            let (part, decoded) = off_thread("reading rows", move || {
                read_rows(&f, &index, &sparse, &selected)
            })
            .await?;
            self.counters.rows_decoded.inc_by(decoded);
            rows.extend(part);
        }
        Ok(rows)
    }

    /// Fetches `ranges` (coalesced) of object `key` into `sparse`: from the object's bytes when
    /// the footer's read held all of it (a small object costs one request), else one ranged read
    /// per coalesced range.
    async fn fetch(
        &self,
        key: &str,
        footer: &Footer,
        ranges: &[Range<u64>],
        sparse: &mut Sparse,
    ) -> Result<(), StoreError> {
        if let Some(whole) = footer.whole() {
            for r in coalesce(ranges.iter().cloned()) {
                let (start, end) = (r.start as usize, r.end as usize);
                if end > whole.len() || start > end {
                    return Err(corrupt(format!("{key}: bytes {r:?} past its end")));
                }
                sparse.insert(r.start, whole.slice(start..end));
            }
            return Ok(());
        }
        for r in coalesce(ranges.iter().cloned()) {
            let bytes = self
                .store
                .get_range(key, r.start, r.end)
                .await?
                .ok_or_else(|| StoreError::Unavailable {
                    backend: "cold store",
                    detail: format!("{key}: deleted while read (retention); read again"),
                })?;
            if (bytes.len() as u64) < r.end - r.start {
                return Err(corrupt(format!("{key}: bytes {r:?} past its end")));
            }
            self.counters.bytes_read.inc_by(bytes.len() as u64);
            sparse.insert(r.start, Bytes::from(bytes));
        }
        Ok(())
    }

    /// The footer of object `key` (`None`: no such object), through the cache.
    async fn footer(&self, key: &str, generation: u64) -> Result<Option<Arc<Footer>>, StoreError> {
        match self.cache.get(key, generation) {
            Some(Entry::Footer(f)) => return Ok(Some(f)),
            Some(Entry::Missing) => return Ok(None),
            _ => {}
        }
        let mut len = TAIL_GUESS;
        loop {
            let Some((tail, size)) = self.store.get_tail(key, len).await? else {
                // The catalog lists chunks, not tenants: a tenant with no data in a chunk has no
                // object there. Remember the absence so it costs one GET.
                tracing::debug!(%key, "no cold object for this tenant and chunk");
                self.cache
                    .insert(key, generation, Entry::Missing, key.len() as u64);
                return Ok(None);
            };
            self.counters.bytes_read.inc_by(tail.len() as u64);
            match off_thread("reading a footer", move || {
                Footer::parse(Bytes::from(tail), size)
            })
            .await?
            {
                Tail::Footer(f) => {
                    let f: Arc<Footer> = Arc::from(f);
                    self.cache
                        .insert(key, generation, Entry::Footer(f.clone()), f.mem_bytes());
                    return Ok(Some(f));
                }
                Tail::Need(n) if n > len => len = n,
                Tail::Need(n) => return Err(corrupt(format!("{key}: footer of {n} bytes unread"))),
            }
        }
    }

    /// The page index of row group `rg` of object `key`, through the cache.
    async fn index(
        &self,
        key: &str,
        generation: u64,
        footer: &Arc<Footer>,
        rg: usize,
    ) -> Result<Arc<RowGroupIndex>, StoreError> {
        let name = format!("{key}#{rg}");
        if let Some(Entry::Index(i)) = self.cache.get(&name, generation) {
            return Ok(i);
        }
        let f = footer.clone();
        let index = match footer.index_ranges(rg) {
            None => RowGroupIndex::decode(&f, rg, None)?,
            Some([column_index, offsets]) => {
                let mut sparse = Sparse::new(footer.size());
                self.fetch(
                    key,
                    footer,
                    &[column_index.clone(), offsets.clone()],
                    &mut sparse,
                )
                .await?;
                off_thread("reading a page index", move || {
                    let ci = sparse.bytes(column_index)?;
                    let oi = sparse.bytes(offsets.clone())?;
                    RowGroupIndex::decode(&f, rg, Some((&ci, &oi, offsets.start)))
                })
                .await?
            }
        };
        let index = Arc::new(index);
        self.cache.insert(
            &name,
            generation,
            Entry::Index(index.clone()),
            index.mem_bytes(),
        );
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const WEEK: i64 = 604_800;

    #[test]
    fn coarse_objects_are_used_only_when_complete() {
        let mut v = ColdView::default();
        v.cold.insert(Resolution::FiveMinutes, [(DAY, 3)].into());
        v.cold.insert(Resolution::OneHour, [(WEEK, 1)].into());
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), Some(3));
        assert_eq!(v.usable(Resolution::FiveMinutes, 2 * DAY), None);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), Some(1));
        // A late minute in the day: its hour is pending again.
        v.pending.insert(DAY + 5 * 3600);
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), None);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), Some(1)); // not in that week
        v.pending.insert(WEEK + 3600);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
        v.pending.clear();
        // A day of the week being rebuilt makes the week's 1h object stale.
        v.dirty
            .insert(Resolution::FiveMinutes, [WEEK + 2 * DAY].into());
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), Some(3));
        v.dirty.clear();
        v.dirty.insert(Resolution::OneHour, [WEEK].into());
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
    }
}
