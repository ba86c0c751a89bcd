//! Recording a channel's publications, each track to its own file as it arrived (no
//! transcoding): Opus to `.mka`, VP8, VP9, AV1 and H264 to `.mkv`, under
//! `<recordings>/<channel>/<publication>-<track>.<ext>` (`.rec` while being written).
//!
//! A recorded track is a stream like a mixer input: a transport of the channel's router
//! (`TransportKind::Mixer`) whose one consumer takes the track's producer, so the router does
//! for the recorder what it does for a subscriber (the top simulcast layer, one continuous
//! stream across layer switches, keyframe requests upstream). Its RTP reaches an MCU thread,
//! where a `TrackRecorder` writes the file. Closing the transport (the publication ended, the
//! recording stopped) finishes the file.
//!
//! Turned on per channel by the admin API (all-in-one) for the channel's publications now and
//! as they come, until turned off.

use std::path::{Path, PathBuf};

use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_recording::log::{Connection, Log};
use switchyard_recording::track::{Media, Summary};

use crate::error::Error;
use crate::ids;
use crate::mix::consuming_stream;
use crate::rooms::{Owner, Track};
use crate::session::{AppState, connection_event};
use crate::webhooks::{Event, Kind, Recording};

impl AppState {
    /// Records `channel`'s publications, those there now and those to come, until
    /// [`AppState::stop_recording`]. Returns how many tracks started recording now.
    pub async fn start_recording(&self, channel: &str) -> Result<usize, Error> {
        self.can_record()?;
        let publications: Vec<(String, Vec<Track>)> = {
            let mut rooms = self.rooms();
            rooms.recorded.insert(channel.to_string());
            rooms.channels.get(channel).map_or_else(Vec::new, |c| {
                c.publications
                    .iter()
                    .map(|(id, p)| (id.clone(), p.tracks.clone()))
                    .collect()
            })
        };
        tracing::info!(channel, "recording on");
        let mut started = 0;
        for (publication, tracks) in publications {
            started += self
                .record_tracks(channel, &publication, &tracks, false)
                .await;
        }
        Ok(started)
    }

    /// Whether this server records: it needs a data directory and an MCU thread.
    fn can_record(&self) -> Result<(), Error> {
        if self.recordings.is_none() || self.media.mcu().is_none() {
            return Err(Error::BadRequest(
                "this server does not record (it needs a data directory and an MCU thread, --mcu-workers 1 or more)".into(),
            ));
        }
        Ok(())
    }

    /// Stops recording `channel`: every file is finished. Returns what each holds.
    pub async fn stop_recording(&self, channel: &str) -> Vec<Summary> {
        self.rooms().recorded.remove(channel);
        tracing::info!(channel, "recording off");
        self.finish_recordings(channel, None).await
    }

    /// Records one publication of `channel` (its tracks there now), whether or not the
    /// channel is recorded. Returns how many tracks started; an unknown publication is an
    /// error.
    pub async fn start_recording_publication(
        &self,
        channel: &str,
        publication: &str,
    ) -> Result<usize, Error> {
        self.can_record()?;
        let tracks: Vec<Track> = {
            let rooms = self.rooms();
            let found = rooms
                .channels
                .get(channel)
                .and_then(|c| Some((c, c.publications.get(publication)?)));
            let Some((ch, p)) = found else {
                return Err(Error::NotFound(format!(
                    "no publication {publication} in channel {channel}"
                )));
            };
            // Tracks recorded already are left as they are.
            p.tracks
                .iter()
                .filter(|t| !ch.recordings.contains_key(&t.producer()))
                .cloned()
                .collect()
        };
        tracing::info!(channel, publication, "recording the publication");
        Ok(self
            .record_tracks(channel, publication, &tracks, true)
            .await)
    }

    /// Stops recording one publication of `channel`; its files are finished. `None` if it was
    /// not recorded.
    pub async fn stop_recording_publication(
        &self,
        channel: &str,
        publication: &str,
    ) -> Option<Vec<Summary>> {
        let recorded = {
            let rooms = self.rooms();
            rooms
                .channels
                .get(channel)
                .and_then(|c| Some((c, c.publications.get(publication)?)))
                .is_some_and(|(c, p)| {
                    p.tracks
                        .iter()
                        .any(|t| c.recordings.contains_key(&t.producer()))
                })
        };
        if !recorded {
            return None;
        }
        tracing::info!(channel, publication, "recording of the publication off");
        Some(self.finish_recordings(channel, Some(publication)).await)
    }

