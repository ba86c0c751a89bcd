//! DTMF, the keypad's digits, as phones send them: RFC 4733 telephone-events in RTP (what
//! nearly every SIP trunk and phone negotiates), and SIP INFO bodies for the few that signal
//! them out of band.
//!
//! An RFC 4733 event is many packets: one every packet interval while the key is held, all
//! with the RTP timestamp of the key's press and a growing duration, then the last one (the
//! end bit set) three times, since there is no retransmission. [`DtmfReceiver`] turns that
//! back into one digit per press; [`DtmfSender`] makes it from queued digits, one packet per
//! 20 ms tick of the caller's clock.

/// The digits in event-code order (RFC 4733 section 3.2): 0-9, then `*`, `#` and A-D.
const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The length of a telephone-event payload.
pub const PAYLOAD_LEN: usize = 4;

/// The event code of a DTMF digit (`a`-`d` as well as `A`-`D`); `None` for anything else.
pub fn event_code(digit: char) -> Option<u8> {
    let upper = digit.to_ascii_uppercase();
    DIGITS.iter().position(|&d| d == upper).map(|i| i as u8)
}

fn digit_of(code: u8) -> Option<char> {
    DIGITS.get(usize::from(code)).copied()
}

/// One telephone-event payload, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// `0`-`9`, `*`, `#` or `A`-`D`.
    pub digit: char,
    /// Set on the event's last packet (and its repeats).
    pub end: bool,
    /// The tone's power, 0 to 63 as -dBm0.
    pub volume: u8,
    /// How long the key has been held so far, in RTP clock units from the event's timestamp.
    pub duration: u16,
}

/// Reads a telephone-event payload. `None` for one shorter than 4 bytes or an event that is not
/// a DTMF digit (RFC 4733 also carries fax tones and line signals, which a conference ignores).
pub fn parse(payload: &[u8]) -> Option<DtmfEvent> {
    let [code, flags, high, low, ..] = *payload else {
        return None;
    };
    Some(DtmfEvent {
        digit: digit_of(code)?,
        end: flags & 0x80 != 0,
        volume: flags & 0x3F,
        duration: u16::from_be_bytes([high, low]),
    })
}

/// How many recent events' timestamps the receiver remembers, so that a late packet of one of
/// them is not taken for a new press.
const REMEMBERED: usize = 4;

/// The event the receiver reported last.
#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    digit: char,
    /// The longest duration seen so far.
    duration: u16,
    end: bool,
}

/// Turns a stream of telephone-event packets into digits, each press once.
///
/// A press is known by its RTP timestamp: the first packet seen with a new one reports the
/// digit, whichever of the event's packets that is (so loss or reordering of the first ones
/// still gives the digit once), and every later packet with that timestamp is ignored. The
/// same digit pressed twice has two timestamps, so it counts twice.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    current: Option<Current>,
    recent: [Option<u32>; REMEMBERED],
    next: usize,
}

impl DtmfReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one telephone-event packet (its RTP timestamp and payload); returns the digit when
    /// it is the first packet seen of a press. Anything unreadable is `None`.
    pub fn receive(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = parse(payload)?;
        if self.recent.contains(&Some(rtp_timestamp)) {
            if let Some(current) = self.current.as_mut()
                && current.timestamp == rtp_timestamp
            {
                current.duration = current.duration.max(event.duration);
                current.end |= event.end;
            }
            return None;
        }
        // A key held longer than 16 bits of duration comes as segments (RFC 4733 section
        // 2.5.1.3): each one a new timestamp where the last ended, without an end between.
        let continued = self.current.is_some_and(|c| {
            c.digit == event.digit
                && !c.end
                && c.duration > 0
                && rtp_timestamp.wrapping_sub(c.timestamp) == u32::from(c.duration)
        });
        self.recent[self.next] = Some(rtp_timestamp);
        self.next = (self.next + 1) % REMEMBERED;
        self.current = Some(Current {
            timestamp: rtp_timestamp,
            digit: event.digit,
            duration: event.duration,
            end: event.end,
        });
        (!continued).then_some(event.digit)
    }
}

