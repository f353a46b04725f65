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
    /// Kafka `group.instance.id` (static membership), one per aggregator and stable across its
    /// restarts (e.g. the host name); empty: dynamic membership.
    pub instance_id: String,
    /// Kafka `session.timeout.ms`: how long the group waits for a silent member before its
    /// partitions go to the others (and how long a member keeps its partitions while it cannot
    /// reach the broker).
    pub session_timeout_ms: u64,
    pub redis_url: String,
    /// How long minutes stay in Redis.
    pub hot_retention_hours: i64,
    /// Most records applied in one hot-store write.
    pub batch_max_records: usize,
    /// Longest wait for the first record of a batch.
    pub batch_max_wait_ms: u64,
    /// Roll minutes up into cold storage (S3, or `cold_dir`) and trim Redis once S3 holds them.
    pub cold_enabled: bool,
    /// S3 endpoint (empty: AWS's default for the region).
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// Create the bucket at start if it does not exist.
    pub s3_create_bucket: bool,
    /// If set, cold objects go to this local directory instead of S3.
    pub cold_dir: String,
    /// Object key prefix.
    pub cold_prefix: String,
    /// Seconds after a chunk (hour, day, week) ends before it is rolled up.
    pub cold_lag_secs: i64,
    /// Seconds between compactor cycles.
    pub cold_interval_secs: u64,
    /// A minute arriving after its hour was rolled up is still merged if it is at most this many
    /// seconds after the hour's end; later it is dropped (`dropped_total{reason="late"}`).
    pub late_grace_secs: i64,
    /// Retention of the 1m, 5m and 1h objects.
    pub retention_1m_days: i64,
    pub retention_5m_days: i64,
    pub retention_1h_days: i64,
    /// With cold storage, Redis expires an hour by itself only this long after the hot retention
    /// (the bound on how long S3 may be unreachable before hot data is lost).
    pub hot_expiry_margin_hours: i64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8128".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic: "thermo-minutes".into(),
            group_id: "thermo-aggregators".into(),
            instance_id: String::new(),
            session_timeout_ms: 10_000,
            redis_url: "redis://127.0.0.1:6379".into(),
            hot_retention_hours: 48,
            batch_max_records: 2000,
            batch_max_wait_ms: 200,
            cold_enabled: false,
            s3_endpoint: "http://127.0.0.1:9000".into(),
            s3_bucket: "thermo".into(),
            s3_region: "us-east-1".into(),
            s3_access_key: "thermo".into(),
            s3_secret_key: "thermo".into(),
            s3_create_bucket: true,
            cold_dir: String::new(),
            cold_prefix: "cold/v1".into(),
            cold_lag_secs: 120,
            cold_interval_secs: 10,
            late_grace_secs: 6 * 3600,
            retention_1m_days: 7,
            retention_5m_days: 90,
            retention_1h_days: 730,
            hot_expiry_margin_hours: 168,
        }
    }
}
