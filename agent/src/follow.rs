//! Following log files like `tail -F`: the files a glob matches, across rotation by rename and by
//! copy-and-truncate, new files, and files that disappear. Blocking: call [`Follower::poll`] on a
//! blocking thread, every few hundred milliseconds.
//!
//! # Identity and positions
//!
//! A file is known by its device and inode while it is open, and by its *fingerprint*, a hash of
//! its first [`FINGERPRINT_BYTES`] bytes (fewer while it is shorter), across copies and restarts.
//! A [`Position`] is a file's identity and the offset just past its last complete line handed out;
//! [`Follower::positions`] gives them, [`Follower::new`] starts from saved ones.
//!
//! # What a poll does
//!
//! 1. The glob is matched (minus the `exclude` globs; regular files only). A path whose inode is
//!    followed already is that file (a rename inside the glob changes nothing). A new inode is
//!    resumed from a saved position with the same inode and fingerprint, else from a remembered
//!    position with the same fingerprint (a copy of a file followed before: copy-and-truncate
//!    rotation, or a file moved across file systems; it is read from where the original was left),
//!    else read from its start (or, for files already there at the first start without saved
//!    positions, from its end when `read_from_end`).
//! 2. Every followed file is read from its position to its end (at most `max_bytes` a poll). A file
//!    shorter than its position, or whose first bytes changed, was truncated or replaced: its
//!    position is remembered under its old fingerprint (for a copy that may still appear) and it is
//!    read again from 0.
//! 3. A followed file whose path no longer matches (renamed out of the glob, or deleted) is still
//!    read through its open handle, and closed once it has not grown for [`ROTATE_WAIT_POLLS`]
//!    polls, its last line taken even without its `\n`.
//!
//! Lines longer than `max_line_bytes` are skipped whole and counted, as on TCP
//! ([`crate::intake::LineFramer`]).

use crate::intake::LineFramer;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many of a file's first bytes its fingerprint covers.
pub const FINGERPRINT_BYTES: u64 = 256;
/// Polls a file whose path no longer matches is still read, once it stops growing.
pub const ROTATE_WAIT_POLLS: u32 = 20;
/// Positions of rotated files remembered for their copies.
const RETIRED_MAX: usize = 64;

/// Where a file truncated or closed was left.
#[derive(Debug, Clone, Copy)]
struct Retired {
    fingerprint: Fingerprint,
    offset: u64,
    id: FileId,
}

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

/// Where reading a file stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Just past the last complete line handed out.
    pub offset: u64,
    /// `None` for an empty file.
    pub fingerprint: Option<Fingerprint>,
}

/// A followed file's identity while it is open: (device, inode).
pub type FileId = (u64, u64);

/// What one poll did, besides the lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    /// Lines over `max_line_bytes`, skipped.
    pub too_long: u64,
    /// Files that could not be listed, opened or read (logged).
    pub errors: u64,
    /// New files found to be copies of files known before (copy-and-truncate), each as (the file
    /// copied, the copy, the offset the copy is read from): the lines before that offset were
    /// read from the file copied.
    pub copies: Vec<(FileId, FileId, u64)>,
}

struct Followed {
    path: PathBuf,
    id: FileId,
    file: File,
    /// Bytes read so far (complete lines and the pending part of one).
    read_pos: u64,
    /// Just past the last line handed out (where the next one starts).
    last_end: u64,
    framer: LineFramer,
    fingerprint: Option<Fingerprint>,
    /// Polls since its path last matched the glob.
    unmatched_polls: u32,
    /// Polls since it last grew.
    idle_polls: u32,
}

impl Followed {
    /// Just past the last complete line handed out.
    fn offset(&self) -> u64 {
        self.read_pos - self.framer.pending_len() as u64
    }
}

/// Follows the files of one glob.
pub struct Follower {
    include: glob::Pattern,
    exclude: Vec<glob::Pattern>,
    max_line_bytes: usize,
    read_from_end: bool,
    followed: Vec<Followed>,
    /// Positions saved before a restart, not yet matched to a file.
    saved: Vec<Position>,
    /// Positions of files truncated or closed, for a copy of them that may appear.
    retired: Vec<Retired>,
    polls: u64,
}

