//! thermo-store: storage contracts and their backends.
//!
//! - [`hot`]: the hot store contract (per-minute cells, series index, partition offsets) and its
//!   Redis backend ([`redis_hot`]); the key schema is in `docs/storage.md` and in `redis_hot`.
//! - [`cold`]: the cold object store contract, its S3 backend ([`s3`]) and a local directory;
//!   [`cold_format`] is the Parquet layout of its objects, [`cold_select`] reads selected series
//!   from them, [`cold_suite`] the contract's
//!   conformance suite, run on every backend.
//! - [`series_registry`]: each tenant's recent series, for the partitioner's cardinality limits,
//!   in memory or in Redis ([`redis_series`]); [`series_suite`] is its conformance suite.
//! - [`log`]: the log contract (produce keyed records, consume as a group) and its Kafka backend
//!   ([`kafka`]).
//!
//! One error enum, [`StoreError`], says for each failure whether a retry may help.

pub mod catalog;
pub mod cold;
pub mod cold_directory;
pub mod cold_format;
pub mod cold_select;
pub mod cold_suite;
pub mod hot;
pub mod kafka;
pub mod local_log;
pub mod log;
pub mod mem_catalog;
pub mod mem_hot;
pub mod redis_catalog;
pub mod redis_conn;
pub mod redis_hot;
pub mod redis_migrate;
pub mod redis_series;
pub mod s3;
pub mod series_registry;
pub mod series_suite;

/// Runs `f` on a blocking thread: for CPU work over the ~500 µs an async worker may be blocked
/// (encoding or decoding a cold object, a Parquet footer, pages). `what` names it in the error.
pub async fn off_thread<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?
}

/// Runs `f` inline when `small` (its caller's estimate that it takes well under the ~500 µs an
/// async worker may be blocked: a hand-off to a blocking thread and back costs tens of
/// microseconds), else on a blocking thread ([`off_thread`]).
pub async fn off_thread_unless<T: Send + 'static>(
    small: bool,
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if small {
        f()
    } else {
        off_thread(what, f).await
    }
}

/// Replaces `path` by the fully written file `tmp`, durably: `tmp` is `fsync`ed, renamed, and the
/// directory `fsync`ed, so that after a power loss `path` is the old file or the new one, whole.
pub(crate) fn replace_durably(
    tmp: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or timed out: retry later.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// Stored bytes could not be decoded: not retryable, the data is skipped and counted.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The request itself is wrong (bad config, unknown topic): not retryable.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// A file-system failure of the embedded backend `backend` on `path` (retryable: a full or
    /// failing disk may recover).
    pub(crate) fn io(backend: &'static str, e: std::io::Error, path: &std::path::Path) -> Self {
        StoreError::Unavailable {
            backend,
            detail: format!("{}: {e}", path.display()),
        }
    }

    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable {
            backend: "redis",
            detail: e.to_string(),
        }
    }
}

impl From<rdkafka::error::KafkaError> for StoreError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        StoreError::Unavailable {
            backend: "kafka",
            detail: e.to_string(),
        }
    }
}
