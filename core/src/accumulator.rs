//! The agent's per-minute pre-aggregation: StatsD datagrams in, closed minutes out.
//!
//! Invariants:
//! - a value lands in the minute its line was received (`now_ms`), or the minute of its `|T`
//!   timestamp when that is within `[now - max_past_secs, now + max_future_secs]`;
//! - every line is either aggregated (counted in `IngestStats::lines`) or refused with exactly one
//!   reason (`IngestStats::dropped`); a datagram's good lines count even when others are refused;
//! - at most `max_series` open series-minutes are held (`series_limit` drops beyond), so memory is
//!   bounded whatever the input;
//! - gauge deltas apply to the series' last gauge value, carried across minutes (0 if none yet).
//!
//! The hot path looks a line up by a raw series id (`name|type|tags-as-sent`) in a reused buffer,
//! without allocating; the canonical [`MetricKey`] is built and validated once per new series.

use crate::aggregate::{Aggregate, Binned, Counter, DistinctSet, Gauge, Hist};
use crate::key::{KeyError, MetricKey};
use crate::statsd::{parse_datagram, Kind, Line, ParseError, Value};
use crate::window::{minute_start, MINUTE};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

/// Why an accepted-for-parsing line was not aggregated (beyond parse errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    Parse(ParseError),
    /// Name or tags break a key limit.
    InvalidKey,
    /// `|T` older than `max_past_secs`.
    TooOld,
    /// `|T` further ahead than `max_future_secs`.
    InFuture,
    /// `max_series` reached.
    SeriesLimit,
    /// Set already holds its maximum of distinct members.
    SetFull,
    /// The same series was sent with two types in one minute.
    TypeConflict,
}

impl Drop {
    /// The `reason` label of the dropped counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Parse(p) => p.as_str(),
            Drop::InvalidKey => "invalid_key",
            Drop::TooOld => "too_old",
            Drop::InFuture => "in_future",
            Drop::SeriesLimit => "series_limit",
            Drop::SetFull => "set_full",
            Drop::TypeConflict => "type_conflict",
        }
    }
}

/// Counters of one ingest call (or many, when reused).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestStats {
    /// Lines aggregated.
    pub lines: u64,
    /// Lines (or values) refused, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// The last refusal, for a rate-limited log line: (reason, detail).
    pub last_error: Option<(&'static str, String)>,
}

impl IngestStats {
    fn drop(&mut self, reason: Drop, detail: &str) {
        self.refuse(reason.as_str(), detail);
    }

    /// Counts one refusal for `reason` (the `reason` label), keeping `detail` (its first 200
    /// bytes) for the log line.
    pub fn refuse(&mut self, reason: &'static str, detail: &str) {
        self.refuse_n(reason, 1, detail);
    }

    /// Counts `n` refusals for `reason` at once (nothing when `n` is 0).
    pub fn refuse_n(&mut self, reason: &'static str, n: u64, detail: &str) {
        if n == 0 {
            return;
        }
        *self.dropped.entry(reason).or_insert(0) += n;
        let mut end = detail.len().min(200);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        self.last_error = Some((reason, detail[..end].to_string()));
    }

    /// Total refused.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// What was refused, for an answer: `"<n> <what> refused (<reason>: <n>, ...); the last,
    /// <reason>: <detail>"`; `None` when nothing was.
    pub fn refusals(&self, what: &str) -> Option<String> {
        let (reason, detail) = self.last_error.as_ref()?;
        let n = self.dropped_total();
        let counts: Vec<String> = self
            .dropped
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        (n > 0).then(|| {
            format!(
                "{n} {what} refused ({}); the last, {reason}: {detail}",
                counts.join(", ")
            )
        })
    }
}

/// Settings of an [`Accumulator`].
#[derive(Debug, Clone)]
pub struct AccumulatorConfig {
    pub tenant: String,
    /// Tags added to every series (such as `host`); a tag sent on the line wins.
    pub global_tags: Vec<(String, String)>,
    pub max_past_secs: i64,
    pub max_future_secs: i64,
    pub max_series: usize,
}

