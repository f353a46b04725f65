//! The Prometheus-compatible query API under `/prometheus/api/v1/*`, so a Grafana data source or
//! `promtool` reads thermo unchanged (docs/api.md, "Prometheus API").
//!
//! Every endpoint takes GET with URL parameters, POST with a form body, and POST with URL
//! parameters. Answers have Prometheus's shapes: `{"status": "success", "data": ...,
//! "warnings": [...]}` or `{"status": "error", "errorType": ..., "error": ...}`.
//!
//! PromQL is parsed with the `promql-parser` crate and evaluated by [`eval`]; what it does not
//! evaluate is a 400 `bad_data` naming it. Series are read through the same stitched hot/cold path
//! and cache as the native API ([`select`]); the listings (`series`, `labels`, label values,
//! `metadata`) come from the hot store's index, so they name the series written within the hot
//! retention.

pub mod eval;
pub mod histogram;
pub mod select;

use crate::api::AppState;
use crate::error::ApiError;
use crate::finality;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use eval::{Eval, Val};
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use select::{all_matchers, labels_match, sources, NAME};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use thermo_core::aggregate::MetricType;
use thermo_core::query::Stat;
use thermo_core::window::{minute_start, now_s, Resolution};
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// Prometheus's default lookback: an instant vector takes a series' latest sample at most this old.
const LOOKBACK_SECS: i64 = 300;

/// An error as Prometheus reports it.
#[derive(Debug)]
pub struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl PromError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for PromError {
    fn from(e: ApiError) -> Self {
        let kind = match &e {
            ApiError::BadParam { .. } => "bad_data",
            ApiError::Limit { .. } => "execution",
            ApiError::Unauthorized | ApiError::Forbidden(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Timeout => "timeout",
            ApiError::RateLimited { .. }
            | ApiError::Overloaded(_)
            | ApiError::Store(_)
            | ApiError::Startup(_) => "unavailable",
        };
        let status = match &e {
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Limit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            other => other.status(),
        };
        if status.is_server_error() {
            tracing::warn!("prometheus query failed: {e}");
        }
        Self {
            status,
            kind,
            retry_after: e.retry_after(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        crate::error::with_retry_after((self.status, Json(body)).into_response(), self.retry_after)
    }
}

/// A success answer, with `warnings` when there are any.
fn success(data: Value, warnings: Vec<String>) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Json(body).into_response()
}

/// A query's answer, with the end of the last final minute in its header.
fn evaluated(data: Value, warnings: Vec<String>, final_until: i64) -> Response {
    let mut r = success(data, warnings);
    if let Ok(v) = header::HeaderValue::from_str(&final_until.to_string()) {
        r.headers_mut().insert(finality::HEADER, v);
    }
    r
}

/// The end of the last final minute now, and the windows a query reads: those ending by then
/// unless the request says `final_only=false` (`crate::finality`).
fn finality_of<H, K, C>(
    st: &AppState<H, K, C>,
    params: &Params,
) -> Result<(i64, Option<i64>), PromError> {
    let until = finality::final_until(now_s(), st.cfg.final_delay_secs);
    let only = finality::final_only(params.get("final_only"), true)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"final_only\": {e}")))?;
    Ok((until, only.then_some(until)))
}

/// A request's parameters: the URL's, then a form body's (`match[]` may repeat).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, headers: &HeaderMap, body: &[u8]) -> Result<Self, PromError> {
        let parse = |text: &[u8]| {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(text)
                .map_err(|e| PromError::bad_data(format!("invalid parameters: {e}")))
        };
        let mut all = parse(query.unwrap_or_default().as_bytes())?;
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            all.extend(parse(body)?);
        }
        Ok(Self(all))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, PromError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PromError::bad_data(format!("missing parameter {name:?}")))
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time: unix seconds (a float) or RFC 3339.
    fn time(&self, name: &str) -> Result<Option<f64>, PromError> {
        let Some(v) = self.get(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if let Ok(secs) = v.parse::<f64>() {
            if secs.is_finite() {
                return Ok(Some(secs));
            }
        }
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.timestamp_millis() as f64 / 1000.0))
            .map_err(|_| {
                PromError::bad_data(format!(
                    "invalid parameter {name:?}: {v:?} is not a unix time or RFC 3339"
                ))
            })
    }

    /// A duration: seconds (a float) or a Prometheus duration (`15s`, `1m`).
    fn duration(&self, name: &str) -> Result<f64, PromError> {
        let v = self.required(name)?;
        let secs = match v.parse::<f64>() {
            Ok(s) => s,
            Err(_) => promql_parser::util::parse_duration(v)
                .map_err(|e| PromError::bad_data(format!("invalid parameter {name:?}: {e}")))?
                .as_secs_f64(),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(PromError::bad_data(format!(
                "invalid parameter {name:?}: zero or negative query resolution step widths are not accepted"
            )));
        }
        Ok(secs)
    }
}

