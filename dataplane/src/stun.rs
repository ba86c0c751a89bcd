//! STUN messages (RFC 8489), parsed in place and written into caller buffers.
//!
//! Hand-written because it sits on the data plane: every connectivity and consent check is
//! parsed on a worker core, so parsing must not allocate and must never panic on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

use crate::wire::{be_u16, be_u32, be_u64};

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// FINGERPRINT is the CRC-32 of the message XORed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const INTEGRITY_LEN: usize = 20;

/// STUN methods we use.
pub mod method {
    pub const BINDING: u16 = 0x001;
}

/// Attribute types we read or write.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// The class bits of a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("datagram too short for STUN")]
    TooShort,
    #[error("not a STUN message (first bits or magic cookie)")]
    NotStun,
    #[error("STUN length field disagrees with the datagram")]
    BadLength,
    #[error("malformed STUN attribute")]
    BadAttribute,
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Whether `buf` looks like STUN (first two bits zero, magic cookie), without parsing it.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && be_u32(buf, 4) == Some(MAGIC_COOKIE)
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A parsed STUN message borrowing the datagram it came from.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    buf: &'a [u8],
    typ: u16,
    /// Offset of MESSAGE-INTEGRITY's header, if present.
    integrity: Option<usize>,
    /// Offset of FINGERPRINT's header, if present (always the last attribute).
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses and validates the header and the attribute TLV layout.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::TooShort);
        }
        if !is_stun(buf) {
            return Err(Error::NotStun);
        }
        let length = usize::from(be_u16(buf, 2).ok_or(Error::TooShort)?);
        if length % 4 != 0 || HEADER_LEN + length != buf.len() {
            return Err(Error::BadLength);
        }
        let typ = be_u16(buf, 0).ok_or(Error::TooShort)?;
        let mut msg = Message {
            buf,
            typ,
            integrity: None,
            fingerprint: None,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            let t = be_u16(buf, at).ok_or(Error::BadAttribute)?;
            let len = usize::from(be_u16(buf, at + 2).ok_or(Error::BadAttribute)?);
            let end = at + 4 + padded(len);
            if end > buf.len() {
                return Err(Error::BadAttribute);
            }
            if msg.fingerprint.is_some() {
                // Nothing may follow FINGERPRINT.
                return Err(Error::BadAttribute);
            }
            match t {
                attr::MESSAGE_INTEGRITY if msg.integrity.is_none() => {
                    if len != INTEGRITY_LEN {
                        return Err(Error::BadAttribute);
                    }
                    msg.integrity = Some(at);
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(Error::BadAttribute);
                    }
                    msg.fingerprint = Some(at);
                }
                _ => {}
            }
            at = end;
        }
        Ok(msg)
    }

    pub fn method(&self) -> u16 {
        (self.typ & 0x000F) | ((self.typ & 0x00E0) >> 1) | ((self.typ & 0x3E00) >> 2)
    }

    pub fn class(&self) -> Class {
        match self.typ & 0x0110 {
            0x000 => Class::Request,
            0x010 => Class::Indication,
            0x100 => Class::Success,
            _ => Class::Error,
        }
    }

    pub fn transaction_id(&self) -> &'a [u8; 12] {
        let id: Option<&[u8; 12]> = self.buf.get(8..20).and_then(|s| s.try_into().ok());
        // ok: parse() checked the datagram holds a 20-byte header.
        id.unwrap_or(&[0; 12])
    }

    /// Every attribute as (type, value), in order, up to and including FINGERPRINT.
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let buf = self.buf;
        let mut at = HEADER_LEN;
        std::iter::from_fn(move || {
            let t = be_u16(buf, at)?;
            let len = usize::from(be_u16(buf, at + 2)?);
            let value = buf.get(at + 4..at + 4 + len)?;
            at += 4 + padded(len);
            Some((t, value))
        })
    }

    /// The first attribute of this type; attributes after MESSAGE-INTEGRITY other than
    /// FINGERPRINT are ignored, as RFC 8489 requires.
    pub fn attribute(&self, typ: u16) -> Option<&'a [u8]> {
        let limit = self.integrity.unwrap_or(usize::MAX);
        let buf = self.buf;
        let mut at = HEADER_LEN;
        while at < buf.len() {
            let t = be_u16(buf, at)?;
            let len = usize::from(be_u16(buf, at + 2)?);
            if t == typ && (at <= limit || t == attr::FINGERPRINT) {
                return buf.get(at + 4..at + 4 + len);
            }
            at += 4 + padded(len);
        }
        None
    }

    pub fn username(&self) -> Option<&'a [u8]> {
        self.attribute(attr::USERNAME)
    }

    pub fn priority(&self) -> Option<u32> {
        let v = self.attribute(attr::PRIORITY)?;
        (v.len() == 4).then(|| be_u32(v, 0)).flatten()
    }

    pub fn use_candidate(&self) -> bool {
        self.attribute(attr::USE_CANDIDATE).is_some()
    }

    fn u64_attr(&self, typ: u16) -> Option<u64> {
        let v = self.attribute(typ)?;
        (v.len() == 8).then(|| be_u64(v, 0)).flatten()
    }

    pub fn ice_controlling(&self) -> Option<u64> {
        self.u64_attr(attr::ICE_CONTROLLING)
    }

    pub fn ice_controlled(&self) -> Option<u64> {
        self.u64_attr(attr::ICE_CONTROLLED)
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS)
    }

    /// An address attribute XORed with the magic cookie and transaction id (XOR-MAPPED-ADDRESS
    /// and TURN's XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS share the encoding).
    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        self.xor_address_value(self.attribute(typ)?)
    }

    /// Decodes one XOR-encoded address value (a request may carry several XOR-PEER-ADDRESS).
    pub fn xor_address_value(&self, v: &[u8]) -> Option<SocketAddr> {
        let port = be_u16(v, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
        let ip = match v.get(1)? {
            0x01 => {
                let a = be_u32(v, 4)? ^ MAGIC_COOKIE;
                (v.len() == 8).then(|| IpAddr::V4(Ipv4Addr::from(a)))?
            }
            0x02 => {
                let raw: [u8; 16] = v.get(4..20)?.try_into().ok()?;
                if v.len() != 20 {
                    return None;
                }
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                key[4..].copy_from_slice(self.transaction_id());
                let mut a = [0u8; 16];
                for (o, (r, k)) in a.iter_mut().zip(raw.iter().zip(key)) {
                    *o = r ^ k;
                }
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.attribute(attr::ERROR_CODE)?;
        let class = u16::from(*v.get(2)? & 0x07);
        let number = u16::from(*v.get(3)?);
        let reason = std::str::from_utf8(v.get(4..)?).ok()?;
        Some((class * 100 + number, reason))
    }

    /// Whether the message ends in FINGERPRINT (without computing its CRC).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// `None` when there is no FINGERPRINT attribute, else whether its CRC-32 matches.
    pub fn fingerprint_ok(&self) -> Option<bool> {
        let at = self.fingerprint?;
        let expected = be_u32(self.buf, at + 4)?;
        let covered = self.buf.get(..at)?;
        Some(crc32fast::hash(covered) ^ FINGERPRINT_XOR == expected)
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with a short-term credential `key` (the password).
    /// False when the attribute is missing.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity else {
            return false;
        };
        let (Some(covered), Some(tag)) = (
            self.buf.get(..at),
            self.buf.get(at + 4..at + 4 + INTEGRITY_LEN),
        ) else {
            return false;
        };
        // The length field covers the message up to and including MESSAGE-INTEGRITY.
        let length = (at + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(covered.get(..2).unwrap_or_default());
        ctx.update(&length.to_be_bytes());
        ctx.update(covered.get(4..).unwrap_or_default());
        let mac = ctx.sign();
        aws_lc_rs::constant_time::verify_slices_are_equal(mac.as_ref(), tag).is_ok()
    }
}

/// Writes a STUN message into a caller buffer without allocating.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub fn new(
        buf: &'b mut [u8],
        method: u16,
        class: Class,
        transaction_id: &[u8; 12],
    ) -> Result<Writer<'b>, Error> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let typ =
            (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | class.bits();
        header[0..2].copy_from_slice(&typ.to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(transaction_id);
        Ok(Writer {
            buf,
            len: HEADER_LEN,
        })
    }

    fn set_length(&mut self, body: usize) {
        let l = (body as u16).to_be_bytes();
        self.buf[2] = l[0];
        self.buf[3] = l[1];
    }

    /// Appends an attribute, padded to 4 bytes.
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> Result<(), Error> {
        let total = 4 + padded(value.len());
        if value.len() > usize::from(u16::MAX)
            || self.len + total - HEADER_LEN > usize::from(u16::MAX)
        {
            return Err(Error::BufferTooSmall);
        }
        let out = self
            .buf
            .get_mut(self.len..self.len + total)
            .ok_or(Error::BufferTooSmall)?;
        out[0..2].copy_from_slice(&typ.to_be_bytes());
        out[2..4].copy_from_slice(&(value.len() as u16).to_be_bytes());
        out[4..4 + value.len()].copy_from_slice(value);
        out[4 + value.len()..].fill(0);
        self.len += total;
        self.set_length(self.len - HEADER_LEN);
        Ok(())
    }

    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), Error> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS, addr)
    }

    /// Appends an address attribute in the XOR encoding of XOR-MAPPED-ADDRESS.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), Error> {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 0x01;
                v[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 0x02;
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                key[4..].copy_from_slice(&self.buf[8..20]);
                for (o, (a, k)) in v[4..20].iter_mut().zip(ip.octets().iter().zip(key)) {
                    *o = a ^ k;
                }
                20
            }
        };
        self.attribute(typ, &v[..len])
    }

    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let mut v = [0u8; 4 + 128];
        let reason = reason.as_bytes();
        let n = reason.len().min(128);
        v[2] = ((code / 100) & 0x07) as u8;
        v[3] = (code % 100) as u8;
        v[4..4 + n].copy_from_slice(&reason[..n]);
        self.attribute(attr::ERROR_CODE, &v[..4 + n])
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`) over the message so far.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), Error> {
        let at = self.len;
        if self.buf.len() < at + 4 + INTEGRITY_LEN {
            return Err(Error::BufferTooSmall);
        }
        self.set_length(at + 4 + INTEGRITY_LEN - HEADER_LEN);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mac = hmac::sign(&key, &self.buf[..at]);
        self.attribute(attr::MESSAGE_INTEGRITY, mac.as_ref())
    }

    /// Appends FINGERPRINT; must come last.
    pub fn fingerprint(&mut self) -> Result<(), Error> {
        let at = self.len;
        if self.buf.len() < at + 8 {
            return Err(Error::BufferTooSmall);
        }
        self.set_length(at + 8 - HEADER_LEN);
        let crc = crc32fast::hash(&self.buf[..at]) ^ FINGERPRINT_XOR;
        self.attribute(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    /// The total length of the message written.
    pub fn finish(self) -> usize {
        self.len
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    // RFC 5769 §2.1.
    const REQUEST: &str = "
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff
        80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
        00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf";

    // RFC 5769 §2.2.
    const RESPONSE_V4: &str = "
        01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 08 00 01 a1 47 e1 12 a6 43
        00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
        80 28 00 04 c0 7d 4c 96";

    // RFC 5769 §2.3.
    const RESPONSE_V6: &str = "
        01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
        00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
        80 28 00 04 c8 fb 0b 4c";

    // RFC 5769 §2.4 (long-term credentials; integrity not checked here).
    const REQUEST_LONG_TERM: &str = "
        00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
        00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
        00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
        00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
        00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

    #[test]
    fn rfc5769_request() {
        let buf = hex(REQUEST);
        let m = Message::parse(&buf).unwrap();
        assert_eq!(m.method(), method::BINDING);
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(m.priority(), Some(0x6e0001ff));
        assert_eq!(m.ice_controlled(), Some(0x932ff9b151263b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.use_candidate());
        assert_eq!(m.fingerprint_ok(), Some(true));
        assert!(m.integrity_ok(PASSWORD));
        assert!(!m.integrity_ok(b"wrong"));
    }

    #[test]
    fn rfc5769_ipv4_response() {
        let buf = hex(RESPONSE_V4);
        let m = Message::parse(&buf).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(
            m.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(m.fingerprint_ok(), Some(true));
        assert!(m.integrity_ok(PASSWORD));
    }

    #[test]
    fn rfc5769_ipv6_response() {
        let buf = hex(RESPONSE_V6);
        let m = Message::parse(&buf).unwrap();
        assert_eq!(
            m.xor_mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert_eq!(m.fingerprint_ok(), Some(true));
        assert!(m.integrity_ok(PASSWORD));
    }

    #[test]
    fn rfc5769_long_term_request_parses() {
        let buf = hex(REQUEST_LONG_TERM);
        let m = Message::parse(&buf).unwrap();
        assert_eq!(
            m.username().map(|u| std::str::from_utf8(u).unwrap()),
            Some("マトリックス")
        );
        assert_eq!(m.fingerprint_ok(), None);
    }

    #[test]
    fn writer_reproduces_rfc5769_ipv4_response() {
        let expected = hex(RESPONSE_V4);
        let tid: [u8; 12] = expected[8..20].try_into().unwrap();
        let mut out = [0u8; 128];
        let mut w = Writer::new(&mut out, method::BINDING, Class::Success, &tid).unwrap();
        w.attribute(attr::SOFTWARE, b"test vector").unwrap();
        w.xor_mapped_address("192.0.2.1:32853".parse().unwrap())
            .unwrap();
        w.message_integrity(PASSWORD).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        // The RFC pads SOFTWARE with 0x20; we pad with zeros, so compare everything else.
        let m = Message::parse(&out[..n]).unwrap();
        assert_eq!(n, expected.len());
        assert_eq!(
            m.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m.integrity_ok(PASSWORD));
        assert_eq!(m.fingerprint_ok(), Some(true));
    }

    #[test]
    fn writer_reproduces_ipv6_xor_address() {
        let expected = hex(RESPONSE_V6);
        let tid: [u8; 12] = expected[8..20].try_into().unwrap();
        let mut out = [0u8; 128];
        let mut w = Writer::new(&mut out, method::BINDING, Class::Success, &tid).unwrap();
        w.xor_mapped_address(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
        )
        .unwrap();
        let n = w.finish();
        assert_eq!(&out[20..n], &expected[36..60]);
    }

    #[test]
    fn error_code_round_trip() {
        let mut out = [0u8; 128];
        let mut w = Writer::new(&mut out, method::BINDING, Class::Error, &[7; 12]).unwrap();
        w.error_code(401, "Unauthorized").unwrap();
        let n = w.finish();
        let m = Message::parse(&out[..n]).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.error_code(), Some((401, "Unauthorized")));
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut out = [0u8; 128];
        let mut w = Writer::new(&mut out, method::BINDING, Class::Request, &[1; 12]).unwrap();
        w.message_integrity(b"key").unwrap();
        w.attribute(attr::USE_CANDIDATE, &[]).unwrap();
        let n = w.finish();
        let m = Message::parse(&out[..n]).unwrap();
        assert!(!m.use_candidate());
        // The extra attribute changes the length, but integrity covers only what came before.
        assert!(m.integrity_ok(b"key"));
    }

    #[test]
    fn bad_input_is_rejected() {
        let buf = hex(REQUEST);
        for n in 0..buf.len() {
            assert!(Message::parse(&buf[..n]).is_err(), "prefix {n}");
        }
        let mut bad = buf.clone();
        bad[4] ^= 1;
        assert_eq!(Message::parse(&bad).unwrap_err(), Error::NotStun);
        let mut bad = buf.clone();
        bad[0] |= 0x80;
        assert_eq!(Message::parse(&bad).unwrap_err(), Error::NotStun);
        // An attribute length running past the end.
        let mut bad = buf.clone();
        bad[22] = 0xff;
        assert_eq!(Message::parse(&bad).unwrap_err(), Error::BadAttribute);
        // A flipped bit breaks the fingerprint and the integrity.
        let mut bad = buf;
        bad[30] ^= 1;
        let m = Message::parse(&bad).unwrap();
        assert_eq!(m.fingerprint_ok(), Some(false));
        assert!(!m.integrity_ok(PASSWORD));
    }

    #[test]
    fn writer_reports_small_buffers() {
        let mut out = [0u8; 19];
        assert!(Writer::new(&mut out, method::BINDING, Class::Request, &[0; 12]).is_err());
        let mut out = [0u8; 30];
        let mut w = Writer::new(&mut out, method::BINDING, Class::Request, &[0; 12]).unwrap();
        assert_eq!(w.message_integrity(b"k"), Err(Error::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn written_messages_parse_back(
            username in proptest::collection::vec(any::<u8>(), 0..64),
            priority in any::<u32>(),
            tie in any::<u64>(),
            tid in any::<[u8; 12]>(),
            key in proptest::collection::vec(any::<u8>(), 1..32),
            v4 in any::<bool>(),
            port in any::<u16>(),
        ) {
            let mut out = [0u8; 256];
            let mut w = Writer::new(&mut out, method::BINDING, Class::Request, &tid).unwrap();
            w.attribute(attr::USERNAME, &username).unwrap();
            w.attribute(attr::PRIORITY, &priority.to_be_bytes()).unwrap();
            w.attribute(attr::ICE_CONTROLLING, &tie.to_be_bytes()).unwrap();
            let addr: SocketAddr = if v4 {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(priority)), port)
            } else {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::from(tie) << 17)), port)
            };
            w.xor_mapped_address(addr).unwrap();
            w.message_integrity(&key).unwrap();
            w.fingerprint().unwrap();
            let n = w.finish();
            let m = Message::parse(&out[..n]).unwrap();
            prop_assert_eq!(m.username(), Some(&username[..]));
            prop_assert_eq!(m.priority(), Some(priority));
            prop_assert_eq!(m.ice_controlling(), Some(tie));
            prop_assert_eq!(m.xor_mapped_address(), Some(addr));
            prop_assert_eq!(m.transaction_id(), &tid);
            prop_assert!(m.integrity_ok(&key));
            prop_assert_eq!(m.fingerprint_ok(), Some(true));
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = data;
            if data.len() >= 20 {
                data[0] &= 0x3f;
                data[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                let len = ((data.len() - 20) as u16).to_be_bytes();
                data[2..4].copy_from_slice(&len);
            }
            if let Ok(m) = Message::parse(&data) {
                let _ = (m.method(), m.class(), m.username(), m.priority(), m.use_candidate());
                let _ = (m.ice_controlling(), m.ice_controlled(), m.xor_mapped_address(), m.error_code());
                let _ = (m.fingerprint_ok(), m.integrity_ok(b"k"), m.attributes().count());
            }
        }
    }
}
