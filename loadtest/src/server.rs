//! The server under test when the generator starts it: `switchyard all-in-one` with one media
//! worker, pinned to one core, on loopback, with its own data directory (whose dev application
//! secret the generator signs tokens with).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_controlplane::dev::DevApplication;

use crate::signal::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not start the server: {0}")]
    Spawn(std::io::Error),
    #[error("the server did not answer /health within 20 s (log: {0})")]
    NotReady(String),
    #[error("the server's dev application: {0}")]
    Secret(std::io::Error),
}

/// A running `switchyard all-in-one`, stopped on drop.
pub struct Launched {
    child: Child,
    dir: PathBuf,
    pub http: SocketAddr,
    pub tokens: Tokens,
}

impl Launched {
    /// Starts `exe all-in-one` with `workers` workers and the given I/O backend, on `core` and
    /// the cores after it, one per worker (wrapping around the machine's).
    pub async fn start(
        exe: &std::path::Path,
        core: Option<usize>,
        workers: usize,
        io_backend: Option<&str>,
    ) -> Result<Launched, Error> {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-loadtest-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(Error::Spawn)?;
        let http = free_port()?;
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).map_err(Error::Spawn)?;
        let err = out.try_clone().map_err(Error::Spawn)?;
        let mut cmd = Command::new(exe);
        cmd.arg("all-in-one")
            .args(["--http", &http.to_string()])
            .args(["--workers", &workers.to_string()])
            // One mixer thread; in the server's one-core affinity it pins to that core too.
            .args(["--mcu-workers", "1"])
            .args(["--media-bind", "127.0.0.1", "--public-ip", "127.0.0.1"])
            .args(["--data-dir", &data.display().to_string()])
            .arg("--no-dev-tokens")
            .env("RUST_LOG", "info")
            // Every emulated client connects from this one address.
            .env("SYNC__MAXCONNECTIONSPERADDRESS", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(b) = io_backend {
            cmd.args(["--io-backend", b]);
        }
        if let Some(core) = core {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            // SAFETY: between fork and exec only async-signal-safe calls: building a CPU set
            // on the stack and sched_setaffinity.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for i in 0..workers.max(1) {
                        libc::CPU_SET((core + i) % cpus, &mut set);
                    }
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(Error::Spawn)?;
        let mut launched = Launched {
            child,
            dir,
            http,
            tokens: Tokens {
                application: String::new(),
                secret: String::new(),
            },
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = client
                .get(format!("http://{http}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline || launched.child.try_wait().ok().flatten().is_some() {
                return Err(Error::NotReady(log.display().to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let app = DevApplication::load_or_create(&data).map_err(Error::Secret)?;
        launched.tokens = Tokens {
            application: app.application_id,
            secret: app.secret,
        };
        Ok(launched)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // SIGTERM first: the server shuts down gracefully and its log ends cleanly.
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on loopback that was free a moment ago.
fn free_port() -> Result<SocketAddr, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::Spawn)?;
    l.local_addr().map_err(Error::Spawn)
}
