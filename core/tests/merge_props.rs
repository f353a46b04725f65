//! Property tests of thermo-core's invariants:
//!
//! - `Aggregate::merge` is associative and commutative, with the empty state as identity;
//! - aggregating split StatsD input in two accumulators and merging per key equals aggregating the
//!   whole input in one; how the lines are cut into datagrams does not matter (gauges included);
//! - gauge deltas follow a running value, carried across minutes;
//! - the codecs round-trip, a replayed contribution is merged once (`HotCell::has`), and decoders
//!   never panic on damaged input;
//! - the StatsD parser and `Accumulator::ingest` never panic, and every non-empty line is either
//!   aggregated or dropped with one reason.
//!
//! Values are integers (as f64) wherever sums are compared, so float addition is exact and the
//! equalities are exact too.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeMap;
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, IngestStats};
use thermo_core::aggregate::{Aggregate, Counter, DistinctSet, Gauge, Hist};
use thermo_core::codec::{Batch, HotCell, Item, LogValue, Record, TotalsRecord};
use thermo_core::key::MetricKey;
use thermo_core::statsd::parse_datagram;

fn config() -> ProptestConfig {
    config_with(256)
}

/// For the properties that build many HDR histograms (tens of KiB each), so that the whole file
/// stays within a few seconds in a debug build.
fn config_with(cases: u32) -> ProptestConfig {
    ProptestConfig {
        // Keep failures on screen rather than writing `proptest-regressions/` files.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

// ------------------------------------------------------------------------------------------------
// Strategies
// ------------------------------------------------------------------------------------------------

/// An integer in `lo..hi`, as f64.
fn int(lo: i64, hi: i64) -> impl Strategy<Value = f64> {
    (lo..hi).prop_map(|v| v as f64)
}

fn counter() -> impl Strategy<Value = Aggregate> {
    (int(-1_000_000, 1_000_000), 0u64..1_000)
        .prop_map(|(sum, samples)| Aggregate::Counter(Counter { sum, samples }))
}

/// Gauges with few distinct timestamps and small (also negative) values, so that ties on the
/// timestamp, decided by value, are frequent.
fn gauge() -> impl Strategy<Value = Aggregate> {
    (int(-20, 20), 0i64..4, int(-20, 20), int(-20, 20)).prop_map(|(last, last_ms, a, b)| {
        Aggregate::Gauge(Gauge {
            last,
            last_ms,
            min: last.min(a).min(b),
            max: last.max(a).max(b),
        })
    })
}

/// A long-tailed histogram value: mostly small, sometimes large, sometimes negative (recorded as 0
/// in the HDR part).
fn hist_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => int(0, 1_000),
        2 => int(1_000, 10_000_000),
        1 => int(-1_000, 0),
    ]
}

/// One histogram in five also holds values beyond `HIST_MAX` (clamped in the HDR part only, whose
/// counts then span the whole range: those are the expensive ones).
fn hist() -> impl Strategy<Value = Aggregate> {
    let huge = int(1_000_000_000_000, 3_000_000_000_000);
    let values = prop_oneof![
        4 => vec((hist_value(), 1u64..5), 0..30),
        1 => vec((prop_oneof![4 => hist_value(), 1 => huge], 1u64..5), 0..30),
    ];
    values.prop_map(|values| {
        let mut h = Hist::new();
        for (v, w) in values {
            h.record(v, w);
        }
        Aggregate::Histogram(h)
    })
}

fn set() -> impl Strategy<Value = Aggregate> {
    vec("[a-h]{1,3}", 0..20).prop_map(|members| {
        let mut s = DistinctSet::default();
        for m in &members {
            assert!(s.insert(m));
        }
        Aggregate::Set(s)
    })
}

fn any_aggregate() -> impl Strategy<Value = Aggregate> {
    prop_oneof![counter(), gauge(), hist(), set()]
}

/// Aggregates with any bit patterns in their floats (but no NaN, which is never equal to itself),
/// for codec round trips.
fn wild_aggregate() -> impl Strategy<Value = Aggregate> {
    let f = || any::<f64>().prop_filter("NaN is not equal to itself", |v| !v.is_nan());
    prop_oneof![
        (f(), any::<u64>()).prop_map(|(sum, samples)| Aggregate::Counter(Counter { sum, samples })),
        (f(), any::<i64>(), f(), f()).prop_map(|(last, last_ms, min, max)| {
            Aggregate::Gauge(Gauge {
                last,
                last_ms,
                min,
                max,
            })
        }),
        hist(),
        set(),
    ]
}

