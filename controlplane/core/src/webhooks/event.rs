//! What a webhook receives: one JSON object per event, named as LiveSwitch names its events,
//! with camelCase fields. Every event has `id` (unique: an event sent again after a lost answer
//! has the same one), `type`, `timestamp` (Unix ms), `applicationId` and `channelId`; client
//! and connection events add who (`clientId`, `userId`), connection events the connection
//! (`connectionId`, `connectionType`, `direction`), recording events what was written.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use switchyard_recording::log::Connection;
use switchyard_recording::mux::Muxed;

/// An event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The channel's first participant joined.
    ChannelActivated,
    /// The channel's last participant left.
    ChannelDeactivated,
    ClientJoined,
    ClientLeft,
    /// A publication, subscription or MCU connection completed ICE and DTLS.
    ConnectionConnected,
    /// A connection ended (the client ended it, it left, or its transport failed).
    ConnectionClosed,
    /// A publication's tracks started recording, each to its own file.
    RecordingStarted,
    /// A publication's recording ended (it ended, or recording was turned off).
    RecordingStopped,
    /// A recording session was muxed into one file: the mixed recording is ready.
    RecordingMixed,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::ChannelActivated,
        Kind::ChannelDeactivated,
        Kind::ClientJoined,
        Kind::ClientLeft,
        Kind::ConnectionConnected,
        Kind::ConnectionClosed,
        Kind::RecordingStarted,
        Kind::RecordingStopped,
        Kind::RecordingMixed,
    ];

    /// The `type` field, and what a webhook's `events` lists.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ChannelActivated => "channel.activated",
            Kind::ChannelDeactivated => "channel.deactivated",
            Kind::ClientJoined => "client.joined",
            Kind::ClientLeft => "client.left",
            Kind::ConnectionConnected => "connection.connected",
            Kind::ConnectionClosed => "connection.closed",
            Kind::RecordingStarted => "recording.started",
            Kind::RecordingStopped => "recording.stopped",
            Kind::RecordingMixed => "recording.mixed",
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A client: the participant and its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub client_id: String,
    pub user_id: String,
}

/// One of a client's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The publication's or subscription's id (an MCU connection's is its publication's).
    pub connection_id: String,
    /// `sfu` or `mcu`, as the recording logs say.
    pub connection_type: &'static str,
    /// `upstream` (a publication), `downstream` (a subscription, a view of the mix) or `both`
    /// (an MCU connection: it sends, and receives the mix).
    pub direction: &'static str,
}

/// What a recording event says was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Recording {
    /// `recording.started`: the files of the publication's tracks, by name in the channel's
    /// recordings directory.
    Files { files: Vec<String> },
    /// `recording.mixed`: where the muxed file is (a `file://` URL on the server that muxed
    /// it), when the session started (Unix ms), how long it is, and whose recordings it holds.
    Mixed {
        url: String,
        start_timestamp: u64,
        duration_ms: u64,
        client_ids: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Unix time in milliseconds.
    pub timestamp: u64,
    pub application_id: String,
    pub channel_id: String,
    #[serde(flatten)]
    pub client: Option<Client>,
    #[serde(flatten)]
    pub connection: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
}

impl Event {
    /// An event of `application`'s `channel`, now.
    pub fn new(kind: Kind, application: &str, channel: &str) -> Event {
        Event {
            id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            kind,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            application_id: application.to_string(),
            channel_id: channel.to_string(),
            client: None,
            connection: None,
            recording: None,
        }
    }

    /// An event of `kind` about the same channel, client and connection, now, with its own id.
    pub fn also(&self, kind: Kind) -> Event {
        Event {
            client: self.client.clone(),
            connection: self.connection.clone(),
            ..Event::new(kind, &self.application_id, &self.channel_id)
        }
    }

    pub fn client(mut self, client_id: &str, user_id: &str) -> Event {
        self.client = Some(Client {
            client_id: client_id.to_string(),
            user_id: user_id.to_string(),
        });
        self
    }

    pub fn connection(mut self, link: Link) -> Event {
        self.connection = Some(link);
        self
    }

    pub fn recording(mut self, recording: Recording) -> Event {
        self.recording = Some(recording);
        self
    }
}

