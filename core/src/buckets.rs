//! Bucketed histograms as senders report them (OpenTelemetry's explicit-bucket and exponential
//! histograms), their cumulative-to-delta difference, and their conversion into thermo's state
//! ([`Hist`]).
//!
//! A bucketed histogram knows its values only up to their bucket. Count and sum are kept exactly
//! (and min and max when the sender gives them); the percentiles come from an HDR histogram into
//! which every bucket's count is recorded at one *representative* value:
//! - an explicit bucket `(lo, hi]`: its midpoint, the bucket first narrowed to `[min, max]` when
//!   they are known; the open first and last buckets are `[min, hi]` and `(lo, max]` (their bound
//!   alone when min or max is unknown). A percentile is off by at most half its bucket's width
//!   (plus [`HIST_RELATIVE_ERROR`]).
//! - an exponential bucket `(base^i, base^(i+1)]`, `base = 2^(2^-scale)`: the value whose relative
//!   error is the same at both ends, `2·lo·hi / (lo + hi)`; every value of the bucket is within
//!   [`exponential_relative_error`]`(scale) = (base - 1) / (base + 1)` of it (4.3% at scale 3, 0.27%
//!   at scale 8; plus [`HIST_RELATIVE_ERROR`]). Negative buckets mirror the positive ones; the zero
//!   bucket is 0.
//!
//! Like every thermo histogram, values below zero count in count, sum, min and max but sit at 0
//! in the HDR part ([`crate::aggregate`]).

use crate::aggregate::{Binned, Hist, HIST_RELATIVE_ERROR};
use crate::cumulative::Cumulative;

/// Lowest and highest scale of an exponential histogram (OpenTelemetry's range).
pub const MIN_SCALE: i32 = -10;
pub const MAX_SCALE: i32 = 20;
/// Most buckets taken in one histogram (an explicit one's bounds + 1, or an exponential one's
/// positive plus negative buckets).
pub const MAX_BUCKETS: usize = 16_384;

/// A histogram's buckets.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// `counts[i]` values in `(bounds[i-1], bounds[i]]`, the first bucket open below and the last
    /// open above: `counts.len() == bounds.len() + 1`. No counts at all: only count and sum known.
    Explicit { bounds: Vec<f64>, counts: Vec<u64> },
    /// `positive[j]` values in `(base^(offset+j), base^(offset+j+1)]`, `negative` the same below
    /// zero, `zero_count` values within `zero_threshold` of 0.
    Exponential {
        scale: i32,
        zero_count: u64,
        zero_threshold: f64,
        positive: Run,
        negative: Run,
    },
}

/// Consecutive exponential buckets starting at index `offset`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Run {
    pub offset: i32,
    pub counts: Vec<u64>,
}

/// A bucketed histogram of `count` values summing to `sum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub layout: Layout,
}

/// Why a bucketed histogram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("explicit bounds must be finite and increasing")]
    Bounds,
    #[error("bucket_counts must have one more entry than explicit_bounds")]
    CountsLength,
    #[error("the bucket counts add up to {buckets}, the count is {count}")]
    CountMismatch { buckets: u64, count: u64 },
    #[error("scale {0} is outside [{MIN_SCALE}, {MAX_SCALE}]")]
    Scale(i32),
    #[error("more than {MAX_BUCKETS} buckets")]
    TooManyBuckets,
    #[error("sum, min and max must be finite")]
    NotFinite,
    #[error("min is above max")]
    MinAboveMax,
    #[error("bucket index beyond the range of a double at scale {0}")]
    Range(i32),
}

/// The most a value of an exponential bucket at `scale` differs from its representative, relative
/// to the value: `(base - 1) / (base + 1)`.
pub fn exponential_relative_error(scale: i32) -> f64 {
    let base = (-f64::from(scale)).exp2().exp2();
    (base - 1.0) / (base + 1.0)
}

/// The lower bound of exponential bucket `index` at `scale`: `base^index`.
fn lower_bound(scale: i32, index: i64) -> f64 {
    (index as f64 * (-f64::from(scale)).exp2()).exp2()
}

