//! An in-memory hot store: the same contract as Redis (fenced writes, per-partition offsets,
//! series and metric indexes), with its cold-storage catalog ([`crate::mem_catalog`]), for
//! standalone mode, tests and benchmarks. Retention: the compactor trims hours once cold storage
//! holds them, as with Redis.
//!
//! Durability ([`MemHot::open`]): every accepted change (a write, or a catalog op) is appended to a
//! write-ahead file and `fsync`ed before it is applied, so what was acknowledged survives a crash;
//! opening replays the file (a torn tail is cut off). Frame: `u32 LE length | u32 LE FNV-1a of the
//! body | body`. A write's body = `"TW" 0x02 str topic, iv partition, iv new_offset, uv n, n × (str
//! metric key, iv minute, uv len, HotCell bytes), uv t, t × (str metric key, iv time ms, f64
//! total)`; a write without totals is written as version `0x01`, the same without the totals part
//! (what versions before totals wrote and read, so they can still open the file); a
//! total whose time is before an hour trimmed is forgotten with the hour; catalog bodies (`"TC"`, `"TS"`) are described
//! in `mem_catalog`. When the file passes `compact_bytes` it is rewritten as a snapshot (one frame
//! per partition offset, one per series with its cells under partition −1, one frame of the metric
//! index `"TM" 0x01 uv n, n × (str tenant, str name, str type)` — it outlives trimmed cells, as in
//! Redis —, one catalog frame), through a temporary file and a rename.

use crate::hot::{HotStore, HotWrite, PartitionId};
use crate::mem_catalog::{CatalogOp, CatalogState};
use crate::StoreError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thermo_core::aggregate::fnv1a;
use thermo_core::aggregate::MetricType;
use thermo_core::codec::HotCell;
use thermo_core::codec::{Reader, Writer};
use thermo_core::key::MetricKey;
use thermo_core::window::window_start;

/// The store's state.
#[derive(Default)]
pub(crate) struct Inner {
    offsets: BTreeMap<PartitionId, i64>,
    cells: BTreeMap<MetricKey, BTreeMap<i64, HotCell>>,
    /// The last total of each cumulative series: time ms and value.
    totals: BTreeMap<MetricKey, (i64, f64)>,
    types: BTreeMap<(String, String), MetricType>,
    pub(crate) catalog: CatalogState,
    /// The compactor lease: owner and expiry (memory only).
    lease: Option<(String, std::time::Instant)>,
}

/// The partition of snapshot cell frames (and of [`MemHot::insert`]): no offset, nothing pending.
const SNAPSHOT: PartitionId = PartitionId {
    topic: String::new(),
    partition: -1,
};

/// One logged change.
pub(crate) enum Mutation {
    Write {
        partition: PartitionId,
        new_offset: i64,
        cells: Vec<(MetricKey, i64, HotCell)>,
        totals: Vec<(MetricKey, i64, f64)>,
    },
    Catalog(CatalogOp),
    CatalogSnapshot(CatalogState),
    /// The metric index (snapshots only: it outlives trimmed cells, like Redis's `thermo:m:*`).
    Index(Vec<(String, String, MetricType)>),
}

impl Mutation {
    fn body(&self) -> Vec<u8> {
        match self {
            Mutation::Write {
                partition,
                new_offset,
                cells,
                totals,
            } => write_body(partition, *new_offset, cells, totals),
            Mutation::Catalog(op) => op.encode(),
            Mutation::CatalogSnapshot(s) => s.encode(),
            Mutation::Index(types) => {
                let mut w = Writer::default();
                w.bytes(b"TM\x01");
                w.uv(types.len() as u64);
                for (tenant, name, t) in types {
                    w.str(tenant);
                    w.str(name);
                    w.str(t.as_str());
                }
                w.buf
            }
        }
    }
}

