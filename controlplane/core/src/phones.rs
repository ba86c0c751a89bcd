//! Phone calls in channels (the SIP connector's), as signalling sees them: a caller's key
//! presses go to the channel's participants as `dtmf` events, and participants' `dtmf`
//! requests are played to the callers. The connector itself lives in the `switchyard-sip`
//! crate; this is the one thing the control plane needs of it.

/// The digits a `dtmf` request may carry: RFC 4733's sixteen events.
pub const DTMF_DIGITS: &str = "0123456789*#ABCD";
/// The most digits one request may carry (a dial string, not a stream).
pub const MAX_DIGITS: usize = 32;

/// This process's phone calls.
pub trait Phones: Send + Sync {
    /// Plays `digits` to the phone calls in `channel`, or to the one whose caller is `to`
    /// (its user, `sip:<number>`); returns how many calls took them.
    fn send_digits(&self, channel: &str, to: Option<&str>, digits: &str) -> usize;
    /// The connector's counters as `(name, help, value)`, shown as `switchyard_sip_<name>`
    /// (a counter when the name ends in `_total`, else a gauge).
    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)>;
}

/// Whether `digits` may be sent: 1 to [`MAX_DIGITS`] of [`DTMF_DIGITS`] (lower-case a-d too).
pub fn valid_digits(digits: &str) -> bool {
    !digits.is_empty()
        && digits.len() <= MAX_DIGITS
        && digits
            .chars()
            .all(|c| DTMF_DIGITS.contains(c.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::valid_digits;

    #[test]
    fn digits_are_checked() {
        assert!(valid_digits("0123456789*#ABCDabcd"));
        assert!(!valid_digits(""));
        assert!(!valid_digits("12x"));
        assert!(!valid_digits(&"1".repeat(33)));
    }
}
