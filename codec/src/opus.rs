//! The Opus RTP payload format (RFC 7587): one Opus packet per RTP packet, nothing around it.
//!
//! It has the same shape as the video formats so the mixer handles every input alike. Every
//! packet is a whole frame and decodes on its own (a "keyframe"), so a loss never holds frames
//! back: the jitter buffer and the decoder's PLC and FEC deal with it. The marker bit means the
//! start of a talkspurt, not the end of a frame, and is ignored here.

use crate::depacketize::{DepacketizeError, Depacketizer, PayloadFormat};
use crate::packetize::{PacketizeError, Packetizer, Payloads};

/// Opus's [`PayloadFormat`]: the payload is the frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opus;

/// Reassembles Opus packets (one per RTP packet).
pub type OpusDepacketizer = Depacketizer<Opus>;

impl PayloadFormat for Opus {
    fn starts_frame(&mut self, _payload: &[u8]) -> Result<Option<bool>, DepacketizeError> {
        Ok(Some(true))
    }

    fn reset(&mut self) {}

    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        frame.extend_from_slice(payload);
        Ok(())
    }

    fn keyframe(&self) -> bool {
        true
    }

    fn ends_frame(&self, _marker: bool) -> bool {
        true
    }
}

/// Writes each Opus packet as one payload; an Opus packet is at most 1275 bytes per frame, and
/// one that does not fit the MTU is an encoder misconfiguration, reported as such.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpusPacketizer;

impl Packetizer for OpusPacketizer {
    fn packetize(
        &mut self,
        frame: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError> {
        out.clear();
        if frame.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        if frame.len() > mtu {
            return Err(PacketizeError::MtuTooSmall(mtu));
        }
        out.extend(frame);
        out.finish();
        Ok(())
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_is_a_frame_and_loss_needs_nothing() {
        let mut p = OpusPacketizer;
        let mut out = Payloads::new();
        let mut d = OpusDepacketizer::default();
        for (i, size) in [1usize, 60, 160, 1275].into_iter().enumerate() {
            let frame: Vec<u8> = (0..size).map(|b| b as u8).collect();
            p.packetize(&frame, 1200.max(size), &mut out).unwrap();
            assert_eq!(out.len(), 1);
            // Every other sequence number is lost.
            let seq = (i * 2) as u16;
            let payload = out.iter().next().unwrap();
            let got = d
                .push(seq, i as u32 * 960, i == 0, payload)
                .unwrap()
                .unwrap();
            assert_eq!(got.data, &frame[..]);
            assert!(got.keyframe);
            assert!(!d.keyframe_wanted());
        }
        assert_eq!(d.stats().lost_packets, 3);
        assert_eq!(d.stats().frames, 4);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut p = OpusPacketizer;
        let mut out = Payloads::new();
        assert_eq!(
            p.packetize(&[], 1200, &mut out),
            Err(PacketizeError::EmptyFrame)
        );
        assert_eq!(
            p.packetize(&[0; 100], 50, &mut out),
            Err(PacketizeError::MtuTooSmall(50))
        );
        assert!(out.is_empty());
        let mut d = OpusDepacketizer::default();
        // Padding is nothing, and no loss.
        assert_eq!(d.push(1, 0, false, &[]), Ok(None));
        assert!(d.push(2, 960, false, &[1]).unwrap().is_some());
        assert_eq!((d.stats().padding_packets, d.stats().lost_packets), (1, 0));
        assert_eq!(d.push(2, 960, false, &[1]), Err(DepacketizeError::Late(2)));
        assert_eq!(d.stats().late_packets, 1);
        assert_eq!(d.stats().malformed_packets, 0);
        // Far behind is a sender that restarted its sequence numbers: followed, not dropped.
        assert!(
            d.push(2u16.wrapping_sub(101), 0, false, &[1])
                .unwrap()
                .is_some()
        );
        assert!(
            d.push(2u16.wrapping_sub(100), 960, false, &[1])
                .unwrap()
                .is_some()
        );
        assert_eq!(d.stats().late_packets, 1);
        assert_eq!(d.stats().lost_packets, 0);
    }
}
