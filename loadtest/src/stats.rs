//! What the net thread counts, as cumulative totals it publishes once a second, and the
//! differences between two snapshots that reports and the capacity ramp are made of.

use std::time::Duration;

use crate::traffic;

/// Latency buckets: 100 µs wide up to 200 ms; slower packets land in the last one.
const BUCKET_US: u64 = 100;
const BUCKETS: usize = 2000;

/// A fixed-bucket latency histogram: cheap to record into and to subtract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let i = (latency.as_micros() as u64 / BUCKET_US).min(BUCKETS as u64 - 1) as usize;
        self.counts[i] += 1;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(((i as u64 + 1) * BUCKET_US) as f64 / 1000.0);
            }
        }
        None
    }

    /// Adds what `other` recorded.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// What was recorded since `earlier`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter())
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}

/// Cumulative counts since the net thread started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Seconds since the net threads started, when this snapshot was taken.
    pub at: f64,
    /// Which once-a-second snapshot this is (the first is 1), the same on every net thread.
    pub tick: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// RTP packets expected and received on subscriber transports (by SSRC and sequence).
    pub expected: u64,
    pub received: u64,
    /// Mean interarrival jitter over subscribed streams, in seconds (a level, not a count).
    pub jitter: f64,
    /// One-way latency of the sampled (decrypted and authenticated) packets.
    pub latency: Histogram,
    /// Packets from the server (sampled RTP, every RTCP) that failed SRTP authentication or
    /// did not parse once the client had its keys: a fault of the server's (must stay zero).
    pub auth_failures: u64,
    /// Packets the client had already accepted, or that came too far behind for its replay
    /// window: the server sent an SRTP index twice (must stay zero).
    pub replayed: u64,
    /// Packets that arrived before the client had its keys: the server finishes DTLS, and may
    /// send, one flight before the client does. Expected while joining, not a failure.
    pub before_keys: u64,
    /// Transports connected (ICE and DTLS done), and failed.
    pub connected: u64,
    pub failed: u64,
    /// Join times: from the start of signalling to the first media packet received
    /// (subscribers) or to DTLS done (publishers), in milliseconds.
    pub join_ms: Vec<f64>,
    /// CPU seconds each net thread has used, in thread order (a thread's own snapshot holds
    /// its one; `merge` appends the others').
    pub net_cpu: Vec<f64>,
    /// How late the most overdue media packet went out in the last second.
    pub send_lag: Duration,
    /// Simulcast subscribers by the layer they asked for (`traffic::SIMULCAST`'s order).
    pub layers: [LayerCount; traffic::SIMULCAST.len()],
    /// What MCU participants received of the mix.
    pub mix: MixCount,
}

impl Totals {
    /// Adds another net thread's snapshot: counts add up, the latest time and the worst send
    /// lag are kept, and jitter is averaged over the streams' packets received.
    pub fn merge(&mut self, other: &Totals) {
        let received = self.received + other.received;
        if received > 0 {
            self.jitter = (self.jitter * self.received as f64
                + other.jitter * other.received as f64)
                / received as f64;
        }
        self.at = self.at.max(other.at);
        self.tick = self.tick.max(other.tick);
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.expected += other.expected;
        self.received = received;
        self.latency.add(&other.latency);
        self.auth_failures += other.auth_failures;
        self.replayed += other.replayed;
        self.before_keys += other.before_keys;
        self.connected += other.connected;
        self.failed += other.failed;
        self.join_ms.extend_from_slice(&other.join_ms);
        self.net_cpu.extend_from_slice(&other.net_cpu);
        self.send_lag = self.send_lag.max(other.send_lag);
        for (a, b) in self.layers.iter_mut().zip(other.layers.iter()) {
            a.subscribers += b.subscribers;
            a.video_packets += b.video_packets;
        }
        self.mix.participants += other.mix.participants;
        self.mix.audio_packets += other.mix.audio_packets;
        self.mix.video_frames += other.mix.video_frames;
    }
}

/// MCU participants and the mix they received: audio packets and whole composite frames
/// (marker bits), to tell a mixer that falls behind its 20 ms and canvas clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MixCount {
    pub participants: u64,
    pub audio_packets: u64,
    pub video_frames: u64,
}

/// The mix each MCU participant received over an interval, on average.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MixRate {
    pub participants: u64,
    /// Mixed audio packets per second (50 at 20 ms).
    pub audio_pps_per_participant: f64,
    /// Composite frames per second (the canvas rate).
    pub video_fps_per_participant: f64,
}

/// Simulcast subscribers that asked for one layer, and the video they received.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerCount {
    /// Subscriber transports: one per subscription (a meeting participant has several).
    pub subscribers: u64,
    pub video_packets: u64,
}

/// What the subscribers that asked for one simulcast layer received over an interval: the
/// packet rate tells the layer (`traffic::SIMULCAST`'s shapes differ about twofold or more).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerRate {
    /// The layer's rid.
    pub rid: &'static str,
    /// The `maxHeight` they sent (none for the top layer).
    pub max_height: Option<u16>,
    /// Subscriber transports (one per subscription).
    pub subscribers: u64,
    /// Video packets/s each received, on average.
    pub video_pps_per_subscriber: f64,
    /// What the layer sends, for comparison.
    pub layer_pps: f64,
}

/// Rates and levels over an interval between two snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Interval {
    pub seconds: f64,
    pub packets_in_per_s: f64,
    pub packets_out_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    /// Fraction of expected packets that did not arrive.
    pub loss: f64,
    pub jitter_ms: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_samples: u64,
    /// Share of one core the busiest of the generator's net threads used.
    pub generator_net_cpu: f64,
    /// Simulcast subscribers, by the layer they asked for (none without simulcast).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRate>,
    /// MCU participants, what they received of the mix (none without them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixRate>,
}

