//! A minimal WebRTC peer in Rust over a real UDP socket, built from the data plane's client
//! transport: enough to publish over WHIP and then misbehave in precise ways (bad STUN
//! integrity, SRTP before DTLS, a certificate that does not match the offer, replays).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchyard_dataplane::client::{self, Client, OfferTrack};
use switchyard_dataplane::dtls::{Fingerprint, Identity};
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::rtp::{self, HeaderFields};
use switchyard_dataplane::sdp::SessionDescription;
use switchyard_dataplane::stun;

use crate::http;

pub const AUDIO_SSRC: u32 = 0x1111;
pub const VIDEO_SSRC: u32 = 0x2222;

pub struct Peer {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub client: Client,
    pub local_ice: Credentials,
    pub server_ice: Credentials,
    pub location: String,
    /// The server's SDP answer, as received.
    pub answer: String,
}

fn attribute<'a>(sd: &'a SessionDescription, name: &str) -> Option<&'a str> {
    sd.media
        .iter()
        .flat_map(|m| &m.attributes)
        .chain(&sd.attributes)
        .find(|a| a.name == name)
        .and_then(|a| a.value.as_deref())
}

impl Peer {
    /// Publishes Opus + VP8 over WHIP. `claimed` is the fingerprint put in the offer (by default
    /// that of `identity`, the certificate DTLS will actually present).
    pub fn whip(
        port: u16,
        channel: &str,
        token: &str,
        identity: &Identity,
        claimed: Option<&Fingerprint>,
    ) -> Result<Peer, http::Response> {
        let local_ice = Credentials::random();
        let fingerprint = claimed.unwrap_or(identity.fingerprint());
        let tracks = [
            OfferTrack::Send {
                codec: Codec::Opus,
                payload_type: 111,
                ssrc: AUDIO_SSRC,
            },
            OfferTrack::Send {
                codec: Codec::Vp8,
                payload_type: 96,
                ssrc: VIDEO_SSRC,
            },
        ];
        let offer = client::offer(&local_ice, fingerprint, &tracks, 1);
        let auth = format!("Bearer {token}");
        let r = http::request(
            port,
            "POST",
            &format!("/whip/{channel}"),
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", &auth),
            ],
            &offer,
        )
        .expect("POST /whip");
        if r.status != 201 {
            return Err(r);
        }
        let answer = SessionDescription::parse(&r.body).expect("the answer parses");
        let server_ice = Credentials {
            ufrag: attribute(&answer, "ice-ufrag")
                .expect("ice-ufrag")
                .to_string(),
            pwd: attribute(&answer, "ice-pwd").expect("ice-pwd").to_string(),
        };
        let server_fp: Fingerprint = attribute(&answer, "fingerprint")
            .expect("fingerprint")
            .parse()
            .expect("valid fingerprint");
        let candidate = attribute(&answer, "candidate").expect("a candidate");
        let parts: Vec<&str> = candidate.split_whitespace().collect();
        let server: SocketAddr = format!("{}:{}", parts[4], parts[5])
            .parse()
            .expect("candidate address");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let client = Client::new(
            identity,
            local_ice.clone(),
            server_ice.clone(),
            server_fp,
            Instant::now(),
            1,
        );
        let location = r.header("Location").unwrap_or_default().to_string();
        Ok(Peer {
            socket,
            server,
            client,
            local_ice,
            server_ice,
            location,
            answer: r.body.clone(),
        })
    }

    /// Runs ICE and DTLS until connected, or `timeout`; false if it never connected.
    pub fn connect(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let now = Instant::now();
            while let Ok(Some(n)) = self.client.poll_transmit(now, &mut buf) {
                let _ = self.socket.send_to(&buf[..n], self.server);
            }
            if self.client.is_connected() {
                return true;
            }
            if let Ok((n, _)) = self.socket.recv_from(&mut buf)
                && self
                    .client
                    .handle_datagram(Instant::now(), &mut buf[..n])
                    .is_err()
            {
                return false;
            }
            if self.client.handle_timeout(Instant::now()).is_err() {
                return false;
            }
        }
        self.client.is_connected()
    }

    /// Sends one connectivity check and waits for its answer (ICE only, no DTLS).
    pub fn ice_check(&mut self) -> bool {
        let mut buf = [0u8; 2048];
        let Ok(Some(n)) = self.client.poll_transmit(Instant::now(), &mut buf) else {
            return false;
        };
        let _ = self.socket.send_to(&buf[..n], self.server);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf)
                && stun::Message::parse(&buf[..n]).is_ok_and(|m| m.class() == stun::Class::Success)
            {
                return true;
            }
        }
        false
    }

    /// A binding request for our transport with a wrong MESSAGE-INTEGRITY.
    pub fn bad_integrity_check(&self) -> Vec<u8> {
        let mut out = [0u8; 512];
        let username = format!("{}:{}", self.server_ice.ufrag, self.local_ice.ufrag);
        let mut w = stun::Writer::new(
            &mut out,
            stun::method::BINDING,
            stun::Class::Request,
            &[9; 12],
        )
        .expect("writer");
        w.attribute(stun::attr::USERNAME, username.as_bytes())
            .expect("username");
        w.attribute(stun::attr::ICE_CONTROLLING, &1u64.to_be_bytes())
            .expect("role");
        w.message_integrity(b"not the password").expect("integrity");
        w.fingerprint().expect("fingerprint");
        let n = w.finish();
        out[..n].to_vec()
    }

    /// A plain RTP packet (VP8, our video SSRC).
    pub fn plain_rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let fields = HeaderFields {
            marker: true,
            payload_type: 96,
            sequence: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: VIDEO_SSRC,
        };
        let h = rtp::write_header(&mut buf, &fields, &[]).expect("header");
        buf[h..h + payload.len()].copy_from_slice(payload);
        buf.truncate(h + payload.len());
        buf
    }

    /// An SRTP packet from this peer (after `connect`).
    pub fn srtp(&mut self, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = Self::plain_rtp(seq, payload);
        let len = buf.len();
        buf.resize(len + 32, 0);
        let n = self.client.protect_rtp(&mut buf, len).expect("protect");
        buf.truncate(n);
        buf
    }

    pub fn send(&self, datagram: &[u8]) {
        let _ = self.socket.send_to(datagram, self.server);
    }
}
