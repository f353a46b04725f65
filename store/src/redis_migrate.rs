//! `thermo migrate`: moves the hot data a thermo before Redis Cluster support wrote into one Redis
//! into the key schema of [`crate::redis_hot`] (every key of a write under its partition's hash
//! tag), in place, on that Redis.
//!
//! | old key | becomes |
//! |---|---|
//! | `thermo:o:<topic>:<P>` | `thermo:{p<P>}:o:<topic>` (the value as is) |
//! | `thermo:d:<metric key>:<hour>` | `thermo:{p<P>}:d:<metric key>:<hour>`, `P` = `partition_of(metric key, partitions)` (`DUMP`/`RESTORE`: fields and expiry as they were) |
//! | `thermo:s:<tenant>:<name>` | one member each in `thermo:{p<P>}:s:<tenant>:<name>` (same score), the metric's type in `thermo:{p<P>}:m:<tenant>`, the tenant in `thermo:{p<P>}:tenants` |
//! | `thermo:pending`, `thermo:hv` | `thermo:{p0}:pending`, `thermo:{p0}:hv` (the compactor rolls those hours up as before) |
//! | `thermo:m:<tenant>`, `thermo:tenants` | deleted last |
//! | | `thermo:partitions` = `partitions` |
//!
//! The cold-storage catalog's other keys (`thermo:cold:*`, `thermo:dirty:*`, `thermo:rolled_at`,
//! `thermo:trim`, ...) keep their names.
//!
//! Each old key is deleted only after what it became was written, and what it becomes is written
//! whole again by a second run, so a migration that stopped half-way is finished by running it
//! again. `thermo:tenants` goes last: while it exists, aggregators and read services refuse to
//! start ([`crate::redis_hot::RedisHot::connect`]), so nothing writes the new keys meanwhile. The
//! aggregators must be stopped before, since a running one would keep writing the old keys.

use crate::hot::PartitionId;
use crate::log::partition_of;
use crate::redis_conn::RedisConn;
use crate::redis_hot::{
    data_key, metrics_key, offset_key, pending_key, series_key, tenants_key, versions_key,
    OLD_SCHEMA_KEY, PARTITIONS_KEY,
};
use crate::StoreError;
use std::collections::BTreeMap;
use std::time::Duration;
use thermo_core::key::MetricKey;

/// Keys asked for by one `SCAN` step.
const SCAN_COUNT: usize = 1000;

/// What a migration moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub offsets: u64,
    pub data_keys: u64,
    pub series: u64,
    pub pending_hours: u64,
}

fn invalid(what: &str, key: &str) -> StoreError {
    StoreError::Invalid(format!("{what}: {key:?} is not a key thermo wrote"))
}

/// Every key matching `pattern` (one `SCAN`; keys written meanwhile may be missed, which a
/// migration with the aggregators stopped has none of).
async fn scan(c: &mut RedisConn, pattern: &str) -> Result<Vec<String>, StoreError> {
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(c)
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

/// Migrates the Redis at `url` for a topic of `partitions` partitions; `progress` hears about
/// every step.
pub async fn migrate(
    url: &str,
    partitions: u32,
    progress: impl Fn(&str),
) -> Result<Migrated, StoreError> {
    if partitions == 0 {
        return Err(StoreError::Invalid(
            "--partitions: the topic's partition count, at least 1".into(),
        ));
    }
    let conn = crate::redis_conn::connect(url, Duration::from_secs(60), 2).await?;
    if conn.is_cluster() {
        return Err(StoreError::Invalid(format!(
            "{url} is a Redis Cluster: the key schema before the hash tags was only ever on one Redis"
        )));
    }
    let mut c = conn.clone();
    let set: Option<u32> = redis::cmd("GET")
        .arg(PARTITIONS_KEY)
        .query_async(&mut c)
        .await?;
    if set.is_some_and(|n| n != partitions) {
        return Err(StoreError::Invalid(format!(
            "{PARTITIONS_KEY} is {} in this Redis, not {partitions}: it was migrated (or written) \
             for another partition count",
            set.unwrap_or(0)
        )));
    }
    let old: bool = redis::cmd("EXISTS")
        .arg(OLD_SCHEMA_KEY)
        .query_async(&mut c)
        .await?;
    if !old {
        progress("no data in the old key schema: nothing to migrate");
        return Ok(Migrated::default());
    }
    let offsets = move_offsets(&conn).await?;
    progress(&format!("{offsets} partition offsets moved"));
    let data_keys = move_data(&conn, partitions, &progress).await?;
    progress(&format!("{data_keys} hours of series cells moved"));
    let series = move_index(&conn, partitions).await?;
    progress(&format!("{series} series indexed in their partitions"));
    let pending_hours = move_pending(&conn).await?;
    progress(&format!(
        "{pending_hours} hours waiting for a roll-up kept pending"
    ));
    let out = Migrated {
        offsets,
        data_keys,
        series,
        pending_hours,
    };
    let _: () = redis::cmd("SET")
        .arg(PARTITIONS_KEY)
        .arg(partitions)
        .query_async(&mut c)
        .await?;
    for keys in scan(&mut c, "thermo:m:*").await?.chunks(SCAN_COUNT) {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut c).await?;
    }
    let _: i64 = redis::cmd("DEL")
        .arg(OLD_SCHEMA_KEY)
        .query_async(&mut c)
        .await?;
    progress("done: aggregators and read services may start");
    Ok(out)
}

