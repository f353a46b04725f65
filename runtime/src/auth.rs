//! API keys, shared by the partitioner and the read service: who a request is (its tenant) and
//! what it may do (its scope).
//!
//! `Authorization: Bearer <key>` names a key; a key grants one tenant `read`, `write`, or both.
//! Keys come from the config (`[api_keys] "<key>" = "<tenant>"`: both scopes) and from a key file
//! (`api_key_file`), one key per line, its tenant and its scope, separated by spaces or tabs:
//!
//! ```text
//! # key                              tenant   scope
//! 3f9a0c7e5b1d4e2a8c6b0d9f7e1a2b3c   acme     write
//! 8d2e4f6a0b1c3d5e7f9a1b2c4d6e8f0a   acme     read
//! 5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b   globex   read,write
//! ```
//!
//! Blank lines and lines starting with `#` are skipped. A line that is not three fields, a tenant
//! outside `[a-z0-9_-]`, a scope other than `read`, `write` or `read,write`, or a key given twice
//! (in the file or in the config too) is an error naming the line (never the key). The file is read
//! at start, where an error stops the start, and again on SIGHUP ([`reload_on_sighup`]), where an
//! error is logged and the keys in use stay.
//!
//! Keys are held as SHA-256 digests and compared in constant time: a request's key is hashed and
//! compared with every key held, without stopping at a match, so neither the time taken nor the
//! key's length tells how close a guess was. With no key configured at all, authentication is off:
//! every request is tenant `default` with both scopes.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a request does: reads data (queries, listings, usage) or writes it (ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// Why a request is refused: 401 without a known key, 403 with a key that lacks the scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or unknown API key")]
    Unauthenticated,
    #[error("this API key may not {}: it grants {granted} only", .wanted.as_str())]
    Forbidden {
        wanted: Scope,
        granted: &'static str,
    },
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("API key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API key file {path}, line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
}

/// What one key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    tenant: String,
    read: bool,
    write: bool,
}

impl Grant {
    fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }

    fn scopes(&self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "read,write",
            (true, false) => "read",
            (false, true) => "write",
            (false, false) => "nothing",
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A set of keys: each key's digest and grant.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<([u8; 32], Grant)>,
}

impl Keys {
    /// The config's keys (`key → tenant`, both scopes), not checked (as they always were).
    pub fn inline(api_keys: &BTreeMap<String, String>) -> Self {
        Self {
            keys: api_keys
                .iter()
                .map(|(key, tenant)| {
                    let grant = Grant {
                        tenant: tenant.clone(),
                        read: true,
                        write: true,
                    };
                    (digest(key.trim()), grant)
                })
                .collect(),
        }
    }

    /// The config's keys and the key file's (`text`, read from `path`).
    pub fn with_file(
        api_keys: &BTreeMap<String, String>,
        path: &str,
        text: &str,
    ) -> Result<Self, KeyFileError> {
        let mut keys = Self::inline(api_keys);
        let line_error = |line: usize, problem: String| KeyFileError::Line {
            path: path.to_string(),
            line,
            problem,
        };
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, tenant, scope] = fields[..] else {
                return Err(line_error(
                    n,
                    format!(
                        "expected 3 fields (key, tenant, scope), found {}",
                        fields.len()
                    ),
                ));
            };
            thermo_core::key::validate_tenant(tenant).map_err(|e| line_error(n, e.to_string()))?;
            let (read, write) = match scope {
                "read" => (true, false),
                "write" => (false, true),
                "read,write" | "write,read" => (true, true),
                other => {
                    return Err(line_error(
                        n,
                        format!("scope {other:?}: use read, write or read,write"),
                    ))
                }
            };
            let d = digest(key);
            if keys.keys.iter().any(|(k, _)| *k == d) {
                return Err(line_error(
                    n,
                    "this key is given twice (in the file or in the config's api_keys)".into(),
                ));
            }
            let grant = Grant {
                tenant: tenant.to_string(),
                read,
                write,
            };
            keys.keys.push((d, grant));
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The tenant of a request presenting `key` (`None`: no key) for `scope`.
    pub fn authorize(&self, key: Option<&str>, scope: Scope) -> Result<String, AuthError> {
        if self.keys.is_empty() {
            return Ok("default".to_string());
        }
        let key = key.ok_or(AuthError::Unauthenticated)?;
        let wanted = digest(key.trim());
        // Every key is compared; the index of the match is selected without a branch on it.
        let mut found = u64::MAX;
        for (i, (d, _)) in self.keys.iter().enumerate() {
            found = u64::conditional_select(&found, &(i as u64), d.ct_eq(&wanted));
        }
        let (_, grant) = usize::try_from(found)
            .ok()
            .and_then(|i| self.keys.get(i))
            .ok_or(AuthError::Unauthenticated)?;
        if !grant.allows(scope) {
            return Err(AuthError::Forbidden {
                wanted: scope,
                granted: grant.scopes(),
            });
        }
        Ok(grant.tenant.clone())
    }
}

