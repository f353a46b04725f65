//! Query parameters and evaluation.
//!
//! `GET /api/v1/query?metric=NAME&from=T&to=T&step=S&stat=STAT&where=k:v,k2:v2&group_by=k,k2&resolution=R`
//!
//! - `from`, `to`: unix seconds or RFC 3339; default the last hour. The range is `[from, to)` and
//!   covers the windows of the resolution from the one containing `from` up to the one containing
//!   `to - 1` (at 1m: the minutes; a coarser window is read whole).
//! - `step`: seconds, a positive multiple of 60 (default 60); buckets are aligned to the epoch, a
//!   bucket's point is stamped with its start. Buckets with no data are left out.
//! - `resolution`: `1m`, `5m` or `1h`, the windows read; it must divide `step`. Default: the
//!   coarsest that divides `step` ([`Resolution::for_step`]). Without cold storage every read is
//!   of Redis's minutes, whatever the resolution.
//! - `final_only`: `true` leaves out the windows that end after the last final minute
//!   (`crate::finality`); default `false`. Every answer names that minute's end (`final_until`).
//! - `stat`: see [`thermo_core::query`].
//! - `where`: `k:v` pairs, all of which a series' tags must equal.
//! - `group_by`: absent, every matching series is combined into one answer series with tags `{}`;
//!   `k1,k2`, one answer series per distinct value of those tags (a missing tag is left out of the
//!   group's tags); `*`, every stored series on its own.
//!
//! # Hot and cold: the stitching invariant
//!
//! With cold storage, every window of the range is read from exactly one place, so there is no
//! gap and no double count (see [`crate::stitch`]):
//!
//! - a 5m / 1h chunk (day / week) comes from its object only if the object is complete: listed in
//!   the catalog, not dirty, no dirty finer chunk inside it, no pending hour inside it; otherwise
//!   it is computed from the next finer resolution (1h from 5m, 5m from 1m) and re-bucketed;
//! - an hour of minutes is the union of its 1m object's rows and the cells Redis still has for it,
//!   merged by contribution `(source, seq)`: a contribution in both is counted once. This is
//!   correct whether or not Redis was trimmed yet; Redis is skipped only for an hour that has an
//!   object and is not pending (every write marks its hour pending in the same atomic step, and
//!   an hour leaves `pending` only once an object holds every write up to then).
//!
//! Every series found is used: the object rows' own keys and, for the Redis part, the series index.
//! `"sources"` says which stores served data: `["hot"]`, `["cold"]`, `["hot","cold"]`, or `[]` when
//! nothing matched. Without cold storage it is always `["hot"]`, as before.

use crate::cold::{ColdReader, ColdView};
use crate::error::ApiError;
use crate::stitch::{plan, read, Bounds, Buckets, Selector, Served};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use thermo_core::aggregate::{Aggregate, MetricType};
use thermo_core::key::MetricKey;
use thermo_core::query::{GroupCell, Stat};
use thermo_core::timefmt::parse_time;
use thermo_core::window::{window_start, Resolution, MINUTE};
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// How series are combined.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    All,
    Each,
    Keys(Vec<String>),
}

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryParams {
    pub metric: String,
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub stat: Stat,
    pub filters: Vec<(String, String)>,
    pub group_by: GroupBy,
    /// The windows read; divides `step`.
    pub resolution: Resolution,
}

const PARAMS: [&str; 9] = [
    "metric",
    "from",
    "to",
    "step",
    "stat",
    "where",
    "group_by",
    "resolution",
    "final_only", // read by the handler (`crate::finality`)
];

fn parse_resolution(raw: Option<&String>, step: i64) -> Result<Resolution, ApiError> {
    let Some(s) = raw else {
        return Ok(Resolution::for_step(step));
    };
    let r = Resolution::parse(s)
        .ok_or_else(|| ApiError::param("resolution", format!("{s:?} is not 1m, 5m or 1h")))?;
    if step % r.seconds() != 0 {
        return Err(ApiError::param(
            "resolution",
            format!("{s} windows do not divide step {step}"),
        ));
    }
    Ok(r)
}

