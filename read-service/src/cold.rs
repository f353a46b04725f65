//! The read side of cold storage: a snapshot of the catalog ([`ColdView`]) and reads of the
//! selected series of objects through the cache ([`ColdReader`]).

use crate::cache::{rows_bytes, ColdCache, Entry};
use bytes::Bytes;
use futures_util::FutureExt;
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
    coalesce, read_rows, select_keys, Footer, RowGroupIndex, Sparse, Tail,
};
use thermo_store::{off_thread, off_thread_unless, StoreError};

/// Decoding this small runs on the async thread, not on a blocking one (a hand-off costs tens of
/// microseconds; `thermo_store::off_thread_unless`). Each bound is about 0.4 ms of work at the
/// rates measured on the 2-core benchmark machine (2026-12-03): a footer parses at about 4 ns a
/// byte, a page index at about 3, `series_key` pages at about 0.2 µs a key, `window_start` and
/// `state` pages at about 7 ns a byte.
const INLINE_FOOTER_BYTES: u64 = 96 << 10;
const INLINE_INDEX_BYTES: u64 = 128 << 10;
const INLINE_KEYS: u64 = 2048;
const INLINE_PAGE_BYTES: u64 = 64 << 10;
/// Candidate rows (those of the `series_key` pages that may hold the selected series) up to which
/// their `window_start` and `state` pages are fetched with the keys, before the keys say which
/// rows match: at most four pages of 128 rows more than needed, for one request round less.
const PREFETCH_ROWS: u64 = 512;

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

/// The counters of cold reads: objects skipped as corrupt, bytes fetched, keys and rows decoded,
/// and rows selected.
#[derive(Clone)]
pub struct ColdCounters {
    pub corrupt: IntCounter,
    pub bytes_read: IntCounter,
    pub rows_decoded: IntCounter,
    pub keys_decoded: IntCounter,
    pub rows_selected: IntCounter,
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
            rows_selected: metrics.counter(
                "cold_rows_selected_total",
                "rows of the selected series read from cold objects (rows_decoded / rows_selected is the read's overhead)",
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
            rows_selected: c("rows_selected"),
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
///
/// An object's read is one blocking task when the store's reads block (a local directory,
/// [`ColdStore::blocking`]): its file reads and decodes run there one after the other, one
/// hand-off in all. On S3 each request is awaited, and only a decode too long for an async
/// worker goes to a blocking thread ([`Io`]).
pub struct ColdReader<C> {
    store: Arc<C>,
    prefix: String,
    cache: Arc<ColdCache>,
    counters: ColdCounters,
}

impl<C> Clone for ColdReader<C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            cache: self.cache.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// How one object's read does its I/O and decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// On an async worker: each request awaited, a long decode handed to a blocking thread.
    Awaited,
    /// On a blocking thread already: file reads and decodes inline.
    Blocking,
}

impl Io {
    /// Runs a decode: inline when it is `small` or this read is on a blocking thread already.
    async fn decode<T: Send + 'static>(
        self,
        small: bool,
        what: &str,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        off_thread_unless(small || self == Io::Blocking, what, f).await
    }
}