struct Slot {
    key: MetricKey,
    agg: Aggregate,
}

/// One closed (or force-flushed) minute: every series with its state.
pub type ClosedMinute = (i64, Vec<(MetricKey, Aggregate)>);

/// A typed value for [`Accumulator::add_sample`].
#[derive(Debug, Clone)]
pub enum Sample {
    /// Added to the minute's counter.
    Counter(f64),
    /// The gauge's value at the sample's time.
    Gauge(f64),
    /// Added into the minute's histogram.
    Histogram(Binned),
}

/// Sets gauge `g` to `value` at `at_ms`.
fn set_gauge(g: &mut Gauge, value: f64, at_ms: i64) {
    // Every update of a series gets a strictly later ordering time than the one before it, so
    // that when two flushes of one minute are merged downstream, the later value wins even with
    // equal timestamps.
    let at = at_ms.max(g.last_ms.saturating_add(1));
    if g.min.is_nan() {
        *g = Gauge::new(value, at);
    } else {
        g.last = value;
        g.last_ms = at;
        g.min = g.min.min(value);
        g.max = g.max.max(value);
    }
}

/// A gauge's value and ordering time (`None`: not a gauge).
fn gauge_of(agg: &Aggregate) -> Option<(f64, i64)> {
    match agg {
        Aggregate::Gauge(g) => Some((g.last, g.last_ms)),
        _ => None,
    }
}

/// Per-minute pre-aggregation of StatsD lines.
pub struct Accumulator {
    cfg: AccumulatorConfig,
    minutes: BTreeMap<i64, FxHashMap<Box<str>, Slot>>,
    open_series: usize,
    /// Last gauge value per raw id, its ordering timestamp, and the minute it was last set (for
    /// pruning).
    gauges: FxHashMap<Box<str>, (f64, i64, i64)>,
    scratch: String,
}

impl Accumulator {
    pub fn new(cfg: AccumulatorConfig) -> Self {
        Self {
            cfg,
            minutes: BTreeMap::new(),
            open_series: 0,
            gauges: FxHashMap::default(),
            scratch: String::with_capacity(256),
        }
    }

    /// Number of series-minutes held.
    pub fn open_series(&self) -> usize {
        self.open_series
    }

    /// Parses and aggregates one datagram received at `now_ms` (unix milliseconds).
    pub fn ingest(&mut self, datagram: &[u8], now_ms: i64, stats: &mut IngestStats) {
        for line in parse_datagram(datagram) {
            match line {
                Ok(line) => match self.add_line(&line, now_ms) {
                    Ok(()) => stats.lines += 1,
                    Err(d) => stats.drop(d, line.name),
                },
                Err(e) => stats.drop(Drop::Parse(e), &String::from_utf8_lossy(datagram)),
            }
        }
    }

