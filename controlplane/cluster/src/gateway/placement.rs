//! Which media server a client's media goes to. A channel has a server (first placement wins,
//! in the registry, so gateways agree); a new publication goes there while it fits the client
//! (its region claim) and can take it, else to the server [`choose_server`] picks, which then
//! becomes the channel's. A client's home is where it last published.

use switchyard_controlplane::error::Error;

use super::Gateway;
use crate::registry::{MediaServerRecord, MediaServerRegistry, choose_server};

/// Where a new publication goes, as [`decide`] finds it.
#[derive(Debug, PartialEq)]
pub(super) enum Decision<'a> {
    /// The channel's server still fits.
    Placed(&'a MediaServerRecord),
    /// Another server, to become the channel's. `stale`: the channel's placement names a server
    /// that is gone, unavailable or draining, and is removed first (an over-capacity server
    /// stays the channel's: it is only skipped for this publication).
    Chosen {
        server: &'a MediaServerRecord,
        stale: bool,
    },
}

/// Decides among `servers` (those just failed already left out) for a client claiming
/// `region`, the channel being `placed` on a server; `None` when none can take it.
pub(super) fn decide<'a>(
    servers: &'a [MediaServerRecord],
    placed: Option<&str>,
    region: Option<&str>,
) -> Option<Decision<'a>> {
    // A claim no server matches is no constraint.
    let region_ok = |s: &MediaServerRecord| {
        region.is_none_or(|r| s.region == r || !servers.iter().any(|x| x.region == r))
    };
    if let Some(s) = placed.and_then(|id| servers.iter().find(|s| s.id == id))
        && s.available
        && !s.draining
        && !s.over_capacity
        && region_ok(s)
    {
        return Some(Decision::Placed(s));
    }
    let server = choose_server(servers, region)?;
    let stale = placed.is_some_and(|id| {
        !servers
            .iter()
            .any(|s| s.id == id && s.available && !s.draining)
    });
    Some(Decision::Chosen { server, stale })
}

impl Gateway {
    /// The media server for a new publication of a client with `region` (see [`decide`]).
    /// `avoid` are servers that just failed.
    pub(super) async fn place(
        &self,
        channel: &str,
        region: Option<&str>,
        avoid: &[String],
    ) -> Result<MediaServerRecord, Error> {
        let servers: Vec<MediaServerRecord> = self
            .registry
            .list()
            .await?
            .into_iter()
            .filter(|s| !avoid.contains(&s.id))
            .collect();
        let placed = self.registry.placement(channel).await?;
        let decision = decide(&servers, placed.as_deref(), region)
            .ok_or_else(|| Error::Unavailable("no media server is available".into()))?;
        let (server, stale) = match decision {
            Decision::Placed(s) => return Ok(s.clone()),
            Decision::Chosen { server, stale } => (server, stale),
        };
        let recorded = async {
            if stale {
                self.registry.unplace(channel).await?;
            }
            self.registry.place(channel, &server.id).await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(channel, "cannot record the channel's placement: {e}");
        }
        Ok(server.clone())
    }