impl Inner {
    fn apply(&mut self, m: Mutation) {
        match m {
            Mutation::Write {
                partition,
                new_offset,
                cells,
                totals,
            } => {
                for (k, time_ms, total) in totals {
                    self.totals.insert(k, (time_ms, total));
                }
                for (k, minute, cell) in cells {
                    self.types.insert(
                        (k.tenant().to_string(), k.name().to_string()),
                        cell.agg.metric_type(),
                    );
                    // Snapshot frames of cells carry no partition (-1) and mark nothing pending.
                    if partition.partition >= 0 {
                        self.catalog.touched(minute);
                    }
                    self.cells.entry(k).or_default().insert(minute, cell);
                }
                if partition.partition >= 0 {
                    self.offsets.insert(partition, new_offset);
                }
            }
            Mutation::Catalog(op) => {
                if let CatalogOp::Trim { hour } = op {
                    self.cells.retain(|_, cells| {
                        cells.retain(|m, _| !(hour..hour + 3600).contains(m));
                        !cells.is_empty()
                    });
                    let end_ms = (hour + 3600).saturating_mul(1000);
                    self.totals.retain(|_, (time_ms, _)| *time_ms >= end_ms);
                }
                self.catalog.apply(&op);
            }
            Mutation::CatalogSnapshot(s) => self.catalog = s,
            Mutation::Index(types) => {
                for (tenant, name, t) in types {
                    self.types.insert((tenant, name), t);
                }
            }
        }
    }
}

/// Hot store in memory.
#[derive(Default)]
pub struct MemHot {
    inner: Mutex<Inner>,
    wal: Option<Mutex<Wal>>,
}

struct Wal {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes of whole frames in the file.
    bytes: u64,
    compact_bytes: u64,
    /// Snapshot when the file passes this: `compact_bytes`, or twice the last snapshot if that is
    /// larger (so a large live state is not rewritten at every change).
    next_compact: u64,
}

fn io(e: std::io::Error, path: &Path) -> StoreError {
    StoreError::io("embedded hot store", e, path)
}

fn write_body(
    partition: &PartitionId,
    new_offset: i64,
    cells: &[(MetricKey, i64, HotCell)],
    totals: &[(MetricKey, i64, f64)],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(b"TW");
    // Version 1 when there are no totals: what a version before them reads (it would take a
    // frame it cannot parse for a torn tail, and cut the file there).
    w.bytes(&[if totals.is_empty() { 1 } else { 2 }]);
    w.str(&partition.topic);
    w.iv(i64::from(partition.partition));
    w.iv(new_offset);
    w.uv(cells.len() as u64);
    for (k, minute, cell) in cells {
        w.str(&k.encode());
        w.iv(*minute);
        let c = cell.encode();
        w.uv(c.len() as u64);
        w.bytes(&c);
    }
    if totals.is_empty() {
        return w.buf;
    }
    w.uv(totals.len() as u64);
    for (k, time_ms, total) in totals {
        w.str(&k.encode());
        w.iv(*time_ms);
        w.f64(*total);
    }
    w.buf
}

/// `length | checksum | body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(fnv1a(body) as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn parse(body: &[u8]) -> Result<Mutation, thermo_core::codec::CodecError> {
    let mut r = Reader::new(body, "hot store log");
    let m = match r.take(3)? {
        b"TW\x01" => parse_write(&mut r, false)?,
        b"TW\x02" => parse_write(&mut r, true)?,
        b"TC\x01" => Mutation::Catalog(CatalogOp::decode(&mut r)?),
        b"TS\x01" => Mutation::CatalogSnapshot(CatalogState::decode(&mut r)?),
        b"TM\x01" => {
            let mut types = Vec::new();
            for _ in 0..r.len(3)? {
                let (tenant, name) = (r.str()?.to_string(), r.str()?.to_string());
                let t = MetricType::parse(r.str()?).ok_or(thermo_core::codec::CodecError {
                    what: "hot store log",
                    problem: "unknown metric type".into(),
                })?;
                types.push((tenant, name, t));
            }
            Mutation::Index(types)
        }
        _ => {
            return Err(thermo_core::codec::CodecError {
                what: "hot store log",
                problem: "bad header".into(),
            })
        }
    };
    r.finish()?;
    Ok(m)
}

