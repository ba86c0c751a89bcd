//! `/metrics` in the Prometheus text format.
//!
//! Written by hand rather than through a metrics registry: the data plane keeps its own
//! lock-free per-worker counters and publishes snapshots, so all this needs is to print a
//! handful of numbers in the exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_dataplane::worker::MediaServer;

/// Control-plane counters, and the host checks (which only processes running media record).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Kept here rather than in the session state so `/metrics` (all-in-one's and a media
    /// server's) renders them with the counters.
    pub checks: crate::checks::HostChecks,
    signalling_errors: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: AtomicU64,
    /// Peer-to-peer signals handed on to their target (by the sender's gateway).
    signals_relayed: AtomicU64,
    /// Peer-to-peer signals refused, by reason.
    signals_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Signalling sockets closed or refused by a [`crate::sync_limits`] limit, in the order of
    /// [`SocketClosed::ALL`].
    sockets_closed: [AtomicU64; 3],
    /// Webhook events and deliveries, shared with the webhook sender (all-in-one).
    pub webhooks: std::sync::Arc<crate::webhooks::Counters>,
}

/// Why the server ended a signalling socket on its own (see [`crate::sync_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketClosed {
    /// No successful `join` within `SYNC:JOINTIMEOUT`.
    JoinTimeout,
    /// Frames faster than `SYNC:MESSAGERATE` allows.
    Rate,
    /// Upgrade refused: the address held `SYNC:MAXCONNECTIONSPERADDRESS` sockets already.
    PerAddress,
}

impl SocketClosed {
    pub const ALL: [SocketClosed; 3] = [
        SocketClosed::JoinTimeout,
        SocketClosed::Rate,
        SocketClosed::PerAddress,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            SocketClosed::JoinTimeout => "join_timeout",
            SocketClosed::Rate => "rate",
            SocketClosed::PerAddress => "per_address",
        }
    }
}

