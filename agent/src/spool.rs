//! The spool: closed minutes as batches waiting for the partitioner's acknowledgement, in memory,
//! or with `spool_dir` on disk, where they survive the agent (a SIGKILL, a crash, a restart).
//!
//! A batch is `(agent_id, seq)` and its body, the gzip of its encoding (`Batch` in
//! docs/storage.md): the exact bytes sent. `seq` starts above `start_ms << 20` and above every
//! batch found on disk, so a restarted agent never reuses a sequence number, and a batch sent again
//! after a restart is merged once by the aggregator.
//!
//! # On-disk format
//!
//! One file per batch in `spool_dir`, named `<seq as 20 decimal digits>.batch`:
//!
//! ```text
//! "TS" 0x01 | u32 LE CRC-32 (IEEE) of body | body
//! ```
//!
//! A file is written as `.tmp-<name>`, fsynced, renamed to its name and the directory fsynced
//! *before* the batch is first sent; it is removed once the partitioner acknowledged the batch
//! (or refused it for good), or with checkpoints once the next checkpoint is written
//! ([`crate::checkpoint`]). A removal lost in a crash only sends the batch once more, which is
//! merged once. At start the agent reads every file in `seq` order and queues them before anything
//! new. A file that is not such a batch (magic, CRC, gzip or batch encoding wrong) is renamed
//! `<name>.corrupt`, counted in `errors_total{kind="spool_corrupt"}` and logged, never sent and
//! never a crash; `.tmp-*` files, writes a crash interrupted, are removed.
//!
//! # Bounds
//!
//! At most `spool_max_batches` batches, and on disk `spool_max_bytes` bytes of files. A new batch
//! beyond either drops the **oldest** waiting batch (the newest minutes are the ones dashboards
//! and alerts read), counted in `dropped_total{reason="spool_full"}` in series-minutes. A write
//! that fails (disk full, permissions) keeps the batch in memory, counted in
//! `errors_total{kind="spool_write"}`: it is sent, but would not survive a crash.

use crate::config::AgentConfig;
use crate::AgentError;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thermo_core::accumulator::ClosedMinute;
use thermo_core::codec::{Batch, Item};
use thermo_runtime::telemetry::SelfMetrics;
use tokio::sync::Notify;

const MAGIC: &[u8; 3] = b"TS\x01";
const HEADER: usize = MAGIC.len() + 4;
const SUFFIX: &str = ".batch";

/// One batch waiting to be sent.
#[derive(Debug, Clone)]
pub struct Entry {
    pub agent_id: String,
    pub seq: u64,
    /// Series-minutes in the batch.
    pub items: usize,
    /// Bytes it takes on disk (its file), 0 when held in memory only.
    file_bytes: u64,
    /// The body, when held in memory (no `spool_dir`, or its write failed).
    body: Option<Arc<Vec<u8>>>,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// Bytes of the files of `entries` and of the batch in flight.
    file_bytes: u64,
}

/// Batches waiting to be sent.
pub struct Spool {
    queue: Mutex<Queue>,
    dir: Option<PathBuf>,
    max_batches: usize,
    max_bytes: u64,
    next_seq: Mutex<u64>,
    agent_id: String,
    batch_max_items: usize,
    pub wake: Notify,
    /// Signalled whenever the spool becomes empty and nothing is in flight.
    pub drained: Notify,
    /// Batches popped and not done with yet.
    in_flight: Mutex<usize>,
    /// With checkpoints: files of acknowledged batches are kept until a checkpoint's watermark
    /// reaches their seq ([`Self::release`]).
    keep_acked: bool,
    acked: Mutex<Vec<Entry>>,
    /// The minutes of each batch found on disk at start, by seq.
    found: Mutex<Vec<(u64, Vec<i64>)>>,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

/// The body of a batch: its encoding, gzipped.
fn compress(batch: &Batch) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&batch.encode())?;
    enc.finish()
}

