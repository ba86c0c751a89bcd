//! A recording on disk: the Matroska writer's bytes written to `<name>.rec` as they come, and,
//! when the recording ends, its end written and the file renamed to `<name>` (LiveSwitch's
//! naming: a `.rec` file is one still being written, or one a crash left).
//!
//! Plain blocking file I/O, a few writes a second per recording: the recorder runs it off the
//! forwarding path.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::mkv::{self, Track, Writer};

/// The suffix of a file still being written.
pub const ACTIVE_SUFFIX: &str = "rec";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Frame(#[from] mkv::Error),
}

/// A file being written as `<path>.rec`, renamed to `path` when it is finished.
pub struct Recording {
    path: PathBuf,
    active: PathBuf,
    file: File,
    writer: Writer,
}

impl Recording {
    /// Creates `<path>.rec` (replacing any) and writes the file's header: `tracks`, and
    /// `origin`, the wall-clock time of time 0 (see [`Writer::new`]).
    pub fn create(
        path: &Path,
        tracks: &[Track],
        origin: Option<SystemTime>,
    ) -> Result<Recording, Error> {
        let mut active = path.as_os_str().to_owned();
        active.push(".");
        active.push(ACTIVE_SUFFIX);
        let active = PathBuf::from(active);
        let file = File::create(&active).map_err(|source| Error::Io {
            path: active.clone(),
            source,
        })?;
        let mut recording = Recording {
            path: path.to_path_buf(),
            active,
            file,
            writer: Writer::new(tracks, origin),
        };
        recording.write_out()?;
        Ok(recording)
    }

    /// Adds a frame (see [`Writer::frame`]); a cluster it closes goes to the file at once.
    pub fn frame(
        &mut self,
        track: usize,
        at_ms: u64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), Error> {
        self.writer.frame(track, at_ms, keyframe, data)?;
        self.write_out()
    }

    /// Writes what the writer made (whole clusters) to the file. No fsync: what reached the
    /// kernel survives a killed process, and syncing every second for every recording would
    /// cost the disk more than a power cut loses.
    fn write_out(&mut self) -> Result<(), Error> {
        let bytes = self.writer.take();
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&bytes)
            .map_err(|source| self.io(source))
    }

    /// How long the recording is so far, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.writer.duration_ms()
    }

    /// Ends the file (the last cluster, cues, duration, seek head), syncs it and renames it to
    /// its final name, which it returns.
    pub fn finish(self) -> Result<PathBuf, Error> {
        let Recording {
            path,
            active,
            mut file,
            writer,
        } = self;
        let ending = writer.finish();
        let io = |source| Error::Io {
            path: active.clone(),
            source,
        };
        file.write_all(&ending.append).map_err(io)?;
        for (at, bytes) in &ending.overwrite {
            file.seek(SeekFrom::Start(*at)).map_err(io)?;
            file.write_all(bytes).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&active, &path).map_err(io)?;
        Ok(path)
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.active.clone(),
            source,
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::Codec;

    fn track() -> Track {
        Track {
            codec: Codec::Opus { channels: 1 },
            width: 0,
            height: 0,
        }
    }

    /// While recording, only `<name>.rec` exists, holding every closed cluster; finishing
    /// renames it to `<name>`, a longer file (the end written).
    #[test]
    fn rec_while_active_final_name_when_finished() {
        let dir = std::env::temp_dir().join(format!("sy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("conn-1.mka");
        let mut r = Recording::create(&path, &[track()], None).unwrap();
        for i in 0..120 {
            r.frame(0, i * 20, true, &[0xFC, 0xFF, 0xFE]).unwrap();
        }
        let active = dir.join("conn-1.mka.rec");
        let cut = std::fs::metadata(&active).unwrap().len();
        assert!(cut > 100 && !path.exists());
        assert_eq!(r.duration_ms(), 2380);
        let done = r.finish().unwrap();
        assert_eq!(done, path);
        assert!(!active.exists());
        assert!(std::fs::metadata(&path).unwrap().len() > cut);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
