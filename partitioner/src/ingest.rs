//! `POST /api/v1/ingest`: authenticate, decode, validate, produce.
//!
//! Headers: `Authorization: Bearer <api key>` (when keys are configured), `Content-Type`
//! (`application/x-thermo-batch`, the default, or `application/json`), optional
//! `Content-Encoding: gzip`. Limits, each answered with 413 and a JSON error naming it:
//! `max_body_bytes` (as sent), `max_decoded_bytes` (after gzip), `max_series_per_batch`.
//!
//! Idempotency: an agent batch is the contribution `(agent_id, seq)`; a JSON batch with
//! `idempotency_key: K` is `("json:K", 0)`; one without a key is `("json-body:<hash>", 0)`, from a
//! SHA-256 of its content (so a retried keyless batch is merged once too). Every
//! record carries its contribution, and the aggregator merges each contribution into a
//! series-minute once, so a batch sent again after a timeout is not counted twice.

use crate::admission::{Admission, Ticket};
use crate::config::PartitionerConfig;
use crate::error::IngestError;
use crate::series_limit::SeriesGate;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use thermo_core::aggregate::Aggregate;
use thermo_core::codec::{Batch, Item, Record};
use thermo_core::json::JsonBatch;
use thermo_core::key::MetricKey;
use thermo_runtime::auth::{KeyRing, Scope};
use thermo_runtime::rate::{RateLimits, Verdict};
use thermo_runtime::telemetry::SelfMetrics;
use thermo_store::log::LogProducer;
use thermo_store::series_registry::{AnySeriesRegistry, MemSeriesRegistry};

pub use thermo_runtime::rate::Clock;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(thermo_core::window::now_ms)
}

/// Shared state of the ingest handler.
pub struct AppState<P> {
    cfg: PartitionerConfig,
    producer: Arc<P>,
    metrics: SelfMetrics,
    clock: Clock,
    limits: RateLimits,
    admission: Admission,
    series: Option<SeriesGate>,
    keys: KeyRing,
    /// Prometheus remote write samples by outcome.
    remote_write_samples: prometheus::IntCounterVec,
}

impl<P: LogProducer> AppState<P> {
    pub fn new(cfg: PartitionerConfig, producer: Arc<P>, metrics: SelfMetrics) -> Arc<Self> {
        Self::with_clock(cfg, producer, metrics, system_clock())
    }

    /// With `clock`, and the series registry in this process's memory.
    pub fn with_clock(
        cfg: PartitionerConfig,
        producer: Arc<P>,
        metrics: SelfMetrics,
        clock: Clock,
    ) -> Arc<Self> {
        let registry = AnySeriesRegistry::Memory(MemSeriesRegistry::new());
        Self::build(cfg, producer, metrics, clock, registry)
    }

    /// With `clock` and the series `registry` (used when `cfg` sets a series limit).
    pub fn build(
        cfg: PartitionerConfig,
        producer: Arc<P>,
        metrics: SelfMetrics,
        clock: Clock,
        registry: AnySeriesRegistry,
    ) -> Arc<Self> {
        let series = SeriesGate::new(&cfg, registry, &metrics);
        let limits = RateLimits::new(
            cfg.rate_limit_per_sec,
            cfg.tenant_rate_limits.clone(),
            cfg.rate_limit_burst_secs,
            clock.clone(),
        );
        let admission = Admission::new(
            cfg.max_in_flight_requests,
            cfg.max_in_flight_bytes,
            metrics.gauge(
                "in_flight_requests",
                "Ingest requests being handled (max_in_flight_requests)",
            ),
            metrics.gauge(
                "in_flight_bytes",
                "Bytes reserved by the ingest requests being handled (max_in_flight_bytes)",
            ),
        );
        let remote_write_samples = metrics.counter_vec(
            "remote_write_samples_total",
            "Prometheus remote write samples, by outcome (produced, or why they were refused)",
            &["outcome"],
        );
        Arc::new(Self {
            remote_write_samples,
            keys: KeyRing::new(&cfg.api_keys),
            cfg,
            producer,
            metrics,
            clock,
            limits,
            admission,
            series,
        })
    }

