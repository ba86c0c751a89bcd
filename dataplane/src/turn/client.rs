//! TURN requests as a client writes them: for `switchyard doctor`'s probe through an outside
//! TURN server and for the server's own tests. Only message building lives here; the caller
//! owns the socket and the retries.

use std::net::SocketAddr;

use super::{attr, auth, method};
use crate::stun::{self, Class, Writer};

/// What a client signs requests with after the first 401: the REST credential and the realm
/// and nonce the server handed out.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    key: [u8; 16],
}

impl Credentials {
    pub fn new(username: &str, password: &str, realm: &str, nonce: &[u8]) -> Credentials {
        Credentials {
            username: username.to_string(),
            realm: realm.to_string(),
            nonce: nonce.to_vec(),
            key: auth::long_term_key(username, realm, password),
        }
    }

    /// The long-term key (to check the server's MESSAGE-INTEGRITY).
    pub fn key(&self) -> &[u8; 16] {
        &self.key
    }
}

/// A TURN request under construction.
pub struct Request<'b> {
    w: Writer<'b>,
}

impl<'b> Request<'b> {
    pub fn new(buf: &'b mut [u8], method: u16, id: &[u8; 12]) -> Result<Request<'b>, stun::Error> {
        Ok(Request {
            w: Writer::new(buf, method, Class::Request, id)?,
        })
    }

    /// An Allocate for a UDP relay.
    pub fn allocate(buf: &'b mut [u8], id: &[u8; 12]) -> Result<Request<'b>, stun::Error> {
        let mut r = Request::new(buf, method::ALLOCATE, id)?;
        r.w.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])?;
        Ok(r)
    }

    pub fn lifetime(mut self, seconds: u32) -> Result<Self, stun::Error> {
        self.w.attribute(attr::LIFETIME, &seconds.to_be_bytes())?;
        Ok(self)
    }

    pub fn peer(mut self, peer: SocketAddr) -> Result<Self, stun::Error> {
        self.w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
        Ok(self)
    }

    pub fn channel(mut self, number: u16) -> Result<Self, stun::Error> {
        let mut v = [0u8; 4];
        v[..2].copy_from_slice(&number.to_be_bytes());
        self.w.attribute(attr::CHANNEL_NUMBER, &v)?;
        Ok(self)
    }

    pub fn attribute(mut self, typ: u16, value: &[u8]) -> Result<Self, stun::Error> {
        self.w.attribute(typ, value)?;
        Ok(self)
    }

    /// Signs with the long-term credential and finishes; `None` sends it unsigned (the first
    /// Allocate, which draws the 401 with realm and nonce).
    pub fn finish(mut self, creds: Option<&Credentials>) -> Result<usize, stun::Error> {
        if let Some(c) = creds {
            self.w
                .attribute(stun::attr::USERNAME, c.username.as_bytes())?;
            self.w.attribute(attr::REALM, c.realm.as_bytes())?;
            self.w.attribute(attr::NONCE, &c.nonce)?;
            self.w.message_integrity(&c.key)?;
        }
        self.w.fingerprint()?;
        Ok(self.w.finish())
    }
}

/// A Send indication carrying `data` to `peer`.
pub fn send_indication(
    buf: &mut [u8],
    id: &[u8; 12],
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, stun::Error> {
    let mut w = Writer::new(buf, method::SEND, Class::Indication, id)?;
    w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
    w.attribute(attr::DATA, data)?;
    Ok(w.finish())
}

/// ChannelData for a bound channel (unpadded, as over UDP).
pub fn channel_data(buf: &mut [u8], number: u16, data: &[u8]) -> Option<usize> {
    super::write_channel_data(buf, number, data, false)
}
