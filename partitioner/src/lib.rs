//! thermo-partitioner: the stateless ingest gateway.
//!
//! `POST /api/v1/ingest` takes an agent batch (`application/x-thermo-batch`, optionally
//! `Content-Encoding: gzip`) or the JSON form (`application/json`), authenticates it to a tenant,
//! validates every series, and produces one log record per series-minute keyed by the metric key.
//! It answers 200 only when the log acknowledged every record, 503 (with `Retry-After`) otherwise,
//! so the sender retries; the aggregator merges a retried contribution `(source, seq)` once.

pub mod admission;
pub mod config;
pub mod error;
pub mod ingest;
pub mod remote_write;
pub mod series_limit;

pub use config::PartitionerConfig;
pub use error::IngestError;

use std::sync::Arc;
use std::time::Duration;
use thermo_runtime::telemetry::{self, Readiness, SelfMetrics};
use thermo_store::kafka::KafkaProducer;
use thermo_store::redis_series::RedisSeriesRegistry;
use thermo_store::series_registry::{AnySeriesRegistry, MemSeriesRegistry};

/// The series registry of the series limits: Redis when `redis_url` is set and a series limit is
/// (shared by every replica), else this process's memory (unused without a series limit).
async fn series_registry(cfg: &PartitionerConfig) -> Result<AnySeriesRegistry, IngestError> {
    if cfg.redis_url.is_empty() || !cfg.limits_series() {
        if cfg.limits_series() {
            tracing::warn!("series limits are counted in this process's memory (no redis_url): right only when one partitioner runs");
        }
        return Ok(AnySeriesRegistry::Memory(MemSeriesRegistry::new()));
    }
    let redis = RedisSeriesRegistry::connect(&cfg.redis_url)
        .await
        .map_err(|e| IngestError::Startup(format!("series registry at {}: {e}", cfg.redis_url)))?;
    Ok(AnySeriesRegistry::Redis(redis))
}

/// Runs the partitioner until `shutdown` resolves.
pub async fn run(
    cfg: PartitionerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    let metrics = SelfMetrics::new("partitioner", "series-minutes");
    let ready = Readiness::not_ready("kafka not checked yet");
    let producer = Arc::new(
        KafkaProducer::new(
            &cfg.kafka_brokers,
            &cfg.topic,
            Duration::from_millis(cfg.produce_timeout_ms),
        )
        .map_err(|e| IngestError::Startup(e.to_string()))?,
    );
    // Readiness follows whether the broker answers for the topic.
    {
        let producer = producer.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            loop {
                let p = producer.clone();
                let r = tokio::task::spawn_blocking(move || p.check(Duration::from_secs(2))).await;
                match r {
                    Ok(Ok(_)) => ready.set_ready(),
                    Ok(Err(e)) => ready.set_not_ready(e.to_string()),
                    Err(e) => ready.set_not_ready(e.to_string()),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    let registry = series_registry(&cfg).await?;
    let state = ingest::AppState::build(
        cfg.clone(),
        producer.clone(),
        metrics.clone(),
        ingest::system_clock(),
        registry,
    );
    state
        .keys()
        .watch_file(&cfg.api_key_file)
        .map_err(|e| IngestError::Startup(e.to_string()))?;
    let tls = thermo_runtime::tls::from_files(&cfg.tls_cert_file, &cfg.tls_key_file)
        .map_err(IngestError::Startup)?;
    let app = ingest::router(state).merge(telemetry::router(metrics, ready));
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .map_err(|e| IngestError::Startup(format!("bind {}: {e}", cfg.http_addr)))?;
    tracing::info!(addr = %cfg.http_addr, https = tls.is_some(), brokers = %cfg.kafka_brokers, topic = %cfg.topic, "partitioner listening");
    thermo_runtime::tls::serve(listener, tls, app, shutdown)
        .await
        .map_err(|e| IngestError::Startup(e.to_string()))?;
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
    tracing::info!("partitioner stopped");
    Ok(())
}
