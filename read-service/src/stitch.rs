//! Stitching hot (Redis) and cold (object) data into one gap-free, double-count-free read.
//!
//! A read at resolution `r` over `[from, to)` (aligned to `r`'s windows) is first *planned*
//! ([`plan`]) from a [`ColdView`] into [`Part`]s that tile the range without overlap:
//!
//! - a chunk of 5m / 1h whose object is complete ([`ColdView::usable`]) is one [`Part::Object`];
//! - any other 5m / 1h chunk is planned again at the next finer resolution over its part of the
//!   range (1h from 5m, 5m from 1m);
//! - an hour at 1m is one [`Part::Hour`]: the rows of its 1m object, if the catalog lists one,
//!   merged with the cells Redis holds for it, if it may hold any the object lacks (the hour has
//!   no object, or is pending again). The merge is by contribution ([`merge_minute`]), so a cell
//!   that is both in the object and in Redis is counted once, whether or not Redis was trimmed.
//!
//! Then every part's windows are merged per series into step buckets ([`Buckets`]); since the step
//! is a multiple of `r` and every finer window lies inside one window of `r`, re-bucketing finer
//! windows straight into step buckets equals re-bucketing them to `r` first (merging is
//! associative).

use crate::cold::{ColdReader, ColdView, Want};
use crate::error::ApiError;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use thermo_core::aggregate::{Aggregate, TypeConflict};
use thermo_core::codec::{Absorbed, HotCell};
use thermo_core::key::MetricKey;
use thermo_core::window::{chunks_in, window_start, Resolution};
use thermo_store::cold::ColdStore;
use thermo_store::cold_format::ColdRow;
use thermo_store::hot::HotStore;

/// One piece of a planned read, covering `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// The rows of the object of chunk `chunk` of `res` (a complete 5m or 1h object).
    Object {
        res: Resolution,
        chunk: i64,
        generation: u64,
        from: i64,
        to: i64,
    },
    /// The minutes of hour `hour`: the 1m object's rows (if `cold` is its generation) merged with
    /// Redis's cells (if `hot`).
    Hour {
        hour: i64,
        from: i64,
        to: i64,
        cold: Option<u64>,
        hot: bool,
    },
}

/// Plans a read of `[from, to)` at `res` (see the module docs).
pub fn plan(view: &ColdView, res: Resolution, from: i64, to: i64) -> Vec<Part> {
    let mut out = Vec::new();
    plan_into(view, res, from, to, &mut out);
    out
}

fn plan_into(view: &ColdView, res: Resolution, from: i64, to: i64, out: &mut Vec<Part>) {
    for chunk in chunks_in(res, from, to) {
        let (lo, hi) = (from.max(chunk), to.min(chunk + res.chunk_seconds()));
        match res.finer() {
            None => {
                let cold = view.generation(res, chunk);
                out.push(Part::Hour {
                    hour: chunk,
                    from: lo,
                    to: hi,
                    cold,
                    // Redis holds cells an object lacks only while the hour is pending: a write
                    // marks it pending atomically, and it leaves `pending` only once an object
                    // holds every write up to then.
                    hot: cold.is_none() || view.pending.contains(&chunk),
                });
            }
            Some(finer) => match view.usable(res, chunk) {
                Some(generation) => out.push(Part::Object {
                    res,
                    chunk,
                    generation,
                    from: lo,
                    to: hi,
                }),
                None => plan_into(view, finer, lo, hi, out),
            },
        }
    }
}

/// Which stores served data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub hot: bool,
    pub cold: bool,
}

impl Served {
    pub const HOT: Served = Served {
        hot: true,
        cold: false,
    };
    pub const COLD: Served = Served {
        hot: false,
        cold: true,
    };

    fn add(&mut self, o: Served) {
        self.hot |= o.hot;
        self.cold |= o.cold;
    }

    /// `["hot"]`, `["cold"]`, `["hot", "cold"]`, or `[]` when nothing was served.
    pub fn sources(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.hot {
            v.push("hot");
        }
        if self.cold {
            v.push("cold");
        }
        v
    }
}

