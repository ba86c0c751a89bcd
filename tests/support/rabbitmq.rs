//! RabbitMQ (Debian's `rabbitmq-server`) started inside the test's network namespace with its
//! own node directory, so a test can stop and restart the broker under the recording pipeline.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RabbitMq {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl RabbitMq {
    /// Starts a broker on 127.0.0.1:`port` (guest/guest) and waits until it accepts
    /// connections (a few seconds).
    pub fn start(port: u16) -> RabbitMq {
        let dir = crate::server::temp_dir().join("rabbitmq");
        std::fs::create_dir_all(&dir).expect("broker dir");
        std::fs::write(dir.join("plugins"), "[].").expect("plugins file");
        let mut broker = RabbitMq {
            child: None,
            dir,
            port,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("ERL_CRASH_DUMP", self.dir.join("erl_crash.dump"))
            .env("RABBITMQ_NODENAME", "rabbit@localhost")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            // Its own process group: the script starts the Erlang VM (and epmd) below it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rabbitmq-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server did not listen in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URI clients connect with.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the broker as an operator does (`rabbitmqctl stop`) and starts it again on the
    /// same node directory: what it confirmed is still there.
    pub fn restart(&mut self) {
        let stopped = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .args(["-n", "rabbit@localhost", "stop"])
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("ERL_CRASH_DUMP", self.dir.join("erl_crash.dump"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run rabbitmqctl");
        assert!(stopped.success(), "rabbitmqctl stop failed");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.run();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals our own child's process group.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
    }
}
