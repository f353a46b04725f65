//! The read service's routes: `/api/v1/metrics` and `/api/v1/query`, and the Prometheus API
//! under `/prometheus` ([`crate::prom`]).
//!
//! Authentication: with `api_keys` configured, `Authorization: Bearer <key>` selects the tenant, and a
//! tenant sees only its own metrics; without keys every request reads tenant `default`.
//!
//! With cold storage, a query reads the catalog first ([`ColdView::load`]), then stitches Redis and
//! the objects (see [`crate::query`]). `/api/v1/metrics` lists what Redis indexes.

use crate::cold::{ColdReader, ColdView};
use crate::config::ReadConfig;
use crate::error::ApiError;
use crate::finality;
use crate::limits::QueryLimits;
use crate::query::{
    answer, parse_params, read_buckets, window_range, Cold, QueryParams, QueryResult,
};
use crate::stitch::{Bounds, Buckets, Served};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use thermo_core::aggregate::MetricType;
use thermo_core::window::minute_start;
use thermo_core::window::now_s;
use thermo_runtime::auth::{KeyRing, Scope};
use thermo_runtime::rate::{Clock, RateLimits};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// Cold storage for the routes: the catalog and the object reader.
pub struct ColdSide<K, C> {
    pub catalog: K,
    pub reader: ColdReader<C>,
}

pub struct AppState<H, K, C> {
    pub(crate) cfg: ReadConfig,
    pub(crate) hot: H,
    cold: Option<ColdSide<K, C>>,
    pub(crate) metrics: SelfMetrics,
    pub(crate) limits: QueryLimits,
    keys: KeyRing,
}

impl<H: HotStore, K: Catalog, C: ColdStore> AppState<H, K, C> {
    /// `cold`: `None` reads the hot store only.
    pub fn new(
        cfg: ReadConfig,
        hot: H,
        cold: Option<ColdSide<K, C>>,
        metrics: SelfMetrics,
    ) -> Arc<Self> {
        Self::with_clock(
            cfg,
            hot,
            cold,
            metrics,
            Arc::new(thermo_core::window::now_ms),
        )
    }

    /// [`Self::new`] with the clock of the query rate limits.
    pub fn with_clock(
        cfg: ReadConfig,
        hot: H,
        cold: Option<ColdSide<K, C>>,
        metrics: SelfMetrics,
        clock: Clock,
    ) -> Arc<Self> {
        let rates = RateLimits::new(
            cfg.query_rate_per_sec,
            cfg.tenant_query_rate_limits.clone(),
            cfg.query_rate_burst_secs,
            clock,
        );
        let limits = QueryLimits::new(
            cfg.max_concurrent_queries,
            cfg.max_queued_queries,
            Duration::from_millis(cfg.query_timeout_ms),
            rates,
            metrics.gauge(
                "queries_running",
                "Queries running (max_concurrent_queries)",
            ),
            metrics.gauge(
                "queries_queued",
                "Queries waiting for a slot (max_queued_queries)",
            ),
        );
        Arc::new(Self {
            keys: KeyRing::new(&cfg.api_keys),
            cfg,
            hot,
            cold,
            metrics,
            limits,
        })
    }
}

impl<H, K, C> AppState<H, K, C> {
    /// The API keys checked (to read a key file into: [`KeyRing::use_file`]).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The tenant of a request, which every route here needs the `read` scope for.
    pub(crate) fn tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        Ok(self.keys.authorize(headers, Scope::Read)?)
    }
}

impl<H, K, C> AppState<H, K, C> {
    /// Counts a query's answer: `sent_total`, or `errors_total{kind="<status>"}` for an error.
    pub(crate) fn count_answer(&self, error: Option<axum::http::StatusCode>) {
        match error {
            None => self.metrics.sent.inc(),
            Some(status) => self
                .metrics
                .errors
                .with_label_values(&[status.as_str()])
                .inc(),
        }
    }
}

