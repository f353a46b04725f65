//! Cold storage end to end, on real services: JSON ingest → partitioner → tansu (4 partitions) →
//! one aggregator with its compactor → Redis (hot) and moto (S3, cold, Parquet) → read service
//! stitching both.
//!
//! Eight days of minutes are posted (one every 7 minutes, every minute of the last ~3 hours); the
//! compactor rolls every finished hour into 1m objects, every finished day into 5m objects, every
//! finished week into 1h objects, and trims Redis down to the last hour or two. Every answer is
//! compared with an exact model of what was posted (sums and counts exactly, p99 within the HDR
//! histogram's relative error), at 1m, 5m and 1h, across the hot/cold boundary, after late data
//! (inside and beyond the grace period), through an S3 outage, and against DuckDB reading the
//! objects themselves.
//!
//! The test runs in phases; a failed phase is reported and the next phases still run (most do not
//! depend on an earlier one passing), so one run shows everything that is wrong. The test fails
//! at the end if any phase failed. Run with `--nocapture` to see each phase as it passes.
//!
//! To make an intermediate state deterministic (backfill complete before any roll-up; late cells
//! in Redis next to their hour's object; S3 back with its objects before the compactor resumes),
//! the test takes the compactor's lease itself (`thermo:cold:lock`, see store/src/redis_catalog.rs).
//! The last phase lowers `retention_1m_days` and restarts the aggregator.
//!
//! Every time comes from the tests' clock (`support::now_s`, shared with the processes through
//! `THERMO_CLOCK_OFFSET_SECS`): the run starts at 10:03 on the second day of a week, so each run
//! sees the same hour, day and week boundaries whatever the time of day.

use crate::support::s3::{Moto, S3Tool};
use crate::support::stack::{sources, Role, Stack, TOPIC};
use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use thermo_core::aggregate::HIST_RELATIVE_ERROR;
use thermo_core::window::{minute_start, window_start};

const HOT_RETENTION_HOURS: i64 = 1;
const LAG: i64 = 0;
const GRACE: i64 = 2 * DAY;
const BUCKET: &str = "thermo-cold";
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 604_800;
/// One bucket for the whole range: 16 days, a multiple of every resolution's window.
const WHOLE_STEP: i64 = 16 * DAY;
const RESOLUTIONS: [&str; 3] = ["1m", "5m", "1h"];
const COMPACTION_TIMEOUT: Duration = Duration::from_secs(150);

// ------------------------------------------------------------------------------------------------
// The stack

struct Cold {
    stack: Stack,
    moto: Moto,
    s3: S3Tool,
}

