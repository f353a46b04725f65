//! Cold reads of one series and of a whole metric, through the read service's real path
//! (`evaluate`: plan, object reads through the cache, stitching, step buckets), in a tenant of 100
//! and one of 100,000 counter series (`req{host=h0..}`), on the local-directory cold store (the
//! same Parquet objects the S3 backend stores). Prints a table: per query the median time with a
//! cold cache (a new reader each run) and with a warm one, the points answered, the rows the
//! reader selected, the rows and keys it decoded and the bytes it read.
//!
//! Data: 1m objects (one per hour, every row with its contribution id, as the compactor writes
//! them) for the 7 days before `END`, and 1h objects (one per epoch-aligned week) for the 365 days
//! before it. The 100-series tenant has all 168 + 53 objects. The 100,000-series tenant has one
//! real object of each resolution (the last hour: 6,000,000 rows; the last week: 16,800,000 rows),
//! and its other chunks are hard links to it: 221 distinct objects would need 25 GB and an hour to
//! encode. A read of a linked object does the same work as a read of a real one (same footer, same
//! pages, same rows selected); only the last chunk's rows fall in their chunk's time range, so
//! that tenant's multi-chunk queries answer fewer points than they read.
//!
//! The 100,000-series tenant is also written in layout 2 (without the row-group directory), so
//! that each table compares the layouts in one run. Then the choices of
//! `thermo_store::cold_format`, measured on the 100,000-series hour: the row group size, and
//! whether a bloom filter on `series_key` pays (a query of a series the object does not hold).
//!
//! `cargo bench --workspace --bench cold_query` (about 10 minutes); `cargo bench --workspace
//! --bench cold_query -- hour` measures only the one-series hour, in both tenants and both
//! layouts, in interleaved rounds (about 4 minutes): the ratio the target is about, each
//! round's own.

use prometheus::{IntCounter, IntGauge};
use std::path::{Path, PathBuf};
use std::time::Instant;
use thermo_core::aggregate::{Aggregate, Counter};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::query::Stat;
use thermo_core::window::{chunks_in, Resolution};
use thermo_read_service::cache::ColdCache;
use thermo_read_service::cold::{ColdCounters, ColdReader, ColdView, Want};
use thermo_read_service::query::{evaluate, Cold, GroupBy, QueryParams};
use thermo_read_service::stitch::Bounds;
use thermo_store::catalog::object_key;
use thermo_store::cold::{ColdStore, LocalDirCold};
use thermo_store::cold_format::{encode_tuned, ColdRow, Tuning};
use thermo_store::mem_hot::MemHot;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 604_800;
/// An epoch-aligned week start (2026-11-26T00:00:00Z is a Thursday, like the epoch): every query
/// ends here.
const END: i64 = 1_795_651_200 + WEEK;
const PREFIX: &str = "cold/v1";
const TENANT: &str = "acme";

fn key(i: usize) -> MetricKey {
    MetricKey::new(TENANT, "req", vec![("host".into(), format!("h{i}"))]).expect("valid key")
}

/// The rows of `n` counter series over the chunk of `res` that starts at `chunk`.
fn rows(n: usize, res: Resolution, chunk: i64) -> Vec<ColdRow> {
    let windows = res.chunk_seconds() / res.seconds();
    let minute = res == Resolution::OneMinute;
    let keys: Vec<MetricKey> = (0..n).map(key).collect();
    keys.into_iter()
        .enumerate()
        .flat_map(|(i, series)| {
            (0..windows).map(move |w| ColdRow {
                series: series.clone(),
                window_start: chunk + w * res.seconds(),
                cell: HotCell {
                    // 1m rows carry their contribution id; coarser rows have none.
                    contributors: if minute {
                        vec![(0x9e37_79b9 ^ i as u64, 1_000 + w as u64)]
                    } else {
                        Vec::new()
                    },
                    agg: Aggregate::Counter(Counter {
                        sum: (i * 7 + w as usize % 13) as f64,
                        samples: 3,
                    }),
                },
            })
        })
        .collect()
}

