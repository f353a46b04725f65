//! Query parameters and evaluation.
//!
//! `GET /api/v1/query?metric=NAME&from=T&to=T&step=S&stat=STAT&where=k:v,k2:v2&group_by=k,k2`
//!
//! - `from`, `to`: unix seconds or RFC 3339; default the last hour. The range is `[from, to)` and
//!   covers the minutes from the one containing `from` up to the one containing `to - 1`.
//! - `step`: seconds, a positive multiple of 60 (default 60); buckets are aligned to the epoch, a
//!   bucket's point is stamped with its start. Buckets with no data are left out.
//! - `stat`: see [`thermo_core::query`].
//! - `where`: `k:v` pairs, all of which a series' tags must equal.
//! - `group_by`: absent, every matching series is combined into one answer series with tags `{}`;
//!   `k1,k2`, one answer series per distinct value of those tags (a missing tag is left out of the
//!   group's tags); `*`, every stored series on its own.

use crate::error::ApiError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use thermo_core::aggregate::{Aggregate, MetricType};
use thermo_core::key::MetricKey;
use thermo_core::query::{GroupCell, Stat};
use thermo_core::timefmt::parse_time;
use thermo_core::window::{minute_start, window_start, MINUTE};
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
}

const PARAMS: [&str; 7] = ["metric", "from", "to", "step", "stat", "where", "group_by"];

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
    Ok(QueryParams {
        metric,
        from,
        to,
        step,
        stat,
        filters,
        group_by,
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

/// Evaluates `p` for `tenant` over the hot store.
pub async fn evaluate<H: HotStore>(
    hot: &H,
    tenant: &str,
    p: &QueryParams,
    max_series: usize,
) -> Result<QueryResult, ApiError> {
    let types = hot.metrics(tenant).await?;
    let metric_type: MetricType = types
        .iter()
        .find(|(n, _)| *n == p.metric)
        .map(|(_, t)| *t)
        .ok_or_else(|| ApiError::NotFound(format!("unknown metric {:?}", p.metric)))?;
    p.stat
        .check(metric_type)
        .map_err(|e| ApiError::param("stat", e))?;
    let first_minute = minute_start(p.from);
    let all = hot.series(tenant, &p.metric, first_minute).await?;
    let matched: Vec<MetricKey> = all
        .into_iter()
        .filter(|k| {
            p.filters
                .iter()
                .all(|(fk, fv)| k.tag(fk) == Some(fv.as_str()))
        })
        .collect();
    if matched.len() > max_series {
        return Err(ApiError::param(
            "where",
            format!(
                "{} series match; at most {max_series} (max_series): narrow the filter",
                matched.len()
            ),
        ));
    }
    let cells = hot.read_range(&matched, first_minute, p.to).await?;
    // group tags → bucket start → combined cell
    let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, GroupCell>> = BTreeMap::new();
    for (key, minutes) in matched.iter().zip(cells) {
        // Merge this series' minutes per bucket first (in time), then add it to its group.
        let mut buckets: BTreeMap<i64, Aggregate> = BTreeMap::new();
        for (minute, cell) in minutes {
            let b = window_start(minute, p.step);
            match buckets.get_mut(&b) {
                Some(a) => {
                    if let Err(e) = a.merge(&cell.agg) {
                        tracing::warn!(series = %key, minute, "skipped cell: {e}");
                    }
                }
                None => {
                    buckets.insert(b, cell.agg);
                }
            }
        }
        if buckets.is_empty() {
            continue;
        }
        let group = groups.entry(group_tags(key, &p.group_by)).or_default();
        for (b, agg) in buckets {
            if let Err(e) = group.entry(b).or_default().add_series(&agg) {
                tracing::warn!(series = %key, bucket = b, "skipped series: {e}");
            }
        }
    }
    let series = groups
        .into_iter()
        .map(|(tags, buckets)| SeriesOut {
            tags,
            points: buckets
                .into_iter()
                .filter_map(|(b, cell)| cell.value(p.stat, p.step).map(|v| (b, v)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    Ok(QueryResult {
        metric: p.metric.clone(),
        metric_type: metric_type.as_str(),
        stat: p.stat.name(),
        step: p.step,
        from: p.from,
        to: p.to,
        sources: vec!["hot"],
        series,
    })
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
}