fn subdir(base: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = base.join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

impl Cold {
    /// The stack with one Redis, or with a Redis Cluster of 3 masters.
    fn start(redis_cluster: bool) -> Self {
        let dir = TempDir::new("cold");
        let d = dir.path().to_path_buf();
        let redis = if redis_cluster {
            Redis::start_cluster(&subdir(&d, "redis"), 3)
        } else {
            Redis::start(&subdir(&d, "redis"))
        };
        let broker = Broker::start(&subdir(&d, "broker"));
        broker.create_topic(TOPIC, 4);
        let moto = Moto::start(&subdir(&d, "moto"));
        let partitioner = Role::start(
            &d,
            "partitioner",
            "partitioner",
            &format!(
                "kafka_brokers = \"{}\"\ntopic = \"{TOPIC}\"\nproduce_timeout_ms = 5000\nmax_past_secs = {}\n",
                broker.addr(),
                10 * DAY
            ),
        );
        let aggregator = Role::start(
            &d,
            "aggregator-0",
            "aggregator",
            &format!(
                "kafka_brokers = \"{}\"\ntopic = \"{TOPIC}\"\nredis_url = \"{}\"\nbatch_max_records = 1000\nbatch_max_wait_ms = 100\nhot_retention_hours = {HOT_RETENTION_HOURS}\ncold_enabled = true\n{}cold_lag_secs = {LAG}\ncold_interval_secs = 1\nlate_grace_secs = {GRACE}\nretention_1m_days = 30\n",
                broker.addr(),
                redis.url(),
                moto.toml(BUCKET)
            ),
        );
        let read = Role::start(
            &d,
            "read",
            "read-service",
            &format!(
                "redis_url = \"{}\"\nhot_retention_hours = {HOT_RETENTION_HOURS}\ncold_enabled = true\n{}cold_cache_bytes = {}\n",
                redis.url(),
                moto.toml(BUCKET),
                // Decoded histogram rows hold their HDR counts (tens of KB each): the whole
                // range's rows of every selection fit in 1 GiB, so repeated queries hit.
                1u64 << 30
            ),
        );
        let s3 = S3Tool::new(&moto, BUCKET);
        Self {
            stack: Stack {
                dir,
                redis,
                broker,
                partitioner,
                aggregators: vec![aggregator],
                read,
                agents: Vec::new(),
            },
            moto,
            s3,
        }
    }

    fn agg_port(&self) -> u16 {
        self.stack.aggregators[0].http
    }

    /// Every sample of the aggregator's /metrics.
    fn agg_metrics(&self) -> BTreeMap<String, f64> {
        scrape(self.agg_port())
    }

    fn agg(&self, sample: &str) -> f64 {
        metric(self.agg_port(), &format!("thermo_aggregator_{sample}"))
    }

    fn agg_log(&self) -> String {
        self.stack.aggregators[0].proc.log_tail()
    }

    /// Members of a Redis sorted set of the catalog, as numbers.
    fn zset(&self, key: &str) -> Vec<i64> {
        self.stack
            .redis
            .cli(&["ZRANGE", key, "0", "-1"])
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Hours pending in any partition (store/src/redis_catalog.rs).
    fn pending_hours(&self) -> BTreeSet<i64> {
        let keys = self.stack.redis.scan("thermo:{p*}:pending");
        keys.iter().flat_map(|k| self.zset(k)).collect()
    }

    /// Hours that still have data keys in Redis.
    fn redis_hours(&self) -> BTreeSet<i64> {
        self.stack
            .redis
            .scan("thermo:{p*}:d:*")
            .iter()
            .filter_map(|k| k.rsplit(':').next()?.parse().ok())
            .collect()
    }
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let text = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// What the test posts, and the exact model of it

#[derive(Clone, Debug)]
enum Val {
    Counter(f64),
    Hist(Vec<f64>),
}

#[derive(Clone, Debug)]
struct Entry {
    metric: &'static str,
    host: &'static str,
    minute: i64,
    val: Val,
}

#[derive(Default, Clone, Debug)]
struct Cell {
    sum: f64,
    count: u64,
    values: Vec<f64>,
}

#[derive(Default)]
struct Model {
    /// (metric, host, minute) → what was merged there.
    cells: BTreeMap<(&'static str, &'static str, i64), Cell>,
    /// Series-minutes posted (records produced), counted or not.
    posted: u64,
}

impl Model {
    fn apply(&mut self, e: &Entry) {
        let c = self.cells.entry((e.metric, e.host, e.minute)).or_default();
        match &e.val {
            Val::Counter(v) => {
                c.sum += v;
                c.count += 1;
            }
            Val::Hist(vs) => {
                c.sum += vs.iter().sum::<f64>();
                c.count += vs.len() as u64;
                c.values.extend_from_slice(vs);
            }
        }
    }

    fn has(&self, metric: &str, minute: i64) -> bool {
        self.cells
            .keys()
            .any(|(m, _, t)| *m == metric && *t == minute)
    }

    /// (sum, count) of `metric` over the minutes in `[from, to)`.
    fn total(&self, metric: &str, from: i64, to: i64) -> (f64, u64) {
        self.cells
            .iter()
            .filter(|((m, _, t), _)| *m == metric && *t >= from && *t < to)
            .fold((0.0, 0), |(s, n), (_, c)| (s + c.sum, n + c.count))
    }

    /// Hours (starts) holding any data.
    fn hours(&self) -> BTreeSet<i64> {
        self.cells
            .keys()
            .map(|(_, _, t)| window_start(*t, HOUR))
            .collect()
    }
}

/// Integer-valued (or half-integer) numbers: every sum is exact in any order.
fn lat_values(minute: i64, host_idx: i64, salt: i64) -> Vec<f64> {
    let i = minute / 60;
    let n = 3 + (i % 5);
    (0..n)
        .map(|j| {
            let v = 1 + (i * 31 + j * 97 + host_idx * 13 + salt * 7).rem_euclid(2000);
            v as f64 + if j % 2 == 0 { 0.5 } else { 0.0 }
        })
        .collect()
}

/// The regular series of one minute: `req` (counter) and `lat` (histogram) on h1 and h2, `jobs`
/// (counter) on h1 and, if `h9`, on h9 (a host that stopped reporting days ago).
fn base_entries(minute: i64, h9: bool) -> Vec<Entry> {
    let i = minute / 60;
    let mut out = Vec::new();
    for (hi, host) in ["h1", "h2"].into_iter().enumerate() {
        let hi = hi as i64;
        out.push(Entry {
            metric: "req",
            host,
            minute,
            val: Val::Counter(((i % 50 + 1) * (hi + 1)) as f64),
        });
        out.push(Entry {
            metric: "lat",
            host,
            minute,
            val: Val::Hist(lat_values(minute, hi, 0)),
        });
    }
    out.push(Entry {
        metric: "jobs",
        host: "h1",
        minute,
        val: Val::Counter(1.0),
    });
    if h9 {
        out.push(Entry {
            metric: "jobs",
            host: "h9",
            minute,
            val: Val::Counter(2.0),
        });
    }
    out
}

/// Extra contributions for a minute (late data): new values for req on both hosts and lat on h1.
fn late_entries(minute: i64, salt: i64) -> Vec<Entry> {
    vec![
        Entry {
            metric: "req",
            host: "h1",
            minute,
            val: Val::Counter((100 + salt) as f64),
        },
        Entry {
            metric: "req",
            host: "h2",
            minute,
            val: Val::Counter((200 + salt) as f64),
        },
        Entry {
            metric: "lat",
            host: "h1",
            minute,
            val: Val::Hist(lat_values(minute, 0, salt)),
        },
    ]
}

/// Posts `entries` as JSON batches with idempotency keys `<key>-<i>` (so posting again with the same
/// key is a retry, merged once). `counted`: the model takes them in.
fn post(c: &Cold, model: &mut Model, key: &str, entries: &[Entry], counted: bool) {
    for (i, chunk) in entries.chunks(1000).enumerate() {
        let series: Vec<serde_json::Value> = chunk
            .iter()
            .map(|e| match &e.val {
                Val::Counter(v) => serde_json::json!({"metric": e.metric, "tags": {"host": e.host},
                    "time": e.minute + 7, "type": "counter", "value": v}),
                Val::Hist(vs) => serde_json::json!({"metric": e.metric, "tags": {"host": e.host},
                    "time": e.minute + 7, "type": "histogram", "values": vs}),
            })
            .collect();
        post_ingest(
            &c.stack.partitioner.url("/api/v1/ingest"),
            &format!("{key}-{i}"),
            series,
        );
        model.posted += chunk.len() as u64;
        if counted {
            for e in chunk {
                model.apply(e);
            }
        }
    }
}

/// Waits until the aggregator has handled every posted record (merged, duplicate or dropped).
fn wait_ingested(c: &Cold, model: &Model) {
    let want = model.posted as f64;
    let start = Instant::now();
    let mut handled = 0.0;
    while start.elapsed() < Duration::from_secs(120) {
        let m = c.agg_metrics();
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        handled = get("thermo_aggregator_sent_total") + get("thermo_aggregator_duplicates_total");
        handled += m
            .iter()
            .filter(|(k, _)| k.starts_with("thermo_aggregator_dropped_total{"))
            .map(|(_, v)| *v)
            .sum::<f64>();
        assert!(
            handled <= want,
            "the aggregator handled {handled} records, more than the {want} posted"
        );
        if handled == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out: the aggregator handled {handled} of {want} records\naggregator log:\n{}",
        c.agg_log()
    );
}

/// What the compactor still has to do at `now` (from the catalog keys of store/src/redis_catalog.rs).
fn unsettled(c: &Cold, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    for h in c.pending_hours() {
        if h + HOUR + LAG <= now {
            out.push(format!("hour {h} pending"));
        }
    }
    for (res, len) in [("5m", DAY), ("1h", WEEK)] {
        for ch in c.zset(&format!("thermo:dirty:{res}")) {
            if ch + len + LAG <= now {
                out.push(format!("{res} chunk {ch} dirty"));
            }
        }
    }
    for h in c.zset("thermo:trim") {
        if h <= now - HOT_RETENTION_HOURS * HOUR - HOUR {
            out.push(format!("hour {h} not trimmed"));
        }
    }
    out
}

/// Waits until the compactor has rolled up, rebuilt and trimmed everything eligible.
fn wait_settled(c: &Cold) {
    let start = Instant::now();
    let mut left = Vec::new();
    while start.elapsed() < COMPACTION_TIMEOUT {
        left = unsettled(c, now_s());
        if left.is_empty() {
            // Whatever the last cycle wrote must be readable: give the cycle time to finish.
            std::thread::sleep(Duration::from_millis(1500));
            if unsettled(c, now_s()).is_empty() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    left.truncate(20);
    panic!(
        "timed out after {COMPACTION_TIMEOUT:?} waiting for the compactor; still to do: {left:?}\naggregator log:\n{}",
        c.agg_log()
    );
}

// ------------------------------------------------------------------------------------------------
// Expectations and checks

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stat {
    Sum,
    Count,
    P99,
}

impl Stat {
    fn name(self) -> &'static str {
        match self {
            Stat::Sum => "sum",
            Stat::Count => "count",
            Stat::P99 => "p99",
        }
    }
}

/// The true nearest-rank percentile.
fn true_percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

type Tags = BTreeMap<String, String>;

/// The answer the model expects: group tags → points.
#[allow(clippy::too_many_arguments)]
fn expect(
    model: &Model,
    metric: &str,
    stat: Stat,
    from: i64,
    to: i64,
    step: i64,
    by_host: bool,
) -> BTreeMap<Tags, Vec<(i64, f64)>> {
    let mut acc: BTreeMap<(Tags, i64), Cell> = BTreeMap::new();
    for ((m, h, t), cell) in &model.cells {
        if *m != metric || *t < from || *t >= to {
            continue;
        }
        let tags: Tags = if by_host {
            [("host".to_string(), h.to_string())].into()
        } else {
            Tags::new()
        };
        let a = acc.entry((tags, window_start(*t, step))).or_default();
        a.sum += cell.sum;
        a.count += cell.count;
        a.values.extend_from_slice(&cell.values);
    }
    let mut out: BTreeMap<Tags, Vec<(i64, f64)>> = BTreeMap::new();
    for ((tags, b), cell) in acc {
        let v = match stat {
            Stat::Sum => cell.sum,
            Stat::Count => cell.count as f64,
            Stat::P99 => true_percentile(&cell.values, 99.0),
        };
        out.entry(tags).or_default().push((b, v));
    }
    out
}

fn answer_series(a: &serde_json::Value) -> BTreeMap<Tags, Vec<(i64, f64)>> {
    a["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series array in {a}"))
        .iter()
        .map(|s| {
            let tags: Tags = s["tags"]
                .as_object()
                .expect("tags")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("tag value").to_string()))
                .collect();
            let points = s["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| (p[0].as_i64().expect("t"), p[1].as_f64().expect("v")))
                .collect();
            (tags, points)
        })
        .collect()
}

/// The hour `hour` of `req` is exact at every resolution and served by `source` alone.
fn check_hour_sources(c: &Cold, model: &Model, hour: i64, source: &str, when: &str) {
    for res in RESOLUTIONS {
        let step = if res == "1h" { HOUR } else { 300 };
        let a = check(
            c,
            model,
            "req",
            Stat::Sum,
            hour,
            hour + HOUR,
            step,
            res,
            true,
        );
        assert_eq!(sources(&a), vec![source], "hour {hour} at {res} {when}");
    }
}

/// Queries the read service and compares every point with the model: sums and counts exactly,
/// p99 within the HDR histogram's relative error. Returns the answer.
#[allow(clippy::too_many_arguments)]
fn check(
    c: &Cold,
    model: &Model,
    metric: &str,
    stat: Stat,
    from: i64,
    to: i64,
    step: i64,
    res: &str,
    by_host: bool,
) -> serde_json::Value {
    let mut q = format!(
        "metric={metric}&stat={}&from={from}&to={to}&step={step}&resolution={res}",
        stat.name()
    );
    if by_host {
        q.push_str("&group_by=host");
    }
    let t = Instant::now();
    let a = c.stack.query(&q);
    if t.elapsed() > Duration::from_secs(3) {
        eprintln!("[cold] slow query ({:.1?}): {q}", t.elapsed());
    }
    let got = answer_series(&a);
    let want = expect(model, metric, stat, from, to, step, by_host);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{q}: series (sources {:?})",
        sources(&a)
    );
    for (tags, w) in &want {
        let g = &got[tags];
        let ok = g.len() == w.len()
            && g.iter().zip(w).all(|((gt, gv), (wt, wv))| {
                gt == wt
                    && match stat {
                        Stat::P99 => (gv - wv).abs() <= wv.abs() * HIST_RELATIVE_ERROR + 0.001,
                        _ => gv == wv,
                    }
            });
        if !ok {
            let gm: BTreeMap<i64, f64> = g.iter().copied().collect();
            let wm: BTreeMap<i64, f64> = w.iter().copied().collect();
            let buckets: BTreeSet<i64> = gm.keys().chain(wm.keys()).copied().collect();
            let diffs: Vec<String> = buckets
                .into_iter()
                .filter(|b| gm.get(b) != wm.get(b))
                .take(8)
                .map(|b| format!("bucket {b}: got {:?}, want {:?}", gm.get(&b), wm.get(&b)))
                .collect();
            panic!(
                "{q}: series {tags:?} differs from the model ({} points answered, {} expected, sources {:?}); first differences: {diffs:#?}",
                g.len(),
                w.len(),
                sources(&a)
            );
        }
    }
    a
}

/// Fixed instants of the run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// First hour with data (~8 days ago).
    t0: i64,
    /// Every minute from here on has data.
    dense_from: i64,
    /// An hour without regular data (filled during the S3 outage).
    gap_hour: i64,
    /// h9 reports up to here.
    h9_until: i64,
}

