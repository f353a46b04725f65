//! Aggregator configuration (`thermo aggregator --config FILE`, env `THERMO_AGGREGATOR_*`).

use serde::Deserialize;

/// Every key, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// HTTP listen address for `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    pub kafka_brokers: String,
    pub topic: String,
    /// Consumer group shared by every aggregator.
    pub group_id: String,
    pub redis_url: String,
    /// How long minutes stay in Redis.
    pub hot_retention_hours: i64,
    /// Most records applied in one hot-store write.
    pub batch_max_records: usize,
    /// Longest wait for the first record of a batch.
    pub batch_max_wait_ms: u64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8128".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic: "thermo-minutes".into(),
            group_id: "thermo-aggregators".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            hot_retention_hours: 48,
            batch_max_records: 2000,
            batch_max_wait_ms: 200,
        }
    }
}