fn parse_key(r: &mut Reader<'_>) -> Result<MetricKey, thermo_core::codec::CodecError> {
    MetricKey::parse(r.str()?).map_err(|e| thermo_core::codec::CodecError {
        what: "hot store log",
        problem: e.to_string(),
    })
}

fn parse_write(
    r: &mut Reader<'_>,
    with_totals: bool,
) -> Result<Mutation, thermo_core::codec::CodecError> {
    let topic = r.str()?.to_string();
    let partition = r.iv()? as i32;
    let offset = r.iv()?;
    let n = r.len(3)?;
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        let key = parse_key(r)?;
        let minute = r.iv()?;
        let len = r.len(1)?;
        cells.push((key, minute, HotCell::decode(r.take(len)?)?));
    }
    let mut totals = Vec::new();
    if with_totals {
        for _ in 0..r.len(10)? {
            let key = parse_key(r)?;
            totals.push((key, r.iv()?, r.f64()?));
        }
    }
    Ok(Mutation::Write {
        partition: PartitionId { topic, partition },
        new_offset: offset,
        cells,
        totals,
    })
}

impl MemHot {
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable store whose writes go through the write-ahead file `path` (replayed now).
    pub fn open(path: impl Into<PathBuf>, compact_bytes: u64) -> Result<Self, StoreError> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        }
        let bytes = std::fs::read(&path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(Vec::new())
            } else {
                Err(io(e, &path))
            }
        })?;
        let store = Self::default();
        let mut pos = 0usize;
        // A snapshot written before the catalog existed has cells (partition -1) but no catalog
        // frame: its hours are then marked pending after the replay, so they are rolled up too.
        let (mut snapshot_cells, mut catalog_frame) = (false, false);
        while pos + 8 <= bytes.len() {
            let len =
                u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
                    as usize;
            let sum = u32::from_le_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]);
            let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
                break;
            };
            if fnv1a(body) as u32 != sum {
                break;
            }
            let Ok(m) = parse(body) else {
                break;
            };
            match &m {
                Mutation::Write { partition, .. } if partition.partition < 0 => {
                    snapshot_cells = true
                }
                Mutation::CatalogSnapshot(_) => catalog_frame = true,
                _ => {}
            }
            store.lock().apply(m);
            pos += 8 + len;
        }
        if snapshot_cells && !catalog_frame {
            let mut g = store.lock();
            let hours: std::collections::BTreeSet<i64> = g
                .cells
                .values()
                .flat_map(|c| c.keys().map(|m| window_start(*m, 3600)))
                .collect();
            tracing::info!(
                hours = hours.len(),
                "hot store written before the catalog: its hours are pending roll-up"
            );
            for h in hours {
                g.catalog.touched(h);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(e, &path))?;
        if pos < bytes.len() {
            tracing::warn!(
                cut = bytes.len() - pos,
                "torn tail of the hot store log cut off"
            );
            file.set_len(pos as u64).map_err(|e| io(e, &path))?;
        }
        Ok(Self {
            inner: store.inner,
            wal: Some(Mutex::new(Wal {
                path,
                file,
                bytes: pos as u64,
                compact_bytes,
                next_compact: compact_bytes,
            })),
        })
    }

    /// Rewrites the write-ahead file as a snapshot of the current state.
    fn compact(&self, wal: &mut Wal) -> Result<(), StoreError> {
        let g = self.lock();
        let tmp = wal.path.with_extension("tmp");
        let mut buf = Vec::new();
        for (p, o) in &g.offsets {
            buf.extend_from_slice(&frame(&write_body(p, *o, &[], &[])));
        }
        for (k, minutes) in &g.cells {
            let cells: Vec<(MetricKey, i64, HotCell)> = minutes
                .iter()
                .map(|(m, c)| (k.clone(), *m, c.clone()))
                .collect();
            buf.extend_from_slice(&frame(&write_body(&SNAPSHOT, -1, &cells, &[])));
        }
        let totals: Vec<(MetricKey, i64, f64)> = g
            .totals
            .iter()
            .map(|(k, (t, v))| (k.clone(), *t, *v))
            .collect();
        for chunk in totals.chunks(10_000) {
            buf.extend_from_slice(&frame(&write_body(&SNAPSHOT, -1, &[], chunk)));
        }
        let index = g
            .types
            .iter()
            .map(|((t, n), ty)| (t.clone(), n.clone(), *ty))
            .collect();
        buf.extend_from_slice(&frame(&Mutation::Index(index).body()));
        buf.extend_from_slice(&frame(&g.catalog.encode()));
        drop(g);
        std::fs::write(&tmp, &buf).map_err(|e| io(e, &tmp))?;
        crate::replace_durably(&tmp, &wal.path).map_err(|e| io(e, &wal.path))?;
        wal.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&wal.path)
            .map_err(|e| io(e, &wal.path))?;
        wal.bytes = buf.len() as u64;
        wal.next_compact = wal.compact_bytes.max(wal.bytes.saturating_mul(2));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, for the catalog's reads.
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.lock()
    }

    /// Logs and applies the change `decide` returns for the current state (none: `Ok(false)`).
    /// One change at a time: the write-ahead lock orders the decision, the append and the apply
    /// (without a write-ahead file, the state lock is held across both).
    pub(crate) fn mutate(
        &self,
        decide: impl FnOnce(&Inner) -> Option<Mutation>,
    ) -> Result<bool, StoreError> {
        let Some(wal) = self.wal.as_ref() else {
            let mut g = self.lock();
            let Some(m) = decide(&g) else {
                return Ok(false);
            };
            g.apply(m);
            return Ok(true);
        };
        let mut wal = wal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(m) = decide(&self.lock()) else {
            return Ok(false);
        };
        let frame = frame(&m.body());
        let appended = wal
            .file
            .write_all(&frame)
            .and_then(|()| wal.file.sync_data());
        if let Err(e) = appended {
            // Cut a partial frame off, so that later frames are not appended behind it (a replay
            // would stop there and lose them).
            let _ = wal.file.set_len(wal.bytes);
            return Err(io(e, &wal.path));
        }
        wal.bytes += frame.len() as u64;
        self.lock().apply(m);
        if wal.bytes > wal.next_compact {
            if let Err(e) = self.compact(&mut wal) {
                // The change is durable and applied; the file just stays long until next time.
                wal.next_compact = wal.bytes.saturating_mul(2);
                tracing::warn!("hot store snapshot failed (retried later): {e}");
            }
        }
        Ok(true)
    }

    /// Takes or renews the compactor lease (memory only: one process, one compactor).
    pub(crate) fn lease(&self, owner: &str, ttl_ms: u64) -> bool {
        let now = std::time::Instant::now();
        let mut g = self.lock();
        let free = g
            .lease
            .as_ref()
            .is_none_or(|(o, until)| o == owner || *until <= now);
        if free {
            g.lease = Some((
                owner.to_string(),
                now + std::time::Duration::from_millis(ttl_ms),
            ));
        }
        free
    }

    pub(crate) fn release(&self, owner: &str) {
        let mut g = self.lock();
        if g.lease.as_ref().is_some_and(|(o, _)| o == owner) {
            g.lease = None;
        }
    }

    /// Every tenant that wrote, sorted.
    pub(crate) fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.lock().types.keys().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    }

    /// Puts a cell directly, not logged and not marked pending (tests and benchmarks).
    pub fn insert(&self, key: MetricKey, minute: i64, cell: HotCell) {
        self.lock().apply(Mutation::Write {
            partition: SNAPSHOT,
            new_offset: -1,
            cells: vec![(key, minute, cell)],
            totals: Vec::new(),
        });
    }

    /// Removes a cell (tests: a trim).
    pub fn remove(&self, key: &MetricKey, minute: i64) {
        if let Some(c) = self.lock().cells.get_mut(key) {
            c.remove(&minute);
        }
    }

    /// Marks an hour as rolled up into cold storage at time `at` (tests).
    pub fn mark_rolled(&self, hour: i64, at: i64) {
        self.lock().catalog.set_rolled_at(hour, at);
    }
}

