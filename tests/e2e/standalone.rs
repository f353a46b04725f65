//! `thermo standalone`: one process on embedded storage. What it acknowledged survives SIGKILL, and
//! its compactor rolls hours up into Parquet objects in the data directory, trims the hot store, and
//! the query API stitches the two, before and after a SIGKILL.

use crate::support::stack::{points, single, sources, Standalone, Target};
use crate::support::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// `req` summed over one 600 s bucket from `from`.
fn total(sa: &Standalone, from: i64) -> serde_json::Value {
    sa.query(&format!(
        "metric=req&stat=sum&from={from}&to={}&step=600",
        from + 600
    ))
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
    wait_received_lines(http, 60.0);
    // Standalone's /flush answers 200 only once the minutes are applied: a query right after it
    // sees every one (no waiting).
    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "flush drained and applied: {flushed}");
    assert_eq!(flushed["applied"], true, "{flushed}");
    assert_eq!(flushed["pending_batches"], 0, "{flushed}");
    let want = 3.0 * 2.0 * 55.0;
    assert_eq!(single(&total(&sa, base), &[]), want, "right after /flush");
    let by_route = sa.query(&format!(
        "metric=req&stat=sum&from={base}&to={}&step=600&group_by=route",
        base + 600
    ));
    assert_eq!(single(&by_route, &[("route", "/a")]), 165.0);
    assert_eq!(single(&by_route, &[("route", "/b")]), 165.0);

    // SIGKILL, restart on the same data: every acknowledged minute is still there, once (the hot
    // store is read back before the port answers /healthz).
    sa.kill_and_restart();
    assert_eq!(
        single(&total(&sa, base), &[]),
        want,
        "after SIGKILL and restart"
    );
    // A flush with nothing open still waits for the log to be applied: nothing replayed twice.
    let (status, flushed) = post_json(&format!("http://127.0.0.1:{http}/flush"));
    assert_eq!(status, 200, "{flushed}");
    assert_eq!(flushed["flushed_series"], 0, "{flushed}");
    assert_eq!(
        single(&total(&sa, base), &[]),
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

const HOUR: i64 = 3600;

/// Two hours three days old (older than the 48-hour hot retention) and the current minute:
/// the compactor writes the old hours as 1m objects, rebuilds their day at 5m and their week at
/// 1h (it has ended: the tests' clock starts on the second day of a week), trims them from the hot
/// store; queries answer them exactly from the objects
/// and the current minute from the hot store, in one answer. After SIGKILL and a restart the
/// catalog comes back from the write-ahead file: nothing is rolled up again and every answer is
/// the same.
#[test]
fn standalone_rolls_up_into_parquet_trims_and_stitches_hot_and_cold() {
    use thermo_core::window::{window_start, Resolution};
    let mut sa = Standalone::start_with("standalone-cold", &[]);
    let now = now_s();
    let h0 = window_start(now - 3 * 86_400, HOUR);
    // Old hours: req{route=/a} = 1 + m % 5 and req{route=/b} = 2 every minute m; lat = [m + 1, 1000].
    let minutes: Vec<i64> = (0..120).map(|m| h0 + 60 * m).collect();
    let a = |m: i64| (1 + (m - h0) / 60 % 5) as f64;
    let mut series = Vec::new();
    for &m in &minutes {
        series.push(
            serde_json::json!({"metric": "req", "tags": {"route": "/a"}, "time": m + 7,
            "type": "counter", "value": a(m)}),
        );
        series.push(
            serde_json::json!({"metric": "req", "tags": {"route": "/b"}, "time": m + 7,
            "type": "counter", "value": 2.0}),
        );
        series.push(
            serde_json::json!({"metric": "lat", "time": m + 7, "type": "histogram",
            "values": [((m - h0) / 60 + 1) as f64, 1000.0]}),
        );
    }
    post_ingest(&sa.url("/api/v1/ingest"), "old", series);
    // The current minute: stays in the hot store (its hour has not ended).
    let cur = window_start(now, 60);
    post_ingest(
        &sa.url("/api/v1/ingest"),
        "new",
        vec![
            serde_json::json!({"metric": "req", "tags": {"route": "/a"}, "time": cur + 1,
            "type": "counter", "value": 1000.0}),
        ],
    );
    let old_a: f64 = minutes.iter().map(|m| a(*m)).sum();
    let old_total = old_a + 2.0 * 120.0;

    // Hand-over: 2 hours trimmed; objects: 2 at 1m, one per day at 5m, one per ended week at 1h.
    let days: BTreeSet<i64> = [h0, h0 + HOUR]
        .iter()
        .map(|h| Resolution::FiveMinutes.chunk_start(*h))
        .collect();
    let weeks_ended = |at: i64| -> BTreeSet<i64> {
        days.iter()
            .map(|d| Resolution::OneHour.chunk_start(*d))
            .filter(|w| w + Resolution::OneHour.chunk_seconds() + 120 <= at)
            .collect()
    };
    let weeks = weeks_ended(now);
    // The tests' clock starts on the second day of a week: the old hours' week has ended.
    assert_eq!(weeks.len(), 1, "the week of {h0} has ended at {now}");
    let mut want_files: BTreeSet<String> = [h0, h0 + HOUR]
        .iter()
        .map(|h| format!("res=1m/start={h}.parquet"))
        .collect();
    want_files.extend(days.iter().map(|d| format!("res=5m/start={d}.parquet")));
    want_files.extend(weeks.iter().map(|w| format!("res=1h/start={w}.parquet")));
    let objects = want_files.len() as f64;
    // The compactor rolls up and trims.
    wait_metric(
        sa.http,
        "thermo_aggregator_hours_trimmed_total",
        Duration::from_secs(60),
        |v| v >= 2.0,
    );
    wait_metric(
        sa.http,
        "thermo_aggregator_cold_objects_written_total",
        Duration::from_secs(60),
        |v| v >= objects,
    );
    assert_eq!(
        metric(sa.http, "thermo_aggregator_hours_trimmed_total"),
        2.0
    );
    let cold = sa.dir.path().join("data/cold/v1/tenant=default");
    let files = |cold: &std::path::Path| -> BTreeSet<String> {
        ["1m", "5m", "1h"]
            .iter()
            .flat_map(|r| {
                std::fs::read_dir(cold.join(format!("res={r}")))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("res={r}/{}", e.file_name().to_string_lossy()))
            })
            .collect()
    };
    assert_eq!(
        files(&cold),
        want_files,
        "the objects in {}",
        cold.display()
    );

    let check = |sa: &Standalone, when: &str| {
        let q = |params: String| sa.query(&params);
        // Per hour, from the 1m objects only.
        let by_hour = q(format!(
            "metric=req&stat=sum&from={h0}&to={}&step=3600",
            h0 + 2 * HOUR
        ));
        assert_eq!(sources(&by_hour), vec!["cold"], "{when}: {by_hour}");
        let pts = points(&by_hour, &[]);
        assert_eq!(pts.len(), 2, "{when}: {by_hour}");
        assert_eq!(pts[0].1 + pts[1].1, old_total, "{when}");
        // Every minute exactly once.
        let per_minute = q(format!(
            "metric=req&stat=sum&from={h0}&to={}&step=60&group_by=route",
            h0 + 2 * HOUR
        ));
        let pa = points(&per_minute, &[("route", "/a")]);
        let want: Vec<(i64, f64)> = minutes.iter().map(|m| (*m, a(*m))).collect();
        assert_eq!(pa, want, "{when}: route /a per minute");
        let pb = points(&per_minute, &[("route", "/b")]);
        assert_eq!(pb.len(), 120, "{when}");
        assert!(pb.iter().all(|(_, v)| *v == 2.0), "{when}: {pb:?}");
        // The day at 5m, from its rebuilt object (or from the 1m objects if it was not complete).
        let day = *days.iter().next().unwrap_or(&h0);
        let at5 = q(format!(
            "metric=req&stat=sum&from={day}&to={}&step=86400&resolution=5m",
            day + 86_400
        ));
        let in_day: f64 = minutes
            .iter()
            .filter(|m| Resolution::FiveMinutes.chunk_start(**m) == day)
            .map(|m| a(*m) + 2.0)
            .sum();
        assert_eq!(single(&at5, &[]), in_day, "{when}: {at5}");
        assert_eq!(sources(&at5), vec!["cold"], "{when}");
        // Histograms: exact count, sum, min and max from the objects.
        let span = format!("from={h0}&to={}&step=3600", h0 + 2 * HOUR);
        let per_hour = |stat: &str| -> Vec<f64> {
            points(&q(format!("metric=lat&stat={stat}&{span}")), &[])
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        };
        let sum: f64 = (1..=120).map(|v| v as f64 + 1000.0).sum();
        let first: f64 = (1..=60).map(|v| v as f64 + 1000.0).sum();
        assert_eq!(per_hour("count"), vec![120.0, 120.0], "{when}");
        assert_eq!(per_hour("sum"), vec![first, sum - first], "{when}");
        assert_eq!(per_hour("min"), vec![1.0, 61.0], "{when}");
        assert_eq!(per_hour("max"), vec![1000.0, 1000.0], "{when}");
        // Hot and cold in one answer: the old hours from objects, the current minute from hot.
        let whole = q(format!(
            "metric=req&stat=sum&from={h0}&to={}&step=86400",
            cur + 60
        ));
        assert_eq!(sources(&whole), vec!["hot", "cold"], "{when}: {whole}");
        let total: f64 = points(&whole, &[]).iter().map(|(_, v)| v).sum();
        assert_eq!(total, old_total + 1000.0, "{when}: {whole}");
    };
    check(&sa, "after the roll-up");

    sa.kill_and_restart();
    // A compactor cycle after the restart.
    wait_metric(
        sa.http,
        "thermo_aggregator_cold_cycles_total",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    assert_eq!(
        metric(sa.http, "thermo_aggregator_cold_objects_written_total"),
        0.0,
        "the catalog survived: nothing rolled up again"
    );
    assert_eq!(
        metric(sa.http, "thermo_aggregator_hours_trimmed_total"),
        0.0
    );
    check(&sa, "after SIGKILL and a restart");
}