/// The fingerprint of `file`'s first bytes (`None` if empty).
fn fingerprint(file: &mut File, size: u64) -> std::io::Result<Option<Fingerprint>> {
    let len = size.min(FINGERPRINT_BYTES);
    if len == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut buf)?;
    Ok(Some(Fingerprint {
        len,
        hash: thermo_core::aggregate::fnv1a(&buf),
    }))
}

/// Whether `file` (of `size` bytes) starts with the bytes `fp` was taken of.
fn starts_like(file: &mut File, size: u64, fp: &Fingerprint) -> std::io::Result<bool> {
    if size < fp.len {
        return Ok(false);
    }
    let mut buf = vec![0u8; fp.len as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut buf)?;
    Ok(thermo_core::aggregate::fnv1a(&buf) == fp.hash)
}

impl Follower {
    /// Follows the files matching `include` and none of `exclude`, from `saved` positions (a
    /// restart) if any. Without saved positions, files already there are read from their end
    /// when `read_from_end`, else from their start; files that appear later always from their
    /// start.
    pub fn new(
        include: &str,
        exclude: &[String],
        max_line_bytes: usize,
        read_from_end: bool,
        saved: Vec<Position>,
    ) -> Result<Self, glob::PatternError> {
        Ok(Self {
            include: glob::Pattern::new(include)?,
            exclude: exclude
                .iter()
                .map(|e| glob::Pattern::new(e))
                .collect::<Result<_, _>>()?,
            max_line_bytes,
            read_from_end: read_from_end && saved.is_empty(),
            followed: Vec::new(),
            saved,
            retired: Vec::new(),
            polls: 0,
        })
    }

    /// The followed files whose path no longer matches (rotated out of the glob, or deleted):
    /// read until they stop growing, then closed.
    pub fn unmatched(&self) -> Vec<FileId> {
        self.followed
            .iter()
            .filter(|f| f.unmatched_polls > 0)
            .map(|f| f.id)
            .collect()
    }

    /// Where every followed file stands.
    pub fn positions(&self) -> Vec<Position> {
        self.followed
            .iter()
            .map(|f| Position {
                path: f.path.clone(),
                dev: f.id.0,
                ino: f.id.1,
                offset: f.offset(),
                fingerprint: f.fingerprint,
            })
            .collect()
    }

    /// Reads what the files gained since the last poll, calling `each(file, path, line, start,
    /// end)` for every complete line: `start` is where it begins in its file (just past the line
    /// before; a line skipped as too long is counted into the next one's start), `end` just past
    /// its `\n`. At most `max_bytes` of each file a poll.
    pub fn poll(
        &mut self,
        max_bytes: u64,
        mut each: impl FnMut(FileId, &Path, &[u8], u64, u64),
    ) -> PollStats {
        let mut stats = PollStats::default();
        let first = self.polls == 0;
        self.polls += 1;
        let matched = self.matches(&mut stats);
        for f in &mut self.followed {
            f.unmatched_polls += 1;
        }
        let mut fresh = Vec::new();
        for (path, meta) in matched {
            let id = (meta.dev(), meta.ino());
            match self.followed.iter_mut().find(|f| f.id == id) {
                Some(f) => {
                    f.path = path;
                    f.unmatched_polls = 0;
                }
                None => fresh.push((path, id, meta.len())),
            }
        }
        // The files followed already first: one found truncated leaves its position for a copy
        // of it among the new ones.
        let known = self.followed.len();
        self.read_files(0, max_bytes, &mut stats, &mut each);
        for (path, id, size) in fresh {
            match self.open(&path, id, size, first, &mut stats) {
                Ok(Some(f)) => self.followed.push(f),
                Ok(None) => {} // a copy being written: looked at again next poll
                Err(e) => {
                    stats.errors += 1;
                    tracing::warn!(path = %path.display(), "log file not opened: {e}");
                }
            }
        }
        self.read_files(known, max_bytes, &mut stats, &mut each);
        let closed: Vec<usize> = (0..self.followed.len())
            .filter(|&i| {
                let f = &self.followed[i];
                f.unmatched_polls > 0 && f.idle_polls >= ROTATE_WAIT_POLLS
            })
            .collect();
        for i in closed.into_iter().rev() {
            let mut f = self.followed.remove(i);
            if let Some(last) = f.framer.finish() {
                each(f.id, &f.path, &last, f.last_end, f.read_pos);
            }
            if let Some(fp) = f.fingerprint {
                retire(&mut self.retired, fp, f.read_pos, f.id);
            }
        }
        stats
    }

