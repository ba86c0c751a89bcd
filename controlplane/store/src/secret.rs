//! A secret kept in a record (a deployment's TURN secret). It goes to the processes that use
//! it in full, but a `{:?}` of a record, the audit log and the admin API's reads show only
//! [`MASKED`], so that it reaches no log and no operator's terminal.

use serde::{Deserialize, Serialize};

/// What a secret reads as wherever it is not used. Shorter than any valid secret, so a
/// masked value written back is never taken for a new secret.
pub const MASKED: &str = "****";

/// The fewest characters a TURN secret may have, as for `TURN:SECRET`: a REST credential is an
/// HMAC with it, so a short one can be guessed offline from one captured credential.
pub const MIN_SECRET_LEN: usize = 16;

/// A secret value. Serialized in full (the cluster API carries it to media servers); use
/// [`Secret::masked`] for anything shown to people.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the code that signs or checks with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The placeholder the admin API shows in its place.
    pub fn masked() -> Secret {
        Secret(MASKED.to_string())
    }

    /// Whether this is the placeholder, i.e. a client wrote back what it read.
    pub fn is_masked(&self) -> bool {
        self.0 == MASKED
    }

    /// Long enough and without whitespace (which a shell or an environment file would mangle).
    pub fn is_valid(&self) -> bool {
        self.0.chars().count() >= MIN_SECRET_LEN && !self.0.chars().any(char::is_whitespace)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASKED)
    }
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_masked_but_serialized_in_full() {
        let s = Secret::new("a-turn-secret-0123456789");
        assert_eq!(format!("{s:?}"), MASKED);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"a-turn-secret-0123456789\""
        );
        assert!(s.is_valid() && !s.is_masked());
        assert!(Secret::masked().is_masked() && !Secret::masked().is_valid());
        assert!(!Secret::new("short").is_valid());
        assert!(!Secret::new("has a space in it, so no").is_valid());
    }
}
