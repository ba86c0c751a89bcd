//! Peer-to-peer signalling: a participant's `signal` is relayed as it is to another participant
//! of the same channel, so that two clients can negotiate a direct peer connection whose media
//! never reaches a media server. The server reads nothing inside `data`; what it does bound is
//! how much and how often one connection may relay, because each relayed message costs the
//! receiver's socket (and, in a cluster, a Redis publish) and the receiver cannot refuse it.
//!
//! The session checks these rules before it hands a signal to its [`Channels`], which checks the
//! target (in the sender's channel, able to receive) and delivers.
//!
//! [`Channels`]: crate::channels::Channels

use std::io;
use std::time::Instant;

use serde_json::Value;

/// The most bytes of `data` (as JSON) one signal may carry: an SDP with many m-lines fits many
/// times over, while a flood of them stays small next to the socket's message limit.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Signals one connection may send per second, sustained. Trickle ICE sends a few dozen
/// candidates at the start of a connection; a page with several peers needs a little more.
pub const RATE_PER_SECOND: f64 = 50.0;
/// Signals one connection may send at once after being quiet.
pub const BURST: f64 = 100.0;

/// A token bucket: `burst` tokens, refilled at `rate` per second; each message takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            rate,
            burst,
            last: now,
        }
    }

    /// The bucket for one signalling connection's signals.
    pub fn for_signals(now: Instant) -> TokenBucket {
        TokenBucket::new(RATE_PER_SECOND, BURST, now)
    }

    /// Takes a token if there is one. `now` before the last call (it cannot happen with a
    /// monotonic clock) refills nothing.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Returns a token taken for something that then did not happen (never above the burst).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// The limits of one kind of client message the server relays without reading it: a
/// peer-to-peer `signal` ([`SIGNAL`]) or a channel `message` (`crate::channel_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// What the sender's errors call it.
    pub noun: &'static str,
    /// The most bytes of `data` as JSON, and what the server does with what fits.
    pub max_bytes: usize,
    pub verb: &'static str,
}

/// A peer-to-peer signal's limits.
pub const SIGNAL: Limits = Limits {
    noun: "signal",
    max_bytes: MAX_DATA_BYTES,
    verb: "relayed",
};

/// Why a relayed message was refused before its target was even looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    RateLimited,
    /// `data` is this many bytes as JSON.
    TooLarge(usize, Limits),
    ToSelf(Limits),
}

impl Refusal {
    /// The label in `switchyard_signals_refused_total` and `switchyard_signalling_errors_total`.
    pub fn metric(&self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::TooLarge(..) => "too_large",
            Refusal::ToSelf(_) => "bad_request",
        }
    }

    /// The `reason` of the `error` the sender gets.
    pub fn reason(&self) -> String {
        match self {
            Refusal::RateLimited => "rate limited".into(),
            Refusal::TooLarge(n, l) => format!(
                "{} data is {n} bytes as JSON; at most {} are {}",
                l.noun, l.max_bytes, l.verb
            ),
            Refusal::ToSelf(l) => format!("a {} must go to another participant", l.noun),
        }
    }
}

/// The rules a signal from `from` to `to` must pass before it is relayed.
pub fn check(
    from: &str,
    to: &str,
    data: &Value,
    bucket: &mut TokenBucket,
    now: Instant,
) -> Result<(), Refusal> {
    check_relayed(SIGNAL, from, Some(to), data, bucket, now)
}

/// The rules a relayed message of kind `limits` from `from` (to `to`, or everyone) must pass.
/// Every attempt takes a token, refused or not, so that a client cannot flood the server with
/// messages it knows will be refused either.
pub fn check_relayed(
    limits: Limits,
    from: &str,
    to: Option<&str>,
    data: &Value,
    bucket: &mut TokenBucket,
    now: Instant,
) -> Result<(), Refusal> {
    if !bucket.take(now) {
        return Err(Refusal::RateLimited);
    }
    let size = json_size(data);
    if size > limits.max_bytes {
        return Err(Refusal::TooLarge(size, limits));
    }
    if to == Some(from) {
        return Err(Refusal::ToSelf(limits));
    }
    Ok(())
}

/// How many bytes `value` takes as compact JSON, as the receiver gets it. Counted rather than
/// taken from the message it came in: re-encoding may lengthen numbers (`1e2` becomes `100.0`).
pub fn json_size(value: &Value) -> usize {
    let mut count = Count(0);
    // Writing to a counter fails only if a map had non-string keys, which a parsed Value cannot.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// A writer that only counts.
struct Count(usize);

impl io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::for_signals(t0);
        let burst = (0..200).filter(|_| b.take(t0)).count();
        assert_eq!(burst, BURST as usize, "a full bucket, then nothing");
        // 100 ms refills 5 tokens at 50/s.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| b.take(t1)).count(), 5);
        // A long quiet time refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..500).filter(|_| b.take(t2)).count(), BURST as usize);
        // Sustained at the rate, every message passes.
        let mut t = t2;
        for i in 0..100 {
            t += Duration::from_millis(20);
            assert!(b.take(t), "message {i} at 50/s");
        }
        // A clock that goes back refills nothing and breaks nothing.
        assert!(!b.take(t - Duration::from_secs(1)));
    }

    #[test]
    fn signals_are_checked_for_rate_size_and_target() {
        let now = Instant::now();
        let mut b = TokenBucket::for_signals(now);
        let small = json!({"type": "offer", "sdp": "v=0\r\n"});
        assert_eq!(check("p1", "p2", &small, &mut b, now), Ok(()));
        assert_eq!(
            check("p1", "p1", &small, &mut b, now),
            Err(Refusal::ToSelf(SIGNAL))
        );

        let exact = Value::String("x".repeat(MAX_DATA_BYTES - 2));
        assert_eq!(json_size(&exact), MAX_DATA_BYTES);
        assert_eq!(check("p1", "p2", &exact, &mut b, now), Ok(()));
        let over = Value::String("x".repeat(MAX_DATA_BYTES - 1));
        let refused = check("p1", "p2", &over, &mut b, now).unwrap_err();
        assert_eq!(refused, Refusal::TooLarge(MAX_DATA_BYTES + 1, SIGNAL));
        assert_eq!(refused.metric(), "too_large");
        assert!(refused.reason().contains("65536"), "{}", refused.reason());

        // Refused signals used tokens too: 4 so far, 96 left.
        let passed = (0..200)
            .filter(|_| check("p1", "p2", &small, &mut b, now).is_ok())
            .count();
        assert_eq!(passed, BURST as usize - 4);
        let limited = check("p1", "p2", &small, &mut b, now).unwrap_err();
        assert_eq!(limited, Refusal::RateLimited);
        assert_eq!(
            (limited.metric(), limited.reason().as_str()),
            ("rate_limited", "rate limited")
        );
    }

    #[test]
    fn sizes_are_of_the_json_the_receiver_gets() {
        assert_eq!(json_size(&json!(null)), 4);
        assert_eq!(json_size(&json!({"a": [1, "é"]})), r#"{"a":[1,"é"]}"#.len());
        let parsed: Value = serde_json::from_str("1e2").unwrap();
        assert_eq!(json_size(&parsed), "100.0".len());
    }
}