/// One packet from [`DtmfSender::tick`]; its payload is in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// The first packet of an event: the caller sets the RTP marker bit and fixes the event's
    /// RTP timestamp (the one every packet of the event carries) at its clock now.
    pub start: bool,
    /// One of the event's three last packets.
    pub end: bool,
    /// The payload's length in the caller's buffer (always 4).
    pub payload_len: usize,
}

/// The caller's tick, and so the packet interval.
const TICK_MS: u32 = 20;
/// How long each digit sounds: 5 packets.
const TONE_TICKS: u32 = 100 / TICK_MS;
/// How many times the end packet goes out.
const END_REPEATS: u32 = 3;
/// The silence between two digits: 3 ticks.
const GAP_TICKS: u32 = 60 / TICK_MS;
/// The tone's power, -dBm0: the usual 10.
const VOLUME: u8 = 10;
/// The most digits waiting: more than any dial string.
const QUEUE: usize = 32;

#[derive(Debug, Clone, Copy)]
enum SenderState {
    Idle,
    /// Playing `code`: `sent` packets sent so far.
    Tone {
        code: u8,
        sent: u32,
    },
    /// Silence after a digit: `left` more ticks.
    Gap {
        left: u32,
    },
}

/// Sends queued digits as RFC 4733 events, sans-IO: the caller calls [`DtmfSender::tick`] every
/// 20 ms and sends what it returns as a telephone-event RTP packet.
///
/// Each digit is 100 ms of tone (5 packets, the last with the end bit), the end packet sent
/// three times, then 60 ms without packets before the next digit, timings every receiver
/// accepts.
#[derive(Debug)]
pub struct DtmfSender {
    /// One tick in RTP clock units.
    tick_duration: u32,
    queue: [u8; QUEUE],
    head: usize,
    len: usize,
    state: SenderState,
}

impl Default for DtmfSender {
    /// For the usual telephone-event/8000.
    fn default() -> Self {
        Self::new(8_000)
    }
}

impl DtmfSender {
    /// `clock_rate` is the telephone-event's RTP clock (the audio codec's: 8000, or 48 000 next
    /// to Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            // At most u32::MAX / 50: five ticks still fit.
            tick_duration: (u64::from(clock_rate) * u64::from(TICK_MS) / 1000) as u32,
            queue: [0; QUEUE],
            head: 0,
            len: 0,
            state: SenderState::Idle,
        }
    }

    /// Queues a digit (`0`-`9`, `*`, `#`, `A`-`D`, or `a`-`d`). False for any other character,
    /// or when 32 digits already wait.
    pub fn push(&mut self, digit: char) -> bool {
        let Some(code) = event_code(digit) else {
            return false;
        };
        if self.len == QUEUE {
            return false;
        }
        self.queue[(self.head + self.len) % QUEUE] = code;
        self.len += 1;
        true
    }

    /// Nothing playing, nothing queued, no gap to wait out.
    pub fn is_idle(&self) -> bool {
        self.len == 0 && matches!(self.state, SenderState::Idle)
    }

    /// Called every 20 ms: writes the next packet's payload into `out` and describes it, or
    /// `None` when there is nothing to send this tick.
    pub fn tick(&mut self, out: &mut [u8; PAYLOAD_LEN]) -> Option<DtmfPacket> {
        let (code, sent) = match self.state {
            SenderState::Gap { left } => {
                self.state = if left > 1 {
                    SenderState::Gap { left: left - 1 }
                } else {
                    SenderState::Idle
                };
                return None;
            }
            SenderState::Tone { code, sent } => (code, sent),
            SenderState::Idle => {
                if self.len == 0 {
                    return None;
                }
                let code = self.queue[self.head];
                self.head = (self.head + 1) % QUEUE;
                self.len -= 1;
                (code, 0)
            }
        };
        let sent = sent + 1;
        let end = sent >= TONE_TICKS;
        let duration = sent.min(TONE_TICKS) * self.tick_duration;
        self.state = if sent == TONE_TICKS + END_REPEATS - 1 {
            SenderState::Gap { left: GAP_TICKS }
        } else {
            SenderState::Tone { code, sent }
        };
        let [high, low] = u16::try_from(duration).unwrap_or(u16::MAX).to_be_bytes();
        *out = [code, (u8::from(end) << 7) | VOLUME, high, low];
        Some(DtmfPacket {
            start: sent == 1,
            end,
            payload_len: PAYLOAD_LEN,
        })
    }
}

