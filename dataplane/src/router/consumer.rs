//! A consumer: one transport's subscription to a producer, and how its copy of each packet is
//! written.

use std::time::Instant;

use rand::Rng;

use crate::media::Codec;
use crate::red;
use crate::rtp::{self, HeaderFields};
use crate::spec::{ConsumerId, ConsumerSpec, Preferences, RtxSpec, Ssrc};
use crate::transport::TransportKey;

use super::temporal::Temporal;

/// A subscription to a producer on another transport of the router.
pub(super) struct Consumer {
    pub id: ConsumerId,
    /// The transport it sends on (what every forwarded packet needs, so it is kept here rather
    /// than looked up through the member), and its member entry in the router (what removal
    /// needs). Neither changes in the consumer's life.
    pub transport: TransportKey,
    pub member: usize,
    /// Its producer's key in the router.
    pub producer: usize,
    pub rewrite: Rewrite,
    pub nack: bool,
    /// The producer's layer it forwards; `None` until it starts (video at a keyframe of
    /// `target`, audio with its first packet).
    pub layer: Option<usize>,
    /// The layer it should forward. When it differs from `layer`, the consumer goes on
    /// forwarding `layer` until a keyframe of `target` arrives, then switches there.
    pub target: usize,
    pub prefs: Preferences,
    /// Sent so far, for our sender reports (RFC 3550 §6.4.1 counts wrap).
    pub packets: u32,
    pub octets: u32,
    /// Layer selection over an SVC producer (one with a dependency descriptor stream).
    pub svc: Option<Box<super::svc::ConsumerSvc>>,
    /// The last frame fan-out job that wrote for it (see `super::fanout::Job::serial`).
    pub fanned: u32,
}

impl Consumer {
    /// Whether it waits for a keyframe of `layer` (to start, or to switch there).
    pub fn waits_for(&self, layer: usize) -> bool {
        !self.prefs.paused && self.target == layer && self.layer != Some(layer)
    }
}

/// How a consumer writes its copy of a producer's packet: its own SSRC and payload type,
/// sequence numbers and timestamps shifted by offsets, only the MID extension.
///
/// The offsets are constant while one layer is forwarded, so a NACKed sequence number maps
/// straight back to the producer's. A switch to another simulcast layer (at that layer's
/// keyframe) sets new offsets so that the subscriber sees one continuous stream: the next
/// sequence number, a timestamp advanced by the wall-clock time since the last packet, and for
/// VP8 the next picture id and TL0PICIDX (RFC 7741 §4.2), which the receiver's frame
/// references follow.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub ssrc: Ssrc,
    payload_type: u8,
    mid: String,
    mid_ext: Option<u8>,
    /// Where forwarded audio packets carry the producer's RFC 6464 level, when the subscriber
    /// takes it (see `ConsumerSpec::audio_level_ext`).
    audio_level_ext: Option<u8>,
    codec: Codec,
    /// Added to the producer's sequence numbers and timestamps. Random at first, so a
    /// subscriber cannot infer how long the stream ran before it joined (RFC 3550 §5.1).
    seq_offset: u16,
    ts_offset: u32,
    /// Our first sequence number after the last switch between streams: NACKs before it (for
    /// another layer) are not answered, and late packets from before it are not sent. `None`
    /// while the first stream is forwarded.
    segment_start: Option<u16>,
    /// The newest packet written: its sequence number, timestamp and when.
    last: Option<(u16, u32, Instant)>,
    /// VP8: added to the picture id (modulo its width) and TL0PICIDX.
    picture_offset: u16,
    tl0_offset: u8,
    /// VP8: the newest picture id and TL0PICIDX written.
    last_picture: Option<(u16, u8)>,
    /// The retransmission stream, when the subscriber negotiated RTX.
    rtx: Option<RtxStream>,
    /// The subscriber's RED payload type, when it takes RED as is.
    consumer_red: Option<u8>,
    /// The producer's RED, if it sends RED (see `with_red`).
    red: Option<RedMap>,
    /// VP8 temporal layers dropped for `maxFrameRate`: then sequence numbers and picture ids
    /// come from it instead of the offsets (see `super::temporal`).
    temporal: Option<Box<Temporal>>,
}

