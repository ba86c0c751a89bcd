//! MCU connections (`mix`): a participant sends audio and video on one peer connection and
//! receives on the same one the channel's mix: everyone's audio but its own, and the
//! composite picture.
//!
//! What it sends is a publication like any other (SFU participants see it published and may
//! subscribe); what it receives comes from the channel's mixer (`switchyard_dataplane::mcu`),
//! whose streams are transports of the channel's router:
//! - an input per producer of the channel (MCU participants' and SFU publications' alike),
//!   so SFU and MCU participants share one channel;
//! - an audio output per MCU participant (its mix-minus), consumed by its connection;
//! - a composite output per video codec, consumed by every MCU connection taking that codec.
//!
//! A mixer stream is told to the MCU thread before the worker creates its transport, so none
//! of its packets arrives unknown; it leaves the mixer when its transport closes.

use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::mcu::{
    AUDIO_LEVEL_EXT, Band, MIX_RID_EXT, MixerConfig, RUNG_RIDS, StreamSpec, VideoCodec,
    largest_tile,
};
use switchyard_dataplane::media::{Codec, MediaKind};
use switchyard_dataplane::sdp::{self, LocalParams, MediaRole, Negotiated, Offer, SendTrack};
use switchyard_dataplane::spec::{
    ConsumerSpec, Preferences, ProducerId, ProducerSpec, RouterId, Ssrc, TransportId,
    TransportKind, TransportSpec,
};

use crate::canvas::Canvas;
use crate::error::Error;
use crate::ids;
use crate::rooms::{
    Channel, ChannelMixer, MIX_VIEW, Mixed, Owner, Publication, Subscription, Track,
};
use crate::rules::Rules;
use crate::session::AppState;

/// The codecs a mixer decodes and encodes.
pub const MIX_CODECS: [Codec; 3] = [Codec::Opus, Codec::Vp8, Codec::H264];

/// What a viewer of the mix is offered in H264: constrained baseline, what the mixer's
/// encoder makes, in packetization-mode 1.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The payload types of the mixer's own producers (consumers rewrite them to each
/// subscriber's).
const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

/// One negotiated m-line of a mixed connection: what the client sends (a producer) and what
/// it receives there (its payload type and our SSRC).
struct Line {
    producer: ProducerSpec,
    track: Track,
    /// Our SSRC for what it receives on the same m-line (in the codec it sends, the
    /// producer's payload type, MID and feedback).
    receive_ssrc: u32,
}

/// The audio band a listener plays at most, from its Opus fmtp's `maxplaybackrate` (RFC
/// 7587): a phone call's leg says 8 or 16 kHz, and its mix-minus is then coded in that band
/// only, which costs the mixer's encoder less and leaves out what the phone cannot carry.
fn playback_band(fmtp: Option<&str>) -> Option<Band> {
    let rate: u32 = fmtp?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("maxplaybackrate")
            .then(|| v.trim().parse().ok())?
    })?;
    match rate {
        0 => None,
        1..=8_000 => Some(Band::Narrow),
        8_001..=16_000 => Some(Band::Wide),
        _ => None,
    }
}

/// Where a channel's mixer is: its MCU thread, its router and worker.
#[derive(Clone, Copy)]
struct Place {
    mcu: usize,
    router: RouterId,
    worker: usize,
}

impl AppState {
    /// Where the mix of `channel` runs (its mixer's MCU thread, or the one it will get) and a
    /// fresh name with `prefix` for what `participant` makes there; refused when this server
    /// has no MCU or the participant is not in the channel.
    fn place(
        &self,
        channel: &str,
        participant: &str,
        prefix: &str,
    ) -> Result<(Place, String), Error> {
        let mcu = self.media.mcu().ok_or_else(|| {
            Error::BadRequest("this server runs no MCU (MCU:WORKERS is 0)".into())
        })?;
        let mut rooms = self.rooms();
        let name = rooms.next_name(prefix);
        let ch = rooms
            .channels
            .get(channel)
            .filter(|c| c.participants.contains_key(participant))
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        let mcu_index = ch
            .mixer
            .as_ref()
            .map_or((ch.router.0 as usize) % mcu.threads().max(1), |m| m.mcu);
        let place = Place {
            mcu: mcu_index,
            router: ch.router,
            worker: ch.worker,
        };
        Ok((place, name))
    }

