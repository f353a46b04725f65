//! Cumulative to delta: turning a series' running totals (an OpenTelemetry cumulative sum or
//! histogram) into what it gained between two reports, which is what thermo adds into a minute.
//!
//! Each point carries its series' start time (`0`: unknown), its time and its total since the
//! start. [`step`] decides, from the series' last point kept and the new one:
//! - **first point**: counted whole when the series started while it was watched (its start time
//!   at or after `watched_since`, the moment the tracker began: nothing of it can have been missed),
//!   otherwise only kept as the reference for the next one (what it gained before is unknown:
//!   counting it would put a whole life's total into one minute);
//! - **restart** (another start time, later than the last one): counted whole, the new life's total;
//!   a point with an earlier start time than the last is a late point of the life before: stale;
//! - **not later** than the last point kept (a duplicate, a retried export, out of order): stale,
//!   dropped without changing anything, so a re-sent export is never counted twice;
//! - **reset** (the total went down without a new start time): counted whole, the total since the
//!   reset;
//! - otherwise the difference to the last point.
//!
//! A gap (reports lost in between) puts everything gained in it into the later point's minute:
//! totals stay exact, the per-minute shape does not. Points of one series must come to one tracker
//! (the agent the process sends to).

use rustc_hash::FxHashMap;

/// A running total that can be subtracted.
pub trait Cumulative: Clone {
    /// `self - earlier`, or `None` when `self` is below `earlier` somewhere (a reset).
    fn minus(&self, earlier: &Self) -> Option<Self>;
}

impl Cumulative for f64 {
    fn minus(&self, earlier: &Self) -> Option<Self> {
        (*self >= *earlier).then(|| self - earlier)
    }
}

/// One report of a running total: start and time in unix milliseconds (start 0: unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Point<T> {
    pub start_ms: i64,
    pub time_ms: i64,
    pub value: T,
}

/// What a point adds.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    /// Gained since the last point (or since the series' start).
    Delta(T),
    /// The first point of a series that started before it was watched: kept, adds nothing.
    Reference,
    /// Not after the last point kept: dropped, adds nothing, changes nothing.
    Stale,
}

/// What `p` adds after `last` (the series' last point kept, if any). See the module docs.
pub fn step<T: Cumulative>(
    last: Option<&Point<T>>,
    p: &Point<T>,
    watched_since_ms: i64,
) -> Step<T> {
    let Some(last) = last else {
        return if p.start_ms > 0 && p.start_ms >= watched_since_ms {
            Step::Delta(p.value.clone())
        } else {
            Step::Reference
        };
    };
    if p.start_ms > 0 && last.start_ms > 0 && p.start_ms != last.start_ms {
        return if p.start_ms > last.start_ms {
            Step::Delta(p.value.clone())
        } else {
            Step::Stale
        };
    }
    if p.time_ms <= last.time_ms {
        return Step::Stale;
    }
    match p.value.minus(&last.value) {
        Some(d) => Step::Delta(d),
        None => Step::Delta(p.value.clone()),
    }
}

/// The last point kept of every series, by series id.
#[derive(Debug)]
pub struct Tracker<T> {
    watched_since_ms: i64,
    max_series: usize,
    /// Last point kept and when it arrived (unix ms, for [`Tracker::forget_idle`]).
    last: FxHashMap<Box<str>, (Point<T>, i64)>,
}

