//! `GET /api/v1/tenants/{tenant}/usage`: how many series a tenant has written within the hot
//! retention (its active series, as the aggregators' index in the hot store counts them), and its
//! metrics with the most series (`top`, default 10, at most 1,000).
//!
//! A key reads only its own tenant's usage (403 for another's); without keys, only `default`'s.

use crate::api::AppState;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use thermo_core::window::{minute_start, now_s};
use thermo_store::hot::HotStore;

const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1_000;

fn top_param(raw: &HashMap<String, String>) -> Result<usize, ApiError> {
    if let Some(unknown) = raw.keys().find(|k| k.as_str() != "top") {
        return Err(ApiError::param(
            unknown.clone(),
            "unknown parameter; expected top",
        ));
    }
    match raw.get("top") {
        None => Ok(DEFAULT_TOP),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| ApiError::param("top", format!("must be 1 to {MAX_TOP}"))),
    }
}

pub async fn usage<H: HotStore, K, C>(
    State(st): State<Arc<AppState<H, K, C>>>,
    Path(asked): Path<String>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let own = st.tenant(&headers)?;
    if own != asked {
        return Err(ApiError::Forbidden(format!(
            "this key reads tenant {own:?}, not {asked:?}"
        )));
    }
    let top = top_param(&raw)?;
    let since = minute_start(now_s() - st.cfg.hot_retention_hours * 3600);
    let mut counts = st.hot.series_counts(&own, since).await?;
    let active: u64 = counts.iter().map(|(_, n)| n).sum();
    let metrics = counts.len();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(top);
    let top: Vec<Value> = counts
        .into_iter()
        .map(|(name, series)| json!({"name": name, "series": series}))
        .collect();
    Ok(Json(json!({
        "tenant": own,
        "active_series": active,
        "since": since,
        "metrics": metrics,
        "top": top,
    })))
}

#[cfg(test)]
mod tests {
    use crate::api::{router, AppState, ColdSide};
    use crate::ReadConfig;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::codec::HotCell;
    use thermo_core::key::MetricKey;
    use thermo_core::window::{minute_start, now_s};
    use thermo_runtime::telemetry::SelfMetrics;
    use thermo_store::cold::LocalDirCold;
    use thermo_store::mem_catalog::MemCatalog;
    use thermo_store::mem_hot::MemHot;
    use tower::ServiceExt;

    /// The active series of a tenant and its top metrics, exact; an old series and another
    /// tenant's are not counted; another tenant's key is refused.
    #[tokio::test]
    async fn usage_counts_active_series_and_names_the_top_metrics() {
        let now = minute_start(now_s());
        let hot = MemHot::new();
        let cell = || HotCell {
            contributors: vec![(1, 1)],
            agg: Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1,
            }),
        };
        let put = |tenant: &str, name: &str, host: usize, minute: i64| {
            let key =
                MetricKey::new(tenant, name, vec![("host".into(), format!("h{host}"))]).unwrap();
            hot.insert(key, minute, cell());
        };
        for h in 0..3 {
            put("acme", "req", h, now - 60);
        }
        put("acme", "lat", 0, now - 120);
        put("acme", "err", 0, now - 60);
        put("acme", "err", 1, now - 600);
        // Older than the hot retention (2 h here): not active.
        put("acme", "old", 0, now - 3 * 3600);
        put("other", "req", 9, now - 60);
        let cfg = ReadConfig {
            hot_retention_hours: 2,
            api_keys: [
                ("k-acme".into(), "acme".into()),
                ("k-other".into(), "other".into()),
            ]
            .into(),
            ..ReadConfig::default()
        };
        let app = router(AppState::new(
            cfg,
            hot,
            None::<ColdSide<MemCatalog, LocalDirCold>>,
            SelfMetrics::new("read_service", "queries"),
        ));
        let get = |uri: &str, key: &str| {
            let req = Request::get(uri)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                )
            }
        };
        let (s, body) = get("/api/v1/tenants/acme/usage?top=2", "k-acme").await;
        assert_eq!(s, 200, "{body}");
        let since = body["since"].as_i64().unwrap();
        assert!(
            (now - 7200 - 60..=now - 7200 + 60).contains(&since),
            "{body}"
        );
        assert_eq!(
            (&body["tenant"], &body["active_series"], &body["metrics"]),
            (
                &serde_json::json!("acme"),
                &serde_json::json!(6),
                &serde_json::json!(3)
            )
        );
        assert_eq!(
            body["top"],
            serde_json::json!([{"name": "req", "series": 3}, {"name": "err", "series": 2}])
        );
        let (s, body) = get("/api/v1/tenants/acme/usage", "k-other").await;
        assert_eq!(s, 403, "{body}");
        let (s, body) = get("/api/v1/tenants/acme/usage?top=0", "k-acme").await;
        assert_eq!((s, body["param"].as_str()), (400, Some("top")), "{body}");
        let (s, _) = get("/api/v1/tenants/acme/usage", "nope").await;
        assert_eq!(s, 401);
    }
}
