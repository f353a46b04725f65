//! End to end on real services: StatsD over UDP → two agents → partitioner → Kafka-protocol broker
//! (tansu, 4 partitions) → two aggregators (one consumer group) → Redis → read service.
//!
//! Every expected number is computed from the traffic the test generates (a small model below),
//! and every assertion is exact, except percentiles, which are checked against the true
//! nearest-rank percentile within the HDR histogram's relative error.

use crate::support::stack::{points, single, Extra, Stack, Standalone, Target};
use crate::support::*;
use std::collections::BTreeMap;
use std::time::Duration;
use thermo_core::aggregate::HIST_RELATIVE_ERROR;
use thermo_core::window::window_start;

/// What the test sent, per series.
#[derive(Default)]
struct Model {
    /// (host, route, code, minute) → (sum, samples)
    counters: BTreeMap<(String, String, String, i64), (f64, u64)>,
    /// (host, minute) → (last, min, max)
    gauges: BTreeMap<(String, i64), (f64, f64, f64)>,
    /// every timer value sent, with its minute
    timers: Vec<(i64, f64)>,
    /// valid lines sent per agent
    lines: Vec<u64>,
}

impl Model {
    fn counter_sum(&self, f: impl Fn(&str, &str, &str, i64) -> bool) -> f64 {
        self.counters
            .iter()
            .filter(|((h, r, c, m), _)| f(h, r, c, *m))
            .map(|(_, (s, _))| s)
            .sum()
    }
    fn counter_samples(&self, f: impl Fn(&str, &str, &str, i64) -> bool) -> f64 {
        self.counters
            .iter()
            .filter(|((h, r, c, m), _)| f(h, r, c, *m))
            .map(|(_, (_, n))| *n as f64)
            .sum()
    }
}

/// Builds agent `i`'s datagrams for `minutes` and records them in the model.
fn traffic(model: &mut Model, i: usize, minutes: &[i64], malformed: bool) -> Vec<String> {
    let host = format!("h{}", i + 1);
    if model.lines.len() <= i {
        model.lines.resize(i + 1, 0);
    }
    let mut lines = Vec::new();
    let mut datagrams = Vec::new();
    for &m in minutes {
        for route in ["/a", "/b"] {
            for code in ["200", "500"] {
                for k in 1..=10 {
                    lines.push(format!("req:{k}|c|#route:{route},code:{code}|T{}", m + 1));
                    let e = model
                        .counters
                        .entry((host.clone(), route.into(), code.into(), m))
                        .or_default();
                    e.0 += k as f64;
                    e.1 += 1;
                }
            }
        }
        for _ in 0..5 {
            // sample rate 0.5: each line counts 2 / 0.5 = 4
            lines.push(format!("req:2|c|@0.5|#route:/a,code:200|T{}", m + 2));
            let e = model
                .counters
                .entry((host.clone(), "/a".into(), "200".into(), m))
                .or_default();
            e.0 += 4.0;
            e.1 += 1;
        }
        for v in (i * 500 + 1)..=(i * 500 + 500) {
            lines.push(format!("lat:{v}|ms|#route:/a|T{}", m + 4));
            model.timers.push((m, v as f64));
        }
        // gauge: set, then deltas, in one datagram so their order is kept
        let base = 100.0 * (i + 1) as f64;
        datagrams.push(format!(
            "mem:{base}|g|T{t}\nmem:-30|g|T{t}\nmem:+5|g|T{t}",
            t = m + 3
        ));
        model
            .gauges
            .insert((host.clone(), m), (base - 25.0, base - 30.0, base));
        model.lines[i] += 3;
    }
    model.lines[i] += lines.len() as u64;
    for chunk in lines.chunks(20) {
        datagrams.push(chunk.join("\n"));
    }
    if malformed {
        // one good line between two bad ones: the good one must count
        let m = minutes[0];
        datagrams.push(format!(
            "req:1|c|#route:/a,code:200|T{}\nthis is bad\nreq:abc|c",
            m + 5
        ));
        let e = model
            .counters
            .entry((host.clone(), "/a".into(), "200".into(), m))
            .or_default();
        e.0 += 1.0;
        e.1 += 1;
        model.lines[i] += 1;
    }
    datagrams
}

