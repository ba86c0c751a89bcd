//! What WebSocket signalling needs from whoever runs the channels: the all-in-one
//! [`AppState`](crate::session::AppState), which owns its media workers, or a cluster gateway
//! (`switchyard_cluster::gateway::Gateway`), which places media on media servers and shares
//! presence with other gateways through Redis. One signalling loop serves both.

use std::future::Future;

use serde_json::Value;
use switchyard_store::ChannelConfig;
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::phones::DialRequest;
use crate::protocol::{LayerPreferences, ParticipantInfo, ServerMessage};
use crate::rules::Rules;
use crate::sync_limits::SyncLimits;
use crate::token::Applications;

/// What a view of the channel's mix subscribes to, in place of a publication id.
pub use crate::rooms::MIX_VIEW;

/// A participant's id and everyone already in the channel, as `join` returns them.
pub type Joined = (String, Vec<ParticipantInfo>);

pub trait Channels: Send + Sync + 'static {
    /// The applications whose tokens are accepted.
    fn applications(&self) -> &Applications;

    fn metrics(&self) -> &Metrics;

    /// The limits on `/sync` sockets, with the count of sockets per address.
    fn sync_limits(&self) -> &SyncLimits;

    /// The dev application's (id, secret), when `/api/dev-token` may hand out tokens.
    fn dev_tokens(&self) -> Option<&(String, String)>;

    /// Becomes true when the process shuts down; sockets then close with a reason.
    fn shutdown(&self) -> watch::Receiver<bool>;

    /// TURN servers with fresh credentials for `user`, sent in `joined`.
    fn ice_servers(
        &self,
        user: &str,
    ) -> impl Future<Output = Vec<crate::ice_servers::IceServer>> + Send;

    /// Adds a participant of `application` (its token's, whose webhooks hear of it) and tells
    /// the others. `region` is the client's claim, if any: where its media should go when there
    /// is a choice. `resume` is a participant id the client proved it was given (see
    /// [`crate::resume`]): the new participant takes that id, and whatever is left of the old
    /// one (its media, its socket, on whichever gateway) is ended first, its socket told
    /// [`ServerMessage::Replaced`]. Its user must be `user`; otherwise the client joins under a
    /// new id.
    fn join(
        &self,
        channel: &str,
        application: &str,
        user: &str,
        region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        resume: Option<&str>,
    ) -> impl Future<Output = Result<Joined, Error>> + Send;

    /// Adds a WHIP/WHEP session as a participant of its own (see [`crate::whip`]): like `join`,
    /// but it has no socket, so signals and messages to it are refused (`BadRequest`). What
    /// reaches `outbox` is read by the session's watcher, which ends the session on a kick or
    /// when its media is gone. An implementation that ends its sessions itself at once (a kick
    /// or a closed transport removes them) may drop `outbox`: the watcher then just ends.
    fn join_session(
        &self,
        channel: &str,
        application: &str,
        user: &str,
        region: Option<&str>,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    ) -> impl Future<Output = Result<Joined, Error>> + Send;

    /// Ends the WHIP/WHEP session `participant` of `channel` (a `DELETE` on its resource URL),
    /// whichever process it was made on; false when there is no such session (a participant
    /// with a socket is not one).
    fn end_session(
        &self,
        channel: &str,
        participant: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The configuration that applies to `channel` of `application`, if any.
    fn channel_config(&self, application: &str, channel: &str) -> Option<ChannelConfig>;

    /// Answers a publish offer within the channel's `rules`; returns (publication id, answer).
    fn publish(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> impl Future<Output = Result<(String, String), Error>> + Send;

    /// Answers an MCU connection's sendrecv offer within `rules` (see [`crate::mix`]);
    /// returns (its id, answer). The connection is the participant's publication too: its id
    /// is the publication's, `unpublish` ends it, and the channel hears it published.
    fn mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> impl Future<Output = Result<(String, String), Error>> + Send;

    /// Answers a receive-only offer for the channel's mix (see [`crate::mix`]) with the
    /// canvas of `rules` should it start the mixer; returns (the subscription's id, answer).
    /// It is a subscription of the participant's to [`MIX_VIEW`]: `unsubscribe` ends it.
    fn view_mix(
        &self,
        channel: &str,
        participant: &str,
        offer: &str,
        rules: &Rules,
    ) -> impl Future<Output = Result<(String, String), Error>> + Send;

    /// Answers a subscribe offer for `publication`; returns (subscription id, answer).
    fn subscribe(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
        offer: &str,
    ) -> impl Future<Output = Result<(String, String), Error>> + Send;

    fn unpublish(
        &self,
        channel: &str,
        participant: &str,
        publication: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    fn unsubscribe(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sets the preferences of one of the participant's subscriptions.
    fn set_preferences(
        &self,
        channel: &str,
        participant: &str,
        subscription: &str,
        preferences: LayerPreferences,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Plays `digits` (already checked, see [`crate::phones`]) to the phone calls in
    /// `channel`, or to the one whose caller is `to`. `NotFound` when there is none; the default
    /// refuses, for processes that run no SIP connector.
    fn send_dtmf(
        &self,
        channel: &str,
        to: Option<&str>,
        digits: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (channel, to, digits);
        async {
            Err(Error::BadRequest(
                "no phone calls here: this server runs no SIP connector".into(),
            ))
        }
    }

    /// Places a call out (already checked, see [`crate::dial`]) whose callee joins
    /// `request.channel` once it answers; returns the call's id at once. `Unavailable` when this
    /// process runs no SIP connector (the default), `BadRequest` for a number or caller id the
    /// connector will not dial, `NotFound` when no trunk can carry it.
    fn dial(&self, request: DialRequest<'_>) -> impl Future<Output = Result<String, Error>> + Send {
        let _ = request;
        async {
            Err(Error::Unavailable(
                "no calls out here: this server runs no SIP connector".into(),
            ))
        }
    }

    /// Relays a peer-to-peer `signal` from `from` to participant `to` of the same channel, as
    /// [`ServerMessage::Signal`]. `NotFound` when `to` is not in the channel (in another
    /// channel or none), `BadRequest` when it cannot receive signals (a WHIP/WHEP session).
    /// The sender's limits are checked before this ([`crate::p2p`]).
    fn signal(
        &self,
        channel: &str,
        from: &str,
        to: &str,
        data: Value,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends a channel `message` from `from` to participant `to`, or with no `to` to everyone
    /// else in the channel, as [`ServerMessage::Message`]. `NotFound` when `to` is not in the
    /// channel, `BadRequest` when it cannot receive messages (a WHIP/WHEP session). The limits
    /// are checked before this ([`crate::channel_messages`]).
    fn message(
        &self,
        channel: &str,
        from: &str,
        to: Option<&str>,
        data: Value,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes the participant with everything it publishes and receives.
    fn leave(&self, channel: &str, participant: &str) -> impl Future<Output = ()> + Send;
}
