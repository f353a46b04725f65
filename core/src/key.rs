//! Canonical metric keys.
//!
//! A series is a tenant, a metric name and a set of tags. Its canonical encoding, the *metric key*,
//! is
//!
//! ```text
//! tenant/name{k1=v1,k2=v2}      tags sorted by key, then value; `{}` when there are none
//! ```
//!
//! The metric key is the Kafka message key and the base of every Redis key. Invariants, enforced by
//! [`MetricKey::new`] and checked again by [`MetricKey::parse`]:
//! - tenant: 1..=[`MAX_TENANT_LEN`] of `[a-z0-9_-]`;
//! - name: 1..=[`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`, starting with a letter or `_`;
//! - tag keys: 1..=[`MAX_TAG_KEY_LEN`] of `[A-Za-z0-9_.-]`; tag values: 0..=[`MAX_TAG_VALUE_LEN`] of
//!   printable ASCII except `,` `=` `{` `}` `|` `#` and space;
//! - at most [`MAX_TAGS`] tags, keys unique (a duplicate key is an error, not a silent overwrite).
//!
//! Because none of the separators can occur inside a part, the encoding is unambiguous and
//! `parse(encode(k)) == k`.

use std::fmt;

/// Longest tenant id.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest metric name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest tag key.
pub const MAX_TAG_KEY_LEN: usize = 100;
/// Longest tag value.
pub const MAX_TAG_VALUE_LEN: usize = 200;
/// Most tags on one series.
pub const MAX_TAGS: usize = 32;

/// Why a key part was refused. `field` names the part (`name`, `tenant`, `tags.route`), `problem`
/// says what is wrong and which limit applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct KeyError {
    pub field: String,
    pub problem: String,
}

impl KeyError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A validated series identity with tags in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    tenant: String,
    name: String,
    tags: Vec<(String, String)>,
}

fn is_tenant_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'
}

fn is_tag_value_char(c: u8) -> bool {
    c.is_ascii_graphic() && !matches!(c, b',' | b'=' | b'{' | b'}' | b'|' | b'#')
}

/// Checks a tenant id.
pub fn validate_tenant(tenant: &str) -> Result<(), KeyError> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
        return Err(KeyError::new(
            "tenant",
            format!("must be 1 to {MAX_TENANT_LEN} characters"),
        ));
    }
    if !tenant.bytes().all(is_tenant_char) {
        return Err(KeyError::new("tenant", "allowed characters are [a-z0-9_-]"));
    }
    Ok(())
}

/// Checks a metric name.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(KeyError::new(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters, got {}", name.len()),
        ));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err(KeyError::new("name", "must start with a letter or '_'"));
    }
    if !name.bytes().all(is_name_char) {
        return Err(KeyError::new(
            "name",
            "allowed characters are [A-Za-z0-9_.-]",
        ));
    }
    Ok(())
}

/// Checks one tag.
pub fn validate_tag(key: &str, value: &str) -> Result<(), KeyError> {
    if key.is_empty() || key.len() > MAX_TAG_KEY_LEN {
        return Err(KeyError::new(
            format!("tags.{}", truncate(key)),
            format!("tag key must be 1 to {MAX_TAG_KEY_LEN} characters"),
        ));
    }
    if !key.bytes().all(is_name_char) {
        return Err(KeyError::new(
            format!("tags.{}", truncate(key)),
            "tag key allowed characters are [A-Za-z0-9_.-]",
        ));
    }
    if value.len() > MAX_TAG_VALUE_LEN {
        return Err(KeyError::new(
            format!("tags.{key}"),
            format!("tag value must be at most {MAX_TAG_VALUE_LEN} characters"),
        ));
    }
    if !value.bytes().all(is_tag_value_char) {
        return Err(KeyError::new(
            format!("tags.{key}"),
            "tag value must be printable ASCII without , = { } | # or space",
        ));
    }
    Ok(())
}

/// `name` in the characters of a metric name or tag key: every character outside
/// `[A-Za-z0-9_.-]` becomes `_`, and `_` is put first when it starts with neither a letter nor `_`
/// (for senders whose names allow more, like OpenTelemetry's `/` or Prometheus's `:`). The length
/// is not changed: one too long is still refused by [`MetricKey::new`].
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii() && is_name_char(c as u8) {
            c
        } else {
            '_'
        }
    }));
    out
}

