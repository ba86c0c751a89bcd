//! SRTP and SRTCP (RFC 3711 AES_CM_128_HMAC_SHA1_80, RFC 7714 AEAD_AES_128_GCM) on aws-lc-rs.
//!
//! Hand-written because it is the hottest code in the server: every forwarded packet is
//! decrypted once and encrypted once per consumer. Keys, cipher and MAC contexts are built once
//! per session; protect/unprotect work in place and never allocate (per-SSRC state lives in a
//! table sized at construction and is created only for packets that authenticate).
//!
//! aws-lc-rs rather than ring: ring has no AES-CTR (needed for AES-CM) and its HMAC-SHA1 is
//! several times slower.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use crate::wire::{be_u16, be_u32};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711, RFC 5764 0x0001).
    Aes128CmHmacSha1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714, RFC 5764 0x0007).
    AeadAes128Gcm,
    /// SRTP_AEAD_AES_256_GCM (RFC 7714, 0x0008): what Chrome gets when it offers every suite.
    AeadAes256Gcm,
}

impl Profile {
    pub fn key_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
        }
    }

    /// Bytes `protect_rtp` appends (the auth tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => CM_TAG,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => GCM_TAG,
        }
    }

    /// Bytes `protect_rtcp` appends (tag plus the 4-byte E flag and SRTCP index).
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + 4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("packet too short")]
    TooShort,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed packet")]
    Replay,
    #[error("packet too old for the replay window")]
    TooOld,
    #[error("buffer has no room for the tag")]
    BufferTooSmall,
    #[error("bad key or salt length")]
    BadKey,
}

const CM_TAG: usize = 10;
const GCM_TAG: usize = 16;
const AUTH_KEY_LEN: usize = 20;
/// SSRCs tracked per context; a new one beyond this evicts the least recently used.
const MAX_STREAMS: usize = 64;
/// Packets behind the highest index still accepted once (RFC 3711 §3.3.2 asks for ≥ 64).
const REPLAY_WINDOW: u64 = 128;
const E_FLAG: u32 = 0x8000_0000;

/// The session keys of one direction of RTP or RTCP. Not boxed: a context holds just two, and
/// the hot path should not chase a pointer to reach its key.
#[allow(clippy::large_enum_variant)]
enum Keys {
    Cm {
        cipher: EncryptingKey,
        auth: hmac::Key,
        salt: [u8; 14],
    },
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
}

impl Keys {
    /// Derives session keys with the AES-CM PRF (RFC 3711 §4.3.3; RFC 7714 §11 uses the same
    /// PRF with a 12-byte salt, left-aligned as libsrtp does).
    fn derive(
        profile: Profile,
        master_key: &[u8],
        master_salt: &[u8],
        labels: [u8; 3],
    ) -> Result<Keys, Error> {
        let [enc, auth_label, salt_label] = labels;
        let mut key = [0u8; 32];
        let key = key.get_mut(..profile.key_len()).ok_or(Error::BadKey)?;
        prf(master_key, master_salt, enc, key)?;
        match profile {
            Profile::Aes128CmHmacSha1_80 => {
                let mut auth = [0u8; AUTH_KEY_LEN];
                prf(master_key, master_salt, auth_label, &mut auth)?;
                let mut salt = [0u8; 14];
                prf(master_key, master_salt, salt_label, &mut salt)?;
                Keys::cm(key, &auth, salt)
            }
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let mut salt = [0u8; 12];
                prf(master_key, master_salt, salt_label, &mut salt)?;
                Keys::gcm(key, salt)
            }
        }
    }

    fn cm(key: &[u8], auth: &[u8], salt: [u8; 14]) -> Result<Keys, Error> {
        let unbound = UnboundCipherKey::new(&AES_128, key).map_err(|_| Error::BadKey)?;
        Ok(Keys::Cm {
            cipher: EncryptingKey::ctr(unbound).map_err(|_| Error::BadKey)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
            salt,
        })
    }

    fn gcm(key: &[u8], salt: [u8; 12]) -> Result<Keys, Error> {
        let algorithm = if key.len() == 32 {
            &aead::AES_256_GCM
        } else {
            &aead::AES_128_GCM
        };
        let unbound = UnboundKey::new(algorithm, key).map_err(|_| Error::BadKey)?;
        Ok(Keys::Gcm {
            key: LessSafeKey::new(unbound),
            salt,
        })
    }
}

