//! OpenTelemetry metrics in: the OTLP/HTTP `ExportMetricsServiceRequest` (protobuf or JSON,
//! optionally gzip) turned into per-minute samples of the agent's series.
//!
//! Series: the metric's name and tags made of the point's attributes and the resource attributes
//! named in `otlp_resource_tags` (a point attribute wins over a resource one of the same key; the
//! agent's `global_tags` are added as for StatsD). Names and attribute keys have every character
//! outside `[A-Za-z0-9_.-]` replaced by `_` (and `_` put first when they start with neither a
//! letter nor `_`); attribute values every character outside printable ASCII or among
//! `, = { } | #` and space. Integer, double and boolean attributes are written as text, bytes in
//! hex; array and map attributes refuse the point (`bad_attribute`).
//!
//! Data, by kind (each point lands in the minute of its `time_unix_nano`, or of its arrival when 0):
//! - Gauge, and a non-monotonic cumulative Sum (an up-down counter's level): a gauge;
//! - Sum with delta temporality: a counter, its values added;
//! - monotonic Sum with cumulative temporality: a counter of the differences between reports
//!   ([`thermo_core::cumulative`]: a series' first report counts whole only when its start time is
//!   after the agent started, restarts and resets count from 0, re-sent and out-of-order reports
//!   count nothing);
//! - Histogram and ExponentialHistogram, delta or cumulative (differences as for sums): a
//!   histogram with exact count and sum, its percentiles from the buckets
//!   ([`thermo_core::buckets`], where the error is stated);
//! - Summary: refused (`unsupported`: its quantiles cannot be merged across hosts or minutes).
//!
//! A point flagged "no recorded value" is skipped. What is refused is counted by reason and named
//! in the response's `partial_success`.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets as ExpBuckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
};
use prost::Message;
use std::io::Read;
use std::sync::Mutex;
use thermo_core::accumulator::{Accumulator, IngestStats, Sample};
use thermo_core::buckets::{Buckets, Layout, Run};
use thermo_core::cumulative::{Point, Step, Tracker};
use thermo_core::key::{sanitize_name, sanitize_tag_value};

/// Largest request body accepted, compressed or not.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Largest request once decompressed.
pub const MAX_DECODED_BYTES: usize = 64 << 20;
/// A series without a report for this long is forgotten by the cumulative trackers.
pub const IDLE_MS: i64 = 3_600_000;

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// The body's encoding, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// `application/x-protobuf` or `application/json` (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        match mime.to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Why a request was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("unsupported Content-Type {0:?}: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported Content-Encoding {0:?}: send gzip or none")]
    Encoding(String),
    #[error("gzip body: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("decompressed body over {MAX_DECODED_BYTES} bytes")]
    TooLarge,
    #[error("protobuf body: {0}")]
    Protobuf(#[source] prost::DecodeError),
    #[error("JSON body: {0}")]
    Json(#[source] serde_json::Error),
}

impl OtlpError {
    /// The HTTP status: 415 for what the agent does not speak, 413 too large, else 400 (OTLP
    /// senders do not retry any of them).
    pub fn status(&self) -> u16 {
        match self {
            OtlpError::ContentType(_) | OtlpError::Encoding(_) => 415,
            OtlpError::TooLarge => 413,
            OtlpError::Gzip(_) | OtlpError::Protobuf(_) | OtlpError::Json(_) => 400,
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC's `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: i32 = 3;

/// Encodes an error response body in `format`.
pub fn error_body(format: Format, message: String) -> Vec<u8> {
    let status = Status {
        code: INVALID_ARGUMENT,
        message,
    };
    match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::to_vec(&status).unwrap_or_default(),
    }
}

/// Encodes the success response: `partial_success` set when something was refused.
pub fn response_body(format: Format, rejected: u64, message: String) -> Vec<u8> {
    let response = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message,
        }),
    };
    match format {
        Format::Protobuf => response.encode_to_vec(),
        // `{}`, not `{"partialSuccess":null}`: an unset field is left out in OTLP's JSON.
        Format::Json if rejected == 0 => b"{}".to_vec(),
        Format::Json => serde_json::to_vec(&response).unwrap_or_default(),
    }
}

