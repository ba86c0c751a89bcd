//! The mover: recordings to object storage (see [`crate::objects`]), the local copies deleted
//! only after the upload is verified.
//!
//! Where the muxer shares the recordings directory (all-in-one, or roles on one disk), the
//! mover moves whole sessions once muxed ([`Mover::pass`]). A session's JSON
//! (`sessions/<id>.json`, which the monitor writes when it muxed the session) names its files:
//! the muxed file and the recordings it was made of. The mover uploads each (multipart above
//! [`MULTIPART_ABOVE`]), checks the stored object's size against the local file (and its ETag
//! against the one the upload returned), uploads copies of the recordings' JSON logs, and only
//! then deletes the local media files. It then adds `storage` to the session's JSON (kept
//! locally, and uploaded too), which marks the session moved; the small JSON files stay, so
//! the monitor knows the session is done.
//!
//! In a cluster, a media server's mover sends each recording as it finishes, with its log
//! ([`Mover::pass_recordings`]): the monitor reads the logs from storage and the muxers fetch
//! the files from there.
//!
//! Every step can be repeated: a mover stopped midway (a crash, the storage down) uploads
//! again at its next pass, since nothing was deleted before every object was verified. A
//! failure waits before its next try, doubling from 2 s to 5 minutes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::monitor::{SESSIONS, channel_dirs, read_log};
pub use crate::objects::{Error, MULTIPART_ABOVE, Stored};
use crate::objects::{Objects, relative};

const FIRST_RETRY: Duration = Duration::from_secs(2);
const LAST_RETRY: Duration = Duration::from_secs(300);

/// What a session's JSON gets once it is moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Where the objects are: the storage URL.
    pub url: String,
    /// The muxed file's object URL.
    pub muxed: Option<String>,
    pub objects: Vec<Stored>,
    /// When, in ms since the Unix epoch.
    pub moved_at: u64,
}

/// The mover of one recordings directory to one storage URL.
pub struct Mover {
    objects: Objects,
    /// Sessions (by JSON) and logs that failed: when to try again, and the wait after that.
    retry: HashMap<PathBuf, (Instant, Duration)>,
    /// The logs uploaded by [`Mover::pass_recordings`], with their length then, and when
    /// those with open recordings were last uploaded (see [`LOG_HEARTBEAT`]).
    logs: HashMap<PathBuf, u64>,
    open_logs: HashMap<PathBuf, Instant>,
}

/// How often a media server uploads a log with open recordings again, unchanged: a log in
/// storage older than the monitor's [`crate::mirror::ORPHANED_AFTER`] with recordings open
/// is a dead server's.
pub const LOG_HEARTBEAT: Duration = Duration::from_secs(30);

impl Mover {
    /// A mover to `url` (see [`Objects::new`]).
    pub fn new(url: &str) -> Result<Mover, Error> {
        Ok(Mover {
            objects: Objects::new(url)?,
            retry: HashMap::new(),
            logs: HashMap::new(),
            open_logs: HashMap::new(),
        })
    }

    /// The storage client.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// One pass over `dir` (the recordings directory): every muxed session not moved yet and not
    /// waiting to retry is moved. Returns the sessions moved now; failures are logged and
    /// retried later.
    pub fn pass(&mut self, dir: &Path) -> Vec<(PathBuf, Storage)> {
        let sessions = dir.join(SESSIONS);
        let Ok(entries) = std::fs::read_dir(&sessions) else {
            return Vec::new();
        };
        let mut jsons: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        jsons.sort();
        let now = Instant::now();
        let mut moved = Vec::new();
        for json in jsons {
            if self.retry.get(&json).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            match self.move_session(dir, &json) {
                Ok(Some(storage)) => {
                    self.retry.remove(&json);
                    tracing::info!(session = ?json, objects = storage.objects.len(), url = %storage.url, "session moved to storage");
                    moved.push((json, storage));
                }
                Ok(None) => {}
                Err(e) => {
                    let wait = self.back_off(json.clone(), now);
                    tracing::warn!(session = ?json, retry_in_s = wait.as_secs(), "session not moved: {e}");
                }
            }
        }
        moved
    }

    /// Schedules `what` (a session's JSON, a log) to be tried again: 2 s after its first
    /// failure, then twice as long each time up to 5 minutes. Returns the wait.
    fn back_off(&mut self, what: PathBuf, now: Instant) -> Duration {
        let wait = self
            .retry
            .get(&what)
            .map_or(FIRST_RETRY, |(_, w)| (*w * 2).min(LAST_RETRY));
        self.retry.insert(what, (now + wait, wait));
        wait
    }