/// The AES-CM PRF: AES-CTR keystream under the master key with IV = (salt XOR label) || 0x0000
/// (AES-256 for 32-byte master keys, RFC 6188).
fn prf(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Result<(), Error> {
    let algorithm = match master_key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(Error::BadKey),
    };
    if !(master_salt.len() == 14 || master_salt.len() == 12) {
        return Err(Error::BadKey);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    let unbound = UnboundCipherKey::new(algorithm, master_key).map_err(|_| Error::BadKey)?;
    let cipher = EncryptingKey::ctr(unbound).map_err(|_| Error::BadKey)?;
    out.fill(0);
    cipher
        .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| Error::BadKey)?;
    Ok(())
}

/// AES-CM IV (RFC 3711 §4.1.1): (salt << 16) XOR (SSRC << 64) XOR (index << 16).
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// GCM IV for SRTP (RFC 7714 §8.1): (0x0000 || SSRC || ROC || SEQ) XOR salt; for SRTCP
/// (§9.1) the last six bytes are 0x0000 || SRTCP index.
fn gcm_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// Length of an RTP header (fixed part, CSRCs, extension), checked against the packet.
fn rtp_header_len(packet: &[u8]) -> Result<usize, Error> {
    let first = *packet.first().ok_or(Error::TooShort)?;
    let mut len = 12 + 4 * usize::from(first & 0x0F);
    if first & 0x10 != 0 {
        let words = be_u16(packet, len + 2).ok_or(Error::TooShort)?;
        len += 4 + 4 * usize::from(words);
    }
    if packet.len() < len {
        return Err(Error::TooShort);
    }
    Ok(len)
}

/// The big-endian word at `at` (an SSRC, or SRTCP's E flag and index).
fn word_at(packet: &[u8], at: usize) -> Result<u32, Error> {
    be_u32(packet, at).ok_or(Error::TooShort)
}

/// The RTP sequence number (bytes 2-3 of the fixed header).
fn sequence(packet: &[u8]) -> Result<u16, Error> {
    be_u16(packet, 2).ok_or(Error::TooShort)
}

/// Per-SSRC state: the rollover counter and replay windows.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// Highest 48-bit RTP index seen (authenticated, or sent), if any.
    rtp_highest: Option<u64>,
    /// Bit i set: index `rtp_highest - i` was received.
    rtp_window: u128,
    rtcp_highest: Option<u32>,
    rtcp_window: u128,
    last_used: u64,
}

impl Stream {
    fn new(ssrc: u32) -> Stream {
        Stream {
            ssrc,
            rtp_highest: None,
            rtp_window: 0,
            rtcp_highest: None,
            rtcp_window: 0,
            last_used: 0,
        }
    }

    /// The 48-bit index of `seq` (RFC 3711 Appendix A), or `TooOld` if it would fall before
    /// the stream's start.
    fn estimate(&self, seq: u16) -> Result<u64, Error> {
        let Some(highest) = self.rtp_highest else {
            return Ok(u64::from(seq));
        };
        let roc = highest >> 16;
        let s_l = (highest & 0xFFFF) as u16;
        let v = if s_l < 0x8000 {
            if i32::from(seq) - i32::from(s_l) > 0x8000 {
                roc.checked_sub(1).ok_or(Error::TooOld)?
            } else {
                roc
            }
        } else if i32::from(s_l) - 0x8000 > i32::from(seq) {
            roc + 1
        } else {
            roc
        };
        Ok(((v << 16) | u64::from(seq)) & 0xFFFF_FFFF_FFFF)
    }

    fn check_rtp(&self, index: u64) -> Result<(), Error> {
        check_window(self.rtp_highest, self.rtp_window, index)
    }

    fn accept_rtp(&mut self, index: u64) {
        (self.rtp_highest, self.rtp_window) =
            advance_window(self.rtp_highest, self.rtp_window, index);
    }
}

fn check_window(highest: Option<u64>, window: u128, index: u64) -> Result<(), Error> {
    let Some(highest) = highest else {
        return Ok(());
    };
    if index > highest {
        return Ok(());
    }
    let behind = highest - index;
    if behind >= REPLAY_WINDOW {
        return Err(Error::TooOld);
    }
    if window & (1u128 << behind) != 0 {
        return Err(Error::Replay);
    }
    Ok(())
}

