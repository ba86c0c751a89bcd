//! A recorded connection's JSON log, in LiveSwitch's terms: one JSON object per line, appended,
//! so a crash keeps every entry written before it. `startRecording` when a track's file starts,
//! `updateRecording` when its track is muted, paused or live again (see `activity`),
//! `stopRecording` when it is finished, each naming its file; the stop entry has the file's
//! first and last RTP timestamps, which the sender's reports map to wall-clock time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::activity::Change;
use crate::track::Summary;

/// Who a recording belongs to: the fields every entry repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The application whose client it is (empty in logs written before it was recorded, and
    /// for a cluster media server's participants, which it does not know).
    #[serde(default)]
    pub application_id: String,
    pub channel_id: String,
    /// The participant.
    pub client_id: String,
    pub user_id: String,
    /// The publication.
    pub connection_id: String,
    /// `sfu` or `mcu`.
    pub connection_type: String,
}

/// Where a connection's log is, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub path: PathBuf,
    pub connection: Connection,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Milliseconds since the Unix epoch.
    timestamp: u128,
    #[serde(flatten)]
    connection: &'a Connection,
    data: D,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Started<'a> {
    file: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Updated<'a> {
    file: &'a str,
    /// `muted` (audio frames go on, silent), `paused` (no frames), `live`.
    state: &'a str,
    /// When it began, in milliseconds since the Unix epoch.
    since_timestamp: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stopped<'a> {
    file: Option<&'a str>,
    /// When the file's first frame arrived (its time 0), in milliseconds since the Unix epoch.
    first_frame_timestamp: Option<u128>,
    /// When it was sent, on the sender's clock (its sender reports), likewise.
    first_frame_sender_timestamp: Option<u64>,
    duration_ms: u64,
    frames: u64,
    first_rtp_timestamp: Option<u32>,
    last_rtp_timestamp: Option<u32>,
}

impl Log {
    /// Appends `startRecording` for `file` (its final name), a track of `kind` (audio, video).
    pub fn started(&self, file: &Path, kind: &str) -> std::io::Result<()> {
        let file = file_name(file);
        self.append("startRecording", Started { file: &file, kind })
    }

    /// Appends `updateRecording`: `file`'s track changed state (`muted`, `paused`, `live`)
    /// `ago` before now.
    pub fn updated(&self, file: &Path, change: Change) -> std::io::Result<()> {
        let file = file_name(file);
        let since = SystemTime::now()
            .checked_sub(change.ago)
            .unwrap_or(UNIX_EPOCH);
        self.append(
            "updateRecording",
            Updated {
                file: &file,
                state: change.state.as_str(),
                since_timestamp: unix_ms(since),
            },
        )
    }

    /// Appends `stopRecording` with what the file holds.
    pub fn stopped(&self, summary: &Summary) -> std::io::Result<()> {
        let file = summary.path.as_deref().map(file_name);
        self.append(
            "stopRecording",
            Stopped {
                file: file.as_deref(),
                first_frame_timestamp: summary.origin.map(unix_ms),
                first_frame_sender_timestamp: summary.sender_origin_ms,
                duration_ms: summary.duration_ms,
                frames: summary.frames,
                first_rtp_timestamp: summary.first_rtp,
                last_rtp_timestamp: summary.last_rtp,
            },
        )
    }

    fn append(&self, kind: &'static str, data: impl Serialize) -> std::io::Result<()> {
        let entry = Entry {
            kind,
            timestamp: unix_ms(SystemTime::now()),
            connection: &self.connection,
            data,
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write of a whole line to a file opened for appending: entries never interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }
}

/// The log (a JSON file beside `file`) that started recording `file`, and so whose the file
/// is. Lines that do not parse are skipped; none when no log names it.
pub fn log_of(file: &Path) -> std::io::Result<Option<Log>> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Ok(None);
    };
    let name = name.to_string_lossy();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        for line in std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&path)?)) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line?) else {
                continue;
            };
            if value["type"] == "startRecording"
                && value["data"]["file"] == *name
                && let Ok(connection) = serde_json::from_value::<Connection>(value)
            {
                return Ok(Some(Log { path, connection }));
            }
        }
    }
    Ok(None)
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// A file's name within its directory (the log sits beside its files).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_lines_of_json() {
        let dir = std::env::temp_dir().join(format!("sy-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = Log {
            path: dir.join("pub1.json"),
            connection: Connection {
                application_id: "acme".into(),
                channel_id: "room".into(),
                client_id: "p1".into(),
                user_id: "alice".into(),
                connection_id: "pub1".into(),
                connection_type: "sfu".into(),
            },
        };
        log.started(&dir.join("pub1-0.mkv"), "video").unwrap();
        let summary = Summary {
            path: Some(dir.join("pub1-0.mkv")),
            origin: Some(UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_000)),
            sender_origin_ms: Some(1_800_000_000_040),
            first_rtp: Some(7),
            last_rtp: Some(90_007),
            duration_ms: 1000,
            frames: 30,
            dropped: 0,
        };
        log.stopped(&summary).unwrap();
        let text = std::fs::read_to_string(&log.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "startRecording");
        assert_eq!(lines[0]["channelId"], "room");
        assert_eq!(lines[0]["userId"], "alice");
        assert_eq!(lines[0]["applicationId"], "acme");
        assert_eq!(lines[0]["data"]["file"], "pub1-0.mkv");
        assert_eq!(lines[1]["type"], "stopRecording");
        assert_eq!(lines[1]["data"]["lastRtpTimestamp"], 90_007);
        assert_eq!(lines[1]["data"]["durationMs"], 1000);
        assert_eq!(
            lines[1]["data"]["firstFrameTimestamp"],
            1_800_000_000_000u64
        );
        // Whose a file is, from the log that started it.
        let found = log_of(&dir.join("pub1-0.mkv")).unwrap();
        assert_eq!(found.as_ref(), Some(&log));
        assert_eq!(log_of(&dir.join("pub9-0.mkv")).unwrap(), None);
        // Logs written before the application was recorded still read.
        let old: Connection = serde_json::from_str(
            r#"{"channelId":"c","clientId":"p","userId":"u","connectionId":"x","connectionType":"sfu"}"#,
        )
        .unwrap();
        assert_eq!(old.application_id, "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
