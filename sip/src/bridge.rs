//! A call's media: the phone's plain RTP on one side, the channel leg's SRTP on the other,
//! transcoded through PCM at the phone codec's own rate (or passed through when the phone
//! speaks Opus too). One task per call owns both sockets and every codec state, so nothing
//! here is shared or locked.
//!
//! - **No resampling**: a G.711 call runs at 8 kHz end to end, a G.722 call at 16 kHz. The
//!   Opus towards the channel is encoded from those samples and the mix is decoded straight to
//!   them (libopus works at either rate), and the leg's offer says so (RFC 7587's
//!   `maxplaybackrate`), so the mixer codes the call's mix-minus in that band only.
//!
//! - **Symmetric RTP**: the phone's RTP is sent back to where its first valid packet came from
//!   (a phone behind NAT gives an address in its SDP that cannot be reached), and packets
//!   from anywhere else are dropped and counted.
//! - **Inactivity**: a phone that should be sending and has sent nothing for the timeout is
//!   gone (a caller that vanished without a BYE): the call is hung up.
//! - **DTMF** (RFC 4733): the phone's digits come out as events; digits for the phone go out
//!   as telephone-events, one packet every 20 ms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_codec::audio::opus_codec::{MAX_ENCODED, packet_samples};
use switchyard_codec::audio::{
    DtmfReceiver, DtmfSender, OpusDecoder, OpusEncoder, PhoneCodec, PhoneDecoder, PhoneEncoder,
};
use switchyard_dataplane::io::MAX_DATAGRAM;
use switchyard_dataplane::rtp;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Stats;
use crate::fifo::Fifo;
use crate::leg::ChannelLeg;
use crate::sdp::PhoneMedia;

/// Opus frames towards the channel: 20 ms, what browsers send and the mixer expects; as the
/// 48 kHz clock counts them (the RTP clock of Opus whatever its rate).
const OPUS_FRAME: usize = 960;
/// The caller's audio towards the mixer, mono voice (the mixer decodes it again).
const OPUS_BITRATE: u32 = 32_000;
/// libopus's complexity for the caller's audio towards the channel (see `pump`).
const OPUS_COMPLEXITY: u8 = 4;
/// The most samples one packet may decode to (120 ms, Opus's longest, at 48 kHz).
const MAX_DECODED: usize = 48 * 120;
/// How often telephone-event packets go out while a digit plays.
const DTMF_TICK: Duration = Duration::from_millis(20);

/// What the media task tells the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The phone pressed a key.
    Digit(char),
    /// The phone sent nothing for the RTP timeout.
    Timeout,
    /// The channel leg failed; the call cannot go on.
    Failed(String),
}

/// What the call tells the media task.
#[derive(Debug)]
pub enum Command {
    /// Play these digits to the phone.
    Digits(String),
}

pub struct Bridge {
    pub phone: UdpSocket,
    /// The settled media: `None` until an offer without SDP is answered in the ACK.
    pub media: watch::Receiver<Option<PhoneMedia>>,
    pub leg: ChannelLeg,
    pub events: mpsc::Sender<Event>,
    pub commands: mpsc::Receiver<Command>,
    pub rtp_timeout: Duration,
    pub stats: Arc<Stats>,
}

/// The rate a call with `media` is bridged at: its codec's own (a phone speaking Opus passes
/// its packets through; 48 kHz is then only for the odd packet of another format). It is the
/// channel leg's, fixed when the leg is offered: a re-INVITE to another codec resamples
/// between that codec and it.
pub fn call_rate(media: &PhoneMedia) -> u32 {
    media.codec.sample_rate()
}

/// The phone side's state for the negotiated codec.
struct Phone {
    media: PhoneMedia,
    /// The call's rate ([`call_rate`] of its first media): every codec state's samples.
    rate: u32,
    /// A decoder for each format the peer may send, by payload type (what we send first).
    decoders: Vec<(u8, PhoneCodec, PhoneDecoder)>,
    encoder: PhoneEncoder,
    /// Where its RTP goes: the first valid packet's source, else the SDP's address.
    latched: Option<SocketAddr>,
    last_heard: Instant,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    dtmf_in: DtmfReceiver,
    dtmf_out: DtmfSender,
    /// The RTP timestamp of the telephone-event being sent (fixed for the event).
    dtmf_timestamp: u32,
}