impl Metrics {
    pub fn signalling_error(&self, reason: &'static str) {
        let mut m = self
            .signalling_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn signal_relayed(&self) {
        self.signals_relayed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn signal_refused(&self, reason: &'static str) {
        let mut m = self
            .signals_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    pub fn socket_closed(&self, reason: SocketClosed) {
        self.sockets_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the signalling counters (shared by all-in-one and the gateway), the webhooks'
    /// and the host checks.
    pub fn render(&self, out: &mut String) {
        self.checks.render(out);
        out.push_str("# HELP switchyard_signalling_errors_total Requests refused, by reason.\n");
        out.push_str("# TYPE switchyard_signalling_errors_total counter\n");
        let errors = self
            .signalling_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (reason, n) in errors {
            let _ = writeln!(
                out,
                "switchyard_signalling_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
        metric(
            out,
            "switchyard_http_auth_failures_total",
            "counter",
            "Requests with a bad or missing token.",
            self.auth_failures.load(Ordering::Relaxed),
        );
        metric(
            out,
            "switchyard_signals_relayed_total",
            "counter",
            "Peer-to-peer signals relayed to another participant.",
            self.signals_relayed.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP switchyard_signals_refused_total Peer-to-peer signals refused, by reason.\n",
        );
        out.push_str("# TYPE switchyard_signals_refused_total counter\n");
        let refused = self
            .signals_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (reason, n) in refused {
            let _ = writeln!(
                out,
                "switchyard_signals_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP switchyard_signalling_sockets_closed_total Signalling sockets closed, or upgrades refused, for exceeding a limit, by reason.\n",
        );
        out.push_str("# TYPE switchyard_signalling_sockets_closed_total counter\n");
        for reason in SocketClosed::ALL {
            let _ = writeln!(
                out,
                "switchyard_signalling_sockets_closed_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.sockets_closed[reason as usize].load(Ordering::Relaxed)
            );
        }
        self.webhooks.render(out);
    }
}

pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// How much is live in the channels of a process, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    pub channels: usize,
    pub participants: usize,
    pub publications: usize,
    pub subscriptions: usize,
}

/// Appends the embedded TURN server's counters (`switchyard_turn_*`).
pub fn render_turn(out: &mut String, c: &switchyard_dataplane::turn::Counters) {
    use switchyard_dataplane::turn::Counter;
    metric(
        out,
        "switchyard_turn_allocations",
        "gauge",
        "Live TURN allocations.",
        c.allocations,
    );
    // Series of one family are written together under one HELP/TYPE.
    let mut family = "";
    for counter in Counter::ALL {
        let name = counter.name();
        let base = name.split('{').next().unwrap_or(name);
        if base != family {
            family = base;
            let _ = writeln!(
                out,
                "# HELP switchyard_turn_{base} TURN {}.",
                base.replace('_', " ")
            );
            let _ = writeln!(out, "# TYPE switchyard_turn_{base} counter");
        }
        let _ = writeln!(out, "switchyard_turn_{name} {}", c.get(*counter));
    }
}

/// Renders every metric of a process that runs media: the workers' counters, the signalling
/// counters and what is `live`.
/// The MCU threads' mixers and what they did.
fn render_mcu(out: &mut String, threads: usize, s: &switchyard_dataplane::mcu::McuStats) {
    let gauges = [
        (
            "switchyard_mcu_threads",
            "MCU threads (--mcu-workers).",
            threads,
        ),
        ("switchyard_mcu_mixers", "Channels being mixed.", s.mixers),
        (
            "switchyard_mcu_streams",
            "Mixer inputs and outputs (transports of the routers).",
            s.streams,
        ),
    ];
    for (name, help, v) in gauges {
        metric(out, name, "gauge", help, v as u64);
    }
    let t = &s.totals;
    let counters = [
        (
            "switchyard_mcu_audio_packets_total",
            "Opus packets the mixers took in.",
            t.audio_packets_in,
        ),
        (
            "switchyard_mcu_audio_decodes_skipped_total",
            "Opus frames not decoded: their senders' levels said quiet and they were not mixed.",
            t.audio_decodes_skipped,
        ),
        (
            "switchyard_mcu_video_packets_total",
            "Video packets the mixers took in.",
            t.video_packets_in,
        ),
        (
            "switchyard_mcu_frames_decoded_total",
            "Video frames the mixers decoded.",
            t.frames_decoded,
        ),
        (
            "switchyard_mcu_pixels_decoded_total",
            "Luma samples of the video frames the mixers decoded (over frames decoded: the size of what inputs send).",
            t.pixels_decoded,
        ),
        (
            "switchyard_mcu_decode_errors_total",
            "Video frames a decoder refused.",
            t.decode_errors,
        ),
        (
            "switchyard_mcu_canvases_total",
            "Composite pictures composed.",
            t.canvases,
        ),
        (
            "switchyard_mcu_frames_encoded_total",
            "Composite frames encoded (each codec counts).",
            t.frames_encoded,
        ),
        (
            "switchyard_mcu_keyframes_encoded_total",
            "Composite keyframes encoded.",
            t.keyframes_encoded,
        ),
        (
            "switchyard_mcu_encode_errors_total",
            "Composite frames the encoders failed.",
            t.encode_errors,
        ),
        (
            "switchyard_mcu_plis_sent_total",
            "Keyframe requests the mixers sent their inputs.",
            t.plis_sent,
        ),
        (
            "switchyard_mcu_packets_sent_total",
            "RTP packets the mixers made.",
            t.packets_out,
        ),
        (
            "switchyard_mcu_dropped_total",
            "Packets the mixers dropped (unknown stream, unreadable).",
            t.dropped,
        ),
    ];
    for (name, help, v) in counters {
        metric(out, name, "counter", help, v);
    }
}

pub fn render(media: &MediaServer, signalling: &Metrics, live: Live) -> String {
    let s = media.stats();
    let mut out = String::new();
    let _ = write!(
        out,
        "# HELP switchyard_media_info The media workers' I/O backend and count.\n\
         # TYPE switchyard_media_info gauge\n\
         switchyard_media_info{{io_backend=\"{}\",workers=\"{}\"}} 1\n",
        media.backend().as_str(),
        media.workers()
    );
    if let Some(mcu) = media.mcu() {
        render_mcu(&mut out, mcu.threads(), &mcu.stats());
    }
    metric(
        &mut out,
        "switchyard_packets_received_total",
        "counter",
        "Datagrams received on media ports.",
        s.packets_in,
    );
    metric(
        &mut out,
        "switchyard_packets_sent_total",
        "counter",
        "Datagrams sent from media ports.",
        s.packets_out,
    );
    metric(
        &mut out,
        "switchyard_bytes_received_total",
        "counter",
        "Bytes received on media ports.",
        s.bytes_in,
    );
    metric(
        &mut out,
        "switchyard_bytes_sent_total",
        "counter",
        "Bytes sent from media ports.",
        s.bytes_out,
    );
    metric(
        &mut out,
        "switchyard_rtp_forwarded_total",
        "counter",
        "RTP packets written to consumers.",
        s.rtp_forwarded,
    );
    metric(
        &mut out,
        "switchyard_nack_retransmits_total",
        "counter",
        "Packets resent for NACKs.",
        s.nack_retransmits,
    );
    metric(
        &mut out,
        "switchyard_rtx_retransmits_total",
        "counter",
        "Packets resent for NACKs on RTX streams (RFC 4588), of those resent.",
        s.rtx_retransmits,
    );
    metric(
        &mut out,
        "switchyard_gso_trains_total",
        "counter",
        "UDP GSO sends: two or more datagrams to one destination in one send.",
        s.gso_trains,
    );
    metric(
        &mut out,
        "switchyard_gso_segments_total",
        "counter",
        "Datagrams sent in UDP GSO trains, of those sent.",
        s.gso_segments,
    );
    metric(
        &mut out,
        "switchyard_gso_fallbacks_total",
        "counter",
        "Media sockets that turned GSO off when the kernel refused a train.",
        s.gso_fallbacks,
    );
    metric(
        &mut out,
        "switchyard_zero_copy_trains_total",
        "counter",
        "UDP GSO trains sent zero-copy (io_uring SENDMSG_ZC), of the trains sent.",
        s.zero_copy_trains,
    );
    metric(
        &mut out,
        "switchyard_zero_copy_copied_total",
        "counter",
        "Zero-copy trains the kernel copied anyway (loopback, veth): no gain on that path.",
        s.zero_copy_copied,
    );
    metric(
        &mut out,
        "switchyard_zero_copy_fallbacks_total",
        "counter",
        "Zero-copy ways the kernel refused, each stepping down once (registered buffers, then zero-copy).",
        s.zero_copy_fallbacks,
    );
    metric(
        &mut out,
        "switchyard_frames_fanned_total",
        "counter",
        "Video frames held whole and written consumer by consumer (for GSO trains).",
        s.frames_fanned,
    );
    metric(
        &mut out,
        "switchyard_shard_packets_total",
        "counter",
        "Packets that crossed between workers on shard links (channels spread over workers).",
        s.shard_packets,
    );
    metric(
        &mut out,
        "switchyard_fanout_deferred_total",
        "counter",
        "Times frame fan-out waited for send buffers and went on over later loop turns.",
        s.fanout_deferred,
    );
    metric(
        &mut out,
        "switchyard_padding_bytes_total",
        "counter",
        "RTP padding added to make a frame's packets one size for a GSO train.",
        s.padding_bytes,
    );
    metric(
        &mut out,
        "switchyard_keyframe_requests_total",
        "counter",
        "PLI/FIR sent to publishers.",
        s.keyframe_requests,
    );
    metric(
        &mut out,
        "switchyard_transports",
        "gauge",
        "Live transports (peer connections).",
        s.transports,
    );
    metric(
        &mut out,
        "switchyard_ice_tcp_connections",
        "gauge",
        "Open ICE-TCP connections on media ports.",
        s.ice_tcp_connections,
    );
    metric(
        &mut out,
        "switchyard_ice_tcp_refused_total",
        "counter",
        "ICE-TCP connections refused (per-worker limit, or a second from one address).",
        s.ice_tcp_refused,
    );
    for (name, help, value) in [
        (
            "switchyard_data_messages_received_total",
            "Data channel messages received from publishers.",
            s.data_messages_received,
        ),
        (
            "switchyard_data_bytes_received_total",
            "Data channel message bytes received from publishers.",
            s.data_bytes_received,
        ),
        (
            "switchyard_data_messages_forwarded_total",
            "Data channel messages written to subscribers.",
            s.data_messages_forwarded,
        ),
        (
            "switchyard_data_bytes_forwarded_total",
            "Data channel message bytes written to subscribers.",
            s.data_bytes_forwarded,
        ),
        (
            "switchyard_data_messages_dropped_total",
            "Data channel messages a subscriber did not get (queue full, not connected, too large).",
            s.data_messages_dropped,
        ),
    ] {
        metric(&mut out, name, "counter", help, value);
    }
    out.push_str("# HELP switchyard_dropped_packets_total Datagrams dropped, by reason.\n");
    out.push_str("# TYPE switchyard_dropped_packets_total counter\n");
    for (reason, n) in s.drop_counts() {
        let _ = writeln!(
            out,
            "switchyard_dropped_packets_total{{reason=\"{reason}\"}} {n}"
        );
    }
    signalling.render(&mut out);
    metric(
        &mut out,
        "switchyard_channels",
        "gauge",
        "Active channels.",
        live.channels as u64,
    );
    metric(
        &mut out,
        "switchyard_participants",
        "gauge",
        "Participants in channels.",
        live.participants as u64,
    );
    metric(
        &mut out,
        "switchyard_publications",
        "gauge",
        "Published streams.",
        live.publications as u64,
    );
    metric(
        &mut out,
        "switchyard_subscriptions",
        "gauge",
        "Subscriptions to published streams.",
        live.subscriptions as u64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_counted_relayed_and_refused_by_reason() {
        let m = Metrics::default();
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("\nswitchyard_signals_relayed_total 0\n"),
            "{out}"
        );
        assert!(!out.contains("switchyard_signals_refused_total{"), "{out}");
        m.signal_relayed();
        m.signal_relayed();
        m.signal_refused("rate_limited");
        m.signal_refused("not_found");
        m.signal_refused("rate_limited");
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("\nswitchyard_signals_relayed_total 2\n"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_signals_refused_total{reason=\"rate_limited\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_signals_refused_total{reason=\"not_found\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn limit_closes_are_counted_by_reason() {
        let m = Metrics::default();
        m.socket_closed(SocketClosed::JoinTimeout);
        m.socket_closed(SocketClosed::JoinTimeout);
        m.socket_closed(SocketClosed::PerAddress);
        let mut out = String::new();
        m.render(&mut out);
        for (reason, n) in [("join_timeout", 2), ("rate", 0), ("per_address", 1)] {
            assert!(
                out.contains(&format!(
                    "switchyard_signalling_sockets_closed_total{{reason=\"{reason}\"}} {n}\n"
                )),
                "{out}"
            );
        }
    }
}