    /// Reads the followed files from index `from` on.
    fn read_files(
        &mut self,
        from: usize,
        max_bytes: u64,
        stats: &mut PollStats,
        each: &mut impl FnMut(FileId, &Path, &[u8], u64, u64),
    ) {
        let max_line = self.max_line_bytes;
        for f in &mut self.followed[from..] {
            if let Err(e) = read_new(f, max_bytes, max_line, &mut self.retired, stats, each) {
                stats.errors += 1;
                tracing::warn!(path = %f.path.display(), "log file not read: {e}");
            }
        }
    }

    /// The regular files matching the glob, sorted, with their metadata.
    fn matches(&self, stats: &mut PollStats) -> Vec<(PathBuf, std::fs::Metadata)> {
        let paths = match glob::glob(self.include.as_str()) {
            Ok(p) => p,
            Err(e) => {
                stats.errors += 1;
                tracing::warn!("log glob {}: {e}", self.include);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for path in paths.flatten() {
            if self.exclude.iter().any(|e| e.matches_path(&path)) {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() {
                    out.push((path, meta));
                }
            }
        }
        out
    }

    /// Opens a file not followed yet, at the position it resumes from.
    fn open(
        &mut self,
        path: &Path,
        id: FileId,
        size: u64,
        first: bool,
        stats: &mut PollStats,
    ) -> std::io::Result<Option<Followed>> {
        let mut file = File::open(path)?;
        let fp = fingerprint(&mut file, size)?;
        let mut start = None;
        // The same inode with the same first bytes: the file saved (an inode can be reused).
        // Otherwise (truncated or replaced while the agent was down) that saved position stays a
        // candidate for a copy of the file as it was.
        if let Some(i) = self.saved.iter().position(|p| (p.dev, p.ino) == id) {
            let p = &self.saved[i];
            let same = match &p.fingerprint {
                Some(fp) => p.offset <= size && starts_like(&mut file, size, fp)?,
                None => p.offset == 0,
            };
            if same {
                start = Some(p.offset);
                self.saved.remove(i);
            }
        }
        if start.is_none() {
            // A copy of a file known before: saved, rotated away, or still followed (copied, not
            // truncated yet).
            let saved = self
                .saved
                .iter()
                .map(|p| (p.fingerprint, p.offset, (p.dev, p.ino)));
            let retired = self
                .retired
                .iter()
                .map(|r| (Some(r.fingerprint), r.offset, r.id));
            let followed = self
                .followed
                .iter()
                .map(|f| (f.fingerprint, f.offset(), f.id));
            let candidates: Vec<(Fingerprint, u64, FileId)> = saved
                .chain(retired)
                .chain(followed)
                .filter_map(|(f, o, id)| f.map(|f| (f, o, id)))
                .filter(|(f, _, _)| f.len <= size)
                .collect();
            for (f, o, of) in candidates {
                if starts_like(&mut file, size, &f)? {
                    if o > size {
                        // Starts like a known file but is shorter than where that one was
                        // left: a copy still being written (copy-and-truncate). Wait for it.
                        return Ok(None);
                    }
                    start = Some(o);
                    stats.copies.push((of, id, o));
                    self.retired.retain(|r| r.fingerprint != f);
                    self.saved.retain(|p| p.fingerprint != Some(f));
                    break;
                }
            }
        }
        let start = start.unwrap_or(if first && self.read_from_end { size } else { 0 });
        tracing::info!(path = %path.display(), offset = start, "following log file");
        Ok(Some(Followed {
            path: path.to_path_buf(),
            id,
            file,
            read_pos: start,
            last_end: start,
            framer: LineFramer::new(self.max_line_bytes),
            fingerprint: fp,
            unmatched_polls: 0,
            idle_polls: 0,
        }))
    }
}

fn retire(retired: &mut Vec<Retired>, fingerprint: Fingerprint, offset: u64, id: FileId) {
    retired.retain(|r| r.fingerprint != fingerprint);
    retired.push(Retired {
        fingerprint,
        offset,
        id,
    });
    if retired.len() > RETIRED_MAX {
        retired.remove(0);
    }
}

/// Reads what `f` gained, handling truncation and replacement in place.
fn read_new(
    f: &mut Followed,
    max_bytes: u64,
    max_line_bytes: usize,
    retired: &mut Vec<Retired>,
    stats: &mut PollStats,
    each: &mut impl FnMut(FileId, &Path, &[u8], u64, u64),
) -> std::io::Result<()> {
    let size = f.file.metadata()?.len();
    let replaced = match f.fingerprint {
        Some(fp) => !starts_like(&mut f.file, size, &fp)?,
        None => false,
    };
    if size < f.read_pos || replaced {
        if let Some(fp) = f.fingerprint {
            retire(retired, fp, f.offset(), f.id);
        }
        tracing::info!(path = %f.path.display(), "log file truncated: reading it from its start");
        f.read_pos = 0;
        f.last_end = 0;
        f.framer = LineFramer::new(max_line_bytes);
        f.fingerprint = None;
    }
    if f.fingerprint
        .is_none_or(|fp| fp.len < FINGERPRINT_BYTES && size > fp.len)
    {
        f.fingerprint = fingerprint(&mut f.file, size)?;
    }
    if size <= f.read_pos {
        f.idle_polls += 1;
        return Ok(());
    }
    f.idle_polls = 0;
    let want = (size - f.read_pos).min(max_bytes);
    let mut buf = Vec::with_capacity(want as usize);
    f.file.seek(SeekFrom::Start(f.read_pos))?;
    (&mut f.file).take(want).read_to_end(&mut buf)?;
    let base = f.read_pos;
    let (id, path) = (f.id, f.path.clone());
    let last_end = &mut f.last_end;
    stats.too_long += f.framer.feed_each(&buf, |line, end| {
        let end = base + end as u64;
        each(id, &path, line, *last_end, end);
        *last_end = end;
    });
    f.read_pos += buf.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("thermo-follow-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn truncate(&self, name: &str) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(self.path(name))
                .unwrap()
                .set_len(0)
                .unwrap();
        }

        /// What logrotate's `copytruncate` does.
        fn copy_and_truncate(&self, name: &str, to: &str) {
            std::fs::copy(self.path(name), self.path(to)).unwrap();
            self.truncate(name);
        }

        fn append(&self, name: &str, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Polls once; the lines handed out, as text.
    fn poll(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(1 << 20, |_, _, line, start, end| {
            assert!(start < end, "{start}..{end}");
            out.push(String::from_utf8_lossy(line).to_string())
        });
        out
    }

    fn lines(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    fn texts(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("line {i}")).collect()
    }

    fn follower(d: &Dir, glob: &str, saved: Vec<Position>) -> Follower {
        Follower::new(
            &d.path(glob).display().to_string(),
            &["*.gz".into()],
            1000,
            false,
            saved,
        )
        .unwrap()
    }

    #[test]
    fn appended_lines_come_once_and_a_partial_line_waits_for_its_end() {
        let d = Dir::new("append");
        d.append("a.log", &lines(0, 3));
        let mut f = follower(&d, "a.log", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 3));
        assert_eq!(poll(&mut f), Vec::<String>::new());
        d.append("a.log", "line 3\nline");
        assert_eq!(poll(&mut f), texts(3, 4));
        assert_eq!(f.positions()[0].offset, 28, "just past line 3");
        d.append("a.log", " 4\n");
        assert_eq!(poll(&mut f), texts(4, 5));
    }

    #[test]
    fn rotation_by_rename_drains_the_old_file_then_reads_the_new_one() {
        let d = Dir::new("rename");
        d.append("a.log", &lines(0, 2));
        let mut f = follower(&d, "a.log", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 2));
        // Renamed; the writer still has the old file open and writes two more lines to it before
        // it reopens the path.
        std::fs::rename(d.path("a.log"), d.path("a.log.1")).unwrap();
        d.append("a.log.1", &lines(2, 4));
        d.append("a.log", &lines(4, 6));
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, texts(2, 6));
        d.append("a.log", &lines(6, 7));
        assert_eq!(poll(&mut f), texts(6, 7));
        // The old file is closed once idle, and not read again.
        for _ in 0..ROTATE_WAIT_POLLS {
            assert_eq!(poll(&mut f), Vec::<String>::new());
        }
        assert_eq!(f.followed.len(), 1);
    }

