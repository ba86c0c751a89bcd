//! Reassembling frames from RTP payloads, shared by every payload format.
//!
//! A [`Depacketizer`] is fed one RTP packet at a time (sequence number, timestamp, marker bit,
//! payload) and returns a [`Frame`] when one is complete. The per-codec part, a
//! [`PayloadFormat`], only says where a payload sits in a frame and appends its media bytes; the
//! sequence and loss rules live here, once:
//!
//! - A gap in sequence numbers drops the frame being built and sets
//!   [`Depacketizer::keyframe_wanted`], so the MCU can send a PLI. Frames are then dropped until
//!   a keyframe has been reassembled cleanly. A new depacketizer wants a keyframe too: a decoder
//!   cannot start on anything else.
//! - Reordering is not undone: a packet older than (or equal to) the newest one seen, by up to
//!   [`MAX_LATE`], is dropped as late, and the gap it left has already broken its frame. The MCU's inputs come through
//!   a jitter buffer (audio) or are decoded on arrival (video), where a keyframe request costs
//!   less than holding every frame back for packets that rarely come.
//! - No input panics: a malformed payload gives a [`DepacketizeError`], is counted, and breaks
//!   the frame it belonged to like a loss does.
//!
//! The frame is built in one buffer that is cleared, not freed, between frames, and the returned
//! [`Frame`] borrows it: after the first few frames the steady path allocates nothing, which
//! matters because a mixer core depacketizes every packet of every participant.

/// The most bytes one frame may grow to. A stream that never sets the marker bit (or garbage
/// that looks like one long frame) must not grow the buffer without bound; a 4K keyframe is far
/// below this.
pub const MAX_FRAME: usize = 4 << 20;

/// How far behind the newest packet a packet is taken as late (and dropped). One farther back
/// is taken as a restart of the sender's sequence numbers and followed, so a restarted stream
/// is not dropped for the 32768 packets it would take to look newer again.
pub const MAX_LATE: u16 = 100;

/// Why a payload was dropped. Each drop is also counted in [`DepacketizerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DepacketizeError {
    #[error("empty payload")]
    Empty,
    #[error("payload descriptor or header truncated")]
    Truncated,
    #[error("sequence number {0} is not newer than the last one (late or duplicate)")]
    Late(u16),
    #[error("continuation of a frame or fragment whose start was not seen")]
    NoStart,
    #[error("a fragment started before the previous one ended, or the frame ended inside one")]
    Unfinished,
    #[error("a continuation carries another timestamp than its frame")]
    TimestampChanged,
    #[error("aggregation packet with bad NAL unit lengths")]
    BadAggregate,
    #[error("unsupported or reserved NAL unit type {0}")]
    Unsupported(u8),
    #[error("frame larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("malformed VP9 payload descriptor or superframe")]
    BadVp9,
    #[error("malformed AV1 aggregation header or OBU")]
    BadAv1,
}

/// One reassembled frame: a VP8 frame, a VP9 picture (a superframe when it has several
/// spatial layers), an AV1 temporal unit (low-overhead OBUs), an H264 access unit in Annex B
/// form (4-byte start codes) or an Opus packet. `data` borrows the depacketizer's buffer until the next
/// [`Depacketizer::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub timestamp: u32,
    pub keyframe: bool,
}

/// What one depacketizer has seen, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Packets pushed.
    pub packets: u64,
    /// Frames returned.
    pub frames: u64,
    /// Sequence numbers skipped over (packets that never came).
    pub lost_packets: u64,
    /// Packets dropped as late or duplicate.
    pub late_packets: u64,
    /// Packets dropped because they belonged to a frame already broken by a loss or error.
    pub skipped_packets: u64,
    /// Payloads that gave an error other than [`DepacketizeError::Late`].
    pub malformed_packets: u64,
    /// Frames started but not returned: broken, or not a keyframe while one was wanted.
    pub dropped_frames: u64,
    /// Packets without payload: padding.
    pub padding_packets: u64,
}

/// The per-codec half of a depacketizer: where a payload sits in a frame, and its media bytes.
pub trait PayloadFormat {
    /// Reads `payload`'s descriptor or header and says whether it begins a frame: `Some` for
    /// formats that mark starts (VP8's S bit and partition 0), `None` for those where a new
    /// timestamp begins a frame (H264). May remember what it read for the [`append`] that
    /// follows on the same payload.
    ///
    /// [`append`]: PayloadFormat::append
    fn starts_frame(&mut self, payload: &[u8]) -> Result<Option<bool>, DepacketizeError>;

    /// Forgets the frame before: called before the first payload of each frame is appended.
    fn reset(&mut self);

