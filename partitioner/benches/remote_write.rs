//! Prometheus remote write intake: requests as Prometheus 2.42 sends them (snappy-compressed
//! protobuf, `max_samples_per_send` 500: one sample per series) through the partitioner's router
//! (`POST /api/v1/write`: authentication off, admission, snappy, protobuf, series keys, records
//! encoded on a blocking thread) into a log that acknowledges at once, so what is measured is the
//! partitioner's own work, not Kafka's; one request at a time. Throughput is in samples.
//!
//! Workload: 500 series a request, each with `job`, `instance` and two more labels: half counters
//! (`http_requests_total`, sent on as totals records), half gauges (`node_memory_bytes`, one gauge
//! record each).
//!
//! - `decode_convert`: the body through `remote_write::decode`, `convert` and `records` alone;
//! - `router`: the whole request through the router.
//!
//! Run: `cargo bench --workspace --bench remote_write -- --warm-up-time 1 --measurement-time 5`

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use std::sync::Arc;
use thermo_partitioner::ingest::{router, AppState};
use thermo_partitioner::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use thermo_partitioner::PartitionerConfig;
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::log::LogProducer;
use thermo_store::StoreError;
use tower::ServiceExt;

const SERIES: usize = 500;

/// A log that acknowledges at once.
struct Log;

impl LogProducer for Log {
    async fn send_all(&self, _records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        Ok(())
    }
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

/// A request of `SERIES` samples at `now_ms`.
fn body(now_ms: i64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|i| {
            let counter = i % 2 == 0;
            let name = if counter {
                "http_requests_total"
            } else {
                "node_memory_bytes"
            };
            TimeSeries {
                labels: vec![
                    label("__name__", name),
                    label("instance", &format!("10.0.{}.{}:9100", i / 200, i % 200)),
                    label("job", "node"),
                    label("handler", &format!("/api/v1/resource{}", i % 40)),
                    label("code", ["200", "404", "500"][i % 3]),
                ],
                samples: vec![Sample {
                    value: (i * 1000) as f64,
                    timestamp: now_ms,
                }],
                ..Default::default()
            }
        })
        .collect();
    let req = WriteRequest {
        timeseries,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let now_ms = thermo_core::window::now_ms();
    let raw = body(now_ms);
    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("decode_convert", |b| {
        b.iter(|| {
            let req = remote_write::decode(&raw, 64 << 20).unwrap_or_default();
            let mut converted = remote_write::convert(req, "default");
            let records = remote_write::records(&mut converted, "rw:x", now_ms, 3_600_000, 300_000);
            assert_eq!(records.records.len(), SERIES);
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let app = router(AppState::new(
        PartitionerConfig::default(),
        Arc::new(Log),
        SelfMetrics::new("partitioner", "series-minutes"),
    ));
    g.bench_function("router", |b| {
        b.iter(|| {
            let req = Request::post("/api/v1/write")
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("content-length", raw.len())
                .body(Body::from(raw.clone()))
                .unwrap_or_default();
            let status = rt
                .block_on(app.clone().oneshot(req))
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            assert_eq!(status, 204);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
