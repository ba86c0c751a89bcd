//! The MCU threads: each owns the mixers placed on it and runs them on its core, and the
//! recordings placed on it.
//!
//! A thread waits on its one queue, which carries both the workers' packets and the control
//! plane's commands, until its earliest mixer deadline; then it runs the mixers that are due
//! and hands what they made to the workers' lanes, waking each worker it wrote to once.
//!
//! A recording is a stream like a mixer input (a transport of the channel's router whose one
//! consumer takes the recorded producer): its packets go to a `TrackRecorder`, which writes a
//! cluster to its file about once a second. The writes go to the page cache; a disk that
//! stalls them stalls this thread's mixers too (a thread of their own is a later step).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use std::path::PathBuf;

use switchyard_recording::activity::Activity;
use switchyard_recording::log::Log;
use switchyard_recording::track::{Media, Summary, TrackRecorder};

use super::mixer::{Mixer, MixerConfig, MixerStats, StreamSpec};
use crate::demux::{self, PacketKind};
use crate::io::Waker;
use crate::lane::{LANE_CAPACITY, Packet};
use crate::spec::{Error, RouterId, TransportId};
use crate::{rtcp, rtp};

/// A recording asks its sender for a keyframe at most this often while it wants one.
const RECORDING_PLI_INTERVAL: Duration = Duration::from_millis(500);

/// The longest a thread sleeps with nothing due (it wakes for packets and commands anyway).
const IDLE: Duration = Duration::from_secs(1);
/// A thread publishes its totals for `/metrics` at most this often.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How often recorded tracks are checked for muting and pausing (`updateRecording`).
const ACTIVITY_INTERVAL: Duration = Duration::from_millis(250);

/// What the MCU threads have done, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McuStats {
    pub mixers: usize,
    pub streams: usize,
    /// Tracks being recorded.
    pub recordings: usize,
    /// Totals over the mixers, closed ones included.
    pub totals: MixerStats,
}

/// What reaches an MCU thread. Packets are inline on purpose: the lane's slots are
/// preallocated, so a packet costs a copy and no allocation.
#[allow(clippy::large_enum_variant)]
pub enum ToMcu {
    /// A packet a worker's router sent to a mixer stream.
    Packet(Packet),
    /// A worker closed this mixer stream's transport.
    Closed(TransportId),
    Command(Command),
}

