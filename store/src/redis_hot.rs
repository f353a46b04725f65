//! The Redis hot store, on one Redis or on a Redis Cluster.
//!
//! Key schema. Every key an aggregator's write touches carries its log partition's hash tag
//! `{p<partition>}` (Redis Cluster hashes only what is between the braces), so one partition's
//! keys live in one hash slot, and the write (cells, index entries, cold-storage bookkeeping and
//! the partition's offset) stays one atomic, fenced script on a cluster too:
//!
//! | key | type | content |
//! |---|---|---|
//! | `thermo:{p<P>}:d:<metric key>:<hour start>` | hash | field `<minute start>` (unix s) → `HotCell` bytes; `EXPIREAT` max(hour end + retention, now) + margin (margin 0 without cold storage) |
//! | `thermo:{p<P>}:s:<tenant>:<metric name>` | sorted set | the partition's series of that metric: member `<metric key>`, score = latest max(minute, write time); members whose data cannot be in Redis any more (score < now − retention − margin − 2 h) are trimmed on write |
//! | `thermo:{p<P>}:m:<tenant>` | hash | field `<metric name>` → type (`counter`, `gauge`, `histogram`, `set`), for the partition's series |
//! | `thermo:{p<P>}:tenants` | set | every tenant that wrote into the partition |
//! | `thermo:{p<P>}:o:<topic>` | string | last log offset applied from partition `P` of `topic` |
//! | `thermo:{p<P>}:pending` | sorted set | hour starts with hot cells of the partition not yet rolled up to cold storage (cold storage on only) |
//! | `thermo:{p<P>}:t` | hash | field `<metric key>` → `<time ms> <total>`: the last total of each cumulative series of the partition (Prometheus remote write's counters), written with the cells it produced |
//! | `thermo:{p<P>}:hv` | hash | hour start → the partition's write version of that hour (bumped by every write into it; cold storage on only) |
//! | `thermo:partitions` | string | the topic's partition count, set by the aggregators before every write |
//! | `thermo:rolled_at` | hash | hour start → when it was first rolled up (see `redis_catalog.rs`) |
//!
//! `<metric key>` is the canonical encoding `tenant/name{k=v,...}` (see `thermo_core::key`); a key
//! is read with the first `{` and `}` (the partition's tag) before any brace of the metric key.
//!
//! A series lives in the partition the partitioners put its records in,
//! `thermo_store::log::partition_of(metric key, partitions)`, so a reader finds its cells with the
//! partition count alone, without scanning. Listing a metric's series reads the index of every
//! partition (one pipelined command each). The cold-storage catalog keys are described in
//! `redis_catalog.rs`.
//!
//! The key schema before the hash tags (`thermo:d:<metric key>:<hour>`, one global index,
//! `thermo:tenants`, ...) is refused at connect with the advice to run `thermo migrate`
//! ([`crate::redis_migrate`]).

use crate::hot::{HotStore, HotWrite, PartitionId};
use crate::log::partition_of;
use crate::redis_conn::RedisConn;
use crate::StoreError;
use redis::{Cmd, Script};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thermo_core::aggregate::MetricType;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::{window_start, MINUTE};

const HOUR: i64 = 3600;

/// The partition count, as the aggregators set it.
pub(crate) const PARTITIONS_KEY: &str = "thermo:partitions";

/// How long the partition count read (or set) is trusted before it is read (or set) again.
const PARTITIONS_TTL: Duration = Duration::from_secs(5);

/// A key only the schema before the hash tags has: its presence means `thermo migrate` is due.
pub(crate) const OLD_SCHEMA_KEY: &str = "thermo:tenants";

/// Deletes the listed totals that are still older than the cut-off (a write may have renewed one
/// since it was listed).
const PRUNE_TOTALS_SCRIPT: &str = r#"#!lua
-- KEYS[1]: the partition's totals. ARGV[1]: the cut-off (unix ms); ARGV[2..]: fields listed old.
local cut = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local t = tonumber(string.match(v, '^(%-?%d+) '))
    if t and t < cut then
      redis.call('HDEL', KEYS[1], ARGV[i])
      n = n + 1
    end
  end
end
return n
"#;

