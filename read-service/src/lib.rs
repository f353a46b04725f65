//! thermo-read-service: the HTTP query API over the hot store and, optionally, cold storage.
//!
//! - `GET /api/v1/metrics`: the tenant's metric names with their type and tag keys.
//! - `GET /api/v1/query`: one statistic of a metric per step bucket, filtered by `where`, grouped
//!   by `group_by` (see [`query`] and docs/api.md); with `cold_enabled`, Redis and the cold
//!   objects are stitched ([`stitch`]) and decoded objects are cached ([`cache`]).
//! - `GET /api/v1/tenants/{tenant}/usage`: the tenant's active series and top metrics ([`usage`]).
//! - `/prometheus/api/v1/*`: the Prometheus-compatible API ([`prom`]).

pub mod api;
pub mod cache;
pub mod cold;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod finality;
pub mod limits;
pub mod prom;
pub mod query;
pub mod stitch;
pub mod usage;

pub use config::ReadConfig;
pub use error::ApiError;

use api::ColdSide;
use cache::ColdCache;
use cold::{ColdCounters, ColdReader};
use std::time::Duration;
use thermo_runtime::telemetry::{self, Readiness, SelfMetrics};
use thermo_store::catalog::Catalog;
use thermo_store::cold::{ColdStore, LocalDirCold};
use thermo_store::redis_catalog::RedisCatalog;
use thermo_store::redis_hot::RedisHot;
use thermo_store::s3::{S3Cold, S3Settings};

/// The cold side of the routes: `catalog` (next to the hot store) and objects read from `store`
/// through a cache of `cold_cache_bytes`.
pub fn cold_side<K: Catalog, C: ColdStore>(
    cfg: &ReadConfig,
    catalog: K,
    store: C,
    metrics: &SelfMetrics,
) -> ColdSide<K, C> {
    let cache = ColdCache::with_metrics(cfg.cold_cache_bytes, metrics);
    ColdSide {
        catalog,
        reader: ColdReader::new(
            store,
            &cfg.cold_prefix,
            cache,
            ColdCounters::with_metrics(metrics),
        ),
    }
}

fn s3_settings(cfg: &ReadConfig) -> S3Settings {
    S3Settings {
        endpoint: cfg.s3_endpoint.clone(),
        bucket: cfg.s3_bucket.clone(),
        region: cfg.s3_region.clone(),
        access_key: cfg.s3_access_key.clone(),
        secret_key: cfg.s3_secret_key.clone(),
        timeout: Duration::from_millis(cfg.query_timeout_ms),
    }
}

async fn serve<C: ColdStore>(
    cfg: ReadConfig,
    hot: RedisHot,
    cold: Option<ColdSide<RedisCatalog, C>>,
    metrics: SelfMetrics,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .map_err(|e| ApiError::Startup(format!("bind {}: {e}", cfg.http_addr)))?;
    let state = api::AppState::new(cfg.clone(), hot, cold, metrics.clone());
    state
        .keys()
        .watch_file(&cfg.api_key_file)
        .map_err(|e| ApiError::Startup(e.to_string()))?;
    let tls = thermo_runtime::tls::from_files(&cfg.tls_cert_file, &cfg.tls_key_file)
        .map_err(ApiError::Startup)?;
    let app = api::router(state).merge(telemetry::router(metrics, ready));
    tracing::info!(addr = %cfg.http_addr, https = tls.is_some(), redis = %cfg.redis_url, cold = cfg.cold_enabled, "read service listening");
    thermo_runtime::tls::serve(listener, tls, app, shutdown)
        .await
        .map_err(|e| ApiError::Startup(e.to_string()))?;
    tracing::info!("read service stopped");
    Ok(())
}

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
            Err(e) if !e.retryable() => return Err(ApiError::Startup(e.to_string())),
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
    if !cfg.cold_enabled {
        return serve::<LocalDirCold>(cfg, hot, None, metrics, ready, shutdown).await;
    }
    let catalog = RedisCatalog::new(hot.clone());
    if !cfg.cold_dir.is_empty() {
        let cold = cold_side(&cfg, catalog, LocalDirCold::new(&cfg.cold_dir), &metrics);
        return serve(cfg, hot, Some(cold), metrics, ready, shutdown).await;
    }
    let cold = cold_side(&cfg, catalog, S3Cold::new(&s3_settings(&cfg)), &metrics);
    serve(cfg, hot, Some(cold), metrics, ready, shutdown).await
}