fn advance_window(highest: Option<u64>, window: u128, index: u64) -> (Option<u64>, u128) {
    match highest {
        None => (Some(index), 1),
        Some(h) if index > h => {
            let shift = index - h;
            let window = if shift >= REPLAY_WINDOW {
                0
            } else {
                window << shift
            };
            (Some(index), window | 1)
        }
        Some(h) => {
            let behind = h - index;
            let window = if behind < REPLAY_WINDOW {
                window | (1u128 << behind)
            } else {
                window
            };
            (Some(h), window)
        }
    }
}

/// One direction of an SRTP session (every SSRC it carries) and its SRTCP.
pub struct Context {
    profile: Profile,
    rtp: Keys,
    rtcp: Keys,
    streams: Vec<Stream>,
    /// Counter for LRU eviction.
    uses: u64,
    /// Next SRTCP index we send (31 bits).
    rtcp_index: u32,
}

impl Context {
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Context, Error> {
        if master_key.len() != profile.key_len() || master_salt.len() != profile.salt_len() {
            return Err(Error::BadKey);
        }
        Ok(Context::with_keys(
            profile,
            Keys::derive(profile, master_key, master_salt, [0, 1, 2])?,
            Keys::derive(profile, master_key, master_salt, [3, 4, 5])?,
        ))
    }

    fn with_keys(profile: Profile, rtp: Keys, rtcp: Keys) -> Context {
        Context {
            profile,
            rtp,
            rtcp,
            streams: Vec::with_capacity(MAX_STREAMS),
            uses: 0,
            rtcp_index: 0,
        }
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The state of `ssrc`, if known.
    fn stream(&mut self, ssrc: u32) -> Option<&mut Stream> {
        self.uses += 1;
        let uses = self.uses;
        let s = self.streams.iter_mut().find(|s| s.ssrc == ssrc)?;
        s.last_used = uses;
        Some(s)
    }

    /// The state of `ssrc`, created (evicting the least recently used) if new.
    fn stream_or_insert(&mut self, ssrc: u32) -> &mut Stream {
        if let Some(i) = self.streams.iter().position(|s| s.ssrc == ssrc) {
            return &mut self.streams[i];
        }
        let mut fresh = Stream::new(ssrc);
        fresh.last_used = self.uses;
        if self.streams.len() < MAX_STREAMS {
            self.streams.push(fresh);
            let last = self.streams.len() - 1;
            return &mut self.streams[last];
        }
        let (i, _) = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_used)
            .unwrap_or((0, &fresh)); // ok: the table is full, so not empty
        self.streams[i] = fresh;
        &mut self.streams[i]
    }

