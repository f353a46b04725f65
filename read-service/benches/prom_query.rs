//! The Prometheus API beside the native API on the same data, through the read service's router
//! (every step of a request but the socket: parameters, PromQL evaluation or the native query,
//! stitching, JSON), hot (the embedded hot store, thermo's Redis stand-in) and cold (Parquet
//! objects in a local-directory cold store, the catalog marking them). Prints a table: per query
//! the median time, the points answered and the answer's bytes, and each Prometheus query's time
//! over its native counterpart's.
//!
//! Data (tenant `default`, every window before `END`, all final):
//! - 100 counter series `req{host=h0..h99}`, one cell per minute over 25 hours: hot, in the hot
//!   store; cold, in the 25 hourly 1m objects (the hot store empty).
//! - 100 timer series `lat{host=h0..h99}`, 20 values of 1 to 400 ms per minute: cold, in the 1h
//!   object of the epoch-aligned week before `END` (16,800 rows); hot, the last 6 hours of minutes
//!   in the hot store (36,000 cells). Not 7 days hot: a decoded HDR state of values up to 400 ms
//!   holds 10,240 counts (80 KB), so 7 days of minutes of 100 series would be 80 GB in the
//!   embedded store; with cold storage on, a 7-day query reads Redis only for the hours not yet
//!   in an object.
//!
//! Queries: `query_range` over 24 h at step 60 of every counter series (`req`, beside the native
//! `group_by=*`) and of their sum's rate (`sum(rate(req[5m]))`, beside the native sum); the
//! timers' per-series p99 at step 3600 (`histogram_quantile(0.99, rate(lat[1h]))`, beside the
//! native `stat=p99&group_by=*`) and over all series, over 7 days cold and 6 hours hot. Cold runs
//! start with an empty object cache (a new router each run); the counters' are also timed warm.
//! Each pair is run 9 times, the two APIs one after the other in each run: the table gives each
//! API's median and the median of the runs' ratios (the machine's drift cancels in a ratio).
//!
//! `cargo bench --workspace --bench prom_query` (about 6 minutes, 8 GB of memory at its peak);
//! `cargo bench --workspace --bench prom_query -- lat` runs only the queries whose description
//! holds one of the words given.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use thermo_core::aggregate::{Aggregate, Counter, Hist};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;
use thermo_read_service::api::{router, AppState, ColdSide};
use thermo_read_service::{cold_side, ReadConfig};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::catalog::{object_key, Catalog};
use thermo_store::cold::{ColdStore, LocalDirCold};
use thermo_store::cold_format::{encode, ColdRow};
use thermo_store::mem_catalog::MemCatalog;
use thermo_store::mem_hot::MemHot;
use tower::ServiceExt;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 604_800;
/// An epoch-aligned week start (2026-12-03T00:00:00Z, a Thursday like the epoch).
const END: i64 = 1_796_256_000;
const SERIES: usize = 100;
/// Hours of counter minutes: the 24 h asked and the hour before (a range's look back).
const COUNTER_HOURS: i64 = 25;
/// Hours of timer minutes in the hot store.
const HOT_TIMER_HOURS: i64 = 6;

fn key(name: &str, i: usize) -> MetricKey {
    MetricKey::new("default", name, vec![("host".into(), format!("h{i}"))]).expect("valid key")
}

/// Series `i`'s counter cell of the minute starting at `minute`.
fn counter(i: usize, minute: i64) -> HotCell {
    HotCell {
        contributors: vec![(0x9e37_79b9 ^ i as u64, minute as u64)],
        agg: Aggregate::Counter(Counter {
            sum: (i * 7 + (minute / 60) as usize % 13) as f64,
            samples: 3,
        }),
    }
}

/// Series `i`'s timer state of the window starting at `window`: 20 values of 1 to 400 ms.
fn timer(i: usize, window: i64, contributed: bool) -> HotCell {
    let mut h = Hist::new();
    for k in 0..20u64 {
        let x = (i as u64 * 31 + (window / 60) as u64 * 17 + k * 7919) % 4000;
        h.record(1.0 + x as f64 / 10.0, 1);
    }
    HotCell {
        contributors: if contributed {
            vec![(0x51 ^ i as u64, window as u64)]
        } else {
            Vec::new()
        },
        agg: Aggregate::Histogram(h),
    }
}

fn config(cold: bool) -> ReadConfig {
    ReadConfig {
        cold_enabled: cold,
        query_timeout_ms: 600_000,
        max_samples: u64::MAX,
        ..ReadConfig::default()
    }
}

type Cold = ColdSide<MemCatalog, LocalDirCold>;