/// What the router reads once from a producer's packet for all of its consumers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Read<'a> {
    /// VP8: the picture id, TL0PICIDX and temporal layer.
    pub vp8: Option<&'a rtp::Vp8Fields>,
    /// Audio: the value of its RFC 6464 level extension.
    pub level: Option<&'a [u8]>,
}

/// A producer's RED (RFC 2198): its RED payload type and the inner (Opus) one.
#[derive(Debug, Clone, Copy)]
struct RedMap {
    producer_red: u8,
    producer_pt: u8,
}

/// A consumer's RTX stream (RFC 4588 §4): its SSRC and payload type, and the next sequence
/// number, which counts RTX packets only (random at first, RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
struct RtxStream {
    ssrc: Ssrc,
    payload_type: u8,
    next_seq: u16,
}

impl Rewrite {
    pub fn new(spec: &ConsumerSpec, codec: Codec, rng: &mut impl Rng) -> Rewrite {
        Rewrite {
            ssrc: spec.ssrc,
            payload_type: spec.payload_type,
            mid: spec.mid.clone(),
            mid_ext: spec.mid_ext,
            audio_level_ext: spec.audio_level_ext,
            codec,
            seq_offset: rng.random(),
            ts_offset: rng.random(),
            segment_start: None,
            last: None,
            picture_offset: 0,
            tl0_offset: 0,
            last_picture: None,
            rtx: spec.rtx.map(|RtxSpec { ssrc, payload_type }| RtxStream {
                ssrc,
                payload_type,
                next_seq: rng.random(),
            }),
            consumer_red: spec.red,
            red: None,
            temporal: None,
        }
    }

    /// The producer sends RED as `producer_red` around its own payload type `producer_pt`:
    /// its RED packets are passed through to a subscriber that negotiated RED (with our RED
    /// payload type, the inner blocks renumbered to ours), and unwrapped to their primary
    /// block for any other.
    pub fn with_red(mut self, producer_red: Option<u8>, producer_pt: u8) -> Rewrite {
        self.red = producer_red.map(|producer_red| RedMap {
            producer_red,
            producer_pt,
        });
        self
    }

    /// Our RTX SSRC, when the subscriber takes retransmissions as RTX.
    pub fn rtx_ssrc(&self) -> Option<Ssrc> {
        self.rtx.map(|r| r.ssrc)
    }

    /// The producer's sequence number for one of ours (for NACKs), if we sent it with the
    /// current offsets.
    pub fn producer_seq(&self, seq: u16) -> Option<u16> {
        if let Some(t) = self.temporal.as_deref() {
            return t.seq.producer_seq(seq);
        }
        let current = self
            .segment_start
            .is_none_or(|start| seq.wrapping_sub(start) < 0x8000);
        current.then(|| seq.wrapping_sub(self.seq_offset))
    }

    /// Our RTP timestamp for one of the producer's.
    pub fn timestamp(&self, producer_ts: u32) -> u32 {
        producer_ts.wrapping_add(self.ts_offset)
    }

