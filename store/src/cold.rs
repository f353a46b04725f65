//! The cold store contract (an object store) and its local-directory backend.
//!
//! Objects are whole files written once per key and replaced whole: `put` is atomic (S3 PUT; a
//! rename of a fully written temporary file on disk), so a reader sees the old object or the new
//! one, never a part. Keys are `/`-separated paths (see `docs/storage.md` for the layout).
//!
//! Reads may take a byte range ([`ColdStore::get_range`]) or the tail of an object
//! ([`ColdStore::get_tail`]), as a Parquet reader fetches a footer and then only the pages it
//! needs. A range is clamped to the object: bytes past its end are not an error, they are absent.

use crate::StoreError;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Ranged reads of one object in flight at once ([`ColdStore::get_ranges`]).
pub const RANGE_FETCHES: usize = 4;

/// An object store.
pub trait ColdStore: Send + Sync + 'static {
    /// Writes `body` at `key`, replacing any object there, atomically.
    fn put(&self, key: &str, body: Vec<u8>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The object at `key`, or `None`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Bytes `start..end` of the object at `key` (fewer if it ends before `end`), or `None`.
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Bytes of each of `ranges` of the object at `key` (each as [`Self::get_range`]), or `None`
    /// if there is no such object. By default [`RANGE_FETCHES`] ranged reads at a time.
    fn get_ranges(
        &self,
        key: &str,
        ranges: Vec<Range<u64>>,
    ) -> impl Future<Output = Result<Option<Vec<Vec<u8>>>, StoreError>> + Send {
        use futures_util::{StreamExt, TryStreamExt};
        async move {
            let got: Vec<Option<Vec<u8>>> = futures_util::stream::iter(ranges)
                .map(|r| self.get_range(key, r.start, r.end))
                .buffered(RANGE_FETCHES)
                .try_collect()
                .await?;
            Ok(got.into_iter().collect())
        }
    }
    /// The last `len` bytes of the object at `key` (all of it if it is shorter) and the object's
    /// size, or `None`.
    fn get_tail(
        &self,
        key: &str,
        len: u64,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, u64)>, StoreError>> + Send;
    /// Every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Removes the object at `key` (no error if absent).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How many bytes of an object's tail a reader fetches first, to find its footer: what one
    /// request moves for about the cost of a small one. On S3 (the default) a request costs tens
    /// of milliseconds up to about a megabyte, so an object that small arrives whole in one
    /// request ([`crate::cold_select::TAIL_GUESS`]).
    fn tail_guess(&self) -> u64 {
        crate::cold_select::TAIL_GUESS
    }

    /// This store's reads as blocking calls, if they are blocking file reads (a local directory):
    /// a reader then runs each object's whole read, I/O and decoding, as one task on a blocking
    /// thread, one hand-off per object rather than one per request. `None` (the default) for a
    /// store reached over the network, whose requests are awaited.
    fn blocking(&self) -> Option<&dyn BlockingReads> {
        None
    }
}

/// The reads of a [`ColdStore`] whose reads block (files), called on a blocking thread.
pub trait BlockingReads: Send + Sync {
    /// [`ColdStore::get_ranges`], on the calling thread.
    fn get_ranges_now(
        &self,
        key: &str,
        ranges: Vec<Range<u64>>,
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError>;

    /// [`ColdStore::get_tail`], on the calling thread.
    fn get_tail_now(&self, key: &str, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError>;
}

/// Objects as files under a directory.
#[derive(Clone)]
pub struct LocalDirCold {
    root: PathBuf,
}

fn io_err(e: std::io::Error, what: &Path) -> StoreError {
    StoreError::io("local cold store", e, what)
}

fn checked(key: &str) -> Result<&str, StoreError> {
    if key.is_empty()
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(StoreError::Invalid(format!("invalid object key {key:?}")));
    }
    Ok(key)
}

impl LocalDirCold {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                Self::walk(&path, base, out)?;
            } else if let Ok(rel) = path.strip_prefix(base) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if !rel
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(".tmp-"))
                {
                    out.push(rel);
                }
            }
        }
        Ok(())
    }
}

/// The bytes of some ranges of a file, and its size.
type FileRanges = (Vec<Vec<u8>>, u64);

