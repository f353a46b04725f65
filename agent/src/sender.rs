//! The sender: the spool's batches ([`crate::spool`]) sent, up to `max_in_flight_batches` at
//! once, with retries.
//!
//! - Timeouts, connection errors, 5xx and 429 are retried with exponential backoff and jitter, at
//!   least the server's `Retry-After`; other 4xx are not retried (counted as `rejected`, logged).
//! - Failures in a row open the circuit breaker ([`crate::breaker`]): no sends until it lets a
//!   probe through.
//! - A shutdown deadline stops waiting within 50 ms, whatever the backoff.
//! - A 429 for new series over the tenant's series limit (its body names the `limit`, with the
//!   series-minutes `accepted` and `refused`) is final: the rest of the batch was accepted, and the
//!   refused series would be refused again, so the batch is done with; the refused series-minutes
//!   are counted in `dropped_total{reason="tenant_series_limit"}` and logged with the series named.

use crate::breaker::Breaker;
use crate::config::AgentConfig;
use crate::spool::{Entry, Spool};
use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thermo_runtime::telemetry::SelfMetrics;

/// Outcome of one send attempt.
enum Attempt {
    Sent,
    Retry {
        after: Option<Duration>,
        why: String,
        /// Whether the partitioner failed (time-out, connection, 5xx), not paced us (429).
        failed: bool,
    },
    Rejected(String),
    /// Part of the batch accepted, new series over a series limit refused for good.
    SeriesLimited {
        accepted: u64,
        refused: u64,
        why: String,
    },
}

/// A 429's body when it refused new series over a series limit: (accepted, refused)
/// series-minutes.
fn series_limited(body: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("limit")?.as_str()?;
    Some((v.get("accepted")?.as_u64()?, v.get("refused")?.as_u64()?))
}

/// Sends batches from the spool to the partitioner.
pub struct Sender {
    client: reqwest::Client,
    url: String,
    api_key: String,
    retry_initial: Duration,
    retry_max: Duration,
    rng: Mutex<u64>,
    breaker: Mutex<Breaker>,
    breaker_state: IntGauge,
    breaker_opens: IntCounter,
    max_in_flight: usize,
}

/// An error and its sources, `: `-separated (reqwest's own text omits them: "error sending
/// request" hides a refused connection or a certificate not trusted).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Why the sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] thermo_runtime::tls::TlsError),
}

