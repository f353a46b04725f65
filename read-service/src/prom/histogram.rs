//! Histogram-valued PromQL over thermo's HDR states: `histogram_quantile`, `histogram_count`,
//! `histogram_sum`, `histogram_avg` of
//!
//! - a histogram metric's name (`http_latency`): each series' latest window within the lookback;
//! - `rate(h[r])`, `increase(h[r])`, `sum_over_time(h[r])`: the windows that ended in `(t - r, t]`
//!   merged (`rate` scales counts and sums by `1 / r`);
//! - `sum by (...)` / `sum without (...)` of those: the series of each group merged;
//!
//! so `histogram_quantile(0.99, sum by (route) (rate(http_latency[5m])))` reads the quantile from
//! the merged HDR histogram of every minute and every series of each route, never from averaged
//! quantiles (within `thermo_core::aggregate::HIST_RELATIVE_ERROR`). A histogram-valued result
//! itself (without one of these functions) is not answered yet (400).

use super::eval::{matching_labels, unsupported, Eval, Labels, Row, Val};
use super::select::{all_matchers, histograms, HistSeries, NAME};
use super::{lookback_for, PromError};
use promql_parser::parser::token::T_SUM;
use promql_parser::parser::{AggregateExpr, Call, Expr, MatrixSelector, VectorSelector};
use std::collections::BTreeMap;
use thermo_core::aggregate::Aggregate;
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

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
    /// `histogram_quantile`, `histogram_count`, `histogram_sum`, `histogram_avg`.
    pub(super) async fn histogram_fn(&mut self, call: &Call) -> Result<Val, PromError> {
        let args = &call.args.args;
        let name = call.func.name;
        let arg = |i: usize| {
            args.get(i)
                .ok_or_else(|| PromError::bad_data(format!("{name}() needs {} arguments", i + 1)))
        };
        let (phi, rows) = if name == "histogram_quantile" {
            let phi = match self.eval(arg(0)?).await? {
                Val::Scalar(s) => s,
                Val::Vector(_) => return Err(PromError::bad_data("φ must be a scalar")),
            };
            (phi, self.hist(arg(1)?).await?)
        } else {
            (Vec::new(), self.hist(arg(0)?).await?)
        };
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
                            "histogram_quantile" => v.quantile(phi[i]),
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
        let (mut series, warnings) =
            histograms(self.st, self.tenant, &all_matchers(vs), res, span).await?;
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