/// Decodes a request body (`gzip`: `Content-Encoding: gzip`).
pub fn decode(
    body: &[u8],
    format: Format,
    gzip: bool,
) -> Result<ExportMetricsServiceRequest, OtlpError> {
    let mut inflated = Vec::new();
    let body = if gzip {
        let limit = u64::try_from(MAX_DECODED_BYTES).unwrap_or(u64::MAX) + 1;
        flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut inflated)
            .map_err(OtlpError::Gzip)?;
        if inflated.len() > MAX_DECODED_BYTES {
            return Err(OtlpError::TooLarge);
        }
        &inflated[..]
    } else {
        body
    };
    match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(OtlpError::Protobuf),
        Format::Json => serde_json::from_slice(body).map_err(OtlpError::Json),
    }
}

/// One value for the accumulator.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    pub tags: Vec<(String, String)>,
    /// Unix ms (`None`: now).
    pub at_ms: Option<i64>,
    pub sample: Sample,
}

/// What a request turned into.
#[derive(Debug, Default)]
pub struct Converted {
    pub samples: Vec<Prepared>,
    /// Points refused, by reason, and the last refusal's detail (`lines` unused).
    pub refused: IngestStats,
    /// Cumulative points that only set a series' reference (its first report, from before the
    /// agent started).
    pub references: u64,
    /// Cumulative points not after the last one of their series (re-sent or out of order).
    pub stale: u64,
    /// Points skipped as flagged "no recorded value".
    pub empty: u64,
    /// Histogram points without values in their interval (nothing to add).
    pub unchanged: u64,
}

impl Converted {
    fn refuse(&mut self, reason: &'static str, detail: String) {
        self.refused.refuse(reason, &detail);
    }
}

/// What one request did.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// `lines`: data points taken (added, kept as a cumulative series' reference, stale, or
    /// without values); `dropped`: refused, by reason.
    pub stats: IngestStats,
    /// Of the points taken, references and stale ones (see [`Converted`]).
    pub references: u64,
    pub stale: u64,
}

impl Taken {
    pub fn rejected(&self) -> u64 {
        self.stats.dropped_total()
    }

    /// The `partial_success` message: the refusals by reason and the last one's detail (empty
    /// when nothing was refused).
    pub fn message(&self) -> String {
        self.stats.refusals("data points").unwrap_or_default()
    }
}

/// The OTLP intake's state: which resource attributes are tags, and the cumulative series' last
/// reports.
pub struct OtlpIntake {
    resource_tags: Vec<String>,
    sums: Mutex<Tracker<f64>>,
    histograms: Mutex<Tracker<Buckets>>,
}

impl OtlpIntake {
    /// `watched_since_ms`: when the agent started (see [`thermo_core::cumulative`]);
    /// `max_series`: most cumulative series of each kind tracked.
    pub fn new(resource_tags: Vec<String>, watched_since_ms: i64, max_series: usize) -> Self {
        Self {
            resource_tags,
            sums: Mutex::new(Tracker::new(watched_since_ms, max_series)),
            histograms: Mutex::new(Tracker::new(watched_since_ms, max_series)),
        }
    }

    /// Forgets cumulative series idle for [`IDLE_MS`].
    pub fn forget_idle(&self, now_ms: i64) {
        lock(&self.sums).forget_idle(now_ms, IDLE_MS);
        lock(&self.histograms).forget_idle(now_ms, IDLE_MS);
    }

