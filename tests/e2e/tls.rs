//! TLS end to end: a self-signed pair made with the README's `openssl req` one-liner; standalone
//! serving HTTPS with it; a separate agent process sending to its ingest API over HTTPS (trusting
//! the pair through `ca_file`), and standalone's own agent too; curl reading the query API over
//! HTTPS with exact totals; plain HTTP to the TLS port refused with a 400 that says so. And the
//! distributed partitioner and read service on HTTPS.

use crate::support::stack::{free_udp_port, single, Role};
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A test's directory with a self-signed pair made by the README's one-liner (an EC key;
/// `CA:FALSE`, as rustls refuses a CA certificate used as a server's): the directory, curl, and
/// the certificate's and key's paths.
fn with_pair(name: &str) -> (TempDir, PathBuf, String, String) {
    let openssl = find_bin("openssl", "the Debian package openssl");
    let curl_bin = find_bin("curl", "the Debian package curl");
    let dir = TempDir::new(name);
    let out = Command::new(openssl)
        .current_dir(dir.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = |f: &str| dir.path().join(f).display().to_string();
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    (dir, curl_bin, cert, key)
}

/// `curl <args>`: its status line's code and its body.
fn curl(bin: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new(bin)
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits (bounded) until `base`'s `/healthz` answers 200 over HTTPS, trusting `ca`.
fn wait_https(curl_bin: &Path, ca: &str, base: &str, p: &Proc) {
    let started = Instant::now();
    while curl(curl_bin, &["--cacert", ca, &format!("{base}/healthz")]).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not answer over HTTPS; log:\n{}",
            p.name,
            p.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `thermo <role> --config <dir>/<name>.toml` with `toml` (HTTPS on `http`), answering over HTTPS.
fn start_https_role(
    dir: &Path,
    (curl_bin, ca): (&Path, &str),
    (name, role): (&str, &str),
    http: u16,
    toml: &str,
) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).expect("write config");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_thermo"));
    let args = vec![
        role.to_string(),
        "--config".to_string(),
        cfg.display().to_string(),
    ];
    let p = Proc::spawn(name, &bin, &args, dir, dir.join(format!("{name}.log")));
    wait_https(curl_bin, ca, &format!("https://127.0.0.1:{http}"), &p);
    p
}

/// The distributed partitioner and read service on HTTPS (`tls_cert_file`, `tls_key_file`): an
/// ingest over HTTPS acknowledged by the broker, the read service's API over HTTPS, plain HTTP
/// refused by both.
#[test]
fn the_partitioner_and_the_read_service_serve_https() {
    let (dir, curl_bin, cert, key) = with_pair("tls-roles");
    let tls = format!("tls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"\n");
    let redis = Redis::start(dir.path());
    let broker = Broker::start(dir.path());
    broker.create_topic("thermo-minutes", 2);

    let (p_http, r_http) = (free_port(), free_port());
    let _partitioner = start_https_role(
        dir.path(),
        (&curl_bin, &cert),
        ("partitioner", "partitioner"),
        p_http,
        &format!(
            "http_addr = \"127.0.0.1:{p_http}\"\nkafka_brokers = \"{}\"\n{tls}",
            broker.addr()
        ),
    );
    let _read = start_https_role(
        dir.path(),
        (&curl_bin, &cert),
        ("read", "read-service"),
        r_http,
        &format!(
            "http_addr = \"127.0.0.1:{r_http}\"\nredis_url = \"{}\"\n{tls}",
            redis.url()
        ),
    );

    // Ingest over HTTPS: 200 once the partitioner has read the topic (503 before).
    let minute = thermo_core::window::minute_start(now_s()) - 120;
    let body = format!(
        r#"{{"series":[{{"metric":"orders","time":{minute},"type":"counter","value":4}}]}}"#
    );
    let ingest = format!("https://127.0.0.1:{p_http}/api/v1/ingest");
    let mut last = (0, String::new());
    wait_until("an ingest over HTTPS", Duration::from_secs(30), || {
        last = curl(
            &curl_bin,
            &[
                "--cacert",
                &cert,
                "-H",
                "content-type: application/json",
                "-d",
                &body,
                &ingest,
            ],
        );
        last.0 == 200
    });
    assert_eq!(last.1, r#"{"accepted":1}"#);
    let (status, body) = curl(
        &curl_bin,
        &[
            "--cacert",
            &cert,
            &format!("https://127.0.0.1:{r_http}/api/v1/metrics"),
        ],
    );
    assert_eq!((status, body.as_str()), (200, r#"{"metrics":[]}"#));
    for port in [p_http, r_http] {
        let (status, body) = curl(&curl_bin, &[&format!("http://127.0.0.1:{port}/healthz")]);
        assert_eq!(
            (status, body.as_str()),
            (400, "this port speaks HTTPS: use https:// URLs"),
            "port {port}"
        );
    }
}

#[test]
fn agents_send_over_https_and_curl_reads_it() {
    let (dir, curl_bin, cert_s, key_s) = with_pair("tls");

    // Standalone on HTTPS: its own agent trusts the certificate itself (the default --tls-ca).
    let (http, udp) = (free_port(), free_udp_port());
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_thermo"));
    let args: Vec<String> = [
        "standalone",
        "--data",
        &dir.path().join("data").display().to_string(),
        "--udp",
        &format!("127.0.0.1:{udp}"),
        "--otlp",
        "",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--tls-cert",
        &cert_s,
        "--tls-key",
        &key_s,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sa = Proc::spawn(
        "standalone",
        &bin,
        &args,
        dir.path(),
        dir.path().join("standalone.log"),
    );
    let base = format!("https://127.0.0.1:{http}");
    let with_ca = ["--cacert", cert_s.as_str()];
    wait_https(&curl_bin, &cert_s, &base, &sa);

    // Plain HTTP to the TLS port: refused, and told why.
    let (status, body) = curl(&curl_bin, &[&format!("http://127.0.0.1:{http}/healthz")]);
    assert_eq!(
        (status, body.as_str()),
        (400, "this port speaks HTTPS: use https:// URLs")
    );
    // A client that does not trust the certificate does not connect.
    let (status, _) = curl(&curl_bin, &[&format!("{base}/healthz")]);
    assert_eq!(status, 0, "curl without the CA must fail the handshake");

    // A separate agent process sends to standalone's ingest API over HTTPS.
    let agent_udp = free_udp_port();
    let agent = Role::start(
        dir.path(),
        "agent",
        "agent",
        &format!(
            "udp_addr = \"127.0.0.1:{agent_udp}\"\notlp_addr = \"\"\npartitioner_url = \"{base}\"\nca_file = \"{cert_s}\"\nagent_id = \"tls-agent\"\nflush_interval_ms = 200\n[global_tags]\nhost = \"remote\"\n"
        ),
    );
    let minute = thermo_core::window::minute_start(now_s()) - 300;
    let lines = |n: usize, value: u32| -> Vec<String> {
        (0..n)
            .map(|_| format!("orders:{value}|c|T{}", minute + 7))
            .collect()
    };
    send_udp(agent_udp, &lines(300, 2));
    send_udp(udp, &lines(200, 5));
    wait_received_lines(agent.http, 300.0);
    let (status, flushed) = post_json(&agent.url("/flush?wait_ms=30000"));
    assert_eq!(
        status, 200,
        "the agent's batches acknowledged over HTTPS: {flushed}"
    );
    assert_eq!(flushed["pending_batches"], 0, "{flushed}");
    let flush = curl(
        &curl_bin,
        &[
            &with_ca[..],
            &["-X", "POST", &format!("{base}/flush?wait_ms=30000")],
        ]
        .concat(),
    );
    assert_eq!(flush.0, 200, "{}", flush.1);

    // curl reads the totals over HTTPS: 300 × 2 from the remote agent, 200 × 5 from standalone's.
    let url = format!(
        "{base}/api/v1/query?metric=orders&from={minute}&to={}&group_by=host",
        minute + 60
    );
    let started = Instant::now();
    let last = loop {
        let (status, body) = curl(&curl_bin, &[&with_ca[..], &[url.as_str()]].concat());
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("json");
        let series = answer["series"].as_array().map_or(0, Vec::len);
        if series == 2 || started.elapsed() > Duration::from_secs(60) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(single(&last, &[("host", "remote")]), 600.0, "{last}");
    assert_eq!(single(&last, &[]), 1000.0, "{last}");
}
