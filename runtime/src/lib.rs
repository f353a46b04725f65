//! thermo-runtime: what every role shares.
//!
//! - [`auth`]: API keys: the tenant and scope of a request.
//! - [`config`]: one TOML file per role, unknown keys rejected, overridden by `THERMO_<ROLE>_<KEY>`
//!   environment variables and `--set key=value` flags (in that order of precedence, flags last).
//! - [`telemetry`]: the self-metrics registry (`/metrics`), `/healthz`, `/readyz`, logging.
//! - [`shutdown`]: SIGTERM / Ctrl-C as a future, so roles flush before they exit.
//! - [`rate`]: per-tenant token buckets (ingest and query rate limits).
//! - [`tls`]: HTTPS for the servers and the agent's client (rustls).

pub mod auth;
pub mod config;
pub mod rate;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
