//! Histogram-valued PromQL over thermo's HDR states: `histogram_quantile`, `histogram_fraction`,
//! `histogram_count`, `histogram_sum`, `histogram_avg` of
//!
//! - a histogram metric's name (`http_latency`): each series' latest window within the lookback;
//! - `rate(h[r])`, `increase(h[r])`, `sum_over_time(h[r])`: the windows that ended in `(t - r, t]`
//!   merged (`rate` scales counts and sums by `1 / r`);
//! - `sum by (...)` / `sum without (...)` of those: the series of each group merged;
//!
//! so `histogram_quantile(0.99, sum by (route) (rate(http_latency[5m])))` reads the quantile from
//! the merged HDR histogram of every minute and every series of each route, never from averaged
//! quantiles (within `thermo_core::aggregate::HIST_RELATIVE_ERROR`). `histogram_fraction(l, u, h)`
//! is the share of `h`'s observations in `[l, u]`.
//!
//! A query whose result is one of these histogram-valued expressions answers its histogram series
//! as Prometheus answers native histograms (`histogram` in a vector, `histograms` in a matrix:
//! count, sum and buckets, which Grafana draws as a heatmap). The buckets are Prometheus's
//! exponential ones of schema [`SCHEMA`] (each `2^(1/8)` ≈ 1.09 times the last): every HDR bucket's
//! count goes to the exponential bucket holding its lowest value (a value recorded exactly, as
//! every integer is, is its HDR bucket's lowest, so a power of two lands in the bucket it bounds
//! from above; others move by at most the HDR's 0.1%), and the HDR's zero bucket (values below
//! `0.5 / HIST_SCALE`, negative ones included) is Prometheus's zero bucket.

use super::eval::{matching_labels, unsupported, Eval, Labels, Row, Val};
use super::select::{all_matchers, HistSeries, NAME};
use super::{lookback_for, PromError};
use promql_parser::parser::token::T_SUM;
use promql_parser::parser::{AggregateExpr, Call, Expr, MatrixSelector, VectorSelector};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use thermo_core::aggregate::{Aggregate, HIST_SCALE};
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// The schema of the native histogram buckets answered: `2^(2^-SCHEMA)` apart (Prometheus's
/// default bucket factor 1.1 gives this schema too).
pub const SCHEMA: u8 = 3;
/// Prometheus's boundary rules: `(lower, upper]` and `[lower, upper]`.
const OPEN_LEFT: u8 = 0;
const CLOSED_BOTH: u8 = 3;

/// A histogram at one time: the merged state and the factor its count and sum are scaled by.
#[derive(Debug, Clone)]
pub struct HistValue {
    pub state: Aggregate,
    pub scale: f64,
}

impl HistValue {
    fn merge(&mut self, other: &HistValue) {
        if let Err(e) = self.state.merge(&other.state) {
            tracing::warn!("skipped a histogram of another type: {e}");
        }
    }

    /// `(count, sum)`, scaled.
    fn count_sum(&self) -> Option<(f64, f64)> {
        match &self.state {
            Aggregate::Histogram(h) => Some((h.count as f64 * self.scale, h.sum * self.scale)),
            _ => None,
        }
    }

    /// The share of the observations whose HDR bucket's lowest value lies in `[lower, upper]`
    /// (each observation's value within the HDR's resolution); NaN without observations, as
    /// Prometheus.
    fn fraction(&self, lower: f64, upper: f64) -> Option<f64> {
        let Aggregate::Histogram(h) = &self.state else {
            return None;
        };
        if h.count == 0 {
            return Some(f64::NAN);
        }
        let inside: u64 = h
            .hdr
            .iter_recorded()
            .filter(|b| {
                let x = h.hdr.lowest_equivalent(b.value_iterated_to()) as f64 / HIST_SCALE;
                lower <= x && x <= upper
            })
            .map(|b| b.count_at_value())
            .sum();
        Some(inside as f64 / h.hdr.len() as f64)
    }

    /// Prometheus's JSON of a native histogram: count, sum and the buckets `[boundary rule, lower,
    /// upper, count]` of schema [`SCHEMA`] (see the module docs), counts scaled.
    pub fn native_json(&self) -> Option<Value> {
        let Aggregate::Histogram(h) = &self.state else {
            return None;
        };
        let per_power = f64::from(1u32 << SCHEMA);
        let mut zero = 0u64;
        let mut buckets: BTreeMap<i32, u64> = BTreeMap::new();
        for b in h.hdr.iter_recorded() {
            let scaled = h.hdr.lowest_equivalent(b.value_iterated_to());
            if scaled == 0 {
                zero += b.count_at_value();
                continue;
            }
            let x = scaled as f64 / HIST_SCALE;
            // Bucket i is (2^((i-1)/8), 2^(i/8)]; the float log is mended at the edges.
            let mut i = (x.log2() * per_power).ceil() as i32;
            if x > (f64::from(i) / per_power).exp2() {
                i += 1;
            } else if x <= (f64::from(i - 1) / per_power).exp2() {
                i -= 1;
            }
            *buckets.entry(i).or_default() += b.count_at_value();
        }
        let count = |n: u64| super::format_value(n as f64 * self.scale);
        let mut out = Vec::with_capacity(buckets.len() + 1);
        if zero > 0 {
            let edge = 0.5 / HIST_SCALE;
            let lower = (-edge).min(h.min);
            out.push(json!([
                CLOSED_BOTH,
                super::format_value(lower),
                super::format_value(edge),
                count(zero)
            ]));
        }
        for (i, n) in buckets {
            out.push(json!([
                OPEN_LEFT,
                super::format_value((f64::from(i - 1) / per_power).exp2()),
                super::format_value((f64::from(i) / per_power).exp2()),
                count(n)
            ]));
        }
        let (c, s) = self.count_sum()?;
        Some(json!({
            "count": super::format_value(c),
            "sum": super::format_value(s),
            "buckets": out,
        }))
    }

