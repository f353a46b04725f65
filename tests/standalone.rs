//! `thermo standalone`: one process on embedded storage. What it acknowledged survives SIGKILL.

mod support;

use std::time::Duration;
use support::stack::{single, Standalone};
use support::*;

fn total(http: u16, from: i64) -> serde_json::Value {
    let (s, body) = get_json(&format!(
        "http://127.0.0.1:{http}/api/v1/query?metric=req&stat=sum&from={from}&to={}&step=600",
        from + 600
    ));
    assert_eq!(s, 200, "{body}");
    body
}

#[test]
fn standalone_keeps_acknowledged_minutes_across_sigkill() {
    let mut sa = Standalone::start_with("standalone", &[]);
    let (http, udp) = (sa.http, sa.udp);
    let base = thermo_core::window::window_start(now_s() - 40 * 60, 600);
    // 3 minutes × 2 routes × values 1..=10, plus a timer; sent, then flushed through the ingest API.
    let mut datagrams = Vec::new();
    for m in 0..3 {
        for route in ["/a", "/b"] {
            let lines: Vec<String> = (1..=10)
                .map(|k| format!("req:{k}|c|#route:{route}|T{}", base + 60 * m + 1))
                .collect();
            datagrams.push(lines.join("\n"));
        }
    }
    send_udp(udp, &datagrams);
    wait_until(
        "standalone to receive 60 lines",
        Duration::from_secs(20),
        || metric(http, "thermo_agent_received_total") >= 60.0,
    );
    let r = http_client_post(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(r, 200, "flush drained");
    let want = 3.0 * 2.0 * 55.0;
    wait_until("the totals to arrive", Duration::from_secs(20), || {
        total(http, base)["series"][0]["points"][0][1].as_f64() == Some(want)
    });
    let by_route = get_json(&format!(
        "http://127.0.0.1:{http}/api/v1/query?metric=req&stat=sum&from={base}&to={}&step=600&group_by=route",
        base + 600
    ))
    .1;
    assert_eq!(single(&by_route, &[("route", "/a")]), 165.0);
    assert_eq!(single(&by_route, &[("route", "/b")]), 165.0);

    // SIGKILL, restart on the same data: every acknowledged minute is still there, once.
    sa.kill_and_restart();
    assert_eq!(
        single(&total(http, base), &[]),
        want,
        "after SIGKILL and restart"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        single(&total(http, base), &[]),
        want,
        "nothing replayed twice"
    );
    let (s, page) = get_json(&format!("http://127.0.0.1:{http}/"));
    assert_eq!(s, 200);
    assert!(
        page.as_str().is_some_and(|h| h.contains("uPlot")),
        "the dashboard is served"
    );
}

fn http_client_post(url: &str) -> u16 {
    http()
        .post(url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