    /// Moves the session of `json`; `None` if it needs no move (moved already, or not muxed).
    pub fn move_session(&self, dir: &Path, json: &Path) -> Result<Option<Storage>, Error> {
        let io = |source| Error::Io {
            path: json.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(json).map_err(io)?;
        let mut session: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| Error::Session(json.to_path_buf()))?;
        if !session["storage"].is_null() || !session["error"].is_null() {
            return Ok(None);
        }
        let Some(muxed) = session["path"].as_str().map(PathBuf::from) else {
            return Err(Error::Session(json.to_path_buf()));
        };
        let inputs: Vec<PathBuf> = session["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["file"].as_str().map(PathBuf::from))
                    .collect()
            })
            .unwrap_or_default();
        let media: Vec<PathBuf> = std::iter::once(muxed.clone()).chain(inputs).collect();
        // The logs of the channels the recordings are in, copied (they stay here).
        let mut logs: Vec<PathBuf> = Vec::new();
        for channel in media.iter().filter_map(|m| m.parent()) {
            if channel.ends_with(SESSIONS) {
                continue;
            }
            // None on a muxer, which fetched only the media.
            let Ok(entries) = std::fs::read_dir(channel) else {
                continue;
            };
            for entry in entries {
                let path = entry.map_err(io)?.path();
                if path.extension().is_some_and(|e| e == "json") && !logs.contains(&path) {
                    logs.push(path);
                }
            }
        }

        let mut objects = Vec::new();
        for file in media.iter().chain(&logs) {
            // A media file gone already was deleted by an earlier pass after its upload was
            // verified (or, on a muxer, was fetched from storage and is there already).
            if !file.exists() {
                continue;
            }
            objects.push(self.objects.put_file(dir, file)?);
        }