impl Buckets {
    /// Checks the counts against the layout.
    pub fn validate(&self) -> Result<(), Invalid> {
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !self.sum.is_finite() || !finite(self.min) || !finite(self.max) {
            return Err(Invalid::NotFinite);
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(Invalid::MinAboveMax);
            }
        }
        let in_buckets = match &self.layout {
            Layout::Explicit { bounds, counts } => {
                if !bounds.iter().all(|b| b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(Invalid::Bounds);
                }
                if counts.is_empty() {
                    return Ok(());
                }
                if counts.len() != bounds.len() + 1 {
                    return Err(Invalid::CountsLength);
                }
                if counts.len() > MAX_BUCKETS {
                    return Err(Invalid::TooManyBuckets);
                }
                sum_counts(counts)
            }
            Layout::Exponential {
                scale,
                zero_count,
                positive,
                negative,
                ..
            } => {
                if !(MIN_SCALE..=MAX_SCALE).contains(scale) {
                    return Err(Invalid::Scale(*scale));
                }
                if positive.counts.len() + negative.counts.len() > MAX_BUCKETS {
                    return Err(Invalid::TooManyBuckets);
                }
                let end = |r: &Run| i64::from(r.offset) + r.counts.len() as i64;
                if [positive, negative]
                    .iter()
                    .any(|r| !r.counts.is_empty() && !lower_bound(*scale, end(r)).is_finite())
                {
                    return Err(Invalid::Range(*scale));
                }
                zero_count
                    .saturating_add(sum_counts(&positive.counts))
                    .saturating_add(sum_counts(&negative.counts))
            }
        };
        if in_buckets != self.count {
            return Err(Invalid::CountMismatch {
                buckets: in_buckets,
                count: self.count,
            });
        }
        Ok(())
    }

    /// Every non-empty bucket as `(representative, count)`, lowest first.
    pub fn representatives(&self) -> Vec<(f64, u64)> {
        let clamp = |v: f64| {
            let v = self.min.map_or(v, |m| v.max(m));
            self.max.map_or(v, |m| v.min(m))
        };
        match &self.layout {
            Layout::Explicit { bounds, counts } => {
                let mut out = Vec::new();
                for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                    let lo = if i == 0 {
                        None
                    } else {
                        bounds.get(i - 1).copied()
                    };
                    let hi = bounds.get(i).copied();
                    let (lo, hi) = match (lo, hi) {
                        (Some(lo), Some(hi)) => (clamp(lo), clamp(hi)),
                        (None, Some(hi)) => (self.min.map_or(hi, |m| m.min(hi)), clamp(hi)),
                        (Some(lo), None) => (clamp(lo), self.max.map_or(lo, |m| m.max(lo))),
                        (None, None) => {
                            let mean = clamp(self.mean());
                            (self.min.unwrap_or(mean), self.max.unwrap_or(mean))
                        }
                    };
                    out.push(((lo + hi) / 2.0, n));
                }
                out
            }
            Layout::Exponential {
                scale,
                zero_count,
                positive,
                negative,
                ..
            } => {
                let rep = |index: i64| {
                    let (lo, hi) = (lower_bound(*scale, index), lower_bound(*scale, index + 1));
                    // 2·lo·hi / (lo + hi), without the product overflowing for large buckets.
                    2.0 / (1.0 / lo + 1.0 / hi)
                };
                let mut out = Vec::new();
                for (j, &n) in negative.counts.iter().enumerate().rev() {
                    if n > 0 {
                        out.push((clamp(-rep(i64::from(negative.offset) + j as i64)), n));
                    }
                }
                if *zero_count > 0 {
                    out.push((clamp(0.0), *zero_count));
                }
                for (j, &n) in positive.counts.iter().enumerate() {
                    if n > 0 {
                        out.push((clamp(rep(i64::from(positive.offset) + j as i64)), n));
                    }
                }
                out
            }
        }
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// These values as thermo takes them: count and sum as given, min and max as given or else
    /// the lowest and highest representative, the bins the representatives. `None` for an empty
    /// histogram.
    pub fn to_binned(&self) -> Option<Binned> {
        if self.count == 0 {
            return None;
        }
        let reps = self.representatives();
        let lowest = reps.first().map(|r| r.0);
        let highest = reps.last().map(|r| r.0);
        let mean = self.mean();
        let min = self.min.or(lowest).unwrap_or(mean);
        let max = self.max.or(highest).unwrap_or(mean).max(min);
        let bins = if reps.is_empty() {
            // Count and sum only: every value at the mean.
            vec![(mean.clamp(min, max), self.count)]
        } else {
            reps
        };
        Some(Binned {
            count: self.count,
            sum: self.sum,
            min,
            max,
            bins,
        })
    }

    /// thermo's histogram state of these values ([`Self::to_binned`]).
    pub fn to_hist(&self) -> Option<Hist> {
        self.to_binned().map(|b| b.to_hist())
    }

    /// The bound of a percentile's error for these buckets (relative for exponential ones; for
    /// explicit ones it depends on the bucket, see the module docs).
    pub fn relative_error(&self) -> Option<f64> {
        match &self.layout {
            Layout::Exponential { scale, .. } => {
                Some(exponential_relative_error(*scale) + HIST_RELATIVE_ERROR)
            }
            Layout::Explicit { .. } => None,
        }
    }
}

