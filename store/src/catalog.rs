//! The cold-storage catalog in Redis: what is rolled up, what must be (re)built, and the object
//! layout.
//!
//! | key | type | content |
//! |---|---|---|
//! | `thermo:pending` | sorted set | hours with hot cells not yet in a 1m object (written by every hot write) |
//! | `thermo:hv` | hash | hour → write version; a roll-up clears `pending` only if the version it read is still current |
//! | `thermo:cold:<res>` | sorted set | member chunk start, score = generation (bumped at every rewrite); a chunk listed here has an object |
//! | `thermo:dirty:<res>` | sorted set | 5m/1h chunks to (re)build from finer objects; score = a sequence number, so a clear cannot lose a newer mark |
//! | `thermo:rolled_at` | hash | hour → when it was first rolled up (records produced after that, for hours older than `late_grace_secs`, are late) |
//! | `thermo:trim` | sorted set | hours rolled up but still in Redis; trimmed once older than the hot retention |
//! | `thermo:cold:lock` | string | compactor lease (`SET NX PX`): one compactor at a time |
//!
//! Object keys: `<prefix>/tenant=<tenant>/res=<1m|5m|1h>/start=<chunk start>.parquet` (Hive-style,
//! so DuckDB's `hive_partitioning` reads tenant and resolution as columns). Keys are deterministic:
//! a repeated roll-up rewrites the same object.

use crate::redis_hot::RedisHot;
use crate::StoreError;
use redis::Script;
use std::collections::BTreeMap;
use thermo_core::window::Resolution;

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

const FINISH_HOUR: &str = r#"
local v = redis.call('HGET', 'thermo:hv', ARGV[1])
if (v or '0') ~= ARGV[2] then return 0 end
redis.call('ZREM', 'thermo:pending', ARGV[1])
redis.call('HDEL', 'thermo:hv', ARGV[1])
redis.call('ZADD', 'thermo:trim', ARGV[1], ARGV[1])
return 1
"#;

const TRIM_HOUR: &str = r#"
if redis.call('ZSCORE', 'thermo:pending', ARGV[1]) then return 0 end
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('ZREM', 'thermo:trim', ARGV[1])
return 1
"#;

const CLEAR_DIRTY: &str = r#"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
"#;

/// Catalog operations on the hot store's Redis.
#[derive(Clone)]
pub struct Catalog {
    hot: RedisHot,
}

fn zset_pairs(v: Vec<(String, f64)>) -> Vec<(i64, f64)> {
    v.into_iter()
        .filter_map(|(m, s)| m.parse().ok().map(|m| (m, s)))
        .collect()
}

impl Catalog {
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    pub fn hot(&self) -> &RedisHot {
        &self.hot
    }

