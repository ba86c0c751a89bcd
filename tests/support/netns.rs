//! A private network namespace for the calling test: only `lo`, so the server can use its
//! default ports, tests cannot clash, and no packet leaves the machine.
//!
//! cargo-nextest runs each test in its own process, so moving the process is safe; the
//! children it spawns (server, browser, aiortc) inherit the namespace.

use std::process::Command;

/// Moves this process (thread and future children) into a new network namespace with `lo` up.
pub fn enter() {
    // SAFETY: unshare takes no pointers; it affects only this process's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): end-to-end tests need root or CAP_SYS_ADMIN",
        std::io::Error::last_os_error()
    );
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run `ip` (iproute2)");
    assert!(status.success(), "`ip link set lo up` failed");
}