fn range_end() -> i64 {
    window_start(now_s(), HOUR) + HOUR
}

/// The whole range at every resolution, per hour and in one bucket; p99 per hour. Returns the
/// sources of the 1h answer over the whole range.
fn check_everything(c: &Cold, model: &Model, plan: &Plan) -> Vec<String> {
    let (from, to) = (plan.t0, range_end());
    let mut whole_sources = Vec::new();
    for res in RESOLUTIONS {
        for metric in ["req", "lat"] {
            for stat in [Stat::Sum, Stat::Count] {
                let a = check(c, model, metric, stat, from, to, WHOLE_STEP, res, false);
                if res == "1h" && metric == "req" && stat == Stat::Sum {
                    whole_sources = sources(&a);
                }
                check(c, model, metric, stat, from, to, HOUR, res, false);
            }
        }
        check(c, model, "req", Stat::Sum, from, to, WHOLE_STEP, res, true);
        check(c, model, "lat", Stat::Count, from, to, HOUR, res, true);
    }
    for res in ["5m", "1h"] {
        check(c, model, "lat", Stat::P99, from, to, HOUR, res, false);
        check(c, model, "lat", Stat::P99, from, to, WHOLE_STEP, res, false);
    }
    whole_sources
}

/// A lighter pass over the whole range: one bucket at every resolution, hourly at 1h.
fn check_summary(c: &Cold, model: &Model, plan: &Plan) {
    let (from, to) = (plan.t0, range_end());
    for res in RESOLUTIONS {
        check(c, model, "req", Stat::Sum, from, to, WHOLE_STEP, res, true);
        check(
            c,
            model,
            "lat",
            Stat::Count,
            from,
            to,
            WHOLE_STEP,
            res,
            false,
        );
    }
    check(c, model, "req", Stat::Count, from, to, HOUR, "1h", false);
    check(c, model, "lat", Stat::Sum, from, to, HOUR, "1h", false);
    check(c, model, "lat", Stat::P99, from, to, HOUR, "1h", false);
}

