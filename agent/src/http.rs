//! The agent's HTTP routes: `POST /api/v1/statsd`, `POST /v1/metrics` (OTLP) and `POST /flush`.

use crate::{otlp, Shared};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest `POST /api/v1/statsd` body.
pub const MAX_BODY_BYTES: usize = 4 << 20;

pub fn router(shared: Arc<Shared>) -> Router {
    intake_router(shared.clone()).merge(
        Router::new()
            .route("/flush", post(flush))
            .with_state(shared),
    )
}

/// The intake routes, `POST /api/v1/statsd` and `POST /v1/metrics`, without `/flush`
/// (standalone mode serves its own, see [`flush_and_drain`]).
pub fn intake_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/statsd", post(push))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared.clone())
        .merge(otlp_router(shared))
}

/// `POST /v1/metrics` alone (the `otlp_addr` listener).
pub fn otlp_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/metrics", post(otlp_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(otlp::MAX_BODY_BYTES))
        .with_state(shared)
}

/// Takes an OTLP/HTTP metrics export: 200 with an `ExportMetricsServiceResponse` (its
/// `partial_success` naming what was refused), else 400/413/415 with a `google.rpc.Status`, in
/// the request's encoding.
async fn otlp_metrics(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(header::CONTENT_TYPE);
    let Some(format) = otlp::Format::from_content_type(&content_type) else {
        let e = otlp::OtlpError::ContentType(content_type);
        return otlp_reply(
            otlp::Format::Json,
            e.status(),
            otlp::error_body(otlp::Format::Json, e.to_string()),
        );
    };
    let gzip = match header(header::CONTENT_ENCODING)
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            let e = otlp::OtlpError::Encoding(other.to_string());
            return otlp_reply(format, e.status(), otlp::error_body(format, e.to_string()));
        }
    };
    let shared = s.clone();
    let done = tokio::task::spawn_blocking(move || shared.ingest_otlp(&body, format, gzip)).await;
    match done {
        Ok(Ok(taken)) => otlp_reply(
            format,
            200,
            otlp::response_body(format, taken.rejected(), taken.message()),
        ),
        Ok(Err(e)) => {
            s.metrics.errors.with_label_values(&["otlp_decode"]).inc();
            otlp_reply(format, e.status(), otlp::error_body(format, e.to_string()))
        }
        Err(e) => otlp_reply(format, 500, otlp::error_body(format, e.to_string())),
    }
}

fn otlp_reply(format: otlp::Format, status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

/// Ingests StatsD lines from the body; answers how many were accepted and refused, by reason.
async fn push(State(s): State<Arc<Shared>>, body: Bytes) -> Json<serde_json::Value> {
    let stats = s.ingest(&body);
    Json(serde_json::json!({ "accepted": stats.lines, "dropped": stats.dropped }))
}

/// The query of `POST /flush`.
#[derive(Deserialize)]
pub struct FlushParams {
    /// How long to wait for the spool to drain (default 30 s, at most 120 s).
    pub wait_ms: Option<u64>,
}

impl FlushParams {
    /// When the wait ends, counted from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.wait_ms.unwrap_or(30_000).min(120_000))
    }
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Series-minutes moved from memory to the spool.
    pub series: usize,
    /// Batches not acknowledged yet (0 when drained).
    pub pending_batches: usize,
    /// Whether the partitioner acknowledged everything before the deadline.
    pub drained: bool,
}

/// Closes every open minute and waits until the spool drained (every batch acknowledged by the
/// partitioner) or `deadline` passed.
pub async fn flush_and_drain(s: &Shared, deadline: Instant) -> Flushed {
    let series = s.flush(true, 0).await;
    loop {
        let drained = s.spool.drained.notified();
        if s.spool.idle() {
            break;
        }
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            break;
        }
    }
    Flushed {
        series,
        pending_batches: s.spool.batches(),
        drained: s.spool.idle(),
    }
}

/// Closes every open minute and waits for delivery: 200 when the spool drained, 202 if not yet.
async fn flush(
    State(s): State<Arc<Shared>>,
    Query(p): Query<FlushParams>,
) -> (StatusCode, Json<serde_json::Value>) {
    let f = flush_and_drain(&s, p.deadline()).await;
    let status = if f.drained {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (
        status,
        Json(
            serde_json::json!({ "flushed_series": f.series, "pending_batches": f.pending_batches }),
        ),
    )
}
