//! STUN messages (RFC 8489), parsed in place and written into caller buffers.
//!
//! Hand-written because it sits on the data plane: every connectivity and consent check is
//! parsed on a worker core, so parsing must not allocate and must never panic on any input.
//!
//! CONTRACT (skeleton): the signatures below are used by `ice` and the engine; implement the
//! bodies, keep the signatures (add more if needed).

use std::net::SocketAddr;

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

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

/// A parsed STUN message borrowing the datagram it came from.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    buf: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses and validates the header and the attribute TLV layout.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, Error> {
        let _ = buf;
        todo!()
    }

    pub fn method(&self) -> u16 {
        todo!()
    }

    pub fn class(&self) -> Class {
        todo!()
    }

    pub fn transaction_id(&self) -> &'a [u8; 12] {
        todo!()
    }

    /// The first attribute of this type; attributes after MESSAGE-INTEGRITY other than
    /// FINGERPRINT are ignored, as RFC 8489 requires.
    pub fn attribute(&self, typ: u16) -> Option<&'a [u8]> {
        let _ = typ;
        todo!()
    }

    pub fn username(&self) -> Option<&'a [u8]> {
        self.attribute(attr::USERNAME)
    }

    pub fn priority(&self) -> Option<u32> {
        todo!()
    }

    pub fn use_candidate(&self) -> bool {
        self.attribute(attr::USE_CANDIDATE).is_some()
    }

    pub fn ice_controlling(&self) -> Option<u64> {
        todo!()
    }

    pub fn ice_controlled(&self) -> Option<u64> {
        todo!()
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        todo!()
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        todo!()
    }

    /// `None` when there is no FINGERPRINT attribute, else whether its CRC-32 matches.
    pub fn fingerprint_ok(&self) -> Option<bool> {
        todo!()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with a short-term credential `key` (the password).
    /// False when the attribute is missing.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let _ = key;
        todo!()
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
        let _ = (method, class, transaction_id);
        Ok(Writer { buf, len: 0 })
    }

    /// Appends an attribute, padded to 4 bytes.
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> Result<(), Error> {
        let _ = (typ, value, &self.buf, self.len);
        todo!()
    }

    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), Error> {
        let _ = addr;
        todo!()
    }

    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let _ = (code, reason);
        todo!()
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`) over the message so far.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), Error> {
        let _ = key;
        todo!()
    }

    /// Appends FINGERPRINT; must come last.
    pub fn fingerprint(&mut self) -> Result<(), Error> {
        todo!()
    }

    /// The total length of the message written.
    pub fn finish(self) -> usize {
        todo!()
    }
}
