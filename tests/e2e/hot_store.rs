//! The Redis hot store and its cold-storage catalog, driven directly (no thermo process), on
//! redis-server: the fenced write script, reads that find each series in its partition, the
//! catalog's pending → finished → trimmed hour, on one Redis and on a Redis Cluster node (which
//! refuses a script that touches keys of two hash slots); and `thermo migrate` from the key schema
//! before the hash tags.

use crate::support::{Redis, TempDir};
use std::process::Command;
use thermo_core::aggregate::{Aggregate, Counter, MetricType};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_store::catalog::Catalog;
use thermo_store::hot::{HotStore, HotWrite, PartitionId};
use thermo_store::log::partition_of;
use thermo_store::redis_catalog::RedisCatalog;
use thermo_store::redis_hot::RedisHot;

const PARTITIONS: u32 = 4;
const TOPIC: &str = "metrics";
const RETENTION: i64 = 48 * 3600;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn counter(sum: f64, source: u64) -> HotCell {
    HotCell {
        contributors: vec![(source, 1)],
        agg: Aggregate::Counter(Counter { sum, samples: 1 }),
    }
}

fn sum_of(cell: &HotCell) -> f64 {
    match &cell.agg {
        Aggregate::Counter(c) => c.sum,
        other => panic!("not a counter: {other:?}"),
    }
}

fn pid(p: i32) -> PartitionId {
    PartitionId {
        topic: TOPIC.into(),
        partition: p,
    }
}

/// 40 series of `acme/req`, route /r0 ... /r39, with each one's partition.
fn series() -> Vec<(MetricKey, i32)> {
    (0..40)
        .map(|i| {
            let k = MetricKey::new("acme", "req", vec![("route".into(), format!("/r{i}"))])
                .expect("key");
            let p = partition_of(k.encode().as_bytes(), PARTITIONS);
            (k, p)
        })
        .collect()
}

fn route(k: &MetricKey) -> f64 {
    k.tags()[0].1[2..].parse().expect("route number")
}

/// Partition `p`'s write of minutes `minutes` of its series, each cell `route + 1000 * minute index`,
/// and of each series' last total: [`total_of`] at the last minute.
fn write_of(p: i32, expected: i64, new: i64, minutes: &[i64]) -> HotWrite {
    let cells = series()
        .into_iter()
        .filter(|(_, q)| *q == p)
        .flat_map(|(k, _)| {
            minutes.iter().enumerate().map(move |(i, m)| {
                let v = route(&k) + 1000.0 * i as f64;
                (k.clone(), *m, counter(v, 7))
            })
        })
        .collect();
    let last_ms = minutes.last().copied().unwrap_or(0) * 1000;
    let totals = series()
        .into_iter()
        .filter(|(_, q)| *q == p)
        .map(|(k, _)| {
            let total = total_of(&k);
            (k, last_ms, total)
        })
        .collect();
    HotWrite {
        partition: pid(p),
        expected_offset: expected,
        new_offset: new,
        partitions: PARTITIONS,
        cells,
        totals,
    }
}

/// A series' total in [`write_of`]: its route number plus 0.1 + 0.2 (a double with no short
/// decimal form), kept exactly.
fn total_of(k: &MetricKey) -> f64 {
    route(k) + (0.1 + 0.2)
}

/// Every series of `keys` holds exactly two cells in the hours of `minutes`, at `minutes`: its
/// route number, and that plus 1000.
async fn assert_two_minutes(hot: &RedisHot, keys: &[MetricKey], minutes: [i64; 2]) {
    let (from, to) = (minutes[0] - minutes[0].rem_euclid(3600), minutes[1] + 3600);
    let read = hot
        .read_range(keys, from, to - to.rem_euclid(3600))
        .await
        .expect("read");
    for (k, cells) in keys.iter().zip(&read) {
        let got: Vec<(i64, f64)> = cells.iter().map(|(m, c)| (*m, sum_of(c))).collect();
        assert_eq!(
            got,
            vec![(minutes[0], route(k)), (minutes[1], route(k) + 1000.0)],
            "{k}"
        );
    }
}

