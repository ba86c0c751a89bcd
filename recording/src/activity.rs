//! Whether a recorded track is live, muted or paused, from its packets alone, for the log's
//! `updateRecording` entries (what the muxer's silence and a viewer's "muted" are about).
//!
//! - **Paused**: no packet for [`PAUSED_AFTER`] (the sender stopped sending: the track was
//!   removed or replaced by nothing, the network went, a browser's disabled video at its
//!   lowest rate still counts as live).
//! - **Muted** (audio): only near-empty Opus frames for [`MUTED_AFTER`]. A muted microphone
//!   (`enabled = false`) still sends frames, but Opus codes digital silence in a few bytes
//!   (a TOC byte and a handful more), against tens of bytes for any sound. Reading the size
//!   keeps the recorder from decoding audio it only stores.
//!
//! Sans-IO: fed packet sizes and times, polled for changes.

use std::time::{Duration, Instant};

/// No packet for this long: the track is paused.
pub const PAUSED_AFTER: Duration = Duration::from_secs(2);
/// Only silent frames for this long: the audio is muted.
pub const MUTED_AFTER: Duration = Duration::from_secs(1);
/// An Opus payload this small or smaller codes silence.
pub const SILENT_BYTES: usize = 8;

/// A track's state, as [`Activity`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live,
    /// Audio frames go on, silent.
    Muted,
    /// No frames.
    Paused,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "live",
            State::Muted => "muted",
            State::Paused => "paused",
        }
    }
}

/// A change of state, and how long ago it began (the last sound or packet was then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub state: State,
    pub ago: Duration,
}

/// One track's activity.
#[derive(Debug)]
pub struct Activity {
    audio: bool,
    last_packet: Option<Instant>,
    last_sound: Option<Instant>,
    state: State,
}

impl Activity {
    /// For an audio track (Opus) when `audio`, else video.
    pub fn new(audio: bool) -> Activity {
        Activity {
            audio,
            last_packet: None,
            last_sound: None,
            state: State::Live,
        }
    }

    /// A packet with `payload` bytes of media arrived at `now`.
    pub fn packet(&mut self, now: Instant, payload: usize) {
        self.last_packet = Some(now);
        if !self.audio || payload > SILENT_BYTES {
            self.last_sound = Some(now);
        }
    }

    /// The state at `now`, if it changed since the last call. Nothing before the first packet.
    pub fn poll(&mut self, now: Instant) -> Option<Change> {
        let last_packet = self.last_packet?;
        let since_packet = now.saturating_duration_since(last_packet);
        let since_sound = self
            .last_sound
            .map_or(since_packet, |at| now.saturating_duration_since(at));
        let (state, ago) = if since_packet >= PAUSED_AFTER {
            (State::Paused, since_packet)
        } else if self.audio && since_sound >= MUTED_AFTER {
            (State::Muted, since_sound)
        } else {
            (State::Live, since_packet)
        };
        if state == self.state {
            return None;
        }
        self.state = state;
        Some(Change { state, ago })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn silent_frames_mute_audio_and_sound_unmutes_it() {
        let t0 = Instant::now();
        let mut a = Activity::new(true);
        assert_eq!(a.poll(t0), None, "nothing before the first packet");
        // 20 ms frames: sound for 1 s, silence for 1.5 s, sound again.
        for i in 0..125u64 {
            let size = if (50..100).contains(&i) { 3 } else { 60 };
            a.packet(t0 + ms(20 * i), size);
            let change = a.poll(t0 + ms(20 * i));
            match i {
                // The last sound was at 980 ms; silent for a second at 1980.
                99 => assert_eq!(
                    change,
                    Some(Change {
                        state: State::Muted,
                        ago: ms(1_000)
                    })
                ),
                100 => assert_eq!(
                    change,
                    Some(Change {
                        state: State::Live,
                        ago: ms(0)
                    })
                ),
                _ => assert_eq!(change, None, "at frame {i}"),
            }
        }
    }

    #[test]
    fn no_packets_pause_a_track_and_the_next_resumes_it() {
        let t0 = Instant::now();
        let mut v = Activity::new(false);
        v.packet(t0, 1200);
        assert_eq!(v.poll(t0 + ms(1_999)), None);
        assert_eq!(
            v.poll(t0 + ms(2_500)),
            Some(Change {
                state: State::Paused,
                ago: ms(2_500)
            })
        );
        assert_eq!(v.poll(t0 + ms(3_000)), None, "told once");
        v.packet(t0 + ms(4_000), 5);
        assert_eq!(v.poll(t0 + ms(4_000)).map(|c| c.state), Some(State::Live));
        // Audio that stops altogether is paused, not muted.
        let mut a = Activity::new(true);
        a.packet(t0, 60);
        assert_eq!(a.poll(t0 + ms(2_100)).map(|c| c.state), Some(State::Paused));
    }
}
