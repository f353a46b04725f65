//! thermo-agent: the per-host sidecar.
//!
//! StatsD/DogStatsD lines arrive on UDP (`udp_addr`), on a Unix datagram socket (`uds_path`), over
//! TCP (`tcp_addr`; [`intake`]) or over HTTP (`POST /api/v1/statsd`, one line per line of the
//! body), OpenTelemetry metrics over OTLP/HTTP (`POST /v1/metrics` on `otlp_addr` and
//! `http_addr`; [`otlp`]), and metrics come from log files (`[[logs]]`; [`log_intake`]); they are pre-aggregated
//! per series per minute in memory ([`thermo_core::accumulator`]). Every `flush_interval_ms` the minutes that closed at least
//! `flush_delay_secs` ago go to the spool and are sent to the partitioner ([`sender`]).
//! `POST /flush` closes every minute now (tests, deploys) and waits for the spool to drain.
//! On SIGTERM the agent flushes everything and waits up to `shutdown_timeout_secs` for delivery.
//!
//! Bounds: `max_series` series-minutes in memory, `spool_max_batches` batches (and on disk
//! `spool_max_bytes` bytes) in the spool. With `spool_dir`, closed minutes survive a SIGKILL
//! ([`spool`]) and open ones up to the last checkpoint ([`checkpoint`], every
//! `checkpoint_interval_secs`); without it, a SIGKILL loses everything the agent holds.

pub mod breaker;
pub mod checkpoint;
pub mod config;
pub mod follow;
pub mod http;
pub mod intake;
pub mod log_intake;
pub mod logs;
pub mod otlp;
pub mod sender;
pub mod spool;

pub use config::AgentConfig;

use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, IngestStats};
use thermo_runtime::telemetry::{Readiness, SelfMetrics};

/// A failure that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("startup failed: {0}")]
    Startup(String),
}

pub use thermo_core::window::now_ms;

/// State shared by the UDP loop, the HTTP handlers and the flusher.
pub struct Shared {
    pub acc: Mutex<Accumulator>,
    pub spool: Arc<spool::Spool>,
    pub metrics: SelfMetrics,
    /// Lines counted into `dropped_total` since the last error log line (rate-limits logging).
    last_log_ms: Mutex<i64>,
    agent_id: String,
    checkpoints: IntCounter,
    checkpoint_series: IntGauge,
    /// The `[[logs]]` sources, if any.
    logs: Option<Arc<log_intake::LogIntake>>,
    otlp: otlp::OtlpIntake,
    otlp_references: IntCounter,
    otlp_stale: IntCounter,
}

impl Shared {
    /// Ingests one datagram (or HTTP body) received now; counts lines and drops.
    pub fn ingest(&self, data: &[u8]) -> IngestStats {
        let mut stats = IngestStats::default();
        let now = now_ms();
        {
            let mut acc = self.acc.lock().unwrap_or_else(|p| p.into_inner());
            acc.ingest(data, now, &mut stats);
        }
        self.record(&stats, now);
        stats
    }

    /// Takes one OTLP/HTTP metrics request body. Blocking: decoding and converting a large
    /// request takes milliseconds.
    pub fn ingest_otlp(
        &self,
        body: &[u8],
        format: otlp::Format,
        gzip: bool,
    ) -> Result<otlp::Taken, otlp::OtlpError> {
        let now = now_ms();
        let taken = self.otlp.take(&self.acc, body, format, gzip, now)?;
        self.otlp_references.inc_by(taken.references);
        self.otlp_stale.inc_by(taken.stale);
        self.record(&taken.stats, now);
        Ok(taken)
    }

    /// Counts `n` lines skipped as longer than `max_line_bytes`.
    pub fn too_long(&self, n: u64) {
        if n > 0 {
            self.metrics
                .dropped
                .with_label_values(&["line_too_long"])
                .inc_by(n);
        }
    }

    fn record(&self, stats: &IngestStats, now: i64) {
        self.metrics.received.inc_by(stats.lines);
        for (reason, n) in &stats.dropped {
            self.metrics.dropped.with_label_values(&[reason]).inc_by(*n);
        }
        if let Some((reason, detail)) = &stats.last_error {
            let mut last = self.last_log_ms.lock().unwrap_or_else(|p| p.into_inner());
            if now - *last >= 1000 {
                *last = now;
                tracing::warn!(
                    reason,
                    "line or data point dropped (logged at most once a second): {detail:?}"
                );
            }
        }
    }