    /// Starts forwarding another stream (a simulcast layer) at `header`, a keyframe: the
    /// offsets make it continue ours. The first stream keeps the random offsets.
    pub fn switch(&mut self, header: &rtp::Header, payload: &[u8], now: Instant, clock_rate: u32) {
        let picture = (self.codec == Codec::Vp8)
            .then(|| rtp::vp8_picture_fields(payload))
            .flatten();
        let Some((seq, ts, at)) = self.last else {
            return;
        };
        self.seq_offset = seq.wrapping_add(1).wrapping_sub(header.sequence);
        let elapsed = now.saturating_duration_since(at).as_micros() as u64;
        let ticks = (elapsed * u64::from(clock_rate) / 1_000_000).max(1) as u32;
        self.ts_offset = ts.wrapping_add(ticks).wrapping_sub(header.timestamp);
        if let (Some((last_id, last_tl0)), Some(fields)) = (self.last_picture, picture) {
            if let Some((id, long)) = fields.picture_id {
                let modulo = if long { 0x8000 } else { 0x80 };
                self.picture_offset = last_id.wrapping_add(1).wrapping_sub(id) % modulo;
            }
            if let Some(tl0) = fields.tl0 {
                self.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        self.segment_start = Some(header.sequence.wrapping_add(self.seq_offset));
        if let Some(t) = self.temporal.as_mut() {
            let next_picture = self.last_picture.map_or(0, |(id, _)| id.wrapping_add(1));
            t.restart(seq.wrapping_add(1), next_picture);
        }
    }

    /// Forwards VP8 temporal layers up to `wanted` only (`None`: all of them again). The
    /// first call starts numbering that closes up over the dropped packets; it stays on for
    /// the consumer's life (NACKs of packets sent before it are not answered).
    pub fn set_temporal(&mut self, wanted: Option<u8>) {
        let wanted = match (wanted, self.temporal.as_mut()) {
            (w, Some(t)) => return t.set_wanted(w.unwrap_or(u8::MAX)),
            (None, None) => return,
            (Some(w), None) => w,
        };
        let first_seq = self
            .last
            .map_or(self.seq_offset, |(seq, ..)| seq.wrapping_add(1));
        let next_picture = self.last_picture.map_or(0, |(id, _)| id.wrapping_add(1));
        self.temporal = Some(Temporal::new(first_seq, next_picture, wanted));
    }

    /// Whether a packet with the VP8 `fields` goes to the subscriber (its temporal layer is
    /// wanted); one that does not must be passed to [`Rewrite::skip`].
    pub fn admits(&mut self, fields: Option<&rtp::Vp8Fields>, keyframe: bool) -> bool {
        match self.temporal.as_mut() {
            Some(t) => t.admits(fields.and_then(|f| f.temporal), keyframe),
            None => true,
        }
    }

    /// The producer's packet `seq` is not forwarded: the numbers close up over it.
    pub fn skip(&mut self, seq: u16) {
        if let Some(t) = self.temporal.as_mut() {
            let _hole = t.seq.skip(seq);
        }
    }

    /// Writes the decrypted RTP `packet` of the stream being forwarded into `out` in the clear
    /// as this consumer sends it; the payload is copied once, straight into `out`. `vp8` is the
    /// packet's VP8 descriptor fields, read once by the router for every consumer. Returns the
    /// length, or `None` for a late packet from before the last switch.
    pub fn write(
        &mut self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        now: Instant,
        twcc: Option<(u8, u16)>,
        read: Read<'_>,
    ) -> Option<usize> {
        let seq = match self.temporal.as_mut() {
            Some(t) => t.seq.forward(header.sequence)?,
            None => header.sequence.wrapping_add(self.seq_offset),
        };
        if self.temporal.is_none()
            && self
                .segment_start
                .is_some_and(|start| seq.wrapping_sub(start) >= 0x8000)
        {
            return None;
        }
        let fields = read.vp8.filter(|_| self.codec == Codec::Vp8);
        let picture = self.picture_shift(fields, true)?;
        let level = self.audio_level_ext.zip(read.level);
        let len = self.write_with(
            header,
            packet,
            out,
            seq,
            header.marker,
            level,
            twcc,
            picture,
        )?;
        if self
            .last
            .is_none_or(|(last, ..)| seq.wrapping_sub(last) < 0x8000)
        {
            self.last = Some((seq, self.timestamp(header.timestamp), now));
            if let Some(f) = fields {
                let previous = self.last_picture.unwrap_or_default();
                self.last_picture = Some((
                    f.picture_id.map_or(previous.0, |(id, long)| {
                        id.wrapping_add(picture) % if long { 0x8000 } else { 0x80 }
                    }),
                    f.tl0
                        .map_or(previous.1, |t| t.wrapping_add(self.tl0_offset)),
                ));
            }
        }
        Some(len)
    }

    /// What to add to a VP8 packet's picture id (`fields`, read from it): the offset of the
    /// stream it is on, or with temporal layers dropped the difference to the id it was (or,
    /// when `fresh`, is now) given. `None` for a resend of a picture no longer remembered.
    fn picture_shift(&mut self, fields: Option<&rtp::Vp8Fields>, fresh: bool) -> Option<u16> {
        let (Some(t), Some((id, long))) =
            (self.temporal.as_mut(), fields.and_then(|f| f.picture_id))
        else {
            return Some(self.picture_offset);
        };
        let modulo = if long { 0x8000 } else { 0x80 };
        let ours = if fresh {
            t.picture(id, modulo)
        } else {
            t.picture_sent(id)?
        };
        Some(ours.wrapping_sub(id) % modulo)
    }

    /// Writes `packet` with our sequence number `seq` (a retransmission: the number it was
    /// first sent with), and `twcc`'s transport-wide sequence number (extension id, number)
    /// when the subscriber sends transport-cc feedback.
    pub fn write_as(
        &mut self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        seq: u16,
        twcc: Option<(u8, u16)>,
    ) -> Option<usize> {
        let picture = self.resend_picture_shift(header, packet)?;
        self.write_with(header, packet, out, seq, header.marker, None, twcc, picture)
    }

    /// The picture id shift for a retransmission of `packet` (see `picture_shift`).
    fn resend_picture_shift(&mut self, header: &rtp::Header, packet: &[u8]) -> Option<u16> {
        let fields = (self.codec == Codec::Vp8)
            .then(|| packet.get(header.payload_offset..header.payload_end))
            .flatten()
            .and_then(rtp::vp8_picture_fields);
        self.picture_shift(fields.as_ref(), false)
    }

    /// Writes a packet of an SVC stream (`super::svc`): `seq` comes from the consumer's
    /// `SeqRewriter` (dropped layers leave no gap), `marker` from its selector (the end of
    /// its own temporal unit), and `dd` is the dependency descriptor to carry (the consumer's
    /// extension id, the producer's bytes). The timestamp keeps the constant offset.
    pub fn write_svc(
        &mut self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        svc: SvcFields<'_>,
        now: Instant,
    ) -> Option<usize> {
        let shift = self.picture_offset;
        let len = self.write_with(
            header, packet, out, svc.seq, svc.marker, svc.dd, svc.twcc, shift,
        )?;
        if self
            .last
            .is_none_or(|(last, ..)| svc.seq.wrapping_sub(last) < 0x8000)
        {
            self.last = Some((svc.seq, self.timestamp(header.timestamp), now));
        }
        Some(len)
    }

    /// Writes an SVC packet again (a retransmission), leaving the state alone.
    pub fn write_svc_again(
        &self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        svc: SvcFields<'_>,
    ) -> Option<usize> {
        let shift = self.picture_offset;
        self.write_with(
            header, packet, out, svc.seq, svc.marker, svc.dd, svc.twcc, shift,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write_with(
        &self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        seq: u16,
        marker: bool,
        extra: Option<(u8, &[u8])>,
        twcc: Option<(u8, u16)>,
        picture: u16,
    ) -> Option<usize> {
        let red = self.red.filter(|r| r.producer_red == header.payload_type);
        if let Some(r) = red {
            return self.write_red(header, packet, out, seq, twcc, extra, r);
        }
        let fields = HeaderFields {
            marker,
            payload_type: self.payload_type,
            sequence: seq,
            timestamp: self.timestamp(header.timestamp),
            ssrc: self.ssrc.0,
        };
        let header_len = self.write_header(out, &fields, twcc, extra)?;
        // Payload and padding go through unchanged; the padding bit must then be set again.
        let body = packet.get(header.payload_offset..)?;
        if header.payload_end < packet.len() {
            *out.first_mut()? |= 0x20;
        }
        let end = header_len.checked_add(body.len())?;
        out.get_mut(header_len..end)?.copy_from_slice(body);
        let payload_len = header.payload_end.checked_sub(header.payload_offset)?;
        self.shift_picture(
            out.get_mut(header_len..header_len.checked_add(payload_len)?)?,
            picture,
        );
        Some(end)
    }

    /// Writes a RED packet of the producer: as RED with our payload types for a subscriber
    /// that negotiated it, else its primary block as a plain packet (RFC 2198 §3). Padding is
    /// dropped. `None` for a malformed RED payload.
    #[allow(clippy::too_many_arguments)]
    fn write_red(
        &self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        seq: u16,
        twcc: Option<(u8, u16)>,
        extra: Option<(u8, &[u8])>,
        red: RedMap,
    ) -> Option<usize> {
        let payload = packet.get(header.payload_offset..header.payload_end)?;
        let (payload_type, body) = match self.consumer_red {
            Some(pt) => (pt, payload),
            None => {
                let (inner, at) = red::primary(payload)?;
                if inner != red.producer_pt {
                    return None;
                }
                (self.payload_type, payload.get(at..)?)
            }
        };
        let fields = HeaderFields {
            marker: header.marker,
            payload_type,
            sequence: seq,
            timestamp: self.timestamp(header.timestamp),
            ssrc: self.ssrc.0,
        };
        let header_len = self.write_header(out, &fields, twcc, extra)?;
        let end = header_len.checked_add(body.len())?;
        let written = out.get_mut(header_len..end)?;
        written.copy_from_slice(body);
        if self.consumer_red.is_some() && red.producer_pt != self.payload_type {
            red::set_block_types(written, red.producer_pt, self.payload_type)?;
        }
        Some(end)
    }

    /// Writes `packet`, which we first sent as our `seq`, as an RTX packet (RFC 4588 §4): our
    /// RTX SSRC, payload type and next RTX sequence number, the original timestamp and marker,
    /// and a payload of `seq` (the OSN, 2 bytes) then the original payload, without its
    /// padding. `None` (and nothing written) when the consumer has no RTX stream.
    pub fn write_rtx(
        &mut self,
        header: &rtp::Header,
        packet: &[u8],
        out: &mut [u8],
        seq: u16,
        twcc: Option<(u8, u16)>,
    ) -> Option<usize> {
        let rtx = self.rtx?;
        let picture = self.resend_picture_shift(header, packet)?;
        let fields = HeaderFields {
            marker: header.marker,
            payload_type: rtx.payload_type,
            sequence: rtx.next_seq,
            timestamp: self.timestamp(header.timestamp),
            ssrc: rtx.ssrc.0,
        };
        let header_len = self.write_header(out, &fields, twcc, None)?;
        let payload = packet.get(header.payload_offset..header.payload_end)?;
        let start = header_len.checked_add(2)?;
        let end = start.checked_add(payload.len())?;
        out.get_mut(header_len..start)?
            .copy_from_slice(&seq.to_be_bytes());
        let body = out.get_mut(start..end)?;
        body.copy_from_slice(payload);
        self.shift_picture(body, picture);
        self.advance_rtx();
        Some(end)
    }

    /// Writes an RTX packet that carries only `size` bytes of padding (RFC 3550 §5.1; the
    /// last byte is the count), for probing the subscriber's bandwidth without sending
    /// media: the receiver drops it after counting it. It has our newest timestamp and no
    /// OSN. `None` when the consumer has no RTX stream or `size` is 0.
    pub fn write_rtx_padding(
        &mut self,
        out: &mut [u8],
        size: u8,
        twcc: Option<(u8, u16)>,
    ) -> Option<usize> {
        let rtx = self.rtx?;
        if size == 0 {
            return None;
        }
        let fields = HeaderFields {
            marker: false,
            payload_type: rtx.payload_type,
            sequence: rtx.next_seq,
            timestamp: self.last.map_or(self.ts_offset, |(_, ts, _)| ts),
            ssrc: rtx.ssrc.0,
        };
        let header_len = self.write_header(out, &fields, twcc, None)?;
        *out.first_mut()? |= 0x20;
        let end = header_len.checked_add(usize::from(size))?;
        let padding = out.get_mut(header_len..end)?;
        padding.fill(0);
        *padding.last_mut()? = size;
        self.advance_rtx();
        Some(end)
    }

    fn advance_rtx(&mut self) {
        if let Some(r) = self.rtx.as_mut() {
            r.next_seq = r.next_seq.wrapping_add(1);
        }
    }

    /// Writes the header with our extensions: the MID, the transport-wide sequence number
    /// `twcc` (extension id, number) when the subscriber sends transport-cc feedback, and
    /// `extra` (extension id, bytes): an SVC packet's dependency descriptor, or an audio
    /// packet's level.
    fn write_header(
        &self,
        out: &mut [u8],
        fields: &HeaderFields,
        twcc: Option<(u8, u16)>,
        extra: Option<(u8, &[u8])>,
    ) -> Option<usize> {
        let twcc = twcc.map(|(id, n)| (id, n.to_be_bytes()));
        let mut extensions: [(u8, &[u8]); 3] = [(0, &[]); 3];
        let mut count = 0;
        for (id, value) in self
            .mid_ext
            .map(|id| (id, self.mid.as_bytes()))
            .into_iter()
            .chain(twcc.as_ref().map(|(id, n)| (*id, &n[..])))
            .chain(extra.filter(|(_, v)| !v.is_empty()))
        {
            if let Some(slot) = extensions.get_mut(count) {
                *slot = (id, value);
                count += 1;
            }
        }
        rtp::write_header(out, fields, extensions.get(..count)?).ok()
    }

    /// VP8: adds `picture` to the picture id and our offset to TL0PICIDX (after a layer
    /// switch, or with temporal layers dropped).
    fn shift_picture(&self, payload: &mut [u8], picture: u16) {
        if self.codec == Codec::Vp8 && (picture != 0 || self.tl0_offset != 0) {
            rtp::vp8_shift_picture(payload, picture, self.tl0_offset);
        }
    }
}

/// What an SVC packet is written with besides the producer's packet (`Rewrite::write_svc`).
#[derive(Debug, Clone, Copy)]
pub struct SvcFields<'a> {
    pub seq: u16,
    pub marker: bool,
    pub dd: Option<(u8, &'a [u8])>,
    pub twcc: Option<(u8, u16)>,
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProducerId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn spec() -> ConsumerSpec {
        ConsumerSpec {
            id: ConsumerId(1),
            producer: ProducerId(1),
            ssrc: Ssrc(0xBAD),
            payload_type: 98,
            mid: "4".into(),
            mid_ext: Some(3),
            nack: true,
            pli: true,
            fir: true,
            twcc_ext: None,
            dd_ext: None,
            audio_level_ext: None,
            rtx: None,
            red: None,
        }
    }

    #[test]
    fn rewrite_keeps_payload_and_padding_and_maps_sequence_numbers_back() {
        let spec = ConsumerSpec {
            audio_level_ext: Some(6),
            ..spec()
        };
        let mut rewrite = Rewrite::new(&spec, Codec::H264, &mut StdRng::seed_from_u64(1));
        let fields = HeaderFields {
            marker: true,
            payload_type: 96,
            sequence: 65535,
            timestamp: 4000,
            ssrc: 77,
        };
        let mut packet = [0u8; 64];
        let h = rtp::write_header(&mut packet, &fields, &[(1, b"0"), (2, b"xyz")]).unwrap();
        packet[h..h + 5].copy_from_slice(b"hello");
        // Three bytes of padding, the last one its count.
        packet[h + 7] = 3;
        packet[0] |= 0x20;
        let packet = &packet[..h + 8];
        let header = rtp::Header::parse(packet).unwrap();

        let mut out = [0u8; 64];
        let n = rewrite
            .write(
                &header,
                packet,
                &mut out,
                Instant::now(),
                Some((5, 0x1234)),
                Read {
                    vp8: None,
                    level: Some(&[0x8a]),
                },
            )
            .unwrap();
        let got = rtp::Header::parse(&out[..n]).unwrap();
        assert_eq!((got.ssrc, got.payload_type, got.marker), (0xBAD, 98, true));
        assert_eq!(&out[got.payload_offset..got.payload_end], b"hello");
        assert_eq!(got.extension_value(&out[..n], 3), Some(&b"4"[..]));
        assert_eq!(got.extension_value(&out[..n], 6), Some(&[0x8a][..]));
        assert_eq!(got.extension_value(&out[..n], 2), None);
        assert_eq!(got.extension_value(&out[..n], 5), Some(&[0x12, 0x34][..]));
        assert_eq!(rewrite.producer_seq(got.sequence), Some(65535));
        assert_eq!(got.timestamp, rewrite.timestamp(4000));
    }

    #[test]
    fn rtx_packets_carry_the_osn_and_the_payload_without_padding() {
        let mut with_rtx = spec();
        with_rtx.rtx = Some(RtxSpec {
            ssrc: Ssrc(0xFEED),
            payload_type: 99,
        });
        let mut rewrite = Rewrite::new(&with_rtx, Codec::H264, &mut StdRng::seed_from_u64(1));
        assert_eq!(rewrite.rtx_ssrc(), Some(Ssrc(0xFEED)));
        let fields = HeaderFields {
            marker: true,
            payload_type: 96,
            sequence: 1000,
            timestamp: 4000,
            ssrc: 77,
        };
        let mut packet = [0u8; 64];
        let h = rtp::write_header(&mut packet, &fields, &[(1, b"0")]).unwrap();
        packet[h..h + 5].copy_from_slice(b"hello");
        packet[h + 7] = 3;
        packet[0] |= 0x20;
        let packet = &packet[..h + 8];
        let header = rtp::Header::parse(packet).unwrap();
        let mut out = [0u8; 64];
        let n = rewrite
            .write(
                &header,
                packet,
                &mut out,
                Instant::now(),
                None,
                Read::default(),
            )
            .unwrap();
        let ours = rtp::Header::parse(&out[..n]).unwrap().sequence;

        let mut rtx = [[0u8; 64]; 2];
        let mut got = Vec::new();
        for buf in &mut rtx {
            let n = rewrite
                .write_rtx(&header, packet, buf, ours, Some((5, 7)))
                .unwrap();
            got.push((rtp::Header::parse(&buf[..n]).unwrap(), n));
        }
        let (first, n) = &got[0];
        assert_eq!(
            (first.ssrc, first.payload_type, first.marker),
            (0xFEED, 99, true)
        );
        assert_eq!(first.timestamp, rewrite.timestamp(4000));
        // No padding: the payload is the OSN then the original payload.
        assert_eq!(first.payload_end, *n);
        assert_eq!(rtx[0][0] & 0x20, 0);
        let payload = &rtx[0][first.payload_offset..first.payload_end];
        assert_eq!(&payload[..2], &ours.to_be_bytes());
        assert_eq!(&payload[2..], b"hello");
        assert_eq!(first.extension_value(&rtx[0][..*n], 3), Some(&b"4"[..]));
        assert_eq!(first.extension_value(&rtx[0][..*n], 5), Some(&[0, 7][..]));
        // RTX sequence numbers are the stream's own, one per packet.
        assert_eq!(got[1].0.sequence, first.sequence.wrapping_add(1));

        let mut probe = [0u8; 300];
        let n = rewrite.write_rtx_padding(&mut probe, 200, None).unwrap();
        let p = rtp::Header::parse(&probe[..n]).unwrap();
        assert_eq!((p.ssrc, p.payload_type), (0xFEED, 99));
        assert_eq!(p.sequence, first.sequence.wrapping_add(2));
        assert_eq!(p.timestamp, rewrite.timestamp(4000));
        assert_eq!(p.payload_offset, p.payload_end);
        assert_eq!(n - p.payload_end, 200);
        assert_eq!(probe[n - 1], 200);
        assert!(rewrite.write_rtx_padding(&mut probe, 0, None).is_none());

        let mut plain = Rewrite::new(&spec(), Codec::H264, &mut StdRng::seed_from_u64(1));
        assert!(
            plain
                .write_rtx(&header, packet, &mut out, ours, None)
                .is_none()
        );
        assert!(plain.write_rtx_padding(&mut probe, 10, None).is_none());
    }

    #[test]
    fn red_passes_through_renumbered_or_is_unwrapped_to_its_primary_block() {
        // The producer: RED 63 around Opus 111; one redundant block ("old") and the primary.
        let fields = HeaderFields {
            marker: false,
            payload_type: 63,
            sequence: 7,
            timestamp: 960,
            ssrc: 77,
        };
        let mut packet = [0u8; 64];
        let h = rtp::write_header(&mut packet, &fields, &[]).unwrap();
        let red_payload = [
            0x80 | 111,
            0x0F,
            0x00,
            3,
            111,
            b'o',
            b'l',
            b'd',
            b'n',
            b'e',
            b'w',
        ];
        packet[h..h + red_payload.len()].copy_from_slice(&red_payload);
        let packet = &packet[..h + red_payload.len()];
        let header = rtp::Header::parse(packet).unwrap();
        let mut out = [0u8; 64];

        // A subscriber with RED 100 around its Opus 109.
        let mut with_red = spec();
        with_red.payload_type = 109;
        with_red.red = Some(100);
        let mut rewrite = Rewrite::new(&with_red, Codec::Opus, &mut StdRng::seed_from_u64(1))
            .with_red(Some(63), 111);
        let n = rewrite
            .write(
                &header,
                packet,
                &mut out,
                Instant::now(),
                None,
                Read::default(),
            )
            .unwrap();
        let got = rtp::Header::parse(&out[..n]).unwrap();
        assert_eq!(got.payload_type, 100);
        let body = &out[got.payload_offset..got.payload_end];
        assert_eq!(body[0], 0x80 | 109);
        assert_eq!(body[4], 109);
        assert_eq!(&body[5..], b"oldnew");

        // A subscriber without RED (Opus 109) gets the primary block as Opus.
        let mut plain_spec = spec();
        plain_spec.payload_type = 109;
        let mut plain = Rewrite::new(&plain_spec, Codec::Opus, &mut StdRng::seed_from_u64(1))
            .with_red(Some(63), 111);
        let n = plain
            .write(
                &header,
                packet,
                &mut out,
                Instant::now(),
                None,
                Read::default(),
            )
            .unwrap();
        let got = rtp::Header::parse(&out[..n]).unwrap();
        assert_eq!(got.payload_type, 109);
        assert_eq!(&out[got.payload_offset..got.payload_end], b"new");
        // Plain Opus from the same producer goes through as before.
        let mut opus = packet.to_vec();
        opus[1] = 111;
        let header = rtp::Header::parse(&opus).unwrap();
        let n = plain
            .write(
                &header,
                &opus,
                &mut out,
                Instant::now(),
                None,
                Read::default(),
            )
            .unwrap();
        let got = rtp::Header::parse(&out[..n]).unwrap();
        assert_eq!(got.payload_type, 109);
        assert_eq!(&out[got.payload_offset..got.payload_end], &red_payload[..]);
        // A malformed RED payload is not written.
        let mut bad = packet.to_vec();
        bad[h + 3] = 200;
        let header = rtp::Header::parse(&bad).unwrap();
        assert!(
            plain
                .write(
                    &header,
                    &bad,
                    &mut out,
                    Instant::now(),
                    None,
                    Read::default()
                )
                .is_none()
        );
    }
}
