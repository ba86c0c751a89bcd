//! What the admin API administers in `switchyard all-in-one`: one process that is its own only
//! media server and keeps its channels in its own rooms, with no registry or presence.

use std::sync::Arc;

use switchyard_controlplane::session::AppState;

use super::{ChannelView, ClientView, ConnectionView};
use crate::presence::ParticipantEntry;
use crate::registry::MediaServerRecord;

/// The id the all-in-one's one media server has in `/media-servers`.
pub const SERVER_ID: &str = "all-in-one";

pub struct AllInOne {
    pub(super) state: Arc<AppState>,
    region: String,
}

impl AllInOne {
    pub fn new(state: Arc<AppState>, region: String) -> AllInOne {
        AllInOne { state, region }
    }

    /// Its record in the shape a cluster's registry has, so one client reads both. It never
    /// drains and has no capacity threshold (nowhere else to place sessions) and no cluster
    /// API (`clusterAddress` is empty).
    pub(super) fn record(&self) -> MediaServerRecord {
        let transports = self.state.transport_count();
        MediaServerRecord {
            id: SERVER_ID.to_string(),
            region: self.region.clone(),
            available: true,
            active: transports > 0,
            over_capacity: false,
            used_capacity: 0.0,
            draining: false,
            ip_addresses: self
                .state
                .announce
                .iter()
                .map(|ip| ip.to_string())
                .collect(),
            public_ip_address: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            core_count: u32::try_from(self.state.media.workers()).unwrap_or(u32::MAX),
            cluster_address: String::new(),
            turn_urls: self
                .state
                .turn
                .as_ref()
                .map(|t| t.urls().to_vec())
                .unwrap_or_default(),
            checks: self.state.metrics.checks.list(),
        }
    }

    /// The channels with anyone in them, by name.
    pub(super) fn channels(&self) -> Vec<ChannelView> {
        let mut out: Vec<ChannelView> = Vec::new();
        for p in self.state.participants() {
            let mut connections: Vec<ConnectionView> = p
                .publications
                .into_iter()
                .map(|(id, tracks)| ConnectionView::Publication {
                    id,
                    server: SERVER_ID.to_string(),
                    tracks,
                })
                .collect();
            connections.extend(p.subscriptions.into_iter().map(|(id, publication)| {
                ConnectionView::Subscription {
                    id,
                    publication,
                    server: SERVER_ID.to_string(),
                }
            }));
            let client = ClientView {
                id: p.id,
                // Its clients' sockets are on this process, which is its own gateway.
                entry: ParticipantEntry {
                    user: p.user,
                    gateway: SERVER_ID.to_string(),
                    session: p.session,
                },
                connections,
            };
            match out.last_mut() {
                Some(c) if c.id == p.channel => c.clients.push(client),
                _ => out.push(ChannelView {
                    id: p.channel,
                    clients: vec![client],
                }),
            }
        }
        out
    }
}
