//! A packet capture on the test's network namespace: every frame on every interface, read with
//! an `AF_PACKET` socket (the test runs as root in its own namespace), kept whole in memory so
//! a test can look for what must never cross the wire in clear. No tcpdump needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A running capture; [`Capture::stop`] returns what it saw.
pub struct Capture {
    stop: Arc<AtomicBool>,
    reader: JoinHandle<Vec<u8>>,
}

impl Capture {
    /// Starts capturing (call after `netns::enter`).
    pub fn start() -> Capture {
        // SAFETY: plain socket(2) and setsockopt(2) calls on a descriptor this function owns.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // A timeout on reads, so the reader notices `stop`.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `timeout` outlives the call and its size is passed.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut frame = vec![0u8; 65_536 + 64];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: reads at most `frame.len()` bytes into `frame`.
                let n = unsafe { libc::recv(fd, frame.as_mut_ptr().cast(), frame.len(), 0) };
                if let Ok(n) = usize::try_from(n) {
                    seen.extend_from_slice(&frame[..n]);
                }
            }
            // SAFETY: the descriptor is ours and used by nothing else.
            unsafe { libc::close(fd) };
            seen
        });
        Capture { stop, reader }
    }

    /// Stops and returns every frame captured, one after the other.
    pub fn stop(self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        self.reader.join().expect("the capture thread")
    }
}

/// Every value of the JSON string field `name` in `bytes` (as `"name":"value"`).
pub fn json_strings(bytes: &[u8], name: &str) -> Vec<String> {
    let needle = format!("\"{name}\":\"");
    let needle = needle.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + i + needle.len();
        let len = bytes[start..].iter().position(|&b| b == b'"').unwrap_or(0);
        out.push(String::from_utf8_lossy(&bytes[start..start + len]).into_owned());
        at = start + len;
    }
    out
}
