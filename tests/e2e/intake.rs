//! StatsD over TCP and over a Unix datagram socket, sent by clients nobody here wrote: PyPI
//! `statsd` (its `TCPStatsClient`) and `datadog` (`DogStatsd` with a `unixgram://` socket path),
//! into `thermo standalone`; the totals read back through the query API are exact. Then what the
//! framing must survive: a TCP line over `max_line_bytes` (skipped, counted, its neighbours taken),
//! a last line without its newline, and a restart after SIGKILL, which leaves the socket file
//! behind (replaced, not refused).

use crate::support::s3::find_python_bin;
use crate::support::stack::{single, Standalone, Target};
use crate::support::*;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// Sends with the two Python clients: over TCP `tcp.req` 1..=100 (sum 5,050) and 50 `tcp.lat`
/// timings; to the socket `uds.req` 1..=100 tagged `route:/odd` or `route:/even` (2,500 and 2,550)
/// and 40 `uds.lat` histogram values. 290 lines.
const CLIENTS: &str = r#"
import sys, statsd
from datadog import DogStatsd
tcp_port, uds = int(sys.argv[1]), sys.argv[2]
t = statsd.TCPStatsClient(host="127.0.0.1", port=tcp_port, timeout=10)
for i in range(1, 101):
    t.incr("tcp.req", i)
with t.pipeline() as p:
    for i in range(50):
        p.timing("tcp.lat", i)
t.close()
# Blocking sends (socket_timeout): a full socket queue waits instead of dropping.
d = DogStatsd(socket_path="unixgram://" + uds, socket_timeout=10)
for i in range(1, 101):
    d.increment("uds.req", i, tags=["route:/odd" if i % 2 else "route:/even"])
for i in range(40):
    d.histogram("uds.lat", float(i))
d.flush()
d.close_socket()
print("sent")
"#;

const LINES: f64 = 290.0;

/// `stat` of `metric` over the two hours around now, as one point per series.
fn total(sa: &Standalone, metric: &str, stat: &str, group_by: Option<&str>) -> serde_json::Value {
    let from = thermo_core::window::minute_start(now_s()) - 3600;
    let group = group_by
        .map(|g| format!("&group_by={g}"))
        .unwrap_or_default();
    sa.query(&format!(
        "metric={metric}&stat={stat}&from={from}&to={}&step=7200{group}",
        from + 7200
    ))
}

fn send_with_python_clients(tcp: u16, uds: &std::path::Path) {
    let python = find_python_bin("python3", "apt-get install python3");
    let out = Command::new(&python)
        .args(["-c", CLIENTS, &tcp.to_string(), &uds.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the Python clients failed (install them with `pip install statsd datadog` or \
         scripts/install-deps.sh pyclients):\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn statsd_clients_over_tcp_and_a_unix_socket_give_exact_totals() {
    let sock_dir = TempDir::new("intake-sock");
    let uds = sock_dir.path().join("dsd.socket");
    let tcp = free_port();
    let mut sa = Standalone::start_with(
        "intake",
        &[
            "--tcp",
            &format!("127.0.0.1:{tcp}"),
            "--uds",
            &uds.display().to_string(),
        ],
    );
    let http = sa.http;
    send_with_python_clients(tcp, &uds);
    wait_received_lines(http, LINES);
    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "{flushed}");

    assert_eq!(single(&total(&sa, "tcp.req", "sum", None), &[]), 5050.0);
    assert_eq!(single(&total(&sa, "tcp.lat", "count", None), &[]), 50.0);
    assert_eq!(single(&total(&sa, "tcp.lat", "max", None), &[]), 49.0);
    let by_route = total(&sa, "uds.req", "sum", Some("route"));
    assert_eq!(single(&by_route, &[("route", "/odd")]), 2500.0);
    assert_eq!(single(&by_route, &[("route", "/even")]), 2550.0);
    assert_eq!(single(&total(&sa, "uds.lat", "count", None), &[]), 40.0);
    assert_eq!(single(&total(&sa, "uds.lat", "sum", None), &[]), 780.0);
    assert_eq!(
        metric(http, "thermo_agent_dropped_total"),
        0.0,
        "nothing dropped"
    );

    // A line over max_line_bytes (64 KiB) between two good ones, written in pieces, and a last
    // line without its newline: the long one is skipped and counted, the others taken.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    conn.write_all(b"edge:1|c\nedge:").expect("write");
    conn.write_all(&vec![b'7'; 70_000]).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    conn.write_all(b"|c\nedge:10|c\nedge:100|c").expect("write");
    drop(conn);
    wait_received_lines(http, LINES + 3.0);
    wait_metric(
        http,
        "thermo_agent_dropped_total{reason=\"line_too_long\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );

    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "{flushed}");
    assert_eq!(single(&total(&sa, "edge", "sum", None), &[]), 111.0);

    // SIGKILL leaves the socket file; the restarted agent replaces it and takes datagrams again.
    assert!(
        uds.exists(),
        "the socket file is there while standalone runs"
    );
    sa.kill_and_restart();
    let sender = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    sender
        .send_to(b"edge:1000|c\nedge:10000|c", &uds)
        .expect("send to the replaced socket");
    wait_received_lines(http, 2.0);
    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "{flushed}");
    assert_eq!(single(&total(&sa, "edge", "sum", None), &[]), 11_111.0);
}
