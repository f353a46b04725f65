//! Prometheus remote write from a real Prometheus (the Debian package `prometheus`, 2.42): it
//! scrapes a target served by this test every 500 ms (a counter that grows by known steps and is
//! reset once, as a restarted process's is, and a gauge) and remote-writes what it scraped to
//! `thermo standalone`'s `/api/v1/write`. thermo's per-minute counter sums must equal the
//! increases between the samples Prometheus itself stored (read back from its API): each
//! sample's gain over the one before, the whole value after a reset, nothing for the first; its
//! per-minute gauge the last sample of the minute.
//!
//! Then the distributed path (partitioner, tansu, 2 aggregators, Redis) with requests built here:
//! 12 counter series over 14 requests, half of them reset midway, every third request sent twice,
//! an aggregator SIGKILLed for three requests: every shard's increase and every minute's exact.

use crate::support::stack::{points, Standalone, Target};
use crate::support::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Scrapes the target serves before it stops.
const SCRAPES: u64 = 24;

/// The counter at scrape `k`: +10 a scrape, reset to 3 at scrape 8 (a restart), then +7.
fn orders(k: u64) -> u64 {
    if k < 8 {
        5 + 10 * k
    } else {
        3 + 7 * (k - 8)
    }
}

/// A scrape target on a free port serving `orders_total` and `queue_depth`, until stopped.
struct ScrapeTarget {
    port: u16,
    scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScrapeTarget {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind target");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (scrapes, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (scrapes, stop) = (scrapes.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65_536 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let k = scrapes.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "# TYPE orders_total counter\norders_total{{route=\"/a\"}} {}\n\
                         # TYPE queue_depth gauge\nqueue_depth {}\n",
                        orders(k),
                        k % 5
                    );
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
            })
        };
        Self {
            port,
            scrapes,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus scraping `target` every 500 ms and remote-writing to `write_url`.
fn prometheus(dir: &std::path::Path, target: u16, write_url: &str) -> (Proc, u16) {
    let bin = find_bin(
        "prometheus",
        "the Debian package prometheus (scripts/install-deps.sh)",
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n\
             remote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 500ms\n      min_backoff: 100ms\n      max_backoff: 1s\n"
        ),
    )
    .expect("write config");
    let port = free_port();
    let args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let proc =
        Proc::spawn_on_system_clock("prometheus", &bin, &args, dir, dir.join("prometheus.log"));
    (proc, port)
}

/// Prometheus's own samples of `query` (a range selector), as (unix ms, value), oldest first.
fn stored_samples(prom: u16, query: &str) -> Vec<(i64, f64)> {
    let now = thermo_core::window::system_now_ms() as f64 / 1000.0;
    let r = http()
        .get(format!("http://127.0.0.1:{prom}/api/v1/query"))
        .query(&[("query", query.to_string()), ("time", format!("{now:.3}"))])
        .send()
        .expect("query Prometheus");
    let body: serde_json::Value = r.json().expect("Prometheus JSON");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    values
        .iter()
        .map(|p| {
            let t = (p[0].as_f64().expect("time") * 1000.0).round() as i64;
            let v: f64 = p[1].as_str().expect("value").parse().expect("number");
            (t, v)
        })
        .collect()
}

/// A GET's body as text (empty if the request failed).
fn text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

fn minute_of(t_ms: i64) -> i64 {
    thermo_core::window::minute_start(t_ms.div_euclid(1000))
}

