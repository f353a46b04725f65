//! PromQL evaluation over thermo's per-window samples.
//!
//! An expression is evaluated at every time of the query's grid at once (`start, start + step,
//! ... <= end`; one time for an instant query): a scalar is one value per time, an instant vector
//! one row per series with a value (or none) per time. Samples are stamped with the *end* of their
//! window ([`super::select`]), so a window is counted at a time once it is over: `increase(c[5m])`
//! at 10:05 is the exact sum of the minutes 10:00 to 10:04, nothing extrapolated, nothing reset
//! (thermo stores per-window increments), and `rate` is that over the range's seconds.

use super::histogram::HistRow;
use super::select::{all_matchers, at, Pick, Reads, Series, NAME};
use super::{lookback_for, resolution_for, PromError};
use crate::api::AppState;
use promql_parser::label::MatchOp;
use promql_parser::parser::token::{
    T_ADD, T_AVG, T_BOTTOMK, T_COUNT, T_DIV, T_EQLC, T_GTE, T_GTR, T_LSS, T_LTE, T_MAX, T_MIN,
    T_MOD, T_MUL, T_NEQ, T_POW, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, Offset,
    VectorMatchCardinality, VectorSelector,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use thermo_core::window::Resolution;
use thermo_store::catalog::Catalog;
use thermo_store::cold::ColdStore;
use thermo_store::hot::HotStore;

/// Labels of a series.
pub type Labels = BTreeMap<String, String>;

/// One series of an instant vector: its labels and its value at each time of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// What an expression evaluates to over the grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Scalar(Vec<f64>),
    Vector(Vec<Row>),
}

/// One query's evaluation: where to read, the grid, and the warnings gathered.
pub struct Eval<'a, H, K, C> {
    /// Where the selectors read.
    pub reads: Reads<'a, H, K, C>,
    /// The evaluation times.
    pub times: Vec<f64>,
    /// Their step (60 for an instant query): it picks the windows read.
    pub step: f64,
    /// Windows that end after this are left out (`crate::finality`); `None`: none is.
    pub final_until: Option<i64>,
    pub warnings: Vec<String>,
}

/// A query's result: its value (float series or a scalar), its histogram series, and the
/// warnings of its evaluation.
pub struct Evaluated {
    pub value: Val,
    pub histograms: Vec<HistRow>,
    pub warnings: Vec<String>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, PromError>> + Send + 'a>>;

pub(super) fn unsupported(what: impl std::fmt::Display) -> PromError {
    PromError::bad_data(format!("unsupported: {what}"))
}

pub(super) fn offset_secs(vs: &VectorSelector) -> Result<i64, PromError> {
    if vs.at.is_some() {
        return Err(unsupported("the @ modifier"));
    }
    Ok(match &vs.offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_secs() as i64,
        Some(Offset::Neg(d)) => -(d.as_secs() as i64),
    })
}

impl<'a, H: HotStore, K: Catalog, C: ColdStore> Eval<'a, H, K, C> {
    /// Evaluates `e` at `times` (their step picks the windows read) on the windows that end by
    /// `final_until` (all if `None`): its value, its histogram series (see
    /// [`Self::histogram_result`]) and the warnings gathered.
    pub async fn run(
        st: &'a AppState<H, K, C>,
        tenant: &'a str,
        e: &Expr,
        (times, step): (Vec<f64>, f64),
        final_until: Option<i64>,
    ) -> Result<Evaluated, PromError> {
        let mut ev = Self {
            reads: Reads::new(st, tenant),
            times,
            step,
            final_until,
            warnings: Vec::new(),
        };
        let value = ev.eval(e).await?;
        let histograms = ev.histogram_result(e, &value).await?;
        Ok(Evaluated {
            value,
            histograms,
            warnings: ev.warnings,
        })
    }