/// Reads the digit from a SIP INFO body: `application/dtmf-relay` (`Signal=5` on one of its
/// lines, beside `Duration=160`) or `application/dtmf` (the bare digit). The signal is a digit
/// character or, as some gateways send it, its event code (`10` for `*`, `11` for `#`).
pub fn parse_dtmf_relay(body: &str) -> Option<char> {
    let body = body.trim();
    if !body.contains('=') {
        return signal(body);
    }
    body.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("signal") {
            signal(value.trim())
        } else {
            None
        }
    })
}

fn signal(token: &str) -> Option<char> {
    let mut chars = token.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => event_code(c).and_then(digit_of),
        _ => token.parse::<u8>().ok().and_then(digit_of),
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs the sender until idle, stamping each event with the tick it started at (as a caller
    /// with an 8 kHz clock would), and returns the packets as (timestamp, marker, payload).
    fn drain(sender: &mut DtmfSender) -> Vec<(u32, bool, [u8; 4])> {
        let mut packets = Vec::new();
        let mut timestamp = 0;
        let mut tick = 0u32;
        while !sender.is_idle() {
            let mut out = [0; 4];
            if let Some(p) = sender.tick(&mut out) {
                assert_eq!(p.payload_len, 4);
                if p.start {
                    timestamp = tick * 160;
                }
                assert_eq!(parse(&out).unwrap().end, p.end);
                packets.push((timestamp, p.start, out));
            }
            tick += 1;
            assert!(tick < 10_000);
        }
        packets
    }

    #[test]
    fn parse_reads_the_fields() {
        let e = parse(&[11, 0x80 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            DtmfEvent {
                digit: '#',
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(parse(&[10, 0x0A, 0, 160]).unwrap().digit, '*');
        assert_eq!(parse(&[15, 0, 0, 0]).unwrap().digit, 'D');
        assert!(!parse(&[1, 0x3F, 0, 0]).unwrap().end);
        assert_eq!(parse(&[16, 0, 0, 0]), None, "flash is not a digit");
        assert_eq!(parse(&[1, 0, 0]), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn all_sixteen_digits_round_trip_in_order() {
        let mut sender = DtmfSender::default();
        for d in "0123456789*#ABCD".chars() {
            assert!(sender.push(d));
        }
        let packets = drain(&mut sender);
        // 7 packets per digit: 4 while held, the end 3 times.
        assert_eq!(packets.len(), 16 * 7);
        let mut receiver = DtmfReceiver::new();
        let digits: String = packets
            .iter()
            .filter_map(|(ts, _, payload)| receiver.receive(*ts, payload))
            .collect();
        assert_eq!(digits, "0123456789*#ABCD");
    }

    #[test]
    fn sender_timing() {
        let mut sender = DtmfSender::new(8_000);
        assert!(sender.push('5') && sender.push('a'));
        assert!(!sender.push('x') && !sender.push('E') && !sender.push(' '));
        let mut out = [0; 4];
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(
                sender
                    .tick(&mut out)
                    .map(|p| (p.start, p.end, parse(&out).unwrap())),
            );
        }
        let durations: Vec<Option<u16>> =
            seen.iter().map(|s| s.map(|(.., e)| e.duration)).collect();
        let tone = [160, 320, 480, 640, 800, 800, 800].map(Some);
        assert_eq!(durations[..7], tone);
        assert_eq!(durations[7..10], [None; 3], "60 ms gap");
        assert_eq!(durations[10..17], tone);
        assert!(durations[17..].iter().all(Option::is_none));
        let flags: Vec<(bool, bool)> = seen[..7].iter().flatten().map(|s| (s.0, s.1)).collect();
        assert_eq!(
            flags,
            [
                (true, false),
                (false, false),
                (false, false),
                (false, false),
                (false, true),
                (false, true),
                (false, true)
            ]
        );
        assert_eq!(seen[0].unwrap().2.digit, '5');
        assert_eq!(seen[10].unwrap().2.digit, 'A');
        assert_eq!(seen[0].unwrap().2.volume, 10);
        assert!(sender.is_idle());

        // At 48 kHz a tick is 960 units.
        let mut sender = DtmfSender::new(48_000);
        sender.push('1');
        sender.tick(&mut out);
        assert_eq!(parse(&out).unwrap().duration, 960);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut sender = DtmfSender::default();
        for _ in 0..QUEUE {
            assert!(sender.push('1'));
        }
        assert!(!sender.push('1'));
        assert_eq!(drain(&mut sender).len(), QUEUE * 7);
    }

    #[test]
    fn three_end_packets_count_once() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.receive(1000, &[7, 10, 0, 160]), Some('7'));
        assert_eq!(r.receive(1000, &[7, 10, 0, 160]), None);
        for _ in 0..3 {
            assert_eq!(r.receive(1000, &[7, 0x80 | 10, 3, 32]), None);
        }
    }

    #[test]
    fn a_repeated_digit_counts_twice() {
        let mut sender = DtmfSender::default();
        sender.push('5');
        sender.push('5');
        let packets = drain(&mut sender);
        let mut r = DtmfReceiver::new();
        let digits: String = packets
            .iter()
            .filter_map(|(ts, _, p)| r.receive(*ts, p))
            .collect();
        assert_eq!(digits, "55");
    }

    #[test]
    fn loss_and_reordering_still_give_the_digit_once() {
        let mut sender = DtmfSender::default();
        sender.push('9');
        sender.push('3');
        let packets = drain(&mut sender);
        let mut r = DtmfReceiver::new();
        // The first two packets of '9' lost; its end arrives after '3' began.
        let late = packets[6];
        let mut order: Vec<_> = packets[2..6].to_vec();
        order.extend_from_slice(&packets[7..9]);
        order.push(late);
        order.extend_from_slice(&packets[9..]);
        let digits: String = order
            .iter()
            .filter_map(|(ts, _, p)| r.receive(*ts, p))
            .collect();
        assert_eq!(digits, "93");
        // Only end packets of a press, and only the last of them: still one digit.
        let mut r = DtmfReceiver::new();
        assert_eq!(r.receive(8000, &packets[13].2), Some('3'));
        assert_eq!(r.receive(8000, &packets[11].2), None);
    }

    #[test]
    fn a_long_press_in_segments_counts_once() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.receive(500, &[1, 10, 0x80, 0]), Some('1'));
        assert_eq!(r.receive(500, &[1, 10, 0xFF, 0xFF]), None);
        // The next segment starts where the first ended.
        assert_eq!(r.receive(500 + 0xFFFF, &[1, 10, 0, 160]), None);
        assert_eq!(r.receive(500 + 0xFFFF, &[1, 0x80 | 10, 1, 0]), None);
        // A new press after the end is a new digit.
        assert_eq!(r.receive(500 + 0xFFFF + 256, &[1, 10, 0, 160]), Some('1'));
    }

    #[test]
    fn sip_info_bodies() {
        assert_eq!(parse_dtmf_relay("Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(parse_dtmf_relay("Signal= #\nDuration= 250"), Some('#'));
        assert_eq!(parse_dtmf_relay("Duration=160\r\nsignal=*\r\n"), Some('*'));
        assert_eq!(parse_dtmf_relay("Signal=11\r\nDuration=160"), Some('#'));
        assert_eq!(parse_dtmf_relay("Signal=d"), Some('D'));
        assert_eq!(parse_dtmf_relay("7"), Some('7'));
        assert_eq!(parse_dtmf_relay(" 10\r\n"), Some('*'));
        assert_eq!(parse_dtmf_relay("Signal=16"), None);
        assert_eq!(parse_dtmf_relay("Signal=x"), None);
        assert_eq!(parse_dtmf_relay("Duration=160"), None);
        assert_eq!(parse_dtmf_relay("55"), None);
        assert_eq!(parse_dtmf_relay(""), None);
        assert_eq!(parse_dtmf_relay("=\n=="), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(
            packets in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8)), 0..64),
            body in ".*",
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut r = DtmfReceiver::new();
            for (ts, payload) in &packets {
                let digit = r.receive(*ts, payload);
                prop_assert!(digit.is_none() || parse(payload).is_some());
            }
            let _ = parse(&bytes);
            let _ = parse_dtmf_relay(&body);
            let _ = parse_dtmf_relay(&String::from_utf8_lossy(&bytes));
        }
    }
}
