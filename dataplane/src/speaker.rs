//! Audio levels and the active speaker, from the client-to-mixer audio level header extension
//! (RFC 6464) that browsers put on every audio packet: no audio is decoded.
//!
//! Two layers, both sans-IO:
//! - [`Activity`], one per audio producer, is fed each packet's level byte on the forwarding
//!   path (a few integer operations, nothing allocated) and remembers the current run of voice
//!   and a smoothed loudness;
//! - [`Detector`], one per router, is run on the router's timer every [`EVALUATE_EVERY`]: it
//!   decides who is speaking (with hysteresis: a start needs a sustained run of voice, a stop a
//!   long silence) and who is the dominant speaker (a challenger must be clearly louder for a
//!   while to take over), and reports changes, at most [`MAX_SPEAKING_CHANGES`] per evaluation.
//!
//! The approach is in the spirit of published dominant-speaker identification (Volfin and
//! Cohen, "Dominant speaker identification for multipoint videoconferencing", used by Jitsi):
//! judge speech over a short window and a longer one, not packet by packet, so that clicks,
//! coughs and back-channel "mm-hm"s do not move the speaker. This module is a much simpler
//! threshold-and-timers version of that idea.
//!
//! The same state answers the MCU's question "who is talking, how loud" without a decoder:
//! [`Activity::loudness`] and [`Activity::is_speaking`], gathered per router by
//! `Router::talkers` and `Router::dominant_speaker`.

use std::time::{Duration, Instant};

use crate::spec::ProducerId;

/// A packet whose level is this loud or louder (-50 dBov) carries voice. Speech into a headset
/// or laptop microphone after the browser's processing sits around -20 to -40 dBov; rooms
/// after noise suppression stay below -60.
pub const VOICE_LEVEL_DBOV: u8 = 50;
/// Gaps in voice shorter than this (between syllables and words) do not end a run of voice.
pub const BRIDGE: Duration = Duration::from_millis(300);
/// A run of voice must last this long before its producer is speaking: clicks, coughs and
/// keyboard noise are shorter.
pub const START_AFTER: Duration = Duration::from_millis(200);
/// A producer stops speaking after this long without voice, so that the pauses between
/// sentences do not make the indicator flicker.
pub const STOP_AFTER: Duration = Duration::from_secs(1);
/// A challenger takes the dominant speaker's place when it is this much louder (smoothed)...
pub const TAKEOVER_MARGIN_DB: u8 = 6;
/// ...at every evaluation for this long; or at once when the dominant speaker has stopped
/// speaking. Short interjections and overlapping speech do not switch the main view.
pub const TAKEOVER: Duration = Duration::from_millis(600);
/// How often a router's detector runs (on its timer, never per packet; a multiple of the timer
/// grid's tick, so it shares the router's wake-ups).
pub const EVALUATE_EVERY: Duration = Duration::from_millis(200);
/// Speaking changes reported per evaluation, so a channel gets at most five a second (plus
/// dominant-speaker changes, which the takeover rules space out); further changes wait for the next
/// evaluation, and one that is undone meanwhile is never reported.
pub const MAX_SPEAKING_CHANGES: usize = 1;

/// Loudness is kept in 1/16 dB; each packet moves it 1/8 of the way to its level, a time
/// constant of eight packets (160 ms at Opus's 20 ms).
const FRACTION_BITS: u32 = 4;
const SMOOTHING_SHIFT: u32 = 3;

/// The RFC 6464 §3 level element: one byte, the voice activity flag V (set by senders that run
/// a voice activity detector) then the level in -dBov, 0 (loudest) to 127 (silence).
/// `None` for anything else (a value of another length).
pub fn parse_level(value: &[u8]) -> Option<(bool, u8)> {
    match value {
        [b] => Some((b & 0x80 != 0, b & 0x7F)),
        _ => None,
    }
}

/// One audio producer's recent levels. The V flag is not used: not every sender runs a voice
/// activity detector, and the level alone decides the same for those that do.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// The first and the last voice packet of the current run of voice.
    run_start: Option<Instant>,
    last_voice: Option<Instant>,
    last_packet: Option<Instant>,
    /// Smoothed loudness in 1/16 dB above -127 dBov (0 is silence).
    loudness: u16,
    /// What the detector decided at its last evaluation.
    speaking: bool,
    /// What was last reported.
    reported: bool,
}