/// What the hours that got late data hold at the moment of a check.
#[derive(Clone, Copy, Debug)]
enum Late {
    /// New contributions in Redis, not rolled up yet: objects and Redis serve together.
    New,
    /// Redis holds only contributions the objects already have: the objects serve alone.
    Retried,
    /// Rolled up again (sources not checked).
    Settled,
}

/// The hours that got late data, at every resolution.
fn check_late_hours(c: &Cold, model: &Model, hours: &[i64], late: Late) {
    for &h in hours {
        for res in RESOLUTIONS {
            let step = if res == "1h" { HOUR } else { 300 };
            let a = check(c, model, "req", Stat::Sum, h, h + HOUR, step, res, true);
            // (The last finished hour may not have been rolled up yet: then Redis only.)
            let cold = c.zset("thermo:cold:1m").contains(&h);
            let want: &[&str] = match (late, cold) {
                (_, false) => &["hot"],
                (Late::New, true) => &["hot", "cold"],
                (Late::Retried, true) => &["cold"],
                (Late::Settled, true) => &[],
            };
            if !want.is_empty() {
                assert_eq!(
                    sources(&a),
                    want,
                    "hour {h} at {res} (rolled up: {cold}, {late:?})"
                );
            }
            check(c, model, "lat", Stat::Count, h, h + HOUR, step, res, false);
        }
        check(c, model, "req", Stat::Count, h, h + HOUR, 60, "1m", true);
        check(c, model, "lat", Stat::P99, h, h + HOUR, HOUR, "1h", false);
        let day = window_start(h, DAY);
        check(c, model, "req", Stat::Sum, day, day + DAY, DAY, "5m", false);
        let week = window_start(h, WEEK);
        check(
            c,
            model,
            "req",
            Stat::Sum,
            week,
            week + WEEK,
            WEEK,
            "1h",
            false,
        );
    }
}

/// 5-minute buckets at resolution 5m over `[from, to)`.
fn check_5m(c: &Cold, model: &Model, from: i64, to: i64) {
    for metric in ["req", "lat"] {
        for stat in [Stat::Sum, Stat::Count] {
            check(c, model, metric, stat, from, to, 300, "5m", false);
        }
    }
    check(c, model, "lat", Stat::P99, from, to, 300, "5m", false);
}

// ------------------------------------------------------------------------------------------------
// Phases

struct Phases {
    failed: Vec<String>,
    notes: Vec<String>,
    start: Instant,
}

impl Phases {
    fn run(&mut self, name: &str, f: impl FnOnce()) {
        let t = Instant::now();
        eprintln!("[cold] --- {name}");
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => eprintln!("[cold] PASS {name} ({:.1?})", t.elapsed()),
            Err(e) => {
                let msg = panic_text(&*e);
                eprintln!("[cold] FAIL {name} ({:.1?}): {msg}", t.elapsed());
                self.failed.push(format!("{name}: {msg}"));
            }
        }
    }

    fn note(&mut self, s: String) {
        eprintln!("[cold] note: {s}");
        self.notes.push(s);
    }
}

#[test]
fn cold_roll_up_trim_late_data_s3_outage_and_duckdb() {
    roll_up_trim_late_data_s3_outage_and_duckdb(false);
}

#[test]
fn cold_on_a_redis_cluster_roll_up_trim_late_data_s3_outage_and_duckdb() {
    roll_up_trim_late_data_s3_outage_and_duckdb(true);
}