    fn build_key<'t>(
        &self,
        name: &str,
        sent: impl Iterator<Item = (&'t str, &'t str)>,
    ) -> Result<MetricKey, KeyError> {
        let mut tags: Vec<(String, String)> =
            sent.map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (k, v) in &self.cfg.global_tags {
            if !tags.iter().any(|(tk, _)| tk == k) {
                tags.push((k.clone(), v.clone()));
            }
        }
        MetricKey::new(self.cfg.tenant.clone(), name, tags)
    }

    /// The minute of a value at `at_ms` (unix ms; `None`: received now), and its ordering time.
    fn minute_of(&self, at_ms: Option<i64>, now_ms: i64) -> Result<(i64, i64), Drop> {
        let now_s = now_ms.div_euclid(1000);
        match at_ms {
            Some(ms) => {
                let ts = ms.div_euclid(1000);
                if ts < now_s - self.cfg.max_past_secs {
                    return Err(Drop::TooOld);
                }
                if ts > now_s + self.cfg.max_future_secs {
                    return Err(Drop::InFuture);
                }
                Ok((minute_start(ts), ms))
            }
            None => Ok((minute_start(now_s), now_ms)),
        }
    }

    /// The slot of the series whose raw id is in `scratch`, in `minute`; a new one (of `kind`,
    /// keyed by what `key` builds) if there is none.
    fn slot(
        &mut self,
        minute: i64,
        kind: Kind,
        key: impl FnOnce(&Self) -> Result<MetricKey, KeyError>,
    ) -> Result<&mut Slot, Drop> {
        let exists = self
            .minutes
            .get(&minute)
            .is_some_and(|m| m.contains_key(self.scratch.as_str()));
        if !exists {
            if self.open_series >= self.cfg.max_series {
                return Err(Drop::SeriesLimit);
            }
            let key = key(self).map_err(|_| Drop::InvalidKey)?;
            let agg = match kind {
                Kind::Counter => Aggregate::Counter(Counter::default()),
                Kind::Timer | Kind::Histogram | Kind::Distribution => {
                    Aggregate::Histogram(Hist::new())
                }
                Kind::Set => Aggregate::Set(DistinctSet::default()),
                Kind::Gauge => {
                    let (prev, prev_ms) = self
                        .gauges
                        .get(self.scratch.as_str())
                        .map_or((0.0, i64::MIN), |(v, ms, _)| (*v, *ms));
                    // min/max NaN: no value yet this minute; `last` only seeds deltas.
                    Aggregate::Gauge(Gauge {
                        last: prev,
                        last_ms: prev_ms,
                        min: f64::NAN,
                        max: f64::NAN,
                    })
                }
            };
            self.minutes
                .entry(minute)
                .or_default()
                .insert(self.scratch.as_str().into(), Slot { key, agg });
            self.open_series += 1;
        }
        self.minutes
            .get_mut(&minute)
            .and_then(|m| m.get_mut(self.scratch.as_str()))
            .ok_or(Drop::SeriesLimit) // unreachable: inserted above
    }

    /// Remembers a gauge's value as the base of later deltas of the series in `scratch`.
    fn remember_gauge(&mut self, gauge: Option<(f64, i64)>, minute: i64) {
        if let Some((last, last_ms)) = gauge {
            self.gauges
                .insert(self.scratch.as_str().into(), (last, last_ms, minute));
        }
    }

    /// Aggregates one typed value of series `name` with `tags` (intakes that decode numbers
    /// themselves, like OTLP), at `at_ms` (unix ms; `None`: now). Counter values add, gauge values
    /// set (absolute), histograms merge. The series is not the same as a StatsD line's of the
    /// same name and tags until the minute is taken (then they merge, or conflict by type).
    pub fn add_sample(
        &mut self,
        name: &str,
        tags: &[(String, String)],
        at_ms: Option<i64>,
        sample: Sample,
        now_ms: i64,
    ) -> Result<(), Drop> {
        let (minute, at_ms) = self.minute_of(at_ms, now_ms)?;
        let kind = match &sample {
            Sample::Counter(v) | Sample::Gauge(v) if !v.is_finite() => {
                return Err(Drop::Parse(ParseError::BadValue))
            }
            Sample::Counter(_) => Kind::Counter,
            Sample::Gauge(_) => Kind::Gauge,
            Sample::Histogram(_) => Kind::Distribution,
        };
        // A raw id no StatsD line has (lines hold no control characters).
        self.scratch.clear();
        self.scratch.push('\u{1}');
        self.scratch.push_str(name);
        self.scratch.push('|');
        self.scratch.push_str(kind.as_str());
        for (k, v) in tags {
            self.scratch.push('|');
            self.scratch.push_str(k);
            self.scratch.push('=');
            self.scratch.push_str(v);
        }
        let slot = self.slot(minute, kind, |acc| {
            acc.build_key(name, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })?;
        match (&mut slot.agg, sample) {
            (Aggregate::Counter(c), Sample::Counter(v)) => {
                c.sum += v;
                c.samples += 1;
            }
            (Aggregate::Gauge(g), Sample::Gauge(v)) => set_gauge(g, v, at_ms),
            (Aggregate::Histogram(h), Sample::Histogram(b)) => h.add_binned(&b),
            _ => return Err(Drop::TypeConflict), // unreachable: the kind is in the raw id
        }
        let gauge = gauge_of(&slot.agg);
        self.remember_gauge(gauge, minute);
        Ok(())
    }

    /// Aggregates one parsed line.
    pub fn add_line(&mut self, line: &Line<'_>, now_ms: i64) -> Result<(), Drop> {
        let at_ms = line.timestamp.map(|ts| ts.saturating_mul(1000));
        let (minute, at_ms) = self.minute_of(at_ms, now_ms)?;
        self.scratch.clear();
        self.scratch.push_str(line.name);
        self.scratch.push('|');
        self.scratch.push_str(line.kind.as_str());
        self.scratch.push('|');
        self.scratch.push_str(line.tags);
        let slot = self.slot(minute, line.kind, |acc| {
            acc.build_key(line.name, line.tag_pairs())
        })?;
        let weight = (1.0 / line.rate).round().max(1.0) as u64;
        for v in line.values() {
            match (&mut slot.agg, v) {
                (Aggregate::Counter(c), Ok(Value::Number(n))) => {
                    c.sum += n / line.rate;
                    c.samples += 1;
                }
                (Aggregate::Histogram(h), Ok(Value::Number(n))) => h.record(n, weight),
                (Aggregate::Set(s), Ok(Value::Member(m))) => {
                    if !s.insert(m) {
                        return Err(Drop::SetFull);
                    }
                }
                (Aggregate::Gauge(g), Ok(v)) => {
                    let value = match v {
                        Value::Number(n) => n,
                        // On a fresh slot `last` holds the value carried over from earlier minutes.
                        Value::Delta(d) => g.last + d,
                        Value::Member(_) => return Err(Drop::Parse(ParseError::BadValue)),
                    };
                    set_gauge(g, value, at_ms);
                }
                (_, Err(e)) => return Err(Drop::Parse(e)),
                _ => return Err(Drop::Parse(ParseError::BadValue)),
            }
        }
        let gauge = gauge_of(&slot.agg);
        self.remember_gauge(gauge, minute);
        Ok(())
    }

    /// Removes and returns every minute whose end plus `delay_secs` is at or before `now_s`.
    pub fn take_closed(
        &mut self,
        now_s: i64,
        delay_secs: i64,
        stats: &mut IngestStats,
    ) -> Vec<ClosedMinute> {
        let closed: Vec<i64> = self
            .minutes
            .keys()
            .copied()
            .filter(|m| m + MINUTE + delay_secs <= now_s)
            .collect();
        let out = closed
            .into_iter()
            .filter_map(|m| self.take_minute(m, stats))
            .collect();
        // Forget gauge bases not set for an hour, so the map stays bounded by live series.
        self.gauges.retain(|_, (_, _, m)| *m + 3600 > now_s);
        out
    }

    /// Removes and returns every minute, open or not (flush on demand and at shutdown).
    pub fn take_all(&mut self, stats: &mut IngestStats) -> Vec<ClosedMinute> {
        let all: Vec<i64> = self.minutes.keys().copied().collect();
        all.into_iter()
            .filter_map(|m| self.take_minute(m, stats))
            .collect()
    }

    fn take_minute(&mut self, minute: i64, stats: &mut IngestStats) -> Option<ClosedMinute> {
        let slots = self.minutes.remove(&minute)?;
        self.open_series -= slots.len();
        let series = slots.into_values().map(|slot| (slot.key, slot.agg));
        let merged = merge_by_key(series, |key| stats.drop(Drop::TypeConflict, key.name()));
        Some((minute, merged))
    }

    /// A copy of every open minute, as [`Self::take_all`] would return them: what a checkpoint
    /// holds. Two types for one series in one minute keep the first (the flush counts the
    /// conflict).
    pub fn snapshot(&self) -> Vec<ClosedMinute> {
        self.minutes
            .iter()
            .map(|(minute, slots)| {
                let series = slots
                    .values()
                    .map(|slot| (slot.key.clone(), slot.agg.clone()));
                (*minute, merge_by_key(series, |_| {}))
            })
            .collect()
    }

    /// Adds `minutes` (a checkpoint's) to the open minutes, beyond `max_series` if need be;
    /// returns the series-minutes added. Lines that follow for the same series go to slots of
    /// their own, merged with these when the minute is taken. A relative gauge line (`+N`, `-N`)
    /// starts from the last absolute value seen since the restart (0 when none).
    pub fn restore(&mut self, minutes: Vec<ClosedMinute>) -> usize {
        let mut added = 0;
        for (minute, series) in minutes {
            let slots = self.minutes.entry(minute).or_default();
            for (key, agg) in series {
                // Not the raw id of any line (lines hold no NUL).
                let id: Box<str> = format!("\0{key}").into();
                match slots.get_mut(&id) {
                    Some(slot) => {
                        let _ = slot.agg.merge(&agg);
                    }
                    None => {
                        slots.insert(id, Slot { key, agg });
                        self.open_series += 1;
                        added += 1;
                    }
                }
            }
        }
        added
    }
}

