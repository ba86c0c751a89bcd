//! The final reports: a human-readable block on stderr and, with `--json`, one JSON object as
//! the last line of stdout (the interface scripts read).

use serde::Serialize;

use crate::stats::Interval;

/// What `loadtest run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub sfu: String,
    pub io_backend: Option<String>,
    /// sync, whip, or janus-http.
    pub signalling: &'static str,
    pub publishers: usize,
    pub subscribers: usize,
    /// Transports the scenario needs (publications plus subscriptions).
    pub transports: usize,
    pub connected: u64,
    pub failed: u64,
    /// Whether every transport had media flowing before the measurement began.
    pub all_joined: bool,
    pub signalling_errors: u64,
    /// Sampled packets that failed SRTP authentication (must be zero).
    pub auth_failures: u64,
    pub join_p50_ms: Option<f64>,
    pub join_p99_ms: Option<f64>,
    /// Cores the server used (all threads), and its media workers alone.
    pub server_cpu_cores: Option<f64>,
    pub server_worker_cpu: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    /// Cores the generator process used.
    pub generator_cpu_cores: Option<f64>,
    pub generator_saturated: bool,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    #[serde(flatten)]
    pub interval: Interval,
}

impl Report {
    /// A run counts when everyone joined, nothing failed and the generator kept up.
    pub fn valid(&self) -> bool {
        self.all_joined
            && self.failed == 0
            && self.signalling_errors == 0
            && self.auth_failures == 0
            && !self.generator_saturated
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}{unit}"))
}

pub fn print_run(r: &Report, json: bool) {
    let i = &r.interval;
    eprintln!(
        "\n{} on {} ({} backend, {} signalling): {} publishers, {} subscribers, {}/{} transports connected, {} failed",
        r.scenario,
        r.sfu,
        r.io_backend.as_deref().unwrap_or("?"),
        r.signalling,
        r.publishers,
        r.subscribers,
        r.connected,
        r.transports,
        r.failed
    );
    eprintln!(
        "  packets/s in {:.0} out {:.0} | bytes/s in {:.0} out {:.0} over {:.1} s",
        i.packets_in_per_s, i.packets_out_per_s, i.bytes_in_per_s, i.bytes_out_per_s, i.seconds
    );
    eprintln!(
        "  loss {:.3}% | jitter {:.2} ms | latency p50 {} p99 {} ({} samples) | join p50 {} p99 {}",
        i.loss * 100.0,
        i.jitter_ms,
        opt(i.latency_p50_ms, " ms"),
        opt(i.latency_p99_ms, " ms"),
        i.latency_samples,
        opt(r.join_p50_ms, " ms"),
        opt(r.join_p99_ms, " ms"),
    );
    eprintln!(
        "  server cpu {} cores (workers {}) rss {} | {} µs CPU per forwarded packet | generator cpu {} (net thread {:.2}){}",
        opt(r.server_cpu_cores, ""),
        opt(r.server_worker_cpu, ""),
        r.server_rss_bytes
            .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        opt(r.cpu_us_per_forwarded_packet, ""),
        opt(r.generator_cpu_cores, ""),
        i.generator_net_cpu,
        if r.generator_saturated {
            " | GENERATOR SATURATED: run invalid"
        } else {
            ""
        }
    );
    if !r.valid() {
        eprintln!(
            "  run invalid: all joined {}, failed {}, signalling errors {}, auth failures {}",
            r.all_joined, r.failed, r.signalling_errors, r.auth_failures
        );
    }
    if json {
        print_json(r);
    }
}

/// One JSON object on its own line of stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("could not write the JSON report: {e}"),
    }
}
