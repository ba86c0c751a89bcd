//! The monitor's view of a cluster's recordings: the media servers' movers put each
//! connection's log in object storage (after the files it names, see
//! [`crate::mover::Mover::pass_recordings`]) and the muxers put each session's JSON there;
//! the mirror keeps a copy of those JSON files in the monitor's own recordings directory, so
//! the monitor works on them as on a local directory, sharing no disk with the media servers.
//! Media files stay in storage: a muxer fetches a session's files when it muxes it.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::monitor::{SESSIONS, read_log};
use crate::objects::{Error, Objects};

/// A log in storage with recordings open and not written for this long belongs to a media
/// server that is gone (a live one uploads it every [`crate::mover::LOG_HEARTBEAT`]).
pub const ORPHANED_AFTER: Duration = Duration::from_secs(120);

/// Copies of the JSON files in one storage URL.
pub struct Mirror {
    objects: Objects,
    /// The objects copied, with their size and ETag then.
    copied: HashMap<String, (u64, Option<String>)>,
}

impl Mirror {
    pub fn new(objects: Objects) -> Mirror {
        Mirror {
            objects,
            copied: HashMap::new(),
        }
    }

    /// One pass: every JSON object new or changed since it was last copied is copied under
    /// `dir`. Returns how many were.
    ///
    /// A log whose recordings are open and which its media server has not written for
    /// [`ORPHANED_AFTER`] is a dead server's: its copy here gets a `stopRecording` without a
    /// file for each open recording, so that the channel's session is muxed with the files
    /// there are (the dead server's own are on its disk; it closes and moves them if it
    /// comes back, too late for the session).
    pub fn pass(&mut self, dir: &Path) -> Result<usize, Error> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let orphaned_ms = i64::try_from(ORPHANED_AFTER.as_millis()).unwrap_or(i64::MAX);
        let mut copied = 0;
        for object in self.objects.list("")? {
            if !object.key.ends_with(".json") {
                continue;
            }
            let seen = (object.size, object.e_tag.clone());
            if self.copied.get(&object.key) != Some(&seen) {
                self.objects.get_file(&object.key, dir)?;
                self.copied.insert(object.key.clone(), seen);
                copied += 1;
            }
            let is_log = !object.key.starts_with(&format!("{SESSIONS}/"));
            if is_log && now_ms.saturating_sub(object.modified_ms) > orphaned_ms {
                close_orphaned(&dir.join(&object.key)).map_err(|source| Error::Io {
                    path: dir.join(&object.key),
                    source,
                })?;
            }
        }
        Ok(copied)
    }
}

/// Ends the open recordings of the log copy `log` with `stopRecording` entries that name no
/// file (see [`read_log`]); nothing when none is open.
fn close_orphaned(log: &Path) -> std::io::Result<()> {
    let Some(channel) = log.parent() else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    let open = read_log(&text, channel).open;
    if open.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        ?log,
        recordings = open.len(),
        "a media server stopped writing this log with recordings open: closed without their files"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut lines = String::new();
    for r in &open {
        let entry = serde_json::json!({
            "type": "stopRecording",
            "timestamp": now,
            "clientId": r.client_id,
            "connectionId": r.connection_id,
            "data": { "orphaned": true },
        });
        lines.push_str(&entry.to_string());
        lines.push('\n');
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(log)?;
    if !text.is_empty() && !text.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.write_all(lines.as_bytes())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// A media server's mover puts a log and its finished file; the mirror copies the log
    /// only, once, and again when it changes.
    #[test]
    fn copies_new_and_changed_logs_only() {
        let root = std::env::temp_dir().join(format!("sy-mirror-{}", std::process::id()));
        let server = root.join("server/recordings");
        let monitor = root.join("monitor/recordings");
        let bucket = root.join("bucket");
        std::fs::create_dir_all(server.join("room")).unwrap();
        std::fs::create_dir_all(&bucket).unwrap();
        let url = format!("file://{}", bucket.display());
        let started = r#"{"type":"startRecording","timestamp":1000,"clientId":"p1","data":{"file":"p1-0.mka"}}"#;
        let log = server.join("room/p1.json");
        std::fs::write(&log, format!("{started}\n")).unwrap();
        let mut mover = crate::mover::Mover::new(&url).unwrap();
        assert_eq!(mover.pass_recordings(&server), 0, "nothing finished yet");
        let mut mirror = Mirror::new(Objects::new(&url).unwrap());
        assert_eq!(mirror.pass(&monitor).unwrap(), 1);
        assert_eq!(mirror.pass(&monitor).unwrap(), 0, "unchanged");
        assert_eq!(
            crate::monitor::scan(&monitor.join("room"))
                .unwrap()
                .open
                .len(),
            1
        );

        // Finished: the file goes up before the log that names it, and leaves the server.
        std::fs::write(server.join("room/p1-0.mka"), vec![7u8; 500]).unwrap();
        let stopped = r#"{"type":"stopRecording","timestamp":5000,"clientId":"p1","data":{"file":"p1-0.mka","firstFrameTimestamp":1100,"durationMs":3900}}"#;
        std::fs::write(&log, format!("{started}\n{stopped}\n")).unwrap();
        assert_eq!(mover.pass_recordings(&server), 1);
        assert!(!server.join("room/p1-0.mka").exists());
        assert!(log.exists(), "the log stays");
        assert_eq!(mover.pass_recordings(&server), 0, "moved once");
        assert_eq!(
            std::fs::metadata(bucket.join("room/p1-0.mka"))
                .unwrap()
                .len(),
            500
        );
        assert_eq!(mirror.pass(&monitor).unwrap(), 1);
        assert!(
            !monitor.join("room/p1-0.mka").exists(),
            "media stays in storage"
        );
        let scan = crate::monitor::scan(&monitor.join("room")).unwrap();
        assert!(scan.open.is_empty());
        assert_eq!(scan.finished.len(), 1);
        // The muxer's side: the file fetched to the same place under its directory.
        let objects = Objects::new(&url).unwrap();
        let fetched = objects
            .get_file("room/p1-0.mka", &root.join("muxer"))
            .unwrap();
        assert_eq!(std::fs::read(fetched).unwrap(), vec![7u8; 500]);
        assert!(objects.get_file("../escape", &root.join("muxer")).is_err());
        assert!(objects.head("room/p1-0.mka").unwrap().is_some());
        assert!(objects.head("room/none.mka").unwrap().is_none());

        // A second publisher's server died with its recording open: once its log in storage
        // is older than ORPHANED_AFTER, the copy gets a stop and nothing is open any more.
        let dead = bucket.join("room/p2.json");
        std::fs::write(&dead, format!("{}\n", started.replace("p1", "p2"))).unwrap();
        assert_eq!(mirror.pass(&monitor).unwrap(), 1);
        let scan = crate::monitor::scan(&monitor.join("room")).unwrap();
        assert_eq!(scan.open.len(), 1, "alive a while yet");
        let old = SystemTime::now() - ORPHANED_AFTER - Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(old)
            .unwrap();
        mirror.pass(&monitor).unwrap();
        mirror.pass(&monitor).unwrap();
        let scan = crate::monitor::scan(&monitor.join("room")).unwrap();
        assert!(scan.open.is_empty(), "{:?}", scan.open);
        assert_eq!(scan.finished.len(), 1, "the live server's file only");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
