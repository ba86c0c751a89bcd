//! Janus (the C SFU we compare against) as a background process of a test, started by
//! scripts/janus.sh inside the test's private network namespace (see `netns::enter`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Janus's HTTP API answers inside the namespace.
pub const URL: &str = "http://127.0.0.1:8088/janus";
/// The room scripts/janus.sh configures.
pub const ROOM: u64 = 1234;
/// Where a client's UDP socket must be bound. Janus's libnice sockets live on veth0
/// (127.0.0.2/32) and cannot send to 127.0.0.1 (on `lo`): its checks and responses to a client
/// on 127.0.0.1 fail with EINVAL, so ICE never completes. 127.0.0.2 reaches them.
pub const CLIENT_IP: &str = "127.0.0.2";

pub struct Janus {
    pub pid: i32,
    /// Configuration and janus.log.
    pub dir: PathBuf,
}

impl Janus {
    /// Runs scripts/janus.sh (which adds the veth with 127.0.0.2 Janus needs) and waits until
    /// the HTTP API answers. Call `netns::enter()` first.
    pub fn start() -> Janus {
        let dir = crate::server::temp_dir().join("janus");
        let out = Command::new("bash")
            .arg(crate::repo().join("scripts/janus.sh"))
            .arg(&dir)
            .output()
            .expect("run scripts/janus.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scripts/janus.sh failed:\n{stderr}");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("scripts/janus.sh printed no PID:\n{stderr}"));
        Janus { pid, dir }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn running(&self) -> bool {
        // Janus is not our child (the script started it), so it is reaped by init; a zombie
        // counts as gone.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        // SAFETY: signals the Janus process this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.running() {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- janus log ({}) ---\n{}",
                self.dir.display(),
                self.log_tail(80)
            );
        }
        self.stop();
    }
}
