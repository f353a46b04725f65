//! Statistics of merged states, and how a query combines series.
//!
//! A query reads every series of a metric that matches `where`, merges each series' minutes into
//! step buckets (in time), then combines the series of one `group_by` group (across series), and
//! reads one [`Stat`] from the result. Percentiles always come from the merged HDR histogram.
//!
//! | stat | counter | gauge | histogram | set |
//! |---|---|---|---|---|
//! | sum | sum | sum over series of each one's last | sum of values | – |
//! | count | samples | series reporting | values | distinct members |
//! | avg | sum/samples | mean over series of each one's last | sum/count | – |
//! | min, max | – | min, max | min, max | – |
//! | last | – | last (latest receive time) | – | – |
//! | rate | sum/step | – | count/step | – |
//! | pNN | – | – | from the histogram | – |

use crate::aggregate::{Aggregate, MetricType, TypeConflict};

/// A statistic a query can ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    Last,
    Rate,
    /// A percentile in (0, 100].
    Percentile(f64),
}

impl Stat {
    /// Parses `sum`, `count`, `avg`, `min`, `max`, `last`, `rate` or `pNN` / `pNN.N`.
    pub fn parse(s: &str) -> Result<Stat, String> {
        Ok(match s {
            "sum" => Stat::Sum,
            "count" => Stat::Count,
            "avg" => Stat::Avg,
            "min" => Stat::Min,
            "max" => Stat::Max,
            "last" => Stat::Last,
            "rate" => Stat::Rate,
            p if p.starts_with('p') => {
                let digits = &p[1..];
                let ok = !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && !digits.starts_with('.');
                match digits.parse::<f64>() {
                    Ok(v) if ok && v > 0.0 && v <= 100.0 => Stat::Percentile(v),
                    _ => {
                        return Err(format!(
                            "{p:?} is not a percentile; use p50, p99 or p99.9 (0 < N <= 100)"
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown stat {other:?}; expected sum, count, avg, min, max, last, rate or pNN"
                ))
            }
        })
    }

    /// Whether this stat is defined for series of type `t`.
    pub fn check(self, t: MetricType) -> Result<(), String> {
        use MetricType::*;
        let ok = match self {
            Stat::Sum | Stat::Avg => matches!(t, Counter | Gauge | Histogram),
            Stat::Count => true,
            Stat::Min | Stat::Max => matches!(t, Gauge | Histogram),
            Stat::Last => t == Gauge,
            Stat::Rate => matches!(t, Counter | Histogram),
            Stat::Percentile(_) => t == Histogram,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "stat {} is not defined for a {}",
                self.name(),
                t.as_str()
            ))
        }
    }

    pub fn name(self) -> String {
        match self {
            Stat::Sum => "sum".into(),
            Stat::Count => "count".into(),
            Stat::Avg => "avg".into(),
            Stat::Min => "min".into(),
            Stat::Max => "max".into(),
            Stat::Last => "last".into(),
            Stat::Rate => "rate".into(),
            Stat::Percentile(p) => format!("p{p}"),
        }
    }
}

/// The series of one group in one step bucket, combined.
#[derive(Debug, Clone, Default)]
pub struct GroupCell {
    merged: Option<Aggregate>,
    gauge_last_sum: f64,
    series: u64,
}

impl GroupCell {
    /// Adds one series' state for this bucket (already merged over the bucket's minutes).
    pub fn add_series(&mut self, agg: &Aggregate) -> Result<(), TypeConflict> {
        match &mut self.merged {
            Some(m) => m.merge(agg)?,
            None => self.merged = Some(agg.clone()),
        }
        if let Aggregate::Gauge(g) = agg {
            self.gauge_last_sum += g.last;
        }
        self.series += 1;
        Ok(())
    }

