//! Configuration loading.
//!
//! Sources, later ones winning: the role's defaults (the struct's `Default`), the TOML file given
//! with `--config`, environment variables `THERMO_<ROLE>_<KEY>` (role upper-cased with `-` as `_`,
//! a nested key joined by `__` and kept as written, e.g. `THERMO_AGENT_GLOBAL_TAGS__host=web-1`),
//! and `--set key=value`
//! flags (nested keys joined by `.`). A value is read as a TOML value when it parses as one
//! (`8125`, `true`, `["a"]`), else as a string. Unknown keys are errors that name the key.

use serde::de::DeserializeOwned;
use std::path::Path;
use toml::{Table, Value};

/// A configuration that could not be loaded; the message names the file, variable or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn parse_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut Table, path: &[&str], value: Value) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(ConfigError::Invalid("empty key".into()));
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(ConfigError::Invalid(format!("{p} is not a table"))),
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Loads a role's configuration: defaults ← file ← `THERMO_<ROLE>_*` ← `sets` (`key=value`).
pub fn load<T: DeserializeOwned>(
    role: &str,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<T, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            text.parse::<Table>()
                .map_err(|e| ConfigError::Invalid(format!("{}: {}", path.display(), e.message())))?
        }
        None => Table::new(),
    };
    let prefix = format!("THERMO_{}_", role.to_uppercase().replace('-', "_"));
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    vars.sort();
    for (k, v) in vars {
        // The top-level key is lower-cased (`UDP_ADDR` → `udp_addr`); nested keys are map keys
        // (API keys, tag names) and keep their case.
        let mut parts = k[prefix.len()..].split("__");
        let top = parts.next().unwrap_or_default().to_lowercase();
        let path: Vec<&str> = std::iter::once(top.as_str()).chain(parts).collect();
        set_path(&mut table, &path, parse_value(&v))?;
    }
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::Invalid(format!("--set {s:?}: expected key=value")))?;
        let path: Vec<&str> = k.trim().split('.').collect();
        set_path(&mut table, &path, parse_value(v.trim()))?;
    }
    Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        port: u16,
        name: String,
        tags: BTreeMap<String, String>,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Self {
                port: 1,
                name: "d".into(),
                tags: BTreeMap::new(),
            }
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("thermo-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "port = 2\nname = \"file\"\n").unwrap();
        let env = vec![
            ("THERMO_READ_SERVICE_PORT".to_string(), "3".to_string()),
            (
                "THERMO_READ_SERVICE_TAGS__Host".to_string(),
                "web-1".to_string(),
            ),
            ("THERMO_AGENT_PORT".to_string(), "9".to_string()),
        ];
        let c: Cfg = load("read-service", Some(&f), env, &["name=flag".to_string()]).unwrap();
        assert_eq!(c.port, 3);
        assert_eq!(c.name, "flag");
        assert_eq!(c.tags.get("Host").map(String::as_str), Some("web-1"));
        let d: Cfg = load("x", None, vec![], &[]).unwrap();
        assert_eq!(d, Cfg::default());
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        let e = load::<Cfg>("x", None, vec![], &["prot=5".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown field `prot`"), "{e}");
        let e = load::<Cfg>("x", None, vec![], &["port=\"high\"".into()]).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = load::<Cfg>("x", Some(Path::new("/nonexistent/x.toml")), vec![], &[]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
    }
}