/// The tracker holds `max_series` series already: a new one is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<T: Cumulative> Tracker<T> {
    /// A tracker that began watching at `watched_since_ms` and holds at most `max_series`.
    pub fn new(watched_since_ms: i64, max_series: usize) -> Self {
        Self {
            watched_since_ms,
            max_series,
            last: FxHashMap::default(),
        }
    }

    /// What `p` of series `id`, arriving at `now_ms`, adds; keeps it unless stale.
    pub fn step(&mut self, id: &str, p: Point<T>, now_ms: i64) -> Result<Step<T>, Full> {
        let last = self.last.get(id).map(|(p, _)| p);
        if last.is_none() && self.last.len() >= self.max_series {
            return Err(Full);
        }
        let s = step(last, &p, self.watched_since_ms);
        if !matches!(s, Step::Stale) {
            match self.last.get_mut(id) {
                Some(slot) => *slot = (p, now_ms),
                None => {
                    self.last.insert(id.into(), (p, now_ms));
                }
            }
        }
        Ok(s)
    }

    /// Forgets series without a point for `idle_ms` (a series back after that starts over as
    /// a first point).
    pub fn forget_idle(&mut self, now_ms: i64, idle_ms: i64) {
        self.last.retain(|_, (_, at)| now_ms - *at < idle_ms);
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pt(start: i64, time: i64, v: f64) -> Point<f64> {
        Point {
            start_ms: start,
            time_ms: time,
            value: v,
        }
    }

    #[test]
    fn each_rule_of_the_module_docs() {
        let watched = 1_000;
        // First point: whole if started while watched, else a reference.
        assert_eq!(
            step(None, &pt(1_000, 2_000, 5.0), watched),
            Step::Delta(5.0)
        );
        assert_eq!(step(None, &pt(999, 2_000, 5.0), watched), Step::Reference);
        assert_eq!(step(None, &pt(0, 2_000, 5.0), watched), Step::Reference);
        let last = pt(1_000, 2_000, 5.0);
        assert_eq!(
            step(Some(&last), &pt(1_000, 3_000, 7.5), watched),
            Step::Delta(2.5)
        );
        // The same point again, an older one, a late point of the life before.
        assert_eq!(step(Some(&last), &last.clone(), watched), Step::Stale);
        assert_eq!(
            step(Some(&last), &pt(1_000, 1_500, 4.0), watched),
            Step::Stale
        );
        assert_eq!(
            step(Some(&last), &pt(500, 2_500, 9.0), watched),
            Step::Stale
        );
        // A restart (new start time), even with a higher total; a reset (total went down).
        assert_eq!(
            step(Some(&last), &pt(2_500, 3_000, 9.0), watched),
            Step::Delta(9.0)
        );
        assert_eq!(
            step(Some(&last), &pt(1_000, 3_000, 1.0), watched),
            Step::Delta(1.0)
        );
        // No gain: a zero delta (the minute shows no increase, not no data).
        assert_eq!(
            step(Some(&last), &pt(1_000, 3_000, 5.0), watched),
            Step::Delta(0.0)
        );
    }

    #[test]
    fn the_tracker_keeps_all_but_stale_points_and_is_bounded() {
        let mut t = Tracker::new(0, 2);
        assert_eq!(t.step("a", pt(1, 10, 1.0), 100), Ok(Step::Delta(1.0)));
        assert_eq!(t.step("a", pt(1, 10, 1.0), 101), Ok(Step::Stale));
        assert_eq!(t.step("a", pt(1, 20, 3.0), 102), Ok(Step::Delta(2.0)));
        assert_eq!(t.step("b", pt(1, 10, 1.0), 103), Ok(Step::Delta(1.0)));
        assert_eq!(t.step("c", pt(1, 10, 1.0), 104), Err(Full));
        // a's last point came at 102, b's at 103.
        t.forget_idle(201, 100);
        assert_eq!(t.len(), 2);
        t.forget_idle(202, 100);
        assert_eq!(t.len(), 1); // a idle for 100 ms: forgotten; b kept
        assert_eq!(t.step("c", pt(1, 10, 1.0), 204), Ok(Step::Delta(1.0)));
    }

    /// A series' reports: lives (each with a start), each a run of non-decreasing totals.
    fn lives() -> impl Strategy<Value = Vec<Vec<u32>>> {
        proptest::collection::vec(proptest::collection::vec(0u32..1000, 1..8), 1..5)
    }

    /// The points of `lives`, at increasing times, starts after `watched`.
    fn points(lives: &[Vec<u32>]) -> Vec<(usize, Point<f64>)> {
        let mut out = Vec::new();
        let mut time = 10_000;
        for (l, gains) in lives.iter().enumerate() {
            let start = time;
            let mut total = 0.0;
            for g in gains {
                time += 1_000;
                total += f64::from(*g);
                out.push((l, pt(start, time, total)));
            }
            time += 1_000;
        }
        out
    }

    proptest! {
        /// In order, with any points lost: the deltas add up to the last total seen of every life
        /// (what was gained after the last point seen of a life is never reported).
        #[test]
        fn in_order_with_gaps_the_deltas_add_up_to_each_lifes_last_total(
            lives in lives(),
            lost in proptest::collection::vec(any::<bool>(), 64),
        ) {
            let all = points(&lives);
            let kept: Vec<&(usize, Point<f64>)> =
                all.iter().enumerate().filter(|(i, _)| !lost[i % 64]).map(|(_, p)| p).collect();
            let mut t = Tracker::new(0, 10);
            let mut sum = 0.0;
            for (_, p) in &kept {
                if let Ok(Step::Delta(d)) = t.step("s", p.clone(), 0) {
                    prop_assert!(d >= 0.0);
                    sum += d;
                }
            }
            let mut want = 0.0;
            for l in 0..lives.len() {
                if let Some((_, p)) = kept.iter().rev().find(|(life, _)| *life == l) {
                    want += p.value;
                }
            }
            prop_assert_eq!(sum, want);
        }

        /// Re-sending points already delivered (retries), anywhere after them, changes nothing;
        /// and out-of-order points never count anything negative nor more than was gained.
        #[test]
        fn resent_points_count_once_and_disorder_never_overcounts(
            lives in lives(),
            resend in proptest::collection::vec((0usize..64, 0usize..64), 0..10),
            swaps in proptest::collection::vec((0usize..64, 0usize..64), 0..10),
        ) {
            let all: Vec<Point<f64>> = points(&lives).into_iter().map(|(_, p)| p).collect();
            let total = |seq: &[Point<f64>]| {
                let mut t = Tracker::new(0, 10);
                let mut sum = 0.0;
                for p in seq {
                    if let Ok(Step::Delta(d)) = t.step("s", p.clone(), 0) {
                        assert!(d >= 0.0);
                        sum += d;
                    }
                }
                sum
            };
            let exact = total(&all);
            let mut with_resends = all.clone();
            for (which, after) in resend {
                let which = which % all.len();
                // After the point itself wherever earlier insertions moved it.
                let Some(now_at) = with_resends.iter().position(|p| *p == all[which]) else {
                    continue;
                };
                let at = (now_at + 1 + after).min(with_resends.len());
                with_resends.insert(at, all[which].clone());
            }
            prop_assert_eq!(total(&with_resends), exact);
            let mut shuffled = all.clone();
            for (a, b) in swaps {
                let n = shuffled.len();
                shuffled.swap(a % n, b % n);
            }
            prop_assert!(total(&shuffled) <= exact);
        }
    }
}
