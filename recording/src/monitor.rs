//! The recording monitor: it watches the recordings directory (one directory per channel, each
//! holding its connections' files and JSON logs), closes the files a crash left, groups a
//! channel's finished recordings into sessions and has each session muxed once.
//!
//! Everything it knows comes from the directory, so it can run apart from the media servers
//! and pick up after a restart:
//! - a channel with a recording still open (a `startRecording` without its `stopRecording`) is
//!   left until it closes;
//! - recordings whose times overlap, or are less than [`SESSION_GAP_MS`] apart, are one
//!   session, muxed once it ended more than that long ago (someone may still join); the
//!   session's muxed file is `sessions/<channel>-<start>.mkv` beside its JSON, and the JSON,
//!   written last, marks it done; a session handed to a muxer elsewhere (through a queue) is
//!   marked by `sessions/<id>.job` until then;
//! - at start ([`Monitor::close_orphans`]), every `.rec` file is a crash's leftover: a
//!   recording is renamed to its final name with a `stopRecording` read from the file (its
//!   date, frames, length), and a muxer's unfinished output is deleted to be made again.
//!
//! Plain blocking I/O: the server runs [`Monitor::poll`] on a blocking thread every few
//! seconds, one mux at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::file::ACTIVE_SUFFIX;
use crate::log::log_of;
use crate::mux::{self, Muxed};
use crate::read::Reader;
use crate::track::Summary;

/// Recordings of a channel this close in time are one session (a participant reconnecting, a
/// republish), though they do not overlap.
pub const SESSION_GAP_MS: u64 = 5_000;
/// The directory of muxed sessions, beside the channels' directories.
pub const SESSIONS: &str = "sessions";

/// A recording, from its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub file: PathBuf,
    pub client_id: String,
    /// Whose it is, as the log says.
    pub application_id: String,
    pub user_id: String,
    pub connection_id: String,
    pub connection_type: String,
    /// When its first frame arrived, in ms since the Unix epoch (while it records, when it
    /// started).
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Its time 0 moved into lip sync with its publication's audio (see [`lip_sync`]).
    pub synced_ms: Option<u64>,
}

impl Recorded {
    fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.duration_ms)
    }
}

/// What a channel's logs say.
#[derive(Debug, Default)]
pub struct Scan {
    pub finished: Vec<Recorded>,
    /// Recordings started and not stopped: still being written, or left by a crash.
    pub open: Vec<Recorded>,
}

/// One log line, as far as the monitor reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    timestamp: u64,
    #[serde(default)]
    application_id: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    connection_type: String,
    #[serde(default)]
    data: Data,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Data {
    file: Option<String>,
    first_frame_timestamp: Option<u64>,
    first_frame_sender_timestamp: Option<u64>,
    #[serde(default)]
    duration_ms: u64,
}

/// What one connection's log says (its text; its files are in `dir`): its finished files,
/// each with its first frame on the sender's clock, and those still open. Lines that do not
/// parse (a line a crash cut short) are skipped.
#[derive(Debug, Default)]
pub struct LogRead {
    pub finished: Vec<(Recorded, Option<u64>)>,
    pub open: Vec<Recorded>,
}

pub fn read_log(text: &str, dir: &Path) -> LogRead {
    let mut read = LogRead::default();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        let recorded = Recorded {
            file: line
                .data
                .file
                .as_deref()
                .map(|f| dir.join(f))
                .unwrap_or_default(),
            client_id: line.client_id,
            application_id: line.application_id,
            user_id: line.user_id,
            connection_id: line.connection_id,
            connection_type: line.connection_type,
            start_ms: line.data.first_frame_timestamp.unwrap_or(line.timestamp),
            duration_ms: line.data.duration_ms,
            synced_ms: None,
        };
        match line.kind.as_str() {
            "startRecording" => read.open.push(recorded),
            "stopRecording" => {
                // The start it ends: the one of its file, or for a file that held nothing
                // (none named), the oldest open.
                let started = match line.data.file {
                    Some(_) => read.open.iter().position(|o| o.file == recorded.file),
                    None => (!read.open.is_empty()).then_some(0),
                };
                if let Some(i) = started {
                    read.open.remove(i);
                }
                if line.data.file.is_some() {
                    let sent = line.data.first_frame_sender_timestamp;
                    read.finished.push((recorded, sent));
                }
            }
            _ => {}
        }
    }
    read
}

