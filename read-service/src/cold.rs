//! The read side of cold storage: a snapshot of the catalog ([`ColdView`]) and object reads through
//! the cache ([`ColdReader`]).

use crate::cache::{ColdCache, DecodedObject};
use prometheus::IntCounter;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use thermo_core::window::Resolution;
use thermo_store::catalog::{object_key, Catalog};
use thermo_store::cold::ColdStore;
use thermo_store::cold_format::decode;
use thermo_store::StoreError;

/// What the catalog said when a query started: which chunks have objects (with their
/// generations), which coarse chunks are dirty, which hours have hot cells not yet rolled up.
///
/// The default (empty) view means "no cold storage": every hour is read from Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColdView {
    /// Chunk start → generation, per resolution.
    pub cold: BTreeMap<Resolution, BTreeMap<i64, u64>>,
    /// Chunks of 5m / 1h to be rebuilt (their objects, if any, are stale).
    pub dirty: BTreeMap<Resolution, BTreeSet<i64>>,
    /// Hour starts with hot cells that are not in a 1m object yet (`thermo:pending`).
    pub pending: BTreeSet<i64>,
}

fn is_empty_in<T>(set: Option<&BTreeSet<T>>, from: T, to: T) -> bool
where
    T: Ord,
{
    set.is_none_or(|s| s.range(from..to).next().is_none())
}

impl ColdView {
    /// The generation of the object of chunk `chunk` of `res`, if it has one.
    pub fn generation(&self, res: Resolution, chunk: i64) -> Option<u64> {
        self.cold.get(&res)?.get(&chunk).copied()
    }

    /// The generation of the 5m / 1h object of `chunk` if that object is complete: it exists, it
    /// is not dirty, no finer coarse chunk inside it is dirty, and no hour inside it has hot cells
    /// that are not rolled up (a late minute). Otherwise the chunk must be computed from finer data.
    pub fn usable(&self, res: Resolution, chunk: i64) -> Option<u64> {
        let generation = self.generation(res, chunk)?;
        let end = chunk + res.chunk_seconds();
        let mut level = Some(res);
        while let Some(r) = level.filter(|r| *r != Resolution::OneMinute) {
            if !is_empty_in(self.dirty.get(&r), chunk, end) {
                return None;
            }
            level = r.finer();
        }
        is_empty_in(Some(&self.pending), chunk, end).then_some(generation)
    }

    /// Reads the parts of the catalog a query at resolution `res` ending before `until` needs.
    ///
    /// Order matters, because the compactor moves a chunk along `pending` → `dirty(5m)` →
    /// `dirty(1h)` → clean, marking the next state before it clears the previous one: reading the
    /// states in the same order, a chunk is always seen in at least one of them while its coarse
    /// objects are stale.
    pub async fn load<K: Catalog>(
        catalog: &K,
        res: Resolution,
        until: i64,
    ) -> Result<Self, StoreError> {
        let mut v = ColdView {
            pending: catalog
                .pending_hours(until)
                .await?
                .into_iter()
                .map(|(h, _)| h)
                .collect(),
            ..Self::default()
        };
        let levels: Vec<Resolution> = Resolution::ALL.into_iter().filter(|r| *r <= res).collect();
        for r in levels.iter().filter(|r| r.finer().is_some()) {
            let dirty = catalog.dirty(*r).await?;
            v.dirty
                .insert(*r, dirty.into_iter().map(|(c, _)| c).collect());
        }
        for r in levels {
            v.cold.insert(r, catalog.cold_chunks(r).await?);
        }
        Ok(v)
    }
}

/// Reads cold objects through the cache.
pub struct ColdReader<C> {
    store: C,
    prefix: String,
    cache: ColdCache,
    corrupt: IntCounter,
}

impl<C: ColdStore> ColdReader<C> {
    /// `corrupt` counts objects that could not be decoded (they are skipped).
    pub fn new(store: C, prefix: &str, cache: ColdCache, corrupt: IntCounter) -> Self {
        Self {
            store,
            prefix: prefix.to_string(),
            cache,
            corrupt,
        }
    }

    pub fn cache(&self) -> &ColdCache {
        &self.cache
    }

    /// The decoded object of `tenant`'s chunk `chunk` of `res` at `generation`. `None` if the
    /// object is missing (deleted by retention after the catalog was read) or corrupt; both are
    /// logged, a corrupt one is counted.
    pub async fn object(
        &self,
        tenant: &str,
        res: Resolution,
        chunk: i64,
        generation: u64,
    ) -> Result<Option<Arc<DecodedObject>>, StoreError> {
        let key = object_key(&self.prefix, tenant, res, chunk);
        if let Some(o) = self.cache.get(&key, generation) {
            return Ok(Some(o));
        }
        let Some(bytes) = self.store.get(&key).await? else {
            // The catalog lists chunks, not tenants: a tenant with no data in a chunk has no
            // object there. Remember the absence (as an empty object) so it costs one GET.
            tracing::debug!(%key, "no cold object for this tenant and chunk");
            let empty = Arc::new(DecodedObject::new(Vec::new()));
            self.cache
                .insert(&key, generation, empty.clone(), key.len() as u64);
            return Ok(Some(empty));
        };
        let size = bytes.len() as u64;
        let decoded = tokio::task::spawn_blocking(move || decode(bytes).map(DecodedObject::new))
            .await
            .map_err(|e| StoreError::Invalid(format!("decoding {key}: {e}")))?;
        match decoded {
            Ok(o) => {
                let o = Arc::new(o);
                self.cache.insert(&key, generation, o.clone(), size);
                Ok(Some(o))
            }
            Err(e) => {
                self.corrupt.inc();
                tracing::warn!(%key, "skipped cold object: {e}");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const WEEK: i64 = 604_800;

    #[test]
    fn coarse_objects_are_used_only_when_complete() {
        let mut v = ColdView::default();
        v.cold.insert(Resolution::FiveMinutes, [(DAY, 3)].into());
        v.cold.insert(Resolution::OneHour, [(WEEK, 1)].into());
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), Some(3));
        assert_eq!(v.usable(Resolution::FiveMinutes, 2 * DAY), None);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), Some(1));
        // A late minute in the day: its hour is pending again.
        v.pending.insert(DAY + 5 * 3600);
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), None);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), Some(1)); // not in that week
        v.pending.insert(WEEK + 3600);
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
        v.pending.clear();
        // A day of the week being rebuilt makes the week's 1h object stale.
        v.dirty
            .insert(Resolution::FiveMinutes, [WEEK + 2 * DAY].into());
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
        assert_eq!(v.usable(Resolution::FiveMinutes, DAY), Some(3));
        v.dirty.clear();
        v.dirty.insert(Resolution::OneHour, [WEEK].into());
        assert_eq!(v.usable(Resolution::OneHour, WEEK), None);
    }
}