/// Combines a 1m object's row with Redis's cell for the same series and minute, counting each
/// contribution `(source, seq)` once, and says which of the two the result came from.
///
/// The aggregate of a cell cannot be split by contribution, so (as [`HotCell::absorb`], which the
/// compactor uses to build the objects):
/// - every contribution of the hot cell is in the row (the object was built from it): the row;
/// - every contribution of the row is in the hot cell (late contributions arrived since): the hot
///   cell;
/// - no contribution shared: both merged;
/// - some but not all shared (thermo's own flows never make this): the one with more
///   contributions, the row on a tie.
///
/// Normally a hot cell is either wholly in the object or not at all. Cells of different types
/// (the series changed type) keep the row.
pub fn merge_minute(row: &HotCell, hot: &HotCell) -> (HotCell, Served) {
    let mut out = row.clone();
    match out.absorb(hot) {
        Ok(Absorbed::Kept) => (out, Served::COLD),
        Ok(Absorbed::Replaced) => (out, Served::HOT),
        Ok(Absorbed::Merged) => (
            out,
            Served {
                hot: true,
                cold: true,
            },
        ),
        Ok(Absorbed::Conflict) => {
            let hot_won = hot.contributors.len() > row.contributors.len();
            tracing::warn!(
                "cold row and hot cell share only some contributions; kept the {}",
                if hot_won { "hot cell" } else { "row" }
            );
            (out, if hot_won { Served::HOT } else { Served::COLD })
        }
        Err(e) => {
            tracing::warn!("hot cell not merged into its cold row: {e}");
            (row.clone(), Served::COLD)
        }
    }
}

fn merge_into(
    map: &mut BTreeMap<i64, Aggregate>,
    bucket: i64,
    agg: &Aggregate,
) -> Result<(), TypeConflict> {
    match map.get_mut(&bucket) {
        Some(a) => a.merge(agg),
        None => {
            map.insert(bucket, agg.clone());
            Ok(())
        }
    }
}

/// Re-buckets windows into windows of `len` seconds (epoch-aligned) by merging their aggregates;
/// a window whose type conflicts with its bucket's is left out and logged.
pub fn rebucket(
    windows: impl IntoIterator<Item = (i64, Aggregate)>,
    len: i64,
) -> BTreeMap<i64, Aggregate> {
    let mut out = BTreeMap::new();
    for (w, agg) in windows {
        if let Err(e) = merge_into(&mut out, window_start(w, len), &agg) {
            tracing::warn!(window = w, "skipped window: {e}");
        }
    }
    out
}

/// Every series' windows merged into step buckets.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    step: i64,
    series: BTreeMap<MetricKey, BTreeMap<i64, Aggregate>>,
    /// Windows merged in so far (the samples touched, `max_samples`).
    touched: u64,
}

impl Buckets {
    pub fn new(step: i64) -> Self {
        Self {
            step,
            series: BTreeMap::new(),
            touched: 0,
        }
    }

    /// Merges `series`' window starting at `window` into its step bucket.
    pub fn add(&mut self, series: &MetricKey, window: i64, agg: &Aggregate) {
        self.touched += 1;
        let bucket = window_start(window, self.step);
        let res = match self.series.get_mut(series) {
            Some(m) => merge_into(m, bucket, agg),
            None => {
                self.series
                    .insert(series.clone(), BTreeMap::from([(bucket, agg.clone())]));
                Ok(())
            }
        };
        if let Err(e) = res {
            tracing::warn!(%series, window, "skipped cell: {e}");
        }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// The windows merged in: the samples this read touched.
    pub fn touched(&self) -> u64 {
        self.touched
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series → bucket start → merged state.
    pub fn series(&self) -> &BTreeMap<MetricKey, BTreeMap<i64, Aggregate>> {
        &self.series
    }

    /// Series → bucket start → merged state.
    pub fn into_series(self) -> BTreeMap<MetricKey, BTreeMap<i64, Aggregate>> {
        self.series
    }
}

/// Which series a query reads.
#[derive(Debug, Clone, Copy)]
pub struct Selector<'a> {
    pub tenant: &'a str,
    pub metric: &'a str,
    /// `k:v` pairs every series' tags must have.
    pub filters: &'a [(String, String)],
    pub bounds: Bounds,
}

/// What one read may touch.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most series one read may return (`where` is named when more match).
    pub max_series: usize,
    /// Most samples: Redis cells (bounded before they are read by the matched series times the
    /// minutes of the range) plus cold rows merged (`from` is named when more are touched),
    /// counted from `touched_before`.
    pub max_samples: u64,
    /// Samples the query touched in earlier reads (a PromQL query's other selectors): the bound
    /// is on the whole query.
    pub touched_before: u64,
}

impl Bounds {
    /// At most `max_series` series, and no bound on samples.
    pub fn series(max_series: usize) -> Self {
        Self {
            max_series,
            max_samples: u64::MAX,
            touched_before: 0,
        }
    }
}

