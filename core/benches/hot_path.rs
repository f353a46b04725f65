//! The agent hot path: StatsD datagrams through the parser and the per-minute accumulator.
//!
//! Workload: 1,000 distinct series as a web service would emit them (400 request counters tagged
//! `route`,`code`; 400 `|ms` timers tagged `route`,`method` with long-tailed values; 150 gauges, half
//! of them `+`/`-` deltas; 50 sets), a fifth of all lines sampled `|@0.5` (ignored by gauges and
//! sets), popular series sent more often than the rest, packed 20 lines to a datagram as clients
//! do. Throughput is in lines.
//!
//! - `parse_only`: `parse_datagram`, consuming every value and tag of every line;
//! - `parse_aggregate/steady`: `Accumulator::ingest` into a minute whose series already exist (the
//!   common case: a minute sees each series many times); `take_all` runs every 200 rounds, outside
//!   the timed part, so memory stays bounded;
//! - `parse_aggregate/new_minute`: the same, but every round starts on an empty accumulator (the
//!   first datagrams of a minute: each series is created and its key validated once).
//!
//! Run: `cargo bench -p thermo-core --bench hot_path -- --warm-up-time 1 --measurement-time 5`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, IngestStats};
use thermo_core::statsd::parse_datagram;

const LINES_PER_DATAGRAM: usize = 20;
const DATAGRAMS: usize = 500; // 10,000 lines per round
const NOW_MS: i64 = 1_700_000_030_000;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

enum Series {
    Counter { route: usize, code: &'static str },
    Timer { route: usize, method: &'static str },
    Gauge { queue: usize, delta: bool },
    Set { page: usize },
}

fn series() -> Vec<Series> {
    const CODES: [&str; 10] = [
        "200", "201", "204", "301", "304", "400", "401", "404", "500", "503",
    ];
    const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
    let mut s = Vec::with_capacity(1000);
    for route in 0..40 {
        for code in CODES {
            s.push(Series::Counter { route, code });
        }
    }
    for route in 0..100 {
        for method in METHODS {
            s.push(Series::Timer { route, method });
        }
    }
    for queue in 0..150 {
        s.push(Series::Gauge {
            queue,
            delta: queue % 2 == 1,
        });
    }
    for page in 0..50 {
        s.push(Series::Set { page });
    }
    assert_eq!(s.len(), 1000);
    s
}

/// One line for series `s`.
fn line(s: &Series, rng: &mut Rng) -> String {
    let sampled = rng.below(5) == 0;
    let rate = if sampled { "|@0.5" } else { "" };
    match s {
        Series::Counter { route, code } => {
            let n = if rng.below(10) == 0 {
                1 + rng.below(5)
            } else {
                1
            };
            format!("http.requests:{n}|c{rate}|#route:/api/v1/resource{route},code:{code}")
        }
        Series::Timer { route, method } => {
            // Pareto(alpha = 1.5) from 2 ms, capped at a minute: most requests are fast, a few
            // take seconds. Clients send ms with a few decimals.
            let ms = (2.0 / (1.0 - rng.unit()).powf(1.0 / 1.5)).min(60_000.0);
            format!(
                "http.request.duration:{ms:.3}|ms{rate}|#route:/api/v1/resource{route},method:{method}"
            )
        }
        Series::Gauge { queue, delta } => {
            let v = rng.below(1000) as i64;
            if *delta {
                let sign = if rng.below(2) == 0 { "+" } else { "-" };
                format!("worker.queue.inflight:{sign}{}|g|#queue:q{queue}", v % 10)
            } else {
                format!("worker.queue.depth:{v}|g|#queue:q{queue}")
            }
        }
        Series::Set { page } => {
            format!("users.active:user{}|s|#page:p{page}", rng.below(5000))
        }
    }
}

/// `DATAGRAMS` datagrams of `LINES_PER_DATAGRAM` lines: 40% counters, 40% timers (a request
/// emits one of each), 12% gauges, 8% sets. Within a type a series is picked with a skewed
/// popularity (the square of a uniform variate), so some routes are much busier than others.
fn datagrams() -> (Vec<Vec<u8>>, u64) {
    let all = series();
    // (first index, number of series) of each type in `all`, and its share of lines in percent.
    let types = [(0, 400, 40), (400, 400, 40), (800, 150, 12), (950, 50, 8)];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(DATAGRAMS);
    let mut lines = 0;
    for _ in 0..DATAGRAMS {
        let mut d = String::new();
        for i in 0..LINES_PER_DATAGRAM {
            let mut pct = rng.below(100);
            let &(first, n, _) = types
                .iter()
                .find(|(_, _, share)| {
                    let hit = pct < *share;
                    pct = pct.saturating_sub(*share);
                    hit
                })
                .unwrap();
            let u = rng.unit();
            let s = &all[first + ((u * u) * n as f64) as usize];
            if i > 0 {
                d.push('\n');
            }
            d.push_str(&line(s, &mut rng));
            lines += 1;
        }
        out.push(d.into_bytes());
    }
    (out, lines)
}

fn accumulator() -> Accumulator {
    Accumulator::new(AccumulatorConfig {
        tenant: "acme".into(),
        global_tags: vec![("host".into(), "web-17".into())],
        max_past_secs: 3600,
        max_future_secs: 60,
        max_series: 100_000,
    })
}

fn hot_path(c: &mut Criterion) {
    let (datagrams, lines) = datagrams();
    let bytes: usize = datagrams.iter().map(Vec::len).sum();
    // Sanity: every line is valid, and the workload touches all 1,000 series.
    {
        let mut a = accumulator();
        let mut st = IngestStats::default();
        for d in &datagrams {
            a.ingest(d, NOW_MS, &mut st);
        }
        assert_eq!((st.lines, st.dropped_total()), (lines, 0), "{:?}", st);
        eprintln!(
            "hot_path: {lines} lines in {DATAGRAMS} datagrams ({} bytes/line on average), {} series",
            bytes / lines as usize,
            a.open_series()
        );
    }

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(lines));

    g.bench_function("parse_only", |b| {
        b.iter(|| {
            for d in &datagrams {
                for line in parse_datagram(black_box(d)) {
                    let line = line.unwrap();
                    for v in line.values() {
                        black_box(v.unwrap());
                    }
                    for t in line.tag_pairs() {
                        black_box(t);
                    }
                    black_box(line.rate);
                }
            }
        })
    });

    g.bench_function("parse_aggregate/steady", |b| {
        let mut a = accumulator();
        let mut st = IngestStats::default();
        for d in &datagrams {
            a.ingest(d, NOW_MS, &mut st); // the minute's series exist before timing starts
        }
        let mut rounds = 0u64;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for d in &datagrams {
                    a.ingest(black_box(d), NOW_MS, &mut st);
                }
                timed += start.elapsed();
                rounds += 1;
                if rounds == 200 {
                    rounds = 0;
                    black_box(a.take_all(&mut st));
                    for d in &datagrams {
                        a.ingest(d, NOW_MS, &mut st);
                    }
                }
            }
            timed
        })
    });

    g.bench_function("parse_aggregate/new_minute", |b| {
        let mut st = IngestStats::default();
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let mut a = accumulator();
                let start = Instant::now();
                for d in &datagrams {
                    a.ingest(black_box(d), NOW_MS, &mut st);
                }
                timed += start.elapsed();
                black_box(a.take_all(&mut st));
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
