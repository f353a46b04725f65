//! Checkpoints of the open minutes: with `spool_dir` and `checkpoint_interval_secs`, a SIGKILLed
//! or crashed agent restarts with every line it had accepted up to its last checkpoint.
//!
//! # On-disk format
//!
//! `<spool_dir>/checkpoint`, replaced whole (written as `.tmp-checkpoint`, fsynced, renamed, the
//! directory fsynced):
//!
//! ```text
//! "TC" 0x01 | u32 LE CRC-32 (IEEE) of body | body       body = gzip(Batch)
//! ```
//!
//! The `Batch` (docs/storage.md) holds every open series-minute; its `seq` is the *watermark*: the
//! last sequence number the spool had given a batch when the snapshot was taken.
//!
//! # Nothing counted twice
//!
//! A minute flushed after the checkpoint is in a spool batch with a higher `seq`; at restart the
//! checkpoint's copy of every such minute is left out (the batch holds all of it). So that such a
//! batch is still on disk when the agent restarts, the spool keeps the file of an acknowledged
//! batch until a checkpoint with a watermark at or above its `seq` is written
//! ([`crate::spool::Spool::release`]); a restarted agent sends those again, and the aggregator
//! merges them once. A checkpoint that cannot be read back is renamed `checkpoint.corrupt` and
//! counted in `errors_total{kind="checkpoint_corrupt"}`; the agent starts without it.
//!
//! # What is lost
//!
//! Lines accepted after the last checkpoint: at most `checkpoint_interval_secs` of them (plus the
//! time a checkpoint takes to write). A relative gauge line (`+N`, `-N`) after a restart starts
//! from the last absolute value seen since (0 when none).

use crate::spool::{frame, unframe};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use thermo_core::accumulator::ClosedMinute;
use thermo_core::codec::{Batch, Item};
use thermo_core::key::MetricKey;

const MAGIC: &[u8; 3] = b"TC\x01";
const NAME: &str = "checkpoint";

/// A checkpoint read back: the open minutes, and the spool's watermark when they were taken.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub watermark: u64,
    pub minutes: Vec<ClosedMinute>,
}

impl Checkpoint {
    /// Its series-minutes.
    pub fn series(&self) -> usize {
        self.minutes.iter().map(|(_, s)| s.len()).sum()
    }

    /// Leaves out the minutes in `flushed` (those in spool batches above the watermark).
    pub fn without(mut self, flushed: &BTreeSet<i64>) -> Self {
        self.minutes.retain(|(m, _)| !flushed.contains(m));
        self
    }
}

/// Writes the checkpoint of `minutes` with `watermark` into `dir`, durably. Blocking.
pub fn write(
    dir: &Path,
    agent_id: &str,
    watermark: u64,
    minutes: Vec<ClosedMinute>,
) -> std::io::Result<usize> {
    let items: Vec<Item> = minutes
        .into_iter()
        .flat_map(|(minute, series)| {
            series.into_iter().map(move |(key, agg)| Item {
                name: key.name().to_string(),
                tags: key.tags().to_vec(),
                minute,
                agg,
            })
        })
        .collect();
    let n = items.len();
    let batch = Batch {
        agent_id: agent_id.to_string(),
        seq: watermark,
        items,
    };
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&batch.encode())?;
    let file = frame(MAGIC, &enc.finish()?);
    crate::spool::write_durably(dir, NAME, &file)?;
    Ok(n)
}

/// Reads the checkpoint in `dir` (`Ok(None)` without one), of series of `tenant`. A corrupt one
/// is renamed `checkpoint.corrupt`: `Err` says why. Blocking.
pub fn read(dir: &Path, tenant: &str) -> Result<Option<Checkpoint>, String> {
    let path = dir.join(NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let decoded = unframe(MAGIC, &bytes).and_then(|(_, batch)| to_checkpoint(batch, tenant));
    match decoded {
        Ok(c) => Ok(Some(c)),
        Err(why) => {
            let aside = dir.join(format!("{NAME}.corrupt"));
            let _ = std::fs::rename(&path, &aside);
            Err(format!(
                "{} set aside as {}: {why}",
                path.display(),
                aside.display()
            ))
        }
    }
}

fn to_checkpoint(batch: Batch, tenant: &str) -> Result<Checkpoint, String> {
    let mut minutes: Vec<ClosedMinute> = Vec::new();
    for it in batch.items {
        let key = MetricKey::new(tenant, it.name, it.tags).map_err(|e| e.to_string())?;
        match minutes.last_mut() {
            Some((m, series)) if *m == it.minute => series.push((key, it.agg)),
            _ => minutes.push((it.minute, vec![(key, it.agg)])),
        }
    }
    Ok(Checkpoint {
        watermark: batch.seq,
        minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::aggregate::{Aggregate, Counter};

    fn minutes() -> Vec<ClosedMinute> {
        let series = |m: i64| {
            (0..3)
                .map(|i| {
                    let key = MetricKey::new("default", "req", vec![("s".into(), format!("s{i}"))])
                        .unwrap();
                    let agg = Aggregate::Counter(Counter {
                        sum: (m + i) as f64,
                        samples: 1,
                    });
                    (key, agg)
                })
                .collect()
        };
        vec![(60, series(60)), (120, series(120))]
    }

    /// Written and read back whole; a minute flushed since is left out; a corrupt file is set
    /// aside and the next read finds none.
    #[test]
    fn checkpoints_round_trip_and_corrupt_ones_are_set_aside() {
        let dir = std::env::temp_dir().join(format!("thermo-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read(&dir, "default").unwrap().is_none());
        assert_eq!(write(&dir, "a1", 42, minutes()).unwrap(), 6);
        let c = read(&dir, "default").unwrap().unwrap();
        assert_eq!((c.watermark, c.series()), (42, 6));
        assert_eq!(c.minutes, minutes());
        let c = c.without(&[60].into_iter().collect());
        assert_eq!(c.minutes, minutes()[1..].to_vec());

        std::fs::write(dir.join(NAME), b"TC\x01\0\0\0\0junk").unwrap();
        let err = read(&dir, "default").unwrap_err();
        assert!(err.contains("CRC"), "{err}");
        assert!(dir.join("checkpoint.corrupt").exists());
        assert!(read(&dir, "default").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