/// The contract on one Redis at `url`; the hour written is `hour`.
async fn exercise(url: &str, hour: i64) {
    let hot = RedisHot::connect(url, RETENTION)
        .await
        .expect("connect")
        .with_cold(3600);
    let catalog = RedisCatalog::new(hot.clone());
    let minutes = [hour + 60, hour + 120];
    let all = series();
    let used: std::collections::BTreeSet<i32> = all.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "the 40 series use every partition"
    );

    // Each partition's first write applies; the same write again is fenced, nothing changes.
    for p in &used {
        assert!(hot
            .write(write_of(*p, -1, 10, &minutes))
            .await
            .expect("write"));
        let mut stale = write_of(*p, -1, 11, &minutes);
        stale
            .cells
            .iter_mut()
            .for_each(|(_, _, c)| *c = counter(1e9, 8));
        stale.totals.iter_mut().for_each(|(_, _, t)| *t = 1e9);
        assert!(!hot.write(stale).await.expect("write"), "fenced");
        assert_eq!(hot.offset(&pid(*p)).await.expect("offset"), 10);
        // The totals of the partition's series: written with the cells, exact, not the fenced
        // write's; a series of another partition has none there.
        let mine: Vec<MetricKey> = all
            .iter()
            .filter(|(_, q)| q == p)
            .map(|(k, _)| k.clone())
            .collect();
        let want: Vec<Option<(i64, f64)>> = mine
            .iter()
            .map(|k| Some((minutes[1] * 1000, total_of(k))))
            .collect();
        assert_eq!(hot.totals(&pid(*p), &mine).await.expect("totals"), want);
        let elsewhere = all.iter().find(|(_, q)| q != p).map(|(k, _)| k.clone());
        let elsewhere = elsewhere.expect("another partition's series");
        assert_eq!(
            hot.totals(&pid(*p), &[elsewhere]).await.expect("totals"),
            vec![None]
        );
    }
    assert_eq!(hot.partitions().await.expect("partitions"), PARTITIONS);
    // Totals not renewed since the cut-off are forgotten, partition by partition; the others stay.
    for p in &used {
        let mine: Vec<MetricKey> = all
            .iter()
            .filter(|(_, q)| q == p)
            .map(|(k, _)| k.clone())
            .collect();
        let last_ms = minutes[1] * 1000;
        assert_eq!(hot.prune_totals(&pid(*p), last_ms).await.expect("prune"), 0);
        let pruned = hot
            .prune_totals(&pid(*p), last_ms + 1)
            .await
            .expect("prune");
        assert_eq!(pruned, mine.len() as u64);
        let left = hot.totals(&pid(*p), &mine).await.expect("totals");
        assert!(left.iter().all(Option::is_none), "{left:?}");
    }

    // Reads find every series in its partition, with exact values.
    let keys: Vec<MetricKey> = {
        let mut k: Vec<MetricKey> = all.iter().map(|(k, _)| k.clone()).collect();
        k.sort();
        k
    };
    assert_eq!(hot.series("acme", "req", hour).await.expect("series"), keys);
    assert_eq!(
        hot.metrics("acme").await.expect("metrics"),
        vec![("req".to_string(), MetricType::Counter)]
    );
    assert_eq!(
        hot.series_counts("acme", hour).await.expect("counts"),
        vec![("req".to_string(), 40)]
    );
    assert_two_minutes(&hot, &keys, [minutes[0], minutes[1]]).await;
    // The aggregator's read of stored states looks in the partition it writes.
    let (k0, p0) = all[0].clone();
    let other = (p0 + 1) % PARTITIONS as i32;
    let wanted = [(k0.clone(), minutes[0])];
    assert!(hot.cells(&pid(p0), &wanted).await.expect("cells")[0].is_some());
    assert!(hot.cells(&pid(other), &wanted).await.expect("cells")[0].is_none());

    // The catalog: the hour is pending in every partition, with each partition's version (one
    // per cell written).
    assert_eq!(catalog.tenants().await.expect("tenants"), vec!["acme"]);
    let pending = catalog.pending_hours(i64::MAX).await.expect("pending");
    let versions: String = used
        .iter()
        .map(|p| {
            let cells = all.iter().filter(|(_, q)| q == p).count() * minutes.len();
            format!("{p}={cells}")
        })
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(pending, vec![(hour, versions.clone())]);
    assert!(catalog.any_pending(hour, hour + 3600).await.expect("any"));
    assert!(!catalog
        .any_pending(hour + 3600, hour + 7200)
        .await
        .expect("any"));

    // A write after the roll-up read the versions: that partition stays pending, the others
    // finish; the hour is trimmable only once every partition finished.
    let (expected, new) = (10, 12);
    assert!(hot
        .write(write_of(p0, expected, new, &minutes[..1]))
        .await
        .expect("write"));
    assert!(!catalog.finish_hour(hour, &versions).await.expect("finish"));
    let pending = catalog.pending_hours(i64::MAX).await.expect("pending");
    let p0_version = all.iter().filter(|(_, q)| *q == p0).count() * 3;
    assert_eq!(pending, vec![(hour, format!("{p0}={p0_version}"))]);
    assert_eq!(
        catalog.trimmable_hours(i64::MAX).await.expect("trim"),
        Vec::<i64>::new()
    );
    assert!(catalog
        .finish_hour(hour, &pending[0].1)
        .await
        .expect("finish"));
    assert!(catalog
        .pending_hours(i64::MAX)
        .await
        .expect("pending")
        .is_empty());
    assert_eq!(
        catalog.trimmable_hours(i64::MAX).await.expect("trim"),
        vec![hour]
    );

    // Trimming deletes every cell of the hour, in every partition, and nothing else.
    assert!(hot
        .write(write_of(p0, new, 13, &[hour + 3600 + 60]))
        .await
        .expect("write"));
    assert!(catalog.trim_hour(hour).await.expect("trim"));
    assert_eq!(
        catalog.trimmable_hours(i64::MAX).await.expect("trim"),
        Vec::<i64>::new()
    );
    let read = hot
        .read_range(&keys, hour, hour + 7200)
        .await
        .expect("read");
    let left: usize = read.iter().map(Vec::len).sum();
    assert_eq!(
        left,
        all.iter().filter(|(_, q)| *q == p0).count(),
        "only the next hour's cells"
    );
}