impl<'a> Selector<'a> {
    /// The rows of cold objects this read wants.
    pub fn want(&self) -> Want<'a> {
        Want {
            tenant: self.tenant,
            metric: self.metric,
            filters: self.filters,
        }
    }

    pub fn matches(&self, key: &MetricKey) -> bool {
        self.want().matches(key)
    }

    fn check_count(&self, n: usize) -> Result<(), ApiError> {
        if n > self.bounds.max_series {
            return Err(ApiError::limit(
                "where",
                format!(
                    "{n} series match; at most {} (max_series): narrow the filter",
                    self.bounds.max_series
                ),
            ));
        }
        Ok(())
    }

    fn check_samples(&self, n: u64) -> Result<(), ApiError> {
        let n = n.saturating_add(self.bounds.touched_before);
        if n > self.bounds.max_samples {
            return Err(ApiError::limit(
                "from",
                format!(
                    "the query touches {n} samples or more; at most {} (max_samples): shorten the range, narrow the filter or read a coarser resolution",
                    self.bounds.max_samples
                ),
            ));
        }
        Ok(())
    }
}

/// Redis cells by series and minute.
type HotCells = BTreeMap<MetricKey, BTreeMap<i64, HotCell>>;

/// Contiguous `[from, to)` runs of the parts that read Redis.
fn hot_runs(parts: &[Part]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for p in parts {
        if let Part::Hour {
            from,
            to,
            hot: true,
            ..
        } = p
        {
            match runs.last_mut() {
                Some(last) if last.1 == *from => last.1 = *to,
                _ => runs.push((*from, *to)),
            }
        }
    }
    runs
}

/// Reads Redis's cells of the selected series for every run.
async fn read_hot<H: HotStore>(
    hot: &H,
    sel: &Selector<'_>,
    runs: &[(i64, i64)],
) -> Result<HotCells, ApiError> {
    let mut out = HotCells::new();
    let Some(first) = runs.first() else {
        return Ok(out);
    };
    let matched: Vec<MetricKey> = hot
        .series(sel.tenant, sel.metric, first.0)
        .await?
        .into_iter()
        .filter(|k| sel.matches(k))
        .collect();
    sel.check_count(matched.len())?;
    let minutes: i64 = runs
        .iter()
        .map(|(from, to)| (to - from).div_euclid(60))
        .sum();
    sel.check_samples((matched.len() as u64).saturating_mul(minutes.max(0) as u64))?;
    for (from, to) in runs {
        let cells = hot.read_range(&matched, *from, *to).await?;
        for (key, minutes) in matched.iter().zip(cells) {
            if !minutes.is_empty() {
                out.entry(key.clone()).or_default().extend(minutes);
            }
        }
    }
    Ok(out)
}

/// The state of one read.
struct Stitch<'a> {
    sel: Selector<'a>,
    hot: HotCells,
    buckets: Buckets,
    served: Served,
}

impl Stitch<'_> {
    fn add(&mut self, series: &MetricKey, window: i64, agg: &Aggregate, by: Served) {
        self.buckets.add(series, window, agg);
        self.served.add(by);
    }

    fn add_object_rows(&mut self, rows: &[ColdRow], from: i64, to: i64) {
        for r in rows {
            if (from..to).contains(&r.window_start) && self.sel.matches(&r.series) {
                self.add(&r.series, r.window_start, &r.cell.agg, Served::COLD);
            }
        }
    }

    /// Merges an hour's object rows with Redis's cells, by contribution.
    fn add_hour(&mut self, rows: &[ColdRow], from: i64, to: i64, read_hot: bool) {
        let mut cold: BTreeMap<(&MetricKey, i64), &HotCell> = rows
            .iter()
            .filter(|r| (from..to).contains(&r.window_start) && self.sel.matches(&r.series))
            .map(|r| ((&r.series, r.window_start), &r.cell))
            .collect();
        let hot = std::mem::take(&mut self.hot);
        if read_hot {
            for (key, cells) in &hot {
                for (minute, cell) in cells.range(from..to) {
                    match cold.remove(&(key, *minute)) {
                        Some(row) => {
                            let (merged, by) = merge_minute(row, cell);
                            self.add(key, *minute, &merged.agg, by);
                        }
                        None => self.add(key, *minute, &cell.agg, Served::HOT),
                    }
                }
            }
        }
        for ((key, minute), row) in cold {
            self.add(key, minute, &row.agg, Served::COLD);
        }
        self.hot = hot;
    }

    /// Adds one part, with the rows of its object (fetched by [`object_rows`]).
    fn part(&mut self, part: &Part, object: Option<&[ColdRow]>) {
        match *part {
            Part::Object { from, to, .. } => {
                if let Some(rows) = object {
                    self.add_object_rows(rows, from, to);
                }
            }
            Part::Hour { from, to, hot, .. } => {
                self.add_hour(object.unwrap_or(&[]), from, to, hot);
            }
        }
    }
}

