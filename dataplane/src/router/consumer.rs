//! A consumer: one transport's subscription to a producer, and how its copy of each packet is
//! written.

use rand::Rng;

use crate::rtp::{self, HeaderFields};
use crate::spec::{ConsumerId, ConsumerSpec, Ssrc};
use crate::transport::TransportKey;

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
    /// Video consumers start at a keyframe; audio consumers at once.
    pub started: bool,
    /// Sent so far, for our sender reports (RFC 3550 §6.4.1 counts wrap).
    pub packets: u32,
    pub octets: u32,
}

/// How a consumer writes its copy of a producer's packet: its own SSRC and payload type,
/// sequence numbers and timestamps shifted by constant offsets, only the MID extension.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub ssrc: Ssrc,
    payload_type: u8,
    mid: String,
    mid_ext: Option<u8>,
    /// Added to the producer's sequence numbers and timestamps; constant for the consumer's
    /// life, so a NACKed sequence number maps straight back to the producer's. Random, so a
    /// subscriber cannot infer how long the stream ran before it joined (RFC 3550 §5.1).
    seq_offset: u16,
    ts_offset: u32,
}

impl Rewrite {
    pub fn new(spec: &ConsumerSpec, rng: &mut impl Rng) -> Rewrite {
        Rewrite {
            ssrc: spec.ssrc,
            payload_type: spec.payload_type,
            mid: spec.mid.clone(),
            mid_ext: spec.mid_ext,
            seq_offset: rng.random(),
            ts_offset: rng.random(),
        }
    }

    /// The producer's sequence number for one of ours (for NACKs).
    pub fn producer_seq(&self, seq: u16) -> u16 {
        seq.wrapping_sub(self.seq_offset)
    }

    /// Our RTP timestamp for one of the producer's.
    pub fn timestamp(&self, producer_ts: u32) -> u32 {
        producer_ts.wrapping_add(self.ts_offset)
    }

    /// Writes the decrypted RTP `packet` into `out` in the clear as this consumer sends it; the
    /// payload is copied once, straight into `out`. Returns the length.
    pub fn write(&self, header: &rtp::Header, packet: &[u8], out: &mut [u8]) -> Option<usize> {
        let fields = HeaderFields {
            marker: header.marker,
            payload_type: self.payload_type,
            sequence: header.sequence.wrapping_add(self.seq_offset),
            timestamp: self.timestamp(header.timestamp),
            ssrc: self.ssrc.0,
        };
        let mid = self.mid_ext.map(|id| (id, self.mid.as_bytes()));
        let header_len = rtp::write_header(out, &fields, mid.as_slice()).ok()?;
        // Payload and padding go through unchanged; the padding bit must then be set again.
        let body = packet.get(header.payload_offset..)?;
        if header.payload_end < packet.len() {
            *out.first_mut()? |= 0x20;
        }
        let end = header_len.checked_add(body.len())?;
        out.get_mut(header_len..end)?.copy_from_slice(body);
        Some(end)
    }
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
        }
    }

    #[test]
    fn rewrite_keeps_payload_and_padding_and_maps_sequence_numbers_back() {
        let rewrite = Rewrite::new(&spec(), &mut StdRng::seed_from_u64(1));
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
        let n = rewrite.write(&header, packet, &mut out).unwrap();
        let got = rtp::Header::parse(&out[..n]).unwrap();
        assert_eq!((got.ssrc, got.payload_type, got.marker), (0xBAD, 98, true));
        assert_eq!(&out[got.payload_offset..got.payload_end], b"hello");
        assert_eq!(got.extension_value(&out[..n], 3), Some(&b"4"[..]));
        assert_eq!(got.extension_value(&out[..n], 2), None);
        assert_eq!(rewrite.producer_seq(got.sequence), 65535);
        assert_eq!(got.timestamp, rewrite.timestamp(4000));
    }
}