    #[test]
    fn copy_and_truncate_reads_the_unread_tail_from_the_copy_and_the_file_from_its_start() {
        let d = Dir::new("copytruncate");
        d.append("a.log", &lines(0, 40)); // longer than the fingerprint
        let mut f = follower(&d, "a.log*", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 40));
        // Two lines the follower has not read yet when logrotate copies and truncates.
        d.append("a.log", &lines(40, 42));
        d.copy_and_truncate("a.log", "a.log.1");
        d.append("a.log", &lines(42, 44));
        // An old, compressed rotation is excluded.
        d.append("a.log.2.gz", "\u{1f}binary\n");
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, texts(40, 44));
        assert_eq!(poll(&mut f), Vec::<String>::new());
    }

    #[test]
    fn a_copy_seen_while_it_is_written_is_read_once_complete() {
        let d = Dir::new("copy-in-progress");
        d.append("a.log", &lines(0, 40));
        let mut f = follower(&d, "a.log*", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 40));
        d.append("a.log", &lines(40, 42));
        let all = std::fs::read(d.path("a.log")).unwrap();
        // The copy has its first 300 bytes when the follower looks: not read yet.
        std::fs::write(d.path("a.log.1"), &all[..300]).unwrap();
        assert_eq!(poll(&mut f), texts(40, 42), "only the original's new lines");
        std::fs::write(d.path("a.log.1"), &all).unwrap();
        d.truncate("a.log");
        assert_eq!(poll(&mut f), Vec::<String>::new(), "nothing twice");
        d.append("a.log", &lines(42, 43));
        assert_eq!(poll(&mut f), texts(42, 43));
    }

    #[test]
    fn a_restart_resumes_from_saved_positions_and_reads_new_files_from_their_start() {
        let d = Dir::new("restart");
        d.append("a.log", &lines(0, 30));
        let mut f = follower(&d, "*.log", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 30));
        let saved = f.positions();
        drop(f);
        d.append("a.log", &lines(30, 32));
        d.append("b.log", &lines(100, 101));
        let mut f = follower(&d, "*.log", saved.clone());
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, vec!["line 100", "line 30", "line 31"]);
        // A file replaced by another under the same name (same inode cannot be assumed): read
        // from its start, not from the saved offset.
        drop(f);
        std::fs::remove_file(d.path("a.log")).unwrap();
        d.append("a.log", &lines(500, 501));
        let mut f = follower(&d, "a.log", saved);
        assert_eq!(poll(&mut f), texts(500, 501));
    }

    #[test]
    fn a_copy_made_while_the_agent_was_down_resumes_from_the_saved_original() {
        let d = Dir::new("copy-while-down");
        d.append("a.log", &lines(0, 40));
        let mut f = follower(&d, "a.log*", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 40));
        let saved = f.positions();
        drop(f);
        // While the agent is down: more lines, copy-and-truncate, new lines.
        d.append("a.log", &lines(40, 42));
        d.copy_and_truncate("a.log", "a.log.1");
        d.append("a.log", &lines(42, 43));
        let mut f = follower(&d, "a.log*", saved);
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, texts(40, 43));
    }

    #[test]
    fn without_saved_positions_existing_files_may_be_read_from_their_end() {
        let d = Dir::new("from-end");
        d.append("a.log", &lines(0, 3));
        let mut f = Follower::new(
            &d.path("*.log").display().to_string(),
            &[],
            1000,
            true,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(poll(&mut f), Vec::<String>::new());
        d.append("a.log", &lines(3, 4));
        d.append("b.log", &lines(10, 11)); // appeared later: from its start
        let mut got = poll(&mut f);
        got.sort();
        assert_eq!(got, vec!["line 10", "line 3"]);
    }

    #[test]
    fn a_deleted_file_is_drained_then_closed() {
        let d = Dir::new("deleted");
        d.append("a.log", &lines(0, 1));
        let mut f = follower(&d, "a.log", Vec::new());
        assert_eq!(poll(&mut f), texts(0, 1));
        d.append("a.log", "last line without newline");
        std::fs::remove_file(d.path("a.log")).unwrap();
        let mut got = Vec::new();
        for _ in 0..=ROTATE_WAIT_POLLS {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, vec!["last line without newline"]);
        assert!(f.followed.is_empty());
    }
}
