//! Log intake: access-log lines (nginx's default `combined` format) through
//! `thermo_agent::logs::LogParser::apply` into the per-minute accumulator, on one thread.
//!
//! Workload: 10,000 lines as a web server writes them: 40 routes (a few popular), GET, POST, PUT
//! and DELETE, statuses 200, 201, 204, 301, 304, 400, 404, 500, 503 (mostly the first ones), body
//! sizes up to 50 kB (a tenth `-`), 200 client addresses, a query string, a referer and a browser
//! user agent. Each line yields two metrics, as the README's nginx example does: a counter
//! `http.requests` tagged `status`, `method`, `route`, and a histogram `http.bytes` of the body
//! size tagged `status`. Throughput is in lines.
//!
//! - `regex_only`: the format's regex and its groups, nothing else (what matching costs);
//! - `combined/receive_time`: the whole path, each line in the minute it is read (the default);
//! - `combined/line_time`: the same with `time = "line"`, parsing each line's `[time_local]`.
//!
//! `take_all` runs every 100 rounds outside the timed part, so memory stays bounded.
//!
//! Run: `cargo bench --workspace --bench log_intake -- --warm-up-time 1 --measurement-time 5`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use thermo_agent::logs::{pattern, LogParser, LogSource, Outcome};
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, IngestStats};

const LINES: usize = 10_000;
/// 2026-10-10T20:55:30Z: the lines' `time_local` (13:55 at -0700) falls in this minute.
const NOW_MS: i64 = 1_791_665_730_000;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// An index in 0..n, small ones far more often (popular routes, the common statuses).
    fn skewed(&mut self, n: u64) -> usize {
        let (a, b, c) = (self.below(n), self.below(n), self.below(n));
        a.min(b).min(c) as usize
    }
}

fn lines() -> Vec<String> {
    let mut r = Rng(0x5eed);
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let statuses = [
        "200", "201", "204", "301", "304", "400", "404", "500", "503",
    ];
    (0..LINES)
        .map(|i| {
            let route = r.skewed(40);
            let bytes = if r.below(10) == 0 {
                "-".to_string()
            } else {
                r.below(50_000).to_string()
            };
            format!(
                "10.0.{}.{} - - [10/Oct/2026:13:55:{:02} -0700] \"{} /api/v1/resource{route}/{}?page={} HTTP/1.1\" {} {bytes} \"https://example.com/app/page{}\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36\"",
                r.below(2),
                r.below(100),
                i % 60,
                methods[r.skewed(4)],
                if route.is_multiple_of(3) { "items" } else { "list" },
                r.below(20),
                statuses[r.skewed(9)],
                r.below(10),
            )
        })
        .collect()
}

fn source(time: &str) -> LogSource {
    toml::from_str(&format!(
        r#"
        path = "/var/log/nginx/access.log"
        time = "{time}"
        [[metrics]]
        name = "http.requests"
        type = "counter"
        tags = ["status", "method", "route=path"]
        [[metrics]]
        name = "http.bytes"
        type = "histogram"
        value = "bytes"
        tags = ["status"]
        "#
    ))
    .expect("source")
}

fn accumulator() -> Accumulator {
    Accumulator::new(AccumulatorConfig {
        tenant: "default".into(),
        global_tags: Default::default(),
        max_past_secs: 3600,
        max_future_secs: 60,
        max_series: 1_000_000,
    })
}

fn log_intake(c: &mut Criterion) {
    let lines = lines();
    let bytes: usize = lines.iter().map(String::len).sum();
    for time in ["receive", "line"] {
        let p = LogParser::new(&source(time)).expect("parser");
        let mut a = accumulator();
        let mut st = IngestStats::default();
        for l in &lines {
            assert_eq!(
                p.apply(&mut a, l.as_bytes(), NOW_MS, i64::MIN, &mut st),
                Outcome::Matched {
                    minute: NOW_MS / 60_000 * 60
                },
                "{l}"
            );
        }
        let no_bytes = st.dropped.get("bad_value").copied().unwrap_or(0);
        assert_eq!(st.lines + no_bytes, 2 * LINES as u64, "{st:?}");
        assert_eq!(st.dropped_total(), no_bytes, "{st:?}");
        eprintln!(
            "log_intake ({time} time): {LINES} lines, {} bytes/line on average, {} series, {no_bytes} lines with `-` bytes",
            bytes / LINES,
            a.open_series()
        );
    }

    let mut g = c.benchmark_group("log_intake");
    g.throughput(Throughput::Elements(LINES as u64));
    let regex = regex::Regex::new(&pattern("combined").expect("a built-in format")).expect("regex");
    g.bench_function("regex_only", |b| {
        b.iter(|| {
            for l in &lines {
                let caps = regex.captures(black_box(l)).expect("match");
                black_box(caps.name("status"));
            }
        })
    });
    for (name, time) in [
        ("combined/receive_time", "receive"),
        ("combined/line_time", "line"),
    ] {
        let p = LogParser::new(&source(time)).expect("parser");
        g.bench_function(name, |b| {
            let mut a = accumulator();
            let mut st = IngestStats::default();
            let mut rounds = 0u64;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for l in &lines {
                        p.apply(&mut a, black_box(l.as_bytes()), NOW_MS, i64::MIN, &mut st);
                    }
                    timed += start.elapsed();
                    rounds += 1;
                    if rounds == 100 {
                        rounds = 0;
                        black_box(a.take_all(&mut st));
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, log_intake);
criterion_main!(benches);