/// The key of a request: `Authorization: Bearer <key>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The keys a server checks, replaced whole when its key file is read again. Clones share them.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<RwLock<Arc<Keys>>>,
    inline: Arc<BTreeMap<String, String>>,
    file: Arc<RwLock<Option<PathBuf>>>,
}

impl KeyRing {
    /// The config's keys only.
    pub fn new(api_keys: &BTreeMap<String, String>) -> Self {
        Self {
            keys: Arc::new(RwLock::new(Arc::new(Keys::inline(api_keys)))),
            inline: Arc::new(api_keys.clone()),
            file: Arc::new(RwLock::new(None)),
        }
    }

    /// Reads the key file at `path` besides the config's keys, and again at every
    /// [`Self::reload`]. Returns the number of keys.
    pub fn use_file(&self, path: &Path) -> Result<usize, KeyFileError> {
        let n = self.load(path)?;
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
        Ok(n)
    }

    /// A role's `api_key_file` (nothing when empty): read now, logged, and read again on every
    /// SIGHUP.
    pub fn watch_file(&self, path: &str) -> Result<(), KeyFileError> {
        if path.is_empty() {
            return Ok(());
        }
        let n = self.use_file(Path::new(path))?;
        tracing::info!(keys = n, file = %path, "API keys read (again on SIGHUP)");
        reload_on_sighup(vec![self.clone()]);
        Ok(())
    }

    /// Reads the key file again (nothing without one); on an error the keys in use stay.
    pub fn reload(&self) -> Result<Option<usize>, KeyFileError> {
        let path = self.file.read().unwrap_or_else(|e| e.into_inner()).clone();
        path.map(|p| self.load(&p)).transpose()
    }

    fn load(&self, path: &Path) -> Result<usize, KeyFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let keys = Keys::with_file(&self.inline, &shown, &text)?;
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// The tenant of a request for `scope` (see [`Keys::authorize`]).
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<String, AuthError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        keys.authorize(bearer(headers), scope)
    }
}

