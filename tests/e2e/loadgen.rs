//! `thermo loadgen` sends what it says it sent, as valid StatsD.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;
use thermo_core::statsd::parse_datagram;

#[test]
fn loadgen_sends_valid_lines_and_reports_them() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = sock.local_addr().expect("addr").to_string();
    let receiver = std::thread::spawn(move || {
        let (mut lines, mut bad) = (0u64, 0u64);
        let mut buf = vec![0u8; 65_536];
        let mut idle = 0;
        // Bounded: stops after 1 s without a datagram (loadgen runs 1 s).
        while idle < 10 {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    idle = 0;
                    for l in parse_datagram(&buf[..n]) {
                        if l.is_ok() {
                            lines += 1;
                        } else {
                            bad += 1;
                        }
                    }
                }
                Err(_) => idle += 1,
            }
        }
        (lines, bad)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args([
            "loadgen",
            "--agent",
            &addr,
            "--rate",
            "300",
            "--seconds",
            "1",
        ])
        .output()
        .expect("run thermo loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {stdout}"));
    let (lines, bad) = receiver.join().expect("receiver");
    assert_eq!(bad, 0, "every line parses");
    assert_eq!(lines, sent, "{stdout}");
    // Exactly rate × seconds requests, however late the ticks (this test shares the cores).
    assert!(stdout.trim_end().ends_with("(300 requests)"), "{stdout}");
    assert!(sent >= 600, "every request has 2+ lines: {stdout}");
}

#[test]
fn subcommands_print_their_usage_on_help() {
    for (role, flag) in [("loadgen", "--help"), ("standalone", "-h")] {
        let out = Command::new(env!("CARGO_BIN_EXE_thermo"))
            .args([role, flag])
            .output()
            .expect("run thermo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "thermo {role} {flag}: {stdout}");
        assert!(
            stdout.starts_with(&format!("usage: thermo {role} [")),
            "thermo {role} {flag}: {stdout}"
        );
    }
}