fn roll_up_trim_late_data_s3_outage_and_duckdb(redis_cluster: bool) {
    let mut ph = Phases {
        failed: Vec::new(),
        notes: Vec::new(),
        start: Instant::now(),
    };
    let mut c = Cold::start(redis_cluster);
    eprintln!(
        "[cold] stack up in {:.1?}; logs in {}",
        ph.start.elapsed(),
        c.stack.dir.path().display()
    );
    let now0 = now_s();
    let t0 = window_start(now0 - 8 * DAY, HOUR);
    let plan = Plan {
        t0,
        dense_from: window_start(now0 - 3 * HOUR, HOUR),
        gap_hour: t0 + 2 * HOUR,
        h9_until: t0 + 36 * HOUR,
    };
    let mut model = Model::default();

    ph.run("ingest 8 days of minutes", || {
        let data_end = minute_start(now0) - 10 * 60;
        let mut minutes: Vec<i64> = (0..)
            .map(|k| t0 + 7 * 60 * k)
            .take_while(|m| *m < plan.dense_from)
            .filter(|m| window_start(*m, HOUR) != plan.gap_hour)
            .collect();
        minutes.extend((plan.dense_from..=data_end).step_by(60));
        let entries: Vec<Entry> = minutes
            .iter()
            .flat_map(|m| base_entries(*m, *m < plan.h9_until))
            .collect();
        // The compactor waits until the whole backfill is in: an hour older than the grace period
        // that it rolled up while the backfill was still arriving would refuse the rest of its
        // minutes as late (the minutes of one request are spread over the partitions, applied
        // one partition after another).
        let lease = hold_lease(&c.stack.redis, c.agg_port(), false);
        post(&c, &mut model, "base", &entries, true);
        wait_ingested(&c, &model);
        drop(lease);
        let m = c.agg_metrics();
        let dropped: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("thermo_aggregator_dropped_total{"))
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(dropped, 0.0, "nothing may be dropped: {m:?}");
        eprintln!(
            "[cold] posted {} series-minutes over {} minutes",
            model.posted,
            minutes.len()
        );
    });

    ph.run("compactor rolls up and trims", || {
        wait_settled(&c);
        assert!(c.agg("hours_trimmed_total") > 0.0, "no hour trimmed");
        assert!(c.agg("cold_objects_written_total") > 0.0);
        assert_eq!(c.agg("cold_cycle_failures_total"), 0.0);
        eprintln!(
            "[cold] {} objects written, {} hours trimmed",
            c.agg("cold_objects_written_total"),
            c.agg("hours_trimmed_total")
        );
    });

    ph.run("redis holds only the last hours", || {
        let now = now_s();
        let hours = c.redis_hours();
        assert!(!hours.is_empty(), "no data keys left at all");
        let old: Vec<i64> = hours
            .iter()
            .copied()
            .filter(|h| *h <= now - HOT_RETENTION_HOURS * HOUR - HOUR - 60)
            .collect();
        assert!(
            old.is_empty(),
            "hours older than the hot retention still in Redis: {old:?} (now {now})"
        );
        assert!(!hours.contains(&t0), "the first hour is still in Redis");
        assert!(c.zset("thermo:cold:1m").contains(&t0));
    });

    ph.run(
        "exact at 1m, 5m and 1h over 8 days, per hour and per host",
        || {
            let s = check_everything(&c, &model, &plan);
            assert!(
                s.contains(&"cold".to_string()),
                "sources of the whole range: {s:?}"
            );
        },
    );

    ph.run("exact at 5m over a finished day and over today", || {
        let yday2 = window_start(now_s(), DAY) - 2 * DAY;
        check_5m(&c, &model, yday2, yday2 + DAY);
        assert!(
            c.zset("thermo:cold:5m").contains(&yday2),
            "no 5m object for day {yday2}"
        );
        check_5m(&c, &model, window_start(now_s(), DAY), range_end());
    });

    ph.run(
        "every minute of the last hours exactly once across the hot/cold boundary",
        || {
            // Data in the current hour, so that some of the range can only come from Redis (the
            // tests' clock started at 10:03: the hour has most of its minutes left).
            let m = minute_start(now_s());
            assert!(
                m % HOUR < HOUR - 600,
                "minute {m} is late in its hour: the test ran for over 45 minutes"
            );
            post(&c, &mut model, "now", &base_entries(m, false), true);
            wait_ingested(&c, &model);
            let (from, to) = (plan.dense_from, m + 60);
            assert!(to - from >= 3 * HOUR);
            let a = check(&c, &model, "req", Stat::Sum, from, to, 60, "1m", false);
            let s = sources(&a);
            assert!(
                s.contains(&"hot".to_string()) && s.contains(&"cold".to_string()),
                "sources {s:?}"
            );
            let points = &answer_series(&a)[&Tags::new()];
            let minutes: BTreeSet<i64> = points.iter().map(|p| p.0).collect();
            assert_eq!(minutes.len(), points.len(), "a minute answered twice");
            check(&c, &model, "req", Stat::Count, from, to, 60, "1m", true);
            check(&c, &model, "lat", Stat::Sum, from, to, 60, "1m", false);
            check(&c, &model, "lat", Stat::P99, from, to, 60, "1m", false);
        },
    );

    ph.run(
        "a host that stopped reporting days ago stays exact (jobs{host=h9})",
        || {
            let (from, to) = (plan.t0, range_end());
            for res in RESOLUTIONS {
                check(
                    &c,
                    &model,
                    "jobs",
                    Stat::Sum,
                    from,
                    to,
                    WHOLE_STEP,
                    res,
                    true,
                );
            }
            check(&c, &model, "jobs", Stat::Count, from, to, HOUR, "1h", true);
        },
    );

    // Late data inside the grace period: an hour rolled up and trimmed a day ago, and the last
    // finished hour (rolled up, still in Redis). New contributions land on minutes with data and on
    // empty minutes.
    let late_hours = {
        let now = now_s();
        [
            window_start(now - 26 * HOUR, HOUR),
            window_start(now, HOUR) - HOUR,
        ]
    };
    let late_batch: Vec<Entry> = late_hours
        .iter()
        .flat_map(|h| {
            let with_data: Vec<i64> = (0..60)
                .map(|k| h + 60 * k)
                .filter(|m| model.has("req", *m))
                .take(2)
                .collect();
            let empty: Vec<i64> = (0..60)
                .map(|k| h + 60 * k)
                .filter(|m| !model.has("req", *m))
                .take(2)
                .collect();
            with_data
                .into_iter()
                .chain(empty)
                .enumerate()
                .flat_map(|(i, m)| late_entries(m, i as i64 + 1))
                .collect::<Vec<_>>()
        })
        .collect();

    ph.run(
        "late data within the grace period is merged exactly",
        || {
            let rolled = c.zset("thermo:cold:1m");
            assert!(
                rolled.contains(&late_hours[0]),
                "hour {} should be rolled up already",
                late_hours[0]
            );
            let written = c.agg("cold_objects_written_total");
            // With the compactor held off, the hour has its object and new cells in Redis (pending
            // again): the answer is the union, each contribution once.
            let lease = hold_lease(&c.stack.redis, c.agg_port(), false);
            post(&c, &mut model, "late-in-grace", &late_batch, true);
            wait_ingested(&c, &model);
            assert_eq!(c.agg(r#"dropped_total{reason="late"}"#), 0.0);
            check_late_hours(&c, &model, &late_hours, Late::New);
            drop(lease);
            wait_settled(&c);
            assert!(c.agg("cold_objects_written_total") > written);
            check_everything(&c, &model, &plan);
            for h in late_hours {
                check_5m(&c, &model, h, h + HOUR);
                check(&c, &model, "req", Stat::Sum, h, h + HOUR, 60, "1m", true);
            }
        },
    );

    ph.run("a retried late batch is not counted twice", || {
        // The retry's cells in Redis hold contributions the objects already have.
        let lease = hold_lease(&c.stack.redis, c.agg_port(), false);
        post(&c, &mut model, "late-in-grace", &late_batch, false);
        wait_ingested(&c, &model);
        check_late_hours(&c, &model, &late_hours, Late::Retried);
        drop(lease);
        wait_settled(&c);
        check_late_hours(&c, &model, &late_hours, Late::Settled);
        check_summary(&c, &model, &plan);
        for h in late_hours {
            check_5m(&c, &model, h, h + HOUR);
            check(&c, &model, "req", Stat::Sum, h, h + HOUR, 60, "1m", true);
        }
    });

    ph.run(
        "late data beyond the grace period is dropped and counted",
        || {
            let h = window_start(now_s() - 5 * DAY, HOUR);
            assert!(c.zset("thermo:cold:1m").contains(&h));
            let minutes: Vec<i64> = (0..60)
                .map(|k| h + 60 * k)
                .filter(|m| model.has("req", *m))
                .take(2)
                .chain(
                    (0..60)
                        .map(|k| h + 60 * k)
                        .filter(|m| !model.has("req", *m))
                        .take(2),
                )
                .collect();
            let batch: Vec<Entry> = minutes
                .iter()
                .enumerate()
                .flat_map(|(i, m)| late_entries(*m, 50 + i as i64))
                .collect();
            let before = c.agg(r#"dropped_total{reason="late"}"#);
            post(&c, &mut model, "late-beyond-grace", &batch, false);
            wait_ingested(&c, &model);
            assert_eq!(
                c.agg(r#"dropped_total{reason="late"}"#) - before,
                batch.len() as f64,
                "every series-minute of the batch is dropped as late"
            );
            wait_settled(&c);
            check_summary(&c, &model, &plan);
            check_5m(&c, &model, h, h + HOUR);
            check(&c, &model, "req", Stat::Sum, h, h + HOUR, 60, "1m", true);
        },
    );

    // S3 outage: moto stops (losing everything it holds: the objects are saved first and put back
    // before the compactor may run again, as a durable S3 would have kept them). Meanwhile an empty
    // old hour gets data (h9 included: a host that comes back with old minutes), and current
    // traffic goes on.
    let backup = subdir(c.stack.dir.path(), "s3-backup");
    let gap = plan.gap_hour;
    let mut saved = None;
    ph.run(
        "S3 outage: hot data still answered, cycles fail, then recover",
        || {
            let gap_entries: Vec<Entry> = (0..12)
                .map(|k| gap + 5 * 60 * k)
                .flat_map(|m| base_entries(m, true))
                .collect();
            assert!(
                !c.zset("thermo:cold:1m").contains(&gap),
                "the gap hour must have no object"
            );
            saved = Some(c.s3.dump(&backup));
            let failures = c.agg("cold_cycle_failures_total");
            c.moto.stop();
            post(&c, &mut model, "gap", &gap_entries, true);
            wait_ingested(&c, &model);
            post(
                &c,
                &mut model,
                "during-outage",
                &base_entries(minute_start(now_s()), false),
                true,
            );
            wait_ingested(&c, &model);
            // A compactor cycle fails while S3 is down.
            wait_metric(
                c.agg_port(),
                "thermo_aggregator_cold_cycle_failures_total",
                Duration::from_secs(60),
                |v| v > failures,
            );
            // The new hour is only in Redis: answered exactly, from Redis alone.
            check_hour_sources(&c, &model, gap, "hot", "while S3 is down");
            check(
                &c,
                &model,
                "lat",
                Stat::Count,
                gap,
                gap + HOUR,
                60,
                "1m",
                false,
            );
            check(
                &c,
                &model,
                "lat",
                Stat::P99,
                gap,
                gap + HOUR,
                HOUR,
                "1h",
                false,
            );
            assert!(
                c.redis_hours().contains(&gap),
                "the gap hour must stay in Redis"
            );
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                check(
                    &c,
                    &model,
                    "jobs",
                    Stat::Sum,
                    gap,
                    gap + HOUR,
                    60,
                    "1m",
                    true,
                );
            }));
            if let Err(e) = r {
                side_failure(format!("while S3 was down: {}", panic_text(&*e)));
            }
            // Not asserted: what a query needing objects answers while S3 is down (cache or error).
            let (status, body) = get_json(&c.stack.read.url(&format!(
                "/api/v1/query?metric=req&stat=sum&from={}&to={}&step={WHOLE_STEP}&resolution=1h",
                plan.t0,
                range_end()
            )));
            let detail = if status == 200 {
                format!("sources {:?}", sources(&body))
            } else {
                body.to_string()
            };
            ph_note(format!(
                "while S3 was down, the whole-range query answered {status}: {detail}"
            ));

            // Hold the compactor's lease while S3 comes back and the objects are put back.
            let lease = hold_lease(&c.stack.redis, c.agg_port(), true);
            c.moto.restart();
            assert_eq!(c.s3.restore(&backup), saved.unwrap(), "objects put back");
            drop(lease);

            wait_settled(&c);
            assert!(
                c.zset("thermo:cold:1m").contains(&gap),
                "the gap hour is rolled up"
            );
            assert!(!c.redis_hours().contains(&gap), "the gap hour is trimmed");
            check_hour_sources(&c, &model, gap, "cold", "after the outage");
            check_everything(&c, &model, &plan);
            check_5m(
                &c,
                &model,
                window_start(gap, DAY),
                window_start(gap, DAY) + DAY,
            );
            assert!(
                c.s3.keys().len() > saved.unwrap(),
                "a new object for the gap hour"
            );
        },
    );
    if c.moto.proc.child.is_none() {
        // The phase failed with S3 down: bring it back with its objects for the next phases.
        let lease = hold_lease(&c.stack.redis, c.agg_port(), true);
        c.moto.restart();
        if let Some(n) = saved {
            assert_eq!(c.s3.restore(&backup), n);
        }
        drop(lease);
    }

    ph.run(
        "a host back with old minutes (jobs{host=h9} in the gap hour) is kept through the outage",
        || {
            let during = std::mem::take(&mut *SIDE_FAILURES.lock().unwrap());
            let after = std::panic::catch_unwind(AssertUnwindSafe(|| {
                wait_settled(&c);
                for res in RESOLUTIONS {
                    let step = if res == "1h" { HOUR } else { 300 };
                    check(
                        &c,
                        &model,
                        "jobs",
                        Stat::Sum,
                        gap,
                        gap + HOUR,
                        step,
                        res,
                        true,
                    );
                }
                check(
                    &c,
                    &model,
                    "jobs",
                    Stat::Sum,
                    plan.t0,
                    range_end(),
                    WHOLE_STEP,
                    "1h",
                    true,
                );
            }))
            .err()
            .map(|e| format!("after S3 came back: {}", panic_text(&*e)));
            let all: Vec<String> = during.into_iter().chain(after).collect();
            assert!(all.is_empty(), "{}", all.join("\n"));
        },
    );
    for n in std::mem::take(&mut *NOTES.lock().unwrap()) {
        ph.note(n);
    }

    ph.run("DuckDB over the objects agrees with the read API and the model", || {
        let dir = subdir(c.stack.dir.path(), "duckdb");
        let t = c.s3.totals(&dir);
        assert!(t["objects"].as_u64().unwrap_or(0) > 0, "{t}");
        assert_eq!(t["misplaced"], 0, "rows outside their object's chunk: {t}");
        assert_eq!(t["mismatched"], 0, "rows whose columns disagree with their key: {t}");
        let chunks = t["chunks"].as_array().expect("chunks");
        let now = now_s();
        for (res, len) in [("1m", HOUR), ("5m", DAY), ("1h", WEEK)] {
            let from = window_start(plan.t0, len);
            let to = window_start(now, len) + len;
            for metric in ["req", "lat"] {
                let duck: BTreeMap<i64, (f64, u64)> = chunks
                    .iter()
                    .filter(|x| x["res"] == res && x["metric"] == metric && x["tenant"] == "default")
                    .map(|x| {
                        (
                            x["start"].as_i64().unwrap(),
                            (x["sum"].as_f64().unwrap(), x["count"].as_u64().unwrap()),
                        )
                    })
                    .collect();
                let api = |stat: &str| -> BTreeMap<i64, f64> {
                    let a = c.stack.query(&format!(
                        "metric={metric}&stat={stat}&from={from}&to={to}&step={len}&resolution={res}"
                    ));
                    answer_series(&a)
                        .remove(&Tags::new())
                        .unwrap_or_default()
                        .into_iter()
                        .collect()
                };
                let (api_sum, api_count) = (api("sum"), api("count"));
                for (start, (s, n)) in &duck {
                    let want = model.total(metric, *start, start + len);
                    assert_eq!(
                        (*s, *n),
                        (want.0, want.1),
                        "DuckDB {res} {metric} chunk {start} vs the model"
                    );
                    assert_eq!(
                        (api_sum.get(start), api_count.get(start)),
                        (Some(s), Some(&(*n as f64))),
                        "read API {res} {metric} chunk {start} vs DuckDB"
                    );
                }
                // Every finished chunk with data has its object.
                let expected: BTreeSet<i64> = model
                    .hours()
                    .into_iter()
                    .map(|h| window_start(h, len))
                    .filter(|ch| ch + len + LAG <= now)
                    .collect();
                eprintln!(
                    "[cold] {res} {metric}: {} chunks agree (DuckDB, read API, model)",
                    duck.len()
                );
                let missing: Vec<&i64> = expected.iter().filter(|ch| !duck.contains_key(ch)).collect();
                assert!(missing.is_empty(), "{res} {metric}: no object for chunks {missing:?}");
            }
        }
        eprintln!(
            "[cold] DuckDB read {} objects, {} rows",
            t["objects"], t["rows"]
        );
    });

    // Last, as it changes the aggregator's configuration: 1m objects are kept one day only. A day
    // that straddles that boundary has its early hours' 1m objects deleted; its 5m object (kept 90
    // days) must still hold them when a late minute makes the compactor rebuild the day.
    ph.run(
        "lower retention_1m_days: a day rebuilt at 5m keeps its expired hours",
        || {
            let cfg = c.stack.dir.path().join("aggregator-0.toml");
            let toml = std::fs::read_to_string(&cfg).expect("aggregator config");
            assert!(toml.contains("retention_1m_days = 30\n"));
            std::fs::write(
                &cfg,
                toml.replace("retention_1m_days = 30\n", "retention_1m_days = 1\n"),
            )
            .expect("write config");
            assert!(
                c.stack.aggregators[0]
                    .proc
                    .terminate(Duration::from_secs(20)),
                "the aggregator did not stop cleanly"
            );
            // The stopped compactor keeps its lease until it expires (a minute); free it now.
            c.stack.redis.cli(&["DEL", LEASE]);
            c.stack.aggregators[0].restart();
            // Its counters start again from zero.
            model.posted = 0;
            wait_until(
                "1m objects older than a day to be deleted",
                Duration::from_secs(60),
                || {
                    let cutoff = now_s() - DAY;
                    c.zset("thermo:cold:1m")
                        .iter()
                        .all(|h| h + HOUR > cutoff - 60)
                },
            );
            // A minute just inside the 1m retention (and inside the grace period).
            let m = minute_start(now_s() - DAY + 900);
            let day = window_start(m, DAY);
            let expired: Vec<i64> = model
                .hours()
                .into_iter()
                .filter(|h| window_start(*h, DAY) == day && !c.zset("thermo:cold:1m").contains(h))
                .collect();
            // The tests' clock started at 10:03: the early hours of yesterday have expired.
            assert!(
                !expired.is_empty(),
                "no hour of day {day} has expired at {}",
                now_s()
            );
            assert!(
                c.zset("thermo:cold:5m").contains(&day),
                "day {day} has a 5m object"
            );
            eprintln!(
                "[cold] day {day}: {} hours without their 1m objects",
                expired.len()
            );
            check(&c, &model, "req", Stat::Sum, day, day + DAY, DAY, "5m", false);
            let batch = late_entries(m, 77);
            post(&c, &mut model, "after-expiry", &batch, true);
            wait_ingested(&c, &model);
            wait_settled(&c);
            for (metric, stat) in [("req", Stat::Sum), ("lat", Stat::Count)] {
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    check(&c, &model, metric, stat, day, day + DAY, DAY, "5m", false);
                }));
                if let Err(e) = r {
                    let (s, n) = model.total(metric, day, expired[expired.len() - 1] + HOUR);
                    panic!(
                        "{}\n(the day's hours {}..={} lost their 1m objects to retention; they hold sum {s}, count {n} of {metric})",
                        panic_text(&*e),
                        expired[0],
                        expired[expired.len() - 1]
                    );
                }
            }
            check_5m(&c, &model, day, day + DAY);
        },
    );

    for n in std::mem::take(&mut *NOTES.lock().unwrap()) {
        ph.note(n);
    }
    eprintln!("[cold] total {:.1?}", ph.start.elapsed());
    for n in &ph.notes {
        eprintln!("[cold] note: {n}");
    }
    assert!(
        ph.failed.is_empty(),
        "{} phase(s) failed (logs in {}):\n{}",
        ph.failed.len(),
        c.stack.dir.path().display(),
        ph.failed.join("\n\n")
    );
}