/// A script that touches keys of two slots, as the write script did before the hash tags.
async fn cross_slot_script(url: &str) -> redis::RedisResult<i64> {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::Script::new(
        "#!lua\nredis.call('SET', KEYS[1], 1) redis.call('SADD', 'thermo:tenants', 'x') return 1",
    )
    .key("thermo:{p0}:o:metrics")
    .invoke_async(&mut c)
    .await
}

#[test]
fn the_hot_store_is_fenced_and_keeps_each_write_in_one_slot() {
    let now = thermo_core::window::now_s();
    let hour = now - now.rem_euclid(3600) - 3 * 3600;
    let dir = TempDir::new("hot-store");
    let single = Redis::start(&dir.path().join("single"));
    let node = Redis::start_cluster_node(&dir.path().join("node"));
    let cluster = Redis::start_cluster(&dir.path().join("cluster"), 3);
    let rt = runtime();
    rt.block_on(async {
        exercise(&single.url(), hour).await;
        exercise(&node.url(), hour).await;
        exercise(&cluster.url(), hour).await;
        // What makes the cluster run meaningful: the node refuses a cross-slot script.
        let refused = cross_slot_script(&node.url()).await.expect_err("refused");
        assert!(
            refused.to_string().contains("same slot"),
            "the cluster node's refusal: {refused}"
        );
        assert_eq!(
            cross_slot_script(&single.url())
                .await
                .expect("one Redis runs it"),
            1
        );
    });
}

/// The keys the version before the hash tags wrote, as its write script wrote them.
async fn write_old_schema(url: &str, hours: [i64; 2], keys: &[MetricKey]) {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("thermo:o:metrics:0").arg(41).ignore();
    pipe.cmd("SET").arg("thermo:o:metrics:3").arg(7).ignore();
    for k in keys {
        for (i, h) in hours.iter().enumerate() {
            let data = format!("thermo:d:{k}:{h}");
            let v = route(k) + 1000.0 * i as f64;
            pipe.cmd("HSET")
                .arg(&data)
                .arg(h + 60)
                .arg(counter(v, 7).encode())
                .ignore();
            pipe.cmd("EXPIREAT")
                .arg(&data)
                .arg(h + 3600 + RETENTION)
                .ignore();
        }
        pipe.cmd("ZADD")
            .arg(format!("thermo:s:{}:{}", k.tenant(), k.name()))
            .arg(hours[1] + 60)
            .arg(k.encode())
            .ignore();
        pipe.cmd("HSET")
            .arg(format!("thermo:m:{}", k.tenant()))
            .arg(k.name())
            .arg("counter")
            .ignore();
        pipe.cmd("SADD")
            .arg("thermo:tenants")
            .arg(k.tenant())
            .ignore();
    }
    pipe.cmd("ZADD")
        .arg("thermo:pending")
        .arg(hours[1])
        .arg(hours[1])
        .ignore();
    pipe.cmd("HSET")
        .arg("thermo:hv")
        .arg(hours[1])
        .arg(5)
        .ignore();
    pipe.cmd("HSET")
        .arg("thermo:rolled_at")
        .arg(hours[0])
        .arg(123)
        .ignore();
    let _: () = pipe.query_async(&mut c).await.expect("old schema written");
}