    /// Writes a checkpoint of the open minutes into `spool_dir` (nothing without one), then lets
    /// the spool remove the files of acknowledged batches it covers.
    pub async fn checkpoint(self: &Arc<Self>) {
        let Some(dir) = self.spool.dir().map(std::path::Path::to_path_buf) else {
            return;
        };
        let me = self.clone();
        // Copying thousands of series takes milliseconds: on a blocking thread, like the write.
        let written = tokio::task::spawn_blocking(move || {
            // The watermark is read with the minutes, under the same lock: a flush takes its
            // minutes under it before its batches get their seqs.
            let (minutes, watermark) = {
                let acc = me.acc.lock().unwrap_or_else(|p| p.into_inner());
                (acc.snapshot(), me.spool.last_seq())
            };
            let n = checkpoint::write(&dir, &me.agent_id, watermark, minutes)?;
            me.spool.release(watermark);
            Ok::<_, std::io::Error>(n)
        })
        .await;
        match written {
            Ok(Ok(n)) => {
                self.checkpoints.inc();
                self.checkpoint_series
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Ok(Err(e)) => {
                self.metrics
                    .errors
                    .with_label_values(&["checkpoint_write"])
                    .inc();
                tracing::error!("checkpoint not written (the last one stays): {e}");
            }
            Err(e) => tracing::error!("checkpoint task failed: {e}"),
        }
    }

    /// Moves closed minutes (or all, with `all`) to the spool; returns series-minutes moved.
    /// Their batches are compressed (and written to disk with `spool_dir`) on a blocking thread.
    pub async fn flush(&self, all: bool, delay_secs: i64) -> usize {
        let mut stats = IngestStats::default();
        let minutes = {
            let mut acc = self.acc.lock().unwrap_or_else(|p| p.into_inner());
            if all {
                acc.take_all(&mut stats)
            } else {
                acc.take_closed(now_ms().div_euclid(1000), delay_secs, &mut stats)
            }
        };
        self.record(&stats, now_ms());
        let mut n = 0;
        if !minutes.is_empty() {
            let (spool, metrics) = (self.spool.clone(), self.metrics.clone());
            n = tokio::task::spawn_blocking(move || spool.push_minutes(minutes, &metrics))
                .await
                .unwrap_or(0);
        }
        if let Some(logs) = &self.logs {
            n += self.flush_logs(logs, all, delay_secs).await;
        }
        n
    }

    /// Flushes the log sources' minutes, then saves their files' positions.
    async fn flush_logs(&self, logs: &Arc<log_intake::LogIntake>, all: bool, delay: i64) -> usize {
        let (spool, metrics) = (self.spool.clone(), self.metrics.clone());
        let spool = move |minutes| spool.push_minutes(minutes, &metrics);
        let now_s = now_ms().div_euclid(1000);
        let (flushed, stats) = logs.flush(all, now_s, delay, spool).await;
        self.record(&stats, now_ms());
        match flushed {
            Ok(n) => n,
            Err(e) => {
                self.metrics
                    .errors
                    .with_label_values(&["logs_state_write"])
                    .inc();
                tracing::error!("log positions not saved (the last saved ones stay): {e}");
                0
            }
        }
    }
}

/// A started agent: its routes (to serve on any listener) and what shutdown needs.
pub struct Agent {
    pub router: axum::Router,
    pub metrics: SelfMetrics,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The Unix socket's file, removed on stop.
    uds_path: Option<std::path::PathBuf>,
    /// The thread following the log files.
    log_thread: Option<std::thread::JoinHandle<()>>,
    sender_task: tokio::task::JoinHandle<()>,
    stop_tx: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    shutdown_timeout: Duration,
}

/// Binds the UDP socket and starts receiving, flushing and sending. The HTTP routes are returned,
/// not served: `run` serves them on `http_addr`, standalone mode on its one port.
pub async fn start(cfg: &AgentConfig) -> Result<Agent, AgentError> {
    let metrics = SelfMetrics::new("agent", "StatsD lines and OTLP data points");
    let acc_cfg = AccumulatorConfig {
        tenant: DEFAULT_TENANT.into(),
        global_tags: cfg.global_tags.clone().into_iter().collect(),
        max_past_secs: cfg.max_past_secs,
        max_future_secs: cfg.max_future_secs,
        max_series: cfg.max_series,
    };
    let acc = Accumulator::new(acc_cfg.clone());
    let (spool, found) = {
        let (cfg, metrics) = (cfg.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || open_spool(&cfg, &metrics))
            .await
            .map_err(|e| AgentError::Startup(e.to_string()))??
    };
    let mut acc = acc;
    if let Some(found) = found {
        let flushed = spool.minutes_after(found.watermark);
        let found = found.without(&flushed);
        let n = acc.restore(found.minutes);
        tracing::info!(
            series = n,
            "open minutes restored from the checkpoint; lines accepted after it were lost"
        );
    }
    let spool = Arc::new(spool);
    let logs = {
        let (cfg, metrics) = (cfg.clone(), metrics.clone());
        let corrupt = move || {
            metrics
                .errors
                .with_label_values(&["logs_state_corrupt"])
                .inc()
        };
        tokio::task::spawn_blocking(move || log_intake::LogIntake::open(&cfg, acc_cfg, corrupt))
            .await
            .map_err(|e| AgentError::Startup(e.to_string()))??
    };
    let (logs, log_sources) = match logs {
        Some((intake, sources)) => (Some(Arc::new(intake)), sources),
        None => (None, Vec::new()),
    };
    let shared = Arc::new(Shared {
        acc: Mutex::new(acc),
        spool: spool.clone(),
        metrics: metrics.clone(),
        last_log_ms: Mutex::new(0),
        agent_id: cfg.agent_id.clone(),
        checkpoints: metrics.counter(
            "checkpoints_total",
            "checkpoints of the open minutes written",
        ),
        checkpoint_series: metrics.gauge(
            "checkpoint_series",
            "series-minutes in the last checkpoint written",
        ),
        logs: logs.clone(),
        otlp: otlp::OtlpIntake::new(cfg.otlp_resource_tags.clone(), now_ms(), cfg.max_series),
        otlp_references: metrics.counter(
            "otlp_reference_points_total",
            "OTLP cumulative points that only set their series' reference (first seen, started before the agent)",
        ),
        otlp_stale: metrics.counter(
            "otlp_stale_points_total",
            "OTLP cumulative points not after their series' last one (re-sent or out of order), counted nothing",
        ),
    });
    let log_thread = match &logs {
        Some(intake) => {
            let (intake, shared) = (intake.clone(), shared.clone());
            let every = Duration::from_millis(cfg.log_poll_ms.max(10));
            let thread = std::thread::Builder::new()
                .name("log-files".into())
                .spawn(move || {
                    intake.run(log_sources, every, |stats, errors| {
                        shared.record(stats, now_ms());
                        if errors > 0 {
                            shared
                                .metrics
                                .errors
                                .with_label_values(&["log_read"])
                                .inc_by(errors);
                        }
                    })
                })
                .map_err(|e| AgentError::Startup(format!("log thread: {e}")))?;
            tracing::info!(sources = cfg.logs.len(), "following log files");
            Some(thread)
        }
        None => None,
    };
    let udp = tokio::net::UdpSocket::bind(&cfg.udp_addr)
        .await
        .map_err(|e| AgentError::Startup(format!("bind udp {}: {e}", cfg.udp_addr)))?;
    let uds_path = (!cfg.uds_path.is_empty()).then(|| std::path::PathBuf::from(&cfg.uds_path));
    let uds = uds_path.as_deref().map(intake::bind_uds).transpose()?;
    let tcp = match cfg.tcp_addr.as_str() {
        "" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| AgentError::Startup(format!("bind tcp {addr}: {e}")))?,
        ),
    };
    let otlp = match cfg.otlp_addr.as_str() {
        "" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| AgentError::Startup(format!("bind otlp {addr}: {e}")))?,
        ),
    };
    let sender =
        sender::Sender::new(cfg, &metrics).map_err(|e| AgentError::Startup(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let sender_task = tokio::spawn(sender.run(spool.clone(), metrics.clone(), stop_rx));
    let udp_task = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match udp.recv_from(&mut buf).await {
                    Ok((n, _)) => {
                        shared.ingest(&buf[..n]);
                    }
                    Err(e) => {
                        shared.metrics.errors.with_label_values(&["udp_recv"]).inc();
                        tracing::warn!("udp receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let mut tasks = vec![udp_task];
    if let Some(uds) = uds {
        tasks.push(tokio::spawn(intake::serve_uds(uds, shared.clone())));
    }
    if let Some(tcp) = tcp {
        tasks.push(tokio::spawn(intake::serve_tcp(
            tcp,
            shared.clone(),
            cfg.max_line_bytes,
            cfg.max_tcp_connections,
        )));
    }
    if let Some(listener) = otlp {
        let app = http::otlp_router(shared.clone());
        tracing::info!(addr = %cfg.otlp_addr, "OTLP/HTTP metrics on /v1/metrics");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("otlp listener stopped: {e}");
            }
        }));
    }
    let flusher = {
        let shared = shared.clone();
        let interval = Duration::from_millis(cfg.flush_interval_ms.max(10));
        let delay = cfg.flush_delay_secs;
        let batches = metrics.gauge(
            "spool_batches",
            "Batches in the spool, waiting or in flight (as of the last flush tick)",
        );
        let bytes = metrics.gauge(
            "spool_bytes",
            "Bytes of batch files in spool_dir (as of the last flush tick)",
        );
        let every = (cfg.checkpoint_interval_secs > 0)
            .then(|| Duration::from_secs(cfg.checkpoint_interval_secs));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut last_checkpoint = tokio::time::Instant::now();
            let mut last_forget = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                shared.flush(false, delay).await;
                if last_forget.elapsed() >= Duration::from_secs(60) {
                    last_forget = tokio::time::Instant::now();
                    // Up to `max_series` entries each: off the async thread.
                    let shared = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || shared.otlp.forget_idle(now_ms()))
                        .await;
                }
                if every.is_some_and(|e| last_checkpoint.elapsed() >= e) {
                    last_checkpoint = tokio::time::Instant::now();
                    shared.checkpoint().await;
                }
                batches.set(i64::try_from(shared.spool.batches()).unwrap_or(i64::MAX));
                bytes.set(i64::try_from(shared.spool.file_bytes()).unwrap_or(i64::MAX));
            }
        })
    };
    tasks.push(flusher);
    Ok(Agent {
        router: http::router(shared.clone()),
        metrics,
        shared,
        tasks,
        uds_path,
        log_thread,
        sender_task,
        stop_tx,
        shutdown_timeout: Duration::from_secs(cfg.shutdown_timeout_secs),
    })
}