const WRITE_SCRIPT: &str = r#"#!lua
-- KEYS: the partition's offset, tenants, pending hours, hour versions, totals; then per cell its
-- data, series index and metric types keys. ARGV: expected offset, new offset, cold ('1' or '0'),
-- the number of totals t, 2 per total (series, value), then 10 per cell.
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '-1' end
if cur ~= ARGV[1] then return 0 end
local t = tonumber(ARGV[4])
for i = 0, t - 1 do
  redis.call('HSET', KEYS[5], ARGV[5 + i * 2], ARGV[6 + i * 2])
end
local n = (#KEYS - 5) / 3
for i = 0, n - 1 do
  local k = 6 + i * 3
  local a = 5 + t * 2 + i * 10
  redis.call('HSET', KEYS[k], ARGV[a], ARGV[a + 1])
  redis.call('EXPIREAT', KEYS[k], ARGV[a + 2])
  redis.call('ZADD', KEYS[k + 1], 'GT', ARGV[a + 4], ARGV[a + 3])
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', '(' .. ARGV[a + 7])
  redis.call('HSET', KEYS[k + 2], ARGV[a + 5], ARGV[a + 6])
  redis.call('SADD', KEYS[2], ARGV[a + 8])
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[3], ARGV[a + 9], ARGV[a + 9])
    redis.call('HINCRBY', KEYS[4], ARGV[a + 9], 1)
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Hot store on Redis.
#[derive(Clone)]
pub struct RedisHot {
    conn: RedisConn,
    retention_secs: i64,
    /// Extra time before Redis expires an hour by itself. 0 without cold storage; with it, the
    /// compactor trims hours once S3 holds them, and this margin only bounds memory if the
    /// compactor cannot run for that long (the documented bound of an S3 outage).
    expiry_margin_secs: i64,
    /// Cold storage is on: writes also maintain each partition's `pending` and `hv`.
    cold: bool,
    script: Script,
    /// The partition count last read or set, and when.
    partitions: Arc<Mutex<Option<(Instant, u32)>>>,
}

/// The hash tag of log partition `p`: its keys share one Redis Cluster slot.
pub(crate) fn tag(p: i32) -> String {
    format!("thermo:{{p{p}}}")
}

pub(crate) fn data_key(p: i32, series: &MetricKey, hour: i64) -> String {
    format!("{}:d:{series}:{hour}", tag(p))
}

pub(crate) fn series_key(p: i32, tenant: &str, name: &str) -> String {
    format!("{}:s:{tenant}:{name}", tag(p))
}

pub(crate) fn metrics_key(p: i32, tenant: &str) -> String {
    format!("{}:m:{tenant}", tag(p))
}

pub(crate) fn tenants_key(p: i32) -> String {
    format!("{}:tenants", tag(p))
}

pub(crate) fn pending_key(p: i32) -> String {
    format!("{}:pending", tag(p))
}

/// `<time ms> <total>`, as the write script stores it.
fn parse_total(v: &str) -> Result<(i64, f64), StoreError> {
    let parsed = v
        .split_once(' ')
        .and_then(|(t, x)| Some((t.parse().ok()?, x.parse::<f64>().ok()?)));
    parsed
        .filter(|(_, x)| x.is_finite())
        .ok_or_else(|| corrupt("cumulative total", format!("{v:?}")))
}

pub(crate) fn totals_key(p: i32) -> String {
    format!("thermo:{{p{p}}}:t")
}

pub(crate) fn versions_key(p: i32) -> String {
    format!("{}:hv", tag(p))
}

pub(crate) fn offset_key(p: &PartitionId) -> String {
    format!("{}:o:{}", tag(p.partition), p.topic)
}

/// The members of index `key` with a score at or after `since_minute`.
fn since(key: &str, since_minute: i64) -> Cmd {
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(key).arg(since_minute).arg("+inf");
    cmd
}

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

/// Decodes a stored cell. A cell that cannot be decoded is logged and treated as absent: the next
/// write of that series-minute replaces it (its previous contributions are lost, and said so),
/// rather than blocking the partition or the compactor forever.
fn decode_or_log(bytes: &[u8], series: &MetricKey, minute: i64) -> Option<HotCell> {
    match HotCell::decode(bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(%series, minute, "corrupt hot cell ignored (it will be overwritten): {e}");
            None
        }
    }
}