fn cache() -> ColdCache {
    let c = |n: &str| IntCounter::new(n, n).expect("counter");
    ColdCache::new(
        1 << 30,
        c("hits"),
        c("misses"),
        IntGauge::new("bytes", "bytes").expect("gauge"),
    )
}

/// One tenant's objects in a local-directory cold store of its own.
struct Tenant {
    series: usize,
    dir: PathBuf,
    store: LocalDirCold,
    view: ColdView,
    /// How its objects are laid out (the compactor's default, or layout 2).
    tuning: Tuning,
}

impl Tenant {
    fn new(series: usize, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "thermo-bench-cold-{tag}-{series}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            series,
            store: LocalDirCold::new(&dir),
            dir,
            view: ColdView::default(),
            tuning: Tuning::default(),
        }
    }

    /// The same tenant with objects of layout 2 (no row-group directory).
    fn layout2(series: usize, tag: &str) -> Self {
        let mut t = Self::new(series, &format!("{tag}-layout2"));
        t.tuning.directory = false;
        t
    }

    /// The tenant as the tables show it: its series, and its layout unless the default.
    fn label(&self) -> String {
        let layout = if self.tuning.directory {
            ""
        } else {
            " (layout 2)"
        };
        format!("{}{layout}", self.series)
    }

    fn path(&self, res: Resolution, chunk: i64) -> PathBuf {
        self.dir.join(object_key(PREFIX, TENANT, res, chunk))
    }

    fn put(&mut self, rt: &tokio::runtime::Runtime, res: Resolution, chunk: i64, bytes: Vec<u8>) {
        rt.block_on(
            self.store
                .put(&object_key(PREFIX, TENANT, res, chunk), bytes),
        )
        .expect("put");
        self.view.cold.entry(res).or_default().insert(chunk, 1);
    }

    /// Chunk `chunk` of `res` as a hard link to the object of chunk `to`.
    fn link(&mut self, res: Resolution, chunk: i64, to: i64) {
        let path = self.path(res, chunk);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::hard_link(self.path(res, to), path).expect("link");
        self.view.cold.entry(res).or_default().insert(chunk, 1);
    }

    /// Every chunk of `res` in `[from, END)`: real objects, or (`link`) one real object of the
    /// last chunk and links to it. Returns the last chunk's object size.
    fn fill(
        &mut self,
        rt: &tokio::runtime::Runtime,
        res: Resolution,
        from: i64,
        link: bool,
    ) -> usize {
        let chunks: Vec<i64> = chunks_in(res, from, END).collect();
        let last = *chunks.last().expect("a chunk");
        let started = Instant::now();
        let bytes = encode_tuned(res, rows(self.series, res, last), self.tuning).expect("encode");
        let size = bytes.len();
        println!(
            "  {} series, {} object of chunk {last}: {} rows, {size} bytes, encoded in {:.1} s",
            self.series,
            res.as_str(),
            self.series as i64 * res.chunk_seconds() / res.seconds(),
            started.elapsed().as_secs_f64()
        );
        self.put(rt, res, last, bytes);
        for &chunk in &chunks[..chunks.len() - 1] {
            if link {
                self.link(res, chunk, last);
            } else {
                let bytes =
                    encode_tuned(res, rows(self.series, res, chunk), self.tuning).expect("encode");
                self.put(rt, res, chunk, bytes);
            }
        }
        size
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A query of `req` over `[END - span, END)` at resolution `res` and step `step`: of `host=h7`
/// (`one`), or of every series.
fn query(span: i64, res: Resolution, step: i64, host: Option<&str>) -> QueryParams {
    QueryParams {
        metric: "req".into(),
        from: END - span,
        to: END,
        step,
        stat: Stat::Sum,
        filters: host
            .map(|h| vec![("host".to_string(), h.to_string())])
            .unwrap_or_default(),
        group_by: if host.is_some() {
            GroupBy::All
        } else {
            GroupBy::Each
        },
        resolution: res,
    }
}

/// What one query cost.
struct Figures {
    cold_ms: f64,
    warm_ms: f64,
    points: usize,
    rows_selected: u64,
    rows_decoded: u64,
    keys_decoded: u64,
    bytes_read: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn new_reader(t: &Tenant) -> ColdReader<LocalDirCold> {
    ColdReader::new(
        t.store.clone(),
        PREFIX,
        cache(),
        ColdCounters::unregistered(),
    )
}

/// Runs `p` once on `t` through `reader`: the time in ms and the points answered.
fn run_once(
    rt: &tokio::runtime::Runtime,
    t: &Tenant,
    p: &QueryParams,
    reader: &ColdReader<LocalDirCold>,
) -> (f64, usize) {
    let cold = Cold {
        reader,
        view: &t.view,
    };
    let started = Instant::now();
    let r = rt
        .block_on(evaluate(
            &MemHot::new(),
            Some(cold),
            TENANT,
            p,
            Bounds::series(200_000),
        ))
        .expect("query");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    (ms, r.series.iter().map(|s| s.points.len()).sum())
}

/// Runs `p` on `t` `runs` times with a cold cache and `runs` times with a warm one.
fn measure(rt: &tokio::runtime::Runtime, t: &Tenant, p: &QueryParams, runs: usize) -> Figures {
    let mut cold = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let r = new_reader(t);
        let (ms, points) = run_once(rt, t, p, &r);
        cold.push(ms);
        last = Some((r, points));
    }
    let (warm_reader, points) = last.expect("a run");
    let c = warm_reader.counters();
    let figures = (
        c.rows_selected.get(),
        c.rows_decoded.get(),
        c.keys_decoded.get(),
        c.bytes_read.get(),
    );
    let warm: Vec<f64> = (0..runs)
        .map(|_| run_once(rt, t, p, &warm_reader).0)
        .collect();
    assert_eq!(
        warm_reader.counters().rows_decoded.get(),
        figures.1,
        "a warm query decodes nothing"
    );
    Figures {
        cold_ms: median(cold),
        warm_ms: median(warm),
        points,
        rows_selected: figures.0,
        rows_decoded: figures.1,
        keys_decoded: figures.2,
        bytes_read: figures.3,
    }
}

fn row(name: &str, t: &Tenant, f: &Figures) {
    println!(
        "| {name} | {} | {:.2} | {:.3} | {} | {} | {} | {} | {} |",
        t.label(),
        f.cold_ms,
        f.warm_ms,
        f.points,
        f.rows_selected,
        f.rows_decoded,
        f.keys_decoded,
        f.bytes_read
    );
}

/// What the read service did before layout 2: fetch the whole object, decode every row with the
/// parquet row API, keep the rows of the selected series. Returns the rows kept.
fn whole_object_rows(bytes: Vec<u8>, keep: &dyn Fn(&MetricKey) -> bool) -> usize {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
    let mut n = 0;
    for row in reader.get_row_iter(None).expect("rows") {
        let row = row.expect("row");
        let series = MetricKey::parse(row.get_string(3).expect("key")).expect("series");
        let _window = row.get_long(4).expect("window");
        let _cell = HotCell::decode(row.get_bytes(15).expect("state").data()).expect("cell");
        n += usize::from(keep(&series));
    }
    n
}

/// The median time of the whole-object reads of the 1m objects of the last `hours` hours, and
/// the rows kept.
fn whole_object(
    rt: &tokio::runtime::Runtime,
    t: &Tenant,
    hours: i64,
    keep: &dyn Fn(&MetricKey) -> bool,
    runs: usize,
) -> (f64, usize) {
    let mut times = Vec::new();
    let mut kept = 0;
    for _ in 0..runs {
        let started = Instant::now();
        kept = 0;
        for h in 1..=hours {
            let key = object_key(PREFIX, TENANT, Resolution::OneMinute, END - h * HOUR);
            let bytes = rt
                .block_on(t.store.get(&key))
                .expect("get")
                .expect("object");
            kept += whole_object_rows(bytes, keep);
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    (median(times), kept)
}

/// The reader's steps on one object held in memory, each timed alone (mean of `runs`): the copy
/// of the tail a read fetches first, the footer's decode (layout 3: the directory's), the row
/// group's metadata (layout 3: its own footer's decode) and page index, the key pages and the
/// data pages; in ms.
fn steps(path: &Path, runs: usize) {
    use bytes::Bytes;
    use thermo_store::cold_select::{read_rows, select_keys, Footer, RowGroupIndex, Sparse, Tail};
    let all = Bytes::from(std::fs::read(path).expect("object"));
    let size = all.len() as u64;
    let tail_len = LocalDirCold::new(path).tail_guess().min(size);
    let filters = [("host".to_string(), "h7".to_string())];
    let mut sparse = Sparse::new(size);
    sparse.insert(0, all.clone());
    let sparse = std::sync::Arc::new(sparse);
    let mut t = [0f64; 5];
    let mut timed = |i: usize, started: Instant| t[i] += started.elapsed().as_secs_f64();
    for _ in 0..runs {
        let started = Instant::now();
        let tail = Bytes::copy_from_slice(&all[(size - tail_len) as usize..]);
        timed(0, started);
        let started = Instant::now();
        let Tail::Footer(footer) = Footer::parse(tail, size).expect("footer") else {
            panic!("the tail holds the footer")
        };
        timed(1, started);
        let range = footer.key_range(TENANT, "req", &filters);
        for rg in footer.row_groups(&range) {
            let started = Instant::now();
            let at = |r: &std::ops::Range<u64>| all.slice(r.start as usize..r.end as usize);
            let own = footer.group_range(rg).map(|r| at(&r));
            let group = footer.group(rg, own.as_deref()).expect("row group");
            let [ci, oi] = group.index_ranges().expect("a page index");
            let (ci_bytes, oi_bytes) = (at(&ci), at(&oi));
            let index = RowGroupIndex::decode(group, Some((&ci_bytes, &oi_bytes, oi.start)))
                .expect("index");
            timed(2, started);
            let started = Instant::now();
            let pages = index.key_fetch(&range);
            let selected = select_keys(&index, &sparse, &pages, &range, |k| {
                k.tags().iter().any(|(_, v)| v == "h7")
            })
            .expect("keys");
            timed(3, started);
            let started = Instant::now();
            let (rows, _) = read_rows(&index, &sparse, &selected).expect("rows");
            timed(4, started);
            assert_eq!(rows.len(), 60);
        }
    }
    let ms = |i: usize| t[i] * 1e3 / runs as f64;
    println!(
        "  tail copy ({tail_len} B) {:.3}, footer {:.3}, row group metadata and page index {:.3}, key pages {:.3}, data pages {:.3} (ms)",
        ms(0),
        ms(1),
        ms(2),
        ms(3),
        ms(4)
    );
}

fn footer_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("object");
    let n = bytes.len();
    let len: [u8; 4] = bytes[n - 8..n - 4].try_into().expect("4 bytes");
    u32::from_le_bytes(len) as u64 + 8
}

/// The one-series hour in the 100-series tenant and in the 100,000-series tenant, in layout 3
/// and in layout 2, with a cold cache, in rounds of 201 triples of runs (one of each, so that each
/// triple sees the machine in the same state): per round the three medians and the medians of the
/// triples' ratios.
fn hour_rounds(rt: &tokio::runtime::Runtime, rounds: usize) {
    let mut small = Tenant::new(100, "hour");
    small.fill(rt, Resolution::OneMinute, END - HOUR, false);
    let mut large = Tenant::new(100_000, "hour");
    large.fill(rt, Resolution::OneMinute, END - HOUR, false);
    let mut large2 = Tenant::layout2(100_000, "hour");
    large2.fill(rt, Resolution::OneMinute, END - HOUR, false);
    let p = query(HOUR, Resolution::OneMinute, 60, Some("h7"));
    println!("| round | 100 series, cold ms | 100,000, cold ms | 100,000 (layout 2), cold ms | median ratio, layout 3 | median ratio, layout 2 |\n|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        let mut ratios = [Vec::new(), Vec::new()];
        for _ in 0..201 {
            let run = |t: &Tenant| {
                let (ms, points) = run_once(rt, t, &p, &new_reader(t));
                assert_eq!(points, 60);
                ms
            };
            let (a, b, c) = (run(&small), run(&large), run(&large2));
            ratios[0].push(b / a);
            ratios[1].push(c / a);
            for (i, ms) in [a, b, c].into_iter().enumerate() {
                times[i].push(ms);
            }
        }
        let [s, l, l2] = times;
        let [r3, r2] = ratios;
        println!(
            "| {round} | {:.3} | {:.3} | {:.3} | {:.2}x | {:.2}x |",
            median(s),
            median(l),
            median(l2),
            median(r3),
            median(r2)
        );
    }
    println!("\nThe steps of one series' hour, 100,000-series 1m object, in memory (no I/O), mean of 2,000:");
    steps(&large.path(Resolution::OneMinute, END - HOUR), 2_000);
    println!("  the same in layout 2:");
    steps(&large2.path(Resolution::OneMinute, END - HOUR), 2_000);
}

fn main() {
    // `cargo bench` passes `--bench`; the one filter understood is `hour`.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if std::env::args().any(|a| a == "hour") {
        hour_rounds(&rt, 5);
        return;
    }
    let header = "| query | tenant series | cold cache ms | warm cache ms | points | rows selected | rows decoded | keys decoded | bytes read (cold) |\n|---|---|---|---|---|---|---|---|---|";

    println!("objects:");
    let mut small = Tenant::new(100, "main");
    let small_1m = small.fill(&rt, Resolution::OneMinute, END - 7 * DAY, false);
    let small_1h = small.fill(&rt, Resolution::OneHour, END - 365 * DAY, false);
    let mut large = Tenant::new(100_000, "main");
    large.fill(&rt, Resolution::OneMinute, END - 7 * DAY, true);
    large.fill(&rt, Resolution::OneHour, END - 365 * DAY, true);
    let mut large2 = Tenant::layout2(100_000, "main");
    large2.fill(&rt, Resolution::OneMinute, END - 7 * DAY, true);
    large2.fill(&rt, Resolution::OneHour, END - 365 * DAY, true);
    println!(
        "bytes per stored counter point: 1m {:.1} ({small_1m} B / 6,000), 1h {:.1} ({small_1h} B / 16,800)",
        small_1m as f64 / 6_000.0,
        small_1h as f64 / 16_800.0
    );

    println!("\nOne series (host=h7), median of 201 runs (1 hour) or 5 runs each:\n{header}");
    let one = [
        (
            "1 hour at 1m",
            query(HOUR, Resolution::OneMinute, 60, Some("h7")),
        ),
        (
            "7 days at 1m",
            query(7 * DAY, Resolution::OneMinute, 60, Some("h7")),
        ),
        (
            "365 days at 1h",
            query(365 * DAY, Resolution::OneHour, 3600, Some("h7")),
        ),
    ];
    for (i, (name, p)) in one.iter().enumerate() {
        for t in [&small, &large, &large2] {
            row(name, t, &measure(&rt, t, p, if i == 0 { 201 } else { 5 }));
        }
    }

    println!("\nEvery series of the metric (100 series), median of 5 runs each:\n{header}");
    for (name, p) in [
        ("1 hour at 1m", query(HOUR, Resolution::OneMinute, 60, None)),
        (
            "7 days at 1m",
            query(7 * DAY, Resolution::OneMinute, 60, None),
        ),
    ] {
        row(name, &small, &measure(&rt, &small, &p, 5));
    }

    println!("\nBefore layout 2 (fetch each 1m object whole, decode every row; no stitching):");
    let h7 = key(7);
    for (name, t, runs) in [("one series", &small, 5), ("one series", &large, 1)] {
        let (ms, kept) = whole_object(&rt, t, 1, &|k| k == &h7, runs);
        assert_eq!(kept, 60);
        println!("  {name}, 1 hour, {} series: {ms:.1} ms", t.series);
    }
    let (ms, kept) = whole_object(&rt, &small, 1, &|_| true, 5);
    assert_eq!(kept, 6_000);
    println!("  every series, 1 hour, 100 series: {ms:.1} ms");
    let (ms, kept) = whole_object(&rt, &small, 168, &|_| true, 3);
    assert_eq!(kept, 1_008_000);
    println!("  every series, 7 days, 100 series: {ms:.1} ms");

    println!("\nRow group size (layout 3), 100,000-series 1m object, one series' hour, median of 201 runs:");
    println!("| rows per row group | object bytes | footer bytes | cold cache ms | bytes read | keys decoded | rows decoded |\n|---|---|---|---|---|---|---|");
    let hour_rows = || rows(100_000, Resolution::OneMinute, END - HOUR);
    let one_hour = query(HOUR, Resolution::OneMinute, 60, Some("h7"));
    for rg in [1 << 15, 1 << 16, 1 << 17, 1 << 18] {
        let tuning = Tuning {
            row_group_rows: rg,
            ..Tuning::default()
        };
        let bytes = encode_tuned(Resolution::OneMinute, hour_rows(), tuning).expect("encode");
        let size = bytes.len();
        let mut t = Tenant::new(100_000, &format!("rg{rg}"));
        t.put(&rt, Resolution::OneMinute, END - HOUR, bytes);
        let f = measure(&rt, &t, &one_hour, 201);
        println!(
            "| {rg} | {size} | {} | {:.2} | {} | {} | {} |",
            footer_len(&t.path(Resolution::OneMinute, END - HOUR)),
            f.cold_ms,
            f.bytes_read,
            f.keys_decoded,
            f.rows_decoded
        );
    }

    println!("\nThe steps of one series' hour, 100,000-series 1m object, in memory (no I/O), mean of 2,000:");
    steps(&large.path(Resolution::OneMinute, END - HOUR), 2_000);
    println!("  the same in layout 2:");
    steps(&large2.path(Resolution::OneMinute, END - HOUR), 2_000);
    drop((large, large2));

    println!("\nBloom filter on series_key, 100,000-series 1m object, a series it does not hold, median of 201 runs:");
    let filters = [("host".to_string(), "h100000".to_string())];
    let absent = Want {
        tenant: TENANT,
        metric: "req",
        filters: &filters,
    };
    let mut sizes = Vec::new();
    for bloom in [false, true] {
        let tuning = Tuning {
            key_bloom_filter: bloom,
            ..Tuning::default()
        };
        let bytes = encode_tuned(Resolution::OneMinute, hour_rows(), tuning).expect("encode");
        sizes.push(bytes.len());
        if bloom {
            break; // the reader does not consult a filter: only its size matters
        }
        let mut t = Tenant::new(100_000, "bloom");
        t.put(&rt, Resolution::OneMinute, END - HOUR, bytes);
        let mut times = Vec::new();
        let mut counters = ColdCounters::unregistered();
        for _ in 0..201 {
            counters = ColdCounters::unregistered();
            let reader = ColdReader::new(t.store.clone(), PREFIX, cache(), counters.clone());
            let started = Instant::now();
            let rows = rt
                .block_on(reader.rows(absent, Resolution::OneMinute, END - HOUR, 1))
                .expect("read")
                .expect("object");
            times.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(rows.is_empty(), "the series is not there");
        }
        println!(
            "  without a filter: {:.2} ms cold, {} keys decoded, {} bytes read",
            median(times),
            counters.keys_decoded.get(),
            counters.bytes_read.get()
        );
    }
    let row_groups = 6_000_000usize.div_ceil(Tuning::default().row_group_rows);
    println!(
        "  with a filter (1% false positives): the object grows by {} bytes, {} per row group, which a read of one series would fetch in one more request round to skip the decode of at most one key page",
        sizes[1] - sizes[0],
        (sizes[1] - sizes[0]) / row_groups
    );
}
