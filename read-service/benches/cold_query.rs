//! A 30-day query of one series at 1-hour resolution, served from cold storage, with a cold and a
//! warm object cache; plus the stored bytes per counter point.
//!
//! Setup: one tenant, 100 counter series (`req{host=h0..h99}`), 5 weeks of 1h objects (one
//! object per epoch-aligned week, 16,800 rows each) in a local-directory cold store (the same
//! Parquet objects the S3 backend stores). The query reads `req{host=h7}` over the last 30 days
//! at step 3600.
//!
//! Then the case of issue 18: one series' hour at 1m from the 1m object of a tenant of 100 and of
//! 20,000 counter series (`req{host=h0..}`, each row with its contribution id, as 1m rows are),
//! cold cache: the selective read (footer, page index, then only the pages of that series) against
//! fetching and decoding the whole object with the parquet row API, which is what the read service
//! did before the layout of `thermo_store::cold_format` version 2 (one row group).
//!
//! `cargo bench --workspace --bench cold_query`

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus::{IntCounter, IntGauge};
use std::collections::BTreeMap;
use thermo_core::aggregate::{Aggregate, Counter};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::query::Stat;
use thermo_core::window::Resolution;
use thermo_read_service::cache::ColdCache;
use thermo_read_service::cold::{ColdCounters, ColdReader, ColdView};
use thermo_read_service::query::{evaluate, Cold, GroupBy, QueryParams};
use thermo_store::catalog::object_key;
use thermo_store::cold::{ColdStore, LocalDirCold};
use thermo_store::cold_format::{encode, ColdRow};
use thermo_store::mem_hot::MemHot;

const WEEK: i64 = 604_800;
/// An epoch-aligned week start (2026-11-26T00:00:00Z is a Thursday, like the epoch).
const END: i64 = 1_795_651_200 + WEEK;
const SERIES: usize = 100;

fn key(i: usize) -> MetricKey {
    MetricKey::new("acme", "req", vec![("host".into(), format!("h{i}"))]).expect("valid key")
}

fn counter(sum: f64, samples: u64, contributors: Vec<(u64, u64)>) -> HotCell {
    HotCell {
        contributors,
        agg: Aggregate::Counter(Counter { sum, samples }),
    }
}