fn merged(a: &Aggregate, b: &Aggregate) -> Aggregate {
    let mut m = a.clone();
    m.merge(b).expect("same type");
    m
}

fn check_laws(a: &Aggregate, b: &Aggregate, c: &Aggregate) -> Result<(), TestCaseError> {
    prop_assert_eq!(merged(a, b), merged(b, a), "commutative");
    prop_assert_eq!(
        merged(&merged(a, b), c),
        merged(a, &merged(b, c)),
        "associative"
    );
    if let Some(empty) = Aggregate::empty(a.metric_type()) {
        prop_assert_eq!(&merged(&empty, a), a, "empty is a left identity");
        prop_assert_eq!(&merged(a, &empty), a, "empty is a right identity");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Merge laws
// ------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn counter_merge_is_associative_and_commutative(a in counter(), b in counter(), c in counter()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn gauge_merge_is_associative_and_commutative(a in gauge(), b in gauge(), c in gauge()) {
        check_laws(&a, &b, &c)?;
        // The merged last is the greatest (timestamp, value): latest, then largest.
        let m = merged(&merged(&a, &b), &c);
        let Aggregate::Gauge(m) = m else { unreachable!() };
        let best = [&a, &b, &c]
            .iter()
            .map(|g| match g {
                Aggregate::Gauge(g) => (g.last_ms, g.last),
                _ => unreachable!(),
            })
            .max_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)))
            .unwrap();
        prop_assert_eq!((m.last_ms, m.last), best);
    }

    #[test]
    fn histogram_merge_is_associative_and_commutative(a in hist(), b in hist(), c in hist()) {
        // `Aggregate`'s equality compares count, sum, min, max and the HDR histogram.
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn set_merge_is_associative_and_commutative(a in set(), b in set(), c in set()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn merging_different_types_is_refused_and_changes_nothing(
        a in any_aggregate(),
        b in any_aggregate(),
    ) {
        prop_assume!(a.metric_type() != b.metric_type());
        let mut m = a.clone();
        prop_assert!(m.merge(&b).is_err());
        prop_assert_eq!(m, a);
    }
}

// ------------------------------------------------------------------------------------------------
// Accumulator: split input, datagram boundaries, gauge deltas
// ------------------------------------------------------------------------------------------------

/// 50 s into its minute.
const NOW_MS: i64 = 1_700_000_030_000;
const NOW_S: i64 = NOW_MS / 1000;

fn acc() -> Accumulator {
    Accumulator::new(AccumulatorConfig {
        tenant: "acme".into(),
        global_tags: vec![("host".into(), "h1".into())],
        max_past_secs: 3600,
        max_future_secs: 60,
        max_series: 100_000,
    })
}

const MEMBERS: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
/// `code:200,route:/b` and `route:/b,code:200` are one series with two raw ids.
const TAGS: [&str; 6] = [
    "",
    "|#route:/a",
    "|#route:/b,code:200",
    "|#code:200,route:/b",
    "|#code:500",
    "|#env",
];
const RATES: [&str; 3] = ["", "|@0.5", "|@0.25"];

/// A valid counter, timer/histogram/distribution or set line. A name always has one aggregate type
/// (`lat` comes as `ms` and `h`, both histograms), so no type conflicts arise.
fn mergeable_line() -> impl Strategy<Value = String> {
    let metric = select(vec![
        ("req", "c"),
        ("errors", "c"),
        ("lat", "ms"),
        ("lat", "h"),
        ("size", "d"),
        ("users", "s"),
    ]);
    (
        metric,
        vec(-100i64..10_000, 1..4),
        select(RATES.to_vec()),
        select(TAGS.to_vec()),
        prop::option::of(0i64..180),
    )
        .prop_map(|((name, kind), values, rate, tags, back)| {
            let values: Vec<String> = values
                .iter()
                .map(|v| match kind {
                    "s" => MEMBERS[v.rem_euclid(5) as usize].to_string(),
                    _ => v.to_string(),
                })
                .collect();
            let ts = back.map_or(String::new(), |b| format!("|T{}", NOW_S - b));
            format!("{name}:{}|{kind}{rate}{tags}{ts}", values.join(":"))
        })
}

/// A valid gauge line: a set to a non-negative value (a leading `-` would make it a delta) or a
/// `+`/`-` delta.
fn gauge_line() -> impl Strategy<Value = String> {
    (
        select(vec!["mem", "queue.depth"]),
        select(TAGS[..3].to_vec()),
        prop_oneof![
            (0i64..1_000).prop_map(|v| v.to_string()),
            (-500i64..500).prop_map(|v| if v < 0 {
                v.to_string()
            } else {
                format!("+{v}")
            }),
        ],
        prop::option::of(0i64..180),
    )
        .prop_map(|(name, tags, value, back)| {
            let ts = back.map_or(String::new(), |b| format!("|T{}", NOW_S - b));
            format!("{name}:{value}|g{tags}{ts}")
        })
}

/// Feeds `lines` as datagrams of `per_datagram` lines each.
fn feed(a: &mut Accumulator, lines: &[String], per_datagram: usize, st: &mut IngestStats) {
    for chunk in lines.chunks(per_datagram.max(1)) {
        a.ingest(chunk.join("\n").as_bytes(), NOW_MS, st);
    }
}

type Merged = BTreeMap<(i64, MetricKey), Aggregate>;

/// Takes everything from `a` and merges it per (minute, key) into `into`.
fn take_into(a: &mut Accumulator, into: &mut Merged) -> Result<(), TestCaseError> {
    let mut st = IngestStats::default();
    for (minute, series) in a.take_all(&mut st) {
        for (key, agg) in series {
            match into.get_mut(&(minute, key.clone())) {
                Some(existing) => prop_assert!(existing.merge(&agg).is_ok()),
                None => {
                    into.insert((minute, key), agg);
                }
            }
        }
    }
    prop_assert_eq!(st.dropped_total(), 0, "take_all dropped {:?}", st.dropped);
    prop_assert_eq!(a.open_series(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(config_with(128))]

    #[test]
    fn merging_split_input_equals_aggregating_the_whole(
        lines in vec(mergeable_line(), 0..60),
        split in any::<prop::sample::Index>(),
        per_datagram in 1usize..25,
    ) {
        let k = split.index(lines.len() + 1);
        let (left, right) = lines.split_at(k);

        let mut parts = Merged::new();
        let mut st_parts = IngestStats::default();
        for half in [left, right] {
            let mut a = acc();
            feed(&mut a, half, per_datagram, &mut st_parts);
            take_into(&mut a, &mut parts)?;
        }

        let mut whole = Merged::new();
        let mut st_whole = IngestStats::default();
        let mut a = acc();
        feed(&mut a, &lines, per_datagram, &mut st_whole);
        take_into(&mut a, &mut whole)?;

        prop_assert_eq!(st_whole.dropped_total(), 0, "{:?}", st_whole.last_error);
        prop_assert_eq!(st_whole.lines, lines.len() as u64);
        prop_assert_eq!(st_parts.lines, st_whole.lines);
        prop_assert_eq!(parts, whole);
    }

    #[test]
    fn datagram_boundaries_do_not_matter(
        lines in vec(prop_oneof![mergeable_line(), gauge_line()], 0..60),
        per_datagram in 2usize..25,
    ) {
        let run = |per: usize| {
            let mut a = acc();
            let mut st = IngestStats::default();
            feed(&mut a, &lines, per, &mut st);
            let out = a.take_all(&mut st);
            (out, st.lines, st.dropped_total())
        };
        let one_per_line = run(1);
        prop_assert_eq!(one_per_line.1, lines.len() as u64);
        prop_assert_eq!(one_per_line.2, 0);
        prop_assert_eq!(&run(per_datagram), &one_per_line);
        prop_assert_eq!(&run(lines.len()), &one_per_line);
    }

    #[test]
    fn gauge_deltas_follow_a_running_value(
        first in vec((any::<bool>(), -1_000i64..1_000), 1..20),
        second in vec((any::<bool>(), -1_000i64..1_000), 1..20),
    ) {
        // (is_delta, v): a set uses |v| (a leading '-' would make it a delta).
        let line = |&(delta, v): &(bool, i64)| {
            if delta {
                if v < 0 { format!("mem:{v}|g") } else { format!("mem:+{v}|g") }
            } else {
                format!("mem:{}|g", v.abs())
            }
        };
        let mut a = acc();
        let mut st = IngestStats::default();
        let mut running = 0.0f64; // no value yet: deltas apply to 0
        for (minute_ms, ops) in [(NOW_MS, &first), (NOW_MS + 60_000, &second)] {
            let datagram: Vec<String> = ops.iter().map(line).collect();
            a.ingest(datagram.join("\n").as_bytes(), minute_ms, &mut st);
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for &(delta, v) in ops.iter() {
                running = if delta { running + v as f64 } else { v.abs() as f64 };
                min = min.min(running);
                max = max.max(running);
            }
            let out = a.take_all(&mut st);
            prop_assert_eq!(out.len(), 1);
            prop_assert_eq!(out[0].1.len(), 1);
            match &out[0].1[0].1 {
                Aggregate::Gauge(g) => {
                    prop_assert_eq!((g.last, g.min, g.max), (running, min, max));
                    // The receive time, possibly advanced by 1 ms per update so that later
                    // lines order after earlier ones downstream.
                    prop_assert!(
                        (minute_ms..minute_ms + ops.len() as i64).contains(&g.last_ms),
                        "last_ms {} for {} updates at {}",
                        g.last_ms,
                        ops.len(),
                        minute_ms
                    );
                }
                other => prop_assert!(false, "not a gauge: {:?}", other),
            }
        }
        prop_assert_eq!(st.lines, (first.len() + second.len()) as u64);
    }
}

// ------------------------------------------------------------------------------------------------
// Codecs and replays
// ------------------------------------------------------------------------------------------------

fn item() -> impl Strategy<Value = Item> {
    (
        "[a-z_][a-z0-9_.]{0,12}",
        vec(("[a-z]{1,6}", "[!-~]{0,8}"), 0..4),
        any::<i64>(),
        wild_aggregate(),
    )
        .prop_map(|(name, tags, minute, agg)| Item {
            name,
            tags,
            minute,
            agg,
        })
}

/// The hot store's merge step: a contribution already held is skipped.
fn apply(cell: &mut Option<HotCell>, source: u64, seq: u64, agg: &Aggregate) -> bool {
    match cell {
        None => {
            *cell = Some(HotCell {
                contributors: vec![(source, seq)],
                agg: agg.clone(),
            });
            true
        }
        Some(c) if c.has(source, seq) => false,
        Some(c) => {
            c.agg.merge(agg).expect("same type");
            c.contributors.push((source, seq));
            true
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn batch_record_and_hot_cell_round_trip(
        agent_id in "[ -~]{0,16}",
        seq in any::<u64>(),
        items in vec(item(), 0..6),
        minute in any::<i64>(),
        contributors in vec((any::<u64>(), any::<u64>()), 0..6),
        agg in wild_aggregate(),
    ) {
        let b = Batch { agent_id: agent_id.clone(), seq, items };
        prop_assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        let r = Record { source: agent_id, seq, minute, agg: agg.clone() };
        prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let c = HotCell { contributors: contributors.clone(), agg };
        let back = HotCell::decode(&c.encode()).unwrap();
        for (s, q) in &contributors {
            prop_assert!(back.has(*s, *q));
        }
        prop_assert_eq!(back, c);
    }

    #[test]
    fn replayed_contributions_are_merged_once(
        contributions in vec((0u64..4, 0u64..4, counter()), 1..12),
        replays in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // Distinct (source, seq) pairs, each with its own aggregate.
        let mut unique: BTreeMap<(u64, u64), Aggregate> = BTreeMap::new();
        for (s, q, agg) in contributions {
            unique.entry((s, q)).or_insert(agg);
        }
        let unique: Vec<_> = unique.into_iter().collect();
        // Every contribution once, then some of them again (a retried batch, a Kafka redelivery).
        let mut deliveries: Vec<usize> = (0..unique.len()).collect();
        deliveries.extend(replays.iter().map(|i| i.index(unique.len())));

        let mut cell: Option<HotCell> = None;
        let mut applied = 0;
        for i in deliveries {
            let ((s, q), agg) = &unique[i];
            // Through the wire form, as the hot store reads and writes it.
            let mut stored = cell.as_ref().map(|c| HotCell::decode(&c.encode()).unwrap());
            if apply(&mut stored, *s, *q, agg) {
                applied += 1;
            }
            cell = stored;
        }
        prop_assert_eq!(applied, unique.len());
        let want = unique[1..]
            .iter()
            .fold(unique[0].1.clone(), |acc, (_, agg)| merged(&acc, agg));
        let cell = cell.unwrap();
        prop_assert_eq!(cell.contributors.len(), unique.len());
        prop_assert_eq!(cell.agg, want);
    }

    #[test]
    fn decoders_never_panic_on_damaged_input(
        cell_agg in wild_aggregate(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        noise in vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = HotCell { contributors: vec![(1, 2)], agg: cell_agg.clone() }.encode();
        for (i, x) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = HotCell::decode(&bytes);
        let _ = HotCell::decode(&bytes[..cut.index(bytes.len() + 1)]);
        let rec = Record { source: "s".into(), seq: 1, minute: 0, agg: cell_agg }.encode();
        let _ = Record::decode(&rec[..cut.index(rec.len() + 1)]);
        let totals = TotalsRecord { source: "s".into(), seq: 1, samples: vec![(1, 2.0), (-3, 4.5)] };
        let encoded = totals.encode();
        prop_assert_eq!(LogValue::decode(&encoded).ok(), Some(LogValue::Totals(totals)));
        let _ = LogValue::decode(&encoded[..cut.index(encoded.len() + 1)]);
        for magic in [&b"TB\x01"[..], b"TR\x01", b"TH\x01", b"TT\x01", b""] {
            let body = [magic, &noise[..]].concat();
            let _ = Batch::decode(&body);
            let _ = Record::decode(&body);
            let _ = HotCell::decode(&body);
            let _ = LogValue::decode(&body);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Parser and ingest robustness
// ------------------------------------------------------------------------------------------------

/// Lines as `parse_datagram` sees them: split on `\n`, a trailing `\r` removed, empty ones skipped.
fn non_empty_lines(datagram: &[u8]) -> u64 {
    datagram
        .split(|b| *b == b'\n')
        .filter(|l| !l.strip_suffix(b"\r").unwrap_or(l).is_empty())
        .count() as u64
}

fn check_ingest(datagram: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        parse_datagram(datagram).count() as u64,
        non_empty_lines(datagram)
    );
    // A small series limit, so that `series_limit` drops are exercised too.
    let mut a = Accumulator::new(AccumulatorConfig {
        tenant: "acme".into(),
        global_tags: vec![("host".into(), "h1".into())],
        max_past_secs: 3600,
        max_future_secs: 60,
        max_series: 8,
    });
    let mut st = IngestStats::default();
    a.ingest(datagram, NOW_MS, &mut st);
    prop_assert_eq!(st.lines + st.dropped_total(), non_empty_lines(datagram));
    // Twice more, at a later minute too, so that existing series and gauge bases are hit.
    a.ingest(datagram, NOW_MS, &mut st);
    a.ingest(datagram, NOW_MS + 60_000, &mut st);
    prop_assert_eq!(st.lines + st.dropped_total(), 3 * non_empty_lines(datagram));
    let _ = a.take_closed(NOW_S + 120, 5, &mut st);
    let _ = a.take_all(&mut st);
    prop_assert_eq!(a.open_series(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parser_and_ingest_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_ingest(&bytes)?;
    }

    #[test]
    fn parser_and_ingest_never_panic_on_statsd_like_text(s in "[a-z0-9:|#@.,T+\\-\n]{0,200}") {
        check_ingest(s.as_bytes())?;
    }

    #[test]
    fn parser_and_ingest_never_panic_on_near_valid_lines(
        lines in vec(prop_oneof![mergeable_line(), gauge_line(), "[a-z0-9:|#@.,T+\\-\r]{0,40}"], 0..20),
        flips in vec((any::<prop::sample::Index>(), select(b":|#@.,T+-e\n\r".to_vec())), 0..6),
    ) {
        let mut bytes = lines.join("\n").into_bytes();
        if !bytes.is_empty() {
            for (i, b) in &flips {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
        }
        check_ingest(&bytes)?;
    }
}

// ------------------------------------------------------------------------------------------------
// Regressions
// ------------------------------------------------------------------------------------------------

/// A sample rate far below 1 gives a weight of `u64::MAX`; counts must saturate, not overflow.
#[test]
fn tiny_sample_rates_do_not_overflow_counts() {
    let mut a = acc();
    let mut st = IngestStats::default();
    a.ingest(b"lat:1|ms|@1e-30\nlat:2|ms|@1e-30", NOW_MS, &mut st);
    assert_eq!(st.lines, 2);
    let out = a.take_all(&mut st);
    match &out[0].1[0].1 {
        Aggregate::Histogram(h) => assert_eq!(h.count, u64::MAX),
        other => panic!("{other:?}"),
    }
    let big = Aggregate::Counter(Counter {
        sum: 1.0,
        samples: u64::MAX,
    });
    let mut m = big.clone();
    m.merge(&big).unwrap();
    assert_eq!(m.count(), u64::MAX as f64);
    let mut h = Hist::new();
    h.record(1.0, u64::MAX);
    let mut hm = Aggregate::Histogram(h.clone());
    hm.merge(&Aggregate::Histogram(h)).unwrap();
    assert!(matches!(hm, Aggregate::Histogram(h) if h.count == u64::MAX));
}

/// On a tie in time, the larger value wins, negative values included.
#[test]
fn gauge_ties_pick_the_larger_value_also_below_zero() {
    for (x, y, want) in [(5.0, -1.0, 5.0), (-2.0, -1.0, -1.0), (-0.0, 0.0, 0.0)] {
        let mut a = Aggregate::Gauge(Gauge::new(x, 7));
        a.merge(&Aggregate::Gauge(Gauge::new(y, 7))).unwrap();
        let mut b = Aggregate::Gauge(Gauge::new(y, 7));
        b.merge(&Aggregate::Gauge(Gauge::new(x, 7))).unwrap();
        assert_eq!(a, b);
        match a {
            Aggregate::Gauge(g) => {
                assert_eq!(g.last, want);
                assert_eq!(g.last.is_sign_negative(), want.is_sign_negative());
            }
            _ => unreachable!(),
        }
    }
}

/// A record whose histogram part is a bare HDR V2 header claiming `payload_len` bytes of counts,
/// `digits` significant digits and `high` as the highest trackable value.
fn hostile_hdr_record(cookie: u32, payload_len: u32, digits: u32, high: u64) -> Vec<u8> {
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&cookie.to_be_bytes());
    hdr.extend_from_slice(&payload_len.to_be_bytes());
    hdr.extend_from_slice(&0u32.to_be_bytes()); // normalizing offset
    hdr.extend_from_slice(&digits.to_be_bytes());
    hdr.extend_from_slice(&1u64.to_be_bytes()); // lowest discernible value
    hdr.extend_from_slice(&high.to_be_bytes());
    hdr.extend_from_slice(&1.0f64.to_be_bytes()); // int to double ratio
    let mut body = b"TR\x01\x01s\x01\x00\x03\x01".to_vec(); // source "s", seq 1, minute 0, histogram, count 1
    for v in [1.0f64, 1.0, 1.0] {
        body.extend_from_slice(&v.to_le_bytes()); // sum, min, max
    }
    body.push(hdr.len() as u8);
    body.extend_from_slice(&hdr);
    body
}

/// The codec promises that a hostile body cannot make it allocate more than its own size; the HDR
/// header inside a histogram must not be trusted with a payload length or a precision.
#[test]
fn hostile_histogram_headers_are_refused_without_allocating() {
    const V2: u32 = 0x1c84_9313;
    const V2_DEFLATE: u32 = 0x1c84_9314;
    for (what, body) in [
        ("4 GB payload", hostile_hdr_record(V2, u32::MAX, 3, 2)),
        (
            "5 digits up to u64::MAX",
            hostile_hdr_record(V2, 0, 5, u64::MAX),
        ),
        ("compressed", hostile_hdr_record(V2_DEFLATE, 0, 3, 2)),
    ] {
        let e = Record::decode(&body).expect_err(what);
        assert_eq!(e.what, "record", "{what}");
    }
}
