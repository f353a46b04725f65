//! Router tests of the Prometheus API: every endpoint in its three request forms, on a known data
//! set in the embedded hot store.

use super::*;
use crate::api::{router as app, ColdSide};
use crate::ReadConfig;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use thermo_core::aggregate::{Aggregate, Counter, DistinctSet, Gauge, Hist};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::cold::LocalDirCold;
use thermo_store::mem_catalog::MemCatalog;
use thermo_store::mem_hot::MemHot;
use tower::ServiceExt;

/// How a request carries its parameters.
#[derive(Debug, Clone, Copy)]
enum Carried {
    Get,
    PostBody,
    PostUrl,
}

const FORMS: [Carried; 3] = [Carried::Get, Carried::PostBody, Carried::PostUrl];

struct Fixture {
    router: Router,
    /// The first minute of the data.
    base: i64,
}

fn cell(agg: Aggregate) -> HotCell {
    HotCell {
        contributors: vec![(1, 1)],
        agg,
    }
}

fn key(name: &str, tags: &[(&str, &str)]) -> MetricKey {
    let tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    MetricKey::new("default", name, tags).unwrap()
}

impl Fixture {
    /// Counters `http.requests` of hosts a (1, 2, 3) and b (10, 20, 30) over three minutes, a
    /// gauge `mem` (5.5, then last 4 with min 1 and max 9), a histogram `lat` (values 1, 2, 3)
    /// and a set `users` (2 members), each of host a. Samples are stamped with their minute's end.
    fn new() -> Self {
        let cfg = ReadConfig {
            hot_retention_hours: 48,
            ..ReadConfig::default()
        };
        Self::with(cfg, |_, _| ())
    }

    /// [`Self::new`] with `cfg`, and `more` written to the hot store too.
    fn with(cfg: ReadConfig, more: impl FnOnce(&MemHot, i64)) -> Self {
        let base = minute_start(now_s()) - 3600;
        let hot = MemHot::new();
        let a = key("http.requests", &[("host", "a"), ("route", "/x")]);
        let b = key("http.requests", &[("host", "b"), ("route", "/y")]);
        for (i, m) in [base, base + 60, base + 120].into_iter().enumerate() {
            let n = (i + 1) as f64;
            let c = |sum| cell(Aggregate::Counter(Counter { sum, samples: 1 }));
            hot.insert(a.clone(), m, c(n));
            hot.insert(b.clone(), m, c(10.0 * n));
        }
        let mem = key("mem", &[("host", "a")]);
        hot.insert(
            mem.clone(),
            base,
            cell(Aggregate::Gauge(Gauge::new(5.5, base * 1000))),
        );
        let swings = Gauge {
            last: 4.0,
            last_ms: (base + 70) * 1000,
            min: 1.0,
            max: 9.0,
        };
        hot.insert(mem, base + 60, cell(Aggregate::Gauge(swings)));
        let mut h = Hist::new();
        for v in [1.0, 2.0, 3.0] {
            h.record(v, 1);
        }
        hot.insert(
            key("lat", &[("host", "a")]),
            base,
            cell(Aggregate::Histogram(h)),
        );
        let mut s = DistinctSet::default();
        s.insert("alice");
        s.insert("bob");
        hot.insert(
            key("users", &[("host", "a")]),
            base,
            cell(Aggregate::Set(s)),
        );
        more(&hot, base);
        let state = AppState::new(
            cfg,
            hot,
            None::<ColdSide<MemCatalog, LocalDirCold>>,
            SelfMetrics::new("read_service", "queries"),
        );
        Self {
            router: app(state),
            base,
        }
    }

