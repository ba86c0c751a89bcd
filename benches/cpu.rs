//! CPU time as the I/O benchmarks count it (shared by `io` and `zero_copy`).

use std::time::Duration;

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of every thread of the process but the calling one. io_uring's kernel workers
/// (and an SQPOLL thread) are threads of the process too, so work the ring hands off to them
/// is counted.
pub fn other_threads_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu_time(libc::CLOCK_THREAD_CPUTIME_ID))
}