/// Reads the JSON logs of the channel directory `dir`.
pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
        let mut read = read_log(&text, dir);
        lip_sync(&mut read.finished);
        scan.open.extend(read.open);
        scan.finished
            .extend(read.finished.into_iter().map(|(r, _)| r));
    }
    Ok(scan)
}

/// Arrival times place each file within a few tens of milliseconds: a video keyframe takes
/// longer to encode and send than an audio frame. One sender's tracks are timed on one clock
/// in its sender reports, so a publication's video is placed against its audio by that clock:
/// its time 0 becomes the audio's plus the difference of their first frames on the sender's
/// clock. A correction over [`MAX_LIP_SYNC_MS`] is not believed (a sender that restarted its
/// clock) and left out.
pub fn lip_sync(publication: &mut [(Recorded, Option<u64>)]) {
    let audio = publication
        .iter()
        .find(|(r, sent)| is_audio(&r.file) && sent.is_some())
        .map(|(r, sent)| (r.start_ms, *sent));
    let Some((audio_start, Some(audio_sent))) = audio else {
        return;
    };
    for (r, sent) in publication.iter_mut() {
        let Some(sent) = *sent else { continue };
        if is_audio(&r.file) {
            continue;
        }
        let synced = audio_start as i64 + (sent as i64 - audio_sent as i64);
        if (synced - r.start_ms as i64).abs() <= MAX_LIP_SYNC_MS {
            r.synced_ms = u64::try_from(synced).ok();
        }
    }
}

/// The largest lip-sync correction believed, in ms.
pub const MAX_LIP_SYNC_MS: i64 = 1_000;

fn is_audio(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "mka")
}

/// A channel's recordings that belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub start_ms: u64,
    pub end_ms: u64,
    pub recordings: Vec<Recorded>,
}

/// Groups recordings into sessions: sorted by start, a recording joins the session before it
/// if it starts before that session's end plus [`SESSION_GAP_MS`].
pub fn sessions(mut recordings: Vec<Recorded>) -> Vec<Session> {
    recordings.sort_by_key(|r| r.start_ms);
    let mut out: Vec<Session> = Vec::new();
    for r in recordings {
        match out.last_mut() {
            Some(s) if r.start_ms <= s.end_ms.saturating_add(SESSION_GAP_MS) => {
                s.end_ms = s.end_ms.max(r.end_ms());
                s.recordings.push(r);
            }
            _ => out.push(Session {
                start_ms: r.start_ms,
                end_ms: r.end_ms(),
                recordings: vec![r],
            }),
        }
    }
    out
}

/// A session's JSON, beside its muxed file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionLog<'a> {
    channel_id: &'a str,
    start_timestamp: u64,
    end_timestamp: u64,
    participants: Vec<&'a str>,
    #[serde(flatten)]
    muxed: Option<&'a Muxed>,
    /// Why the session could not be muxed (it is not tried again; delete this file to retry).
    error: Option<String>,
}

/// A channel's name, its sessions and its open recordings.
type ChannelState = (String, Vec<Session>, Vec<Recorded>);

/// The monitor of one recordings directory.
pub struct Monitor {
    pub dir: PathBuf,
    pub config: mux::Config,
}

