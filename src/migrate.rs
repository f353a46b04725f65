//! `thermo migrate`: moves a Redis written before Redis Cluster support into the current key
//! schema (`thermo_store::redis_migrate`; docs/storage.md, "Migration").
//!
//! ```text
//! thermo migrate --redis-url redis://127.0.0.1:6379 --partitions 6
//! ```

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: thermo migrate --redis-url URL --partitions N

Stop every aggregator first. N is the topic's partition count (kafka-topics --describe).
Running it again after an interruption finishes the migration.";

pub fn run(mut it: impl Iterator<Item = String>) -> Result<()> {
    let (mut url, mut partitions) = (None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--redis-url" => url = Some(it.next().context("--redis-url needs a URL")?),
            "--partitions" => {
                partitions = Some(
                    it.next()
                        .context("--partitions needs a count")?
                        .parse::<u32>()
                        .context("--partitions: the topic's partition count")?,
                )
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let (Some(url), Some(partitions)) = (url, partitions) else {
        bail!("--redis-url and --partitions are both needed\n\n{USAGE}");
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let moved = rt.block_on(thermo_store::redis_migrate::migrate(
        &url,
        partitions,
        |step| println!("{step}"),
    ))?;
    println!(
        "migrated: {} offsets, {} hours of series cells, {} series, {} pending hours",
        moved.offsets, moved.data_keys, moved.series, moved.pending_hours
    );
    Ok(())
}