impl Activity {
    /// One packet's level extension value; returns false (and changes nothing) when it is not
    /// a level element.
    pub fn on_level(&mut self, now: Instant, value: &[u8]) -> bool {
        let Some((_, level)) = parse_level(value) else {
            return false;
        };
        let sample = u16::from(127 - level) << FRACTION_BITS;
        let delta = (i32::from(sample) - i32::from(self.loudness)) >> SMOOTHING_SHIFT;
        self.loudness = u16::try_from(i32::from(self.loudness) + delta).unwrap_or(0);
        self.last_packet = Some(now);
        if level <= VOICE_LEVEL_DBOV {
            if self
                .last_voice
                .is_none_or(|t| now.saturating_duration_since(t) > BRIDGE)
            {
                self.run_start = Some(now);
            }
            self.last_voice = Some(now);
        }
        true
    }

    /// The smoothed loudness in dB above -127 dBov (0 is silence, 127 full scale); 0 once no
    /// packet has come for `STOP_AFTER` (a muted or stopped track).
    pub fn loudness(&self, now: Instant) -> u8 {
        if self
            .last_packet
            .is_none_or(|t| now.saturating_duration_since(t) >= STOP_AFTER)
        {
            return 0;
        }
        u8::try_from(self.loudness >> FRACTION_BITS).unwrap_or(127)
    }

    /// Whether the detector found this producer speaking at its last evaluation.
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Decides whether the producer is speaking at `now`, given what it was.
    fn decide(&self, now: Instant) -> bool {
        let Some(last) = self.last_voice else {
            return false;
        };
        let silent_for = now.saturating_duration_since(last);
        if self.speaking {
            silent_for < STOP_AFTER
        } else {
            let run = self
                .run_start
                .map_or(Duration::ZERO, |s| last.saturating_duration_since(s));
            silent_for <= BRIDGE && run >= START_AFTER
        }
    }
}

/// An audio producer as an MCU sees it when it picks whom to mix (`Router::talkers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Talker {
    pub producer: ProducerId,
    /// Smoothed, in dB above -127 dBov (see [`Activity::loudness`]).
    pub loudness: u8,
    pub speaking: bool,
}

/// What a detector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Speaking {
        producer: ProducerId,
        speaking: bool,
    },
    /// The dominant speaker changed; `None` when it went away (its producer was removed) and
    /// nobody speaks.
    Dominant(Option<ProducerId>),
}

/// A router's speaking and dominant-speaker decisions.
#[derive(Debug, Default)]
pub struct Detector {
    dominant: Option<ProducerId>,
    /// The loudest other speaker and since when it has been clearly louder than the dominant.
    challenger: Option<(ProducerId, Instant)>,
}

impl Detector {
    /// The dominant speaker: the last producer to have taken over, kept while nobody else
    /// speaks (a pause does not end it).
    pub fn dominant(&self) -> Option<ProducerId> {
        self.dominant
    }

    /// A producer is gone: it is no longer the dominant speaker (its successor is found at the
    /// next evaluation). Returns the change to report, if any.
    pub fn removed(&mut self, producer: ProducerId) -> Option<Change> {
        if self.challenger.is_some_and(|(p, _)| p == producer) {
            self.challenger = None;
        }
        if self.dominant == Some(producer) {
            self.dominant = None;
            return Some(Change::Dominant(None));
        }
        None
    }