impl Monitor {
    /// Closes what a crash left (see the module's documentation); returns the recordings
    /// closed.
    pub fn close_orphans(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut closed = Vec::new();
        for channel in channel_dirs(&self.dir)? {
            for entry in std::fs::read_dir(&channel)? {
                let path = entry?.path();
                if path.extension().is_none_or(|e| e != ACTIVE_SUFFIX) {
                    continue;
                }
                if channel.file_name().is_some_and(|n| n == SESSIONS) {
                    tracing::warn!(
                        ?path,
                        "removing an unfinished muxed file; its session is muxed again"
                    );
                    std::fs::remove_file(&path)?;
                } else if let Some(done) = close_orphan(&path)? {
                    tracing::warn!(file = ?done, "closed a recording a crash left");
                    closed.push(done);
                }
            }
        }
        Ok(closed)
    }

    /// One pass, muxing here: every settled session not muxed yet is muxed now (see
    /// [`Monitor::pending`] and [`Monitor::run`]). Returns the sessions muxed now.
    pub fn poll(&self) -> std::io::Result<Vec<Muxed>> {
        let mut muxed = Vec::new();
        for job in self.pending()? {
            muxed.extend(self.run(&job)?);
        }
        Ok(muxed)
    }

    /// Each channel's name, its sessions (finished recordings grouped) and its open
    /// recordings.
    fn channels(&self) -> std::io::Result<Vec<ChannelState>> {
        let mut out = Vec::new();
        for channel in channel_dirs(&self.dir)? {
            let Some(name) = channel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            if name == SESSIONS {
                continue;
            }
            let scan = scan(&channel)?;
            out.push((name, sessions(scan.finished), scan.open));
        }
        Ok(out)
    }

    /// `path` relative to the recordings directory, `/`-separated (as jobs, the recording
    /// database and object storage name files).
    fn key(&self, path: &Path) -> Option<String> {
        let relative = path.strip_prefix(&self.dir).ok()?;
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(parts.join("/"))
    }

    /// The sessions to mux: those of channels without open recordings that ended over
    /// [`SESSION_GAP_MS`] ago, neither muxed (`sessions/<id>.json`) nor handed to a muxer
    /// (`sessions/<id>.job`, see [`Monitor::queued`]).
    pub fn pending(&self) -> std::io::Result<Vec<Job>> {
        let now = now_ms();
        let mut jobs = Vec::new();
        for (name, sessions, open) in self.channels()? {
            if !open.is_empty() {
                continue;
            }
            let settled = sessions
                .into_iter()
                .filter(|s| s.end_ms.saturating_add(SESSION_GAP_MS) < now);
            for session in settled {
                let id = format!("{name}-{}", session.start_ms);
                let out_dir = self.dir.join(SESSIONS);
                if out_dir.join(format!("{id}.json")).exists()
                    || out_dir.join(format!("{id}.job")).exists()
                {
                    continue;
                }
                let files = session
                    .recordings
                    .iter()
                    .filter_map(|r| self.key(&r.file))
                    .collect();
                let synced = session
                    .recordings
                    .iter()
                    .filter_map(|r| Some((self.key(&r.file)?, r.synced_ms?)))
                    .collect();
                jobs.push(Job {
                    id,
                    channel_id: name.clone(),
                    start_timestamp: session.start_ms,
                    end_timestamp: session.end_ms,
                    participants: participants(&session),
                    files,
                    synced,
                });
            }
        }
        Ok(jobs)
    }

