//! A 30-day query of one series at 1-hour resolution, served from cold storage, with a cold and a
//! warm object cache; plus the stored bytes per counter point.
//!
//! Setup: one tenant, 100 counter series (`req{host=h0..h99}`), 5 weeks of 1h objects (one
//! object per epoch-aligned week, 16,800 rows each) in a local-directory cold store (the same
//! Parquet objects the S3 backend stores). The query reads `req{host=h7}` over the last 30 days
//! at step 3600.
//!
//! `cargo bench -p thermo-read-service --bench cold_query`

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus::{IntCounter, IntGauge};
use std::collections::BTreeMap;
use thermo_core::aggregate::{Aggregate, Counter};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::query::Stat;
use thermo_core::window::Resolution;
use thermo_read_service::cache::ColdCache;
use thermo_read_service::cold::{ColdReader, ColdView};
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
    let minute_rows: Vec<ColdRow> = (0..SERIES)
        .flat_map(|i| {
            (0..60).map(move |m| ColdRow {
                series: key(i),
                window_start: END + m * 60,
                cell: counter(
                    (i * 7 + m as usize % 13) as f64,
                    3,
                    vec![(0x9e37_79b9 ^ i as u64, 1_000 + m as u64)],
                ),
            })
        })
        .collect();
    let one_minute = encode(Resolution::OneMinute, minute_rows)
        .expect("encode")
        .len();
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
    let corrupt = IntCounter::new("corrupt", "corrupt").expect("counter");
    let reader = || ColdReader::new(store.clone(), "cold/v1", cache(256 << 20), corrupt.clone());
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

criterion_group!(benches, bench);
criterion_main!(benches);