/// `thermo:o:<topic>:<P>` → `thermo:{p<P>}:o:<topic>`.
async fn move_offsets(conn: &RedisConn) -> Result<u64, StoreError> {
    let mut n = 0;
    let mut c = conn.clone();
    for key in scan(&mut c, "thermo:o:*").await? {
        let (topic, p) = key
            .strip_prefix("thermo:o:")
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(topic, p)| Some((topic, p.parse::<i32>().ok()?)))
            .ok_or_else(|| invalid("offset key", &key))?;
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
        if let Some(value) = value {
            let new = offset_key(&PartitionId {
                topic: topic.to_string(),
                partition: p,
            });
            let _: () = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(new)
                .arg(value)
                .ignore()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .query_async(&mut c)
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

/// `thermo:d:<metric key>:<hour>` → under the key's partition, with its fields and expiry.
async fn move_data(
    conn: &RedisConn,
    partitions: u32,
    progress: &impl Fn(&str),
) -> Result<u64, StoreError> {
    let mut n = 0u64;
    let mut c = conn.clone();
    let all = scan(&mut c, "thermo:d:*").await?;
    for (page, keys) in all.chunks(SCAN_COUNT).enumerate() {
        let mut read = redis::pipe();
        for k in keys {
            read.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
        }
        let dumped: Vec<(Option<Vec<u8>>, i64)> = read.query_async(&mut c).await?;
        let mut write = redis::pipe();
        for (key, (dump, pttl)) in keys.iter().zip(dumped) {
            let Some(dump) = dump else {
                continue; // expired since the scan
            };
            let (series, hour) = key
                .strip_prefix("thermo:d:")
                .and_then(|rest| rest.rsplit_once(':'))
                .and_then(|(s, h)| Some((MetricKey::parse(s).ok()?, h.parse::<i64>().ok()?)))
                .ok_or_else(|| invalid("data key", key))?;
            let p = partition_of(series.encode().as_bytes(), partitions);
            write
                .cmd("RESTORE")
                .arg(data_key(p, &series, hour))
                .arg(pttl.max(0))
                .arg(dump)
                .arg("REPLACE")
                .ignore()
                .cmd("DEL")
                .arg(key)
                .ignore();
            n += 1;
        }
        let _: () = write.query_async(&mut c).await?;
        if page % 50 == 49 {
            progress(&format!("{n} of {} hours of series cells moved", all.len()));
        }
    }
    Ok(n)
}

/// `thermo:s:<tenant>:<name>` → each member into its partition's index, with the metric's type
/// and the tenant.
async fn move_index(conn: &RedisConn, partitions: u32) -> Result<u64, StoreError> {
    let mut c = conn.clone();
    let keys = scan(&mut c, "thermo:s:*").await?;
    let mut types: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut n = 0;
    for key in keys {
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        let mut write = redis::pipe();
        write.atomic();
        for (member, score) in members {
            let series = MetricKey::parse(&member).map_err(|_| invalid("series", &member))?;
            let (tenant, name) = (series.tenant(), series.name());
            if !types.contains_key(tenant) {
                let t: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(format!("thermo:m:{tenant}"))
                    .query_async(&mut c)
                    .await?;
                types.insert(tenant.to_string(), t);
            }
            let p = partition_of(member.as_bytes(), partitions);
            write
                .cmd("ZADD")
                .arg(series_key(p, tenant, name))
                .arg("GT")
                .arg(score)
                .arg(&member)
                .ignore()
                .cmd("SADD")
                .arg(tenants_key(p))
                .arg(tenant)
                .ignore();
            if let Some(t) = types.get(tenant).and_then(|t| t.get(name)) {
                write
                    .cmd("HSET")
                    .arg(metrics_key(p, tenant))
                    .arg(name)
                    .arg(t)
                    .ignore();
            }
            n += 1;
        }
        write.cmd("DEL").arg(&key).ignore();
        let _: () = write.query_async(&mut c).await?;
    }
    Ok(n)
}

/// `thermo:pending` and `thermo:hv` → partition 0's.
async fn move_pending(conn: &RedisConn) -> Result<u64, StoreError> {
    let mut c = conn.clone();
    let hours: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("thermo:pending")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await?;
    let versions: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("thermo:hv")
        .query_async(&mut c)
        .await?;
    let mut write = redis::pipe();
    write.atomic();
    for (hour, score) in &hours {
        write
            .cmd("ZADD")
            .arg(pending_key(0))
            .arg(score)
            .arg(hour)
            .ignore();
    }
    for (hour, version) in &versions {
        write
            .cmd("HSET")
            .arg(versions_key(0))
            .arg(hour)
            .arg(version)
            .ignore();
    }
    write
        .cmd("DEL")
        .arg("thermo:pending")
        .arg("thermo:hv")
        .ignore();
    let _: () = write.query_async(&mut c).await?;
    Ok(hours.len() as u64)
}
