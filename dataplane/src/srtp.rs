//! SRTP and SRTCP (RFC 3711 AES_CM_128_HMAC_SHA1_80, RFC 7714 AEAD_AES_128_GCM) on aws-lc-rs.
//!
//! Hand-written because it is the hottest code in the server: every forwarded packet is
//! decrypted once and encrypted once per consumer. Keys, cipher and MAC contexts are built once
//! per session; protect/unprotect work in place and never allocate (per-SSRC state is created
//! only for packets that authenticate).
//!
//! CONTRACT (skeleton): signatures used by the engine; implement the bodies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711, RFC 5764 0x0001).
    Aes128CmHmacSha1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714, RFC 5764 0x0007).
    AeadAes128Gcm,
}

impl Profile {
    pub fn key_len(self) -> usize {
        16
    }

    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes `protect_rtp` appends (the auth tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 10,
            Profile::AeadAes128Gcm => 16,
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

/// One direction of an SRTP session (every SSRC it carries) and its SRTCP.
pub struct Context {
    _priv: (),
}

impl Context {
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Context, Error> {
        let _ = (profile, master_key, master_salt);
        todo!()
    }

    pub fn profile(&self) -> Profile {
        todo!()
    }

    /// Encrypts the RTP packet in `buf[..len]` in place and appends the tag; `buf` needs
    /// `profile().rtp_overhead()` spare bytes after `len`. Returns the new length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let _ = (buf, len);
        todo!()
    }

    /// Authenticates and decrypts `buf` in place; returns the plaintext length. Replays and
    /// packets that fail authentication are errors and change no state.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let _ = buf;
        todo!()
    }

    /// Like `protect_rtp` for a (compound) RTCP packet.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let _ = (buf, len);
        todo!()
    }

    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let _ = buf;
        todo!()
    }
}

/// Builds the (inbound, outbound) contexts from a DTLS-SRTP key block
/// (client key | server key | client salt | server salt, RFC 5764 §4.2).
pub fn session_from_keying(
    profile: Profile,
    material: &[u8],
    is_dtls_server: bool,
) -> Result<(Context, Context), Error> {
    let _ = (profile, material, is_dtls_server);
    todo!()
}