pub enum Command {
    /// Starts the mixer of router `mixer` (the channel), whose worker is `worker`.
    CreateMixer {
        mixer: RouterId,
        worker: usize,
        config: MixerConfig,
        reply: oneshot::Sender<Result<(), String>>,
    },
    AddStream {
        mixer: RouterId,
        transport: TransportId,
        spec: StreamSpec,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Forgets a stream whose transport was never made (the worker tells of those it closes).
    RemoveStream {
        transport: TransportId,
    },
    CloseMixer {
        mixer: RouterId,
    },
    /// Records what arrives on stream `transport` (of worker `worker`) to `path`; its
    /// `stopRecording` goes to `log` when it is finished.
    StartRecording {
        transport: TransportId,
        worker: usize,
        media: Media,
        path: PathBuf,
        log: Option<Log>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Ends the recording of stream `transport`: its file finished, what it holds.
    StopRecording {
        transport: TransportId,
        reply: oneshot::Sender<Option<Summary>>,
    },
    Stop,
}

/// Each worker's ends of the MCU's lanes, handed to the worker when it starts.
pub struct McuLanes {
    /// To each MCU thread.
    pub to_mcu: Vec<SyncSender<ToMcu>>,
    /// From every MCU thread to this worker.
    pub from_mcu: Receiver<Packet>,
    /// Packets dropped because an MCU lane was full, for the worker's counters.
    pub dropped: Arc<AtomicU64>,
}

struct Handle {
    queue: SyncSender<ToMcu>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<McuStats>>,
}

/// The running MCU threads, as the control plane reaches them.
pub struct Mcu {
    threads: Vec<Handle>,
}

impl Mcu {
    /// Starts `threads` MCU threads (pinned to `cores` in turn when given) for workers that
    /// wake with `wakers`; returns each worker's lane ends, in the workers' order.
    pub fn start(
        threads: usize,
        wakers: Vec<Waker>,
        cores: Vec<core_affinity::CoreId>,
    ) -> Result<(Mcu, Vec<McuLanes>), Error> {
        let (to_workers, from_mcu): (Vec<_>, Vec<_>) = wakers
            .iter()
            .map(|_| sync_channel::<Packet>(LANE_CAPACITY))
            .unzip();
        let dropped: Vec<Arc<AtomicU64>> = wakers.iter().map(|_| Arc::default()).collect();
        let mut handles = Vec::with_capacity(threads);
        let mut to_mcu = Vec::with_capacity(threads);
        for index in 0..threads {
            let (queue, rx) = sync_channel(LANE_CAPACITY);
            to_mcu.push(queue.clone());
            let stats = Arc::new(Mutex::new(McuStats::default()));
            let mut state = Thread {
                index,
                queue: rx,
                stats: stats.clone(),
                retired: MixerStats::default(),
                published: Instant::now(),
                activity_checked: Instant::now(),
                mixers: HashMap::new(),
                streams: HashMap::new(),
                recordings: HashMap::new(),
                lanes: Lanes {
                    workers: to_workers.clone(),
                    wakers: wakers.clone(),
                    dropped: dropped.clone(),
                    woken: vec![false; wakers.len()],
                },
            };
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("sy-mcu-{index}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        tracing::warn!(mcu = index, "could not pin to core {}", core.id);
                    }
                    state.run();
                })
                .map_err(|e| Error::Start(format!("spawn MCU thread {index}: {e}")))?;
            tracing::info!(mcu = index, core = ?core.map(|c| c.id), "MCU thread started");
            handles.push(Handle {
                queue,
                thread: Some(thread),
                stats,
            });
        }
        let lanes = from_mcu
            .into_iter()
            .zip(dropped)
            .map(|(from_mcu, dropped)| McuLanes {
                to_mcu: to_mcu.clone(),
                from_mcu,
                dropped,
            })
            .collect();
        Ok((Mcu { threads: handles }, lanes))
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Totals over the threads (as published, at most a second old).
    pub fn stats(&self) -> McuStats {
        let mut total = McuStats::default();
        for h in &self.threads {
            let s = *h
                .stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            total.mixers += s.mixers;
            total.streams += s.streams;
            total.recordings += s.recordings;
            total.totals.add(&s.totals);
        }
        total
    }

    fn send(&self, mcu: usize, command: Command) -> Result<(), Error> {
        let h = self.threads.get(mcu).ok_or(Error::NoWorker(mcu))?;
        match h.queue.try_send(ToMcu::Command(command)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::Busy(mcu)),
            Err(TrySendError::Disconnected(_)) => Err(Error::Stopped),
        }
    }

    async fn ask(
        &self,
        mcu: usize,
        command: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(mcu, command(reply))?;
        answer
            .await
            .map_err(|_| Error::Stopped)?
            .map_err(Error::Rejected)
    }

    /// Starts the mixer of router `mixer` (on I/O worker `worker`) on MCU thread `mcu`.
    pub async fn create_mixer(
        &self,
        mcu: usize,
        mixer: RouterId,
        worker: usize,
        config: MixerConfig,
    ) -> Result<(), Error> {
        self.ask(mcu, |reply| Command::CreateMixer {
            mixer,
            worker,
            config,
            reply,
        })
        .await
    }

    /// Tells the mixer what stream `transport` is; do this before the worker creates the
    /// transport, so that no packet of it arrives unknown.
    pub async fn add_stream(
        &self,
        mcu: usize,
        mixer: RouterId,
        transport: TransportId,
        spec: StreamSpec,
    ) -> Result<(), Error> {
        self.ask(mcu, |reply| Command::AddStream {
            mixer,
            transport,
            spec,
            reply,
        })
        .await
    }

    pub fn remove_stream(&self, mcu: usize, transport: TransportId) {
        let _ = self.send(mcu, Command::RemoveStream { transport });
    }

    pub fn close_mixer(&self, mcu: usize, mixer: RouterId) {
        let _ = self.send(mcu, Command::CloseMixer { mixer });
    }

