//! The partitioner's cost per record, with its limits off and on, and the time to a 503 under
//! overload. A program that prints figures:
//!
//! - **cost per record:** agent batches (`application/x-thermo-batch`, 1,000 counter series-minutes
//!   each, distinct keys) through the ingest router (authentication, decoding, validation, merging,
//!   encoding, on a blocking thread as for every body over 4 KiB) to a log that acknowledges at
//!   once, so what is measured is the partitioner's own work, not Kafka's; one request at a time. "Limits off": no rate limit and
//!   bounds no request reaches; "on": a rate limit every batch passes (the bucket's check is paid),
//!   the default in-flight bounds, and a series limit never reached whose registry already knows
//!   the batches' series (the steady state: each series confirmed in the partitioner's memory).
//! - **new series:** the cost per record when every series of every batch is new, so that each
//!   goes to the series registry: in memory, and in Redis (a `redis-server` this program starts on
//!   127.0.0.1; the Redis figure includes the loopback round trip of one script per batch).
//! - **time to a 503:** a real server on 127.0.0.1 whose log never acknowledges, with
//!   `max_in_flight_requests = 1` taken by one request; then a client sends requests that announce
//!   a 1 MiB body, sends only their headers, and times the answer: a 503 arrives before any byte of
//!   the body was sent.
//!
//! `cargo bench --workspace --bench ingest`

use axum::body::Body;
use axum::http::Request;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thermo_core::aggregate::{Aggregate, Counter};
use thermo_core::codec::{Batch, Item};
use thermo_partitioner::ingest::{router, AppState};
use thermo_partitioner::PartitionerConfig;
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::log::LogProducer;
use thermo_store::redis_series::RedisSeriesRegistry;
use thermo_store::series_registry::{AnySeriesRegistry, MemSeriesRegistry};
use thermo_store::StoreError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const ITEMS: usize = 1_000;
const BATCHES: usize = 400;

/// A log that acknowledges at once, or (`hang`) never.
struct Log {
    hang: bool,
}