    /// Evaluates `e` over the grid.
    pub fn eval<'b>(&'b mut self, e: &'b Expr) -> Boxed<'b, Val> {
        Box::pin(async move {
            match e {
                Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.times.len()])),
                Expr::Paren(p) => self.eval(&p.expr).await,
                Expr::Unary(u) => Ok(map_values(self.eval(&u.expr).await?, |v| -v, true)),
                Expr::VectorSelector(vs) => self.selector(vs).await,
                Expr::Call(call) => self.call(call).await,
                Expr::Aggregate(agg) => self.aggregate(agg).await,
                Expr::Binary(b) => self.binary(b).await,
                Expr::MatrixSelector(_) => Err(PromError::bad_data(
                    "a range vector is not a result: use it in a function such as rate(...)",
                )),
                Expr::StringLiteral(_) => Err(unsupported("a string as a result")),
                Expr::Subquery(_) => Err(unsupported("subqueries")),
                Expr::Extension(_) => Err(unsupported("extension expressions")),
            }
        })
    }

    /// The resolution read and the windows `[from, to)` that cover the grid widened by `range`
    /// back, moved by `offset`.
    pub(super) fn span(&self, offset: i64, range: i64) -> (Resolution, (i64, i64)) {
        let res = resolution_for(self.step);
        let first = self.times.first().copied().unwrap_or_default();
        let last = self.times.last().copied().unwrap_or_default();
        let from = res.start(first.floor() as i64 - offset - range) - res.seconds();
        let to = res.start(last.floor() as i64 - offset) + res.seconds();
        (res, (from, to))
    }

    /// `f` at each time `t` of the grid of the samples (in time order) stamped in
    /// `(t - offset - range, t - offset]`, found by binary search.
    pub(super) fn over_grid<T, U>(
        &self,
        samples: &[(i64, T)],
        offset: i64,
        range: i64,
        f: impl Fn(&[(i64, T)]) -> Option<U>,
    ) -> Vec<Option<U>> {
        self.times
            .iter()
            .map(|&t| {
                let end = t - offset as f64;
                let lo = samples.partition_point(|(ts, _)| (*ts as f64) <= end - range as f64);
                let hi = samples.partition_point(|(ts, _)| (*ts as f64) <= end);
                f(&samples[lo..hi.max(lo)])
            })
            .collect()
    }

    /// Stamps windows of `res` (by start, in time order) with their ends, and leaves out those
    /// that end after the last final minute; false if none is left.
    pub(super) fn to_ends<T>(&self, res: Resolution, windows: &mut Vec<(i64, T)>) -> bool {
        for (ts, _) in windows.iter_mut() {
            *ts += res.seconds();
        }
        if let Some(until) = self.final_until {
            windows.retain(|(end, _)| *end <= until);
        }
        !windows.is_empty()
    }

    /// The end-stamped samples of a selector's series, over the grid widened by `range` back.
    async fn read(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        pick: Pick,
    ) -> Result<(Vec<Series>, i64), PromError> {
        let offset = offset_secs(vs)?;
        let (res, span) = self.span(offset, range);
        let (mut series, warnings) = self
            .reads
            .samples(&all_matchers(vs), (res, span), pick)
            .await?;
        self.warnings.extend(warnings);
        series.retain_mut(|s| self.to_ends(res, &mut s.samples));
        Ok((series, offset))
    }

    async fn selector(&mut self, vs: &VectorSelector) -> Result<Val, PromError> {
        let lookback = lookback_for(self.step);
        let (series, offset) = self.read(vs, lookback, Pick::Value).await?;
        let rows = series
            .into_iter()
            .map(|s| Row {
                values: self
                    .times
                    .iter()
                    .map(|&t| at(&s.samples, t - offset as f64, lookback))
                    .collect(),
                labels: s.labels,
            })
            .collect();
        Ok(Val::Vector(rows))
    }

    /// A function of a range vector at every time: `f` of the samples in `(t - range, t]`.
    async fn over_time(
        &mut self,
        ms: &MatrixSelector,
        pick: Pick,
        keep_name: bool,
        f: impl Fn(&[f64], f64) -> f64,
    ) -> Result<Val, PromError> {
        let range = ms.range.as_secs() as i64;
        let (series, offset) = self.read(&ms.vs, range, pick).await?;
        let rows = series
            .into_iter()
            .map(|s| {
                let values = self.over_grid(&s.samples, offset, range, |inside| {
                    let inside: Vec<f64> = inside.iter().map(|(_, v)| *v).collect();
                    (!inside.is_empty()).then(|| f(&inside, range as f64))
                });
                let mut labels = s.labels;
                if !keep_name {
                    labels.remove(NAME);
                }
                Row { labels, values }
            })
            .collect();
        Ok(Val::Vector(rows))
    }

    async fn call(&mut self, call: &Call) -> Result<Val, PromError> {
        let args = &call.args.args;
        let name = call.func.name;
        let matrix = |i: usize| match args.get(i).map(|a| a.as_ref()) {
            Some(Expr::MatrixSelector(ms)) => Ok(ms),
            _ => Err(unsupported(format!(
                "{name}() of anything but a range selector"
            ))),
        };
        match name {
            "rate" => {
                self.over_time(matrix(0)?, Pick::Value, false, |v, r| {
                    v.iter().sum::<f64>() / r
                })
                .await
            }
            "increase" | "sum_over_time" => {
                self.over_time(matrix(0)?, Pick::Value, false, |v, _| v.iter().sum())
                    .await
            }
            "avg_over_time" => {
                self.over_time(matrix(0)?, Pick::Value, false, |v, _| {
                    v.iter().sum::<f64>() / v.len() as f64
                })
                .await
            }
            "min_over_time" => {
                self.over_time(matrix(0)?, Pick::Min, false, |v, _| {
                    v.iter().copied().fold(f64::INFINITY, f64::min)
                })
                .await
            }
            "max_over_time" => {
                self.over_time(matrix(0)?, Pick::Max, false, |v, _| {
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                })
                .await
            }
            "count_over_time" => {
                self.over_time(matrix(0)?, Pick::Value, false, |v, _| v.len() as f64)
                    .await
            }
            "last_over_time" => {
                self.over_time(matrix(0)?, Pick::Value, true, |v, _| v[v.len() - 1])
                    .await
            }
            "abs" | "round" | "clamp_min" | "clamp_max" => {
                let arg = self.arg(args, 0).await?;
                let param = match name {
                    "clamp_min" | "clamp_max" => Some(self.scalar_arg(args, 1).await?),
                    _ => None,
                };
                let nearest = match (name, args.len()) {
                    ("round", 2) => self.scalar_arg(args, 1).await?,
                    _ => vec![1.0; self.times.len()],
                };
                let Val::Vector(rows) = arg else {
                    return Err(PromError::bad_data(format!(
                        "{name}() needs an instant vector"
                    )));
                };
                let rows = rows
                    .into_iter()
                    .map(|mut r| {
                        r.labels.remove(NAME);
                        for (i, v) in r.values.iter_mut().enumerate() {
                            *v = v.map(|x| match name {
                                "abs" => x.abs(),
                                "round" => {
                                    let to = 1.0 / nearest[i];
                                    (x * to + 0.5).floor() / to
                                }
                                "clamp_min" => x.max(param.as_ref().map_or(x, |p| p[i])),
                                _ => x.min(param.as_ref().map_or(x, |p| p[i])),
                            });
                        }
                        r
                    })
                    .collect();
                Ok(Val::Vector(rows))
            }
            "vector" => {
                let s = self.scalar_arg(args, 0).await?;
                Ok(Val::Vector(vec![Row {
                    labels: Labels::new(),
                    values: s.into_iter().map(Some).collect(),
                }]))
            }
            "scalar" => match self.arg(args, 0).await? {
                Val::Vector(rows) => {
                    let n = self.times.len();
                    Ok(Val::Scalar(
                        (0..n)
                            .map(|i| {
                                let present: Vec<f64> =
                                    rows.iter().filter_map(|r| r.values[i]).collect();
                                if present.len() == 1 {
                                    present[0]
                                } else {
                                    f64::NAN
                                }
                            })
                            .collect(),
                    ))
                }
                Val::Scalar(_) => Err(PromError::bad_data("scalar() needs an instant vector")),
            },
            "time" => Ok(Val::Scalar(self.times.clone())),
            "absent" => {
                let arg = self.arg(args, 0).await?;
                let Val::Vector(rows) = arg else {
                    return Err(PromError::bad_data("absent() needs an instant vector"));
                };
                // The labels of the selector's equality matchers, as Prometheus does.
                let labels: Labels = match args.first().map(|a| a.as_ref()) {
                    Some(Expr::VectorSelector(vs)) => all_matchers(vs)
                        .into_iter()
                        .filter(|m| m.name != NAME && matches!(m.op, MatchOp::Equal))
                        .map(|m| (m.name, m.value))
                        .collect(),
                    _ => Labels::new(),
                };
                let values = (0..self.times.len())
                    .map(|i| (!rows.iter().any(|r| r.values[i].is_some())).then_some(1.0))
                    .collect();
                Ok(Val::Vector(vec![Row { labels, values }]))
            }
            "histogram_quantile" | "histogram_fraction" | "histogram_count" | "histogram_sum"
            | "histogram_avg" => self.histogram_fn(call).await,
            other => Err(unsupported(format!("the function {other}()"))),
        }
    }

    async fn arg(&mut self, args: &[Box<Expr>], i: usize) -> Result<Val, PromError> {
        let e = args
            .get(i)
            .ok_or_else(|| PromError::bad_data(format!("missing argument {}", i + 1)))?;
        self.eval(e).await
    }

    async fn scalar_arg(&mut self, args: &[Box<Expr>], i: usize) -> Result<Vec<f64>, PromError> {
        match self.arg(args, i).await? {
            Val::Scalar(s) => Ok(s),
            Val::Vector(_) => Err(PromError::bad_data(format!(
                "argument {} must be a scalar",
                i + 1
            ))),
        }
    }

    async fn aggregate(&mut self, agg: &AggregateExpr) -> Result<Val, PromError> {
        let op = agg.op.id();
        let Val::Vector(rows) = self.eval(&agg.expr).await? else {
            return Err(PromError::bad_data(
                "an aggregation needs an instant vector",
            ));
        };
        let group_of = |labels: &Labels| -> Labels {
            match &agg.modifier {
                None => Labels::new(),
                Some(modifier) => matching_labels(labels, Some(modifier)),
            }
        };
        let mut groups: BTreeMap<Labels, Vec<Row>> = BTreeMap::new();
        for r in rows {
            groups.entry(group_of(&r.labels)).or_default().push(r);
        }
        let n = self.times.len();
        if op == T_TOPK || op == T_BOTTOMK {
            let k = match &agg.param {
                Some(p) => match self.eval(p).await? {
                    Val::Scalar(s) => s,
                    Val::Vector(_) => return Err(PromError::bad_data("k must be a scalar")),
                },
                None => return Err(PromError::bad_data("topk and bottomk need k")),
            };
            let mut out = Vec::new();
            for (_, members) in groups {
                let mut kept: Vec<Row> = members
                    .iter()
                    .map(|r| Row {
                        labels: r.labels.clone(),
                        values: vec![None; n],
                    })
                    .collect();
                for (i, &k) in k.iter().enumerate() {
                    let mut present: Vec<(usize, f64)> = members
                        .iter()
                        .enumerate()
                        .filter_map(|(j, r)| r.values[i].map(|v| (j, v)))
                        .collect();
                    present.sort_by(|a, b| {
                        let o = a.1.total_cmp(&b.1);
                        if op == T_TOPK {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                    let take = if k.is_finite() && k >= 1.0 {
                        k as usize
                    } else {
                        0
                    };
                    for (j, v) in present.into_iter().take(take) {
                        kept[j].values[i] = Some(v);
                    }
                }
                out.extend(
                    kept.into_iter()
                        .filter(|r| r.values.iter().any(Option::is_some)),
                );
            }
            return Ok(Val::Vector(out));
        }
        let combine = |vals: Vec<f64>| -> f64 {
            match op {
                T_SUM => vals.iter().sum(),
                T_AVG => vals.iter().sum::<f64>() / vals.len() as f64,
                T_MIN => vals.iter().copied().fold(f64::INFINITY, f64::min),
                T_MAX => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                _ => vals.len() as f64, // count
            }
        };
        if ![T_SUM, T_AVG, T_MIN, T_MAX, T_COUNT].contains(&op) {
            return Err(unsupported(format!("the aggregation {}", agg.op)));
        }
        let out = groups
            .into_iter()
            .map(|(labels, members)| Row {
                labels,
                values: (0..n)
                    .map(|i| {
                        let vals: Vec<f64> = members.iter().filter_map(|r| r.values[i]).collect();
                        (!vals.is_empty()).then(|| combine(vals))
                    })
                    .collect(),
            })
            .filter(|r| r.values.iter().any(Option::is_some))
            .collect();
        Ok(Val::Vector(out))
    }

    async fn binary(&mut self, b: &BinaryExpr) -> Result<Val, PromError> {
        let op = b.op.id();
        let comparison = [T_EQLC, T_NEQ, T_GTR, T_LSS, T_GTE, T_LTE].contains(&op);
        if !comparison && ![T_ADD, T_SUB, T_MUL, T_DIV, T_MOD, T_POW].contains(&op) {
            return Err(unsupported(format!("the operator {}", b.op)));
        }
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let apply = |x: f64, y: f64| -> f64 {
            match op {
                T_ADD => x + y,
                T_SUB => x - y,
                T_MUL => x * y,
                T_DIV => x / y,
                T_MOD => x % y,
                T_POW => x.powf(y),
                T_EQLC => f64::from(u8::from(x == y)),
                T_NEQ => f64::from(u8::from(x != y)),
                T_GTR => f64::from(u8::from(x > y)),
                T_LSS => f64::from(u8::from(x < y)),
                T_GTE => f64::from(u8::from(x >= y)),
                _ => f64::from(u8::from(x <= y)),
            }
        };
        // A comparison without `bool` keeps the left value where it holds, else drops it.
        let result = |x: f64, y: f64| -> Option<f64> {
            let r = apply(x, y);
            if comparison && !return_bool {
                (r == 1.0).then_some(x)
            } else {
                Some(r)
            }
        };
        let drop_name = !comparison || return_bool;
        let lhs = self.eval(&b.lhs).await?;
        let rhs = self.eval(&b.rhs).await?;
        match (lhs, rhs) {
            (Val::Scalar(x), Val::Scalar(y)) => {
                if comparison && !return_bool {
                    return Err(PromError::bad_data(
                        "comparisons between scalars must use bool",
                    ));
                }
                Ok(Val::Scalar(
                    x.iter().zip(&y).map(|(a, c)| apply(*a, *c)).collect(),
                ))
            }
            (Val::Vector(rows), Val::Scalar(y)) => Ok(Val::Vector(vector_scalar(
                rows,
                |i, x| result(x, y[i]),
                drop_name,
            ))),
            (Val::Scalar(x), Val::Vector(rows)) => {
                // `s < v` keeps v's value where it holds.
                let keep = |i: usize, v: f64| {
                    let r = apply(x[i], v);
                    if comparison && !return_bool {
                        (r == 1.0).then_some(v)
                    } else {
                        Some(r)
                    }
                };
                Ok(Val::Vector(vector_scalar(rows, keep, drop_name)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let modifier = b.modifier.as_ref();
                if modifier.is_some_and(|m| !matches!(m.card, VectorMatchCardinality::OneToOne)) {
                    return Err(unsupported("group_left, group_right and set operators"));
                }
                let matching = modifier.and_then(|m| m.matching.as_ref());
                let key = |labels: &Labels| matching_labels(labels, matching);
                let mut right: BTreeMap<Labels, &Row> = BTreeMap::new();
                for row in &r {
                    if right.insert(key(&row.labels), row).is_some() {
                        return Err(PromError::bad_data(
                            "many-to-many matching not allowed: matching labels must be unique on one side",
                        ));
                    }
                }
                let mut seen = BTreeMap::new();
                let mut out = Vec::new();
                for row in l {
                    let k = key(&row.labels);
                    let Some(other) = right.get(&k) else { continue };
                    if seen.insert(k.clone(), ()).is_some() {
                        return Err(PromError::bad_data(
                            "many-to-many matching not allowed: matching labels must be unique on one side",
                        ));
                    }
                    // As Prometheus: `on` keeps only its labels, `ignoring` drops its labels.
                    let mut labels = match matching {
                        Some(LabelModifier::Include(_)) => k,
                        Some(LabelModifier::Exclude(ign)) => {
                            labels_where(&row.labels, |l| !ign.labels.iter().any(|i| i == l))
                        }
                        None => row.labels.clone(),
                    };
                    if drop_name {
                        labels.remove(NAME);
                    }
                    let values = row
                        .values
                        .iter()
                        .zip(&other.values)
                        .map(|(a, c)| match (a, c) {
                            (Some(a), Some(c)) => result(*a, *c),
                            _ => None,
                        })
                        .collect::<Vec<_>>();
                    if values.iter().any(Option::is_some) {
                        out.push(Row { labels, values });
                    }
                }
                Ok(Val::Vector(out))
            }
        }
    }
}

/// The labels of `labels` whose name `keep` accepts.
fn labels_where(labels: &Labels, keep: impl Fn(&str) -> bool) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The labels that group or match series: those listed (`by`, `on`), or all but the listed ones
/// and the name (`without`, `ignoring`, or no modifier).
pub(super) fn matching_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(on)) => {
            labels_where(labels, |k| on.labels.iter().any(|l| l == k))
        }
        Some(LabelModifier::Exclude(ign)) => {
            labels_where(labels, |k| k != NAME && !ign.labels.iter().any(|l| l == k))
        }
        None => labels_where(labels, |k| k != NAME),
    }
}

/// `f(time index, value)` on every value of `rows`; rows left without a value are dropped.
fn vector_scalar(
    rows: Vec<Row>,
    f: impl Fn(usize, f64) -> Option<f64>,
    drop_name: bool,
) -> Vec<Row> {
    rows.into_iter()
        .map(|mut r| {
            if drop_name {
                r.labels.remove(NAME);
            }
            r.values = r
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| v.and_then(|x| f(i, x)))
                .collect();
            r
        })
        .filter(|r| r.values.iter().any(Option::is_some))
        .collect()
}

/// `f` on every value; a vector's rows lose their name when `drop_name`.
fn map_values(v: Val, f: impl Fn(f64) -> f64, drop_name: bool) -> Val {
    match v {
        Val::Scalar(s) => Val::Scalar(s.into_iter().map(f).collect()),
        Val::Vector(rows) => Val::Vector(vector_scalar(rows, |_, x| Some(f(x)), drop_name)),
    }
}
