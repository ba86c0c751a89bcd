//! Resuming a participant after its signalling socket dropped (a gateway died, the network
//! changed): `joined` hands the client a key, and a later `join` that presents it with the
//! participant id continues as that participant, on any gateway.
//!
//! The key is an HMAC-SHA256 over the application, channel, participant and user, keyed with
//! the application's secret, so every gateway of a cluster can check it with what it already
//! has (the applications from the configuration store) and nothing is stored per participant.
//! It proves the client was given that participant; the token, checked as on any join, says it
//! may still be in the channel. A rotated secret keeps resuming working while the old one is
//! accepted.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::token::{Applications, Claims};

/// Fields are separated by a byte no id contains, so no two different tuples hash alike.
fn message(claims: &Claims, channel: &str, participant: &str) -> Vec<u8> {
    [
        "switchyard-resume",
        &claims.application_id,
        channel,
        participant,
        &claims.user_id,
    ]
    .join("\0")
    .into_bytes()
}

/// The key for `participant` in `channel`, signed with the application's first secret; empty
/// when the application has none (then nothing can be resumed, and the SDK joins afresh).
pub fn key(
    applications: &Applications,
    claims: &Claims,
    channel: &str,
    participant: &str,
) -> String {
    let Some(secret) = applications
        .secrets(&claims.application_id)
        .into_iter()
        .next()
    else {
        return String::new();
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &message(claims, channel, participant));
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// Whether `key` was made by [`key`] for these claims, channel and participant with any of the
/// application's accepted secrets (compared in constant time).
pub fn verify(
    applications: &Applications,
    claims: &Claims,
    channel: &str,
    participant: &str,
    key: &str,
) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(key) else {
        return false;
    };
    let message = message(claims, channel, participant);
    applications
        .secrets(&claims.application_id)
        .iter()
        .any(|secret| {
            let k = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            hmac::verify(&k, &message, &tag).is_ok()
        })
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::ChannelClaim;

    fn claims(user: &str) -> Claims {
        Claims::new(
            "app",
            user,
            ChannelClaim {
                id: "room".into(),
                publish: true,
                subscribe: true,
                dial: false,
            },
            std::time::Duration::from_secs(60),
        )
    }

    #[test]
    fn a_key_resumes_only_what_it_was_made_for() {
        let apps = Applications::default();
        apps.add("app", "s1");
        let alice = claims("alice");
        let k = key(&apps, &alice, "room", "p1");
        assert!(verify(&apps, &alice, "room", "p1", &k));
        assert!(
            !verify(&apps, &alice, "room", "p2", &k),
            "another participant"
        );
        assert!(!verify(&apps, &alice, "hall", "p1", &k), "another channel");
        assert!(
            !verify(&apps, &claims("bob"), "room", "p1", &k),
            "another user"
        );
        assert!(!verify(&apps, &alice, "room", "p1", "not base64!"));
        assert!(!verify(&apps, &alice, "room", "p1", ""));
    }

    #[test]
    fn a_key_outlives_a_secret_rotation_while_the_old_secret_is_accepted() {
        let apps = Applications::default();
        apps.add("app", "old");
        let alice = claims("alice");
        let k = key(&apps, &alice, "room", "p1");
        apps.replace([("app".to_string(), vec!["new".into(), "old".into()])].into());
        assert!(verify(&apps, &alice, "room", "p1", &k));
        apps.replace([("app".to_string(), vec!["new".into()])].into());
        assert!(!verify(&apps, &alice, "room", "p1", &k));
        assert!(key(&Applications::default(), &alice, "room", "p1").is_empty());
    }
}
