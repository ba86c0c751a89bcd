//! More network namespaces for one test: routers, homes behind NAT, firewalls. The test's own
//! namespace (`netns::enter`) plays one part (e.g. the public network with the server), and
//! each [`Namespace`] made here is another, joined to the others by veth pairs.
//!
//! A namespace is held by a child process (`sleep`) that was moved into it, so nothing is
//! named under /run/netns and nothing outlives the test: dropping the [`Namespace`] kills its
//! holder, and the kernel removes the namespace with its interfaces, routes and firewall rules
//! (a veth pair goes when either end's namespace goes). Long-lived processes started in a
//! namespace with [`Namespace::spawn`] are killed with it. The holder, and every command run
//! inside, also dies with the test's thread (PR_SET_PDEATHSIG), so a test that crashes leaves
//! nothing behind either.
//!
//! Commands run inside a namespace through [`Namespace::command`] (setns before exec), and
//! other programs can enter it by [`Namespace::path`] (`nsenter --net=PATH`): by
//! descriptor, not `ip netns`, so no private mount namespace is needed either.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace: the test's own ([`Namespace::current`]), or one held open by a child
/// process ([`Namespace::new`]).
pub struct Namespace {
    /// What the test calls it, for messages.
    pub name: String,
    /// Keeps the namespace alive; `None` for the test's own.
    holder: Option<Child>,
    /// The namespace, for setns in children.
    fd: File,
    /// Processes started in it ([`Namespace::spawn`]), killed when it is dropped.
    children: Vec<Child>,
}

impl Namespace {
    /// A new namespace with `lo` up.
    pub fn new(name: &str) -> Namespace {
        let mut holder = Command::new("sleep");
        holder
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the closure calls only unshare and prctl, which are
        // async-signal-safe system calls, and touches no memory of the parent.
        unsafe {
            holder.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = holder
            .spawn()
            .unwrap_or_else(|e| panic!("namespace {name}: start its holder: {e}"));
        let path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let ns = Namespace {
            name: name.to_string(),
            holder: Some(holder),
            fd,
            children: Vec::new(),
        };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace the calling thread is in (the test's own, after `netns::enter`).
    pub fn current(name: &str) -> Namespace {
        // The thread's, not the process's: `netns::enter` moved only the test's thread.
        let fd = File::open("/proc/thread-self/ns/net").expect("open /proc/thread-self/ns/net");
        Namespace {
            name: name.to_string(),
            holder: None,
            fd,
            children: Vec::new(),
        }
    }

    /// A path other programs can enter the namespace by (`nsenter --net=PATH`), valid while
    /// this value lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// A command that runs inside the namespace. It is killed when the test's thread dies
    /// (PR_SET_PDEATHSIG), so a crashed test leaves no process behind in a namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns and prctl are async-signal-safe system calls, setns on a descriptor
        // the child inherited open; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// [`Namespace::command`] for `program` with `hosts` in place of /etc/hosts (in a private
    /// mount namespace of its own), so a test can make a name resolve without DNS.
    pub fn with_hosts(&self, hosts: &Path, program: &Path) -> Command {
        let mut cmd = self.command("unshare");
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

    /// Starts a long-running process (a [`Namespace::command`]), killed when the namespace
    /// is dropped. Returns its process id.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: start {cmd:?}: {e}", self.name));
        let id = child.id();
        self.children.push(child);
        id
    }

    /// Runs `args` inside the namespace; panics with its output unless it succeeds. Returns
    /// its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let (program, rest) = args.split_first().expect("a command");
        let out = self
            .command(program)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("{}: run {program}: {e}", self.name));
        assert!(
            out.status.success(),
            "{}: `{}` failed ({}): {}{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `cidr` (e.g. "10.1.0.2/24") to `interface`.
    pub fn address(&self, interface: &str, cidr: &str) {
        self.run(&["ip", "address", "add", cidr, "dev", interface]);
    }

    /// Routes `to` (e.g. "203.0.113.0/24", or "default") through `gateway`.
    pub fn route(&self, to: &str, gateway: &str) {
        self.run(&["ip", "route", "add", to, "via", gateway]);
    }

    /// Routes everything not on a link through `gateway`.
    pub fn default_route(&self, gateway: &str) {
        self.route("default", gateway);
    }

    /// Forwards IPv4 between its interfaces (a router).
    pub fn forward(&self) {
        // /proc/sys/net is per namespace, as the opening process sees it.
        self.run(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    }

    /// Source NAT of everything leaving through `interface` to that interface's address, as a
    /// home router does (iptables MASQUERADE: Linux keeps the source port when it is free,
    /// and lets in only replies to what went out).
    pub fn masquerade(&self, interface: &str) {
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            interface,
            "-j",
            "MASQUERADE",
        ]);
    }

    /// Runs iptables with `args` inside the namespace.
    pub fn iptables(&self, args: &[&str]) -> String {
        let mut all = vec!["iptables", "-w"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// The packets each rule of `chain` (table filter) matched, in order.
    pub fn rule_packets(&self, chain: &str) -> Vec<u64> {
        self.iptables(&["-L", chain, "-n", "-v", "-x"])
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
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

/// Joins `a` and `b` with a veth pair: interface `a_if` with address `a_cidr` in `a`, `b_if`
/// with `b_cidr` in `b`, both up.
pub fn veth(a: &Namespace, a_if: &str, a_cidr: &str, b: &Namespace, b_if: &str, b_cidr: &str) {
    // Made in `a` under a name unique to this process, then moved and renamed, so that two
    // namespaces can each have an `eth0`.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let peer = format!("sy{}p{n}", std::process::id() % 100_000);
    a.run(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", &peer,
    ]);
    // `ip link set ... netns` takes a namespace file; ours is a descriptor of this process.
    let target = b.path();
    a.run(&[
        "ip",
        "link",
        "set",
        &peer,
        "netns",
        target.to_str().expect("UTF-8 path"),
    ]);
    b.run(&["ip", "link", "set", &peer, "name", b_if]);
    a.address(a_if, a_cidr);
    b.address(b_if, b_cidr);
    a.run(&["ip", "link", "set", a_if, "up"]);
    b.run(&["ip", "link", "set", b_if, "up"]);
}

/// A home network behind a NAT router: `router` with `wan` (on the upstream link) and `lan`
/// (`lan_gateway`, e.g. "10.1.0.1/24"), masquerading everything that leaves by `wan`, and
/// `home` with `eth0` (`home_cidr`) and its default route through the router.
pub struct Home {
    pub router: Namespace,
    pub home: Namespace,
}

impl Home {
    /// `upstream` gets interface `upstream_if` with `upstream_cidr` facing the router's `wan`
    /// (`wan_cidr`), and the router routes everything else to `upstream`'s address there.
    pub fn behind_nat(
        name: &str,
        upstream: &Namespace,
        upstream_if: &str,
        upstream_cidr: &str,
        wan_cidr: &str,
        lan_gateway_cidr: &str,
        home_cidr: &str,
    ) -> Home {
        let router = Namespace::new(&format!("{name}-router"));
        let home = Namespace::new(name);
        veth(
            upstream,
            upstream_if,
            upstream_cidr,
            &router,
            "wan",
            wan_cidr,
        );
        router.default_route(ip_of(upstream_cidr));
        veth(&router, "lan", lan_gateway_cidr, &home, "eth0", home_cidr);
        router.forward();
        router.masquerade("wan");
        home.default_route(ip_of(lan_gateway_cidr));
        Home { router, home }
    }
}

/// "10.1.0.1/24" -> "10.1.0.1".
pub fn ip_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}
