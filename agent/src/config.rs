//! Agent configuration (`thermo agent --config FILE`, env `THERMO_AGENT_*`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Every key, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// StatsD/DogStatsD UDP listen address.
    pub udp_addr: String,
    /// Path of a Unix datagram socket taking StatsD/DogStatsD datagrams, like DogStatsD's
    /// `/var/run/datadog/dsd.socket` (empty: none). Created with mode 0722, removed on stop.
    pub uds_path: String,
    /// TCP listen address taking StatsD/DogStatsD lines, each ended by `\n` (empty: none).
    pub tcp_addr: String,
    /// Longest line taken on TCP, in bytes; longer ones are skipped and counted
    /// (`dropped_total{reason="line_too_long"}`).
    pub max_line_bytes: usize,
    /// Most TCP connections served at once (more wait in the kernel's backlog).
    pub max_tcp_connections: usize,
    /// OTLP/HTTP listen address taking OpenTelemetry metrics, `POST /v1/metrics` (empty: none;
    /// the route is served on `http_addr` too).
    pub otlp_addr: String,
    /// Resource attributes that become tags of OTLP series (point attributes always do).
    pub otlp_resource_tags: Vec<String>,
    /// HTTP listen address: `POST /api/v1/statsd`, `POST /v1/metrics`, `POST /flush`, `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    /// Base URL of the partitioner (`http://` or `https://`).
    pub partitioner_url: String,
    /// With an `https://` partitioner URL: the CA certificates (PEM) its certificate is checked
    /// against. Empty: the system's.
    pub ca_file: String,
    /// This agent's id in idempotency keys (default: the host name).
    pub agent_id: String,
    /// API key sent as `Authorization: Bearer` (empty: none).
    pub api_key: String,
    /// Tags added to every series (a tag on the line wins), e.g. `{ host = "web-1" }`.
    pub global_tags: BTreeMap<String, String>,
    /// Seconds after a minute ends before it is flushed (late UDP lines still land in it).
    pub flush_delay_secs: i64,
    /// How often closed minutes are looked for.
    pub flush_interval_ms: u64,
    /// Oldest DogStatsD `|T` timestamp accepted, in seconds before now.
    pub max_past_secs: i64,
    /// Newest `|T` timestamp accepted, in seconds after now.
    pub max_future_secs: i64,
    /// Most series-minutes held in memory (lines for new series beyond it are dropped, counted).
    /// Memory: about 100 B per counter or gauge, 16 KiB and up per timer/histogram (its HDR
    /// histogram: 3 significant digits over the values seen), so 50,000 timer series-minutes can
    /// take about 1 GiB.
    pub max_series: usize,
    /// Most series-minutes per batch sent to the partitioner.
    pub batch_max_items: usize,
    /// Most batches waiting to be sent; beyond it the oldest is dropped (counted as `spool_full`).
    pub spool_max_batches: usize,
    /// Directory where batches wait on disk until acknowledged, surviving a SIGKILL or a crash
    /// (one file per batch, see the `spool` module). Empty: in memory only.
    pub spool_dir: String,
    /// Most bytes of batch files in `spool_dir`; beyond it the oldest batch is dropped.
    pub spool_max_bytes: u64,
    /// With `spool_dir`: how often the open minutes are written to `spool_dir/checkpoint`, the
    /// most a SIGKILLed agent loses of what it accepted. 0: no checkpoints.
    pub checkpoint_interval_secs: u64,
    /// Timeout of one send.
    pub request_timeout_ms: u64,
    /// First retry delay; doubles up to `retry_max_ms`, with jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Batches sent at once while the circuit breaker is closed (one while it is not).
    pub max_in_flight_batches: usize,
    /// Failed sends in a row (time-outs, connection errors, 5xx) that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker sends nothing before it lets one probe through.
    pub breaker_open_ms: u64,
    /// How long shutdown waits for the spool to drain.
    pub shutdown_timeout_secs: u64,
    /// Log files to read metrics from (`[[logs]]`, see `crate::logs` and README); needs
    /// `spool_dir`.
    pub logs: Vec<crate::logs::LogSource>,
    /// How often the log files are looked at for new lines.
    pub log_poll_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            udp_addr: "127.0.0.1:8125".into(),
            uds_path: String::new(),
            tcp_addr: String::new(),
            max_line_bytes: 65_536,
            max_tcp_connections: 1024,
            otlp_addr: "127.0.0.1:4318".into(),
            otlp_resource_tags: vec!["service.name".into()],
            http_addr: "127.0.0.1:8126".into(),
            partitioner_url: "http://127.0.0.1:8127".into(),
            ca_file: String::new(),
            agent_id: default_agent_id(),
            api_key: String::new(),
            global_tags: BTreeMap::new(),
            flush_delay_secs: 5,
            flush_interval_ms: 1000,
            max_past_secs: 3600,
            max_future_secs: 60,
            max_series: 50_000,
            batch_max_items: 5000,
            spool_max_batches: 1000,
            spool_dir: String::new(),
            spool_max_bytes: 1 << 30,
            checkpoint_interval_secs: 5,
            request_timeout_ms: 5000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            max_in_flight_batches: 4,
            breaker_failures: 5,
            breaker_open_ms: 15_000,
            shutdown_timeout_secs: 30,
            logs: Vec::new(),
            log_poll_ms: 250,
        }
    }
}

fn default_agent_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".to_string())
}