/// Series merged by key, in key order: raw ids that differ only in tag order canonicalise to one
/// key. `conflict` is told of each series with two types in one minute (the first is kept).
fn merge_by_key(
    series: impl Iterator<Item = (MetricKey, Aggregate)>,
    mut conflict: impl FnMut(&MetricKey),
) -> Vec<(MetricKey, Aggregate)> {
    let mut merged: BTreeMap<MetricKey, Aggregate> = BTreeMap::new();
    for (key, agg) in series {
        match merged.get_mut(&key) {
            Some(existing) => {
                if existing.merge(&agg).is_err() {
                    conflict(&key);
                }
            }
            None => {
                merged.insert(key, agg);
            }
        }
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc() -> Accumulator {
        Accumulator::new(AccumulatorConfig {
            tenant: "default".into(),
            global_tags: vec![("host".into(), "h1".into())],
            max_past_secs: 3600,
            max_future_secs: 60,
            max_series: 1000,
        })
    }

    const NOW: i64 = 1_700_000_030_000; // unix ms, 50 s into its minute

    #[test]
    fn typed_samples_land_in_their_minute_and_merge_with_lines_of_the_same_series() {
        let mut a = acc();
        let tags = vec![("route".to_string(), "/a".to_string())];
        let minute = minute_start(NOW / 1000);
        let earlier_ms = (minute - 60) * 1000 + 5_000;
        a.add_sample("req", &tags, None, Sample::Counter(2.5), NOW)
            .unwrap();
        a.add_sample("req", &tags, Some(earlier_ms), Sample::Counter(1.0), NOW)
            .unwrap();
        // The same series as a StatsD line: its own slot until the minute is taken, then merged.
        let mut st = IngestStats::default();
        a.ingest(b"req:4|c|#route:/a", NOW, &mut st);
        a.add_sample("mem", &[], Some(NOW - 2_000), Sample::Gauge(7.0), NOW)
            .unwrap();
        a.add_sample("mem", &[], Some(NOW - 1_000), Sample::Gauge(3.0), NOW)
            .unwrap();
        let hist = |v: f64| {
            Sample::Histogram(Binned {
                count: 1,
                sum: v,
                min: v,
                max: v,
                bins: vec![(v, 1)],
            })
        };
        a.add_sample("lat", &[], None, hist(10.0), NOW).unwrap();
        a.add_sample("lat", &[], None, hist(30.0), NOW).unwrap();
        // Refusals, each by its reason, nothing held for them.
        let too_old = NOW - 3_601_000;
        assert_eq!(
            a.add_sample("req", &tags, Some(too_old), Sample::Counter(1.0), NOW),
            Err(Drop::TooOld)
        );
        assert_eq!(
            a.add_sample("req", &tags, None, Sample::Counter(f64::NAN), NOW),
            Err(Drop::Parse(ParseError::BadValue))
        );
        assert_eq!(
            a.add_sample("9bad", &[], None, Sample::Counter(1.0), NOW),
            Err(Drop::InvalidKey)
        );
        assert_eq!(a.open_series(), 5); // req (twice this minute, once the one before), mem, lat
        let out = a.take_all(&mut st);
        let value = |m: i64, name: &str| {
            let (_, series) = out.iter().find(|(at, _)| *at == m).unwrap();
            series
                .iter()
                .find(|(k, _)| k.name() == name)
                .map(|(k, a)| (k.encode(), a.clone()))
        };
        let (key, req) = value(minute, "req").unwrap();
        assert_eq!(key, "default/req{host=h1,route=/a}");
        assert_eq!(
            req,
            Aggregate::Counter(Counter {
                sum: 6.5,
                samples: 2
            })
        );
        assert_eq!(
            value(minute - 60, "req").unwrap().1,
            Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1
            })
        );
        let Aggregate::Gauge(g) = value(minute, "mem").unwrap().1 else {
            panic!()
        };
        assert_eq!((g.last, g.min, g.max), (3.0, 3.0, 7.0));
        let Aggregate::Histogram(h) = value(minute, "lat").unwrap().1 else {
            panic!()
        };
        assert_eq!((h.count, h.sum, h.min, h.max), (2, 40.0, 10.0, 30.0));
        assert_eq!(st.dropped_total(), 0, "no type conflict");
    }

    #[test]
    fn counters_gauges_timers_sets_per_minute() {
        let mut a = acc();
        let mut st = IngestStats::default();
        a.ingest(
            b"req:1|c|#route:/a\nreq:2|c|@0.5|#route:/a\nmem:10|g\nmem:-3|g\nmem:+1|g\nlat:10|ms\nlat:30|ms|@0.5\nu:a|s\nu:b|s\nu:a|s",
            NOW,
            &mut st,
        );
        assert_eq!(st.lines, 10);
        assert_eq!(st.dropped_total(), 0);
        let out = a.take_all(&mut st);
        assert_eq!(out.len(), 1);
        let (minute, series) = &out[0];
        assert_eq!(*minute, minute_start(NOW / 1000));
        let get = |name: &str| {
            series
                .iter()
                .find(|(k, _)| k.name() == name)
                .map(|(k, a)| (k.clone(), a.clone()))
                .unwrap()
        };
        let (k, req) = get("req");
        assert_eq!(k.encode(), "default/req{host=h1,route=/a}");
        assert_eq!(
            req,
            Aggregate::Counter(Counter {
                sum: 5.0,
                samples: 2
            })
        );
        match get("mem").1 {
            Aggregate::Gauge(g) => assert_eq!((g.last, g.min, g.max), (8.0, 7.0, 10.0)),
            other => panic!("{other:?}"),
        }
        match get("lat").1 {
            Aggregate::Histogram(h) => {
                assert_eq!((h.count, h.sum, h.min, h.max), (3, 70.0, 10.0, 30.0))
            }
            other => panic!("{other:?}"),
        }
        match get("u").1 {
            Aggregate::Set(s) => assert_eq!(s.members.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gauge_delta_carries_across_minutes() {
        let mut a = acc();
        let mut st = IngestStats::default();
        a.ingest(b"mem:10|g", NOW, &mut st);
        a.take_all(&mut st);
        a.ingest(b"mem:+5|g", NOW + 60_000, &mut st);
        let out = a.take_all(&mut st);
        match &out[0].1[0].1 {
            Aggregate::Gauge(g) => assert_eq!((g.last, g.min, g.max), (15.0, 15.0, 15.0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_minute_flushed_twice_merges_to_the_later_gauge() {
        let mut a = acc();
        let mut st = IngestStats::default();
        let ts = NOW / 1000 - 120;
        a.ingest(format!("mem:100|g|T{ts}").as_bytes(), NOW, &mut st);
        let mut first = a.take_all(&mut st);
        a.ingest(
            format!("mem:-30|g|T{ts}\nmem:+5|g|T{ts}").as_bytes(),
            NOW,
            &mut st,
        );
        let second = a.take_all(&mut st);
        let mut merged = first.remove(0).1.remove(0).1;
        merged.merge(&second[0].1[0].1).unwrap();
        match merged {
            Aggregate::Gauge(g) => assert_eq!((g.last, g.min, g.max), (75.0, 70.0, 100.0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_place_values_and_limits_drop() {
        let mut a = acc();
        let mut st = IngestStats::default();
        let now_s = NOW / 1000;
        let old = format!(
            "x:1|c|T{}\ny:1|c|T{}\nz:1|c|T{}",
            now_s - 600,
            now_s - 7200,
            now_s + 3600
        );
        a.ingest(old.as_bytes(), NOW, &mut st);
        assert_eq!(st.lines, 1);
        assert_eq!(st.dropped.get("too_old"), Some(&1));
        assert_eq!(st.dropped.get("in_future"), Some(&1));
        let out = a.take_closed(now_s, 5, &mut st);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, minute_start(now_s - 600));
    }

    #[test]
    fn closes_only_after_the_delay() {
        let mut a = acc();
        let mut st = IngestStats::default();
        let now_s = NOW / 1000;
        a.ingest(b"x:1|c", NOW, &mut st);
        let m = minute_start(now_s);
        assert!(a.take_closed(m + 60 + 4, 5, &mut st).is_empty());
        assert_eq!(a.take_closed(m + 60 + 5, 5, &mut st).len(), 1);
        assert_eq!(a.open_series(), 0);
    }

    #[test]
    fn series_limit_and_invalid_tags_are_counted() {
        let mut a = Accumulator::new(AccumulatorConfig {
            max_series: 2,
            ..acc().cfg
        });
        let mut st = IngestStats::default();
        a.ingest(
            b"a:1|c\nb:1|c\nc:1|c\na:1|c\nd:1|c|#bad tag:1",
            NOW,
            &mut st,
        );
        assert_eq!(st.lines, 3);
        assert_eq!(st.dropped.get("series_limit"), Some(&2));
        let mut b = acc();
        b.ingest(b"d:1|c|#k:a=b", NOW, &mut st);
        assert_eq!(st.dropped.get("invalid_key"), Some(&1));
    }

    /// A snapshot restored into a new accumulator, then more lines: taken, the same totals as
    /// one accumulator that saw every line.
    #[test]
    fn a_snapshot_restored_continues_where_it_was() {
        let mut st = IngestStats::default();
        let first = b"req:1|c|#route:/a\nlat:10|ms\nu:a|s\nmem:5|g".as_slice();
        let then = b"req:2|c|#route:/a\nlat:30|ms\nu:b|s\nmem:7|g".as_slice();
        let mut one = acc();
        one.ingest(first, NOW, &mut st);
        one.ingest(then, NOW + 1_000, &mut st);
        let mut before = acc();
        before.ingest(first, NOW, &mut st);
        let snap = before.snapshot();
        assert_eq!(snap, acc_with(first).take_all(&mut st));
        let mut after = acc();
        assert_eq!(after.restore(snap), 4);
        after.ingest(then, NOW + 1_000, &mut st);
        assert_eq!(after.open_series(), 8);
        assert_eq!(after.take_all(&mut st), one.take_all(&mut st));
        assert_eq!(st.dropped_total(), 0);
    }

    fn acc_with(lines: &[u8]) -> Accumulator {
        let mut a = acc();
        a.ingest(lines, NOW, &mut IngestStats::default());
        a
    }
}
