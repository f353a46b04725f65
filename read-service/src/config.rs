//! Read service configuration (`thermo read-service --config FILE`, env `THERMO_READ_SERVICE_*`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Every key, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConfig {
    /// HTTP listen address for the query API, `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    pub redis_url: String,
    /// Must equal the aggregators' `hot_retention_hours`.
    pub hot_retention_hours: i64,
    /// API key → tenant. Empty: no authentication, every query reads tenant `default`.
    pub api_keys: BTreeMap<String, String>,
    /// Most points (buckets) one series of an answer may have (400 above).
    pub max_points: i64,
    /// Most series one query may read (400 above).
    pub max_series: usize,
    /// Query timeout.
    pub query_timeout_ms: u64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8129".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            hot_retention_hours: 48,
            api_keys: BTreeMap::new(),
            max_points: 11_000,
            max_series: 10_000,
            query_timeout_ms: 30_000,
        }
    }
}
