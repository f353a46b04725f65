//! API-key authentication shared by the partitioner and the read service.
//!
//! `Authorization: Bearer <key>` selects the tenant from a key → tenant map. With no keys
//! configured, authentication is off and every request belongs to tenant `default`.

use axum::http::{header, HeaderMap};
use std::collections::BTreeMap;

/// The tenant of a request, or `None` when keys are configured and the request has no known key.
pub fn tenant(api_keys: &BTreeMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if api_keys.is_empty() {
        return Some("default".to_string());
    }
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    api_keys.get(key.trim()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_select_tenants() {
        let mut keys = BTreeMap::new();
        assert_eq!(tenant(&keys, &HeaderMap::new()).as_deref(), Some("default"));
        keys.insert("k1".to_string(), "acme".to_string());
        let mut h = HeaderMap::new();
        assert_eq!(tenant(&keys, &h), None);
        h.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(tenant(&keys, &h).as_deref(), Some("acme"));
        h.insert(header::AUTHORIZATION, "Bearer k2".parse().unwrap());
        assert_eq!(tenant(&keys, &h), None);
    }
}
