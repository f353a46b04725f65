//! `thermo`: one binary, one subcommand per role.
//!
//! ```text
//! thermo agent|partitioner|aggregator|read-service [--config FILE] [--set key=value]...
//! ```
//!
//! Configuration: defaults ← `--config` TOML ← `THERMO_<ROLE>_<KEY>` env ← `--set` flags.

mod loadgen;
mod migrate;
mod standalone;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

const USAGE: &str = "usage: thermo <role> [--config FILE] [--set key=value]...

roles:
  agent          StatsD/DogStatsD sidecar (UDP 127.0.0.1:8125, HTTP 127.0.0.1:8126)
  partitioner    ingest gateway into Kafka (HTTP 127.0.0.1:8127)
  aggregator     Kafka consumer that merges minutes into Redis (HTTP 127.0.0.1:8128)
  read-service   query API and dashboard (HTTP 127.0.0.1:8129)
  standalone     every role in one process on embedded storage (UDP 8125, HTTP 8129):
                 thermo standalone [--data DIR] [--udp ADDR] [--tcp ADDR] [--uds PATH] [--http ADDR] [--demo]
  loadgen        sends realistic StatsD traffic to an agent:
                 thermo loadgen [--agent 127.0.0.1:8125] [--rate 500] [--seconds 10] [--seed 1]
  migrate        moves a Redis written before Redis Cluster support into the current keys:
                 thermo migrate --redis-url URL --partitions N (aggregators stopped)

Every key of a role's TOML file can also be set with THERMO_<ROLE>_<KEY> (for example
THERMO_AGENT_UDP_ADDR=0.0.0.0:8125, THERMO_READ_SERVICE_HTTP_ADDR=...) or --set key=value.
See README.md for every key and its default.";

struct Args {
    role: String,
    config: Option<PathBuf>,
    sets: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let role = match it.next() {
        Some(r) if r == "-h" || r == "--help" || r == "help" => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(r) => r,
        None => bail!("missing role\n\n{USAGE}"),
    };
    let mut args = Args {
        role,
        config: None,
        sets: Vec::new(),
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                args.config = Some(it.next().context("--config needs a file")?.into());
            }
            "--set" => args.sets.push(it.next().context("--set needs key=value")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(args)
}

fn load<T: serde::de::DeserializeOwned>(args: &Args) -> Result<T> {
    Ok(thermo_runtime::config::load(
        &args.role,
        args.config.as_deref(),
        std::env::vars(),
        &args.sets,
    )?)
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("loadgen") {
        return loadgen::run(std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return migrate::run(std::env::args().skip(2));
    }
    let standalone = std::env::args().nth(1).as_deref() == Some("standalone");
    let args = if standalone {
        None
    } else {
        Some(parse_args(std::env::args().skip(1))?)
    };
    thermo_runtime::telemetry::init_logging();
    let offset = thermo_core::window::clock_offset_from_env().map_err(anyhow::Error::msg)?;
    if offset != 0 {
        tracing::warn!(
            offset_secs = offset,
            "the wall clock is shifted by {} (for tests only)",
            thermo_core::window::CLOCK_OFFSET_ENV
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let Some(args) = args else {
        return rt.block_on(standalone::run(std::env::args().skip(2)));
    };
    let shutdown = thermo_runtime::shutdown::signal();
    rt.block_on(async {
        match args.role.as_str() {
            "agent" => thermo_agent::run(load(&args)?, shutdown).await?,
            "partitioner" => thermo_partitioner::run(load(&args)?, shutdown).await?,
            "aggregator" => thermo_aggregator::run(load(&args)?, shutdown).await?,
            "read-service" => thermo_read_service::run(load(&args)?, shutdown).await?,
            other => bail!("unknown role {other:?}\n\n{USAGE}"),
        }
        Ok(())
    })
}
