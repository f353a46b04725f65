//! The Prometheus API read by a client nobody here wrote: `promtool query` (Debian package
//! `prometheus`) against `thermo standalone`, with exact values.

use crate::support::stack::Standalone;
use crate::support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Runs `promtool query <args>` with JSON output and parses what it prints.
fn promtool(bin: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin)
        .arg("query")
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool query {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "promtool query {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn promtool_queries_standalone_exactly() {
    let bin = find_bin(
        "promtool",
        "the Debian package prometheus (scripts/install-deps.sh installs it)",
    );
    let sa = Standalone::start_with("prom", &[]);
    let (http, udp) = (sa.http, sa.udp);
    let base = thermo_core::window::window_start(now_s() - 40 * 60, 600);
    // Three minutes m = 0, 1, 2: counter http.requests of host a sums m + 1 (m + 1 lines of 1),
    // of host b 10 (m + 1); gauge mem of host a is 5 + m.
    let mut lines = Vec::new();
    for m in 0..3i64 {
        let t = base + 60 * m + 1;
        for (host, unit) in [("a", 1), ("b", 10)] {
            for _ in 0..=m {
                lines.push(format!("http.requests:{unit}|c|#host:{host}|T{t}"));
            }
        }
        lines.push(format!("mem:{}|g|#host:a|T{t}", 5 + m));
    }
    // A timer lat of host a in the third minute: 1 to 10 ms, and 100 ms twice.
    for v in (1..=10).chain([100, 100]) {
        lines.push(format!("lat:{v}|ms|#host:a|T{}", base + 121));
    }
    let n = lines.len() as f64;
    send_udp(udp, &[lines.join("\n")]);
    wait_received_lines(http, n);
    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "flushed and applied: {flushed}");

    let server = format!("http://127.0.0.1:{http}/prometheus");
    let at = (base + 180).to_string(); // the third minute has ended
    let instant = |expr: &str| {
        promtool(
            &bin,
            &["instant", "-o", "json", "--time", &at, &server, expr],
        )
    };
    let a = json!({"__name__": "http_requests", "host": "a"});
    let b = json!({"__name__": "http_requests", "host": "b"});
    let t = base + 180;
    assert_eq!(
        instant("http_requests"),
        json!([
            {"metric": a, "value": [t, "3"]},
            {"metric": b, "value": [t, "30"]},
        ])
    );
    assert_eq!(
        instant("mem{host=~\"a|c\"} offset 1m"),
        json!([{"metric": {"__name__": "mem", "host": "a"}, "value": [t, "6"]}])
    );
    // Exact per-minute increments: the three minutes of both hosts, nothing extrapolated.
    assert_eq!(
        instant("sum(increase(http_requests[3m]))"),
        json!([{"metric": {}, "value": [t, "66"]}])
    );
    assert_eq!(
        instant("topk(1, max_over_time(mem[5m]))"),
        json!([{"metric": {"host": "a"}, "value": [t, "7"]}])
    );
    // The timer's exact count and sum, and the share of its values up to 10 ms: 10 of 12.
    assert_eq!(
        instant("histogram_count(lat) + histogram_sum(lat) * 1000"),
        json!([{"metric": {"host": "a"}, "value": [t, "255012"]}])
    );
    assert_eq!(
        instant("histogram_fraction(0, 10, lat)"),
        json!([{"metric": {"host": "a"}, "value": [t, format!("{}", 10.0 / 12.0)]}])
    );
    let (start, end) = ((base + 60).to_string(), (base + 180).to_string());
    let bf = base;
    assert_eq!(
        promtool(
            &bin,
            &[
                "range",
                "-o",
                "json",
                "--start",
                &start,
                "--end",
                &end,
                "--step",
                "1m",
                &server,
                "http_requests{host!=\"a\"}",
            ]
        ),
        json!([{"metric": b, "values": [[bf + 60, "10"], [bf + 120, "20"], [bf + 180, "30"]]}])
    );
    assert_eq!(
        promtool(
            &bin,
            &["series", "-o", "json", "--match", "http_requests", &server]
        ),
        json!([a, b])
    );
    assert_eq!(
        promtool(&bin, &["labels", "-o", "json", &server, "host"]),
        json!(["a", "b"])
    );
    assert_eq!(
        promtool(&bin, &["labels", "-o", "json", &server, "__name__"]),
        json!(["http_requests", "lat_count", "lat_sum", "mem"])
    );
}
