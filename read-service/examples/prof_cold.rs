use prometheus::{IntCounter, IntGauge};
use std::time::Instant;
use thermo_core::aggregate::{Aggregate, Counter};
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;
use thermo_read_service::cache::ColdCache;
use thermo_read_service::cold::{ColdCounters, ColdReader, Want};
use thermo_store::catalog::object_key;
use thermo_store::cold::{ColdStore, LocalDirCold};
use thermo_store::cold_format::{encode_tuned, ColdRow, Tuning};

const END: i64 = 1_795_651_200 + 604_800;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let iters: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::path::PathBuf::from(format!("/tmp/prof-cold-{n}"));
    let store = LocalDirCold::new(&dir);
    let chunk = END - 3600;
    let key = object_key("cold/v1", "acme", Resolution::OneMinute, chunk);
    if !dir.join(&key).exists() {
        let rows: Vec<ColdRow> = (0..n)
            .flat_map(|i| {
                let series =
                    MetricKey::new("acme", "req", vec![("host".into(), format!("h{i}"))]).unwrap();
                (0..60).map(move |w| ColdRow {
                    series: series.clone(),
                    window_start: chunk + w * 60,
                    cell: HotCell {
                        contributors: vec![(0x9e37_79b9 ^ i as u64, 1_000 + w as u64)],
                        agg: Aggregate::Counter(Counter {
                            sum: (i * 7 + w as usize % 13) as f64,
                            samples: 3,
                        }),
                    },
                })
            })
            .collect();
        let bytes = encode_tuned(Resolution::OneMinute, rows, Tuning::default()).unwrap();
        rt.block_on(store.put(&key, bytes)).unwrap();
    }
    let filters = [("host".to_string(), "h7".to_string())];
    let want = Want {
        tenant: "acme",
        metric: "req",
        filters: &filters,
    };
    let c = |n: &str| IntCounter::new(n, n).unwrap();
    let mut times = Vec::new();
    for _ in 0..iters {
        let cache = ColdCache::new(1 << 30, c("h"), c("m"), IntGauge::new("b", "b").unwrap());
        let reader = ColdReader::new(
            store.clone(),
            "cold/v1",
            cache,
            ColdCounters::unregistered(),
        );
        let t = Instant::now();
        let rows = rt
            .block_on(reader.rows(want, Resolution::OneMinute, chunk, 1))
            .unwrap()
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rows.len(), 60);
    }
    times.sort_by(f64::total_cmp);
    steps(&dir.join(&key), iters);
    if std::env::var("ONLY_STEPS").is_ok() {
        return;
    }
    println!(
        "n={n} median {:.3} ms p10 {:.3}",
        times[times.len() / 2],
        times[times.len() / 10]
    );
}

#[allow(dead_code)]
pub fn steps(path: &std::path::Path, iters: usize) {
    use bytes::Bytes;
    use thermo_store::cold_select::*;
    let all = Bytes::from(std::fs::read(path).unwrap());
    let size = all.len() as u64;
    let tail_len = (256u64 << 10).min(size);
    let mut t = [0f64; 6];
    for _ in 0..iters {
        let s = Instant::now();
        let tail = Bytes::copy_from_slice(&all[(size - tail_len) as usize..]);
        t[0] += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let Tail::Footer(f) = Footer::parse(tail, size).unwrap() else {
            panic!()
        };
        t[1] += s.elapsed().as_secs_f64();
        let filters = [("host".to_string(), "h7".to_string())];
        let range = f.key_range("acme", "req", &filters);
        let mut sparse = Sparse::new(size);
        sparse.insert(0, all.clone());
        let sparse = std::sync::Arc::new(sparse);
        for rg in f.row_groups(&range) {
            let s = Instant::now();
            let idx = match f.index_ranges(rg) {
                None => RowGroupIndex::decode(&f, rg, None).unwrap(),
                Some([ci, oi]) => {
                    let cib = all.slice(ci.start as usize..ci.end as usize);
                    let oib = all.slice(oi.start as usize..oi.end as usize);
                    RowGroupIndex::decode(&f, rg, Some((&cib, &oib, oi.start))).unwrap()
                }
            };
            t[2] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let pages = idx.key_fetch(&range);
            let sel = select_keys(&f, &idx, &sparse, &pages, &range, |k| {
                k.tags().iter().any(|(_, v)| v == "h7")
            })
            .unwrap();
            t[3] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let (rows, _) = read_rows(&f, &idx, &sparse, &sel).unwrap();
            t[4] += s.elapsed().as_secs_f64();
            assert_eq!(rows.len(), 60);
            let s = Instant::now();
            drop(idx);
            t[5] += s.elapsed().as_secs_f64();
        }
        let s = Instant::now();
        drop(f);
        t[5] += s.elapsed().as_secs_f64();
    }
    let n = iters as f64 / 1e3;
    println!(
        "tail copy {:.3} footer {:.3} index {:.3} keys {:.3} rows {:.3} drops {:.3} (ms)",
        t[0] / n,
        t[1] / n,
        t[2] / n,
        t[3] / n,
        t[4] / n,
        t[5] / n
    );
}
