//! Mergeable per-window aggregates.
//!
//! Every tier stores these states, never a finished statistic: a percentile over an hour is read
//! from the merged histogram of its minutes, an average is `sum / count` of the merged state.
//!
//! Invariants (property-tested in `tests/merge_props.rs`):
//! - `merge` is associative and commutative (gauges pick `last` by `(timestamp, value)`, so ties are
//!   decided the same way whatever the order);
//! - aggregating split input and merging the parts equals aggregating the whole input.
//!
//! Histograms record `round(value * HIST_SCALE)` in an HDR histogram with
//! [`HIST_SIGFIGS`] significant digits: every percentile is within 0.1% of a recorded value
//! (relative), values below zero are recorded as 0 in the histogram (count, sum, min and max stay
//! exact), values above [`HIST_MAX`] are clamped in the histogram only.

use hdrhistogram::Histogram;
use std::collections::BTreeSet;

/// Values are multiplied by this before they go into the HDR histogram (milliseconds → microseconds).
pub const HIST_SCALE: f64 = 1000.0;
/// Significant digits of the HDR histograms.
pub const HIST_SIGFIGS: u8 = 3;
/// Largest value (before scaling) that the histogram resolves; larger values are clamped.
pub const HIST_MAX: f64 = 1e12;
/// Relative error bound of a percentile read from a histogram (3 significant digits).
pub const HIST_RELATIVE_ERROR: f64 = 0.001;
/// Most distinct members one set aggregate holds; more are refused (the caller counts the drop).
pub const MAX_SET_MEMBERS: usize = 100_000;

/// The kind of a series, fixed by its first sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Set,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Set => "set",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "counter" => Some(Self::Counter),
            "gauge" => Some(Self::Gauge),
            "histogram" => Some(Self::Histogram),
            "set" => Some(Self::Set),
            _ => None,
        }
    }
}

/// Counter: the sum of `value / sample_rate` and the number of raw samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counter {
    pub sum: f64,
    pub samples: u64,
}

/// Gauge: the last value (by receive time in ms, ties by value) and the min and max seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauge {
    pub last: f64,
    pub last_ms: i64,
    pub min: f64,
    pub max: f64,
}

impl Gauge {
    pub fn new(value: f64, at_ms: i64) -> Self {
        Self {
            last: value,
            last_ms: at_ms,
            min: value,
            max: value,
        }
    }

    pub fn set(&mut self, value: f64, at_ms: i64) {
        self.merge(&Gauge::new(value, at_ms));
    }

    fn merge(&mut self, other: &Gauge) {
        // `total_cmp` orders by value (-0.0 below 0.0); comparing `to_bits` put every negative
        // value above every positive one, and -2 above -1.
        let later = other
            .last_ms
            .cmp(&self.last_ms)
            .then(other.last.total_cmp(&self.last));
        if later.is_gt() {
            self.last = other.last;
            self.last_ms = other.last_ms;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Timer/histogram/distribution: exact count, sum, min, max, plus an HDR histogram for percentiles.
#[derive(Debug, Clone)]
pub struct Hist {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub hdr: Histogram<u64>,
}

impl PartialEq for Hist {
    fn eq(&self, o: &Self) -> bool {
        self.count == o.count
            && self.sum == o.sum
            && self.min == o.min
            && self.max == o.max
            && self.hdr == o.hdr
    }
}

/// Values known by their exact count, sum, min and max and, for percentiles, as `(value, n)`
/// bins: `n` values near `value` (a bucket's representative; see [`crate::buckets`]). The bins'
/// `n` need not add up to `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub bins: Vec<(f64, u64)>,
}

impl Binned {
    /// thermo's histogram of these values.
    pub fn to_hist(&self) -> Hist {
        let mut h = Hist::new();
        h.add_binned(self);
        h
    }
}

/// A fresh, empty HDR histogram with thermo's settings.
pub fn new_hdr() -> Histogram<u64> {
    let mut h = Histogram::new(HIST_SIGFIGS).unwrap_or_else(|_| unreachable_hdr());
    h.auto(true);
    h
}

#[cold]
fn unreachable_hdr() -> Histogram<u64> {
    // `Histogram::new` only fails for sigfig > 5, and HIST_SIGFIGS is 3.
    panic!("HIST_SIGFIGS is a valid HDR precision")
}

fn scaled(value: f64) -> u64 {
    (value.clamp(0.0, HIST_MAX) * HIST_SCALE).round() as u64
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hdr: new_hdr(),
        }
    }