fn sum_counts(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |a, n| a.saturating_add(*n))
}

/// `run` at a `shift` lower scale: bucket `i` goes into `i >> shift`.
fn downscale(run: &Run, shift: u32) -> Run {
    if shift == 0 || run.counts.is_empty() {
        return run.clone();
    }
    let shift = shift.min(62);
    let first = i64::from(run.offset) >> shift;
    let last = (i64::from(run.offset) + run.counts.len() as i64 - 1) >> shift;
    let mut counts = vec![0u64; usize::try_from(last - first + 1).unwrap_or(0)];
    for (j, &n) in run.counts.iter().enumerate() {
        let at = ((i64::from(run.offset) + j as i64) >> shift) - first;
        if let Some(c) = usize::try_from(at).ok().and_then(|a| counts.get_mut(a)) {
            *c = c.saturating_add(n);
        }
    }
    Run {
        offset: i32::try_from(first).unwrap_or(run.offset),
        counts,
    }
}

/// The count of `run`'s bucket `index` (0 outside it).
fn count_at(run: &Run, index: i64) -> u64 {
    usize::try_from(index - i64::from(run.offset))
        .ok()
        .and_then(|j| run.counts.get(j))
        .copied()
        .unwrap_or(0)
}

/// `later - earlier` bucket by bucket over `later`'s range; `None` if a bucket went down or
/// `earlier` has counts outside `later`'s range.
fn run_minus(later: &Run, earlier: &Run) -> Option<Run> {
    let start = i64::from(later.offset);
    let end = start + later.counts.len() as i64;
    for (j, &n) in earlier.counts.iter().enumerate() {
        let index = i64::from(earlier.offset) + j as i64;
        if n > 0 && !(start..end).contains(&index) {
            return None;
        }
    }
    let counts = later
        .counts
        .iter()
        .enumerate()
        .map(|(j, &n)| n.checked_sub(count_at(earlier, start + j as i64)))
        .collect::<Option<Vec<u64>>>()?;
    Some(Run {
        offset: later.offset,
        counts,
    })
}

/// `later - earlier` of two layouts, `None` when they do not subtract (another layout, other
/// bounds, a bucket that went down: a reset).
fn layout_minus(later: &Layout, earlier: &Layout) -> Option<Layout> {
    match (later, earlier) {
        (
            Layout::Explicit { bounds, counts },
            Layout::Explicit {
                bounds: b0,
                counts: c0,
            },
        ) => {
            if bounds != b0 || (counts.len() != c0.len() && !c0.is_empty()) {
                return None;
            }
            let counts = if c0.is_empty() {
                counts.clone()
            } else {
                counts
                    .iter()
                    .zip(c0)
                    .map(|(n, m)| n.checked_sub(*m))
                    .collect::<Option<Vec<u64>>>()?
            };
            Some(Layout::Explicit {
                bounds: bounds.clone(),
                counts,
            })
        }
        (
            Layout::Exponential {
                scale,
                zero_count,
                zero_threshold,
                positive,
                negative,
            },
            Layout::Exponential {
                scale: s0,
                zero_count: z0,
                positive: p0,
                negative: n0,
                ..
            },
        ) => {
            // Bring both to the lower scale (a cumulative histogram only ever lowers its scale).
            let to = (*scale).min(*s0);
            let shift = |s: i32| u32::try_from(s - to).unwrap_or(0);
            let (p1, n1) = (
                downscale(positive, shift(*scale)),
                downscale(negative, shift(*scale)),
            );
            let (p0, n0) = (downscale(p0, shift(*s0)), downscale(n0, shift(*s0)));
            Some(Layout::Exponential {
                scale: to,
                zero_count: zero_count.checked_sub(*z0)?,
                zero_threshold: *zero_threshold,
                positive: run_minus(&p1, &p0)?,
                negative: run_minus(&n1, &n0)?,
            })
        }
        _ => None,
    }
}

