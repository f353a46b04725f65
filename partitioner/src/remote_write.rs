//! Prometheus remote write 1.0: the wire format (a snappy-compressed, block format, protobuf
//! `WriteRequest`) and what its series become in thermo.
//!
//! A `WriteRequest` holds time series, each a label set (`__name__` is the metric's name) with
//! samples `(timestamp ms, value)`, and optionally metric metadata (`type` by metric family).
//! Remote write carries no start times, and its counters are running totals: what a series gained
//! between two samples is only known to whoever holds the series' previous sample. The partitioner
//! is stateless (any replica takes any request), so it decides only the series' kind and passes
//! the samples on; the turning of totals into per-minute increases belongs where the series'
//! samples meet in order, the aggregator that owns the series' partition.
//!
//! Kinds ([`kind_of`]): the type the request's metadata gives the metric family (a counter, or a
//! histogram's or summary's `_bucket`, `_count` and `_sum` series, are cumulative; gauges, unknown
//! types and a summary's quantile series are gauges); without metadata, the name: `_total`,
//! `_bucket`, `_count` and `_sum` are cumulative, anything else a gauge.
//!
//! Series keys: the name and label names get every character outside `[A-Za-z0-9_.-]` replaced
//! by `_` (Prometheus's `:` of recording rules: `job:requests:rate5m` is `job_requests_rate5m`),
//! label values every character outside printable ASCII or among `, = { } | #` and space.
//! Prometheus's staleness markers (a NaN with payload 2) are skipped; other NaN or infinite values
//! are refused (`bad_value`). Native histograms (field 4) are refused (`unsupported`).

use prost::Message;
use std::collections::BTreeMap;
use thermo_core::accumulator::IngestStats;
use thermo_core::aggregate::{Aggregate, Gauge};
use thermo_core::codec::{Record, TotalsRecord};
use thermo_core::key::{sanitize_name, sanitize_tag_value, KeyError, MetricKey};
use thermo_core::window::minute_start;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars (field 3) are not kept.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub exemplars: Vec<Vec<u8>>,
    /// Native histograms (field 4), refused: only their count is needed.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `MetricMetadata.MetricType` values.
mod metric_type {
    pub const COUNTER: i32 = 1;
    pub const HISTOGRAM: i32 = 3;
    pub const GAUGE_HISTOGRAM: i32 = 4;
    pub const SUMMARY: i32 = 5;
}

