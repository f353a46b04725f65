//! Alerting through the Prometheus API with a rule engine nobody here wrote: vmalert (Debian
//! package `victoria-metrics`) evaluates an alert rule against `/prometheus` of standalone and of
//! the distributed stack's read service; the rule fires on StatsD traffic and resolves when the
//! traffic stops. Its notifications go to a
//! local HTTP sink (vmalert needs a notifier).
//!
//! vmalert evaluates at its own clock's times, so thermo runs on the system clock here, and the
//! lines carry no timestamps. The Prometheus API answers only final minutes (15 s after their
//! end), so the alert fires once the first minute with errors is final and resolves once the last
//! one has left the rule's range.

use crate::support::stack::{Stack, Standalone};
use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RULES: &str = "groups:
  - name: thermo
    interval: 5s
    rules:
      - alert: CheckoutErrors
        expr: sum(increase(checkout_errors[1m])) > 30
        labels:
          severity: page
        annotations:
          summary: checkout errors in the last final minute
";

/// An HTTP server on a free loopback port that answers 200 to everything and keeps the bodies of
/// the requests (vmalert's notifications to `/api/v2/alerts`).
struct Sink {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (bodies.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                // Read the head, then as many body bytes as Content-Length says.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + len {
                            kept.lock().unwrap().push(text[head_end + 4..].to_string());
                            break;
                        }
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self { port, bodies, stop }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// vmalert's active alerts (`pending` or `firing`), by name and state.
fn alerts(port: u16) -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{port}/api/v1/alerts");
    let Ok(r) = http().get(&url).send() else {
        return Vec::new();
    };
    let v: Value = r.json().unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or_default().to_string(),
                        x["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn vmalert_fires_on_statsd_errors_in_standalone_and_resolves_when_they_stop() {
    let sa = Standalone::start_on_system_clock("vmalert", &[]);
    fires_and_resolves(sa.dir.path(), sa.http, sa.udp);
}

#[test]
fn vmalert_fires_on_statsd_errors_in_the_distributed_stack_and_resolves_when_they_stop() {
    let mut stack = Stack::start("vmalert-stack", 2, 1, 1, 1000);
    stack.restart_on_system_clock();
    fires_and_resolves(stack.dir.path(), stack.read.http, stack.agents[0].udp);
}

/// vmalert over the Prometheus API on `http`, errors sent to the agent on `udp`: the rule fires,
/// then resolves once they stop.
fn fires_and_resolves(dir: &Path, http_port: u16, udp: u16) {
    let bin = find_bin(
        "vmalert",
        "the Debian package victoria-metrics (scripts/install-deps.sh vmalert)",
    );
    let sink = Sink::start();
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, RULES).expect("write rules");
    let port = free_port();
    let args: Vec<String> = vec![
        format!("-rule={}", rules.display()),
        format!("-datasource.url=http://127.0.0.1:{http_port}/prometheus"),
        format!("-notifier.url=http://127.0.0.1:{}", sink.port),
        format!("-httpListenAddr=127.0.0.1:{port}"),
        "-evaluationInterval=5s".to_string(),
    ];
    let _vmalert =
        Proc::spawn_on_system_clock("vmalert", &bin, &args, dir, dir.join("vmalert.log"));
    wait_until("vmalert to listen", Duration::from_secs(30), || {
        http()
            .get(format!("http://127.0.0.1:{port}/api/v1/alerts"))
            .send()
            .is_ok()
    });
    assert!(alerts(port).is_empty(), "no traffic yet, no alert");

    // Errors at 2 a second (120 a minute) until the alert fires: at most the rest of this minute,
    // the next one, and its way to final (15 s), plus vmalert's interval.
    let started = Instant::now();
    let mut firing = false;
    while !firing && started.elapsed() < Duration::from_secs(200) {
        send_udp(udp, &["checkout.errors:1|c|#route:/pay".to_string()]);
        std::thread::sleep(Duration::from_millis(500));
        firing = alerts(port)
            .iter()
            .any(|(n, s)| n == "CheckoutErrors" && s == "firing");
    }
    assert!(firing, "the alert did not fire within 200 s of errors");
    let fired_after = started.elapsed();

    // No more errors: resolved once the last minute with errors is out of the 1m range.
    let stopped = Instant::now();
    wait_until(
        "the alert to resolve after the errors stopped",
        Duration::from_secs(240),
        || alerts(port).is_empty(),
    );
    let notified = sink.bodies();
    assert!(
        notified.iter().any(|b| b.contains("CheckoutErrors")),
        "vmalert notified the sink: {notified:?}"
    );
    eprintln!(
        "[vmalert] fired {:.0} s after errors started, resolved {:.0} s after they stopped; {} notifications",
        fired_after.as_secs_f64(),
        stopped.elapsed().as_secs_f64(),
        notified.len()
    );
}
