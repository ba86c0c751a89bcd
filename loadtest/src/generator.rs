//! Emulated participants: each signals like a client (its own token, WebSocket or WHIP/WHEP),
//! then hands its transports to the net thread. Publications are shared through a watch so
//! that subscribers subscribe to every publisher, whichever SFU is under test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use switchyard_dataplane::client::{self, Client, IceRole, OfferTrack, Setup};
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::sdp;
use tokio::sync::watch;

use crate::clip::Clip;
use crate::net::{Net, NetStopped, NewTransport, Role};
use crate::signal::{self, Session, Tokens};
use crate::traffic::{self, Video};
use crate::{Error, janus};
use switchyard_dataplane::remote;

/// How participants signal to Switchyard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signalling {
    /// WebSocket `/sync`: join, publish, subscribe.
    Sync,
    /// WHIP to publish, WHEP to subscribe.
    Whip,
}

/// The server under test and how to reach it.
#[derive(Debug, Clone)]
pub enum Target {
    Switchyard {
        /// `http://host:port`.
        base: String,
        tokens: Tokens,
        signalling: Signalling,
    },
    /// Janus's videoroom: every participant has its own Janus session, every publication and
    /// subscription its own plugin handle, as browsers using janus.js do.
    Janus {
        /// `http://host:port/janus`.
        url: String,
        room: u64,
    },
}

impl Target {
    pub fn sfu(&self) -> &'static str {
        match self {
            Target::Switchyard { .. } => "switchyard",
            Target::Janus { .. } => "janus",
        }
    }
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    pub video: bool,
    pub audio: bool,
    /// The video as three simulcast layers; its subscribers ask for mixed layers (`layer_of`).
    pub simulcast: bool,
}

/// The simulcast layer subscriber `index` asks for: round robin over `traffic::SIMULCAST`, so a
/// livestream's subscribers take the 180-, 360- and 720-line layers in equal shares.
fn layer_of(index: usize) -> usize {
    index % traffic::SIMULCAST.len()
}

/// The room an MCU participant joins: a Switchyard channel's mix, or a Janus AudioBridge room.
#[derive(Debug, Clone)]
pub enum MixRoom {
    Channel(String),
    AudioBridge(u64),
}

/// A publication any subscriber may take.
#[derive(Debug, Clone)]
struct Published {
    owner: usize,
    id: String,
    media: Media,
}