impl Sender {
    pub fn new(cfg: &AgentConfig, metrics: &SelfMetrics) -> Result<Self, SenderError> {
        thermo_runtime::tls::install_default_provider();
        let mut client =
            reqwest::Client::builder().timeout(Duration::from_millis(cfg.request_timeout_ms));
        if cfg.partitioner_url.starts_with("https://") {
            let ca = (!cfg.ca_file.is_empty()).then(|| std::path::Path::new(&cfg.ca_file));
            client = client.use_preconfigured_tls(thermo_runtime::tls::client_config(ca)?);
        } else if !cfg.ca_file.is_empty() {
            tracing::warn!("ca_file is set but partitioner_url is not https: it is not used");
        }
        let client = client.build()?;
        Ok(Self {
            client,
            url: format!(
                "{}/api/v1/ingest",
                cfg.partitioner_url.trim_end_matches('/')
            ),
            api_key: cfg.api_key.clone(),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms.max(1))),
            rng: Mutex::new(std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15),
            breaker: Mutex::new(Breaker::new(
                cfg.breaker_failures,
                Duration::from_millis(cfg.breaker_open_ms),
            )),
            max_in_flight: cfg.max_in_flight_batches.max(1),
            breaker_state: metrics.gauge(
                "breaker_state",
                "the sender's circuit breaker: 0 closed, 1 open, 2 half-open",
            ),
            breaker_opens: metrics.counter(
                "breaker_opens_total",
                "times the sender's circuit breaker opened",
            ),
        })
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while the breaker is open (`false`: `give_up` said stop first).
    async fn breaker_allows(&self, give_up: &(dyn Fn() -> bool + Sync)) -> bool {
        loop {
            let (wait, state) = {
                let mut b = self.breaker();
                (b.wait(tokio::time::Instant::now()), b.state().code())
            };
            self.breaker_state.set(state);
            match wait {
                None => return true,
                Some(wait) if !pause(wait, give_up).await => return false,
                Some(_) => {}
            }
        }
    }

    fn jitter(&self, d: Duration) -> Duration {
        // xorshift64: jitter needs no cryptographic randomness.
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let frac = 0.5 + (*rng % 1000) as f64 / 2000.0;
        d.mul_f64(frac)
    }

    async fn attempt(&self, body: &[u8], batch: &Entry) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-thermo-batch")
            .header("content-encoding", "gzip")
            .header(
                "idempotency-key",
                format!("{}:{}", batch.agent_id, batch.seq),
            )
            .body(body.to_vec());
        if !self.api_key.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.api_key));
        }
        match req.send().await {
            Err(e) => Attempt::Retry {
                after: None,
                why: with_sources(&e),
                failed: true,
            },
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    Attempt::Sent
                } else if let Some((accepted, refused)) =
                    series_limited(&text).filter(|_| status.as_u16() == 429)
                {
                    Attempt::SeriesLimited {
                        accepted,
                        refused,
                        why: text,
                    }
                } else if status.as_u16() == 429 || status.is_server_error() {
                    Attempt::Retry {
                        after: retry_after,
                        why: format!("{status}: {text}"),
                        failed: status.is_server_error(),
                    }
                } else {
                    Attempt::Rejected(format!("{status}: {text}"))
                }
            }
        }
    }

    /// Sends one batch until it is acknowledged, rejected, or `give_up` says stop.
    /// Returns true if it was acknowledged or rejected (i.e. it is done with).
    async fn send(
        &self,
        batch: &Entry,
        body: &[u8],
        metrics: &SelfMetrics,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let mut backoff = self.retry_initial;
        loop {
            if !self.breaker_allows(give_up).await {
                return false;
            }
            let attempt = self.attempt(body, batch).await;
            let (opened, state) = {
                let mut b = self.breaker();
                let opened = match &attempt {
                    Attempt::Retry { failed: true, .. } => b.failure(tokio::time::Instant::now()),
                    // An answer, even a 429: the partitioner is there.
                    _ => {
                        b.success();
                        false
                    }
                };
                (opened, b.state().code())
            };
            if opened {
                self.breaker_opens.inc();
                tracing::warn!("partitioner failing: circuit breaker open");
            }
            self.breaker_state.set(state);
            match attempt {
                Attempt::Sent => {
                    metrics.sent.inc_by(batch.items as u64);
                    return true;
                }
                Attempt::Rejected(why) => {
                    metrics
                        .dropped
                        .with_label_values(&["rejected"])
                        .inc_by(batch.items as u64);
                    tracing::error!(
                        seq = batch.seq,
                        series = batch.items,
                        "partitioner rejected batch, not retrying: {why}"
                    );
                    return true;
                }
                Attempt::SeriesLimited {
                    accepted,
                    refused,
                    why,
                } => {
                    metrics.sent.inc_by(accepted);
                    metrics
                        .dropped
                        .with_label_values(&["tenant_series_limit"])
                        .inc_by(refused);
                    tracing::error!(
                        seq = batch.seq,
                        accepted,
                        refused,
                        "partitioner refused new series over the tenant's series limit: {why}"
                    );
                    return true;
                }
                Attempt::Retry { after, why, .. } => {
                    metrics.errors.with_label_values(&["send_retry"]).inc();
                    if give_up() {
                        return false;
                    }
                    let wait = self.jitter(backoff).max(after.unwrap_or_default());
                    tracing::warn!(seq = batch.seq, "send failed, retrying in {wait:?}: {why}");
                    if !pause(wait, give_up).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
    }

    /// Sends spooled batches, up to `max_in_flight_batches` at once (one while the breaker is
    /// not closed), until `stop` is set and the spool is empty (or the stop deadline passed: what
    /// is left is counted as dropped `shutdown`, or stays on disk for the next start with
    /// `spool_dir`). Batches may be acknowledged out of order: each is merged once, in any order.
    pub async fn run(
        self,
        spool: Arc<Spool>,
        metrics: SelfMetrics,
        mut stop: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    ) {
        let me = Arc::new(self);
        let mut sends = tokio::task::JoinSet::new();
        loop {
            let deadline = *stop.borrow();
            let limit = if me.breaker().closed() {
                me.max_in_flight
            } else {
                1
            };
            while sends.len() < limit {
                let Some(batch) = spool.pop() else {
                    break;
                };
                let (me, spool, metrics) = (me.clone(), spool.clone(), metrics.clone());
                let stop = stop.clone();
                sends.spawn(async move { me.deliver(&spool, &metrics, batch, stop).await });
            }
            if sends.is_empty() {
                spool.notify_if_idle();
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    _ = spool.wake.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            tokio::select! {
                _ = sends.join_next() => {}
                _ = spool.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends one spooled batch until it is done with or the stop deadline passed, then tells
    /// the spool.
    async fn deliver(
        &self,
        spool: &Arc<Spool>,
        metrics: &SelfMetrics,
        batch: Entry,
        stop: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    ) {
        let give_up = || {
            stop.borrow()
                .is_some_and(|d| tokio::time::Instant::now() >= d)
        };
        let delivered = match read_body(spool, &batch).await {
            Ok(body) => self.send(&batch, &body, metrics, &give_up).await,
            Err(why) => {
                // The file went bad after it was written: counted, set aside by the next start.
                metrics.errors.with_label_values(&["spool_corrupt"]).inc();
                tracing::error!(seq = batch.seq, "cannot read spooled batch, skipped: {why}");
                spool.done(&batch, false);
                return;
            }
        };
        if !delivered {
            if spool.durable() {
                tracing::warn!(
                    seq = batch.seq,
                    "shutdown deadline passed: batch left in the spool for the next start"
                );
            } else {
                metrics
                    .dropped
                    .with_label_values(&["shutdown"])
                    .inc_by(batch.items as u64);
                tracing::error!(
                    seq = batch.seq,
                    "shutdown deadline passed: batch not delivered"
                );
            }
        }
        let s = spool.clone();
        let _ = tokio::task::spawn_blocking(move || s.done(&batch, delivered)).await;
    }
}

/// Sleeps `wait`, in slices, while `give_up` says go on: `false` if it said stop (the shutdown
/// deadline is kept to within 50 ms, whatever the backoff).
async fn pause(wait: Duration, give_up: &(dyn Fn() -> bool + Sync)) -> bool {
    let end = tokio::time::Instant::now() + wait;
    loop {
        if give_up() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
    }
}

/// The body of `batch` (read from disk on a blocking thread).
async fn read_body(spool: &Arc<Spool>, batch: &Entry) -> Result<Arc<Vec<u8>>, String> {
    let (s, b) = (spool.clone(), batch.clone());
    tokio::task::spawn_blocking(move || s.body(&b))
        .await
        .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::sync::Mutex;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::key::MetricKey;
    use tokio::time::Instant;

    /// One scripted answer of the stub: status, `Retry-After`, body, delay before answering.
    #[derive(Clone)]
    struct Answer(u16, Option<&'static str>, serde_json::Value, Duration);

    fn answer(status: u16) -> Answer {
        Answer(
            status,
            None,
            serde_json::json!({"accepted": 5}),
            Duration::ZERO,
        )
    }

    /// A partitioner stub on 127.0.0.1 answering `script` in order (its last answer after that);
    /// the times requests arrived.
    async fn stub(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<Instant>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/ingest",
            post(move || {
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(Instant::now());
                    l.len() - 1
                };
                let Answer(status, retry, body, delay) =
                    script.get(n).or(script.last()).cloned().unwrap();
                async move {
                    tokio::time::sleep(delay).await;
                    let mut resp = axum::response::IntoResponse::into_response((
                        StatusCode::from_u16(status).unwrap(),
                        axum::Json(body),
                    ));
                    if let Some(r) = retry {
                        resp.headers_mut().insert("retry-after", r.parse().unwrap());
                    }
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    fn config(url: &str) -> AgentConfig {
        AgentConfig {
            partitioner_url: url.to_string(),
            retry_initial_ms: 10,
            retry_max_ms: 40,
            request_timeout_ms: 300,
            breaker_failures: 3,
            ..AgentConfig::default()
        }
    }

    /// One minute of `n` counter series `req{host=h<i>}`, each 1.
    fn counters(n: usize) -> Vec<thermo_core::accumulator::ClosedMinute> {
        let item = |host: usize| {
            let key = MetricKey::new("default", "req", vec![("host".into(), format!("h{host}"))])
                .unwrap();
            let agg = Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1,
            });
            (key, agg)
        };
        vec![(1_764_460_800, (0..n).map(item).collect())]
    }

    /// A batch of 5 counter series-minutes from a spool in memory, and its body.
    fn batch(cfg: &AgentConfig, metrics: &SelfMetrics) -> (Entry, Arc<Vec<u8>>) {
        let spool = Spool::in_memory(cfg, 1);
        spool.push_minutes(counters(5), metrics);
        let entry = spool.pop().unwrap();
        let body = spool.body(&entry).unwrap();
        (entry, body)
    }

    /// Sends one batch to a stub answering `script`: whether it was done with, the requests'
    /// arrival times, and the metrics.
    async fn run(
        script: Vec<Answer>,
        give_up_after: Option<Duration>,
        breaker_open_ms: u64,
    ) -> (bool, Vec<Instant>, String) {
        let (url, seen) = stub(script).await;
        let cfg = AgentConfig {
            breaker_open_ms,
            ..config(&url)
        };
        let metrics = SelfMetrics::new("agent", "series-minutes");
        let sender = Sender::new(&cfg, &metrics).unwrap();
        let (entry, body) = batch(&cfg, &metrics);
        let started = Instant::now();
        let give_up = move || give_up_after.is_some_and(|d| started.elapsed() >= d);
        let done = sender.send(&entry, &body, &metrics, &give_up).await;
        let times = seen.lock().unwrap().clone();
        (done, times, metrics.render())
    }

    fn has(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }

    #[tokio::test]
    async fn a_2xx_is_sent_once() {
        let (done, times, m) = run(vec![answer(200)], None, 400).await;
        assert!(done);
        assert_eq!(times.len(), 1);
        has(
            &m,
            &["thermo_agent_sent_total 5", "thermo_agent_breaker_state 0"],
        );
        assert!(!m.contains("send_retry"), "{m}");
    }

    /// A 429 waits at least its `Retry-After`, and does not count against the breaker.
    #[tokio::test]
    async fn a_429_waits_its_retry_after() {
        let paced = Answer(
            429,
            Some("1"),
            serde_json::json!({"error": "rate"}),
            Duration::ZERO,
        );
        let (done, times, m) = run(vec![paced, answer(200)], None, 400).await;
        assert!(done);
        assert_eq!(times.len(), 2);
        assert!(times[1] - times[0] >= Duration::from_secs(1));
        has(
            &m,
            &[
                "thermo_agent_sent_total 5",
                r#"thermo_agent_errors_total{kind="send_retry"} 1"#,
                "thermo_agent_breaker_opens_total 0",
            ],
        );
    }

    /// 5xx and time-outs are retried; a 4xx is final, counted as rejected.
    #[tokio::test]
    async fn failures_are_retried_and_a_4xx_is_final() {
        let slow = Answer(200, None, serde_json::json!({}), Duration::from_secs(2));
        let (done, times, m) = run(vec![answer(503), slow, answer(200)], None, 400).await;
        assert!(done);
        assert_eq!(times.len(), 3);
        has(
            &m,
            &[
                "thermo_agent_sent_total 5",
                r#"thermo_agent_errors_total{kind="send_retry"} 2"#,
            ],
        );
        let (done, times, m) = run(vec![answer(400)], None, 400).await;
        assert!(done);
        assert_eq!(times.len(), 1);
        has(&m, &[r#"thermo_agent_dropped_total{reason="rejected"} 5"#]);
        assert!(!m.contains("thermo_agent_sent_total 5"), "{m}");
    }

    /// Three failures open the breaker: nothing is sent for 1 s, then one probe; a failed probe
    /// opens it again; a successful one closes it.
    #[tokio::test]
    async fn the_breaker_opens_probes_and_closes() {
        let script = vec![
            answer(503),
            answer(503),
            answer(503),
            answer(503),
            answer(200),
        ];
        let (done, times, m) = run(script, None, 1_000).await;
        assert!(done);
        assert_eq!(times.len(), 5);
        // Backoff (10 to 40 ms) between the first three; the breaker's second after the third
        // (open) and after the fourth (the failed probe).
        assert!(times[2] - times[0] < Duration::from_millis(900));
        assert!(times[3] - times[2] >= Duration::from_millis(1_000));
        assert!(times[4] - times[3] >= Duration::from_millis(1_000));
        has(
            &m,
            &[
                "thermo_agent_sent_total 5",
                "thermo_agent_breaker_opens_total 2",
                "thermo_agent_breaker_state 0",
                r#"thermo_agent_errors_total{kind="send_retry"} 4"#,
            ],
        );
    }

    /// A shutdown deadline stops the retries within 50 ms of it, whatever the breaker and the
    /// backoff say; the batch is not done with (it stays in the spool).
    #[tokio::test]
    async fn the_shutdown_deadline_is_kept() {
        let started = Instant::now();
        let (done, times, m) =
            run(vec![answer(503)], Some(Duration::from_millis(300)), 10_000).await;
        let took = started.elapsed();
        assert!(!done);
        // Not the breaker's 10 s.
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Three failures before the breaker opens; then the deadline passes while it is open.
        assert_eq!(times.len(), 3);
        has(&m, &["thermo_agent_breaker_state 1"]);
        assert!(!m.contains("thermo_agent_sent_total 5"), "{m}");
    }

    /// A 429 for new series over the tenant's series limit is final: its accepted part counted
    /// as sent, its refused part as dropped `tenant_series_limit`.
    #[tokio::test]
    async fn a_series_limit_429_is_final_and_counted() {
        let limited = Answer(
            429,
            Some("0"),
            serde_json::json!({"error": "over", "limit": "max_active_series",
                "max": 3, "accepted": 3, "refused": 2}),
            Duration::ZERO,
        );
        let rate = Answer(
            429,
            Some("0"),
            serde_json::json!({"error": "rate"}),
            Duration::ZERO,
        );
        let (done, times, m) = run(vec![rate, limited], None, 400).await;
        assert!(done);
        assert_eq!(times.len(), 2);
        has(
            &m,
            &[
                "thermo_agent_sent_total 3",
                r#"thermo_agent_dropped_total{reason="tenant_series_limit"} 2"#,
                r#"thermo_agent_errors_total{kind="send_retry"} 1"#,
            ],
        );
    }

    /// With `max_in_flight_batches = 4`, 8 batches to a partitioner answering in 300 ms: 4 at
    /// a time, each sent once, and the spool drains.
    #[tokio::test]
    async fn batches_go_four_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let (n, p, t) = (now.clone(), peak.clone(), total.clone());
        let app = axum::Router::new().route(
            "/api/v1/ingest",
            post(move || {
                let (n, p, t) = (n.clone(), p.clone(), t.clone());
                async move {
                    let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(at_once, Ordering::SeqCst);
                    t.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({"accepted": 1}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = AgentConfig {
            batch_max_items: 1,
            max_in_flight_batches: 4,
            request_timeout_ms: 5_000,
            ..config(&format!("http://{addr}"))
        };
        let metrics = SelfMetrics::new("agent", "series-minutes");
        let spool = Arc::new(Spool::in_memory(&cfg, 1));
        spool.push_minutes(counters(8), &metrics);
        assert_eq!(spool.len(), 8);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
        let sender = Sender::new(&cfg, &metrics).unwrap();
        let task = tokio::spawn(sender.run(spool.clone(), metrics.clone(), stop_rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !spool.idle() {
            assert!(Instant::now() < deadline, "the spool never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(Some(Instant::now())).unwrap();
        task.await.unwrap();
        assert_eq!(total.load(Ordering::SeqCst), 8);
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        has(&metrics.render(), &["thermo_agent_sent_total 8"]);
    }
}