    /// Records `value` `weight` times (weight is `round(1 / sample_rate)`, at least 1).
    pub fn record(&mut self, value: f64, weight: u64) {
        let weight = weight.max(1);
        // Saturating: a tiny sample rate (`|@1e-30`) gives a weight of u64::MAX.
        self.count = self.count.saturating_add(weight);
        self.sum += value * weight as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        // Auto-resizing histograms accept every u64 we produce (bounded by HIST_MAX).
        let _ = self.hdr.record_n(scaled(value), weight);
    }

    /// Adds values known as a [`Binned`]: count, sum, min and max exactly, the HDR part from the
    /// bins.
    pub fn add_binned(&mut self, b: &Binned) {
        self.count = self.count.saturating_add(b.count);
        self.sum += b.sum;
        self.min = self.min.min(b.min);
        self.max = self.max.max(b.max);
        for &(value, n) in &b.bins {
            if n > 0 {
                let _ = self.hdr.record_n(scaled(value), n);
            }
        }
    }

    fn merge(&mut self, other: &Hist) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        let _ = self.hdr.add(&other.hdr);
    }

    /// The value at quantile `q` (0..=1), within [`HIST_RELATIVE_ERROR`], clamped to `[min, max]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // The middle of the HDR bucket halves the worst-case error of its highest value.
        let raw = self.hdr.value_at_quantile(q);
        let v = self.hdr.median_equivalent(raw) as f64 / HIST_SCALE;
        // Not `clamp`, which panics on min > max: a state that says so is wrong, not fatal.
        Some(v.max(self.min).min(self.max))
    }
}

/// Set: distinct members, kept as 64-bit FNV-1a hashes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DistinctSet {
    pub members: BTreeSet<u64>,
}

/// FNV-1a, 64 bit: stable across processes and versions, which the set hashes need.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl DistinctSet {
    /// Adds a member; false if the set is full ([`MAX_SET_MEMBERS`]) and the member was new.
    pub fn insert(&mut self, member: &str) -> bool {
        let h = fnv1a(member.as_bytes());
        if self.members.len() >= MAX_SET_MEMBERS && !self.members.contains(&h) {
            return false;
        }
        self.members.insert(h);
        true
    }

    fn merge(&mut self, other: &DistinctSet) {
        for h in &other.members {
            if self.members.len() >= MAX_SET_MEMBERS {
                break;
            }
            self.members.insert(*h);
        }
    }
}

/// One series' state for one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Hist),
    Set(DistinctSet),
}

/// Two states of different types were merged: the series changed type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("type conflict: a {existing} cannot merge a {incoming}")]
pub struct TypeConflict {
    pub existing: &'static str,
    pub incoming: &'static str,
}

/// A state refused by [`Aggregate::validate`]: the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

impl Invalid {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl Aggregate {
    pub fn metric_type(&self) -> MetricType {
        match self {
            Self::Counter(_) => MetricType::Counter,
            Self::Gauge(_) => MetricType::Gauge,
            Self::Histogram(_) => MetricType::Histogram,
            Self::Set(_) => MetricType::Set,
        }
    }

    /// An empty state of type `t` (gauges have no empty state and start at their first value).
    pub fn empty(t: MetricType) -> Option<Self> {
        match t {
            MetricType::Counter => Some(Self::Counter(Counter::default())),
            MetricType::Histogram => Some(Self::Histogram(Hist::new())),
            MetricType::Set => Some(Self::Set(DistinctSet::default())),
            MetricType::Gauge => None,
        }
    }