/// Parses and checks the query string parameters.
pub fn parse_params(
    raw: &HashMap<String, String>,
    now_s: i64,
    max_points: i64,
) -> Result<QueryParams, ApiError> {
    if let Some(unknown) = raw.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::param(
            unknown.clone(),
            format!("unknown parameter; expected one of {}", PARAMS.join(", ")),
        ));
    }
    let metric = raw
        .get("metric")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::param("metric", "required"))?
        .clone();
    thermo_core::key::validate_name(&metric).map_err(|e| ApiError::param("metric", e.problem))?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        raw.get(name)
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::param(name, format!("{v:?} is neither unix seconds nor RFC 3339"))
                })
            })
            .transpose()
    };
    let to = time("to")?.unwrap_or(now_s);
    let from = time("from")?.unwrap_or(to - 3600);
    if from >= to {
        return Err(ApiError::param("from", "must be before to"));
    }
    let step = match raw.get("step") {
        None => MINUTE,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0 && v % MINUTE == 0)
            .ok_or_else(|| {
                ApiError::param(
                    "step",
                    format!("{s:?} is not a positive multiple of 60 seconds"),
                )
            })?,
    };
    let points = (to - window_start(from, step) + step - 1) / step;
    if points > max_points {
        return Err(ApiError::param(
            "step",
            format!("the range needs {points} points at this step; at most {max_points} (max_points): raise step or shorten the range"),
        ));
    }
    let stat = Stat::parse(raw.get("stat").map_or("sum", String::as_str))
        .map_err(|e| ApiError::param("stat", e))?;
    let mut filters = Vec::new();
    if let Some(w) = raw.get("where").filter(|w| !w.is_empty()) {
        for part in w.split(',') {
            let (k, v) = part
                .split_once(':')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ApiError::param("where", format!("{part:?} is not k:v")))?;
            filters.push((k.to_string(), v.to_string()));
        }
    }
    let group_by = match raw.get("group_by").map(String::as_str) {
        None | Some("") => GroupBy::All,
        Some("*") => GroupBy::Each,
        Some(g) => {
            let keys: Vec<String> = g.split(',').map(str::to_string).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ApiError::param("group_by", "empty tag key"));
            }
            GroupBy::Keys(keys)
        }
    };
    let resolution = parse_resolution(raw.get("resolution"), step)?;
    Ok(QueryParams {
        metric,
        from,
        to,
        step,
        stat,
        filters,
        group_by,
        resolution,
    })
}

/// One series of an answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesOut {
    pub tags: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// The answer of `/api/v1/query`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueryResult {
    pub metric: String,
    #[serde(rename = "type")]
    pub metric_type: &'static str,
    pub stat: String,
    pub step: i64,
    pub from: i64,
    pub to: i64,
    pub sources: Vec<&'static str>,
    pub series: Vec<SeriesOut>,
}

fn group_tags(key: &MetricKey, g: &GroupBy) -> BTreeMap<String, String> {
    match g {
        GroupBy::All => BTreeMap::new(),
        GroupBy::Each => key.tags().iter().cloned().collect(),
        GroupBy::Keys(keys) => keys
            .iter()
            .filter_map(|k| key.tag(k).map(|v| (k.clone(), v.to_string())))
            .collect(),
    }
}

/// Cold storage as one query sees it: the object reader and the catalog read at its start.
pub struct Cold<'a, C> {
    pub reader: &'a ColdReader<C>,
    pub view: &'a ColdView,
}

/// The windows `[from, to)` of resolution `res` that cover `[p.from, p.to)`.
pub fn window_range(res: Resolution, from: i64, to: i64) -> (i64, i64) {
    (res.start(from), res.start(to - 1) + res.seconds())
}

/// The type of `metric` from the hot store's index, if it is there.
async fn indexed_type<H: HotStore>(
    hot: &H,
    tenant: &str,
    metric: &str,
) -> Result<Option<MetricType>, ApiError> {
    Ok(hot
        .metrics(tenant)
        .await?
        .into_iter()
        .find(|(n, _)| n == metric)
        .map(|(_, t)| t))
}

/// The type of the first state read (for a metric Redis no longer indexes).
fn read_type(buckets: &Buckets) -> Option<MetricType> {
    buckets
        .series()
        .values()
        .flat_map(BTreeMap::values)
        .map(Aggregate::metric_type)
        .next()
}

fn unknown(metric: &str) -> ApiError {
    ApiError::NotFound(format!("unknown metric {metric:?}"))
}