    /// The API keys checked (to read a key file into: [`KeyRing::use_file`]).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

/// The ingest routes.
pub fn router<P: LogProducer>(state: Arc<AppState<P>>) -> Router {
    Router::new()
        .route("/api/v1/ingest", post(ingest::<P>))
        .route("/api/v1/write", post(remote_write::<P>))
        // The handler enforces its own limits, with JSON errors.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn ingest<P: LogProducer>(
    State(st): State<Arc<AppState<P>>>,
    req: Request<Body>,
) -> Result<Json<serde_json::Value>, IngestError> {
    let result = handle(st.clone(), req).await;
    match &result {
        Ok(n) => {
            st.metrics.received.inc_by(*n as u64);
            st.metrics.sent.inc_by(*n as u64);
        }
        Err(
            e @ IngestError::SeriesLimited {
                accepted, refused, ..
            },
        ) => {
            st.metrics.received.inc_by((accepted + refused) as u64);
            st.metrics.sent.inc_by(*accepted as u64);
            st.metrics
                .dropped
                .with_label_values(&[e.reason()])
                .inc_by(*refused as u64);
            tracing::info!("ingest refused new series (429): {e}");
        }
        Err(e) => {
            st.metrics.dropped.with_label_values(&[e.reason()]).inc();
            match e {
                IngestError::Unavailable(_) => tracing::warn!("ingest answered 503: {e}"),
                _ => tracing::info!("ingest refused ({}): {e}", e.status()),
            }
        }
    }
    result.map(|n| Json(serde_json::json!({ "accepted": n })))
}

/// `POST /api/v1/write`: Prometheus remote write 1.0 ([`crate::remote_write`]). 204 once the
/// log acknowledged every record; 400 (not retried) naming the samples refused, after the others
/// were produced; 429 and 503 as for ingest (retried).
async fn remote_write<P: LogProducer>(
    State(st): State<Arc<AppState<P>>>,
    req: Request<Body>,
) -> Result<StatusCode, IngestError> {
    let result = handle_remote_write(st.clone(), req).await;
    let samples = &st.remote_write_samples;
    match &result {
        Ok(taken) => {
            samples
                .with_label_values(&["produced"])
                .inc_by(taken.samples);
            for (reason, n) in &taken.refused.dropped {
                samples.with_label_values(&[reason]).inc_by(*n);
            }
            st.metrics.received.inc_by(taken.series_minutes as u64);
            st.metrics.sent.inc_by(taken.series_minutes as u64);
        }
        Err(e) => {
            st.metrics.dropped.with_label_values(&[e.reason()]).inc();
            match e {
                IngestError::Unavailable(_) => tracing::warn!("remote write answered 503: {e}"),
                _ => tracing::info!("remote write refused ({}): {e}", e.status()),
            }
        }
    }
    let taken = result?;
    match taken.refusal() {
        None => Ok(StatusCode::NO_CONTENT),
        Some(e) => Err(e),
    }
}

/// What a remote write request did.
struct RemoteWritten {
    /// Samples produced.
    samples: u64,
    series_minutes: usize,
    /// Samples refused, by reason, and the last one's detail.
    refused: thermo_core::accumulator::IngestStats,
}

impl RemoteWritten {
    /// The 400 naming what was refused (the rest was produced), if anything was.
    fn refusal(&self) -> Option<IngestError> {
        let summary = self.refused.refusals("samples")?;
        Some(IngestError::invalid(
            "samples",
            format!("{summary} (the other samples were written)"),
        ))
    }
}

async fn handle_remote_write<P: LogProducer>(
    st: Arc<AppState<P>>,
    req: Request<Body>,
) -> Result<RemoteWritten, IngestError> {
    let (tenant, ticket) = match admit(&st, req.headers()) {
        Ok(admitted) => admitted,
        Err(e) => {
            discard(req.into_body(), st.cfg.max_body_bytes as u64);
            return Err(e);
        }
    };
    let (content_type, encoding) = {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        (
            header(header::CONTENT_TYPE),
            header(header::CONTENT_ENCODING),
        )
    };
    if !content_type.starts_with("application/x-protobuf") {
        discard(req.into_body(), st.cfg.max_body_bytes as u64);
        return Err(IngestError::UnsupportedMedia(format!(
            "{content_type} (remote write sends application/x-protobuf)"
        )));
    }
    if encoding != "snappy" {
        discard(req.into_body(), st.cfg.max_body_bytes as u64);
        return Err(IngestError::invalid(
            "Content-Encoding",
            format!("unsupported {encoding:?}; remote write 1.0 sends snappy"),
        ));
    }
    let limit = st.cfg.max_body_bytes;
    let raw = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| IngestError::TooLarge(format!("body exceeds max_body_bytes = {limit}")))?;
    let now_ms = (st.clock)();
    let work = {
        let (st, tenant) = (st.clone(), tenant.clone());
        move || prepare_remote_write(&st, tenant, raw, ticket, now_ms)
    };
    let (prepared, written) = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| IngestError::Unavailable(format!("decoding the request failed: {e}")))??;
    let Prepared {
        records,
        ticket,
        unconfirmed,
    } = prepared;
    produce(
        &st,
        tenant,
        records,
        ticket,
        unconfirmed,
        now_ms,
        written.series_minutes,
    )
    .await?;
    Ok(written)
}

/// Decodes a remote write body and encodes its records, checking the tenant's rate.
/// Synchronous: it runs on a blocking thread.
fn prepare_remote_write<P>(
    st: &AppState<P>,
    tenant: String,
    raw: Bytes,
    mut ticket: Ticket,
    now_ms: i64,
) -> Result<(Prepared, RemoteWritten), IngestError> {
    let request =
        crate::remote_write::decode(&raw, st.cfg.max_decoded_bytes).map_err(|e| match e {
            crate::remote_write::DecodeError::TooLarge { .. } => {
                IngestError::TooLarge(e.to_string())
            }
            e => IngestError::invalid("body", e.to_string()),
        })?;
    ticket.reserve(prost::Message::encoded_len(&request) as u64)?;
    check_count(&st.cfg, request.timeseries.len())?;
    let mut converted = crate::remote_write::convert(request, &tenant);
    // The body names the contribution: a request sent again is the same one.
    let source = format!("rw:{}", &body_source(&raw)["json-body:".len()..]);
    let built = crate::remote_write::records(
        &mut converted,
        &source,
        now_ms,
        st.cfg.max_past_secs.saturating_mul(1000),
        st.cfg.max_future_secs.saturating_mul(1000),
    );
    let n = built.series_minutes;
    check_rate(st, &tenant, n)?;
    let unconfirmed = match &st.series {
        Some(gate) => {
            let mut series: Vec<&str> = built.records.iter().map(|(k, _)| k.as_str()).collect();
            series.dedup();
            gate.unconfirmed(series.into_iter(), now_ms.div_euclid(1000))
        }
        None => Vec::new(),
    };
    let written = RemoteWritten {
        samples: converted.taken,
        series_minutes: n,
        refused: converted.refused.clone(),
    };
    Ok((
        Prepared {
            records: built.records,
            ticket,
            unconfirmed,
        },
        written,
    ))
}

/// Admits the request (before its body is read): its tenant, and a ticket for the bytes of its
/// body as sent (`Content-Length`, or `max_body_bytes` without one).
fn admit<P>(st: &AppState<P>, headers: &HeaderMap) -> Result<(String, Ticket), IngestError> {
    let tenant = st.keys.authorize(headers, Scope::Write)?;
    let limit = st.cfg.max_body_bytes as u64;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = length.filter(|n| *n > limit) {
        return Err(IngestError::TooLarge(format!(
            "body of {n} bytes exceeds max_body_bytes = {limit}"
        )));
    }
    let ticket = st.admission.admit(length.unwrap_or(limit))?;
    Ok((tenant, ticket))
}

/// The longest a refused request's body is read for, to be thrown away.
const DISCARD_TIME: Duration = Duration::from_secs(10);

