//! The monitor's view of a cluster's recordings: the media servers' movers put each
//! connection's log in object storage (after the files it names, see
//! [`crate::mover::Mover::pass_recordings`]) and the muxers put each session's JSON there;
//! the mirror keeps a copy of those JSON files in the monitor's own recordings directory, so
//! the monitor works on them as on a local directory, sharing no disk with the media servers.
//! Media files stay in storage: a muxer fetches a session's files when it muxes it.

use std::collections::HashMap;
use std::path::Path;

use crate::objects::{Error, Objects};

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
    pub fn pass(&mut self, dir: &Path) -> Result<usize, Error> {
        let mut copied = 0;
        for object in self.objects.list("")? {
            if !object.key.ends_with(".json") {
                continue;
            }
            let seen = (object.size, object.e_tag.clone());
            if self.copied.get(&object.key) == Some(&seen) {
                continue;
            }
            self.objects.get_file(&object.key, dir)?;
            self.copied.insert(object.key, seen);
            copied += 1;
        }
        Ok(copied)
    }
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
        std::fs::remove_dir_all(&root).unwrap();
    }
}
