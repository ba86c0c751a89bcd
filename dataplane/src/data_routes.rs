//! Where data channel messages go: each publication's data producer, its channels (as its
//! publisher opened them) and the transports subscribed to it. The engine holds one table
//! for its worker; the SCTP work itself belongs to each transport's
//! [`DataChannels`](crate::datachannel::DataChannels).
//!
//! The model is mediasoup's DataProducer / DataConsumer, kept simple: a publication's data
//! channels are one producer; a subscriber receives all of them, each on a channel the SFU
//! opens toward it with DCEP under the publisher's label, ordering and reliability (so the
//! subscriber's page just gets `ondatachannel`, and nothing needs signalling per channel).

use std::collections::HashMap;

use crate::datachannel::ChannelParams;
use crate::spec::ProducerId;

/// A data producer: the channels its transport has open and who receives them.
#[derive(Debug, Default)]
struct DataProducer {
    /// The publisher's transport key; `None` once it left (subscribers may still be there).
    transport: Option<usize>,
    /// (the publisher's stream, the channel), in the order they were opened.
    channels: Vec<(u16, ChannelParams)>,
    /// Subscribers' transport keys.
    subscribers: Vec<usize>,
}

/// The data producers of one worker, by (router key, producer id): producer ids are unique
/// in their router only.
#[derive(Debug, Default)]
pub struct DataRoutes {
    producers: HashMap<(usize, ProducerId), DataProducer>,
}

impl DataRoutes {
    /// Transport `transport` publishes data producer `id` in router `router`.
    pub fn add_producer(&mut self, router: usize, id: ProducerId, transport: usize) {
        let p = self.producers.entry((router, id)).or_default();
        p.transport = Some(transport);
        p.channels.clear();
    }

    /// Transport `transport` receives data producer `id`.
    pub fn add_subscriber(&mut self, router: usize, id: ProducerId, transport: usize) {
        let p = self.producers.entry((router, id)).or_default();
        if !p.subscribers.contains(&transport) {
            p.subscribers.push(transport);
        }
    }

    /// Forgets a closed transport, as publisher or subscriber.
    pub fn remove_transport(&mut self, transport: usize) {
        self.producers.retain(|_, p| {
            if p.transport == Some(transport) {
                p.transport = None;
                p.channels.clear();
            }
            p.subscribers.retain(|&s| s != transport);
            p.transport.is_some() || !p.subscribers.is_empty()
        });
    }

    /// The publisher opened a channel on `stream`; returns the subscribers to open it on.
    pub fn opened(
        &mut self,
        router: usize,
        id: ProducerId,
        stream: u16,
        params: &ChannelParams,
    ) -> &[usize] {
        let Some(p) = self.producers.get_mut(&(router, id)) else {
            return &[];
        };
        p.channels.retain(|(s, _)| *s != stream);
        p.channels.push((stream, params.clone()));
        &p.subscribers
    }

    /// The publisher closed the channel on `stream`; returns its label and the subscribers.
    pub fn closed(
        &mut self,
        router: usize,
        id: ProducerId,
        stream: u16,
    ) -> Option<(String, &[usize])> {
        let p = self.producers.get_mut(&(router, id))?;
        let i = p.channels.iter().position(|(s, _)| *s == stream)?;
        let (_, params) = p.channels.remove(i);
        Some((params.label, &p.subscribers))
    }

    /// The label of the publisher's channel on `stream`, and the subscribers to forward to.
    pub fn route(&self, router: usize, id: ProducerId, stream: u16) -> Option<(&str, &[usize])> {
        let p = self.producers.get(&(router, id))?;
        let (_, params) = p.channels.iter().find(|(s, _)| *s == stream)?;
        Some((params.label.as_str(), &p.subscribers))
    }

    /// Every channel open on the producers in `ids`: what a subscriber whose association just
    /// came up has opened toward it.
    pub fn channels(&self, router: usize, ids: &[ProducerId]) -> Vec<ChannelParams> {
        ids.iter()
            .filter_map(|id| self.producers.get(&(router, *id)))
            .flat_map(|p| p.channels.iter().map(|(_, c)| c.clone()))
            .collect()
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_publishers_and_subscribers() {
        let mut r = DataRoutes::default();
        let p = ProducerId(7);
        r.add_producer(0, p, 10);
        r.add_subscriber(0, p, 11);
        r.add_subscriber(0, p, 12);
        r.add_subscriber(0, p, 12);
        assert!(r.route(0, p, 0).is_none(), "no channel yet");
        assert_eq!(
            r.opened(0, p, 0, &ChannelParams::reliable("chat")),
            &[11, 12]
        );
        assert_eq!(r.route(0, p, 0), Some(("chat", &[11usize, 12][..])));
        assert!(r.route(1, p, 0).is_none(), "another router");
        assert_eq!(r.channels(0, &[p]).len(), 1);
        r.remove_transport(11);
        assert_eq!(r.route(0, p, 0), Some(("chat", &[12usize][..])));
        let (label, subs) = r.closed(0, p, 0).unwrap();
        assert_eq!((label.as_str(), subs), ("chat", &[12usize][..]));
        assert!(r.channels(0, &[p]).is_empty());
        r.remove_transport(10);
        r.remove_transport(12);
        assert!(r.producers.is_empty());
    }
}