impl RedisHot {
    /// Connects to `url`: one Redis (`redis://host:port[/db]`) or a Redis Cluster (its nodes'
    /// URLs separated by commas; see [`crate::redis_conn`]). Reconnects by itself after failures.
    /// Refuses (not retryable) a Redis that holds data in the key schema before the hash tags.
    pub async fn connect(url: &str, retention_secs: i64) -> Result<Self, StoreError> {
        let mut conn = crate::redis_conn::connect(url, Duration::from_secs(10), 2).await?;
        let old: bool = redis::cmd("EXISTS")
            .arg(OLD_SCHEMA_KEY)
            .query_async(&mut conn)
            .await?;
        if old {
            return Err(StoreError::Invalid(format!(
                "the Redis at {url} holds thermo data in the key schema before Redis Cluster \
                 support: stop the aggregators and run `thermo migrate --redis-url {url} \
                 --partitions <the topic's partition count>` (docs/storage.md, \"Migration\")"
            )));
        }
        Ok(Self {
            conn,
            retention_secs,
            expiry_margin_secs: 0,
            cold: false,
            script: Script::new(WRITE_SCRIPT),
            partitions: Arc::default(),
        })
    }

    /// Turns on cold-storage bookkeeping: hours live `margin_secs` longer than the retention before
    /// Redis expires them by itself, and writes mark their hours pending for the compactor.
    pub fn with_cold(mut self, margin_secs: i64) -> Self {
        self.expiry_margin_secs = margin_secs;
        self.cold = true;
        self
    }