    /// Finishes the recordings of `channel`'s publication `only`, or of all its publications:
    /// their `recording.stopped` events, their streams closed, their files' summaries.
    async fn finish_recordings(&self, channel: &str, only: Option<&str>) -> Vec<Summary> {
        let (worker, router, streams) = {
            let mut rooms = self.rooms();
            let Some(ch) = rooms.channels.get_mut(channel) else {
                return Vec::new();
            };
            let mut stopped: Vec<Event> = Vec::new();
            let mut streams = Vec::new();
            for (id, p) in &ch.publications {
                if only.is_some_and(|o| o != id) {
                    continue;
                }
                let producers: Vec<_> = p
                    .tracks
                    .iter()
                    .filter(|t| ch.recordings.contains_key(&t.producer()))
                    .map(|t| t.producer())
                    .collect();
                if producers.is_empty() {
                    continue;
                }
                let owner = Owner::Publication(id.clone());
                stopped.extend(connection_event(
                    ch,
                    channel,
                    &owner,
                    Kind::RecordingStopped,
                ));
                streams.extend(producers);
            }
            let streams: Vec<_> = match only {
                Some(_) => streams
                    .iter()
                    .filter_map(|producer| ch.recordings.remove(producer))
                    .collect(),
                None => std::mem::take(&mut ch.recordings).into_values().collect(),
            };
            for e in stopped {
                self.webhooks.emit(e);
            }
            (ch.worker, ch.router, streams)
        };
        let mut summaries = Vec::new();
        if let Some(mcu) = self.media.mcu() {
            let thread = mcu_thread(router.0, mcu.threads());
            for transport in streams {
                summaries.extend(mcu.stop_recording(thread, transport).await);
                self.close_media(worker, transport);
            }
        }
        summaries
    }

    /// Whether `channel` is recorded.
    pub fn is_recorded(&self, channel: &str) -> bool {
        self.rooms().recorded.contains(channel)
    }

    /// Starts recording `tracks` (publication `publication`'s) when `channel` is recorded, or
    /// `always` (its configuration's `recording`); how many started. A track that cannot be recorded (a codec the recorder does not take,
    /// a failure) is logged and left out.
    pub(crate) async fn record_tracks(
        &self,
        channel: &str,
        publication: &str,
        tracks: &[Track],
        always: bool,
    ) -> usize {
        let (Some(dir), Some(mcu)) = (&self.recordings, self.media.mcu()) else {
            return 0;
        };
        let (worker, router, connection, started_event) = {
            let rooms = self.rooms();
            let Some(ch) = rooms
                .channels
                .get(channel)
                .filter(|_| always || rooms.recorded.contains(channel))
            else {
                return 0;
            };
            let Some(p) = ch.publications.get(publication) else {
                return 0;
            };
            let who = ch.participants.get(&p.participant);
            let connection = Connection {
                application_id: who.map_or_else(String::new, |u| u.application.clone()),
                channel_id: channel.to_string(),
                client_id: p.participant.clone(),
                user_id: who.map_or_else(String::new, |u| u.user.clone()),
                connection_id: publication.to_string(),
                connection_type: if p.mixed.is_some() { "mcu" } else { "sfu" }.into(),
            };
            let owner = Owner::Publication(publication.to_string());
            let started = connection_event(ch, channel, &owner, Kind::RecordingStarted);
            (ch.worker, ch.router, connection, started)
        };
        let thread = mcu_thread(router.0, mcu.threads());
        let dir = dir.join(file_name(channel));
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(channel, ?dir, "not recorded: {e}");
            return 0;
        }
        let log = Log {
            path: dir.join(format!("{}.json", file_name(publication))),
            connection,
        };
        // Names this publication's log gave files already (an earlier recording of it, whose
        // file may have gone to object storage since): a new file never takes one.
        let logged = tokio::fs::read_to_string(&log.path)
            .await
            .unwrap_or_default();
        let mut files = Vec::new();
        for (i, track) in tracks.iter().enumerate() {
            let (media, extension) = match (track.kind(), track.codec()) {
                // WebRTC's Opus is negotiated as two channels (`opus/48000/2`).
                (MediaKind::Audio, Codec::Opus) => (Media::Opus { channels: 2 }, "mka"),
                (MediaKind::Video, Codec::Vp8) => (Media::Vp8, "mkv"),
                (MediaKind::Video, Codec::Vp9) => (Media::Vp9, "mkv"),
                (MediaKind::Video, Codec::Av1) => (Media::Av1, "mkv"),
                (MediaKind::Video, Codec::H264) => (Media::H264, "mkv"),
                (_, codec) => {
                    tracing::info!(channel, publication, %codec, "track not recorded: the recorder takes Opus, VP8, VP9, AV1 and H264");
                    continue;
                }
            };
            let path = unused_path(&dir, &file_name(publication), i, extension, &logged);
            let transport = ids::transport();
            let start = mcu.start_recording(
                thread,
                transport,
                worker,
                media,
                path.clone(),
                Some(log.clone()),
            );
            if let Err(e) = start.await {
                tracing::warn!(channel, publication, "track not recorded: {e}");
                continue;
            }
            let ssrc = rand::random::<u32>() | 1;
            let spec = consuming_stream(transport, router, thread, track, ssrc, None);
            if let Err(e) = self.media.create_transport(worker, spec).await {
                tracing::warn!(channel, publication, "track not recorded: {e}");
                mcu.stop_recording(thread, transport).await;
                continue;
            }
            let kept = {
                let mut rooms = self.rooms();
                let recorded = always || rooms.recorded.contains(channel);
                rooms
                    .channels
                    .get_mut(channel)
                    .filter(|c| recorded && c.publications.contains_key(publication))
                    .map(|c| c.recordings.insert(track.producer(), transport))
                    .is_some()
            };
            if kept {
                tracing::info!(channel, publication, ?path, "recording track");
                let kind = if track.kind() == MediaKind::Video {
                    "video"
                } else {
                    "audio"
                };
                if let Err(e) = log.started(&path, kind) {
                    tracing::error!(channel, publication, path = ?log.path, "recording log: {e}");
                }
                files.push(
                    path.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                );
            } else {
                // The publication ended, or recording stopped, meanwhile.
                self.close_media(worker, transport);
            }
        }
        let started = files.len();
        if let Some(e) = started_event.filter(|_| started > 0) {
            self.webhooks.emit(e.recording(Recording::Files { files }));
        }
        started
    }
}