/// The decoders for what `media` lets the peer send.
fn decoders(media: &PhoneMedia, rate: u32) -> Result<Vec<(u8, PhoneCodec, PhoneDecoder)>, String> {
    std::iter::once((media.payload_type, media.codec))
        .chain(media.also.iter().copied())
        .map(|(pt, codec)| {
            let decoder = PhoneDecoder::new(codec, rate).map_err(|e| e.to_string())?;
            Ok((pt, codec, decoder))
        })
        .collect()
}

impl Phone {
    fn new(media: PhoneMedia, rate: u32) -> Result<Phone, String> {
        let decoders = decoders(&media, rate)?;
        let encoder =
            PhoneEncoder::new(media.codec, media.ptime_ms, rate).map_err(|e| e.to_string())?;
        Ok(Phone {
            rate,
            decoders,
            encoder,
            latched: None,
            last_heard: Instant::now(),
            ssrc: rand::random(),
            sequence: rand::random(),
            timestamp: rand::random(),
            dtmf_in: DtmfReceiver::new(),
            dtmf_out: DtmfSender::new(media.codec.clock_rate()),
            dtmf_timestamp: 0,
            media,
        })
    }

    /// Takes a re-negotiation: a new codec gets new codec states (the stream's numbering goes
    /// on); a new address forgets the latch, since the phone may have moved.
    fn renegotiated(&mut self, media: PhoneMedia) -> Result<(), String> {
        if media.payload_type != self.media.payload_type || media.also != self.media.also {
            self.decoders = decoders(&media, self.rate)?;
        }
        if media.codec != self.media.codec || media.ptime_ms != self.media.ptime_ms {
            self.encoder = PhoneEncoder::new(media.codec, media.ptime_ms, self.rate)
                .map_err(|e| e.to_string())?;
            self.dtmf_out = DtmfSender::new(media.codec.clock_rate());
        }
        if media.remote != self.media.remote {
            self.latched = None;
        }
        self.last_heard = Instant::now();
        self.media = media;
        Ok(())
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.media.remote)
    }
}

impl Bridge {
    /// Runs until the call's side drops its command sender (hang-up) or the media fails.
    pub async fn run(mut self) {
        if let Err(reason) = self.pump().await {
            let _ = self.events.send(Event::Failed(reason)).await;
        }
        self.leg.leave().await;
    }

