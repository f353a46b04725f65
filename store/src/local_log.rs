//! An embedded, durable log: the standalone stand-in for Kafka, behind the same contract.
//!
//! Layout: one append-only file per partition, `<dir>/p<N>.log`, each record framed as
//! `u32 LE length | u32 LE FNV-1a checksum of the body | body`, body = `uv key length, key, value`.
//! The file starts with `u64 LE base offset` (the offset of its first record). Offsets are
//! contiguous per partition. Committed positions live in `<dir>/committed` (text, one
//! `partition offset` per line), written atomically (temp file + rename).
//!
//! Guarantees, as for Kafka: a key always maps to one partition (`crate::log::partition_of`);
//! `send_all` returns `Ok` only after the records are written and `fsync`ed; a consumer sees a
//! partition's records in offset order. A torn tail (crash mid-append) is detected by its
//! length/checksum and cut off at open. Bounded: a partition holds at most `max_records`
//! uncommitted records; beyond that `send_all` fails (the sender retries later), and records below
//! the committed position are dropped from memory and from disk when the file is compacted.

use crate::log::{partition_of, LogConsumer, LogProducer, LogRecord};
use crate::StoreError;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thermo_core::aggregate::fnv1a;
use thermo_core::codec::{Reader, Writer};
use tokio::sync::Notify;

/// A partition's records in memory: `(key, value)` from `base` on.
type Records = VecDeque<(Vec<u8>, Vec<u8>)>;

struct Partition {
    file: std::fs::File,
    path: PathBuf,
    base: i64,
    records: Records,
    committed: i64,
}

impl Partition {
    fn next_offset(&self) -> i64 {
        self.base + self.records.len() as i64
    }
}

struct Inner {
    dir: PathBuf,
    parts: Vec<Partition>,
    max_records: usize,
}

/// The log, shared by its producer and consumer handles.
#[derive(Clone)]
pub struct LocalLog {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    topic: String,
}

fn io(e: std::io::Error, what: &Path) -> StoreError {
    StoreError::io("local log", e, what)
}

fn frame(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = Writer::default();
    body.uv(key.len() as u64);
    body.bytes(key);
    body.bytes(value);
    let mut out = Vec::with_capacity(body.buf.len() + 8);
    out.extend_from_slice(&(body.buf.len() as u32).to_le_bytes());
    out.extend_from_slice(&(fnv1a(&body.buf) as u32).to_le_bytes());
    out.extend_from_slice(&body.buf);
    out
}

/// Reads a partition file; returns its base, records and the length of the valid prefix.
fn read_partition(bytes: &[u8]) -> (i64, Records, usize) {
    let mut records = VecDeque::new();
    if bytes.len() < 8 {
        return (0, records, 0);
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&bytes[..8]);
    let base = i64::from_le_bytes(b8);
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let mut b4 = [0u8; 4];
        b4.copy_from_slice(&bytes[pos..pos + 4]);
        let len = u32::from_le_bytes(b4) as usize;
        b4.copy_from_slice(&bytes[pos + 4..pos + 8]);
        let sum = u32::from_le_bytes(b4);
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if fnv1a(body) as u32 != sum {
            break;
        }
        let mut r = Reader::new(body, "log record");
        let Ok(klen) = r.len(1) else { break };
        let Ok(key) = r.take(klen) else { break };
        let value = body[body.len() - r.remaining()..].to_vec();
        records.push_back((key.to_vec(), value));
        pos += 8 + len;
    }
    (base, records, pos)
}

impl LocalLog {
    /// Opens (or creates) a log of `partitions` partitions under `dir`.
    pub fn open(
        dir: impl Into<PathBuf>,
        partitions: usize,
        max_records: usize,
    ) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        let committed = read_committed(&dir.join("committed"));
        let mut parts = Vec::new();
        for p in 0..partitions.max(1) {
            let path = dir.join(format!("p{p}.log"));
            let mut bytes = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&path) {
                f.read_to_end(&mut bytes).map_err(|e| io(e, &path))?;
            }
            let (base, records, valid) = read_partition(&bytes);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io(e, &path))?;
            if bytes.len() < 8 {
                file.set_len(0).map_err(|e| io(e, &path))?;
                (&file)
                    .write_all(&0i64.to_le_bytes())
                    .map_err(|e| io(e, &path))?;
            } else if valid < bytes.len() {
                tracing::warn!(
                    partition = p,
                    cut = bytes.len() - valid,
                    "torn tail of the local log cut off"
                );
                file.set_len(valid as u64).map_err(|e| io(e, &path))?;
            }
            let mut file = file;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::End(0))
                .map_err(|e| io(e, &path))?;
            parts.push(Partition {
                file,
                path,
                base,
                records,
                committed: committed.get(p).copied().unwrap_or(base),
            });
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                dir,
                parts,
                max_records,
            })),
            notify: Arc::new(Notify::new()),
            topic: "local".into(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next offset of every partition (index = partition): a consumer that committed these
    /// has processed every record sent so far.
    pub fn end_offsets(&self) -> Vec<i64> {
        self.lock()
            .parts
            .iter()
            .map(Partition::next_offset)
            .collect()
    }

    /// Whether the committed position of every partition has reached `ends` (from
    /// [`Self::end_offsets`]).
    pub fn consumed(&self, ends: &[i64]) -> bool {
        let g = self.lock();
        ends.iter()
            .zip(&g.parts)
            .all(|(end, part)| part.committed >= *end)
    }

    /// A consumer reading every partition from its committed position.
    pub fn consumer(&self) -> LocalConsumer {
        let positions = self.lock().parts.iter().map(|p| p.committed).collect();
        LocalConsumer {
            log: self.clone(),
            positions,
        }
    }
}

