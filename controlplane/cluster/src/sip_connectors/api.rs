//! What a standalone connector serves and sends: its signed API for the gateways
//! (`POST /cluster/v1/sip/digits`, `/sip/dial` and `/sip/hang-up`), its heartbeat to
//! `PUT {SERVICEBASEURL}/cluster/v1/sip-connectors`, and its callers' key presses to
//! `POST {SERVICEBASEURL}/cluster/v1/sip-connectors/digit`. Requests are signed both ways with
//! `CLUSTER:SECRET` and answer only `INTERNAL:IPADDRESSES`, like the media servers' API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use switchyard_controlplane::allowlist::{AllowList, Guarded, guard};
use switchyard_controlplane::error::Error;
use switchyard_controlplane::phones::{self, DialRefusal, DialRequest, Phones};
use switchyard_controlplane::server::stopped;
use tokio::sync::{mpsc, watch};

use super::ConnectorRecord;
use crate::api::{self, HeartbeatReply};
use crate::node::HEARTBEAT_EVERY;
use crate::signing::{self, ClusterSecret};

/// Digits for a channel's calls (or the one whose caller is `to`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigitsRequest {
    pub channel: String,
    #[serde(default)]
    pub to: Option<String>,
    pub digits: String,
}

/// How many calls took the digits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigitsReply {
    pub calls: usize,
}

/// A call out, as the admin API took it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialBody {
    pub channel: String,
    pub number: String,
    #[serde(default)]
    pub trunk: Option<String>,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default)]
    pub application: Option<String>,
}

/// The call's id, at once (it rings on on its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DialReply {
    pub call: String,
}

/// A call out to hang up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HangUpRequest {
    pub channel: String,
    pub call: String,
}

/// Whether the connector had the call (and hangs it up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HangUpReply {
    pub ended: bool,
}

/// A caller pressed a key: the gateway tells the channel's participants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneDigit {
    pub channel: String,
    /// The caller (`sip:<user>`), as the `dtmf` event names it.
    pub from: String,
    pub digit: char,
}

/// The connector's API, for the gateways; `/health` answers anyone.
pub fn router(
    phones: Arc<dyn Phones>,
    secret: Option<ClusterSecret>,
    internal: AllowList,
) -> Router {
    let internal = Arc::new(Guarded {
        api: "the SIP connector's API",
        setting: "INTERNAL:IPADDRESSES",
        allow: internal,
    });
    // A refusal is logged by the guard; the connector keeps no counter of its own for it.
    let signed = Arc::new(signing::Signed {
        secret,
        refused: Box::new(|| {}),
    });
    let path = |p: &str| format!("{}{p}", api::PREFIX);
    Router::new()
        .route(&path("/sip/digits"), post(digits))
        .route(&path("/sip/dial"), post(dial))
        .route(&path("/sip/hang-up"), post(hang_up))
        .route_layer(middleware::from_fn_with_state(signed, signing::guard))
        .route_layer(middleware::from_fn_with_state(internal, guard))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(phones)
}

async fn digits(
    State(phones): State<Arc<dyn Phones>>,
    Json(r): Json<DigitsRequest>,
) -> Result<Json<DigitsReply>, Error> {
    if !phones::valid_digits(&r.digits) {
        return Err(Error::BadRequest(format!(
            "digits must be 1 to {} of {}",
            phones::MAX_DIGITS,
            phones::DTMF_DIGITS
        )));
    }
    let calls = phones.send_digits(&r.channel, r.to.as_deref(), &r.digits);
    Ok(Json(DigitsReply { calls }))
}

async fn dial(
    State(phones): State<Arc<dyn Phones>>,
    Json(r): Json<DialBody>,
) -> Result<(StatusCode, Json<DialReply>), Error> {
    if !phones::valid_number(&r.number) {
        return Err(Error::BadRequest(format!(
            "{:?} is not a number to dial",
            r.number
        )));
    }
    let request = DialRequest {
        channel: &r.channel,
        number: &r.number,
        trunk: r.trunk.as_deref(),
        caller_id: r.caller_id.as_deref(),
        application: r.application.as_deref(),
    };
    let call = phones.dial(request).map_err(|refusal| match refusal {
        DialRefusal::Invalid(why) => Error::BadRequest(why),
        DialRefusal::NoTrunk(why) => Error::NotFound(why),
    })?;
    Ok((StatusCode::ACCEPTED, Json(DialReply { call })))
}

async fn hang_up(
    State(phones): State<Arc<dyn Phones>>,
    Json(r): Json<HangUpRequest>,
) -> Json<HangUpReply> {
    let ended = phones.hang_up(&r.channel, &r.call);
    Json(HangUpReply { ended })
}

/// Where the connector's requests to the gateway go, and how they are signed.
#[derive(Clone)]
pub struct GatewayLink {
    pub http: reqwest::Client,
    pub secret: Option<ClusterSecret>,
    /// SERVICEBASEURL.
    pub base: String,
}

impl GatewayLink {
    fn url(&self, path: &str) -> String {
        format!(
            "{}{}/sip-connectors{path}",
            self.base.trim_end_matches('/'),
            api::PREFIX
        )
    }
}

