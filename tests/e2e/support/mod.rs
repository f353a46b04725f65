//! End-to-end harness: real redis-server, a real Kafka-protocol broker (tansu) and the real `thermo`
//! binary, all on free loopback ports, each in its own temporary directory with its log file.
//!
//! Every wait is a bounded loop; a missing service binary fails the test with what to install.
#![allow(dead_code)]

pub mod s3;
pub mod stack;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory under the target dir, removed on success only (kept for post-mortem).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        // Unique within the test binary (tests run at once) and across runs (the process id).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create temp dir");
        Self(base)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Finds an executable on PATH or in ~/.cargo/bin, or panics saying how to install it.
pub fn find_bin(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(&home).join(".cargo/bin"));
        dirs.push(PathBuf::from(&home).join(".local/bin"));
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found on PATH or in ~/.cargo/bin: install it with `{install}` (or run scripts/install-deps.sh)");
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until `ok(v)` holds for `v`, the value of `sample` in the /metrics of the role on
/// `port` (0 while absent); at the deadline the panic shows the last value.
pub fn wait_metric(port: u16, sample: &str, timeout: Duration, ok: impl Fn(f64) -> bool) {
    let start = Instant::now();
    let mut last = metric(port, sample);
    while !ok(last) {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {sample} on port {port}: last value {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
        last = metric(port, sample);
    }
}

/// Waits until the agent serving /metrics on `port` counted `lines` received lines, and no more.
pub fn wait_received_lines(port: u16, lines: f64) {
    let sample = "thermo_agent_received_total";
    wait_metric(port, sample, Duration::from_secs(30), |v| v >= lines);
    assert_eq!(
        metric(port, sample),
        lines,
        "the agent on port {port} received more lines than sent"
    );
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    cmd: Vec<String>,
    cwd: PathBuf,
    /// `RUST_LOG` of the child.
    pub log_level: &'static str,
    /// Whether the child runs on the tests' clock ([`clock_offset`]); true unless set otherwise.
    pub shifted_clock: bool,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], cwd: &Path, log: PathBuf) -> Self {
        Self::spawn_at_level(name, program, args, cwd, log, "info")
    }

    /// Like `spawn`, with the child's `RUST_LOG`.
    pub fn spawn_at_level(
        name: &str,
        program: &Path,
        args: &[String],
        cwd: &Path,
        log: PathBuf,
        log_level: &'static str,
    ) -> Self {
        let mut p = Self::new(name, program, args, cwd, log);
        p.log_level = log_level;
        p.start();
        p
    }

    /// Like `spawn`, on the system clock (for a client that reads the clock itself: a browser).
    pub fn spawn_on_system_clock(
        name: &str,
        program: &Path,
        args: &[String],
        cwd: &Path,
        log: PathBuf,
    ) -> Self {
        let mut p = Self::new(name, program, args, cwd, log);
        p.shifted_clock = false;
        p.start();
        p
    }

    /// Not started yet: at level `info`, on the tests' clock.
    fn new(name: &str, program: &Path, args: &[String], cwd: &Path, log: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            child: None,
            log,
            cmd: std::iter::once(program.display().to_string())
                .chain(args.iter().cloned())
                .collect(),
            cwd: cwd.to_path_buf(),
            log_level: "info",
            shifted_clock: true,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        let offset = if self.shifted_clock {
            clock_offset()
        } else {
            0
        };
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .current_dir(&self.cwd)
            .env("RUST_LOG", self.log_level)
            .env(thermo_core::window::CLOCK_OFFSET_ENV, offset.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.cmd[0]));
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns whether it exited with 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// redis-server on free ports, no persistence: one Redis, or the nodes of a Redis Cluster.
pub struct Redis {
    /// `(port, process)` of each node; the first answers `cli`.
    pub nodes: Vec<(u16, Proc)>,
    cluster: bool,
}

impl Redis {
    /// One Redis.
    pub fn start(dir: &Path) -> Self {
        Self {
            nodes: vec![Self::spawn(dir, &[])],
            cluster: false,
        }
    }

