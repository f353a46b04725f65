//! StatsD/DogStatsD intake on sockets besides UDP: a Unix datagram socket (`uds_path`, like
//! DogStatsD's `/var/run/datadog/dsd.socket`) and TCP (`tcp_addr`, lines ended by `\n`).
//!
//! Both hand what they receive to [`Shared::ingest`], the parser and counters of UDP: a datagram
//! as it came, a TCP connection's complete lines as one run per read ([`LineFramer`]). On TCP a
//! line longer than `max_line_bytes` is skipped whole and counted
//! (`dropped_total{reason="line_too_long"}`), and a last line without its
//! `\n` is taken when the client closes the connection. At most `max_tcp_connections` connections
//! are served at once; more wait in the kernel's backlog.
//!
//! The Unix socket is created with mode 0722 (anyone may write, as DogStatsD's), replacing a
//! socket file left by an agent that died, but never a file of another kind nor a socket some
//! process still receives on; it is removed when the agent stops.

use crate::{AgentError, Shared};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Splits a byte stream into lines: complete lines go out in runs, a partial one waits for the
/// rest, and a line longer than the limit is skipped up to its `\n`.
#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    /// The start of a line whose `\n` has not come yet.
    pending: Vec<u8>,
    /// Inside a line already counted as too long: drop up to its `\n`.
    skipping: bool,
    /// The complete lines of one `feed`, each ended by `\n`.
    run: Vec<u8>,
}

impl LineFramer {
    /// A framer of lines of at most `max` bytes (without their `\n`, or `\r\n`).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            pending: Vec::new(),
            skipping: false,
            run: Vec::new(),
        }
    }

    /// Takes the next bytes of the stream. Returns the complete lines they ended (each ended by
    /// `\n`; empty if none) and how many lines were skipped as too long.
    pub fn feed(&mut self, data: &[u8]) -> (&[u8], u64) {
        let mut run = std::mem::take(&mut self.run);
        run.clear();
        let skipped = self.feed_each(data, |line, _| {
            run.extend_from_slice(line);
            run.push(b'\n');
        });
        self.run = run;
        (&self.run, skipped)
    }

    /// Takes the next bytes of the stream, calling `each(line, end)` for every complete line
    /// they end (without its `\n` or `\r\n`), `end` being the index in `data` just past its
    /// `\n`. Returns how many lines were skipped as too long.
    pub fn feed_each(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8], usize)) -> u64 {
        let mut skipped = 0;
        let mut at = 0;
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let mut piece = &data[..end];
            data = &data[end + 1..];
            at += end + 1;
            if std::mem::take(&mut self.skipping) {
                continue; // the end of a line counted already
            }
            if let Some(stripped) = piece.strip_suffix(b"\r") {
                piece = stripped;
            }
            if self.pending.len() + piece.len() > self.max {
                skipped += 1;
                self.pending.clear();
                continue;
            }
            if self.pending.is_empty() {
                each(piece, at);
            } else {
                self.pending.extend_from_slice(piece);
                each(&self.pending, at);
                self.pending.clear();
            }
        }
        if !self.skipping && !data.is_empty() {
            if self.pending.len() + data.len() > self.max {
                skipped += 1;
                self.pending.clear();
                self.skipping = true;
            } else {
                self.pending.extend_from_slice(data);
            }
        }
        skipped
    }

    /// Bytes of a line whose `\n` has not come yet (0 while skipping a long one).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The stream ended: its last line if it had no `\n` (`None` if there is none).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.skipping = false;
        let last = std::mem::take(&mut self.pending);
        (!last.is_empty()).then_some(last)
    }
}

