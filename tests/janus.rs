//! Janus (Debian's `janus`, videoroom plugin) driven through its HTTP API by the load
//! generator's Janus client, with the data plane's emulated WebRTC client on real UDP sockets:
//! one publisher (Opus + VP8) and one subscriber, which must receive and decrypt the video.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_dataplane::client::{self, Client, IceRole, OfferTrack, Received, Setup};
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::media::Codec;
use switchyard_dataplane::remote;
use switchyard_dataplane::rtp::{self, HeaderFields};
use switchyard_dataplane::sdp::SessionDescription;
use switchyard_loadtest::janus::{self, Session};
use switchyard_tests::janus::{CLIENT_IP, Janus, ROOM, URL};
use switchyard_tests::netns;

const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;
const AUDIO_SSRC: u32 = 0x1111;
const VIDEO_SSRC: u32 = 0x2222;
/// Every video payload carries this after the VP8 headers, so the subscriber can tell that it
/// decrypted what the publisher encrypted.
const TAG: &[u8] = b"switchyard-via-janus";
const WANTED_VIDEO: usize = 50;

/// A client transport on a UDP socket that talks to one remote address.
struct Endpoint {
    socket: UdpSocket,
    remote: SocketAddr,
    client: Client,
    buf: Vec<u8>,
}

impl Endpoint {
    fn new(client: Client, remote: SocketAddr) -> Endpoint {
        let socket = UdpSocket::bind((CLIENT_IP, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        Endpoint {
            socket,
            remote,
            client,
            buf: vec![0; 2048],
        }
    }

    /// Sends what the client has due, then handles at most one datagram (waiting up to 5 ms).
    /// Returns the decrypted RTP packet, if the datagram was one.
    fn turn(&mut self) -> Option<Vec<u8>> {
        let now = Instant::now();
        let _ = self.client.handle_timeout(now);
        while let Ok(Some(n)) = self.client.poll_transmit(now, &mut self.buf) {
            let _ = self.socket.send_to(&self.buf[..n], self.remote);
        }
        let (n, from) = self.socket.recv_from(&mut self.buf).ok()?;
        // Janus's RTCP or a late retransmission may fail to decrypt; that is not fatal here.
        match self
            .client
            .handle_datagram_from(Instant::now(), from, &mut self.buf[..n])
        {
            Ok(Received::Rtp(len)) => Some(self.buf[..len].to_vec()),
            _ => None,
        }
    }

    fn connect(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.client.is_connected() && Instant::now() < deadline {
            self.turn();
        }
        // Flush what the last datagram produced (the answer to a check, a DTLS record).
        self.turn();
        self.client.is_connected()
    }

    fn send_rtp(&mut self, fields: &HeaderFields, mid: &[u8], payload: &[u8]) {
        let mut packet = vec![0u8; 1500];
        let h = rtp::write_header(&mut packet, fields, &[(1, mid)]).expect("header");
        packet[h..h + payload.len()].copy_from_slice(payload);
        let len = h + payload.len();
        let n = self.client.protect_rtp(&mut packet, len).expect("protect");
        let _ = self.socket.send_to(&packet[..n], self.remote);
    }
}

/// A VP8 RTP payload (RFC 7741): the payload descriptor (S=1 on the first packet of a frame,
/// PID 0), then for the first packet the frame tag (P=0 for a keyframe, show_frame=1) and, for
/// a keyframe, the start code and a 640x480 size; then the tag and filler.
fn vp8_payload(keyframe: bool, first: bool, size: usize) -> Vec<u8> {
    let mut p = vec![if first { 0x10 } else { 0x00 }];
    if first {
        let first_partition = 200u32;
        let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
        p.extend_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&640u16.to_le_bytes());
            p.extend_from_slice(&480u16.to_le_bytes());
        }
    }
    p.extend_from_slice(TAG);
    p.resize(size.max(p.len()), 0x5a);
    p
}

/// Sends Opus every 20 ms and 30 fps VP8 (a keyframe every second, 3 packets a frame, about
/// 0.6 Mbps) until `stop`, answering Janus's checks and reading its RTCP meanwhile.
fn publish_media(mut ep: Endpoint, stop: Arc<AtomicBool>) -> Endpoint {
    let start = Instant::now();
    let (mut audio_seq, mut video_seq) = (0u16, 0u16);
    let (mut next_audio, mut next_frame, mut frame) = (start, start, 0u32);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_audio {
            let fields = HeaderFields {
                marker: false,
                payload_type: AUDIO_PT,
                sequence: audio_seq,
                timestamp: u32::from(audio_seq) * 960,
                ssrc: AUDIO_SSRC,
            };
            ep.send_rtp(&fields, b"0", &[0xfc; 80]);
            audio_seq = audio_seq.wrapping_add(1);
            next_audio += Duration::from_millis(20);
        }
        if now >= next_frame {
            let keyframe = frame % 30 == 0;
            for i in 0..3 {
                let fields = HeaderFields {
                    marker: i == 2,
                    payload_type: VIDEO_PT,
                    sequence: video_seq,
                    timestamp: frame * 3000,
                    ssrc: VIDEO_SSRC,
                };
                ep.send_rtp(&fields, b"1", &vp8_payload(keyframe, i == 0, 800));
                video_seq = video_seq.wrapping_add(1);
            }
            frame += 1;
            next_frame += Duration::from_micros(33_333);
        }
        ep.turn();
    }
    ep
}

