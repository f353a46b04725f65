//! The sender: the spool's batches ([`crate::spool`]) sent in order, with retries.
//!
//! - Timeouts, connection errors, 5xx and 429 are retried with exponential backoff and jitter, at
//!   least the server's `Retry-After`; other 4xx are not retried (counted as `rejected`, logged).
//! - A 429 for new series over the tenant's series limit (its body names the `limit`, with the
//!   series-minutes `accepted` and `refused`) is final: the rest of the batch was accepted, and the
//!   refused series would be refused again, so the batch is done with; the refused series-minutes
//!   are counted in `dropped_total{reason="tenant_series_limit"}` and logged with the series named.

use crate::config::AgentConfig;
use crate::spool::{Entry, Spool};
use std::sync::Arc;
use std::time::Duration;
use thermo_runtime::telemetry::SelfMetrics;

/// Outcome of one send attempt.
enum Attempt {
    Sent,
    Retry {
        after: Option<Duration>,
        why: String,
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
    rng: u64,
}

impl Sender {
    pub fn new(cfg: &AgentConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .build()?;
        Ok(Self {
            client,
            url: format!(
                "{}/api/v1/ingest",
                cfg.partitioner_url.trim_end_matches('/')
            ),
            api_key: cfg.api_key.clone(),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms.max(1))),
            rng: std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15,
        })
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: jitter needs no cryptographic randomness.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = 0.5 + (self.rng % 1000) as f64 / 2000.0;
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
                why: e.to_string(),
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
        &mut self,
        batch: &Entry,
        body: &[u8],
        metrics: &SelfMetrics,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let mut backoff = self.retry_initial;
        loop {
            match self.attempt(body, batch).await {
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
                Attempt::Retry { after, why } => {
                    metrics.errors.with_label_values(&["send_retry"]).inc();
                    if give_up() {
                        return false;
                    }
                    let wait = self.jitter(backoff).max(after.unwrap_or_default());
                    tracing::warn!(seq = batch.seq, "send failed, retrying in {wait:?}: {why}");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
    }

    /// Sends spooled batches in order until `stop` is set and the spool is empty (or the stop
    /// deadline passed: what is left is counted as dropped `shutdown`, or stays on disk for the
    /// next start with `spool_dir`).
    pub async fn run(
        mut self,
        spool: Arc<Spool>,
        metrics: SelfMetrics,
        mut stop: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    ) {
        loop {
            let deadline = *stop.borrow();
            let Some(batch) = spool.pop() else {
                spool.done(None, false);
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    _ = spool.wake.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let give_up = || {
                deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
                    || stop
                        .borrow()
                        .is_some_and(|d| tokio::time::Instant::now() >= d)
            };
            let delivered = match read_body(&spool, &batch).await {
                Ok(body) => self.send(&batch, &body, &metrics, &give_up).await,
                Err(why) => {
                    // The file went bad after it was written: counted, set aside by the next start.
                    metrics.errors.with_label_values(&["spool_corrupt"]).inc();
                    tracing::error!(seq = batch.seq, "cannot read spooled batch, skipped: {why}");
                    spool.done(Some(&batch), false);
                    continue;
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
            let _ = tokio::task::spawn_blocking(move || s.done(Some(&batch), delivered)).await;
        }
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::key::MetricKey;

    /// A partitioner stub answering a rate-limit 429 first (retried), then a series-limit 429
    /// (final: its accepted part counted as sent, its refused part as dropped
    /// `tenant_series_limit`).
    #[tokio::test]
    async fn a_series_limit_429_is_final_and_counted() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/api/v1/ingest",
            post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = if n == 0 {
                        serde_json::json!({"error": "tenant \"t\" is over its rate"})
                    } else {
                        serde_json::json!({"error": "over", "limit": "max_active_series",
                            "max": 3, "accepted": 3, "refused": 2})
                    };
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        axum::Json(body),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = AgentConfig {
            partitioner_url: format!("http://{addr}"),
            retry_initial_ms: 10,
            ..AgentConfig::default()
        };
        let mut sender = Sender::new(&cfg).unwrap();
        let item = |host: usize| {
            let key = MetricKey::new("default", "req", vec![("host".into(), format!("h{host}"))])
                .unwrap();
            let agg = Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1,
            });
            (key, agg)
        };
        let metrics = SelfMetrics::new("agent", "series-minutes");
        let spool = Spool::in_memory(&cfg, 1);
        spool.push_minutes(vec![(1_764_460_800, (0..5).map(item).collect())], &metrics);
        let batch = spool.pop().unwrap();
        let body = spool.body(&batch).unwrap();
        assert!(sender.send(&batch, &body, &metrics, &|| false).await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let text = metrics.render();
        for line in [
            "thermo_agent_sent_total 3",
            r#"thermo_agent_dropped_total{reason="tenant_series_limit"} 2"#,
            r#"thermo_agent_errors_total{kind="send_retry"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }
}