/// Reads a refused request's body (up to `max` bytes, for at most [`DISCARD_TIME`]) and throws it
/// away, in a task of its own, while the answer is sent. A server that closes a connection with
/// unread bytes resets it, and a client still sending its body then never sees the answer: this
/// "lingering close" (as nginx does it) lets it read the 503 or 413. Memory stays bounded: one
/// chunk at a time.
fn discard(body: Body, max: u64) {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut read = 0u64;
        let drain = async {
            while let Some(Ok(chunk)) = stream.next().await {
                read += chunk.len() as u64;
                if read > max {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

/// The body after `Content-Encoding` (the same bytes when there is none); a gzip body's decoded
/// size is reserved on `ticket`.
fn decode_body(
    cfg: &PartitionerConfig,
    headers: &HeaderMap,
    raw: Bytes,
    ticket: &mut Ticket,
) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding {
        "identity" => Ok(raw),
        "gzip" => {
            let mut out = Vec::new();
            let limit = cfg.max_decoded_bytes as u64;
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::invalid("body", format!("invalid gzip: {e}")))?;
            if out.len() as u64 > limit {
                return Err(IngestError::TooLarge(format!(
                    "body: decompressed size exceeds max_decoded_bytes = {limit}"
                )));
            }
            ticket.reserve(out.len() as u64)?;
            Ok(Bytes::from(out))
        }
        other => Err(IngestError::invalid(
            "Content-Encoding",
            format!("unsupported {other:?}; use gzip or none"),
        )),
    }
}

/// Decodes, validates and produces one request; the number of series-minutes accepted.
async fn handle<P: LogProducer>(
    st: Arc<AppState<P>>,
    req: Request<Body>,
) -> Result<usize, IngestError> {
    let (tenant, ticket) = match admit(&st, req.headers()) {
        Ok(admitted) => admitted,
        Err(e) => {
            discard(req.into_body(), st.cfg.max_body_bytes as u64);
            return Err(e);
        }
    };
    let headers = req.headers().clone();
    let limit = st.cfg.max_body_bytes;
    let raw = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| IngestError::TooLarge(format!("body exceeds max_body_bytes = {limit}")))?;
    let now_ms = (st.clock)();
    // Decoding, validating, merging and encoding cost about 2.6 µs per series-minute
    // (docs/benchmarks.md, "Partitioner"): past a few hundred, more than an async worker may be
    // blocked, so a larger body is handled on a blocking thread.
    let inline = raw.len() <= INLINE_BODY_BYTES;
    let work = {
        let (st, tenant) = (st.clone(), tenant.clone());
        move || prepare(&st, tenant, &headers, raw, ticket, now_ms)
    };
    let Prepared {
        records,
        ticket,
        unconfirmed,
    } = if inline {
        work()?
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Unavailable(format!("decoding the batch failed: {e}")))??
    };
    let n = records.len();
    produce(&st, tenant, records, ticket, unconfirmed, now_ms, n).await
}

/// Checks the series limits of `unconfirmed`, reserves the records' bytes and produces them;
/// `Ok(n)` once the log acknowledged them all (`n`: the request's series-minutes), or the
/// [`IngestError::SeriesLimited`] of the series refused (the others were produced).
async fn produce<P: LogProducer>(
    st: &AppState<P>,
    tenant: String,
    records: Records,
    mut ticket: Ticket,
    unconfirmed: Vec<String>,
    now_ms: i64,
    n: usize,
) -> Result<usize, IngestError> {
    let (records, refusal) = match &st.series {
        Some(gate) => match gate
            .check(&tenant, unconfirmed, now_ms.div_euclid(1000))
            .await
        {
            Some(refusal) => {
                let kept: Records = records
                    .into_iter()
                    .filter(|(key, _)| !refusal.series.contains(key))
                    .collect();
                (kept, Some(refusal))
            }
            None => (records, None),
        },
        None => (records, None),
    };
    // The records wait in memory for Kafka's acknowledgement: their bytes are held too.
    let records_accepted = records.len();
    let record_bytes: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
    ticket.reserve(record_bytes as u64)?;
    if !records.is_empty() {
        st.producer
            .send_all(records)
            .await
            .map_err(|e| IngestError::Unavailable(e.to_string()))?;
    }
    match refusal {
        None => Ok(n),
        Some(refusal) => Err(IngestError::SeriesLimited {
            tenant,
            refusal,
            accepted: records_accepted.min(n),
            refused: n.saturating_sub(records_accepted),
        }),
    }
}

/// Bodies (as sent) up to this size are decoded on the async thread: a hundred-odd series-minutes,
/// well under the ~500 µs an async worker may be blocked.
const INLINE_BODY_BYTES: usize = 4 << 10;

/// Encoded records: (metric key, record).
type Records = Vec<(String, Vec<u8>)>;

/// A request decoded, validated and encoded.
struct Prepared {
    /// Its records, sorted by metric key and minute.
    records: Records,
    /// The request's ticket, its decoded size reserved on it.
    ticket: Ticket,
    /// Its series the series limits still have to check ([`SeriesGate::unconfirmed`]).
    unconfirmed: Vec<String>,
}