    /// The connection, for the cold-storage catalog.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Hot retention in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention_secs
    }

    /// PING, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    fn cached_partitions(&self) -> Option<u32> {
        let cached = *self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .filter(|(at, _)| at.elapsed() < PARTITIONS_TTL)
            .map(|(_, n)| n)
    }

    fn cache_partitions(&self, n: u32) {
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), n));
    }

    /// The topic's partition count as the aggregators set it (read again after 5 s); 0 before
    /// any aggregator wrote, when there is no data either.
    pub async fn partitions(&self) -> Result<u32, StoreError> {
        if let Some(n) = self.cached_partitions() {
            return Ok(n);
        }
        let mut c = self.conn.clone();
        let n: Option<u32> = redis::cmd("GET")
            .arg(PARTITIONS_KEY)
            .query_async(&mut c)
            .await?;
        let n = n.unwrap_or(0);
        if n > 0 {
            self.cache_partitions(n);
        }
        Ok(n)
    }

    /// Records the topic's partition count for readers (at most every 5 s, and when it changes).
    async fn set_partitions(&self, n: u32) -> Result<(), StoreError> {
        if n == 0 || self.cached_partitions() == Some(n) {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let before: Option<u32> = redis::cmd("SET")
            .arg(PARTITIONS_KEY)
            .arg(n)
            .arg("GET")
            .query_async(&mut c)
            .await?;
        if before.is_some_and(|b| b != n) {
            tracing::warn!(
                before,
                now = n,
                "the topic's partition count changed: series written before the change are \
                 read from their new partition (docs/storage.md, \"Partitions\")"
            );
        }
        self.cache_partitions(n);
        Ok(())
    }

    /// Every partition `0..partitions`, as read by [`Self::partitions`].
    pub(crate) async fn all_partitions(&self) -> Result<std::ops::Range<i32>, StoreError> {
        let n = self.partitions().await?;
        Ok(0..i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// Runs `cmd(p)` for every partition `p` (a command on that partition's keys) and returns
    /// the answers in partition order: one round trip on one Redis, one per node on a cluster.
    pub(crate) async fn on_every_partition<T: redis::FromRedisValue>(
        &self,
        cmd: impl Fn(i32) -> Cmd,
    ) -> Result<Vec<T>, StoreError> {
        let cmds = self.all_partitions().await?.map(|p| (p, cmd(p))).collect();
        self.conn.grouped(cmds).await
    }

    /// The tenants that wrote into any partition, sorted.
    pub async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let sets: Vec<Vec<String>> = self
            .on_every_partition(|p| redis::cmd("SMEMBERS").arg(tenants_key(p)).clone())
            .await?;
        let all: BTreeSet<String> = sets.into_iter().flatten().collect();
        Ok(all.into_iter().collect())
    }

    /// Every series of partition `p` that has data at or after `since_minute`.
    pub(crate) async fn partition_series(
        &self,
        p: i32,
        since_minute: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        let mut c = self.conn.clone();
        let tenants: Vec<String> = redis::cmd("SMEMBERS")
            .arg(tenants_key(p))
            .query_async(&mut c)
            .await?;
        let mut out = Vec::new();
        for tenant in tenants {
            let names: Vec<String> = redis::cmd("HKEYS")
                .arg(metrics_key(p, &tenant))
                .query_async(&mut c)
                .await?;
            let cmds = names
                .iter()
                .map(|name| (p, since(&series_key(p, &tenant, name), since_minute)))
                .collect();
            let members: Vec<Vec<String>> = self.conn.grouped(cmds).await?;
            for m in members.into_iter().flatten() {
                out.push(MetricKey::parse(&m).map_err(|e| corrupt("series index", e))?);
            }
        }
        Ok(out)
    }
}

impl HotStore for RedisHot {
    async fn offset(&self, partition: &PartitionId) -> Result<i64, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<i64> = redis::cmd("GET")
            .arg(offset_key(partition))
            .query_async(&mut c)
            .await?;
        Ok(v.unwrap_or(-1))
    }

    async fn cells(
        &self,
        partition: &PartitionId,
        wanted: &[(MetricKey, i64)],
    ) -> Result<Vec<Option<HotCell>>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (k, minute) in wanted {
            pipe.cmd("HGET")
                .arg(data_key(
                    partition.partition,
                    k,
                    window_start(*minute, HOUR),
                ))
                .arg(minute);
        }
        let mut c = self.conn.clone();
        let raw: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        Ok(raw
            .into_iter()
            .zip(wanted)
            .map(|(b, (k, minute))| b.and_then(|b| decode_or_log(&b, k, *minute)))
            .collect())
    }

    async fn totals(
        &self,
        partition: &PartitionId,
        series: &[MetricKey],
    ) -> Result<Vec<Option<(i64, f64)>>, StoreError> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(totals_key(partition.partition));
        for k in series {
            cmd.arg(k.encode());
        }
        let mut c = self.conn.clone();
        let raw: Vec<Option<String>> = cmd.query_async(&mut c).await?;
        raw.into_iter()
            .map(|v| v.map(|v| parse_total(&v)).transpose())
            .collect()
    }

    async fn prune_totals(
        &self,
        partition: &PartitionId,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let key = totals_key(partition.partition);
        let script = Script::new(PRUNE_TOTALS_SCRIPT);
        let mut c = self.conn.clone();
        let (mut cursor, mut pruned) = (0u64, 0u64);
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            let old: Vec<&String> = flat
                .chunks(2)
                .filter(|fv| {
                    fv.get(1)
                        .and_then(|v| parse_total(v).ok())
                        .is_some_and(|(t, _)| t < before_ms)
                })
                .map(|fv| &fv[0])
                .collect();
            if !old.is_empty() {
                let mut inv = script.prepare_invoke();
                inv.key(&key).arg(before_ms);
                for field in old {
                    inv.arg(field);
                }
                let n: u64 = inv.invoke_async(&mut c).await?;
                pruned += n;
            }
            if next == 0 {
                return Ok(pruned);
            }
            cursor = next;
        }
    }

    async fn write(&self, w: HotWrite) -> Result<bool, StoreError> {
        self.set_partitions(w.partitions).await?;
        let p = w.partition.partition;
        let mut inv = self.script.prepare_invoke();
        inv.key(offset_key(&w.partition))
            .key(tenants_key(p))
            .key(pending_key(p))
            .key(versions_key(p))
            .key(totals_key(p));
        let now = thermo_core::window::now_s();
        inv.arg(w.expected_offset.to_string());
        inv.arg(w.new_offset.to_string());
        inv.arg(if self.cold { "1" } else { "0" });
        inv.arg(w.totals.len().to_string());
        for (k, time_ms, total) in &w.totals {
            inv.arg(k.encode());
            // `{}` of an f64 is the shortest text that parses back to the same value.
            inv.arg(format!("{time_ms} {total}"));
        }
        for (k, minute, cell) in &w.cells {
            let hour = window_start(*minute, HOUR);
            inv.key(data_key(p, k, hour));
            inv.key(series_key(p, k.tenant(), k.name()));
            inv.key(metrics_key(p, k.tenant()));
            inv.arg(minute.to_string());
            inv.arg(cell.encode());
            // Never in the past: a backfilled hour lives until the compactor (or the margin) ends it.
            let expire_at = (hour + HOUR + self.retention_secs).max(now) + self.expiry_margin_secs;
            inv.arg(expire_at.to_string());
            inv.arg(k.encode());
            // Index score: the later of the minute and the write time, so that a backfilled
            // series stays listed while its data can still be in Redis.
            inv.arg((*minute).max(now).to_string());
            inv.arg(k.name());
            inv.arg(cell.agg.metric_type().as_str());
            // Index entries go when no data of theirs can be left in Redis (wall clock).
            inv.arg((now - self.retention_secs - self.expiry_margin_secs - 2 * HOUR).to_string());
            inv.arg(k.tenant());
            inv.arg(hour.to_string());
        }
        let mut c = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut c).await?;
        Ok(applied == 1)
    }

    async fn metrics(&self, tenant: &str) -> Result<Vec<(String, MetricType)>, StoreError> {
        let maps: Vec<BTreeMap<String, String>> = self
            .on_every_partition(|p| redis::cmd("HGETALL").arg(metrics_key(p, tenant)).clone())
            .await?;
        let all: BTreeMap<String, String> = maps.into_iter().flatten().collect();
        Ok(all
            .into_iter()
            .filter_map(|(name, t)| MetricType::parse(&t).map(|t| (name, t)))
            .collect())
    }

    async fn series(
        &self,
        tenant: &str,
        name: &str,
        since_minute: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        let members: Vec<Vec<String>> = self
            .on_every_partition(|p| since(&series_key(p, tenant, name), since_minute))
            .await?;
        let mut out = Vec::with_capacity(members.iter().map(Vec::len).sum());
        for m in members.into_iter().flatten() {
            out.push(MetricKey::parse(&m).map_err(|e| corrupt("series index", e))?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn series_counts(
        &self,
        tenant: &str,
        since_minute: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let names: Vec<String> = self
            .metrics(tenant)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let partitions = self.all_partitions().await?;
        if names.is_empty() || partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds = Vec::with_capacity(names.len() * partitions.len());
        for name in &names {
            for p in partitions.clone() {
                let mut count = redis::cmd("ZCOUNT");
                count
                    .arg(series_key(p, tenant, name))
                    .arg(since_minute)
                    .arg("+inf");
                cmds.push((p, count));
            }
        }
        let counts: Vec<u64> = self.conn.grouped(cmds).await?;
        Ok(names
            .into_iter()
            .zip(counts.chunks(partitions.len()))
            .map(|(name, per_partition)| (name, per_partition.iter().sum::<u64>()))
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    async fn rolled_up(&self, hours: &[i64]) -> Result<Vec<Option<i64>>, StoreError> {
        if hours.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for h in hours {
            pipe.cmd("HGET").arg("thermo:rolled_at").arg(h);
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }

    async fn read_range(
        &self,
        series: &[MetricKey],
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<Vec<(i64, HotCell)>>, StoreError> {
        if series.is_empty() || to_minute <= from_minute {
            return Ok(vec![Vec::new(); series.len()]);
        }
        let partitions = self.partitions().await?;
        let first_hour = window_start(from_minute, HOUR);
        let hours: Vec<i64> = (0..)
            .map(|i| first_hour + i * HOUR)
            .take_while(|h| *h < to_minute)
            .collect();
        let mut cmds = Vec::with_capacity(series.len() * hours.len());
        for k in series {
            let p = partition_of(k.encode().as_bytes(), partitions);
            for h in &hours {
                cmds.push((p, redis::cmd("HGETALL").arg(data_key(p, k, *h)).clone()));
            }
        }
        let raw: Vec<BTreeMap<i64, Vec<u8>>> = self.conn.grouped(cmds).await?;
        let mut out = Vec::with_capacity(series.len());
        for chunk in raw.chunks(hours.len()) {
            let mut cells = Vec::new();
            for hour in chunk {
                for (minute, bytes) in hour.range(from_minute..to_minute) {
                    if minute.rem_euclid(MINUTE) != 0 {
                        continue;
                    }
                    if let Some(cell) = decode_or_log(bytes, &series[out.len()], *minute) {
                        cells.push((*minute, cell));
                    }
                }
            }
            out.push(cells);
        }
        Ok(out)
    }
}