/// The file of a body: `magic`, the body's CRC-32, the body.
pub(crate) fn frame(magic: &[u8; 3], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body in a file's bytes, and the batch it holds; why not, for a corrupt file.
pub(crate) fn unframe<'a>(magic: &[u8; 3], file: &'a [u8]) -> Result<(&'a [u8], Batch), String> {
    if file.len() < HEADER || &file[..magic.len()] != magic {
        return Err("not a thermo agent file (magic)".into());
    }
    let crc = u32::from_le_bytes([file[3], file[4], file[5], file[6]]);
    let body = &file[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err("CRC mismatch".into());
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .map_err(|e| format!("gzip: {e}"))?;
    let batch = Batch::decode(&raw).map_err(|e| format!("batch: {e}"))?;
    Ok((body, batch))
}

/// Writes `bytes` at `dir/name` durably: a temporary file, fsynced, renamed, the directory
/// fsynced.
pub(crate) fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

impl Spool {
    /// A spool in memory only.
    pub fn in_memory(cfg: &AgentConfig, start_ms: i64) -> Self {
        Self {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                file_bytes: 0,
            }),
            dir: None,
            max_batches: cfg.spool_max_batches.max(1),
            max_bytes: cfg.spool_max_bytes.max(1),
            next_seq: Mutex::new((start_ms.max(0) as u64) << 20),
            agent_id: cfg.agent_id.clone(),
            batch_max_items: cfg.batch_max_items.max(1),
            wake: Notify::new(),
            drained: Notify::new(),
            in_flight: Mutex::new(0),
            keep_acked: false,
            acked: Mutex::new(Vec::new()),
            found: Mutex::new(Vec::new()),
        }
    }

    /// The spool of `cfg`: on disk in `spool_dir` (created if missing; the batches found there
    /// queued first), else in memory. Blocking: reads the directory.
    pub fn open(
        cfg: &AgentConfig,
        start_ms: i64,
        metrics: &SelfMetrics,
    ) -> Result<Self, AgentError> {
        let mut spool = Self::in_memory(cfg, start_ms);
        if cfg.spool_dir.is_empty() {
            return Ok(spool);
        }
        let dir = PathBuf::from(&cfg.spool_dir);
        let fail =
            |e: std::io::Error| AgentError::Startup(format!("spool_dir {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(fail)? {
            let name = entry
                .map_err(fail)?
                .file_name()
                .to_string_lossy()
                .to_string();
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(dir.join(&name));
            } else if name.ends_with(SUFFIX) {
                names.push(name);
            }
        }
        names.sort();
        let mut found = 0usize;
        let mut items = 0usize;
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(fail)?;
            match unframe(MAGIC, &bytes) {
                Ok((_, batch)) => {
                    let mut minutes: Vec<i64> = batch.items.iter().map(|i| i.minute).collect();
                    minutes.sort_unstable();
                    minutes.dedup();
                    spool
                        .found
                        .get_mut()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((batch.seq, minutes));
                    let entry = Entry {
                        agent_id: batch.agent_id,
                        seq: batch.seq,
                        items: batch.items.len(),
                        file_bytes: bytes.len() as u64,
                        body: None,
                    };
                    let next = spool.next_seq.get_mut().unwrap_or_else(|p| p.into_inner());
                    *next = (*next).max(entry.seq);
                    found += 1;
                    items += entry.items;
                    let q = spool.queue.get_mut().unwrap_or_else(|p| p.into_inner());
                    q.file_bytes += entry.file_bytes;
                    q.entries.push_back(entry);
                }
                Err(why) => {
                    metrics.errors.with_label_values(&["spool_corrupt"]).inc();
                    let aside = dir.join(format!("{name}.corrupt"));
                    tracing::error!(file = %path.display(), "corrupt spool file set aside as {}: {why}", aside.display());
                    std::fs::rename(&path, &aside).map_err(fail)?;
                }
            }
        }
        if found > 0 {
            tracing::info!(batches = found, series = items, dir = %dir.display(), "spooled batches found; sending them first");
        }
        spool.keep_acked = cfg.checkpoint_interval_secs > 0;
        spool.dir = Some(dir);
        Ok(spool)
    }

    /// The directory of the spool, if on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The last sequence number given to a batch (a checkpoint's watermark).
    pub fn last_seq(&self) -> u64 {
        *self.next_seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The minutes of the batches found on disk at start whose seq is above `watermark`: a
    /// checkpoint with that watermark must leave them out (they were flushed after it).
    pub fn minutes_after(&self, watermark: u64) -> std::collections::BTreeSet<i64> {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found
            .iter()
            .filter(|(seq, _)| *seq > watermark)
            .flat_map(|(_, minutes)| minutes.iter().copied())
            .collect()
    }

    /// A checkpoint with `watermark` is on disk: the files of acknowledged batches up to it can
    /// go. Blocking.
    pub fn release(&self, watermark: u64) {
        let gone: Vec<Entry> = {
            let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, keep) = acked.drain(..).partition(|e| e.seq <= watermark);
            *acked = keep;
            gone
        };
        for e in &gone {
            self.remove_file(e);
        }
        let bytes: u64 = gone.iter().map(|e| e.file_bytes).sum();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.file_bytes = q.file_bytes.saturating_sub(bytes);
    }

    /// Whether batches are kept on disk.
    pub fn durable(&self) -> bool {
        self.dir.is_some()
    }

    /// Turns closed minutes into batches and queues them, each on disk first with `spool_dir`;
    /// returns the series-minutes queued. Blocking (compression, file writes): run it off the
    /// async workers.
    pub fn push_minutes(&self, minutes: Vec<ClosedMinute>, metrics: &SelfMetrics) -> usize {
        let mut items: Vec<Item> = Vec::new();
        for (minute, series) in minutes {
            for (key, agg) in series {
                items.push(Item {
                    name: key.name().to_string(),
                    tags: key.tags().to_vec(),
                    minute,
                    agg,
                });
            }
        }
        let n = items.len();
        let mut rest = items;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(self.batch_max_items));
            let chunk = std::mem::replace(&mut rest, tail);
            let seq = {
                let mut s = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
                *s += 1;
                *s
            };
            let batch = Batch {
                agent_id: self.agent_id.clone(),
                seq,
                items: chunk,
            };
            match compress(&batch) {
                Ok(body) => self.queue_entry(&batch, body, metrics),
                Err(e) => {
                    // Compressing into memory does not fail; if it did, the batch is lost.
                    metrics
                        .dropped
                        .with_label_values(&["spool_write"])
                        .inc_by(batch.items.len() as u64);
                    tracing::error!(seq, "cannot compress batch, dropped: {e}");
                }
            }
        }
        if n > 0 {
            self.wake.notify_one();
        }
        n
    }

    /// Stores `body` (on disk when durable) and queues it, dropping the oldest beyond the bounds.
    fn queue_entry(&self, batch: &Batch, body: Vec<u8>, metrics: &SelfMetrics) {
        let mut entry = Entry {
            agent_id: batch.agent_id.clone(),
            seq: batch.seq,
            items: batch.items.len(),
            file_bytes: 0,
            body: None,
        };
        match &self.dir {
            Some(dir) => {
                let file = frame(MAGIC, &body);
                match write_durably(dir, &file_name(batch.seq), &file) {
                    Ok(()) => entry.file_bytes = file.len() as u64,
                    Err(e) => {
                        metrics.errors.with_label_values(&["spool_write"]).inc();
                        tracing::error!(seq = batch.seq, dir = %dir.display(), "cannot write spool file, batch kept in memory only: {e}");
                        entry.body = Some(Arc::new(body));
                    }
                }
            }
            None => entry.body = Some(Arc::new(body)),
        }
        let mut dropped = Vec::new();
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.file_bytes += entry.file_bytes;
            q.entries.push_back(entry);
            while q.entries.len() > self.max_batches
                || (q.file_bytes > self.max_bytes && q.entries.len() > 1)
            {
                let Some(old) = q.entries.pop_front() else {
                    break;
                };
                q.file_bytes -= old.file_bytes;
                dropped.push(old);
            }
        }
        // Unlinking waits for the disk: not while the sender waits for the queue.
        for old in dropped {
            metrics
                .dropped
                .with_label_values(&["spool_full"])
                .inc_by(old.items as u64);
            tracing::error!(
                seq = old.seq,
                series = old.items,
                "spool full: oldest batch dropped"
            );
            self.remove_file(&old);
        }
    }

    fn remove_file(&self, entry: &Entry) {
        if let (Some(dir), true) = (&self.dir, entry.file_bytes > 0) {
            let path = dir.join(file_name(entry.seq));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "cannot remove spool file (the batch may be sent again, merged once): {e}");
            }
        }
    }

    /// The body of `entry`, read from its file when it is on disk. Blocking.
    pub fn body(&self, entry: &Entry) -> Result<Arc<Vec<u8>>, String> {
        if let Some(b) = &entry.body {
            return Ok(b.clone());
        }
        let dir = self.dir.as_ref().ok_or("no body and no spool_dir")?;
        let path = dir.join(file_name(entry.seq));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (body, _) =
            unframe(MAGIC, &bytes).map_err(|why| format!("{}: {why}", path.display()))?;
        Ok(Arc::new(body.to_vec()))
    }

    /// Batches waiting (not counting one in flight).
    pub fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the batch files on disk (the one in flight included).
    pub fn file_bytes(&self) -> u64 {
        self.queue.lock().map_or(0, |q| q.file_bytes)
    }

    /// Batches waiting or in flight.
    pub fn batches(&self) -> usize {
        self.len() + *self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when nothing is queued or in flight.
    pub fn idle(&self) -> bool {
        self.is_empty() && *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) == 0
    }

    /// The oldest batch, now in flight (until [`Self::done`]).
    pub fn pop(&self) -> Option<Entry> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let e = q.entries.pop_front();
        if e.is_some() {
            *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
        e
    }

    /// The batch in flight is done with: `delivered` (acknowledged or refused for good) removes
    /// its file (with checkpoints, at the next checkpoint: [`Self::release`]); otherwise
    /// (shutdown) the file stays for the next start. Blocking.
    pub fn done(&self, entry: &Entry, delivered: bool) {
        if delivered && self.keep_acked && entry.file_bytes > 0 {
            self.acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry.clone());
        } else if delivered {
            self.remove_file(entry);
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.file_bytes = q.file_bytes.saturating_sub(entry.file_bytes);
        }
        {
            let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
        }
        self.notify_if_idle();
    }

    /// Wakes those waiting for the spool to drain, if it has.
    pub fn notify_if_idle(&self) {
        if self.idle() {
            self.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::key::MetricKey;

    fn minutes(first: usize, n: usize) -> Vec<ClosedMinute> {
        let series = (first..first + n)
            .map(|i| {
                let key =
                    MetricKey::new("default", "req", vec![("s".into(), format!("s{i}"))]).unwrap();
                let agg = Aggregate::Counter(Counter {
                    sum: i as f64,
                    samples: 1,
                });
                (key, agg)
            })
            .collect();
        vec![(1_764_460_800, series)]
    }

    fn cfg(dir: &Path) -> AgentConfig {
        AgentConfig {
            agent_id: "a1".into(),
            spool_dir: dir.display().to_string(),
            batch_max_items: 10,
            checkpoint_interval_secs: 0,
            ..AgentConfig::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("thermo-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    /// Batches written before they are sent survive a restart with their `(agent_id, seq)` and
    /// bodies; a delivered batch's file is gone; new batches get higher seqs; a corrupt file and a
    /// half-written one are set aside and removed, counted.
    #[test]
    fn batches_on_disk_survive_a_restart_and_corrupt_files_are_set_aside() {
        let dir = temp_dir("restart");
        let m = SelfMetrics::new("agent", "lines");
        let start = 1_000;
        let spool = Spool::open(&cfg(&dir), start, &m).unwrap();
        assert_eq!(spool.push_minutes(minutes(0, 25), &m), 25);
        assert_eq!(spool.len(), 3);
        let first = spool.pop().unwrap();
        assert_eq!((first.seq, first.items), ((1_000 << 20) + 1, 10));
        let body = spool.body(&first).unwrap();
        spool.done(&first, true);
        let second = spool.pop().unwrap();
        let second_body = spool.body(&second).unwrap();
        spool.done(&second, false); // shutdown: stays on disk
        assert_eq!(files(&dir).len(), 2);
        let on_disk = spool.file_bytes();
        drop(spool);

        std::fs::write(dir.join(file_name(7)), b"TS\x01garbage").unwrap();
        std::fs::write(dir.join(".tmp-x.batch"), b"half").unwrap();
        // A restart with an older clock: seqs still go up.
        let spool = Spool::open(&cfg(&dir), 0, &m).unwrap();
        assert_eq!(spool.len(), 2);
        let again = spool.pop().unwrap();
        assert_eq!(
            (again.agent_id.as_str(), again.seq, again.items),
            ("a1", second.seq, 10)
        );
        assert_eq!(spool.body(&again).unwrap(), second_body);
        assert_ne!(body, second_body);
        let third = spool.pop().unwrap();
        assert_eq!((third.seq, third.items), ((1_000 << 20) + 3, 5));
        assert!(on_disk > 0);
        spool.push_minutes(minutes(100, 1), &m);
        assert_eq!(spool.pop().unwrap().seq, (1_000 << 20) + 4);
        assert_eq!(
            files(&dir),
            vec![
                file_name(7) + ".corrupt",
                file_name((1_000 << 20) + 2),
                file_name((1_000 << 20) + 3),
                file_name((1_000 << 20) + 4),
            ]
        );
        assert!(m
            .render()
            .contains(r#"thermo_agent_errors_total{kind="spool_corrupt"} 1"#));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Beyond `spool_max_bytes` the oldest batches are dropped (their files removed), counted in
    /// series-minutes.
    #[test]
    fn a_full_spool_drops_the_oldest_batch_and_its_file() {
        let dir = temp_dir("full");
        let m = SelfMetrics::new("agent", "lines");
        let mut c = cfg(&dir);
        let spool = Spool::open(&c, 1, &m).unwrap();
        spool.push_minutes(minutes(0, 10), &m);
        let one = spool.file_bytes();
        drop(spool);
        let _ = std::fs::remove_dir_all(&dir);
        // Room for two batches of about that size.
        c.spool_max_bytes = one * 2 + one / 2;
        let spool = Spool::open(&c, 1, &m).unwrap();
        spool.push_minutes(minutes(0, 40), &m);
        assert_eq!(spool.len(), 2);
        assert_eq!(files(&dir).len(), 2);
        assert_eq!(spool.pop().unwrap().seq, (1 << 20) + 3);
        assert!(m
            .render()
            .contains(r#"thermo_agent_dropped_total{reason="spool_full"} 20"#));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With checkpoints, an acknowledged batch's file stays (counted in the bytes) until a
    /// checkpoint's watermark reaches it; the minutes of the batches found at start are known
    /// by seq.
    #[test]
    fn with_checkpoints_acknowledged_files_stay_until_released() {
        let dir = temp_dir("release");
        let m = SelfMetrics::new("agent", "lines");
        let c = AgentConfig {
            checkpoint_interval_secs: 5,
            ..cfg(&dir)
        };
        let spool = Spool::open(&c, 1, &m).unwrap();
        spool.push_minutes(minutes(0, 20), &m);
        let base = 1 << 20;
        assert_eq!(spool.last_seq(), base + 2);
        let first = spool.pop().unwrap();
        spool.done(&first, true);
        let bytes = spool.file_bytes();
        assert_eq!(files(&dir).len(), 2);
        spool.release(base);
        assert_eq!(files(&dir).len(), 2, "the watermark is below the batch");
        spool.release(base + 1);
        assert_eq!(files(&dir), vec![file_name(base + 2)]);
        assert!(spool.file_bytes() < bytes);
        drop(spool);
        let spool = Spool::open(&c, 1, &m).unwrap();
        assert_eq!(
            spool.minutes_after(base + 1),
            [1_764_460_800].into_iter().collect()
        );
        assert!(spool.minutes_after(base + 2).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
