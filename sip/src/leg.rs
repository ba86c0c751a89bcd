//! The channel side of a call: one MCU connection (`POST /mix/{channel}`, audio only), made
//! as a browser makes it: ICE, DTLS and SRTP through the data plane's sans-IO client. The
//! caller's audio is then a publication of the channel and a source of its mix, and what comes
//! back is the mix minus the caller, with no change to the media server.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use switchyard_dataplane::client::{self, Client, OfferTrack, Received};
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::io::MAX_DATAGRAM;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::{remote, rtp};
use tokio::net::UdpSocket;

/// The payload type of our Opus offer; the answer keeps it.
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// How long the media server has to answer the offer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LegError {
    #[error("the gateway: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the gateway refused the call's connection: {0}")]
    Refused(String),
    #[error("the answer: {0}")]
    Answer(#[from] remote::Error),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebRTC: {0}")]
    Client(#[from] client::Error),
    #[error("no connection to the media server within {0:?}")]
    Timeout(Duration),
}

/// Where and as whom a call joins its channel.
#[derive(Debug, Clone)]
pub struct Join {
    /// The gateway's (or all-in-one's) HTTP base, `http://host:port`.
    pub base: String,
    pub channel: String,
    /// A client token for `channel` that may publish and subscribe.
    pub token: String,
    /// The rate the call's audio is at (8 or 16 kHz for G.711 and G.722, 48 kHz when the phone
    /// speaks Opus or has not said yet): the Opus each way needs nothing above it.
    pub rate: u32,
}

/// A call's connection to its channel's mixer.
pub struct ChannelLeg {
    client: Client,
    pub(crate) socket: UdpSocket,
    server: SocketAddr,
    /// The connection's resource (`Location`), deleted when the call ends.
    location: Option<String>,
    http: reqwest::Client,
    token: String,
    ssrc: u32,
    sequence: u16,
    /// Datagrams are built here (one at a time: the leg is driven by one task).
    out: Box<[u8]>,
    rate: u32,
}

impl ChannelLeg {
    /// Offers audio (sendrecv Opus) to `join.channel`'s mix and opens the socket the answer's
    /// candidate is reached from. Media flows once [`ChannelLeg::connect`] returns.
    pub async fn join(
        http: &reqwest::Client,
        identity: &Identity,
        join: &Join,
    ) -> Result<ChannelLeg, LegError> {
        let ice = Credentials::random();
        let ssrc = rand::random::<u32>();
        let track = OfferTrack::SendRecv {
            codec: Codec::Opus,
            payload_type: OPUS_PAYLOAD_TYPE,
            ssrc,
            max_audio_rate: (join.rate < 48_000).then_some(join.rate),
        };
        let offer = client::offer(&ice, identity.fingerprint(), &[track], rand::random());
        let url = format!("{}/mix/{}", join.base.trim_end_matches('/'), join.channel);
        let reply = http
            .post(&url)
            .bearer_auth(&join.token)
            .header("Content-Type", "application/sdp")
            .body(offer)
            .timeout(HTTP_TIMEOUT)
            .send()
            .await?;
        let status = reply.status();
        let location = reply
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .map(|l| resolve(&join.base, l));
        let body = reply.text().await?;
        if status != reqwest::StatusCode::CREATED {
            return Err(LegError::Refused(format!("{status}: {}", body.trim())));
        }
        let answer = remote::parse(&body)?;
        let bind: SocketAddr = if answer.address.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        let client = Client::new(
            identity,
            ice,
            answer.ice,
            answer.fingerprint,
            Instant::now(),
            rand::random(),
        );
        Ok(ChannelLeg {
            client,
            socket,
            server: answer.address,
            location,
            http: http.clone(),
            token: join.token.clone(),
            ssrc,
            sequence: rand::random(),
            out: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            rate: join.rate,
        })
    }

    /// The rate the call's audio is at, as the offer told the mixer ([`Join::rate`]).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Runs ICE and DTLS until media may flow, or fails after `within`.
    pub async fn connect(&mut self, within: Duration) -> Result<(), LegError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.client.is_connected() {
            self.flush().await?;
            let wake = tokio::time::Instant::from_std(self.client.poll_timeout()).min(deadline);
            tokio::select! {
                got = self.socket.recv_from(&mut buf) => {
                    let (n, from) = got?;
                    if from == self.server
                        && let Some(data) = buf.get_mut(..n)
                    {
                        self.client.handle_datagram(Instant::now(), data)?;
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LegError::Timeout(within));
                    }
                    self.client.handle_timeout(Instant::now())?;
                }
            }
        }
        self.flush().await
    }

    /// Sends what the client has queued (checks, DTLS records, consent).
    pub async fn flush(&mut self) -> Result<(), LegError> {
        while let Some(n) = self.client.poll_transmit(Instant::now(), &mut self.out)? {
            if let Some(datagram) = self.out.get(..n) {
                self.socket.send_to(datagram, self.server).await?;
            }
        }
        Ok(())
    }

    /// When the client next wants [`ChannelLeg::on_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.client.poll_timeout()
    }

    pub async fn on_timeout(&mut self) -> Result<(), LegError> {
        self.client.handle_timeout(Instant::now())?;
        self.flush().await
    }

    /// Takes a datagram from `from`: the Opus payload's range in `data` when it is the mix's
    /// audio, decrypted in place; `None` for anything else (handshake, RTCP, strangers).
    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<Option<rtp::Header>, LegError> {
        if from != self.server {
            return Ok(None);
        }
        match self.client.handle_datagram(Instant::now(), data)? {
            Received::Rtp(n) => {
                let packet = data.get(..n).unwrap_or_default();
                Ok(rtp::Header::parse(packet).ok())
            }
            Received::Rtcp(_) | Received::Other => Ok(None),
        }
    }

    /// Sends one Opus frame of the caller's audio, `timestamp` on the 48 kHz clock.
    pub async fn send_opus(&mut self, payload: &[u8], timestamp: u32) -> Result<(), LegError> {
        let fields = rtp::HeaderFields {
            marker: false,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let header = rtp::write_header(&mut self.out, &fields, &[])
            .map_err(|_| LegError::Refused("RTP header".into()))?;
        let end = header + payload.len();
        let Some(body) = self.out.get_mut(header..end) else {
            return Ok(()); // larger than a datagram: not an Opus frame we made
        };
        body.copy_from_slice(payload);
        let n = self.client.protect_rtp(&mut self.out, end)?;
        if let Some(datagram) = self.out.get(..n) {
            self.socket.send_to(datagram, self.server).await?;
        }
        Ok(())
    }

    /// Ends the connection on the server (`DELETE` of its resource), so the caller leaves the
    /// channel at once rather than when its consent checks stop.
    pub async fn leave(&self) {
        let Some(location) = &self.location else {
            return;
        };
        let result = self
            .http
            .delete(location)
            .bearer_auth(&self.token)
            .timeout(HTTP_TIMEOUT)
            .send()
            .await;
        if let Err(e) = result {
            tracing::debug!("leaving {location}: {e}");
        }
    }
}

/// `location` made absolute against `base` (WHIP servers may send a path).
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            location.trim_start_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn locations_are_made_absolute() {
        assert_eq!(resolve("http://a:1/", "/mix/c/x"), "http://a:1/mix/c/x");
        assert_eq!(resolve("http://a:1", "https://b/x"), "https://b/x");
    }
}
