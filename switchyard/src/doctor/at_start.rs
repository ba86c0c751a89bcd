//! The checks of `switchyard doctor` that a process running media (media-server, all-in-one)
//! runs on itself at start: those that need no help from outside. Its own listeners against
//! what it advertises and the TURN certificate are checked at once; the public address as the
//! STUN servers see it is checked in the background with a short timeout, so a slow or dead
//! STUN server never delays serving. Each outcome is logged (a warning or failure with its
//! fix) and recorded in the process's [`HostChecks`], which its registry record, the admin API
//! and `/metrics` show.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_controlplane::checks::HostChecks;
use switchyard_controlplane::config::Config;
use switchyard_controlplane::listeners::Listeners;

use super::plan::Plan;
use super::report::{Check, Status};
use super::{cert, running, stun_check, verdict};
use crate::MediaArgs;

/// How long each STUN server gets: nothing waits for the answer but the record.
const STUN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the immediate checks, and spawns the STUN checks on the current tokio runtime when
/// there are STUN servers (`stun_servers` as the process uses them; without any, the public
/// address is whatever was configured or found, and there is nothing to compare it with).
pub fn run(
    config: &Config,
    media: &MediaArgs,
    stun_servers: &[String],
    listeners: Listeners,
    checks: HostChecks,
) {
    let plan = Plan::new(config, media, stun_servers);
    let mut now = running::checks("(this process)", &listeners, &plan);
    now.extend(cert::check_plan(&plan, &listeners.announce));
    record(&checks, &now);
    if plan.stun_servers.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let found = stun(&plan, &listeners).await;
        record(&checks, &found);
    });
}

/// Whether STUN servers agree, and agree with the announced address: doctor's STUN and public
/// IP checks without the outside probe.
async fn stun(plan: &Plan, listeners: &Listeners) -> Vec<Check> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(plan.bind_ip, 0)).await;
    let answers = match &socket {
        Ok(s) => stun_check::ask(s, &plan.stun_servers, STUN_TIMEOUT).await,
        Err(e) => {
            tracing::warn!("host checks: no socket to ask the STUN servers from: {e}");
            Vec::new()
        }
    };
    let local = socket.ok().and_then(|s| s.local_addr().ok());
    let announced = super::announced(plan, Some(listeners), &answers);
    let seen = stun_check::consensus(&answers);
    vec![
        stun_check::check(&answers, local, false),
        verdict::public_ip(&announced, plan.configured_public, seen, &[], None),
    ]
}

fn record(checks: &HostChecks, found: &[Check]) {
    for c in found {
        let fix = c
            .fix
            .as_ref()
            .map(|f| format!(" (fix: {})", f.text))
            .unwrap_or_default();
        match c.status {
            Status::Pass => tracing::info!("check {}: {}", c.title, c.message),
            Status::Warn => tracing::warn!("check {}: {}{fix}", c.title, c.message),
            Status::Fail => tracing::error!("check {} FAILED: {}{fix}", c.title, c.message),
        }
    }
    checks.record(found.iter().map(Check::host));
}
