//! The agent's HTTP routes: `POST /api/v1/statsd` and `POST /flush`.

use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Largest `POST /api/v1/statsd` body.
pub const MAX_BODY_BYTES: usize = 4 << 20;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/statsd", post(push))
        .route("/flush", post(flush))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Ingests StatsD lines from the body; answers how many were accepted and refused, by reason.
async fn push(State(s): State<Arc<Shared>>, body: Bytes) -> Json<serde_json::Value> {
    let stats = s.ingest(&body);
    Json(serde_json::json!({ "accepted": stats.lines, "dropped": stats.dropped }))
}

#[derive(Deserialize)]
struct FlushParams {
    /// How long to wait for the spool to drain (default 30 s, at most 120 s).
    wait_ms: Option<u64>,
}

/// Closes every open minute and waits for delivery: 200 when the spool drained, 202 if not yet.
async fn flush(
    State(s): State<Arc<Shared>>,
    Query(p): Query<FlushParams>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let n = s.flush(true, 0);
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(30_000).min(120_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let drained = s.spool.drained.notified();
        if s.spool.idle() {
            break;
        }
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            break;
        }
    }
    let pending = s.spool.len() + usize::from(!s.spool.idle() && s.spool.is_empty());
    let status = if s.spool.idle() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::ACCEPTED
    };
    (
        status,
        Json(serde_json::json!({ "flushed_series": n, "pending_batches": pending })),
    )
}
