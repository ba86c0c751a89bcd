//! The recording pipeline through RabbitMQ (DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI): the
//! monitor publishes each session to mux as a job on a durable quorum queue and marks it
//! queued only once the broker confirmed it; muxers (`switchyard recording-muxer`, as many as
//! wanted) take one job at a time and acknowledge it only after the session's JSON is written.
//!
//! - A muxer that dies mid-job never acknowledged it: the broker hands the job to another one,
//!   which makes the file again (a job is idempotent: a session whose JSON exists is
//!   acknowledged without work).
//! - A job delivered [`DELIVERY_LIMIT`] times (one that kills every muxer), or one that is not
//!   a job at all, goes to the dead-letter queue [`DEAD`] for an operator to look at.
//! - A connection that drops (a broker restart) is opened again, backing off from 1 s to 30 s;
//!   a job not confirmed is published again at the monitor's next pass.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_recording::monitor::{Job, Monitor};
use switchyard_recording::objects::Objects;
use tokio::sync::watch;

/// The queue of sessions to mux, and where jobs go that cannot be done.
pub const QUEUE: &str = "switchyard.recording.mux";
pub const DEAD: &str = "switchyard.recording.mux.dead";
/// Deliveries of one job before it is dead-lettered.
const DELIVERY_LIMIT: i64 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LAST_BACKOFF: Duration = Duration::from_secs(30);

async fn open(uri: &str) -> Result<(Connection, Channel), lapin::Error> {
    let connection = Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut dead = FieldTable::default();
    dead.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel.queue_declare(DEAD.into(), durable, dead).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(DEAD.into()),
    );
    channel.queue_declare(QUEUE.into(), durable, args).await?;
    Ok((connection, channel))
}

/// The monitor's side: publishes jobs with confirms, on a connection kept between passes.
pub struct Publisher {
    uri: String,
    runtime: tokio::runtime::Runtime,
    open: Option<(Connection, Channel)>,
}

impl Publisher {
    pub fn new(uri: &str) -> std::io::Result<Publisher> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Publisher {
            uri: uri.to_string(),
            runtime,
            open: None,
        })
    }

    /// Publishes `job` (persistent) and waits for the broker's confirmation. On an error the
    /// connection is dropped, to be opened again at the next call.
    pub fn publish(&mut self, job: &Job) -> Result<(), String> {
        let body = serde_json::to_vec(job).map_err(|e| e.to_string())?;
        let Publisher {
            uri,
            runtime,
            open: slot,
        } = self;
        let result = runtime.block_on(async {
            if slot.is_none() {
                let (connection, channel) = open(uri).await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                *slot = Some((connection, channel));
            }
            let Some((_, channel)) = slot.as_ref() else {
                return Ok(false);
            };
            let confirm = channel
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?
                .await?;
            Ok::<bool, lapin::Error>(confirm.is_ack())
        });
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                *slot = None;
                Err("the broker refused the job".into())
            }
            Err(e) => {
                *slot = None;
                Err(e.to_string())
            }
        }
    }
}

/// What a muxer muxes with: its directory, and where the files come from when they are not
/// in it (a cluster's object storage).
pub struct Muxing {
    pub monitor: Monitor,
    pub fetch: Option<Objects>,
}

/// A muxer: takes jobs one at a time until `stop` turns true, connecting again whenever the
/// connection drops.
pub async fn run_muxer(uri: String, muxing: Arc<Muxing>, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    while !*stop.borrow() {
        let mut connected = false;
        match consume(&uri, &muxing, &mut stop, &mut connected).await {
            Ok(()) => return,
            Err(e) => {
                if connected {
                    backoff = FIRST_BACKOFF;
                }
                tracing::warn!(
                    retry_in_s = backoff.as_secs(),
                    "recording muxer: broker connection: {e}"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(LAST_BACKOFF);
    }
}

type Failed = Box<dyn std::error::Error + Send + Sync>;

/// Consumes jobs on one connection; `Ok` when stopped, `Err` when the connection failed.
async fn consume(
    uri: &str,
    muxing: &Arc<Muxing>,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), Failed> {
    let (_connection, channel) = open(uri).await?;
    // One job at a time: the next stays in the queue for another muxer.
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut jobs = channel
        .basic_consume(
            QUEUE.into(),
            "switchyard-recording-muxer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *connected = true;
    tracing::info!(queue = QUEUE, "recording muxer: waiting for jobs");
    loop {
        let delivery = tokio::select! {
            d = jobs.next() => d,
            _ = stop.changed() => return Ok(()),
        };
        let Some(delivery) = delivery else {
            return Err("the broker ended the consumer".into());
        };
        let delivery = delivery?;
        let Ok(job) = serde_json::from_slice::<Job>(&delivery.data) else {
            tracing::warn!(
                bytes = delivery.data.len(),
                "recording muxer: not a job; dead-lettered"
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            continue;
        };
        tracing::info!(session = %job.id, files = job.files.len(), "recording muxer: job");
        let (m, j) = (muxing.clone(), job.clone());
        let work = move || super::mux_job(&m.monitor, m.fetch.as_ref(), &j);
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(_)) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Ok(Err(e)) => {
                tracing::error!(session = %job.id, "recording muxer: {e}; the job goes back to the queue");
                let again = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                delivery.nack(again).await?;
            }
            Err(e) => {
                tracing::error!(session = %job.id, "recording muxer: the mux panicked: {e}");
                let again = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                delivery.nack(again).await?;
            }
        }
    }
}