    /// Answers a sendrecv offer for an MCU connection of `participant`: its audio and video
    /// go into the channel's mix (and out as a publication), and it receives the mix.
    /// Returns (the connection's id, which is its publication's, and the answer).
    pub async fn mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let offer =
            Offer::parse(offer).map_err(|e| Error::BadRequest(format!("bad offer: {e}")))?;
        let (place, publication) = self.place(channel, participant, "mix")?;
        let allowed: Vec<Codec> = rules
            .codecs
            .iter()
            .copied()
            .filter(|c| MIX_CODECS.contains(c))
            .collect();
        let roles: Vec<MediaRole> = offer
            .media
            .iter()
            .map(|m| match m.kind {
                Some(kind) => MediaRole::Mix(SendTrack {
                    // The codec is the one negotiated for what the client sends.
                    codec: if kind == MediaKind::Audio {
                        Codec::Opus
                    } else {
                        Codec::Vp8
                    },
                    fmtp: None,
                    ssrc: rand::random::<u32>() | 1,
                    cname: participant.to_string(),
                    stream_id: publication.clone(),
                    track_id: format!("{publication}-{kind}"),
                    rtx_ssrc: None,
                    red: false,
                }),
                None => MediaRole::Reject,
            })
            .collect();
        let local_ice = Credentials::random();
        let candidates = self.candidates(place.worker);
        let local = LocalParams {
            ice: &local_ice,
            fingerprint: self.media.identity().fingerprint(),
            candidates: &candidates,
            tcp: self.media.ice_tcp(),
            allowed_codecs: &allowed,
            session_id: rand::random::<u32>().into(),
        };
        let answer =
            sdp::answer(&offer, &local, &roles).map_err(|e| Error::BadRequest(e.to_string()))?;
        let lines: Vec<Line> = answer
            .media
            .iter()
            .zip(&roles)
            .filter_map(|(n, role)| line(n, role, rules))
            .collect();
        if lines.is_empty() {
            return Err(Error::BadRequest(format!(
                "nothing to mix: {}",
                crate::session::rejections(&answer.media)
            )));
        }

