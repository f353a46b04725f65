//! thermo-read-service: the HTTP query API over the hot store.
//!
//! - `GET /api/v1/metrics`: the tenant's metric names with their type and tag keys.
//! - `GET /api/v1/query`: one statistic of a metric per step bucket, filtered by `where`, grouped
//!   by `group_by` (see [`query`] and docs/api.md).

pub mod api;
pub mod config;
pub mod error;
pub mod query;

pub use config::ReadConfig;
pub use error::ApiError;

use thermo_runtime::telemetry::{self, Readiness, SelfMetrics};
use thermo_store::redis_hot::RedisHot;

/// Runs the read service until `shutdown` resolves.
pub async fn run(
    cfg: ReadConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let metrics = SelfMetrics::new("read_service", "queries");
    let ready = Readiness::not_ready("connecting to redis");
    let hot = loop {
        match RedisHot::connect(&cfg.redis_url, cfg.hot_retention_hours * 3600).await {
            Ok(h) => break h,
            Err(e) => {
                tracing::warn!("redis at {} not reachable yet: {e}", cfg.redis_url);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    ready.set_ready();
    {
        // Readiness follows whether Redis answers.
        let (hot, ready) = (hot.clone(), ready.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                match hot.ping().await {
                    Ok(()) => ready.set_ready(),
                    Err(e) => ready.set_not_ready(format!("redis: {e}")),
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .map_err(|e| ApiError::Startup(format!("bind {}: {e}", cfg.http_addr)))?;
    let state = api::AppState::new(cfg.clone(), hot, metrics.clone());
    let app = api::router(state).merge(telemetry::router(metrics, ready));
    tracing::info!(addr = %cfg.http_addr, redis = %cfg.redis_url, "read service listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ApiError::Startup(e.to_string()))?;
    tracing::info!("read service stopped");
    Ok(())
}
