//! The JSON messages of WebSocket signalling at `/sync` (see docs/signalling.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client sends. `id`, when present, is echoed in the reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// `channel` may be left out when the token grants exactly one. `region` asks for a media
    /// server in that region (in a cluster; ignored by all-in-one).
    Join {
        token: String,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        region: Option<String>,
        /// A reconnecting client's previous participant, to be continued under the same id.
        #[serde(default)]
        resume: Option<Resume>,
    },
    Publish {
        #[serde(default)]
        id: Option<Value>,
        offer: String,
    },
    Subscribe {
        #[serde(default)]
        id: Option<Value>,
        publication: String,
        offer: String,
    },
    /// An MCU connection: a sendrecv offer whose audio and video join the channel's mix,
    /// answered with the mix (everyone's audio but the sender's, and the composite).
    Mix {
        #[serde(default)]
        id: Option<Value>,
        offer: String,
    },
    /// Ends an MCU connection.
    Unmix {
        mix: String,
    },
    Unpublish {
        publication: String,
    },
    Unsubscribe {
        subscription: String,
    },
    /// What the client wants of one of its subscriptions: with simulcast, the layer forwarded
    /// is the highest no taller than `maxHeight`; with SVC, the temporal layers forwarded give
    /// at most `maxFrameRate` frames per second; `paused` stops its media until resumed.
    /// Each message replaces the previous preferences. No reply unless it is refused.
    Preferences {
        subscription: String,
        #[serde(flatten)]
        preferences: LayerPreferences,
    },
    /// Peer-to-peer signalling: `data` (any JSON: an SDP, an ICE candidate...) is relayed as it
    /// is to participant `to` of the same channel. No reply unless it is refused.
    Signal {
        #[serde(default)]
        id: Option<Value>,
        to: String,
        data: Value,
    },
    Leave,
    /// A channel message: `data` (any JSON) goes to participant `to` of the same channel, or,
    /// with no `to`, to everyone else in it. No reply unless it is refused.
    Message {
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        to: Option<String>,
        data: Value,
    },
    /// Key presses for the channel's phone calls (SIP callers), or for the one whose caller
    /// is `to` (`sip:<number>`): played to the phones as RFC 4733 telephone-events. Up to
    /// 32 of 0-9, *, #, A-D. No reply unless it is refused.
    Dtmf {
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        to: Option<String>,
        digits: String,
    },
    /// Dials `number` through a SIP trunk (`trunk`, else the first that may carry calls out),
    /// from `callerId` (else the trunk's); the callee joins the sender's channel when it
    /// answers. Only with a token whose claim for the channel has `dial` (see [`crate::dial`]).
    /// Replied to with `dialing`.
    Dial {
        #[serde(default)]
        id: Option<Value>,
        number: String,
        #[serde(default)]
        trunk: Option<String>,
        #[serde(default, rename = "callerId")]
        caller_id: Option<String>,
    },
}

impl ClientMessage {
    /// The request's `id`, for the reply (requests that take none have none).
    pub fn id(&self) -> Option<&Value> {
        match self {
            ClientMessage::Publish { id, .. }
            | ClientMessage::Mix { id, .. }
            | ClientMessage::Subscribe { id, .. }
            | ClientMessage::Signal { id, .. }
            | ClientMessage::Message { id, .. }
            | ClientMessage::Dtmf { id, .. }
            | ClientMessage::Dial { id, .. } => id.as_ref(),
            ClientMessage::Join { .. }
            | ClientMessage::Unmix { .. }
            | ClientMessage::Unpublish { .. }
            | ClientMessage::Unsubscribe { .. }
            | ClientMessage::Preferences { .. }
            | ClientMessage::Leave => None,
        }
    }
}

/// A subscriber's preferences for one subscription (`preferences`), as the JSON names them;
/// the cluster API carries them the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerPreferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_rate: Option<u16>,
    #[serde(default)]
    pub paused: bool,
}

impl From<LayerPreferences> for switchyard_dataplane::spec::Preferences {
    fn from(p: LayerPreferences) -> Self {
        switchyard_dataplane::spec::Preferences {
            max_height: p.max_height,
            max_frame_rate: p.max_frame_rate,
            paused: p.paused,
            max_bitrate: None,
        }
    }
}