/// Heartbeats `record()` to the gateway every [`HEARTBEAT_EVERY`] until `stop` turns true,
/// then removes the record (else it expires by itself).
pub async fn heartbeat(
    link: GatewayLink,
    record: impl Fn() -> ConnectorRecord + Send,
    mut stop: watch::Receiver<bool>,
) {
    let url = link.url("");
    let mut registered = false;
    let mut failing = false;
    let mut id = String::new();
    loop {
        let current = record();
        id.clone_from(&current.id);
        let sent = async {
            signing::request(
                &link.http,
                link.secret.as_ref(),
                Method::PUT,
                &url,
                Some(&current),
            )
            .send()
            .await?
            .error_for_status()?
            .json::<HeartbeatReply>()
            .await
        };
        match sent.await {
            Ok(reply) => {
                if !registered {
                    tracing::info!(id = %current.id, gateway = %link.base, ttl_ms = reply.ttl_ms, "registered with the gateway");
                } else if failing {
                    tracing::info!(gateway = %link.base, "heartbeats reach the gateway again");
                }
                registered = true;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(gateway = %link.base, "heartbeat failed: {e}; retrying every {HEARTBEAT_EVERY:?}");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    let body = serde_json::json!({ "id": id });
    let request = signing::request(
        &link.http,
        link.secret.as_ref(),
        Method::POST,
        &link.url("/remove"),
        Some(&body),
    );
    match request.send().await {
        Ok(r) if r.status().is_success() => tracing::info!("unregistered from the gateway"),
        Ok(r) => tracing::warn!("unregistering: the gateway answered {}", r.status()),
        Err(e) => tracing::warn!("unregistering: {e} (the record expires by itself)"),
    }
}

/// How long one key press may take to reach the gateway before it is given up.
const DIGIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Passes callers' key presses to the gateway one at a time, in the order pressed (a digit
/// that overtook another would change what a participant reads). Runs until every sender is
/// dropped.
pub fn report_digits(link: GatewayLink) -> mpsc::UnboundedSender<PhoneDigit> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PhoneDigit>();
    let url = link.url("/digit");
    tokio::spawn(async move {
        while let Some(digit) = rx.recv().await {
            let request = signing::request(
                &link.http,
                link.secret.as_ref(),
                Method::POST,
                &url,
                Some(&digit),
            )
            .timeout(DIGIT_TIMEOUT);
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(channel = %digit.channel, "a key press was refused by the gateway: {}", r.status())
                }
                Err(e) => {
                    tracing::warn!(channel = %digit.channel, "a key press did not reach the gateway: {e}")
                }
            }
        }
    });
    tx
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::call;
    use std::sync::Mutex;

    /// Phones that remember what they were asked.
    #[derive(Default)]
    struct Fake(Mutex<Vec<String>>);

    impl Phones for Fake {
        fn send_digits(&self, channel: &str, to: Option<&str>, digits: &str) -> usize {
            self.0
                .lock()
                .unwrap()
                .push(format!("{channel} {to:?} {digits}"));
            usize::from(channel == "up")
        }
        fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
            Vec::new()
        }
        fn dial(&self, r: DialRequest<'_>) -> Result<String, DialRefusal> {
            match r.trunk {
                Some("none") => Err(DialRefusal::NoTrunk("no trunk \"none\"".into())),
                _ => Ok(format!("out-{}", r.number)),
            }
        }
    }

    #[tokio::test]
    async fn digits_and_dial_from_inside_only() {
        let fake = Arc::new(Fake::default());
        let router = router(fake.clone(), None, AllowList::parse("127.0.0.1").unwrap());
        let body = r#"{"channel":"up","digits":"12#"}"#.to_string();
        let (status, reply) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/digits",
            Some(body.clone()),
        )
        .await;
        assert_eq!((status, reply.as_str()), (StatusCode::OK, r#"{"calls":1}"#));
        let (status, _) = call(
            &router,
            "10.1.1.1:1",
            "POST",
            "/cluster/v1/sip/digits",
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let bad = r#"{"channel":"up","digits":"x"}"#.to_string();
        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/digits",
            Some(bad),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(*fake.0.lock().unwrap(), ["up None 12#"]);

        let dial = r#"{"channel":"c","number":"+4930"}"#.to_string();
        let (status, reply) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/dial",
            Some(dial),
        )
        .await;
        assert_eq!(
            (status, reply.as_str()),
            (StatusCode::ACCEPTED, r#"{"call":"out-+4930"}"#)
        );
        let dial = r#"{"channel":"c","number":"1","trunk":"none"}"#.to_string();
        let (status, reply) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/dial",
            Some(dial),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
        let dial = r#"{"channel":"c","number":"sip:x"}"#.to_string();
        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/dial",
            Some(dial),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn with_a_secret_unsigned_requests_are_refused() {
        let secret = ClusterSecret::new("0123456789abcdef-cluster").unwrap();
        let router = router(
            Arc::new(Fake::default()),
            Some(secret),
            AllowList::parse("127.0.0.1").unwrap(),
        );
        let body = r#"{"channel":"up","digits":"1"}"#.to_string();
        let (status, _) = call(
            &router,
            "127.0.0.1:1",
            "POST",
            "/cluster/v1/sip/digits",
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