impl LogProducer for Log {
    async fn send_all(&self, _records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    thermo_core::window::now_ms()
}

/// A batch of `ITEMS` series, `host` tags `h<first>` on.
fn batch_from(seq: u64, first: usize) -> Vec<u8> {
    let minute = thermo_core::window::minute_start(now_ms() / 1000) - 60;
    Batch {
        agent_id: "bench".into(),
        seq,
        items: (first..first + ITEMS)
            .map(|i| Item {
                name: "req".into(),
                tags: vec![("host".into(), format!("h{i}"))],
                minute,
                agg: Aggregate::Counter(Counter {
                    sum: 1.0,
                    samples: 1,
                }),
            })
            .collect(),
    }
    .encode()
}

fn batch(seq: u64) -> Vec<u8> {
    batch_from(seq, 0)
}

/// Posts `bodies` one at a time, each answered 200: nanoseconds per record.
fn post_all(rt: &tokio::runtime::Runtime, app: &axum::Router, bodies: &[Vec<u8>]) -> f64 {
    let started = Instant::now();
    for body in bodies {
        let req = Request::post("/api/v1/ingest")
            .header("content-type", "application/x-thermo-batch")
            .header("content-length", body.len())
            .body(Body::from(body.clone()))
            .expect("request");
        let resp = rt.block_on(app.clone().oneshot(req)).expect("answer");
        assert_eq!(resp.status().as_u16(), 200);
    }
    started.elapsed().as_secs_f64() * 1e9 / (bodies.len() * ITEMS) as f64
}

/// Nanoseconds per record of batches of new series only through the router, with a series limit
/// never reached over `registry`: median of 3 passes of 100 batches.
fn per_new_record(rt: &tokio::runtime::Runtime, registry: AnySeriesRegistry) -> f64 {
    let cfg = PartitionerConfig {
        max_active_series: 1_000_000_000,
        ..PartitionerConfig::default()
    };
    let app = router(AppState::build(
        cfg,
        Arc::new(Log { hang: false }),
        SelfMetrics::new("partitioner", "series-minutes"),
        Arc::new(now_ms),
        registry,
    ));
    let mut times = Vec::new();
    for pass in 0..3 {
        let bodies: Vec<Vec<u8>> = (0..100)
            .map(|b| batch_from(b, (pass * 100 + b as usize) * ITEMS))
            .collect();
        times.push(post_all(rt, &app, &bodies));
    }
    times.sort_by(f64::total_cmp);
    times[1]
}

/// A redis-server on a free port of 127.0.0.1, stopped when dropped.
struct RedisServer(std::process::Child, u16);

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        // Dropped (killed and waited for) if it never listens.
        let server = Self(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nanoseconds per record of `BATCHES` batches through the router built from `cfg`.
fn per_record(rt: &tokio::runtime::Runtime, cfg: PartitionerConfig) -> f64 {
    let app = router(AppState::new(
        cfg,
        Arc::new(Log { hang: false }),
        SelfMetrics::new("partitioner", "series-minutes"),
    ));
    let bodies: Vec<Vec<u8>> = (0..BATCHES as u64).map(batch).collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(post_all(rt, &app, &bodies));
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The status line and the time to it of a request announcing a 1 MiB body, headers only.
async fn headers_only(addr: std::net::SocketAddr) -> (String, Duration) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let head = "POST /api/v1/ingest HTTP/1.1\r\nhost: bench\r\ncontent-type: application/x-thermo-batch\r\ncontent-length: 1048576\r\n\r\n";
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (status, elapsed)
}

fn time_to_503() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cfg = PartitionerConfig {
            max_in_flight_requests: 1,
            ..PartitionerConfig::default()
        };
        let app = router(AppState::new(
            cfg,
            Arc::new(Log { hang: true }),
            SelfMetrics::new("partitioner", "series-minutes"),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        // The one slot: a request whose records are never acknowledged.
        let body = batch(1);
        let mut holder = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/ingest HTTP/1.1\r\nhost: bench\r\ncontent-type: application/x-thermo-batch\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        holder.write_all(head.as_bytes()).await.expect("write");
        holder.write_all(&body).await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut times = Vec::new();
        for _ in 0..2_000 {
            let (status, t) = headers_only(addr).await;
            assert!(status.contains(" 503 "), "{status}");
            times.push(t.as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "time to a 503 (headers of a 1 MiB request sent, no body), 2,000 requests: median {:.0} µs, p99 {:.0} µs",
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let off = PartitionerConfig {
        max_in_flight_requests: 1 << 20,
        max_in_flight_bytes: 1 << 40,
        ..PartitionerConfig::default()
    };
    let on = PartitionerConfig {
        rate_limit_per_sec: 1_000_000_000,
        max_active_series: 1_000_000_000,
        ..PartitionerConfig::default()
    };
    // Warm up, then alternate so both see the same machine.
    per_record(&rt, off.clone());
    let mut figures = [Vec::new(), Vec::new()];
    for _ in 0..7 {
        figures[0].push(per_record(&rt, off.clone()));
        figures[1].push(per_record(&rt, on.clone()));
    }
    for f in &mut figures {
        f.sort_by(f64::total_cmp);
    }
    let (off_ns, on_ns) = (figures[0][3], figures[1][3]);
    println!(
        "cost per record, batches of {ITEMS} counter series-minutes, one request at a time, median of 7 (each the median of 5 passes of {BATCHES} batches): limits off {off_ns:.0} ns, limits on {on_ns:.0} ns ({:+.1} %); off ranged {:.0} to {:.0} ns, on {:.0} to {:.0} ns",
        (on_ns / off_ns - 1.0) * 100.0,
        figures[0][0],
        figures[0][6],
        figures[1][0],
        figures[1][6]
    );
    let memory = per_new_record(&rt, AnySeriesRegistry::Memory(MemSeriesRegistry::new()));
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let registry = rt
        .block_on(RedisSeriesRegistry::connect(&url))
        .expect("connect to redis");
    let in_redis = per_new_record(&rt, AnySeriesRegistry::Redis(registry));
    println!(
        "cost per record when every series is new (series limit on, never reached), median of 3 passes of 100 batches: registry in memory {memory:.0} ns, in Redis {in_redis:.0} ns"
    );
    time_to_503();
}