    /// Appends `payload`'s media bytes to `frame`.
    fn append(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<(), DepacketizeError>;

    /// Whether the frame built since [`reset`](PayloadFormat::reset) can end here (no fragment
    /// left open).
    fn can_end(&self) -> bool {
        true
    }

    /// Whether the frame built since [`reset`](PayloadFormat::reset) decodes on its own.
    fn keyframe(&self) -> bool;

    /// Completes the frame before it is returned, once [`can_end`](PayloadFormat::can_end)
    /// said it may end here: VP9 appends its superframe index, which needs every layer's
    /// size. An error drops the frame like a malformed packet does.
    fn finish(&mut self, _frame: &mut Vec<u8>) -> Result<(), DepacketizeError> {
        Ok(())
    }

    /// Whether the packet with this marker bit ends its frame: the marker for video, every
    /// packet for audio (where the marker means the start of a talkspurt instead).
    fn ends_frame(&self, marker: bool) -> bool {
        marker
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: the next packet must begin one.
    Idle,
    /// Building the frame with this timestamp.
    Building,
    /// The frame with this timestamp broke; its remaining packets are skipped.
    Skipping(u32),
    /// A frame was returned from the buffer; it is cleared on the next push.
    Returned,
}

/// Reassembles frames of one RTP stream in payload format `F`.
#[derive(Debug)]
pub struct Depacketizer<F> {
    format: F,
    buf: Vec<u8>,
    state: State,
    timestamp: u32,
    last: Option<(u16, u32)>,
    keyframe_wanted: bool,
    stats: DepacketizerStats,
}

impl<F: PayloadFormat + Default> Default for Depacketizer<F> {
    fn default() -> Self {
        Self::new(F::default())
    }
}

impl<F: PayloadFormat> Depacketizer<F> {
    pub fn new(format: F) -> Self {
        Self {
            format,
            buf: Vec::new(),
            state: State::Idle,
            timestamp: 0,
            last: None,
            keyframe_wanted: true,
            stats: DepacketizerStats::default(),
        }
    }

    /// Whether a keyframe is needed before frames come out again (after a loss, an error, or
    /// at the start). The MCU sends a PLI while this holds, rate-limited.
    pub fn keyframe_wanted(&self) -> bool {
        self.keyframe_wanted
    }

    pub fn stats(&self) -> &DepacketizerStats {
        &self.stats
    }

    /// The payload format, for what it read beyond frames (VP9's scalability structure).
    pub fn format(&self) -> &F {
        &self.format
    }

    /// Feeds one packet; returns the frame it completes, if any. An error means the packet was
    /// dropped (and counted); the depacketizer stays usable.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Frame<'_>>, DepacketizeError> {
        self.stats.packets += 1;
        if self.state == State::Returned {
            self.buf.clear();
            self.state = State::Idle;
        }
        if let Some((last_seq, last_ts)) = self.last {
            let step = seq.wrapping_sub(last_seq);
            if step == 0 || step > u16::MAX - MAX_LATE {
                self.stats.late_packets += 1;
                return Err(DepacketizeError::Late(seq));
            }
            if step != 1 {
                // A jump forward is a loss; one far back, a sender that restarted its sequence
                // numbers (nothing to count as lost then). Either way the frame is broken.
                if step < 0x8000 {
                    self.stats.lost_packets += u64::from(step - 1);
                }
                self.break_frame(last_ts);
            }
        }
        if payload.is_empty() {
            // Padding: a sender's pacer probes bandwidth with empty packets on the media
            // stream when RTX was not negotiated (Chromium does), between frames. It takes its
            // sequence number, so the next packet is no loss, and is nothing else.
            self.stats.padding_packets += 1;
            let frame_timestamp = self.last.map_or(timestamp, |(_, t)| t);
            self.last = Some((seq, frame_timestamp));
            return Ok(None);
        }
        self.last = Some((seq, timestamp));
        match self.place(timestamp, payload) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                self.stats.malformed_packets += 1;
                self.break_frame(timestamp);
                return Err(e);
            }
        }
        if !self.format.ends_frame(marker) {
            return Ok(None);
        }
        if !self.format.can_end() {
            self.stats.malformed_packets += 1;
            self.break_frame(timestamp);
            return Err(DepacketizeError::Unfinished);
        }
        if let Err(e) = self.format.finish(&mut self.buf) {
            self.stats.malformed_packets += 1;
            self.break_frame(timestamp);
            return Err(e);
        }
        let keyframe = self.format.keyframe();
        if self.keyframe_wanted && !keyframe {
            self.stats.dropped_frames += 1;
            self.buf.clear();
            self.state = State::Idle;
            return Ok(None);
        }
        self.keyframe_wanted = false;
        self.stats.frames += 1;
        self.state = State::Returned;
        Ok(Some(Frame {
            data: &self.buf,
            timestamp: self.timestamp,
            keyframe,
        }))
    }

    /// Places the payload in the frame being built: `Ok(true)` when it was appended,
    /// `Ok(false)` when it was skipped as part of a broken frame.
    fn place(&mut self, timestamp: u32, payload: &[u8]) -> Result<bool, DepacketizeError> {
        let marked = self.format.starts_frame(payload)?;
        let starts = marked.unwrap_or(match self.state {
            State::Idle | State::Returned => true,
            State::Building => timestamp != self.timestamp,
            State::Skipping(broken) => timestamp != broken,
        });
        match (self.state, starts) {
            (State::Building, true) => {
                // A new frame began before the last one ended: its marker never came.
                self.break_frame(self.timestamp);
                self.begin(timestamp);
            }
            (State::Building, false) if timestamp != self.timestamp => {
                return Err(DepacketizeError::TimestampChanged);
            }
            (State::Building, false) => {}
            (State::Skipping(_), false) => {
                self.stats.skipped_packets += 1;
                return Ok(false);
            }
            (State::Idle | State::Returned, false) => return Err(DepacketizeError::NoStart),
            (State::Idle | State::Returned | State::Skipping(_), true) => self.begin(timestamp),
        }
        self.format.append(payload, &mut self.buf)?;
        if self.buf.len() > MAX_FRAME {
            return Err(DepacketizeError::TooLarge);
        }
        Ok(true)
    }

    fn begin(&mut self, timestamp: u32) {
        self.buf.clear();
        self.format.reset();
        self.timestamp = timestamp;
        self.state = State::Building;
    }

    /// Drops the frame being built (if any), skips the rest of the frame with `timestamp`, and
    /// asks for a keyframe.
    fn break_frame(&mut self, timestamp: u32) {
        if self.state == State::Building {
            self.stats.dropped_frames += 1;
        }
        self.buf.clear();
        self.state = State::Skipping(timestamp);
        self.keyframe_wanted = true;
    }
}