/// The cold side: objects of `dir`, the catalog marking `chunks`, over a hot store that holds
/// only the metric index (Redis keeps a tenant's names and types for good): one cell of each
/// metric 30 days before the data.
fn cold_router(
    rt: &tokio::runtime::Runtime,
    dir: &PathBuf,
    chunks: &[(Resolution, i64)],
) -> Router {
    let cfg = config(true);
    let hot = Arc::new(MemHot::new());
    let long_ago = END - 30 * DAY;
    hot.insert(key("req", 0), long_ago, counter(0, long_ago));
    hot.insert(key("lat", 0), long_ago, timer(0, long_ago, true));
    let catalog = MemCatalog::new(hot.clone());
    for &(res, chunk) in chunks {
        rt.block_on(catalog.mark_cold(res, chunk)).expect("mark");
    }
    let metrics = SelfMetrics::new("read_service", "queries");
    let cold = cold_side(&cfg, catalog, LocalDirCold::new(dir), &metrics);
    router(AppState::new(cfg, hot, Some(cold), metrics))
}

fn hot_router(hot: Arc<MemHot>) -> Router {
    router(AppState::new(
        config(false),
        hot,
        None::<Cold>,
        SelfMetrics::new("read_service", "queries"),
    ))
}

/// One GET: its answer's bytes, and the points (values or histograms) it holds.
async fn get(router: &Router, uri: &str) -> (usize, usize) {
    let resp = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, StatusCode::OK, "{uri}: {body:?}");
    let v: Value = serde_json::from_slice(&body).expect("json");
    let points = |series: &Value, field: &str| {
        series
            .as_array()
            .expect("series")
            .iter()
            .map(|s| s[field].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    let n = if v["data"].is_object() {
        points(&v["data"]["result"], "values") + points(&v["data"]["result"], "histograms")
    } else {
        points(&v["series"], "points")
    };
    (body.len(), n)
}

/// A query of both APIs.
struct Pair {
    what: &'static str,
    prom: String,
    native: String,
}

fn prom(query: &str, start: i64, end: i64, step: i64) -> String {
    let q = serde_urlencoded::to_string([
        ("query", query),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("step", &step.to_string()),
    ])
    .expect("encode");
    format!("/prometheus/api/v1/query_range?{q}")
}

fn native(params: &str, from: i64, to: i64, step: i64) -> String {
    format!("/api/v1/query?{params}&from={from}&to={to}&step={step}")
}

/// How a table's routers are made: one for every run (`Fresh`: an empty object cache) or one
/// for all (`Shared`: the cache warm after an untimed first run).
#[derive(Clone, Copy, PartialEq)]
enum Routers {
    Fresh,
    Shared,
}

/// Runs each pair `RUNS` times, the two APIs one after the other in every run, and prints per
/// pair the median times, the median of the runs' ratios, the points and the answers' bytes.
fn table(
    rt: &tokio::runtime::Runtime,
    label: &str,
    make: &dyn Fn() -> Router,
    routers: Routers,
    pairs: &[Pair],
) {
    const RUNS: usize = 9;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for p in pairs {
        if !only.is_empty() && !only.iter().any(|o| p.what.contains(o.as_str())) {
            continue;
        }
        let shared = make();
        // Untimed: the answers' sizes, the shared cache filled, the allocator settled.
        let (pb, pn) = rt.block_on(get(&shared, &p.prom));
        let (nb, nn) = rt.block_on(get(&shared, &p.native));
        let (mut pt, mut nt, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let one = |uri: &str| {
                let r = match routers {
                    Routers::Fresh => make(),
                    Routers::Shared => shared.clone(),
                };
                let started = Instant::now();
                rt.block_on(get(&r, uri));
                started.elapsed().as_secs_f64()
            };
            let (a, b) = (one(&p.prom), one(&p.native));
            pt.push(a);
            nt.push(b);
            ratio.push(a / b);
        }
        println!(
            "| {label} | {} | {:.1} ms | {:.1} ms | {:.2}× | {pn} / {nn} | {} / {} KB |",
            p.what,
            median(pt) * 1e3,
            median(nt) * 1e3,
            median(ratio),
            pb / 1024,
            nb / 1024
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("thermo-bench-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalDirCold::new(&dir);
    let prefix = config(true).cold_prefix;
    let started = Instant::now();

    // Counters: hot cells and hourly 1m objects of the same minutes.
    let hot = Arc::new(MemHot::new());
    let mut counter_chunks = Vec::new();
    for h in 0..COUNTER_HOURS {
        let hour = END - (COUNTER_HOURS - h) * HOUR;
        let mut rows = Vec::with_capacity(SERIES * 60);
        for i in 0..SERIES {
            for m in 0..60 {
                let minute = hour + 60 * m;
                hot.insert(key("req", i), minute, counter(i, minute));
                rows.push(ColdRow {
                    series: key("req", i),
                    window_start: minute,
                    cell: counter(i, minute),
                });
            }
        }
        let bytes = encode(Resolution::OneMinute, rows).expect("encode");
        let object = object_key(&prefix, "default", Resolution::OneMinute, hour);
        rt.block_on(store.put(&object, bytes)).expect("put");
        counter_chunks.push((Resolution::OneMinute, hour));
    }
    // Timers: the week's 1h object, and the last hours' minutes in a hot store of their own.
    let week = END - WEEK;
    let rows: Vec<ColdRow> = (0..SERIES)
        .flat_map(|i| {
            (0..WEEK / HOUR).map(move |h| ColdRow {
                series: key("lat", i),
                window_start: week + h * HOUR,
                cell: timer(i, week + h * HOUR, false),
            })
        })
        .collect();
    let bytes = encode(Resolution::OneHour, rows).expect("encode");
    let object = object_key(&prefix, "default", Resolution::OneHour, week);
    println!("timers' 1h object: {} bytes", bytes.len());
    rt.block_on(store.put(&object, bytes)).expect("put");
    let hot_timers = Arc::new(MemHot::new());
    for i in 0..SERIES {
        for m in 0..HOT_TIMER_HOURS * 60 {
            let minute = END - HOT_TIMER_HOURS * HOUR + 60 * m;
            hot_timers.insert(key("lat", i), minute, timer(i, minute, true));
        }
    }
    println!("data written in {:.1} s\n", started.elapsed().as_secs_f64());

    println!("| data | query | Prometheus API | native API | ratio | points | answer |");
    println!("|---|---|---|---|---|---|---|");
    let (from, to) = (END - DAY, END);
    // The Prometheus grid's times are window ends: 1440 times over the same minutes.
    let counters = [
        Pair {
            what: "`req` over 24 h, step 60 (native `group_by=*`)",
            prom: prom("req", from + 60, to, 60),
            native: native("metric=req&group_by=*", from, to, 60),
        },
        Pair {
            what: "`sum(rate(req[1m]))` over 24 h, step 60 (native `stat=rate`)",
            prom: prom("sum(rate(req[1m]))", from + 60, to, 60),
            native: native("metric=req&stat=rate", from, to, 60),
        },
    ];
    let hot_counters = || hot_router(hot.clone());
    table(&rt, "hot", &hot_counters, Routers::Shared, &counters);
    let cold_counters = || cold_router(&rt, &dir, &counter_chunks);
    table(
        &rt,
        "cold, cold cache",
        &cold_counters,
        Routers::Fresh,
        &counters,
    );
    table(
        &rt,
        "cold, warm",
        &cold_counters,
        Routers::Shared,
        &counters,
    );
    let timers = |span: i64, what: [&'static str; 2]| {
        let (from, to) = (END - span, END);
        [
            Pair {
                what: what[0],
                prom: prom(
                    "histogram_quantile(0.99, rate(lat[1h]))",
                    from + HOUR,
                    to,
                    HOUR,
                ),
                native: native("metric=lat&stat=p99&group_by=*", from, to, HOUR),
            },
            Pair {
                what: what[1],
                prom: prom(
                    "histogram_quantile(0.99, sum(rate(lat[1h])))",
                    from + HOUR,
                    to,
                    HOUR,
                ),
                native: native("metric=lat&stat=p99", from, to, HOUR),
            },
        ]
    };
    // The week's rows decoded (1.3 GB) exceed the default object cache: never warm.
    table(
        &rt,
        "cold, cold cache",
        &|| cold_router(&rt, &dir, &[(Resolution::OneHour, week)]),
        Routers::Fresh,
        &timers(
            WEEK,
            [
                "`histogram_quantile(0.99, rate(lat[1h]))` over 7 days, step 3600 (native `stat=p99&group_by=*`)",
                "`histogram_quantile(0.99, sum(rate(lat[1h])))` over 7 days, step 3600 (native `stat=p99`)",
            ],
        ),
    );
    table(
        &rt,
        "hot",
        &|| hot_router(hot_timers.clone()),
        Routers::Shared,
        &timers(
            HOT_TIMER_HOURS * HOUR,
            [
                "`histogram_quantile(0.99, rate(lat[1h]))` over 6 h, step 3600",
                "`histogram_quantile(0.99, sum(rate(lat[1h])))` over 6 h, step 3600",
            ],
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
