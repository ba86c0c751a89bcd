//! `loadtest capacity --mode mcu`: rooms of MCU participants added room by room on a server
//! pinned to one core, until the mix gives out. Each participant makes one sendrecv
//! connection (`POST /mix/{channel}`, or a Janus AudioBridge join with `--compare-janus`),
//! sends a real encoded clip (`clip`) and receives the mix. A step fails on loss or delay of
//! the received mix (`--max-loss`, `--max-p99-ms`, the delay measured against the mix's own
//! RTP clock, see `net::Delay`), or when the mixer falls behind: fewer than 45 mixed audio
//! packets a second per participant, or composite frames below 80% of the canvas rate.

use std::time::Duration;

use serde::Serialize;

use crate::clip::Clip;
use crate::generator::{MixRoom, Signalling};
use crate::run::{self, Progress, Setup, Sfu, Window};
use crate::{CapacityArgs, Error, janus, report};

/// Mixed audio below this many packets per second per participant: the mixer is behind
/// (it sends 50 at 20 ms).
const MIN_AUDIO_PPS: f64 = 45.0;
/// Composite frames below this share of the canvas rate: the mixer is behind.
const MIN_FRAME_SHARE: f64 = 0.8;
/// The clip participants send: a camera's 360p (the default canvas's size).
const CLIP_SIZE: (u32, u32) = (640, 360);

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub participants: usize,
    pub rooms: usize,
    pub joined: bool,
    pub loss: f64,
    pub p99_delay_ms: Option<f64>,
    pub audio_pps_per_participant: f64,
    pub video_fps_per_participant: f64,
    pub server_cpu_cores: Option<f64>,
    /// Switchyard's MCU thread and media worker, of `server_cpu_cores` (where the cost is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcu_thread_cores: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_cores: Option<f64>,
    /// Server CPU per participant, in percent of a core.
    pub cpu_percent_per_participant: Option<f64>,
    pub generator_net_cpu: f64,
    pub generator_cpu_cores: Option<f64>,
    /// The most overdue media packet the generator sent in the last second, in ms.
    pub generator_send_lag_ms: f64,
    pub generator_saturated: bool,
}

/// The result of one server's ramp.
#[derive(Debug, Clone, Serialize)]
pub struct McuCapacity {
    pub sfu: String,
    pub room_size: usize,
    /// Participants per room sending the tone; the others send silence.
    pub talkers_per_room: usize,
    pub audio_only: bool,
    /// The canvas rate composite frames were held to (video only).
    pub canvas_fps: Option<u32>,
    /// Sustained MCU connections on the one server core.
    pub participants_per_core: usize,
    pub cpu_percent_per_participant: Option<f64>,
    pub stopped_because: String,
    pub generator_saturated: bool,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub janus: Option<Box<McuCapacity>>,
    /// With --compare-janus: Switchyard's participants per core over Janus's (when Janus held
    /// no step: over the first step's size, a lower bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants_ratio: Option<f64>,
    /// With --compare-janus: Janus's CPU per participant over Switchyard's, at the largest
    /// step both held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ratio: Option<f64>,
}

pub async fn capacity(a: &CapacityArgs) -> Result<bool, Error> {
    if a.compare_janus && !a.audio_only {
        return Err(Error::JanusMixIsAudio);
    }
    let (width, height) = CLIP_SIZE;
    let clip = Clip::encode(width, height, !a.audio_only).map_err(Error::Clip)?;
    let canvas_fps = (!a.audio_only).then(|| a.canvas_fps.unwrap_or(30));
    let mut result = {
        let setup = Setup::new(&a.target, Sfu::Switchyard, Signalling::Whip).await?;
        setup.generator.set_clip(clip.clone());
        ramp(a, &setup, canvas_fps).await?
    };
    if a.compare_janus {
        // The Switchyard server is stopped (its Setup dropped) before Janus is loaded.
        let setup = Setup::new(&a.target, Sfu::Janus, Signalling::Whip).await?;
        setup.generator.set_clip(clip);
        let janus = ramp(a, &setup, None).await?;
        result.participants_ratio = Some(
            result.participants_per_core as f64
                / janus.participants_per_core.max(a.room).max(1) as f64,
        );
        result.cpu_ratio = cpu_ratio(&result, &janus);
        eprintln!(
            "\nSwitchyard/Janus AudioBridge in this run: {} x the participants per core, {} x less CPU per participant",
            result
                .participants_ratio
                .map_or("-".into(), |v| format!("{v:.1}")),
            result.cpu_ratio.map_or("-".into(), |v| format!("{v:.1}")),
        );
        result.janus = Some(Box::new(janus));
    }
    if a.target.json {
        report::print_json(&result);
    }
    Ok(result.participants_per_core > 0)
}