fn read_committed(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(p, o)| Some((p.parse::<usize>().ok()?, o.parse::<i64>().ok()?)))
        .fold(Vec::new(), |mut v, (p, o)| {
            if v.len() <= p {
                v.resize(p + 1, 0);
            }
            v[p] = o;
            v
        })
}

impl LogProducer for LocalLog {
    async fn send_all(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = log.lock();
            let n = u32::try_from(g.parts.len()).unwrap_or(u32::MAX);
            let max = g.max_records;
            let mut by_part: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); g.parts.len()];
            for (k, v) in records {
                let p = partition_of(k.as_bytes(), n) as usize;
                by_part[p].push((k.into_bytes(), v));
            }
            for (p, recs) in by_part.into_iter().enumerate() {
                if recs.is_empty() {
                    continue;
                }
                let part = &mut g.parts[p];
                let uncommitted = (part.next_offset() - part.committed).max(0) as usize;
                if uncommitted + recs.len() > max {
                    return Err(StoreError::Unavailable {
                        backend: "local log",
                        detail: format!(
                            "partition {p} holds {uncommitted} unconsumed records (max {max})"
                        ),
                    });
                }
                let mut buf = Vec::new();
                for (k, v) in &recs {
                    buf.extend_from_slice(&frame(k, v));
                }
                part.file.write_all(&buf).map_err(|e| io(e, &part.path))?;
                part.file.sync_data().map_err(|e| io(e, &part.path))?;
                part.records.extend(recs);
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Invalid(e.to_string()))??;
        self.notify.notify_waiters();
        Ok(())
    }
}

/// The single consumer of a [`LocalLog`] (standalone has one aggregator).
pub struct LocalConsumer {
    log: LocalLog,
    positions: Vec<i64>,
}

impl LocalConsumer {
    fn take(&mut self, max: usize) -> Vec<LogRecord> {
        let g = self.log.lock();
        let mut out = Vec::new();
        for (p, part) in g.parts.iter().enumerate() {
            let from = self.positions[p].max(part.base);
            let start = (from - part.base) as usize;
            for (i, (k, v)) in part.records.iter().enumerate().skip(start) {
                if out.len() >= max {
                    break;
                }
                out.push(LogRecord {
                    partition: p as i32,
                    offset: part.base + i as i64,
                    key: k.clone(),
                    value: v.clone(),
                    produced_ms: None,
                });
            }
        }
        drop(g);
        for r in &out {
            self.positions[r.partition as usize] = r.offset + 1;
        }
        out
    }
}