    /// The client's home media server: the one it last published on, while it is live and not
    /// draining (a draining server takes no new subscriptions); else one placed as for a
    /// publication (which then becomes its home).
    pub(super) async fn home(
        &self,
        channel: &str,
        participant: &str,
    ) -> Result<MediaServerRecord, Error> {
        let (home, region) = self
            .clients
            .with(channel, participant, |c| (c.home.clone(), c.region.clone()))
            .ok_or_else(|| Error::NotFound(format!("{participant} is not in channel {channel}")))?;
        if let Some(id) = home
            && let Ok(Some(s)) = self.registry.get(&id).await
            && s.available
            && !s.draining
        {
            return Ok(s);
        }
        let placed = self.place(channel, region.as_deref(), &[]).await?;
        self.clients
            .with(channel, participant, |c| c.home = Some(placed.id.clone()));
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::SERVER_TTL;
    use crate::gateway::tests::{gateway, server};

    fn chosen<'a>(server: &'a MediaServerRecord, stale: bool) -> Option<Decision<'a>> {
        Some(Decision::Chosen { server, stale })
    }

    #[test]
    fn the_channels_server_while_it_fits() {
        let mut a = server("a", "eu");
        let b = MediaServerRecord {
            used_capacity: 0.5,
            ..server("b", "eu")
        };
        assert_eq!(decide(&[], None, None), None, "no server, no placement");
        let servers = [a.clone(), b.clone()];
        assert_eq!(decide(&servers, None, None), chosen(&servers[0], false));
        // The channel is on b although a is less loaded: it stays there.
        assert_eq!(
            decide(&servers, Some("b"), None),
            Some(Decision::Placed(&servers[1]))
        );

        // Over capacity: this publication goes elsewhere; the placement is not stale.
        a.over_capacity = true;
        let servers = [a.clone(), b.clone()];
        assert_eq!(
            decide(&servers, Some("a"), None),
            chosen(&servers[1], false)
        );

        // Draining, unavailable or gone: the placement is stale.
        a.over_capacity = false;
        a.draining = true;
        let servers = [a.clone(), b.clone()];
        assert_eq!(decide(&servers, Some("a"), None), chosen(&servers[1], true));
        a.draining = false;
        a.available = false;
        let servers = [a.clone(), b.clone()];
        assert_eq!(decide(&servers, Some("a"), None), chosen(&servers[1], true));
        let servers = [b.clone()];
        assert_eq!(decide(&servers, Some("a"), None), chosen(&servers[0], true));
    }

    #[test]
    fn a_region_claim_moves_a_publication_only_to_a_region_that_exists() {
        let servers = [server("a", "eu"), server("b", "us")];
        assert_eq!(
            decide(&servers, Some("a"), Some("us")),
            chosen(&servers[1], false)
        );
        assert_eq!(
            decide(&servers, Some("a"), Some("eu")),
            Some(Decision::Placed(&servers[0]))
        );
        assert_eq!(
            decide(&servers, Some("a"), Some("mars")),
            Some(Decision::Placed(&servers[0])),
            "no server in the claimed region: no constraint"
        );
    }

    #[tokio::test]
    async fn placement_is_recorded_and_the_home_follows_it() {
        let g = gateway("g1").await;
        for s in [server("a", "eu"), server("b", "us")] {
            g.registry.heartbeat(&s, SERVER_TTL).await.unwrap();
        }
        assert_eq!(g.place("c", Some("us"), &[]).await.unwrap().id, "b");
        assert_eq!(g.registry.placement("c").await.unwrap(), Some("b".into()));
        assert_eq!(g.place("c", None, &[]).await.unwrap().id, "b", "stays");
        assert_eq!(g.place("c", None, &["b".into()]).await.unwrap().id, "a");
        assert_eq!(
            g.registry.placement("c").await.unwrap(),
            Some("a".into()),
            "a placement on a server that failed is replaced"
        );

        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        g.clients
            .add("c", "p", super::super::clients::Client::new("u", tx, None));
        assert_eq!(g.home("c", "p").await.unwrap().id, "a");
        g.registry.set_draining("a", true).await.unwrap();
        assert_eq!(
            g.home("c", "p").await.unwrap().id,
            "b",
            "a draining home is left"
        );
        assert!(matches!(
            g.home("c", "stranger").await,
            Err(Error::NotFound(_))
        ));
    }

    /// When the last participant leaves, the channel's placement goes: the next one to start
    /// it is placed on the least loaded server then, not where the channel first was.
    #[tokio::test]
    async fn an_empty_channels_placement_expires() {
        use switchyard_controlplane::channels::Channels;
        let g = gateway("g1").await;
        for s in [server("a", "eu"), server("b", "eu")] {
            g.registry.heartbeat(&s, SERVER_TTL).await.unwrap();
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (alice, _) = g
            .join("c", "app", "alice", None, tx.clone(), None)
            .await
            .unwrap();
        let (bob, _) = g
            .join("c", "app", "bob", None, tx.clone(), None)
            .await
            .unwrap();
        assert_eq!(g.place("c", None, &[]).await.unwrap().id, "a");
        // a fills up; the channel stays there while anyone is in it.
        let busy = MediaServerRecord {
            used_capacity: 0.8,
            ..server("a", "eu")
        };
        g.registry.heartbeat(&busy, SERVER_TTL).await.unwrap();
        g.leave("c", &alice).await;
        assert_eq!(g.registry.placement("c").await.unwrap(), Some("a".into()));
        assert_eq!(g.place("c", None, &[]).await.unwrap().id, "a");
        g.leave("c", &bob).await;
        assert_eq!(g.registry.placement("c").await.unwrap(), None);
        let (_carol, _) = g.join("c", "app", "carol", None, tx, None).await.unwrap();
        assert_eq!(g.place("c", None, &[]).await.unwrap().id, "b");
        assert_eq!(g.registry.placement("c").await.unwrap(), Some("b".into()));
    }
}