fn cache(bytes: u64) -> ColdCache {
    let c = |n: &str| IntCounter::new(n, n).expect("counter");
    ColdCache::new(
        bytes,
        c("hits"),
        c("misses"),
        IntGauge::new("bytes", "bytes").expect("gauge"),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join(format!("thermo-bench-cold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalDirCold::new(&dir);
    let mut chunks = BTreeMap::new();
    let mut stored = 0usize;
    for w in 0..5 {
        let chunk = END - (5 - w) * WEEK;
        let rows: Vec<ColdRow> = (0..SERIES)
            .flat_map(|i| {
                (0..168).map(move |h| ColdRow {
                    series: key(i),
                    window_start: chunk + h * 3600,
                    cell: counter((i + h as usize) as f64, 60, Vec::new()),
                })
            })
            .collect();
        let bytes = encode(Resolution::OneHour, rows).expect("encode");
        stored += bytes.len();
        rt.block_on(store.put(
            &object_key("cold/v1", "acme", Resolution::OneHour, chunk),
            bytes,
        ))
        .expect("put");
        chunks.insert(chunk, 1u64);
    }
    // Bytes per counter point: a 1m object of one hour of 100 counter series (each row carries
    // its contribution id, as 1m rows do), and the 1h objects above.
    let one_minute = minute_object(SERIES, END).len();
    println!(
        "bytes per stored counter point: 1m object {:.1} ({} bytes / {} points), 1h objects {:.1} ({} bytes / {} points)",
        one_minute as f64 / (SERIES * 60) as f64,
        one_minute,
        SERIES * 60,
        stored as f64 / (SERIES * 168 * 5) as f64,
        stored,
        SERIES * 168 * 5
    );

    let view = ColdView {
        cold: [(Resolution::OneHour, chunks)].into_iter().collect(),
        ..ColdView::default()
    };
    let hot = MemHot::new();
    let p = QueryParams {
        metric: "req".into(),
        from: END - 30 * 86_400,
        to: END,
        step: 3600,
        stat: Stat::Sum,
        filters: vec![("host".into(), "h7".into())],
        group_by: GroupBy::All,
        resolution: Resolution::OneHour,
    };
    let reader = || {
        ColdReader::new(
            store.clone(),
            "cold/v1",
            cache(256 << 20),
            ColdCounters::unregistered(),
        )
    };
    // One query through `reader`; checks that every hour of the 30 days was answered.
    let run = |reader: &ColdReader<LocalDirCold>| {
        let cold = Cold {
            reader,
            view: &view,
        };
        let r = rt
            .block_on(evaluate(&hot, Some(cold), "acme", &p, 10_000))
            .expect("query");
        assert_eq!(
            r.series[0].points.len(),
            30 * 24,
            "every hour of 30 days answered"
        );
    };

    let mut g = c.benchmark_group("cold_query_30d_1h");
    g.sample_size(20);
    g.bench_function("cold_cache", |b| b.iter(|| run(&reader())));
    let warm = reader();
    g.bench_function("warm_cache", |b| b.iter(|| run(&warm)));
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 1m object of hour `hour` for a tenant of `n` counter series.
fn minute_object(n: usize, hour: i64) -> Vec<u8> {
    let rows: Vec<ColdRow> = (0..n)
        .flat_map(|i| {
            (0..60).map(move |m| ColdRow {
                series: key(i),
                window_start: hour + m * 60,
                cell: counter(
                    (i * 7 + m as usize % 13) as f64,
                    3,
                    vec![(0x9e37_79b9 ^ i as u64, 1_000 + m as u64)],
                ),
            })
        })
        .collect();
    encode(Resolution::OneMinute, rows).expect("encode")
}

/// What the read service did before: the whole object, every row decoded with the row API, then
/// the selected series kept.
fn whole_object_rows(bytes: Vec<u8>, want: &MetricKey) -> usize {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
    let mut n = 0;
    for row in reader.get_row_iter(None).expect("rows") {
        let row = row.expect("row");
        let series = MetricKey::parse(row.get_string(3).expect("key")).expect("series");
        let _window = row.get_long(4).expect("window");
        let cell = HotCell::decode(row.get_bytes(15).expect("state").data()).expect("cell");
        if &series == want {
            n += usize::from(cell.agg.metric_type() == thermo_core::aggregate::MetricType::Counter);
        }
    }
    n
}

fn one_series_hour(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let hour = END;
    let mut g = c.benchmark_group("one_series_hour_1m_cold_cache");
    g.sample_size(10);
    for n in [100usize, 20_000] {
        let dir = std::env::temp_dir().join(format!("thermo-bench-one-{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LocalDirCold::new(&dir);
        let bytes = minute_object(n, hour);
        println!("tenant of {n} series: 1m object of {} bytes", bytes.len());
        let object = object_key("cold/v1", "acme", Resolution::OneMinute, hour);
        rt.block_on(store.put(&object, bytes)).expect("put");
        let view = ColdView {
            cold: [(Resolution::OneMinute, [(hour, 1u64)].into())]
                .into_iter()
                .collect(),
            ..ColdView::default()
        };
        let hot = MemHot::new();
        let p = QueryParams {
            metric: "req".into(),
            from: hour,
            to: hour + 3600,
            step: 60,
            stat: Stat::Sum,
            filters: vec![("host".into(), "h7".into())],
            group_by: GroupBy::All,
            resolution: Resolution::OneMinute,
        };
        g.bench_function(format!("selective/{n}_series"), |b| {
            b.iter(|| {
                let counters = ColdCounters::unregistered();
                let reader = ColdReader::new(store.clone(), "cold/v1", cache(256 << 20), counters);
                let cold = Cold {
                    reader: &reader,
                    view: &view,
                };
                let r = rt
                    .block_on(evaluate(&hot, Some(cold), "acme", &p, 10_000))
                    .expect("query");
                assert_eq!(r.series[0].points.len(), 60, "every minute of the hour");
                assert!(
                    reader.counters().rows_decoded.get() < 1_000,
                    "only the series' pages are decoded"
                );
            })
        });
        let want = key(7);
        g.bench_function(format!("whole_object/{n}_series"), |b| {
            b.iter(|| {
                let bytes = rt
                    .block_on(store.get(&object))
                    .expect("get")
                    .expect("object");
                assert_eq!(whole_object_rows(bytes, &want), 60);
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, bench, one_series_hour);
criterion_main!(benches);