fn send_wave(stack: &impl Target, model: &mut Model, minutes: &[i64], malformed: bool) {
    let ports = stack.agent_udp_ports();
    let per_agent: Vec<Vec<String>> = (0..ports.len())
        .map(|i| traffic(model, i, minutes, malformed))
        .collect();
    for (i, d) in per_agent.iter().enumerate() {
        send_udp(ports[i], d);
    }
}

/// The true nearest-rank percentile.
fn true_percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

fn assert_close(got: f64, want: f64, what: &str) {
    // HDR relative error, plus the 1/1000 ms scaling resolution.
    let tol = want.abs() * HIST_RELATIVE_ERROR + 0.001;
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, true {want}, tolerance {tol}"
    );
}

fn check_wave(stack: &impl Target, model: &Model, from: i64, to: i64) {
    let agents = stack.agent_udp_ports().len();
    let in_range = |m: i64| m >= from && m < to;
    let range = format!("from={from}&to={to}");
    // Totals across hosts, one bucket covering the whole range.
    let total = model.counter_sum(|_, _, _, m| in_range(m));
    // Ranges lie inside one 600 s window: one bucket covers the range.
    assert_eq!(window_start(from, 600), window_start(to - 1, 600));
    let step = 600;
    let q = format!("metric=req&stat=sum&{range}&step={step}");
    let a = stack.query_until(&q, "the counter total", &mut |a| {
        a["series"][0]["points"][0][1].as_f64() == Some(total)
    });
    assert_eq!(single(&a, &[]), total, "total across hosts");
    // Every series-minute is its own record, applied partition by partition: the timer's and the
    // gauge's may still be on their way when the counter's total is complete. Wait for them too.
    let timer_values = model.timers.iter().filter(|(m, _)| in_range(*m)).count() as f64;
    stack.query_until(
        &format!("metric=lat&stat=count&{range}&step={step}"),
        "the timer count",
        &mut |a| a["series"][0]["points"][0][1].as_f64() == Some(timer_values),
    );
    // A gauge's count is the series reporting in each bucket: per minute, summed, the host-minutes.
    let gauge_minutes = model.gauges.keys().filter(|(_, m)| in_range(*m)).count() as f64;
    stack.query_until(
        &format!("metric=mem&stat=count&{range}&step=60"),
        "every gauge minute",
        &mut |a| {
            a["series"][0]["points"]
                .as_array()
                .map(|p| p.iter().map(|x| x[1].as_f64().unwrap_or(0.0)).sum::<f64>())
                == Some(gauge_minutes)
        },
    );

    // Per series, exact.
    let a = stack.query(&format!(
        "metric=req&stat=sum&{range}&step={step}&group_by=*"
    ));
    assert_eq!(a["series"].as_array().unwrap().len(), 2 * 2 * agents, "{a}");
    for ((h, r, c, _), _) in model
        .counters
        .iter()
        .filter(|((_, _, _, m), _)| in_range(*m))
    {
        let want = model.counter_sum(|h2, r2, c2, m| h2 == h && r2 == r && c2 == c && in_range(m));
        assert_eq!(
            single(&a, &[("code", c), ("host", h), ("route", r)]),
            want,
            "sum of {h} {r} {c}"
        );
    }
    // where + group_by.
    let a = stack.query(&format!(
        "metric=req&stat=sum&{range}&step={step}&where=route:/a&group_by=host"
    ));
    for i in 0..agents {
        let h = format!("h{}", i + 1);
        let want = model.counter_sum(|h2, r, _, m| h2 == h && r == "/a" && in_range(m));
        assert_eq!(single(&a, &[("host", &h)]), want, "route /a on {h}");
    }
    let a = stack.query(&format!(
        "metric=req&stat=count&{range}&step={step}&group_by=code"
    ));
    for code in ["200", "500"] {
        let want = model.counter_samples(|_, _, c, m| c == code && in_range(m));
        assert_eq!(
            single(&a, &[("code", code)]),
            want,
            "samples of code {code}"
        );
    }
    // Per minute: one point per minute, exact.
    let a = stack.query(&format!("metric=req&stat=sum&{range}&step=60"));
    let want: Vec<(i64, f64)> = (0..(to - from) / 60)
        .map(|k| from + 60 * k)
        .map(|m| (m, model.counter_sum(|_, _, _, m2| m2 == m)))
        .collect();
    assert_eq!(points(&a, &[]), want);
    let a = stack.query(&format!("metric=req&stat=rate&{range}&step=60"));
    assert_eq!(points(&a, &[])[0].1, want[0].1 / 60.0, "rate is per second");

    // Gauges per host: last/min/max over the range (the last minute's last value).
    for stat in ["last", "min", "max"] {
        let a = stack.query(&format!(
            "metric=mem&stat={stat}&{range}&step={step}&group_by=host"
        ));
        for i in 0..agents {
            let h = format!("h{}", i + 1);
            let per_min: Vec<&(f64, f64, f64)> = model
                .gauges
                .iter()
                .filter(|((h2, m), _)| *h2 == h && in_range(*m))
                .map(|(_, g)| g)
                .collect();
            let want = match stat {
                "last" => per_min.last().unwrap().0,
                "min" => per_min.iter().map(|g| g.1).fold(f64::INFINITY, f64::min),
                _ => per_min
                    .iter()
                    .map(|g| g.2)
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            assert_eq!(single(&a, &[("host", &h)]), want, "gauge {stat} of {h}");
        }
    }
    let a = stack.query(&format!("metric=mem&stat=sum&{range}&step={step}"));
    let want: f64 = (0..agents)
        .map(|i| {
            model
                .gauges
                .iter()
                .rfind(|((h, m), _)| *h == format!("h{}", i + 1) && in_range(*m))
                .unwrap()
                .1
                 .0
        })
        .sum();
    assert_eq!(single(&a, &[]), want, "sum of the hosts' last gauge values");

    // Timers merged across hosts and minutes.
    let values: Vec<f64> = model
        .timers
        .iter()
        .filter(|(m, _)| in_range(*m))
        .map(|(_, v)| *v)
        .collect();
    let stat = |s: &str| {
        single(
            &stack.query(&format!("metric=lat&stat={s}&{range}&step={step}")),
            &[],
        )
    };
    assert_eq!(stat("count"), values.len() as f64);
    assert_eq!(stat("sum"), values.iter().sum::<f64>());
    assert_eq!(
        stat("min"),
        values.iter().copied().fold(f64::INFINITY, f64::min)
    );
    assert_eq!(
        stat("max"),
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    );
    for p in [50.0, 90.0, 99.0, 99.9] {
        assert_close(
            stat(&format!("p{p}")),
            true_percentile(&values, p),
            &format!("p{p}"),
        );
    }
}

#[test]
fn pipeline_exact_totals_bad_input_and_aggregator_crash() {
    exact_totals_bad_input_and_aggregator_crash(false);
}

#[test]
fn pipeline_on_a_redis_cluster_exact_totals_bad_input_and_aggregator_crash() {
    exact_totals_bad_input_and_aggregator_crash(true);
}

fn exact_totals_bad_input_and_aggregator_crash(redis_cluster: bool) {
    let extra = Extra {
        redis_cluster,
        ..Extra::default()
    };
    let mut stack = Stack::start_with("pipeline", 4, 2, 2, 20, &extra);
    let base = window_start(now_s() - 40 * 60, 600);
    let mut model = Model::default();

    // Wave 1: two minutes, with malformed lines mixed in.
    send_wave(&stack, &mut model, &[base, base + 60], true);
    for i in 0..2 {
        stack.wait_agent_lines(i, model.lines[i] as f64);
    }
    stack.flush_agents();
    check_wave(&stack, &model, base, base + 120);

    // Malformed lines are counted with their reason; the good line of that datagram counted above.
    for a in &stack.agents {
        assert_eq!(
            metric(a.http, r#"thermo_agent_dropped_total{reason="no_type"}"#),
            1.0
        );
        assert_eq!(
            metric(a.http, r#"thermo_agent_dropped_total{reason="bad_value"}"#),
            1.0
        );
    }

    // The metric list.
    let (s, m) = get_json(&stack.read.url("/api/v1/metrics"));
    assert_eq!(s, 200);
    let by_name: BTreeMap<String, serde_json::Value> = m["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap().to_string(), x.clone()))
        .collect();
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        vec!["lat", "mem", "req"]
    );
    assert_eq!(by_name["req"]["type"], "counter");
    assert_eq!(
        by_name["req"]["tag_keys"],
        serde_json::json!(["code", "host", "route"])
    );
    assert_eq!(by_name["lat"]["type"], "histogram");
    assert_eq!(by_name["mem"]["type"], "gauge");

    // Bad query parameters: 400 naming the parameter; unknown metric: 404.
    for (q, param) in [
        ("stat=sum", "metric"),
        ("metric=req&step=45", "step"),
        ("metric=req&stat=p101", "stat"),
        ("metric=req&stat=p99", "stat"),
        ("metric=req&from=yesterday", "from"),
        ("metric=req&where=route", "where"),
        ("metric=req&bogus=1", "bogus"),
    ] {
        let (s, body) = get_json(&stack.read.url(&format!("/api/v1/query?{q}")));
        assert_eq!(s, 400, "{q}: {body}");
        assert_eq!(body["param"], param, "{q}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(param),
            "{q}: {body}"
        );
    }
    let (s, body) = get_json(&stack.read.url("/api/v1/query?metric=nope"));
    assert_eq!(s, 404, "{body}");

    // Bad ingest bodies: 400 naming the field, nothing produced.
    let r = http()
        .post(stack.partitioner.url("/api/v1/ingest"))
        .header("content-type", "application/json")
        .body(
            r#"{"series":[{"metric":"x","tags":{"k":"a b"},"time":0,"type":"counter","value":1}]}"#,
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["field"], "series[0].tags.k", "{body}");

    // Wave 2: an aggregator is killed with SIGKILL while records flow, then restarted.
    let wave2 = [base + 120, base + 180];
    let per_agent: Vec<Vec<String>> = (0..2)
        .map(|i| traffic(&mut model, i, &wave2, false))
        .collect();
    let ports: Vec<u16> = stack.agents.iter().map(|a| a.udp).collect();
    let sender = std::thread::spawn(move || {
        for (i, d) in per_agent.iter().enumerate() {
            send_udp(ports[i], d);
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    stack.aggregators[0].proc.kill();
    std::thread::sleep(Duration::from_millis(700));
    stack.aggregators[0].restart();
    sender.join().unwrap();
    for i in 0..2 {
        stack.wait_agent_lines(i, model.lines[i] as f64);
    }
    stack.flush_agents();
    check_wave(&stack, &model, base + 120, base + 240);
    // Nothing counted twice after the group settled, and wave 1 is untouched.
    std::thread::sleep(Duration::from_secs(3));
    check_wave(&stack, &model, base, base + 240);
}

#[test]
fn kafka_outage_and_redis_loss_keep_totals_exact() {
    outage_and_redis_loss_keep_totals_exact(false);
}

#[test]
fn kafka_outage_and_redis_cluster_loss_keep_totals_exact() {
    outage_and_redis_loss_keep_totals_exact(true);
}

fn outage_and_redis_loss_keep_totals_exact(redis_cluster: bool) {
    // The aggregator's group session outlasts the broker's outage (10 to 20 s here). With tansu
    // 0.6, a member whose session expired during a broker restart is expired again by the
    // restarted broker after the member rejoined; the rebalance that follows now and then never
    // completes (the aggregator left without partitions for good, 1 run in 2 to 8 under load).
    // Kafka keeps group state across a restart; the limit is the test broker's, not thermo's.
    let extra = Extra {
        redis_cluster,
        aggregators: "session_timeout_ms = 45000\n".into(),
        ..Extra::default()
    };
    let mut stack = Stack::start_with("kafka-outage", 4, 1, 1, 100, &extra);
    let base = window_start(now_s() - 40 * 60, 600);
    let mut model = Model::default();

    send_wave(&stack, &mut model, &[base], false);
    stack.wait_agent_lines(0, model.lines[0] as f64);
    stack.flush_agents();
    check_wave(&stack, &model, base, base + 60);

    // The broker stops while traffic flows: the partitioner answers 503 and the agent keeps retrying.
    assert!(
        stack.broker.proc.terminate(Duration::from_secs(20)),
        "broker did not stop cleanly"
    );
    send_wave(&stack, &mut model, &[base + 60], false);
    stack.wait_agent_lines(0, model.lines[0] as f64);
    let r = http()
        .post(stack.agents[0].url("/flush?wait_ms=4000"))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        202,
        "nothing can be delivered while the broker is down"
    );
    // The partitioner answers 503.
    wait_metric(
        stack.partitioner.http,
        r#"thermo_partitioner_dropped_total{reason="unavailable"}"#,
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    // A JSON batch without an idempotency key gets a 503 too, but its records stay queued in the
    // producer and reach the broker when it is back; the client's retry must not count it twice.
    let keyless = format!(
        r#"{{"series":[{{"metric":"json_retry","time":{},"type":"counter","value":5}},{{"metric":"json_retry","tags":{{"k":"b"}},"time":{},"type":"counter","value":7}}]}}"#,
        base + 60,
        base + 60
    );
    let post_keyless = || {
        http()
            .post(stack.partitioner.url("/api/v1/ingest"))
            .header("content-type", "application/json")
            .body(keyless.clone())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post_keyless(), 503, "the broker is down");
    assert!(
        metric(
            stack.agents[0].http,
            r#"thermo_agent_errors_total{kind="send_retry"}"#
        ) >= 1.0
    );

    // The broker comes back on the same port with the same data: everything arrives, once.
    stack.broker.proc.start();
    stack.broker.wait_listening();
    stack.flush_agents();
    check_wave(&stack, &model, base, base + 120);
    assert_eq!(post_keyless(), 200, "the retry, once the broker is back");
    let json_total = format!(
        "metric=json_retry&stat=sum&from={}&to={}&step=60",
        base + 60,
        base + 120
    );
    stack.query_until(
        &json_total,
        "the keyless batch",
        &mut |a: &serde_json::Value| a["series"][0]["points"][0][1].as_f64() == Some(12.0),
    );
    std::thread::sleep(Duration::from_secs(3));
    check_wave(&stack, &model, base, base + 120);
    let a = stack.query(&json_total);
    assert_eq!(
        a["series"][0]["points"][0][1].as_f64(),
        Some(12.0),
        "the batch and its retry counted once: {a}"
    );
    assert_eq!(
        metric(
            stack.agents[0].http,
            r#"thermo_agent_dropped_total{reason="rejected"}"#
        ),
        0.0
    );

    // Redis restarts empty (no persistence): the next record shows the aggregator that the hot
    // store is behind the log, and it rebuilds every minute from the log, exactly.
    stack.redis.lose_everything();
    send_wave(&stack, &mut model, &[base + 120], false);
    stack.wait_agent_lines(0, model.lines[0] as f64);
    stack.flush_agents();
    check_wave(&stack, &model, base, base + 180);
    assert!(metric(stack.aggregators[0].http, "thermo_aggregator_rewinds_total") >= 1.0);
}

#[test]
fn standalone_runs_the_same_scenario_exactly() {
    let stack = Standalone::start("standalone-scenario");
    let base = window_start(now_s() - 40 * 60, 600);
    let mut model = Model::default();
    send_wave(&stack, &mut model, &[base, base + 60], true);
    stack.wait_agent_lines(0, model.lines[0] as f64);
    stack.flush_agents();
    check_wave(&stack, &model, base, base + 120);
    assert_eq!(
        metric(
            stack.http,
            r#"thermo_agent_dropped_total{reason="no_type"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            stack.http,
            r#"thermo_agent_dropped_total{reason="bad_value"}"#
        ),
        1.0
    );
}