/// Bytes of each of the ranges `ranges(size)` of the file at `path` (clamped to its end) and its
/// size, or `None` without a file.
fn read_ranges(
    path: &Path,
    ranges: impl FnOnce(u64) -> Vec<Range<u64>>,
) -> Result<Option<FileRanges>, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e, path)),
    };
    let size = f.metadata().map_err(|e| io_err(e, path))?.len();
    let ranges = ranges(size);
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (start, end) = (r.start.min(size), r.end.min(size));
        let mut buf = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        f.seek(SeekFrom::Start(start))
            .map_err(|e| io_err(e, path))?;
        (&mut f)
            .take(end.saturating_sub(start))
            .read_to_end(&mut buf)
            .map_err(|e| io_err(e, path))?;
        out.push(buf);
    }
    Ok(Some((out, size)))
}

impl BlockingReads for LocalDirCold {
    fn get_ranges_now(
        &self,
        key: &str,
        ranges: Vec<Range<u64>>,
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let path = self.root.join(checked(key)?);
        Ok(read_ranges(&path, |_| ranges)?.map(|(parts, _)| parts))
    }

    fn get_tail_now(&self, key: &str, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let path = self.root.join(checked(key)?);
        let tail = move |size: u64| std::iter::once(size.saturating_sub(len)..size).collect();
        Ok(read_ranges(&path, tail)?.and_then(|(mut parts, size)| Some((parts.pop()?, size))))
    }
}

impl ColdStore for LocalDirCold {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let path = self.root.join(checked(key)?);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().unwrap_or(&root).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| io_err(e, &dir))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
            std::fs::write(&tmp, &body).map_err(|e| io_err(e, &tmp))?;
            crate::replace_durably(&tmp, &path).map_err(|e| io_err(e, &path))
        })
        .await
        .map_err(|e| StoreError::Invalid(e.to_string()))?
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.root.join(checked(key)?);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, &path)),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self
            .get_ranges(key, std::iter::once(start..end).collect())
            .await?;
        Ok(got.and_then(|mut parts| parts.pop()))
    }

    /// A local read costs little per request, and per byte: a smaller tail than S3's (more is read
    /// when the footer is longer).
    fn tail_guess(&self) -> u64 {
        64 << 10
    }

    /// One blocking task and one open file for every range.
    async fn get_ranges(
        &self,
        key: &str,
        ranges: Vec<Range<u64>>,
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        crate::off_thread("reading ranges", move || this.get_ranges_now(&key, ranges)).await
    }

    async fn get_tail(&self, key: &str, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        crate::off_thread("reading a tail", move || this.get_tail_now(&key, len)).await
    }

    fn blocking(&self) -> Option<&dyn BlockingReads> {
        Some(self)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            Self::walk(&root, &root, &mut out).map_err(|e| io_err(e, &root))?;
            out.retain(|k| k.starts_with(&prefix));
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Invalid(e.to_string()))?
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.root.join(checked(key)?);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e, &path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_dir_passes_the_cold_store_suite() {
        let dir = std::env::temp_dir().join(format!("thermo-cold-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::cold_suite::run(&LocalDirCold::new(&dir), "suite").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn local_dir_put_get_list_delete() {
        let dir = std::env::temp_dir().join(format!("thermo-cold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = LocalDirCold::new(&dir);
        c.put("a/b/one.parquet", b"1".to_vec()).await.unwrap();
        c.put("a/b/one.parquet", b"22".to_vec()).await.unwrap();
        c.put("a/c/two.parquet", b"3".to_vec()).await.unwrap();
        assert_eq!(
            c.get("a/b/one.parquet").await.unwrap(),
            Some(b"22".to_vec())
        );
        assert_eq!(c.get("a/x").await.unwrap(), None);
        assert_eq!(
            c.list("a/").await.unwrap(),
            vec!["a/b/one.parquet", "a/c/two.parquet"]
        );
        assert_eq!(c.list("a/c").await.unwrap(), vec!["a/c/two.parquet"]);
        c.delete("a/b/one.parquet").await.unwrap();
        c.delete("a/b/one.parquet").await.unwrap();
        assert_eq!(c.list("").await.unwrap(), vec!["a/c/two.parquet"]);
        assert!(c.put("../escape", vec![]).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
