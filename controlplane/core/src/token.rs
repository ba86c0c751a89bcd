//! Client tokens: JWTs (HS256) signed with an application's shared secret, carrying who the
//! client is and what it may do in which channels.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Rights in one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelClaim {
    pub id: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    /// May place phone calls out into the channel (signalling's `dial`, through the SIP
    /// connector's trunks). Off unless granted: calls cost money and reach people outside the
    /// application. Tokens without it (all older ones) never allow it.
    #[serde(default)]
    pub dial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub application_id: String,
    pub user_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub client_id: String,
    pub channels: Vec<ChannelClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

impl Claims {
    /// Claims for one channel, valid from now for `ttl`.
    pub fn new(
        application_id: &str,
        user_id: &str,
        channel: ChannelClaim,
        ttl: Duration,
    ) -> Claims {
        let now = unix_now();
        Claims {
            application_id: application_id.into(),
            user_id: user_id.into(),
            device_id: format!("device-{:08x}", rand::random::<u32>()),
            client_id: format!("client-{:08x}", rand::random::<u32>()),
            channels: vec![channel],
            region: None,
            iat: now,
            exp: now + ttl.as_secs(),
        }
    }

    /// The rights this token grants in `channel`.
    pub fn channel(&self, channel: &str) -> Result<&ChannelClaim, TokenError> {
        self.channels
            .iter()
            .find(|c| c.id == channel)
            .ok_or_else(|| TokenError::ChannelNotGranted(channel.to_string()))
    }

    pub fn may_publish(&self, channel: &str) -> Result<(), TokenError> {
        if self.channel(channel)?.publish {
            Ok(())
        } else {
            Err(TokenError::PublishNotGranted(channel.to_string()))
        }
    }

    pub fn may_subscribe(&self, channel: &str) -> Result<(), TokenError> {
        if self.channel(channel)?.subscribe {
            Ok(())
        } else {
            Err(TokenError::SubscribeNotGranted(channel.to_string()))
        }
    }

    pub fn may_dial(&self, channel: &str) -> Result<(), TokenError> {
        if self.channel(channel)?.dial {
            Ok(())
        } else {
            Err(TokenError::DialNotGranted(channel.to_string()))
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
    #[error("unknown application {0:?}")]
    UnknownApplication(String),
    #[error("token does not grant channel {0:?}")]
    ChannelNotGranted(String),
    #[error("token does not allow publishing in channel {0:?}")]
    PublishNotGranted(String),
    #[error("token does not allow subscribing in channel {0:?}")]
    SubscribeNotGranted(String),
    #[error("token does not allow dialling out from channel {0:?}")]
    DialNotGranted(String),
    #[error("could not sign the token: {0}")]
    Signing(String),
}

/// Signs `claims` with `secret`.
pub fn issue(claims: &Claims, secret: &str) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

/// The applications this server accepts tokens for, each with its valid secrets (two during a
/// rotation). Clones share one table, so a refresh from the configuration store reaches every
/// handler at once.
#[derive(Debug, Clone, Default)]
pub struct Applications {
    secrets: Arc<RwLock<HashMap<String, Vec<String>>>>,
}

impl Applications {
    pub fn add(&self, id: &str, secret: &str) {
        self.write()
            .entry(id.to_string())
            .or_default()
            .push(secret.to_string());
    }

    /// The application's accepted secrets, in the order the store lists them.
    pub fn secrets(&self, id: &str) -> Vec<String> {
        self.secrets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces the whole table (application id → its valid secrets).
    pub fn replace(&self, table: HashMap<String, Vec<String>>) {
        *self.write() = table;
    }

    // A panic while holding the lock cannot leave the table half-written (writers assign whole
    // entries), so a poisoned lock is still good to use.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<String>>> {
        self.secrets.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks the token's signature against its application's secrets, and its expiry.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        // The claims say which application's secret to check the signature with.
        let unverified =
            jsonwebtoken::dangerous::insecure_decode::<Claims>(token).map_err(describe)?;
        let app = &unverified.claims.application_id;
        let secrets = self
            .secrets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app)
            .cloned()
            .ok_or_else(|| TokenError::UnknownApplication(app.clone()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp"]);
        let mut last = TokenError::BadSignature;
        for secret in &secrets {
            match jsonwebtoken::decode::<Claims>(
                token,
                &DecodingKey::from_secret(secret.as_bytes()),
                &validation,
            ) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = describe(e),
            }
        }
        Err(last)
    }
}

fn describe(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => {
            TokenError::Malformed("only HS256 tokens are accepted".into())
        }
        _ => TokenError::Malformed(e.to_string()),
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn claim(publish: bool, subscribe: bool) -> ChannelClaim {
        ChannelClaim {
            id: "room".into(),
            publish,
            subscribe,
            dial: false,
        }
    }

    fn apps() -> Applications {
        let a = Applications::default();
        a.add("app", "old-secret");
        a.add("app", "new-secret");
        a
    }

    #[test]
    fn round_trip_with_either_secret() {
        let claims = Claims::new("app", "alice", claim(true, false), Duration::from_secs(60));
        for secret in ["old-secret", "new-secret"] {
            let token = issue(&claims, secret).unwrap();
            let got = apps().validate(&token).unwrap();
            assert_eq!(got, claims);
            assert!(got.may_publish("room").is_ok());
            assert_eq!(
                got.may_subscribe("room"),
                Err(TokenError::SubscribeNotGranted("room".into()))
            );
            assert_eq!(
                got.may_publish("other"),
                Err(TokenError::ChannelNotGranted("other".into()))
            );
        }
    }

    #[test]
    fn dialling_is_granted_only_when_claimed() {
        let mut claims = Claims::new("app", "alice", claim(true, true), Duration::from_secs(60));
        assert_eq!(
            claims.may_dial("room"),
            Err(TokenError::DialNotGranted("room".into()))
        );
        claims.channels[0].dial = true;
        let got = apps()
            .validate(&issue(&claims, "new-secret").unwrap())
            .unwrap();
        assert!(got.may_dial("room").is_ok());
        assert_eq!(
            got.may_dial("other"),
            Err(TokenError::ChannelNotGranted("other".into()))
        );
        // A claim from before `dial` existed still reads, and allows no dialling.
        let old: ChannelClaim =
            serde_json::from_str(r#"{"id":"room","publish":true,"subscribe":true}"#).unwrap();
        assert_eq!(old, claim(true, true));
    }

    #[test]
    fn rejections_say_why() {
        let claims = Claims::new("app", "alice", claim(true, true), Duration::from_secs(60));
        assert_eq!(
            apps().validate(&issue(&claims, "forged").unwrap()),
            Err(TokenError::BadSignature)
        );
        let mut expired = claims.clone();
        expired.exp = unix_now() - 3600;
        assert_eq!(
            apps().validate(&issue(&expired, "new-secret").unwrap()),
            Err(TokenError::Expired)
        );
        let mut stranger = claims;
        stranger.application_id = "nobody".into();
        assert_eq!(
            apps().validate(&issue(&stranger, "new-secret").unwrap()),
            Err(TokenError::UnknownApplication("nobody".into()))
        );
        for junk in ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.sig"] {
            assert!(
                matches!(apps().validate(junk), Err(TokenError::Malformed(_))),
                "{junk}"
            );
        }
    }
}
