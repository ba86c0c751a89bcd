//! RTCP (RFC 3550) with the feedback messages an SFU handles: generic NACK and PLI (RFC 4585),
//! FIR (RFC 5104), REMB (draft-alvestrand-rmcat-remb) and transport-wide CC (recognised only).
//!
//! Hand-written because feedback is parsed and rewritten per packet on the worker cores; parsing
//! borrows the datagram and never allocates.
//!
//! CONTRACT (skeleton): signatures used by the router; implement the bodies.

use std::time::Instant;

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
    TransportCc {
        sender_ssrc: u32,
        media_ssrc: u32,
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
        let _ = self.rest;
        todo!()
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
        let _ = self.raw;
        todo!()
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
        let _ = self.raw_fci;
        std::iter::empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirEntries<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for FirEntries<'a> {
    type Item = (u32, u8);
    fn next(&mut self) -> Option<(u32, u8)> {
        let _ = self.raw;
        todo!()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssrcs<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for Ssrcs<'a> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let _ = self.raw;
        todo!()
    }
}

// Writers: each writes one RTCP packet at the start of `out` and returns its length, so a
// compound packet is built by writing several in a row.

pub fn write_sender_report(
    out: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packet_count: u32,
    octet_count: u32,
    reports: &[ReportBlock],
) -> Result<usize, Error> {
    let _ = (
        out,
        ssrc,
        ntp,
        rtp_timestamp,
        packet_count,
        octet_count,
        reports,
    );
    todo!()
}

pub fn write_receiver_report(
    out: &mut [u8],
    ssrc: u32,
    reports: &[ReportBlock],
) -> Result<usize, Error> {
    let _ = (out, ssrc, reports);
    todo!()
}

/// SDES with a single CNAME item.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &str) -> Result<usize, Error> {
    let _ = (out, ssrc, cname);
    todo!()
}

/// Generic NACK for `lost` (sorted ascending, wrap-aware), packed into PID/BLP pairs.
pub fn write_nack(
    out: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &[u16],
) -> Result<usize, Error> {
    let _ = (out, sender_ssrc, media_ssrc, lost);
    todo!()
}

pub fn write_pli(out: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, Error> {
    let _ = (out, sender_ssrc, media_ssrc);
    todo!()
}

pub fn write_fir(
    out: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    seq: u8,
) -> Result<usize, Error> {
    let _ = (out, sender_ssrc, media_ssrc, seq);
    todo!()
}

pub fn write_remb(
    out: &mut [u8],
    sender_ssrc: u32,
    bitrate_bps: u64,
    ssrcs: &[u32],
) -> Result<usize, Error> {
    let _ = (out, sender_ssrc, bitrate_bps, ssrcs);
    todo!()
}

/// Wall clock as a 64-bit NTP timestamp, for sender reports.
pub fn ntp_now() -> u64 {
    todo!()
}

/// Receive statistics of one incoming stream, for the report blocks we send to publishers
/// (RFC 3550 A.3 loss, A.8 jitter, LSR/DLSR from the publisher's last SR).
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
}

impl ReceiveStats {
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats { clock_rate }
    }

    /// Records an arriving packet.
    pub fn on_packet(&mut self, sequence: u16, rtp_timestamp: u32, arrival: Instant) {
        let _ = (sequence, rtp_timestamp, arrival, self.clock_rate);
        todo!()
    }

    /// Records a sender report from this stream's sender (for LSR/DLSR).
    pub fn on_sender_report(&mut self, ntp: u64, arrival: Instant) {
        let _ = (ntp, arrival);
        todo!()
    }

    /// The report block for this stream now; resets the interval counters (fraction lost).
    pub fn report_block(&mut self, ssrc: u32, now: Instant) -> ReportBlock {
        let _ = (ssrc, now);
        todo!()
    }
}
