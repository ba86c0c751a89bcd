//! The cluster link's HTTP messages, JSON in camelCase.
//!
//! A media server serves
//! `/cluster/v1/{publish,subscribe,mix,view-mix,unpublish,unsubscribe,preferences,leave,status}`
//! to gateways; a gateway serves `/cluster/v1/media-servers` (heartbeats),
//! `/cluster/v1/ended` (publications a media server ended) and `/cluster/v1/relay` (who
//! speaks in a channel, which layers a publisher should send) to media servers. Channel names and
//! ids travel in bodies, never in paths, so any name a token allows needs no escaping.

use serde::{Deserialize, Serialize};

use crate::signing::{self, ClusterSecret};
use switchyard_controlplane::canvas::Canvas;
use switchyard_controlplane::error::Error;
use switchyard_controlplane::pipe::PipeTrack;
use switchyard_controlplane::protocol::{LayerPreferences, ServerMessage, TrackInfo};
use switchyard_dataplane::spec::{PIPE_KEY_LEN, PipeSpec, Ssrc};

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
    /// The channel configuration's `maxBitrateKbps`; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate_kbps: Option<u32>,
    /// For a mix, the channel configuration's MCU canvas; absent: the media server's `MCU:*`.
    #[serde(default)]
    pub canvas: Canvas,
    /// The channel configuration's `recording`: the media server records the publication.
    #[serde(default)]
    pub record: bool,
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

/// Record a channel's publications here, now and as they come, or stop (`/recording`, the
/// admin API's through a gateway).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingRequest {
    pub channel: String,
    pub on: bool,
    /// Only this publication (the admin API's connection), not the whole channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
}

/// What `/recording` did: the tracks that started recording, or the files it finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingReply {
    #[serde(default)]
    pub tracks: usize,
    #[serde(default)]
    pub files: Vec<RecordedFileInfo>,
}

/// A finished recording's file on its media server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFileInfo {
    pub path: String,
    pub duration_ms: u64,
    pub frames: u64,
}

impl RecordedFileInfo {
    /// The files among recorders' summaries (a track that never wrote a frame has none).
    pub fn of(summaries: Vec<switchyard_recording::track::Summary>) -> Vec<RecordedFileInfo> {
        summaries
            .into_iter()
            .filter_map(|s| {
                Some(RecordedFileInfo {
                    path: s.path?.display().to_string(),
                    duration_ms: s.duration_ms,
                    frames: s.frames,
                })
            })
            .collect()
    }
}

/// An MCU connection (`/mix`, see `switchyard_controlplane::mix`): asked for as a publication
/// is, within the channel's rules for the mix, and answered as one, since it is the
/// participant's publication too (its id is the connection's).
pub type MixRequest = PublishRequest;
pub type MixReply = PublishReply;

/// A receive-only view of the channel's mix (`/view-mix`, for `POST /whep/{channel}/mix`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewMixRequest {
    pub channel: String,
    pub participant: String,
    pub user: String,
    pub offer: String,
    /// The channel configuration's MCU canvas, should this start the mixer.
    #[serde(default)]
    pub canvas: Canvas,
}

/// The view is a subscription of the participant's (to the mix).
pub type ViewMixReply = SubscribeReply;

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

/// A subscriber's preferences for one of its subscriptions (`/preferences`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesRequest {
    pub channel: String,
    pub participant: String,
    pub subscription: String,
    #[serde(flatten)]
    pub preferences: LayerPreferences,
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

/// A message from a media server for participants of one of its channels: a `speaking` or
/// `dominant-speaker` message for the whole channel, or `layers` for a publication's
/// publisher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relayed {
    pub server: String,
    pub channel: String,
    pub message: ServerMessage,
}

/// Asks a media server where a pipe reaches `channel` on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeAddressRequest {
    pub channel: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeAddress {
    /// `ip:port` of the channel's worker socket.
    pub address: String,
}

/// One end of a pipe: where the other end is, and the keys (hex) and RTCP sender SSRCs both
/// ends agreed through the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeEnd {
    pub remote: String,
    pub send_key: String,
    pub receive_key: String,
    pub local_rtcp_ssrc: u32,
    pub remote_rtcp_ssrc: u32,
}

/// Sends `publication` down a pipe; `participant` owns the pipe on this server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeOutRequest {
    pub channel: String,
    pub participant: String,
    pub publication: String,
    pub pipe: PipeEnd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeOutReply {
    /// The pipe's subscription on the sending server.
    pub subscription: String,
    /// Where the pipe's packets come from (the channel's worker socket there).
    pub address: String,
    pub tracks: Vec<PipeTrack>,
}

