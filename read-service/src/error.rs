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
    #[error("{0}")]
    NotFound(String),
    #[error("query timed out")]
    Timeout,
    #[error("storage unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("startup failed: {0}")]
    Startup(String),
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
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Store(e) if e.retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Startup(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
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
        (self.status(), Json(body)).into_response()
    }
}
