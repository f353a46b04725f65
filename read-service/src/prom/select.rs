//! Prometheus names for thermo's metrics, and the samples of a vector selector.
//!
//! A thermo name becomes a Prometheus name by replacing every character outside
//! `[a-zA-Z0-9_:]` with `_` (`http.latency` → `http_latency`, as statsd_exporter does). A
//! counter, gauge or set keeps that name; a histogram answers as `<name>_count` (values per
//! window) and `<name>_sum` (their sum). One sample per stored window, stamped with the window's
//! start: a counter's sum, a gauge's last value, a set's distinct count.

use crate::api::{run_buckets, AppState};
use crate::error::ApiError;
use crate::query::{answer, GroupBy, QueryParams};
use crate::stitch::Buckets;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::VectorSelector;
use std::collections::BTreeMap;
use thermo_core::aggregate::{Aggregate, MetricType};
use thermo_core::query::Stat;
use thermo_core::window::Resolution;
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// The label holding a series' name.
pub const NAME: &str = "__name__";

/// `name` with every character outside `[a-zA-Z0-9_:]` replaced by `_`.
pub fn prom_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One Prometheus metric answered from a thermo metric: its name and the stat of each window.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub prom: String,
    pub thermo: String,
    pub metric_type: MetricType,
    pub stat: Stat,
}

/// The Prometheus metrics of the thermo metrics `metrics` (name and type).
pub fn sources(metrics: &[(String, MetricType)]) -> Vec<Source> {
    let mut out = Vec::new();
    for (name, t) in metrics {
        let base = prom_name(name);
        let source = |prom: String, stat| Source {
            prom,
            thermo: name.clone(),
            metric_type: *t,
            stat,
        };
        match t {
            MetricType::Counter => out.push(source(base, Stat::Sum)),
            MetricType::Gauge => out.push(source(base, Stat::Last)),
            MetricType::Set => out.push(source(base, Stat::Count)),
            MetricType::Histogram => {
                out.push(source(format!("{base}_count"), Stat::Count));
                out.push(source(format!("{base}_sum"), Stat::Sum));
            }
        }
    }
    out.sort_by(|a, b| (&a.prom, &a.thermo).cmp(&(&b.prom, &b.thermo)));
    out
}

/// The sources whose Prometheus name satisfies every `__name__` matcher of `matchers`, and a
/// warning for each Prometheus name answered from more than one thermo metric.
pub fn matching_sources(all: &[Source], matchers: &[Matcher]) -> (Vec<Source>, Vec<String>) {
    let hits: Vec<Source> = all
        .iter()
        .filter(|s| {
            matchers
                .iter()
                .filter(|m| m.name == NAME)
                .all(|m| m.is_match(&s.prom))
        })
        .cloned()
        .collect();
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &hits {
        by_name.entry(&s.prom).or_default().push(&s.thermo);
    }
    let warnings = by_name
        .into_iter()
        .filter(|(_, thermo)| thermo.len() > 1)
        .map(|(prom, thermo)| {
            format!(
                "{prom} answers thermo metrics {} (their names map to one Prometheus name)",
                thermo.join(", ")
            )
        })
        .collect();
    (hits, warnings)
}

/// Whether a series with these labels (`__name__` included) satisfies every matcher. A label a
/// series does not have matches as the empty string, as in Prometheus.
pub fn labels_match(labels: &BTreeMap<String, String>, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
}

/// The matchers of a selector, its name included as a `__name__` matcher.
pub fn all_matchers(vs: &VectorSelector) -> Vec<Matcher> {
    let mut out = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        out.push(Matcher::new(MatchOp::Equal, NAME, name));
    }
    out
}

/// Which value of a window a read takes: the type's ([`Source::stat`]), or a gauge's min or max
/// (`min_over_time`, `max_over_time`; other types keep theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Value,
    Min,
    Max,
}

impl Pick {
    fn stat(self, s: &Source) -> Stat {
        match (self, s.metric_type) {
            (Pick::Min, MetricType::Gauge) => Stat::Min,
            (Pick::Max, MetricType::Gauge) => Stat::Max,
            _ => s.stat,
        }
    }
}

