//! The Redis hot store on a `redis-server` of its own (127.0.0.1, no persistence): what an
//! aggregator's step and a dashboard's read cost. A program that prints its figures.
//!
//! - `write`: one aggregator step of 2,000 series-minutes of one partition (1,500 counters, 500
//!   histograms of 20 values): `cells` (the stored states, one pipelined `HGET` each) and then
//!   `write` (the fenced script: cells, series index, metric types, offset, cold-storage
//!   bookkeeping). Each step writes the next minute, so the store grows as it does in service.
//! - `read`: the 1,500 counter series of that partition listed (`series`) and read over the 60
//!   minutes written (`read_range`), as a dashboard's hot read does.
//!
//! The series are those of a 6-partition topic that land in partition 0, so the batch is what one
//! aggregator writes in one step. Figures: the median of the rounds, in series-minutes a second,
//! on one Redis, then on a Redis Cluster of 3 masters on this machine (`cluster` in the arguments:
//! only that; `single`: only one Redis).
//!
//! Run: `cargo bench --workspace --bench redis_hot` (needs `redis-server` and `redis-cli` on the
//! PATH).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thermo_core::aggregate::{Aggregate, Counter, Hist};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_store::hot::{HotStore, HotWrite, PartitionId};
use thermo_store::log::partition_of;
use thermo_store::redis_hot::RedisHot;

const SERIES: usize = 2000;
const PARTITIONS: u32 = 6;
const ROUNDS: i64 = 60;

/// The redis-servers this program started; killed when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a redis-server on `port` into `servers` (so that it is killed whatever happens) and
/// waits until it listens.
fn spawn_redis(servers: &mut Servers, port: u16, extra: &[&str]) {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH (apt-get install redis-server)");
    servers.0.push(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not listen on {port}");
}

fn start_redis() -> (Servers, String) {
    let port = free_port();
    let mut servers = Servers(Vec::new());
    spawn_redis(&mut servers, port, &[]);
    (servers, format!("redis://127.0.0.1:{port}"))
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli on the PATH (apt-get install redis-tools)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Three masters joined with `redis-cli --cluster create`, their files under the temp directory.
fn start_cluster() -> (Servers, String) {
    let dir = std::env::temp_dir().join(format!("thermo-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Servers(Vec::new());
    for p in &ports {
        let conf = dir.join(format!("nodes-{p}.conf")).display().to_string();
        let bus = free_port().to_string();
        spawn_redis(
            &mut servers,
            *p,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-port",
                &bus,
            ],
        );
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    redis_cli(ports[0], &args);
    for p in &ports {
        let mut ok = false;
        for _ in 0..200 {
            if redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ok, "the cluster did not come up");
    }
    let url = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (servers, url)
}

/// 2,000 series of partition 0: every fourth a histogram.
fn keys() -> Vec<MetricKey> {
    let mut out = Vec::with_capacity(SERIES);
    let mut i = 0usize;
    while out.len() < SERIES {
        let name = if out.len() % 4 == 3 {
            "http.latency"
        } else {
            "http.requests"
        };
        let key = MetricKey::new("acme", name, vec![("route".into(), format!("/r{i}"))])
            .expect("a valid key");
        if partition_of(key.encode().as_bytes(), PARTITIONS) == 0 {
            out.push(key);
        }
        i += 1;
    }
    out
}

fn cell(i: usize, histogram: bool) -> HotCell {
    let agg = if histogram {
        let mut h = Hist::default();
        for v in 1..=20 {
            h.record((v * (i % 97 + 1)) as f64, 1);
        }
        Aggregate::Histogram(h)
    } else {
        Aggregate::Counter(Counter {
            sum: i as f64,
            samples: 1,
        })
    };
    HotCell {
        contributors: vec![(7, i as u64)],
        agg,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = |what: &str| args.iter().any(|a| a == what);
    if !only("cluster") {
        let (_servers, url) = start_redis();
        measure("one Redis", &url);
    }
    if !only("single") {
        let (_servers, url) = start_cluster();
        measure("Redis Cluster, 3 masters", &url);
    }
}

/// The write steps, then the reads, on the Redis at `url`; prints the figures.
fn measure(what: &str, url: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let hot = rt
        .block_on(RedisHot::connect(url, 48 * 3600))
        .expect("connect")
        .with_cold(3600);
    let keys = keys();
    let partition = PartitionId {
        topic: "metrics".into(),
        partition: 0,
    };
    let now = thermo_core::window::now_s();
    let first = now - now.rem_euclid(3600) - 3600;

    let mut write_rates = Vec::new();
    for round in 0..ROUNDS {
        let minute = first + round * 60;
        let wanted: Vec<(MetricKey, i64)> = keys.iter().map(|k| (k.clone(), minute)).collect();
        let cells: Vec<(MetricKey, i64, HotCell)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), minute, cell(i, i % 4 == 3)))
            .collect();
        let started = Instant::now();
        let stored = rt.block_on(hot.cells(&partition, &wanted)).expect("cells");
        assert_eq!(stored.len(), SERIES);
        let applied = rt
            .block_on(hot.write(HotWrite {
                totals: Vec::new(),
                partition: partition.clone(),
                expected_offset: round - 1,
                new_offset: round,
                partitions: PARTITIONS,
                cells,
            }))
            .expect("write");
        assert!(applied, "not fenced");
        write_rates.push(SERIES as f64 / started.elapsed().as_secs_f64());
    }

    let mut read_rates = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let series = rt
            .block_on(hot.series("acme", "http.requests", first))
            .expect("series");
        let cells = rt
            .block_on(hot.read_range(&series, first, first + ROUNDS * 60))
            .expect("read");
        let n: usize = cells.iter().map(Vec::len).sum();
        assert_eq!(n, SERIES / 4 * 3 * ROUNDS as usize, "every minute read");
        read_rates.push(n as f64 / started.elapsed().as_secs_f64());
    }

    println!(
        "{what}: write: {:.0} series-minutes/s (median of {ROUNDS} steps of {SERIES})",
        median(write_rates)
    );
    println!(
        "{what}: read: {:.0} series-minutes/s (median of 15 reads of {} series x {ROUNDS} minutes)",
        median(read_rates),
        SERIES / 4 * 3
    );
}
