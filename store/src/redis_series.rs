//! The series registry in Redis ([`crate::series_registry`]), shared by every partitioner replica.
//!
//! Keys of tenant `T` (the `{T}` hash tag keeps both in one Redis Cluster slot):
//! - `thermo:c:{T}:seen`: a sorted set, member the series' metric key, score when it was last seen
//!   (unix seconds); members older than the window are removed on each request, and the key
//!   expires a window after the tenant's last request.
//! - `thermo:c:{T}:new:<hour>`: the new series admitted in that clock hour (a count, expiring
//!   after two hours).
//!
//! One request's check and update is one Lua script (atomic in Redis), so that replicas
//! admitting at once never exceed a limit between them. A request of more than [`CHUNK`] series
//! runs as several scripts, each atomic, so Redis is never blocked long.

use crate::redis_conn::RedisConn;
use crate::series_registry::{hour_of, Admitted, SeriesLimit, SeriesLimits, SeriesRegistry};
use crate::StoreError;
use redis::Script;

/// Series checked by one script call (about 2 µs each in Redis).
pub const CHUNK: usize = 2_000;

const ADMIT_SCRIPT: &str = r#"#!lua
-- ARGV: now, cutoff, max_active, max_new, window_secs, series...
local now = tonumber(ARGV[1])
local max_active = tonumber(ARGV[3])
local max_new = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local active = redis.call('ZCARD', KEYS[1])
local new = tonumber(redis.call('GET', KEYS[2]) or '0')
local added = 0
local limit = 0
local refused = {}
for i = 6, #ARGV do
  local s = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], s) then
    redis.call('ZADD', KEYS[1], 'GT', now, s)
  else
    local why = 0
    if max_active > 0 and active >= max_active then
      why = 1
    elseif max_new > 0 and new >= max_new then
      why = 2
    end
    if why == 0 then
      redis.call('ZADD', KEYS[1], now, s)
      active = active + 1
      new = new + 1
      added = added + 1
    else
      if limit == 0 then limit = why end
      refused[#refused + 1] = i - 6
    end
  end
end
if added > 0 then
  redis.call('SET', KEYS[2], new, 'EX', 7200)
end
if active > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return {active, new, limit, refused}
"#;

/// The registry in Redis.
#[derive(Clone)]
pub struct RedisSeriesRegistry {
    conn: RedisConn,
    script: Script,
}

fn seen_key(tenant: &str) -> String {
    format!("thermo:c:{{{tenant}}}:seen")
}

fn new_key(tenant: &str, hour: i64) -> String {
    format!("thermo:c:{{{tenant}}}:new:{hour}")
}

impl RedisSeriesRegistry {
    /// Connects to `url`: one Redis or a Redis Cluster ([`crate::redis_conn`]). Reconnects by
    /// itself after failures.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = crate::redis_conn::connect(url, std::time::Duration::from_secs(5), 1).await?;
        Ok(Self {
            conn,
            script: Script::new(ADMIT_SCRIPT),
        })
    }
}

impl SeriesRegistry for RedisSeriesRegistry {
    async fn admit(
        &self,
        tenant: &str,
        series: &[String],
        limits: SeriesLimits,
        now_s: i64,
        window_secs: i64,
    ) -> Result<Admitted, StoreError> {
        let mut out = Admitted::default();
        // An empty request still answers the tenant's counts.
        let chunks: Vec<&[String]> = if series.is_empty() {
            vec![&[]]
        } else {
            series.chunks(CHUNK).collect()
        };
        for (c, chunk) in chunks.into_iter().enumerate() {
            let mut inv = self.script.prepare_invoke();
            inv.key(seen_key(tenant))
                .key(new_key(tenant, hour_of(now_s)))
                .arg(now_s)
                .arg(now_s - window_secs)
                .arg(limits.max_active)
                .arg(limits.max_new_per_hour)
                .arg(window_secs.max(1));
            for s in chunk {
                inv.arg(s);
            }
            let mut conn = self.conn.clone();
            let (active, new, limit, refused): (u64, u64, u8, Vec<usize>) =
                inv.invoke_async(&mut conn).await?;
            out.active = active;
            out.new_this_hour = new;
            if out.limit.is_none() {
                out.limit = match limit {
                    1 => Some(SeriesLimit::MaxActiveSeries),
                    2 => Some(SeriesLimit::MaxNewSeriesPerHour),
                    _ => None,
                };
            }
            out.refused
                .extend(refused.into_iter().map(|i| c * CHUNK + i));
        }
        Ok(out)
    }
}
