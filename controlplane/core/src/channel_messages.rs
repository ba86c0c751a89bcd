//! Channel messages: a participant's `message` (any JSON) to one other participant of its
//! channel or to all of them, through signalling, for what needs no media path (chat, app
//! state, "raise hand"). Like peer-to-peer signals ([`crate::p2p`]) the server reads nothing
//! inside `data`, but bounds how big and how frequent messages are: a broadcast costs every
//! receiver's socket (and, in a cluster, a Redis publish), and receivers cannot refuse it.
//! Bulk or frequent data belongs on a data channel.

use std::time::Instant;

use serde_json::Value;

use crate::p2p::{Limits, Refusal, TokenBucket, check_relayed};

/// The most bytes of `data` (as JSON) one message may carry.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// A channel message's limits.
pub const MESSAGE: Limits = Limits {
    noun: "message",
    max_bytes: MAX_DATA_BYTES,
    verb: "sent",
};

/// The rules a message from `from` (to `to`, or everyone) must pass. Every attempt takes a
/// token from the connection's bucket for messages, refused or not.
pub fn check(
    from: &str,
    to: Option<&str>,
    data: &Value,
    bucket: &mut TokenBucket,
    now: Instant,
) -> Result<(), Refusal> {
    check_relayed(MESSAGE, from, to, data, bucket, now)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_are_checked_for_size_target_and_rate() {
        let now = Instant::now();
        let mut b = TokenBucket::for_signals(now);
        let small = json!({"text": "hello"});
        assert_eq!(check("p1", None, &small, &mut b, now), Ok(()));
        assert_eq!(check("p1", Some("p2"), &small, &mut b, now), Ok(()));
        assert_eq!(
            check("p1", Some("p1"), &small, &mut b, now),
            Err(Refusal::ToSelf(MESSAGE))
        );
        let exact = Value::String("x".repeat(MAX_DATA_BYTES - 2));
        assert_eq!(check("p1", None, &exact, &mut b, now), Ok(()));
        let over = Value::String("x".repeat(MAX_DATA_BYTES - 1));
        let refused = check("p1", None, &over, &mut b, now).unwrap_err();
        assert_eq!(refused, Refusal::TooLarge(MAX_DATA_BYTES + 1, MESSAGE));
        assert!(refused.reason().contains("16384"), "{}", refused.reason());
        while check("p1", None, &small, &mut b, now).is_ok() {}
        assert_eq!(
            check("p1", None, &small, &mut b, now),
            Err(Refusal::RateLimited)
        );
    }
}