impl Interval {
    pub fn between(a: &Totals, b: &Totals) -> Interval {
        let seconds = (b.at - a.at).max(1e-6);
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / seconds;
        let expected = b.expected.saturating_sub(a.expected);
        let received = b.received.saturating_sub(a.received);
        let latency = b.latency.since(&a.latency);
        Interval {
            seconds,
            packets_in_per_s: per_s(a.packets_in, b.packets_in),
            packets_out_per_s: per_s(a.packets_out, b.packets_out),
            bytes_in_per_s: per_s(a.bytes_in, b.bytes_in),
            bytes_out_per_s: per_s(a.bytes_out, b.bytes_out),
            loss: loss(expected, received),
            jitter_ms: b.jitter * 1000.0,
            latency_p50_ms: latency.quantile_ms(0.5),
            latency_p99_ms: latency.quantile_ms(0.99),
            latency_samples: latency.count(),
            generator_net_cpu: b
                .net_cpu
                .iter()
                .enumerate()
                .map(|(i, cpu)| (cpu - a.net_cpu.get(i).unwrap_or(&0.0)) / seconds)
                .fold(0.0, f64::max),
            layers: b
                .layers
                .iter()
                .zip(&a.layers)
                .zip(traffic::SIMULCAST)
                .enumerate()
                .filter(|(_, ((b, _), _))| b.subscribers > 0)
                .map(|(i, ((b, a), (rid, shape)))| LayerRate {
                    rid,
                    max_height: traffic::max_height(i),
                    subscribers: b.subscribers,
                    video_pps_per_subscriber: per_s(a.video_packets, b.video_packets)
                        / b.subscribers as f64,
                    layer_pps: shape.packets_per_second(),
                })
                .collect(),
            mix: (b.mix.participants > 0).then(|| {
                let n = b.mix.participants as f64;
                MixRate {
                    participants: b.mix.participants,
                    audio_pps_per_participant: per_s(a.mix.audio_packets, b.mix.audio_packets) / n,
                    video_fps_per_participant: per_s(a.mix.video_frames, b.mix.video_frames) / n,
                }
            }),
        }
    }
}

/// Lost share of `expected`; packets received twice or late never make it negative.
pub fn loss(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        expected.saturating_sub(received) as f64 / expected as f64
    }
}

/// The `q` quantile of unsorted values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_differences() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_micros(ms * 1000 - 50));
        }
        assert_eq!(h.quantile_ms(0.5), Some(50.0));
        assert_eq!(h.quantile_ms(0.99), Some(99.0));
        let before = h.clone();
        h.record(Duration::from_secs(5));
        let d = h.since(&before);
        assert_eq!(d.count(), 1);
        assert_eq!(d.quantile_ms(0.5), Some(200.0));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn interval_rates_and_loss() {
        let a = Totals::default();
        let b = Totals {
            at: 2.0,
            packets_in: 2000,
            expected: 1000,
            received: 990,
            net_cpu: vec![0.5],
            ..Default::default()
        };
        let i = Interval::between(&a, &b);
        assert_eq!(i.packets_in_per_s, 1000.0);
        assert!((i.loss - 0.01).abs() < 1e-9);
        assert_eq!(i.generator_net_cpu, 0.25);
        assert_eq!(loss(10, 12), 0.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert!(i.layers.is_empty());
    }

    #[test]
    fn two_net_threads_snapshots_merge_into_one() {
        let thread = |at, received, jitter, lag_ms, cpu| {
            let mut latency = Histogram::default();
            latency.record(Duration::from_millis(received / 100));
            Totals {
                at,
                packets_in: received,
                expected: received + 10,
                received,
                jitter,
                latency,
                connected: 1,
                join_ms: vec![at],
                net_cpu: vec![cpu],
                send_lag: Duration::from_millis(lag_ms),
                ..Default::default()
            }
        };
        let mut total = thread(2.0, 300, 0.004, 5, 1.0);
        total.merge(&thread(2.1, 100, 0.008, 9, 0.6));
        assert_eq!(total.at, 2.1);
        assert_eq!(
            (total.packets_in, total.expected, total.received),
            (400, 420, 400)
        );
        assert!((total.jitter - 0.005).abs() < 1e-12, "{}", total.jitter);
        assert_eq!(total.latency.count(), 2);
        assert_eq!((total.connected, total.join_ms.len()), (2, 2));
        assert_eq!(total.send_lag, Duration::from_millis(9));
        // The net CPU is the busiest thread's: 1.0 s of 2.1 s.
        assert_eq!(total.net_cpu, [1.0, 0.6]);
        let i = Interval::between(&Totals::default(), &total);
        assert!((i.generator_net_cpu - 1.0 / 2.1).abs() < 1e-9);
    }

    #[test]
    fn layer_rates_per_subscriber() {
        let count = |subscribers, video_packets| LayerCount {
            subscribers,
            video_packets,
        };
        let a = Totals {
            layers: [count(2, 100), count(0, 0), count(1, 0)],
            ..Default::default()
        };
        let b = Totals {
            at: 2.0,
            layers: [count(2, 220), count(0, 0), count(1, 375)],
            ..Default::default()
        };
        let layers = Interval::between(&a, &b).layers;
        let got: Vec<_> = layers
            .iter()
            .map(|l| {
                (
                    l.rid,
                    l.max_height,
                    l.subscribers,
                    l.video_pps_per_subscriber,
                )
            })
            .collect();
        assert_eq!(got, [("q", Some(180), 2, 30.0), ("f", None, 1, 187.5)]);
    }
}