pub fn router<H: HotStore, K: Catalog, C: ColdStore>(state: Arc<AppState<H, K, C>>) -> Router {
    let both = MethodFilter::GET.or(MethodFilter::POST);
    let at = |path: &str| format!("/prometheus/api/v1/{path}");
    Router::new()
        .route(&at("query"), on(both, instant::<H, K, C>))
        .route(&at("query_range"), on(both, range::<H, K, C>))
        .route(&at("series"), on(both, series::<H, K, C>))
        .route(&at("labels"), on(both, labels::<H, K, C>))
        .route(
            &at("label/{name}/values"),
            on(both, label_values::<H, K, C>),
        )
        .route(&at("metadata"), on(both, metadata::<H, K, C>))
        .route(&at("status/buildinfo"), on(both, buildinfo))
        .route(&at("rules"), on(both, rules))
        .route(&at("alerts"), on(both, alerts))
        .route(&at("query_exemplars"), on(both, exemplars))
        .with_state(state)
}

/// The resolution a step reads: 1m below 5 minutes, 5m below an hour, else 1h.
fn resolution_for(step: f64) -> Resolution {
    if step >= 3600.0 {
        Resolution::OneHour
    } else if step >= 300.0 {
        Resolution::FiveMinutes
    } else {
        Resolution::OneMinute
    }
}

/// The name of what `e` is, for an error.
fn kind(e: &Expr) -> &'static str {
    match e {
        Expr::Aggregate(_) => "aggregation",
        Expr::Unary(_) => "unary expression",
        Expr::Binary(_) => "binary expression",
        Expr::Paren(_) => "parentheses",
        Expr::Subquery(_) => "subquery",
        Expr::NumberLiteral(_) => "number",
        Expr::StringLiteral(_) => "string",
        Expr::VectorSelector(_) => "vector selector",
        Expr::MatrixSelector(_) => "range selector",
        Expr::Call(_) => "function call",
        Expr::Extension(_) => "extension",
    }
}

/// A sample `[time, "value"]`.
fn sample_json(t: f64, v: f64) -> Value {
    json!([time_json(t), format_value(v)])
}

/// A time: a whole number of seconds when it is one (as Prometheus writes it).
fn time_json(t: f64) -> Value {
    if t.fract() == 0.0 && t.abs() < 9.0e15 {
        json!(t as i64)
    } else {
        json!(t)
    }
}

/// A value as Prometheus writes it.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The lookback of an instant vector at `step`: Prometheus's 5 minutes, or one window.
fn lookback_for(step: f64) -> i64 {
    LOOKBACK_SECS.max(resolution_for(step).seconds())
}

/// Parses `query` with promql-parser.
fn parse_query(params: &Params) -> Result<Expr, PromError> {
    let q = params.required("query")?;
    promql_parser::parser::parse(q).map_err(|e| PromError::bad_data(format!("invalid query: {e}")))
}

/// Runs `f` within the query timeout, counting the request like the native API.
async fn timed<H: HotStore, K: Catalog, C: ColdStore, F>(
    st: &AppState<H, K, C>,
    f: F,
) -> Result<Response, PromError>
where
    F: std::future::Future<Output = Result<Response, PromError>>,
{
    st.metrics.received.inc();
    let r = tokio::time::timeout(Duration::from_millis(st.cfg.query_timeout_ms), f)
        .await
        .unwrap_or_else(|_| Err(PromError::from(ApiError::Timeout)));
    st.count_answer(r.as_ref().err().map(|e| e.status));
    r
}

