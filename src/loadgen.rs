//! `thermo loadgen`: sends realistic StatsD traffic (see `thermo_core::demo`) to an agent over UDP
//! at a fixed request rate for a bounded time, and prints what it sent.
//!
//! ```text
//! thermo loadgen [--agent 127.0.0.1:8125] [--rate 500] [--seconds 10] [--seed 1]
//! ```

use anyhow::{bail, Context, Result};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use thermo_core::demo::DemoTraffic;

struct Opts {
    agent: String,
    rate: u64,
    seconds: u64,
    seed: u64,
}

const USAGE: &str = "usage: thermo loadgen [--agent ADDR] [--rate N] [--seconds N] [--seed N]";

fn parse(mut it: impl Iterator<Item = String>) -> Result<Opts> {
    let mut o = Opts {
        agent: "127.0.0.1:8125".into(),
        rate: 500,
        seconds: 10,
        seed: 1,
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--agent" => o.agent = value("--agent")?,
            "--rate" => {
                o.rate = value("--rate")?
                    .parse()
                    .context("--rate: requests per second")?
            }
            "--seconds" => {
                o.seconds = value("--seconds")?
                    .parse()
                    .context("--seconds: a whole number")?
            }
            "--seed" => o.seed = value("--seed")?.parse().context("--seed: a whole number")?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.rate == 0 || o.seconds == 0 || o.seconds > 86_400 {
        bail!("--rate must be positive and --seconds between 1 and 86400");
    }
    Ok(o)
}

/// Runs the load generator with the arguments after `loadgen`.
pub fn run(args: impl Iterator<Item = String>) -> Result<()> {
    let args: Vec<String> = args.collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let o = parse(args.into_iter())?;
    let sock = UdpSocket::bind("0.0.0.0:0").context("bind a UDP socket")?;
    let mut traffic = DemoTraffic::new(o.seed);
    let start = Instant::now();
    let (mut lines, mut datagrams, mut bytes) = (0u64, 0u64, 0u64);
    // Every 10 ms, send the requests due by then (rate × elapsed time), 20 lines per datagram. The
    // count follows the clock, not the ticks: a late tick sends more, and the run ends with
    // exactly rate × seconds requests sent.
    let total = o.rate.saturating_mul(o.seconds);
    let span = Duration::from_secs(o.seconds);
    let mut requests = 0u64;
    while requests < total {
        let elapsed = start.elapsed();
        let due = if elapsed >= span {
            total
        } else {
            ((o.rate as f64 * elapsed.as_secs_f64()) as u64).min(total)
        };
        let n = due.saturating_sub(requests);
        for d in traffic.datagrams(n as usize, 20) {
            sock.send_to(d.as_bytes(), &o.agent)
                .with_context(|| format!("send to {}", o.agent))?;
            lines += d.lines().count() as u64;
            datagrams += 1;
            bytes += d.len() as u64;
        }
        requests += n;
        if requests < total {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {lines} lines in {datagrams} datagrams ({bytes} bytes) to {} in {secs:.1} s: {:.0} lines/s ({requests} requests)",
        o.agent,
        lines as f64 / secs
    );
    Ok(())
}