/// Evaluates `p` for `tenant` over the hot store and, if given, cold storage (see the module docs).
pub async fn evaluate<H: HotStore, C: ColdStore>(
    hot: &H,
    cold: Option<Cold<'_, C>>,
    tenant: &str,
    p: &QueryParams,
    bounds: Bounds,
) -> Result<QueryResult, ApiError> {
    let cold_enabled = cold.is_some();
    let (buckets, metric_type, served) = read_buckets(hot, cold, tenant, p, bounds).await?;
    Ok(answer(
        p,
        buckets,
        metric_type,
        cold_enabled.then_some(served),
    ))
}

/// The answer of `p` from what [`read_buckets`] read; `served` with cold storage on.
pub fn answer(
    p: &QueryParams,
    buckets: Buckets,
    metric_type: MetricType,
    served: Option<Served>,
) -> QueryResult {
    QueryResult {
        metric: p.metric.clone(),
        metric_type: metric_type.as_str(),
        stat: p.stat.name(),
        step: p.step,
        from: p.from,
        to: p.to,
        sources: served.map_or(vec!["hot"], |s| s.sources()),
        series: answer_series(buckets, p),
    }
}

/// Every matching series' windows of `p`, merged into its step buckets (not combined across
/// series), with the metric's type and which stores served them.
pub async fn read_buckets<H: HotStore, C: ColdStore>(
    hot: &H,
    cold: Option<Cold<'_, C>>,
    tenant: &str,
    p: &QueryParams,
    bounds: Bounds,
) -> Result<(Buckets, MetricType, Served), ApiError> {
    let cold_enabled = cold.is_some();
    let indexed = indexed_type(hot, tenant, &p.metric).await?;
    if indexed.is_none() && !cold_enabled {
        return Err(unknown(&p.metric));
    }
    if let Some(t) = indexed {
        p.stat.check(t).map_err(|e| ApiError::param("stat", e))?;
    }
    let no_cold = ColdView::default();
    let (res, view) = match &cold {
        Some(c) => (p.resolution, c.view),
        None => (Resolution::OneMinute, &no_cold),
    };
    let (from, to) = window_range(res, p.from, p.to);
    let sel = Selector {
        tenant,
        metric: &p.metric,
        filters: &p.filters,
        bounds,
    };
    let parts = plan(view, res, from, to);
    let (buckets, served) = read(hot, cold.map(|c| c.reader), sel, &parts, p.step).await?;
    let metric_type = match indexed {
        Some(t) => t,
        None => {
            let t = read_type(&buckets).ok_or_else(|| unknown(&p.metric))?;
            p.stat.check(t).map_err(|e| ApiError::param("stat", e))?;
            t
        }
    };
    Ok((buckets, metric_type, served))
}

