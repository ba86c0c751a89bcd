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
    /// Dials `number` through `trunk` (else the first enabled trunk that may terminate calls)
    /// and joins the call to `channel` of `application` (else the process's default one) when
    /// answered. Returns the call's id at once; the call goes on on its own.
    fn dial(&self, request: DialRequest<'_>) -> Result<String, DialRefusal>;
    /// Hangs up the call out `call` (an id [`Phones::dial`] returned) into `channel`: CANCEL
    /// while it rings, BYE once answered. `false` when no such call is going on, which is
    /// all a connector that cannot dial knows.
    fn hang_up(&self, _channel: &str, _call: &str) -> bool {
        false
    }
}

/// A call out an administrator (the admin API) or a participant (signalling's `dial`) asked for.
#[derive(Debug, Clone, Copy)]
pub struct DialRequest<'a> {
    pub channel: &'a str,
    pub number: &'a str,
    pub trunk: Option<&'a str>,
    pub caller_id: Option<&'a str>,
    pub application: Option<&'a str>,
}

/// Why a call out was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    /// The number, caller id or application is not acceptable (400).
    #[error("{0}")]
    Invalid(String),
    /// No enabled trunk that may terminate calls, or not the one named (404).
    #[error("{0}")]
    NoTrunk(String),
}

/// Whether `digits` may be sent: 1 to [`MAX_DIGITS`] of [`DTMF_DIGITS`] (lower-case a-d too).
pub fn valid_digits(digits: &str) -> bool {
    !digits.is_empty()
        && digits.len() <= MAX_DIGITS
        && digits
            .chars()
            .all(|c| DTMF_DIGITS.contains(c.to_ascii_uppercase()))
}

/// The most characters a number to dial may have.
pub const MAX_NUMBER: usize = 32;

/// Whether `number` may be dialled: 1 to [`MAX_NUMBER`] of digits, `+`, `*` and `#` (it goes
/// into a Request-URI's user part as it is).
pub fn valid_number(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= MAX_NUMBER
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || "+*#".contains(c))
}

#[cfg(test)]
mod tests {
    use super::{valid_digits, valid_number};

    #[test]
    fn numbers_are_checked() {
        assert!(valid_number("+4930123456"));
        assert!(valid_number("*21#"));
        assert!(!valid_number(""));
        assert!(!valid_number("12 34"));
        assert!(!valid_number("sip:1@x"));
        assert!(!valid_number(&"1".repeat(33)));
    }

    #[test]
    fn digits_are_checked() {
        assert!(valid_digits("0123456789*#ABCDabcd"));
        assert!(!valid_digits(""));
        assert!(!valid_digits("12x"));
        assert!(!valid_digits(&"1".repeat(33)));
    }
}