    async fn call(
        &self,
        form: Carried,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let encoded = serde_urlencoded::to_string(params).unwrap();
        let req = match form {
            Carried::Get => {
                Request::get(format!("/prometheus/api/v1/{path}?{encoded}")).body(Body::empty())
            }
            Carried::PostBody => Request::post(format!("/prometheus/api/v1/{path}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(encoded)),
            Carried::PostUrl => {
                Request::post(format!("/prometheus/api/v1/{path}?{encoded}")).body(Body::empty())
            }
        };
        let resp = self.router.clone().oneshot(req.unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The `data` of a successful answer, the same in every request form.
    async fn data(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut first: Option<Value> = None;
        for form in FORMS {
            let (status, body) = self.call(form, path, params).await;
            assert_eq!(status, StatusCode::OK, "{form:?} {path} {params:?}: {body}");
            assert_eq!(body["status"], "success", "{body}");
            match &first {
                None => first = Some(body["data"].clone()),
                Some(f) => assert_eq!(&body["data"], f, "{form:?} answers differently"),
            }
        }
        first.unwrap()
    }

    /// The instant vector of `query` at `t` as (labels, value) pairs.
    async fn instant(&self, query: &str, t: i64) -> Vec<(Value, String)> {
        let t = t.to_string();
        let data = self.data("query", &[("query", query), ("time", &t)]).await;
        assert_eq!(data["resultType"], "vector", "{data}");
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["value"][0], json!(t.parse::<i64>().unwrap()));
                (
                    s["metric"].clone(),
                    s["value"][1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    json!(pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>())
}

#[tokio::test]
async fn instant_selectors_with_every_matcher_and_offset() {
    let f = Fixture::new();
    let t = f.base + 180; // the third minute has ended: it is the latest sample
    let a = labels(&[
        ("__name__", "http_requests"),
        ("host", "a"),
        ("route", "/x"),
    ]);
    let b = labels(&[
        ("__name__", "http_requests"),
        ("host", "b"),
        ("route", "/y"),
    ]);
    assert_eq!(
        f.instant("http_requests{host=\"a\"}", t).await,
        [(a.clone(), "3".to_string())]
    );
    assert_eq!(
        f.instant("http_requests", t).await,
        [(a.clone(), "3".into()), (b.clone(), "30".into())]
    );
    // The third minute is not over 30 s into it: the second one answers.
    assert_eq!(
        f.instant("http_requests{host=\"a\"}", t - 30).await,
        [(a.clone(), "2".into())]
    );
    assert_eq!(
        f.instant("http_requests{host!=\"a\"}", t).await,
        [(b.clone(), "30".into())]
    );
    assert_eq!(
        f.instant("http_requests{route=~\"/x|/z\"}", t).await,
        [(a.clone(), "3".into())]
    );
    assert_eq!(
        f.instant("{__name__=~\"http_req.*\", host!~\"a\"}", t)
            .await,
        [(b.clone(), "30".into())]
    );
    assert_eq!(
        f.instant("(http_requests{host=\"b\"} offset 1m)", t).await,
        [(b.clone(), "20".into())]
    );
    // Each type's value per window.
    let one = |n: &str| labels(&[("__name__", n), ("host", "a")]);
    let t0 = f.base + 60;
    assert_eq!(f.instant("mem", t0).await, [(one("mem"), "5.5".into())]);
    assert_eq!(f.instant("mem", t0 + 60).await, [(one("mem"), "4".into())]);
    assert_eq!(
        f.instant("lat_count", t0).await,
        [(one("lat_count"), "3".into())]
    );
    assert_eq!(
        f.instant("lat_sum", t0).await,
        [(one("lat_sum"), "6".into())]
    );
    assert_eq!(f.instant("users", t0).await, [(one("users"), "2".into())]);
    // Lookback: 5 minutes after its last sample a series is gone; before its first, absent.
    assert_eq!(f.instant("lat_count", t0 + 299).await.len(), 1);
    assert_eq!(f.instant("lat_count", t0 + 300).await, []);
    assert_eq!(f.instant("lat_count", t0 - 1).await, []);
    assert_eq!(f.instant("nothing_here", t).await, []);
}

/// Every function, aggregation and operator, at one time, against values worked out by hand from
/// the fixture (minute sums a: 1, 2, 3; b: 10, 20, 30).
#[tokio::test]
async fn functions_aggregations_and_operators() {
    let f = Fixture::new();
    let t = f.base + 180;
    let a = labels(&[("host", "a"), ("route", "/x")]);
    let b = labels(&[("host", "b"), ("route", "/y")]);
    let named = |l: &Value| {
        let mut l = l.clone();
        l["__name__"] = json!("http_requests");
        l
    };
    let v = |x: f64| format!("{x}");
    let both = |x: f64, y: f64| vec![(a.clone(), v(x)), (b.clone(), v(y))];
    let cases: Vec<(&str, Vec<(Value, String)>)> = vec![
        ("increase(http_requests[3m])", both(6.0, 60.0)),
        ("increase(http_requests[2m])", both(5.0, 50.0)),
        ("rate(http_requests[3m])", both(6.0 / 180.0, 60.0 / 180.0)),
        ("sum_over_time(http_requests[3m])", both(6.0, 60.0)),
        ("avg_over_time(http_requests[3m])", both(2.0, 20.0)),
        ("min_over_time(http_requests[3m])", both(1.0, 10.0)),
        ("max_over_time(http_requests[3m])", both(3.0, 30.0)),
        ("count_over_time(http_requests[3m])", both(3.0, 3.0)),
        (
            "last_over_time(http_requests[3m])",
            vec![(named(&a), v(3.0)), (named(&b), v(30.0))],
        ),
        ("increase(http_requests[3m] offset 1m)", both(3.0, 30.0)),
        ("sum(http_requests)", vec![(json!({}), v(33.0))]),
        (
            "sum by (host) (http_requests)",
            vec![
                (labels(&[("host", "a")]), v(3.0)),
                (labels(&[("host", "b")]), v(30.0)),
            ],
        ),
        (
            "sum without (route) (http_requests)",
            vec![
                (labels(&[("host", "a")]), v(3.0)),
                (labels(&[("host", "b")]), v(30.0)),
            ],
        ),
        ("avg(http_requests)", vec![(json!({}), v(16.5))]),
        ("min(http_requests)", vec![(json!({}), v(3.0))]),
        ("max(http_requests)", vec![(json!({}), v(30.0))]),
        ("count(http_requests)", vec![(json!({}), v(2.0))]),
        ("topk(1, http_requests)", vec![(named(&b), v(30.0))]),
        ("bottomk(1, http_requests)", vec![(named(&a), v(3.0))]),
        ("http_requests * 2", both(6.0, 60.0)),
        ("2 * http_requests - 1", both(5.0, 59.0)),
        ("http_requests > 10", vec![(named(&b), v(30.0))]),
        ("10 < http_requests", vec![(named(&b), v(30.0))]),
        ("http_requests > bool 10", both(0.0, 1.0)),
        (
            "http_requests / ignoring(route) http_requests",
            vec![
                (labels(&[("host", "a")]), v(1.0)),
                (labels(&[("host", "b")]), v(1.0)),
            ],
        ),
        (
            "http_requests + on(host) lat_count",
            vec![(labels(&[("host", "a")]), v(6.0))],
        ),
        ("abs(-http_requests)", both(3.0, 30.0)),
        ("clamp_max(http_requests, 10)", both(3.0, 10.0)),
        ("clamp_min(http_requests, 10)", both(10.0, 30.0)),
        ("round(rate(http_requests[3m]) * 1000)", both(33.0, 333.0)),
        (
            "round(rate(http_requests[3m]) * 1000, 10)",
            both(30.0, 330.0),
        ),
        ("vector(5)", vec![(json!({}), v(5.0))]),
        ("vector(time())", vec![(json!({}), v(t as f64))]),
        (
            "absent(nothing{host=\"z\"})",
            vec![(labels(&[("host", "z")]), v(1.0))],
        ),
        ("absent(http_requests)", vec![]),
    ];
    for (query, want) in cases {
        assert_eq!(f.instant(query, t).await, want, "{query}");
    }
    // A gauge's min and max over time use the stored min and max of each minute.
    let mem = |x: f64| vec![(labels(&[("host", "a")]), v(x))];
    let t2 = f.base + 120;
    assert_eq!(f.instant("max_over_time(mem[5m])", t2).await, mem(9.0));
    assert_eq!(f.instant("min_over_time(mem[5m])", t2).await, mem(1.0));
    assert_eq!(f.instant("avg_over_time(mem[5m])", t2).await, mem(4.75));
    let tq = t.to_string();
    for (query, want) in [
        ("2 * 3 + 1", "7"),
        ("1 < bool 2", "1"),
        ("scalar(http_requests{host=\"b\"})", "30"),
        ("scalar(http_requests)", "NaN"),
        ("time()", tq.as_str()),
    ] {
        let data = f.data("query", &[("query", query), ("time", &tq)]).await;
        assert_eq!(data["resultType"], "scalar", "{query}");
        assert_eq!(data["result"][1], want, "{query}");
    }
    // Over a range: each step's window.
    let (start, end) = ((f.base + 120).to_string(), t.to_string());
    let data = f
        .data(
            "query_range",
            &[
                ("query", "rate(http_requests{host=\"a\"}[2m])"),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )
        .await;
    assert_eq!(
        data["result"],
        json!([{"metric": a, "values": [[f.base + 120, v(3.0 / 120.0)], [t, v(5.0 / 120.0)]]}])
    );
}

#[tokio::test]
async fn range_queries_and_scalars() {
    let f = Fixture::new();
    let (start, end) = ((f.base + 60).to_string(), (f.base + 180).to_string());
    let data = f
        .data(
            "query_range",
            &[
                ("query", "http_requests{host=\"a\"}"),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )
        .await;
    assert_eq!(data["resultType"], "matrix");
    let b = f.base;
    assert_eq!(
        data["result"],
        json!([{
            "metric": labels(&[("__name__", "http_requests"), ("host", "a"), ("route", "/x")]),
            "values": [[b + 60, "1"], [b + 120, "2"], [b + 180, "3"]],
        }])
    );
    // RFC 3339 times and a duration step give the same answer.
    let rfc = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339();
    let again = f
        .data(
            "query_range",
            &[
                ("query", "http_requests{host=\"a\"}"),
                ("start", &rfc(f.base + 60)),
                ("end", &rfc(f.base + 180)),
                ("step", "1m"),
            ],
        )
        .await;
    assert_eq!(again, data);
    let scalar = f.data("query", &[("query", "42"), ("time", &start)]).await;
    assert_eq!(
        scalar,
        json!({"resultType": "scalar", "result": [b + 60, "42"]})
    );
    // Grafana's "Save & test" asks for a constant expression.
    let two = f.data("query", &[("query", "1+1"), ("time", &start)]).await;
    assert_eq!(
        two,
        json!({"resultType": "scalar", "result": [b + 60, "2"]})
    );
}

#[tokio::test]
async fn errors_have_prometheus_shapes() {
    let f = Fixture::new();
    for form in FORMS {
        for (params, says) in [
            (
                vec![("query", "stddev(http_requests)")],
                "the aggregation stddev",
            ),
            (
                vec![("query", "histogram_quantile(0.9, -lat)")],
                "as a histogram",
            ),
            (
                vec![("query", "histogram_fraction(0, lat, lat)")],
                "expected type scalar",
            ),
            (
                vec![("query", "histogram_stddev(lat)")],
                "the function histogram_stddev()",
            ),
            (vec![("query", "http_requests and mem")], "the operator and"),
            (vec![("query", "http_requests[5m]")], "range vector"),
            (vec![("query", "http_requests{")], "invalid query"),
            (vec![("time", "1")], "missing parameter \"query\""),
            (vec![("query", "up"), ("time", "yesterday")], "\"time\""),
            (vec![("query", "{host=~\".*\"}")], "non-empty matcher"),
        ] {
            let (status, body) = f.call(form, "query", &params).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {body}");
            assert_eq!(body["status"], "error");
            assert_eq!(body["errorType"], "bad_data");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(says), "{params:?}: {error}");
        }
        let (status, body) = f
            .call(
                form,
                "query_range",
                &[
                    ("query", "up"),
                    ("start", "10"),
                    ("end", "5"),
                    ("step", "1"),
                ],
            )
            .await;
        assert_eq!(
            (status, body["errorType"].clone()),
            (StatusCode::BAD_REQUEST, json!("bad_data"))
        );
    }
}

#[tokio::test]
async fn listings_series_labels_values_metadata() {
    let f = Fixture::new();
    let series = f.data("series", &[("match[]", "http_requests")]).await;
    assert_eq!(
        series,
        json!([
            labels(&[
                ("__name__", "http_requests"),
                ("host", "a"),
                ("route", "/x")
            ]),
            labels(&[
                ("__name__", "http_requests"),
                ("host", "b"),
                ("route", "/y")
            ]),
        ])
    );
    let two = f
        .data("series", &[("match[]", "mem"), ("match[]", "users")])
        .await;
    assert_eq!(
        two,
        json!([
            labels(&[("__name__", "mem"), ("host", "a")]),
            labels(&[("__name__", "users"), ("host", "a")]),
        ])
    );
    assert_eq!(
        f.data("labels", &[]).await,
        json!(["__name__", "host", "route"])
    );
    assert_eq!(
        f.data("labels", &[("match[]", "mem")]).await,
        json!(["__name__", "host"])
    );
    assert_eq!(
        f.data("label/__name__/values", &[]).await,
        json!(["http_requests", "lat_count", "lat_sum", "mem", "users"])
    );
    assert_eq!(
        f.data("label/route/values", &[("match[]", "{host=\"b\"}")])
            .await,
        json!(["/y"])
    );
    let meta = f.data("metadata", &[]).await;
    assert_eq!(meta["http_requests"][0]["type"], "counter");
    assert_eq!(meta["mem"][0]["type"], "gauge");
    assert_eq!(meta["lat_count"][0]["type"], "counter");
    assert_eq!(
        f.data("metadata", &[("metric", "users")]).await["users"][0]["type"],
        "gauge"
    );
    assert_eq!(f.data("status/buildinfo", &[]).await["version"], "2.42.0");
    assert_eq!(f.data("rules", &[]).await, json!({"groups": []}));
    assert_eq!(f.data("alerts", &[]).await, json!({"alerts": []}));
    assert_eq!(
        f.data("query_exemplars", &[("query", "mem")]).await,
        json!([])
    );
    // series needs a selector.
    let (status, body) = f.call(Carried::Get, "series", &[]).await;
    assert_eq!(
        (status, body["errorType"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_data"))
    );
}

#[tokio::test]
async fn two_names_for_one_prometheus_name_are_both_answered_with_a_warning() {
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            ..ReadConfig::default()
        },
        |hot, base| {
            let c = cell(Aggregate::Counter(Counter {
                sum: 7.0,
                samples: 1,
            }));
            hot.insert(key("http_requests", &[("host", "c")]), base, c);
        },
    );
    let t = (f.base + 60).to_string();
    for form in FORMS {
        let (status, body) = f
            .call(form, "query", &[("query", "http_requests"), ("time", &t)])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hosts: Vec<&str> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metric"]["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["a", "b", "c"], "{body}");
        assert_eq!(
            body["warnings"],
            json!(["http_requests answers thermo metrics http.requests, http_requests (their names map to one Prometheus name)"])
        );
    }
}

#[tokio::test]
async fn max_series_is_an_execution_error() {
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            max_series: 1,
            ..ReadConfig::default()
        },
        |_, _| (),
    );
    let t = (f.base + 180).to_string();
    for form in FORMS {
        let (status, body) = f
            .call(form, "query", &[("query", "http_requests"), ("time", &t)])
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errorType"], "execution", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("max_series"),
            "{body}"
        );
        // One series is within the bound.
        let (status, _) = f
            .call(
                form,
                "query",
                &[("query", "http_requests{host=\"a\"}"), ("time", &t)],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}

use thermo_store::cold_format::ColdRow;

/// A router with cold storage on: `rows` in the 1m object of `hour` (marked cold in the catalog),
/// `hot` cells in the hot store; and the cold directory, to remove.
async fn with_cold(
    tag: &str,
    hour: i64,
    rows: Vec<ColdRow>,
    hot_cells: &[(MetricKey, i64, HotCell)],
) -> (Fixture, std::path::PathBuf) {
    use thermo_store::catalog::{object_key, Catalog};
    use thermo_store::cold::ColdStore;
    use thermo_store::cold_format::encode;
    let dir = std::env::temp_dir().join(format!("thermo-prom-cold-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalDirCold::new(&dir);
    let cfg = ReadConfig {
        hot_retention_hours: 48,
        cold_enabled: true,
        ..ReadConfig::default()
    };
    let object = object_key(&cfg.cold_prefix, "default", Resolution::OneMinute, hour);
    store
        .put(&object, encode(Resolution::OneMinute, rows).unwrap())
        .await
        .unwrap();
    let hot = Arc::new(MemHot::new());
    let catalog = MemCatalog::new(hot.clone());
    catalog
        .mark_cold(Resolution::OneMinute, hour)
        .await
        .unwrap();
    for (k, at, cell) in hot_cells {
        hot.insert(k.clone(), *at, cell.clone());
    }
    let metrics = SelfMetrics::new("read_service", "queries");
    let cold = crate::cold_side(&cfg, catalog, store, &metrics);
    let f = Fixture {
        router: app(AppState::new(cfg, hot, Some(cold), metrics)),
        base: hour,
    };
    (f, dir)
}

/// An hour in a cold object and the next in the hot store, with one minute in both (rolled up,
/// not trimmed yet): every minute counted once, through the same stitching as the native API.
#[tokio::test]
async fn hot_and_cold_minutes_are_each_counted_once() {
    let hour = (now_s() / 3600 - 3) * 3600;
    let a = key("http.requests", &[("host", "a")]);
    let counter = |sum: f64, seq: u64| HotCell {
        contributors: vec![(7, seq)],
        agg: Aggregate::Counter(Counter { sum, samples: 1 }),
    };
    let rows: Vec<ColdRow> = (0..3)
        .map(|m| ColdRow {
            series: a.clone(),
            window_start: hour + 60 * m,
            cell: counter((m + 1) as f64, m as u64),
        })
        .collect();
    let hot = [
        (a.clone(), hour + 120, counter(3.0, 2)), // also in the object
        (a.clone(), hour + 3600, counter(10.0, 10)),
        (a.clone(), hour + 3660, counter(20.0, 11)),
    ];
    let (f, dir) = with_cold("counters", hour, rows, &hot).await;
    let t = hour + 3720;
    assert_eq!(
        f.instant("increase(http_requests[2h])", t).await,
        [(labels(&[("host", "a")]), "36".to_string())]
    );
    let (start, end) = ((hour + 60).to_string(), t.to_string());
    let data = f
        .data(
            "query_range",
            &[
                ("query", "http_requests"),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )
        .await;
    let values: Vec<(i64, String)> = data["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_str().unwrap().to_string()))
        .collect();
    // Each minute at its end; a minute stays the latest sample for the 5-minute lookback.
    let want: Vec<(i64, String)> = (1..=62)
        .filter_map(|i| {
            let at = hour + 60 * i;
            let v = match i {
                1 => "1",
                2 => "2",
                3..=7 => "3",
                61 => "10",
                62 => "20",
                _ => return None,
            };
            Some((at, v.to_string()))
        })
        .collect();
    assert_eq!(values, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Windows that end after the last final minute are left out unless `final_only=false`, and both
/// APIs name that minute's end (the header; the native API's `final_until` too).
#[tokio::test]
async fn only_final_minutes_are_answered_and_the_line_is_named() {
    // A minute is final an hour less two minutes after its end: of the three minutes, the
    // first only (or two, if a minute passes while the test runs).
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            final_delay_secs: 3600 - 120,
            ..ReadConfig::default()
        },
        |_, _| (),
    );
    let get = |uri: String| async {
        let resp = f
            .router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let until: i64 = resp.headers()[finality::HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (until, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let t = f.base + 180;
    let q = |extra: &str| {
        format!("/prometheus/api/v1/query?query=http_requests%7Bhost%3D%22a%22%7D&time={t}{extra}")
    };
    let (until, body) = get(q("")).await;
    assert!(
        until == f.base + 60 || until == f.base + 120,
        "{until} against {}",
        f.base
    );
    // Host a's minutes sum 1, 2, 3; the latest final one ends at `until`.
    let final_minutes = (until - f.base) / 60;
    assert_eq!(
        body["data"]["result"][0]["value"][1],
        json!(final_minutes.to_string()),
        "{body}"
    );
    let (_, body) = get(q("&final_only=false")).await;
    assert_eq!(body["data"]["result"][0]["value"][1], "3", "{body}");
    // A range: each time sees the latest final window (within the lookback), never the others.
    let r = format!(
        "/prometheus/api/v1/query_range?query=http_requests%7Bhost%3D%22a%22%7D&start={}&end={t}&step=60",
        f.base + 60
    );
    let (until, body) = get(r).await;
    let values: Vec<&str> = body["data"]["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[1].as_str().unwrap())
        .collect();
    let want: Vec<String> = (1..=3)
        .map(|m: i64| m.min((until - f.base) / 60).to_string())
        .collect();
    assert_eq!(values, want, "{body}");
    // The native API: everything unless `final_only=true`, and the line in the answer too.
    let n = |extra: &str| {
        format!(
            "/api/v1/query?metric=http.requests&from={}&to={}&step=60&where=host:a{extra}",
            f.base,
            f.base + 180
        )
    };
    let (until, body) = get(n("")).await;
    assert_eq!(body["final_until"], json!(until), "{body}");
    assert_eq!(
        body["series"][0]["points"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    let (until, body) = get(n("&final_only=true")).await;
    let points = body["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len() as i64, (until - f.base) / 60, "{body}");
    let (status, body) = f
        .call(
            Carried::Get,
            "query",
            &[("query", "http_requests"), ("final_only", "maybe")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// `histogram_quantile` and the other `histogram_*` functions read merged HDR states: of the
/// minutes in a range, of the series in a group; quantiles within the HDR error of the raw values'.
#[tokio::test]
async fn histogram_functions_read_merged_hdr_states() {
    use thermo_core::aggregate::HIST_RELATIVE_ERROR;
    // rt{route="/a"}: minute m holds 100 values m*100+1 ..= m*100+100; rt{route="/b"}: 10 values
    // 1000*(m+1)+1 ..= 1000*(m+1)+10; minutes 0 to 5.
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            ..ReadConfig::default()
        },
        |hot, base| {
            for m in 0..6u64 {
                let mut a = Hist::new();
                for v in 1..=100 {
                    a.record((m * 100 + v) as f64, 1);
                }
                let mut b = Hist::new();
                for v in 1..=10 {
                    b.record((1000 * (m + 1) + v) as f64, 1);
                }
                let at = base + 60 * m as i64;
                hot.insert(
                    key("rt", &[("route", "/a")]),
                    at,
                    cell(Aggregate::Histogram(a)),
                );
                hot.insert(
                    key("rt", &[("route", "/b")]),
                    at,
                    cell(Aggregate::Histogram(b)),
                );
            }
        },
    );
    let t = f.base + 360; // minutes 1 to 5 ended in (t - 5m, t]
    let one = |r: Vec<(Value, String)>| -> f64 {
        assert_eq!(r.len(), 1, "{r:?}");
        r[0].1.parse().unwrap()
    };
    let near = |got: f64, want: f64| {
        assert!(
            (got - want).abs() <= want * HIST_RELATIVE_ERROR + 1.0,
            "{got} against {want}"
        )
    };
    // Exact counts and sums of the merged minutes; rate divides by the range.
    let count = one(f
        .instant("histogram_count(increase(rt{route=\"/a\"}[5m]))", t)
        .await);
    assert_eq!(count, 500.0);
    let sum = one(f
        .instant("histogram_sum(increase(rt{route=\"/a\"}[5m]))", t)
        .await);
    assert_eq!(sum, 175_250.0);
    let rate = one(f
        .instant("histogram_count(rate(rt{route=\"/a\"}[5m]))", t)
        .await);
    assert!((rate - 500.0 / 300.0).abs() < 1e-12, "{rate}");
    let avg = one(f
        .instant("histogram_avg(sum_over_time(rt{route=\"/a\"}[5m]))", t)
        .await);
    assert_eq!(avg, 350.5);
    // p99 of both routes' 550 values of minutes 1 to 5: the 545th, 6005.
    let p99 = one(f
        .instant("histogram_quantile(0.99, sum(increase(rt[5m])))", t)
        .await);
    near(p99, 6005.0);
    // Per route: medians 350 (101..600) and 4005 (50 values of /b), labels without the name.
    let by_route = f
        .instant("histogram_quantile(0.5, sum by (route) (rate(rt[5m])))", t)
        .await;
    assert_eq!(by_route.len(), 2, "{by_route:?}");
    assert_eq!(by_route[0].0, labels(&[("route", "/a")]));
    near(by_route[0].1.parse().unwrap(), 350.0);
    assert_eq!(by_route[1].0, labels(&[("route", "/b")]));
    near(by_route[1].1.parse().unwrap(), 4005.0);
    // A histogram metric's name alone: its latest window (minute 5: 6001..6010).
    let latest = f
        .instant("histogram_quantile(0.5, rt{route=\"/b\"})", t)
        .await;
    assert_eq!(latest[0].0, labels(&[("route", "/b")]));
    near(latest[0].1.parse().unwrap(), 6005.0);
    assert_eq!(
        f.instant("histogram_quantile(2, rt{route=\"/b\"})", t)
            .await[0]
            .1,
        "+Inf"
    );
    // The fraction of the observations in [lower, upper] (bounds between values, further from
    // each than the HDR's resolution): 450 of minutes 1 to 5's 500 values (101..=600) are below
    // 550.5; 50 of the latest minute's 100 (501..=600).
    let fraction = one(f
        .instant(
            "histogram_fraction(0, 550.5, increase(rt{route=\"/a\"}[5m]))",
            t,
        )
        .await);
    assert_eq!(fraction, 0.9);
    let fraction = f
        .instant("histogram_fraction(-Inf, 550.5, sum by (route) (rt))", t)
        .await;
    assert_eq!(fraction[0], (labels(&[("route", "/a")]), "0.5".to_string()));
    assert_eq!(fraction[1], (labels(&[("route", "/b")]), "0".to_string()));
    // The name alone is not a float series (its histograms: `native_histograms_*`), and other
    // aggregations of histograms are refused.
    let (_, body) = f
        .call(
            Carried::Get,
            "query",
            &[("query", "rt"), ("time", &t.to_string())],
        )
        .await;
    assert!(body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.get("value").is_none()));
    let (status, body) = f
        .call(
            Carried::Get,
            "query",
            &[("query", "histogram_quantile(0.9, max(rt))")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorType"], "bad_data", "{body}");
}

/// Histogram functions across the hot/cold boundary and at every resolution a step reads: an
/// hour's minutes in a cold object (one also still in Redis), the next hour's in Redis; counts
/// exact and each minute once, the quantile within the HDR error of the raw values'.
#[tokio::test]
async fn histogram_quantiles_stitch_hot_and_cold_at_every_resolution() {
    use thermo_core::aggregate::HIST_RELATIVE_ERROR;
    let hour = (now_s() / 3600 - 3) * 3600;
    let k = key("rt", &[("route", "/a")]);
    // Minute m holds the values 1000*m + 1 ..= 1000*m + 10*(m+1) (10*(m+1) values).
    let minute = |m: i64, seq: u64| {
        let mut h = Hist::new();
        for v in 1..=10 * (m + 1) {
            h.record((1000 * m + v) as f64, 1);
        }
        HotCell {
            contributors: vec![(9, seq)],
            agg: Aggregate::Histogram(h),
        }
    };
    let rows: Vec<ColdRow> = (0..3)
        .map(|m| ColdRow {
            series: k.clone(),
            window_start: hour + 60 * m,
            cell: minute(m, m as u64),
        })
        .collect();
    let hot = [
        (k.clone(), hour + 120, minute(2, 2)), // also in the object
        (k.clone(), hour + 3600, minute(60, 60)),
        (k.clone(), hour + 3660, minute(61, 61)),
    ];
    let (f, dir) = with_cold("histograms", hour, rows, &hot).await;
    let values: Vec<f64> = [0i64, 1, 2, 60, 61]
        .iter()
        .flat_map(|&m| (1..=10 * (m + 1)).map(move |v| (1000 * m + v) as f64))
        .collect();
    let t = hour + 3720;
    let one = |r: Vec<(Value, String)>| -> f64 {
        assert_eq!(r.len(), 1, "{r:?}");
        r[0].1.parse().unwrap()
    };
    // Every minute once: 10 + 20 + 30 (cold) + 610 + 620 (hot) values.
    let count = one(f.instant("histogram_count(increase(rt[2h]))", t).await);
    assert_eq!(count, values.len() as f64);
    assert_eq!(count, 1290.0);
    let sum = one(f.instant("histogram_sum(increase(rt[2h]))", t).await);
    assert_eq!(sum, values.iter().sum::<f64>());
    for q in [0.5, 0.9, 0.99] {
        let got = one(f
            .instant(
                &format!("histogram_quantile({q}, sum(increase(rt[2h])))"),
                t,
            )
            .await);
        let rank = ((q * values.len() as f64).ceil() as usize).max(1) - 1;
        let want = values[rank];
        assert!(
            (got - want).abs() <= want * HIST_RELATIVE_ERROR + 1.0,
            "p{q}: {got} against {want}"
        );
    }
    // The 5m and 1h windows a coarser step reads: the same minutes, merged into their windows.
    let range = |step: &str, at: &[i64]| {
        let (start, end) = (at[0].to_string(), at[at.len() - 1].to_string());
        let step = step.to_string();
        let f = &f;
        async move {
            let q = format!("histogram_count(increase(rt[{step}s]))");
            let data = f
                .data(
                    "query_range",
                    &[
                        ("query", &q),
                        ("start", &start),
                        ("end", &end),
                        ("step", &step),
                    ],
                )
                .await;
            data["result"][0]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        range("300", &[hour + 300, hour + 3900]).await,
        [
            (hour + 300, "60".to_string()),
            (hour + 3900, "1230".to_string())
        ]
    );
    assert_eq!(
        range("3600", &[hour + 3600, hour + 7200]).await,
        [
            (hour + 3600, "60".to_string()),
            (hour + 7200, "1230".to_string())
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A native histogram bucket: boundary rule, lower, upper, count.
type Bucket = (u8, f64, f64, f64);

/// One histogram of a Prometheus JSON answer, read the way Grafana's Prometheus data source reads
/// it (`[time, {count, sum, buckets: [[rule, "lower", "upper", "count"], ...]}]`): the time, count,
/// sum and buckets.
fn native(v: &Value) -> (i64, f64, f64, Vec<Bucket>) {
    let num = |v: &Value| -> f64 { v.as_str().unwrap().parse().unwrap() };
    let pair = v.as_array().unwrap();
    assert_eq!(pair.len(), 2, "{v}");
    let h = pair[1].as_object().unwrap();
    assert_eq!(h.len(), 3, "count, sum and buckets only: {v}");
    let buckets = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b = b.as_array().unwrap();
            assert_eq!(b.len(), 4, "{v}");
            let rule = u8::try_from(b[0].as_u64().unwrap()).unwrap();
            (rule, num(&b[1]), num(&b[2]), num(&b[3]))
        })
        .collect();
    (
        pair[0].as_i64().unwrap(),
        num(&h["count"]),
        num(&h["sum"]),
        buckets,
    )
}

/// Histogram-valued results answer as Prometheus's native histograms: exact count and sum, the
/// HDR state's counts in the exponential buckets of schema 3 that hold the values, in a vector
/// (`histogram`) and a matrix (`histograms`, rate scaled); floats and histograms side by side.
#[tokio::test]
async fn native_histograms_answer_like_prometheus() {
    // rt{route="/a"}: minute m holds 100 values m*100+1 ..= m*100+100, minutes 0 to 2; and one
    // value 0 in minute 2.
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            ..ReadConfig::default()
        },
        |hot, base| {
            for m in 0..3u64 {
                let mut a = Hist::new();
                for v in 1..=100 {
                    a.record((m * 100 + v) as f64, 1);
                }
                if m == 2 {
                    a.record(0.0, 1);
                }
                hot.insert(
                    key("rt", &[("route", "/a")]),
                    base + 60 * m as i64,
                    cell(Aggregate::Histogram(a)),
                );
            }
        },
    );
    let bound = |i: i32| (f64::from(i) / 8.0).exp2();
    // Minute 2 (201..=300 and 0) at its end: (2^(61/8), 2^(62/8)] = (197.4, 215.3] holds 201..=215,
    // then 216..=234, 235..=256 (256 = 2^(64/8) is a bound, in the bucket it closes), 257..=279,
    // 280..=300 (up to 2^(66/8) = 304.4); 0 in the zero bucket.
    let t = f.base + 180;
    let data = f
        .data("query", &[("query", "rt"), ("time", &t.to_string())])
        .await;
    assert_eq!(data["resultType"], "vector");
    let result = data["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{data}");
    assert_eq!(
        result[0]["metric"],
        labels(&[("__name__", "rt"), ("route", "/a")])
    );
    let (at, count, sum, buckets) = native(&result[0]["histogram"]);
    assert_eq!((at, count, sum), (t, 101.0, 25_050.0));
    let mut want = vec![(3, -0.0005, 0.0005, 1.0)];
    for (i, n) in [(62, 15.0), (63, 19.0), (64, 22.0), (65, 23.0), (66, 21.0)] {
        want.push((0, bound(i - 1), bound(i), n));
    }
    assert_eq!(buckets, want);
    // A range of rate: counts and sums per second of the two minutes in each (t - 2m, t].
    let (start, end) = ((f.base + 120).to_string(), (f.base + 180).to_string());
    let data = f
        .data(
            "query_range",
            &[
                ("query", "sum by (route) (rate(rt[2m]))"),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )
        .await;
    assert_eq!(data["resultType"], "matrix");
    let series = &data["result"][0];
    assert_eq!(series["metric"], labels(&[("route", "/a")]));
    assert!(series.get("values").is_none(), "{series}");
    let points: Vec<_> = series["histograms"]
        .as_array()
        .unwrap()
        .iter()
        .map(native)
        .collect();
    assert_eq!(points.len(), 2);
    for ((at, count, sum, buckets), (want_at, n, s)) in points.iter().zip([
        (f.base + 120, 200.0, 20_100.0),
        (f.base + 180, 201.0, 40_100.0),
    ]) {
        assert_eq!(*at, want_at);
        assert!((count - n / 120.0).abs() < 1e-12, "{count}");
        assert!((sum - s / 120.0).abs() < 1e-9, "{sum}");
        let total: f64 = buckets.iter().map(|b| b.3).sum();
        assert!((total - count).abs() < 1e-9, "{total} against {count}");
        assert!(buckets.windows(2).all(|w| w[0].2 <= w[1].1), "{buckets:?}");
    }
    // Floats and histograms in one answer: each series as what it is.
    let data = f
        .data(
            "query",
            &[
                ("query", "{__name__=~\"rt|mem\"}"),
                ("time", &t.to_string()),
            ],
        )
        .await;
    let kinds: Vec<(&str, bool)> = data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["__name__"].as_str().unwrap(),
                s.get("histogram").is_some(),
            )
        })
        .collect();
    assert_eq!(kinds, [("mem", false), ("rt", true)]);
}

/// `max_samples` bounds a whole query: each selector alone is within it, both are not.
#[tokio::test]
async fn max_samples_bounds_the_samples_of_every_selector_together() {
    // Each selector's read is bounded before it reads by its series times its span's minutes (an
    // instant query's 5-minute lookback: 7), and then counts the windows it read (3).
    let f = Fixture::with(
        ReadConfig {
            hot_retention_hours: 48,
            max_samples: 9,
            ..ReadConfig::default()
        },
        |_, _| (),
    );
    let t = (f.base + 180).to_string();
    let both = "sum(http_requests{host=\"a\"}) + sum(http_requests{host=\"b\"})";
    for form in FORMS {
        for one in [
            "sum(http_requests{host=\"a\"})",
            "sum(http_requests{host=\"b\"})",
        ] {
            let (status, body) = f.call(form, "query", &[("query", one), ("time", &t)]).await;
            assert_eq!(status, StatusCode::OK, "{one}: {body}");
        }
        let (status, body) = f
            .call(form, "query", &[("query", both), ("time", &t)])
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errorType"], "execution", "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("10 samples or more"),
            "{body}"
        );
    }
}
