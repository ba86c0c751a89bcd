//! `loadtest capacity`: one 720p + audio publisher, subscribers added step by step on a server
//! pinned to one core, until loss or latency give out. The last step that held is the capacity.
//! With `--simulcast` the publisher sends three layers and subscribers take 180, 360 and 720
//! lines in turn.

use std::time::Duration;

use serde::Serialize;

use crate::generator::{Media, Signalling};
use crate::report;
use crate::run::{self, Progress, Setup, Sfu, Window};
use crate::stats::LayerRate;
use crate::traffic;
use crate::{CapacityArgs, Error};

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub subscribers: usize,
    pub joined: bool,
    pub forwarded_pps: f64,
    pub loss: f64,
    pub p99_latency_ms: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub generator_net_cpu: f64,
    pub generator_cpu_cores: Option<f64>,
    pub generator_saturated: bool,
    /// With --simulcast: what the subscribers of each layer received.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRate>,
}

/// The result: the interface `scripts/bench.sh` reads.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub sfu: String,
    pub io_backend: Option<String>,
    /// sync, whip, or janus-http.
    pub signalling: &'static str,
    /// The publisher sent three simulcast layers and subscribers took mixed ones.
    pub simulcast: bool,
    /// The server's media workers, one per core.
    pub server_workers: usize,
    /// Sustained 720p + audio subscriber connections (with simulcast: a third each at 180,
    /// 360 and 720 lines): the last step that held.
    pub subscribers: usize,
    /// `subscribers` over the server's workers.
    pub subscribers_per_core: usize,
    /// Packets/s the server forwarded at that step, over its workers.
    pub forwarded_pps_per_core: f64,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub loss: f64,
    pub p99_latency_ms: Option<f64>,
    /// The step that failed, and why (or that the ramp reached --max).
    pub stopped_because: String,
    pub generator_saturated: bool,
    pub steps: Vec<Step>,
    /// With --compare-janus: the same ramp against Janus, and the ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub janus: Option<Box<Capacity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratios: Option<Ratios>,
}

/// Switchyard against Janus, measured in the same run on the same core.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Janus's CPU per forwarded packet over Switchyard's, at `at_subscribers` (higher:
    /// Switchyard cheaper).
    pub cpu_per_packet: Option<f64>,
    /// The step compared: the largest that both held, else the first step of each.
    pub at_subscribers: Option<usize>,
    /// Switchyard's sustained subscribers per core over Janus's; when Janus held no step,
    /// Switchyard's over the first step's size (a lower bound).
    pub subscribers: Option<f64>,
}

/// Compares CPU per packet at the same load: the largest step both held (else each one's first
/// step), so neither number comes from a saturated server unless both are.
fn ratios(switchyard: &Capacity, janus: &Capacity) -> Ratios {
    let held = |c: &Capacity, n: usize| {
        c.steps
            .iter()
            .take_while(|s| s.subscribers <= c.subscribers)
            .find(|s| s.subscribers == n)
            .and_then(|s| s.cpu_us_per_forwarded_packet)
    };
    let common = switchyard
        .steps
        .iter()
        .rev()
        .map(|s| s.subscribers)
        .find(|&n| held(switchyard, n).is_some() && held(janus, n).is_some());
    let (at, s, j) = match common {
        Some(n) => (Some(n), held(switchyard, n), held(janus, n)),
        None => (
            janus.steps.first().map(|s| s.subscribers),
            switchyard
                .steps
                .first()
                .and_then(|s| s.cpu_us_per_forwarded_packet),
            janus
                .steps
                .first()
                .and_then(|s| s.cpu_us_per_forwarded_packet),
        ),
    };
    let lower_bound = janus.steps.first().map_or(1, |s| s.subscribers.max(1));
    Ratios {
        cpu_per_packet: match (j, s) {
            (Some(j), Some(s)) if s > 0.0 => Some(j / s),
            _ => None,
        },
        at_subscribers: at,
        subscribers: Some(
            switchyard.subscribers_per_core as f64
                / janus.subscribers_per_core.max(lower_bound) as f64,
        ),
    }
}