    /// Everything the directory says, for the recording database: each recording (open ones
    /// `recording`), and each session with its state: `pending` (not muxed yet), `queued`
    /// (handed to a muxer), `muxed`, `failed` or `stored` (moved to object storage).
    pub fn index(&self) -> std::io::Result<Index> {
        let mut index = Index::default();
        let out_dir = self.dir.join(SESSIONS);
        for (name, sessions, open) in self.channels()? {
            for r in open {
                if let Some(key) = self.key(&r.file) {
                    index.recordings.push(Indexed {
                        key,
                        open: true,
                        session: None,
                        recorded: r,
                    });
                }
            }
            for session in sessions {
                let id = format!("{name}-{}", session.start_ms);
                let json = out_dir.join(format!("{}.json", safe(&id)));
                let done: Option<serde_json::Value> = std::fs::read(&json)
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok());
                let (state, muxed, error) = match done {
                    Some(d) if !d["storage"].is_null() => {
                        let url = d["storage"]["muxed"].as_str().map(str::to_string);
                        ("stored", url, None)
                    }
                    Some(d) if !d["error"].is_null() => {
                        ("failed", None, d["error"].as_str().map(str::to_string))
                    }
                    Some(d) => ("muxed", d["path"].as_str().map(str::to_string), None),
                    None if out_dir.join(format!("{}.job", safe(&id))).exists() => {
                        ("queued", None, None)
                    }
                    None => ("pending", None, None),
                };
                index.sessions.push(IndexedSession {
                    id: id.clone(),
                    channel_id: name.clone(),
                    start_ms: session.start_ms,
                    end_ms: session.end_ms,
                    participants: participants(&session),
                    state,
                    muxed,
                    error,
                });
                for r in session.recordings {
                    if let Some(key) = self.key(&r.file) {
                        index.recordings.push(Indexed {
                            key,
                            open: false,
                            session: Some(id.clone()),
                            recorded: r,
                        });
                    }
                }
            }
        }
        Ok(index)
    }

    /// Marks `job` as handed to a muxer elsewhere (a queue took it), so that it is not handed
    /// out again: `sessions/<id>.job`, holding the job.
    pub fn queued(&self, job: &Job) -> std::io::Result<()> {
        let out_dir = self.dir.join(SESSIONS);
        std::fs::create_dir_all(&out_dir)?;
        let text = serde_json::to_vec_pretty(job).map_err(std::io::Error::other)?;
        std::fs::write(out_dir.join(format!("{}.job", safe(&job.id))), text)
    }

    /// Muxes `job` into `sessions/<id>.mkv` and writes its JSON, which marks it done; `None`
    /// (and nothing done) when it is done already, as a job delivered twice is. A session
    /// that cannot be muxed gets its JSON with the error and is not tried again.
    pub fn run(&self, job: &Job) -> std::io::Result<Option<Muxed>> {
        let id = safe(&job.id);
        let out_dir = self.dir.join(SESSIONS);
        let json = out_dir.join(format!("{id}.json"));
        if json.exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(&out_dir)?;
        // Only files inside the recordings directory: a job names them relative to it.
        let inside = |f: &&String| {
            Path::new(f.as_str())
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        let files: Vec<PathBuf> = job
            .files
            .iter()
            .filter(inside)
            .map(|f| self.dir.join(f))
            .filter(|f| f.exists())
            .collect();
        let synced: HashMap<PathBuf, u64> = job
            .synced
            .iter()
            .filter(|(f, _)| inside(f))
            .map(|(f, at)| (self.dir.join(f), *at))
            .collect();
        let started = std::time::Instant::now();
        let out = out_dir.join(format!("{id}.mkv"));
        let result = mux::mux_with(&files, &synced, &out, &self.config);
        let log = SessionLog {
            channel_id: &job.channel_id,
            start_timestamp: job.start_timestamp,
            end_timestamp: job.end_timestamp,
            participants: job.participants.iter().map(String::as_str).collect(),
            muxed: result.as_ref().ok(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        let text = serde_json::to_vec_pretty(&log).map_err(std::io::Error::other)?;
        // Written whole under another name, then renamed: the JSON marks the session done,
        // so it must never be seen half-written.
        let partial = out_dir.join(format!("{id}.json.partial"));
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &json)?;
        match result {
            Ok(m) => {
                tracing::info!(session = %id, path = ?m.path, duration_ms = m.duration_ms, files = files.len(), took_ms = started.elapsed().as_millis() as u64, "session muxed");
                Ok(Some(m))
            }
            Err(e) => {
                tracing::error!(session = %id, "session not muxed: {e}");
                Ok(None)
            }
        }
    }
}

/// A session to mux, as the monitor hands it to a muxer (in-process, or through a queue): the
/// files are relative to the recordings directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// `<channel>-<start>`.
    pub id: String,
    pub channel_id: String,
    pub start_timestamp: u64,
    pub end_timestamp: u64,
    pub participants: Vec<String>,
    pub files: Vec<String>,
    /// Files whose time 0 lip sync moved (ms since the Unix epoch), by name.
    #[serde(default)]
    pub synced: BTreeMap<String, u64>,
}

