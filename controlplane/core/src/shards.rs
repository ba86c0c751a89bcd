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
            producer: t.producer(),
            ssrcs: (0..t.spec.rids.len().max(1))
                .map(|_| Ssrc(rand::random::<u32>() | 1))
                .collect(),
        })
        .collect()
}

/// Where a subscription goes, as far as the channel's state says now.
enum Place {
    /// This worker's router of the channel: its own, or a shard already linked.
    Here(usize, RouterId),
    /// A shard on `far` that the publication's tracks must be linked to first.
    Link {
        home: usize,
        home_router: RouterId,
        far: usize,
        far_router: RouterId,
        tracks: Vec<Track>,
    },
}

impl AppState {
    /// Where a new subscription to `publication` of `channel` goes: (worker, router). The
    /// channel's own, or a shard on the least loaded worker, linked for the publication first.
    pub(crate) async fn place_subscription(
        &self,
        channel: &str,
        publication: &str,
    ) -> Result<(usize, RouterId), Error> {
        // Most subscriptions need no link: they do not wait for one being made.
        if let Place::Here(worker, router) = self.subscription_place(channel, publication)? {
            return Ok((worker, router));
        }
        // One link at a time, decided again under the lock: two subscribers arriving
        // together make one link.
        let _linking = self.linking.lock().await;
        let (home, home_router, far, far_router, tracks) =
            match self.subscription_place(channel, publication)? {
                Place::Here(worker, router) => return Ok((worker, router)),
                Place::Link {
                    home,
                    home_router,
                    far,
                    far_router,
                    tracks,
                } => (home, home_router, far, far_router, tracks),
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

    /// Where a subscription to `publication` goes by the loads now (see [`Place`]); makes the
    /// channel's shard router on the chosen worker if it has none there yet.
    fn subscription_place(&self, channel: &str, publication: &str) -> Result<Place, Error> {
        let mut rooms = self.rooms();
        let far = rooms.least_loaded();
        let far_load = rooms.load(far);
        let home_load = rooms.channels.get(channel).map(|c| rooms.load(c.worker));
        let (Some(ch), Some(home_load)) = (rooms.channels.get_mut(channel), home_load) else {
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
            return Ok(Place::Here(ch.worker, ch.router));
        }
        let shard = ch.shards.entry(far).or_insert_with(|| Shard {
            router: ids::router(),
            links: Default::default(),
        });
        if shard.links.contains_key(publication) {
            return Ok(Place::Here(far, shard.router));
        }
        Ok(Place::Link {
            home: ch.worker,
            home_router: ch.router,
            far,
            far_router: shard.router,
            tracks: p.tracks.clone(),
        })
    }
}

// ok: every unwrap() below is in this test-only module, on values the test made
#[cfg(test)]
mod tests {
    use switchyard_dataplane::dtls::Identity;
    use switchyard_dataplane::ice::Credentials;
    use switchyard_dataplane::media::{Codec, MediaKind};

    use super::*;
    use crate::rooms::{Owner, Publication};

    /// Publishes a two-layer video track and an audio track as `id` of `participant`, with
    /// their producers in the channel's router on its worker.
    async fn publish(state: &AppState, participant: &str, id: &str, data: bool) {
        let (worker, router) = {
            let mut rooms = state.rooms();
            let ch = rooms.channel("room");
            (ch.worker, ch.router)
        };
        let audio = Track::for_test(MediaKind::Audio, Codec::Opus, ids::producer().0);
        let mut video = Track::for_test(MediaKind::Video, Codec::Vp8, ids::producer().0);
        video.spec.rids = vec!["q".into(), "h".into()];
        let transport = ids::transport();
        let spec = TransportSpec {
            id: transport,
            router,
            kind: TransportKind::WebRtc {
                local_ice: Credentials::random(),
                remote_ice: Credentials::random(),
                remote_fingerprint: Identity::generate().unwrap().fingerprint().clone(),
            },
            producers: vec![audio.spec.clone(), video.spec.clone()],
            consumers: Vec::new(),
            data: None,
        };
        state.media.create_transport(worker, spec).await.unwrap();
        let publication = Publication {
            participant: participant.into(),
            transport,
            tracks: vec![audio, video],
            data: data.then(ids::producer),
            mixed: None,
        };
        assert!(state.rooms().publish("room", worker, id, publication));
    }

    /// Counts a subscription transport on `worker`, as `subscribe` does.
    fn subscribed(state: &AppState, worker: usize) {
        let owner = Owner::Subscription(state.rooms().next_name("sub"));
        state
            .rooms()
            .add_transport("room", worker, ids::transport(), owner);
    }

    /// Subscribers stay on the channel's worker up to the threshold, then go to a less loaded
    /// one, whose shard gets one link per publication; publications with data channels keep
    /// theirs home; unpublishing closes the link.
    #[tokio::test]
    async fn subscribers_spread_past_the_threshold_over_one_link_per_publication() {
        let mut state = crate::session::tests::state_on(2, 43200);
        state.shard_after = Some(2);
        let (alice, _) = state.join("room", "", "alice", None);
        publish(&state, &alice, "pub", false).await;
        let (home, router) = {
            let rooms = state.rooms();
            (rooms.channels["room"].worker, rooms.channels["room"].router)
        };
        let other = 1 - home;

        assert_eq!(
            state.place_subscription("room", "pub").await.unwrap(),
            (home, router)
        );
        subscribed(&state, home);
        let (worker, shard) = state.place_subscription("room", "pub").await.unwrap();
        assert_eq!(worker, other);
        assert_ne!(shard, router);
        subscribed(&state, other);
        assert_eq!(
            state.place_subscription("room", "pub").await.unwrap(),
            (other, shard),
            "the link is made once"
        );
        let links = |state: &AppState| {
            let rooms = state.rooms();
            rooms.channels["room"].shards[&other].links.clone()
        };
        assert_eq!(links(&state).len(), 1);
        // As loaded as the channel's worker: the channel's worker again.
        subscribed(&state, other);
        assert_eq!(
            state.place_subscription("room", "pub").await.unwrap(),
            (home, router)
        );

        // Data channels are routed on one worker: their subscribers stay home.
        subscribed(&state, home);
        publish(&state, &alice, "chat", true).await;
        assert_eq!(
            state.place_subscription("room", "chat").await.unwrap(),
            (home, router)
        );

        // Without a threshold, a channel stays on its worker.
        state.shard_after = None;
        assert_eq!(
            state.place_subscription("room", "pub").await.unwrap(),
            (home, router)
        );

        state.unpublish("room", &alice, "pub").unwrap();
        assert!(links(&state).is_empty());
        assert!(state.place_subscription("room", "pub").await.is_err());
    }
}