    /// Encrypts the RTP packet in `buf[..len]` in place and appends the tag; `buf` needs
    /// `profile().rtp_overhead()` spare bytes after `len`. Returns the new length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        let header_len = rtp_header_len(packet)?;
        let seq = sequence(packet)?;
        let ssrc = word_at(packet, 8)?;
        let end = len + self.profile.rtp_overhead();
        if buf.len() < end {
            return Err(Error::BufferTooSmall);
        }
        self.uses += 1;
        let uses = self.uses;
        let stream = self.stream_or_insert(ssrc);
        stream.last_used = uses;
        let index = stream.estimate(seq)?;
        if stream.rtp_highest.is_none_or(|h| index > h) {
            stream.rtp_highest = Some(index);
        }
        let (header, rest) = buf.split_at_mut(header_len);
        let payload_len = len - header_len;
        match &self.rtp {
            Keys::Cm { cipher, auth, salt } => {
                let (payload, tag_out) = rest.split_at_mut(payload_len);
                ctr(cipher, salt, ssrc, index, payload)?;
                let tag = cm_tag(auth, header, payload, Some((index >> 16) as u32));
                tag_out[..CM_TAG].copy_from_slice(&tag.as_ref()[..CM_TAG]);
            }
            Keys::Gcm { key, salt } => {
                let nonce = Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, index));
                let (payload, tag_out) = rest.split_at_mut(payload_len);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
                    .map_err(|_| Error::BufferTooSmall)?;
                tag_out[..GCM_TAG].copy_from_slice(tag.as_ref());
            }
        }
        Ok(end)
    }

    /// Authenticates and decrypts `buf` in place; returns the plaintext length. Replays and
    /// packets that fail authentication are errors and change no state.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_overhead();
        let header_len = rtp_header_len(buf)?;
        if buf.len() < header_len + tag_len {
            return Err(Error::TooShort);
        }
        let seq = sequence(buf)?;
        let ssrc = word_at(buf, 8)?;
        let index = match self.stream(ssrc) {
            Some(s) => {
                let index = s.estimate(seq)?;
                s.check_rtp(index)?;
                index
            }
            None => u64::from(seq),
        };
        let len = buf.len() - tag_len;
        let (header, rest) = buf.split_at_mut(header_len);
        match &self.rtp {
            Keys::Cm { cipher, auth, salt } => {
                let (payload, tag) = rest.split_at_mut(len - header_len);
                let expected = cm_tag(auth, header, payload, Some((index >> 16) as u32));
                constant_time::verify_slices_are_equal(&expected.as_ref()[..CM_TAG], tag)
                    .map_err(|_| Error::AuthFailed)?;
                ctr(cipher, salt, ssrc, index, payload)?;
            }
            Keys::Gcm { key, salt } => {
                let nonce = Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, index));
                key.open_in_place(nonce, Aad::from(&*header), rest)
                    .map_err(|_| Error::AuthFailed)?;
            }
        }
        self.stream_or_insert(ssrc).accept_rtp(index);
        Ok(len)
    }

    /// Like `protect_rtp` for a (compound) RTCP packet; always encrypted (E flag set).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        if len < 8 {
            return Err(Error::TooShort);
        }
        let end = len + self.profile.rtcp_overhead();
        if buf.len() < end {
            return Err(Error::BufferTooSmall);
        }
        let ssrc = word_at(buf, 4)?;
        let index = self.rtcp_index;
        self.rtcp_index = (self.rtcp_index + 1) & !E_FLAG;
        let e_index = (E_FLAG | index).to_be_bytes();
        let (header, rest) = buf.split_at_mut(8);
        let (payload, trailer) = rest.split_at_mut(len - 8);
        match &self.rtcp {
            Keys::Cm { cipher, auth, salt } => {
                ctr(cipher, salt, ssrc, u64::from(index), payload)?;
                trailer[..4].copy_from_slice(&e_index);
                let mut ctx = hmac::Context::with_key(auth);
                ctx.update(header);
                ctx.update(payload);
                ctx.update(&e_index);
                let tag = ctx.sign();
                trailer[4..4 + CM_TAG].copy_from_slice(&tag.as_ref()[..CM_TAG]);
            }
            Keys::Gcm { key, salt } => {
                let nonce = Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, u64::from(index)));
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(header);
                aad[8..].copy_from_slice(&e_index);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), payload)
                    .map_err(|_| Error::BufferTooSmall)?;
                trailer[..GCM_TAG].copy_from_slice(tag.as_ref());
                trailer[GCM_TAG..GCM_TAG + 4].copy_from_slice(&e_index);
            }
        }
        Ok(end)
    }

    /// Authenticates and decrypts an SRTCP packet in place; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() < 8 + overhead {
            return Err(Error::TooShort);
        }
        let ssrc = word_at(buf, 4)?;
        let len = buf.len() - overhead;
        let (e_at, tag_at) = match self.profile {
            Profile::Aes128CmHmacSha1_80 => (len, len + 4),
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => (buf.len() - 4, len),
        };
        let e_index = word_at(buf, e_at)?;
        let encrypted = e_index & E_FLAG != 0;
        let index = e_index & !E_FLAG;
        if let Some(s) = self.stream(ssrc) {
            check_window(
                s.rtcp_highest.map(u64::from),
                s.rtcp_window,
                u64::from(index),
            )?;
        }
        let e_bytes = e_index.to_be_bytes();
        match &self.rtcp {
            Keys::Cm { cipher, auth, salt } => {
                let (covered, tag) = buf.split_at_mut(tag_at);
                let expected = hmac::sign(auth, covered);
                constant_time::verify_slices_are_equal(&expected.as_ref()[..CM_TAG], tag)
                    .map_err(|_| Error::AuthFailed)?;
                if encrypted {
                    let payload = covered.get_mut(8..len).ok_or(Error::TooShort)?;
                    ctr(cipher, salt, ssrc, u64::from(index), payload)?;
                }
            }
            Keys::Gcm { key, salt } => {
                let nonce = Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, u64::from(index)));
                let body = buf.get_mut(..e_at).ok_or(Error::TooShort)?;
                if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&body[..8]);
                    aad[8..].copy_from_slice(&e_bytes);
                    let (_, sealed) = body.split_at_mut(8);
                    key.open_in_place(nonce, Aad::from(aad), sealed)
                        .map_err(|_| Error::AuthFailed)?;
                } else {
                    // Authenticated only (browsers always encrypt, so this is rare): the packet
                    // and E|index are the associated data of an empty plaintext, joined in a
                    // stack buffer; packets too large for it are refused.
                    let (packet, tag) = body.split_at_mut(len);
                    let mut sealed: [u8; GCM_TAG] =
                        (&*tag).try_into().map_err(|_| Error::TooShort)?;
                    let mut joined = [0u8; 1600];
                    let aad = joined.get_mut(..len + 4).ok_or(Error::TooShort)?;
                    aad[..len].copy_from_slice(packet);
                    aad[len..].copy_from_slice(&e_bytes);
                    key.open_in_place(nonce, Aad::from(&*aad), &mut sealed)
                        .map_err(|_| Error::AuthFailed)?;
                }
            }
        }
        let s = self.stream_or_insert(ssrc);
        (s.rtcp_highest, s.rtcp_window) = {
            let (h, w) = advance_window(
                s.rtcp_highest.map(u64::from),
                s.rtcp_window,
                u64::from(index),
            );
            (h.map(|h| h as u32), w)
        };
        Ok(len)
    }
}