impl HotStore for MemHot {
    async fn offset(&self, partition: &PartitionId) -> Result<i64, StoreError> {
        Ok(self.lock().offsets.get(partition).copied().unwrap_or(-1))
    }

    async fn cells(
        &self,
        _partition: &PartitionId,
        wanted: &[(MetricKey, i64)],
    ) -> Result<Vec<Option<HotCell>>, StoreError> {
        let g = self.lock();
        Ok(wanted
            .iter()
            .map(|(k, m)| g.cells.get(k).and_then(|c| c.get(m)).cloned())
            .collect())
    }

    async fn totals(
        &self,
        _partition: &PartitionId,
        series: &[MetricKey],
    ) -> Result<Vec<Option<(i64, f64)>>, StoreError> {
        let g = self.lock();
        Ok(series.iter().map(|k| g.totals.get(k).copied()).collect())
    }

    /// In memory only (not in the write-ahead file): after a restart the forgotten totals are
    /// back until the next prune, which changes nothing a reader sees.
    async fn prune_totals(
        &self,
        _partition: &PartitionId,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let before = g.totals.len();
        g.totals.retain(|_, (time_ms, _)| *time_ms >= before_ms);
        Ok((before - g.totals.len()) as u64)
    }

    async fn write(&self, w: HotWrite) -> Result<bool, StoreError> {
        self.mutate(|g| {
            (g.offsets.get(&w.partition).copied().unwrap_or(-1) == w.expected_offset).then_some(
                Mutation::Write {
                    partition: w.partition,
                    new_offset: w.new_offset,
                    cells: w.cells,
                    totals: w.totals,
                },
            )
        })
    }

