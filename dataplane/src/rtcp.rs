//! RTCP (RFC 3550) with the feedback messages an SFU handles: generic NACK and PLI (RFC 4585),
//! FIR (RFC 5104), REMB (draft-alvestrand-rmcat-remb) and transport-wide CC (recognised only).
//!
//! Hand-written because feedback is parsed and rewritten per packet on the worker cores; parsing
//! borrows the datagram and never allocates.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::wire::{be_u16, be_u32, be_u64};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("RTCP packet too short")]
    TooShort,
    #[error("RTCP version is not 2")]
    BadVersion,
    #[error("RTCP length field runs past the datagram")]
    BadLength,
    #[error("malformed RTCP payload")]
    Malformed,
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// A report block of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative loss.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_timestamp: u32,
        packet_count: u32,
        octet_count: u32,
        reports: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    /// Generic NACK: the lost sequence numbers are expanded by `Nack::lost`.
    Nack(Nack<'a>),
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    /// FIR: (target SSRC, command sequence number) entries.
    Fir {
        sender_ssrc: u32,
        entries: FirEntries<'a>,
    },
    Remb {
        sender_ssrc: u32,
        bitrate_bps: u64,
        ssrcs: Ssrcs<'a>,
    },
    /// Transport-wide congestion control feedback (see [`crate::twcc`]).
    TransportCc {
        sender_ssrc: u32,
        media_ssrc: u32,
        feedback: crate::twcc::Feedback<'a>,
    },
    /// SDES, BYE, APP and anything else: skipped by the SFU.
    Other {
        packet_type: u8,
        format: u8,
    },
}

/// Iterates the packets of a compound RTCP datagram; stops after the first error.
pub fn packets(datagram: &[u8]) -> Packets<'_> {
    Packets { rest: datagram }
}

pub struct Packets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<Packet<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = split_packet(self.rest);
        match result {
            Ok((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Report blocks of an SR/RR, decoded lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        let b = self.raw.get(..24)?;
        self.raw = &self.raw[24..];
        let loss = be_u32(b, 4)?;
        // The top byte is the fraction lost; sign-extend the 24-bit cumulative loss below it.
        let cumulative_lost = ((loss << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be_u32(b, 0)?,
            fraction_lost: (loss >> 24) as u8,
            cumulative_lost,
            extended_highest_seq: be_u32(b, 8)?,
            jitter: be_u32(b, 12)?,
            last_sr: be_u32(b, 16)?,
            delay_since_last_sr: be_u32(b, 20)?,
        })
    }
}

/// A generic NACK (RTPFB FMT 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack<'a> {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    raw_fci: &'a [u8],
}

