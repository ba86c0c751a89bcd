//! Signalling against Switchyard: WebSocket `/sync` (join, publish, subscribe, and the events
//! that say what others publish) or WHIP/WHEP, with tokens minted for the server's application.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard_controlplane::token::{self, ChannelClaim, Claims};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("signalling connection: {0}")]
    Connect(String),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the signalling connection closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("could not make a token: {0}")]
    Token(#[from] token::TokenError),
}

/// Signs client tokens for an application.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub application: String,
    pub secret: String,
}

impl Tokens {
    /// A token for `user` in `channel` with publish and subscribe rights, valid for a day.
    pub fn issue(&self, channel: &str, user: &str) -> Result<String, Error> {
        let claims = Claims::new(
            &self.application,
            user,
            ChannelClaim {
                id: channel.into(),
                publish: true,
                subscribe: true,
                dial: false,
            },
            Duration::from_secs(86_400),
        );
        Ok(token::issue(&claims, &self.secret)?)
    }
}

/// One participant's `/sync` session.
pub struct Session {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Session {
    /// Connects to `ws_url` (`ws://host:port/sync`) and joins `channel`.
    pub async fn join(ws_url: &str, token: &str, channel: &str) -> Result<Session, Error> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let mut s = Session { ws, next_id: 0 };
        s.send(json!({"type": "join", "token": token, "channel": channel}))
            .await?;
        s.reply(|m| m["type"] == "joined").await?;
        Ok(s)
    }

    /// Publishes: sends the offer, returns (publication id, answer).
    pub async fn publish(&mut self, offer: &str) -> Result<(String, String), Error> {
        let id = self.request_id();
        self.send(json!({"type": "publish", "id": id, "offer": offer}))
            .await?;
        let m = self.reply(|m| m["id"] == id).await?;
        Ok((
            m["publication"].as_str().unwrap_or_default().into(),
            m["answer"].as_str().unwrap_or_default().into(),
        ))
    }

    /// Subscribes to `publication`: returns (subscription id, answer).
    pub async fn subscribe(
        &mut self,
        publication: &str,
        offer: &str,
    ) -> Result<(String, String), Error> {
        let id = self.request_id();
        self.send(
            json!({"type": "subscribe", "id": id, "publication": publication, "offer": offer}),
        )
        .await?;
        let m = self.reply(|m| m["id"] == id).await?;
        Ok((
            m["subscription"].as_str().unwrap_or_default().into(),
            m["answer"].as_str().unwrap_or_default().into(),
        ))
    }

    /// Sets a subscription's preferences: the tallest layer wanted (none: no limit). The
    /// server replies only if it refuses, which the next request's reply then reports.
    pub async fn preferences(
        &mut self,
        subscription: &str,
        max_height: Option<u16>,
    ) -> Result<(), Error> {
        // The fields sit beside `type`, as the SDK sends them (docs/signalling.md).
        let mut m = json!({"type": "preferences", "subscription": subscription});
        if let Some(h) = max_height {
            m["maxHeight"] = h.into();
        }
        self.send(m).await
    }

    /// Reads and drops one message (events the generator does not need); fails when the
    /// connection closes.
    pub async fn discard_one(&mut self) -> Result<(), Error> {
        self.receive().await.map(drop)
    }

    fn request_id(&mut self) -> Value {
        self.next_id += 1;
        Value::from(self.next_id)
    }

    async fn send(&mut self, m: Value) -> Result<(), Error> {
        self.ws
            .send(Message::text(m.to_string()))
            .await
            .map_err(|_| Error::Closed)
    }

    async fn receive(&mut self) -> Result<Value, Error> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t)
                        .map_err(|e| Error::Refused(format!("unreadable message: {e}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Error::Refused(
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(Error::Closed),
            }
        }
    }

    /// Waits for the message `wanted` picks (or an error), dropping events that come first.
    async fn reply(&mut self, wanted: impl Fn(&Value) -> bool) -> Result<Value, Error> {
        tokio::time::timeout(REPLY_TIMEOUT, async {
            loop {
                let m = self.receive().await?;
                if m["type"] == "error" {
                    return Err(Error::Refused(
                        m["reason"].as_str().unwrap_or("unknown").into(),
                    ));
                }
                if wanted(&m) {
                    return Ok(m);
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout(REPLY_TIMEOUT))?
    }
}

/// WHIP (`publish`) or WHEP: POSTs the offer to `{base}/{whip|whep}/{channel}`, returns the
/// answer.
pub async fn whip_or_whep(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    channel: &str,
    token: &str,
    offer: String,
) -> Result<String, Error> {
    let r = http
        .post(format!("{base}/{kind}/{channel}"))
        .bearer_auth(token)
        .header("Content-Type", "application/sdp")
        .body(offer)
        .timeout(REPLY_TIMEOUT)
        .send()
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| Error::Connect(e.to_string()))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(Error::Refused(format!("{status}: {}", body.trim())));
    }
    Ok(body)
}
