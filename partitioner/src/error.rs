//! The partitioner's one error enum, each variant mapped once to an HTTP status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::series_limit::Refusal;

/// Refused series named in a 429's body at most.
const REFUSED_NAMED: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A field of the body is invalid: 400, naming the field and the limit.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("missing or unknown API key")]
    Unauthorized,
    /// A key without the `write` scope: 403, the sender does not retry.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("unsupported content type {0:?}; use application/x-thermo-batch or application/json")]
    UnsupportedMedia(String),
    /// The tenant's ingest rate is used up: 429 with `Retry-After`, the sender retries then.
    #[error("tenant {tenant:?} is over its rate of {rate} series-minutes per second; retry in {retry_after_secs} s")]
    RateLimited {
        tenant: String,
        rate: u32,
        retry_after_secs: u64,
    },
    /// New series over a tenant's series limit: 429 naming the limit. The request's other series
    /// were produced (`accepted` series-minutes, acknowledged by the log); the refused ones would
    /// be refused again until the limit has room, so a sender does not send them again.
    #[error("tenant {tenant:?} is at its {} = {}: {} new series ({refused} series-minutes) refused, {accepted} series-minutes accepted", .refusal.limit.name(), .refusal.max, .refusal.series.len())]
    SeriesLimited {
        tenant: String,
        refusal: Refusal,
        accepted: usize,
        refused: usize,
    },
    /// Too many requests or bytes in flight: 503 at once, before the body is read; the sender
    /// retries.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// The log did not acknowledge: 503, the sender retries.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    #[error("startup failed: {0}")]
    Startup(String),
}

impl From<thermo_runtime::auth::AuthError> for IngestError {
    fn from(e: thermo_runtime::auth::AuthError) -> Self {
        match e {
            thermo_runtime::auth::AuthError::Unauthenticated => Self::Unauthorized,
            forbidden => Self::Forbidden(forbidden.to_string()),
        }
    }
}

impl IngestError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } | Self::SeriesLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded(_) | Self::Unavailable(_) | Self::Startup(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `reason` label when the batch is counted as dropped.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMedia(_) => "unsupported_media",
            Self::RateLimited { .. } => "rate_limited",
            Self::SeriesLimited { .. } => "series_limit",
            Self::Overloaded(_) => "overloaded",
            Self::Unavailable(_) | Self::Startup(_) => "unavailable",
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({ "error": self.to_string() });
        match &self {
            Self::Invalid { field, .. } => {
                body["field"] = serde_json::Value::String(field.clone());
            }
            Self::SeriesLimited {
                refusal,
                accepted,
                refused,
                ..
            } => {
                let named: Vec<&String> = refusal.series.iter().take(REFUSED_NAMED).collect();
                body["limit"] = refusal.limit.name().into();
                body["max"] = refusal.max.into();
                body["accepted"] = (*accepted).into();
                body["refused"] = (*refused).into();
                body["refused_series_count"] = refusal.series.len().into();
                body["refused_series"] = serde_json::json!(named);
            }
            _ => {}
        }
        let retry_after = match &self {
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::SeriesLimited { refusal, .. } => refusal.retry_after_secs,
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}