        let storage = Storage {
            url: self.objects.url().to_string(),
            muxed: relative(dir, &muxed).map(|r| self.objects.object_url(&r)),
            objects,
            moved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        // Every object verified: the local media can go.
        for file in &media {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: file.clone(),
                        source,
                    });
                }
            }
        }
        let bad = |_| Error::Session(json.to_path_buf());
        session["storage"] = serde_json::to_value(&storage).map_err(bad)?;
        let text = serde_json::to_vec_pretty(&session).map_err(bad)?;
        // Written whole under another name, then renamed: never a half-written session.
        let partial = json.with_extension("json.partial");
        std::fs::write(&partial, &text).map_err(io)?;
        std::fs::rename(&partial, json).map_err(io)?;
        self.objects.put_file(dir, json)?;
        Ok(Some(storage))
    }

    /// A media server's pass over `dir` when its recordings go to storage as they finish (in
    /// a cluster, whose muxers share no disk with it). Each connection's log that changed since
    /// its last upload is read once; the finished files it names are uploaded and verified,
    /// then the log as it was read, so that a log in storage never names a file not there
    /// yet; only then are the local media files deleted (the logs stay). A log still being
    /// written is uploaded too, so the monitor knows its recordings are open, and again every
    /// [`LOG_HEARTBEAT`] while they are, so it knows this server is alive. Returns the files
    /// uploaded; failures are logged and retried later.
    pub fn pass_recordings(&mut self, dir: &Path) -> usize {
        let Ok(channels) = channel_dirs(dir) else {
            return 0;
        };
        let now = Instant::now();
        let mut uploaded = 0;
        for channel in channels.iter().filter(|c| !c.ends_with(SESSIONS)) {
            let Ok(entries) = std::fs::read_dir(channel) else {
                continue;
            };
            let mut logs: Vec<PathBuf> = entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            logs.sort();
            for log in logs {
                if self.retry.get(&log).is_some_and(|(at, _)| *at > now) {
                    continue;
                }
                match self.upload_log(dir, &log) {
                    Ok(n) => {
                        self.retry.remove(&log);
                        uploaded += n;
                    }
                    Err(e) => {
                        let wait = self.back_off(log.clone(), now);
                        tracing::warn!(
                            ?log,
                            retry_in_s = wait.as_secs(),
                            "recording not moved: {e}"
                        );
                    }
                }
            }
        }
        uploaded
    }

    /// Uploads `log` and its finished files if it changed; returns the files uploaded.
    fn upload_log(&mut self, dir: &Path, log: &Path) -> Result<usize, Error> {
        let io = |source| Error::Io {
            path: log.to_path_buf(),
            source,
        };
        let text = std::fs::read(log).map_err(io)?;
        let length = text.len() as u64;
        let now = Instant::now();
        let heartbeat = self
            .open_logs
            .get(log)
            .is_some_and(|at| now.saturating_duration_since(*at) >= LOG_HEARTBEAT);
        if self.logs.get(log) == Some(&length) && !heartbeat {
            return Ok(0);
        }
        let channel = log
            .parent()
            .ok_or_else(|| Error::Session(log.to_path_buf()))?;
        let key = relative(dir, log).ok_or_else(|| Error::Session(log.to_path_buf()))?;
        let read = read_log(&String::from_utf8_lossy(&text), channel);
        // A finished file gone already went up at an earlier pass.
        let files: Vec<&Path> = read
            .finished
            .iter()
            .map(|(r, _)| r.file.as_path())
            .filter(|f| f.exists())
            .collect();
        for file in &files {
            let stored = self.objects.put_file(dir, file)?;
            tracing::info!(key = %stored.key, size = stored.size, "recording moved to storage");
        }
        self.objects.put_bytes(&key, text)?;
        for file in &files {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: file.to_path_buf(),
                        source,
                    });
                }
            }
        }
        self.logs.insert(log.to_path_buf(), length);
        if read.open.is_empty() {
            self.open_logs.remove(log);
        } else {
            self.open_logs.insert(log.to_path_buf(), now);
        }
        Ok(files.len())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// A recordings directory with one muxed session: (recordings, the session's JSON).
    fn recordings(root: &Path) -> (PathBuf, PathBuf) {
        let dir = root.join("recordings");
        std::fs::create_dir_all(dir.join("room")).unwrap();
        std::fs::create_dir_all(dir.join(SESSIONS)).unwrap();
        std::fs::write(dir.join("room/pub1-0.mkv"), vec![1u8; 1000]).unwrap();
        std::fs::write(dir.join("room/pub1-1.mka"), vec![2u8; 300]).unwrap();
        std::fs::write(dir.join("room/pub1.json"), b"{}\n").unwrap();
        // Above MULTIPART_ABOVE: goes up in parts.
        let muxed = dir.join("sessions/room-1.mkv");
        std::fs::write(&muxed, vec![3u8; MULTIPART_ABOVE as usize + 5]).unwrap();
        let session = serde_json::json!({
            "channelId": "room",
            "path": muxed,
            "inputs": [
                {"file": dir.join("room/pub1-0.mkv")},
                {"file": dir.join("room/pub1-1.mka")},
            ],
            "error": null,
        });
        let json = dir.join("sessions/room-1.json");
        std::fs::write(&json, serde_json::to_vec(&session).unwrap()).unwrap();
        (dir, json)
    }

    #[test]
    fn moves_verifies_then_deletes_and_marks_the_session() {
        let root = std::env::temp_dir().join(format!("sy-mover-{}", std::process::id()));
        let (dir, json) = recordings(&root);
        let bucket = root.join("bucket");
        std::fs::create_dir_all(&bucket).unwrap();
        let url = format!("file://{}/archive", bucket.display());
        let mut mover = Mover::new(&url).unwrap();
        let moved = mover.pass(&dir);
        assert_eq!(moved.len(), 1);
        let storage = &moved[0].1;
        let keys: Vec<&str> = storage.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sessions/room-1.mkv",
                "room/pub1-0.mkv",
                "room/pub1-1.mka",
                "room/pub1.json"
            ]
        );
        assert_eq!(
            storage.muxed.as_deref(),
            Some(format!("{url}/sessions/room-1.mkv").as_str())
        );
        let stored = std::fs::metadata(bucket.join("archive/sessions/room-1.mkv")).unwrap();
        assert_eq!(stored.len(), MULTIPART_ABOVE + 5);
        assert!(bucket.join("archive/sessions/room-1.json").exists());
        // The media went; the JSON stayed, marked.
        assert!(!dir.join("room/pub1-0.mkv").exists());
        assert!(!dir.join("sessions/room-1.mkv").exists());
        assert!(dir.join("room/pub1.json").exists());
        let marked: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(marked["storage"]["objects"].as_array().unwrap().len(), 4);
        assert!(mover.pass(&dir).is_empty(), "moved once");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Storage that refuses every write: nothing is deleted, and the session waits to retry.
    #[test]
    fn a_failed_upload_deletes_nothing() {
        let root = std::env::temp_dir().join(format!("sy-mover-fail-{}", std::process::id()));
        let (dir, json) = recordings(&root);
        // A file where the store's directory should be: every put fails.
        let blocked = root.join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let mut mover = Mover::new(&format!("file://{}", blocked.display())).unwrap();
        assert!(mover.pass(&dir).is_empty());
        assert!(mover.move_session(&dir, &json).is_err());
        assert!(dir.join("room/pub1-0.mkv").exists());
        assert!(dir.join("sessions/room-1.mkv").exists());
        let unmarked: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(unmarked["storage"].is_null());
        // Waiting to retry: the next pass does not try.
        assert!(mover.retry.contains_key(&json));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
