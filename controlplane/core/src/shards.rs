//! A channel across workers.
//!
//! A channel lives on one worker (its router there forwards every packet to every
//! subscriber on one core). Once that worker carries `AppState::shard_after` transports and
//! another carries fewer, a new subscription goes to the least loaded worker instead: to the
//! channel's router there (its shard), which receives the subscribed publication over a shard
//! link, a pair of in-process transports (`TransportKind::Shard`, see the data plane's
//! `router::mirror`). The link carries every layer of every track, so a shard's subscribers
//! choose their layers as the home worker's do. Links are made once per publication and
//! shard, and closed with the publication.
//!
//! Subscriptions that take the publication's data channels stay on the home worker: data
//! channel messages are routed within one worker.

use switchyard_dataplane::spec::{
    ProducerSpec, RouterId, ShardSpec, ShardStream, Ssrc, TransportKind, TransportSpec,
};

use crate::error::Error;
use crate::ids;
use crate::rooms::{Shard, Track};
use crate::session::AppState;

/// Transports a worker carries before new subscribers go to a less loaded one, unless
/// `MEDIA:SHARDAFTER` says otherwise. Around a quarter of what one core forwards to at 720p
/// (docs/benchmarks.md), so that a large channel spreads before keyframe fan-out on one core
/// delays the last subscribers.
pub const SHARD_AFTER: usize = 250;

/// A producer as a shard link's far end has it: the same id, codec and layers, its layers
/// bound to the link's SSRCs rather than learned from extensions; feedback to the home end
/// (NACK, PLI, FIR), no congestion control inside the process, and no speaking detection
/// (the home router does that).
fn copy(spec: &ProducerSpec) -> ProducerSpec {
    ProducerSpec {
        ssrc: None,
        mid: String::new(),
        mid_ext: None,
        rid_ext: None,
        nack: true,
        pli: true,
        fir: true,
        remb: false,
        audio_level_ext: None,
        twcc_ext: None,
        ..spec.clone()
    }
}

/// The link's SSRC for each layer of each track, chosen at random.
fn streams(tracks: &[Track]) -> Vec<ShardStream> {
    tracks
        .iter()
        .map(|t| ShardStream {
            producer: t.producer,
            ssrcs: (0..t.spec.rids.len().max(1))
                .map(|_| Ssrc(rand::random::<u32>() | 1))
                .collect(),
        })
        .collect()
}

impl AppState {
    /// Where a new subscription to `publication` of `channel` goes: (worker, router). The
    /// channel's own, or a shard on the least loaded worker, linked for the publication first.
    pub(crate) async fn place_subscription(
        &self,
        channel: &str,
        publication: &str,
    ) -> Result<(usize, RouterId), Error> {
        // One link at a time: two subscribers arriving together make one link.
        let _linking = self.linking.lock().await;
        let (home, home_router, far, far_router, tracks) = {
            let mut rooms = self.rooms();
            let far = rooms.least_loaded();
            let (home_load, far_load) = (
                rooms.load(rooms.channels.get(channel).map_or(0, |c| c.worker)),
                rooms.load(far),
            );
            let Some(ch) = rooms.channels.get_mut(channel) else {
                return Err(Error::NotFound(format!("no channel {channel}")));
            };
            let Some(p) = ch.publications.get(publication) else {
                return Err(Error::NotFound(format!(
                    "no publication {publication} in channel {channel}"
                )));
            };
            let spread = self.shard_after.is_some_and(|n| home_load >= n)
                && far != ch.worker
                && far_load < home_load
                && p.data.is_none();
            if !spread {
                return Ok((ch.worker, ch.router));
            }
            let shard = ch.shards.entry(far).or_insert_with(|| Shard {
                router: ids::router(),
                links: Default::default(),
            });
            if shard.links.contains_key(publication) {
                return Ok((far, shard.router));
            }
            (ch.worker, ch.router, far, shard.router, p.tracks.clone())
        };
        let streams = streams(&tracks);
        let (home_end, far_end) = (ids::transport(), ids::transport());
        let link = |id, router, worker, peer, producers| TransportSpec {
            id,
            router,
            kind: TransportKind::Shard(Box::new(ShardSpec {
                worker,
                peer,
                streams: streams.clone(),
            })),
            producers,
            consumers: Vec::new(),
            data: None,
        };
        let copies = tracks.iter().map(|t| copy(&t.spec)).collect();
        // The far end first: what the home end sends at once finds it.
        let far_spec = link(far_end, far_router, home, home_end, copies);
        self.media.create_transport(far, far_spec).await?;
        let home_spec = link(home_end, home_router, far, far_end, Vec::new());
        if let Err(e) = self.media.create_transport(home, home_spec).await {
            self.close_media(far, far_end);
            return Err(Error::Gone(format!(
                "publication {publication} is gone ({e})"
            )));
        }
        let mut rooms = self.rooms();
        let recorded = rooms
            .channels
            .get_mut(channel)
            .filter(|c| c.publications.contains_key(publication))
            .and_then(|c| c.shards.get_mut(&far))
            .map(|s| s.links.insert(publication.to_string(), (home_end, far_end)));
        drop(rooms);
        if recorded.is_none() {
            self.close_media(home, home_end);
            self.close_media(far, far_end);
            return Err(Error::Gone(format!("publication {publication} is gone")));
        }
        tracing::info!(channel, publication, worker = far, home_end = %home_end, far_end = %far_end, "publication linked to a shard");
        Ok((far, far_router))
    }
}
