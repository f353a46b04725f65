//! An agent reading an access log (`[[logs]]`, nginx's `combined` format) on the distributed
//! stack: the log is rotated by rename and by copy-and-truncate while it is written, the agent is
//! SIGKILLed and restarted after each, and every line is counted exactly once, in total and per
//! status, through the query API.

use crate::support::stack::{Extra, Stack};
use crate::support::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const STATUSES: [&str; 5] = ["200", "200", "200", "404", "500"];

/// Appends lines `from..to` to `path` (each with status `STATUSES[i % 5]`), counting them in
/// `want` by status.
fn write_lines(path: &Path, from: usize, to: usize, want: &mut BTreeMap<String, f64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    let mut text = String::new();
    for i in from..to {
        let status = STATUSES[i % STATUSES.len()];
        text.push_str(&format!(
            "10.0.0.{} - - [04/Dec/2026:10:00:00 +0000] \"GET /items/{i}?x=1 HTTP/1.1\" {status} {} \"-\" \"curl/8.0\"\n",
            i % 250,
            100 + i
        ));
        *want.entry(status.to_string()).or_default() += 1.0;
    }
    f.write_all(text.as_bytes()).expect("append");
}

/// Waits until the agent on `port` counted exactly `lines` log lines taken since it started.
fn wait_lines(port: u16, lines: f64) {
    wait_received_lines(port, lines);
}

fn flush(stack: &Stack) {
    let r = http()
        .post(stack.agents[0].url("/flush?wait_ms=30000"))
        .send()
        .expect("flush");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
}

#[test]
fn log_lines_are_counted_once_across_rotation_and_a_sigkill() {
    let logs = TempDir::new("logs-files");
    let log = logs.path().join("access.log");
    std::fs::write(&log, "").expect("create the log");
    let glob = logs.path().join("access.log*").display().to_string();
    let agent = format!(
        r#"spool_dir = "agent-0-spool"
log_poll_ms = 100
[[logs]]
path = "{glob}"
exclude = ["*.gz"]
[logs.tags]
service = "web"
[[logs.metrics]]
name = "http.requests"
type = "counter"
tags = ["status", "method"]
"#
    );
    let extra = Extra {
        agents: vec![agent],
        ..Extra::default()
    };
    let mut stack = Stack::start_with("logs", 2, 1, 1, 1000, &extra);
    let port = stack.agents[0].http;
    let mut want = BTreeMap::new();

    // 100 lines, flushed: their minutes are in the spool and their position saved past them.
    write_lines(&log, 0, 100, &mut want);
    wait_lines(port, 100.0);
    flush(&stack);

    // Rotation by rename: the writer still appends 30 lines to the renamed file, then a new
    // file gets 50.
    std::fs::rename(&log, logs.path().join("access.log.1")).expect("rename");
    write_lines(&logs.path().join("access.log.1"), 100, 130, &mut want);
    write_lines(&log, 130, 180, &mut want);
    wait_lines(port, 180.0);

    // SIGKILL with those 80 lines only in memory (their minute not flushed): the restarted agent
    // reads them again from the saved positions, and nothing before them.
    stack.agents[0].proc.kill();
    write_lines(&log, 180, 200, &mut want); // written while the agent is down
    stack.agents[0].restart();
    wait_lines(port, 100.0);
    flush(&stack);

    // Copy-and-truncate: the oldest rotation is compressed away (excluded), the log is copied to
    // access.log.1 with lines the agent may not have read yet, truncated, and written again.
    write_lines(&log, 200, 240, &mut want);
    std::fs::rename(
        logs.path().join("access.log.1"),
        logs.path().join("access.log.2.gz"),
    )
    .expect("rename");
    std::fs::copy(&log, logs.path().join("access.log.1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    write_lines(&log, 240, 265, &mut want);
    wait_lines(port, 165.0);

    // SIGKILL again, right after the copy-and-truncate, before any flush: the copy's lines not
    // spooled are read again from the copy, the truncated log's from its start.
    stack.agents[0].proc.kill();
    stack.agents[0].restart();
    wait_metric(
        port,
        "thermo_agent_received_total",
        Duration::from_secs(30),
        |v| v >= 25.0,
    );
    let mut last = -1.0;
    wait_until(
        "the agent to read what it reads again",
        Duration::from_secs(30),
        || {
            let now = metric(port, "thermo_agent_received_total");
            std::mem::replace(&mut last, now) == now
        },
    );
    flush(&stack);

    let total: f64 = want.values().sum();
    assert_eq!(total, 265.0);
    let from = thermo_core::window::minute_start(now_s()) - 3 * 3600;
    let q = format!(
        "metric=http.requests&stat=sum&from={from}&to={}&step=14400&group_by=status",
        from + 14400
    );
    let by_status = |a: &serde_json::Value| -> BTreeMap<String, f64> {
        a["series"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let status = s["tags"]["status"].as_str().unwrap_or("?").to_string();
                let sum: f64 = s["points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p[1].as_f64())
                    .sum();
                (status, sum)
            })
            .collect()
    };
    let answer = stack.query_until(&q, "every log line, once", &mut |a: &serde_json::Value| {
        by_status(a) == want
    });
    assert_eq!(by_status(&answer), want);
    // Still exactly that a moment later: nothing arrives twice.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(by_status(&stack.query(&q)), want);
    assert_eq!(
        metric(
            port,
            r#"thermo_agent_errors_total{kind="logs_state_corrupt"}"#
        ),
        0.0
    );
}