    /// Runs the decisions at `now` over the router's audio producers and reports what changed
    /// through `report`.
    pub fn evaluate<'a>(
        &mut self,
        now: Instant,
        talkers: impl Iterator<Item = (ProducerId, &'a mut Activity)>,
        mut report: impl FnMut(Change),
    ) {
        let mut budget = MAX_SPEAKING_CHANGES;
        let mut loudest: Option<(ProducerId, u8)> = None;
        let mut dominant_loudness = None;
        for (id, a) in talkers {
            a.speaking = a.decide(now);
            if a.speaking != a.reported && budget > 0 {
                budget -= 1;
                a.reported = a.speaking;
                report(Change::Speaking {
                    producer: id,
                    speaking: a.speaking,
                });
            }
            if !a.speaking {
                continue;
            }
            let loudness = a.loudness(now);
            if Some(id) == self.dominant {
                dominant_loudness = Some(loudness);
            } else if loudest.is_none_or(|(_, l)| loudness > l) {
                loudest = Some((id, loudness));
            }
        }
        let Some((candidate, loudness)) = loudest else {
            self.challenger = None;
            return;
        };
        let takes_over = match dominant_loudness {
            // The dominant speaker is silent (or gone): the loudest speaker takes over now.
            None => true,
            Some(d) if loudness >= d.saturating_add(TAKEOVER_MARGIN_DB) => match self.challenger {
                Some((c, since)) if c == candidate => {
                    now.saturating_duration_since(since) >= TAKEOVER
                }
                _ => {
                    self.challenger = Some((candidate, now));
                    false
                }
            },
            Some(_) => {
                self.challenger = None;
                false
            }
        };
        if takes_over {
            self.dominant = Some(candidate);
            self.challenger = None;
            report(Change::Dominant(Some(candidate)));
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    const A: ProducerId = ProducerId(1);
    const B: ProducerId = ProducerId(2);
    const PACKET: Duration = Duration::from_millis(20);

    /// Two producers fed a level trace each, packet by packet, with the detector run every
    /// `EVALUATE_EVERY`; collects the changes with the time (ms from the start) they came.
    struct Trace {
        start: Instant,
        now: Instant,
        next_eval: Instant,
        a: Activity,
        b: Activity,
        detector: Detector,
        changes: Vec<(u64, Change)>,
    }

    impl Trace {
        fn new() -> Trace {
            let start = Instant::now();
            Trace {
                start,
                now: start,
                next_eval: start + EVALUATE_EVERY,
                a: Activity::default(),
                b: Activity::default(),
                detector: Detector::default(),
                changes: Vec::new(),
            }
        }

        /// `ms` of packets at levels `a` and `b` (-dBov; `None`: no packet).
        fn run(&mut self, ms: u64, a: Option<u8>, b: Option<u8>) {
            let end = self.now + Duration::from_millis(ms);
            while self.now < end {
                if let Some(l) = a {
                    assert!(self.a.on_level(self.now, &[l]));
                }
                if let Some(l) = b {
                    assert!(self.b.on_level(self.now, &[0x80 | l]));
                }
                self.now += PACKET;
                if self.now >= self.next_eval {
                    self.next_eval += EVALUATE_EVERY;
                    let at = self.now.duration_since(self.start).as_millis() as u64;
                    let changes = &mut self.changes;
                    self.detector.evaluate(
                        self.now,
                        [(A, &mut self.a), (B, &mut self.b)].into_iter(),
                        |c| changes.push((at, c)),
                    );
                }
            }
        }

        fn speaking(&self, p: ProducerId) -> Vec<(u64, bool)> {
            self.changes
                .iter()
                .filter_map(|(at, c)| match c {
                    Change::Speaking { producer, speaking } if *producer == p => {
                        Some((*at, *speaking))
                    }
                    _ => None,
                })
                .collect()
        }

        fn dominants(&self) -> Vec<(u64, Option<ProducerId>)> {
            self.changes
                .iter()
                .filter_map(|(at, c)| match c {
                    Change::Dominant(d) => Some((*at, *d)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn the_level_element_is_one_byte_and_anything_else_is_ignored() {
        assert_eq!(parse_level(&[0x80 | 30]), Some((true, 30)));
        assert_eq!(parse_level(&[127]), Some((false, 127)));
        assert_eq!(parse_level(&[]), None);
        assert_eq!(parse_level(&[1, 2]), None);
        let mut a = Activity::default();
        let now = Instant::now();
        assert!(!a.on_level(now, &[]));
        assert!(!a.on_level(now, &[10, 10, 10]));
        assert_eq!(a.loudness(now), 0);
        assert!(a.last_voice.is_none());
    }

    #[test]
    fn a_tone_starts_speaking_after_a_sustained_run_and_silence_stops_it_after_a_second() {
        let mut t = Trace::new();
        t.run(500, Some(127), Some(127));
        t.run(2000, Some(20), Some(127));
        t.run(3000, Some(127), Some(127));
        let a = t.speaking(A);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a[0].1 && !a[1].1);
        // On within START_AFTER plus an evaluation of the tone's start at 500 ms.
        assert!((700..=950).contains(&a[0].0), "{a:?}");
        // Off within STOP_AFTER plus an evaluation of the silence at 2500 ms.
        assert_eq!(
            EVALUATE_EVERY.as_millis() % crate::timers::Grid::TICK.as_millis(),
            0
        );
        assert!((3500..=3750).contains(&a[1].0), "{a:?}");
        assert!(
            t.speaking(B).is_empty(),
            "the silent producer is never announced"
        );
        assert_eq!(t.dominants(), [(a[0].0, Some(A))]);
        assert_eq!(t.detector.dominant(), Some(A), "kept through the silence");
        assert_eq!(t.a.loudness(t.now), 0);
    }

    #[test]
    fn clicks_and_pauses_between_words_do_not_change_anything() {
        let mut t = Trace::new();
        // Clicks: 100 ms of noise every half second.
        for _ in 0..6 {
            t.run(100, Some(10), None);
            t.run(400, Some(127), None);
        }
        assert!(t.changes.is_empty(), "{:?}", t.changes);
        // Speech: words of 300 ms, pauses of 200 ms, then a pause of 800 ms between sentences.
        for _ in 0..4 {
            t.run(300, Some(30), None);
            t.run(200, Some(100), None);
        }
        t.run(600, Some(127), None);
        for _ in 0..4 {
            t.run(300, Some(30), None);
            t.run(200, Some(100), None);
        }
        assert_eq!(t.speaking(A).len(), 1, "one start, no flicker");
        // Without packets (muted, DTX), speaking ends too.
        t.run(1500, None, None);
        assert_eq!(
            t.speaking(A).iter().map(|c| c.1).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn a_louder_speaker_takes_over_only_when_it_stays_louder() {
        let mut t = Trace::new();
        t.run(1000, Some(30), Some(127));
        assert_eq!(t.detector.dominant(), Some(A));
        // B talks over A for 400 ms, louder: an interjection, A stays dominant.
        t.run(400, Some(30), Some(15));
        t.run(1000, Some(30), Some(127));
        assert_eq!(t.detector.dominant(), Some(A));
        // B as loud as A: no takeover, however long.
        t.run(2000, Some(30), Some(28));
        assert_eq!(t.detector.dominant(), Some(A));
        // B clearly louder for long: it takes over after TAKEOVER.
        let from = t.now.duration_since(t.start).as_millis() as u64;
        t.run(2000, Some(30), Some(10));
        let d = t.dominants();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1].1, Some(B));
        assert!(d[1].0 >= from + TAKEOVER.as_millis() as u64, "{d:?}");
        // B goes quiet: A, still speaking, takes over at once when B stops speaking.
        t.run(2000, Some(30), Some(127));
        assert_eq!(t.detector.dominant(), Some(A));
    }

    #[test]
    fn changes_are_rate_limited_and_a_removed_dominant_is_forgotten() {
        let mut t = Trace::new();
        t.run(1000, Some(20), Some(20));
        // Both started in the same evaluation window; one change per evaluation.
        let (a, b) = (t.speaking(A), t.speaking(B));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_ne!(a[0].0, b[0].0);
        let mut ats: Vec<u64> = t.changes.iter().map(|c| c.0).collect();
        ats.dedup();
        assert!(t.changes.len() <= ats.len() * (MAX_SPEAKING_CHANGES + 1));
        let dominant = t.detector.dominant().unwrap();
        assert_eq!(t.detector.removed(dominant), Some(Change::Dominant(None)));
        assert_eq!(t.detector.removed(dominant), None);
        t.run(EVALUATE_EVERY.as_millis() as u64, Some(20), Some(20));
        assert!(
            t.detector.dominant().is_some(),
            "the other speaker takes over"
        );
    }
}