pub async fn capacity(a: CapacityArgs) -> Result<bool, Error> {
    let simulcast = a.simulcast.simulcast;
    if simulcast && a.compare_janus {
        return Err(Error::SimulcastNeedsSync);
    }
    let signalling = run::default_signalling(&a.target, a.target.sfu, simulcast, Signalling::Whip)?;
    let mut result = {
        let setup = Setup::new(&a.target, a.target.sfu, signalling).await?;
        ramp(&a, &setup).await?
    };
    if a.compare_janus && a.target.sfu != Sfu::Janus {
        // The Switchyard server is stopped (its Setup dropped) before Janus is loaded.
        let setup = Setup::new(&a.target, Sfu::Janus, Signalling::Whip).await?;
        let janus = ramp(&a, &setup).await?;
        result.ratios = Some(ratios(&result, &janus));
        result.janus = Some(Box::new(janus));
    }
    if let Some(r) = &result.ratios {
        eprintln!(
            "\nSwitchyard/Janus in this run: {} x less CPU per forwarded packet (at {} subscribers), {} x the subscribers per core",
            r.cpu_per_packet.map_or("-".into(), |v| format!("{v:.1}")),
            r.at_subscribers.map_or("-".into(), |v| v.to_string()),
            r.subscribers.map_or("-".into(), |v| format!("{v:.1}")),
        );
    }
    if a.target.json {
        report::print_json(&result);
    }
    Ok(result.subscribers > 0)
}