const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// Why a participant gave up: counted as a signalling error, logged the first few times.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    /// Switchyard's `/sync`, WHIP/WHEP or the token.
    #[error(transparent)]
    Signal(#[from] signal::Error),
    /// Its `/sync` socket closed (or failed) while it waited for publications.
    #[error("the signalling connection closed")]
    SignallingClosed(#[source] signal::Error),
    #[error(transparent)]
    Janus(#[from] janus::Error),
    /// The server's SDP lacks what the client needs to connect.
    #[error(transparent)]
    RemoteSdp(#[from] remote::Error),
    /// Janus's subscriber offer could not be answered.
    #[error(transparent)]
    Answer(sdp::Error),
    /// A Janus publication's id is Janus's numeric feed id; anything else is ours to fix.
    #[error("bad feed id {0:?}")]
    BadFeedId(String),
    #[error(transparent)]
    NetStopped(#[from] NetStopped),
    /// An MCU participant before `Generator::set_clip`, or in a room of the other server.
    #[error("no clip to send, or a mix room of the other server")]
    NotForMix,
}

/// Shared by every participant task.
pub struct Generator {
    pub net: Net,
    target: Target,
    channel: String,
    identity: Arc<Identity>,
    http: reqwest::Client,
    publications: watch::Sender<Vec<Published>>,
    stop: watch::Sender<bool>,
    /// Signalling failures (logged the first few times).
    errors: AtomicU64,
    next_ssrc: AtomicU64,
    /// What MCU participants send (`set_clip`).
    clip: OnceLock<Arc<Clip>>,
}

impl Generator {
    pub fn new(net: Net, target: Target, channel: String) -> Result<Arc<Generator>, Error> {
        let identity = Identity::generate().map_err(Error::Certificate)?;
        Ok(Arc::new(Generator {
            net,
            target,
            channel,
            identity,
            http: reqwest::Client::new(),
            publications: watch::channel(Vec::new()).0,
            stop: watch::channel(false).0,
            errors: AtomicU64::new(0),
            next_ssrc: AtomicU64::new(0x1000),
            clip: OnceLock::new(),
        }))
    }

    /// The clip MCU participants send (encoded once; the first one set stays).
    pub fn set_clip(&self, clip: Arc<Clip>) {
        let _ = self.clip.set(clip);
    }

    /// Starts MCU participant `index` in `room`: one sendrecv transport that sends the clip
    /// (its audio, and its video if it has any) and receives the mix until the run stops.
    /// `talking`: its audio is the clip's tone, else silence.
    pub fn spawn_mix(self: &Arc<Self>, index: usize, room: MixRoom, talking: bool) {
        let g = self.clone();
        tokio::spawn(async move {
            if let Err(e) = g.clone().mix_participant(index, room, talking).await {
                let n = g.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    tracing::warn!("MCU participant {index}: {e}");
                }
            }
        });
    }

    async fn mix_participant(
        self: Arc<Self>,
        index: usize,
        room: MixRoom,
        talking: bool,
    ) -> Result<(), ParticipantError> {
        let started = Instant::now();
        let clip = self
            .clip
            .get()
            .cloned()
            .ok_or(ParticipantError::NotForMix)?;
        let ice = Credentials::random();
        let fp = self.identity.fingerprint();
        let ssrc = || self.next_ssrc.fetch_add(1, Ordering::Relaxed) as u32;
        let audio = (ssrc(), AUDIO_PT);
        let video = clip.has_video().then(|| (ssrc(), VIDEO_PT));
        let mut tracks = vec![OfferTrack::SendRecv {
            codec: Codec::Opus,
            payload_type: AUDIO_PT,
            ssrc: audio.0,
            max_audio_rate: None,
        }];
        if let Some((ssrc, payload_type)) = video {
            tracks.push(OfferTrack::SendRecv {
                codec: Codec::Vp8,
                payload_type,
                ssrc,
                max_audio_rate: None,
            });
        }
        let display = format!("mix-{index}");
        // Kept until the run stops: Janus closes the PeerConnection with its session.
        let mut janus_session = None;
        let answer = match (&self.target, room) {
            (Target::Switchyard { base, tokens, .. }, MixRoom::Channel(channel)) => {
                let token = tokens.issue(&channel, &display)?;
                let offer = client::offer(&ice, fp, &tracks, rand::random::<u32>().into());
                let offer = with_audio_level(&offer);
                signal::whip_or_whep(&self.http, base, "mix", &channel, &token, offer).await?
            }
            (Target::Janus { url, .. }, MixRoom::AudioBridge(room)) => {
                // Active, as towards the videoroom (see janus.rs).
                let offer = with_audio_level(&client::offer_with(
                    &ice,
                    fp,
                    &tracks,
                    Setup::Active,
                    rand::random::<u32>().into(),
                ));
                let session = janus::Session::connect(url).await?;
                let handle = session.attach(janus::AUDIOBRIDGE).await?;
                let answer = handle.join_audiobridge(room, &display, &offer).await?;
                janus_session = Some((session, handle));
                answer
            }
            _ => return Err(ParticipantError::NotForMix),
        };
        let role = Role::Mix {
            clip,
            video,
            audio: Some(audio),
            talking,
            clock_rates: rtp_clocks(&answer),
        };
        self.connect(ice, &answer, IceRole::Controlling, role, started)?;
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
        if let Some((session, _handle)) = janus_session {
            let _ = session.destroy().await;
        }
        Ok(())
    }

    /// Starts participant `index`: it publishes `publish` (if any) and, if `subscribe`,
    /// subscribes to every other participant's publication as it appears.
    pub fn spawn(self: &Arc<Self>, index: usize, publish: Option<Media>, subscribe: bool) {
        let g = self.clone();
        tokio::spawn(async move {
            if let Err(e) = g.clone().participant(index, publish, subscribe).await {
                let n = g.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    tracing::warn!("participant {index}: {e}");
                }
            }
        });
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Ends every participant's signalling session.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn participant(
        self: Arc<Self>,
        index: usize,
        publish: Option<Media>,
        subscribe: bool,
    ) -> Result<(), ParticipantError> {
        let mut link = match &self.target {
            Target::Switchyard {
                base,
                tokens,
                signalling,
            } => {
                let token = tokens.issue(&self.channel, &format!("load-{index}"))?;
                let session = match signalling {
                    Signalling::Sync => {
                        let ws = format!("{}/sync", base.replacen("http", "ws", 1));
                        Some(Box::new(Session::join(&ws, &token, &self.channel).await?))
                    }
                    Signalling::Whip => None,
                };
                Link::Switchyard {
                    base: base.clone(),
                    token,
                    session,
                }
            }
            Target::Janus { url, room } => Link::Janus {
                room: *room,
                session: janus::Session::connect(url).await?,
                handles: Vec::new(),
            },
        };
        if let Some(media) = publish {
            let id = self.publish(&mut link, index, media).await?;
            self.publications.send_modify(|p| {
                p.push(Published {
                    owner: index,
                    id,
                    media,
                })
            });
        }
        let mut publications = self.publications.subscribe();
        let mut stop = self.stop.subscribe();
        let mut taken = 0;
        loop {
            if subscribe {
                let fresh: Vec<Published> = publications
                    .borrow_and_update()
                    .iter()
                    .skip(taken)
                    .cloned()
                    .collect();
                taken += fresh.len();
                for p in fresh.into_iter().filter(|p| p.owner != index) {
                    self.subscribe_to(&mut link, &p, index).await?;
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                changed = publications.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // Keep reading the socket so the server's events do not pile up.
                alive = async {
                    match &mut link {
                        Link::Switchyard { session: Some(s), .. } => s.discard_one().await,
                        _ => std::future::pending().await,
                    }
                } => {
                    alive.map_err(ParticipantError::SignallingClosed)?;
                }
            }
        }
        if let Link::Janus { session, .. } = link {
            let _ = session.destroy().await;
        }
        Ok(())
    }

    /// Publishes `media`; returns the publication's id (Switchyard's, or Janus's feed id).
    async fn publish(
        &self,
        link: &mut Link,
        index: usize,
        media: Media,
    ) -> Result<String, ParticipantError> {
        let started = Instant::now();
        let ice = Credentials::random();
        let ssrc = || self.next_ssrc.fetch_add(1, Ordering::Relaxed) as u32;
        let video = media.video.then(|| {
            if media.simulcast {
                Video::Simulcast {
                    ssrcs: [ssrc(), ssrc(), ssrc()],
                    payload_type: VIDEO_PT,
                }
            } else {
                Video::Single {
                    ssrc: ssrc(),
                    payload_type: VIDEO_PT,
                }
            }
        });
        let audio = media.audio.then(|| (ssrc(), AUDIO_PT));
        let mut tracks = Vec::new();
        if let Some((ssrc, payload_type)) = audio {
            tracks.push(OfferTrack::Send {
                codec: Codec::Opus,
                payload_type,
                ssrc,
            });
        }
        if let Some(v) = video {
            // With simulcast, the SSRC written here is dropped again (`simulcast_offer`).
            let (Video::Single { ssrc, .. }
            | Video::Simulcast {
                ssrcs: [ssrc, ..], ..
            }) = v;
            tracks.push(OfferTrack::Send {
                codec: Codec::Vp8,
                payload_type: VIDEO_PT,
                ssrc,
            });
        }
        let role = Role::Publish { video, audio };
        let fp = self.identity.fingerprint();
        match link {
            Link::Switchyard {
                base,
                token,
                session,
            } => {
                let mut offer = client::offer(&ice, fp, &tracks, rand::random::<u32>().into());
                if media.simulcast {
                    offer = simulcast_offer(&offer);
                }
                let (id, answer) = match session {
                    Some(s) => s.publish(&offer).await?,
                    None => (
                        String::new(),
                        signal::whip_or_whep(&self.http, base, "whip", &self.channel, token, offer)
                            .await?,
                    ),
                };
                self.connect(ice, &answer, IceRole::Controlling, role, started)?;
                Ok(id)
            }
            Link::Janus {
                room,
                session,
                handles,
            } => {
                // Janus answers `actpass` with `active`; offering `active` keeps us the DTLS
                // client (see janus.rs).
                let offer = client::offer_with(
                    &ice,
                    fp,
                    &tracks,
                    Setup::Active,
                    rand::random::<u32>().into(),
                );
                let handle = session.attach_videoroom().await?;
                let published = handle
                    .publish(*room, &format!("load-{index}"), &offer)
                    .await?;
                self.connect(ice, &published.answer, IceRole::Controlling, role, started)?;
                // Janus refuses subscriptions to a feed whose PeerConnection is not up yet.
                handle
                    .wait_event("webrtcup", Duration::from_secs(20))
                    .await?;
                handles.push(handle);
                Ok(published.feed.to_string())
            }
        }
    }

    /// Subscribes participant `index` to `p`; to a simulcast publication over `/sync`, with the
    /// `maxHeight` of its layer (`layer_of`) sent right after.
    async fn subscribe_to(
        &self,
        link: &mut Link,
        p: &Published,
        index: usize,
    ) -> Result<(), ParticipantError> {
        let started = Instant::now();
        let ice = Credentials::random();
        let fp = self.identity.fingerprint();
        match link {
            Link::Switchyard {
                base,
                token,
                session,
            } => {
                let mut tracks = Vec::new();
                if p.media.audio {
                    tracks.push(OfferTrack::Receive {
                        codec: Codec::Opus,
                        payload_type: AUDIO_PT,
                    });
                }
                if p.media.video {
                    tracks.push(OfferTrack::Receive {
                        codec: Codec::Vp8,
                        payload_type: VIDEO_PT,
                    });
                }
                let offer = client::offer(&ice, fp, &tracks, rand::random::<u32>().into());
                let clock_rates = rtp_clocks(&offer);
                let (answer, layer) = match session {
                    Some(s) => {
                        let (subscription, answer) = s.subscribe(&p.id, &offer).await?;
                        let layer = (p.media.video && p.media.simulcast).then(|| layer_of(index));
                        if let Some(layer) = layer {
                            s.preferences(&subscription, traffic::max_height(layer))
                                .await?;
                        }
                        (answer, layer)
                    }
                    // WHEP has no preferences: its subscribers take what the server picks.
                    None => (
                        signal::whip_or_whep(&self.http, base, "whep", &self.channel, token, offer)
                            .await?,
                        None,
                    ),
                };
                let role = Role::Subscribe { clock_rates, layer };
                self.connect(ice, &answer, IceRole::Controlling, role, started)
            }
            Link::Janus {
                room,
                session,
                handles,
            } => {
                let feed: u64 =
                    p.id.parse()
                        .map_err(|_| ParticipantError::BadFeedId(p.id.clone()))?;
                let handle = session.attach_videoroom().await?;
                let offer = handle.subscribe(*room, feed).await?;
                let answer = client::answer(
                    &ice,
                    fp,
                    &offer,
                    &[Codec::Opus, Codec::Vp8],
                    rand::random::<u32>().into(),
                )
                .map_err(ParticipantError::Answer)?;
                let role = Role::Subscribe {
                    clock_rates: rtp_clocks(&offer),
                    layer: None,
                };
                // Janus offered: it controls ICE and we answer its checks.
                self.connect(ice, &offer, IceRole::Controlled, role, started)?;
                handle.start(&answer).await?;
                handles.push(handle);
                Ok(())
            }
        }
    }

    /// Hands a signalled transport to the net thread, which runs ICE and DTLS.
    fn connect(
        &self,
        ice: Credentials,
        remote_sdp: &str,
        ice_role: IceRole,
        role: Role,
        started: Instant,
    ) -> Result<(), ParticipantError> {
        let remote = remote::parse(remote_sdp)?;
        let client = Client::with_role(
            &self.identity,
            ice,
            remote.ice,
            remote.fingerprint,
            ice_role,
            Instant::now(),
            rand::random(),
        );
        self.net.add(NewTransport {
            server: remote.address,
            client,
            role,
            started,
        })?;
        Ok(())
    }
}

/// A participant's signalling state.
enum Link {
    Switchyard {
        /// `http://host:port`, for WHIP/WHEP.
        base: String,
        token: String,
        /// `/sync` session; None with WHIP/WHEP. Boxed: the WebSocket is large.
        session: Option<Box<Session>>,
    },
    Janus {
        room: u64,
        session: janus::Session,
        /// Kept open: detaching a handle closes its PeerConnection.
        handles: Vec<janus::Handle>,
    },
}

/// Payload type → clock rate from an SDP's `a=rtpmap` lines.
fn rtp_clocks(sdp: &str) -> Vec<(u8, u32)> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|v| {
            let (pt, codec) = v.split_once(' ')?;
            let rate = codec.split('/').nth(1)?;
            Some((pt.parse().ok()?, rate.parse().ok()?))
        })
        .collect()
}

/// `offer` with the audio level extension (RFC 6464) on its audio m-lines, under
/// `traffic::AUDIO_LEVEL_EXTENSION_ID`, as browsers offer it: MCU participants mark their
/// packets with their levels (see `clip`).
fn with_audio_level(offer: &str) -> String {
    let mut out = String::with_capacity(offer.len() + 100);
    let mut audio = false;
    for line in offer.split_inclusive('\n') {
        if line.starts_with("m=") {
            audio = line.starts_with("m=audio");
        }
        out.push_str(line);
        if audio && line.starts_with("a=mid:") {
            out.push_str(&format!(
                "a=extmap:{} {}\r\n",
                traffic::AUDIO_LEVEL_EXTENSION_ID,
                sdp::AUDIO_LEVEL_URI
            ));
        }
    }
    out
}

/// `offer` with its video m-line turned into RID simulcast as Chromium offers it: no `a=ssrc`
/// lines (the server learns each layer's SSRC from its packets), the rtp-stream-id extension
/// (`traffic::RID_EXTENSION_ID`), `a=rid:<rid> send` for each layer and `a=simulcast:send`
/// listing them lowest first. `client::offer` writes one SSRC per track and no simulcast, and
/// the load generator is its only user that needs simulcast.
fn simulcast_offer(offer: &str) -> String {
    let simulcast = |out: &mut String| {
        let rids: Vec<&str> = traffic::SIMULCAST.iter().map(|(rid, _)| *rid).collect();
        out.push_str(&format!(
            "a=extmap:{} {}\r\n",
            traffic::RID_EXTENSION_ID,
            sdp::RID_URI
        ));
        for rid in &rids {
            out.push_str(&format!("a=rid:{rid} send\r\n"));
        }
        out.push_str(&format!("a=simulcast:send {}\r\n", rids.join(";")));
    };
    let mut out = String::with_capacity(offer.len() + 200);
    let mut video = false;
    for line in offer.split_inclusive('\n') {
        if line.starts_with("m=") {
            if video {
                simulcast(&mut out);
            }
            video = line.starts_with("m=video");
        }
        if !(video && line.starts_with("a=ssrc")) {
            out.push_str(line);
        }
    }
    if video {
        simulcast(&mut out);
    }
    out
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_dataplane::sdp::{LocalParams, MediaRole, Negotiated, Offer};

    use super::*;

    /// A publisher's Opus + VP8 offer as the generator shapes it (`shape`), and the answer
    /// the server's own SDP code gives it.
    fn offer_and_answer(shape: fn(&str) -> String) -> (String, sdp::Answer) {
        let identity = Identity::generate().unwrap();
        let tracks = [
            OfferTrack::Send {
                codec: Codec::Opus,
                payload_type: AUDIO_PT,
                ssrc: 7,
            },
            OfferTrack::Send {
                codec: Codec::Vp8,
                payload_type: VIDEO_PT,
                ssrc: 8,
            },
        ];
        let ice = Credentials::random();
        let offer = shape(&client::offer(&ice, identity.fingerprint(), &tracks, 1));
        let candidates: [SocketAddr; 1] = ["127.0.0.1:4000".parse().unwrap()];
        let local = LocalParams {
            ice: &Credentials::random(),
            fingerprint: identity.fingerprint(),
            candidates: &candidates,
            tcp: false,
            allowed_codecs: &[Codec::Opus, Codec::Vp8],
            session_id: 2,
        };
        let answer = sdp::answer(
            &Offer::parse(&offer).unwrap(),
            &local,
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        (offer, answer)
    }

    /// The server's own SDP code takes the publisher's offer as three-layer simulcast.
    #[test]
    fn simulcast_offer_is_taken_as_three_layers() {
        let (_, answer) = offer_and_answer(simulcast_offer);
        let Negotiated::Receive {
            ssrc,
            rids,
            extensions,
            ..
        } = &answer.media[1]
        else {
            panic!("{:?}", answer.media[1]);
        };
        assert_eq!(*ssrc, None);
        assert_eq!(rids, &["q", "h", "f"]);
        assert_eq!(extensions.rid, Some(traffic::RID_EXTENSION_ID));
        // Audio keeps its SSRC and gets no simulcast.
        let Negotiated::Receive { ssrc, rids, .. } = &answer.media[0] else {
            panic!("{:?}", answer.media[0]);
        };
        assert_eq!((*ssrc, rids.len()), (Some(7), 0));
    }

    /// MCU participants offer the audio level extension on audio only, and the server takes it.
    #[test]
    fn audio_level_is_offered_on_audio() {
        let (offer, answer) = offer_and_answer(with_audio_level);
        assert_eq!(offer.matches(sdp::AUDIO_LEVEL_URI).count(), 1);
        let Negotiated::Receive { extensions, .. } = &answer.media[0] else {
            panic!("{:?}", answer.media[0]);
        };
        assert_eq!(
            extensions.audio_level,
            Some(traffic::AUDIO_LEVEL_EXTENSION_ID)
        );
    }

    #[test]
    fn subscribers_take_the_layers_in_turn() {
        let heights: Vec<_> = (1..=4).map(|i| traffic::max_height(layer_of(i))).collect();
        assert_eq!(heights, [Some(360), None, Some(180), Some(360)]);
    }

    #[test]
    fn clock_rates_from_rtpmap() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:x y\r\n";
        assert_eq!(rtp_clocks(sdp), vec![(111, 48000), (96, 90000)]);
    }
}
