//! A channel across workers: the two ends of a shard link (`TransportKind::Shard`).
//!
//! One router fans a channel out on one core. Past what that core can send, the control plane
//! places a channel's later subscribers on routers of other workers (the channel's shards)
//! and links each shard to the home router, where the publishers are:
//!
//! - The home end copies every packet of each linked producer, every layer, to the link as
//!   it arrives: no layer choice, no frame hold, no rewriting but the SSRC. A browser stops
//!   sending the MID and RID extensions once its streams are acknowledged, so the far end
//!   could not learn which SSRC is which layer; the link's SSRCs are fixed beforehand instead
//!   (`ShardStream::ssrcs`).
//! - The far end's producers are copies of the home's, under the same ids, their layers bound
//!   to the link's SSRCs. Its router treats the link as their publisher: each copy keeps its
//!   own NACK history, and its subscribers get keyframe gating, their own layers and the frame
//!   fan-out as on the home worker.
//! - Feedback comes back: the far end NACKs a gap at once (a packet lost on a full lane),
//!   which the home end answers from the producer's history, a PLI or FIR becomes a keyframe request to the publisher, and the
//!   publisher's sender reports go on to the far end, so its subscribers keep lip sync.
//!
//! A linked producer counts as wanting every layer and taking any bitrate: the far end's
//! subscribers may want any of them, and their own choices stay on their worker.

use std::time::Instant;

use super::{Output, Router};
use crate::media::MediaKind;
use crate::pacer::Class;
use crate::rtcp;
use crate::spec::{Error, ShardStream, Ssrc};
use crate::transport::TransportKey;

/// The most packets of one gap a link's far end asks for again: a longer one is an outage
/// that a keyframe request mends better.
const MAX_ASKED: u16 = 16;

/// Where a producer's packets are copied: the home end of one shard link.
pub(super) struct MirrorOut {
    /// The link's member entry and transport.
    pub member: usize,
    pub transport: TransportKey,
    /// The SSRC each layer has on the link, lowest first.
    pub ssrcs: Vec<Ssrc>,
}

/// Writes `packet` into `buf` as SSRC `ssrc`; its length, or `None` when it does not fit.
fn write_copy(packet: &[u8], ssrc: Ssrc, buf: &mut [u8]) -> Option<usize> {
    let out = buf.get_mut(..packet.len())?;
    out.copy_from_slice(packet);
    out.get_mut(8..12)?.copy_from_slice(&ssrc.0.to_be_bytes());
    Some(packet.len())
}

impl Router {
    /// Makes `member` the home end of a shard link that carries `streams`. Every producer
    /// must be in this router, with one SSRC per layer; otherwise nothing changes.
    pub fn add_mirror(
        &mut self,
        now: Instant,
        member: usize,
        streams: &[ShardStream],
    ) -> Result<(), Error> {
        let transport = self
            .members
            .get(member)
            .map(|m| m.transport)
            .ok_or_else(|| Error::Rejected("no such member".into()))?;
        let keys = self.stream_producers(streams)?;
        for (&key, stream) in keys.iter().zip(streams) {
            if let Some(p) = self.producers.get_mut(key) {
                p.mirrors.push(MirrorOut {
                    member,
                    transport,
                    ssrcs: stream.ssrcs.clone(),
                });
            }
        }
        if let Some(m) = self.members.get_mut(member) {
            m.mirrored.extend(&keys);
        }
        // The link wants every layer from now on.
        for key in keys {
            self.report_wanted(now, key);
        }
        Ok(())
    }

    /// Binds the layers of `member`'s producers (the far end's copies) to the link's SSRCs.
    pub fn bind_layers(&mut self, member: usize, streams: &[ShardStream]) -> Result<(), Error> {
        let keys = self.stream_producers(streams)?;
        for (&key, stream) in keys.iter().zip(streams) {
            let Some(p) = self.producers.get_mut(key).filter(|p| p.member == member) else {
                return Err(Error::Rejected(format!(
                    "producer {} is not the link's",
                    stream.producer
                )));
            };
            for (l, &ssrc) in p.layers.iter_mut().zip(&stream.ssrcs) {
                l.ssrc = Some(ssrc);
            }
            p.linked = true;
        }
        Ok(())
    }

    /// The router's keys of the streams' producers, each checked to have as many layers as
    /// its stream has SSRCs.
    fn stream_producers(&self, streams: &[ShardStream]) -> Result<Vec<usize>, Error> {
        streams
            .iter()
            .map(|s| {
                let key = self.producer_ids.get(&s.producer).copied();
                match key.and_then(|k| Some((k, self.producers.get(k)?))) {
                    Some((k, p)) if p.layers.len() == s.ssrcs.len() => Ok(k),
                    Some(_) => Err(Error::Rejected(format!(
                        "producer {} has another number of layers",
                        s.producer
                    ))),
                    None => Err(Error::Rejected(format!(
                        "producer {} is not in this channel",
                        s.producer
                    ))),
                }
            })
            .collect()
    }

