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
use std::path::{Path, PathBuf};

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

/// Reads the bytes `span(size)` of the file at `path` (clamped to its size), and its size; `None`
/// if there is no file.
fn read_at(
    path: &Path,
    span: impl FnOnce(u64) -> (u64, u64),
) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e, path)),
    };
    let size = f.metadata().map_err(|e| io_err(e, path))?.len();
    let (start, end) = span(size);
    let (start, end) = (start.min(size), end.min(size));
    let mut buf = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
    f.seek(SeekFrom::Start(start))
        .map_err(|e| io_err(e, path))?;
    f.take(end.saturating_sub(start))
        .read_to_end(&mut buf)
        .map_err(|e| io_err(e, path))?;
    Ok(Some((buf, size)))
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
        let path = self.root.join(checked(key)?);
        tokio::task::spawn_blocking(move || read_at(&path, |_| (start, end)))
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))?
            .map(|o| o.map(|(b, _)| b))
    }

    async fn get_tail(&self, key: &str, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let path = self.root.join(checked(key)?);
        tokio::task::spawn_blocking(move || read_at(&path, |size| (size.saturating_sub(len), size)))
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))?
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