/// Ramps subscribers on `setup`'s server until a step fails.
async fn ramp(a: &CapacityArgs, setup: &Setup) -> Result<Capacity, Error> {
    let g = setup.generator.clone();
    let simulcast = a.simulcast.simulcast;
    let media = Media {
        video: true,
        audio: true,
        simulcast,
    };
    eprintln!(
        "capacity: 1 publisher ({} + Opus, {:.0} pps), +{} subscribers per step up to {}, {:.0} s per step; stop at loss > {:.1}% or p99 > {} ms",
        if simulcast {
            "VP8 simulcast 180p/360p/720p, subscribers on each in turn"
        } else {
            "720p VP8 ~1.5 Mbps"
        },
        traffic::packets_per_second(true, simulcast, true),
        a.step,
        a.max,
        a.step_seconds,
        a.max_loss * 100.0,
        a.max_p99_ms
    );
    let mut progress = Progress::new(setup);
    run::ramp(&g, 0, 1, 1.0, Some(media), false).await;
    if !run::wait_joined(
        setup,
        &mut progress,
        1,
        Duration::from_secs(15),
        "publisher",
    )
    .await
    {
        return Err(Error::PublisherNotConnected);
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut sustained: Option<Step> = None;
    let mut target = 0;
    let stopped_because = loop {
        let from = target;
        target = (target + a.step).min(a.max);
        run::ramp(&g, 1 + from, 1 + target, a.ramp, None, true).await;
        let label = format!("{target} subscribers");
        let timeout = Duration::from_secs(10) + Duration::from_secs_f64(a.step as f64 / 50.0);
        let joined = run::wait_joined(setup, &mut progress, 1 + target, timeout, &label).await;
        progress.next(setup, &label).await;
        let w = run::measure(setup, &mut progress, a.step_seconds, &label).await;
        let step = step(target, joined, &w);
        steps.push(step.clone());
        let why = if !joined {
            Some(format!(
                "{target} subscribers did not all receive media within {timeout:?}"
            ))
        } else if w.end.auth_failures + w.end.replayed > 0 {
            // Counted from the start: a failure while this step's subscribers joined counts.
            Some(format!(
                "SRTP at {target} subscribers: {} packets from the server failed authentication, {} repeated an index",
                w.end.auth_failures, w.end.replayed
            ))
        } else if step.generator_saturated {
            Some(format!(
                "the generator saturated at {target} subscribers: the run is invalid beyond this"
            ))
        } else if step.loss > a.max_loss {
            Some(format!(
                "loss {:.2}% at {target} subscribers",
                step.loss * 100.0
            ))
        } else if step.p99_latency_ms.is_some_and(|p| p > a.max_p99_ms) {
            Some(format!(
                "latency p99 {:.1} ms at {target} subscribers",
                step.p99_latency_ms.unwrap_or_default()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            break why;
        }
        sustained = Some(step);
        if target >= a.max {
            break format!("reached --max {}", a.max);
        }
    };
    g.stop();
    let best = sustained.clone();
    let workers = setup.server_workers.max(1);
    let subscribers = best.as_ref().map_or(0, |s| s.subscribers);
    let result = Capacity {
        sfu: setup.sfu().into(),
        io_backend: setup.io_backend.clone(),
        signalling: setup.signalling_name(),
        simulcast,
        server_workers: workers,
        subscribers,
        subscribers_per_core: subscribers / workers,
        forwarded_pps_per_core: best.as_ref().map_or(0.0, |s| s.forwarded_pps) / workers as f64,
        cpu_us_per_forwarded_packet: best.as_ref().and_then(|s| s.cpu_us_per_forwarded_packet),
        loss: best.as_ref().map_or(0.0, |s| s.loss),
        p99_latency_ms: best.as_ref().and_then(|s| s.p99_latency_ms),
        generator_saturated: steps.iter().any(|s| s.generator_saturated),
        stopped_because,
        steps,
        janus: None,
        ratios: None,
    };
    print(&result);
    Ok(result)
}

fn step(subscribers: usize, joined: bool, w: &Window) -> Step {
    Step {
        subscribers,
        joined,
        forwarded_pps: w.interval.packets_in_per_s,
        loss: w.interval.loss,
        p99_latency_ms: w.interval.latency_p99_ms,
        server_cpu_cores: w.server_cpu.as_ref().map(|c| c.total),
        cpu_us_per_forwarded_packet: w.cpu_us_per_forwarded_packet(),
        generator_net_cpu: w.interval.generator_net_cpu,
        generator_cpu_cores: w.generator_cpu,
        generator_saturated: w.generator_saturated(),
        layers: w.interval.layers.clone(),
    }
}

fn print(c: &Capacity) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let spread = if c.server_workers > 1 {
        format!(
            "on {} workers ({} per core)",
            c.server_workers, c.subscribers_per_core
        )
    } else {
        "per core".into()
    };
    eprintln!(
        "\n{} ({} backend): {} {} subscriber connections {spread}, {:.0} forwarded packets/s per core, {} µs CPU per forwarded packet, loss {:.3}%, p99 {} ms",
        c.sfu,
        c.io_backend.as_deref().unwrap_or("?"),
        c.subscribers,
        if c.simulcast {
            "simulcast (180p, 360p, 720p in turn)"
        } else {
            "720p"
        },
        c.forwarded_pps_per_core,
        f(c.cpu_us_per_forwarded_packet),
        c.loss * 100.0,
        f(c.p99_latency_ms),
    );
    eprintln!("  stopped: {}", c.stopped_because);
    if let Some(s) = c.steps.iter().rfind(|s| s.subscribers == c.subscribers) {
        for l in &s.layers {
            eprintln!(
                "  layer {} (maxHeight {}): {} subscribers received {:.1} video packets/s each (the layer sends {:.1})",
                l.rid,
                l.max_height.map_or("none".into(), |h| h.to_string()),
                l.subscribers,
                l.video_pps_per_subscriber,
                l.layer_pps
            );
        }
    }
    eprintln!("  subscribers  fwd pps  loss%   p99 ms  server cpu  µs/pkt  gen net cpu");
    for s in &c.steps {
        eprintln!(
            "  {:>11}  {:>7.0}  {:>5.2}  {:>7}  {:>10}  {:>6}  {:>11.2}{}",
            s.subscribers,
            s.forwarded_pps,
            s.loss * 100.0,
            f(s.p99_latency_ms),
            f(s.server_cpu_cores),
            f(s.cpu_us_per_forwarded_packet),
            s.generator_net_cpu,
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

    fn capacity(sustained: usize, steps: &[(usize, f64)]) -> Capacity {
        Capacity {
            sfu: String::new(),
            io_backend: None,
            signalling: "whip",
            simulcast: false,
            server_workers: 1,
            subscribers: sustained,
            subscribers_per_core: sustained,
            forwarded_pps_per_core: 0.0,
            cpu_us_per_forwarded_packet: None,
            loss: 0.0,
            p99_latency_ms: None,
            stopped_because: String::new(),
            generator_saturated: false,
            steps: steps
                .iter()
                .map(|&(n, us)| Step {
                    subscribers: n,
                    joined: true,
                    forwarded_pps: 0.0,
                    loss: 0.0,
                    p99_latency_ms: None,
                    server_cpu_cores: None,
                    cpu_us_per_forwarded_packet: Some(us),
                    generator_net_cpu: 0.0,
                    generator_cpu_cores: None,
                    generator_saturated: false,
                    layers: Vec::new(),
                })
                .collect(),
            janus: None,
            ratios: None,
        }
    }

    #[test]
    fn ratios_compare_the_largest_step_both_held() {
        let s = capacity(300, &[(50, 12.0), (100, 10.0), (300, 9.0), (350, 9.0)]);
        let j = capacity(100, &[(50, 60.0), (100, 50.0), (150, 70.0)]);
        let r = ratios(&s, &j);
        assert_eq!(r.at_subscribers, Some(100));
        assert_eq!(r.cpu_per_packet, Some(5.0));
        assert_eq!(r.subscribers, Some(3.0));
    }

    #[test]
    fn janus_holding_nothing_compares_first_steps_and_bounds_the_ratio() {
        let s = capacity(200, &[(50, 12.0), (100, 10.0)]);
        let j = capacity(0, &[(50, 72.0)]);
        let r = ratios(&s, &j);
        assert_eq!(r.at_subscribers, Some(50));
        assert_eq!(r.cpu_per_packet, Some(6.0));
        assert_eq!(r.subscribers, Some(4.0));
    }
}