/// Objects of one read fetched at the same time, at most.
pub const COLD_FETCHES: usize = 8;

/// The object a part reads, if any: resolution, chunk and generation.
fn part_object(part: &Part) -> Option<(Resolution, i64, u64)> {
    match *part {
        Part::Object {
            res,
            chunk,
            generation,
            ..
        } => Some((res, chunk, generation)),
        Part::Hour {
            hour,
            cold: Some(generation),
            ..
        } => Some((Resolution::OneMinute, hour, generation)),
        Part::Hour { cold: None, .. } => None,
    }
}

/// The selected rows of `object` (from [`part_object`]), if there is one and a reader.
async fn object_rows<C: ColdStore>(
    cold: Option<&ColdReader<C>>,
    sel: Selector<'_>,
    object: Option<(Resolution, i64, u64)>,
) -> Result<Option<Arc<Vec<ColdRow>>>, ApiError> {
    let (Some(reader), Some((res, chunk, generation))) = (cold, object) else {
        return Ok(None);
    };
    Ok(reader.rows(sel.want(), res, chunk, generation).await?)
}

/// Executes a plan: every selected series' windows merged into buckets of `step` seconds, and
/// which stores served them. Without a cold reader, object parts are skipped.
pub async fn read<H: HotStore, C: ColdStore>(
    hot: &H,
    cold: Option<&ColdReader<C>>,
    sel: Selector<'_>,
    parts: &[Part],
    step: i64,
) -> Result<(Buckets, Served), ApiError> {
    let hot_cells = read_hot(hot, &sel, &hot_runs(parts)).await?;
    let mut s = Stitch {
        sel,
        hot: hot_cells,
        buckets: Buckets::new(step),
        served: Served::default(),
    };
    // The parts' objects are fetched up to COLD_FETCHES at a time, and added in order.
    let mut objects = futures_util::stream::iter(parts.iter().map(part_object))
        .map(|o| object_rows(cold, sel, o))
        .buffered(COLD_FETCHES);
    for p in parts {
        let object = objects.next().await.transpose()?.flatten();
        s.part(p, object.as_deref().map(Vec::as_slice));
        sel.check_samples(s.buckets.touched())?;
    }
    sel.check_count(s.buckets.len())?;
    Ok((s.buckets, s.served))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::aggregate::Counter;

    fn counter(sum: f64, samples: u64) -> Aggregate {
        Aggregate::Counter(Counter { sum, samples })
    }

    fn cell(sum: f64, contributors: &[(u64, u64)]) -> HotCell {
        HotCell {
            contributors: contributors.to_vec(),
            agg: counter(sum, contributors.len() as u64),
        }
    }

    #[test]
    fn merge_minute_counts_each_contribution_once() {
        let row = cell(5.0, &[(1, 1), (2, 1)]);
        // The hot cell the object was built from: counted once, from the object.
        let (c, by) = merge_minute(&row, &cell(5.0, &[(1, 1), (2, 1)]));
        assert_eq!((c.agg, by), (counter(5.0, 2), Served::COLD));
        // A subset of it (Redis partly rebuilt): still the object.
        let (c, by) = merge_minute(&row, &cell(2.0, &[(2, 1)]));
        assert_eq!((c.agg, by), (counter(5.0, 2), Served::COLD));
        // Late contributions since the roll-up: the hot cell holds everything.
        let (c, by) = merge_minute(&row, &cell(9.0, &[(1, 1), (2, 1), (3, 7)]));
        assert_eq!((c.agg, by), (counter(9.0, 3), Served::HOT));
        // Nothing shared: both.
        let (c, by) = merge_minute(&row, &cell(4.0, &[(3, 7)]));
        assert_eq!(c.agg, counter(9.0, 3));
        assert_eq!(c.contributors, vec![(1, 1), (2, 1), (3, 7)]);
        assert_eq!(
            by,
            Served {
                hot: true,
                cold: true
            }
        );
        // Partial overlap: the one with more contributions (the row on a tie).
        let (c, by) = merge_minute(&row, &cell(8.0, &[(2, 1), (3, 7), (4, 1)]));
        assert_eq!((c.agg, by), (counter(8.0, 3), Served::HOT));
        let (c, by) = merge_minute(&row, &cell(8.0, &[(2, 1), (3, 7)]));
        assert_eq!((c.agg, by), (counter(5.0, 2), Served::COLD));
        // A type conflict keeps the row.
        let gauge = HotCell {
            contributors: vec![(9, 9)],
            agg: Aggregate::Gauge(thermo_core::aggregate::Gauge::new(1.0, 0)),
        };
        let (c, by) = merge_minute(&row, &gauge);
        assert_eq!((c, by), (row.clone(), Served::COLD));
    }

    #[test]
    fn rebucket_merges_windows_into_aligned_buckets() {
        let minutes = (0..15).map(|i| (3600 + i * 60, counter(1.0 + i as f64, 1)));
        let five = rebucket(minutes, 300);
        assert_eq!(
            five.keys().copied().collect::<Vec<_>>(),
            vec![3600, 3900, 4200]
        );
        assert_eq!(five[&3600], counter(15.0, 5)); // 1+2+3+4+5
        assert_eq!(five[&4200], counter(65.0, 5)); // 11..=15
        let hour = rebucket(five, 3600);
        assert_eq!(hour.len(), 1);
        assert_eq!(hour[&3600], counter(120.0, 15));
        // Negative times floor to the earlier bucket; a type conflict is left out.
        let mixed = vec![
            (-60, counter(1.0, 1)),
            (-300, counter(2.0, 1)),
            (
                -120,
                Aggregate::Gauge(thermo_core::aggregate::Gauge::new(1.0, 0)),
            ),
        ];
        assert_eq!(
            rebucket(mixed, 300),
            BTreeMap::from([(-300, counter(3.0, 2))])
        );
    }

    const H: i64 = 3600;
    const DAY: i64 = 86_400;

    #[test]
    fn plan_uses_complete_objects_and_falls_back_to_finer_data() {
        let mut v = ColdView::default();
        v.cold
            .insert(Resolution::OneMinute, [(0, 1), (H, 2)].into());
        v.cold.insert(Resolution::FiveMinutes, [(DAY, 4)].into());
        v.pending.insert(H);
        // Without cold storage: every hour from Redis.
        let p = plan(&ColdView::default(), Resolution::OneMinute, 1800, 2 * H);
        assert_eq!(
            p,
            vec![
                Part::Hour {
                    hour: 0,
                    from: 1800,
                    to: H,
                    cold: None,
                    hot: true
                },
                Part::Hour {
                    hour: H,
                    from: H,
                    to: 2 * H,
                    cold: None,
                    hot: true
                },
            ]
        );
        // Hour 0 only from its object; hour 1 (pending) object + Redis; hour 2 Redis.
        let p = plan(&v, Resolution::OneMinute, 0, 3 * H);
        assert_eq!(
            p,
            vec![
                Part::Hour {
                    hour: 0,
                    from: 0,
                    to: H,
                    cold: Some(1),
                    hot: false
                },
                Part::Hour {
                    hour: H,
                    from: H,
                    to: 2 * H,
                    cold: Some(2),
                    hot: true
                },
                Part::Hour {
                    hour: 2 * H,
                    from: 2 * H,
                    to: 3 * H,
                    cold: None,
                    hot: true
                },
            ]
        );
        // 5m over two days: day 0 has no object (from 1m), day 1 has one.
        let p = plan(&v, Resolution::FiveMinutes, 23 * H, DAY + 600);
        assert_eq!(
            p,
            vec![
                Part::Hour {
                    hour: 23 * H,
                    from: 23 * H,
                    to: DAY,
                    cold: None,
                    hot: true
                },
                Part::Object {
                    res: Resolution::FiveMinutes,
                    chunk: DAY,
                    generation: 4,
                    from: DAY,
                    to: DAY + 600
                },
            ]
        );
        // 1h over a week without a 1h object: days from 5m (day 1's object), others from 1m.
        let p = plan(&v, Resolution::OneHour, 0, 604_800);
        assert_eq!(p.len(), 24 + 1 + 5 * 24);
        assert!(p.contains(&Part::Object {
            res: Resolution::FiveMinutes,
            chunk: DAY,
            generation: 4,
            from: DAY,
            to: 2 * DAY
        }));
        assert_eq!(hot_runs(&p), vec![(H, DAY), (2 * DAY, 604_800)]);
    }
}
