//! Prometheus remote write from a real Prometheus (the Debian package `prometheus`, 2.42): it
//! scrapes a target served by this test every 500 ms (a counter that grows by known steps and is
//! reset once, as a restarted process's is, and a gauge) and remote-writes what it scraped to
//! `thermo standalone`'s `/api/v1/write`. thermo's per-minute counter sums must equal the
//! increases between the samples Prometheus itself stored (read back from its API): each
//! sample's gain over the one before, the whole value after a reset, nothing for the first; its
//! per-minute gauge the last sample of the minute.

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
    let answer = sa.query_until(
        &format!("metric=orders_total&stat=sum&{range}"),
        "thermo's per-minute increases to equal Prometheus's",
        &mut |a| a["series"].as_array().is_some_and(|s| !s.is_empty()) && got_sums(a) == want,
    );
    assert_eq!(got_sums(&answer), want);
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