/// `value` in the characters of a tag value: every character outside printable ASCII, or among
/// `, = { } | #` and space, becomes `_`.
pub fn sanitize_tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii() && is_tag_value_char(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl MetricKey {
    /// Validates and canonicalises (sorts tags).
    pub fn new(
        tenant: impl Into<String>,
        name: impl Into<String>,
        mut tags: Vec<(String, String)>,
    ) -> Result<Self, KeyError> {
        let tenant = tenant.into();
        let name = name.into();
        validate_tenant(&tenant)?;
        validate_name(&name)?;
        if tags.len() > MAX_TAGS {
            return Err(KeyError::new(
                "tags",
                format!("at most {MAX_TAGS} tags, got {}", tags.len()),
            ));
        }
        for (k, v) in &tags {
            validate_tag(k, v)?;
        }
        tags.sort();
        for pair in tags.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(KeyError::new(
                    format!("tags.{}", pair[0].0),
                    "tag key appears twice",
                ));
            }
        }
        Ok(Self { tenant, name, tags })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tags(&self) -> &[(String, String)] {
        &self.tags
    }

    /// Value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The canonical encoding, see the module docs.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parses a canonical encoding.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (tenant, rest) = s
            .split_once('/')
            .ok_or_else(|| KeyError::new("key", "missing '/' after tenant"))?;
        let open = rest
            .find('{')
            .ok_or_else(|| KeyError::new("key", "missing '{'"))?;
        let name = &rest[..open];
        let body = rest[open + 1..]
            .strip_suffix('}')
            .ok_or_else(|| KeyError::new("key", "missing closing '}'"))?;
        let mut tags = Vec::new();
        if !body.is_empty() {
            for part in body.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| KeyError::new("key", "tag without '='"))?;
                tags.push((k.to_string(), v.to_string()));
            }
        }
        Self::new(tenant, name, tags)
    }
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{{", self.tenant, self.name)?;
        for (i, (k, v)) in self.tags.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn foreign_names_and_values_are_made_valid() {
        assert_eq!(
            sanitize_name("http.server.duration"),
            "http.server.duration"
        );
        assert_eq!(sanitize_name("job:requests:rate5m"), "job_requests_rate5m");
        assert_eq!(sanitize_name("9lives/s"), "_9lives_s");
        assert_eq!(sanitize_name("ünï"), "__n_");
        assert_eq!(sanitize_name(""), "_");
        assert_eq!(sanitize_tag_value("GET /a b,c=d|#{}"), "GET_/a_b_c_d____");
        assert_eq!(sanitize_tag_value("wörd"), "w_rd");
    }

    proptest! {
        /// Whatever a sender names things, the sanitized name and tag make a valid key as long
        /// as they are within the length limits.
        #[test]
        fn sanitized_parts_always_validate(name in "\\PC{0,60}", key in "\\PC{0,60}", value in "\\PC{0,60}") {
            let (name, key, value) = (sanitize_name(&name), sanitize_name(&key), sanitize_tag_value(&value));
            if name.len() <= MAX_NAME_LEN && key.len() <= MAX_TAG_KEY_LEN && value.len() <= MAX_TAG_VALUE_LEN {
                prop_assert!(MetricKey::new("t", name, vec![(key, value)]).is_ok());
            }
        }
    }

    #[test]
    fn tags_are_sorted_and_round_trip() {
        let k = MetricKey::new("acme", "http.req", vec![t("z", "1"), t("a", "2")]).unwrap();
        assert_eq!(k.encode(), "acme/http.req{a=2,z=1}");
        assert_eq!(MetricKey::parse(&k.encode()).unwrap(), k);
        let bare = MetricKey::new("acme", "up", vec![]).unwrap();
        assert_eq!(bare.encode(), "acme/up{}");
        assert_eq!(MetricKey::parse("acme/up{}").unwrap(), bare);
    }

    #[test]
    fn limits_name_the_field() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let e = MetricKey::new("acme", long, vec![]).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.problem.contains("200"), "{e}");
        let e = MetricKey::new("acme", "x", vec![t("route", "a b")]).unwrap_err();
        assert_eq!(e.field, "tags.route");
        let tags = (0..=MAX_TAGS).map(|i| t(&format!("k{i}"), "v")).collect();
        let e = MetricKey::new("acme", "x", tags).unwrap_err();
        assert_eq!(e.field, "tags");
        let e = MetricKey::new("acme", "x", vec![t("a", "1"), t("a", "2")]).unwrap_err();
        assert_eq!(e.problem, "tag key appears twice");
        let e = MetricKey::new("Acme", "x", vec![]).unwrap_err();
        assert_eq!(e.field, "tenant");
        let e = MetricKey::new("acme", "1x", vec![]).unwrap_err();
        assert_eq!(e.field, "name");
    }
}