/// Receives `tracks` from a pipe as a publication of `participant`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeInRequest {
    pub channel: String,
    pub participant: String,
    pub tracks: Vec<PipeTrack>,
    pub pipe: PipeEnd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeInReply {
    pub publication: String,
}

impl PipeEnd {
    /// An end whose keys are sealed with the cluster secret, when there is one (see
    /// [`crate::signing`]).
    pub fn sealed(mut self, secret: Option<&ClusterSecret>) -> PipeEnd {
        if let Some(s) = secret {
            self.send_key = s.seal(&self.send_key);
            self.receive_key = s.seal(&self.receive_key);
        }
        self
    }

    /// The data plane's pipe spec, its keys opened with the cluster `secret` when sealed; a
    /// malformed end, or a sealed key without the secret to open it, is a bad request.
    pub fn spec(&self, secret: Option<&ClusterSecret>) -> Result<PipeSpec, Error> {
        let bad = |what: &str| Error::BadRequest(format!("pipe: bad {what}"));
        let key = |given: &str, what: &str| -> Result<Vec<u8>, Error> {
            let opened = match secret {
                Some(s) if signing::is_sealed(given) => s.open(given),
                _ if signing::is_sealed(given) => None,
                _ => Some(given.to_string()),
            };
            let hex = opened.ok_or_else(|| bad(what))?;
            let hex = hex.as_str();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect();
            bytes
                .filter(|b| b.len() == PIPE_KEY_LEN && hex.len() == 2 * PIPE_KEY_LEN)
                .ok_or_else(|| bad(what))
        };
        Ok(PipeSpec {
            remote: self.remote.parse().map_err(|_| bad("remote address"))?,
            send_key: key(&self.send_key, "send key")?,
            receive_key: key(&self.receive_key, "receive key")?,
            local_rtcp_ssrc: Ssrc(self.local_rtcp_ssrc),
            remote_rtcp_ssrc: Ssrc(self.remote_rtcp_ssrc),
        })
    }
}

/// Fresh keying material for one direction of a pipe, as hex.
pub fn pipe_key() -> String {
    (0..PIPE_KEY_LEN)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The gateway's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// How long the record lives without another heartbeat.
    pub ttl_ms: u64,
}

/// Rebuilds the error a media server reported, from its status and the message of its
/// [`ErrorBody`](switchyard_controlplane::error::ErrorBody) (the inverse of its
/// `IntoResponse` for what a media server reports).
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
    fn pipe_ends_check_their_keys() {
        let end = PipeEnd {
            remote: "10.0.0.2:40000".into(),
            send_key: pipe_key(),
            receive_key: pipe_key(),
            local_rtcp_ssrc: 1,
            remote_rtcp_ssrc: 2,
        };
        let spec = end.spec(None).unwrap();
        assert_eq!(spec.send_key.len(), PIPE_KEY_LEN);
        // Sealed: only the same secret opens them.
        let secret = ClusterSecret::new("a cluster secret of some length").unwrap();
        let sealed = end.clone().sealed(Some(&secret));
        assert!(!sealed.send_key.contains(&end.send_key));
        assert_eq!(sealed.spec(Some(&secret)).unwrap().send_key, spec.send_key);
        assert!(matches!(sealed.spec(None), Err(Error::BadRequest(_))));
        let other = ClusterSecret::new("another cluster secret, longer").unwrap();
        assert!(matches!(
            sealed.spec(Some(&other)),
            Err(Error::BadRequest(_))
        ));
        for bad in [
            PipeEnd {
                send_key: "abc".into(),
                ..end.clone()
            },
            PipeEnd {
                receive_key: "zz".repeat(PIPE_KEY_LEN),
                ..end.clone()
            },
            PipeEnd {
                remote: "nowhere".into(),
                ..end.clone()
            },
        ] {
            assert!(matches!(bad.spec(None), Err(Error::BadRequest(_))));
        }
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

    /// What a media server's handlers answer, read back by a gateway, is the same error.
    #[tokio::test]
    async fn errors_survive_the_link() {
        use axum::response::IntoResponse;
        use switchyard_controlplane::error::ErrorBody;

        for e in [
            Error::BadRequest("bad offer: no m-line".into()),
            Error::NotFound("no publication p in channel c".into()),
            Error::Gone("publication p is gone".into()),
            Error::Unavailable("media server m is draining".into()),
        ] {
            let (metric, message) = (e.metric(), e.to_string());
            let response = e.into_response();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: ErrorBody = serde_json::from_slice(&body).unwrap();
            let back = error_from_status(status, body.error);
            assert_eq!((back.metric(), back.to_string()), (metric, message));
        }
    }
}