/// The `recording.mixed` events of a muxed session: one per application whose recordings it
/// holds, found in the logs beside its input files (a session is one channel's, so in
/// practice one). Inputs whose log is gone or names no application are left out. `url` is
/// where the file is (its object once the mover stored it); `None`: a `file://` URL of the
/// muxed file here.
pub fn mixed(muxed: &Muxed, url: Option<&str>) -> Vec<Event> {
    let mut owners: Vec<Connection> = Vec::new();
    for input in &muxed.inputs {
        match switchyard_recording::log::log_of(&input.file) {
            Ok(Some(log)) if !log.connection.application_id.is_empty() => {
                owners.push(log.connection);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(file = ?input.file, "cannot read the recording's log: {e}"),
        }
    }
    let mut events: Vec<Event> = Vec::new();
    for owner in &owners {
        if events
            .iter()
            .any(|e| e.application_id == owner.application_id && e.channel_id == owner.channel_id)
        {
            continue;
        }
        let mut clients: Vec<String> = owners
            .iter()
            .filter(|o| {
                o.application_id == owner.application_id && o.channel_id == owner.channel_id
            })
            .map(|o| o.client_id.clone())
            .collect();
        clients.sort();
        clients.dedup();
        let recording = Recording::Mixed {
            url: url.map_or_else(|| file_url(&muxed.path), str::to_string),
            start_timestamp: muxed.start_timestamp,
            duration_ms: muxed.duration_ms,
            client_ids: clients,
        };
        events.push(
            Event::new(
                Kind::RecordingMixed,
                &owner.application_id,
                &owner.channel_id,
            )
            .recording(recording),
        );
    }
    events
}

/// `path` as a `file://` URL (absolute, made so against the working directory if it is not).
fn file_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    url::Url::from_file_path(&absolute)
        .map_or_else(|()| format!("file://{}", absolute.display()), String::from)
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_one_a_webhook_may_ask_for() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, switchyard_store::WEBHOOK_EVENTS);
    }

    #[test]
    fn json_is_flat_camel_case() {
        let e = Event::new(Kind::ConnectionConnected, "acme", "room")
            .client("p1-0a", "alice")
            .connection(Link {
                connection_id: "pub2-0b".into(),
                connection_type: "sfu",
                direction: "upstream",
            });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "connection.connected");
        assert_eq!(json["applicationId"], "acme");
        assert_eq!(json["channelId"], "room");
        assert_eq!(json["clientId"], "p1-0a");
        assert_eq!(json["userId"], "alice");
        assert_eq!(json["connectionId"], "pub2-0b");
        assert_eq!(json["direction"], "upstream");
        assert!(json.get("recording").is_none());
        assert_eq!(e.id.len(), 32);
        assert!(e.timestamp > 1_700_000_000_000);
        // A channel event has no client fields at all.
        let json = serde_json::to_value(Event::new(Kind::ChannelActivated, "a", "c")).unwrap();
        assert!(json.get("clientId").is_none(), "{json}");
        let mixed = Event::new(Kind::RecordingMixed, "a", "c").recording(Recording::Mixed {
            url: "file:///r/sessions/c-1.mkv".into(),
            start_timestamp: 1,
            duration_ms: 2,
            client_ids: vec!["p1".into()],
        });
        let json = serde_json::to_value(mixed).unwrap();
        assert_eq!(json["recording"]["durationMs"], 2);
        assert_eq!(json["recording"]["clientIds"][0], "p1");
    }

    #[test]
    fn a_muxed_session_is_announced_to_the_application_in_its_logs() {
        let dir = std::env::temp_dir().join(format!("sy-mixed-{:x}", rand::random::<u64>()));
        let channel_dir = dir.join("room_1");
        std::fs::create_dir_all(&channel_dir).unwrap();
        let connection = |client: &str, application: &str| Connection {
            application_id: application.into(),
            channel_id: "room/1".into(),
            client_id: client.into(),
            user_id: "u".into(),
            connection_id: format!("pub-{client}"),
            connection_type: "sfu".into(),
        };
        let mut inputs = Vec::new();
        for (client, application) in [("p2", "acme"), ("p1", "acme"), ("p3", "")] {
            let log = switchyard_recording::log::Log {
                path: channel_dir.join(format!("pub-{client}.json")),
                connection: connection(client, application),
            };
            let file = channel_dir.join(format!("pub-{client}-0.mkv"));
            log.started(&file, "video").unwrap();
            inputs.push(switchyard_recording::mux::Input {
                file,
                kind: "video",
                offset_ms: 0,
                frames: 1,
                undecodable: 0,
            });
        }
        let muxed = Muxed {
            path: dir.join("sessions").join("room_1-5.mkv"),
            start_timestamp: 5,
            duration_ms: 3000,
            video_frames: 1,
            audio_frames: 0,
            inputs,
        };
        let events = mixed(&muxed, None);
        let stored = mixed(&muxed, Some("s3://bucket/sessions/room_1-5.mkv"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(&stored[0].recording, Some(Recording::Mixed { url, .. }) if url == "s3://bucket/sessions/room_1-5.mkv"),
            "{stored:?}"
        );
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.kind, Kind::RecordingMixed);
        assert_eq!(
            (e.application_id.as_str(), e.channel_id.as_str()),
            ("acme", "room/1")
        );
        let Some(Recording::Mixed {
            url, client_ids, ..
        }) = &e.recording
        else {
            panic!("{e:?}")
        };
        assert!(
            url.starts_with("file:///") && url.ends_with("/sessions/room_1-5.mkv"),
            "{url}"
        );
        assert_eq!(client_ids, &["p1", "p2"]);
    }
}
