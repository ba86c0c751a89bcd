//! Real media for MCU participants. The mixer decodes what it receives, so the synthetic
//! payloads of `traffic` (which only look like VP8 to an SFU's keyframe detection) would be
//! dropped as undecodable: here a short clip is encoded once at start with the MCU's own codec
//! crate (a square moving over a coloured field in VP8, a tone in Opus), and every participant
//! loops its frames through the codec crate's packetizers, as a browser would send them.
//!
//! A participant talks (the tone) or listens (Opus of silence, as an unmuted microphone in a
//! quiet room sends), and marks each audio packet with its RFC 6464 level as browsers do, so
//! that a meeting with a few talkers among many listeners can be played.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_codec::audio::{OpusEncoder, level_of};
use switchyard_codec::video::{self, EncoderConfig, VideoCodec};
use switchyard_codec::vp8::Vp8Packetizer;
use switchyard_codec::{I420, Packetizer, Payloads, Yuv};

use crate::traffic::{AUDIO_LEVEL_EXTENSION_ID, Kind, Stream};

/// The clip's frame rate, a browser camera's.
pub const FPS: u32 = 30;
/// One second of video: a keyframe then deltas; looping starts over at the keyframe.
const VIDEO_FRAMES: u32 = FPS;
/// One second of 20 ms Opus frames.
const AUDIO_FRAMES: usize = 50;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// 20 ms at 48 kHz.
const AUDIO_SAMPLES: usize = 960;
/// RTP payload size the packetizer splits frames to, as browsers do below a 1200-byte MTU.
const VIDEO_MTU: usize = 1100;
const VIDEO_BITRATE: u32 = 500_000;
const AUDIO_BITRATE: u32 = 32_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("VP8 encoder: {0}")]
    Video(#[from] switchyard_codec::CodecError),
    #[error("Opus encoder: {0}")]
    Audio(#[from] switchyard_codec::audio::AudioError),
    #[error("picture: {0}")]
    Picture(#[from] switchyard_codec::frame::FrameError),
}

/// The encoded clip, shared by every participant.
pub struct Clip {
    /// VP8 frames, the first a keyframe.
    video: Vec<Vec<u8>>,
    /// Opus packets of a 440 Hz tone, one per 20 ms, with their RFC 6464 levels.
    audio: Vec<(Vec<u8>, u8)>,
    /// Opus packets of silence, one per 20 ms.
    silence: Vec<Vec<u8>>,
}

/// RFC 6464's level byte for silence: no voice flag, 127 -dBov.
const SILENT: u8 = 127;
/// RFC 6464's voice activity flag, set on the tone's packets.
const VOICE: u8 = 0x80;

impl Clip {
    /// Encodes one second of `width` x `height` VP8 (with `video`) and of Opus.
    pub fn encode(width: u32, height: u32, video: bool) -> Result<Arc<Clip>, Error> {
        let frames = if video {
            encode_video(width, height)?
        } else {
            Vec::new()
        };
        let audio = encode_audio(440.0)?;
        let silence = encode_audio(0.0)?.into_iter().map(|(p, _)| p).collect();
        Ok(Arc::new(Clip {
            video: frames,
            audio,
            silence,
        }))
    }

    pub fn has_video(&self) -> bool {
        !self.video.is_empty()
    }
}

fn encode_video(width: u32, height: u32) -> Result<Vec<Vec<u8>>, Error> {
    let mut encoder = video::encoder(&EncoderConfig {
        codec: VideoCodec::Vp8,
        width,
        height,
        bitrate_bps: VIDEO_BITRATE,
        fps: FPS,
    })?;
    let mut picture = I420::new(width, height)?;
    let background = Yuv::from_rgb(40, 90, 160);
    let square = Yuv::from_rgb(240, 200, 40);
    let side = (height / 4).max(2) & !1;
    let mut frames = Vec::new();
    let mut out = Vec::new();
    for i in 0..VIDEO_FRAMES {
        // A square crossing the picture: every frame differs, so delta frames carry data.
        picture.fill(background);
        let x = (width.saturating_sub(side) * i / VIDEO_FRAMES) & !1;
        let y = (height.saturating_sub(side) / 2) & !1;
        picture.fill_rect(x, y, side, side, square);
        if encoder
            .encode(&picture, i * (90_000 / FPS), &mut out)?
            .is_some()
        {
            frames.push(out.clone());
        }
    }
    Ok(frames)
}

/// A second of a `freq` Hz tone (0: silence), with each packet's level.
fn encode_audio(freq: f64) -> Result<Vec<(Vec<u8>, u8)>, Error> {
    let mut encoder = OpusEncoder::new(AUDIO_BITRATE, 0)?;
    let mut pcm = [0i16; AUDIO_SAMPLES];
    let mut out = [0u8; 1500];
    let mut packets = Vec::with_capacity(AUDIO_FRAMES);
    for frame in 0..AUDIO_FRAMES {
        for (i, s) in pcm.iter_mut().enumerate() {
            let t = (frame * AUDIO_SAMPLES + i) as f64 / 48_000.0;
            *s = (8_000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        }
        let n = encoder.encode(&pcm, &mut out)?;
        packets.push((out[..n].to_vec(), level_of(&pcm)));
    }
    Ok(packets)
}

/// One participant's playback of the clip: its audio every 20 ms, its video frames at `FPS`
/// packetized as they go out, a keyframe request answered by starting the video over. Its
/// clock starts at the first poll (when the connection is up), so the packets due while DTLS
/// ran are not sent in a burst, which a browser would not do either.
pub struct ClipSource {
    clip: Arc<Clip>,
    video: Option<VideoPlayback>,
    audio: Option<(Stream, usize)>,
    /// Sends the tone; otherwise silence.
    talking: bool,
    started: bool,
    next_audio: Instant,
    /// How late the most overdue packet went out (the generator's own lag).
    pub max_lag: Duration,
}

struct VideoPlayback {
    stream: Stream,
    packetizer: Vp8Packetizer,
    /// The current frame's payloads (reused), and how many of them have gone out.
    payloads: Payloads,
    sent: usize,
    frame: usize,
    next_frame: Instant,
    restart: bool,
}

impl ClipSource {
    /// `video` and `audio`: (SSRC, payload type) of each stream sent; `talking`: the audio is
    /// the tone, else silence.
    pub fn new(
        clip: Arc<Clip>,
        video: Option<(u32, u8)>,
        audio: Option<(u32, u8)>,
        talking: bool,
        now: Instant,
    ) -> ClipSource {
        let video = video
            .filter(|_| clip.has_video())
            .map(|(ssrc, pt)| VideoPlayback {
                stream: Stream::new(ssrc, pt),
                packetizer: Vp8Packetizer::new(rand::random()),
                payloads: Payloads::new(),
                sent: 0,
                frame: 0,
                next_frame: now,
                restart: false,
            });
        ClipSource {
            clip,
            video,
            audio: audio.map(|(ssrc, pt)| (Stream::new(ssrc, pt), 0)),
            talking,
            started: false,
            next_audio: now,
            max_lag: Duration::ZERO,
        }
    }

    /// The mixer asked for a keyframe: the next frame is the clip's first.
    pub fn request_keyframe(&mut self) {
        if let Some(v) = &mut self.video {
            v.restart = true;
        }
    }

    pub fn next_due(&self) -> Instant {
        let audio = self.audio.as_ref().map(|_| self.next_audio);
        let video = self.video.as_ref().map(|v| {
            if v.sent < v.payloads.len() {
                // The rest of a frame goes out at once.
                Instant::now()
            } else {
                v.next_frame
            }
        });
        audio
            .into_iter()
            .chain(video)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Writes the next due packet into `out` (plain RTP), or returns None if nothing is due.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(Kind, usize)> {
        if !self.started {
            self.started = true;
            self.next_audio = now;
            if let Some(v) = &mut self.video {
                v.next_frame = now;
            }
        }
        if let Some((stream, index)) = &mut self.audio
            && now >= self.next_audio
        {
            self.max_lag = self.max_lag.max(now - self.next_audio);
            self.next_audio += AUDIO_INTERVAL;
            let (packet, level) = if self.talking {
                let (packet, level) = self.clip.audio.get(*index)?;
                (packet, VOICE | level)
            } else {
                (self.clip.silence.get(*index)?, SILENT)
            };
            *index = (*index + 1) % self.clip.audio.len().max(1);
            stream.timestamp = stream.timestamp.wrapping_add(AUDIO_SAMPLES as u32);
            let h = stream.header_with(out, false, &[(AUDIO_LEVEL_EXTENSION_ID, &[level])])?;
            out.get_mut(h..h + packet.len())?.copy_from_slice(packet);
            return Some((Kind::Audio, h + packet.len()));
        }
        let v = self.video.as_mut()?;
        if v.sent >= v.payloads.len() {
            if now < v.next_frame {
                return None;
            }
            self.max_lag = self.max_lag.max(now - v.next_frame);
            v.next_frame += Duration::from_secs(1) / FPS;
            if std::mem::take(&mut v.restart) {
                v.frame = 0;
            }
            let frame = self.clip.video.get(v.frame)?;
            v.frame = (v.frame + 1) % self.clip.video.len();
            v.stream.timestamp = v.stream.timestamp.wrapping_add(90_000 / FPS);
            v.packetizer
                .packetize(frame, VIDEO_MTU, &mut v.payloads)
                .ok()?;
            v.sent = 0;
        }
        let payload = v.payloads.iter().nth(v.sent)?;
        v.sent += 1;
        let last = v.sent == v.payloads.len();
        let h = v.stream.header(out, last, None)?;
        out.get_mut(h..h + payload.len())?.copy_from_slice(payload);
        Some((Kind::Video, h + payload.len()))
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use switchyard_codec::FramePool;
    use switchyard_codec::audio::OpusDecoder;
    use switchyard_codec::vp8::Vp8Depacketizer;
    use switchyard_dataplane::rtp;

    use super::*;

    /// What a participant sends decodes: its VP8 through the codec crate's depacketizer and
    /// decoder, its Opus through the Opus decoder, at 30 frames and 50 packets a second.
    #[test]
    fn the_clip_decodes_at_the_rates_sent() {
        let clip = Clip::encode(160, 96, true).unwrap();
        let t0 = Instant::now();
        let mut source = ClipSource::new(clip.clone(), Some((1, 96)), Some((2, 111)), true, t0);
        let mut depacketizer = Vp8Depacketizer::default();
        let mut decoder = video::decoder(VideoCodec::Vp8).unwrap();
        let mut pool = FramePool::default();
        let mut opus = OpusDecoder::new().unwrap();
        let mut pcm = [0i16; 5760];
        let (mut pictures, mut audio) = (0, 0);
        let mut buf = [0u8; 2048];
        let mut now = t0;
        // Two seconds: the video loops once, over its keyframe.
        while now < t0 + Duration::from_secs(2) {
            while let Some((kind, n)) = source.poll(now, &mut buf) {
                let h = rtp::Header::parse(&buf[..n]).unwrap();
                let payload = &buf[h.payload_offset..h.payload_end];
                match kind {
                    Kind::Audio => {
                        assert_eq!(opus.decode(payload, &mut pcm).unwrap(), 960);
                        let level = h.extension_value(&buf[..n], AUDIO_LEVEL_EXTENSION_ID);
                        // The tone's level: 8000 peak is -15 dBov, with the voice flag.
                        assert_eq!(level, Some(&[0x80 | 15][..]));
                        audio += 1;
                    }
                    Kind::Video => {
                        if let Some(f) = depacketizer
                            .push(h.sequence, h.timestamp, h.marker, payload)
                            .unwrap()
                        {
                            let picture = decoder.decode(f.data, &mut pool).unwrap().unwrap();
                            assert_eq!((picture.width(), picture.height()), (160, 96));
                            pictures += 1;
                        }
                    }
                }
            }
            now += Duration::from_millis(1);
        }
        assert!((59..=61).contains(&pictures), "{pictures} pictures");
        assert!((99..=101).contains(&audio), "{audio} audio packets");

        // A listener sends silence, marked silent.
        let mut source = ClipSource::new(clip, None, Some((2, 111)), false, t0);
        let (_, n) = source.poll(t0, &mut buf).unwrap();
        let h = rtp::Header::parse(&buf[..n]).unwrap();
        assert_eq!(
            h.extension_value(&buf[..n], AUDIO_LEVEL_EXTENSION_ID),
            Some(&[127][..])
        );
        let mut opus = OpusDecoder::new().unwrap();
        assert_eq!(
            opus.decode(&buf[h.payload_offset..h.payload_end], &mut pcm)
                .unwrap(),
            960
        );
        assert!(pcm[..960].iter().all(|&s| s.abs() < 50));
    }
}