/// `<dir>/<publication>-<track>.<extension>`, or with `-2`, `-3`, ... after the track for a
/// publication recorded again: a name no file has (finished, or `.rec` while written) and no
/// `startRecording` in `logged` (the publication's log) named.
fn unused_path(
    dir: &Path,
    publication: &str,
    track: usize,
    extension: &str,
    logged: &str,
) -> PathBuf {
    let mut again = 1;
    loop {
        let name = if again == 1 {
            format!("{publication}-{track}.{extension}")
        } else {
            format!("{publication}-{track}-{again}.{extension}")
        };
        let path = dir.join(&name);
        let rec = dir.join(format!(
            "{name}.{}",
            switchyard_recording::file::ACTIVE_SUFFIX
        ));
        let named = logged.contains(&format!("\"file\":\"{name}\""));
        if !named && !path.exists() && !rec.exists() {
            return path;
        }
        again += 1;
    }
}

/// The MCU thread a channel's recordings run on, spread by its router.
fn mcu_thread(router: u64, threads: usize) -> usize {
    (router % threads.max(1) as u64) as usize
}

/// `name` (a channel or publication, from clients) as a file name: what is not a letter, a
/// digit, `-` or `_` becomes `_`, so no name reaches outside its directory.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() { "_".into() } else { safe }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_recorded_again_gets_new_names() {
        let dir = std::env::temp_dir().join(format!("sy-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(unused_path(&dir, "p", 0, "mkv", ""), dir.join("p-0.mkv"));
        // Written now, or logged (its file moved away since).
        std::fs::write(dir.join("p-0.mkv.rec"), b"").unwrap();
        assert_eq!(unused_path(&dir, "p", 0, "mkv", ""), dir.join("p-0-2.mkv"));
        let logged = r#"{"type":"startRecording","data":{"file":"p-1.mka","kind":"audio"}}"#;
        assert_eq!(
            unused_path(&dir, "p", 1, "mka", logged),
            dir.join("p-1-2.mka")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_stay_inside_their_directory() {
        assert_eq!(file_name("room-1_a"), "room-1_a");
        assert_eq!(file_name("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_name(".."), "__");
        assert_eq!(file_name(""), "_");
        assert_eq!(file_name("café"), "caf_");
    }
}