/// Decodes, validates and merges a request's body and encodes its records, checking the tenant's
/// rate on the way. Synchronous, so that a large body runs on a blocking thread.
fn prepare<P>(
    st: &AppState<P>,
    tenant: String,
    headers: &HeaderMap,
    raw: Bytes,
    mut ticket: Ticket,
    now_ms: i64,
) -> Result<Prepared, IngestError> {
    let body = decode_body(&st.cfg, headers, raw, &mut ticket)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-thermo-batch");
    let (source, seq, items) = if content_type.starts_with("application/json") {
        let batch: JsonBatch = serde_json::from_slice(&body)
            .map_err(|e| IngestError::invalid("body", format!("invalid JSON batch: {e}")))?;
        let source = match batch.idempotency_key {
            Some(k) if k.is_empty() || k.len() > 200 => {
                return Err(IngestError::invalid(
                    "idempotency_key",
                    "must be 1 to 200 characters",
                ))
            }
            Some(k) => format!("json:{k}"),
            None => body_source(&body),
        };
        check_count(&st.cfg, batch.series.len())?;
        let items = batch
            .series
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.into_item(i, now_ms)
                    .map_err(|e| IngestError::invalid(e.field, e.problem))
            })
            .collect::<Result<Vec<Item>, _>>()?;
        (source, 0, items)
    } else if content_type.starts_with("application/x-thermo-batch") {
        let batch =
            Batch::decode(&body).map_err(|e| IngestError::invalid("body", e.to_string()))?;
        if batch.agent_id.is_empty() || batch.agent_id.len() > 200 {
            return Err(IngestError::invalid(
                "agent_id",
                "must be 1 to 200 characters",
            ));
        }
        check_count(&st.cfg, batch.items.len())?;
        (batch.agent_id, batch.seq, batch.items)
    } else {
        return Err(IngestError::UnsupportedMedia(content_type.to_string()));
    };

    let now_s = now_ms.div_euclid(1000);
    // Merge duplicates of one series-minute so that each becomes one record of this contribution.
    let mut merged: BTreeMap<(MetricKey, i64), Aggregate> = BTreeMap::new();
    for (i, it) in items.into_iter().enumerate() {
        let key = MetricKey::new(tenant.clone(), it.name, it.tags).map_err(|e| {
            // The JSON form calls the name `metric`; so do the errors of both forms.
            let field = if e.field == "name" {
                "metric"
            } else {
                e.field.as_str()
            };
            IngestError::invalid(format!("series[{i}].{field}"), e.problem)
        })?;
        if it.minute.rem_euclid(60) != 0 {
            return Err(IngestError::invalid(
                format!("series[{i}].time"),
                format!(
                    "minute {} is not aligned to a minute (a multiple of 60)",
                    it.minute
                ),
            ));
        }
        it.agg
            .validate()
            .map_err(|e| IngestError::invalid(format!("series[{i}].{}", e.field), e.problem))?;
        if it.minute < now_s - st.cfg.max_past_secs || it.minute > now_s + st.cfg.max_future_secs {
            return Err(IngestError::invalid(
                format!("series[{i}].time"),
                format!(
                    "minute {} is outside the accepted window [now - {} s, now + {} s] (max_past_secs, max_future_secs)",
                    it.minute, st.cfg.max_past_secs, st.cfg.max_future_secs
                ),
            ));
        }
        match merged.get_mut(&(key.clone(), it.minute)) {
            Some(a) => a
                .merge(&it.agg)
                .map_err(|e| IngestError::invalid(format!("series[{i}].type"), e.to_string()))?,
            None => {
                merged.insert((key, it.minute), it.agg);
            }
        }
    }
    let n = merged.len();
    check_rate(st, &tenant, n)?;
    drop(body);
    let records: Records = merged
        .into_iter()
        .map(|((key, minute), agg)| {
            let rec = Record {
                source: source.clone(),
                seq,
                minute,
                agg,
            };
            (key.encode(), rec.encode())
        })
        .collect();
    let unconfirmed = match &st.series {
        Some(gate) => {
            // Records are sorted by key: a series' records are next to each other.
            let keys = records.iter().map(|(key, _)| key.as_str());
            let mut series: Vec<&str> = keys.collect();
            series.dedup();
            gate.unconfirmed(series.into_iter(), now_s)
        }
        None => Vec::new(),
    };
    Ok(Prepared {
        records,
        ticket,
        unconfirmed,
    })
}

/// Takes `n` series-minutes from the tenant's rate bucket, or says why not (429 with when to retry,
/// or 413 for a request larger than the bucket).
fn check_rate<P>(st: &AppState<P>, tenant: &str, n: usize) -> Result<(), IngestError> {
    match st.limits.check(tenant, n) {
        Verdict::Allowed => Ok(()),
        Verdict::Wait(d) => Err(IngestError::RateLimited {
            rate: st.limits.rate(tenant),
            tenant: tenant.to_string(),
            retry_after_secs: d.as_secs() + u64::from(d.subsec_nanos() > 0),
        }),
        Verdict::TooBig { burst } => Err(IngestError::TooLarge(format!(
            "series: {n} series-minutes exceed tenant {tenant:?}'s burst of {burst} (rate_limit_per_sec × rate_limit_burst_secs)"
        ))),
    }
}

/// The contribution of a JSON batch without `idempotency_key`: derived from its content (the
/// body after gzip), so the same batch sent again, after a 503 whose records reached Kafka later,
/// is merged once. Two identical keyless batches are therefore one batch: a client that means to
/// count the same body twice gives each its own key.
fn body_source(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("json-body:{hex}")
}

