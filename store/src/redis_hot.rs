//! The Redis hot store.
//!
//! Key schema (single Redis instance; every key starts with `thermo:`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `thermo:d:<metric key>:<hour start>` | hash | field `<minute start>` (unix s) → `HotCell` bytes; `EXPIREAT` max(hour end + retention, now) + margin (margin 0 without cold storage) |
//! | `thermo:s:<tenant>:<metric name>` | sorted set | member `<metric key>`, score = latest max(minute, write time); members whose data cannot be in Redis any more (score < now − retention − margin − 2 h) are trimmed on write |
//! | `thermo:m:<tenant>` | hash | field `<metric name>` → type (`counter`, `gauge`, `histogram`, `set`) |
//! | `thermo:o:<topic>:<partition>` | string | last log offset applied from that partition |
//! | `thermo:tenants` | set | every tenant that wrote |
//! | `thermo:pending` | sorted set | hour starts with hot cells not yet rolled up to cold storage (cold storage on only) |
//! | `thermo:hv` | hash | hour start → write version (bumped by every write into that hour; cold storage on only) |
//! | `thermo:rolled_at` | hash | hour start → when it was first rolled up (see `catalog.rs`) |
//!
//! The cold-storage catalog keys are described in `catalog.rs`.
//!
//! `<metric key>` is the canonical encoding `tenant/name{k=v,...}` (see `thermo_core::key`).
//! A write (cells, index entries and the partition offset) is one Lua script, so it is atomic and
//! fenced: it applies only if the stored offset equals the writer's expected offset.

use crate::hot::{HotStore, HotWrite, PartitionId};
use crate::StoreError;
use redis::aio::ConnectionManager;
use redis::Script;
use std::collections::BTreeMap;
use thermo_core::aggregate::MetricType;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::{window_start, MINUTE};

const HOUR: i64 = 3600;

const WRITE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '-1' end
if cur ~= ARGV[1] then return 0 end
local n = (#KEYS - 1) / 3
for i = 0, n - 1 do
  local k = 2 + i * 3
  local a = 4 + i * 10
  redis.call('HSET', KEYS[k], ARGV[a], ARGV[a + 1])
  redis.call('EXPIREAT', KEYS[k], ARGV[a + 2])
  redis.call('ZADD', KEYS[k + 1], 'GT', ARGV[a + 4], ARGV[a + 3])
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', '(' .. ARGV[a + 7])
  redis.call('HSET', KEYS[k + 2], ARGV[a + 5], ARGV[a + 6])
  redis.call('SADD', 'thermo:tenants', ARGV[a + 8])
  if ARGV[3] == '1' then
    redis.call('ZADD', 'thermo:pending', ARGV[a + 9], ARGV[a + 9])
    redis.call('HINCRBY', 'thermo:hv', ARGV[a + 9], 1)
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Hot store on Redis.
#[derive(Clone)]
pub struct RedisHot {
    conn: ConnectionManager,
    retention_secs: i64,
    /// Extra time before Redis expires an hour by itself. 0 without cold storage; with it, the
    /// compactor trims hours once S3 holds them, and this margin only bounds memory if the
    /// compactor cannot run for that long (the documented bound of an S3 outage).
    expiry_margin_secs: i64,
    /// Cold storage is on: writes also maintain `thermo:pending` and `thermo:hv`.
    cold: bool,
    script: Script,
}

pub(crate) fn data_key(series: &MetricKey, hour: i64) -> String {
    format!("thermo:d:{series}:{hour}")
}

fn series_key(tenant: &str, name: &str) -> String {
    format!("thermo:s:{tenant}:{name}")
}

fn metrics_key(tenant: &str) -> String {
    format!("thermo:m:{tenant}")
}

fn offset_key(p: &PartitionId) -> String {
    format!("thermo:o:{}:{}", p.topic, p.partition)
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

/// A connection to the Redis at `url` (`redis://host:port[/db]`) that reconnects by itself:
/// 2 s to connect, `response` to answer, `retries` reconnection attempts per command.
pub(crate) async fn connect_manager(
    url: &str,
    response: std::time::Duration,
    retries: usize,
) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Invalid(format!("redis_url {url:?}: {e}")))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(response)
        .set_number_of_retries(retries);
    Ok(ConnectionManager::new_with_config(client, cfg).await?)
}

impl RedisHot {
    /// Connects to `url` (`redis://host:port[/db]`). Reconnects by itself after failures.
    pub async fn connect(url: &str, retention_secs: i64) -> Result<Self, StoreError> {
        let conn = connect_manager(url, std::time::Duration::from_secs(10), 2).await?;
        Ok(Self {
            conn,
            retention_secs,
            expiry_margin_secs: 0,
            cold: false,
            script: Script::new(WRITE_SCRIPT),
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
    pub fn connection(&self) -> ConnectionManager {
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

    async fn cells(&self, wanted: &[(MetricKey, i64)]) -> Result<Vec<Option<HotCell>>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (k, minute) in wanted {
            pipe.cmd("HGET")
                .arg(data_key(k, window_start(*minute, HOUR)))
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

    async fn write(&self, w: HotWrite) -> Result<bool, StoreError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(offset_key(&w.partition));
        let now = thermo_core::window::now_s();
        inv.arg(w.expected_offset.to_string());
        inv.arg(w.new_offset.to_string());
        inv.arg(if self.cold { "1" } else { "0" });
        for (k, minute, cell) in &w.cells {
            let hour = window_start(*minute, HOUR);
            inv.key(data_key(k, hour));
            inv.key(series_key(k.tenant(), k.name()));
            inv.key(metrics_key(k.tenant()));
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
        let mut c = self.conn.clone();
        let m: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(metrics_key(tenant))
            .query_async(&mut c)
            .await?;
        Ok(m.into_iter()
            .filter_map(|(name, t)| MetricType::parse(&t).map(|t| (name, t)))
            .collect())
    }

    async fn series(
        &self,
        tenant: &str,
        name: &str,
        since_minute: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        let mut c = self.conn.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(series_key(tenant, name))
            .arg(since_minute)
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(MetricKey::parse(&m).map_err(|e| corrupt("series index", e))?);
        }
        out.sort();
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
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("ZCOUNT")
                .arg(series_key(tenant, name))
                .arg(since_minute)
                .arg("+inf");
        }
        let mut c = self.conn.clone();
        let counts: Vec<u64> = pipe.query_async(&mut c).await?;
        Ok(names
            .into_iter()
            .zip(counts)
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
        let first_hour = window_start(from_minute, HOUR);
        let hours: Vec<i64> = (0..)
            .map(|i| first_hour + i * HOUR)
            .take_while(|h| *h < to_minute)
            .collect();
        let mut pipe = redis::pipe();
        for k in series {
            for h in &hours {
                pipe.cmd("HGETALL").arg(data_key(k, *h));
            }
        }
        let mut c = self.conn.clone();
        let raw: Vec<BTreeMap<i64, Vec<u8>>> = pipe.query_async(&mut c).await?;
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
