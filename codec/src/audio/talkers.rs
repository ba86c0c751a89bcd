//! Who is talking: per-source voice activity with hysteresis, and the choice of the few loudest
//! talkers the mixer mixes.
//!
//! Levels are RFC 6464's: -dBov, 0 the loudest, 127 silence. A packet's level comes from its
//! audio-level header extension when the sender set one (cheap, and the sender measured it
//! before coding), else from the energy of the decoded frame ([`level_of`]).
//!
//! A source turns active after [`TalkerConfig::on_frames`] frames in a row at or above the
//! threshold (one loud click is not a talker) and inactive after [`TalkerConfig::hangover_ms`]
//! without one (the pauses between words do not cut a talker out). Of the active sources the
//! [`TalkerConfig::max_talkers`] loudest are mixed, with a bonus for those already mixed so that
//! two similar voices do not swap places every frame.

/// Talker detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkerConfig {
    /// The most sources mixed at once. Three voices at once is already more than a listener
    /// follows; a fourth mostly adds noise.
    pub max_talkers: usize,
    /// The level (-dBov) a frame must reach, i.e. be at or below, to count as loud.
    pub threshold: u8,
    /// Loud frames in a row that make a source active.
    pub on_frames: u32,
    /// Quiet time after which an active source stops being active, ms.
    pub hangover_ms: u32,
}

impl Default for TalkerConfig {
    fn default() -> Self {
        Self {
            max_talkers: 3,
            // Speech sits around -20 to -35 dBov, room noise below -50.
            threshold: 45,
            on_frames: 2,
            hangover_ms: 500,
        }
    }
}

/// How much louder (in dB) a newcomer must be than a current talker to take its place.
const STICKY_DB: f32 = 6.0;

/// The level (-dBov, 0..=127) of a frame of 16-bit samples, from its RMS against full scale.
pub fn level_of(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / pcm.len() as f64).sqrt();
    if rms < 1.0 {
        return 127;
    }
    let dbov = 20.0 * (rms / 32768.0).log10();
    (-dbov).clamp(0.0, 127.0) as u8
}

/// One source's voice activity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Activity {
    loud_run: u32,
    quiet_ms: u32,
    active: bool,
    /// Smoothed loudness, dB above silence (127 - level), for ranking.
    loudness: f32,
}

impl Activity {
    /// Feeds one frame's level.
    pub fn update(&mut self, level: u8, frame_ms: u32, config: &TalkerConfig) {
        let loudness = f32::from(127 - level.min(127));
        // About 100 ms of smoothing: fast enough to follow turns, slow enough not to follow
        // syllables.
        self.loudness += (loudness - self.loudness) * 0.2;
        if level <= config.threshold {
            self.loud_run += 1;
            self.quiet_ms = 0;
            if self.loud_run >= config.on_frames {
                self.active = true;
            }
        } else {
            self.loud_run = 0;
            self.quiet_ms = self.quiet_ms.saturating_add(frame_ms);
            if self.quiet_ms >= config.hangover_ms {
                self.active = false;
            }
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    pub fn loudness(&self) -> f32 {
        self.loudness
    }
}

/// Chooses the talkers. Holds its ranking buffer so that choosing allocates nothing.
#[derive(Debug, Default)]
pub struct TalkerSelector {
    ranked: Vec<(f32, usize)>,
}

impl TalkerSelector {
    /// Marks in `talker` (indexed like `activity`) the at most `max` loudest active sources;
    /// `talker` holds the previous choice on entry, which earns a bonus.
    pub fn select(&mut self, activity: &[Activity], talker: &mut [bool], max: usize) {
        self.ranked.clear();
        for (index, (a, was)) in activity.iter().zip(talker.iter()).enumerate() {
            if a.active() {
                let bonus = if *was { STICKY_DB } else { 0.0 };
                self.ranked.push((a.loudness() + bonus, index));
            }
        }
        // Loudest first; ties by index, so the choice is deterministic.
        self.ranked
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        talker.fill(false);
        for &(_, index) in self.ranked.iter().take(max) {
            talker[index] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_pcm() {
        assert_eq!(level_of(&[]), 127);
        assert_eq!(level_of(&[0; 960]), 127);
        assert_eq!(level_of(&[i16::MAX; 960]), 0);
        // A full-scale sine is -3 dBov; one at a tenth of that -23.
        let sine: Vec<i16> = (0..960)
            .map(|i| (3276.0 * (i as f64 * 0.1).sin()) as i16)
            .collect();
        assert!((22..=24).contains(&level_of(&sine)));
    }

    #[test]
    fn hysteresis() {
        let config = TalkerConfig::default();
        let mut a = Activity::default();
        a.update(20, 20, &config);
        assert!(!a.active(), "one loud frame is not a talker");
        a.update(127, 20, &config);
        a.update(20, 20, &config);
        assert!(!a.active(), "the run must be unbroken");
        a.update(20, 20, &config);
        assert!(a.active());
        for _ in 0..24 {
            a.update(127, 20, &config);
            assert!(a.active(), "pauses shorter than the hangover keep a talker");
        }
        a.update(127, 20, &config);
        assert!(!a.active());
    }

    #[test]
    fn loudest_win_and_talkers_are_sticky() {
        let config = TalkerConfig::default();
        let mut activity = [Activity::default(); 5];
        for _ in 0..20 {
            for (i, a) in activity.iter_mut().enumerate() {
                // Source 0 quiet, then louder and louder; 4 just below 3.
                let level = [127, 30, 25, 20, 22][i];
                a.update(level, 20, &config);
            }
        }
        let mut talker = [false; 5];
        let mut selector = TalkerSelector::default();
        selector.select(&activity, &mut talker, 3);
        assert_eq!(talker, [false, false, true, true, true]);
        // Source 1 gets a little louder than 2: not enough to take its seat.
        for _ in 0..20 {
            activity[1].update(24, 20, &config);
        }
        selector.select(&activity, &mut talker, 3);
        assert_eq!(talker, [false, false, true, true, true]);
        // Much louder: it does.
        for _ in 0..20 {
            activity[1].update(5, 20, &config);
        }
        selector.select(&activity, &mut talker, 3);
        assert_eq!(talker, [false, true, false, true, true]);
    }
}
