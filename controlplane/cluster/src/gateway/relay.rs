//! Cascading: a publication on another media server than the subscriber's home is relayed to
//! the home once per (publication, server) through a pipe, and every subscriber there receives
//! the relayed copy. Relays are recorded in presence (first writer wins) and end with their
//! publication or when either server leaves the registry.

use std::collections::HashSet;

use switchyard_controlplane::error::Error;

use super::Gateway;
use super::media_client::ending;
use crate::api::{
    self, PipeAddress, PipeAddressRequest, PipeEnd, PipeInReply, PipeInRequest, PipeOutReply,
    PipeOutRequest,
};
use crate::presence::{RelayEntry, relay_field, relay_field_parts};
use crate::registry::MediaServerRecord;

/// Who owns a relayed copy of `publication` on the receiving server.
fn relay_owner(publication: &str) -> String {
    format!("relay:{publication}")
}

/// Who owns the pipes sending to `home` on the origin server.
fn pipe_owner(home: &str) -> String {
    format!("pipe-to:{home}")
}

/// Whether the relay recorded as `field` is to be closed: it relays `publication`, or, with
/// `None`, it touches a server in `gone` at either end.
fn to_close(
    field: &str,
    relay: &RelayEntry,
    publication: Option<&str>,
    gone: &HashSet<String>,
) -> bool {
    let Some((origin_publication, home)) = relay_field_parts(field) else {
        return false;
    };
    match publication {
        Some(p) => p == origin_publication,
        None => gone.contains(home) || gone.contains(&relay.origin_server),
    }
}

impl Gateway {
    /// The id on `home` of `publication` relayed there from `origin`, making the pipe if there
    /// is none: `home` says where the channel's worker listens, `origin` starts sending there
    /// and says what, and `home` starts receiving it as a publication. Keys and RTCP SSRCs are
    /// made here and given to both ends.
    pub(super) async fn relay(
        &self,
        channel: &str,
        publication: &str,
        origin: &MediaServerRecord,
        home: &MediaServerRecord,
    ) -> Result<String, Error> {
        let field = relay_field(publication, &home.id);
        if let Some(r) = self.presence.relay(channel, &field).await? {
            return Ok(r.relay);
        }
        let request = PipeAddressRequest {
            channel: channel.to_string(),
        };
        let at: PipeAddress = self
            .media
            .call(home, "pipe/address", &request)
            .await?
            .ok_or_else(|| Error::Unavailable("no pipe address".into()))?;
        let (to_home, to_origin) = (api::pipe_key(), api::pipe_key());
        let (origin_ssrc, home_ssrc) = (rand::random::<u32>() | 1, rand::random::<u32>() | 1);
        let pipe_owner = pipe_owner(&home.id);
        let request = PipeOutRequest {
            channel: channel.to_string(),
            participant: pipe_owner.clone(),
            publication: publication.to_string(),
            pipe: PipeEnd {
                remote: at.address,
                send_key: to_home.clone(),
                receive_key: to_origin.clone(),
                local_rtcp_ssrc: origin_ssrc,
                remote_rtcp_ssrc: home_ssrc,
            }
            .sealed(self.secret.as_ref()),
        };
        let out: PipeOutReply = self
            .media
            .call(origin, "pipe/out", &request)
            .await?
            .ok_or_else(|| Error::Unavailable("no pipe from the origin".into()))?;
        let end_pipe = |pipe: &str| {
            self.media.end_on(
                origin.clone(),
                "unsubscribe",
                ending(channel, &pipe_owner, Some(pipe)),
            )
        };
        let request = PipeInRequest {
            channel: channel.to_string(),
            participant: relay_owner(publication),
            tracks: out.tracks,
            pipe: PipeEnd {
                remote: out.address,
                send_key: to_origin,
                receive_key: to_home,
                local_rtcp_ssrc: home_ssrc,
                remote_rtcp_ssrc: origin_ssrc,
            }
            .sealed(self.secret.as_ref()),
        };
        let relay = match self
            .media
            .call::<PipeInReply>(home, "pipe/in", &request)
            .await
        {
            Ok(Some(r)) => r.publication,
            Ok(None) => {
                end_pipe(&out.subscription);
                return Err(Error::Unavailable("no relayed publication".into()));
            }
            Err(e) => {
                end_pipe(&out.subscription);
                return Err(e.into());
            }
        };
        let entry = RelayEntry {
            relay: relay.clone(),
            origin_server: origin.id.clone(),
            pipe: out.subscription.clone(),
        };
        let added = self.presence.add_relay(channel, &field, &entry).await;
        if let Ok(true) = added {
            tracing::info!(channel, publication, from = %origin.id, to = %home.id, relay = %relay, "relaying");
            return Ok(relay);
        }
        // Another gateway made the same relay at the same moment (or presence failed): ours
        // goes, theirs is used.
        end_pipe(&out.subscription);
        self.media.end_on(
            home.clone(),
            "unpublish",
            ending(channel, &relay_owner(publication), Some(&relay)),
        );
        let known = self.presence.relay(channel, &field).await?;
        match (added, known) {
            (Ok(false), Some(r)) => Ok(r.relay),
            (Err(e), _) => Err(e.into()),
            _ => Err(Error::Unavailable("the relay went away".into())),
        }
    }