        self.ensure_mixer(channel, place, rules.canvas).await?;
        // Its audio source in the mixer is its audio producer, so the mixer leaves it out of
        // what it hears.
        let source = lines
            .iter()
            .find(|l| l.track.kind() == MediaKind::Audio)
            .map_or_else(|| ids::producer().0, |l| l.producer.id.0);
        let mut made = Vec::new();
        let result = self
            .connect_mixed(
                channel,
                participant,
                place,
                source,
                &lines,
                &offer,
                local_ice,
                &mut made,
            )
            .await;
        let (transport, audio_out) = match result {
            Ok(r) => r,
            Err(e) => {
                for t in made {
                    self.close_media(place.worker, t);
                }
                self.drop_idle_mixer(channel);
                return Err(e);
            }
        };
        let tracks: Vec<Track> = lines.iter().map(|l| l.track.clone()).collect();
        let published = Publication {
            participant: participant.to_string(),
            transport,
            tracks: tracks.clone(),
            data: None,
            mixed: Some(Mixed { audio_out }),
        };
        if !self
            .rooms()
            .publish(channel, place.worker, &publication, published)
        {
            for t in made {
                self.close_media(place.worker, t);
            }
            self.drop_idle_mixer(channel);
            return Err(Error::Gone(format!("{participant} left channel {channel}")));
        }
        tracing::info!(channel, participant, mix = %publication, %transport, mcu = place.mcu, "mixed connection");
        self.mix_inputs(channel, &tracks).await;
        // What an MCU participant sends is recorded as an SFU publication is.
        self.record_tracks(channel, &publication, &tracks, rules.record)
            .await;
        Ok((publication, answer.sdp))
    }

    /// Answers a receive-only offer for the channel's mix (`POST /whep/{channel}/mix`, for
    /// livestreams): the composite in VP8 (or H264 when the offer has no VP8) and everyone's
    /// audio. Of `rules` only the canvas applies, should this start the mixer: a viewer
    /// publishes nothing. Returns (its subscription id, the answer).
    pub async fn view_mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> Result<(String, String), Error> {
        let offer =
            Offer::parse(offer).map_err(|e| Error::BadRequest(format!("bad offer: {e}")))?;
        let (place, subscription) = self.place(channel, participant, "sub")?;
        let local_ice = Credentials::random();
        let candidates = self.candidates(place.worker);
        let local = LocalParams {
            ice: &local_ice,
            fingerprint: self.media.identity().fingerprint(),
            candidates: &candidates,
            tcp: self.media.ice_tcp(),
            allowed_codecs: &MIX_CODECS,
            session_id: rand::random::<u32>().into(),
        };
        // VP8 when the offer takes it, else H264: the answer is pure, so try in that order.
        let mut answered = None;
        for (video, fmtp) in [
            (Codec::Vp8, None),
            (Codec::H264, Some(H264_FMTP.to_string())),
        ] {
            let roles: Vec<MediaRole> = offer
                .media
                .iter()
                .map(|m| match m.kind {
                    Some(kind) => MediaRole::Send(SendTrack {
                        codec: if kind == MediaKind::Audio {
                            Codec::Opus
                        } else {
                            video
                        },
                        fmtp: if kind == MediaKind::Audio {
                            None
                        } else {
                            fmtp.clone()
                        },
                        ssrc: rand::random::<u32>() | 1,
                        cname: MIX_VIEW.to_string(),
                        stream_id: MIX_VIEW.to_string(),
                        track_id: format!("{MIX_VIEW}-{kind}"),
                        rtx_ssrc: None,
                        red: false,
                    }),
                    None => MediaRole::Reject,
                })
                .collect();
            let answer = sdp::answer(&offer, &local, &roles)
                .map_err(|e| Error::BadRequest(e.to_string()))?;
            let video_ok = !answer
                .media
                .iter()
                .any(|n| matches!(n, Negotiated::Rejected { .. }))
                || !offer.media.iter().any(|m| m.kind == Some(MediaKind::Video));
            if video_ok || video == Codec::H264 {
                answered = Some((answer, video));
                break;
            }
        }
        let Some((answer, video)) = answered else {
            return Err(Error::BadRequest("nothing to play".into()));
        };
        // Each with the viewer's fmtp for the codec (an audio band it plays at most).
        let sends: Vec<(MediaKind, ConsumerSpec, Option<String>)> = answer
            .media
            .iter()
            .filter_map(|n| match n {
                Negotiated::Send {
                    mid,
                    kind,
                    codec,
                    extensions,
                    ssrc,
                    ..
                } => Some((
                    *kind,
                    ConsumerSpec {
                        id: ids::consumer(),
                        // Set once the mixer's producer for it is known.
                        producer: ProducerId(0),
                        ssrc: Ssrc(*ssrc),
                        payload_type: codec.payload_type,
                        mid: mid.clone(),
                        mid_ext: extensions.mid,
                        nack: codec.nack,
                        pli: codec.pli,
                        fir: codec.fir,
                        // The viewer's bandwidth estimate picks its rung of the composite.
                        twcc_ext: extensions.transport_cc,
                        dd_ext: None,
                        audio_level_ext: None,
                        rtx: None,
                        red: None,
                    },
                    codec.fmtp.clone(),
                )),
                _ => None,
            })
            .collect();
        if sends.is_empty() {
            return Err(Error::BadRequest(format!(
                "nothing in this offer can receive the mix: {}",
                crate::session::rejections(&answer.media)
            )));
        }

        self.ensure_mixer(channel, place, rules.canvas).await?;
        let mut made = Vec::new();
        let mut consumers = Vec::new();
        let mut audio_out = None;
        let mut failed = None;
        for (kind, mut consumer, consumer_fmtp) in sends {
            let producer = match kind {
                // A listener of its own that is no source: it hears everyone.
                MediaKind::Audio => {
                    let spec = StreamSpec::AudioOut {
                        listener: ids::producer().0,
                        ssrc: 0,
                        payload_type: AUDIO_PT,
                        band: playback_band(consumer_fmtp.as_deref()),
                    };
                    self.mixer_output(place, spec, Codec::Opus, false)
                        .await
                        .map(|(t, p)| {
                            made.push(t);
                            audio_out = Some(t);
                            p
                        })
                }
                MediaKind::Video => {
                    let codec = video_codec(video).unwrap_or(VideoCodec::Vp8);
                    self.composite(channel, place, video, codec, &mut made)
                        .await
                }
            };
            match producer {
                Ok(p) => {
                    consumer.producer = p;
                    consumers.push(consumer);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let transport = ids::transport();
        if failed.is_none() {
            let spec = TransportSpec {
                id: transport,
                router: place.router,
                kind: TransportKind::WebRtc {
                    local_ice,
                    remote_ice: offer.ice.clone(),
                    remote_fingerprint: offer.fingerprint.clone(),
                },
                producers: Vec::new(),
                consumers,
                data: None,
            };
            match self.media.create_transport(place.worker, spec).await {
                Ok(()) => made.push(transport),
                Err(e) => failed = Some(e.into()),
            }
        }
        let recorded = failed.is_none() && {
            let mut rooms = self.rooms();
            match rooms
                .channels
                .get_mut(channel)
                .filter(|c| c.participants.contains_key(participant))
            {
                Some(ch) => {
                    ch.subscriptions.insert(
                        subscription.clone(),
                        Subscription {
                            participant: participant.to_string(),
                            publication: MIX_VIEW.to_string(),
                            transport,
                            worker: place.worker,
                            mixed: Some(Mixed { audio_out }),
                        },
                    );
                    rooms.add_transport(
                        channel,
                        place.worker,
                        transport,
                        Owner::Subscription(subscription.clone()),
                    );
                    true
                }
                None => false,
            }
        };
        if !recorded {
            for t in made {
                self.close_media(place.worker, t);
            }
            self.drop_idle_mixer(channel);
            return Err(failed
                .unwrap_or_else(|| Error::Gone(format!("{participant} left channel {channel}"))));
        }
        tracing::info!(channel, participant, %subscription, %transport, "viewing the mix");
        Ok((subscription, answer.sdp))
    }

    /// Starts the channel's mixer if it has none, drawing `canvas` (the channel
    /// configuration's) over the deployment's, with the channel's existing publications as its
    /// inputs. A running mixer keeps the canvas it started with.
    async fn ensure_mixer(&self, channel: &str, place: Place, canvas: Canvas) -> Result<(), Error> {
        let Some(mcu) = self.media.mcu() else {
            return Err(Error::BadRequest("this server runs no MCU".into()));
        };
        let config = canvas.over(self.mixer);
        mcu.create_mixer(place.mcu, place.router, place.worker, config)
            .await?;
        let existing: Vec<Vec<Track>> = {
            let mut rooms = self.rooms();
            let Some(ch) = rooms.channels.get_mut(channel) else {
                return Err(Error::Gone(format!("channel {channel} is gone")));
            };
            if ch.mixer.is_some() {
                return Ok(());
            }
            ch.mixer = Some(ChannelMixer {
                mcu: place.mcu,
                canvas: config,
                ..ChannelMixer::default()
            });
            ch.publications.values().map(|p| p.tracks.clone()).collect()
        };
        for tracks in existing {
            self.mix_inputs(channel, &tracks).await;
        }
        Ok(())
    }

    /// Closes the channel's mixer streams when nobody mixes or views the mix (one that failed
    /// to connect may have started the mixer).
    fn drop_idle_mixer(&self, channel: &str) {
        let closes = self
            .rooms()
            .channels
            .get_mut(channel)
            .map(Channel::idle_mixer_closes)
            .unwrap_or_default();
        for (worker, t) in closes {
            self.close_media(worker, t);
        }
    }

    /// Makes the connection's streams: its audio output, the composite in its codec (if
    /// there is none yet) and its peer connection. Returns the connection's transport and
    /// its audio output; what it made is in `made` for cleaning up after a failure.
    #[allow(clippy::too_many_arguments)]
    async fn connect_mixed(
        &self,
        channel: &str,
        participant: &str,
        place: Place,
        source: u64,
        lines: &[Line],
        offer: &Offer,
        local_ice: Credentials,
        made: &mut Vec<TransportId>,
    ) -> Result<(TransportId, Option<TransportId>), Error> {
        let mut consumers = Vec::new();
        let mut audio_out = None;
        for l in lines {
            let producer = match l.track.kind() {
                MediaKind::Audio => {
                    let (t, p) = self
                        .mixer_output(
                            place,
                            StreamSpec::AudioOut {
                                listener: source,
                                ssrc: 0,
                                payload_type: AUDIO_PT,
                                band: playback_band(l.track.fmtp.as_deref()),
                            },
                            Codec::Opus,
                            false,
                        )
                        .await?;
                    made.push(t);
                    audio_out = Some(t);
                    p
                }
                MediaKind::Video => {
                    let Some(codec) = video_codec(l.track.codec()) else {
                        continue;
                    };
                    self.composite(channel, place, l.track.codec(), codec, made)
                        .await?
                }
            };
            let sent = &l.producer;
            consumers.push(ConsumerSpec {
                id: ids::consumer(),
                producer,
                ssrc: Ssrc(l.receive_ssrc),
                payload_type: sent.payload_type,
                mid: sent.mid.clone(),
                mid_ext: sent.mid_ext,
                nack: sent.nack,
                pli: sent.pli,
                fir: sent.fir,
                twcc_ext: sent.twcc_ext,
                dd_ext: None,
                audio_level_ext: None,
                rtx: None,
                red: None,
            });
        }
        let transport = ids::transport();
        let spec = TransportSpec {
            id: transport,
            router: place.router,
            kind: TransportKind::WebRtc {
                local_ice,
                remote_ice: offer.ice.clone(),
                remote_fingerprint: offer.fingerprint.clone(),
            },
            producers: lines.iter().map(|l| l.producer.clone()).collect(),
            consumers,
            data: None,
        };
        self.media.create_transport(place.worker, spec).await?;
        made.push(transport);
        tracing::debug!(channel, participant, %transport, "mixed connection's transport made");
        Ok((transport, audio_out))
    }

    /// The channel's composite in `codec`, made if nobody received it yet: its producer.
    async fn composite(
        &self,
        channel: &str,
        place: Place,
        codec: Codec,
        video: VideoCodec,
        made: &mut Vec<TransportId>,
    ) -> Result<ProducerId, Error> {
        let (existing, lower_rung) = {
            let rooms = self.rooms();
            let mixer = rooms.channels.get(channel).and_then(|c| c.mixer.as_ref());
            (
                mixer
                    .and_then(|m| m.video_out.iter().find(|(c, _, _)| *c == codec))
                    .map(|&(_, _, p)| p),
                mixer.is_some_and(|m| m.canvas.lower_rung),
            )
        };
        if let Some(p) = existing {
            return Ok(p);
        }
        let spec = StreamSpec::VideoOut {
            codec: video,
            ssrc: 0,
            payload_type: VIDEO_PT,
        };
        let (t, p) = self.mixer_output(place, spec, codec, lower_rung).await?;
        let mut rooms = self.rooms();
        match rooms
            .channels
            .get_mut(channel)
            .and_then(|c| c.mixer.as_mut())
        {
            Some(m) => {
                m.video_out.push((codec, t, p));
                Ok(p)
            }
            None => {
                made.push(t);
                Err(Error::Gone(format!(
                    "the mixer of channel {channel} is gone"
                )))
            }
        }
    }

    /// Makes a mixer output stream: told to the MCU thread, then its transport with one
    /// producer (the SSRC in `spec` is replaced by a fresh one). A video output with a lower
    /// rung is a simulcast producer of two layers, told apart by their rids. Returns both ids.
    async fn mixer_output(
        &self,
        place: Place,
        spec: StreamSpec,
        codec: Codec,
        lower_rung: bool,
    ) -> Result<(TransportId, ProducerId), Error> {
        let mcu = self
            .media
            .mcu()
            .ok_or_else(|| Error::BadRequest("this server runs no MCU".into()))?;
        let ssrc = rand::random::<u32>() | 1;
        let (spec, kind, payload_type, clock_rate) = match spec {
            StreamSpec::AudioOut { listener, band, .. } => (
                StreamSpec::AudioOut {
                    listener,
                    ssrc,
                    payload_type: AUDIO_PT,
                    band,
                },
                MediaKind::Audio,
                AUDIO_PT,
                48_000,
            ),
            StreamSpec::VideoOut { codec, .. } => (
                StreamSpec::VideoOut {
                    codec,
                    ssrc,
                    payload_type: VIDEO_PT,
                },
                MediaKind::Video,
                VIDEO_PT,
                90_000,
            ),
            _ => return Err(Error::BadRequest("not a mixer output stream".into())),
        };
        let transport = ids::transport();
        let producer = ids::producer();
        mcu.add_stream(place.mcu, place.router, transport, spec)
            .await?;
        let video = kind == MediaKind::Video;
        let rungs = video && lower_rung;
        let spec = TransportSpec {
            id: transport,
            router: place.router,
            kind: TransportKind::Mixer { mcu: place.mcu },
            producers: vec![ProducerSpec {
                id: producer,
                kind,
                codec,
                payload_type,
                clock_rate,
                ssrc: Some(Ssrc(ssrc)),
                mid: "0".into(),
                mid_ext: None,
                rids: if rungs {
                    RUNG_RIDS.map(String::from).to_vec()
                } else {
                    Vec::new()
                },
                rid_ext: rungs.then_some(MIX_RID_EXT),
                nack: false,
                pli: video,
                fir: video,
                remb: false,
                audio_level_ext: None,
                twcc_ext: None,
                dd_ext: None,
                red: None,
                max_bitrate: None,
            }],
            consumers: Vec::new(),
            data: None,
        };
        if let Err(e) = self.media.create_transport(place.worker, spec).await {
            mcu.remove_stream(place.mcu, transport);
            return Err(e.into());
        }
        Ok((transport, producer))
    }

    /// Gives the channel's mixer an input for each of `tracks` (one publication's) it can
    /// take (Opus, VP8, H264) and does not have yet. The publication's audio producer is its
    /// source in the audio mix (for an MCU participant, the listener its mix-minus leaves
    /// out). Failures are logged: the mix goes on without that input.
    pub(crate) async fn mix_inputs(&self, channel: &str, tracks: &[Track]) {
        let Some(mcu) = self.media.mcu() else {
            return;
        };
        let place = {
            let rooms = self.rooms();
            let Some(ch) = rooms.channels.get(channel) else {
                return;
            };
            let Some(m) = &ch.mixer else { return };
            Place {
                mcu: m.mcu,
                router: ch.router,
                worker: ch.worker,
            }
        };
        let audio_source = tracks
            .iter()
            .find(|t| t.kind() == MediaKind::Audio)
            .map(|t| t.producer().0);
        for track in tracks {
            let ssrc = rand::random::<u32>() | 1;
            let spec = match (track.kind(), track.codec()) {
                (MediaKind::Audio, Codec::Opus) => StreamSpec::AudioIn {
                    source: audio_source.unwrap_or(track.producer().0),
                },
                (MediaKind::Video, c) => match video_codec(c) {
                    Some(codec) => StreamSpec::VideoIn {
                        source: audio_source.unwrap_or(track.producer().0),
                        codec,
                        ssrc,
                    },
                    None => {
                        tracing::info!(channel, codec = %c, "not mixed: the MCU decodes VP8 and H264");
                        continue;
                    }
                },
                _ => continue,
            };
            let transport = ids::transport();
            if let Err(e) = mcu
                .add_stream(place.mcu, place.router, transport, spec)
                .await
            {
                tracing::warn!(channel, "mixer input not added: {e}");
                continue;
            }
            let level = (track.kind() == MediaKind::Audio).then_some(AUDIO_LEVEL_EXT);
            let spec = consuming_stream(transport, place.router, place.mcu, track, ssrc, level);
            if let Err(e) = self.media.create_transport(place.worker, spec).await {
                tracing::warn!(channel, "mixer input not started: {e}");
                mcu.remove_stream(place.mcu, transport);
                continue;
            }
            let kept = {
                let mut rooms = self.rooms();
                let mixer = rooms
                    .channels
                    .get_mut(channel)
                    .and_then(|c| c.mixer.as_mut())
                    .filter(|m| !m.inputs.contains_key(&track.producer()));
                let video = track.kind() == MediaKind::Video;
                mixer
                    .map(|m| m.inputs.insert(track.producer(), (transport, video)))
                    .is_some()
            };
            if !kept {
                // The mixer went, or took this producer in meanwhile.
                self.close_media(place.worker, transport);
            }
        }
        self.fit_layers(channel);
    }

    /// Sizes each of the channel's mixer video inputs to the largest tile for that many
    /// inputs (`tile_preferences`). Called when inputs come and go, which changes the tiles;
    /// the router switches layers on keyframes and tells publishers in its next REMB.
    pub(crate) fn fit_layers(&self, channel: &str) {
        let (worker, inputs, prefs) = {
            let rooms = self.rooms();
            let Some((ch, m)) = rooms
                .channels
                .get(channel)
                .and_then(|ch| Some((ch, ch.mixer.as_ref()?)))
            else {
                return;
            };
            let video: Vec<TransportId> = m
                .inputs
                .values()
                .filter(|&&(_, video)| video)
                .map(|&(t, _)| t)
                .collect();
            let prefs = tile_preferences(&m.canvas, video.len());
            (ch.worker, video, prefs)
        };
        for transport in inputs {
            if let Err(e) = self.media.set_preferences(worker, transport, prefs) {
                tracing::debug!(channel, "mixer input keeps its layer: {e}");
            }
        }
    }
}

/// Bits per pixel and frame asked of a mixer input: enough for VP8 or H264 to arrive sharp,
/// since the mixer encodes its pixels once more.
const TILE_BITS_PER_PIXEL: f64 = 0.1;
/// The least bitrate asked of a mixer input, however small its tile: below it a browser's
/// encoder spends most of it on keyframes.
const TILE_MIN_BITRATE: u64 = 150_000;

/// What a mixer input of a canvas with `inputs` video inputs is asked for.
///
/// - Layer: at most one below twice the largest tile's height. Simulcast layers are a factor
///   of two apart, so this takes the smallest layer that still fills its tile (scaled down by
///   less than two, never up) and decodes no more pixels than the canvas shows.
/// - Bitrate: the tile's pixels at the canvas frame rate and `TILE_BITS_PER_PIXEL`, at least
///   `TILE_MIN_BITRATE`. The router asks publishers for no more (REMB) unless a subscriber
///   of theirs takes the full stream, so an MCU participant's camera spends its uplink on
///   what the tile shows.
fn tile_preferences(canvas: &MixerConfig, inputs: usize) -> Preferences {
    let tile = largest_tile(canvas.layout, canvas.width, canvas.height, inputs);
    let pixels = f64::from(tile.width) * f64::from(tile.height) * f64::from(canvas.fps);
    Preferences {
        max_height: u16::try_from(tile.height.saturating_mul(2).saturating_sub(1)).ok(),
        // ok: a float to integer cast saturates; the product is far inside u64 anyway.
        max_bitrate: Some(((pixels * TILE_BITS_PER_PIXEL) as u64).max(TILE_MIN_BITRATE)),
        ..Preferences::default()
    }
}

/// A stream of the channel's router to MCU thread `mcu` (`TransportKind::Mixer`) whose one
/// consumer takes `track`'s producer as SSRC `ssrc`: a mixer input, or a recording. Video
/// consumers pass keyframe requests upstream; `audio_level_ext` carries the sender's RFC 6464
/// level under that id.
pub(crate) fn consuming_stream(
    transport: TransportId,
    router: RouterId,
    mcu: usize,
    track: &Track,
    ssrc: u32,
    audio_level_ext: Option<u8>,
) -> TransportSpec {
    TransportSpec {
        id: transport,
        router,
        kind: TransportKind::Mixer { mcu },
        producers: Vec::new(),
        consumers: vec![ConsumerSpec {
            id: ids::consumer(),
            producer: track.producer(),
            ssrc: Ssrc(ssrc),
            payload_type: track.spec.payload_type,
            mid: "0".into(),
            mid_ext: None,
            nack: false,
            pli: track.kind() == MediaKind::Video,
            fir: false,
            twcc_ext: None,
            dd_ext: None,
            audio_level_ext,
            rtx: None,
            red: None,
        }],
        data: None,
    }
}

/// The producer and receiving side of one negotiated m-line of a mixed connection.
fn line(n: &Negotiated, role: &MediaRole, rules: &Rules) -> Option<Line> {
    let MediaRole::Mix(send) = role else {
        return None;
    };
    let (producer, track) = crate::session::received(n, rules)?;
    Some(Line {
        producer,
        track,
        receive_ssrc: send.ssrc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_playing_less_than_full_band_gets_that_band() {
        let band = |f: &str| playback_band(Some(f));
        assert_eq!(
            band("minptime=10;useinbandfec=1;maxplaybackrate=8000"),
            Some(Band::Narrow)
        );
        assert_eq!(
            band("maxplaybackrate=16000; useinbandfec=1"),
            Some(Band::Wide)
        );
        assert_eq!(band("MaxPlaybackRate = 12000"), Some(Band::Wide));
        assert_eq!(band("maxplaybackrate=48000"), None);
        assert_eq!(band("minptime=10;useinbandfec=1"), None);
        assert_eq!(band("maxplaybackrate=lots"), None);
        assert_eq!(band("maxplaybackrate=0"), None);
        assert_eq!(playback_band(None), None);
    }
    use switchyard_dataplane::mcu::Layout;

    /// Four inputs of a 720p grid take the 360-line layer of a 180/360/720 simulcast (the
    /// cap is under 720) and are asked for about a quarter of the canvas's pixels at 0.1 bits
    /// each; a tiny canvas's tiles get the floor.
    #[test]
    fn inputs_are_sized_to_their_tiles() {
        let hd = MixerConfig {
            width: 1280,
            height: 720,
            fps: 30,
            layout: Layout::Grid,
            ..MixerConfig::default()
        };
        let four = tile_preferences(&hd, 4);
        let cap = four.max_height.map(u32::from);
        assert!(cap.is_some_and(|h| (360..720).contains(&h)), "{four:?}");
        let bps = four.max_bitrate.unwrap_or(0);
        assert!((600_000..=700_000).contains(&bps), "{four:?}");
        let one = tile_preferences(&hd, 1);
        assert_eq!(one.max_height, Some(1439));
        assert!(one.max_bitrate > four.max_bitrate);
        let small = MixerConfig {
            width: 320,
            height: 180,
            fps: 15,
            ..hd
        };
        assert_eq!(
            tile_preferences(&small, 2).max_bitrate,
            Some(TILE_MIN_BITRATE)
        );
    }
}