/// Binds the Unix datagram socket at `path`: a stale socket file is replaced, anything else there
/// is an error.
pub fn bind_uds(path: &Path) -> Result<tokio::net::UnixDatagram, AgentError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |what: &str, e: std::io::Error| {
        AgentError::Startup(format!("unix socket {}: {what}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let probe =
                std::os::unix::net::UnixDatagram::unbound().map_err(|e| fail("probe", e))?;
            if probe.connect(path).is_ok() {
                return Err(AgentError::Startup(format!(
                    "unix socket {}: in use by another process",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| fail("removing the stale socket", e))?;
            tracing::info!(path = %path.display(), "replaced a stale unix socket");
        }
        Ok(_) => {
            return Err(AgentError::Startup(format!(
                "unix socket {}: a file that is not a socket is there",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("stat", e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("creating its directory", e))?;
    }
    let sock = tokio::net::UnixDatagram::bind(path).map_err(|e| fail("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))
        .map_err(|e| fail("chmod 0722", e))?;
    Ok(sock)
}

/// Receives datagrams on `sock` for ever.
pub async fn serve_uds(sock: tokio::net::UnixDatagram, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                shared.ingest(&buf[..n]);
            }
            Err(e) => {
                shared.metrics.errors.with_label_values(&["uds_recv"]).inc();
                tracing::warn!("unix socket receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Removes the socket file at `path` (the agent is stopping).
pub fn remove_uds(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), "unix socket not removed: {e}");
    }
}

/// Accepts connections on `listener` for ever, serving up to `max_connections` at once. Dropping
/// (aborting) the future closes every connection with it.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    max_line_bytes: usize,
    max_connections: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let open = shared
        .metrics
        .gauge("tcp_connections", "StatsD TCP connections being served");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                shared
                    .metrics
                    .errors
                    .with_label_values(&["tcp_accept"])
                    .inc();
                tracing::warn!("tcp accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (shared, open) = (shared.clone(), open.clone());
        open.inc();
        connections.spawn(async move {
            serve_connection(stream, &shared, max_line_bytes).await;
            open.dec();
            drop(slot);
        });
    }
}

/// Reads one connection's lines until the client closes it.
async fn serve_connection(mut stream: tokio::net::TcpStream, shared: &Shared, max: usize) {
    let mut framer = LineFramer::new(max);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                shared.metrics.errors.with_label_values(&["tcp_read"]).inc();
                tracing::debug!("tcp connection ended: {e}");
                break;
            }
        };
        let (lines, skipped) = framer.feed(&buf[..n]);
        if !lines.is_empty() {
            shared.ingest(lines);
        }
        shared.too_long(skipped);
    }
    if let Some(last) = framer.finish() {
        shared.ingest(&last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` and returns the lines taken, the last unended one included, and the skips.
    fn frame(max: usize, chunks: &[&[u8]]) -> (Vec<String>, u64) {
        let mut f = LineFramer::new(max);
        let (mut lines, mut skipped) = (Vec::new(), 0);
        for c in chunks {
            let (run, s) = f.feed(c);
            skipped += s;
            let text = String::from_utf8_lossy(run).to_string();
            lines.extend(text.lines().map(str::to_string));
        }
        if let Some(last) = f.finish() {
            lines.push(String::from_utf8_lossy(&last).to_string());
        }
        (lines, skipped)
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let (lines, skipped) = frame(64, &[b"a:1|c\nb:", b"2|c", b"\r\nc:3|c\n", b"d:4|c"]);
        assert_eq!(lines, ["a:1|c", "b:2|c", "c:3|c", "d:4|c"]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_once_whatever_its_chunks() {
        let long = "x".repeat(20);
        // Whole in one read.
        let (lines, skipped) = frame(10, &[format!("a:1|c\n{long}\nb:2|c\n").as_bytes()]);
        assert_eq!((lines, skipped), (vec!["a:1|c".into(), "b:2|c".into()], 1));
        // Spread over reads, the limit crossed in the middle, its end in a later read.
        let (lines, skipped) = frame(10, &[b"a:1|c\nxxxxxx", b"xxxxxx", b"xxxx", b"x\nb:2|c\n"]);
        assert_eq!((lines, skipped), (vec!["a:1|c".into(), "b:2|c".into()], 1));
        // Exactly the limit is taken.
        let (lines, skipped) = frame(5, &[b"a:1|c\n"]);
        assert_eq!((lines, skipped), (vec!["a:1|c".into()], 0));
        // A too-long last line without its newline.
        let (lines, skipped) = frame(5, &[b"a:1|c\nb:22|c"]);
        assert_eq!((lines, skipped), (vec!["a:1|c".into()], 1));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_or_another_file_refused() {
        let dir = std::env::temp_dir().join(format!("thermo-uds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/dsd.socket");
        // Created with its directory; a second agent on the same path is refused.
        let live = bind_uds(&path).unwrap();
        let err = bind_uds(&path).unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
        // A socket file whose receiver is gone (a SIGKILLed agent's) is replaced.
        drop(live);
        assert!(path.exists());
        let again = bind_uds(&path).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"x:1|c", &path).unwrap();
        let mut buf = [0u8; 16];
        let n = again.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"x:1|c");
        drop(again);
        remove_uds(&path);
        // A file of another kind is never removed.
        std::fs::write(&path, b"keep me").unwrap();
        let err = bind_uds(&path).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        /// However a stream of lines is cut into reads, the lines come out the same, and every
        /// line over the limit is counted once.
        #[test]
        fn any_cut_gives_the_same_lines(
            lines in proptest::collection::vec("[a-z:|0-9]{0,30}", 0..20),
            cuts in proptest::collection::vec(0usize..400, 0..10),
            max in 1usize..25,
        ) {
            let stream: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            let mut at: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            at.push(0);
            at.push(stream.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let (got, skipped) = frame(max, &chunks);
            let kept: Vec<String> = lines.iter().filter(|l| l.len() <= max && !l.is_empty()).cloned().collect();
            let got: Vec<String> = got.into_iter().filter(|l| !l.is_empty()).collect();
            prop_assert_eq!(got, kept);
            prop_assert_eq!(skipped, lines.iter().filter(|l| l.len() > max).count() as u64);
        }
    }
}
