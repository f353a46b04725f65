//! The distributed stack on loopback: Redis, the broker, one partitioner, N aggregators, a read
//! service and N agents, each a real process.
#![allow(dead_code)]

use super::*;

pub const TOPIC: &str = "thermo-minutes";

pub struct Role {
    pub proc: Proc,
    pub http: u16,
    pub udp: u16,
}

impl Role {
    /// Starts `thermo <role> --config <dir>/<name>.toml` on a free HTTP port, with `settings` (TOML
    /// keys other than `http_addr`), and waits until it is healthy.
    pub fn start(dir: &Path, name: &str, role: &str, settings: &str) -> Self {
        let http = free_port();
        let toml = format!("http_addr = \"127.0.0.1:{http}\"\n{settings}");
        Self {
            proc: start_role(dir, name, role, &toml, http),
            http,
            udp: 0,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
    pub fn restart(&mut self) {
        self.proc.start();
        wait_healthy(&self.proc, self.http);
    }
}

/// Settings added to the roles' configs (TOML lines): the partitioner's, every aggregator's, the
/// read service's, and each agent's (before its `[global_tags]` table). `$REDIS_URL` in the partitioner's stands for
/// the stack's Redis.
#[derive(Default)]
pub struct Extra {
    /// Redis Cluster of 3 masters instead of one Redis.
    pub redis_cluster: bool,
    pub partitioner: String,
    pub aggregators: String,
    pub read: String,
    pub agents: Vec<String>,
}

pub struct Stack {
    pub dir: TempDir,
    pub redis: Redis,
    pub broker: Broker,
    pub partitioner: Role,
    pub aggregators: Vec<Role>,
    pub read: Role,
    pub agents: Vec<Role>,
}

impl Stack {
    /// Restarts every thermo role on the system clock instead of the tests' (for a client that
    /// reads the clock itself, such as a rule engine); before any data is sent.
    pub fn restart_on_system_clock(&mut self) {
        let roles = std::iter::once(&mut self.partitioner)
            .chain(self.aggregators.iter_mut())
            .chain(std::iter::once(&mut self.read))
            .chain(self.agents.iter_mut());
        for role in roles {
            role.proc.kill();
            role.proc.shifted_clock = false;
            role.restart();
        }
    }

    /// Starts everything; `agg_batch` is the aggregators' `batch_max_records`.
    pub fn start(
        name: &str,
        partitions: u32,
        aggregators: usize,
        agents: usize,
        agg_batch: usize,
    ) -> Self {
        Self::start_with(
            name,
            partitions,
            aggregators,
            agents,
            agg_batch,
            &Extra::default(),
        )
    }

    /// [`Self::start`], with `extra` settings in the roles' configs.
    pub fn start_with(
        name: &str,
        partitions: u32,
        aggregators: usize,
        agents: usize,
        agg_batch: usize,
        extra: &Extra,
    ) -> Self {
        let dir = TempDir::new(name);
        let redis = if extra.redis_cluster {
            Redis::start_cluster(&mkdir(dir.path(), "redis"), 3)
        } else {
            Redis::start(&mkdir(dir.path(), "redis"))
        };
        let partitioner = extra.partitioner.replace("$REDIS_URL", &redis.url());
        let broker = Broker::start(&mkdir(dir.path(), "broker"));
        broker.create_topic(TOPIC, partitions);
        let d = dir.path();
        let partitioner = Role::start(
            d,
            "partitioner",
            "partitioner",
            &format!(
                "kafka_brokers = \"{}\"\ntopic = \"{TOPIC}\"\nproduce_timeout_ms = 3000\n{partitioner}",
                broker.addr()
            ),
        );
        let aggregators = (0..aggregators)
            .map(|i| {
                Role::start(d, &format!("aggregator-{i}"), "aggregator", &format!(
                    "kafka_brokers = \"{}\"\ntopic = \"{TOPIC}\"\nredis_url = \"{}\"\nbatch_max_records = {agg_batch}\nbatch_max_wait_ms = 100\ninstance_id = \"aggregator-{i}\"\n{}",
                    broker.addr(), redis.url(), extra.aggregators))
            })
            .collect();
        let read = Role::start(
            d,
            "read",
            "read-service",
            &format!("redis_url = \"{}\"\n{}", redis.url(), extra.read),
        );
        let pport = partitioner.http;
        let agents = (0..agents)
            .map(|i| {
                let udp = free_udp_port();
                Role {
                    udp,
                    ..Role::start(d, &format!("agent-{i}"), "agent", &format!(
                        "udp_addr = \"127.0.0.1:{udp}\"\notlp_addr = \"\"\npartitioner_url = \"http://127.0.0.1:{pport}\"\nagent_id = \"agent-{i}\"\nflush_interval_ms = 200\nretry_initial_ms = 100\nretry_max_ms = 1000\nbreaker_open_ms = 1000\nrequest_timeout_ms = 5000\n{}[global_tags]\nhost = \"h{}\"\n",
                        extra.agents.get(i).map_or("", String::as_str),
                        i + 1))
                }
            })
            .collect();
        Self {
            dir,
            redis,
            broker,
            partitioner,
            aggregators,
            read,
            agents,
        }
    }

    /// Query the read service; panics on a non-200 answer.
    pub fn query(&self, params: &str) -> serde_json::Value {
        let (status, body) = get_json(&self.read.url(&format!("/api/v1/query?{params}")));
        assert_eq!(status, 200, "query {params}: {body}");
        body
    }

    /// `POST /flush` on every agent and wait until each spool drained.
    pub fn flush_agents(&self) {
        for a in &self.agents {
            let r = http()
                .post(a.url("/flush?wait_ms=60000"))
                .send()
                .expect("flush");
            assert_eq!(
                r.status().as_u16(),
                200,
                "agent flush did not drain: {}",
                r.text().unwrap_or_default()
            );
        }
    }

    /// Waits until every agent has counted `lines` received lines in total.
    pub fn wait_agent_lines(&self, idx: usize, lines: f64) {
        wait_received_lines(self.agents[idx].http, lines);
    }

    /// Polls `params` until `f(answer)` holds (bounded), returning the last answer.
    pub fn query_until(
        &self,
        params: &str,
        what: &str,
        mut f: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll_query(&self.read.url("/api/v1/query"), params, Duration::from_secs(90), &mut f)
            .unwrap_or_else(|last| {
                let assigned: Vec<f64> = self
                    .aggregators
                    .iter()
                    .map(|a| metric(a.http, "thermo_aggregator_assigned_partitions"))
                    .collect();
                let logs: Vec<String> = self
                    .aggregators
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("aggregator {i} log:\n{}", a.proc.log_tail()))
                    .collect();
                panic!(
                    "timed out waiting for {what}; last answer to {params}: {last}\nassigned partitions per aggregator: {assigned:?}\n{}",
                    logs.join("\n")
                )
            })
    }
}

fn mkdir(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    s.local_addr().expect("addr").port()
}

/// Points of the one series whose tags equal `tags` (as `k=v` pairs), as (time, value).
pub fn points(answer: &serde_json::Value, tags: &[(&str, &str)]) -> Vec<(i64, f64)> {
    let series = answer["series"].as_array().expect("series array");
    let want: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let s = series
        .iter()
        .find(|s| s["tags"].as_object() == Some(&want))
        .unwrap_or_else(|| panic!("no series with tags {tags:?} in {answer}"));
    s["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p[0].as_i64().expect("t"), p[1].as_f64().expect("v")))
        .collect()
}

/// The `sources` of a query answer (panics if there are none).
pub fn sources(a: &serde_json::Value) -> Vec<String> {
    a["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources in {a}"))
        .iter()
        .map(|s| s.as_str().expect("source").to_string())
        .collect()
}

/// The single value of the single point of the series with `tags`.
pub fn single(answer: &serde_json::Value, tags: &[(&str, &str)]) -> f64 {
    let p = points(answer, tags);
    assert_eq!(p.len(), 1, "expected one point for {tags:?}: {answer}");
    p[0].1
}

/// Polls `<query_url>?<params>` until a 200 answer satisfies `f` (returned), or `timeout` passes
/// (the last answer is the error).
fn poll_query(
    query_url: &str,
    params: &str,
    timeout: Duration,
    f: &mut dyn FnMut(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, serde_json::Value> {
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < timeout {
        let (status, body) = get_json(&format!("{query_url}?{params}"));
        if status == 200 && f(&body) {
            return Ok(body);
        }
        last = body;
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// What the shared scenario needs from a deployment: the distributed [`Stack`] or [`Standalone`].
pub trait Target {
    /// The UDP port of each agent (agent `i` adds the tag `host=h{i+1}`).
    fn agent_udp_ports(&self) -> Vec<u16>;
    fn query(&self, params: &str) -> serde_json::Value;
    fn query_until(
        &self,
        params: &str,
        what: &str,
        f: &mut dyn FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value;
    fn wait_agent_lines(&self, idx: usize, lines: f64);
    fn flush_agents(&self);
}

impl Target for Stack {
    fn agent_udp_ports(&self) -> Vec<u16> {
        self.agents.iter().map(|a| a.udp).collect()
    }
    fn query(&self, params: &str) -> serde_json::Value {
        Stack::query(self, params)
    }
    fn query_until(
        &self,
        params: &str,
        what: &str,
        f: &mut dyn FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        Stack::query_until(self, params, what, f)
    }
    fn wait_agent_lines(&self, idx: usize, lines: f64) {
        Stack::wait_agent_lines(self, idx, lines)
    }
    fn flush_agents(&self) {
        Stack::flush_agents(self)
    }
}

/// `thermo standalone` on free ports, with its agent tagging `host=h1`.
pub struct Standalone {
    pub dir: TempDir,
    pub proc: Proc,
    pub http: u16,
    pub udp: u16,
    /// The OTLP/HTTP port (`--otlp`).
    pub otlp: u16,
}

impl Standalone {
    /// Starts standalone with its agent tagging `host=h1`.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &["--tag", "host=h1"])
    }

    /// Starts standalone on free ports and a fresh data dir, with `extra` arguments, on the
    /// tests' clock.
    pub fn start_with(name: &str, extra: &[&str]) -> Self {
        Self::start_on(name, extra, true)
    }

    /// Like `start_with`, on the system clock: for a browser, whose pages ask for "the last 15
    /// minutes" by its own clock.
    pub fn start_on_system_clock(name: &str, extra: &[&str]) -> Self {
        Self::start_on(name, extra, false)
    }

    fn start_on(name: &str, extra: &[&str], shifted_clock: bool) -> Self {
        let dir = TempDir::new(name);
        let (http, udp, otlp) = (free_port(), free_udp_port(), free_port());
        let mut args: Vec<String> = vec![
            "standalone".to_string(),
            "--data".to_string(),
            dir.path().join("data").display().to_string(),
            "--udp".to_string(),
            format!("127.0.0.1:{udp}"),
            "--http".to_string(),
            format!("127.0.0.1:{http}"),
            "--otlp".to_string(),
            format!("127.0.0.1:{otlp}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_thermo"));
        let log = dir.path().join("standalone.log");
        let proc = if shifted_clock {
            Proc::spawn("standalone", &bin, &args, dir.path(), log)
        } else {
            Proc::spawn_on_system_clock("standalone", &bin, &args, dir.path(), log)
        };
        wait_healthy(&proc, http);
        Self {
            dir,
            proc,
            http,
            udp,
            otlp,
        }
    }

    /// SIGKILL, then start again on the same data and ports.
    pub fn kill_and_restart(&mut self) {
        self.proc.kill();
        self.proc.start();
        wait_healthy(&self.proc, self.http);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

impl Target for Standalone {
    fn agent_udp_ports(&self) -> Vec<u16> {
        vec![self.udp]
    }
    fn query(&self, params: &str) -> serde_json::Value {
        let (status, body) = get_json(&self.url(&format!("/api/v1/query?{params}")));
        assert_eq!(status, 200, "query {params}: {body}");
        body
    }
    fn query_until(
        &self,
        params: &str,
        what: &str,
        f: &mut dyn FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll_query(
            &self.url("/api/v1/query"),
            params,
            Duration::from_secs(60),
            f,
        )
        .unwrap_or_else(|last| {
            panic!(
                "timed out waiting for {what}; last answer to {params}: {last}\nlog:\n{}",
                self.proc.log_tail()
            )
        })
    }
    fn wait_agent_lines(&self, _idx: usize, lines: f64) {
        wait_received_lines(self.http, lines);
    }
    fn flush_agents(&self) {
        let r = http()
            .post(self.url("/flush?wait_ms=60000"))
            .send()
            .expect("flush");
        assert_eq!(r.status().as_u16(), 200, "flush did not drain");
    }
}