/// Janus's CPU per participant over Switchyard's at the largest step both held.
fn cpu_ratio(switchyard: &McuCapacity, janus: &McuCapacity) -> Option<f64> {
    let held = |c: &McuCapacity, n: usize| {
        c.steps
            .iter()
            .take_while(|s| s.participants <= c.participants_per_core)
            .find(|s| s.participants == n)
            .and_then(|s| s.cpu_percent_per_participant)
    };
    let n = switchyard
        .steps
        .iter()
        .rev()
        .map(|s| s.participants)
        .find(|&n| held(switchyard, n).is_some() && held(janus, n).is_some())?;
    match (held(janus, n), held(switchyard, n)) {
        (Some(j), Some(s)) if s > 0.0 => Some(j / s),
        _ => None,
    }
}

/// Adds `--rooms-per-step` rooms of `--room` participants per step until a step fails.
async fn ramp(
    a: &CapacityArgs,
    setup: &Setup,
    canvas_fps: Option<u32>,
) -> Result<McuCapacity, Error> {
    let g = setup.generator.clone();
    let talkers = a.talkers.unwrap_or(a.room).min(a.room);
    eprintln!(
        "capacity (MCU) on {}: rooms of {} participants ({talkers} talking; {}), +{} room(s) per step up to {} participants, {:.0} s per step; stop at loss > {:.1}%, delay p99 > {} ms, mixed audio < {MIN_AUDIO_PPS} pps{}",
        setup.sfu(),
        a.room,
        if a.audio_only {
            "Opus tone".to_string()
        } else {
            format!("VP8 {}x{} + Opus tone", CLIP_SIZE.0, CLIP_SIZE.1)
        },
        a.rooms_per_step,
        a.max,
        a.step_seconds,
        a.max_loss * 100.0,
        a.max_p99_ms,
        canvas_fps.map_or(String::new(), |f| format!(
            " or composite < {:.0} fps",
            f64::from(f) * MIN_FRAME_SHARE
        )),
    );
    // Janus: one control session that makes the AudioBridge rooms (kept for the run).
    let control = match g.target() {
        crate::generator::Target::Janus { url, .. } => {
            let session = janus::Session::connect(url)
                .await
                .map_err(Error::JanusRoom)?;
            let handle = session
                .attach(janus::AUDIOBRIDGE)
                .await
                .map_err(Error::JanusRoom)?;
            Some((session, handle))
        }
        crate::generator::Target::Switchyard { .. } => None,
    };
    let mut progress = Progress::new(setup);
    let mut steps: Vec<Step> = Vec::new();
    let mut sustained: Option<Step> = None;
    let (mut participants, mut rooms) = (0, 0);
    let gap = Duration::from_secs_f64(1.0 / a.ramp.max(0.1));
    let stopped_because = loop {
        for _ in 0..a.rooms_per_step {
            let room = match &control {
                Some((_, handle)) => MixRoom::AudioBridge(
                    handle
                        .create_audiobridge_room()
                        .await
                        .map_err(Error::JanusRoom)?,
                ),
                None => MixRoom::Channel(format!("{}-{rooms}", g.channel())),
            };
            for i in 0..a.room {
                g.spawn_mix(participants, room.clone(), i < talkers);
                participants += 1;
                tokio::time::sleep(gap).await;
            }
            rooms += 1;
        }
        let label = format!("{participants} participants in {rooms} rooms");
        let timeout = Duration::from_secs(10) + Duration::from_secs_f64(participants as f64 / 50.0);
        let joined = run::wait_joined(setup, &mut progress, participants, timeout, &label).await;
        // Let keyframe waits and join bursts pass before measuring.
        progress.next(setup, &label).await;
        let w = run::measure(setup, &mut progress, a.step_seconds, &label).await;
        let step = step(participants, rooms, joined, &w, setup.sfu());
        steps.push(step.clone());
        let min_fps = canvas_fps.map(|f| f64::from(f) * MIN_FRAME_SHARE);
        let why = if !joined {
            Some(format!(
                "{participants} participants did not all receive the mix within {timeout:?}"
            ))
        } else if w.end.auth_failures + w.end.replayed > 0 {
            Some(format!(
                "SRTP at {participants} participants: {} packets failed authentication, {} repeated an index",
                w.end.auth_failures, w.end.replayed
            ))
        } else if step.generator_saturated {
            Some(format!(
                "the generator saturated at {participants} participants: the run is invalid beyond this"
            ))
        } else if step.loss > a.max_loss {
            Some(format!(
                "loss {:.2}% at {participants} participants",
                step.loss * 100.0
            ))
        } else if step.p99_delay_ms.is_some_and(|p| p > a.max_p99_ms) {
            Some(format!(
                "delay p99 {:.1} ms at {participants} participants",
                step.p99_delay_ms.unwrap_or_default()
            ))
        } else if step.audio_pps_per_participant < MIN_AUDIO_PPS {
            Some(format!(
                "the mixer fell behind at {participants} participants: {:.1} mixed audio packets/s each",
                step.audio_pps_per_participant
            ))
        } else {
            min_fps
                .filter(|&m| step.video_fps_per_participant < m)
                .map(|min| {
                    format!(
                        "the mixer fell behind at {participants} participants: {:.1} composite frames/s each (< {min:.0})",
                        step.video_fps_per_participant
                    )
                })
        };
        if let Some(why) = why {
            break why;
        }
        sustained = Some(step);
        if participants >= a.max {
            break format!("reached --max {}", a.max);
        }
    };
    g.stop();
    let result = McuCapacity {
        sfu: setup.sfu().into(),
        room_size: a.room,
        talkers_per_room: talkers,
        audio_only: a.audio_only || setup.sfu() == "janus",
        canvas_fps,
        participants_per_core: sustained.as_ref().map_or(0, |s| s.participants),
        cpu_percent_per_participant: sustained
            .as_ref()
            .and_then(|s| s.cpu_percent_per_participant),
        generator_saturated: steps.iter().any(|s| s.generator_saturated),
        stopped_because,
        steps,
        janus: None,
        participants_ratio: None,
        cpu_ratio: None,
    };
    print(&result);
    Ok(result)
}

