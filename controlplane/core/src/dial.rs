//! Calls out from signalling: a participant's `dial` places a phone call through the SIP
//! connector's trunks (see [`crate::phones`]), and the callee joins the participant's channel
//! once it answers, as the admin API's dial does. Calls cost money and reach people outside
//! the application, so a token allows them only where its claim for the channel says `dial`,
//! and one connection may place only a few in a row: a leaked token or a looping client cannot
//! run up a trunk's bill at the socket's frame rate.
//!
//! The session checks these rules before it hands the call to its
//! [`Channels`](crate::channels::Channels), which has the connector place it.

use std::time::Instant;

use crate::p2p::TokenBucket;
use crate::phones;
use crate::token::{Claims, TokenError};

/// Calls one connection may place at once after being quiet.
pub const BURST: f64 = 3.0;
/// Calls one connection may place per second, sustained: one every 5 s.
pub const RATE_PER_SECOND: f64 = 0.2;

/// The bucket for one signalling connection's calls out.
pub fn bucket(now: Instant) -> TokenBucket {
    TokenBucket::new(RATE_PER_SECOND, BURST, now)
}

/// Why a `dial` was refused before the connector saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token does not grant `dial` in the sender's channel.
    NotGranted(TokenError),
    /// Not 1 to [`phones::MAX_NUMBER`] of digits, `+`, `*` and `#`.
    BadNumber,
    RateLimited,
}

impl Refusal {
    /// The label in `switchyard_signalling_errors_total`.
    pub fn metric(&self) -> &'static str {
        match self {
            Refusal::NotGranted(_) => "unauthorized",
            Refusal::BadNumber => "bad_request",
            Refusal::RateLimited => "rate_limited",
        }
    }

    /// The `reason` of the `error` the sender gets. A bad number is not repeated: it may be
    /// as long as the socket's largest message.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NotGranted(e) => e.to_string(),
            Refusal::BadNumber => format!(
                "not a number to dial: 1 to {} of 0-9, +, * and #",
                phones::MAX_NUMBER
            ),
            Refusal::RateLimited => format!(
                "rate limited: at most {BURST} calls out in a row, then one every {} s",
                1.0 / RATE_PER_SECOND
            ),
        }
    }
}

/// The rules a `dial` of `number` by a participant of `channel` holding `claims` must pass.
/// Only a request that passes the others takes a token from `bucket`, and the session gives it
/// back should the connector then refuse the call: the limit is on calls placed, while the
/// socket's frame limit bounds how many requests a client may send.
pub fn check(
    claims: &Claims,
    channel: &str,
    number: &str,
    bucket: &mut TokenBucket,
    now: Instant,
) -> Result<(), Refusal> {
    claims.may_dial(channel).map_err(Refusal::NotGranted)?;
    if !phones::valid_number(number) {
        return Err(Refusal::BadNumber);
    }
    if !bucket.take(now) {
        return Err(Refusal::RateLimited);
    }
    Ok(())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::token::ChannelClaim;

    fn claims(dial: bool) -> Claims {
        let claim = ChannelClaim {
            id: "room".into(),
            publish: true,
            subscribe: true,
            dial,
        };
        Claims::new("app", "alice", claim, Duration::from_secs(60))
    }

    #[test]
    fn only_tokens_that_allow_it_may_dial() {
        let now = Instant::now();
        let mut bucket = bucket(now);
        let refused = check(&claims(false), "room", "1234", &mut bucket, now);
        assert_eq!(
            refused,
            Err(Refusal::NotGranted(TokenError::DialNotGranted(
                "room".into()
            )))
        );
        assert_eq!(refused.unwrap_err().metric(), "unauthorized");
        // The right is per channel: one granted elsewhere does not count.
        let elsewhere = check(&claims(true), "hall", "1234", &mut bucket, now);
        assert_eq!(
            elsewhere,
            Err(Refusal::NotGranted(TokenError::ChannelNotGranted(
                "hall".into()
            )))
        );
        assert_eq!(
            check(&claims(true), "room", "+1234", &mut bucket, now),
            Ok(())
        );
    }

    #[test]
    fn numbers_are_checked_and_not_echoed() {
        let now = Instant::now();
        let mut bucket = bucket(now);
        for bad in ["", "12 34", "sip:1@x", &"1".repeat(33)] {
            let refused = check(&claims(true), "room", bad, &mut bucket, now);
            assert_eq!(refused, Err(Refusal::BadNumber), "{bad:?}");
        }
        let reason = Refusal::BadNumber.reason();
        assert_eq!(reason, "not a number to dial: 1 to 32 of 0-9, +, * and #");
    }

    #[test]
    fn a_connection_places_a_few_calls_then_one_every_five_seconds() {
        let start = Instant::now();
        let mut bucket = bucket(start);
        let c = claims(true);
        for _ in 0..3 {
            assert_eq!(check(&c, "room", "1", &mut bucket, start), Ok(()));
        }
        assert_eq!(
            check(&c, "room", "1", &mut bucket, start),
            Err(Refusal::RateLimited)
        );
        // Refusals for other reasons take nothing.
        assert_eq!(
            check(&claims(false), "room", "1", &mut bucket, start).map_err(|r| r.metric()),
            Err("unauthorized")
        );
        // A call the connector refused is given back.
        bucket.give_back();
        assert_eq!(check(&c, "room", "1", &mut bucket, start), Ok(()));
        assert_eq!(
            check(&c, "room", "1", &mut bucket, start),
            Err(Refusal::RateLimited)
        );
        let later = start + Duration::from_secs(5);
        assert_eq!(check(&c, "room", "1", &mut bucket, later), Ok(()));
        assert_eq!(
            check(&c, "room", "1", &mut bucket, later),
            Err(Refusal::RateLimited)
        );
        assert_eq!(
            Refusal::RateLimited.reason(),
            "rate limited: at most 3 calls out in a row, then one every 5 s"
        );
    }
}
