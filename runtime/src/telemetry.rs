//! Self-metrics and health endpoints.
//!
//! Every role has a [`SelfMetrics`] with the four counters the operations runbook relies on, named
//! `thermo_<role>_received_total`, `thermo_<role>_sent_total`, `thermo_<role>_dropped_total{reason}`
//! and `thermo_<role>_errors_total{kind}`, plus whatever the role registers itself. [`router`] serves
//! them at `/metrics` (Prometheus text format) beside `/healthz` (the process is up) and `/readyz`
//! (the role can do its work: 200, or 503 with the reason).

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, Mutex};

/// The registry and common counters of one role.
#[derive(Clone)]
pub struct SelfMetrics {
    pub registry: Registry,
    pub role: String,
    pub received: IntCounter,
    pub sent: IntCounter,
    pub dropped: IntCounterVec,
    pub errors: IntCounterVec,
}

fn metric_prefix(role: &str) -> String {
    format!("thermo_{}", role.replace('-', "_"))
}

impl SelfMetrics {
    /// Creates the registry with the common counters; `what` says what `received`/`sent` count.
    pub fn new(role: &str, what: &str) -> Self {
        let registry = Registry::new();
        let p = metric_prefix(role);
        let received = IntCounter::new(format!("{p}_received_total"), format!("{what} received"))
            .unwrap_or_else(invalid);
        let sent = IntCounter::new(format!("{p}_sent_total"), format!("{what} sent on"))
            .unwrap_or_else(invalid);
        let dropped = IntCounterVec::new(
            Opts::new(
                format!("{p}_dropped_total"),
                format!("{what} dropped, by reason"),
            ),
            &["reason"],
        )
        .unwrap_or_else(invalid);
        let errors = IntCounterVec::new(
            Opts::new(format!("{p}_errors_total"), "errors, by kind"),
            &["kind"],
        )
        .unwrap_or_else(invalid);
        for c in [&received, &sent] {
            let _ = registry.register(Box::new(c.clone()));
        }
        let _ = registry.register(Box::new(dropped.clone()));
        let _ = registry.register(Box::new(errors.clone()));
        Self {
            registry,
            role: role.to_string(),
            received,
            sent,
            dropped,
            errors,
        }
    }

    /// Registers a role-specific counter `thermo_<role>_<name>`.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::new(format!("{}_{name}", metric_prefix(&self.role)), help)
            .unwrap_or_else(invalid);
        let _ = self.registry.register(Box::new(c.clone()));
        c
    }

    /// Registers a role-specific gauge `thermo_<role>_<name>`.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(format!("{}_{name}", metric_prefix(&self.role)), help)
            .unwrap_or_else(invalid);
        let _ = self.registry.register(Box::new(g.clone()));
        g
    }

    /// Registers a role-specific counter `thermo_<role>_<name>` with `labels`.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let opts = Opts::new(format!("{}_{name}", metric_prefix(&self.role)), help);
        let c = IntCounterVec::new(opts, labels).unwrap_or_else(invalid);
        let _ = self.registry.register(Box::new(c.clone()));
        c
    }

    /// Registers a role-specific gauge `thermo_<role>_<name>` with `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let opts = Opts::new(format!("{}_{name}", metric_prefix(&self.role)), help);
        let g = IntGaugeVec::new(opts, labels).unwrap_or_else(invalid);
        let _ = self.registry.register(Box::new(g.clone()));
        g
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cold]
fn invalid<T>(e: prometheus::Error) -> T {
    // Metric names are built from constants; an invalid one is a programming error.
    panic!("invalid self-metric definition: {e}")
}

/// Readiness: `None` is ready, `Some(reason)` is not.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Readiness {
    /// Starts not ready, with `reason`.
    pub fn not_ready(reason: &str) -> Self {
        Self(Arc::new(Mutex::new(Some(reason.to_string()))))
    }
    pub fn set_ready(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(reason.into());
        }
    }
    pub fn reason(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// `/metrics`, `/healthz` and `/readyz`, to merge into a role's router.
pub fn router(metrics: SelfMetrics, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready.clone();
                async move {
                    match r.reason() {
                        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
                        Some(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
