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
    /// Video went as three simulcast layers, subscribers asked for mixed ones.
    pub simulcast: bool,
    pub publishers: usize,
    pub subscribers: usize,
    /// Transports the scenario needs (publications plus subscriptions).
    pub transports: usize,
    pub connected: u64,
    pub failed: u64,
    /// Whether every transport had media flowing before the measurement began.
    pub all_joined: bool,
    pub signalling_errors: u64,
    /// Packets from the server that failed SRTP authentication, were SRTP replays, or came
    /// before the client had its keys, over the whole run (see `stats::Totals`).
    pub auth_failures: u64,
    pub replayed: u64,
    pub before_keys: u64,
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

/// Why a run does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable, for scripts and tests: `not_all_joined`, `transports_failed`,
    /// `signalling_errors`, `auth_failures`, `replayed` or `generator_saturated`.
    pub code: &'static str,
    /// What was counted, for people.
    pub message: String,
}

impl Reason {
    fn new(code: &'static str, message: String) -> Reason {
        Reason { code, message }
    }
}

/// A report with its verdict: what `--json` prints, so that scripts show the verdict the run
/// printed instead of judging the numbers again by rules of their own.
#[derive(Serialize)]
struct Judged<'a> {
    #[serde(flatten)]
    report: &'a Report,
    valid: bool,
    invalid_because: Vec<Reason>,
}

impl Report {
    /// Why the run does not count, if it does not: a run counts when everyone joined, nothing
    /// failed, every packet from the server that the client had keys for authenticated, and
    /// the generator kept up. Packets before the client's keys do not count against it.
    pub fn invalid_because(&self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if !self.all_joined {
            reasons.push(Reason::new(
                "not_all_joined",
                format!(
                    "not every transport had media flowing before the measurement ({} of {} connected)",
                    self.connected, self.transports
                ),
            ));
        }
        if self.failed > 0 {
            reasons.push(Reason::new(
                "transports_failed",
                format!("{} transports failed ICE or DTLS", self.failed),
            ));
        }
        if self.signalling_errors > 0 {
            reasons.push(Reason::new(
                "signalling_errors",
                format!("{} participants' signalling failed", self.signalling_errors),
            ));
        }
        if self.auth_failures > 0 {
            reasons.push(Reason::new(
                "auth_failures",
                format!(
                    "{} packets from the server failed SRTP authentication",
                    self.auth_failures
                ),
            ));
        }
        if self.replayed > 0 {
            reasons.push(Reason::new(
                "replayed",
                format!(
                    "{} packets from the server repeated an SRTP index",
                    self.replayed
                ),
            ));
        }
        if self.generator_saturated {
            reasons.push(Reason::new(
                "generator_saturated",
                "the generator saturated: it measured itself, not the server".into(),
            ));
        }
        reasons
    }

    pub fn valid(&self) -> bool {
        self.invalid_because().is_empty()
    }

    /// The report with its verdict, as `--json` prints it.
    fn judged(&self) -> Judged<'_> {
        let invalid_because = self.invalid_because();
        Judged {
            report: self,
            valid: invalid_because.is_empty(),
            invalid_because,
        }
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
    for l in &i.layers {
        eprintln!(
            "  layer {} (maxHeight {}): {} subscriptions received {:.1} video packets/s each (the layer sends {:.1})",
            l.rid,
            l.max_height.map_or("none".into(), |h| h.to_string()),
            l.subscribers,
            l.video_pps_per_subscriber,
            l.layer_pps
        );
    }
    eprintln!(
        "  srtp: {} auth failures, {} replayed, {} before the client's keys",
        r.auth_failures, r.replayed, r.before_keys
    );
    let judged = r.judged();
    if !judged.valid {
        let messages: Vec<&str> = judged
            .invalid_because
            .iter()
            .map(|r| r.message.as_str())
            .collect();
        eprintln!("  run invalid: {}", messages.join("; "));
    }
    if json {
        print_json(&judged);
    }
}

/// One JSON object on its own line of stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("could not write the JSON report: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audio-room run of scripts/bench.sh, everything in order.
    fn clean() -> Report {
        Report {
            scenario: "audio-room".into(),
            sfu: "switchyard".into(),
            io_backend: Some("mmsg".into()),
            signalling: "sync",
            simulcast: false,
            publishers: 10,
            subscribers: 100,
            transports: 1010,
            connected: 1010,
            failed: 0,
            all_joined: true,
            signalling_errors: 0,
            auth_failures: 0,
            replayed: 0,
            before_keys: 0,
            join_p50_ms: Some(22.3),
            join_p99_ms: Some(68.0),
            server_cpu_cores: Some(0.55),
            server_worker_cpu: Some(0.5),
            server_rss_bytes: Some(70 << 20),
            generator_cpu_cores: Some(0.2),
            generator_saturated: false,
            cpu_us_per_forwarded_packet: Some(10.9),
            interval: Interval::default(),
        }
    }

    #[test]
    fn auth_failures_make_a_run_invalid_and_the_json_says_why() {
        let r = Report {
            auth_failures: 89,
            ..clean()
        };
        assert!(!r.valid());
        let json = serde_json::to_value(r.judged()).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["auth_failures"], 89);
        assert_eq!(
            json["invalid_because"],
            serde_json::json!([{
                "code": "auth_failures",
                "message": "89 packets from the server failed SRTP authentication",
            }])
        );
        // The interval's fields stay at the top level, where scripts read them.
        assert!(json["packets_in_per_s"].is_number(), "{json}");
    }

    #[test]
    fn packets_before_the_clients_keys_do_not_invalidate_a_run() {
        let r = Report {
            before_keys: 12,
            ..clean()
        };
        assert!(r.valid());
        let json = serde_json::to_value(r.judged()).unwrap();
        assert_eq!(json["valid"], true);
        assert_eq!(json["before_keys"], 12);
        assert_eq!(json["invalid_because"], serde_json::json!([]));
    }

    #[test]
    fn every_reason_is_listed() {
        let r = Report {
            all_joined: false,
            connected: 1000,
            failed: 2,
            signalling_errors: 1,
            auth_failures: 3,
            replayed: 4,
            generator_saturated: true,
            ..clean()
        };
        let codes: Vec<_> = r.invalid_because().iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                "not_all_joined",
                "transports_failed",
                "signalling_errors",
                "auth_failures",
                "replayed",
                "generator_saturated"
            ]
        );
    }
}