/// Prometheus's staleness marker: the NaN with payload 2 (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Why a body was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("snappy: {0}")]
    Snappy(#[source] snap::Error),
    #[error("the body decompresses to {len} bytes, over max_decoded_bytes ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("protobuf: {0}")]
    Protobuf(#[source] prost::DecodeError),
}

/// Decompresses (snappy block format, as remote write sends) and decodes a body; the decompressed
/// size is read from the block's header and checked against `max_decoded` before anything is
/// allocated.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(DecodeError::Snappy)?;
    if len > max_decoded {
        return Err(DecodeError::TooLarge {
            len,
            max: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(DecodeError::Snappy)?;
    WriteRequest::decode(&raw[..]).map_err(DecodeError::Protobuf)
}

/// A request as a sender puts it on the wire: protobuf, snappy-compressed (block format).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // Compressing a buffer into a vector sized by `max_compress_len` cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// What a series' samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Running totals (counters, histogram and summary counts and sums).
    Cumulative,
    /// Levels.
    Gauge,
}

/// The kind of series `name` (its `__name__`), from the request's metadata by metric family, else
/// from its suffix (see the module docs).
pub fn kind_of(name: &str, metadata: &BTreeMap<&str, i32>) -> Kind {
    let family_type = |family: &str| metadata.get(family).copied();
    if let Some(t) = family_type(name) {
        return match t {
            metric_type::COUNTER => Kind::Cumulative,
            // A summary's quantile series carries the family's own name: a level.
            _ => Kind::Gauge,
        };
    }
    for suffix in ["_total", "_bucket", "_count", "_sum"] {
        if let Some(family) = name.strip_suffix(suffix) {
            match family_type(family) {
                Some(
                    metric_type::COUNTER
                    | metric_type::HISTOGRAM
                    | metric_type::GAUGE_HISTOGRAM
                    | metric_type::SUMMARY,
                ) => {
                    // A gauge histogram's buckets are levels, not totals.
                    return if family_type(family) == Some(metric_type::GAUGE_HISTOGRAM) {
                        Kind::Gauge
                    } else {
                        Kind::Cumulative
                    };
                }
                Some(_) => return Kind::Gauge,
                None => return Kind::Cumulative,
            }
        }
    }
    Kind::Gauge
}

/// One series of a request, ready to be routed: its key, kind and samples (timestamps in unix
/// ms, in the order sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub key: MetricKey,
    pub kind: Kind,
    pub samples: Vec<(i64, f64)>,
}

/// A request's series, and what was refused.
#[derive(Debug, Default)]
pub struct Converted {
    pub series: Vec<Series>,
    /// Samples refused, by reason, and the last refusal's detail (`lines` unused).
    pub refused: IngestStats,
    /// Staleness markers skipped.
    pub stale_markers: u64,
    /// Samples routed (set by [`records`]).
    pub taken: u64,
}

impl Converted {
    fn refuse(&mut self, reason: &'static str, n: u64, detail: String) {
        self.refused.refuse_n(reason, n, &detail);
    }
}

/// The series of `req` as `tenant`'s.
pub fn convert(req: WriteRequest, tenant: &str) -> Converted {
    let metadata: BTreeMap<&str, i32> = req
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m.r#type))
        .collect();
    let mut out = Converted::default();
    // Prometheus sends one time series entry per sample: a series' entries become one `Series`
    // (one record, one contribution of each cell it touches).
    let mut index: BTreeMap<MetricKey, usize> = BTreeMap::new();
    for ts in &req.timeseries {
        let name = ts
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.as_str())
            .unwrap_or("");
        let n_samples = ts.samples.len() as u64;
        if !ts.histograms.is_empty() {
            out.refuse(
                "unsupported",
                ts.histograms.len() as u64,
                format!("{name}: native histograms are not supported"),
            );
        }
        if n_samples == 0 {
            continue;
        }
        let key = match series_key(tenant, name, &ts.labels) {
            Ok(key) => key,
            Err(e) => {
                out.refuse("invalid", n_samples, format!("{name}: {e}"));
                continue;
            }
        };
        let mut samples = Vec::with_capacity(ts.samples.len());
        for s in &ts.samples {
            if s.value.to_bits() == STALE_NAN_BITS {
                out.stale_markers += 1;
            } else if !s.value.is_finite() {
                out.refuse("bad_value", 1, format!("{name}: {} is not finite", s.value));
            } else {
                samples.push((s.timestamp, s.value));
            }
        }
        if samples.is_empty() {
            continue;
        }
        match index.get(&key) {
            Some(&i) => out.series[i].samples.extend(samples),
            None => {
                index.insert(key.clone(), out.series.len());
                out.series.push(Series {
                    kind: kind_of(name, &metadata),
                    key,
                    samples,
                });
            }
        }
    }
    for s in &mut out.series {
        s.samples.sort_by_key(|(t, _)| *t);
    }
    out
}

/// A request's log records: `(metric key, record value)`, sorted by key.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<(String, Vec<u8>)>,
    /// Series-minutes they cover (what rate limits count).
    pub series_minutes: usize,
}