fn ctr(
    cipher: &EncryptingKey,
    salt: &[u8; 14],
    ssrc: u32,
    index: u64,
    data: &mut [u8],
) -> Result<(), Error> {
    if data.is_empty() {
        return Ok(());
    }
    let iv = cm_iv(salt, ssrc, index);
    cipher
        .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| Error::AuthFailed)
}

/// HMAC-SHA1 over header, payload and (for SRTP) the ROC.
fn cm_tag(auth: &hmac::Key, header: &[u8], payload: &[u8], roc: Option<u32>) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(auth);
    ctx.update(header);
    ctx.update(payload);
    if let Some(roc) = roc {
        ctx.update(&roc.to_be_bytes());
    }
    ctx.sign()
}

/// Builds the (inbound, outbound) contexts from a DTLS-SRTP key block
/// (client key | server key | client salt | server salt, RFC 5764 §4.2).
pub fn session_from_keying(
    profile: Profile,
    material: &[u8],
    is_dtls_server: bool,
) -> Result<(Context, Context), Error> {
    let (k, s) = (profile.key_len(), profile.salt_len());
    if material.len() < 2 * (k + s) {
        return Err(Error::BadKey);
    }
    let client_key = &material[..k];
    let server_key = &material[k..2 * k];
    let client_salt = &material[2 * k..2 * k + s];
    let server_salt = &material[2 * k + s..2 * (k + s)];
    let client = || Context::new(profile, client_key, client_salt);
    let server = || Context::new(profile, server_key, server_salt);
    if is_dtls_server {
        Ok((client()?, server()?))
    } else {
        Ok((server()?, client()?))
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

    #[test]
    fn rfc3711_b3_key_derivation() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut out = [0u8; 16];
        prf(&key, &salt, 0, &mut out).unwrap();
        assert_eq!(out.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut out = [0u8; 14];
        prf(&key, &salt, 2, &mut out).unwrap();
        assert_eq!(out.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut out = [0u8; 94];
        prf(&key, &salt, 1, &mut out).unwrap();
        assert_eq!(
            out.to_vec(),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    #[test]
    fn rfc3711_b2_keystream() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let cipher = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &key).unwrap()).unwrap();
        let mut data = [0u8; 48];
        ctr(&cipher, &salt, 0, 0, &mut data).unwrap();
        assert_eq!(
            data.to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    /// RFC 7714 §16 and §17 give session keys, not master keys.
    fn gcm_context_with(key: &str) -> Context {
        let key = hex(key);
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let profile = if key.len() == 32 {
            Profile::AeadAes256Gcm
        } else {
            Profile::AeadAes128Gcm
        };
        Context::with_keys(
            profile,
            Keys::gcm(&key, salt).unwrap(),
            Keys::gcm(&key, salt).unwrap(),
        )
    }

    fn gcm_context() -> Context {
        gcm_context_with("000102030405060708090a0b0c0d0e0f")
    }

    #[test]
    fn rfc7714_16_2_and_17_2_aes_256() {
        let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let plain = hex(GCM_RTP);
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = gcm_context_with(key)
            .protect_rtp(&mut buf, plain.len())
            .unwrap();
        assert_eq!(
            buf[..n].to_vec(),
            hex(
                "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13"
            )
        );
        let mut srtcp = hex(
            "81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4",
        );
        let n = gcm_context_with(key).unprotect_rtcp(&mut srtcp).unwrap();
        assert_eq!(srtcp[..n].to_vec(), hex(GCM_RTCP));
    }

    const GCM_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
    const GCM_SRTP: &str = "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
    const GCM_RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
    const GCM_SRTCP: &str = "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4";
    const GCM_SRTCP_AUTH_ONLY: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790125f62b3000005d4";

    #[test]
    fn rfc7714_16_1_srtp_gcm() {
        let plain = hex(GCM_RTP);
        let expected = hex(GCM_SRTP);
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = gcm_context().protect_rtp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..n].to_vec(), expected);
        let mut rx = expected.clone();
        let n = gcm_context().unprotect_rtp(&mut rx).unwrap();
        assert_eq!(rx[..n].to_vec(), plain);
    }

    #[test]
    fn rfc7714_17_srtcp_gcm() {
        let plain = hex(GCM_RTCP);
        let expected = hex(GCM_SRTCP);
        let mut tx = gcm_context();
        tx.rtcp_index = 0x5d4;
        let mut buf = [0u8; 128];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..n].to_vec(), expected);
        let mut rx = expected.clone();
        let n = gcm_context().unprotect_rtcp(&mut rx).unwrap();
        assert_eq!(rx[..n].to_vec(), plain);
        let mut auth_only = hex(GCM_SRTCP_AUTH_ONLY);
        let n = gcm_context().unprotect_rtcp(&mut auth_only).unwrap();
        assert_eq!(auth_only[..n].to_vec(), plain);
    }

    fn pair(profile: Profile) -> (Context, Context) {
        let key = vec![7u8; profile.key_len()];
        let salt = vec![9u8; profile.salt_len()];
        (
            Context::new(profile, &key, &salt).unwrap(),
            Context::new(profile, &key, &salt).unwrap(),
        )
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn protect(tx: &mut Context, packet: &[u8]) -> Vec<u8> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + 16, 0);
        let n = tx.protect_rtp(&mut buf, packet.len()).unwrap();
        buf.truncate(n);
        buf
    }

    const PROFILES: [Profile; 3] = [
        Profile::Aes128CmHmacSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ];

    #[test]
    fn replays_and_tampering_are_rejected_without_state_change() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let sealed = protect(&mut tx, &rtp(1, 5, b"hello"));
            assert_ne!(&sealed[12..17], b"hello");
            let mut a = sealed.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut a).map(|n| a[12..n].to_vec()),
                Ok(b"hello".to_vec())
            );
            let mut b = sealed.clone();
            assert_eq!(rx.unprotect_rtp(&mut b), Err(Error::Replay));
            let later = protect(&mut tx, &rtp(2, 5, b"x"));
            let mut bad = later.clone();
            bad[13] ^= 1;
            assert_eq!(rx.unprotect_rtp(&mut bad), Err(Error::AuthFailed));
            let mut good = later;
            assert!(
                rx.unprotect_rtp(&mut good).is_ok(),
                "{profile:?}: a failed packet changed state"
            );
        }
    }

    #[test]
    fn rollover_counter_follows_sequence_wraps() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let mut seq = 65000u16;
            for i in 0..140_000u32 {
                let p = rtp(seq, 77, &i.to_be_bytes());
                let mut s = protect(&mut tx, &p);
                if i % 97 == 0 || i > 139_990 || (60_000..60_600).contains(&i) {
                    let n = rx.unprotect_rtp(&mut s).unwrap();
                    assert_eq!(&s[..n], &p[..]);
                }
                seq = seq.wrapping_add(1);
            }
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let packets: Vec<Vec<u8>> = (0..200u16)
                .map(|s| protect(&mut tx, &rtp(s, 1, &[s as u8])))
                .collect();
            let mut p = packets[150].clone();
            rx.unprotect_rtp(&mut p).unwrap();
            let mut p = packets[100].clone();
            rx.unprotect_rtp(&mut p).unwrap();
            let mut p = packets[100].clone();
            assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::Replay));
            let mut p = packets[10].clone();
            assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::TooOld));
        }
    }

    #[test]
    fn retransmissions_of_old_packets_keep_the_sender_index() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let mut later = Vec::new();
            for s in [65534u16, 65535, 0, 1, 2] {
                later.push(protect(&mut tx, &rtp(s, 3, b"a")));
            }
            // Resend 65535 after the wrap: it must still carry ROC 0.
            let resent = protect(&mut tx, &rtp(65535, 3, b"a"));
            assert_eq!(resent, later[1]);
            for mut p in later {
                rx.unprotect_rtp(&mut p).unwrap();
            }
        }
    }

    #[test]
    fn srtcp_round_trip_replay_and_tamper() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let rr = hex("81c90007 0000000a 00000005 00000000 00000001 00000002 00000003 00000004");
            let mut buf = rr.clone();
            buf.resize(rr.len() + profile.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut buf, rr.len()).unwrap();
            assert_eq!(n, buf.len());
            let mut a = buf.clone();
            let m = rx.unprotect_rtcp(&mut a).unwrap();
            assert_eq!(a[..m].to_vec(), rr);
            let mut b = buf.clone();
            assert_eq!(rx.unprotect_rtcp(&mut b), Err(Error::Replay));
            let mut c = buf.clone();
            c[10] ^= 1;
            assert!(rx.unprotect_rtcp(&mut c).is_err());
        }
    }

    #[test]
    fn keying_material_splits_per_rfc5764() {
        for profile in PROFILES {
            let material: Vec<u8> =
                (0..2 * (profile.key_len() + profile.salt_len()) as u8).collect();
            let (_, mut server_out) = session_from_keying(profile, &material, true).unwrap();
            let (mut client_in, _) = session_from_keying(profile, &material, false).unwrap();
            let mut s = protect(&mut server_out, &rtp(9, 9, b"key block"));
            assert!(client_in.unprotect_rtp(&mut s).is_ok());
            assert_eq!(
                session_from_keying(profile, &material[..10], true).err(),
                Some(Error::BadKey)
            );
        }
    }

    #[test]
    fn small_buffers_and_short_packets_are_errors() {
        for profile in PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let p = rtp(1, 1, b"abc");
            let mut exact = p.clone();
            assert_eq!(
                tx.protect_rtp(&mut exact, p.len()),
                Err(Error::BufferTooSmall)
            );
            for n in 0..30 {
                let mut short = vec![0x80u8; n];
                let _ = rx.unprotect_rtp(&mut short);
                let _ = rx.unprotect_rtcp(&mut short);
            }
        }
    }

    proptest! {
        #[test]
        fn protect_unprotect_round_trips(
            profile in proptest::sample::select(PROFILES.to_vec()),
            csrcs in 0u8..4,
            ext_words in proptest::option::of(0u16..4),
            payload in proptest::collection::vec(any::<u8>(), 0..1300),
            seq in any::<u16>(),
            ssrc in any::<u32>(),
        ) {
            let (mut tx, mut rx) = pair(profile);
            let mut p = vec![0x80 | csrcs | if ext_words.is_some() { 0x10 } else { 0 }, 111];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1]);
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend(std::iter::repeat_n(0xAB, 4 * usize::from(csrcs)));
            if let Some(w) = ext_words {
                p.extend_from_slice(&[0xBE, 0xDE]);
                p.extend_from_slice(&w.to_be_bytes());
                p.extend(std::iter::repeat_n(0x11, 4 * usize::from(w)));
            }
            p.extend_from_slice(&payload);
            let mut s = protect(&mut tx, &p);
            let n = rx.unprotect_rtp(&mut s).unwrap();
            prop_assert_eq!(&s[..n], &p[..]);
        }

        #[test]
        fn garbage_never_panics(gcm in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let profile = if gcm { Profile::AeadAes128Gcm } else { Profile::Aes128CmHmacSha1_80 };
            let (_, mut rx) = pair(profile);
            let mut a = data.clone();
            let _ = rx.unprotect_rtp(&mut a);
            let mut b = data;
            let _ = rx.unprotect_rtcp(&mut b);
        }
    }
}