fn step(participants: usize, rooms: usize, joined: bool, w: &Window, sfu: &str) -> Step {
    let cores = w.server_cpu.as_ref().map(|c| c.total);
    let thread = |prefix: &str| {
        w.server_cpu
            .as_ref()
            .filter(|_| sfu == "switchyard")
            .map(|c| c.matching(prefix))
    };
    let mix = w.interval.mix.as_ref();
    Step {
        participants,
        rooms,
        joined,
        loss: w.interval.loss,
        p99_delay_ms: w.interval.latency_p99_ms,
        audio_pps_per_participant: mix.map_or(0.0, |m| m.audio_pps_per_participant),
        video_fps_per_participant: mix.map_or(0.0, |m| m.video_fps_per_participant),
        server_cpu_cores: cores,
        mcu_thread_cores: thread("sy-mcu"),
        worker_cores: thread("sy-worker"),
        cpu_percent_per_participant: cores.map(|c| c * 100.0 / participants.max(1) as f64),
        generator_net_cpu: w.interval.generator_net_cpu,
        generator_cpu_cores: w.generator_cpu,
        generator_send_lag_ms: w.end.send_lag.as_secs_f64() * 1000.0,
        generator_saturated: w.generator_saturated(),
    }
}

fn print(c: &McuCapacity) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    eprintln!(
        "\n{} MCU ({}rooms of {}): {} participant connections per core, {}% of a core per participant",
        c.sfu,
        if c.audio_only { "audio only, " } else { "" },
        c.room_size,
        c.participants_per_core,
        f(c.cpu_percent_per_participant),
    );
    eprintln!("  stopped: {}", c.stopped_because);
    eprintln!(
        "  participants  rooms  loss%  p99 ms  audio pps  video fps  server cpu (mcu, worker)  %core/part  gen net cpu  gen cpu  lag ms"
    );
    for s in &c.steps {
        eprintln!(
            "  {:>12}  {:>5}  {:>5.2}  {:>6}  {:>9.1}  {:>9.1}  {:>24}  {:>10}  {:>11.2}  {:>7}  {:>6.1}{}",
            s.participants,
            s.rooms,
            s.loss * 100.0,
            f(s.p99_delay_ms),
            s.audio_pps_per_participant,
            s.video_fps_per_participant,
            match (s.mcu_thread_cores, s.worker_cores) {
                (Some(m), Some(w)) => format!("{} ({m:.2}, {w:.2})", f(s.server_cpu_cores)),
                _ => f(s.server_cpu_cores),
            },
            f(s.cpu_percent_per_participant),
            s.generator_net_cpu,
            f(s.generator_cpu_cores),
            s.generator_send_lag_ms,
            if s.generator_saturated {
                "  (generator saturated)"
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(sustained: usize, steps: &[(usize, f64)]) -> McuCapacity {
        McuCapacity {
            sfu: String::new(),
            room_size: 4,
            talkers_per_room: 4,
            audio_only: true,
            canvas_fps: None,
            participants_per_core: sustained,
            cpu_percent_per_participant: None,
            stopped_because: String::new(),
            generator_saturated: false,
            steps: steps
                .iter()
                .map(|&(n, cpu)| Step {
                    participants: n,
                    rooms: n / 4,
                    joined: true,
                    loss: 0.0,
                    p99_delay_ms: None,
                    audio_pps_per_participant: 50.0,
                    video_fps_per_participant: 0.0,
                    server_cpu_cores: None,
                    mcu_thread_cores: None,
                    worker_cores: None,
                    cpu_percent_per_participant: Some(cpu),
                    generator_net_cpu: 0.0,
                    generator_cpu_cores: None,
                    generator_send_lag_ms: 0.0,
                    generator_saturated: false,
                })
                .collect(),
            janus: None,
            participants_ratio: None,
            cpu_ratio: None,
        }
    }

    #[test]
    fn cpu_ratio_compares_the_largest_step_both_held() {
        let s = capacity(12, &[(4, 1.0), (8, 0.8), (12, 0.7), (16, 0.9)]);
        let j = capacity(8, &[(4, 4.0), (8, 3.2), (12, 9.0)]);
        assert_eq!(cpu_ratio(&s, &j), Some(4.0));
        assert_eq!(cpu_ratio(&s, &capacity(0, &[(4, 4.0)])), None);
    }
}