    /// The value at quantile `q`: -Inf below 0, +Inf above 1, NaN for NaN, as Prometheus.
    fn quantile(&self, q: f64) -> Option<f64> {
        let Aggregate::Histogram(h) = &self.state else {
            return None;
        };
        if q.is_nan() {
            return Some(f64::NAN);
        }
        if q < 0.0 {
            return Some(f64::NEG_INFINITY);
        }
        if q > 1.0 {
            return Some(f64::INFINITY);
        }
        h.quantile(q)
    }
}

/// One series of a histogram-valued vector.
#[derive(Debug, Clone)]
pub struct HistRow {
    pub labels: Labels,
    pub values: Vec<Option<HistValue>>,
}

type Boxed<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, PromError>> + Send + 'a>>;

impl<H: HotStore, K: Catalog, C: ColdStore> Eval<'_, H, K, C> {
    /// `histogram_quantile`, `histogram_fraction`, `histogram_count`, `histogram_sum`,
    /// `histogram_avg`.
    pub(super) async fn histogram_fn(&mut self, call: &Call) -> Result<Val, PromError> {
        let args = &call.args.args;
        let name = call.func.name;
        let arg = |i: usize| {
            args.get(i)
                .ok_or_else(|| PromError::bad_data(format!("{name}() needs {} arguments", i + 1)))
        };
        // The scalar arguments before the histogram: φ, or the fraction's bounds.
        let scalars = match name {
            "histogram_quantile" => 1,
            "histogram_fraction" => 2,
            _ => 0,
        };
        let mut bounds = Vec::with_capacity(scalars);
        for i in 0..scalars {
            match self.eval(arg(i)?).await? {
                Val::Scalar(s) => bounds.push(s),
                Val::Vector(_) => {
                    return Err(PromError::bad_data(format!(
                        "{name}(): argument {} must be a scalar",
                        i + 1
                    )))
                }
            }
        }
        let rows = self.hist(arg(scalars)?).await?;
        let scalar = |k: usize, i: usize| bounds[k][i];
        let rows = rows
            .into_iter()
            .map(|r| {
                let mut labels = r.labels;
                labels.remove(NAME);
                let values = r
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let v = v.as_ref()?;
                        match name {
                            "histogram_quantile" => v.quantile(scalar(0, i)),
                            "histogram_fraction" => v.fraction(scalar(0, i), scalar(1, i)),
                            "histogram_count" => v.count_sum().map(|(c, _)| c),
                            "histogram_sum" => v.count_sum().map(|(_, s)| s),
                            _ => v
                                .count_sum()
                                .map(|(c, s)| if c == 0.0 { f64::NAN } else { s / c }),
                        }
                    })
                    .collect();
                Row { labels, values }
            })
            .collect();
        Ok(Val::Vector(rows))
    }

    /// The histogram series of a query's result `e` (none unless `e` is histogram-valued: a
    /// histogram metric, `rate`/`increase`/`sum_over_time` of one, or a sum of those), but for
    /// those whose labels a float series of the result (`floats`) has, with a warning.
    pub(super) async fn histogram_result(
        &mut self,
        e: &Expr,
        floats: &Val,
    ) -> Result<Vec<HistRow>, PromError> {
        if !histogram_valued(e) {
            return Ok(Vec::new());
        }
        let mut rows = self.hist(e).await?;
        if let Val::Vector(floats) = floats {
            let taken: BTreeSet<&Labels> = floats.iter().map(|r| &r.labels).collect();
            rows.retain(|r| {
                let clash = taken.contains(&r.labels);
                if clash {
                    self.warnings.push(format!(
                        "{:?} has float and histogram values: the histogram is left out",
                        r.labels
                    ));
                }
                !clash
            });
        }
        Ok(rows)
    }

    /// A histogram-valued expression over the grid.
    fn hist<'b>(&'b mut self, e: &'b Expr) -> Boxed<'b, Vec<HistRow>> {
        Box::pin(async move {
            match e {
                Expr::Paren(p) => self.hist(&p.expr).await,
                Expr::VectorSelector(vs) => self.hist_selector(vs).await,
                Expr::Call(call) => {
                    let scale_by_range = match call.func.name {
                        "rate" => true,
                        "increase" | "sum_over_time" => false,
                        other => {
                            return Err(unsupported(format!("{other}() of a histogram")));
                        }
                    };
                    match call.args.args.first().map(|a| a.as_ref()) {
                        Some(Expr::MatrixSelector(ms)) => {
                            self.hist_range(ms, scale_by_range).await
                        }
                        _ => Err(unsupported(format!(
                            "{}() of anything but a range selector",
                            call.func.name
                        ))),
                    }
                }
                Expr::Aggregate(agg) => self.hist_sum(agg).await,
                _ => Err(unsupported(
                    "this expression as a histogram (a histogram metric, rate/increase/sum_over_time of one, or a sum of those)",
                )),
            }
        })
    }

    /// The windows of a selector's histogram series over the grid widened by `range` back, each
    /// stamped with its end; those past the last final minute left out.
    async fn hist_read(
        &mut self,
        vs: &VectorSelector,
        range: i64,
    ) -> Result<(Vec<HistSeries>, i64), PromError> {
        let offset = super::eval::offset_secs(vs)?;
        let (res, span) = self.span(offset, range);
        let (mut series, warnings) = self
            .reads
            .histograms(&all_matchers(vs), (res, span))
            .await?;
        self.warnings.extend(warnings);
        series.retain_mut(|s| self.to_ends(res, &mut s.windows));
        Ok((series, offset))
    }

    async fn hist_selector(&mut self, vs: &VectorSelector) -> Result<Vec<HistRow>, PromError> {
        let lookback = lookback_for(self.step);
        let (series, offset) = self.hist_read(vs, lookback).await?;
        Ok(series
            .into_iter()
            .map(|s| HistRow {
                values: self
                    .times
                    .iter()
                    .map(|&t| {
                        let t = t - offset as f64;
                        let i = s.windows.partition_point(|(end, _)| (*end as f64) <= t);
                        let (end, state) = s.windows.get(i.checked_sub(1)?)?;
                        ((*end as f64) > t - lookback as f64).then(|| HistValue {
                            state: state.clone(),
                            scale: 1.0,
                        })
                    })
                    .collect(),
                labels: s.labels,
            })
            .collect())
    }

    async fn hist_range(
        &mut self,
        ms: &MatrixSelector,
        scale_by_range: bool,
    ) -> Result<Vec<HistRow>, PromError> {
        let range = ms.range.as_secs() as i64;
        let (series, offset) = self.hist_read(&ms.vs, range).await?;
        let scale = if scale_by_range && range > 0 {
            1.0 / range as f64
        } else {
            1.0
        };
        Ok(series
            .into_iter()
            .map(|s| {
                let values = self.over_grid(&s.windows, offset, range, |inside| {
                    let mut inside = inside.iter();
                    let (_, first) = inside.next()?;
                    let mut v = HistValue {
                        state: first.clone(),
                        scale,
                    };
                    for (_, state) in inside {
                        v.merge(&HistValue {
                            state: state.clone(),
                            scale,
                        });
                    }
                    Some(v)
                });
                let mut labels = s.labels;
                labels.remove(NAME);
                HistRow { labels, values }
            })
            .collect())
    }

    async fn hist_sum(&mut self, agg: &AggregateExpr) -> Result<Vec<HistRow>, PromError> {
        if agg.op.id() != T_SUM {
            return Err(unsupported(format!(
                "the aggregation {} of histograms",
                agg.op
            )));
        }
        let rows = self.hist(&agg.expr).await?;
        let mut groups: BTreeMap<Labels, Vec<Option<HistValue>>> = BTreeMap::new();
        let n = self.times.len();
        for r in rows {
            let labels = match &agg.modifier {
                None => Labels::new(),
                Some(m) => matching_labels(&r.labels, Some(m)),
            };
            let group = groups.entry(labels).or_insert_with(|| vec![None; n]);
            for (slot, v) in group.iter_mut().zip(r.values) {
                match (slot.as_mut(), v) {
                    (Some(acc), Some(v)) => acc.merge(&v),
                    (None, Some(v)) => *slot = Some(v),
                    (_, None) => {}
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|(labels, values)| HistRow { labels, values })
            .collect())
    }
}

/// Whether `e` is what [`Eval::hist`] evaluates: a histogram metric's selector,
/// `rate`/`increase`/`sum_over_time` of its range, or a `sum` of those.
fn histogram_valued(e: &Expr) -> bool {
    match e {
        Expr::Paren(p) => histogram_valued(&p.expr),
        Expr::VectorSelector(_) => true,
        Expr::Call(c) => {
            matches!(c.func.name, "rate" | "increase" | "sum_over_time")
                && matches!(
                    c.args.args.first().map(|a| a.as_ref()),
                    Some(Expr::MatrixSelector(_))
                )
        }
        Expr::Aggregate(a) => a.op.id() == T_SUM && histogram_valued(&a.expr),
        _ => false,
    }
}