    /// Decodes a request body, converts it and adds its samples into `acc` (locked once). Blocking.
    pub fn take(
        &self,
        acc: &Mutex<Accumulator>,
        body: &[u8],
        format: Format,
        gzip: bool,
        now_ms: i64,
    ) -> Result<Taken, OtlpError> {
        let converted = self.convert(decode(body, format, gzip)?, now_ms);
        let mut stats = converted.refused;
        {
            let mut acc = lock(acc);
            for p in converted.samples {
                match acc.add_sample(&p.name, &p.tags, p.at_ms, p.sample, now_ms) {
                    Ok(()) => stats.lines += 1,
                    Err(d) => stats.refuse(d.as_str(), &p.name),
                }
            }
        }
        stats.lines +=
            converted.references + converted.stale + converted.empty + converted.unchanged;
        Ok(Taken {
            stats,
            references: converted.references,
            stale: converted.stale,
        })
    }

    /// Turns a request into samples; refusals are counted in the result. Blocking (it can take
    /// milliseconds for a large request).
    pub fn convert(&self, req: ExportMetricsServiceRequest, now_ms: i64) -> Converted {
        let mut out = Converted::default();
        let mut sums = lock(&self.sums);
        let mut histograms = lock(&self.histograms);
        for rm in req.resource_metrics {
            let resource: Vec<KeyValue> = rm
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .filter(|kv| self.resource_tags.contains(&kv.key))
                .collect();
            for sm in rm.scope_metrics {
                for metric in sm.metrics {
                    let name = sanitize_name(&metric.name);
                    let mut cx = Context {
                        name: &name,
                        resource: &resource,
                        now_ms,
                        out: &mut out,
                    };
                    match metric.data {
                        Some(Data::Gauge(g)) => {
                            for p in g.data_points {
                                cx.number(p, NumberKind::Gauge, &mut sums);
                            }
                        }
                        Some(Data::Sum(s)) => {
                            let kind =
                                match (temporality(s.aggregation_temporality), s.is_monotonic) {
                                    (Some(AggregationTemporality::Delta), _) => NumberKind::Delta,
                                    (Some(_), true) => NumberKind::Cumulative,
                                    (Some(_), false) => NumberKind::Gauge,
                                    (None, _) => NumberKind::NoTemporality,
                                };
                            for p in s.data_points {
                                cx.number(p, kind, &mut sums);
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            let t = temporality(h.aggregation_temporality);
                            for p in h.data_points {
                                let (attrs, times) = (p.attributes.clone(), times(&p));
                                let flags = p.flags;
                                cx.histogram(attrs, times, flags, t, explicit(p), &mut histograms);
                            }
                        }
                        Some(Data::ExponentialHistogram(h)) => {
                            let t = temporality(h.aggregation_temporality);
                            for p in h.data_points {
                                let (attrs, times) = (p.attributes.clone(), times_exp(&p));
                                let flags = p.flags;
                                cx.histogram(
                                    attrs,
                                    times,
                                    flags,
                                    t,
                                    exponential(p),
                                    &mut histograms,
                                );
                            }
                        }
                        Some(Data::Summary(s)) => {
                            for _ in s.data_points {
                                cx.out.refuse(
                                    "unsupported",
                                    format!("{name}: summaries are not supported (their quantiles cannot be merged); send a histogram"),
                                );
                            }
                        }
                        None => cx.out.refuse("no_value", format!("{name}: no data")),
                    }
                }
            }
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn temporality(t: i32) -> Option<AggregationTemporality> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Unspecified) | Err(_) => None,
        Ok(t) => Some(t),
    }
}

/// What a number point is.
#[derive(Debug, Clone, Copy)]
enum NumberKind {
    Gauge,
    Delta,
    Cumulative,
    NoTemporality,
}

/// `(start_ms, time_ms)` of a point (0 where the sender left them unset).
type Times = (i64, i64);

fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

fn times(p: &HistogramDataPoint) -> Times {
    (ns_to_ms(p.start_time_unix_nano), ns_to_ms(p.time_unix_nano))
}

fn times_exp(p: &ExponentialHistogramDataPoint) -> Times {
    (ns_to_ms(p.start_time_unix_nano), ns_to_ms(p.time_unix_nano))
}

fn explicit(p: HistogramDataPoint) -> Buckets {
    let sum = p.sum.unwrap_or(f64::NAN);
    Buckets {
        count: p.count,
        sum,
        min: p.min,
        max: p.max,
        layout: Layout::Explicit {
            bounds: p.explicit_bounds,
            counts: p.bucket_counts,
        },
    }
}

fn exponential(p: ExponentialHistogramDataPoint) -> Buckets {
    let run = |b: Option<ExpBuckets>| {
        b.map(|b| Run {
            offset: b.offset,
            counts: b.bucket_counts,
        })
        .unwrap_or_default()
    };
    Buckets {
        count: p.count,
        sum: p.sum.unwrap_or(f64::NAN),
        min: p.min,
        max: p.max,
        layout: Layout::Exponential {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive: run(p.positive),
            negative: run(p.negative),
        },
    }
}

/// One metric being converted.
struct Context<'a> {
    name: &'a str,
    resource: &'a [KeyValue],
    now_ms: i64,
    out: &'a mut Converted,
}