/// `join.resume`: the participant a reconnecting client was, and the key its `joined` gave.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resume {
    pub participant: String,
    pub key: String,
}

/// What the server sends. Gateways also pass these to each other through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Joined {
        participant: String,
        channel: String,
        participants: Vec<ParticipantInfo>,
        /// TURN servers with credentials for this client (`RTCConfiguration.iceServers`).
        #[serde(default, rename = "iceServers", skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<crate::ice_servers::IceServer>,
        /// What the client presents in `join.resume` to continue as this participant after
        /// its connection drops (see [`crate::resume`]).
        #[serde(
            default,
            rename = "resumeKey",
            skip_serializing_if = "String::is_empty"
        )]
        resume_key: String,
    },
    Answer {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        publication: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscription: Option<String>,
        /// The MCU connection a `mix` made.
        #[serde(skip_serializing_if = "Option::is_none")]
        mix: Option<String>,
        answer: String,
    },
    ParticipantJoined {
        participant: String,
        user: String,
    },
    ParticipantLeft {
        participant: String,
    },
    Published {
        participant: String,
        publication: String,
        tracks: Vec<TrackInfo>,
    },
    Unpublished {
        participant: String,
        publication: String,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        reason: String,
    },
    /// An operator removed this client; the socket closes after this message.
    Kicked {
        reason: String,
    },
    /// The client resumed this participant on another connection; this socket closes after
    /// this message, and the participant stays (it is the other connection's now).
    Replaced,
    /// The media server of this client's subscription to `publication` is gone; subscribe
    /// again (the publication is still there).
    Resubscribe {
        publication: String,
    },
    /// A `signal` another participant of the channel sent this client, `data` as it was sent.
    Signal {
        from: String,
        data: Value,
    },
    /// The audio of `publication` started or stopped carrying speech (from the audio levels the
    /// publisher's browser sends; at most a few a second per channel).
    Speaking {
        participant: String,
        publication: String,
        speaking: bool,
    },
    /// The channel's dominant speaker changed: kept through pauses, taken over only by someone
    /// clearly louder for a while. Both `null` when its publication ended.
    DominantSpeaker {
        participant: Option<String>,
        publication: Option<String>,
    },
    /// The reply to a `dial`: the call is placed (ringing may take a minute); `call` is its id
    /// as the server's log names it. Once answered, the callee joins the channel as participant
    /// user `sip:<number>`; a call refused or unanswered never joins.
    Dialing {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        call: String,
    },
    /// A phone caller of the channel (`from`: `sip:<number>`) pressed `digit`.
    Dtmf {
        from: String,
        digit: String,
    },
    /// A channel `message` another participant sent to this client or to the whole channel.
    Message {
        from: String,
        data: Value,
    },
    /// To a simulcast publisher only: which of its video layers (lowest first) someone
    /// watches; it may stop sending the others until they are wanted again.
    Layers {
        publication: String,
        active: Vec<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant: String,
    pub user: String,
    pub publications: Vec<PublicationInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicationInfo {
    pub publication: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub kind: String,
    pub codec: String,
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"publish","id":7,"offer":"v=0"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Publish {
                id: Some(Value::from(7)),
                offer: "v=0".into()
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"leave"}"#).unwrap();
        assert_eq!(m, ClientMessage::Leave);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"dance"}"#).is_err());
        let s = serde_json::to_string(&ServerMessage::ParticipantLeft {
            participant: "p1".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"participant-left","participant":"p1"}"#);
        let s = serde_json::to_string(&ServerMessage::Error {
            id: None,
            reason: "no".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"error","reason":"no"}"#);
    }

    #[test]
    fn preferences_carry_max_height_and_max_frame_rate() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"preferences","subscription":"s1","maxHeight":360,"maxFrameRate":15}"#,
        )
        .unwrap();
        let ClientMessage::Preferences {
            subscription,
            preferences,
        } = m
        else {
            panic!("not preferences: {m:?}");
        };
        assert_eq!(subscription, "s1");
        let want = LayerPreferences {
            max_height: Some(360),
            max_frame_rate: Some(15),
            paused: false,
        };
        assert_eq!(preferences, want);
        let spec = switchyard_dataplane::spec::Preferences::from(preferences);
        assert_eq!(spec.max_frame_rate, Some(15));
        // Gateways relay them (the cluster API) as they came.
        let text = serde_json::to_string(&preferences).unwrap();
        assert_eq!(
            text,
            r#"{"maxHeight":360,"maxFrameRate":15,"paused":false}"#
        );
        let none: LayerPreferences = serde_json::from_str("{}").unwrap();
        assert_eq!(none, LayerPreferences::default());
    }

    #[test]
    fn messages_to_everyone_or_one() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"message","data":{"text":"hi"}}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Message {
                id: None,
                to: None,
                data: serde_json::json!({"text": "hi"}),
            }
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"message","id":3,"to":"p2","data":[1]}"#).unwrap();
        assert_eq!(m.id(), Some(&Value::from(3)));
        assert!(matches!(m, ClientMessage::Message { to: Some(t), .. } if t == "p2"));
        let out = ServerMessage::Message {
            from: "p1".into(),
            data: serde_json::json!({"text": "hi"}),
        };
        let text = serde_json::to_string(&out).unwrap();
        assert_eq!(
            text,
            r#"{"type":"message","from":"p1","data":{"text":"hi"}}"#
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), out);
    }

    #[test]
    fn signals_carry_any_json_both_ways() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"signal","id":"a","to":"p2","data":{"sdp":"v=0","n":[1,null]}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Signal {
                id: Some(Value::from("a")),
                to: "p2".into(),
                data: serde_json::json!({"sdp": "v=0", "n": [1, null]}),
            }
        );
        let missing = serde_json::from_str::<ClientMessage>(r#"{"type":"signal","to":"p2"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `data`"), "{missing}");

        // Gateways pass it to each other as JSON: the data comes back as it went.
        let out = ServerMessage::Signal {
            from: "p1".into(),
            data: serde_json::json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "big": u64::MAX}),
        };
        let text = serde_json::to_string(&out).unwrap();
        assert!(
            text.starts_with(r#"{"type":"signal","from":"p1","data":{"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), out);
    }

    #[test]
    fn dial_requests_and_their_reply() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"dial","id":4,"number":"+15550123","trunk":"main","callerId":"+15550100"}"#,
        )
        .unwrap();
        assert_eq!(m.id(), Some(&Value::from(4)));
        assert_eq!(
            m,
            ClientMessage::Dial {
                id: Some(Value::from(4)),
                number: "+15550123".into(),
                trunk: Some("main".into()),
                caller_id: Some("+15550100".into()),
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"dial","number":"1"}"#).unwrap();
        assert!(
            matches!(m, ClientMessage::Dial { id: None, trunk: None, caller_id: None, ref number } if number == "1"),
            "{m:?}"
        );
        let missing = serde_json::from_str::<ClientMessage>(r#"{"type":"dial","id":1}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `number`"), "{missing}");
        let wrong = serde_json::from_str::<ClientMessage>(r#"{"type":"dial","number":1234}"#);
        assert!(wrong.is_err());

        let reply = ServerMessage::Dialing {
            id: Some(Value::from(4)),
            call: "5f0c1e6a".into(),
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"type":"dialing","id":4,"call":"5f0c1e6a"}"#);
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), reply);
    }

    #[test]
    fn speaking_events() {
        let s = serde_json::to_string(&ServerMessage::Speaking {
            participant: "p1".into(),
            publication: "pub2".into(),
            speaking: true,
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"type":"speaking","participant":"p1","publication":"pub2","speaking":true}"#
        );
        let none = ServerMessage::DominantSpeaker {
            participant: None,
            publication: None,
        };
        let s = serde_json::to_string(&none).unwrap();
        assert_eq!(
            s,
            r#"{"type":"dominant-speaker","participant":null,"publication":null}"#
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&s).unwrap(), none);
    }
}