/// Notes taken inside a phase closure (which cannot borrow the phases).
static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// Failures observed inside one phase and asserted by a later one.
static SIDE_FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn ph_note(s: String) {
    NOTES.lock().unwrap().push(s);
}

fn side_failure(s: String) {
    eprintln!("[cold] side failure: {s}");
    SIDE_FAILURES.lock().unwrap().push(s);
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

const LEASE: &str = "thermo:cold:lock";

/// Takes the compactor's lease (the Redis key of store/src/redis_catalog.rs) so that no cycle starts, and
/// waits until a cycle in progress has finished (with S3 down: no new failure for 4 s).
fn hold_lease(redis: &Redis, agg_port: u16, s3_down: bool) -> Lease<'_> {
    redis.cli(&["SET", LEASE, "cold-test", "PX", "120000"]);
    let lease = Lease(redis);
    if !s3_down {
        // A cycle in progress finishes in well under a second when S3 answers.
        std::thread::sleep(Duration::from_millis(1500));
        return lease;
    }
    let failures = || metric(agg_port, "thermo_aggregator_cold_cycle_failures_total");
    let mut last = failures();
    wait_until(
        "the compactor to stop cycling (lease held by the test)",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_secs(4));
            let now = failures();
            let idle = now == last;
            last = now;
            idle
        },
    );
    lease
}

