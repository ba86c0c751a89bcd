//! A private network namespace for the calling test: only `lo`, so the server can use its
//! default ports, tests cannot clash, and no packet leaves the machine. Also a private
//! /etc/hosts for tests that need a host name (`hosts`); more namespaces joined to this one
//! are in `nat`.
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

/// Gives this thread and the children it starts from now on their own /etc/hosts, which
/// names `entries` (name, address) besides localhost: a private mount namespace where a file
/// of ours is bind-mounted over /etc/hosts, so that a browser resolves a test's host names
/// and nothing changes for the rest of the machine.
pub fn hosts(entries: &[(&str, &str)]) {
    let dir = crate::server::temp_dir();
    let file = dir.join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, ip) in entries {
        text.push_str(&format!("{ip} {name}\n"));
    }
    std::fs::write(&file, text).expect("write hosts file");
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (root, target, source) = (
        c("/"),
        c("/etc/hosts"),
        c(file.to_str().expect("UTF-8 path")),
    );
    // SAFETY: unshare takes no pointers; mount gets NUL-terminated strings that outlive the
    // calls (or null where the kernel allows it).
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare(CLONE_NEWNS): {}",
            std::io::Error::last_os_error()
        );
        // Private first, so that the bind mount below does not propagate to the host's
        // mount namespace through a shared /.
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0,
            "make / private: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null()
            ),
            0,
            "bind-mount {} over /etc/hosts: {}",
            file.display(),
            std::io::Error::last_os_error()
        );
    }
}
