//! Recording through a gateway: the admin API's start and stop for a channel, or for one
//! connection (a publication) on the media server that holds it. The channel is
//! marked recorded in presence, which every gateway reads when it places a publication (the
//! `record` flag of the publish and mix requests), and each media server holding one of the
//! channel's publications is asked to record them now (the cluster API's `/recording`). The
//! media servers write and move the files; see `switchyard/src/recording/roles.rs`.

use std::collections::BTreeSet;

use switchyard_controlplane::error::Error;

use super::Gateway;
use crate::api::{RecordedFileInfo, RecordingReply, RecordingRequest};
use crate::registry::MediaServerRecord;

impl Gateway {
    /// Records `channel`'s publications, now and as they come, until
    /// [`Gateway::stop_recording`]. Returns how many tracks started recording now.
    pub async fn start_recording(&self, channel: &str) -> Result<usize, Error> {
        self.presence.set_recorded(channel, true).await?;
        tracing::info!(channel, "recording on");
        let mut tracks = 0;
        for reply in self.ask_servers(channel, true).await? {
            tracks += reply.tracks;
        }
        Ok(tracks)
    }

    /// Stops recording `channel`; `None` if it was not recorded. Returns the files finished.
    pub async fn stop_recording(
        &self,
        channel: &str,
    ) -> Result<Option<Vec<RecordedFileInfo>>, Error> {
        if !self.presence.is_recorded(channel).await? {
            return Ok(None);
        }
        self.presence.set_recorded(channel, false).await?;
        tracing::info!(channel, "recording off");
        let mut files = Vec::new();
        for reply in self.ask_servers(channel, false).await? {
            files.extend(reply.files);
        }
        Ok(Some(files))
    }

    /// Records one publication of `channel` (`on`) or stops, on the media server that holds
    /// it; `None` when there is no such publication. Returns the server's reply.
    pub async fn record_publication(
        &self,
        channel: &str,
        publication: &str,
        on: bool,
    ) -> Result<Option<RecordingReply>, Error> {
        let Some(entry) = self.presence.publication(channel, publication).await? else {
            return Ok(None);
        };
        let server = self.server(&entry.server).await?;
        let request = RecordingRequest {
            channel: channel.to_string(),
            on,
            publication: Some(publication.to_string()),
        };
        let reply = self
            .media
            .call::<RecordingReply>(&server, "recording", &request)
            .await?;
        Ok(Some(reply.unwrap_or_default()))
    }

    /// Whether new publications in `channel` are to be recorded by an administrator's request
    /// (a channel configuration's `recording` is the other way). Presence unreadable: not.
    pub(crate) async fn recorded(&self, channel: &str) -> bool {
        self.presence
            .is_recorded(channel)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(channel, "cannot tell whether the channel is recorded: {e}");
                false
            })
    }

    /// Asks every media server holding a publication of `channel` to record it (`on`) or stop.
    async fn ask_servers(&self, channel: &str, on: bool) -> Result<Vec<RecordingReply>, Error> {
        let servers: BTreeSet<String> = self
            .presence
            .publications(channel)
            .await?
            .into_iter()
            .map(|(_, p)| p.server)
            .collect();
        let request = RecordingRequest {
            channel: channel.to_string(),
            on,
            publication: None,
        };
        let mut replies = Vec::new();
        for id in servers {
            // A server gone since took its publications with it.
            let Ok(server): Result<MediaServerRecord, _> = self.server(&id).await else {
                continue;
            };
            let reply = self
                .media
                .call::<RecordingReply>(&server, "recording", &request)
                .await?;
            replies.extend(reply);
        }
        Ok(replies)
    }
}
