//! `thermo standalone`: every role in one process, on embedded backends.
//!
//! ```text
//! thermo standalone [--data DIR] [--udp ADDR] [--tcp ADDR] [--uds PATH] [--otlp ADDR]
//!                   [--http ADDR] [--tag k=v]... [--demo]
//! ```
//!
//! - StatsD on UDP (`--udp`, default 127.0.0.1:8125) into the agent, and if asked on TCP (`--tcp`,
//!   lines ended by `\n`) and on a Unix datagram socket (`--uds`, like DogStatsD's);
//! - OpenTelemetry metrics over OTLP/HTTP, `POST /v1/metrics`, on `--otlp` (default
//!   127.0.0.1:4318, OTLP's port; empty: off) and on the HTTP port;
//! - one HTTP port (`--http`, default 127.0.0.1:8129) for the query API, the dashboard, the
//!   partitioner's ingest API, the agent's `/api/v1/statsd`, `/flush` (which answers 200 only
//!   once the flushed minutes are applied to the hot store: flush, then query), `/metrics`
//!   (every role's self-metrics), `/healthz` and `/readyz`;
//! - the log is the embedded durable log (`<data>/log`), the hot store the embedded durable store
//!   (`<data>/hot.log`, which also holds the cold-storage catalog): what the ingest API
//!   acknowledged survives a crash;
//! - cold storage is the directory `<data>/cold/v1/`, with the same Parquet objects and keys as
//!   the S3 bucket of the distributed mode (`tenant=…/res=1m|5m|1h/start=….parquet`); the compactor
//!   rolls hours up after they end and trims the hot store after 48 hours, as an aggregator does
//!   with the defaults of `AggregatorConfig`;
//! - `--demo` sends realistic traffic to the UDP port (about 100 requests per second).
//!
//! The roles are the same code as in the distributed mode, wired to the embedded backends.

use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thermo_agent::http::FlushParams;
use thermo_agent::AgentConfig;
use thermo_aggregator::apply::{Settings, Worker};
use thermo_aggregator::compactor::{Compactor, CompactorSettings};
use thermo_aggregator::AggregatorConfig;
use thermo_core::demo::DemoTraffic;
use thermo_partitioner::PartitionerConfig;
use thermo_read_service::ReadConfig;
use thermo_runtime::telemetry::{Readiness, SelfMetrics};
use thermo_store::cold::LocalDirCold;
use thermo_store::local_log::LocalLog;
use thermo_store::mem_catalog::MemCatalog;
use thermo_store::mem_hot::MemHot;