impl Context<'_> {
    /// The point's tags, or its refusal.
    fn tags(&mut self, attributes: &[KeyValue]) -> Option<Vec<(String, String)>> {
        let mut tags: Vec<(String, String)> = Vec::with_capacity(attributes.len() + 1);
        for kv in attributes.iter().chain(self.resource) {
            let key = sanitize_name(&kv.key);
            if tags.iter().any(|(k, _)| *k == key) {
                continue; // a point attribute wins over a resource one
            }
            let Some(value) = attribute_value(kv) else {
                self.out.refuse(
                    "bad_attribute",
                    format!(
                        "{}: attribute {:?} is an array or a map (or a string table index)",
                        self.name, kv.key
                    ),
                );
                return None;
            };
            tags.push((key, value));
        }
        Some(tags)
    }

    /// The series id of the trackers: name and sorted tags.
    fn series_id(&self, tags: &[(String, String)]) -> String {
        let mut sorted: Vec<&(String, String)> = tags.iter().collect();
        sorted.sort();
        let mut id = self.name.to_string();
        for (k, v) in sorted {
            id.push('\u{1}');
            id.push_str(k);
            id.push('=');
            id.push_str(v);
        }
        id
    }

    fn push(&mut self, tags: Vec<(String, String)>, time_ms: i64, sample: Sample) {
        self.out.samples.push(Prepared {
            name: self.name.to_string(),
            tags,
            at_ms: (time_ms > 0).then_some(time_ms),
            sample,
        });
    }

    fn number(&mut self, p: NumberDataPoint, kind: NumberKind, sums: &mut Tracker<f64>) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            self.out.empty += 1;
            return;
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => {
                return self.out.refuse(
                    "no_value",
                    format!("{}: a point without a value", self.name),
                )
            }
        };
        if !value.is_finite() {
            return self
                .out
                .refuse("bad_value", format!("{}: {value} is not finite", self.name));
        }
        let Some(tags) = self.tags(&p.attributes) else {
            return;
        };
        let (start_ms, time_ms) = (ns_to_ms(p.start_time_unix_nano), ns_to_ms(p.time_unix_nano));
        match kind {
            NumberKind::Gauge => self.push(tags, time_ms, Sample::Gauge(value)),
            NumberKind::Delta => self.push(tags, time_ms, Sample::Counter(value)),
            NumberKind::NoTemporality => self.out.refuse(
                "no_temporality",
                format!("{}: a sum without aggregation_temporality", self.name),
            ),
            NumberKind::Cumulative => {
                let id = self.series_id(&tags);
                let point = Point {
                    start_ms,
                    time_ms: if time_ms > 0 { time_ms } else { self.now_ms },
                    value,
                };
                match sums.step(&id, point, self.now_ms) {
                    Ok(Step::Delta(d)) => self.push(tags, time_ms, Sample::Counter(d)),
                    Ok(Step::Reference) => self.out.references += 1,
                    Ok(Step::Stale) => self.out.stale += 1,
                    Err(_) => self.out.refuse(
                        "series_limit",
                        format!("{}: too many cumulative series (max_series)", self.name),
                    ),
                }
            }
        }
    }

    fn histogram(
        &mut self,
        attributes: Vec<KeyValue>,
        (start_ms, time_ms): Times,
        flags: u32,
        temporality: Option<AggregationTemporality>,
        buckets: Buckets,
        histograms: &mut Tracker<Buckets>,
    ) {
        if flags & NO_RECORDED_VALUE != 0 {
            self.out.empty += 1;
            return;
        }
        let mut buckets = buckets;
        if buckets.sum.is_nan() {
            // No sum sent (allowed when values can be negative): the buckets' estimate.
            buckets.sum = buckets
                .representatives()
                .iter()
                .map(|(v, n)| v * *n as f64)
                .sum();
        }
        if let Err(why) = buckets.validate() {
            return self
                .out
                .refuse("bad_histogram", format!("{}: {why}", self.name));
        }
        let Some(tags) = self.tags(&attributes) else {
            return;
        };
        let delta = match temporality {
            Some(AggregationTemporality::Delta) => buckets,
            Some(_) => {
                let id = self.series_id(&tags);
                let point = Point {
                    start_ms,
                    time_ms: if time_ms > 0 { time_ms } else { self.now_ms },
                    value: buckets,
                };
                match histograms.step(&id, point, self.now_ms) {
                    Ok(Step::Delta(d)) => d,
                    Ok(Step::Reference) => {
                        self.out.references += 1;
                        return;
                    }
                    Ok(Step::Stale) => {
                        self.out.stale += 1;
                        return;
                    }
                    Err(_) => {
                        return self.out.refuse(
                            "series_limit",
                            format!("{}: too many cumulative series (max_series)", self.name),
                        )
                    }
                }
            }
            None => {
                return self.out.refuse(
                    "no_temporality",
                    format!("{}: a histogram without aggregation_temporality", self.name),
                )
            }
        };
        // An interval without values adds nothing (not even an empty histogram).
        match delta.to_binned() {
            Some(b) => self.push(tags, time_ms, Sample::Histogram(b)),
            None => self.out.unchanged += 1,
        }
    }
}