/// The records of `converted`'s series, as contribution `source`: a gauge's samples of one minute
/// become that minute's gauge (the latest sample its last value), a cumulative series' samples one
/// [`TotalsRecord`] (the aggregator turns them into increases). Samples outside `[now_ms -
/// max_past_ms, now_ms + max_future_ms]` are refused (`too_old`, `in_future`).
pub fn records(
    converted: &mut Converted,
    source: &str,
    now_ms: i64,
    max_past_ms: i64,
    max_future_ms: i64,
) -> Records {
    let mut out = Records::default();
    let mut refusals: Vec<(&'static str, String)> = Vec::new();
    for series in std::mem::take(&mut converted.series) {
        let name = series.key.name().to_string();
        let samples: Vec<(i64, f64)> = series
            .samples
            .into_iter()
            .filter(|(t, _)| {
                let why = if *t < now_ms - max_past_ms {
                    "too_old"
                } else if *t > now_ms + max_future_ms {
                    "in_future"
                } else {
                    return true;
                };
                refusals.push((why, format!("{name}: a sample at {t} ms is outside the accepted window (max_past_secs, max_future_secs)")));
                false
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        converted.taken += samples.len() as u64;
        let key = series.key.encode();
        let mut minutes: BTreeMap<i64, Gauge> = BTreeMap::new();
        for (t, v) in &samples {
            let minute = minute_start(t.div_euclid(1000));
            match minutes.get_mut(&minute) {
                Some(g) => g.set(*v, *t),
                None => {
                    minutes.insert(minute, Gauge::new(*v, *t));
                }
            }
        }
        out.series_minutes += minutes.len();
        match series.kind {
            Kind::Cumulative => {
                let rec = TotalsRecord {
                    source: source.to_string(),
                    seq: 0,
                    samples,
                };
                out.records.push((key, rec.encode()));
            }
            Kind::Gauge => {
                for (minute, g) in minutes {
                    let rec = Record {
                        source: source.to_string(),
                        seq: 0,
                        minute,
                        agg: Aggregate::Gauge(g),
                    };
                    out.records.push((key.clone(), rec.encode()));
                }
            }
        }
    }
    for (why, detail) in refusals {
        converted.refuse(why, 1, detail);
    }
    out.records.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The key of a series named `name` with `labels` (its `__name__` left out).
fn series_key(tenant: &str, name: &str, labels: &[Label]) -> Result<MetricKey, KeyError> {
    if name.is_empty() {
        return Err(KeyError {
            field: "__name__".into(),
            problem: "a series without a metric name".into(),
        });
    }
    let tags = labels
        .iter()
        .filter(|l| l.name != "__name__" && !l.value.is_empty())
        .map(|l| (sanitize_name(&l.name), sanitize_tag_value(&l.value)))
        .collect();
    MetricKey::new(tenant, sanitize_name(name), tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels(pairs),
            samples: samples
                .iter()
                .map(|(t, v)| Sample {
                    timestamp: *t,
                    value: *v,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn snappy(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn bodies_decode_and_oversized_or_broken_ones_are_refused() {
        let req = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "up"), ("job", "node")],
                &[(1_000, 1.0)],
            )],
            metadata: vec![],
        };
        let body = snappy(&req);
        assert_eq!(decode(&body, 1 << 20).unwrap(), req);
        let e = decode(&body, 4).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { max: 4, .. }), "{e}");
        assert!(matches!(
            decode(&req.encode_to_vec(), 1 << 20),
            Err(DecodeError::Snappy(_) | DecodeError::Protobuf(_))
        ));
        let not_protobuf = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff\xff")
            .unwrap();
        assert!(matches!(
            decode(&not_protobuf, 1 << 20),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn entries_of_one_series_become_one_series_in_time_order() {
        // As Prometheus's queue sends them: one entry per sample.
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "a_total"), ("job", "x")], &[(2_000, 7.0)]),
                series(&[("__name__", "g"), ("job", "x")], &[(1_000, 1.0)]),
                series(&[("job", "x"), ("__name__", "a_total")], &[(1_000, 5.0)]),
            ],
            metadata: vec![],
        };
        let c = convert(req, "t");
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[0].key.encode(), "t/a_total{job=x}");
        assert_eq!(c.series[0].samples, vec![(1_000, 5.0), (2_000, 7.0)]);
        let mut c = c;
        let built = records(&mut c, "rw:x", 2_000, 10_000, 10_000);
        assert_eq!(
            built.records.len(),
            2,
            "one totals record, one gauge minute"
        );
    }

    #[test]
    fn kinds_come_from_metadata_else_from_the_name() {
        let none = BTreeMap::new();
        for (name, kind) in [
            ("http_requests_total", Kind::Cumulative),
            ("rpc_duration_seconds_bucket", Kind::Cumulative),
            ("rpc_duration_seconds_count", Kind::Cumulative),
            ("rpc_duration_seconds_sum", Kind::Cumulative),
            ("node_memory_bytes", Kind::Gauge),
            ("up", Kind::Gauge),
        ] {
            assert_eq!(kind_of(name, &none), kind, "{name}");
        }
        let meta: BTreeMap<&str, i32> = [
            ("errors", metric_type::COUNTER),
            ("queue_sum", 2), // a gauge that happens to end in _sum
            ("rpc", metric_type::SUMMARY),
            ("temps", metric_type::GAUGE_HISTOGRAM),
        ]
        .into_iter()
        .collect();
        assert_eq!(kind_of("errors", &meta), Kind::Cumulative);
        assert_eq!(kind_of("queue_sum", &meta), Kind::Gauge);
        assert_eq!(kind_of("rpc", &meta), Kind::Gauge, "a summary's quantiles");
        assert_eq!(kind_of("rpc_count", &meta), Kind::Cumulative);
        assert_eq!(kind_of("temps_bucket", &meta), Kind::Gauge);
    }

    #[test]
    fn series_get_valid_keys_and_bad_samples_are_refused_by_reason() {
        let req = WriteRequest {
            timeseries: vec![
                series(
                    &[
                        ("__name__", "job:http_requests:rate5m"),
                        ("path", "/a b"),
                        ("empty", ""),
                    ],
                    &[
                        (1_000, 1.0),
                        (2_000, f64::from_bits(STALE_NAN_BITS)),
                        (3_000, f64::NAN),
                    ],
                ),
                series(&[("job", "x")], &[(1_000, 1.0), (2_000, 2.0)]),
                TimeSeries {
                    labels: labels(&[("__name__", "h")]),
                    histograms: vec![vec![]],
                    ..Default::default()
                },
            ],
            metadata: vec![],
        };
        let c = convert(req, "acme");
        assert_eq!(c.series.len(), 1);
        assert_eq!(
            c.series[0].key.encode(),
            "acme/job_http_requests_rate5m{path=/a_b}"
        );
        assert_eq!(c.series[0].kind, Kind::Gauge);
        assert_eq!(c.series[0].samples, vec![(1_000, 1.0)]);
        assert_eq!(c.stale_markers, 1);
        let refused: Vec<(&str, u64)> = c.refused.dropped.iter().map(|(r, n)| (*r, *n)).collect();
        assert_eq!(
            refused,
            vec![("bad_value", 1), ("invalid", 2), ("unsupported", 1)]
        );
    }

    proptest! {
        /// No body panics the decoder, compressed or not, and whatever decodes converts.
        #[test]
        fn no_input_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&body, 1 << 20);
            let framed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            if let Ok(req) = decode(&framed, 1 << 20) {
                let c = convert(req, "t");
                prop_assert!(c.series.iter().all(|s| !s.samples.is_empty()));
            }
        }

        /// Every sample is routed, skipped as a staleness marker or refused: none is lost silently.
        #[test]
        fn every_sample_is_accounted_for(
            names in proptest::collection::vec("[a-z:_]{0,12}", 1..10),
            values in proptest::collection::vec(prop_oneof![Just(f64::NAN), Just(f64::from_bits(STALE_NAN_BITS)), -1e9f64..1e9], 0..8),
        ) {
            let timeseries: Vec<TimeSeries> = names.iter().map(|n| series(&[("__name__", n)], &values.iter().enumerate().map(|(i, v)| (i as i64, *v)).collect::<Vec<_>>())).collect();
            let n = (timeseries.len() * values.len()) as u64;
            let c = convert(WriteRequest { timeseries, metadata: vec![] }, "t");
            let routed: u64 = c.series.iter().map(|s| s.samples.len() as u64).sum();
            prop_assert_eq!(routed + c.stale_markers + c.refused.dropped_total(), n);
        }
    }
}