/// Reads every ring's key file again on each SIGHUP, logging what was loaded or why not.
pub fn reload_on_sighup(rings: Vec<KeyRing>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, API keys will not be reloaded: {e}");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            for ring in &rings {
                match ring.reload() {
                    Ok(Some(n)) => tracing::info!(keys = n, "SIGHUP: API key file read again"),
                    Ok(None) => {}
                    Err(e) => tracing::error!("SIGHUP: {e}; the keys in use stay"),
                }
            }
        }
    });
    #[cfg(not(unix))]
    drop(rings);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {k}").parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn keys_select_tenants() {
        let mut inline = BTreeMap::new();
        let ring = KeyRing::new(&inline);
        assert_eq!(
            ring.authorize(&headers(None), Scope::Write).as_deref(),
            Ok("default")
        );
        inline.insert("k1".to_string(), "acme".to_string());
        let ring = KeyRing::new(&inline);
        assert_eq!(
            ring.authorize(&headers(None), Scope::Read),
            Err(AuthError::Unauthenticated)
        );
        for scope in [Scope::Read, Scope::Write] {
            assert_eq!(
                ring.authorize(&headers(Some("k1")), scope).as_deref(),
                Ok("acme")
            );
        }
        assert_eq!(
            ring.authorize(&headers(Some("k2")), Scope::Read),
            Err(AuthError::Unauthenticated)
        );
    }

    #[test]
    fn a_key_file_grants_scopes_and_is_read_again() {
        let dir = std::env::temp_dir().join(format!("thermo-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(
            &path,
            "# key tenant scope\n\nkw acme write\nkr\tacme\tread\n  krw globex read,write  \n",
        )
        .unwrap();
        let inline = BTreeMap::from([("kc".to_string(), "cfg".to_string())]);
        let ring = KeyRing::new(&inline);
        assert_eq!(ring.use_file(&path).unwrap(), 4);
        let at = |key, scope| ring.authorize(&headers(Some(key)), scope);
        assert_eq!(at("kw", Scope::Write).as_deref(), Ok("acme"));
        assert_eq!(
            at("kw", Scope::Read),
            Err(AuthError::Forbidden {
                wanted: Scope::Read,
                granted: "write"
            })
        );
        assert_eq!(
            at("kw", Scope::Read).unwrap_err().to_string(),
            "this API key may not read: it grants write only"
        );
        assert_eq!(at("kr", Scope::Read).as_deref(), Ok("acme"));
        assert!(matches!(
            at("kr", Scope::Write),
            Err(AuthError::Forbidden { .. })
        ));
        assert_eq!(at("krw", Scope::Write).as_deref(), Ok("globex"));
        assert_eq!(at("kc", Scope::Write).as_deref(), Ok("cfg"));
        // Read again: a key gone, one new; a broken file keeps the keys in use.
        std::fs::write(&path, "knew acme read\n").unwrap();
        assert_eq!(ring.reload().unwrap(), Some(2));
        assert_eq!(at("kw", Scope::Write), Err(AuthError::Unauthenticated));
        assert_eq!(at("knew", Scope::Read).as_deref(), Ok("acme"));
        std::fs::write(&path, "knew acme\n").unwrap();
        assert!(ring.reload().is_err());
        assert_eq!(at("knew", Scope::Read).as_deref(), Ok("acme"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_are_named_without_the_key() {
        let inline = BTreeMap::from([("kc".to_string(), "cfg".to_string())]);
        for (text, says) in [
            (
                "secret1 acme",
                "line 1: expected 3 fields (key, tenant, scope), found 2",
            ),
            ("\nsecret1 Acme read", "line 2: tenant"),
            (
                "secret1 acme admin",
                "line 1: scope \"admin\": use read, write or read,write",
            ),
            (
                "secret1 acme read\nsecret1 b write",
                "line 2: this key is given twice",
            ),
            ("kc acme read", "line 1: this key is given twice"),
        ] {
            let err = Keys::with_file(&inline, "keys.txt", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.starts_with("API key file keys.txt, "), "{err}");
            assert!(!err.contains("secret1"), "the key is never shown: {err}");
        }
        let missing = KeyRing::new(&inline)
            .use_file(Path::new("/nonexistent/thermo-keys"))
            .unwrap_err();
        assert!(matches!(missing, KeyFileError::Read { .. }), "{missing}");
    }

    proptest! {
        /// Any file text either loads or is refused with a line error; no input panics. A key that
        /// loaded answers its tenant and scope; any other string is unknown.
        #[test]
        fn any_key_file_loads_or_is_refused(text in "[ -~\t\n]{0,200}", probe in "[ -~]{0,12}") {
            match Keys::with_file(&BTreeMap::new(), "f", &text) {
                Ok(keys) => {
                    let known = text
                        .lines()
                        .map(|l| l.split_whitespace().collect::<Vec<_>>())
                        .any(|f| !f.is_empty() && !f[0].starts_with('#') && f[0] == probe.trim());
                    let r = keys.authorize(Some(&probe), Scope::Read);
                    if !known && !keys.is_empty() {
                        prop_assert_eq!(r, Err(AuthError::Unauthenticated));
                    }
                }
                Err(e) => {
                    let is_line = matches!(e, KeyFileError::Line { .. });
                    prop_assert!(is_line, "{}", e);
                }
            }
        }
    }
}
