//! `switchyard loadtest peers`: one browserless MCU participant in each of many channels of a
//! running server, held until the generator is stopped. `scripts/sip_bench.py` puts one in
//! each SIP call's channel, so every call has someone on the channel side who hears the
//! caller (through the mix) and is heard (in the caller's mix-minus), as the benchmark
//! asks.

use std::time::Duration;

use crate::PeersArgs;
use crate::clip::Clip;
use crate::error::Error;
use crate::generator::{MixRoom, Signalling};
use crate::run::{self, Progress, Setup, Sfu};

/// Audio only: the clip's size does not matter, its Opus tone does.
const CLIP_SIZE: (u32, u32) = (160, 90);

/// Starts `--count` participants in channels `--prefix`1..=count, says when all receive
/// their mix, and keeps them until SIGTERM or Ctrl-C.
pub async fn peers(a: &PeersArgs) -> Result<bool, Error> {
    let clip = Clip::encode(CLIP_SIZE.0, CLIP_SIZE.1, false).map_err(Error::Clip)?;
    let setup = Setup::new(&a.target, Sfu::Switchyard, Signalling::Whip).await?;
    setup.generator.set_clip(clip);
    let gap = Duration::from_secs_f64(1.0 / a.ramp.max(0.1));
    for k in 1..=a.count {
        let room = MixRoom::Channel(format!("{}{k}", a.prefix));
        setup.generator.spawn_mix(k, room, a.talking);
        tokio::time::sleep(gap).await;
    }
    let mut progress = Progress::new(&setup);
    let timeout = Duration::from_secs(10) + Duration::from_secs_f64(a.count as f64 / 20.0);
    let label = format!("{} participants", a.count);
    let joined = run::wait_joined(&setup, &mut progress, a.count, timeout, &label).await;
    // The line scripts wait for.
    println!(
        "{}",
        if joined {
            "peers: all receiving"
        } else {
            "peers: not all receiving"
        }
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    setup.generator.stop();
    Ok(joined)
}