    /// Forgets the links of a member that leaves.
    pub(super) fn remove_mirror(&mut self, mirrored: &[usize], member: usize) {
        for &key in mirrored {
            if let Some(p) = self.producers.get_mut(key) {
                p.mirrors.retain(|o| o.member != member);
            }
        }
    }

    /// The producer and layer that `ssrc` names on the shard link `member`.
    fn mirrored_layer(&self, member: usize, ssrc: Ssrc) -> Option<(usize, usize)> {
        self.members.get(member)?.mirrored.iter().find_map(|&k| {
            let o = self
                .producers
                .get(k)?
                .mirrors
                .iter()
                .find(|o| o.member == member)?;
            Some((k, o.ssrcs.iter().position(|&s| s == ssrc)?))
        })
    }

    /// Copies a packet of `producer`'s `layer` to each of its links, as it arrived.
    pub(super) fn copy_to_mirrors(
        &self,
        producer: usize,
        layer: usize,
        packet: &[u8],
        out: &mut impl Output,
    ) {
        let Some(p) = self.producers.get(producer) else {
            return;
        };
        let class = match p.kind {
            MediaKind::Audio => Class::Audio,
            MediaKind::Video => Class::Video,
        };
        for o in &p.mirrors {
            if let Some(&ssrc) = o.ssrcs.get(layer) {
                out.send_rtp(o.transport, class, None, |buf| {
                    write_copy(packet, ssrc, buf)
                });
            }
        }
    }

    /// A keyframe request from the far end of shard link `member` for `ssrc`: passed on to
    /// the publisher. False when `ssrc` is not the link's.
    pub(super) fn mirror_keyframe(&mut self, now: Instant, member: usize, ssrc: Ssrc) -> bool {
        let Some((producer, layer)) = self.mirrored_layer(member, ssrc) else {
            return false;
        };
        self.request_keyframe(now, producer, layer);
        true
    }

    /// Resends what the far end of shard link `member` lost of `ssrc`, from the history.
    pub(super) fn mirror_resend(
        &self,
        member: usize,
        ssrc: Ssrc,
        lost: impl Iterator<Item = u16>,
        out: &mut impl Output,
    ) {
        let Some((key, layer)) = self.mirrored_layer(member, ssrc) else {
            return;
        };
        let (Some(history), Some(m)) = (
            self.producers
                .get(key)
                .and_then(|p| p.layers.get(layer)?.history.as_ref()),
            self.members.get(member),
        ) else {
            return;
        };
        for seq in lost {
            let Some(packet) = history.get(seq) else {
                continue;
            };
            let write = |buf: &mut [u8]| write_copy(packet, ssrc, buf);
            if out.send_rtp(m.transport, Class::Retransmission, None, write) {
                out.counters().nack_retransmits += 1;
            }
        }
    }

    /// At a link's far end: asks the home end again for what a gap before `seq` in
    /// `producer`'s `layer` lost (`highest` was the highest before it), at most `MAX_ASKED`.
    pub(super) fn ask_again(
        &self,
        producer: usize,
        layer: usize,
        highest: u16,
        seq: u16,
        out: &mut impl Output,
    ) {
        let gap = seq.wrapping_sub(highest);
        if !(2..=MAX_ASKED + 1).contains(&gap) {
            return;
        }
        let Some(p) = self.producers.get(producer) else {
            return;
        };
        let (Some(m), Some(ssrc)) = (
            self.members.get(p.member),
            p.layers.get(layer).and_then(|l| l.ssrc),
        ) else {
            return;
        };
        let mut lost = [0u16; MAX_ASKED as usize];
        for (i, s) in lost.iter_mut().enumerate() {
            *s = highest.wrapping_add(1 + i as u16);
        }
        let lost = &lost[..usize::from(gap - 1)];
        out.send_rtcp(m.transport, |buf| {
            rtcp::write_nack(buf, m.rtcp_ssrc.0, ssrc.0, lost).ok()
        });
    }

    /// Passes a sender report of `producer`'s `layer` on to its links.
    pub(super) fn mirror_sender_report(
        &self,
        producer: usize,
        layer: usize,
        ntp: u64,
        rtp_timestamp: u32,
        out: &mut impl Output,
    ) {
        let Some(p) = self.producers.get(producer) else {
            return;
        };
        for o in &p.mirrors {
            if let Some(&ssrc) = o.ssrcs.get(layer) {
                out.send_rtcp(o.transport, |buf| {
                    rtcp::write_sender_report(buf, ssrc.0, ntp, rtp_timestamp, 0, 0, &[]).ok()
                });
            }
        }
    }
}
