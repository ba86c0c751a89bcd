//! The gateway's calls to the connectors' API. A failed call is read back into the
//! connector's [`Error`], so an administrator hears the connector's own refusal.

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_controlplane::error::{Error, ErrorBody};

use super::ConnectorRecord;
use super::api::{DialBody, DialReply, DigitsReply, DigitsRequest, HangUpReply, HangUpRequest};
use crate::api;
use crate::signing::{self, ClusterSecret};

#[derive(Clone)]
pub struct ConnectorClient {
    http: reqwest::Client,
    /// Signs every call, when the cluster has a secret.
    pub secret: Option<ClusterSecret>,
}

impl ConnectorClient {
    pub fn new() -> Result<ConnectorClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(ConnectorClient { http, secret: None })
    }

    /// Plays digits to the connector's calls in the request's channel; how many took them.
    pub async fn send_digits(
        &self,
        connector: &ConnectorRecord,
        request: &DigitsRequest,
    ) -> Result<usize, Error> {
        let reply: DigitsReply = self.call(connector, "digits", request).await?;
        Ok(reply.calls)
    }

    /// Dials through the connector; the call's id.
    pub async fn dial(
        &self,
        connector: &ConnectorRecord,
        body: &DialBody,
    ) -> Result<String, Error> {
        let reply: DialReply = self.call(connector, "dial", body).await?;
        Ok(reply.call)
    }

    /// Hangs up the connector's call out, if it has it; whether it had.
    pub async fn hang_up(
        &self,
        connector: &ConnectorRecord,
        request: &HangUpRequest,
    ) -> Result<bool, Error> {
        let reply: HangUpReply = self.call(connector, "hang-up", request).await?;
        Ok(reply.ended)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        connector: &ConnectorRecord,
        what: &str,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        let url = format!(
            "{}{}/sip/{what}",
            connector.api_url.trim_end_matches('/'),
            api::PREFIX
        );
        let unavailable =
            |e: reqwest::Error| Error::Unavailable(format!("SIP connector {}: {e}", connector.id));
        let reply = signing::request(
            &self.http,
            self.secret.as_ref(),
            Method::POST,
            &url,
            Some(body),
        )
        .send()
        .await
        .map_err(unavailable)?;
        let status = reply.status();
        if status.is_success() {
            return reply.json::<T>().await.map_err(unavailable);
        }
        let message = reply
            .json::<ErrorBody>()
            .await
            .map(|r| r.error)
            .unwrap_or_else(|_| format!("SIP connector {} answered {status}", connector.id));
        Err(api::error_from_status(status.as_u16(), message))
    }
}
