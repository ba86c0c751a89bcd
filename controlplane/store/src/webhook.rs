//! An application's webhooks: the URLs its events are posted to, and the checks a webhook
//! passes before it is stored. The events themselves are the control plane's
//! (`switchyard_controlplane::webhooks`); their names are listed here so that a webhook can
//! only ask for events that exist.

use serde::{Deserialize, Serialize};
use url::Url;

use super::records::ConfigError;

/// The event types a webhook may ask for, LiveSwitch's names for the lifecycles Switchyard
/// has.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "channel.activated",
    "channel.deactivated",
    "client.joined",
    "client.left",
    "connection.connected",
    "connection.closed",
    "recording.started",
    "recording.stopped",
    "recording.mixed",
];

/// Where one application's events are posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Optional in a request body: the admin API takes it from the path.
    #[serde(default)]
    pub application_id: String,
    /// Names the webhook within its application: a `PUT` with the same name replaces it.
    /// Optional in a request body: the URL then names it.
    #[serde(default)]
    pub name: String,
    /// `http://` or `https://`, without a user name or password (the receiver checks the
    /// body's signature instead).
    pub url: String,
    /// The event types posted (see [`WEBHOOK_EVENTS`]); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

impl Webhook {
    /// Checks the webhook, names it after its URL when it has no name, and drops repeated
    /// event types.
    pub fn normalize(&mut self) -> Result<(), ConfigError> {
        if self.application_id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a webhook's application id",
            });
        }
        if self.name.trim().is_empty() {
            self.name = self.url.clone();
        }
        self.target()?;
        for event in &self.events {
            if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                return Err(ConfigError::UnknownEvent {
                    webhook: self.name.clone(),
                    event: event.clone(),
                });
            }
        }
        let mut seen = Vec::with_capacity(self.events.len());
        self.events.retain(|e| {
            let first = !seen.contains(e);
            seen.push(e.clone());
            first
        });
        Ok(())
    }

    /// The URL, parsed: an `http` or `https` URL with a host and no credentials.
    pub fn target(&self) -> Result<Url, ConfigError> {
        let bad = |why: &'static str| ConfigError::WebhookUrl {
            url: self.url.clone(),
            why,
        };
        let url = Url::parse(self.url.trim()).map_err(|_| bad("it is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("it must start with http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "it must not hold a user name or password; the receiver checks \
                 X-ApplicationSignature instead",
            ));
        }
        Ok(url)
    }

    /// Whether events of type `kind` go to this webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Webhook {
        Webhook {
            application_id: "app".into(),
            name: String::new(),
            url: url.into(),
            events: vec![],
        }
    }

    #[test]
    fn urls_are_http_or_https_with_a_host_and_no_credentials() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com/switchyard?key=1",
            "http://[::1]:9000/",
        ] {
            let mut h = hook(good);
            h.normalize().unwrap();
            assert_eq!(h.name, good, "named after its URL");
        }
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://example.com/",
            "file:///tmp/x",
            "https://user:pass@example.com/",
            "http://",
        ] {
            let e = hook(bad).normalize().unwrap_err();
            assert!(matches!(e, ConfigError::WebhookUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn events_must_exist_and_empty_means_all() {
        let mut h = hook("https://example.com/");
        assert!(h.wants("client.joined"));
        h.events = vec![
            "client.joined".into(),
            "recording.mixed".into(),
            "client.joined".into(),
        ];
        h.normalize().unwrap();
        assert_eq!(h.events, ["client.joined", "recording.mixed"]);
        assert!(h.wants("recording.mixed") && !h.wants("client.left"));
        h.events = vec!["client.kicked".into()];
        let e = h.normalize().unwrap_err();
        assert!(e.to_string().contains("client.kicked"), "{e}");
        let mut nameless = hook("https://example.com/");
        nameless.application_id = " ".into();
        assert!(matches!(
            nameless.normalize(),
            Err(ConfigError::Empty { .. })
        ));
    }

    #[test]
    fn json_is_camel_case_with_defaults() {
        let h: Webhook = serde_json::from_str(r#"{"url":"https://example.com/"}"#).unwrap();
        assert_eq!(h.events, Vec::<String>::new());
        assert_eq!(h.name, "");
        let json = serde_json::to_value(hook("https://example.com/")).unwrap();
        assert_eq!(json["applicationId"], "app");
    }
}
