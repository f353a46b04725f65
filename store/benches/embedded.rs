//! The embedded backends of `thermo standalone`, on this machine's disk: what one durable step
//! costs, `fsync` included.
//!
//! - `log_append/2000_records`: [`LocalLog::send_all`] of 2,000 records of 60 bytes over 4
//!   partitions (one ingest request of 2,000 series-minutes: 4 appends, 4 `fsync`s);
//! - `hot_write/2000_cells`: [`MemHot`] `write` of 2,000 cells (1,500 counters, 500 histograms of
//!   20 values; one aggregator batch: encoding, one write-ahead append, one `fsync`, the apply),
//!   onto a store that already holds them (the steady state of a minute being merged); the batch is
//!   cloned outside the timed part;
//! - `catalog/mark_dirty`: one logged catalog op (one small append, one `fsync`).
//!
//! Throughput is in records, cells or ops. Files go under the system temp directory.
//!
//! Run: `cargo bench -p thermo-store --bench embedded -- --warm-up-time 1 --measurement-time 5`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use thermo_core::aggregate::{Aggregate, Counter, Hist};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;
use thermo_store::catalog::Catalog;
use thermo_store::hot::{HotStore, HotWrite, PartitionId};
use thermo_store::local_log::LocalLog;
use thermo_store::log::{LogConsumer, LogProducer};
use thermo_store::mem_catalog::MemCatalog;
use thermo_store::mem_hot::MemHot;

const N: usize = 2000;
const MINUTE: i64 = 1_700_000_040;

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("thermo-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cells() -> Vec<(MetricKey, i64, HotCell)> {
    (0..N)
        .map(|i| {
            let tags = vec![("route".to_string(), format!("/r{i}"))];
            let (name, agg) = if i % 4 == 3 {
                let mut h = Hist::default();
                for v in 1..=20 {
                    h.record((v * (i % 97 + 1)) as f64, 1);
                }
                ("http.latency", Aggregate::Histogram(h))
            } else {
                let c = Counter {
                    sum: i as f64,
                    samples: 1,
                };
                ("http.requests", Aggregate::Counter(c))
            };
            let key = MetricKey::new("acme", name, tags).expect("key");
            let cell = HotCell {
                contributors: vec![(7, i as u64)],
                agg,
            };
            (key, MINUTE, cell)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let log_dir = dir("log");
    let log = LocalLog::open(&log_dir, 4, 10_000_000).expect("log");
    let mut consumer = log.consumer();
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| (format!("acme/http.requests{{route=/r{i}}}"), vec![7u8; 60]))
        .collect();
    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Elements(N as u64));
    let mut sent = 0i64;
    g.bench_function("2000_records", |b| {
        b.iter(|| {
            rt.block_on(log.send_all(records.clone())).expect("append");
            sent += 1;
            // Stay far below the bound: consume and commit what was appended now and then.
            if sent % 200 == 0 {
                let polled = rt
                    .block_on(consumer.poll(usize::MAX, std::time::Duration::ZERO))
                    .expect("poll");
                let mut next = [0i64; 4];
                for r in polled {
                    next[r.partition as usize] = r.offset + 1;
                }
                let offsets: Vec<(i32, i64)> = (0..4)
                    .map(|p| (p as i32, next[p]))
                    .filter(|(_, o)| *o > 0)
                    .collect();
                consumer.commit(&offsets).expect("commit");
            }
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&log_dir);

    let hot_dir = dir("hot");
    let hot = Arc::new(MemHot::open(hot_dir.join("hot.log"), 256 << 20).expect("hot"));
    let partition = PartitionId {
        topic: "local".into(),
        partition: 0,
    };
    let batch = cells();
    let mut offset = -1i64;
    let mut g = c.benchmark_group("hot_write");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("2000_cells", |b| {
        b.iter_batched(
            || batch.clone(),
            |cells| {
                let w = HotWrite {
                    totals: Vec::new(),
                    partition: partition.clone(),
                    expected_offset: offset,
                    new_offset: offset + 1,
                    partitions: 4,
                    cells,
                };
                assert!(rt.block_on(hot.write(w)).expect("write"));
                offset += 1;
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let catalog = MemCatalog::new(hot.clone());
    let mut g = c.benchmark_group("catalog");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mark_dirty", |b| {
        b.iter(|| {
            rt.block_on(catalog.mark_dirty(Resolution::FiveMinutes, 86_400))
                .expect("op")
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&hot_dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