/// What [`Monitor::index`] found.
#[derive(Debug, Default)]
pub struct Index {
    pub recordings: Vec<Indexed>,
    pub sessions: Vec<IndexedSession>,
}

/// A recording and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// Its path under the recordings directory, `/`-separated.
    pub key: String,
    /// Still being written (or left by a crash, until closed).
    pub open: bool,
    /// The session it belongs to, once finished.
    pub session: Option<String>,
    pub recorded: Recorded,
}

/// A session and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSession {
    pub id: String,
    pub channel_id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub participants: Vec<String>,
    pub state: &'static str,
    /// The muxed file: its object URL once stored, else its path.
    pub muxed: Option<String>,
    pub error: Option<String>,
}

/// The session's participants (client ids), sorted, once each.
fn participants(session: &Session) -> Vec<String> {
    let mut participants: Vec<String> = session
        .recordings
        .iter()
        .map(|r| r.client_id.clone())
        .collect();
    participants.sort_unstable();
    participants.dedup();
    participants
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `id` as a file name: what is not a letter, a digit, `-` or `_` becomes `_` (a job may come
/// from a queue).
fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The directories under `dir` (the channels', and `sessions`); none when `dir` does not
/// exist yet.
pub fn channel_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Closes the recording `<name>.rec`: renamed to `<name>`, and its log (the JSON file in the
/// same directory whose `startRecording` names it) gets a `stopRecording` read from the file.
/// A file that holds no frame is deleted. Returns the final name of a file kept.
fn close_orphan(rec: &Path) -> std::io::Result<Option<PathBuf>> {
    let done = rec.with_extension("");
    let (origin, frames, duration_ms) = match Reader::open(rec) {
        Ok(mut r) => {
            let mut frames = 0u64;
            let mut last = 0;
            while let Some(f) = r.next_frame() {
                frames += 1;
                last = last.max(f.at_ms);
            }
            (r.origin, frames, last)
        }
        Err(_) => (None, 0, 0),
    };
    let log = log_of(&done)?;
    let kept = frames > 0;
    if kept {
        std::fs::rename(rec, &done)?;
    } else {
        std::fs::remove_file(rec)?;
    }
    if let Some(log) = log {
        log.stopped(&Summary {
            path: kept.then(|| done.clone()),
            origin,
            sender_origin_ms: None,
            first_rtp: None,
            last_rtp: None,
            duration_ms,
            frames,
            dropped: 0,
        })?;
    }
    Ok(kept.then_some(done))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn rec(client: &str, start_ms: u64, duration_ms: u64) -> Recorded {
        Recorded {
            file: PathBuf::from(format!("{client}-{start_ms}.mka")),
            client_id: client.into(),
            start_ms,
            duration_ms,
            ..Recorded::default()
        }
    }

    #[test]
    fn overlapping_or_close_recordings_are_one_session() {
        let s = sessions(vec![
            rec("b", 5_000, 10_000),
            rec("a", 0, 8_000),
            rec("c", 19_000, 1_000),
            rec("d", 30_000, 1_000),
        ]);
        let shape: Vec<(u64, u64, usize)> = s
            .iter()
            .map(|s| (s.start_ms, s.end_ms, s.recordings.len()))
            .collect();
        assert_eq!(shape, [(0, 20_000, 3), (30_000, 31_000, 1)]);
        assert!(sessions(Vec::new()).is_empty());
    }

    /// A publication's video is placed against its audio by their first frames on the
    /// sender's clock; an implausible correction, or a track without sender reports, is not.
    #[test]
    fn video_is_placed_against_its_audio_by_the_senders_clock() {
        let file = |name: &str, start_ms| Recorded {
            file: PathBuf::from(name),
            client_id: "p1".into(),
            start_ms,
            duration_ms: 5_000,
            ..Recorded::default()
        };
        // Video arrived 60 ms after the audio, but was sent 20 ms after it.
        let mut publication = vec![
            (file("p-0.mkv", 10_060), Some(900_020)),
            (file("p-1.mka", 10_000), Some(900_000)),
            (file("q-0.mkv", 10_070), Some(905_000)),
            (file("r-0.mkv", 10_080), None),
        ];
        lip_sync(&mut publication);
        let synced: Vec<Option<u64>> = publication.iter().map(|(r, _)| r.synced_ms).collect();
        assert_eq!(synced, [Some(10_020), None, None, None]);
        let mut no_audio_report = vec![
            (file("p-0.mkv", 10_060), Some(900_020)),
            (file("p-1.mka", 10_000), None),
        ];
        lip_sync(&mut no_audio_report);
        assert_eq!(no_audio_report[0].0.synced_ms, None);
    }

    #[test]
    fn logs_say_what_is_finished_and_what_is_open() {
        let dir = std::env::temp_dir().join(format!("sy-monitor-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("room")).unwrap();
        let lines = [
            r#"{"type":"startRecording","timestamp":1000,"clientId":"p1","userId":"u1","connectionId":"c1","connectionType":"sfu","data":{"file":"a-0.mka"}}"#,
            r#"{"type":"startRecording","timestamp":1000,"clientId":"p1","data":{"file":"a-1.mkv"}}"#,
            r#"{"type":"stopRecording","timestamp":9000,"clientId":"p1","userId":"u1","connectionId":"c1","connectionType":"sfu","data":{"file":"a-0.mka","firstFrameTimestamp":1200,"durationMs":7000}}"#,
            r#"{"type":"stopRec"#,
        ];
        std::fs::write(dir.join("room/a.json"), lines.join("\n")).unwrap();
        std::fs::write(dir.join("room/a-0.mka"), b"").unwrap();
        let s = scan(&dir.join("room")).unwrap();
        let open: Vec<&Path> = s.open.iter().map(|r| r.file.as_path()).collect();
        assert_eq!(open, [dir.join("room/a-1.mkv")]);
        assert_eq!(
            s.finished,
            [Recorded {
                file: dir.join("room/a-0.mka"),
                client_id: "p1".into(),
                user_id: "u1".into(),
                connection_id: "c1".into(),
                connection_type: "sfu".into(),
                start_ms: 1200,
                duration_ms: 7000,
                ..Recorded::default()
            }]
        );

        // The database's view: one open, one finished in the pending session.
        let monitor = Monitor {
            dir: dir.clone(),
            config: mux::Config::default(),
        };
        let index = monitor.index().unwrap();
        let rows: Vec<(&str, bool, Option<&str>)> = index
            .recordings
            .iter()
            .map(|r| (r.key.as_str(), r.open, r.session.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [
                ("room/a-1.mkv", true, None),
                ("room/a-0.mka", false, Some("room-1200"))
            ]
        );
        assert_eq!(index.sessions.len(), 1);
        assert_eq!(index.sessions[0].state, "pending");
        assert!(monitor.pending().unwrap().is_empty(), "a recording is open");

        // A file that held nothing is stopped without a name: nothing is open any more, and
        // the session is handed out, then marked queued.
        let empty =
            r#"{"type":"stopRecording","timestamp":9000,"clientId":"p1","data":{"durationMs":0}}"#;
        let all = [&lines[..3], &[empty]].concat().join("\n");
        std::fs::write(dir.join("room/a.json"), all).unwrap();
        let jobs = monitor.pending().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].files, ["room/a-0.mka"]);
        monitor.queued(&jobs[0]).unwrap();
        assert_eq!(monitor.index().unwrap().sessions[0].state, "queued");
        assert!(monitor.pending().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