/// One series' samples: its labels and `(window start, value)` in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

/// What the selectors of one query read through: the service, the tenant, the tenant's metrics
/// (read from the hot store once per query, at the first selector) and the samples the reads
/// touched so far (bounded by `max_samples` as a whole).
pub struct Reads<'a, H, K, C> {
    pub st: &'a AppState<H, K, C>,
    pub tenant: &'a str,
    metrics: Option<Vec<(String, MetricType)>>,
    pub touched: u64,
}

impl<'a, H: HotStore, K: Catalog, C: ColdStore> Reads<'a, H, K, C> {
    pub fn new(st: &'a AppState<H, K, C>, tenant: &'a str) -> Self {
        Self {
            st,
            tenant,
            metrics: None,
            touched: 0,
        }
    }

    /// The samples (`pick` of each window) of every series matching `matchers` in windows
    /// `[from, to)` of `res`.
    pub async fn samples(
        &mut self,
        matchers: &[Matcher],
        (res, (from, to)): (Resolution, (i64, i64)),
        pick: Pick,
    ) -> Result<(Vec<Series>, Vec<String>), ApiError> {
        let (hits, filters, warnings) = self.selected(matchers, sources).await?;
        let mut out = Vec::new();
        for s in hits {
            let p = window_params(&s, pick.stat(&s), &filters, res, (from, to));
            let Some((buckets, metric_type)) = self.read(&p).await? else {
                continue;
            };
            for series in answer(&p, buckets, metric_type, None).series {
                let mut labels = series.tags;
                labels.insert(NAME.to_string(), s.prom.clone());
                if labels_match(&labels, matchers) && !series.points.is_empty() {
                    out.push(Series {
                        labels,
                        samples: series.points,
                    });
                }
            }
            within_max_series(self.st, out.len())?;
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok((out, warnings))
    }

    /// The HDR states of every window `[from, to)` of `res` of every histogram series matching
    /// `matchers`.
    pub async fn histograms(
        &mut self,
        matchers: &[Matcher],
        (res, (from, to)): (Resolution, (i64, i64)),
    ) -> Result<(Vec<HistSeries>, Vec<String>), ApiError> {
        let (hits, filters, warnings) = self.selected(matchers, histogram_sources).await?;
        let mut out = Vec::new();
        for s in hits {
            let p = window_params(&s, Stat::Count, &filters, res, (from, to));
            let Some((buckets, _)) = self.read(&p).await? else {
                continue;
            };
            for (key, windows) in buckets.into_series() {
                let mut labels: BTreeMap<String, String> = key.tags().iter().cloned().collect();
                labels.insert(NAME.to_string(), s.prom.clone());
                if labels_match(&labels, matchers) && !windows.is_empty() {
                    out.push(HistSeries {
                        labels,
                        windows: windows.into_iter().collect(),
                    });
                }
            }
            within_max_series(self.st, out.len())?;
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok((out, warnings))
    }

    /// One source's step buckets, its samples counted (`None`: a metric nothing holds).
    async fn read(&mut self, p: &QueryParams) -> Result<Option<(Buckets, MetricType)>, ApiError> {
        match run_buckets(self.st, self.tenant, p, self.touched).await {
            Ok((buckets, metric_type, _)) => {
                self.touched += buckets.touched();
                Ok(Some((buckets, metric_type)))
            }
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sources of `all` (of the tenant's metrics) that a selector's `matchers` name, the tag
    /// filters that narrow their reads (equality matchers; the others are applied to what the
    /// reads return), and the warnings of names answered twice.
    async fn selected(
        &mut self,
        matchers: &[Matcher],
        all: fn(&[(String, MetricType)]) -> Vec<Source>,
    ) -> Result<(Vec<Source>, Vec<(String, String)>, Vec<String>), ApiError> {
        if matchers.iter().all(|m| m.is_match("")) {
            return Err(ApiError::param(
                "query",
                "vector selector must contain at least one non-empty matcher",
            ));
        }
        let metrics = match &mut self.metrics {
            Some(m) => m,
            none => none.insert(self.st.hot.metrics(self.tenant).await?),
        };
        let (hits, warnings) = matching_sources(&all(metrics), matchers);
        let filters = matchers
            .iter()
            .filter(|m| m.name != NAME && matches!(m.op, MatchOp::Equal) && !m.value.is_empty())
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect();
        Ok((hits, filters, warnings))
    }
}

/// A native query of `s`'s every series, one bucket per window `[from, to)` of `res`.
fn window_params(
    s: &Source,
    stat: Stat,
    filters: &[(String, String)],
    res: Resolution,
    (from, to): (i64, i64),
) -> QueryParams {
    QueryParams {
        metric: s.thermo.clone(),
        from,
        to,
        step: res.seconds(),
        stat,
        filters: filters.to_vec(),
        group_by: GroupBy::Each,
        resolution: res,
    }
}

/// The bound on a selector's series, whatever number of metrics it spans.
fn within_max_series<H, K, C>(st: &AppState<H, K, C>, n: usize) -> Result<(), ApiError> {
    if n > st.cfg.max_series {
        return Err(ApiError::limit(
            "query",
            format!(
                "{n} series match a selector; at most {} (max_series): narrow it",
                st.cfg.max_series
            ),
        ));
    }
    Ok(())
}

/// The histogram-valued names: each thermo histogram under its Prometheus name itself (besides
/// `_count` and `_sum`), read only by the `histogram_*` functions.
pub fn histogram_sources(metrics: &[(String, MetricType)]) -> Vec<Source> {
    let mut out: Vec<Source> = metrics
        .iter()
        .filter(|(_, t)| *t == MetricType::Histogram)
        .map(|(name, t)| Source {
            prom: prom_name(name),
            thermo: name.clone(),
            metric_type: *t,
            stat: Stat::Count,
        })
        .collect();
    out.sort_by(|a, b| (&a.prom, &a.thermo).cmp(&(&b.prom, &b.thermo)));
    out
}

/// One histogram series: its labels and `(window start, state)` in time order.
#[derive(Debug, Clone)]
pub struct HistSeries {
    pub labels: BTreeMap<String, String>,
    pub windows: Vec<(i64, Aggregate)>,
}

/// The value at evaluation time `t` of a series sampled at `samples`: its latest sample at or
/// before `t` and after `t - lookback`, as Prometheus's lookback delta.
pub fn at(samples: &[(i64, f64)], t: f64, lookback: i64) -> Option<f64> {
    let i = samples.partition_point(|(ts, _)| (*ts as f64) <= t);
    let (ts, v) = *samples.get(i.checked_sub(1)?)?;
    ((ts as f64) > t - lookback as f64).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_statsd_exporter() {
        assert_eq!(prom_name("http.latency"), "http_latency");
        assert_eq!(prom_name("a-b c/d:e_f9"), "a_b_c_d:e_f9");
        let all = sources(&[
            ("http.latency".into(), MetricType::Histogram),
            ("http_latency_count".into(), MetricType::Counter),
            ("mem".into(), MetricType::Gauge),
        ]);
        let names: Vec<&str> = all.iter().map(|s| s.prom.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_latency_count",
                "http_latency_count",
                "http_latency_sum",
                "mem"
            ]
        );
        let m = [Matcher::new(MatchOp::Equal, NAME, "http_latency_count")];
        let (hits, warnings) = matching_sources(&all, &m);
        assert_eq!(hits.len(), 2);
        assert_eq!(
            warnings,
            ["http_latency_count answers thermo metrics http.latency, http_latency_count (their names map to one Prometheus name)"]
        );
    }

    #[test]
    fn lookback_takes_the_latest_sample_not_too_old() {
        let s = [(60, 1.0), (120, 2.0), (300, 3.0)];
        assert_eq!(at(&s, 59.0, 300), None);
        assert_eq!(at(&s, 60.0, 300), Some(1.0));
        assert_eq!(at(&s, 299.5, 300), Some(2.0));
        assert_eq!(at(&s, 420.0, 300), Some(3.0));
        assert_eq!(at(&s, 600.0, 300), None); // 300 is not after 600 - 300
    }
}