#[test]
fn janus_forwards_our_publisher_to_our_subscriber() {
    netns::enter();
    let mut server = Janus::start();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run());
    eprintln!(
        "publish + subscribe + 50 packets took {:?}",
        started.elapsed()
    );
    if let Err(e) = &result {
        panic!("{e}\n--- janus log ---\n{}", server.log_tail(60));
    }
    server.stop();
}

async fn run() -> Result<(), String> {
    let info = janus::server_info(URL).await.map_err(|e| e.to_string())?;
    assert_eq!(
        info["version_string"], "1.1.2",
        "the Janus this test was written against"
    );
    let session = Session::connect(URL).await.map_err(|e| e.to_string())?;

    // Publisher: we offer a=setup:active and stay the DTLS client; Janus answers passive.
    let publisher = session
        .attach_videoroom()
        .await
        .map_err(|e| e.to_string())?;
    let identity = Identity::generate().expect("identity");
    let ice = Credentials::random();
    let tracks = [
        OfferTrack::Send {
            codec: Codec::Opus,
            payload_type: AUDIO_PT,
            ssrc: AUDIO_SSRC,
        },
        OfferTrack::Send {
            codec: Codec::Vp8,
            payload_type: VIDEO_PT,
            ssrc: VIDEO_SSRC,
        },
    ];
    let offer = client::offer_with(&ice, identity.fingerprint(), &tracks, Setup::Active, 1);
    let published = publisher
        .publish(ROOM, "switchyard publisher", &offer)
        .await
        .map_err(|e| format!("publish: {e}"))?;
    assert!(
        published.answer.contains("a=setup:passive"),
        "Janus must be the DTLS server:\n{}",
        published.answer
    );
    let remote = remote::parse(&published.answer).map_err(|e| e.to_string())?;
    let client = Client::new(
        &identity,
        ice,
        remote.ice,
        remote.fingerprint,
        Instant::now(),
        1,
    );
    let pub_ep = tokio::task::spawn_blocking(move || {
        let mut ep = Endpoint::new(client, remote.address);
        let ok = ep.connect(Duration::from_secs(10));
        (ep, ok)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|(ep, ok)| {
        ok.then_some(ep)
            .ok_or("the publisher did not connect".into())
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let media = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || publish_media(pub_ep, stop))
    };
    publisher
        .wait_event("webrtcup", Duration::from_secs(10))
        .await
        .map_err(|e| format!("publisher webrtcup: {e}"))?;

    // Subscriber: Janus offers (actpass, ICE-controlling); we answer active and are controlled.
    let subscriber = session
        .attach_videoroom()
        .await
        .map_err(|e| e.to_string())?;
    let sub_offer = subscriber
        .subscribe(ROOM, published.feed)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let sub_identity = Identity::generate().expect("identity");
    let sub_ice = Credentials::random();
    let answer = client::answer(
        &sub_ice,
        sub_identity.fingerprint(),
        &sub_offer,
        &[Codec::Opus, Codec::Vp8],
        1,
    )
    .map_err(|e| format!("answer to {sub_offer}: {e}"))?;
    let video_pt: u8 = SessionDescription::parse(&answer)
        .ok()
        .and_then(|sd| {
            sd.media
                .into_iter()
                .find(|m| m.media == "video" && m.port != 0)
        })
        .and_then(|m| m.formats.first()?.parse().ok())
        .ok_or(format!("no video in our answer:\n{answer}"))?;
    let remote = remote::parse(&sub_offer).map_err(|e| e.to_string())?;
    subscriber
        .start(&answer)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let client = Client::with_role(
        &sub_identity,
        sub_ice,
        remote.ice,
        remote.fingerprint,
        IceRole::Controlled,
        Instant::now(),
        2,
    );
    let received = tokio::task::spawn_blocking(move || {
        let mut ep = Endpoint::new(client, remote.address);
        if !ep.connect(Duration::from_secs(10)) {
            return Err("the subscriber did not connect".to_string());
        }
        let (mut video, mut tagged, mut audio) = (0, 0, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        while video < WANTED_VIDEO && Instant::now() < deadline {
            let Some(packet) = ep.turn() else { continue };
            let Ok(header) = rtp::Header::parse(&packet) else {
                continue;
            };
            if header.payload_type == video_pt {
                video += 1;
                let payload = &packet[header.payload_offset..header.payload_end];
                if payload.windows(TAG.len()).any(|w| w == TAG) {
                    tagged += 1;
                }
            } else {
                audio += 1;
            }
        }
        Ok((video, tagged, audio))
    })
    .await
    .map_err(|e| e.to_string())??;
    stop.store(true, Ordering::Relaxed);
    // The publisher's socket closes here, after the subscriber is done.
    drop(media.await.map_err(|e| e.to_string())?);

    let (video, tagged, audio) = received;
    eprintln!("subscriber got {video} video packets ({tagged} with our tag) and {audio} audio");
    assert!(video >= WANTED_VIDEO, "only {video} video packets arrived");
    assert_eq!(tagged, video, "video payloads changed on the way");

    subscriber
        .leave()
        .await
        .map_err(|e| format!("leave: {e}"))?;
    publisher.leave().await.map_err(|e| format!("leave: {e}"))?;
    session.destroy().await.map_err(|e| e.to_string())?;
    Ok(())
}