impl Cumulative for Buckets {
    fn minus(&self, earlier: &Self) -> Option<Self> {
        let count = self.count.checked_sub(earlier.count)?;
        let layout = layout_minus(&self.layout, &earlier.layout)?;
        // A cumulative min or max is over the series' whole life: it says something of the
        // latest interval only when it moved in it.
        let moved = |now: Option<f64>, before: Option<f64>, lower: bool| match (now, before) {
            (Some(a), Some(b)) if (lower && a < b) || (!lower && a > b) => Some(a),
            _ => None,
        };
        Some(Buckets {
            count,
            sum: self.sum - earlier.sum,
            min: moved(self.min, earlier.min, true),
            max: moved(self.max, earlier.max, false),
            layout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn explicit(bounds: &[f64], counts: &[u64], sum: f64) -> Buckets {
        Buckets {
            count: counts.iter().sum(),
            sum,
            min: None,
            max: None,
            layout: Layout::Explicit {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
            },
        }
    }

    fn exponential(scale: i32, offset: i32, counts: &[u64], sum: f64) -> Buckets {
        Buckets {
            count: counts.iter().sum(),
            sum,
            min: None,
            max: None,
            layout: Layout::Exponential {
                scale,
                zero_count: 0,
                zero_threshold: 0.0,
                positive: Run {
                    offset,
                    counts: counts.to_vec(),
                },
                negative: Run::default(),
            },
        }
    }

    #[test]
    fn explicit_buckets_are_represented_by_their_clamped_midpoints() {
        let mut b = explicit(&[0.0, 10.0, 100.0], &[1, 2, 3, 4], 1234.0);
        b.min = Some(-4.0);
        b.max = Some(300.0);
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(
            b.representatives(),
            vec![(-2.0, 1), (5.0, 2), (55.0, 3), (200.0, 4)]
        );
        // Without min and max the open buckets sit on their one bound.
        b.min = None;
        b.max = None;
        assert_eq!(
            b.representatives(),
            vec![(0.0, 1), (5.0, 2), (55.0, 3), (100.0, 4)]
        );
        let h = b.to_hist().unwrap();
        assert_eq!((h.count, h.sum, h.min, h.max), (10, 1234.0, 0.0, 100.0));
    }

    #[test]
    fn invalid_histograms_are_refused() {
        assert_eq!(
            explicit(&[1.0, 1.0], &[0, 0, 0], 0.0).validate(),
            Err(Invalid::Bounds)
        );
        assert_eq!(
            explicit(&[1.0], &[0, 0, 0], 0.0).validate(),
            Err(Invalid::CountsLength)
        );
        let mut b = explicit(&[1.0], &[1, 1], 0.0);
        b.count = 3;
        assert_eq!(
            b.validate(),
            Err(Invalid::CountMismatch {
                buckets: 2,
                count: 3
            })
        );
        assert_eq!(
            exponential(21, 0, &[1], 1.0).validate(),
            Err(Invalid::Scale(21))
        );
        let mut b = exponential(0, 0, &[1], f64::NAN);
        assert_eq!(b.validate(), Err(Invalid::NotFinite));
        b.sum = 1.0;
        assert_eq!(b.validate(), Ok(()));
        (b.min, b.max) = (Some(2.0), Some(1.0));
        assert_eq!(b.validate(), Err(Invalid::MinAboveMax));
        // 2^1024 is beyond a double.
        assert_eq!(
            exponential(0, 1023, &[1], 1.0).validate(),
            Err(Invalid::Range(0))
        );
        assert_eq!(exponential(0, 1022, &[1], 1.0).validate(), Ok(()));
    }

    #[test]
    fn exponential_percentiles_are_within_the_stated_error() {
        // 1..=1000, one each, into scale-3 buckets as an OpenTelemetry SDK would.
        let scale = 3;
        let index = |v: f64| ((v.log2() * 8.0).ceil() as i64) - 1; // (base^i, base^(i+1)]
        let (first, last) = (index(1.0), index(1000.0));
        let mut counts = vec![0u64; (last - first + 1) as usize];
        for v in 1..=1000 {
            counts[(index(f64::from(v)) - first) as usize] += 1;
        }
        let mut b = exponential(scale, first as i32, &counts, 500_500.0);
        b.min = Some(1.0);
        b.max = Some(1000.0);
        assert_eq!(b.validate(), Ok(()));
        let h = b.to_hist().unwrap();
        assert_eq!((h.count, h.sum), (1000, 500_500.0));
        let err = b.relative_error().unwrap();
        assert!((exponential_relative_error(3) - 0.04329).abs() < 1e-4);
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.quantile(q).unwrap();
            assert!(
                (got - want).abs() <= want * err,
                "q{q}: {got} vs {want} (error {err})"
            );
        }
    }

    #[test]
    fn a_bucket_reaching_past_the_largest_double_has_a_finite_representative() {
        // Scale -10: bucket 0 is (1, 2^1024], its upper bound beyond f64 (a difference downscaled
        // that far; such an input is refused by `validate`).
        let b = exponential(-10, 0, &[3], 6.0);
        assert_eq!(b.representatives(), vec![(2.0, 3)]);
        let h = b.to_hist().unwrap();
        assert_eq!((h.min, h.max, h.quantile(0.5)), (2.0, 2.0, Some(2.0)));
    }

    #[test]
    fn cumulative_histograms_subtract_bucket_by_bucket() {
        let a = explicit(&[1.0, 2.0], &[1, 2, 3], 10.0);
        let b = explicit(&[1.0, 2.0], &[1, 5, 4], 19.0);
        assert_eq!(b.minus(&a), Some(explicit(&[1.0, 2.0], &[0, 3, 1], 9.0)));
        // A bucket that went down, or other bounds: not a difference (a reset).
        assert_eq!(a.minus(&b), None);
        assert_eq!(explicit(&[1.0, 3.0], &[1, 5, 4], 19.0).minus(&a), None);
        // Exponential: the earlier one at a higher scale is brought down first; the later one's
        // range may have grown on both sides.
        let e0 = exponential(2, 4, &[1, 1, 1, 1], 20.0); // indexes 4..8 at scale 2
        let e1 = exponential(1, 1, &[0, 2, 3, 1], 40.0); // indexes 1..5 at scale 1
        let d = e1.minus(&e0).unwrap();
        // e0 at scale 1: index 2 holds 2, index 3 holds 2.
        assert_eq!(d, exponential(1, 1, &[0, 0, 1, 1], 20.0));
        // The min and max of a cumulative histogram speak for the interval only when they moved.
        let (mut m0, mut m1) = (a.clone(), b.clone());
        (m0.min, m0.max, m1.min, m1.max) = (Some(0.5), Some(2.5), Some(0.5), Some(3.5));
        let d = m1.minus(&m0).unwrap();
        assert_eq!((d.min, d.max), (None, Some(3.5)));
    }

    proptest! {
        /// Any bytes-derived histogram either validates or is refused, and converting a valid one
        /// never panics and keeps its count and sum.
        #[test]
        fn any_histogram_converts_or_is_refused(
            scale in -12i32..24,
            offset in -2000i32..2000,
            counts in proptest::collection::vec(0u64..1_000_000, 0..50),
            zero in 0u64..10,
            sum in -1e9f64..1e9,
            bounds in proptest::collection::vec(-1e6f64..1e6, 0..20),
            min in proptest::option::of(-1e6f64..1e6),
            max in proptest::option::of(-1e6f64..1e6),
        ) {
            let count: u64 = 2 * counts.iter().sum::<u64>() + zero;
            let e = Buckets { count, sum, min, max, layout: Layout::Exponential {
                scale, zero_count: zero, zero_threshold: 0.0,
                positive: Run { offset, counts: counts.clone() },
                negative: Run { offset: -offset, counts: counts.clone() },
            }};
            let x = Buckets { count: counts.iter().sum(), sum, min, max, layout: Layout::Explicit {
                bounds: bounds.clone(), counts: counts.clone(),
            }};
            for b in [e, x] {
                if b.validate().is_ok() {
                    if let Some(h) = b.to_hist() {
                        prop_assert_eq!(h.count, b.count);
                        prop_assert_eq!(h.sum, b.sum);
                        prop_assert!(h.quantile(0.99).is_some_and(f64::is_finite));
                    }
                }
            }
        }

        /// Adding counts to a histogram and subtracting gives back what was added.
        #[test]
        fn minus_undoes_adding(
            base in proptest::collection::vec(0u64..1000, 1..30),
            added in proptest::collection::vec(0u64..1000, 1..30),
            scale in 0i32..8,
            down in 0i32..3,
        ) {
            let n = base.len().min(added.len());
            let (base, added) = (&base[..n], &added[..n]);
            let later: Vec<u64> = base.iter().zip(added).map(|(a, b)| a + b).collect();
            // Explicit: the same bounds.
            let bounds: Vec<f64> = (1..n).map(|i| i as f64).collect();
            let d = explicit(&bounds, &later, 2.0).minus(&explicit(&bounds, base, 1.0)).unwrap();
            prop_assert_eq!(d, explicit(&bounds, added, 1.0));
            // Exponential, the later one `down` scales lower: the difference's total is the added
            // total, at the later one's scale.
            let e0 = exponential(scale + down, 0, base, 1.0);
            let mut e1 = exponential(scale + down, 0, &later, 2.0);
            if down > 0 {
                if let Layout::Exponential { scale: s, positive, .. } = &mut e1.layout {
                    *positive = downscale(positive, down as u32);
                    *s -= down;
                }
            }
            let d = e1.minus(&e0).unwrap();
            prop_assert_eq!(d.count, added.iter().sum::<u64>());
            prop_assert_eq!(d.validate(), Ok(()));
        }
    }
}
