//! Decoding stored cells: what every hot read, roll-up and aggregator merge pays per
//! series-minute of a timer.
//!
//! - `decode_hot_cell/timer_20`: a `HotCell` of a histogram of 20 values (1 to 20 ms, a quiet
//!   series' minute) with one contribution;
//! - `decode_hot_cell/timer_500`: of 500 values (1 to 500 ms, a busy one);
//! - `decode_hot_cell/counter`: a counter, for scale.
//!
//! Run: `cargo bench --workspace --bench codec -- --warm-up-time 1 --measurement-time 5`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use thermo_core::aggregate::{Aggregate, Counter, Hist};
use thermo_core::codec::HotCell;

fn timer(values: u32) -> Vec<u8> {
    let mut h = Hist::new();
    for v in 1..=values {
        h.record(f64::from(v), 1);
    }
    HotCell {
        contributors: vec![(7, 1)],
        agg: Aggregate::Histogram(h),
    }
    .encode()
}

fn codec(c: &mut Criterion) {
    let counter = HotCell {
        contributors: vec![(7, 1)],
        agg: Aggregate::Counter(Counter {
            sum: 3.0,
            samples: 3,
        }),
    }
    .encode();
    let mut g = c.benchmark_group("decode_hot_cell");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in [
        ("timer_20", timer(20)),
        ("timer_500", timer(500)),
        ("counter", counter),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| HotCell::decode(black_box(&bytes)).expect("decodes"))
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
