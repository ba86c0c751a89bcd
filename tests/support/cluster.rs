//! Cluster processes for a test: a private `redis-server`, gateways and media servers as
//! children, each with its own log.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http;

/// The cluster secret every test process gets (`CLUSTER__SECRET`) unless its test passes
/// another (an empty one: none at all).
pub const SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// A request to the cluster API on 127.0.0.1:`port`, signed with [`SECRET`].
pub fn signed(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<http::Response> {
    let secret = switchyard_cluster::signing::ClusterSecret::new(SECRET).expect("a long secret");
    let headers = secret.headers(method, path, body.as_bytes());
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("content-type", "application/json"));
    http::request(port, method, path, &all, body)
}

/// A `switchyard` process in some role.
pub struct Process {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Process {
    /// Starts `switchyard <args>` with `env`, logging to `<dir>/<name>.log`.
    pub fn start(
        name: &str,
        dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let mut command = Command::new(crate::binary());
        match env.iter().find(|(k, _)| *k == "CLUSTER__SECRET") {
            Some((_, "")) => command.env_remove("CLUSTER__SECRET"),
            Some(_) => &mut command,
            None => command.env("CLUSTER__SECRET", SECRET),
        };
        let child = command
            .current_dir(dir)
            .args(args)
            .envs(
                env.iter()
                    .copied()
                    .filter(|(k, v)| *k != "CLUSTER__SECRET" || !v.is_empty()),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start switchyard");
        Process {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: the process dies without a word to anyone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, without waiting.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            // SAFETY: sends a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: sends a signal to our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `redis-server` of the test's own, on 127.0.0.1:`port` in the test's namespace, keeping
/// nothing on disk.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/test.sh installs it)");
        let redis = Redis { child, port };
        wait_for(
            "redis-server to accept connections",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts an empty one on the same port (a Redis restart without
    /// persistence: every key is gone).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = Redis::start(self.port);
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }

    /// `redis-cli ARGS` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The media servers a gateway lists (`GET /cluster/v1/media-servers`).
pub fn media_servers(gateway_port: u16) -> Vec<serde_json::Value> {
    signed(gateway_port, "GET", "/cluster/v1/media-servers", "")
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// A database of the test's own in the machine's PostgreSQL (127.0.0.1:5432, trust auth),
/// reached through its Unix socket so that a test in its own network namespace can use it.
/// Dropped when the value is.
pub struct Postgres {
    pub name: String,
    socket_dir: String,
}

impl Postgres {
    /// Creates the database. Call before entering a network namespace (it asks over TCP where
    /// the server's socket is).
    pub fn create() -> Postgres {
        let socket = psql(
            "127.0.0.1",
            "test",
            "SELECT current_setting('unix_socket_directories')",
        );
        let socket_dir = socket
            .split(',')
            .next()
            .unwrap_or("/var/run/postgresql")
            .trim()
            .to_string();
        let name = format!(
            "sy_cluster_{:x}",
            std::process::id() as u64 * 1_000_003 + rand_suffix()
        );
        psql("127.0.0.1", "test", &format!("CREATE DATABASE {name}"));
        Postgres { name, socket_dir }
    }

    /// CONNECTIONSTRINGS:DEFAULT for this database, over the socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/{}?host={}",
            self.name, self.socket_dir
        )
    }

    /// Drops the database now, connections and all: the configuration store goes down.
    pub fn drop_now(&self) {
        psql(
            &self.socket_dir,
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.drop_now();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// `psql` as postgres against `host` (an address or a socket directory); its output, trimmed.
fn psql(host: &str, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h", host, "-p", "5432", "-U", "postgres", "-d", db, "-tAc", sql,
        ])
        .output()
        .expect("run psql (PostgreSQL must run on 127.0.0.1:5432; scripts/test.sh starts one)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
