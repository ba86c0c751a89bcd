//! Several network namespaces joined by veth links, with routes, forwarding and iptables:
//! enough to put a NAT or a firewall between a test's parties. Everything stays inside the
//! namespaces, which vanish with their processes.
//!
//! The calling test's own namespace (after [`crate::netns::enter`]) takes part as
//! [`Namespace::this`]; the others are [`Namespace::new`], each held open by a small process
//! and entered with `nsenter`, so no `/run/netns` (and no private mount namespace) is needed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A network namespace: the test's own, or one held open by a child process.
pub struct Namespace {
    name: String,
    holder: Option<Child>,
    /// Processes started in it, killed when it is dropped.
    children: Vec<Child>,
}

/// Kills `child` when the test process dies, so a crashed test leaves no namespace behind.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl with integer arguments only; async-signal-safe between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

impl Namespace {
    /// The calling thread's namespace (a test that called `netns::enter` first).
    pub fn this(name: &str) -> Namespace {
        Namespace {
            name: name.to_string(),
            holder: None,
            children: Vec::new(),
        }
    }

    /// A new namespace with `lo` up.
    pub fn new(name: &str) -> Namespace {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && echo ready && exec sleep 3600",
        ])
        .stdout(Stdio::piped());
        let mut holder = die_with_parent(&mut cmd)
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "namespace {name} did not come up");
        Namespace {
            name: name.to_string(),
            holder: Some(holder),
            children: Vec::new(),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.holder.as_ref().map(Child::id)
    }

    /// A command that runs `program` in this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = match self.pid() {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--target={pid}"))
                    .args(["--net", "--"])
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        die_with_parent(&mut cmd);
        cmd
    }

    /// Runs `program args` here and returns its output, failing the test if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `ip ARGS` here.
    pub fn ip(&self, args: &str) {
        self.run("ip", &args.split_whitespace().collect::<Vec<_>>());
    }

    /// `iptables ARGS` here.
    pub fn iptables(&self, args: &str) {
        self.run("iptables", &args.split_whitespace().collect::<Vec<_>>());
    }

    /// Lets this namespace route between its links.
    pub fn forward(&self) {
        self.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    }

    /// Starts a long-running process here, killed when the namespace is dropped.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?} in {}: {e}", self.name));
        let id = child.id();
        self.children.push(child);
        id
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in self.children.iter_mut().chain(self.holder.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Joins `a` and `b` with a veth pair: interface `a_if` with `a_cidr` (e.g. 10.0.0.1/24) in
/// `a`, `b_if` with `b_cidr` in `b`. `b` must be a [`Namespace::new`] one.
pub fn link(a: &Namespace, a_if: &str, a_cidr: &str, b: &Namespace, b_if: &str, b_cidr: &str) {
    let pid = b
        .pid()
        .expect("the second namespace of a link must be a Namespace::new")
        .to_string();
    a.run(
        "ip",
        &[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &pid,
        ],
    );
    for (ns, dev, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        ns.run("ip", &["addr", "add", cidr, "dev", dev]);
        ns.run("ip", &["link", "set", dev, "up"]);
    }
}

/// A command that runs `program` in `ns` with `hosts` in place of /etc/hosts (in a private
/// mount namespace of its own), so a test can make a name resolve without DNS.
pub fn with_hosts(ns: &Namespace, hosts: &Path, program: &Path) -> Command {
    let mut cmd = ns.command("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(hosts)
    .arg(program);
    cmd
}
