//! `switchyard all-in-one` as a child process of a test.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts the server on the default ports (the test is in its own namespace) with `args`
    /// and its own data directory, and waits until /health answers.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// As [`Server::start`], with extra environment variables (settings such as `TURN__SECRET`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = temp_dir();
        let data = dir.join("data");
        let mut full = vec!["--data-dir".to_string(), data.display().to_string()];
        full.extend(args.iter().map(|a| a.to_string()));
        Server::spawn(&dir, &full, env, data)
    }

    /// Starts the server with no `--data-dir`, in working directory `cwd`, with extra
    /// environment variables (as a newcomer would run it).
    pub fn start_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Server::spawn(cwd, &args, env, cwd.join("switchyard-data"))
    }

    /// Starts the server again on the same data directory (after [`Server::kill`] or
    /// [`Server::stop`]), with `args` and extra environment variables.
    pub fn restart_with_env(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "still running");
        let cwd = self
            .data_dir
            .parent()
            .expect("data dir in a test dir")
            .to_path_buf();
        let mut full = vec![
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        *self = Server::spawn(&cwd, &full, env, self.data_dir.clone());
    }

    fn spawn(cwd: &Path, args: &[String], env: &[(&str, &str)], data_dir: PathBuf) -> Server {
        let log = cwd.join("server.log");
        let out = File::create(&log).expect("log file");
        let child = Command::new(crate::binary())
            .current_dir(cwd)
            .arg("all-in-one")
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "info,switchyard_dataplane=debug".into()),
            )
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start switchyard");
        let mut server = Server {
            child: Some(child),
            data_dir,
            log,
            port: 8080,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http::get(server.port, "/health").is_ok_and(|r| r.status == 200) {
                return server;
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "switchyard exited with {status} at start:\n{}",
                    server.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not answer /health in 20 s:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A token from `switchyard token` with the server's data directory.
    pub fn token(&self, channel: &str, user: &str, extra: &[&str]) -> String {
        let out = Command::new(crate::binary())
            .args(["token", "--channel", channel, "--user", user, "--data-dir"])
            .arg(&self.data_dir)
            .args(extra)
            .output()
            .expect("run switchyard token");
        assert!(
            out.status.success(),
            "switchyard token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 token");
        assert_eq!(
            text.lines().count(),
            1,
            "token output must be one line: {text:?}"
        );
        text.trim().to_string()
    }

    /// Waits up to 5 s until no transport or participant is left (the clients are gone).
    pub fn assert_cleaned_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics();
            if m.get("switchyard_transports") == Some(&0.0)
                && m.get("switchyard_participants") == Some(&0.0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "state left behind after the clients closed: {m:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's resident memory in KiB (VmRSS), for tests that report what an attack cost.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// `/metrics` as name{labels} -> value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        http::metrics(self.port)
    }

    pub fn drops(&self, reason: &str) -> f64 {
        self.metrics()
            .get(&format!(
                "switchyard_dropped_packets_total{{reason=\"{reason}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL (a crash: nothing is finished or flushed), then waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "switchyard did not stop within 10 s of SIGTERM:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let panicking = std::thread::panicking();
            if panicking {
                eprintln!(
                    "--- switchyard log ({}) ---\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
            let status = self.stop();
            if !panicking {
                assert!(
                    status.success(),
                    "switchyard exited with {status}:\n{}",
                    self.log_tail()
                );
            }
        }
    }
}

/// A fresh directory for one test.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{}-{:x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}
