//! thermo's PromQL answers against a real Prometheus (Debian package `prometheus`, 2.42) on the
//! same data: gauges loaded into thermo through StatsD and into Prometheus as TSDB blocks built by
//! `promtool tsdb create-blocks-from openmetrics`, then every query of a list asked of both, instant
//! and range, and the answers compared.
//!
//! Counters enter by construction: thermo stores a counter's per-minute sums, which Prometheus gets
//! as a gauge with those sums (one sample per minute, at the minute's end, where thermo stamps the
//! window), so `reqs` and `sum_over_time(reqs[...])` mean the same on both sides.
//!
//! Evaluation times are 30 s past a minute's end: Prometheus 2.42 takes a range's left edge
//! inclusive (Prometheus 3 and thermo exclusive), and no sample falls on an edge then. Values are
//! compared as strings (both print the shortest decimal that reads back the same float), except
//! for `avg` and `avg_over_time`, which Prometheus 2.42 computes as a running mean: their answers
//! may differ in the last bits from thermo's sum / count, and are compared within 1e-12 relatively.

use crate::support::stack::Standalone;
use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MINUTES: i64 = 50;
const ROOMS: [(&str, &str); 4] = [("r0", "f0"), ("r1", "f0"), ("r2", "f1"), ("r3", "f1")];

/// A series' value in minute `m` of room `r`.
type Values = fn(i64, i64) -> i64;

/// Never negative: in StatsD a signed gauge value is a change, not a value.
fn temp(m: i64, r: i64) -> i64 {
    (m * 7 + r * 13) % 41
}

fn load(m: i64, r: i64) -> i64 {
    (m * 3 + r * 5) % 17 + 1
}

fn reqs(m: i64, r: i64) -> i64 {
    (m * 11 + r * 3) % 23 + 1
}

/// `door{room="r0"}`: a gauge written every 7th minute only (lookback, counts over time).
fn door(m: i64) -> Option<i64> {
    (m % 7 == 0).then_some(m % 5)
}

/// The queries: (expression, compared exactly).
/// Answers (of the 4 per query) whose result is empty on both sides, for this data: `absent(temp)`
/// (4), `temp == 2` at the last instant, `door` at minute 13:30 (its last sample 5.5 minutes old,
/// past the 5-minute lookback).
const EMPTY_ANSWERS: usize = 6;

const QUERIES: &[(&str, bool)] = &[
    ("temp", true),
    ("temp{room=\"r1\"}", true),
    ("temp{room=~\"r[12]\"}", true),
    ("temp{room!=\"r0\",floor=\"f1\"}", true),
    ("{__name__=~\"temp|load\",room=\"r3\"}", true),
    ("door", true),
    ("temp offset 5m", true),
    ("sum(temp)", true),
    ("sum by (floor) (temp)", true),
    ("max by (floor) (temp)", true),
    ("min without (room) (load)", true),
    ("count(temp)", true),
    ("count by (floor) (temp > 5)", true),
    ("avg by (floor) (temp)", false),
    ("avg(load)", false),
    ("topk(2, temp)", true),
    ("bottomk(1, load)", true),
    ("sum by (floor) (topk(1, temp))", true),
    ("temp > 10", true),
    ("temp > bool 10", true),
    ("temp == 2", true),
    ("temp * 2 + 1", true),
    ("-temp", true),
    ("temp % 7", true),
    ("load ^ 2", true),
    ("temp / load", true),
    ("temp - on(room, floor) load", true),
    ("temp + ignoring(floor) load", true),
    (
        "sum by (floor) (temp) / on(floor) sum by (floor) (load)",
        true,
    ),
    ("temp >= on(room) load", true),
    ("max_over_time(temp[10m])", true),
    ("min_over_time(temp[10m])", true),
    ("sum_over_time(reqs[5m])", true),
    ("sum by (floor) (sum_over_time(reqs[15m]))", true),
    ("count_over_time(door[20m])", true),
    ("last_over_time(door[20m])", true),
    ("avg_over_time(temp[4m])", false),
    ("abs(temp - 22)", true),
    ("clamp_min(temp - 10, 0)", true),
    ("clamp_max(load, 9)", true),
    ("round((temp - 20) / 4)", true),
    ("round(load, 5)", true),
    ("absent(temp{room=\"nope\"})", true),
    ("absent(temp)", true),
    ("vector(7)", true),
    ("scalar(sum(load))", true),
    ("time()", true),
    ("sum(temp) * 2", true),
    ("reqs", true),
];

/// `data` of an answer with its result in a canonical order (sorted by labels).
fn canonical(answer: &Value) -> Value {
    let mut data = answer["data"].clone();
    if let Some(result) = data["result"].as_array_mut() {
        result.sort_by_key(|s| s["metric"].to_string());
    }
    data
}

/// Whether two answers' values agree: exactly, or (averages) within 1e-12 relatively.
fn same(a: &Value, b: &Value, exact: bool) -> bool {
    if exact {
        return a == b;
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y, exact))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, exact)))
        }
        _ => a == b,
    }
}

fn get(url: &str, params: &[(&str, String)]) -> Value {
    let r = http()
        .get(url)
        .query(params)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let body: Value = r
        .json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
    assert!(status.is_success(), "GET {url} {params:?}: {status} {body}");
    body
}

