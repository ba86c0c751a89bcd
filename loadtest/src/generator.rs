//! Emulated participants: each signals like a client (its own token, WebSocket or WHIP/WHEP),
//! then hands its transports to the net thread. Publications are shared through a watch so
//! that subscribers subscribe to every publisher, whichever SFU is under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use switchyard_dataplane::client::{self, Client, OfferTrack};
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::media::Codec;
use tokio::sync::watch;

use crate::net::{Net, NewTransport, Role};
use crate::remote;
use crate::signal::{self, Session, Tokens};

/// How participants signal to Switchyard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signalling {
    /// WebSocket `/sync`: join, publish, subscribe.
    Sync,
    /// WHIP to publish, WHEP to subscribe.
    Whip,
}

/// The server under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub base: String,
    pub tokens: Tokens,
    pub signalling: Signalling,
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    pub video: bool,
    pub audio: bool,
}

/// A publication any subscriber may take.
#[derive(Debug, Clone)]
struct Published {
    owner: usize,
    id: String,
    media: Media,
}

const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// Shared by every participant task.
pub struct Generator {
    pub net: Net,
    target: Target,
    channel: String,
    identity: Arc<Identity>,
    http: reqwest::Client,
    publications: watch::Sender<Vec<Published>>,
    stop: watch::Sender<bool>,
    /// Signalling failures (logged the first few times).
    errors: AtomicU64,
    next_ssrc: AtomicU64,
}

impl Generator {
    pub fn new(net: Net, target: Target, channel: String) -> Result<Arc<Generator>, String> {
        let identity = Identity::generate().map_err(|e| format!("certificate: {e}"))?;
        Ok(Arc::new(Generator {
            net,
            target,
            channel,
            identity,
            http: reqwest::Client::new(),
            publications: watch::channel(Vec::new()).0,
            stop: watch::channel(false).0,
            errors: AtomicU64::new(0),
            next_ssrc: AtomicU64::new(0x1000),
        }))
    }

    /// Starts participant `index`: it publishes `publish` (if any) and, if `subscribe`,
    /// subscribes to every other participant's publication as it appears.
    pub fn spawn(self: &Arc<Self>, index: usize, publish: Option<Media>, subscribe: bool) {
        let g = self.clone();
        tokio::spawn(async move {
            if let Err(e) = g.clone().participant(index, publish, subscribe).await {
                let n = g.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    tracing::warn!("participant {index}: {e}");
                }
            }
        });
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Ends every participant's signalling session.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn participant(
        self: Arc<Self>,
        index: usize,
        publish: Option<Media>,
        subscribe: bool,
    ) -> Result<(), String> {
        let user = format!("load-{index}");
        let token = self
            .target
            .tokens
            .issue(&self.channel, &user)
            .map_err(|e| e.to_string())?;
        let mut session = match self.target.signalling {
            Signalling::Sync => {
                let ws = format!("{}/sync", self.target.base.replacen("http", "ws", 1));
                Some(
                    Session::join(&ws, &token, &self.channel)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            Signalling::Whip => None,
        };
        if let Some(media) = publish {
            let started = Instant::now();
            let ice = Credentials::random();
            let ssrc = |g: &Generator| g.next_ssrc.fetch_add(1, Ordering::Relaxed) as u32;
            let video = media.video.then(|| (ssrc(&self), VIDEO_PT));
            let audio = media.audio.then(|| (ssrc(&self), AUDIO_PT));
            let mut tracks = Vec::new();
            if let Some((ssrc, payload_type)) = audio {
                tracks.push(OfferTrack::Send {
                    codec: Codec::Opus,
                    payload_type,
                    ssrc,
                });
            }
            if let Some((ssrc, payload_type)) = video {
                tracks.push(OfferTrack::Send {
                    codec: Codec::Vp8,
                    payload_type,
                    ssrc,
                });
            }
            let offer = client::offer(&ice, self.identity.fingerprint(), &tracks);
            let (id, answer) = match session.as_mut() {
                Some(s) => s.publish(&offer).await.map_err(|e| e.to_string())?,
                None => {
                    let answer = signal::whip_or_whep(
                        &self.http,
                        &self.target.base,
                        "whip",
                        &self.channel,
                        &token,
                        offer,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    (String::new(), answer)
                }
            };
            self.connect(ice, &answer, Role::Publish { video, audio }, started)?;
            self.publications.send_modify(|p| {
                p.push(Published {
                    owner: index,
                    id,
                    media,
                })
            });
        }
        let mut publications = self.publications.subscribe();
        let mut stop = self.stop.subscribe();
        let mut taken = 0;
        loop {
            if subscribe {
                let fresh: Vec<Published> = publications
                    .borrow_and_update()
                    .iter()
                    .skip(taken)
                    .cloned()
                    .collect();
                taken += fresh.len();
                for p in fresh.into_iter().filter(|p| p.owner != index) {
                    self.subscribe_to(session.as_mut(), &token, &p).await?;
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                changed = publications.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // Keep reading the socket so the server's events do not pile up.
                alive = async {
                    match session.as_mut() {
                        Some(s) => s.discard_one().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if alive.is_err() {
                        return Err("the signalling connection closed".into());
                    }
                }
            }
        }
        Ok(())
    }

    async fn subscribe_to(
        &self,
        session: Option<&mut Session>,
        token: &str,
        p: &Published,
    ) -> Result<(), String> {
        let started = Instant::now();
        let ice = Credentials::random();
        let mut tracks = Vec::new();
        let mut clock_rates = Vec::new();
        if p.media.audio {
            tracks.push(OfferTrack::Receive {
                codec: Codec::Opus,
                payload_type: AUDIO_PT,
            });
            clock_rates.push((AUDIO_PT, Codec::Opus.clock_rate()));
        }
        if p.media.video {
            tracks.push(OfferTrack::Receive {
                codec: Codec::Vp8,
                payload_type: VIDEO_PT,
            });
            clock_rates.push((VIDEO_PT, Codec::Vp8.clock_rate()));
        }
        let offer = client::offer(&ice, self.identity.fingerprint(), &tracks);
        let answer = match session {
            Some(s) => s.subscribe(&p.id, &offer).await,
            None => {
                signal::whip_or_whep(
                    &self.http,
                    &self.target.base,
                    "whep",
                    &self.channel,
                    token,
                    offer,
                )
                .await
            }
        }
        .map_err(|e| e.to_string())?;
        self.connect(ice, &answer, Role::Subscribe { clock_rates }, started)
    }

    /// Hands a signalled transport to the net thread, which runs ICE and DTLS.
    fn connect(
        &self,
        ice: Credentials,
        answer: &str,
        role: Role,
        started: Instant,
    ) -> Result<(), String> {
        let remote = remote::parse(answer).map_err(|e| e.to_string())?;
        let client = Client::new(
            &self.identity,
            ice,
            remote.ice,
            remote.fingerprint,
            Instant::now(),
        );
        self.net
            .add(NewTransport {
                server: remote.address,
                client,
                role,
                started,
            })
            .map_err(|e| e.to_string())
    }
}