/// Runs `thermo <role>` on the Redis at `url` until it exits (20 s at most): its exit code and
/// standard error.
fn run_role_until_exit(role: &str, url: &str) -> (i32, String) {
    let http = format!("http_addr=127.0.0.1:{}", crate::support::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args([role, "--set", &format!("redis_url={url}"), "--set", &http])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run thermo");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("thermo {role} still running after 20 s on the old key schema");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    (status.code().unwrap_or(-1), stderr)
}

fn migrate(url: &str, partitions: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(["migrate", "--redis-url", url, "--partitions", partitions])
        .output()
        .expect("run thermo migrate")
}

#[test]
fn thermo_migrate_moves_the_old_key_schema_into_partitions() {
    let now = thermo_core::window::now_s();
    let h0 = now - now.rem_euclid(3600) - 2 * 3600;
    let hours = [h0, h0 + 3600];
    let dir = TempDir::new("migrate");
    let redis = Redis::start(dir.path());
    let mut keys: Vec<MetricKey> = series().into_iter().map(|(k, _)| k).take(9).collect();
    keys.extend((0..3).map(|i| {
        MetricKey::new("globex", "orders", vec![("site".into(), format!("/s{i}"))]).expect("key")
    }));
    keys.sort();
    let rt = runtime();
    rt.block_on(async {
        write_old_schema(&redis.url(), hours, &keys).await;
        let refused = RedisHot::connect(&redis.url(), RETENTION)
            .await
            .err()
            .expect("the old schema is refused");
        assert!(!refused.retryable());
        assert!(refused.to_string().contains("thermo migrate"), "{refused}");
    });

    // The roles that use the hot store refuse to start on it, naming the command.
    for role in ["aggregator", "read-service"] {
        let (code, stderr) = run_role_until_exit(role, &redis.url());
        assert_ne!(code, 0, "{role} must not start on the old key schema");
        assert!(stderr.contains("thermo migrate"), "{role}: {stderr}");
    }

    let out = migrate(&redis.url(), "4");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("migrated: 2 offsets, 24 hours of series cells, 12 series, 1 pending hours"),
        "{stdout}"
    );

    rt.block_on(async {
        let hot = RedisHot::connect(&redis.url(), RETENTION)
            .await
            .expect("connect after the migration")
            .with_cold(3600);
        assert_eq!(hot.partitions().await.expect("partitions"), 4);
        assert_eq!(hot.offset(&pid(0)).await.expect("offset"), 41);
        assert_eq!(hot.offset(&pid(3)).await.expect("offset"), 7);
        assert_eq!(hot.offset(&pid(1)).await.expect("offset"), -1);
        let acme: Vec<MetricKey> = keys
            .iter()
            .filter(|k| k.tenant() == "acme")
            .cloned()
            .collect();
        assert_eq!(hot.series("acme", "req", 0).await.expect("series"), acme);
        assert_eq!(
            hot.series("globex", "orders", 0)
                .await
                .expect("series")
                .len(),
            3
        );
        assert_eq!(
            hot.metrics("globex").await.expect("metrics"),
            vec![("orders".to_string(), MetricType::Counter)]
        );
        assert_two_minutes(&hot, &keys, [hours[0] + 60, hours[1] + 60]).await;
        let catalog = RedisCatalog::new(hot.clone());
        assert_eq!(
            catalog.tenants().await.expect("tenants"),
            vec!["acme", "globex"]
        );
        assert_eq!(
            catalog.pending_hours(i64::MAX).await.expect("pending"),
            vec![(hours[1], "0=5".to_string())]
        );
        assert_eq!(
            hot.rolled_up(&[hours[0]]).await.expect("rolled"),
            vec![Some(123)]
        );
        // The aggregator of partition 0 goes on from its offset.
        let k = &keys[0];
        let p = partition_of(k.encode().as_bytes(), 4);
        let offset = hot.offset(&pid(p)).await.expect("offset");
        assert!(hot
            .write(HotWrite {
                totals: Vec::new(),
                partition: pid(p),
                expected_offset: offset,
                new_offset: offset + 1,
                partitions: 4,
                cells: vec![(k.clone(), hours[1] + 120, counter(5.0, 9))],
            })
            .await
            .expect("write"));
    });
    // Expiry kept; nothing of the old schema left.
    let k = &keys[0];
    let p = partition_of(k.encode().as_bytes(), 4);
    assert_eq!(
        redis.cli(&["EXPIRETIME", &format!("thermo:{{p{p}}}:d:{k}:{}", hours[0])]),
        format!("{}\n", hours[0] + 3600 + RETENTION)
    );
    for pattern in [
        "thermo:d:*",
        "thermo:s:*",
        "thermo:m:*",
        "thermo:o:*",
        "thermo:tenants",
        "thermo:pending",
        "thermo:hv",
    ] {
        assert_eq!(redis.cli(&["KEYS", pattern]), "\n", "{pattern}");
    }

    // Again: nothing to do; with another partition count: refused.
    let again = migrate(&redis.url(), "4");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to migrate"));
    let other = migrate(&redis.url(), "5");
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("thermo:partitions is 4"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
}
