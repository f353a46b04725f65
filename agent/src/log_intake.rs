//! Log sources (`[[logs]]`) end to end: every line counted once, across rotation and restarts.
//!
//! A blocking thread polls each source's [`Follower`] every `log_poll_ms` and turns its lines into
//! metrics ([`LogParser`]) in an accumulator of their own, apart from the StatsD lines'. Its
//! closed minutes go to the spool with the others' on every flush; then, and only once they are
//! written there (fsynced), each file's *safe position* is saved: the start of its first line
//! whose minute is not in the spool yet, or, when every line read is, the end of the last one.
//!
//! # Why nothing is lost or counted twice
//!
//! Within a file, the lines' minutes never decrease: with `time = "receive"` a line's minute is the
//! minute it is read in; with `time = "line"`, a line whose time is earlier than the line before it
//! in its file counts in that line's minute (lines out of order by seconds around a minute's end).
//! A flush takes every minute up to a bound, so the lines it spools are a prefix of each file, and
//! the safe position splits each file into lines in the spool (before it) and lines only in memory
//! (from it on). After a SIGKILL, the agent reads every file again from its saved position: the
//! lines in memory are read again, once; the spooled ones are sent from the spool with their
//! `(agent_id, seq)`, merged once. The log accumulator is not in the checkpoint (its lines are in
//! the files). A line read again after a restart counts, with `time = "receive"`, in the minute it
//! is read again in.
//!
//! Flushes run one at a time (take, spool, save), so a saved position never runs ahead of the
//! spool; none saves before the first poll (the saved files are not all known before it). When a
//! followed file leaves the glob (rotated out, about to be compressed or deleted) with lines not
//! spooled, the next flush takes every minute, open ones too (a minute flushed open is merged
//! with the rest of it later), so that a crash cannot lose them with the file. Lines longer than
//! `max_line_bytes` are skipped and counted (`line_too_long`); a batch the spool drops when full
//! (`spool_full`) is lost with its lines, as any batch.
//!
//! # On-disk format
//!
//! `<spool_dir>/logs.state`, replaced whole like the checkpoint:
//!
//! ```text
//! "TL" 0x01 | u32 LE CRC-32 (IEEE) of body | body      body = JSON {"sources": [{"path": glob,
//!                                                        "files": [Position]}]}
//! ```
//!
//! A [`Position`] is a file's path, device, inode, safe offset and fingerprint. A state file that
//! cannot be read back is renamed `logs.state.corrupt` and counted
//! (`errors_total{kind="logs_state_corrupt"}`); the agent then starts as on its first start.