    /// One Redis Cluster node that owns every hash slot: it runs scripts and commands as a
    /// cluster does (a script touching keys of two slots fails).
    pub fn start_cluster_node(dir: &Path) -> Self {
        Self::start_cluster(dir, 1)
    }

    /// A Redis Cluster of `masters` masters (no replicas), joined with `redis-cli --cluster
    /// create` (or, for one, given every slot), each node in its own directory under `dir`.
    pub fn start_cluster(dir: &Path, masters: usize) -> Self {
        let nodes: Vec<(u16, Proc)> = (0..masters)
            .map(|i| {
                let d = dir.join(format!("node-{i}"));
                std::fs::create_dir_all(&d).expect("node dir");
                let conf = d.join("nodes.conf").display().to_string();
                let bus = free_port().to_string();
                Self::spawn(
                    &d,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-port",
                        &bus,
                    ],
                )
            })
            .collect();
        let redis = Self {
            nodes,
            cluster: true,
        };
        if masters == 1 {
            redis.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
        } else {
            let addrs: Vec<String> = redis
                .nodes
                .iter()
                .map(|(port, _)| format!("127.0.0.1:{port}"))
                .collect();
            let mut args = vec!["--cluster", "create"];
            args.extend(addrs.iter().map(String::as_str));
            args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
            redis.cli(&args);
        }
        redis.wait_cluster_ok();
        redis
    }

    fn spawn(dir: &Path, extra: &[&str]) -> (u16, Proc) {
        std::fs::create_dir_all(dir).expect("redis dir");
        let bin = find_bin("redis-server", "apt-get install redis-server");
        let port = free_port();
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn("redis", &bin, &args, dir, dir.join("redis.log"));
        wait_until("redis to listen", Duration::from_secs(20), || {
            port_open(port)
        });
        (port, proc)
    }

    fn wait_cluster_ok(&self) {
        for (port, _) in &self.nodes {
            wait_until(
                "every cluster node to see every slot served",
                Duration::from_secs(30),
                || Self::cli_at(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"),
            );
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// `redis_url`: the URL of each node, separated by commas.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node is killed (SIGKILL) and started again: the data is lost (no persistence); a
    /// cluster keeps its membership and slots (`nodes.conf`).
    pub fn lose_everything(&mut self) {
        for (_, proc) in &mut self.nodes {
            proc.kill();
        }
        for (port, proc) in &mut self.nodes {
            proc.start();
            let port = *port;
            wait_until("redis to listen again", Duration::from_secs(20), || {
                port_open(port)
            });
        }
        if self.cluster {
            self.wait_cluster_ok();
        }
    }

    /// Runs `redis-cli <args>` against the first node (following redirects on a cluster) and
    /// returns its output (one value per line); panics if it fails or answers an error.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = Vec::new();
        if self.cluster {
            all.push("-c");
        }
        all.extend_from_slice(args);
        Self::cli_at(self.nodes[0].0, &all)
    }

    fn cli_at(port: u16, args: &[&str]) -> String {
        let bin = find_bin("redis-cli", "apt-get install redis-tools");
        let out = Command::new(&bin)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && !text.starts_with("ERR") && !text.starts_with("(error)"),
            "redis-cli {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Every key matching `pattern`, on every node.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|(port, _)| {
                Self::cli_at(*port, &["--scan", "--pattern", pattern])
                    .lines()
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A tansu broker on a free port with a sqlite store in its own directory.
pub struct Broker {
    pub port: u16,
    pub proc: Proc,
    bin: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Self {
        let bin = find_bin("tansu", "cargo install tansu --locked --features libsql");
        let port = free_port();
        std::fs::create_dir_all(dir.join("data")).expect("broker data dir");
        let url = format!("tcp://127.0.0.1:{port}");
        let args: Vec<String> = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "sqlite://data/tansu.db",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // tansu logs every request at info; keep its log to what matters.
        let proc = Proc::spawn_at_level("tansu", &bin, &args, dir, dir.join("tansu.log"), "warn");
        let b = Self { port, proc, bin };
        b.wait_listening();
        b
    }

    pub fn wait_listening(&self) {
        let port = self.port;
        wait_until("the broker to listen", Duration::from_secs(30), || {
            port_open(port)
        });
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut last = String::new();
        for _ in 0..50 {
            let out = Command::new(&self.bin)
                .args([
                    "topic",
                    "create",
                    "--broker",
                    &url,
                    "--partitions",
                    &partitions.to_string(),
                    name,
                ])
                .output()
                .expect("run tansu topic create");
            if out.status.success() {
                return;
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tansu topic create failed: {last}");
    }
}

/// Which roles to configure, with their ports.
pub struct Ports {
    pub http: u16,
    pub udp: u16,
}

/// Writes `toml` to `dir/name.toml` and starts `thermo <role> --config` there; waits for /healthz.
pub fn start_role(dir: &Path, name: &str, role: &str, toml: &str, http_port: u16) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).expect("write config");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_thermo"));
    let args = vec![
        role.to_string(),
        "--config".to_string(),
        cfg.display().to_string(),
    ];
    let p = Proc::spawn(name, &bin, &args, dir, dir.join(format!("{name}.log")));
    wait_healthy(&p, http_port);
    p
}

pub fn wait_healthy(p: &Proc, http_port: u16) {
    let url = format!("http://127.0.0.1:{http_port}/healthz");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http().get(&url).send() {
            if r.status().is_success() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} did not become healthy on {http_port}; log:\n{}",
        p.name,
        p.log_tail()
    );
}

pub fn http() -> reqwest::blocking::Client {
    thermo_runtime::tls::install_default_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// POSTs to `url`; returns the status and the JSON answer (status 0 if the request failed).
pub fn post_json(url: &str) -> (u16, serde_json::Value) {
    match http().post(url).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            (
                status,
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            )
        }
        Err(e) => (0, serde_json::Value::String(e.to_string())),
    }
}

/// GET a JSON document; returns (status, body).
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = http()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// The value of one sample (`name{labels}` exactly as rendered) in a role's /metrics, 0 if absent.
pub fn metric(http_port: u16, sample: &str) -> f64 {
    let text = http()
        .get(format!("http://127.0.0.1:{http_port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Posts `series` (ingest API objects) to the ingest API at `url` as one batch with idempotency key
/// `key`; asserts a 200 that accepted every one.
pub fn post_ingest(url: &str, key: &str, series: Vec<serde_json::Value>) {
    let n = series.len() as u64;
    let body = serde_json::json!({"idempotency_key": key, "series": series});
    let r = http().post(url).json(&body).send().expect("POST ingest");
    let status = r.status().as_u16();
    let answer = r.text().unwrap_or_default();
    assert_eq!(status, 200, "ingest {key}: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("ingest answer");
    assert_eq!(v["accepted"].as_u64(), Some(n), "{answer}");
}

/// Sends StatsD datagrams over UDP to `port`, pacing so the receiver's socket buffer never overflows.
pub fn send_udp(port: u16, datagrams: &[String]) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d.as_bytes(), ("127.0.0.1", port))
            .expect("udp send");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The tests' wall clock: the system clock shifted so that a test binary starts at 10:03 UTC on
/// the second day (epoch-aligned) of next week, whatever the time of day. Every process a test
/// starts gets the same shift (`THERMO_CLOCK_OFFSET_SECS`), so thermo's windows, lateness, lag,
/// grace and retention see the tests' times; with under 57 minutes of run time, no hour, day or
/// week boundary falls inside a test. (Ahead of the system clock, never behind it: Redis expires
/// keys at thermo's `EXPIREAT` times by its own clock.)
pub fn clock_offset() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        const WEEK: i64 = 7 * 86_400;
        let real = system_now_s();
        let start = thermo_core::window::window_start(real, WEEK) + WEEK + 86_400 + 10 * 3600 + 180;
        start - real
    })
}

fn system_now_s() -> i64 {
    thermo_core::window::system_now_ms().div_euclid(1000)
}

/// Unix seconds now, on the tests' clock ([`clock_offset`]).
pub fn now_s() -> i64 {
    system_now_s() + clock_offset()
}