impl<C: ColdStore> ColdReader<C> {
    pub fn new(store: C, prefix: &str, cache: ColdCache, counters: ColdCounters) -> Self {
        Self {
            store: Arc::new(store),
            prefix: prefix.to_string(),
            cache: Arc::new(cache),
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

    /// The rows of `want` in object `key`: read on a blocking thread, whole, when the store's
    /// reads block; else awaited request by request.
    async fn select(
        &self,
        key: &str,
        generation: u64,
        want: Want<'_>,
    ) -> Result<Vec<ColdRow>, StoreError> {
        if self.store.blocking().is_none() {
            return self.select_with(Io::Awaited, key, generation, want).await;
        }
        let (this, key) = (self.clone(), key.to_string());
        let (tenant, metric, filters) = (
            want.tenant.to_string(),
            want.metric.to_string(),
            want.filters.to_vec(),
        );
        off_thread("reading a cold object", move || {
            let want = Want {
                tenant: &tenant,
                metric: &metric,
                filters: &filters,
            };
            // Every await of a blocking read is ready at once: its I/O and decodes run inline.
            this.select_with(Io::Blocking, &key, generation, want)
                .now_or_never()
                .unwrap_or_else(|| {
                    Err(StoreError::Invalid(format!(
                        "{key}: a blocking read waited"
                    )))
                })
        })
        .await
    }

    async fn select_with(
        &self,
        io: Io,
        key: &str,
        generation: u64,
        want: Want<'_>,
    ) -> Result<Vec<ColdRow>, StoreError> {
        // `held`: the object's bytes fetched by this read (the tail read for the footer, if it was
        // read now, then page indexes and pages), so no range is fetched twice.
        let Some((footer, mut held)) = self.footer(io, key, generation).await? else {
            return Ok(Vec::new());
        };
        let range = footer.key_range(want.tenant, want.metric, want.filters);
        let mut rows = Vec::new();
        for rg in footer.row_groups(&range) {
            let index = self
                .index(io, key, generation, &footer, rg, &mut held)
                .await?;
            let pages = index.key_fetch(&range);
            if pages.runs.is_empty() {
                continue;
            }
            // Few candidate rows (an equality filter on the leading tags): their data pages come
            // in the same round of requests as their keys, one round trip less per object.
            let mut ranges = pages.fetch.clone();
            if pages.keys_decoded <= PREFETCH_ROWS {
                ranges.extend(index.data_fetch_rows(&pages.runs));
            }
            self.fetch(io, key, &footer, &ranges, &mut held).await?;
            self.counters.keys_decoded.inc_by(pages.keys_decoded);
            let small = pages.keys_decoded <= INLINE_KEYS;
            let sparse = Arc::new(held);
            let (i, s, r) = (index.clone(), sparse.clone(), range.clone());
            let want_owned = (want.metric.to_string(), want.filters.to_vec());
            let selected = io
                .decode(small, "selecting series", move || {
                    let w = Want {
                        tenant: "",
                        metric: &want_owned.0,
                        filters: &want_owned.1,
                    };
                    select_keys(&i, &s, &pages, &r, |k| w.matches(k))
                })
                .await?;
            held = Arc::unwrap_or_clone(sparse);
            if selected.runs.is_empty() {
                continue;
            }
            let data = index.data_fetch(&selected);
            let small = data.iter().map(|r| r.end - r.start).sum::<u64>() <= INLINE_PAGE_BYTES;
            self.fetch(io, key, &footer, &data, &mut held).await?;
            let sparse = Arc::new(held);
            let s = sparse.clone();
            let read = move || read_rows(&index, &s, &selected);
            let (part, decoded) = io.decode(small, "reading rows", read).await?;
            held = Arc::unwrap_or_clone(sparse);
            self.counters.rows_decoded.inc_by(decoded);
            self.counters.rows_selected.inc_by(part.len() as u64);
            rows.extend(part);
        }
        Ok(rows)
    }

    /// Fetches the `ranges` of object `key` that `held` does not hold yet into it: from the
    /// object's bytes when the footer's read held all of it (a small object costs one request),
    /// else one ranged read per coalesced range ([`ColdStore::get_ranges`]).
    async fn fetch(
        &self,
        io: Io,
        key: &str,
        footer: &Footer,
        ranges: &[Range<u64>],
        held: &mut Sparse,
    ) -> Result<(), StoreError> {
        let missing = coalesce(ranges.iter().filter(|r| !held.covers(r)).cloned());
        if let Some(whole) = footer.whole() {
            for r in missing {
                let (start, end) = (r.start as usize, r.end as usize);
                if end > whole.len() || start > end {
                    return Err(corrupt(format!("{key}: bytes {r:?} past its end")));
                }
                held.insert(r.start, whole.slice(start..end));
            }
            return Ok(());
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fetched = match (io, self.store.blocking()) {
            (Io::Blocking, Some(b)) => b.get_ranges_now(key, missing.clone())?,
            _ => self.store.get_ranges(key, missing.clone()).await?,
        };
        let fetched = fetched.ok_or_else(|| StoreError::Unavailable {
            backend: "cold store",
            detail: format!("{key}: deleted while read (retention); read again"),
        })?;
        if fetched.len() != missing.len() {
            return Err(StoreError::Invalid(format!(
                "{key}: {} ranges asked, {} answered",
                missing.len(),
                fetched.len()
            )));
        }
        for (r, bytes) in missing.into_iter().zip(fetched) {
            if (bytes.len() as u64) < r.end - r.start {
                return Err(corrupt(format!("{key}: bytes {r:?} past its end")));
            }
            self.counters.bytes_read.inc_by(bytes.len() as u64);
            held.insert(r.start, Bytes::from(bytes));
        }
        Ok(())
    }

    /// The footer of object `key` (`None`: no such object), through the cache, and the bytes
    /// read for it: its tail, when it was read now and is not the whole object (which the footer
    /// keeps), else nothing.
    async fn footer(
        &self,
        io: Io,
        key: &str,
        generation: u64,
    ) -> Result<Option<(Arc<Footer>, Sparse)>, StoreError> {
        match self.cache.get(key, generation) {
            Some(Entry::Footer(f)) => {
                let held = Sparse::new(f.size());
                return Ok(Some((f, held)));
            }
            Some(Entry::Missing) => return Ok(None),
            _ => {}
        }
        let mut len = self.store.tail_guess();
        loop {
            let tail = match (io, self.store.blocking()) {
                (Io::Blocking, Some(b)) => b.get_tail_now(key, len)?,
                _ => self.store.get_tail(key, len).await?,
            };
            let Some((tail, size)) = tail else {
                // The catalog lists chunks, not tenants: a tenant with no data in a chunk has no
                // object there. Remember the absence so it costs one GET.
                tracing::debug!(%key, "no cold object for this tenant and chunk");
                self.cache
                    .insert(key, generation, Entry::Missing, key.len() as u64);
                return Ok(None);
            };
            self.counters.bytes_read.inc_by(tail.len() as u64);
            let tail = Bytes::from(tail);
            let parsed = tail.clone();
            let small = Footer::len_in(&tail).is_some_and(|n| n <= INLINE_FOOTER_BYTES);
            let parse = move || Footer::parse(parsed, size);
            match io.decode(small, "reading a footer", parse).await? {
                Tail::Footer(f) => {
                    let f: Arc<Footer> = Arc::from(f);
                    self.cache
                        .insert(key, generation, Entry::Footer(f.clone()), f.mem_bytes());
                    let mut held = Sparse::new(size);
                    if f.whole().is_none() {
                        held.insert(size - tail.len() as u64, tail);
                    }
                    return Ok(Some((f, held)));
                }
                Tail::Need(n) if n > len => len = n,
                Tail::Need(n) => return Err(corrupt(format!("{key}: footer of {n} bytes unread"))),
            }
        }
    }

    /// The page index of row group `rg` of object `key`, through the cache; in layout 3 with the
    /// row group's own footer, fetched first (a few kilobytes, decoded on the calling thread).
    async fn index(
        &self,
        io: Io,
        key: &str,
        generation: u64,
        footer: &Arc<Footer>,
        rg: usize,
        held: &mut Sparse,
    ) -> Result<Arc<RowGroupIndex>, StoreError> {
        let name = format!("{key}#{rg}");
        if let Some(Entry::Index(i)) = self.cache.get(&name, generation) {
            return Ok(i);
        }
        let group = match footer.group_range(rg) {
            None => footer.group(rg, None)?,
            Some(own) => {
                self.fetch(io, key, footer, std::slice::from_ref(&own), held)
                    .await?;
                footer.group(rg, Some(&held.bytes(own)?))?
            }
        };
        let index = match group.index_ranges() {
            None => RowGroupIndex::decode(group, None)?,
            Some([column_index, offsets]) => {
                self.fetch(
                    io,
                    key,
                    footer,
                    &[column_index.clone(), offsets.clone()],
                    held,
                )
                .await?;
                let ci = held.bytes(column_index)?;
                let oi = held.bytes(offsets.clone())?;
                let small = (ci.len() + oi.len()) as u64 <= INLINE_INDEX_BYTES;
                io.decode(small, "reading a page index", move || {
                    RowGroupIndex::decode(group, Some((&ci, &oi, offsets.start)))
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
    use crate::query::{evaluate, Cold, GroupBy, QueryParams};
    use crate::stitch::Bounds;
    use prometheus::IntGauge;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::codec::HotCell;
    use thermo_core::query::Stat;
    use thermo_store::cold::LocalDirCold;
    use thermo_store::cold_format::{encode_tuned, Tuning, KEY_PAGE_ROWS, PAGE_ROWS};
    use thermo_store::mem_hot::MemHot;

    const DAY: i64 = 86_400;
    const WEEK: i64 = 604_800;

    /// A store whose reads are awaited, as S3's are: the local directory without its blocking
    /// reads.
    struct Awaited(LocalDirCold);

    impl ColdStore for Awaited {
        async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
            self.0.put(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            start: u64,
            end: u64,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get_range(key, start, end).await
        }
        async fn get_ranges(
            &self,
            key: &str,
            ranges: Vec<Range<u64>>,
        ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
            self.0.get_ranges(key, ranges).await
        }
        async fn get_tail(
            &self,
            key: &str,
            len: u64,
        ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
            self.0.get_tail(key, len).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key).await
        }
        fn tail_guess(&self) -> u64 {
            self.0.tail_guess()
        }
    }

    /// A one-series query decodes the pages of that series only: if pruning stops working (row
    /// groups, key pages, data pages), the counts of decoded rows and keys fail here. Both ways of
    /// reading: the whole object read as one blocking task (a local directory), and request by
    /// request (S3).
    #[tokio::test]
    async fn one_series_query_decodes_only_that_series_pages() {
        let dir = std::env::temp_dir().join(format!("thermo-cold-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = LocalDirCold::new(&dir);
        assert!(local.blocking().is_some());
        one_series_decodes_only_its_pages(local.clone()).await;
        let awaited = Awaited(local);
        assert!(awaited.blocking().is_none());
        one_series_decodes_only_its_pages(awaited).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn one_series_decodes_only_its_pages<C: ColdStore>(store: C) {
        const SERIES: usize = 2_500;
        let hour = 1_800_000_000; // an hour start
        let key = |i: usize| {
            MetricKey::new("acme", "req", vec![("host".into(), format!("h{i}"))]).unwrap()
        };
        let rows: Vec<ColdRow> = (0..SERIES)
            .flat_map(|i| {
                (0..60).map(move |m| ColdRow {
                    series: key(i),
                    window_start: hour + m * 60,
                    cell: HotCell {
                        contributors: vec![(i as u64, m as u64)],
                        agg: Aggregate::Counter(Counter {
                            sum: (i + m as usize) as f64,
                            samples: 1,
                        }),
                    },
                })
            })
            .collect();
        let tuning = Tuning {
            row_group_rows: 20_000,
            ..Tuning::default()
        };
        let bytes = encode_tuned(Resolution::OneMinute, rows, tuning).unwrap();
        let size = bytes.len() as u64;
        assert!(size > 1 << 20, "an object read by ranges: {size} bytes");
        let object = object_key("cold", "acme", Resolution::OneMinute, hour);
        store.put(&object, bytes).await.unwrap();
        let c = |n: &str| IntCounter::new(n, n).unwrap();
        let cache = ColdCache::new(64 << 20, c("h"), c("m"), IntGauge::new("b", "b").unwrap());
        let tail = store.tail_guess();
        let reader = ColdReader::new(store, "cold", cache, ColdCounters::unregistered());
        let view = ColdView {
            cold: [(Resolution::OneMinute, [(hour, 1)].into())].into(),
            ..ColdView::default()
        };
        let p = QueryParams {
            metric: "req".into(),
            from: hour,
            to: hour + 3600,
            step: 60,
            stat: Stat::Sum,
            filters: vec![("host".into(), "h1234".into())],
            group_by: GroupBy::All,
            resolution: Resolution::OneMinute,
        };
        let query = || async {
            let cold = Cold {
                reader: &reader,
                view: &view,
            };
            evaluate(&MemHot::new(), Some(cold), "acme", &p, Bounds::series(100))
                .await
                .unwrap()
        };

        let r = query().await;
        let sums: Vec<f64> = r.series[0].points.iter().map(|p| p.1).collect();
        assert_eq!(sums, (0..60).map(|m| (1234 + m) as f64).collect::<Vec<_>>());
        let n = reader.counters();
        assert_eq!(n.rows_selected.get(), 60);
        // The 60 rows of one series lie in one page of each column (pages end between series),
        // one of fewer than its row count plus 60.
        assert!(
            n.rows_decoded.get() < PAGE_ROWS as u64 + 60,
            "{}",
            n.rows_decoded.get()
        );
        assert!(
            n.keys_decoded.get() < KEY_PAGE_ROWS as u64 + 60,
            "{}",
            n.keys_decoded.get()
        );
        // The tail (footer, offset indexes), a column index and a few pages: not the object.
        let (read, decoded) = (n.bytes_read.get(), n.rows_decoded.get());
        assert!(read <= tail + (32 << 10), "{read} of {size} bytes read");

        // Warm: from the cache, nothing decoded or read again.
        let again = query().await;
        assert_eq!(again.series, r.series);
        let now = (
            n.rows_selected.get(),
            n.rows_decoded.get(),
            n.bytes_read.get(),
        );
        assert_eq!(now, (60, decoded, read));
    }

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
