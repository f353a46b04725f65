//! An S3-compatible server for the cold-storage tests (moto, in memory), and the DuckDB cross-check
//! over the objects it holds (`tests/e2e/support/duckdb_totals.py`).
//!
//! moto keeps everything in memory: a restart loses the bucket and every object. A test that
//! simulates an S3 outage saves the objects first ([`S3Tool::dump`]) and puts them back after the
//! restart ([`S3Tool::restore`]), as a durable S3 would have kept them.
#![allow(dead_code)]

use super::*;

pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

const MOTO_INSTALL: &str = "pip install 'moto[server]'";

/// Finds a Python-installed executable on PATH, in ~/.pyenv/shims or ~/.local/bin.
pub fn find_python_bin(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(&home).join(".pyenv/shims"));
        dirs.push(PathBuf::from(&home).join(".local/bin"));
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found on PATH, in ~/.pyenv/shims or in ~/.local/bin: install it with {install}"
    );
}

/// `moto_server` on a free loopback port.
pub struct Moto {
    pub port: u16,
    pub proc: Proc,
}

impl Moto {
    pub fn start(dir: &Path) -> Self {
        let bin = find_python_bin("moto_server", MOTO_INSTALL);
        let port = free_port();
        let args: Vec<String> = ["-H", "127.0.0.1", "-p", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let proc = Proc::spawn("moto", &bin, &args, dir, dir.join("moto.log"));
        let m = Self { port, proc };
        m.wait_listening();
        m
    }

    pub fn wait_listening(&self) {
        let port = self.port;
        wait_until("moto_server to listen", Duration::from_secs(30), || {
            port_open(port)
        });
    }

    /// Stops the server (SIGKILL): everything it held is gone.
    pub fn stop(&mut self) {
        self.proc.kill();
        let port = self.port;
        wait_until("moto_server to stop", Duration::from_secs(10), || {
            !port_open(port)
        });
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.proc.start();
        self.wait_listening();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// TOML lines of the S3 keys shared by the aggregator's and the read service's configuration.
    pub fn toml(&self, bucket: &str) -> String {
        format!(
            "s3_endpoint = \"{}\"\ns3_bucket = \"{bucket}\"\ns3_region = \"{REGION}\"\ns3_access_key = \"{ACCESS_KEY}\"\ns3_secret_key = \"{SECRET_KEY}\"\n",
            self.endpoint()
        )
    }
}

/// Runs `tests/e2e/support/duckdb_totals.py` (boto3 + DuckDB) against a bucket.
pub struct S3Tool {
    pub endpoint: String,
    pub bucket: String,
}

impl S3Tool {
    pub fn new(moto: &Moto, bucket: &str) -> Self {
        Self {
            endpoint: moto.endpoint(),
            bucket: bucket.to_string(),
        }
    }

    fn run(&self, cmd: &str, extra: &[&str]) -> String {
        let python = find_python_bin("python3", "apt-get install python3");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/support/duckdb_totals.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(cmd)
            .args(["--endpoint", &self.endpoint, "--bucket", &self.bucket])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            panic!(
                "duckdb_totals.py {cmd} failed ({}):\n{stderr}{stdout}",
                out.status
            );
        }
        stdout
    }

    /// Every object key of the bucket.
    pub fn keys(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.run("keys", &[])).expect("keys output is JSON");
        v.as_array()
            .expect("array of keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect()
    }

    /// Downloads every object of the bucket into `dir` (key = path below `dir`); returns the count.
    pub fn dump(&self, dir: &Path) -> usize {
        let out = self.run("dump", &["--dir", &dir.display().to_string()]);
        out.trim().parse().expect("dump prints the object count")
    }

    /// Creates the bucket if missing and uploads every file below `dir` under its relative path.
    pub fn restore(&self, dir: &Path) -> usize {
        let out = self.run("restore", &["--dir", &dir.display().to_string()]);
        out.trim().parse().expect("restore prints the object count")
    }

    /// Downloads every object into `dir` and returns DuckDB's totals over the Parquet files (see
    /// the script for the document's shape).
    pub fn totals(&self, dir: &Path) -> serde_json::Value {
        let out = self.run("totals", &["--dir", &dir.display().to_string()]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("totals output is not JSON ({e}): {out}"))
    }
}