fn check_count(cfg: &PartitionerConfig, n: usize) -> Result<(), IngestError> {
    if n > cfg.max_series_per_batch {
        return Err(IngestError::TooLarge(format!(
            "series: {n} exceeds max_series_per_batch = {}",
            cfg.max_series_per_batch
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use std::time::Duration;
    use thermo_core::aggregate::Counter;
    use thermo_store::StoreError;
    use tower::ServiceExt;

    #[derive(Default)]
    struct FakeLog {
        records: Mutex<Vec<(String, Vec<u8>)>>,
        down: std::sync::atomic::AtomicBool,
        /// When set, each `send_all` waits for a permit (Kafka slow to acknowledge).
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl LogProducer for FakeLog {
        async fn send_all(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    backend: "kafka",
                    detail: "down".into(),
                });
            }
            self.records.lock().unwrap().extend(records);
            Ok(())
        }
    }

    const NOW_MS: i64 = 1_764_460_830_000;

    fn app(cfg: PartitionerConfig) -> (Router, Arc<FakeLog>, SelfMetrics) {
        let log = Arc::new(FakeLog::default());
        let m = SelfMetrics::new("partitioner", "series-minutes");
        let st = AppState::with_clock(cfg, log.clone(), m.clone(), Arc::new(|| NOW_MS));
        (router(st), log, m)
    }

    async fn post(
        app: &Router,
        ct: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        // As an HTTP client sends it: with its length.
        let mut b = Request::post("/api/v1/ingest")
            .header("content-type", ct)
            .header("content-length", body.len());
        if let Some(a) = auth {
            b = b.header("authorization", format!("Bearer {a}"));
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POSTs a remote write request (snappy protobuf, as Prometheus sends it).
    async fn post_remote_write(
        app: &Router,
        req: &crate::remote_write::WriteRequest,
        content_encoding: &str,
    ) -> (u16, serde_json::Value) {
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(req))
            .unwrap();
        let r = Request::post("/api/v1/write")
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", content_encoding)
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header("content-length", body.len())
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(r).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn remote_write_produces_gauge_minutes_and_totals_and_names_what_it_refused() {
        use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};
        use thermo_core::codec::{LogValue, TotalsRecord};
        let (app, log, m) = app(PartitionerConfig::default());
        let series = |name: &str, samples: &[(i64, f64)]| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "job".into(),
                    value: "node".into(),
                },
            ],
            samples: samples
                .iter()
                .map(|(t, v)| Sample {
                    timestamp: *t,
                    value: *v,
                })
                .collect(),
            ..Default::default()
        };
        let minute = NOW_MS - NOW_MS.rem_euclid(60_000) - 60_000;
        let req = WriteRequest {
            timeseries: vec![
                series(
                    "http_requests_total",
                    &[(minute + 1_000, 5.0), (minute + 61_000, 9.0)],
                ),
                series(
                    "temperature",
                    &[
                        (minute + 1_000, 20.5),
                        (minute + 30_000, 19.0),
                        (minute + 61_000, 21.0),
                    ],
                ),
            ],
            metadata: vec![],
        };
        let (status, body) = post_remote_write(&app, &req, "snappy").await;
        assert_eq!(status, 204, "{body}");
        let records = log.records.lock().unwrap().clone();
        let decoded: Vec<(String, LogValue)> = records
            .iter()
            .map(|(k, v)| (k.clone(), LogValue::decode(v).unwrap()))
            .collect();
        assert_eq!(decoded.len(), 3, "one totals record, two gauge minutes");
        let source = match &decoded[0] {
            (
                k,
                LogValue::Totals(TotalsRecord {
                    source, samples, ..
                }),
            ) => {
                assert_eq!(k, "default/http_requests_total{job=node}");
                assert_eq!(
                    samples,
                    &vec![(minute + 1_000, 5.0), (minute + 61_000, 9.0)]
                );
                source.clone()
            }
            other => panic!("{other:?}"),
        };
        assert!(source.starts_with("rw:"), "{source}");
        match &decoded[1] {
            (k, LogValue::Minute(r)) => {
                assert_eq!(
                    (k.as_str(), r.minute),
                    ("default/temperature{job=node}", minute / 1000)
                );
                let Aggregate::Gauge(g) = &r.agg else {
                    panic!("{r:?}")
                };
                assert_eq!((g.last, g.min, g.max), (19.0, 19.0, 20.5));
            }
            other => panic!("{other:?}"),
        }
        // The same request again is the same contribution.
        post_remote_write(&app, &req, "snappy").await;
        let again = log.records.lock().unwrap()[3].clone();
        assert!(
            matches!(LogValue::decode(&again.1), Ok(LogValue::Totals(t)) if t.source == source)
        );
        // Refused samples: 400 naming them, the good ones produced.
        log.records.lock().unwrap().clear();
        let bad = WriteRequest {
            timeseries: vec![
                series("ok_total", &[(minute, 1.0)]),
                series("nan_gauge", &[(minute, f64::NAN)]),
                series("old_gauge", &[(NOW_MS - 8 * 86_400_000, 1.0)]),
            ],
            metadata: vec![],
        };
        let (status, body) = post_remote_write(&app, &bad, "snappy").await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(
            error.contains("2 samples refused (bad_value: 1, too_old: 1); the last"),
            "{error}"
        );
        assert_eq!(log.records.lock().unwrap().len(), 1);
        let rendered = m.render();
        assert!(
            rendered
                .contains("thermo_partitioner_remote_write_samples_total{outcome=\"produced\"} 11"),
            "{rendered}"
        );
        // Not snappy, not protobuf: refused before anything is produced.
        let (status, _) = post_remote_write(&app, &req, "gzip").await;
        assert_eq!(status, 400);
        let r = Request::post("/api/v1/write")
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(Body::from(vec![0xffu8; 8]))
            .unwrap();
        assert_eq!(app.clone().oneshot(r).await.unwrap().status().as_u16(), 400);
        let r = Request::post("/api/v1/write")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(app.clone().oneshot(r).await.unwrap().status().as_u16(), 415);
        assert_eq!(log.records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn json_batch_is_validated_and_produced_keyed_by_metric() {
        let (app, log, m) = app(PartitionerConfig::default());
        let body = serde_json::json!({"idempotency_key": "k1", "series": [
            {"metric": "req", "tags": {"route": "/a"}, "time": 1_764_460_800, "type": "counter", "value": 2},
            {"metric": "req", "tags": {"route": "/a"}, "time": 1_764_460_810, "type": "counter", "value": 3},
            {"metric": "lat", "time": 1_764_460_800, "type": "histogram", "values": [1, 2]}]});
        let (s, v) = post(
            &app,
            "application/json",
            None,
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!((s, v["accepted"].as_u64()), (200, Some(2)));
        let recs = log.records.lock().unwrap().clone();
        assert_eq!(recs.len(), 2);
        let (k, v) = recs
            .iter()
            .find(|(k, _)| k.starts_with("default/req"))
            .unwrap();
        assert_eq!(k, "default/req{route=/a}");
        let r = Record::decode(v).unwrap();
        assert_eq!(
            (r.source.as_str(), r.seq, r.minute),
            ("json:k1", 0, 1_764_460_800)
        );
        assert_eq!(
            r.agg,
            Aggregate::Counter(Counter {
                sum: 5.0,
                samples: 2
            })
        );
        assert!(m.render().contains("thermo_partitioner_sent_total 2"));
    }

    #[tokio::test]
    async fn bad_bodies_get_400_naming_the_field() {
        let (app, log, m) = app(PartitionerConfig::default());
        let long = "x".repeat(300);
        let cases = [
            (
                serde_json::json!({"series": [{"metric": long, "time": 1_764_460_800, "type": "counter", "value": 1}]}),
                "series[0].metric",
            ),
            (
                serde_json::json!({"series": [{"metric": "a", "tags": {"k": "a b"}, "time": 1_764_460_800, "type": "counter", "value": 1}]}),
                "series[0].tags.k",
            ),
            (
                serde_json::json!({"series": [{"metric": "a", "time": 1, "type": "counter", "value": 1}]}),
                "series[0].time",
            ),
            (
                serde_json::json!({"series": [{"metric": "a", "time": 1_764_460_800, "type": "timer", "value": 1}]}),
                "series[0].type",
            ),
            (
                serde_json::json!({"series": [{"metric": "a", "time": 1_764_460_800, "type": "counter"}]}),
                "series[0].value",
            ),
            (
                serde_json::json!({"series": [{"metric": "a", "time": 1_764_460_800, "type": "counter", "value": 1, "extra": 1}]}),
                "body",
            ),
        ];
        for (body, field) in cases {
            let (s, v) = post(
                &app,
                "application/json",
                None,
                body.to_string().into_bytes(),
            )
            .await;
            assert_eq!(s, 400, "{v}");
            assert_eq!(v["field"], field, "{v}");
            assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
        }
        let (s, v) = post(
            &app,
            "application/x-thermo-batch",
            None,
            b"garbage".to_vec(),
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (400, Some("body")));
        let (s, _) = post(&app, "text/plain", None, b"x".to_vec()).await;
        assert_eq!(s, 415);
        assert!(log.records.lock().unwrap().is_empty());
        assert!(
            m.render()
                .contains(r#"thermo_partitioner_dropped_total{reason="invalid"} 7"#),
            "{}",
            m.render()
        );
    }

    /// A binary batch is held to the JSON form's rules: each bad item is a 400 naming the item
    /// and the field, and nothing of the batch is produced.
    #[tokio::test]
    async fn bad_binary_items_get_400_naming_item_and_field() {
        use thermo_core::aggregate::{DistinctSet, Gauge, Hist};
        let (app, log, m) = app(PartitionerConfig::default());
        let minute = 1_764_460_800;
        let good = Item {
            name: "ok".into(),
            tags: vec![],
            minute,
            agg: Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1,
            }),
        };
        let mut hist = Hist::new();
        hist.record(5.0, 1);
        let mut lying = hist.clone();
        lying.count = 3;
        let gauge = |last: f64, min: f64, max: f64| {
            Aggregate::Gauge(Gauge {
                last,
                last_ms: 0,
                min,
                max,
            })
        };
        let cases = [
            (
                Aggregate::Counter(Counter {
                    sum: f64::NAN,
                    samples: 1,
                }),
                minute,
                "series[1].value",
            ),
            (
                Aggregate::Counter(Counter {
                    sum: f64::INFINITY,
                    samples: 1,
                }),
                minute,
                "series[1].value",
            ),
            (gauge(5.0, 6.0, 9.0), minute, "series[1].min"),
            (gauge(5.0, 1.0, f64::NAN), minute, "series[1].max"),
            (
                Aggregate::Histogram(Hist::new()),
                minute,
                "series[1].values",
            ),
            (Aggregate::Histogram(lying), minute, "series[1].values"),
            (
                Aggregate::Set(DistinctSet::default()),
                minute,
                "series[1].members",
            ),
            (
                Aggregate::Counter(Counter {
                    sum: 1.0,
                    samples: 1,
                }),
                minute + 30,
                "series[1].time",
            ),
        ];
        let n = cases.len();
        for (agg, minute, field) in cases {
            let batch = Batch {
                agent_id: "a1".into(),
                seq: 1,
                items: vec![
                    good.clone(),
                    Item {
                        name: "bad".into(),
                        tags: vec![],
                        minute,
                        agg,
                    },
                ],
            };
            let (s, v) = post(&app, "application/x-thermo-batch", None, batch.encode()).await;
            assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
        }
        assert!(log.records.lock().unwrap().is_empty());
        let valid = Batch {
            agent_id: "a1".into(),
            seq: 2,
            items: vec![
                good.clone(),
                Item {
                    name: "lat".into(),
                    tags: vec![],
                    minute,
                    agg: Aggregate::Histogram(hist),
                },
            ],
        };
        let (s, v) = post(&app, "application/x-thermo-batch", None, valid.encode()).await;
        assert_eq!((s, v["accepted"].as_u64()), (200, Some(2)), "{v}");
        assert!(
            m.render().contains(&format!(
                r#"thermo_partitioner_dropped_total{{reason="invalid"}} {n}"#
            )),
            "{}",
            m.render()
        );
    }

    /// A JSON batch without `idempotency_key` is the contribution of its content: sent again
    /// (a retry after a 503), its records carry the same source, which the aggregators merge
    /// once; another body is another contribution.
    #[tokio::test]
    async fn a_keyless_json_batch_sent_again_is_the_same_contribution() {
        let (app, log, _) = app(PartitionerConfig::default());
        let body = |v: u32| {
            serde_json::json!({"series": [
                {"metric": "req", "time": 1_764_460_800, "type": "counter", "value": v},
                {"metric": "err", "time": 1_764_460_800, "type": "counter", "value": 1}]})
            .to_string()
            .into_bytes()
        };
        for b in [body(2), body(2), body(3)] {
            let (s, _) = post(&app, "application/json", None, b).await;
            assert_eq!(s, 200);
        }
        let sources: Vec<String> = log
            .records
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| Record::decode(v).unwrap().source)
            .collect();
        assert_eq!(sources.len(), 6);
        assert!(sources[0].starts_with("json-body:"), "{sources:?}");
        // Both records of a batch, and both sends of the same body: one source.
        assert!(sources[..4].iter().all(|s| s == &sources[0]), "{sources:?}");
        assert_eq!(sources[4], sources[5]);
        assert_ne!(sources[4], sources[0]);
    }

    #[tokio::test]
    async fn limits_auth_and_unavailable_log() {
        let mut cfg = PartitionerConfig {
            max_body_bytes: 64,
            ..Default::default()
        };
        cfg.api_keys.insert("secret".into(), "acme".into());
        let (app, log, _) = app(cfg);
        let (s, v) = post(&app, "application/json", Some("secret"), vec![b' '; 65]).await;
        assert_eq!(s, 413);
        assert!(
            v["error"].as_str().unwrap().contains("max_body_bytes = 64"),
            "{v}"
        );
        let (s, _) = post(&app, "application/json", Some("wrong"), b"{}".to_vec()).await;
        assert_eq!(s, 401);
        let batch = Batch {
            agent_id: "a1".into(),
            seq: 7,
            items: vec![Item {
                name: "up".into(),
                tags: vec![],
                minute: 1_764_460_800,
                agg: Aggregate::Counter(Counter {
                    sum: 1.0,
                    samples: 1,
                }),
            }],
        };
        let (s, _) = post(
            &app,
            "application/x-thermo-batch",
            Some("secret"),
            batch.encode(),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(log.records.lock().unwrap()[0].0, "acme/up{}");
        log.down.store(true, Ordering::SeqCst);
        let (s, v) = post(
            &app,
            "application/x-thermo-batch",
            Some("secret"),
            batch.encode(),
        )
        .await;
        assert_eq!(s, 503, "{v}");
    }

    /// Lets the spawned requests run until `done` holds (at most 10,000 turns).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Beyond `max_in_flight_requests` the answer is 503 with `Retry-After` at once, without
    /// reading the body (this one never ends); a body larger than `max_in_flight_bytes` is 413;
    /// the requests in flight complete, and everything held is released.
    #[tokio::test]
    async fn overload_is_answered_503_at_once_before_the_body_is_read() {
        let cfg = PartitionerConfig {
            max_in_flight_requests: 2,
            max_in_flight_bytes: 64 << 10,
            ..PartitionerConfig::default()
        };
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let log = Arc::new(FakeLog {
            gate: Some(gate.clone()),
            ..FakeLog::default()
        });
        let m = SelfMetrics::new("partitioner", "series-minutes");
        let app = router(AppState::with_clock(
            cfg,
            log.clone(),
            m.clone(),
            Arc::new(|| NOW_MS),
        ));
        let gauge = |name: &str| -> i64 {
            let text = m.render();
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("thermo_partitioner_{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let waiting: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|key| {
                let app = app.clone();
                let body = serde_json::json!({"idempotency_key": key, "series": [
                    {"metric": "req", "time": 1_764_460_800, "type": "counter", "value": 1}]});
                tokio::spawn(async move {
                    post(
                        &app,
                        "application/json",
                        None,
                        body.to_string().into_bytes(),
                    )
                    .await
                })
            })
            .collect();
        settle(|| gauge("in_flight_requests") == 2).await;
        assert_eq!(gauge("in_flight_requests"), 2);
        let held = gauge("in_flight_bytes");
        assert!(held > 0 && held <= 4 << 10, "{held}");

        let pending = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let req = Request::post("/api/v1/ingest")
            .header("content-type", "application/json")
            .header("content-length", "100")
            .body(Body::from_stream(pending))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(req))
            .await
            .expect("answered without reading the body")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "1");

        gate.add_permits(1);
        let first = waiting.into_iter().next().unwrap();
        settle(|| gauge("in_flight_requests") == 1).await;
        // One slot is free now, but a body larger than every byte in flight may hold is 413.
        let req = Request::post("/api/v1/ingest")
            .header("content-type", "application/json")
            .header("content-length", (65 << 10).to_string())
            .body(Body::from_stream(futures_util::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);

        gate.add_permits(1);
        assert_eq!(first.await.unwrap().0, 200);
        settle(|| gauge("in_flight_requests") == 0).await;
        assert_eq!(log.records.lock().unwrap().len(), 2);
        assert_eq!(
            (gauge("in_flight_requests"), gauge("in_flight_bytes")),
            (0, 0)
        );
        let metrics = m.render();
        assert!(
            metrics.contains(r#"thermo_partitioner_dropped_total{reason="overloaded"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("thermo_partitioner_sent_total 2"),
            "{metrics}"
        );
    }

    /// A tenant over its rate gets 429 with `Retry-After`, nothing of the refused batch is
    /// produced, and the same batch goes through once the bucket has refilled.
    #[tokio::test]
    async fn a_tenant_over_its_rate_gets_429_with_retry_after() {
        use std::sync::atomic::AtomicI64;
        let now = Arc::new(AtomicI64::new(NOW_MS));
        let t = now.clone();
        let cfg = PartitionerConfig {
            rate_limit_per_sec: 10,
            rate_limit_burst_secs: 6,
            ..PartitionerConfig::default()
        };
        let log = Arc::new(FakeLog::default());
        let m = SelfMetrics::new("partitioner", "series-minutes");
        let clock: Clock = Arc::new(move || t.load(Ordering::SeqCst));
        let app = router(AppState::with_clock(cfg, log.clone(), m.clone(), clock));
        let batch = |key: &str, hosts: std::ops::Range<usize>| {
            let series: Vec<serde_json::Value> = hosts
                .map(|h| {
                    serde_json::json!({"metric": "req", "tags": {"host": format!("h{h}")},
                    "time": NOW_MS / 1000, "type": "counter", "value": 1})
                })
                .collect();
            serde_json::json!({"idempotency_key": key, "series": series}).to_string()
        };
        let send = |body: String| {
            let app = app.clone();
            async move {
                let req = Request::post("/api/v1/ingest")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let retry = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().to_string());
                (resp.status().as_u16(), retry)
            }
        };
        // 10/s with 6 s of burst: 50 now leaves 10; a batch of 20 waits one second.
        assert_eq!(send(batch("a", 0..50)).await, (200, None));
        assert_eq!(send(batch("b", 0..20)).await, (429, Some("1".into())));
        assert_eq!(log.records.lock().unwrap().len(), 50);
        now.fetch_add(1_000, Ordering::SeqCst);
        assert_eq!(send(batch("b", 0..20)).await, (200, None));
        assert_eq!(log.records.lock().unwrap().len(), 70);
        // More than the bucket holds can never pass: 413, not a retry.
        assert_eq!(send(batch("c", 0..61)).await.0, 413);
        let metrics = m.render();
        assert!(
            metrics.contains(r#"thermo_partitioner_dropped_total{reason="rate_limited"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("thermo_partitioner_sent_total 70"),
            "{metrics}"
        );
    }

    /// A JSON batch of one counter series-minute per host of `req`; the answer's status,
    /// `Retry-After` and body.
    async fn post_hosts(
        app: &Router,
        key: &str,
        hosts: &[&str],
        minute: i64,
    ) -> (u16, Option<String>, serde_json::Value) {
        let series: Vec<serde_json::Value> = hosts
            .iter()
            .map(|h| {
                serde_json::json!({"metric": "req", "tags": {"host": h}, "time": minute,
                    "type": "counter", "value": 1})
            })
            .collect();
        let body = serde_json::json!({"idempotency_key": key, "series": series}).to_string();
        let req = Request::post("/api/v1/ingest")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    fn produced_keys(log: &FakeLog) -> Vec<String> {
        log.records
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Over `max_active_series`: the request's known series are produced, its new ones refused
    /// by name with 429 (no `Retry-After`: room comes only as series age out) and counted; a
    /// request of known series only is accepted.
    #[tokio::test]
    async fn new_series_over_the_active_limit_are_refused_and_known_ones_flow() {
        let cfg = PartitionerConfig {
            max_active_series: 3,
            ..PartitionerConfig::default()
        };
        let (app, log, m) = app(cfg);
        let minute = NOW_MS / 1000 - 90;
        let (s, _, v) = post_hosts(&app, "b1", &["a", "b", "c"], minute).await;
        assert_eq!((s, v["accepted"].as_u64()), (200, Some(3)), "{v}");
        let (s, retry, v) = post_hosts(&app, "b2", &["a", "d", "b", "e"], minute).await;
        assert_eq!((s, retry), (429, None), "{v}");
        assert_eq!(v["limit"], "max_active_series");
        assert_eq!(v["max"], 3);
        assert_eq!(
            (v["accepted"].as_u64(), v["refused"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(
            v["refused_series"],
            serde_json::json!(["default/req{host=d}", "default/req{host=e}"])
        );
        assert_eq!(
            v["error"],
            "tenant \"default\" is at its max_active_series = 3: 2 new series (2 series-minutes) refused, 2 series-minutes accepted"
        );
        let (s, _, v) = post_hosts(&app, "b3", &["c", "a"], minute + 60).await;
        assert_eq!(s, 200, "{v}");
        let keys = produced_keys(&log);
        let host = |h: &str| format!("default/req{{host={h}}}");
        assert_eq!(
            keys,
            [
                host("a"),
                host("b"),
                host("c"),
                host("a"),
                host("b"),
                host("a"),
                host("c")
            ]
        );
        let metrics = m.render();
        for line in [
            r#"thermo_partitioner_dropped_total{reason="series_limit"} 2"#,
            r#"thermo_partitioner_series_refused_total{limit="max_active_series",tenant="default"} 2"#,
            r#"thermo_partitioner_tenant_active_series{tenant="default"} 3"#,
            r#"thermo_partitioner_tenant_new_series_this_hour{tenant="default"} 3"#,
            "thermo_partitioner_received_total 9",
            "thermo_partitioner_sent_total 7",
        ] {
            assert!(metrics.contains(line), "{line} not in {metrics}");
        }
    }

    /// Over `max_new_series_per_hour`: 429 with `Retry-After` until the next hour, when the same
    /// series are admitted; a tenant's override replaces the default.
    #[tokio::test]
    async fn new_series_per_hour_are_refused_until_the_next_hour() {
        use crate::config::TenantSeriesLimits;
        use std::sync::atomic::AtomicI64;
        let now = Arc::new(AtomicI64::new(NOW_MS));
        let t = now.clone();
        let cfg = PartitionerConfig {
            max_new_series_per_hour: 2,
            api_keys: [("ka", "acme"), ("kb", "big")]
                .into_iter()
                .map(|(k, t)| (k.to_string(), t.to_string()))
                .collect(),
            tenant_series_limits: [(
                "big".to_string(),
                TenantSeriesLimits {
                    max_new_series_per_hour: Some(0),
                    ..TenantSeriesLimits::default()
                },
            )]
            .into_iter()
            .collect(),
            ..PartitionerConfig::default()
        };
        let log = Arc::new(FakeLog::default());
        let m = SelfMetrics::new("partitioner", "series-minutes");
        let clock: Clock = Arc::new(move || t.load(Ordering::SeqCst));
        let app = router(AppState::with_clock(cfg, log.clone(), m.clone(), clock));
        let send = |key: &'static str, hosts: &'static [&'static str], minute: i64| {
            let app = app.clone();
            async move {
                let body = serde_json::json!({"idempotency_key": key, "series": hosts.iter().map(|h| {
                    serde_json::json!({"metric": "req", "tags": {"host": h}, "time": minute, "type": "counter", "value": 1})
                }).collect::<Vec<_>>()});
                let req = |auth: &str| {
                    Request::post("/api/v1/ingest")
                        .header("content-type", "application/json")
                        .header("authorization", format!("Bearer {auth}"))
                        .body(Body::from(body.to_string()))
                        .unwrap()
                };
                let a = app.clone().oneshot(req("ka")).await.unwrap();
                let b = app.oneshot(req("kb")).await.unwrap();
                let retry = a
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().to_string());
                (a.status().as_u16(), retry, b.status().as_u16())
            }
        };
        let minute = NOW_MS / 1000 - 30;
        // 30 s into the hour: the next one starts in 3,570 s.
        assert_eq!(
            send("1", &["a", "b", "c"], minute).await,
            (429, Some("3570".into()), 200)
        );
        now.fetch_add(3_570_000, Ordering::SeqCst);
        assert_eq!(
            send("2", &["a", "b", "c"], minute + 3600).await,
            (200, None, 200)
        );
        let acme = produced_keys(&log)
            .into_iter()
            .filter(|k| k.starts_with("acme/"))
            .count();
        assert_eq!(acme, 2 + 3);
        assert!(m.render().contains(
            r#"thermo_partitioner_series_refused_total{limit="max_new_series_per_hour",tenant="acme"} 1"#
        ));
    }
}