/// The compactor's lease held by the test; released when dropped (also when a phase fails).
struct Lease<'a>(&'a Redis);

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let held = self.0.cli(&["GET", LEASE]);
        if held.trim() == "cold-test" {
            self.0.cli(&["DEL", LEASE]);
        } else if !std::thread::panicking() {
            panic!("the test's compactor lease was lost (holder now {held:?})");
        }
    }
}

/// DuckDB reads an object of layout 3 (a footer per row group and the directory, in bytes no
/// offset of the Parquet footer points at) exactly as the same rows in layout 2: many row groups,
/// every column's totals.
#[test]
fn duckdb_reads_layout_3_as_layout_2() {
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::codec::HotCell;
    use thermo_core::key::MetricKey;
    use thermo_core::window::Resolution;
    use thermo_store::cold_format::{encode_tuned, ColdRow, Tuning};

    let dir = TempDir::new("duckdb-layouts");
    let rows: Vec<ColdRow> = (0..3_000u64)
        .flat_map(|s| {
            let series = MetricKey::new(
                "acme",
                if s % 2 == 0 { "req" } else { "err" },
                vec![("host".into(), format!("h{s}"))],
            )
            .expect("key");
            (0..20u64).map(move |m| ColdRow {
                series: series.clone(),
                window_start: 3_600 + 60 * m as i64,
                cell: HotCell {
                    contributors: vec![(s, m)],
                    agg: Aggregate::Counter(Counter {
                        sum: (s * 100 + m) as f64,
                        samples: m + 1,
                    }),
                },
            })
        })
        .collect();
    for (name, directory) in [("layout3", true), ("layout2", false)] {
        let tuning = Tuning {
            row_group_rows: 4_096,
            directory,
            ..Tuning::default()
        };
        let bytes = encode_tuned(Resolution::OneMinute, rows.clone(), tuning).expect("encode");
        std::fs::write(dir.path().join(format!("{name}.parquet")), bytes).expect("write");
    }
    let python = crate::support::s3::find_python_bin("python3", "apt-get install python3");
    let sql = "select count(*), sum(count), sum(sum), count(distinct series_key), \
               count(distinct metric), min(window_start), max(window_start), \
               count(*) filter (where tags = 'host=h7'), sum(octet_length(state)) \
               from read_parquet(?)";
    let script = format!(
        "import duckdb, json, sys\n\
         out = {{}}\n\
         for name in ['layout3', 'layout2']:\n\
         \x20   path = sys.argv[1] + '/' + name + '.parquet'\n\
         \x20   out[name] = [float(v) for v in duckdb.execute({sql:?}, [path]).fetchone()]\n\
         \x20   out[name + '_row_groups'] = duckdb.execute('select count(distinct row_group_id) from parquet_metadata(?)', [path]).fetchone()[0]\n\
         print(json.dumps(out))\n"
    );
    let out = std::process::Command::new(&python)
        .args(["-c", &script, &dir.path().display().to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "DuckDB failed (pip install duckdb):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let sum: u64 = (0..3_000u64).map(|s| 20 * s * 100 + 190).sum();
    let want = serde_json::json!([
        60_000.0,
        (3_000 * 210) as f64,
        sum as f64,
        3_000.0,
        2.0,
        3_600.0,
        4_740.0,
        20.0,
        v["layout2"][8].clone()
    ]);
    assert_eq!(v["layout2"], want, "layout 2 against the rows written");
    assert_eq!(v["layout3"], v["layout2"], "layout 3 against layout 2");
    assert_eq!(v["layout3_row_groups"], 15);
    assert_eq!(v["layout2_row_groups"], 15);
}