async fn instant<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    timed(&st, async {
        let tenant = st.tenant(&headers)?;
        let params = Params::new(query, &headers, &body)?;
        let expr = parse_query(&params)?;
        let t = params.time("time")?.unwrap_or(now_s() as f64);
        let (until, only) = finality_of(&st, &params)?;
        // An instant query reads 1m windows, looking back LOOKBACK_SECS.
        let answer = Eval::run(&st, &tenant, &expr, (vec![t], 60.0), only).await?;
        let data = match answer.value {
            Val::Scalar(v) => json!({"resultType": "scalar", "result": sample_json(t, v[0])}),
            Val::Vector(rows) => {
                let floats = rows.into_iter().filter_map(|r| {
                    r.values[0].map(|v| json!({"metric": r.labels, "value": sample_json(t, v)}))
                });
                let histograms = answer.histograms.into_iter().filter_map(|r| {
                    let h = r.values[0].as_ref()?.native_json()?;
                    Some(json!({"metric": r.labels, "histogram": [time_json(t), h]}))
                });
                let result: Vec<Value> = floats.chain(histograms).collect();
                json!({"resultType": "vector", "result": result})
            }
        };
        Ok(evaluated(data, answer.warnings, until))
    })
    .await
}

async fn range<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    timed(&st, async {
        let tenant = st.tenant(&headers)?;
        let params = Params::new(query, &headers, &body)?;
        let expr = parse_query(&params)?;
        let start = params
            .time("start")?
            .ok_or_else(|| PromError::bad_data("missing parameter \"start\""))?;
        let end = params
            .time("end")?
            .ok_or_else(|| PromError::bad_data("missing parameter \"end\""))?;
        let step = params.duration("step")?;
        if end < start {
            return Err(PromError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        let points = ((end - start) / step).floor() as i64 + 1;
        if points > st.cfg.max_points {
            return Err(PromError::bad_data(format!(
                "exceeded maximum resolution of {} points per timeseries (max_points); try decreasing the query resolution (?step=XX)",
                st.cfg.max_points
            )));
        }
        let times: Vec<f64> = (0..points).map(|i| start + i as f64 * step).collect();
        let (until, only) = finality_of(&st, &params)?;
        let grid = (times.clone(), step);
        let answer = Eval::run(&st, &tenant, &expr, grid, only).await?;
        let rows = match answer.value {
            Val::Scalar(v) => vec![eval::Row {
                labels: BTreeMap::new(),
                values: v.into_iter().map(Some).collect(),
            }],
            Val::Vector(rows) => rows,
        };
        let floats = rows.into_iter().filter_map(|r| {
            let values: Vec<Value> = times
                .iter()
                .zip(&r.values)
                .filter_map(|(&t, v)| v.map(|v| sample_json(t, v)))
                .collect();
            (!values.is_empty()).then(|| json!({"metric": r.labels, "values": values}))
        });
        let histograms = answer.histograms.into_iter().filter_map(|r| {
            let values: Vec<Value> = times
                .iter()
                .zip(&r.values)
                .filter_map(|(&t, v)| Some(json!([time_json(t), v.as_ref()?.native_json()?])))
                .collect();
            (!values.is_empty()).then(|| json!({"metric": r.labels, "histograms": values}))
        });
        let result: Vec<Value> = floats.chain(histograms).collect();
        Ok(evaluated(
            json!({"resultType": "matrix", "result": result}),
            answer.warnings,
            until,
        ))
    })
    .await
}

/// Every series the hot store indexes for `tenant` (written within the hot retention), as
/// Prometheus label sets.
async fn indexed_series<H: HotStore, K: Catalog, C: ColdStore>(
    st: &AppState<H, K, C>,
    tenant: &str,
) -> Result<Vec<BTreeMap<String, String>>, PromError> {
    let since = minute_start(now_s() - st.cfg.hot_retention_hours * 3600);
    let metrics = st.hot.metrics(tenant).await.map_err(ApiError::from)?;
    let mut out = Vec::new();
    for s in sources(&metrics) {
        for key in st
            .hot
            .series(tenant, &s.thermo, since)
            .await
            .map_err(ApiError::from)?
        {
            let mut labels: BTreeMap<String, String> = key.tags().iter().cloned().collect();
            labels.insert(NAME.to_string(), s.prom.clone());
            out.push(labels);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The `match[]` selectors of a request, each as its matchers (none: every series).
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, PromError> {
    params
        .all("match[]")
        .into_iter()
        .map(|m| match promql_parser::parser::parse(m) {
            Ok(Expr::VectorSelector(vs)) => Ok(all_matchers(&vs)),
            Ok(other) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {m:?} is a {}, not a series selector",
                kind(&other)
            ))),
            Err(e) => Err(PromError::bad_data(format!(
                "invalid parameter \"match[]\": {e}"
            ))),
        })
        .collect()
}

/// The indexed series that match any of the request's `match[]` selectors (all without one).
async fn matched_series<H: HotStore, K: Catalog, C: ColdStore>(
    st: &AppState<H, K, C>,
    headers: &HeaderMap,
    params: &Params,
    required: bool,
) -> Result<Vec<BTreeMap<String, String>>, PromError> {
    let tenant = st.tenant(headers)?;
    let sel = selectors(params)?;
    if required && sel.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let all = indexed_series(st, &tenant).await?;
    Ok(all
        .into_iter()
        .filter(|l| sel.is_empty() || sel.iter().any(|m| labels_match(l, m)))
        .collect())
}

async fn series<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(query, &headers, &body)?;
    let found = matched_series(&st, &headers, &params, true).await?;
    Ok(success(json!(found), Vec::new()))
}

