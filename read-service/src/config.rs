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
    /// A file of API keys with their tenant and scope (`thermo_runtime::auth`), read at start and
    /// on SIGHUP, besides `api_keys`. Empty: none.
    pub api_key_file: String,
    /// HTTPS: the certificate chain (PEM, leaf first) and its private key (PEM); both or neither.
    /// Empty: plain HTTP.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Most points (buckets) one series of an answer may have (400 above).
    pub max_points: i64,
    /// Most series one query may read (400 above).
    pub max_series: usize,
    /// Query timeout (also the bound of one cold-store request).
    pub query_timeout_ms: u64,
    /// Read cold storage too (objects written by the aggregators' compactor), stitched with Redis.
    /// Off: Redis only, as without cold storage.
    pub cold_enabled: bool,
    /// S3 endpoint (empty: AWS's default for the region).
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// Object key prefix; must equal the aggregators' `cold_prefix`.
    pub cold_prefix: String,
    /// If set, read cold objects from this local directory instead of S3 (the aggregators'
    /// `cold_dir`).
    pub cold_dir: String,
    /// Bytes of cold objects (as stored) kept decoded in memory, least recently used out first.
    pub cold_cache_bytes: u64,
    /// Most samples one query may touch: Redis cells (bounded before they are read by the matched
    /// series times the minutes of the range) plus cold rows merged (400; 422 in the Prometheus
    /// API).
    pub max_samples: u64,
    /// Seconds after a minute ends until it counts as final (`read-service/src/finality.rs`): at
    /// least the agents' `flush_delay_secs` plus the aggregators' usual lag.
    pub final_delay_secs: i64,
    /// Queries running at once (both APIs).
    pub max_concurrent_queries: usize,
    /// Queries waiting for a slot, each at most `query_timeout_ms`; beyond it 503 at once.
    pub max_queued_queries: usize,
    /// Queries per second per tenant (429 above); 0: no limit.
    pub query_rate_per_sec: u32,
    /// Seconds of that rate a tenant may use at once (its bucket's size).
    pub query_rate_burst_secs: u32,
    /// Per-tenant query rates overriding `query_rate_per_sec` (0: no limit for that tenant).
    pub tenant_query_rate_limits: BTreeMap<String, u32>,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8129".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            hot_retention_hours: 48,
            api_keys: BTreeMap::new(),
            api_key_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            max_points: 11_000,
            max_series: 10_000,
            query_timeout_ms: 30_000,
            cold_enabled: false,
            s3_endpoint: "http://127.0.0.1:9000".into(),
            s3_bucket: "thermo".into(),
            s3_region: "us-east-1".into(),
            s3_access_key: "thermo".into(),
            s3_secret_key: "thermo".into(),
            cold_prefix: "cold/v1".into(),
            cold_dir: String::new(),
            cold_cache_bytes: 256 << 20,
            max_samples: 10_000_000,
            final_delay_secs: 15,
            max_concurrent_queries: 64,
            max_queued_queries: 256,
            query_rate_per_sec: 0,
            query_rate_burst_secs: 10,
            tenant_query_rate_limits: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_keys_have_defaults_and_unknown_keys_are_refused() {
        let c: ReadConfig =
            serde_json::from_str(r#"{"cold_enabled": true, "cold_dir": "/tmp/x"}"#).unwrap();
        assert!(c.cold_enabled);
        assert_eq!(c.cold_dir, "/tmp/x");
        assert_eq!(c.cold_cache_bytes, 268_435_456);
        assert_eq!(c.cold_prefix, "cold/v1");
        assert_eq!(c.s3_endpoint, "http://127.0.0.1:9000");
        assert!(!ReadConfig::default().cold_enabled);
        assert!(serde_json::from_str::<ReadConfig>(r#"{"cold_cache": 1}"#).is_err());
    }
}