use crate::follow::{FileId, Fingerprint, Follower, Position};
use crate::logs::{LogParser, LogSource, Outcome};
use crate::{AgentConfig, AgentError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use thermo_core::accumulator::{Accumulator, AccumulatorConfig, ClosedMinute, IngestStats};

const MAGIC: &[u8; 3] = b"TL\x01";
const NAME: &str = "logs.state";
/// Bytes read from one file in one poll, at most (about 5,000 access-log lines).
const POLL_BYTES: u64 = 1 << 20;

/// A line read: its file, where its bytes are in the poll's buffer, its start and end offsets.
type ReadLine = (FileId, std::ops::Range<usize>, u64, u64);

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct StateFile {
    sources: Vec<SavedSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedSource {
    path: String,
    files: Vec<Position>,
}

/// Where one file's lines stand.
#[derive(Debug)]
struct FileLines {
    path: PathBuf,
    dev: u64,
    ino: u64,
    fingerprint: Option<Fingerprint>,
    /// Just past the last line read.
    read_end: u64,
    /// The minutes of the lines read and not spooled yet, each with the start of its first line
    /// in this file; minutes never decrease.
    spans: VecDeque<(i64, u64)>,
    /// The minute of the last line read (`time = "line"` counts an earlier line in it).
    last_minute: i64,
    /// Still followed (a file closed after rotation is forgotten once its lines are spooled).
    followed: bool,
}

impl FileLines {
    /// A file first seen at `read_end`, nothing of it in memory.
    fn new(path: PathBuf, (dev, ino): FileId, read_end: u64) -> Self {
        Self {
            path,
            dev,
            ino,
            fingerprint: None,
            read_end,
            spans: VecDeque::new(),
            last_minute: i64::MIN,
            followed: true,
        }
    }

    fn safe(&self) -> Position {
        Position {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            offset: self.spans.front().map_or(self.read_end, |s| s.1),
            fingerprint: self.fingerprint,
        }
    }
}

struct Lines {
    acc: Accumulator,
    /// (source index, file) → its lines.
    files: BTreeMap<(usize, FileId), FileLines>,
}

/// The log sources of an agent.
pub struct LogIntake {
    globs: Vec<String>,
    lines: Mutex<Lines>,
    /// Held from a flush's take to its save; the state saved last.
    flushing: tokio::sync::Mutex<Option<StateFile>>,
    dir: PathBuf,
    stop: AtomicBool,
    /// A file left the glob (rotated out, or about to be compressed or deleted) with lines not
    /// spooled: the next flush takes every minute, open ones too, so they are.
    flush_all: AtomicBool,
    /// Set after the first poll: before it, the files of the saved positions are not known yet,
    /// and a save would forget them.
    polled: AtomicBool,
}

/// A source's parser and follower, run by [`LogIntake::run`].
pub struct Source {
    parser: LogParser,
    follower: Follower,
}

impl LogIntake {
    /// The log sources of `cfg` (`None` without `[[logs]]`), resumed from the state file in
    /// `spool_dir`. Blocking (reads the state file).
    pub fn open(
        cfg: &AgentConfig,
        acc: AccumulatorConfig,
        corrupt: impl Fn(),
    ) -> Result<Option<(Self, Vec<Source>)>, AgentError> {
        if cfg.logs.is_empty() {
            return Ok(None);
        }
        if cfg.spool_dir.is_empty() {
            return Err(AgentError::Startup(
                "[[logs]] needs spool_dir: a log file's position is saved there once the minutes of its lines are".into(),
            ));
        }
        let dir = PathBuf::from(&cfg.spool_dir);
        let mut saved = match read_state(&dir) {
            Ok(s) => s,
            Err(why) => {
                corrupt();
                tracing::error!("corrupt {NAME}, reading the log files as on a first start: {why}");
                StateFile::default()
            }
        };
        let mut sources = Vec::new();
        for s in &cfg.logs {
            let parser = LogParser::new(s).map_err(|e| AgentError::Startup(e.to_string()))?;
            let positions = saved
                .sources
                .iter_mut()
                .find(|x| x.path == s.path)
                .map(|x| std::mem::take(&mut x.files))
                .unwrap_or_default();
            let from_end = match s.read_from.as_str() {
                "end" => true,
                "beginning" => false,
                other => {
                    return Err(AgentError::Startup(format!(
                        "[[logs]] {}: read_from = {other:?}: end or beginning",
                        s.path
                    )))
                }
            };
            let follower =
                Follower::new(&s.path, &s.exclude, cfg.max_line_bytes, from_end, positions)
                    .map_err(|e| AgentError::Startup(format!("[[logs]] {}: {e}", s.path)))?;
            sources.push(Source { parser, follower });
        }
        let intake = Self {
            globs: cfg
                .logs
                .iter()
                .map(|s: &LogSource| s.path.clone())
                .collect(),
            lines: Mutex::new(Lines {
                acc: Accumulator::new(acc),
                files: BTreeMap::new(),
            }),
            flushing: tokio::sync::Mutex::new(None),
            dir,
            stop: AtomicBool::new(false),
            flush_all: AtomicBool::new(false),
            polled: AtomicBool::new(false),
        };
        Ok(Some((intake, sources)))
    }

    /// Polls the sources every `every` until [`LogIntake::stop`]; `record` counts each poll's
    /// stats and the files that could not be listed, opened or read. Blocking: run it on a thread
    /// of its own.
    pub fn run(
        &self,
        mut sources: Vec<Source>,
        every: std::time::Duration,
        record: impl Fn(&IngestStats, u64),
    ) {
        let (mut read, mut bytes): (Vec<ReadLine>, Vec<u8>) = (Vec::new(), Vec::new());
        while !self.stop.load(Ordering::Relaxed) {
            let mut stats = IngestStats::default();
            let mut errors = 0;
            for (i, s) in sources.iter_mut().enumerate() {
                read.clear();
                bytes.clear();
                let polled = s.follower.poll(POLL_BYTES, |id, _, line, start, end| {
                    bytes.extend_from_slice(line);
                    read.push((id, bytes.len() - line.len()..bytes.len(), start, end));
                });
                if polled.too_long > 0 {
                    *stats.dropped.entry("line_too_long").or_insert(0) += polled.too_long;
                }
                errors += polled.errors;
                let now = crate::now_ms();
                // One hold of the lock for the copies, the lines and the positions of a poll, so a
                // flush never sees one without the others (a poll reads at most POLL_BYTES a
                // file: milliseconds; flushes take the lock on a blocking thread).
                let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                for &(from, to, offset) in &polled.copies {
                    copied(&mut guard.files, (i, from), (i, to), offset);
                }
                Self::apply(&mut guard, i, &s.parser, &read, &bytes, now, &mut stats);
                let files = &mut guard.files;
                let positions = s.follower.positions();
                for (&(_, id), f) in files.iter_mut().filter(|((src, _), _)| *src == i) {
                    f.followed = false;
                    if let Some(p) = positions.iter().find(|p| (p.dev, p.ino) == id) {
                        f.followed = true;
                        f.path = p.path.clone();
                        f.fingerprint = p.fingerprint;
                        if p.offset < f.read_end {
                            // Truncated, and nothing read from it since.
                            f.spans.clear();
                            f.last_minute = i64::MIN;
                        }
                        // The follower's offset: past every line handed out and skipped.
                        f.read_end = p.offset;
                    }
                }
                for p in positions {
                    files
                        .entry((i, (p.dev, p.ino)))
                        .or_insert_with(|| FileLines {
                            fingerprint: p.fingerprint,
                            ..FileLines::new(p.path, (p.dev, p.ino), p.offset)
                        });
                }
                files.retain(|_, f| f.followed || !f.spans.is_empty());
                let gone = s.follower.unmatched();
                if files.iter().any(|((src, id), f)| {
                    *src == i && !f.spans.is_empty() && (!f.followed || gone.contains(id))
                }) {
                    self.flush_all.store(true, Ordering::Relaxed);
                }
            }
            self.polled.store(true, Ordering::Release);
            record(&stats, errors);
            std::thread::sleep(every);
        }
    }

    /// Turns lines of source `i` into metrics, and their files' spans.
    fn apply(
        lines: &mut Lines,
        i: usize,
        parser: &LogParser,
        read: &[ReadLine],
        bytes: &[u8],
        now: i64,
        stats: &mut IngestStats,
    ) {
        let Lines { acc, files } = lines;
        for (id, at, start, end) in read {
            // Its path comes with the poll's positions, in the same hold of the lock.
            let f = files
                .entry((i, *id))
                .or_insert_with(|| FileLines::new(PathBuf::new(), *id, *start));
            if *start < f.read_end {
                // Read from further back: the file was truncated or replaced. Its earlier lines
                // not spooled are in a copy (moved there by `copied`) or gone.
                f.spans.clear();
                f.last_minute = i64::MIN;
            }
            let taken = stats.lines;
            let outcome = parser.apply(acc, &bytes[at.clone()], now, f.last_minute, stats);
            // A line none of whose metrics was taken (all refused: too old, in the future...)
            // holds nothing to keep, and sets no minute for the next ones.
            if let (Outcome::Matched { minute }, true) = (outcome, stats.lines > taken) {
                if f.spans.back().is_none_or(|(m, _)| *m != minute) {
                    f.spans.push_back((minute, *start));
                }
                f.last_minute = minute;
            }
            f.read_end = *end;
        }
    }

    /// Stops [`LogIntake::run`] after its current poll.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Takes the closed minutes (every one with `all`) and the files' safe positions once they are
    /// spooled, then `spool` writes the minutes and this saves the positions, on a blocking
    /// thread; returns the series-minutes spooled. One flush at a time.
    pub async fn flush(
        self: &Arc<Self>,
        all: bool,
        now_s: i64,
        delay_secs: i64,
        spool: impl FnOnce(Vec<ClosedMinute>) -> usize + Send + 'static,
    ) -> (std::io::Result<usize>, IngestStats) {
        let mut last = self.flushing.lock().await;
        if !self.polled.load(Ordering::Acquire) {
            // Nothing read yet (the accumulator is empty), and the saved positions still hold.
            return (Ok(0), IngestStats::default());
        }
        let all = all || self.flush_all.swap(false, Ordering::Relaxed);
        let (this, previous) = (self.clone(), last.clone());
        // The take holds the accumulator's lock while the log thread may hold it for a poll's
        // lines (milliseconds): on a blocking thread, with the spooling and the save.
        let done = tokio::task::spawn_blocking(move || {
            let mut stats = IngestStats::default();
            let (minutes, state) = this.take(all, now_s, delay_secs, &mut stats);
            if minutes.is_empty() && previous.as_ref() == Some(&state) {
                return (Ok((0, None)), stats); // nothing new: no write, no fsync
            }
            let n = if minutes.is_empty() {
                0
            } else {
                spool(minutes)
            };
            let saved = write_state(&this.dir, &state).map(|()| (n, Some(state)));
            (saved, stats)
        })
        .await;
        match done {
            Ok((Ok((n, saved)), stats)) => {
                if saved.is_some() {
                    *last = saved;
                }
                (Ok(n), stats)
            }
            Ok((Err(e), stats)) => (Err(e), stats),
            Err(e) => (Err(std::io::Error::other(e)), IngestStats::default()),
        }
    }

    /// Takes the closed minutes (every one with `all`) and what the state file is once they are
    /// spooled.
    fn take(
        &self,
        all: bool,
        now_s: i64,
        delay_secs: i64,
        stats: &mut IngestStats,
    ) -> (Vec<ClosedMinute>, StateFile) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let Lines { acc, files } = &mut *lines;
        let minutes = if all {
            acc.take_all(stats)
        } else {
            acc.take_closed(now_s, delay_secs, stats)
        };
        let closed = |m: i64| all || m + 60 + delay_secs <= now_s;
        for f in files.values_mut() {
            while f.spans.front().is_some_and(|(m, _)| closed(*m)) {
                f.spans.pop_front();
            }
        }
        let mut state = StateFile::default();
        for (i, glob) in self.globs.iter().enumerate() {
            state.sources.push(SavedSource {
                path: glob.clone(),
                files: files
                    .iter()
                    .filter(|((src, _), f)| *src == i && f.followed)
                    .map(|(_, f)| f.safe())
                    .collect(),
            });
        }
        (minutes, state)
    }
}

/// `to` is a copy of `from` read from `offset` on (copy-and-truncate): the lines of `from` before
/// `offset` not spooled yet are now the copy's, at the same offsets, so that the copy's saved
/// position starts at the first of them (`from`, truncated, holds them no more).
fn copied(
    files: &mut BTreeMap<(usize, FileId), FileLines>,
    from: (usize, FileId),
    to: (usize, FileId),
    offset: u64,
) {
    let Some(f) = files.get_mut(&from) else {
        return;
    };
    let keep = f
        .spans
        .iter()
        .position(|s| s.1 >= offset)
        .unwrap_or(f.spans.len());
    let moved: VecDeque<(i64, u64)> = f.spans.drain(..keep).collect();
    let last_minute = f.last_minute;
    files.entry(to).or_insert_with(|| FileLines {
        spans: moved,
        last_minute,
        ..FileLines::new(PathBuf::new(), to.1, offset)
    });
}

fn write_state(dir: &Path, state: &StateFile) -> std::io::Result<()> {
    let body = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    crate::spool::write_durably(dir, NAME, &crate::spool::frame(MAGIC, &body))
}

/// The saved state in `dir` (empty without one). A corrupt one is set aside; `Err` says why.
fn read_state(dir: &Path) -> Result<StateFile, String> {
    let path = dir.join(NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let parsed = (|| {
        if bytes.len() < 7 || &bytes[..3] != MAGIC {
            return Err("not a thermo log state file (magic)".to_string());
        }
        let crc = u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
        if crc32fast::hash(&bytes[7..]) != crc {
            return Err("CRC mismatch".into());
        }
        serde_json::from_slice(&bytes[7..]).map_err(|e| format!("json: {e}"))
    })();
    if parsed.is_err() {
        let _ = std::fs::rename(&path, dir.join(format!("{NAME}.corrupt")));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(spans: &[(i64, u64)], read_end: u64) -> FileLines {
        FileLines {
            spans: spans.iter().copied().collect(),
            last_minute: spans.last().map_or(i64::MIN, |s| s.0),
            ..FileLines::new(PathBuf::from("access.log"), (1, 10), read_end)
        }
    }

    #[test]
    fn the_safe_position_is_the_first_line_not_spooled() {
        assert_eq!(file(&[], 500).safe().offset, 500, "every line spooled");
        assert_eq!(file(&[(60, 120), (120, 300)], 500).safe().offset, 120);
    }

    #[test]
    fn a_copy_takes_the_unspooled_lines_before_its_start() {
        let mut files = BTreeMap::new();
        // The original: lines of minute 60 from offset 100 and of minute 120 from 250 not
        // spooled; it is copied, the copy read from 400 (the original's read position), and the
        // original truncated and written again from 0 (minute 120).
        files.insert((0, (1, 10)), file(&[(60, 100), (120, 250)], 400));
        copied(&mut files, (0, (1, 10)), (0, (1, 11)), 400);
        let copy = &files[&(0, (1, 11))];
        assert_eq!(copy.safe().offset, 100, "the copy holds them from 100");
        assert_eq!(copy.spans, VecDeque::from([(60, 100), (120, 250)]));
        let original = files.get_mut(&(0, (1, 10))).unwrap();
        assert!(original.spans.is_empty());
        original.spans.push_back((120, 0));
        assert_eq!(original.safe().offset, 0);
    }

    #[test]
    fn the_state_file_round_trips_and_a_corrupt_one_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("thermo-logs-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_state(&dir).unwrap(), StateFile::default(), "none yet");
        let state = StateFile {
            sources: vec![SavedSource {
                path: "/var/log/nginx/access.log*".into(),
                files: vec![file(&[(60, 7)], 9).safe()],
            }],
        };
        write_state(&dir, &state).unwrap();
        assert_eq!(read_state(&dir).unwrap(), state);
        let mut bytes = std::fs::read(dir.join(NAME)).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(dir.join(NAME), bytes).unwrap();
        assert_eq!(read_state(&dir).unwrap_err(), "CRC mismatch");
        assert!(dir.join("logs.state.corrupt").exists());
        assert_eq!(read_state(&dir).unwrap(), StateFile::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
