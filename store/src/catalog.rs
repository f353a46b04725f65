//! The cold-storage catalog: which hours wait for a roll-up, which chunks have objects (and their
//! generations), which coarse chunks must be rebuilt, which hours may be trimmed from the hot
//! store, and the compactor's lease. Plus the object layout.
//!
//! The catalog lives next to the hot store, because a hot write must mark its hour pending in
//! the same atomic step as the cells: Redis keeps it in Redis keys ([`crate::redis_catalog`]),
//! the embedded store in its write-ahead file ([`crate::mem_catalog`]). The compactor and the
//! read service use only the [`Catalog`] trait.
//!
//! State machine of an hour: a hot write marks it *pending* (and bumps its write version) → the
//! compactor writes its 1m object, marks the chunk *cold* (generation + 1, `rolled_at` set once)
//! and its day *dirty* at 5m, then *finishes* the hour (pending → *trim*) only if its version did
//! not change meanwhile → once older than the hot retention it is *trimmed* from the hot store,
//! unless it is pending again. A dirty day is rebuilt when no hour inside it is pending, and marks
//! its week dirty at 1h. Every step is marked before the previous mark is cleared, so a reader
//! that reads pending → dirty(5m) → dirty(1h) → cold sees a chunk in at least one state.
//!
//! Object keys: `<prefix>/tenant=<tenant>/res=<1m|5m|1h>/start=<chunk start>.parquet` (Hive-style,
//! so DuckDB's `hive_partitioning` reads tenant and resolution as columns). Keys are deterministic:
//! a repeated roll-up rewrites the same object.

use crate::hot::HotStore;
use crate::StoreError;
use std::collections::BTreeMap;
use std::future::Future;
use thermo_core::window::Resolution;

/// Catalog operations. Every one is atomic on its own.
pub trait Catalog: Send + Sync + 'static {
    /// The hot store this catalog belongs to.
    type Hot: HotStore;

    fn hot(&self) -> &Self::Hot;

    /// Takes (or renews) the compactor lease for `ttl_ms`; true if `owner` holds it.
    fn lease(
        &self,
        owner: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if `owner` holds it (shutdown).
    fn release(&self, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every tenant that wrote, sorted.
    fn tenants(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Hours at or before `until` waiting for a roll-up, with their write versions, ascending.
    fn pending_hours(
        &self,
        until: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String)>, StoreError>> + Send;

    /// Whether any hour in `[from, to)` is waiting for a roll-up.
    fn any_pending(
        &self,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Moves `hour` from pending to trimmable if no write came in since `version` was read.
    fn finish_hour(
        &self,
        hour: i64,
        version: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Hours rolled up and still in the hot store, at or before `until`.
    fn trimmable_hours(
        &self,
        until: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Deletes every hot cell of `hour`, unless the hour is pending again (new cells arrived).
    fn trim_hour(&self, hour: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Chunks of `res` that have an object, with their generations.
    fn cold_chunks(
        &self,
        res: Resolution,
    ) -> impl Future<Output = Result<BTreeMap<i64, u64>, StoreError>> + Send;

    /// Records that chunk `chunk` of `res` has a (new) object: its generation goes up by one; for
    /// 1m, the hour's `rolled_at` is set to now unless it was set before.
    fn mark_cold(
        &self,
        res: Resolution,
        chunk: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets chunk `chunk` of `res` (its objects were deleted by retention).
    fn unmark_cold(
        &self,
        res: Resolution,
        chunk: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Asks for chunk `chunk` of `res` to be (re)built, with a new sequence number.
    fn mark_dirty(
        &self,
        res: Resolution,
        chunk: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Dirty chunks of `res` with their sequence numbers.
    fn dirty(
        &self,
        res: Resolution,
    ) -> impl Future<Output = Result<Vec<(i64, f64)>, StoreError>> + Send;

    /// Clears a dirty mark if it was not renewed since `seq` was read.
    fn clear_dirty(
        &self,
        res: Resolution,
        chunk: i64,
        seq: f64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The object key of `tenant`'s chunk `chunk` at resolution `res`.
pub fn object_key(prefix: &str, tenant: &str, res: Resolution, chunk: i64) -> String {
    let prefix = prefix.trim_matches('/');
    let body = format!("tenant={tenant}/res={}/start={chunk}.parquet", res.as_str());
    if prefix.is_empty() {
        body
    } else {
        format!("{prefix}/{body}")
    }
}

/// Parses `(tenant, resolution, chunk)` back from an object key.
pub fn parse_object_key(key: &str) -> Option<(String, Resolution, i64)> {
    let mut parts = key.rsplit('/');
    let start = parts
        .next()?
        .strip_prefix("start=")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()?;
    let res = Resolution::parse(parts.next()?.strip_prefix("res=")?)?;
    let tenant = parts.next()?.strip_prefix("tenant=")?.to_string();
    Some((tenant, res, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip() {
        let k = object_key("cold/v1/", "acme", Resolution::FiveMinutes, 86_400);
        assert_eq!(k, "cold/v1/tenant=acme/res=5m/start=86400.parquet");
        assert_eq!(
            parse_object_key(&k),
            Some(("acme".into(), Resolution::FiveMinutes, 86_400))
        );
        assert_eq!(
            object_key("", "t", Resolution::OneHour, 0),
            "tenant=t/res=1h/start=0.parquet"
        );
        assert_eq!(parse_object_key("x/y.parquet"), None);
    }
}