impl<'a> Nack<'a> {
    /// Every lost sequence number named by the PID/BLP pairs, in order.
    pub fn lost(&self) -> impl Iterator<Item = u16> + 'a {
        let pairs = self
            .raw_fci
            .chunks_exact(4)
            .filter_map(|c| Some((be_u16(c, 0)?, be_u16(c, 2)?)));
        pairs.flat_map(|(pid, blp)| {
            std::iter::once(pid).chain(
                (0..16)
                    .filter(move |i| blp & (1 << i) != 0)
                    .map(move |i| pid.wrapping_add(i + 1)),
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirEntries<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for FirEntries<'a> {
    type Item = (u32, u8);
    fn next(&mut self) -> Option<(u32, u8)> {
        let b = self.raw.get(..8)?;
        self.raw = &self.raw[8..];
        Some((be_u32(b, 0)?, b[4]))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssrcs<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for Ssrcs<'a> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let v = be_u32(self.raw, 0)?;
        self.raw = &self.raw[4..];
        Some(v)
    }
}

/// Splits off and decodes the first packet of a compound datagram.
fn split_packet(buf: &[u8]) -> Result<(Packet<'_>, &[u8]), Error> {
    if buf.len() < 4 {
        return Err(Error::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    let count = buf[0] & 0x1F;
    let packet_type = buf[1];
    let len = 4 * (usize::from(be_u16(buf, 2).ok_or(Error::TooShort)?) + 1);
    let packet = buf.get(..len).ok_or(Error::BadLength)?;
    let rest = &buf[len..];
    let mut body = &packet[4..];
    if buf[0] & 0x20 != 0 {
        let pad = usize::from(*packet.last().ok_or(Error::Malformed)?);
        if pad == 0 || pad > body.len() {
            return Err(Error::Malformed);
        }
        body = &body[..body.len() - pad];
    }
    let word = |at| be_u32(body, at).ok_or(Error::Malformed);
    let decoded = match (packet_type, count) {
        (200, _) => {
            let reports = body
                .get(24..24 + 24 * usize::from(count))
                .ok_or(Error::Malformed)?;
            Packet::SenderReport {
                ssrc: word(0)?,
                ntp: be_u64(body, 4).ok_or(Error::Malformed)?,
                rtp_timestamp: word(12)?,
                packet_count: word(16)?,
                octet_count: word(20)?,
                reports: ReportBlocks { raw: reports },
            }
        }
        (201, _) => {
            let reports = body
                .get(4..4 + 24 * usize::from(count))
                .ok_or(Error::Malformed)?;
            Packet::ReceiverReport {
                ssrc: word(0)?,
                reports: ReportBlocks { raw: reports },
            }
        }
        (205, 1) => Packet::Nack(Nack {
            sender_ssrc: word(0)?,
            media_ssrc: word(4)?,
            raw_fci: body.get(8..).unwrap_or_default(),
        }),
        (205, 15) => Packet::TransportCc {
            sender_ssrc: word(0)?,
            media_ssrc: word(4)?,
            feedback: crate::twcc::Feedback::parse(body.get(8..).unwrap_or_default())
                .map_err(|_| Error::Malformed)?,
        },
        (206, 1) => Packet::Pli {
            sender_ssrc: word(0)?,
            media_ssrc: word(4)?,
        },
        (206, 4) => Packet::Fir {
            sender_ssrc: word(0)?,
            entries: FirEntries {
                raw: body.get(8..).unwrap_or_default(),
            },
        },
        (206, 15) if body.get(8..12) == Some(b"REMB") => {
            let n = usize::from(*body.get(12).ok_or(Error::Malformed)?);
            let exp = u32::from(*body.get(13).ok_or(Error::Malformed)? >> 2);
            let mantissa = word(12)? & 0x3FFFF;
            let bitrate_bps = u64::from(mantissa).checked_shl(exp).unwrap_or(u64::MAX);
            let ssrcs = body.get(16..16 + 4 * n).ok_or(Error::Malformed)?;
            Packet::Remb {
                sender_ssrc: word(0)?,
                bitrate_bps,
                ssrcs: Ssrcs { raw: ssrcs },
            }
        }
        (packet_type, format) => Packet::Other {
            packet_type,
            format,
        },
    };
    Ok((decoded, rest))
}

// Writers: each writes one RTCP packet at the start of `out` and returns its length, so a
// compound packet is built by writing several in a row.

/// Writes the common header for a packet of `len` bytes (a multiple of 4).
fn header(out: &mut [u8], count: u8, packet_type: u8, len: usize) -> Result<&mut [u8], Error> {
    let out = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    out[0] = 0x80 | (count & 0x1F);
    out[1] = packet_type;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    Ok(out)
}

fn put32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_blocks(out: &mut [u8], at: usize, reports: &[ReportBlock]) {
    for (i, r) in reports.iter().enumerate() {
        let b = at + 24 * i;
        put32(out, b, r.ssrc);
        let lost = (r.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0xFF_FFFF;
        put32(out, b + 4, (u32::from(r.fraction_lost) << 24) | lost);
        put32(out, b + 8, r.extended_highest_seq);
        put32(out, b + 12, r.jitter);
        put32(out, b + 16, r.last_sr);
        put32(out, b + 20, r.delay_since_last_sr);
    }
}

pub fn write_sender_report(
    out: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packet_count: u32,
    octet_count: u32,
    reports: &[ReportBlock],
) -> Result<usize, Error> {
    if reports.len() > 31 {
        return Err(Error::Malformed);
    }
    let len = 28 + 24 * reports.len();
    let out = header(out, reports.len() as u8, 200, len)?;
    put32(out, 4, ssrc);
    out[8..16].copy_from_slice(&ntp.to_be_bytes());
    put32(out, 16, rtp_timestamp);
    put32(out, 20, packet_count);
    put32(out, 24, octet_count);
    put_blocks(out, 28, reports);
    Ok(len)
}

pub fn write_receiver_report(
    out: &mut [u8],
    ssrc: u32,
    reports: &[ReportBlock],
) -> Result<usize, Error> {
    if reports.len() > 31 {
        return Err(Error::Malformed);
    }
    let len = 8 + 24 * reports.len();
    let out = header(out, reports.len() as u8, 201, len)?;
    put32(out, 4, ssrc);
    put_blocks(out, 8, reports);
    Ok(len)
}

/// SDES with a single CNAME item.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &str) -> Result<usize, Error> {
    let name = cname.as_bytes();
    if name.len() > 255 {
        return Err(Error::Malformed);
    }
    // SSRC, CNAME type and length, the name, then at least one zero byte ending the item list.
    let len = (8 + 2 + name.len() + 1).div_ceil(4) * 4;
    let out = header(out, 1, 202, len)?;
    put32(out, 4, ssrc);
    out[8] = 1;
    out[9] = name.len() as u8;
    out[10..10 + name.len()].copy_from_slice(name);
    out[10 + name.len()..].fill(0);
    Ok(len)
}

/// Generic NACK for `lost` (sorted ascending, wrap-aware), packed into PID/BLP pairs.
pub fn write_nack(
    out: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &[u16],
) -> Result<usize, Error> {
    // Count the pairs first so the header can be written before them.
    let pairs = nack_pairs(lost).count();
    if pairs == 0 {
        return Err(Error::Malformed);
    }
    let len = 12 + 4 * pairs;
    let out = header(out, 1, 205, len)?;
    put32(out, 4, sender_ssrc);
    put32(out, 8, media_ssrc);
    for (i, (pid, blp)) in nack_pairs(lost).enumerate() {
        out[12 + 4 * i..14 + 4 * i].copy_from_slice(&pid.to_be_bytes());
        out[14 + 4 * i..16 + 4 * i].copy_from_slice(&blp.to_be_bytes());
    }
    Ok(len)
}

fn nack_pairs(lost: &[u16]) -> impl Iterator<Item = (u16, u16)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let &pid = lost.get(i)?;
        i += 1;
        let mut blp = 0u16;
        while let Some(&seq) = lost.get(i) {
            let d = seq.wrapping_sub(pid);
            if d == 0 {
                i += 1;
                continue;
            }
            if d > 16 {
                break;
            }
            blp |= 1 << (d - 1);
            i += 1;
        }
        Some((pid, blp))
    })
}

pub fn write_pli(out: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, Error> {
    let out = header(out, 1, 206, 12)?;
    put32(out, 4, sender_ssrc);
    put32(out, 8, media_ssrc);
    Ok(12)
}

pub fn write_fir(
    out: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    seq: u8,
) -> Result<usize, Error> {
    let out = header(out, 4, 206, 20)?;
    put32(out, 4, sender_ssrc);
    put32(out, 8, 0);
    put32(out, 12, media_ssrc);
    put32(out, 16, u32::from(seq) << 24);
    Ok(20)
}

pub fn write_remb(
    out: &mut [u8],
    sender_ssrc: u32,
    bitrate_bps: u64,
    ssrcs: &[u32],
) -> Result<usize, Error> {
    if ssrcs.len() > 255 {
        return Err(Error::Malformed);
    }
    let mut exp = 0u32;
    while bitrate_bps >> exp > 0x3FFFF {
        exp += 1;
    }
    let mantissa = (bitrate_bps >> exp) as u32;
    let len = 20 + 4 * ssrcs.len();
    let out = header(out, 15, 206, len)?;
    put32(out, 4, sender_ssrc);
    put32(out, 8, 0);
    out[12..16].copy_from_slice(b"REMB");
    put32(
        out,
        16,
        ((ssrcs.len() as u32) << 24) | (exp << 18) | mantissa,
    );
    for (i, &s) in ssrcs.iter().enumerate() {
        put32(out, 20 + 4 * i, s);
    }
    Ok(len)
}

/// Seconds from 1900 (NTP's epoch) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Wall clock as a 64-bit NTP timestamp, for sender reports.
pub fn ntp_now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ntp_from(since)
}

fn ntp_from(since_unix: Duration) -> u64 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Receive statistics of one incoming stream, for the report blocks we send to publishers
/// (RFC 3550 A.3 loss, A.8 jitter, LSR/DLSR from the publisher's last SR).
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    seq: crate::rtp::SeqExtender,
    base: Option<u64>,
    highest: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in RTP units, scaled by 16 as RFC 3550 A.8 suggests.
    jitter_q4: u64,
    last_transit: Option<i64>,
    epoch: Option<Instant>,
    last_sr: Option<(u64, Instant)>,
}

impl ReceiveStats {
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            clock_rate,
            seq: Default::default(),
            base: None,
            highest: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_q4: 0,
            last_transit: None,
            epoch: None,
            last_sr: None,
        }
    }

    /// The highest sequence number received so far, if any.
    pub fn highest_seq(&self) -> Option<u16> {
        // ok: the low 16 bits of the extended number are the sequence number.
        self.base.map(|_| self.highest as u16)
    }

    /// Records an arriving packet.
    pub fn on_packet(&mut self, sequence: u16, rtp_timestamp: u32, arrival: Instant) {
        let ext = self.seq.extend(sequence);
        match self.base {
            None => {
                self.base = Some(ext);
                self.highest = ext;
            }
            Some(base) => {
                if ext < base {
                    self.base = Some(ext);
                }
                self.highest = self.highest.max(ext);
            }
        }
        self.received += 1;
        let epoch = *self.epoch.get_or_insert(arrival);
        let arrival_rtp = (arrival.saturating_duration_since(epoch).as_micros() as u64)
            .saturating_mul(u64::from(self.clock_rate))
            / 1_000_000;
        let transit = arrival_rtp as i64 - i64::from(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // Differences use 32-bit RTP arithmetic, so a timestamp wrap is a small step.
            let d = i64::from(((transit - last) as i32).unsigned_abs());
            let j = self.jitter_q4 as i64;
            self.jitter_q4 = (j + d - ((j + 8) >> 4)).max(0) as u64;
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the first to the highest sequence number seen, and packets
    /// received (RFC 3550 A.3; duplicates count as received).
    pub fn counts(&self) -> (u64, u64) {
        match self.base {
            Some(base) => (self.highest - base + 1, self.received),
            None => (0, 0),
        }
    }

    /// The interarrival jitter (RFC 3550 A.8) in seconds.
    pub fn jitter(&self) -> f64 {
        (self.jitter_q4 >> 4) as f64 / f64::from(self.clock_rate.max(1))
    }

    /// Records a sender report from this stream's sender (for LSR/DLSR).
    pub fn on_sender_report(&mut self, ntp: u64, arrival: Instant) {
        self.last_sr = Some((ntp, arrival));
    }

    /// The report block for this stream now; resets the interval counters (fraction lost).
    pub fn report_block(&mut self, ssrc: u32, now: Instant) -> ReportBlock {
        let Some(base) = self.base else {
            return ReportBlock {
                ssrc,
                ..Default::default()
            };
        };
        let expected = self.highest - base + 1;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((ntp, at)) => {
                let delay = now.saturating_duration_since(at);
                let units = delay.as_secs() * 65536
                    + u64::from(delay.subsec_nanos()) * 65536 / 1_000_000_000;
                (
                    ((ntp >> 16) & 0xFFFF_FFFF) as u32,
                    units.min(u64::from(u32::MAX)) as u32,
                )
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            // The extender starts one cycle in; the report counts cycles from zero.
            extended_highest_seq: (self.highest.saturating_sub(1 << 16)) as u32,
            jitter: (self.jitter_q4 >> 4) as u32,
            last_sr,
            delay_since_last_sr,
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(buf: &[u8]) -> Packet<'_> {
        let mut it = packets(buf);
        let p = it.next().unwrap().unwrap();
        assert!(it.next().is_none());
        p
    }

    #[test]
    fn sender_report_round_trip() {
        let block = ReportBlock {
            ssrc: 9,
            fraction_lost: 3,
            cumulative_lost: -2,
            extended_highest_seq: 70000,
            jitter: 12,
            last_sr: 0xAABBCCDD,
            delay_since_last_sr: 65536,
        };
        let mut out = [0u8; 128];
        let n = write_sender_report(&mut out, 1, 0x0102030405060708, 90000, 10, 1000, &[block])
            .unwrap();
        match one(&out[..n]) {
            Packet::SenderReport {
                ssrc,
                ntp,
                rtp_timestamp,
                packet_count,
                octet_count,
                reports,
            } => {
                assert_eq!(
                    (ssrc, ntp, rtp_timestamp, packet_count, octet_count),
                    (1, 0x0102030405060708, 90000, 10, 1000)
                );
                assert_eq!(reports.collect::<Vec<_>>(), vec![block]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compound_rr_sdes_remb() {
        let mut out = [0u8; 256];
        let mut n = write_receiver_report(
            &mut out,
            5,
            &[ReportBlock {
                ssrc: 6,
                ..Default::default()
            }],
        )
        .unwrap();
        n += write_sdes_cname(&mut out[n..], 5, "switchyard").unwrap();
        n += write_remb(&mut out[n..], 5, 2_500_000, &[6, 7]).unwrap();
        let all: Vec<_> = packets(&out[..n]).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert!(
            matches!(&all[0], Packet::ReceiverReport { ssrc: 5, reports } if reports.clone().count() == 1)
        );
        assert!(matches!(
            all[1],
            Packet::Other {
                packet_type: 202,
                format: 1
            }
        ));
        match &all[2] {
            Packet::Remb {
                sender_ssrc: 5,
                bitrate_bps,
                ssrcs,
            } => {
                assert!(*bitrate_bps <= 2_500_000 && *bitrate_bps > 2_490_000);
                assert_eq!(ssrcs.clone().collect::<Vec<_>>(), vec![6, 7]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remb_exponent_and_mantissa() {
        for bitrate in [
            0u64,
            1,
            0x3FFFF,
            0x40000,
            1_000_000_000,
            u64::from(u32::MAX) * 1000,
        ] {
            let mut out = [0u8; 64];
            let n = write_remb(&mut out, 1, bitrate, &[]).unwrap();
            let Packet::Remb { bitrate_bps, .. } = one(&out[..n]) else {
                panic!()
            };
            assert!(
                bitrate_bps <= bitrate && bitrate_bps as f64 >= bitrate as f64 * 0.9999,
                "{bitrate} -> {bitrate_bps}"
            );
        }
    }

    #[test]
    fn nack_packing_and_expansion_across_the_wrap() {
        let lost = [65530u16, 65531, 65535, 0, 4, 30, 31];
        let mut out = [0u8; 64];
        let n = write_nack(&mut out, 1, 2, &lost).unwrap();
        // 65530 covers up to 65530+16 = 10 (wrapping), 30 starts a second pair.
        assert_eq!(n, 12 + 8);
        let Packet::Nack(nack) = one(&out[..n]) else {
            panic!()
        };
        assert_eq!((nack.sender_ssrc, nack.media_ssrc), (1, 2));
        assert_eq!(nack.lost().collect::<Vec<_>>(), lost.to_vec());
        assert_eq!(write_nack(&mut out, 1, 2, &[]), Err(Error::Malformed));
    }

    #[test]
    fn pli_and_fir() {
        let mut out = [0u8; 64];
        let n = write_pli(&mut out, 1, 2).unwrap();
        assert_eq!(
            one(&out[..n]),
            Packet::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        );
        let n = write_fir(&mut out, 1, 3, 7).unwrap();
        let Packet::Fir {
            sender_ssrc,
            entries,
        } = one(&out[..n])
        else {
            panic!()
        };
        assert_eq!(sender_ssrc, 1);
        assert_eq!(entries.collect::<Vec<_>>(), vec![(3, 7)]);
    }

    #[test]
    fn browser_sr_with_sdes() {
        // An SR without report blocks followed by SDES CNAME "abcd", as Chrome sends them.
        let bytes = [
            0x80, 0xc8, 0x00, 0x06, 0x11, 0x22, 0x33, 0x44, 0xe9, 0x4f, 0x12, 0x34, 0x56, 0x78,
            0x9a, 0xbc, 0x00, 0x01, 0x5f, 0x90, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04, 0x00,
            0x81, 0xca, 0x00, 0x03, 0x11, 0x22, 0x33, 0x44, 0x01, 0x04, b'a', b'b', b'c', b'd',
            0x00, 0x00,
        ];
        let all: Vec<_> = packets(&bytes).collect::<Result<_, _>>().unwrap();
        assert!(matches!(
            all[0],
            Packet::SenderReport {
                ssrc: 0x11223344,
                rtp_timestamp: 90000,
                packet_count: 16,
                ..
            }
        ));
        assert!(matches!(
            all[1],
            Packet::Other {
                packet_type: 202,
                ..
            }
        ));
    }

    #[test]
    fn malformed_input_ends_with_an_error() {
        let mut out = [0u8; 64];
        let n = write_pli(&mut out, 1, 2).unwrap();
        let mut it = packets(&out[..n - 1]);
        assert_eq!(it.next(), Some(Err(Error::BadLength)));
        assert_eq!(it.next(), None);
        let mut bad = out[..n].to_vec();
        bad[0] = 0x41;
        assert_eq!(packets(&bad).next(), Some(Err(Error::BadVersion)));
        // An SR claiming two report blocks it does not have.
        let mut sr = [0u8; 64];
        let n = write_sender_report(&mut sr, 1, 0, 0, 0, 0, &[]).unwrap();
        sr[0] |= 2;
        assert_eq!(packets(&sr[..n]).next(), Some(Err(Error::Malformed)));
        assert_eq!(write_pli(&mut out[..8], 1, 2), Err(Error::BufferTooSmall));
    }

    #[test]
    fn receive_stats_loss_jitter_and_lsr() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        // 100 packets 33 ms apart with timestamps 3000 apart: no jitter; drop every 10th.
        for i in 0..100u32 {
            if i % 10 == 5 {
                continue;
            }
            let seq = (65500u32 + i) as u16;
            s.on_packet(
                seq,
                1000 + 3000 * i,
                t0 + Duration::from_micros(33_333 * u64::from(i)),
            );
        }
        s.on_sender_report(0x1234_5678_9abc_def0, t0);
        let b = s.report_block(42, t0 + Duration::from_millis(500));
        assert_eq!(b.ssrc, 42);
        assert_eq!(b.cumulative_lost, 10);
        assert_eq!(b.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(b.extended_highest_seq, 65500 + 99);
        assert!(b.jitter < 5, "jitter {}", b.jitter);
        assert_eq!(b.last_sr, 0x5678_9abc);
        assert_eq!(b.delay_since_last_sr, 32768);
        // The next interval has no new packets, so no new loss.
        assert_eq!(s.report_block(42, t0).fraction_lost, 0);
    }

    #[test]
    fn ntp_epoch() {
        assert_eq!(
            ntp_from(Duration::from_millis(1500)),
            ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31)
        );
        assert!(ntp_now() >> 32 > NTP_UNIX_OFFSET);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            for p in packets(&data) {
                match p {
                    Ok(Packet::SenderReport { reports, .. }) | Ok(Packet::ReceiverReport { reports, .. }) => { let _ = reports.count(); }
                    Ok(Packet::Nack(n)) => { let _ = n.lost().count(); }
                    Ok(Packet::Fir { entries, .. }) => { let _ = entries.count(); }
                    Ok(Packet::Remb { ssrcs, .. }) => { let _ = ssrcs.count(); }
                    _ => {}
                }
            }
        }

        #[test]
        fn nack_round_trip(mut lost in proptest::collection::vec(any::<u16>(), 1..40), base in any::<u16>()) {
            for l in lost.iter_mut() { *l = base.wrapping_add(*l % 200); }
            lost.sort_by_key(|l| l.wrapping_sub(base));
            lost.dedup();
            let mut out = [0u8; 512];
            let n = write_nack(&mut out, 1, 2, &lost).unwrap();
            let Ok(Packet::Nack(nack)) = packets(&out[..n]).next().unwrap() else { panic!() };
            prop_assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
        }
    }
}