impl Agent {
    /// The state behind the routes (for a `/flush` of its own: [`http::flush_and_drain`]).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Stops receiving, flushes every open minute and waits (bounded) for the spool to drain.
    pub async fn finish(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let (Some(logs), Some(thread)) = (&self.shared.logs, self.log_thread.take()) {
            logs.stop();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(path) = &self.uds_path {
            intake::remove_uds(path);
        }
        let n = self.shared.flush(true, 0).await;
        tracing::info!(
            series = n,
            "shutting down: flushed every open minute, draining the spool"
        );
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let _ = self.stop_tx.send(Some(deadline));
        let _ = self.sender_task.await;
        // Nothing open is left: an empty checkpoint, and acknowledged batches' files go.
        self.shared.checkpoint().await;
        tracing::info!("agent stopped");
    }
}

/// The spool of `cfg`, and with `spool_dir` and checkpoints the checkpoint found there. A
/// corrupt checkpoint is counted and set aside. Blocking.
fn open_spool(
    cfg: &AgentConfig,
    metrics: &SelfMetrics,
) -> Result<(spool::Spool, Option<checkpoint::Checkpoint>), AgentError> {
    let spool = spool::Spool::open(cfg, now_ms(), metrics)?;
    let found = match spool.dir() {
        Some(dir) if cfg.checkpoint_interval_secs > 0 => {
            match checkpoint::read(dir, DEFAULT_TENANT) {
                Ok(found) => found,
                Err(why) => {
                    metrics
                        .errors
                        .with_label_values(&["checkpoint_corrupt"])
                        .inc();
                    tracing::error!("corrupt checkpoint, starting without it: {why}");
                    None
                }
            }
        }
        _ => None,
    };
    Ok((spool, found))
}

/// The tenant of the agent's series (the partitioner sets the real one from the API key).
const DEFAULT_TENANT: &str = "default";

/// Runs the agent until `shutdown` resolves, then flushes and drains the spool.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .map_err(|e| AgentError::Startup(format!("bind http {}: {e}", cfg.http_addr)))?;
    let agent = start(&cfg).await?;
    let app = agent
        .router
        .clone()
        .merge(thermo_runtime::telemetry::router(
            agent.metrics.clone(),
            Readiness::default(),
        ));
    tracing::info!(udp = %cfg.udp_addr, http = %cfg.http_addr, partitioner = %cfg.partitioner_url, agent_id = %cfg.agent_id, "agent listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| AgentError::Startup(e.to_string()))?;
    agent.finish().await;
    Ok(())
}