    /// Records what arrives on stream `transport` (a transport of worker `worker` whose
    /// consumer takes the recorded producer) to `path`, on MCU thread `mcu`; `log` gets its
    /// `stopRecording`. Do this before the worker creates the transport.
    pub async fn start_recording(
        &self,
        mcu: usize,
        transport: TransportId,
        worker: usize,
        media: Media,
        path: PathBuf,
        log: Option<Log>,
    ) -> Result<(), Error> {
        self.ask(mcu, |reply| Command::StartRecording {
            transport,
            worker,
            media,
            path,
            log,
            reply,
        })
        .await
    }

    /// Ends the recording on stream `transport`: its file is finished and renamed; what it
    /// holds (`None` for no such recording). Close the transport after.
    pub async fn stop_recording(&self, mcu: usize, transport: TransportId) -> Option<Summary> {
        let (reply, answer) = oneshot::channel();
        self.send(mcu, Command::StopRecording { transport, reply })
            .ok()?;
        answer.await.ok().flatten()
    }
}

impl Drop for Mcu {
    fn drop(&mut self) {
        for h in &mut self.threads {
            // A full queue still stops it: the thread ends when the queue disconnects too.
            let _ = h.queue.try_send(ToMcu::Command(Command::Stop));
            let (dead, _) = sync_channel(0);
            drop(std::mem::replace(&mut h.queue, dead));
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A mixer and the worker its router lives on.
struct Placed {
    mixer: Mixer,
    worker: usize,
}

/// A recording, the worker its stream is on, and when it last asked for a keyframe.
struct Recorded {
    recorder: TrackRecorder,
    /// Its file's final name, for its log's entries.
    path: PathBuf,
    /// Live, muted or paused, for `updateRecording`.
    activity: Activity,
    log: Option<Log>,
    worker: usize,
    last_pli: Option<Instant>,
    /// Its file failed (a full disk): it records nothing more.
    failed: bool,
}

struct Thread {
    index: usize,
    queue: Receiver<ToMcu>,
    /// Where its totals are published, what its closed mixers did, and when it last published.
    stats: Arc<Mutex<McuStats>>,
    retired: MixerStats,
    published: Instant,
    activity_checked: Instant,
    mixers: HashMap<RouterId, Placed>,
    /// Which mixer each stream belongs to.
    streams: HashMap<TransportId, RouterId>,
    recordings: HashMap<TransportId, Recorded>,
    lanes: Lanes,
}

/// An MCU thread's ends of the workers' lanes.
struct Lanes {
    workers: Vec<SyncSender<Packet>>,
    wakers: Vec<Waker>,
    dropped: Vec<Arc<AtomicU64>>,
    /// Workers written to since the last wake-up round.
    woken: Vec<bool>,
}

impl Lanes {
    /// A mixer's output to worker `worker`'s lane.
    fn output_for(&mut self, worker: usize) -> Option<ToWorker<'_>> {
        Some(ToWorker {
            lane: self.workers.get(worker)?,
            dropped: self.dropped.get(worker)?,
            written: self.woken.get_mut(worker)?,
        })
    }

    /// Wakes each worker written to since the last call, once.
    fn wake(&mut self) {
        for (i, woken) in self.woken.iter_mut().enumerate() {
            if std::mem::take(woken)
                && let Some(w) = self.wakers.get(i)
            {
                w.wake();
            }
        }
    }
}

/// A mixer's [`mixer::Output`](super::mixer::Output) on this thread: packets go to its
/// worker's lane.
struct ToWorker<'a> {
    lane: &'a SyncSender<Packet>,
    dropped: &'a AtomicU64,
    written: &'a mut bool,
}

impl super::mixer::Output for ToWorker<'_> {
    fn send(&mut self, transport: TransportId, packet: &[u8]) {
        let Some(p) = Packet::new(transport, packet) else {
            return;
        };
        match self.lane.try_send(p) {
            Ok(()) => *self.written = true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Thread {
    fn run(&mut self) {
        loop {
            let now = Instant::now();
            let due = self
                .mixers
                .values()
                .map(|p| p.mixer.poll_timeout())
                .min()
                .unwrap_or(now + IDLE);
            match self.queue.recv_timeout(due.saturating_duration_since(now)) {
                Ok(message) => {
                    if !self.handle(message) {
                        return;
                    }
                    // Take what else is queued before running the clocks.
                    for _ in 0..LANE_CAPACITY {
                        match self.queue.try_recv() {
                            Ok(m) => {
                                if !self.handle(m) {
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            for placed in self.mixers.values_mut() {
                if placed.mixer.poll_timeout() <= now
                    && let Some(mut out) = self.lanes.output_for(placed.worker)
                {
                    placed.mixer.handle_timeout(now, &mut out);
                }
            }
            self.lanes.wake();
            if now.saturating_duration_since(self.published) >= PUBLISH_INTERVAL {
                self.publish(now);
            }
            if now.saturating_duration_since(self.activity_checked) >= ACTIVITY_INTERVAL {
                self.activity_checked = now;
                self.log_activity(now);
            }
        }
    }

    /// Publishes the thread's totals for `/metrics` (a lock taken once a second, never on
    /// the packet path).
    fn publish(&mut self, now: Instant) {
        let mut stats = McuStats {
            mixers: self.mixers.len(),
            streams: self.streams.len(),
            recordings: self.recordings.len(),
            totals: self.retired,
        };
        for p in self.mixers.values() {
            stats.totals.add(&p.mixer.stats());
        }
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stats;
        self.published = now;
    }

    /// Handles one message; false when the thread is to stop.
    fn handle(&mut self, message: ToMcu) -> bool {
        match message {
            ToMcu::Packet(p) if self.recordings.contains_key(&p.transport) => {
                self.record(&p);
            }
            ToMcu::Packet(p) => {
                let now = Instant::now();
                let Some(placed) = self
                    .streams
                    .get(&p.transport)
                    .and_then(|m| self.mixers.get_mut(m))
                else {
                    return true;
                };
                if let Some(mut out) = self.lanes.output_for(placed.worker) {
                    placed
                        .mixer
                        .handle_packet(now, p.transport, p.data(), &mut out);
                }
            }
            ToMcu::Closed(transport) => self.forget(transport),
            ToMcu::Command(c) => return self.command(c),
        }
        true
    }

    /// Hands a recorded stream's RTP packet (or sender report) to its recorder, and asks the
    /// sender for a keyframe (a PLI back on the stream) while the recorder wants one.
    fn record(&mut self, p: &Packet) {
        let Some(r) = self.recordings.get_mut(&p.transport) else {
            return;
        };
        let data = p.data();
        match demux::classify(data) {
            PacketKind::Rtp => {}
            // The router's sender reports for the stream (on the publisher's clock): they
            // place the recording on the sender's clock, for lip sync when muxing.
            PacketKind::Rtcp => {
                for packet in rtcp::packets(data) {
                    match packet {
                        Ok(rtcp::Packet::SenderReport {
                            ntp, rtp_timestamp, ..
                        }) => r.recorder.sender_report(ntp, rtp_timestamp),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                return;
            }
            _ => return,
        }
        let Ok(h) = rtp::Header::parse(data) else {
            return;
        };
        let Some(payload) = data.get(h.payload_offset..h.payload_end) else {
            return;
        };
        if !r.failed
            && let Err(e) = r.recorder.push(h.sequence, h.timestamp, h.marker, payload)
        {
            tracing::error!(mcu = self.index, transport = %p.transport, "recording stopped: {e}");
            r.failed = true;
        }
        let now = Instant::now();
        r.activity.packet(now, payload.len());
        let due = r
            .last_pli
            .is_none_or(|at| now.saturating_duration_since(at) >= RECORDING_PLI_INTERVAL);
        if !r.failed && r.recorder.keyframe_wanted() && due {
            r.last_pli = Some(now);
            let mut pli = [0u8; 16];
            if let Ok(n) = rtcp::write_pli(&mut pli, 1, h.ssrc)
                && let Some(mut out) = self.lanes.output_for(r.worker)
            {
                use super::mixer::Output;
                out.send(p.transport, &pli[..n]);
            }
        }
    }

    /// Logs `updateRecording` for each recorded track that was muted, paused or came back
    /// (a file append on this thread, as `stopRecording`: a few a minute at most).
    fn log_activity(&mut self, now: Instant) {
        for (transport, r) in &mut self.recordings {
            let Some(change) = r.activity.poll(now) else {
                continue;
            };
            tracing::info!(mcu = self.index, %transport, state = change.state.as_str(), "recorded track");
            if let Some(log) = &r.log
                && let Err(e) = log.updated(&r.path, change)
            {
                tracing::error!(mcu = self.index, %transport, path = ?log.path, "recording log: {e}");
            }
        }
    }

    /// Finishes the recording on stream `transport`, if it is one.
    fn finish_recording(&mut self, transport: TransportId) -> Option<Summary> {
        let r = self.recordings.remove(&transport)?;
        match r.recorder.finish() {
            Ok(summary) => {
                tracing::info!(mcu = self.index, %transport, path = ?summary.path, duration_ms = summary.duration_ms, frames = summary.frames, "recording finished");
                if let Some(log) = &r.log
                    && let Err(e) = log.stopped(&summary)
                {
                    tracing::error!(mcu = self.index, %transport, path = ?log.path, "recording log: {e}");
                }
                Some(summary)
            }
            Err(e) => {
                tracing::error!(mcu = self.index, %transport, "recording not finished: {e}");
                None
            }
        }
    }

    /// Removes a stream from its mixer, and the mixer once it has none left.
    fn forget(&mut self, transport: TransportId) {
        if self.finish_recording(transport).is_some() {
            return;
        }
        let Some(mixer) = self.streams.remove(&transport) else {
            return;
        };
        let Some(p) = self.mixers.get_mut(&mixer) else {
            return;
        };
        p.mixer.remove_stream(transport);
        if p.mixer.is_empty()
            && let Some(p) = self.mixers.remove(&mixer)
        {
            self.retired.add(&p.mixer.stats());
            tracing::info!(mcu = self.index, %mixer, stats = ?p.mixer.stats(), "mixer closed: no streams left");
        }
    }

    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::CreateMixer {
                mixer,
                worker,
                config,
                reply,
            } => {
                let result = if self.mixers.contains_key(&mixer) {
                    Ok(())
                } else if worker >= self.lanes.workers.len() {
                    Err(format!("no worker {worker}"))
                } else {
                    Mixer::new(config, Instant::now(), rtcp::ntp_now()).map(|m| {
                        tracing::info!(mcu = self.index, %mixer, ?config, "mixer started");
                        self.mixers.insert(mixer, Placed { mixer: m, worker });
                    })
                };
                let _ = reply.send(result);
            }
            Command::AddStream {
                mixer,
                transport,
                spec,
                reply,
            } => {
                let result = match self.mixers.get_mut(&mixer) {
                    None => Err(format!("no mixer {mixer}")),
                    Some(p) => p.mixer.add_stream(transport, spec),
                };
                if result.is_ok() {
                    self.streams.insert(transport, mixer);
                }
                let _ = reply.send(result);
            }
            Command::RemoveStream { transport } => self.forget(transport),
            Command::CloseMixer { mixer } => {
                if let Some(p) = self.mixers.remove(&mixer) {
                    self.retired.add(&p.mixer.stats());
                    tracing::info!(mcu = self.index, %mixer, stats = ?p.mixer.stats(), "mixer closed");
                }
                self.streams.retain(|_, m| *m != mixer);
            }
            Command::StartRecording {
                transport,
                worker,
                media,
                path,
                log,
                reply,
            } => {
                let result = if worker >= self.lanes.workers.len() {
                    Err(format!("no worker {worker}"))
                } else if self.recordings.contains_key(&transport) {
                    Err(format!("stream {transport} is recorded already"))
                } else {
                    tracing::info!(mcu = self.index, %transport, ?path, "recording");
                    let recorder = TrackRecorder::new(media, &path);
                    self.recordings.insert(
                        transport,
                        Recorded {
                            recorder,
                            activity: Activity::new(matches!(media, Media::Opus { .. })),
                            path,
                            log,
                            worker,
                            last_pli: None,
                            failed: false,
                        },
                    );
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::StopRecording { transport, reply } => {
                let _ = reply.send(self.finish_recording(transport));
            }
            Command::Stop => {
                // Every recording's file is finished, not left as a `.rec`.
                let open: Vec<TransportId> = self.recordings.keys().copied().collect();
                for transport in open {
                    self.finish_recording(transport);
                }
                return false;
            }
        }
        true
    }
}
