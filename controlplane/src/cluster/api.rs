//! The cluster link's HTTP messages, JSON in camelCase.
//!
//! A media server serves `/cluster/v1/{publish,subscribe,unpublish,unsubscribe,leave,status}`
//! to gateways; a gateway serves `/cluster/v1/media-servers` (heartbeats) and
//! `/cluster/v1/ended` (publications a media server ended) to media servers. Channel names and
//! ids travel in bodies, never in paths, so any name a token allows needs no escaping.

use serde::{Deserialize, Serialize};

use crate::protocol::TrackInfo;
use crate::session::Error;

pub const PREFIX: &str = "/cluster/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    pub channel: String,
    pub participant: String,
    pub user: String,
    pub offer: String,
    /// Codecs the channel's configuration allows (SDP names); empty: all.
    #[serde(default)]
    pub codecs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReply {
    pub publication: String,
    pub answer: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeRequest {
    pub channel: String,
    pub participant: String,
    pub user: String,
    pub publication: String,
    pub offer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeReply {
    pub subscription: String,
    pub answer: String,
}

/// Ends one publication or subscription (`id`) of a participant, or, with neither, everything
/// the participant has on the server (`leave`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndRequest {
    pub channel: String,
    pub participant: String,
    #[serde(default)]
    pub id: Option<String>,
}

/// A publication the media server ended by itself (its transport failed or timed out).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub server: String,
    pub channel: String,
    pub participant: String,
    pub publication: String,
}

/// The gateway's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// How long the record lives without another heartbeat.
    pub ttl_ms: u64,
}

/// What a failed request says, with the HTTP status carrying the kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// Rebuilds the error a media server reported, from its status and message.
pub fn error_from_status(status: u16, message: String) -> Error {
    match status {
        400 => Error::BadRequest(message),
        404 => Error::NotFound(message),
        409 => Error::Gone(message),
        _ => Error::Unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_on_the_wire() {
        let json = serde_json::to_string(&HeartbeatReply { ttl_ms: 6000 }).unwrap();
        assert_eq!(json, r#"{"ttlMs":6000}"#);
        let e: EndRequest = serde_json::from_str(r#"{"channel":"c","participant":"p"}"#).unwrap();
        assert_eq!(e.id, None);
    }

    #[test]
    fn statuses_map_back_to_errors() {
        for (status, kind) in [
            (400, "bad_request"),
            (404, "not_found"),
            (409, "gone"),
            (500, "unavailable"),
            (503, "unavailable"),
        ] {
            assert_eq!(error_from_status(status, "x".into()).metric(), kind);
        }
    }
}
