//! OpenTelemetry metrics sent by a client nobody here wrote, the PyPI `opentelemetry-sdk` with
//! its OTLP/HTTP exporter (`opentelemetry-exporter-otlp-proto-http`, protobuf), into `thermo
//! standalone`'s `--otlp` port: delta and cumulative counters, an explicit-bucket histogram
//! (delta) and an exponential one (cumulative). Totals read back exactly, the cumulative ones
//! from the differences between exports; the exponential histogram's p99 within the error stated
//! in `thermo_core::buckets`. Then the answers a sender gets for what the agent refuses.

use crate::support::s3::find_python_bin;
use crate::support::stack::{single, Standalone, Target};
use crate::support::*;
use std::process::Command;
use thermo_core::aggregate::HIST_RELATIVE_ERROR;
use thermo_core::buckets::exponential_relative_error;

/// Sends through two meter providers exporting every 300 ms, one with delta and one with
/// cumulative temporality, while values are recorded (pausing 0.4 s every 20 rounds, so each
/// cumulative series is exported several times):
/// - `orders` (delta counter): 1..=100 by `route` /odd (2,500) and /even (2,550);
/// - `sizes` (delta histogram, the SDK's default explicit buckets): 1..=100;
/// - `visits` (cumulative counter): 1..=100, 5,050;
/// - `latency` (cumulative exponential histogram, ms): 1..=1000, one each.
const SDK: &str = r#"
import sys, time
from opentelemetry.sdk.metrics import MeterProvider, Counter, Histogram
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, AggregationTemporality
from opentelemetry.sdk.metrics.view import View, ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

endpoint = sys.argv[1]
resource = Resource.create({"service.name": "shop", "host.name": "py-1"})

def provider(temporality, views):
    exporter = OTLPMetricExporter(endpoint=endpoint, timeout=30,
        preferred_temporality={Counter: temporality, Histogram: temporality})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=300)
    return MeterProvider(metric_readers=[reader], resource=resource, views=views)

delta = provider(AggregationTemporality.DELTA, [])
cumulative = provider(AggregationTemporality.CUMULATIVE,
    [View(instrument_name="latency", aggregation=ExponentialBucketHistogramAggregation())])
orders = delta.get_meter("e2e").create_counter("orders")
sizes = delta.get_meter("e2e").create_histogram("sizes")
visits = cumulative.get_meter("e2e").create_counter("visits")
latency = cumulative.get_meter("e2e").create_histogram("latency", unit="ms")
for i in range(1, 101):
    orders.add(i, {"route": "/odd" if i % 2 else "/even"})
    sizes.record(i)
    visits.add(i)
    for j in range(1, 11):
        latency.record((i - 1) * 10 + j)
    if i % 20 == 0:
        time.sleep(0.4)
delta.shutdown()
cumulative.shutdown()
print("sent")
"#;

/// `stat` of `metric` over the two hours around now (standalone runs on the system clock: the
/// SDK stamps points with it), as one point per series.
fn total(sa: &Standalone, metric: &str, stat: &str, group_by: Option<&str>) -> serde_json::Value {
    let now = thermo_core::window::system_now_ms().div_euclid(1000);
    let from = thermo_core::window::minute_start(now) - 3600;
    let group = group_by
        .map(|g| format!("&group_by={g}"))
        .unwrap_or_default();
    sa.query(&format!(
        "metric={metric}&stat={stat}&from={from}&to={}&step=7200{group}",
        from + 7200
    ))
}

fn send_with_the_sdk(port: u16) {
    let python = find_python_bin("python3", "apt-get install python3");
    let endpoint = format!("http://127.0.0.1:{port}/v1/metrics");
    let out = Command::new(&python)
        .args(["-c", SDK, &endpoint])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sent"),
        "the OpenTelemetry SDK failed (install it with `pip install opentelemetry-sdk \
         opentelemetry-exporter-otlp-proto-http` or scripts/install-deps.sh pyclients):\n{stderr}"
    );
    // The exporter logs a failed or partial export and goes on: none may have happened.
    assert!(
        !stderr.contains("Failed to export") && !stderr.contains("partial"),
        "the SDK reported export problems:\n{stderr}"
    );
}

/// POSTs `body` to `/v1/metrics` on `port`; returns the status, content type and body.
fn post(port: u16, content_type: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let r = http()
        .post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .expect("post /v1/metrics");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.bytes().expect("body").to_vec())
}

