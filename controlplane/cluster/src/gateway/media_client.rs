//! The gateway's HTTP client for the media servers' cluster API (`/cluster/v1/...` on each
//! server's cluster address). A failed call is read back into the media server's
//! [`Error`], so a client hears the same refusal whichever process made it.

use reqwest::Method;

use crate::signing::{self, ClusterSecret};
use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_controlplane::error::{Error, ErrorBody};

use crate::api::{self, EndRequest};
use crate::registry::MediaServerRecord;

/// The HTTP client could not be made (no TLS roots, no resolver): nothing is served without it.
#[derive(Debug, thiserror::Error)]
#[error("HTTP client for the media servers: {0}")]
pub struct HttpClientError(#[from] reqwest::Error);

#[derive(Debug)]
pub(super) enum CallError {
    /// The server could not be reached: try another.
    Unreachable(String),
    Failed(Error),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e {
            CallError::Unreachable(m) => Error::Unavailable(m),
            CallError::Failed(e) => e,
        }
    }
}

/// How long [`MediaClient::end_now`] waits for a media server.
const END_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(super) struct MediaClient {
    http: reqwest::Client,
    /// Signs every call (`crate::signing`), when the cluster has a secret.
    pub secret: Option<ClusterSecret>,
}

impl MediaClient {
    pub fn new() -> Result<MediaClient, HttpClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(MediaClient { http, secret: None })
    }

    /// Calls `what` on the server; `None` for a reply with no content.
    pub async fn call<T: DeserializeOwned>(
        &self,
        server: &MediaServerRecord,
        what: &str,
        body: &impl Serialize,
    ) -> Result<Option<T>, CallError> {
        let url = format!("http://{}{}/{what}", server.cluster_address, api::PREFIX);
        let reply = signing::request(
            &self.http,
            self.secret.as_ref(),
            Method::POST,
            &url,
            Some(body),
        )
        .send()
        .await
        .map_err(|e| CallError::Unreachable(format!("media server {}: {e}", server.id)))?;
        let status = reply.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return reply.json::<T>().await.map(Some).map_err(|e| {
                CallError::Failed(Error::Unavailable(format!(
                    "media server {}: {e}",
                    server.id
                )))
            });
        }
        let message = reply
            .json::<ErrorBody>()
            .await
            .map(|r| r.error)
            .unwrap_or_else(|_| format!("media server {} answered {status}", server.id));
        Err(CallError::Failed(api::error_from_status(
            status.as_u16(),
            message,
        )))
    }

    /// Ends what a participant has on a media server, in the background (a slow or dead server
    /// must not hold up a leaving client).
    pub fn end_on(&self, server: MediaServerRecord, what: &'static str, request: EndRequest) {
        let this = self.clone();
        tokio::spawn(async move { this.end_now(&server, what, &request).await });
    }

    /// Ends what a participant has on a media server and waits (at most [`END_WAIT`]) for the
    /// server to have done it: before the same participant id, resumed, publishes there again,
    /// a late `leave` would end its new media too.
    pub async fn end_now(&self, server: &MediaServerRecord, what: &str, request: &EndRequest) {
        let url = format!("http://{}{}/{what}", server.cluster_address, api::PREFIX);
        let call = signing::request(
            &self.http,
            self.secret.as_ref(),
            Method::POST,
            &url,
            Some(request),
        );
        match tokio::time::timeout(END_WAIT, call.send()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(server = %server.id, "{what} on the media server: {e}"),
            Err(_) => tracing::debug!(server = %server.id, "{what} on the media server: no answer"),
        }
    }
}

/// Ends one publication or subscription `id` of a participant, or with `None` everything it has
/// on the server (`leave`).
pub(super) fn ending(channel: &str, participant: &str, id: Option<&str>) -> EndRequest {
    EndRequest {
        channel: channel.to_string(),
        participant: participant.to_string(),
        id: id.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PublishReply, PublishRequest};
    use crate::gateway::tests::server;
    use axum::routing::post;
    use axum::{Json, Router};

    /// A stand-in media server on loopback answering each call as the real one would.
    async fn media_server() -> MediaServerRecord {
        let router = Router::new()
            .route(
                "/cluster/v1/publish",
                post(|Json(r): Json<PublishRequest>| async move {
                    match r.offer.as_str() {
                        "ok" => Ok((
                            StatusCode::CREATED,
                            Json(PublishReply {
                                publication: "pub1".into(),
                                answer: "v=0".into(),
                                tracks: vec![],
                            }),
                        )),
                        "gone" => Err(Error::Gone("publication pub9 is gone".into())),
                        _ => Err(Error::BadRequest(format!("bad offer: {}", r.offer))),
                    }
                }),
            )
            .route(
                "/cluster/v1/leave",
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/cluster/v1/status",
                post(|| async { (StatusCode::BAD_GATEWAY, "not JSON") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        MediaServerRecord {
            cluster_address: address.to_string(),
            ..server("ms1", "a")
        }
    }

    fn publish(offer: &str) -> PublishRequest {
        PublishRequest {
            channel: "c".into(),
            participant: "p".into(),
            user: "u".into(),
            offer: offer.into(),
            codecs: vec![],
            max_bitrate_kbps: None,
            canvas: Default::default(),
            record: false,
        }
    }

    #[tokio::test]
    async fn replies_and_refusals_come_back_as_they_were_made() {
        let client = MediaClient::new().unwrap();
        let ms = media_server().await;
        let reply: Option<PublishReply> =
            client.call(&ms, "publish", &publish("ok")).await.unwrap();
        assert_eq!(reply.map(|r| r.publication), Some("pub1".into()));
        let none: Option<PublishReply> = client
            .call(&ms, "leave", &ending("c", "p", None))
            .await
            .unwrap();
        assert!(none.is_none(), "204: nothing to read");

        for (offer, metric, message) in [
            ("garbage", "bad_request", "bad offer: garbage"),
            ("gone", "gone", "publication pub9 is gone"),
        ] {
            let e = client
                .call::<PublishReply>(&ms, "publish", &publish(offer))
                .await
                .unwrap_err();
            let CallError::Failed(e) = e else {
                panic!("{e:?}")
            };
            assert_eq!((e.metric(), e.to_string().as_str()), (metric, message));
        }
        let e = client
            .call::<PublishReply>(&ms, "status", &publish("ok"))
            .await
            .unwrap_err();
        let e = Error::from(e);
        assert_eq!(e.metric(), "unavailable");
        assert!(e.to_string().contains("answered 502"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_unreachable() {
        let client = MediaClient::new().unwrap();
        let e = client
            .call::<PublishReply>(&server("ms9", "a"), "publish", &publish("ok"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CallError::Unreachable(ref m) if m.starts_with("media server ms9")),
            "{e:?}"
        );
    }
}