    /// Relays to `mixer` (the media server that holds the channel's mixer) the channel's SFU
    /// publications on other servers, or just `only`, so that the channel's one mixer shows
    /// everyone; the relayed copy on `mixer` becomes a mixer input there. Relays already made
    /// (for subscribers on `mixer`) are reused. Failures are logged: the mix goes on without
    /// that publication.
    pub(super) async fn relay_to_mixer(
        &self,
        channel: &str,
        mixer: &MediaServerRecord,
        only: Option<&str>,
    ) {
        let publications = match self.presence.publications(channel).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(channel, "the mix may miss other servers' publications: {e}");
                return;
            }
        };
        for (publication, entry) in publications {
            if entry.mixed
                || entry.server == mixer.id
                || only.is_some_and(|only| only != publication)
            {
                continue;
            }
            let relayed = match self.server(&entry.server).await {
                Ok(origin) => self.relay(channel, &publication, &origin, mixer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = relayed {
                tracing::warn!(channel, %publication, from = %entry.server, to = %mixer.id, "not mixed: cannot relay ({e})");
            }
        }
    }

    /// Ends the relays of `publication` (or, with `None`, those touching a server in `gone`):
    /// the receiving server unpublishes the relayed copy, the origin ends its pipe.
    pub(super) async fn close_relays(
        &self,
        channel: &str,
        publication: Option<&str>,
        gone: &HashSet<String>,
    ) {
        let Ok(relays) = self.presence.relays(channel).await else {
            return;
        };
        for (field, r) in relays {
            if !to_close(&field, &r, publication, gone)
                || !matches!(self.presence.remove_relay(channel, &field).await, Ok(true))
            {
                continue;
            }
            let Some((origin_publication, home)) = relay_field_parts(&field) else {
                continue;
            };
            tracing::info!(
                channel,
                publication = origin_publication,
                to = home,
                "relay ended"
            );
            if let Ok(s) = self.server(home).await {
                self.media.end_on(
                    s,
                    "unpublish",
                    ending(channel, &relay_owner(origin_publication), Some(&r.relay)),
                );
            }
            if let Ok(s) = self.server(&r.origin_server).await {
                self.media.end_on(
                    s,
                    "unsubscribe",
                    ending(channel, &pipe_owner(home), Some(&r.pipe)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::tests::gateway;

    fn entry(origin: &str) -> RelayEntry {
        RelayEntry {
            relay: "relay7-0000beef".into(),
            origin_server: origin.into(),
            pipe: "pipe3-0000cafe".into(),
        }
    }

    #[test]
    fn relays_are_named_by_publication_and_receiving_server() {
        let field = relay_field("pub1-00ab", "ms-b");
        assert_eq!(field, "pub1-00ab@ms-b");
        assert_eq!(relay_field_parts(&field), Some(("pub1-00ab", "ms-b")));
        assert_eq!(relay_owner("pub1-00ab"), "relay:pub1-00ab");
        assert_eq!(pipe_owner("ms-b"), "pipe-to:ms-b");
    }

    #[test]
    fn relays_close_with_their_publication_or_either_server() {
        let field = relay_field("pub1", "home");
        let r = entry("origin");
        let none = HashSet::new();
        assert!(to_close(&field, &r, Some("pub1"), &none));
        assert!(!to_close(&field, &r, Some("pub2"), &none));
        assert!(!to_close(&field, &r, None, &none));
        for gone in ["home", "origin"] {
            assert!(
                to_close(&field, &r, None, &HashSet::from([gone.to_string()])),
                "{gone}"
            );
        }
        assert!(!to_close(
            &field,
            &r,
            None,
            &HashSet::from(["elsewhere".to_string()])
        ));
        assert!(!to_close("no-at-sign", &r, Some("no-at-sign"), &none));
    }

    #[tokio::test]
    async fn a_recorded_relay_is_reused_and_closed_once() {
        let g = gateway("g1").await;
        let field = relay_field("pub1", "home");
        g.presence
            .add_relay("c", &field, &entry("origin"))
            .await
            .unwrap();
        // Neither server is in the registry: nothing is called, the record answers.
        let origin = crate::gateway::tests::server("origin", "a");
        let home = crate::gateway::tests::server("home", "a");
        assert_eq!(
            g.relay("c", "pub1", &origin, &home).await.unwrap(),
            "relay7-0000beef"
        );
        g.close_relays("c", Some("pub1"), &HashSet::new()).await;
        assert_eq!(g.presence.relay("c", &field).await.unwrap(), None);
        // Without a record, making one needs the home server, which does not answer.
        let e = g.relay("c", "pub1", &origin, &home).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
    }
}