    /// The stat's value, or `None` when the bucket holds nothing it could be read from.
    pub fn value(&self, stat: Stat, step_secs: i64) -> Option<f64> {
        let m = self.merged.as_ref()?;
        let step = step_secs as f64;
        match (m, stat) {
            (Aggregate::Counter(c), Stat::Sum) => Some(c.sum),
            (Aggregate::Counter(c), Stat::Count) => Some(c.samples as f64),
            (Aggregate::Counter(c), Stat::Avg) => (c.samples > 0).then(|| c.sum / c.samples as f64),
            (Aggregate::Counter(c), Stat::Rate) => Some(c.sum / step),
            (Aggregate::Gauge(_), Stat::Sum) => Some(self.gauge_last_sum),
            (Aggregate::Gauge(_), Stat::Count) => Some(self.series as f64),
            (Aggregate::Gauge(_), Stat::Avg) => Some(self.gauge_last_sum / self.series as f64),
            (Aggregate::Gauge(g), Stat::Min) => Some(g.min),
            (Aggregate::Gauge(g), Stat::Max) => Some(g.max),
            (Aggregate::Gauge(g), Stat::Last) => Some(g.last),
            (Aggregate::Histogram(h), Stat::Sum) => Some(h.sum),
            (Aggregate::Histogram(h), Stat::Count) => Some(h.count as f64),
            (Aggregate::Histogram(h), Stat::Avg) => (h.count > 0).then(|| h.sum / h.count as f64),
            (Aggregate::Histogram(h), Stat::Min) => (h.count > 0).then_some(h.min),
            (Aggregate::Histogram(h), Stat::Max) => (h.count > 0).then_some(h.max),
            (Aggregate::Histogram(h), Stat::Rate) => Some(h.count as f64 / step),
            (Aggregate::Histogram(h), Stat::Percentile(p)) => h.quantile(p / 100.0),
            (Aggregate::Set(s), Stat::Count) => Some(s.members.len() as f64),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Counter, Gauge, Hist};

    #[test]
    fn parses_stats() {
        assert_eq!(Stat::parse("p99.9"), Ok(Stat::Percentile(99.9)));
        assert_eq!(Stat::parse("p50"), Ok(Stat::Percentile(50.0)));
        assert!(Stat::parse("p0").is_err());
        assert!(Stat::parse("p101").is_err());
        assert!(Stat::parse("p").is_err());
        assert!(Stat::parse("p.5").is_err());
        assert!(Stat::parse("pinf").is_err());
        assert!(Stat::parse("median").unwrap_err().contains("unknown stat"));
        assert!(Stat::Percentile(99.0).check(MetricType::Counter).is_err());
        assert_eq!(Stat::Percentile(99.9).name(), "p99.9");
    }

    #[test]
    fn group_values() {
        let mut c = GroupCell::default();
        c.add_series(&Aggregate::Counter(Counter {
            sum: 6.0,
            samples: 2,
        }))
        .unwrap();
        c.add_series(&Aggregate::Counter(Counter {
            sum: 6.0,
            samples: 1,
        }))
        .unwrap();
        assert_eq!(c.value(Stat::Sum, 60), Some(12.0));
        assert_eq!(c.value(Stat::Count, 60), Some(3.0));
        assert_eq!(c.value(Stat::Rate, 60), Some(0.2));
        assert_eq!(c.value(Stat::Avg, 60), Some(4.0));

        let mut g = GroupCell::default();
        g.add_series(&Aggregate::Gauge(Gauge::new(3.0, 5))).unwrap();
        g.add_series(&Aggregate::Gauge(Gauge::new(5.0, 1))).unwrap();
        assert_eq!(g.value(Stat::Sum, 60), Some(8.0));
        assert_eq!(g.value(Stat::Last, 60), Some(3.0));
        assert_eq!(g.value(Stat::Avg, 60), Some(4.0));
        assert_eq!(g.value(Stat::Max, 60), Some(5.0));

        let mut h = Hist::new();
        h.record(2.0, 1);
        h.record(4.0, 1);
        let mut hc = GroupCell::default();
        hc.add_series(&Aggregate::Histogram(h)).unwrap();
        assert_eq!(hc.value(Stat::Avg, 60), Some(3.0));
        assert_eq!(hc.value(Stat::Percentile(100.0), 60), Some(4.0));
    }
}
