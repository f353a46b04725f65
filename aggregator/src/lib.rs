//! thermo-aggregator: a log consumer-group member that merges every host's minutes into the hot
//! store.
//!
//! Per poll, records are grouped by partition and applied partition by partition:
//! 1. read the partition's applied offset from the hot store; skip records at or below it
//!    (a record delivered again after a crash or a rebalance);
//! 2. merge each record into its series-minute cell, unless the cell already holds the record's
//!    contribution `(source, seq)` (a batch the agent sent again);
//! 3. write the cells and the new offset in one atomic, fenced write;
//! 4. only then commit the log offsets.
//!
//! A hot-store outage stops consumption (nothing is committed) and is retried with backoff; the
//! role is not ready meanwhile.

pub mod apply;
pub mod compactor;
pub mod config;

pub use config::AggregatorConfig;

use std::time::Duration;
use thermo_runtime::telemetry::{self, Readiness, SelfMetrics};
use thermo_store::cold::LocalDirCold;
use thermo_store::kafka::KafkaConsumer;
use thermo_store::redis_catalog::RedisCatalog;
use thermo_store::redis_hot::RedisHot;
use thermo_store::s3::{S3Cold, S3Settings};

/// A failure that stops the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("startup failed: {0}")]
    Startup(String),
}

/// Runs the aggregator until `shutdown` resolves.
pub async fn run(
    cfg: AggregatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let metrics = SelfMetrics::new("aggregator", "records");
    let ready = Readiness::not_ready("connecting");
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .map_err(|e| AggregatorError::Startup(format!("bind {}: {e}", cfg.http_addr)))?;
    let app = telemetry::router(metrics.clone(), ready.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let mut rx = stop_rx;
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
    });
    let hot = loop {
        match RedisHot::connect(&cfg.redis_url, cfg.hot_retention_hours * 3600).await {
            Ok(h) => break h,
            Err(e) if !e.retryable() => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(AggregatorError::Startup(e.to_string()));
            }
            Err(e) => {
                tracing::warn!("redis at {} not reachable yet: {e}", cfg.redis_url);
                ready.set_not_ready(format!("redis: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let hot = if cfg.cold_enabled {
        hot.with_cold(cfg.hot_expiry_margin_hours * 3600)
    } else {
        hot
    };
    let compactor = cfg
        .cold_enabled
        .then(|| start_compactor(&cfg, hot.clone(), metrics.clone(), stop_tx.subscribe()));
    let instance = Some(cfg.instance_id.as_str()).filter(|i| !i.is_empty());
    let consumer = KafkaConsumer::new(
        &cfg.kafka_brokers,
        &cfg.topic,
        &cfg.group_id,
        instance,
        std::time::Duration::from_millis(cfg.session_timeout_ms),
    )
    .map_err(|e| AggregatorError::Startup(e.to_string()))?;
    tracing::info!(
        addr = %cfg.http_addr, brokers = %cfg.kafka_brokers, topic = %cfg.topic,
        group = %cfg.group_id, redis = %cfg.redis_url, "aggregator running"
    );
    ready.set_ready();
    let worker = apply::Worker::new(consumer, hot, metrics, ready, apply::Settings::from(&cfg));
    worker.run(shutdown).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(c) = compactor {
        let _ = c.await;
    }
    tracing::info!("aggregator stopped");
    Ok(())
}

/// Starts the compactor on the configured cold store (a local directory or S3).
fn start_compactor(
    cfg: &AggregatorConfig,
    hot: RedisHot,
    metrics: SelfMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let settings = compactor::CompactorSettings::from(cfg);
    let catalog = RedisCatalog::new(hot);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if !cfg.cold_dir.is_empty() {
        tracing::info!(dir = %cfg.cold_dir, "cold storage in a local directory");
        let c = compactor::Compactor::new(LocalDirCold::new(&cfg.cold_dir), catalog, settings);
        return tokio::spawn(c.run(metrics, stopped));
    }
    let s3 = S3Cold::new(&S3Settings {
        endpoint: cfg.s3_endpoint.clone(),
        bucket: cfg.s3_bucket.clone(),
        region: cfg.s3_region.clone(),
        access_key: cfg.s3_access_key.clone(),
        secret_key: cfg.s3_secret_key.clone(),
        timeout: Duration::from_secs(30),
    })
    .creating_bucket(cfg.s3_create_bucket);
    let create = cfg.s3_create_bucket;
    tracing::info!(endpoint = %cfg.s3_endpoint, bucket = %cfg.s3_bucket, "cold storage in S3");
    tokio::spawn(async move {
        if create {
            if let Err(e) = s3.ensure_bucket().await {
                tracing::warn!(
                    "cannot create the bucket yet (the compactor retries every cycle): {e}"
                );
            }
        }
        compactor::Compactor::new(s3, catalog, settings)
            .run(metrics, stopped)
            .await;
    })
}
