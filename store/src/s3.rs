//! S3 backend of the cold store (aws-sdk-s3): path-style addressing, static credentials, any
//! S3-compatible endpoint (AWS, MinIO, moto, s3s).

use crate::cold::ColdStore;
use crate::StoreError;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Bound of one operation, retries included.
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct S3Cold {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Create the bucket when a PUT finds it missing (local stacks, tests, a wiped server).
    create_bucket: bool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        backend: "s3",
        detail: e.to_string(),
    }
}

impl S3Cold {
    pub fn new(s: &S3Settings) -> Self {
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .operation_timeout(s.timeout)
            .connect_timeout(Duration::from_secs(2))
            .build();
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(Region::new(s.region.clone()))
            .credentials_provider(Credentials::new(
                s.access_key.clone(),
                s.secret_key.clone(),
                None,
                None,
                "thermo-config",
            ))
            .force_path_style(true)
            .timeout_config(timeouts);
        if !s.endpoint.is_empty() {
            b = b.endpoint_url(s.endpoint.clone());
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: s.bucket.clone(),
            create_bucket: false,
        }
    }

    /// Creates the bucket when a PUT finds it missing.
    pub fn creating_bucket(mut self, yes: bool) -> Self {
        self.create_bucket = yes;
        self
    }

    /// Creates the bucket if it does not exist (local stacks and tests).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let svc = e
                    .as_service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                if svc.contains("BucketAlreadyOwnedByYou") || svc.contains("BucketAlreadyExists") {
                    Ok(())
                } else {
                    Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))
                }
            }
        }
    }
}

/// What a ranged GET answered: `data` holds the object's bytes from offset `first` on.
struct Ranged {
    data: Vec<u8>,
    first: u64,
    total: u64,
}

impl Ranged {
    /// The bytes `start..end` of the object, as far as `data` holds them.
    fn slice(mut self, start: u64, end: u64) -> Vec<u8> {
        let rel = |x: u64| usize::try_from(x.saturating_sub(self.first)).unwrap_or(usize::MAX);
        let end = rel(end).min(self.data.len());
        let start = rel(start).min(end);
        self.data.truncate(end);
        self.data.drain(..start);
        self.data
    }
}

impl S3Cold {
    /// A ranged GET (`range` as in the HTTP `Range` header), or `None` if there is no object.
    /// A range that starts past the end answers no bytes.
    async fn ranged(&self, key: &str, range: &str) -> Result<Option<Ranged>, StoreError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(None);
                }
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                    // Range Not Satisfiable: the object exists and ends before the range (S3
                    // answers a suffix of an empty object so too).
                    return Ok(Some(Ranged {
                        data: Vec::new(),
                        first: 0,
                        total: 0,
                    }));
                }
                return Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e)));
            }
        };
        // "bytes 100-199/1234": the first offset, and the size after the slash. A server that
        // ignores the range answers the whole object.
        let content_range = out.content_range().map(str::to_string);
        let data = out
            .body
            .collect()
            .await
            .map_err(unavailable)?
            .into_bytes()
            .to_vec();
        let parsed = content_range.as_deref().and_then(|r| {
            let (span, total) = r.strip_prefix("bytes ")?.split_once('/')?;
            let first = span.split_once('-')?.0.parse::<u64>().ok()?;
            Some((first, total.parse::<u64>().ok()?))
        });
        let (first, total) = parsed.unwrap_or((0, data.len() as u64));
        Ok(Some(Ranged { data, first, total }))
    }
}

impl ColdStore for S3Cold {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let send = |body: Vec<u8>| {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send()
        };
        match send(body.clone()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let missing = e
                    .as_service_error()
                    .and_then(|s| s.meta().code())
                    .is_some_and(|c| c == "NoSuchBucket");
                if !(missing && self.create_bucket) {
                    return Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e)));
                }
                tracing::warn!(bucket = %self.bucket, "bucket missing: creating it");
                self.ensure_bucket().await?;
                send(body)
                    .await
                    .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
                Ok(())
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let data = out.body.collect().await.map_err(unavailable)?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    Ok(None)
                } else {
                    Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))
                }
            }
        }
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // An empty HTTP range is not expressible: ask for one byte and cut.
        let last = end.max(start + 1) - 1;
        let got = self.ranged(key, &format!("bytes={start}-{last}")).await?;
        Ok(got.map(|g| g.slice(start, end)))
    }

    async fn get_tail(&self, key: &str, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let got = self.ranged(key, &format!("bytes=-{}", len.max(1))).await?;
        Ok(got.map(|g| {
            let total = g.total;
            (g.slice(total.saturating_sub(len), total), total)
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