    /// Merges `other` into `self`. Associative and commutative.
    pub fn merge(&mut self, other: &Aggregate) -> Result<(), TypeConflict> {
        match (self, other) {
            (Self::Counter(a), Self::Counter(b)) => {
                a.sum += b.sum;
                a.samples = a.samples.saturating_add(b.samples);
            }
            (Self::Gauge(a), Self::Gauge(b)) => a.merge(b),
            (Self::Histogram(a), Self::Histogram(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => a.merge(b),
            (me, other) => {
                return Err(TypeConflict {
                    existing: me.metric_type().as_str(),
                    incoming: other.metric_type().as_str(),
                })
            }
        }
        Ok(())
    }

    /// Checks a state that came from outside (an ingest batch, in either form): finite values, a
    /// gauge's `min <= last <= max`, a histogram's count equal to its buckets' and at least one
    /// value, a set of 1 to [`MAX_SET_MEMBERS`] members. The error names the field as the JSON
    /// form does (`value`, `min`, `values`, `members`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let finite = |v: f64, field: &'static str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Invalid::new(field, "must be a finite number"))
            }
        };
        match self {
            Self::Counter(c) => finite(c.sum, "value"),
            Self::Gauge(g) => {
                finite(g.last, "value")?;
                finite(g.min, "min")?;
                finite(g.max, "max")?;
                if g.min > g.last || g.last > g.max {
                    return Err(Invalid::new("min", "must satisfy min <= last <= max"));
                }
                Ok(())
            }
            Self::Histogram(h) => {
                if h.count == 0 {
                    return Err(Invalid::new("values", "must hold at least one value"));
                }
                if h.hdr.len() != h.count {
                    return Err(Invalid::new(
                        "values",
                        format!(
                            "count {} differs from the {} values in the histogram",
                            h.count,
                            h.hdr.len()
                        ),
                    ));
                }
                finite(h.sum, "sum")?;
                finite(h.min, "min")?;
                finite(h.max, "max")?;
                if h.min > h.max {
                    return Err(Invalid::new("min", "must satisfy min <= max"));
                }
                Ok(())
            }
            Self::Set(s) if s.members.is_empty() || s.members.len() > MAX_SET_MEMBERS => {
                Err(Invalid::new(
                    "members",
                    format!("must hold 1 to {MAX_SET_MEMBERS} members"),
                ))
            }
            Self::Set(_) => Ok(()),
        }
    }

    /// The number of samples behind this state (gauges: 1 per state; sets: distinct members).
    pub fn count(&self) -> f64 {
        match self {
            Self::Counter(c) => c.samples as f64,
            Self::Gauge(_) => 1.0,
            Self::Histogram(h) => h.count as f64,
            Self::Set(s) => s.members.len() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_hist_merge_exactly() {
        let mut a = Aggregate::Counter(Counter {
            sum: 10.0,
            samples: 2,
        });
        a.merge(&Aggregate::Counter(Counter {
            sum: 5.0,
            samples: 1,
        }))
        .unwrap();
        assert_eq!(
            a,
            Aggregate::Counter(Counter {
                sum: 15.0,
                samples: 3
            })
        );

        let mut h = Hist::new();
        for v in 1..=100 {
            h.record(v as f64, 1);
        }
        assert_eq!(h.count, 100);
        assert_eq!(h.sum, 5050.0);
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 50.0).abs() <= 50.0 * HIST_RELATIVE_ERROR, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 99.0).abs() <= 99.0 * HIST_RELATIVE_ERROR, "{p99}");
        assert_eq!(h.quantile(1.0), Some(100.0));
    }

    #[test]
    fn gauge_last_is_latest_then_largest() {
        let mut g = Gauge::new(5.0, 1000);
        g.set(3.0, 2000);
        g.set(9.0, 1500);
        assert_eq!((g.last, g.min, g.max), (3.0, 3.0, 9.0));
        let mut a = Gauge::new(1.0, 10);
        a.merge(&Gauge::new(2.0, 10));
        let mut b = Gauge::new(2.0, 10);
        b.merge(&Gauge::new(1.0, 10));
        assert_eq!(a, b);
        assert_eq!(a.last, 2.0);
    }

    #[test]
    fn type_conflict_is_an_error() {
        let mut a = Aggregate::Counter(Counter::default());
        let e = a.merge(&Aggregate::Gauge(Gauge::new(1.0, 0))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "type conflict: a counter cannot merge a gauge"
        );
    }

    #[test]
    fn sets_count_distinct_members_up_to_the_cap() {
        let mut s = DistinctSet::default();
        assert!(s.insert("a"));
        assert!(s.insert("a"));
        assert!(s.insert("b"));
        assert_eq!(s.members.len(), 2);
    }
}