struct Opts {
    data: PathBuf,
    udp: String,
    /// StatsD over TCP (empty: off).
    tcp: String,
    /// StatsD on a Unix datagram socket (empty: off).
    uds: String,
    /// OTLP/HTTP metrics (empty: off; `/v1/metrics` is on `http` too).
    otlp: String,
    http: String,
    demo: bool,
    /// Tags added to every series (`--tag host=web-1`, repeatable).
    tags: Vec<(String, String)>,
    /// API keys with tenants and scopes (`thermo_runtime::auth`); none: authentication off.
    api_key_file: Option<PathBuf>,
    /// HTTPS: certificate chain and key (PEM); the CA the embedded agent trusts (default: the
    /// certificate itself, right for a self-signed one).
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

const USAGE: &str = "usage: thermo standalone [--data DIR] [--udp ADDR] [--tcp ADDR] [--uds PATH] [--otlp ADDR] [--http ADDR] [--tag k=v]... [--api-key-file PATH] [--tls-cert PEM --tls-key PEM [--tls-ca PEM]] [--demo]";

fn parse(mut it: impl Iterator<Item = String>) -> Result<Opts> {
    let mut o = Opts {
        data: PathBuf::from(".thermo-standalone"),
        udp: "127.0.0.1:8125".into(),
        tcp: String::new(),
        uds: String::new(),
        otlp: "127.0.0.1:4318".into(),
        http: "127.0.0.1:8129".into(),
        demo: false,
        tags: Vec::new(),
        api_key_file: None,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--data" => o.data = value("--data")?.into(),
            "--udp" => o.udp = value("--udp")?,
            "--tcp" => o.tcp = value("--tcp")?,
            "--uds" => o.uds = value("--uds")?,
            "--otlp" => o.otlp = value("--otlp")?,
            "--http" => o.http = value("--http")?,
            "--demo" => o.demo = true,
            "--api-key-file" => o.api_key_file = Some(value("--api-key-file")?.into()),
            "--tls-cert" => o.tls_cert = Some(value("--tls-cert")?.into()),
            "--tls-key" => o.tls_key = Some(value("--tls-key")?.into()),
            "--tls-ca" => o.tls_ca = Some(value("--tls-ca")?.into()),
            "--tag" => {
                let t = value("--tag")?;
                let (k, v) = t.split_once('=').context("--tag: expected key=value")?;
                o.tags.push((k.to_string(), v.to_string()));
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.tls_cert.is_some() != o.tls_key.is_some() {
        bail!("--tls-cert and --tls-key go together; {USAGE}");
    }
    Ok(o)
}

/// Runs standalone mode with the arguments after `standalone`.
pub async fn run(args: impl Iterator<Item = String>) -> Result<()> {
    let args: Vec<String> = args.collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let o = parse(args.into_iter())?;
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => Some(thermo_runtime::tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::fs::create_dir_all(&o.data).with_context(|| format!("create {}", o.data.display()))?;
    let data = o.data.canonicalize().unwrap_or(o.data.clone());
    let log = LocalLog::open(data.join("log"), 4, 1_000_000)?;
    let hot = Arc::new(MemHot::open(data.join("hot.log"), 256 << 20)?);

    // Partitioner: the ingest API, producing into the embedded log.
    // With API keys, the embedded agent writes as tenant `default` with a key of its own, made
    // up here and known to nothing else.
    let agent_key = o.api_key_file.as_ref().map(|_| made_up_key());
    let pmetrics = SelfMetrics::new("partitioner", "series-minutes");
    let pstate = thermo_partitioner::ingest::AppState::new(
        PartitionerConfig {
            api_keys: agent_key
                .iter()
                .map(|k| (k.clone(), "default".to_string()))
                .collect(),
            ..PartitionerConfig::default()
        },
        Arc::new(log.clone()),
        pmetrics.clone(),
    );
    let mut rings = vec![pstate.keys().clone()];
    let ingest = thermo_partitioner::ingest::router(pstate);

    // Aggregator: the same apply loop, from the embedded log into the embedded hot store, and the
    // same compactor, from the embedded catalog into the cold directory.
    let acfg = AggregatorConfig {
        cold_enabled: true,
        ..AggregatorConfig::default()
    };
    let ametrics = SelfMetrics::new("aggregator", "records");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = Worker::new(
        log.consumer(),
        hot.clone(),
        ametrics.clone(),
        Readiness::default(),
        Settings::from(&acfg),
    );
    let worker_task = tokio::spawn(worker.run(stopped(stop_rx.clone())));
    let cold_dir = data.clone();
    let compactor = Compactor::new(
        LocalDirCold::new(&cold_dir),
        MemCatalog::new(hot.clone()),
        CompactorSettings::from(&acfg),
    );
    let compactor_task = tokio::spawn(compactor.run(ametrics.clone(), stopped(stop_rx.clone())));

    // Read service: query API and dashboard.
    let rmetrics = SelfMetrics::new("read_service", "queries");
    let rcfg = ReadConfig {
        http_addr: o.http.clone(),
        cold_enabled: true,
        cold_prefix: acfg.cold_prefix.clone(),
        hot_retention_hours: acfg.hot_retention_hours,
        ..ReadConfig::default()
    };
    let cold = thermo_read_service::cold_side(
        &rcfg,
        MemCatalog::new(hot.clone()),
        LocalDirCold::new(&cold_dir),
        &rmetrics,
    );
    let rstate =
        thermo_read_service::api::AppState::new(rcfg, hot.clone(), Some(cold), rmetrics.clone());
    rings.push(rstate.keys().clone());
    let read = thermo_read_service::api::router(rstate);
    let mut keys_read = 0;
    if let Some(file) = &o.api_key_file {
        for ring in &rings {
            keys_read = ring.use_file(file)?;
        }
        thermo_runtime::auth::reload_on_sighup(rings);
    }

    // Agent: StatsD in, batches out to the ingest API on this same port.
    let agent = thermo_agent::start(&AgentConfig {
        udp_addr: o.udp.clone(),
        tcp_addr: o.tcp.clone(),
        uds_path: o.uds.clone(),
        otlp_addr: o.otlp.clone(),
        http_addr: o.http.clone(),
        partitioner_url: format!("{scheme}://{}", o.http),
        ca_file: o
            .tls_ca
            .as_ref()
            .or(o.tls_cert.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        agent_id: "standalone".into(),
        api_key: agent_key.unwrap_or_default(),
        global_tags: o.tags.iter().cloned().collect(),
        ..AgentConfig::default()
    })
    .await?;

    let all = [agent.metrics.clone(), pmetrics, ametrics, rmetrics];
    let flush_state = (agent.shared(), log.clone());
    let app = read
        .merge(ingest)
        .merge(thermo_agent::http::intake_router(agent.shared()))
        .route("/flush", post(flush).with_state(flush_state))
        .route(
            "/metrics",
            get(move || {
                let text: String = all.iter().map(SelfMetrics::render).collect();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }));
    let listener = tokio::net::TcpListener::bind(&o.http)
        .await
        .with_context(|| format!("bind http {}", o.http))?;

    println!("thermo standalone");
    println!(
        "  data:        {} (log: log/, hot store: hot.log, cold objects: {}/)",
        data.display(),
        acfg.cold_prefix
    );
    println!("  StatsD UDP:  {}", o.udp);
    if !o.tcp.is_empty() {
        println!("  StatsD TCP:  {}", o.tcp);
    }
    if !o.uds.is_empty() {
        println!("  StatsD unix: {} (datagrams)", o.uds);
    }
    if !o.otlp.is_empty() {
        println!(
            "  OTLP/HTTP:   http://{}/v1/metrics (OpenTelemetry metrics)",
            o.otlp
        );
    }
    println!(
        "  HTTP:        {scheme}://{} (query API, ingest API, /metrics)",
        o.http
    );
    println!("  dashboard:   {scheme}://{}/", o.http);
    if let Some(file) = &o.api_key_file {
        println!(
            "  API keys:    {} ({keys_read} keys; read again on SIGHUP; StatsD writes as tenant default)",
            file.display()
        );
    }
    println!(
        "  send one:    echo \"hits:1|c|#route:/home\" | nc -u -w1 {} {}",
        host(&o.udp),
        port(&o.udp)
    );
    println!(
        "  query:       curl '{scheme}://{}/api/v1/query?metric=hits&stat=sum'",
        o.http
    );
    println!(
        "  demo traffic: {}",
        if o.demo {
            "on (about 100 requests/s)"
        } else {
            "off (--demo)"
        }
    );
    println!(
        "  a minute is flushed 5 s after it ends (or: curl -X POST {scheme}://{}/flush)",
        o.http
    );
    println!(
        "  cold storage: hours roll up {} s after they end; the hot store keeps {} h",
        acfg.cold_lag_secs, acfg.hot_retention_hours
    );

    if o.demo {
        let udp = o.udp.clone();
        std::thread::spawn(move || demo(&udp));
    }

    let (server_stop_tx, mut server_stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        thermo_runtime::tls::serve(listener, tls, app, async move {
            let _ = server_stop_rx.wait_for(|s| *s).await;
        })
        .await
    });
    thermo_runtime::shutdown::signal().await;
    // The agent delivers its open minutes through the ingest API, so it finishes first.
    agent.finish().await;
    let _ = server_stop_tx.send(true);
    let _ = server.await;
    let _ = stop_tx.send(true);
    let _ = worker_task.await;
    let _ = compactor_task.await;
    tracing::info!("standalone stopped");
    Ok(())
}

/// `POST /flush[?wait_ms=N]`: closes every open minute, waits until the ingest API acknowledged
/// them (in the log) and the aggregator applied them to the hot store, so a query right after a
/// 200 sees them. 202 when `wait_ms` (default 30 s, at most 120 s) passed first.
async fn flush(
    State((agent, log)): State<(Arc<thermo_agent::Shared>, LocalLog)>,
    Query(p): Query<FlushParams>,
) -> (StatusCode, Json<serde_json::Value>) {
    let deadline = p.deadline();
    let f = thermo_agent::http::flush_and_drain(&agent, deadline).await;
    let mut applied = false;
    if f.drained {
        let ends = log.end_offsets();
        while !log.consumed(&ends) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        applied = log.consumed(&ends);
    }
    let status = if applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = serde_json::json!({
        "flushed_series": f.series,
        "pending_batches": f.pending_batches,
        "applied": applied,
    });
    (status, Json(body))
}

fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("8125", |(_, p)| p)
}

/// Sends demo traffic forever (the process ends it).
fn demo(udp: &str) {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        tracing::warn!("demo traffic: cannot bind a UDP socket");
        return;
    };
    let mut traffic = DemoTraffic::new(42);
    loop {
        for d in traffic.datagrams(10, 20) {
            let _ = sock.send_to(d.as_bytes(), udp);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A key nobody can guess: 128 bits from the OS's randomness (std's hash seeds).
fn made_up_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("standalone-agent-{:016x}{:016x}", half(), half())
}
