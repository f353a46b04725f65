//! The cold-storage catalog in Redis (see [`crate::catalog`] for the state machine).
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

use crate::catalog::Catalog;
use crate::redis_hot::RedisHot;
use crate::StoreError;
use redis::Script;
use std::collections::BTreeMap;
use thermo_core::window::Resolution;

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

/// The catalog in the hot store's Redis.
#[derive(Clone)]
pub struct RedisCatalog {
    hot: RedisHot,
}

fn zset_pairs(v: Vec<(String, f64)>) -> Vec<(i64, f64)> {
    v.into_iter()
        .filter_map(|(m, s)| m.parse().ok().map(|m| (m, s)))
        .collect()
}

impl RedisCatalog {
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    /// Every Redis data key of `hour` (a SCAN; the compactor runs it once per hour trimmed).
    async fn hour_keys(&self, hour: i64) -> Result<Vec<String>, StoreError> {
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
    async fn trim_keys(&self, hour: i64, keys: &[String]) -> Result<bool, StoreError> {
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
}

impl Catalog for RedisCatalog {
    type Hot = RedisHot;

    fn hot(&self) -> &RedisHot {
        &self.hot
    }

    async fn lease(&self, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
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

    async fn release(&self, owner: &str) -> Result<(), StoreError> {
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

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.hot.connection();
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg("thermo:tenants")
            .query_async(&mut c)
            .await?;
        t.sort();
        Ok(t)
    }

    async fn pending_hours(&self, until: i64) -> Result<Vec<(i64, String)>, StoreError> {
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

    async fn any_pending(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let n: i64 = redis::cmd("ZCOUNT")
            .arg("thermo:pending")
            .arg(from)
            .arg(format!("({to}"))
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    async fn finish_hour(&self, hour: i64, version: &str) -> Result<bool, StoreError> {
        let mut c = self.hot.connection();
        let done: i64 = Script::new(FINISH_HOUR)
            .arg(hour)
            .arg(version)
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }

    async fn trimmable_hours(&self, until: i64) -> Result<Vec<i64>, StoreError> {
        let mut c = self.hot.connection();
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg("thermo:trim")
            .arg("-inf")
            .arg(until)
            .query_async(&mut c)
            .await?)
    }

    async fn trim_hour(&self, hour: i64) -> Result<bool, StoreError> {
        let keys = self.hour_keys(hour).await?;
        self.trim_keys(hour, &keys).await
    }

    async fn cold_chunks(&self, res: Resolution) -> Result<BTreeMap<i64, u64>, StoreError> {
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

    async fn mark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
        let mut c = self.hot.connection();
        if res == Resolution::OneMinute {
            let now = thermo_core::window::now_s();
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

    async fn unmark_cold(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
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

    async fn mark_dirty(&self, res: Resolution, chunk: i64) -> Result<(), StoreError> {
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

    async fn dirty(&self, res: Resolution) -> Result<Vec<(i64, f64)>, StoreError> {
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

    async fn clear_dirty(&self, res: Resolution, chunk: i64, seq: f64) -> Result<bool, StoreError> {
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
