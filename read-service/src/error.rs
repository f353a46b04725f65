//! The read service's one error type, mapped once to an HTTP status and a JSON body
//! `{"error": "..."}` (plus `"param"` when a query parameter is at fault).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use thermo_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is invalid: 400, naming it.
    #[error("{param}: {problem}")]
    BadParam { param: String, problem: String },
    /// A query would read more than a limit allows (`max_series`): 400, naming the parameter to
    /// narrow (the Prometheus API answers 422 `execution`).
    #[error("{param}: {problem}")]
    Limit { param: String, problem: String },
    #[error("missing or unknown API key")]
    Unauthorized,
    /// The key's tenant may not read this: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("query timed out")]
    Timeout,
    /// The tenant is over its query rate: 429 with `Retry-After`.
    #[error("tenant {tenant:?} is over its rate of {rate} queries per second; retry in {retry_after_secs} s")]
    RateLimited {
        tenant: String,
        rate: u32,
        retry_after_secs: u64,
    },
    /// Too many queries running and waiting: 503 with `Retry-After: 1`.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    #[error("storage unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("startup failed: {0}")]
    Startup(String),
}

impl From<thermo_runtime::auth::AuthError> for ApiError {
    fn from(e: thermo_runtime::auth::AuthError) -> Self {
        match e {
            thermo_runtime::auth::AuthError::Unauthenticated => Self::Unauthorized,
            forbidden => Self::Forbidden(forbidden.to_string()),
        }
    }
}

impl ApiError {
    pub fn param(param: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::BadParam {
            param: param.into(),
            problem: problem.into(),
        }
    }

    pub fn limit(param: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Limit {
            param: param.into(),
            problem: problem.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParam { .. } | Self::Limit { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(e) if e.retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Startup(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ApiError {
    /// The `Retry-After` seconds of an answer the client should send again later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Overloaded(_) => Some(1),
            _ => None,
        }
    }
}

/// Adds `Retry-After` to `resp` when `secs` says so.
pub fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Self::BadParam { param, .. } | Self::Limit { param, .. } = &self {
            body["param"] = serde_json::Value::String(param.clone());
        }
        if self.status().is_server_error() {
            tracing::warn!("query failed: {self}");
        }
        let retry = self.retry_after();
        with_retry_after((self.status(), Json(body)).into_response(), retry)
    }
}
