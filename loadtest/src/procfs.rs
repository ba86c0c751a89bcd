//! CPU time per thread and resident memory of a process, from /proc: how the server's (and the
//! generator's) cost is measured without instrumenting either.

use std::time::Instant;

/// CPU ticks of every thread of a process at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    /// (thread id, thread name, user + system ticks).
    threads: Vec<(u32, String, u64)>,
}

/// CPU use between two samples, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CpuUsage {
    pub total: f64,
    /// Per thread name, summed over threads of the same name.
    pub threads: Vec<(String, f64)>,
}

impl CpuUsage {
    /// Cores used by threads whose name starts with `prefix`.
    pub fn matching(&self, prefix: &str) -> f64 {
        self.threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, c)| c)
            .sum()
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Reads `/proc/<pid>/task/*/stat`; None if the process is gone.
pub fn sample(pid: u32) -> Option<CpuSample> {
    let at = Instant::now();
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let threads = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            parse_stat(&stat).map(|(name, ticks)| (tid, name, ticks))
        })
        .collect();
    Some(CpuSample { at, threads })
}

/// (comm, utime + stime) from a stat line: `tid (comm) state ... utime stime ...`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the first after the name is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU used from `a` to `b`.
pub fn usage(a: &CpuSample, b: &CpuSample) -> CpuUsage {
    let seconds = b.at.duration_since(a.at).as_secs_f64().max(1e-6);
    let tps = ticks_per_second();
    let mut threads: Vec<(String, f64)> = Vec::new();
    let mut total = 0.0;
    for (tid, name, ticks) in &b.threads {
        let before = a
            .threads
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(0, |(_, _, x)| *x);
        let cores = ticks.saturating_sub(before) as f64 / tps / seconds;
        total += cores;
        match threads.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += cores,
            None => threads.push((name.clone(), cores)),
        }
    }
    threads.retain(|(_, c)| *c > 0.0);
    threads.sort_by(|x, y| y.1.total_cmp(&x.1));
    CpuUsage { total, threads }
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "42 (sy worker (0)) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(line), Some(("sy worker (0)".into(), 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn samples_this_process() {
        let pid = std::process::id();
        let a = sample(pid).unwrap();
        let until = Instant::now() + std::time::Duration::from_millis(100);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample(pid).unwrap();
        assert!(usage(&a, &b).total > 0.0);
        assert!(rss_bytes(pid).unwrap() > 0);
    }
}