    /// Takes the compactor lease for `ttl_ms`; true if this caller holds it.
    pub async fn lease(&self, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let got: Option<String> = redis::cmd("SET")
            .arg("thermo:cold:lock")
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await?;
        if got.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg("thermo:cold:lock")
            .query_async(&mut c)
            .await?;
        if holder.as_deref() == Some(owner) {
            let _: () = redis::cmd("PEXPIRE")
                .arg("thermo:cold:lock")
                .arg(ttl_ms)
                .query_async(&mut c)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives the compactor lease up if `owner` holds it (shutdown).
    pub async fn release(&self, owner: &str) -> Result<(), StoreError> {
        let mut c = self.hot.connection();
        let _: i64 = Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key("thermo:cold:lock")
        .arg(owner)
        .invoke_async(&mut c)
        .await?;
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.hot.connection();
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg("thermo:tenants")
            .query_async(&mut c)
            .await?;
        t.sort();
        Ok(t)
    }

    /// Hours at or before `until` waiting for a roll-up, with their write versions.
    pub async fn pending_hours(&self, until: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let mut c = self.hot.connection();
        let hours: Vec<i64> = redis::cmd("ZRANGEBYSCORE")
            .arg("thermo:pending")
            .arg("-inf")
            .arg(until)
            .query_async(&mut c)
            .await?;
        let mut out = Vec::with_capacity(hours.len());
        for h in hours {
            let v: Option<String> = redis::cmd("HGET")
                .arg("thermo:hv")
                .arg(h)
                .query_async(&mut c)
                .await?;
            out.push((h, v.unwrap_or_else(|| "0".into())));
        }
        Ok(out)
    }

    /// Whether any hour in `[from, to)` is waiting for a roll-up.
    pub async fn any_pending(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let n: i64 = redis::cmd("ZCOUNT")
            .arg("thermo:pending")
            .arg(from)
            .arg(format!("({to}"))
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    /// Marks hour `hour` rolled up if no write came in since `version` was read.
    pub async fn finish_hour(&self, hour: i64, version: &str) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let done: i64 = Script::new(FINISH_HOUR)
            .arg(hour)
            .arg(version)
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }

    /// Hours rolled up and still in Redis, at or before `until`.
    pub async fn trimmable_hours(&self, until: i64) -> Result<Vec<i64>, StoreError> {
        let mut c = self.hot.connection();
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg("thermo:trim")
            .arg("-inf")
            .arg(until)
            .query_async(&mut c)
            .await?)
    }

    /// Every Redis data key of `hour` (a SCAN; the compactor runs it once per hour trimmed).
    pub async fn hour_keys(&self, hour: i64) -> Result<Vec<String>, StoreError> {
        let mut c = self.hot.connection();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("thermo:d:*:{hour}"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deletes `keys` (an hour's data keys), unless new cells arrived in that hour (pending again).
    pub async fn trim_keys(&self, hour: i64, keys: &[String]) -> Result<bool, StoreError> {
        let script = Script::new(TRIM_HOUR);
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(hour);
        let mut c = self.hot.connection();
        let done: i64 = inv.invoke_async(&mut c).await?;
        Ok(done == 1)
    }

    /// Chunks of `res` that have an object, with their generations.
    pub async fn cold_chunks(&self, res: Resolution) -> Result<BTreeMap<i64, u64>, StoreError> {
        let mut c = self.hot.connection();
        let v: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("thermo:cold:{}", res.as_str()))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        Ok(zset_pairs(v)
            .into_iter()
            .map(|(k, g)| (k, g as u64))
            .collect())
    }

    /// Records that chunk `chunk` of `res` has a (new) object.
    pub async fn mark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        let mut c = self.hot.connection();
        if res == Resolution::OneMinute {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let _: i64 = redis::cmd("HSETNX")
                .arg("thermo:rolled_at")
                .arg(chunk)
                .arg(now)
                .query_async(&mut c)
                .await?;
        }
        let _: f64 = redis::cmd("ZINCRBY")
            .arg(format!("thermo:cold:{}", res.as_str()))
            .arg(1)
            .arg(chunk)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Forgets chunk `chunk` of `res` (its object was deleted by retention).
    pub async fn unmark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        let mut c = self.hot.connection();
        let _: i64 = redis::cmd("ZREM")
            .arg(format!("thermo:cold:{}", res.as_str()))
            .arg(chunk)
            .query_async(&mut c)
            .await?;
        if res == Resolution::OneMinute {
            let _: i64 = redis::cmd("HDEL")
                .arg("thermo:rolled_at")
                .arg(chunk)
                .query_async(&mut c)
                .await?;
        }
        Ok(())
    }

    /// Asks for chunk `chunk` of `res` to be (re)built.
    pub async fn mark_dirty(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        let mut c = self.hot.connection();
        let seq: i64 = redis::cmd("INCR")
            .arg("thermo:dirtyseq")
            .query_async(&mut c)
            .await?;
        let _: i64 = redis::cmd("ZADD")
            .arg(format!("thermo:dirty:{}", res.as_str()))
            .arg(seq)
            .arg(chunk)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Dirty chunks of `res` with their sequence numbers.
    pub async fn dirty(&self, res: Resolution) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut c = self.hot.connection();
        let v: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("thermo:dirty:{}", res.as_str()))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        Ok(zset_pairs(v))
    }

    /// Clears a dirty mark if it was not renewed since `seq` was read.
    pub async fn clear_dirty(
        &self,
        res: Resolution,
        chunk: i64,
        seq: f64,
    ) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let done: i64 = Script::new(CLEAR_DIRTY)
            .key(format!("thermo:dirty:{}", res.as_str()))
            .arg(chunk)
            .arg(seq)
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }
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
