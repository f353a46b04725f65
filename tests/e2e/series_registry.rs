//! The series registry contract on Redis: the conformance suite every backend passes
//! (`thermo_store::series_suite`, also run on memory in the store crate's unit tests), here
//! against redis-server (one, and a Redis Cluster of 3 masters), with the backend partitioner
//! replicas share; and the key layout that docs/storage.md states.

use crate::support::{Redis, TempDir};
use thermo_store::redis_series::RedisSeriesRegistry;
use thermo_store::series_registry::{SeriesLimits, SeriesRegistry};

#[test]
fn redis_passes_the_series_registry_suite() {
    passes_the_suite(false);
}

#[test]
fn a_redis_cluster_passes_the_series_registry_suite() {
    passes_the_suite(true);
}

/// On one Redis, or on a Redis Cluster of 3 masters (each script's keys share the tenant's slot).
fn passes_the_suite(cluster: bool) {
    let dir = TempDir::new("series-registry");
    let redis = if cluster {
        Redis::start_cluster(dir.path(), 3)
    } else {
        Redis::start(dir.path())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let reg = RedisSeriesRegistry::connect(&redis.url())
            .await
            .expect("connect");
        thermo_store::series_suite::run(&reg, "suite").await;
        // The keys: a sorted set of series with their last-seen time, and the hour's count.
        let hour = 500_000 * 3600;
        let series = vec!["acme/req{}".to_string(), "acme/err{}".to_string()];
        let limits = SeriesLimits::default();
        reg.admit("acme", &series, limits, hour + 5, 3600)
            .await
            .expect("admit");
    });
    let hour = 500_000 * 3600;
    assert_eq!(
        redis.cli(&["ZRANGE", "thermo:c:{acme}:seen", "0", "-1", "WITHSCORES"]),
        format!("acme/err{{}}\n{}\nacme/req{{}}\n{}\n", hour + 5, hour + 5)
    );
    assert_eq!(
        redis.cli(&["GET", &format!("thermo:c:{{acme}}:new:{hour}")]),
        "2\n"
    );
}
