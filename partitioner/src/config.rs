//! Partitioner configuration (`thermo partitioner --config FILE`, env `THERMO_PARTITIONER_*`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Every key, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionerConfig {
    /// HTTP listen address for the ingest API, `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// Topic of series-minutes.
    pub topic: String,
    /// API key → tenant. Empty: no authentication, everything goes to tenant `default`.
    pub api_keys: BTreeMap<String, String>,
    /// A file of API keys with their tenant and scope (`thermo_runtime::auth`), read at start and
    /// on SIGHUP, besides `api_keys`. Empty: none.
    pub api_key_file: String,
    /// HTTPS: the certificate chain (PEM, leaf first) and its private key (PEM); both or neither.
    /// Empty: plain HTTP.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Largest request body accepted, compressed as sent (413 above).
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression (413 above).
    pub max_decoded_bytes: usize,
    /// Most series-minutes in one batch (413 above).
    pub max_series_per_batch: usize,
    /// How long a batch may wait for Kafka's acknowledgement before the answer is 503.
    pub produce_timeout_ms: u64,
    /// Oldest minute accepted, in seconds before now (400 beyond).
    pub max_past_secs: i64,
    /// Newest minute accepted, in seconds after now (400 beyond).
    pub max_future_secs: i64,
    /// Ingest rate per tenant, in series-minutes per second (429 above); 0: no limit.
    pub rate_limit_per_sec: u32,
    /// Seconds of that rate a tenant may send at once (its bucket's size).
    pub rate_limit_burst_secs: u32,
    /// Per-tenant rates overriding `rate_limit_per_sec` (0: no limit for that tenant).
    pub tenant_rate_limits: BTreeMap<String, u32>,
    /// Ingest requests handled at once; beyond it 503 at once, before the body is read.
    pub max_in_flight_requests: usize,
    /// Bytes the requests handled at once may hold: bodies as sent (their `Content-Length`, else
    /// `max_body_bytes`), after gzip, and their records until Kafka acknowledged them. Beyond it
    /// 503 at once (413 for a request that alone exceeds it).
    pub max_in_flight_bytes: u64,
    /// Active series per tenant (a series stays active `active_series_window_hours` after it was
    /// last sent): a request's new series beyond it are refused with 429, its known series
    /// accepted. 0: no limit.
    pub max_active_series: u64,
    /// New series per tenant per clock hour (UTC), refused beyond it like `max_active_series`.
    /// 0: no limit.
    pub max_new_series_per_hour: u64,
    /// Per-tenant overrides of the two series limits.
    pub tenant_series_limits: BTreeMap<String, TenantSeriesLimits>,
    /// Hours a series counts as active after it was last sent: the hot retention.
    pub active_series_window_hours: i64,
    /// Redis holding every tenant's recent series for the series limits, shared by all
    /// partitioner replicas (`redis://host:port[/db]`, the aggregators' Redis will do). Empty:
    /// this process's memory, right only when one partitioner runs.
    pub redis_url: String,
}

/// A tenant's overrides of the series limits (absent: the default; 0: no limit).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSeriesLimits {
    pub max_active_series: Option<u64>,
    pub max_new_series_per_hour: Option<u64>,
}

impl PartitionerConfig {
    /// True when a series limit is set, by default or for some tenant.
    pub fn limits_series(&self) -> bool {
        self.max_active_series > 0
            || self.max_new_series_per_hour > 0
            || !self.tenant_series_limits.is_empty()
    }
}

impl Default for PartitionerConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8127".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic: "thermo-minutes".into(),
            api_keys: BTreeMap::new(),
            api_key_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            max_body_bytes: 8 << 20,
            max_decoded_bytes: 64 << 20,
            max_series_per_batch: 100_000,
            produce_timeout_ms: 10_000,
            max_past_secs: 7 * 86_400,
            max_future_secs: 300,
            rate_limit_per_sec: 0,
            rate_limit_burst_secs: 60,
            tenant_rate_limits: BTreeMap::new(),
            max_in_flight_requests: 256,
            max_in_flight_bytes: 512 << 20,
            max_active_series: 0,
            max_new_series_per_hour: 0,
            tenant_series_limits: BTreeMap::new(),
            active_series_window_hours: 48,
            redis_url: String::new(),
        }
    }
}