#[test]
fn prometheus_remote_write_counters_are_exact_per_minute_increases() {
    let dir = TempDir::new("remote-write");
    let sa = Standalone::start_on_system_clock("remote-write-thermo", &[]);
    let mut target = ScrapeTarget::start();
    let (prom_proc, prom) = prometheus(dir.path(), target.port, &sa.url("/api/v1/write"));
    wait_until("the target's scrapes", Duration::from_secs(90), || {
        target.scrapes.load(Ordering::SeqCst) >= SCRAPES
    });
    target.stop();

    // What Prometheus stored, once the target is gone (its staleness markers end the series).
    std::thread::sleep(Duration::from_secs(2));
    let orders_samples = stored_samples(prom, "orders_total[10m]");
    let queue_samples = stored_samples(prom, "queue_depth[10m]");
    assert!(
        orders_samples.len() as u64 >= SCRAPES - 2,
        "Prometheus stored {} samples of {SCRAPES} scrapes:\n{}",
        orders_samples.len(),
        prom_proc.log_tail()
    );
    // The increases: each sample's gain over the one before, the whole value after a reset.
    let mut want: BTreeMap<i64, f64> = BTreeMap::new();
    for w in orders_samples.windows(2) {
        let ((_, a), (t, b)) = (w[0], w[1]);
        *want.entry(minute_of(t)).or_default() += if b >= a { b - a } else { b };
    }
    let mut last_gauge: BTreeMap<i64, f64> = BTreeMap::new();
    for (t, v) in &queue_samples {
        last_gauge.insert(minute_of(*t), *v);
    }
    let from = minute_of(orders_samples[0].0) - 60;
    let to = minute_of(thermo_core::window::system_now_ms()) + 120;
    let range = format!("from={from}&to={to}&step=60");
    let got_sums =
        |a: &serde_json::Value| -> BTreeMap<i64, f64> { points(a, &[]).into_iter().collect() };
    let params = format!("metric=orders_total&stat=sum&{range}");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let a = sa.query(&params);
        if a["series"].as_array().is_some_and(|s| !s.is_empty()) && got_sums(&a) == want {
            break;
        }
        if std::time::Instant::now() > deadline {
            let thermo_metrics = text(&sa.url("/metrics"));
            let prom_metrics = text(&format!("http://127.0.0.1:{prom}/metrics"));
            let grep = |t: &str, p: &str| {
                t.lines()
                    .filter(|l| l.starts_with(p))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "thermo's per-minute increases {:?} are not Prometheus's {want:?} (samples {orders_samples:?});\n\
                 thermo: {}\n{}\nPrometheus: {}\nlog:\n{}",
                got_sums(&a),
                grep(&thermo_metrics, "thermo_partitioner_remote_write"),
                grep(&thermo_metrics, "thermo_aggregator_"),
                grep(&prom_metrics, "prometheus_remote_storage_samples"),
                sa.proc.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let total: f64 = want.values().sum();
    assert!(total >= 100.0, "the counter grew by {total}");
    // The series' tags: the target's label and Prometheus's job and instance.
    let by = sa.query(&format!(
        "metric=orders_total&stat=sum&{range}&group_by=route,job,instance"
    ));
    let instance = format!("127.0.0.1:{}", target.port);
    let tags = [
        ("instance", instance.as_str()),
        ("job", "shop"),
        ("route", "/a"),
    ];
    assert_eq!(points(&by, &tags).iter().map(|p| p.1).sum::<f64>(), total);
    // The gauge: the last sample of each minute.
    let answer = sa.query_until(
        &format!("metric=queue_depth&stat=last&{range}"),
        "thermo's gauge to equal Prometheus's last samples",
        &mut |a| a["series"].as_array().is_some_and(|s| !s.is_empty()) && got_sums(a) == last_gauge,
    );
    assert_eq!(got_sums(&answer), last_gauge);
    // What the partitioner counted: every sample produced, none refused.
    let rendered = http()
        .get(sa.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        !rendered.lines().any(|l| l
            .starts_with("thermo_partitioner_remote_write_samples_total{outcome=\"")
            && !l.contains("\"produced\"")),
        "samples refused:\n{rendered}"
    );
}

/// Counter series of the distributed test, and requests sent.
const SHARDS: u64 = 12;
const ROUNDS: u64 = 14;

/// Shard `i`'s total at round `r`: +`i + 1` a round; the even shards restart (reset) at round 7.
fn shard_total(i: u64, r: u64) -> f64 {
    let restarted = i.is_multiple_of(2) && r >= 7;
    let gained = if restarted { r - 7 } else { r };
    ((i + 1) * gained + u64::from(restarted)) as f64
}

/// Round `r`'s request: every shard's total and a gauge, at `base_ms + r × 5 s`.
fn round_request(base_ms: i64, r: u64) -> Vec<u8> {
    use thermo_partitioner::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let t = base_ms + 5_000 * r as i64;
    let series = |name: &str, shard: u64, value: f64| TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "shard".into(),
                value: shard.to_string(),
            },
        ],
        samples: vec![Sample {
            value,
            timestamp: t,
        }],
        ..Default::default()
    };
    let mut timeseries: Vec<TimeSeries> = (0..SHARDS)
        .map(|i| series("jobs_total", i, shard_total(i, r)))
        .collect();
    timeseries.push(series("queue_depth", 0, r as f64));
    thermo_partitioner::remote_write::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

