//! The agent's disk spool: closed minutes survive the agent.

use crate::support::stack::{Extra, Stack};
use crate::support::*;
use std::time::Duration;
use thermo_core::window::window_start;

/// The `.batch` files in an agent's spool directory.
fn spooled(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
                .count()
        })
        .unwrap_or(0)
}

/// The partitioner is down while an agent with `spool_dir` takes StatsD lines of two closed
/// minutes; its batches wait on disk; the agent is SIGKILLed and restarted, still during the
/// outage; when the partitioner is back, the restarted agent sends what its predecessor spooled,
/// with the same `(agent_id, seq)`: every value counted exactly once, and the spool ends empty.
#[test]
fn spooled_minutes_survive_a_sigkilled_agent() {
    let extra = Extra {
        agents: vec!["spool_dir = \"agent-0-spool\"\n".into()],
        ..Extra::default()
    };
    let mut stack = Stack::start_with("agent-spool", 2, 1, 1, 1000, &extra);
    let spool = stack.dir.path().join("agent-0-spool");
    let base = window_start(now_s() - 30 * 60, 600);
    stack.partitioner.proc.kill();

    // 300 series over two minutes, long closed: flushed into the spool at once.
    let mut lines = Vec::new();
    let mut total = 0.0;
    for (m, minute) in [base, base + 60].iter().enumerate() {
        for s in 0..300 {
            let v = (s % 7 + m + 1) as f64;
            lines.push(format!("spooled:{v}|c|#s:s{s}|T{}", minute + 5));
            total += v;
        }
    }
    let r = http()
        .post(stack.agents[0].url("/api/v1/statsd"))
        .body(lines.join("\n"))
        .send()
        .expect("statsd post");
    assert_eq!(r.status().as_u16(), 200);
    let r = http()
        .post(stack.agents[0].url("/flush?wait_ms=500"))
        .send()
        .expect("flush");
    assert_eq!(r.status().as_u16(), 202, "nothing can be delivered yet");
    assert_eq!(
        spooled(&spool),
        1,
        "one batch of 600 series-minutes on disk"
    );
    wait_metric(
        stack.agents[0].http,
        r#"thermo_agent_errors_total{kind="send_retry"}"#,
        Duration::from_secs(30),
        |v| v >= 1.0,
    );

    stack.agents[0].proc.kill();
    stack.agents[0].restart();
    assert_eq!(
        spooled(&spool),
        1,
        "the batch is still there after the restart"
    );
    stack.partitioner.restart();

    let q = format!(
        "metric=spooled&stat=sum&from={base}&to={}&step=120",
        base + 120
    );
    let sum = |a: &serde_json::Value| a["series"][0]["points"][0][1].as_f64();
    stack.query_until(&q, "the spooled minutes", &mut |a: &serde_json::Value| {
        sum(a) == Some(total)
    });
    wait_until("the spool to empty", Duration::from_secs(30), || {
        spooled(&spool) == 0
    });
    let agent = |sample: &str| metric(stack.agents[0].http, sample);
    assert_eq!(agent("thermo_agent_sent_total"), 600.0);
    assert_eq!(
        agent(r#"thermo_agent_errors_total{kind="spool_corrupt"}"#),
        0.0
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sum(&stack.query(&q)), Some(total), "counted once");
}