/// The OpenMetrics text of every series, one sample per minute at the minute's end.
fn openmetrics(base: i64) -> String {
    let mut out = String::new();
    let end = |m: i64| base + 60 * (m + 1);
    let families: [(&str, Values); 3] = [("temp", temp), ("load", load), ("reqs", reqs)];
    for (name, f) in families {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for (r, (room, floor)) in ROOMS.iter().enumerate() {
            for m in 0..MINUTES {
                out.push_str(&format!(
                    "{name}{{floor=\"{floor}\",room=\"{room}\"}} {} {}\n",
                    f(m, r as i64),
                    end(m)
                ));
            }
        }
    }
    out.push_str("# TYPE door gauge\n");
    for m in 0..MINUTES {
        if let Some(v) = door(m) {
            out.push_str(&format!("door{{room=\"r0\"}} {v} {}\n", end(m)));
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The same data as StatsD lines with `|T` timestamps inside each minute.
fn statsd(base: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for m in 0..MINUTES {
        let t = base + 60 * m + 1;
        for (r, (room, floor)) in ROOMS.iter().enumerate() {
            let r = r as i64;
            let tags = format!("#room:{room},floor:{floor}|T{t}");
            lines.push(format!("temp:{}|g|{tags}", temp(m, r)));
            lines.push(format!("load:{}|g|{tags}", load(m, r)));
            lines.push(format!("reqs:{}|c|{tags}", reqs(m, r)));
        }
        if let Some(v) = door(m) {
            lines.push(format!("door:{v}|g|#room:r0|T{t}"));
        }
    }
    lines
}

/// A Prometheus server on a free loopback port over the blocks in `tsdb`, with no scrape jobs.
fn prometheus(dir: &Path, tsdb: &Path) -> (Proc, u16) {
    let bin = find_bin(
        "prometheus",
        "the Debian package prometheus (scripts/install-deps.sh)",
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
    let port = free_port();
    let args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", tsdb.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--storage.tsdb.retention.time=3650d".to_string(),
    ];
    let proc = Proc::spawn("prometheus", &bin, &args, dir, dir.join("prometheus.log"));
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    wait_until("Prometheus to be ready", Duration::from_secs(60), || {
        http()
            .get(&ready)
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    (proc, port)
}

#[test]
fn promql_answers_equal_a_real_prometheus() {
    let promtool = find_bin(
        "promtool",
        "the Debian package prometheus (scripts/install-deps.sh)",
    );
    let base = thermo_core::window::window_start(now_s() - 55 * 60, 60);

    // Prometheus: blocks from the OpenMetrics text.
    let dir = TempDir::new("prom-differential");
    let input = dir.path().join("data.om");
    std::fs::write(&input, openmetrics(base)).expect("write OpenMetrics");
    let tsdb = dir.path().join("tsdb");
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&tsdb)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool tsdb create-blocks-from openmetrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (_prom, port) = prometheus(dir.path(), &tsdb);
    let prom = format!("http://127.0.0.1:{port}/api/v1");

    // thermo: the same minutes through StatsD into standalone.
    let sa = Standalone::start_with("prom-differential-thermo", &[]);
    let lines = statsd(base);
    for chunk in lines.chunks(40) {
        send_udp(sa.udp, &[chunk.join("\n")]);
    }
    wait_received_lines(sa.http, lines.len() as f64);
    let (status, flushed) = post_json(&sa.url("/flush?wait_ms=60000"));
    assert_eq!(status, 200, "flushed and applied: {flushed}");
    let thermo = sa.url("/prometheus/api/v1");

    // Both sides hold every sample: the last minute's values of every series agree.
    let last = base + 60 * MINUTES + 30;
    wait_until(
        "Prometheus to answer the loaded blocks",
        Duration::from_secs(60),
        || {
            let q = [
                ("query", "count(temp)".to_string()),
                ("time", last.to_string()),
            ];
            get(&format!("{prom}/query"), &q)["data"]["result"][0]["value"][1] == "4"
        },
    );

    let mut failures = Vec::new();
    let (mut compared, mut empties, mut inexact) = (0, Vec::new(), 0);
    let times = [last, base + 60 * 25 + 30, base + 60 * 13 + 30];
    for &(expr, exact) in QUERIES {
        let mut asks: Vec<(String, Vec<(&str, String)>)> = times
            .iter()
            .map(|t| {
                (
                    "query".to_string(),
                    vec![("query", expr.to_string()), ("time", t.to_string())],
                )
            })
            .collect();
        asks.push((
            "query_range".to_string(),
            vec![
                ("query", expr.to_string()),
                ("start", (base + 60 * 12 + 30).to_string()),
                ("end", last.to_string()),
                ("step", "60".to_string()),
            ],
        ));
        for (endpoint, params) in asks {
            let want = canonical(&get(&format!("{prom}/{endpoint}"), &params));
            let got = canonical(&get(&format!("{thermo}/{endpoint}"), &params));
            compared += 1;
            let empty = want["result"].as_array().is_some_and(|r| r.is_empty());
            if empty {
                empties.push(format!("{endpoint} {params:?}"));
            }
            inexact += usize::from(got != want);
            if !same(&got, &want, exact) {
                failures.push(format!(
                    "{endpoint} {params:?}\n  Prometheus: {want}\n  thermo:     {got}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} answers differ from Prometheus's:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "[prom] {compared} answers ({} queries, 3 instants and a range each) equal Prometheus's; \
         {} empty, {inexact} equal only within 1e-12 (averages)",
        QUERIES.len(),
        empties.len()
    );
    // What was compared holds data: only these answers are empty on both sides (the absent()
    // of a present series, comparisons no sample meets, the sparse door outside its lookback).
    assert_eq!(empties.len(), EMPTY_ANSWERS, "empty answers: {empties:#?}");
}