fn post_write(url: &str, body: &[u8]) -> u16 {
    http()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body.to_vec())
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn remote_write_through_kafka_and_redis_counts_once_through_resends_and_an_aggregator_kill() {
    use crate::support::stack::Stack;
    let mut stack = Stack::start("remote-write-stack", 4, 2, 0, 5);
    let url = stack.partitioner.url("/api/v1/write");
    let base_ms = (thermo_core::window::minute_start(now_s()) - 120) * 1000 + 1_000;
    for r in 0..ROUNDS {
        if r == 5 {
            // An aggregator SIGKILLed while requests flow; restarted three rounds later.
            stack.aggregators[0].proc.kill();
        }
        if r == 8 {
            stack.aggregators[0].restart();
        }
        let body = round_request(base_ms, r);
        assert_eq!(post_write(&url, &body), 204, "round {r}");
        if r % 3 == 1 {
            // A sender's retry: the same request again.
            assert_eq!(post_write(&url, &body), 204, "round {r} again");
        }
    }
    // Each shard gained its total's steps after round 0 (its reference); the even ones count
    // their total after the reset whole.
    let want_shard = |i: u64| -> f64 {
        (1..ROUNDS)
            .map(|r| {
                let (a, b) = (shard_total(i, r - 1), shard_total(i, r));
                if b >= a {
                    b - a
                } else {
                    b
                }
            })
            .sum()
    };
    let mut want_minutes: BTreeMap<i64, f64> = BTreeMap::new();
    for r in 1..ROUNDS {
        let minute = minute_of(base_ms + 5_000 * r as i64);
        for i in 0..SHARDS {
            let (a, b) = (shard_total(i, r - 1), shard_total(i, r));
            *want_minutes.entry(minute).or_default() += if b >= a { b - a } else { b };
        }
    }
    let from = minute_of(base_ms) - 60;
    let range = format!("from={from}&to={}&step=60", from + 600);
    let answer = stack.query_until(
        &format!("metric=jobs_total&stat=sum&{range}"),
        "the per-minute increases of every shard",
        &mut |a: &serde_json::Value| {
            a["series"].as_array().is_some_and(|s| !s.is_empty())
                && points(a, &[]).into_iter().collect::<BTreeMap<_, _>>() == want_minutes
        },
    );
    assert_eq!(
        points(&answer, &[]).into_iter().collect::<BTreeMap<_, _>>(),
        want_minutes
    );
    let by_shard = stack.query(&format!(
        "metric=jobs_total&stat=sum&from={from}&to={}&step=600&group_by=shard",
        from + 600
    ));
    for i in 0..SHARDS {
        let shard = i.to_string();
        let got: f64 = points(&by_shard, &[("shard", shard.as_str())])
            .iter()
            .map(|p| p.1)
            .sum();
        assert_eq!(got, want_shard(i), "shard {i}");
    }
    // The gauge: its last sample.
    let last = stack.query(&format!(
        "metric=queue_depth&stat=last&from={from}&to={}&step=600",
        from + 600
    ));
    assert_eq!(
        points(&last, &[]).last().map(|p| p.1),
        Some((ROUNDS - 1) as f64)
    );
    // Three seconds later, still exact: nothing was applied twice after the restart.
    std::thread::sleep(Duration::from_secs(3));
    let again = stack.query(&format!("metric=jobs_total&stat=sum&{range}"));
    assert_eq!(
        points(&again, &[]).into_iter().collect::<BTreeMap<_, _>>(),
        want_minutes
    );
}