    async fn metrics(&self, tenant: &str) -> Result<Vec<(String, MetricType)>, StoreError> {
        Ok(self
            .lock()
            .types
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, n), ty)| (n.clone(), *ty))
            .collect())
    }

    async fn series(
        &self,
        tenant: &str,
        name: &str,
        since: i64,
    ) -> Result<Vec<MetricKey>, StoreError> {
        Ok(self
            .lock()
            .cells
            .iter()
            .filter(|(k, c)| {
                k.tenant() == tenant && k.name() == name && c.range(since..).next().is_some()
            })
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn series_counts(
        &self,
        tenant: &str,
        since: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (k, c) in &self.lock().cells {
            if k.tenant() == tenant && c.range(since..).next().is_some() {
                *counts.entry(k.name().to_string()).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }

    async fn rolled_up(&self, hours: &[i64]) -> Result<Vec<Option<i64>>, StoreError> {
        let g = self.lock();
        Ok(hours.iter().map(|h| g.catalog.rolled_at(*h)).collect())
    }

    async fn read_range(
        &self,
        series: &[MetricKey],
        from: i64,
        to: i64,
    ) -> Result<Vec<Vec<(i64, HotCell)>>, StoreError> {
        let g = self.lock();
        Ok(series
            .iter()
            .map(|k| {
                g.cells
                    .get(k)
                    .map(|c| c.range(from..to).map(|(m, c)| (*m, c.clone())).collect())
                    .unwrap_or_default()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledged_writes_survive_a_reopen_and_a_compaction() {
        let dir = std::env::temp_dir().join(format!("thermo-memhot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("hot.log");
        let p = PartitionId {
            topic: "t".into(),
            partition: 1,
        };
        let k = MetricKey::new("acme", "req", vec![]).unwrap();
        let cell = |s: f64| HotCell {
            contributors: vec![(1, s as u64)],
            agg: Aggregate::Counter(Counter { sum: s, samples: 1 }),
        };
        {
            let h = MemHot::open(&path, 1 << 20).unwrap();
            for i in 0..5 {
                let w = HotWrite {
                    totals: Vec::new(),
                    partition: p.clone(),
                    expected_offset: i - 1,
                    new_offset: i,
                    partitions: 1,
                    cells: vec![(k.clone(), 60 * i, cell(i as f64))],
                };
                assert!(h.write(w).await.unwrap());
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, bytes).unwrap();
        let h = MemHot::open(&path, 200).unwrap(); // tiny threshold: the next write compacts
        assert_eq!(h.offset(&p).await.unwrap(), 4);
        assert_eq!(
            h.read_range(std::slice::from_ref(&k), 0, 1000)
                .await
                .unwrap()[0]
                .len(),
            5
        );
        let w = HotWrite {
            totals: Vec::new(),
            partition: p.clone(),
            expected_offset: 4,
            new_offset: 5,
            partitions: 1,
            cells: vec![(k.clone(), 600, cell(9.0))],
        };
        assert!(h.write(w).await.unwrap());
        drop(h);
        let h = MemHot::open(&path, 1 << 20).unwrap();
        assert_eq!(h.offset(&p).await.unwrap(), 5);
        assert_eq!(
            h.read_range(std::slice::from_ref(&k), 0, 1000)
                .await
                .unwrap()[0]
                .len(),
            6
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    use thermo_core::aggregate::{Aggregate, Counter};

    /// A file whose snapshot was written before the catalog existed (cells under partition -1, no
    /// catalog frame): its hours come back pending, so the compactor rolls them up.
    #[tokio::test]
    async fn hours_of_a_snapshot_from_before_the_catalog_are_pending() {
        use crate::catalog::Catalog;
        use crate::mem_catalog::MemCatalog;
        let dir = std::env::temp_dir().join(format!("thermo-memhot-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hot.log");
        let k = MetricKey::new("acme", "req", vec![]).unwrap();
        let cell = HotCell {
            contributors: vec![(1, 1)],
            agg: Aggregate::Counter(Counter {
                sum: 1.0,
                samples: 1,
            }),
        };
        let p = PartitionId {
            topic: "local".into(),
            partition: 0,
        };
        let cells = vec![
            (k.clone(), 7200 + 60, cell.clone()),
            (k.clone(), 7200 + 120, cell.clone()),
            (k.clone(), 10_800, cell.clone()),
        ];
        let mut old = frame(&write_body(&p, 41, &[], &[]));
        old.extend_from_slice(&frame(&write_body(&SNAPSHOT, -1, &cells, &[])));
        std::fs::write(&path, old).unwrap();

        let c = MemCatalog::new(std::sync::Arc::new(MemHot::open(&path, 1 << 20).unwrap()));
        let hours: Vec<i64> = c
            .pending_hours(i64::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        assert_eq!(hours, vec![7200, 10_800]);
        assert_eq!(c.hot().offset(&p).await.unwrap(), 41);
        drop(c);
        // After a snapshot the catalog frame carries them.
        let c = MemCatalog::new(std::sync::Arc::new(MemHot::open(&path, 1).unwrap()));
        c.mark_dirty(thermo_core::window::Resolution::FiveMinutes, 0)
            .await
            .unwrap();
        drop(c);
        let c = MemCatalog::new(std::sync::Arc::new(MemHot::open(&path, 1 << 20).unwrap()));
        assert_eq!(c.pending_hours(i64::MAX).await.unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn totals_are_kept_with_the_write_survive_a_reopen_and_go_with_their_hour() {
        let dir = std::env::temp_dir().join(format!("thermo-memhot-totals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("hot.log");
        let p = PartitionId {
            topic: "t".into(),
            partition: 0,
        };
        let (a, b) = (
            MetricKey::new("acme", "req_total", vec![]).unwrap(),
            MetricKey::new("acme", "err_total", vec![]).unwrap(),
        );
        let w = |expected, new, totals: Vec<(MetricKey, i64, f64)>| HotWrite {
            partition: p.clone(),
            expected_offset: expected,
            new_offset: new,
            partitions: 1,
            cells: Vec::new(),
            totals,
        };
        let h = MemHot::open(&path, 1 << 20).unwrap();
        assert!(h
            .write(w(-1, 1, vec![(a.clone(), 7_200_000, 5.5)]))
            .await
            .unwrap());
        // Fenced: nothing of a stale write is kept.
        assert!(!h
            .write(w(-1, 2, vec![(a.clone(), 7_300_000, 9.0)]))
            .await
            .unwrap());
        assert!(h
            .write(w(1, 2, vec![(b.clone(), 3_500_000, 0.1 + 0.2)]))
            .await
            .unwrap());
        let want = vec![Some((7_200_000, 5.5)), Some((3_500_000, 0.1 + 0.2))];
        assert_eq!(h.totals(&p, &[a.clone(), b.clone()]).await.unwrap(), want);
        drop(h);
        // Replayed from the log, then from a snapshot (compact_bytes 1: every write compacts).
        let h = MemHot::open(&path, 1).unwrap();
        assert_eq!(h.totals(&p, &[a.clone(), b.clone()]).await.unwrap(), want);
        assert!(h.write(w(2, 3, Vec::new())).await.unwrap());
        drop(h);
        let h = MemHot::open(&path, 1 << 20).unwrap();
        assert_eq!(h.totals(&p, &[a.clone(), b.clone()]).await.unwrap(), want);
        // Trimming the hour [0, 3600) forgets b's total (last seen in it), not a's.
        h.mutate(|_| Some(Mutation::Catalog(CatalogOp::Trim { hour: 0 })))
            .unwrap();
        assert_eq!(
            h.totals(&p, &[a.clone(), b.clone()]).await.unwrap(),
            vec![Some((7_200_000, 5.5)), None]
        );
        // Pruning forgets totals older than the cut-off.
        assert_eq!(h.prune_totals(&p, 7_200_000).await.unwrap(), 0);
        assert_eq!(h.prune_totals(&p, 7_200_001).await.unwrap(), 1);
        assert_eq!(
            h.totals(&p, std::slice::from_ref(&a)).await.unwrap(),
            vec![None]
        );
        // A write without totals is a frame of version 1, which versions before totals read.
        let v1 = write_body(&p, 9, &[], &[]);
        assert_eq!(&v1[..3], b"TW\x01");
        assert!(matches!(
            parse(&v1),
            Ok(Mutation::Write { new_offset: 9, .. })
        ));
        let v2 = write_body(&p, 9, &[], &[(a.clone(), 1, 2.0)]);
        assert_eq!(&v2[..3], b"TW\x02");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn writes_are_fenced_by_the_partition_offset() {
        let h = MemHot::new();
        let p = PartitionId {
            topic: "t".into(),
            partition: 0,
        };
        let k = MetricKey::new("acme", "req", vec![]).unwrap();
        let cell = HotCell {
            contributors: vec![(1, 1)],
            agg: Aggregate::Counter(Counter {
                sum: 2.0,
                samples: 1,
            }),
        };
        let w = |expected, new| HotWrite {
            totals: Vec::new(),
            partition: p.clone(),
            expected_offset: expected,
            new_offset: new,
            partitions: 1,
            cells: vec![(k.clone(), 60, cell.clone())],
        };
        assert!(h.write(w(-1, 5)).await.unwrap());
        assert!(
            !h.write(w(-1, 6)).await.unwrap(),
            "a stale writer is fenced"
        );
        assert_eq!(h.offset(&p).await.unwrap(), 5);
        assert_eq!(
            h.read_range(std::slice::from_ref(&k), 0, 120)
                .await
                .unwrap()[0]
                .len(),
            1
        );
        assert_eq!(
            h.metrics("acme").await.unwrap(),
            vec![("req".to_string(), MetricType::Counter)]
        );
        assert_eq!(h.series("acme", "req", 61).await.unwrap().len(), 0);
    }
}