/// An attribute's value as a tag value; `None` for arrays and maps.
fn attribute_value(kv: &KeyValue) -> Option<String> {
    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
    let text = match value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => sanitize_tag_value(s),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => sanitize_tag_value(&d.to_string()),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(
            any_value::Value::ArrayValue(_)
            | any_value::Value::KvlistValue(_)
            | any_value::Value::StringValueStrindex(_),
        ) => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;
    /// The agent's start in these tests; points are at `T0 + n` seconds.
    const T0: u64 = 1_800_000_000;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout")), kv("host.name", s("h1"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn number(start_s: u64, time_s: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start_s * SEC,
            time_unix_nano: time_s * SEC,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn sum(
        points: Vec<NumberDataPoint>,
        temporality: AggregationTemporality,
        monotonic: bool,
    ) -> Data {
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })
    }

    fn intake() -> OtlpIntake {
        OtlpIntake::new(vec!["service.name".into()], ns_to_ms(T0 * SEC), 100)
    }

    type Tags = Vec<(String, String)>;

    /// The counters' values of `c`, as (name, tags, value).
    fn counters(c: &Converted) -> Vec<(String, Tags, f64)> {
        c.samples
            .iter()
            .filter_map(|p| match p.sample {
                Sample::Counter(v) => Some((p.name.clone(), p.tags.clone(), v)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cumulative_sums_become_deltas_and_delta_sums_pass_through() {
        let i = intake();
        let now = ns_to_ms((T0 + 100) * SEC);
        let route = || vec![kv("http.route", s("/cart"))];
        // A cumulative counter started after the agent: its first report counts whole.
        let first = request(vec![
            metric(
                "requests",
                sum(
                    vec![number(T0 + 1, T0 + 10, 5.0, route())],
                    AggregationTemporality::Cumulative,
                    true,
                ),
            ),
            metric(
                "bytes",
                sum(
                    vec![number(T0 + 1, T0 + 10, 7.0, vec![])],
                    AggregationTemporality::Delta,
                    true,
                ),
            ),
        ]);
        let c = i.convert(first.clone(), now);
        let tags = vec![
            ("http.route".to_string(), "/cart".to_string()),
            ("service.name".to_string(), "checkout".to_string()),
        ];
        let service = vec![("service.name".to_string(), "checkout".to_string())];
        assert_eq!(
            counters(&c),
            vec![
                ("requests".into(), tags.clone(), 5.0),
                ("bytes".into(), service.clone(), 7.0)
            ]
        );
        assert_eq!(c.samples[0].at_ms, Some(ns_to_ms((T0 + 10) * SEC)));
        // The same request again (a retry): the cumulative point is stale, the delta counts again
        // (a delta sender does not retry what was acknowledged).
        let c = i.convert(first, now);
        assert_eq!((c.stale, counters(&c).len()), (1, 1));
        // The next report: the difference; then a restart (a new start time).
        let next = request(vec![metric(
            "requests",
            sum(
                vec![number(T0 + 1, T0 + 20, 12.0, route())],
                AggregationTemporality::Cumulative,
                true,
            ),
        )]);
        assert_eq!(counters(&i.convert(next, now))[0].2, 7.0);
        let restarted = request(vec![metric(
            "requests",
            sum(
                vec![number(T0 + 25, T0 + 30, 3.0, route())],
                AggregationTemporality::Cumulative,
                true,
            ),
        )]);
        assert_eq!(counters(&i.convert(restarted, now))[0].2, 3.0);
        // A series that started before the agent: its first report is only a reference.
        let old = request(vec![metric(
            "old",
            sum(
                vec![number(T0 - 100, T0 + 10, 1000.0, vec![])],
                AggregationTemporality::Cumulative,
                true,
            ),
        )]);
        let c = i.convert(old, now);
        assert_eq!((c.references, c.samples.len()), (1, 0));
        // A non-monotonic cumulative sum is a level: a gauge.
        let level = request(vec![metric(
            "queue",
            sum(
                vec![number(T0 - 100, T0 + 10, -4.0, vec![])],
                AggregationTemporality::Cumulative,
                false,
            ),
        )]);
        let c = i.convert(level, now);
        assert!(matches!(c.samples[0].sample, Sample::Gauge(v) if v == -4.0));
    }

    #[test]
    fn names_and_attributes_are_made_valid_and_bad_points_refused_by_reason() {
        let i = intake();
        let now = ns_to_ms((T0 + 100) * SEC);
        let attrs = vec![
            kv("http/method", s("GET /a b,c")),
            kv("ok", any_value::Value::BoolValue(true)),
            kv("n", any_value::Value::IntValue(-3)),
            kv("x", any_value::Value::DoubleValue(0.5)),
            kv("id", any_value::Value::BytesValue(vec![0xab, 0x01])),
            kv("service.name", s("point-wins")),
            kv("ünï", s("wörd")),
        ];
        let req = request(vec![
            metric(
                "9lives/s",
                Data::Gauge(Gauge {
                    data_points: vec![number(0, T0 + 5, 1.5, attrs)],
                }),
            ),
            metric(
                "arr",
                Data::Gauge(Gauge {
                    data_points: vec![number(
                        0,
                        T0,
                        1.0,
                        vec![kv("a", any_value::Value::ArrayValue(Default::default()))],
                    )],
                }),
            ),
            metric(
                "nan",
                Data::Gauge(Gauge {
                    data_points: vec![number(0, T0, f64::NAN, vec![])],
                }),
            ),
            metric(
                "q",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint::default(); 2],
                }),
            ),
            metric(
                "t",
                sum(
                    vec![number(0, T0, 1.0, vec![])],
                    AggregationTemporality::Unspecified,
                    true,
                ),
            ),
            metric(
                "empty",
                Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        flags: NO_RECORDED_VALUE,
                        ..number(0, T0, 1.0, vec![])
                    }],
                }),
            ),
        ]);
        let c = i.convert(req, now);
        assert_eq!(c.samples.len(), 1);
        let p = &c.samples[0];
        assert_eq!(p.name, "_9lives_s");
        let mut tags = p.tags.clone();
        tags.sort();
        let want: Vec<(String, String)> = [
            ("http_method", "GET_/a_b_c"),
            ("id", "ab01"),
            ("n", "-3"),
            ("ok", "true"),
            ("service.name", "point-wins"),
            ("x", "0.5"),
            ("__n_", "w_rd"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
        assert_eq!(tags, want);
        let refused: Vec<(&str, u64)> = c.refused.dropped.iter().map(|(r, n)| (*r, *n)).collect();
        assert_eq!(
            refused,
            vec![
                ("bad_attribute", 1),
                ("bad_value", 1),
                ("no_temporality", 1),
                ("unsupported", 2)
            ]
        );
        assert_eq!(c.empty, 1);
    }

    fn histogram_point(start_s: u64, time_s: u64, counts: &[u64], sum: f64) -> HistogramDataPoint {
        HistogramDataPoint {
            start_time_unix_nano: start_s * SEC,
            time_unix_nano: time_s * SEC,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts.to_vec(),
            explicit_bounds: vec![10.0, 100.0],
            min: Some(1.0),
            max: Some(500.0),
            ..Default::default()
        }
    }

    #[test]
    fn cumulative_histograms_become_interval_histograms() {
        let i = intake();
        let now = ns_to_ms((T0 + 100) * SEC);
        let h = |p| {
            request(vec![metric(
                "latency",
                Data::Histogram(Histogram {
                    data_points: vec![p],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            )])
        };
        let hist = |c: &Converted| match &c.samples[..] {
            [Prepared {
                sample: Sample::Histogram(h),
                ..
            }] => h.to_hist(),
            other => panic!("{other:?}"),
        };
        let first = hist(&i.convert(h(histogram_point(T0 + 1, T0 + 10, &[1, 2, 1], 600.0)), now));
        assert_eq!(
            (first.count, first.sum, first.min, first.max),
            (4, 600.0, 1.0, 500.0)
        );
        let second = hist(&i.convert(h(histogram_point(T0 + 1, T0 + 20, &[1, 5, 1], 750.0)), now));
        // Three values in (10, 100]: their midpoint 55; min and max of the interval unknown.
        assert_eq!(
            (second.count, second.sum, second.min, second.max),
            (3, 150.0, 55.0, 55.0)
        );
        assert_eq!(second.quantile(0.5), Some(55.0));
        // No new values: nothing added.
        let c = i.convert(h(histogram_point(T0 + 1, T0 + 30, &[1, 5, 1], 750.0)), now);
        assert_eq!(c.samples.len(), 0);
        // Buckets that do not add up are refused.
        let mut bad = histogram_point(T0 + 1, T0 + 40, &[1, 5, 1], 750.0);
        bad.count = 9;
        let c = i.convert(h(bad), now);
        assert_eq!(c.refused.dropped.get("bad_histogram"), Some(&1));
    }

    #[test]
    fn bodies_decode_as_protobuf_json_and_gzip_and_errors_say_why() {
        let req = request(vec![metric(
            "requests",
            sum(
                vec![number(T0, T0 + 1, 2.0, vec![])],
                AggregationTemporality::Delta,
                true,
            ),
        )]);
        let proto = req.encode_to_vec();
        assert_eq!(decode(&proto, Format::Protobuf, false).unwrap(), req);
        let json = serde_json::to_vec(&req).unwrap();
        assert_eq!(decode(&json, Format::Json, false).unwrap(), req);
        // The JSON of the OTLP specification: camelCase, times as strings, enums as numbers.
        let spec = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"requests","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"1800000001000000000","asInt":"2"}]}}]}]}]}"#;
        let got = decode(spec, Format::Json, false).unwrap();
        let Some(Data::Sum(s)) = &got.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("{got:?}");
        };
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(2))
        );
        assert_eq!(s.data_points[0].time_unix_nano, (T0 + 1) * SEC);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &proto).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode(&gz, Format::Protobuf, true).unwrap(), req);
        // Errors and their statuses.
        let e = decode(&proto, Format::Protobuf, true).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().starts_with("gzip body")),
            (400, true)
        );
        let e = decode(b"{", Format::Json, false).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        // A gzip bomb stops at the limit.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0u8; MAX_DECODED_BYTES + 1]).unwrap();
        let e = decode(&gz.finish().unwrap(), Format::Protobuf, true).unwrap_err();
        assert_eq!(e.status(), 413);
        // The bodies of the answers.
        let ok = ExportMetricsServiceResponse::decode(
            &response_body(Format::Protobuf, 0, String::new())[..],
        )
        .unwrap();
        assert_eq!(ok.partial_success, None);
        let all_taken = response_body(Format::Json, 0, String::new());
        assert_eq!(String::from_utf8_lossy(&all_taken), "{}");
        let partial = response_body(Format::Json, 2, "2 refused".into());
        let v: serde_json::Value = serde_json::from_slice(&partial).unwrap();
        assert_eq!(
            v["partialSuccess"]["rejectedDataPoints"],
            serde_json::json!(2)
        );
        assert_eq!(
            v["partialSuccess"]["errorMessage"],
            serde_json::json!("2 refused")
        );
    }

    proptest! {
        /// No body panics the decoders, and whatever decodes converts without panicking.
        #[test]
        fn no_input_panics(body in proptest::collection::vec(any::<u8>(), 0..512), json in any::<bool>()) {
            let format = if json { Format::Json } else { Format::Protobuf };
            let _ = decode(&body, format, false);
            let _ = decode(&body, format, true);
            if let Ok(req) = decode(&body, Format::Protobuf, false) {
                let _ = intake().convert(req, 0);
            }
        }

        /// Any histogram and number points (random counts, bounds, scales, times, values) convert
        /// or are refused by reason, never panic; every point is accounted for exactly once.
        #[test]
        fn any_points_are_taken_or_refused_once(
            points in proptest::collection::vec((
                0u64..4, 0u64..4, -5.0f64..5.0, -12i32..24, -50i32..50,
                proptest::collection::vec(0u64..5, 0..6),
                proptest::collection::vec(-5.0f64..5.0, 0..6),
                0i32..3,
            ), 1..30),
        ) {
            let i = intake();
            let mut metrics = Vec::new();
            for (start, time, v, scale, offset, counts, bounds, t) in points {
                let (start, time) = (T0 + start, T0 + time);
                metrics.push(metric("n", sum(vec![number(start, time, v, vec![])],
                    AggregationTemporality::try_from(t).unwrap(), v > 0.0)));
                metrics.push(metric("h", Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        start_time_unix_nano: start * SEC, time_unix_nano: time * SEC,
                        count: counts.iter().sum(), sum: Some(v), bucket_counts: counts.clone(),
                        explicit_bounds: bounds, ..Default::default()
                    }],
                    aggregation_temporality: t,
                })));
                metrics.push(metric("e", Data::ExponentialHistogram(
                    opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint {
                            start_time_unix_nano: start * SEC, time_unix_nano: time * SEC,
                            count: counts.iter().sum(), sum: None, scale,
                            positive: Some(ExpBuckets { offset, bucket_counts: counts }),
                            ..Default::default()
                        }],
                        aggregation_temporality: t,
                    })));
            }
            let n = metrics.len() as u64;
            let c = i.convert(request(metrics), ns_to_ms((T0 + 10) * SEC));
            let refused: u64 = c.refused.dropped_total();
            prop_assert_eq!(
                c.samples.len() as u64 + refused + c.stale + c.references + c.unchanged,
                n
            );
            for p in &c.samples {
                if let Sample::Histogram(b) = &p.sample {
                    prop_assert!(b.to_hist().quantile(0.99).is_some_and(f64::is_finite));
                }
            }
        }
    }
}