/// Combines the series of each group per bucket and reads the stat.
fn answer_series(buckets: Buckets, p: &QueryParams) -> Vec<SeriesOut> {
    // group tags → bucket start → combined cell
    let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, GroupCell>> = BTreeMap::new();
    for (key, series_buckets) in buckets.into_series() {
        let group = groups.entry(group_tags(&key, &p.group_by)).or_default();
        for (b, agg) in series_buckets {
            if let Err(e) = group.entry(b).or_default().add_series(&agg) {
                tracing::warn!(series = %key, bucket = b, "skipped series: {e}");
            }
        }
    }
    groups
        .into_iter()
        .map(|(tags, buckets)| SeriesOut {
            tags,
            points: buckets
                .into_iter()
                .filter_map(|(b, cell)| cell.value(p.stat, p.step).map(|v| (b, v)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<QueryParams, ApiError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_params(&raw, 1_764_460_800, 11_000)
    }

    fn param_of(r: Result<QueryParams, ApiError>) -> String {
        match r {
            Err(ApiError::BadParam { param, .. }) => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_errors_name_the_parameter() {
        let p = q(&[("metric", "req")]).unwrap();
        assert_eq!(
            (p.from, p.to, p.step, p.stat),
            (1_764_457_200, 1_764_460_800, 60, Stat::Sum)
        );
        assert_eq!(p.group_by, GroupBy::All);
        let p = q(&[
            ("metric", "req"),
            ("where", "a:1,b:x:y"),
            ("group_by", "host,route"),
        ])
        .unwrap();
        assert_eq!(
            p.filters,
            vec![("a".into(), "1".into()), ("b".into(), "x:y".into())]
        );
        assert_eq!(
            p.group_by,
            GroupBy::Keys(vec!["host".into(), "route".into()])
        );
        assert_eq!(param_of(q(&[])), "metric");
        assert_eq!(param_of(q(&[("metric", "req"), ("step", "90")])), "step");
        assert_eq!(
            param_of(q(&[("metric", "req"), ("step", "60"), ("from", "0")])),
            "step"
        );
        assert_eq!(param_of(q(&[("metric", "req"), ("stat", "p0")])), "stat");
        assert_eq!(
            param_of(q(&[("metric", "req"), ("from", "tomorrow")])),
            "from"
        );
        assert_eq!(
            param_of(q(&[("metric", "req"), ("from", "10"), ("to", "5")])),
            "from"
        );
        assert_eq!(
            param_of(q(&[("metric", "req"), ("where", "nocolon")])),
            "where"
        );
        assert_eq!(param_of(q(&[("metric", "req"), ("limit", "5")])), "limit");
        assert_eq!(param_of(q(&[("metric", "bad name")])), "metric");
    }

    #[test]
    fn resolution_defaults_to_the_step_and_must_divide_it() {
        let r = |pairs: &[(&str, &str)]| q(pairs).map(|p| p.resolution);
        assert_eq!(r(&[("metric", "m")]).unwrap(), Resolution::OneMinute);
        assert_eq!(
            r(&[("metric", "m"), ("step", "600")]).unwrap(),
            Resolution::FiveMinutes
        );
        assert_eq!(
            r(&[("metric", "m"), ("step", "7200")]).unwrap(),
            Resolution::OneHour
        );
        assert_eq!(
            r(&[("metric", "m"), ("step", "7200"), ("resolution", "1m")]).unwrap(),
            Resolution::OneMinute
        );
        assert_eq!(
            param_of(q(&[("metric", "m"), ("step", "60"), ("resolution", "5m")])),
            "resolution"
        );
        assert_eq!(
            param_of(q(&[
                ("metric", "m"),
                ("step", "5400"),
                ("resolution", "1h")
            ])),
            "resolution"
        );
        assert_eq!(
            param_of(q(&[("metric", "m"), ("resolution", "2m")])),
            "resolution"
        );
        assert_eq!(window_range(Resolution::FiveMinutes, 330, 601), (300, 900));
        assert_eq!(window_range(Resolution::OneMinute, 61, 120), (60, 120));
    }

    mod stitched {
        use super::*;
        use crate::cache::ColdCache;
        use prometheus::{IntCounter, IntGauge};
        use thermo_core::aggregate::Counter;
        use thermo_core::codec::HotCell;
        use thermo_store::cold::LocalDirCold;
        use thermo_store::cold_format::{encode, ColdRow};

        use thermo_store::mem_hot::MemHot;

        /// A day start (so an hour and a 5-minute window start too): 2025-11-30T00:00:00Z.
        const D: i64 = 1_764_460_800;
        const H: i64 = 3600;

        fn key(name: &str, host: &str) -> MetricKey {
            MetricKey::new("acme", name, vec![("host".into(), host.into())]).unwrap()
        }

        fn cell(sum: f64, contributors: &[(u64, u64)]) -> HotCell {
            HotCell {
                contributors: contributors.to_vec(),
                agg: Aggregate::Counter(Counter {
                    sum,
                    samples: contributors.len().max(1) as u64,
                }),
            }
        }

        fn row(k: &MetricKey, window_start: i64, c: HotCell) -> ColdRow {
            ColdRow {
                series: k.clone(),
                window_start,
                cell: c,
            }
        }

        struct Fixture {
            dir: std::path::PathBuf,
            reader: ColdReader<LocalDirCold>,
        }

        impl Fixture {
            fn new(name: &str) -> Self {
                let dir =
                    std::env::temp_dir().join(format!("thermo-read-{}-{name}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let cache = ColdCache::new(
                    1 << 20,
                    IntCounter::new("h", "h").unwrap(),
                    IntCounter::new("m", "m").unwrap(),
                    IntGauge::new("b", "b").unwrap(),
                );
                let reader = ColdReader::new(
                    LocalDirCold::new(&dir),
                    "cold/v1",
                    cache,
                    crate::cold::ColdCounters::unregistered(),
                );
                Self { dir, reader }
            }

            fn put(&self, res: Resolution, chunk: i64, rows: Vec<ColdRow>) {
                let key = thermo_store::catalog::object_key("cold/v1", "acme", res, chunk);
                let path = self.dir.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, encode(res, rows).unwrap()).unwrap();
            }

            async fn query(
                &self,
                hot: &MemHot,
                view: &ColdView,
                pairs: &[(&str, &str)],
            ) -> QueryResult {
                let raw = pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let p = parse_params(&raw, D + 86_400, 11_000).unwrap();
                let cold = Cold {
                    reader: &self.reader,
                    view,
                };
                evaluate(hot, Some(cold), "acme", &p, Bounds::series(100))
                    .await
                    .unwrap()
            }
        }

        impl Drop for Fixture {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        type Points = Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>;

        fn points(r: &QueryResult) -> Points {
            r.series
                .iter()
                .map(|s| (s.tags.clone(), s.points.clone()))
                .collect()
        }

        #[tokio::test]
        async fn a_cold_hour_and_a_hot_hour_stitch_exactly_once() {
            let f = Fixture::new("stitch");
            let (a, b) = (key("req", "a"), key("req", "b"));
            // Hour D was rolled up: its object holds three minutes (and another metric).
            f.put(
                Resolution::OneMinute,
                D,
                vec![
                    row(&a, D, cell(1.0, &[(1, 1)])),
                    row(&a, D + 60, cell(2.0, &[(1, 2)])),
                    row(&b, D + 120, cell(4.0, &[(2, 1)])),
                    row(&key("other", "a"), D, cell(100.0, &[(9, 1)])),
                ],
            );
            let hot = MemHot::new();
            hot.insert(a.clone(), D + 60, cell(2.0, &[(1, 2)])); // not trimmed yet: also in the object
            hot.insert(a.clone(), D + 180, cell(0.5, &[(3, 1)])); // a late minute, after the roll-up
            hot.insert(a.clone(), D + H, cell(10.0, &[(1, 3)])); // hour D+1h: Redis only
            hot.insert(b.clone(), D + H + 60, cell(20.0, &[(2, 2)]));
            let mut view = ColdView::default();
            view.cold.insert(Resolution::OneMinute, [(D, 1)].into());
            view.pending.extend([D, D + H]); // the late minute made hour D pending again

            let (d0, d1, d2) = (D.to_string(), (D + H).to_string(), (D + 2 * H).to_string());
            let span = [
                ("metric", "req"),
                ("from", d0.as_str()),
                ("to", d2.as_str()),
            ];
            let r = f
                .query(&hot, &view, &[span[0], span[1], span[2], ("step", "7200")])
                .await;
            assert_eq!(r.sources, vec!["hot", "cold"]);
            assert_eq!(points(&r), vec![(BTreeMap::new(), vec![(D, 37.5)])]);

            let r = f
                .query(
                    &hot,
                    &view,
                    &[
                        span[0],
                        span[1],
                        span[2],
                        ("step", "3600"),
                        ("group_by", "host"),
                    ],
                )
                .await;
            let tags = |h: &str| BTreeMap::from([("host".to_string(), h.to_string())]);
            assert_eq!(
                points(&r),
                vec![
                    (tags("a"), vec![(D, 3.5), (D + H, 10.0)]),
                    (tags("b"), vec![(D, 4.0), (D + H, 20.0)]),
                ]
            );

            // Once hour D is no longer pending, Redis is not read for it: the object alone.
            view.pending.clear();
            hot.remove(&a, D + 180);
            let r = f
                .query(
                    &hot,
                    &view,
                    &[span[0], span[1], ("to", &d1), ("where", "host:a")],
                )
                .await;
            assert_eq!(r.sources, vec!["cold"]);
            assert_eq!(
                points(&r),
                vec![(BTreeMap::new(), vec![(D, 1.0), (D + 60, 2.0)])]
            );

            // A metric Redis no longer indexes is still found in the objects.
            let r = f
                .query(&hot, &view, &[("metric", "other"), span[1], span[2]])
                .await;
            assert_eq!(
                (r.metric_type, r.sources.clone()),
                ("counter", vec!["cold"])
            );
            assert_eq!(points(&r), vec![(BTreeMap::new(), vec![(D, 100.0)])]);
        }

        #[tokio::test]
        async fn five_minute_windows_come_from_minutes_without_a_complete_object() {
            let f = Fixture::new("five");
            let a = key("req", "a");
            // Hours 0 and 1 of day D rolled up; hour 2 only in Redis.
            f.put(
                Resolution::OneMinute,
                D,
                vec![
                    row(&a, D, cell(1.0, &[(1, 1)])),
                    row(&a, D + 240, cell(2.0, &[(1, 2)])),
                ],
            );
            f.put(
                Resolution::OneMinute,
                D + H,
                vec![row(&a, D + H + 300, cell(4.0, &[(1, 3)]))],
            );
            let hot = MemHot::new();
            hot.insert(a.clone(), D + 2 * H + 60, cell(8.0, &[(1, 4)]));
            let mut view = ColdView::default();
            view.cold
                .insert(Resolution::OneMinute, [(D, 1), (D + H, 1)].into());
            let (d0, d1) = (D.to_string(), (D + 86_400).to_string());
            let day = [
                ("metric", "req"),
                ("from", d0.as_str()),
                ("to", d1.as_str()),
            ];

            let r = f
                .query(&hot, &view, &[day[0], day[1], day[2], ("step", "300")])
                .await;
            assert_eq!(r.sources, vec!["hot", "cold"]);
            assert_eq!(
                points(&r),
                vec![(
                    BTreeMap::new(),
                    vec![(D, 3.0), (D + H + 300, 4.0), (D + 2 * H, 8.0)]
                )]
            );
            let r = f
                .query(&hot, &view, &[day[0], day[1], day[2], ("step", "86400")])
                .await;
            assert_eq!(points(&r), vec![(BTreeMap::new(), vec![(D, 15.0)])]);
            assert!(f.reader.cache().bytes() > 0);

            // A complete 5m object for the day is read instead of the minutes...
            f.put(
                Resolution::FiveMinutes,
                D,
                vec![
                    row(&a, D, cell(3.0, &[])),
                    row(&a, D + 3600, cell(12.0, &[])),
                ],
            );
            view.cold.insert(Resolution::FiveMinutes, [(D, 1)].into());
            let r = f
                .query(
                    &hot,
                    &view,
                    &[
                        day[0],
                        day[1],
                        day[2],
                        ("step", "86400"),
                        ("resolution", "5m"),
                    ],
                )
                .await;
            assert_eq!(r.sources, vec!["cold"]);
            assert_eq!(points(&r), vec![(BTreeMap::new(), vec![(D, 15.0)])]);
            let r = f
                .query(&hot, &view, &[day[0], day[1], day[2], ("step", "300")])
                .await;
            assert_eq!(
                points(&r),
                vec![(BTreeMap::new(), vec![(D, 3.0), (D + H, 12.0)])]
            );
            // ...but not while the day is dirty (being rebuilt).
            view.dirty.insert(Resolution::FiveMinutes, [D].into());
            let r = f
                .query(&hot, &view, &[day[0], day[1], day[2], ("step", "300")])
                .await;
            assert_eq!(r.sources, vec!["hot", "cold"]);
            assert_eq!(points(&r)[0].1.len(), 3);
        }

        #[tokio::test]
        async fn without_cold_storage_only_redis_is_read() {
            let a = key("req", "a");
            let hot = MemHot::new();
            hot.insert(a.clone(), D + 60, cell(5.0, &[(1, 1)]));
            let (from, to) = ((D + 30).to_string(), (D + H).to_string());
            let raw = [
                ("metric", "req"),
                ("from", &from),
                ("to", &to),
                ("step", "3600"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let p = parse_params(&raw, D + 86_400, 11_000).unwrap();
            assert_eq!(p.resolution, Resolution::OneHour);
            let r = evaluate::<_, LocalDirCold>(&hot, None, "acme", &p, Bounds::series(100))
                .await
                .unwrap();
            assert_eq!(r.sources, vec!["hot"]);
            assert_eq!(r.series[0].points, vec![(D, 5.0)]);
            let mut other = p.clone();
            other.metric = "nope".into();
            let e =
                evaluate::<_, LocalDirCold>(&hot, None, "acme", &other, Bounds::series(100)).await;
            assert!(matches!(e, Err(ApiError::NotFound(_))));
        }
    }
}
