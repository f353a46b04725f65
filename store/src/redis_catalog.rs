//! The cold-storage catalog in Redis (see [`crate::catalog`] for the state machine).
//!
//! The keys a hot write touches are its partition's (hash tag `{p<P>}`, see `redis_hot.rs`); the
//! others are single keys, each changed by one command or one script of its own, so the catalog
//! works on a Redis Cluster too:
//!
//! | key | type | content |
//! |---|---|---|
//! | `thermo:{p<P>}:pending` | sorted set | hours with hot cells of partition `P` not yet in a 1m object (written by every hot write); an hour is pending while any partition lists it |
//! | `thermo:{p<P>}:hv` | hash | hour → the partition's write version; a roll-up clears a partition's `pending` only if the version it read is still current |
//! | `thermo:cold:<res>` | sorted set | member chunk start, score = generation (bumped at every rewrite); a chunk listed here has an object |
//! | `thermo:dirty:<res>` | sorted set | 5m/1h chunks to (re)build from finer objects; score = a sequence number (`thermo:dirtyseq`), so a clear cannot lose a newer mark |
//! | `thermo:rolled_at` | hash | hour → when it was first rolled up (records produced after that, for hours older than `late_grace_secs`, are late) |
//! | `thermo:trim` | sorted set | hours rolled up in every partition but still in Redis; trimmed once older than the hot retention |
//! | `thermo:cold:lock` | string | compactor lease (`SET NX PX`): one compactor at a time |
//!
//! An hour's write version, as [`Catalog::pending_hours`] gives it, is the list of its pending
//! partitions with theirs: `<P>=<version>,...`.

use crate::catalog::Catalog;
use crate::redis_hot::{data_key, pending_key, versions_key, RedisHot};
use crate::StoreError;
use redis::Script;
use std::collections::BTreeMap;
use thermo_core::window::Resolution;

const FINISH_HOUR: &str = r#"#!lua
-- KEYS: the partition's hour versions, pending hours. ARGV: hour, version read.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if (v or '0') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

const TRIM_HOUR: &str = r#"#!lua
-- KEYS: the partition's pending hours, then data keys of the hour. ARGV: hour.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"#;

const CLEAR_DIRTY: &str = r#"#!lua
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
"#;

/// Data keys deleted by one trim script.
const TRIM_CHUNK: usize = 1000;

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

    /// Deletes partition `p`'s cells of `hour`, unless new cells of the partition arrived in that
    /// hour (it is pending again). The keys come from the partition's series index: every series
    /// with a cell in `hour` is listed with a score at or after it.
    async fn trim_partition(&self, p: i32, hour: i64) -> Result<bool, StoreError> {
        let series = self.hot.partition_series(p, hour).await?;
        let keys: Vec<String> = series.iter().map(|k| data_key(p, k, hour)).collect();
        let script = Script::new(TRIM_HOUR);
        for chunk in keys.chunks(TRIM_CHUNK) {
            let mut inv = script.prepare_invoke();
            inv.key(pending_key(p));
            for k in chunk {
                inv.key(k);
            }
            inv.arg(hour);
            let mut c = self.hot.connection();
            let done: i64 = inv.invoke_async(&mut c).await?;
            if done == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// `<P>=<version>,...` back into pairs.
fn parse_versions(version: &str) -> Result<Vec<(i32, String)>, StoreError> {
    version
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|pv| {
            pv.split_once('=')
                .and_then(|(p, v)| Some((p.parse().ok()?, v.to_string())))
                .ok_or_else(|| StoreError::Corrupt {
                    what: "hour version",
                    detail: version.to_string(),
                })
        })
        .collect()
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
            "#!lua\nif redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key("thermo:cold:lock")
        .arg(owner)
        .invoke_async(&mut c)
        .await?;
        Ok(())
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.hot.tenants().await
    }

    async fn pending_hours(&self, until: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let hours: Vec<Vec<i64>> = self
            .hot
            .on_every_partition(|p| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(pending_key(p))
                    .arg("-inf")
                    .arg(until)
                    .clone()
            })
            .await?;
        let pending: Vec<(i32, i64)> = (0..)
            .zip(hours)
            .flat_map(|(p, hours)| hours.into_iter().map(move |h| (p, h)))
            .collect();
        let cmds = pending
            .iter()
            .map(|(p, h)| (*p, redis::cmd("HGET").arg(versions_key(*p)).arg(h).clone()))
            .collect();
        let versions: Vec<Option<String>> = self.hot.connection().grouped(cmds).await?;
        let mut by_hour: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for ((p, h), v) in pending.into_iter().zip(versions) {
            let v = v.unwrap_or_else(|| "0".into());
            by_hour.entry(h).or_default().push(format!("{p}={v}"));
        }
        Ok(by_hour
            .into_iter()
            .map(|(h, versions)| (h, versions.join(",")))
            .collect())
    }

    async fn any_pending(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        let counts: Vec<i64> = self
            .hot
            .on_every_partition(|p| {
                redis::cmd("ZCOUNT")
                    .arg(pending_key(p))
                    .arg(from)
                    .arg(format!("({to}"))
                    .clone()
            })
            .await?;
        Ok(counts.iter().any(|n| *n > 0))
    }

    /// Clears each partition whose version did not change; the hour becomes trimmable once no
    /// partition has it pending.
    async fn finish_hour(&self, hour: i64, version: &str) -> Result<bool, StoreError> {
        let script = Script::new(FINISH_HOUR);
        let mut c = self.hot.connection();
        let mut all = true;
        for (p, v) in parse_versions(version)? {
            let done: i64 = script
                .key(versions_key(p))
                .key(pending_key(p))
                .arg(hour)
                .arg(v)
                .invoke_async(&mut c)
                .await?;
            all &= done == 1;
        }
        if all {
            let _: i64 = redis::cmd("ZADD")
                .arg("thermo:trim")
                .arg(hour)
                .arg(hour)
                .query_async(&mut c)
                .await?;
        }
        Ok(all)
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
        let mut all = true;
        for p in self.hot.all_partitions().await? {
            all &= self.trim_partition(p, hour).await?;
        }
        if all {
            let mut c = self.hot.connection();
            let _: i64 = redis::cmd("ZREM")
                .arg("thermo:trim")
                .arg(hour)
                .query_async(&mut c)
                .await?;
        }
        Ok(all)
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