    async fn pump(&mut self) -> Result<(), String> {
        let first = match self.media.wait_for(Option::is_some).await {
            Ok(media) => media.clone(),
            Err(_) => return Ok(()), // the call ended before its media was settled
        };
        let Some(first) = first else { return Ok(()) };
        let rate = self.leg.rate();
        let mut phone = Phone::new(first, rate)?;
        // Both at the call's rate: the phone's samples go in and come out as they are.
        let mut opus_in = OpusDecoder::with_rate(rate).map_err(|e| e.to_string())?;
        let mut opus_out =
            OpusEncoder::with_rate(rate, OPUS_BITRATE, 5).map_err(|e| e.to_string())?;
        // A phone's voice (8 or 16 kHz) that the mixer decodes again: libopus's default search
        // (9) costs twice as much for nothing audible here; Janus's AudioBridge uses 4 too.
        opus_out
            .set_complexity(OPUS_COMPLEXITY)
            .map_err(|e| e.to_string())?;
        // 20 ms at the call's rate.
        let opus_frame_len = rate as usize / 50;
        let mut to_channel = Fifo::default();
        let mut to_phone = Fifo::default();
        let mut channel_timestamp: u32 = rand::random();
        let mut pcm = vec![0i16; MAX_DECODED];
        let mut frame = vec![0i16; MAX_DECODED];
        let mut encoded = vec![0u8; MAX_ENCODED];
        let mut phone_buf = vec![0u8; MAX_DATAGRAM];
        let mut leg_buf = vec![0u8; MAX_DATAGRAM];
        let mut send_buf = vec![0u8; MAX_DATAGRAM];
        let mut inactivity = tokio::time::interval(Duration::from_secs(1));
        let mut dtmf_tick = tokio::time::interval(DTMF_TICK);
        dtmf_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let leg_wake = Instant::from_std(self.leg.poll_timeout());
            tokio::select! {
                got = self.phone.recv_from(&mut phone_buf) => {
                    let Ok((n, from)) = got else { continue };
                    let Some(packet) = phone_buf.get(..n) else { continue };
                    let Some((pt, payload)) = self.phone_payload(&mut phone, from, packet) else { continue };
                    let Some((_, codec, decoder)) = phone.decoders.iter_mut().find(|(p, _, _)| *p == pt) else { continue };
                    if *codec == PhoneCodec::Opus {
                        // Opus both sides: no transcoding, our own numbering.
                        let samples = packet_samples(payload).unwrap_or(OPUS_FRAME);
                        self.leg.send_opus(payload, channel_timestamp).await.map_err(|e| e.to_string())?;
                        channel_timestamp = channel_timestamp.wrapping_add(samples as u32);
                        continue;
                    }
                    match decoder.decode(payload, &mut pcm) {
                        Ok(decoded) => to_channel.push(pcm.get(..decoded).unwrap_or_default()),
                        Err(_) => { self.stats.undecodable.fetch_add(1, Ordering::Relaxed); continue; }
                    }
                    let opus_frame = frame.get_mut(..opus_frame_len).unwrap_or_default();
                    while to_channel.pop(opus_frame) {
                        let Ok(len) = opus_out.encode(opus_frame, &mut encoded) else { continue };
                        let Some(bytes) = encoded.get(..len) else { continue };
                        self.leg.send_opus(bytes, channel_timestamp).await.map_err(|e| e.to_string())?;
                        channel_timestamp = channel_timestamp.wrapping_add(OPUS_FRAME as u32);
                    }
                }
                got = self.leg.socket.recv_from(&mut leg_buf) => {
                    let Ok((n, from)) = got else { continue };
                    let Some(data) = leg_buf.get_mut(..n) else { continue };
                    let header = match self.leg.on_datagram(from, data) {
                        Ok(Some(header)) => header,
                        Ok(None) => { self.leg.flush().await.map_err(|e| e.to_string())?; continue; }
                        Err(_) => { self.stats.channel_errors.fetch_add(1, Ordering::Relaxed); continue; }
                    };
                    let Some(payload) = data.get(header.payload_offset..header.payload_end) else { continue };
                    if !phone.media.direction.sends() {
                        continue;
                    }
                    if phone.media.codec == PhoneCodec::Opus {
                        let samples = packet_samples(payload).unwrap_or(OPUS_FRAME);
                        self.to_phone(&mut phone, payload, samples as u32, &mut send_buf).await;
                        continue;
                    }
                    match opus_in.decode(payload, &mut pcm) {
                        Ok(decoded) => to_phone.push(pcm.get(..decoded).unwrap_or_default()),
                        Err(_) => continue,
                    }
                    let size = phone.encoder.frame_samples();
                    let step = phone.encoder.timestamp_step();
                    let phone_frame = frame.get_mut(..size).unwrap_or_default();
                    while to_phone.pop(phone_frame) {
                        let Ok(len) = phone.encoder.encode(phone_frame, &mut encoded) else { continue };
                        let Some(bytes) = encoded.get(..len) else { continue };
                        self.to_phone(&mut phone, bytes, step, &mut send_buf).await;
                    }
                }
                () = tokio::time::sleep_until(leg_wake) => {
                    self.leg.on_timeout().await.map_err(|e| e.to_string())?;
                }
                changed = self.media.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the call is over
                    }
                    let Some(media) = self.media.borrow_and_update().clone() else { continue };
                    phone.renegotiated(media)?;
                    to_phone.clear();
                    to_channel.clear();
                }
                command = self.commands.recv() => {
                    match command {
                        Some(Command::Digits(digits)) => {
                            for digit in digits.chars() {
                                phone.dtmf_out.push(digit);
                            }
                        }
                        None => return Ok(()), // hung up
                    }
                }
                _ = dtmf_tick.tick() => {
                    self.send_dtmf(&mut phone, &mut send_buf).await;
                }
                _ = inactivity.tick() => {
                    if phone.media.direction.receives() && phone.last_heard.elapsed() >= self.rtp_timeout {
                        self.stats.rtp_timeouts.fetch_add(1, Ordering::Relaxed);
                        let _ = self.events.send(Event::Timeout).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The payload type and audio payload of a packet from the phone, after the latch and the
    /// payload type are checked; DTMF packets are taken here (and give `None`).
    fn phone_payload<'p>(
        &self,
        phone: &mut Phone,
        from: SocketAddr,
        packet: &'p [u8],
    ) -> Option<(u8, &'p [u8])> {
        let Ok(header) = rtp::Header::parse(packet) else {
            self.stats.malformed_rtp.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let pt = header.payload_type;
        let audio = phone.decoders.iter().any(|(p, _, _)| *p == pt);
        if !audio && Some(pt) != phone.media.dtmf_payload_type {
            self.stats.malformed_rtp.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match phone.latched {
            Some(latched) if latched != from => {
                self.stats.strangers.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(_) => {}
            None => {
                if phone.media.remote != Some(from) {
                    tracing::debug!(
                        "RTP from {from}, not {:?} as the SDP said: sending there (symmetric RTP)",
                        phone.media.remote
                    );
                }
                phone.latched = Some(from);
            }
        }
        phone.last_heard = Instant::now();
        let payload = packet.get(header.payload_offset..header.payload_end)?;
        if Some(pt) == phone.media.dtmf_payload_type {
            if let Some(digit) = phone.dtmf_in.receive(header.timestamp, payload) {
                self.stats.digits_in.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.try_send(Event::Digit(digit));
            }
            return None;
        }
        Some((pt, payload))
    }

    /// Sends one packet of the phone's codec, advancing the stream's clock by `step`.
    async fn to_phone(&self, phone: &mut Phone, payload: &[u8], step: u32, buf: &mut [u8]) {
        let fields = rtp::HeaderFields {
            marker: false,
            payload_type: phone.media.payload_type,
            sequence: phone.sequence,
            timestamp: phone.timestamp,
            ssrc: phone.ssrc,
        };
        phone.sequence = phone.sequence.wrapping_add(1);
        phone.timestamp = phone.timestamp.wrapping_add(step);
        self.send_rtp(phone.destination(), &fields, payload, buf)
            .await;
    }

    /// The next telephone-event packet of the digit playing, if any (RFC 4733 §2.5: one
    /// timestamp for the whole event, the marker on its first packet).
    async fn send_dtmf(&self, phone: &mut Phone, buf: &mut [u8]) {
        let Some(pt) = phone.media.dtmf_payload_type else {
            return;
        };
        let mut payload = [0u8; 4];
        let Some(packet) = phone.dtmf_out.tick(&mut payload) else {
            return;
        };
        if packet.start {
            phone.dtmf_timestamp = phone.timestamp;
            self.stats.digits_out.fetch_add(1, Ordering::Relaxed);
        }
        let fields = rtp::HeaderFields {
            marker: packet.start,
            payload_type: pt,
            sequence: phone.sequence,
            timestamp: phone.dtmf_timestamp,
            ssrc: phone.ssrc,
        };
        phone.sequence = phone.sequence.wrapping_add(1);
        let body = payload.get(..packet.payload_len).unwrap_or_default();
        self.send_rtp(phone.destination(), &fields, body, buf).await;
    }

    async fn send_rtp(
        &self,
        to: Option<SocketAddr>,
        fields: &rtp::HeaderFields,
        payload: &[u8],
        buf: &mut [u8],
    ) {
        let Some(to) = to else {
            return;
        };
        let Ok(header) = rtp::write_header(buf, fields, &[]) else {
            return;
        };
        let end = header + payload.len();
        let Some(body) = buf.get_mut(header..end) else {
            return;
        };
        body.copy_from_slice(payload);
        if let Some(datagram) = buf.get(..end)
            && self.phone.send_to(datagram, to).await.is_ok()
        {
            self.stats.packets_to_phones.fetch_add(1, Ordering::Relaxed);
        }
    }
}