impl LogConsumer for LocalConsumer {
    fn topic(&self) -> &str {
        &self.log.topic
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, StoreError> {
        let notified = self.log.notify.clone();
        let waiter = notified.notified();
        let out = self.take(max);
        if !out.is_empty() {
            return Ok(out);
        }
        let _ = tokio::time::timeout(wait, waiter).await;
        Ok(self.take(max))
    }

    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), StoreError> {
        let mut g = self.log.lock();
        for (p, next) in offsets {
            if let Some(part) = g.parts.get_mut(*p as usize) {
                part.committed = part.committed.max(*next);
                // Forget what every reader is past; the file is compacted when it is mostly dead.
                while part.base < part.committed && !part.records.is_empty() {
                    part.records.pop_front();
                    part.base += 1;
                }
            }
        }
        let text: String = g
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| format!("{p} {}\n", part.committed))
            .collect();
        let path = g.dir.join("committed");
        let tmp = g.dir.join("committed.tmp");
        std::fs::write(&tmp, text).map_err(|e| io(e, &tmp))?;
        crate::replace_durably(&tmp, &path).map_err(|e| io(e, &path))?;
        for part in g.parts.iter_mut() {
            compact(part)?;
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<i32> {
        (0..self.positions.len() as i32).collect()
    }

    fn partition_count(&mut self) -> Result<u32, StoreError> {
        Ok(u32::try_from(self.positions.len()).unwrap_or(u32::MAX))
    }

    fn seek(&mut self, partition: i32, offset: i64) -> Result<(), StoreError> {
        if let Some(p) = self.positions.get_mut(partition as usize) {
            *p = offset.max(0);
        }
        Ok(())
    }
}

/// Rewrites a partition file without its consumed records once they are all consumed.
fn compact(part: &mut Partition) -> Result<(), StoreError> {
    if !part.records.is_empty() {
        return Ok(());
    }
    let len = part.file.metadata().map_err(|e| io(e, &part.path))?.len();
    if len < 1 << 20 {
        return Ok(());
    }
    let tmp = part.path.with_extension("tmp");
    std::fs::write(&tmp, part.base.to_le_bytes()).map_err(|e| io(e, &tmp))?;
    crate::replace_durably(&tmp, &part.path).map_err(|e| io(e, &part.path))?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&part.path)
        .map_err(|e| io(e, &part.path))?;
    f.flush().map_err(|e| io(e, &part.path))?;
    part.file = f;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("thermo-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn records_survive_a_reopen_in_order_and_commits_hold() {
        let d = dir("reopen");
        let log = LocalLog::open(&d, 2, 100).unwrap();
        log.send_all(
            (0..10)
                .map(|i| (format!("k{}", i % 3), vec![i as u8]))
                .collect(),
        )
        .await
        .unwrap();
        let mut c = log.consumer();
        let got = c.poll(100, Duration::from_millis(10)).await.unwrap();
        assert_eq!(got.len(), 10);
        // Same key, same partition, in order.
        let k0: Vec<u8> = got
            .iter()
            .filter(|r| r.key == b"k0")
            .map(|r| r.value[0])
            .collect();
        assert_eq!(k0, vec![0, 3, 6, 9]);
        let last: Vec<(i32, i64)> = (0..2)
            .filter_map(|p| {
                got.iter()
                    .rfind(|r| r.partition == p)
                    .map(|r| (p, r.offset + 1))
            })
            .collect();
        c.commit(&last[..1]).unwrap();
        drop((c, log));
        let log = LocalLog::open(&d, 2, 100).unwrap();
        let mut c = log.consumer();
        let again = c.poll(100, Duration::from_millis(10)).await.unwrap();
        let p0 = last[0].0;
        assert!(
            again.iter().all(|r| r.partition != p0),
            "committed partition not replayed"
        );
        assert_eq!(
            again.len(),
            got.iter().filter(|r| r.partition != p0).count()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn consumed_only_once_every_partition_is_committed_to_its_end() {
        let d = dir("consumed");
        let log = LocalLog::open(&d, 2, 100).unwrap();
        assert!(log.consumed(&log.end_offsets()), "an empty log is consumed");
        log.send_all((0..6).map(|i| (format!("k{i}"), vec![i as u8])).collect())
            .await
            .unwrap();
        let ends = log.end_offsets();
        assert_eq!(ends.iter().sum::<i64>(), 6);
        let mut c = log.consumer();
        let got = c.poll(100, Duration::from_millis(10)).await.unwrap();
        assert_eq!(got.len(), 6);
        assert!(!log.consumed(&ends), "read but not committed");
        c.commit(&[(0, ends[0])]).unwrap();
        assert_eq!(log.consumed(&ends), ends[1] == 0);
        c.commit(&[(1, ends[1])]).unwrap();
        assert!(log.consumed(&ends));
        log.send_all(vec![("k0".into(), vec![9])]).await.unwrap();
        assert!(log.consumed(&ends), "later records do not matter");
        assert!(!log.consumed(&log.end_offsets()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_bound_refuses() {
        let d = dir("torn");
        let log = LocalLog::open(&d, 1, 3).unwrap();
        log.send_all(vec![
            ("a".into(), b"1".to_vec()),
            ("a".into(), b"2".to_vec()),
        ])
        .await
        .unwrap();
        assert!(log
            .send_all(vec![
                ("a".into(), b"3".to_vec()),
                ("a".into(), b"4".to_vec())
            ])
            .await
            .is_err());
        drop(log);
        let path = d.join("p0.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]); // half a frame
        std::fs::write(&path, bytes).unwrap();
        let log = LocalLog::open(&d, 1, 3).unwrap();
        let got = log
            .consumer()
            .poll(10, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"2".to_vec()]
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