pub fn router<H: HotStore, K: Catalog, C: ColdStore>(state: Arc<AppState<H, K, C>>) -> Router {
    Router::new()
        .route("/api/v1/metrics", get(list_metrics::<H, K, C>))
        .route("/api/v1/query", get(query::<H, K, C>))
        .route(
            "/api/v1/tenants/{tenant}/usage",
            get(crate::usage::usage::<H, K, C>),
        )
        .with_state(state.clone())
        .merge(crate::prom::router(state.clone()))
        // Every query route above (not the dashboard's page) runs within the query limits.
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::limits::limit::<H, K, C>,
        ))
        .merge(crate::dashboard::router())
}

#[derive(Serialize)]
struct MetricInfo {
    name: String,
    #[serde(rename = "type")]
    metric_type: &'static str,
    tag_keys: Vec<String>,
}

async fn list_metrics<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = st.tenant(&headers)?;
    let since = minute_start(now_s() - st.cfg.hot_retention_hours * 3600);
    let mut out = Vec::new();
    for (name, t) in st.hot.metrics(&tenant).await? {
        let series = st.hot.series(&tenant, &name, since).await?;
        let tag_keys: BTreeSet<String> = series
            .iter()
            .flat_map(|k| k.tags().iter().map(|(k, _)| k.clone()))
            .collect();
        out.push(MetricInfo {
            name,
            metric_type: t.as_str(),
            tag_keys: tag_keys.into_iter().collect(),
        });
    }
    Ok(Json(serde_json::json!({ "metrics": out })))
}

/// Evaluates `p`, with the catalog read first when cold storage is on.
pub(crate) async fn run_query<H: HotStore, K: Catalog, C: ColdStore>(
    st: &AppState<H, K, C>,
    tenant: &str,
    p: &QueryParams,
) -> Result<QueryResult, ApiError> {
    let (buckets, metric_type, served) = run_buckets(st, tenant, p, 0).await?;
    Ok(answer(
        p,
        buckets,
        metric_type,
        st.cold.is_some().then_some(served),
    ))
}

/// Every matching series' step buckets of `p` (see [`read_buckets`]), with the catalog read
/// first when cold storage is on; `max_samples` bounds this read's samples plus `touched_before`
/// (a PromQL query's earlier reads).
pub(crate) async fn run_buckets<H: HotStore, K: Catalog, C: ColdStore>(
    st: &AppState<H, K, C>,
    tenant: &str,
    p: &QueryParams,
    touched_before: u64,
) -> Result<(Buckets, MetricType, Served), ApiError> {
    let bounds = Bounds {
        max_series: st.cfg.max_series,
        max_samples: st.cfg.max_samples,
        touched_before,
    };
    let Some(cold) = &st.cold else {
        return read_buckets::<H, C>(&st.hot, None, tenant, p, bounds).await;
    };
    let (_, until) = window_range(p.resolution, p.from, p.to);
    let view = ColdView::load(&cold.catalog, p.resolution, until).await?;
    let cold = Cold {
        reader: &cold.reader,
        view: &view,
    };
    read_buckets(&st.hot, Some(cold), tenant, p, bounds).await
}

/// The native answer: the query's, and the end of the last final minute.
#[derive(Serialize)]
struct Answer {
    #[serde(flatten)]
    result: QueryResult,
    final_until: i64,
}

async fn query<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    st.metrics.received.inc();
    let now = now_s();
    let final_until = finality::final_until(now, st.cfg.final_delay_secs);
    let result = async {
        let tenant = st.tenant(&headers)?;
        let mut p = parse_params(&raw, now, st.cfg.max_points)?;
        let final_only = finality::final_only(raw.get("final_only").map(String::as_str), false)
            .map_err(|e| ApiError::param("final_only", e))?;
        if final_only {
            // Only windows that end by `final_until`: the query's `to` is the end of its last
            // window (at most `from`: no window at all).
            p.to = p.to.min(p.resolution.start(final_until)).max(p.from);
        }
        tokio::time::timeout(
            Duration::from_millis(st.cfg.query_timeout_ms),
            run_query(&st, &tenant, &p),
        )
        .await
        .map_err(|_| ApiError::Timeout)?
    }
    .await;
    st.count_answer(result.as_ref().err().map(ApiError::status));
    let answer = Answer {
        result: result?,
        final_until,
    };
    Ok(([(finality::HEADER, final_until.to_string())], Json(answer)))
}
