//! OTLP intake: `ExportMetricsServiceRequest` bodies through `thermo_agent::otlp::OtlpIntake::take`
//! (decode, convert, add into the per-minute accumulator), on one thread. Throughput is in data
//! points.
//!
//! Workload: requests as an OpenTelemetry SDK exports them, one resource (`service.name` and
//! three more attributes) with 1,000 series per request, each with 2 point attributes (40
//! routes × 25 statuses):
//! - `sum_delta`: delta counters;
//! - `sum_cumulative`: cumulative counters, each request 1 s after the one before (every point
//!   differenced against its series' last one);
//! - `exponential_cumulative`: cumulative exponential histograms (scale 3, 40 positive buckets),
//!   differenced bucket by bucket and turned into HDR histograms;
//! - `sum_delta_json`: the delta counters as OTLP JSON;
//! - `sum_delta_gzip`: the delta counters as gzip-compressed protobuf.
//!
//! Bodies are encoded outside the timed part; `take_all` runs every 50 requests, also outside it,
//! so memory stays bounded.
//!
//! Run: `cargo bench --workspace --bench otlp_intake -- --warm-up-time 1 --measurement-time 5`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::cell::Cell;
use std::sync::Mutex;
use thermo_agent::otlp::{Format, OtlpIntake};
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, IngestStats};

const SERIES: usize = 1_000;
/// Unix ms of the first request; the agent "started" a minute before.
const T0_MS: i64 = 1_800_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn attributes(i: usize) -> Vec<KeyValue> {
    vec![
        kv("http.route", &format!("/api/v1/resource{}", i % 40)),
        kv("http.response.status_code", &(200 + i / 40).to_string()),
    ]
}

fn ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0) * 1_000_000
}

/// A request of `SERIES` series of one metric; `round` numbers the request (time, totals).
fn request(data: impl Fn(Vec<KeyValue>) -> Data, name: &str) -> ExportMetricsServiceRequest {
    let metrics = (0..SERIES)
        .map(|i| Metric {
            name: name.into(),
            data: Some(data(attributes(i))),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "7f3c"),
                    kv("host.name", "web-1"),
                    kv("telemetry.sdk.language", "python"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn sum(round: i64, temporality: AggregationTemporality) -> ExportMetricsServiceRequest {
    request(
        |attributes| {
            Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes,
                    start_time_unix_nano: ns(T0_MS),
                    time_unix_nano: ns(T0_MS + 1_000 * (round + 1)),
                    value: Some(number_data_point::Value::AsInt(5 * (round + 1))),
                    ..Default::default()
                }],
                aggregation_temporality: temporality as i32,
                is_monotonic: true,
            })
        },
        "http.server.requests",
    )
}

fn exponential(round: i64) -> ExportMetricsServiceRequest {
    let n = u64::try_from(round + 1).unwrap_or(1);
    request(
        |attributes| {
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano: ns(T0_MS),
                    time_unix_nano: ns(T0_MS + 1_000 * (round + 1)),
                    count: 40 * n,
                    sum: Some(400.0 * n as f64),
                    scale: 3,
                    positive: Some(Buckets {
                        offset: 10,
                        bucket_counts: vec![n; 40],
                    }),
                    min: Some(2.0),
                    max: Some(60.0),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })
        },
        "http.server.duration",
    )
}

fn accumulator() -> Accumulator {
    Accumulator::new(AccumulatorConfig {
        tenant: "default".into(),
        global_tags: vec![("host".into(), "web-1".into())],
        max_past_secs: 3600,
        max_future_secs: 60,
        max_series: 1_000_000,
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("otlp_intake");
    g.throughput(Throughput::Elements(SERIES as u64));
    let gzip = |body: Vec<u8>| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &body).map(|()| gz.finish())
    };
    type Make = Box<dyn Fn(i64) -> Vec<u8>>;
    let cases: Vec<(&str, Format, bool, Make)> = vec![
        (
            "sum_delta",
            Format::Protobuf,
            false,
            Box::new(|r| sum(r, AggregationTemporality::Delta).encode_to_vec()),
        ),
        (
            "sum_cumulative",
            Format::Protobuf,
            false,
            Box::new(|r| sum(r, AggregationTemporality::Cumulative).encode_to_vec()),
        ),
        (
            "exponential_cumulative",
            Format::Protobuf,
            false,
            Box::new(|r| exponential(r).encode_to_vec()),
        ),
        (
            "sum_delta_json",
            Format::Json,
            false,
            Box::new(|r| {
                serde_json::to_vec(&sum(r, AggregationTemporality::Delta)).unwrap_or_default()
            }),
        ),
        (
            "sum_delta_gzip",
            Format::Protobuf,
            true,
            Box::new(move |r| {
                gzip(sum(r, AggregationTemporality::Delta).encode_to_vec())
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            }),
        ),
    ];
    for (name, format, gzipped, make) in cases {
        let intake = OtlpIntake::new(vec!["service.name".into()], T0_MS - 60_000, 1_000_000);
        let acc = Mutex::new(accumulator());
        let round = Cell::new(0i64);
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let r = round.get();
                    round.set(r + 1);
                    if r % 50 == 49 {
                        let mut a = acc.lock().unwrap_or_else(|p| p.into_inner());
                        a.take_all(&mut IngestStats::default());
                    }
                    make(r)
                },
                |body| {
                    let now = T0_MS + 1_000 * (round.get() + 1);
                    let taken = intake.take(&acc, &body, format, gzipped, now);
                    assert!(taken.is_ok_and(|t| t.rejected() == 0));
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