#[test]
fn the_opentelemetry_sdk_delta_and_cumulative_give_exact_totals_and_p99_within_the_error() {
    let sa = Standalone::start_on_system_clock("otlp", &["--tag", "host=h1"]);
    send_with_the_sdk(sa.otlp);
    let (status, flushed) = post_json(&sa.url("/flush"));
    assert_eq!(status, 200, "{flushed}");

    // Counters: delta as sent, cumulative from the differences between exports.
    let by_route = total(&sa, "orders", "sum", Some("route"));
    assert_eq!(single(&by_route, &[("route", "/odd")]), 2500.0);
    assert_eq!(single(&by_route, &[("route", "/even")]), 2550.0);
    assert_eq!(single(&total(&sa, "visits", "sum", None), &[]), 5050.0);
    // The resource's service.name is a tag (host.name is not: not in otlp_resource_tags), and
    // the agent's own tags are added.
    let by_tags = total(&sa, "visits", "sum", Some("service.name,host,host.name"));
    assert_eq!(
        single(&by_tags, &[("service.name", "shop"), ("host", "h1")]),
        5050.0,
        "{by_tags}"
    );

    // The explicit-bucket histogram (delta): count, sum, min and max exact.
    for (stat, want) in [
        ("count", 100.0),
        ("sum", 5050.0),
        ("min", 1.0),
        ("max", 100.0),
    ] {
        assert_eq!(
            single(&total(&sa, "sizes", stat, None), &[]),
            want,
            "sizes {stat}"
        );
    }
    // The exponential histogram (cumulative, differenced bucket by bucket): count and sum exact,
    // p99 within the error of the SDK's scale for 1..=1000 in 160 buckets (3 at the coarsest).
    assert_eq!(single(&total(&sa, "latency", "count", None), &[]), 1000.0);
    assert_eq!(single(&total(&sa, "latency", "sum", None), &[]), 500_500.0);
    assert_eq!(single(&total(&sa, "latency", "max", None), &[]), 1000.0);
    let p99 = single(&total(&sa, "latency", "p99", None), &[]);
    let bound = 990.0 * (exponential_relative_error(3) + HIST_RELATIVE_ERROR);
    assert!(
        (p99 - 990.0).abs() <= bound,
        "p99 {p99} is not within {bound} of 990"
    );
    assert_eq!(
        metric(sa.http, "thermo_agent_otlp_stale_points_total"),
        0.0,
        "no export was taken twice"
    );
    assert_eq!(
        metric(sa.http, "thermo_agent_otlp_reference_points_total"),
        0.0,
        "the SDK started after the agent: its first cumulative points count whole"
    );
    assert_eq!(
        metric(sa.http, "thermo_agent_dropped_total"),
        0.0,
        "nothing refused"
    );

    // What a sender is told. A summary point is refused by name in partial_success (JSON, on the
    // HTTP port: the route is there too); a good point beside it is taken.
    let now_ns = thermo_core::window::system_now_ms() * 1_000_000;
    let body = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "q", "summary": {"dataPoints": [{"timeUnixNano": now_ns.to_string(), "count": "1", "sum": 1.0}]}},
        {"name": "edge", "sum": {"aggregationTemporality": 1, "isMonotonic": true,
            "dataPoints": [{"timeUnixNano": now_ns.to_string(), "asInt": "7"}]}}
    ]}]}]});
    let (status, ct, answer) = post(sa.http, "application/json", body.to_string().as_bytes());
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"],
        serde_json::json!(1)
    );
    let message = answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains("unsupported: 1") && message.contains("q: summaries"),
        "{message}"
    );
    assert_eq!(
        metric(
            sa.http,
            "thermo_agent_dropped_total{reason=\"unsupported\"}"
        ),
        1.0
    );
    // Undecodable protobuf: 400 with a google.rpc.Status; another content type: 415.
    let (status, ct, _) = post(sa.otlp, "application/x-protobuf", b"\xff\xff\xff");
    assert_eq!((status, ct.as_str()), (400, "application/x-protobuf"));
    let (status, _, answer) = post(sa.otlp, "text/plain", b"x");
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&answer));
    let (status, flushed) = post_json(&sa.url("/flush"));
    assert_eq!(status, 200, "{flushed}");
    assert_eq!(single(&total(&sa, "edge", "sum", None), &[]), 7.0);
}
