//! Thin wrappers over epoll(7), for the loops that watch many sockets: the TURN threads and
//! a media worker's ICE-TCP connections.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// An epoll instance, closed on drop.
pub(crate) struct Epoll {
    pub(crate) fd: RawFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: no pointer arguments; a negative return is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: `fd` is our epoll descriptor, closed once here.
        unsafe { libc::close(self.fd) };
    }
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
    let mut flags = libc::EPOLLIN as u32;
    if write {
        flags |= libc::EPOLLOUT as u32;
    }
    let mut ev = libc::epoll_event {
        events: flags,
        u64: token,
    };
    // SAFETY: `ev` is a live local the kernel reads during the call.
    let r = unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn epoll_add(epoll: RawFd, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
    epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, token, write)
}

pub(crate) fn epoll_mod(epoll: RawFd, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
    epoll_ctl(epoll, libc::EPOLL_CTL_MOD, fd, token, write)
}

pub(crate) fn epoll_del(epoll: RawFd, fd: RawFd) {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
    let _ = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}

pub(crate) fn epoll_wait(
    epoll: RawFd,
    events: &mut [libc::epoll_event],
    timeout: Duration,
) -> io::Result<usize> {
    // Round up so a deadline 0.5 ms away does not spin.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: the kernel writes at most `events.len()` entries into the live slice.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}