async fn labels<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(query, &headers, &body)?;
    let found = matched_series(&st, &headers, &params, false).await?;
    let names: BTreeSet<&String> = found.iter().flat_map(BTreeMap::keys).collect();
    Ok(success(json!(names), Vec::new()))
}

async fn label_values<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(query, &headers, &body)?;
    let found = matched_series(&st, &headers, &params, false).await?;
    let values: BTreeSet<&String> = found.iter().filter_map(|l| l.get(&name)).collect();
    Ok(success(json!(values), Vec::new()))
}

async fn metadata<H: HotStore, K: Catalog, C: ColdStore>(
    State(st): State<Arc<AppState<H, K, C>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(query, &headers, &body)?;
    let tenant = st.tenant(&headers)?;
    let metrics = st.hot.metrics(&tenant).await.map_err(ApiError::from)?;
    let wanted = params.get("metric").filter(|m| !m.is_empty());
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in sources(&metrics) {
        if wanted.is_some_and(|w| w != s.prom) {
            continue;
        }
        // Counters and a histogram's count and sum are per-window increments: `rate` and
        // `increase` apply to them, as to Prometheus counters.
        let (kind, help) = match (s.metric_type, s.stat) {
            (MetricType::Counter, _) => ("counter", "a counter: the sum of each window"),
            (MetricType::Gauge, _) => ("gauge", "a gauge: the last value of each window"),
            (MetricType::Set, _) => ("gauge", "a set: the distinct values of each window"),
            (_, Stat::Count) => ("counter", "a histogram: the values of each window"),
            _ => (
                "counter",
                "a histogram: the sum of the values of each window",
            ),
        };
        out.entry(s.prom.clone()).or_default().push(json!({
            "type": kind,
            "help": format!("{help}; thermo metric {:?} ({})", s.thermo, s.metric_type.as_str()),
            "unit": "",
        }));
    }
    Ok(success(json!(out), Vec::new()))
}

async fn buildinfo() -> Response {
    success(
        json!({
            "version": "2.42.0",
            "revision": concat!("thermo-", env!("CARGO_PKG_VERSION")),
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        }),
        Vec::new(),
    )
}

async fn rules() -> Response {
    success(json!({"groups": []}), Vec::new())
}

async fn alerts() -> Response {
    success(json!({"alerts": []}), Vec::new())
}

async fn exemplars() -> Response {
    success(json!([]), Vec::new())
}

#[cfg(test)]
mod tests;
