//! The generator's net threads: every emulated transport's socket, ICE/DTLS/SRTP client and
//! media, driven from pinned threads so the generator's cost per packet stays well below the
//! server's and is measured. One thread by default; several (`--generator-threads`), each on
//! its own core with its own transports, to load a server of several cores.
//!
//! One connected UDP socket per transport (the server tells transports apart by 5-tuple),
//! all registered with one epoll; a ready socket is drained with `recvmmsg`. Received RTP is
//! counted by SSRC and sequence on its clear header; only one audio packet in `SAMPLE` and each
//! video frame's last packet are decrypted (which checks the authentication tag) and read for
//! their send stamps, once the stream's first packet has authenticated (see
//! `Inbound::decrypts`). Written by hand against libc because this is the generator's hot path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_dataplane::client::{self, Client, Received};
use switchyard_dataplane::rtcp::{self, ReceiveStats};
use switchyard_dataplane::{demux, rtp, srtp};

use crate::clip::{Clip, ClipSource};
use crate::stats::Totals;
use crate::traffic::{self, Kind, Source, Video};

/// One received RTP packet in this many (by sequence number) is decrypted and timed.
const SAMPLE: u16 = 8;
const BATCH: usize = 32;
const DATAGRAM: usize = 2048;
/// How often handshakes, consent checks and DTLS timers are driven.
const CLIENT_TICK: Duration = Duration::from_millis(5);
const SNAPSHOT: Duration = Duration::from_secs(1);
/// New transports waiting for the net thread.
const QUEUE: usize = 1024;

/// What a transport does once connected.
pub enum Role {
    /// Sends media: its video, and (SSRC, payload type) of its audio.
    Publish {
        video: Option<Video>,
        audio: Option<(u32, u8)>,
    },
    /// Receives media; `clock_rates` maps the negotiated payload types to their RTP clocks.
    /// `layer`: the simulcast layer (index into `traffic::SIMULCAST`) it asked for with its
    /// `maxHeight`, whose received video is counted in `Totals::layers`.
    Subscribe {
        clock_rates: Vec<(u8, u32)>,
        layer: Option<usize>,
    },
    /// An MCU participant: sends `clip` as (SSRC, payload type) of its video and audio, and
    /// receives the mix on the same transport (counted in `Totals::mix`).
    Mix {
        clip: Arc<Clip>,
        video: Option<(u32, u8)>,
        audio: Option<(u32, u8)>,
        /// Sends the clip's tone; otherwise silence (a listener).
        talking: bool,
        clock_rates: Vec<(u8, u32)>,
    },
}

/// What a sending transport sends: the synthetic media an SFU forwards unread, or a real
/// clip a mixer decodes.
enum Sender {
    Synthetic(Source),
    Clip(ClipSource),
}

impl Sender {
    fn next_due(&self) -> Instant {
        match self {
            Sender::Synthetic(s) => s.next_due(),
            Sender::Clip(c) => c.next_due(),
        }
    }

    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(Kind, usize)> {
        match self {
            Sender::Synthetic(s) => s.poll(now, out),
            Sender::Clip(c) => c.poll(now, out),
        }
    }

    fn request_keyframe(&mut self, now: Instant, ssrc: u32) {
        match self {
            Sender::Synthetic(s) => s.request_keyframe(now, ssrc),
            Sender::Clip(c) => c.request_keyframe(),
        }
    }

    fn take_lag(&mut self) -> Duration {
        match self {
            Sender::Synthetic(s) => std::mem::take(&mut s.max_lag),
            Sender::Clip(c) => std::mem::take(&mut c.max_lag),
        }
    }
}

/// A transport whose signalling is done, handed to the net thread to connect.
pub struct NewTransport {
    pub server: SocketAddr,
    pub client: Client,
    pub role: Role,
    /// When its signalling began (for join time).
    pub started: Instant,
}

/// The handle the signalling side holds.
pub struct Net {
    threads: Vec<NetThread>,
    /// The thread the next transport goes to (round robin).
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
}

/// One net thread: its queue of new transports and its last two snapshots.
struct NetThread {
    queue: SyncSender<NewTransport>,
    totals: Arc<Mutex<Snapshots>>,
    thread: Option<JoinHandle<()>>,
}

/// A net thread's last two snapshots: while one thread has published the second another has
/// not yet, the merge takes the one before from the first, so that every count in it is of the
/// same second.
#[derive(Default)]
struct Snapshots {
    previous: Totals,
    latest: Totals,
}

impl Net {
    /// Starts one net thread per entry of `cores`, each pinned to its core if given. They
    /// share one epoch, so that send stamps read on another thread than the sender's keep
    /// their meaning and every thread snapshots at the same instants.
    pub fn spawn(cores: &[Option<usize>]) -> io::Result<Net> {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut threads = Vec::with_capacity(cores.len().max(1));
        for (index, &core) in cores.iter().enumerate() {
            let (queue, incoming) = std::sync::mpsc::sync_channel(QUEUE);
            let totals = Arc::new(Mutex::new(Snapshots::default()));
            let (t, s) = (totals.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("loadtest-net-{index}"))
                .spawn(move || {
                    if let Some(id) = core
                        && !core_affinity::set_for_current(core_affinity::CoreId { id })
                    {
                        tracing::warn!("could not pin net thread {index} to core {id}");
                    }
                    match Thread::new(incoming, t, s, epoch) {
                        Ok(mut thread) => thread.run(),
                        Err(e) => tracing::error!("net thread {index}: {e}"),
                    }
                })?;
            threads.push(NetThread {
                queue,
                totals,
                thread: Some(thread),
            });
        }
        Ok(Net {
            threads,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many net threads there are.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Hands a transport over to the next thread in turn; waits while its queue is full.
    pub fn add(&self, mut transport: NewTransport) -> Result<(), NetStopped> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len().max(1);
        let Some(thread) = self.threads.get(i) else {
            return Err(NetStopped);
        };
        loop {
            match thread.queue.try_send(transport) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(t)) => {
                    transport = t;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return Err(NetStopped),
            }
        }
    }

    /// The latest once-a-second snapshot every thread has published, merged.
    pub fn totals(&self) -> Totals {
        let snapshots: Vec<(Totals, Totals)> = self
            .threads
            .iter()
            .map(|thread| {
                let s = thread.totals.lock().unwrap_or_else(|p| p.into_inner());
                (s.previous.clone(), s.latest.clone())
            })
            .collect();
        same_second(&snapshots)
    }
}

/// Merges each thread's (previous, latest) snapshots of the same second: the second every
/// thread has reached. A thread one snapshot ahead gives its one before; a thread further
/// ahead (another stalled) its latest, as there is no better.
fn same_second(snapshots: &[(Totals, Totals)]) -> Totals {
    let tick = snapshots.iter().map(|(_, l)| l.tick).min().unwrap_or(0);
    let mut all = Totals::default();
    for (previous, latest) in snapshots {
        let t = if latest.tick > tick && previous.tick == tick {
            previous
        } else {
            latest
        };
        all.merge(t);
    }
    all
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in &mut self.threads {
            if let Some(t) = thread.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the net thread has stopped")]
pub struct NetStopped;

/// One received stream on a subscriber transport.
struct Inbound {
    ssrc: u32,
    /// Video (a 90 kHz clock), counted per layer.
    video: bool,
    stats: ReceiveStats,
    /// The client's SRTP context has accepted a packet of this stream.
    authenticated: bool,
    /// On an MCU participant's transport: how late packets come against the stream's RTP
    /// clock (the mix carries no send stamps: the mixer decodes and re-encodes).
    delay: Option<Delay>,
}

/// A mixed stream's delay against its own RTP clock: each packet's arrival time minus its
/// timestamp in wall time, over the smallest such offset of the last one to two seconds. A
/// mixer that keeps its clock sends every packet at the same offset (zero); a late tick, a
/// late encode or a queue on the way shows as the packet's extra delay. The minimum is a
/// recent one so that a clock that once skipped ahead (a mixer that dropped a tick) counts
/// for its moment, not for the rest of the run. Recorded with the sampled latencies.
#[derive(Default)]
struct Delay {
    /// The last timestamp and the running extended one (wraps unrolled).
    last: Option<u32>,
    extended: i64,
    /// Smallest offsets of the previous and the current window, and when the current began.
    min_previous: Option<i64>,
    min_current: Option<i64>,
    window_start_us: i64,
}

/// How long one window of `Delay`'s minimum lasts.
const DELAY_WINDOW_US: i64 = 1_000_000;

impl Delay {
    /// The extra delay of a packet with RTP `timestamp` that arrived `arrival_us` after the
    /// epoch, on a `clock` Hz clock.
    fn extra(&mut self, timestamp: u32, clock: u32, arrival_us: i64) -> Duration {
        if let Some(last) = self.last {
            self.extended += i64::from(timestamp.wrapping_sub(last) as i32);
        }
        self.last = Some(timestamp);
        if arrival_us - self.window_start_us >= DELAY_WINDOW_US {
            self.min_previous = self.min_current.take();
            self.window_start_us = arrival_us;
        }
        let media_us = self.extended * 1_000_000 / i64::from(clock.max(1));
        let offset = arrival_us - media_us;
        let current = self.min_current.map_or(offset, |m| m.min(offset));
        self.min_current = Some(current);
        let min = self.min_previous.map_or(current, |m| m.min(current));
        Duration::from_micros((offset - min).unsigned_abs())
    }
}

impl Inbound {
    /// Whether the packet with sequence number `seq` is decrypted: every packet until one has
    /// authenticated, then one audio packet in `SAMPLE` and every video frame's last packet
    /// (`marker`). Latency is read from those: a frame's latency, the time until it is whole
    /// at the receiver. A video frame can be decoded only once its last packet is in, and the
    /// SFU may hold a frame's first packets to send them together (`router::fanout`).
    ///
    /// The SRTP receiver infers a packet's rollover counter from the highest sequence number
    /// it has accepted, and takes the first packet of a stream it knows nothing of to be in
    /// roll 0 (RFC 3711 §3.3.1), as libsrtp does; the server's sender counts rolls from the
    /// first packet it sent. Sampling from the first packet on let the sequence number wrap,
    /// unseen, between the first packet received and the first one decrypted whenever a
    /// stream began at 65529..=65535 (one stream in 9,400; one audio-room run of 1,000
    /// streams in ten): the server then authenticated with roll 1, the client checked with
    /// roll 0, and every sampled packet of that stream failed, 89 in the run that showed it.
    /// Once a packet has authenticated, the gaps sampling leaves (`SAMPLE` - 1 packets) are
    /// far below the 32,768 the inference tolerates.
    fn decrypts(&self, seq: u16, marker: bool) -> bool {
        !self.authenticated
            || if self.video {
                marker
            } else {
                seq.is_multiple_of(SAMPLE)
            }
    }
}

/// Counts a packet from the server that the client could not decrypt, by why. A DTLS error
/// is not one: a handshake that fails shows as a failed transport.
fn count_undecrypted(totals: &mut Totals, error: &client::Error) {
    match error {
        client::Error::NotConnected => totals.before_keys += 1,
        client::Error::Srtp(srtp::Error::Replay | srtp::Error::TooOld) => totals.replayed += 1,
        client::Error::Srtp(_) => totals.auth_failures += 1,
        client::Error::Dtls(_) => {}
    }
}

struct Transport {
    socket: UdpSocket,
    server: SocketAddr,
    client: Client,
    started: Instant,
    joined: bool,
    /// Counted in `Totals::connected`.
    counted: bool,
    failed: bool,
    source: Option<Sender>,
    /// An MCU participant: it sends and receives on this transport.
    mix: bool,
    clock_rates: Vec<(u8, u32)>,
    /// A simulcast subscriber's layer (see `Role::Subscribe`).
    layer: Option<usize>,
    inbound: Vec<Inbound>,
}

/// The most a receive buffer takes: a whole GSO train, coalesced by UDP GRO.
const TRAIN: usize = 65_536;
/// Room for the `UDP_GRO` control message (`CMSG_SPACE(sizeof(int))` is 24 on 64-bit Linux).
const CONTROL: usize = 32;

/// Turns UDP GRO on for `socket`: a GSO train from the server then arrives as one message
/// (one system call and one trip up the stack for its datagrams), split here by its segment
/// size. A kernel without it delivers datagrams one by one, as before.
fn enable_gro(socket: &UdpSocket) {
    set_udp_option(socket, libc::UDP_GRO, 1);
}

/// Sets the `SOL_UDP` option `option` of `socket` to `value`; whether the kernel took it.
fn set_udp_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from the live local `value`.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL]);

/// `recvmmsg` state: buffers, their iovecs, control areas and headers, built once (the boxes
/// never move). Each buffer takes a whole GRO train.
struct RecvBatch {
    bufs: Box<[u8]>,
    _iovecs: Box<[libc::iovec]>,
    _controls: Box<[Control]>,
    headers: Box<[libc::mmsghdr]>,
}

impl RecvBatch {
    fn new() -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * TRAIN].into_boxed_slice();
        let mut iovecs: Box<[libc::iovec]> = bufs
            .chunks_exact_mut(TRAIN)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: TRAIN,
            })
            .collect();
        let mut controls = vec![Control([0; CONTROL]); BATCH].into_boxed_slice();
        let headers = iovecs
            .iter_mut()
            .zip(controls.iter_mut())
            .map(|(iov, control)| {
                // SAFETY: msghdr is plain data; all-zero is a valid empty header.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
                h
            })
            .collect();
        RecvBatch {
            bufs,
            _iovecs: iovecs,
            _controls: controls,
            headers,
        }
    }

    /// Receives up to `BATCH` messages (datagrams or GRO trains) without blocking; returns
    /// how many.
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        for h in self.headers.iter_mut() {
            h.msg_hdr.msg_controllen = CONTROL;
        }
        // SAFETY: every header points at its own iovec, buffer and control area, which live
        // as long as self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Where the datagrams of message `i` lie in its buffer: cut at its GRO segment size, or
    /// the whole message when it is one datagram.
    fn datagrams(&self, i: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (len, segment) = self.message(i);
        (0..len)
            .step_by(segment)
            .map(move |start| start..len.min(start + segment))
    }

    /// Message `i`'s length and the size of the datagrams in it.
    fn message(&self, i: usize) -> (usize, usize) {
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(TRAIN);
        let mut segment = len;
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into this
        // header's own control area; the CMSG macros stay within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        (len, segment.max(1))
    }

    /// The bytes `range` of message `i`.
    fn bytes(&mut self, i: usize, range: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.bufs[i * TRAIN..(i + 1) * TRAIN][range]
    }
}

struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms)
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

struct Thread {
    incoming: Receiver<NewTransport>,
    shared: Arc<Mutex<Snapshots>>,
    stop: Arc<AtomicBool>,
    epoll: Epoll,
    transports: Vec<Transport>,
    publishers: Vec<usize>,
    totals: Totals,
    epoch: Instant,
    batch: RecvBatch,
    send_buf: Box<[u8]>,
}

impl Thread {
    fn new(
        incoming: Receiver<NewTransport>,
        shared: Arc<Mutex<Snapshots>>,
        stop: Arc<AtomicBool>,
        epoch: Instant,
    ) -> io::Result<Thread> {
        Ok(Thread {
            incoming,
            shared,
            stop,
            epoll: Epoll::new()?,
            transports: Vec::new(),
            publishers: Vec::new(),
            totals: Totals::default(),
            epoch,
            batch: RecvBatch::new(),
            send_buf: vec![0u8; DATAGRAM].into_boxed_slice(),
        })
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_tick = Instant::now();
        // On the shared epoch's seconds, as every net thread.
        let mut next_snapshot = self.epoch + SNAPSHOT;
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(t) = self.incoming.try_recv() {
                if let Err(e) = self.add(t) {
                    tracing::warn!("could not set up a transport: {e}");
                    self.totals.failed += 1;
                }
            }
            let now = Instant::now();
            let due = self.next_media_due().min(next_tick).min(next_snapshot);
            // Round up: a zero timeout while the next packet is less than a millisecond away
            // would spin the core we are measuring with.
            let wait = due.saturating_duration_since(now);
            let timeout = if wait.is_zero() {
                0
            } else {
                (wait.as_micros().div_ceil(1000)).min(5) as i32
            };
            let n = self.epoll.wait(&mut events, timeout);
            for ev in &events[..n] {
                self.drain(ev.u64 as usize);
            }
            let now = Instant::now();
            self.send_media(now);
            if now >= next_tick {
                self.drive_clients(now);
                next_tick = now + CLIENT_TICK;
            }
            if now >= next_snapshot {
                self.snapshot(now);
                next_snapshot += SNAPSHOT;
            }
        }
    }

    fn add(&mut self, t: NewTransport) -> io::Result<()> {
        // On loopback, send from the server's own address: Janus on a veth with 127.0.0.2
        // cannot send to 127.0.0.1 (scripts/janus.sh).
        let ip = match t.server.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let local = SocketAddr::new(ip, 0);
        let socket = UdpSocket::bind(local)?;
        socket.connect(t.server)?;
        socket.set_nonblocking(true)?;
        enable_gro(&socket);
        let index = self.transports.len();
        self.epoll.add(socket.as_raw_fd(), index as u64)?;
        let mix = matches!(t.role, Role::Mix { .. });
        let (source, clock_rates, layer) = match t.role {
            Role::Publish { video, audio } => {
                self.publishers.push(index);
                let source = Source::new(video, audio, self.epoch, Instant::now());
                (Some(Sender::Synthetic(source)), Vec::new(), None)
            }
            Role::Subscribe { clock_rates, layer } => {
                if let Some(count) = layer.and_then(|l| self.totals.layers.get_mut(l)) {
                    count.subscribers += 1;
                }
                (None, clock_rates, layer)
            }
            Role::Mix {
                clip,
                video,
                audio,
                talking,
                clock_rates,
            } => {
                self.publishers.push(index);
                self.totals.mix.participants += 1;
                let source = ClipSource::new(clip, video, audio, talking, Instant::now());
                (Some(Sender::Clip(source)), clock_rates, None)
            }
        };
        self.transports.push(Transport {
            socket,
            server: t.server,
            client: t.client,
            started: t.started,
            joined: false,
            counted: false,
            failed: false,
            source,
            mix,
            clock_rates,
            layer,
            inbound: Vec::new(),
        });
        Ok(())
    }

    fn next_media_due(&self) -> Instant {
        self.publishers
            .iter()
            .filter_map(|&i| self.transports[i].source.as_ref().map(Sender::next_due))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
    }

    /// Reads everything waiting on transport `index`'s socket.
    fn drain(&mut self, index: usize) {
        let Some(fd) = self.transports.get(index).map(|t| t.socket.as_raw_fd()) else {
            return;
        };
        loop {
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                // Would block, or an ICMP error from a closed port: nothing more to read now.
                Err(_) => return,
            };
            let now = Instant::now();
            for i in 0..n {
                let epoch = self.epoch;
                for range in self.batch.datagrams(i) {
                    let data = self.batch.bytes(i, range);
                    self.totals.packets_in += 1;
                    self.totals.bytes_in += data.len() as u64;
                    if let Some(t) = self.transports.get_mut(index) {
                        t.receive(now, epoch, data, &mut self.totals);
                    }
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn send_media(&mut self, now: Instant) {
        for &i in &self.publishers {
            let t = &mut self.transports[i];
            if !t.client.is_connected() {
                continue;
            }
            let Some(source) = t.source.as_mut() else {
                continue;
            };
            while let Some((_, len)) = source.poll(now, &mut self.send_buf) {
                let Ok(n) = t.client.protect_rtp(&mut self.send_buf, len) else {
                    continue;
                };
                if t.socket.send(&self.send_buf[..n]).is_ok() {
                    self.totals.packets_out += 1;
                    self.totals.bytes_out += n as u64;
                }
            }
        }
    }

    /// Handshakes, consent checks and DTLS retransmissions.
    fn drive_clients(&mut self, now: Instant) {
        let mut buf = [0u8; DATAGRAM];
        for t in &mut self.transports {
            // Connected clients only have consent checks to send, every few seconds.
            if t.failed || (t.counted && now < t.client.poll_timeout()) {
                continue;
            }
            if t.client.handle_timeout(now).is_err() {
                t.failed = true;
                self.totals.failed += 1;
                continue;
            }
            loop {
                match t.client.poll_transmit(now, &mut buf) {
                    Ok(Some(n)) => {
                        let _ = t.socket.send(&buf[..n]);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        t.failed = true;
                        self.totals.failed += 1;
                        break;
                    }
                }
            }
            if !t.counted && t.client.is_connected() {
                t.counted = true;
                self.totals.connected += 1;
            }
            // A publisher has joined once DTLS is done: its media starts now. (An MCU
            // participant, once the mix reaches it.)
            if t.source.is_some() && !t.mix && !t.joined && t.client.is_connected() {
                t.joined = true;
                self.totals
                    .join_ms
                    .push(now.duration_since(t.started).as_secs_f64() * 1000.0);
            }
        }
    }

    fn snapshot(&mut self, now: Instant) {
        let (mut expected, mut received, mut jitter, mut streams) = (0, 0, 0.0, 0usize);
        let mut lag = Duration::ZERO;
        for t in &mut self.transports {
            for s in &t.inbound {
                let (e, r) = s.stats.counts();
                expected += e;
                received += r;
                jitter += s.stats.jitter();
                streams += 1;
            }
            if let Some(source) = t.source.as_mut() {
                lag = lag.max(source.take_lag());
            }
        }
        self.totals.expected = expected;
        self.totals.received = received;
        self.totals.jitter = if streams == 0 {
            0.0
        } else {
            jitter / streams as f64
        };
        self.totals.send_lag = lag;
        self.totals.at = now.duration_since(self.epoch).as_secs_f64();
        self.totals.net_cpu = vec![thread_cpu()];
        self.totals.tick += 1;
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.previous = std::mem::replace(&mut shared.latest, self.totals.clone());
    }
}

impl Transport {
    fn receive(&mut self, now: Instant, epoch: Instant, data: &mut [u8], totals: &mut Totals) {
        if demux::classify(data) == demux::PacketKind::Rtp && (self.source.is_none() || self.mix) {
            self.receive_rtp(now, epoch, data, totals);
            return;
        }
        let srtcp = demux::classify(data) == demux::PacketKind::Rtcp;
        let received = self.client.handle_datagram_from(now, self.server, data);
        // Answers to the server's connectivity checks (Janus sends them) and the next DTLS
        // flight go out at once.
        let mut out = [0u8; DATAGRAM];
        while let Ok(Some(n)) = self.client.poll_transmit(now, &mut out) {
            let _ = self.socket.send(&out[..n]);
        }
        match received {
            Ok(Received::Rtcp(len)) => {
                let Some(source) = self.source.as_mut() else {
                    return;
                };
                for packet in rtcp::packets(&data[..len]).flatten() {
                    match packet {
                        rtcp::Packet::Pli { media_ssrc, .. } => {
                            source.request_keyframe(now, media_ssrc);
                        }
                        rtcp::Packet::Fir { entries, .. } => {
                            for (ssrc, _) in entries {
                                source.request_keyframe(now, ssrc);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok(_) => {}
            // Every SRTCP packet is decrypted: a failure is counted like a sampled RTP one.
            Err(e) if srtcp => count_undecrypted(totals, &e),
            // Stray handshake packets are not the generator's concern.
            Err(_) => {}
        }
    }

    /// Counts an RTP packet by its clear header; decrypts some for latency (`Inbound::decrypts`).
    fn receive_rtp(&mut self, now: Instant, epoch: Instant, data: &mut [u8], totals: &mut Totals) {
        let Ok(h) = rtp::Header::parse(data) else {
            return;
        };
        let index = match self.inbound.iter().position(|s| s.ssrc == h.ssrc) {
            Some(i) => i,
            None => {
                let clock = self
                    .clock_rates
                    .iter()
                    .find(|(pt, _)| *pt == h.payload_type)
                    .map_or(90_000, |(_, c)| *c);
                self.inbound.push(Inbound {
                    ssrc: h.ssrc,
                    video: clock == 90_000,
                    stats: ReceiveStats::new(clock),
                    authenticated: false,
                    delay: self.mix.then(Delay::default),
                });
                self.inbound.len() - 1
            }
        };
        let inbound = &mut self.inbound[index];
        inbound.stats.on_packet(h.sequence, h.timestamp, now);
        if let Some(delay) = &mut inbound.delay {
            let clock = if inbound.video { 90_000 } else { 48_000 };
            let arrival_us = now.duration_since(epoch).as_micros() as i64;
            totals
                .latency
                .record(delay.extra(h.timestamp, clock, arrival_us));
            if !inbound.video {
                totals.mix.audio_packets += 1;
            } else if h.marker {
                totals.mix.video_frames += 1;
            }
        }
        if self.inbound[index].video
            && let Some(count) = self.layer.and_then(|l| totals.layers.get_mut(l))
        {
            count.video_packets += 1;
        }
        if !self.joined {
            self.joined = true;
            totals
                .join_ms
                .push(now.duration_since(self.started).as_secs_f64() * 1000.0);
        }
        if !self.inbound[index].decrypts(h.sequence, h.marker) {
            return;
        }
        let frame_end = !self.inbound[index].video || h.marker;
        match self.client.handle_datagram_from(now, self.server, data) {
            Ok(Received::Rtp(len)) => {
                self.inbound[index].authenticated = true;
                let Ok(h) = rtp::Header::parse(&data[..len]) else {
                    return;
                };
                if let Some(sent) = data
                    .get(h.payload_offset..h.payload_end)
                    .and_then(traffic::read_stamp)
                    .filter(|_| frame_end)
                {
                    let sent = epoch + Duration::from_nanos(sent);
                    totals.latency.record(now.saturating_duration_since(sent));
                }
            }
            Ok(_) => {}
            Err(e) => count_undecrypted(totals, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Totals, same_second};

    #[test]
    fn snapshots_of_one_second_are_merged() {
        let at = |tick: u64, received| Totals {
            at: tick as f64,
            tick,
            received,
            net_cpu: vec![0.0],
            ..Default::default()
        };
        // Thread 0 has published second 3, thread 1 only second 2: both give second 2.
        let merged = same_second(&[(at(2, 20), at(3, 30)), (at(1, 5), at(2, 7))]);
        assert_eq!(
            (merged.tick, merged.received, merged.net_cpu.len()),
            (2, 27, 2)
        );
        // Both at second 3.
        let merged = same_second(&[(at(2, 20), at(3, 30)), (at(2, 7), at(3, 9))]);
        assert_eq!((merged.tick, merged.received), (3, 39));
    }

    /// A GSO train sent to a socket with GRO on arrives as one message and splits back into
    /// its datagrams; a lone datagram is a message of one.
    #[test]
    fn gro_trains_split_into_their_datagrams() {
        use std::os::fd::AsRawFd;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        enable_gro(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        if !set_udp_option(&tx, libc::UDP_SEGMENT, 100) {
            eprintln!("no UDP GSO here: skipped");
            return;
        }
        let train: Vec<u8> = (0..250).map(|i| (i / 100) as u8).collect();
        tx.send(&train).unwrap();
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        for _ in 0..100 {
            if let Ok(n) = batch.recv(rx.as_raw_fd()) {
                for i in 0..n {
                    for range in batch.datagrams(i) {
                        let d = batch.bytes(i, range);
                        got.push((d.len(), d[0]));
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(got, [(100, 0), (100, 1), (50, 2)]);
    }

    use switchyard_dataplane::rtp::HeaderFields;
    use switchyard_dataplane::srtp::{Context, Profile};

    use super::*;

    const KEY: [u8; 16] = [7; 16];
    const SALT: [u8; 14] = [9; 14];
    const SSRC: u32 = 0x99b0_69db;

    /// `count` packets of one stream as the server's consumer sends them: protected by one
    /// context from its first packet, sequence numbers from `first` on.
    fn sent(first: u16, count: u16) -> Vec<Vec<u8>> {
        let mut sender = Context::new(Profile::Aes128CmHmacSha1_80, &KEY, &SALT).unwrap();
        (0..count)
            .map(|i| {
                let fields = HeaderFields {
                    marker: false,
                    payload_type: 111,
                    sequence: first.wrapping_add(i),
                    timestamp: 960 * u32::from(i),
                    ssrc: SSRC,
                };
                let mut buf = vec![0u8; 64];
                let header = rtp::write_header(&mut buf, &fields, &[]).unwrap();
                buf[header..header + 20].fill(0xf8);
                let len = sender.protect_rtp(&mut buf, header + 20).unwrap();
                buf.truncate(len);
                buf
            })
            .collect()
    }

    fn seq(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[2], packet[3]])
    }

    /// The run that printed 89 auth failures: a stream whose first packet was 65529, so the
    /// first one in `SAMPLE` (0) came after the wrap. Decrypting one in `SAMPLE` from the start
    /// fails every sampled packet; decrypting every packet until one authenticates fails none,
    /// and then samples as before.
    #[test]
    fn a_wrap_before_the_first_sampled_packet_fails_nothing() {
        let packets = sent(65529, 200);

        let mut receiver = Context::new(Profile::Aes128CmHmacSha1_80, &KEY, &SALT).unwrap();
        let sampled_from_the_start: Vec<_> = packets
            .iter()
            .filter(|p| seq(p).is_multiple_of(SAMPLE))
            .map(|p| receiver.unprotect_rtp(&mut p.clone()))
            .collect();
        assert_eq!(sampled_from_the_start.len(), 25);
        assert!(
            sampled_from_the_start
                .iter()
                .all(|r| *r == Err(srtp::Error::AuthFailed)),
            "{sampled_from_the_start:?}"
        );

        let mut receiver = Context::new(Profile::Aes128CmHmacSha1_80, &KEY, &SALT).unwrap();
        let mut inbound = Inbound {
            ssrc: SSRC,
            video: false,
            stats: ReceiveStats::new(48_000),
            authenticated: false,
            delay: None,
        };
        let mut decrypted = Vec::new();
        for p in &packets {
            if !inbound.decrypts(seq(p), false) {
                continue;
            }
            let result = receiver.unprotect_rtp(&mut p.clone());
            assert!(result.is_ok(), "sequence {}: {result:?}", seq(p));
            inbound.authenticated = true;
            decrypted.push(seq(p));
        }
        // The first packet, then the sampled ones across the wrap and after it.
        assert_eq!(decrypted[..3], [65529, 0, 8]);
        assert_eq!(decrypted.len(), 1 + 25);
    }

    /// 20 ms audio: on time reads zero, a late packet its lateness, and a clock that skipped
    /// a tick stops counting once its window has passed.
    #[test]
    fn delay_is_against_the_streams_recent_clock() {
        let mut d = Delay::default();
        let ms = |v: i64| v * 1000;
        let at = |d: &mut Delay, tick: u32, arrival_ms: i64| {
            d.extra(
                tick.wrapping_mul(960).wrapping_sub(1920),
                48_000,
                ms(arrival_ms),
            )
        };
        assert_eq!(at(&mut d, 0, 5), Duration::ZERO);
        assert_eq!(at(&mut d, 1, 25), Duration::ZERO);
        assert_eq!(at(&mut d, 2, 52), Duration::from_millis(7));
        // From tick 3 on the clock runs 100 ms behind (a skip): late at first, then not.
        assert_eq!(at(&mut d, 3, 165), Duration::from_millis(100));
        for tick in 4..150 {
            at(&mut d, tick, 165 + i64::from(tick - 3) * 20);
        }
        assert_eq!(at(&mut d, 150, 165 + 147 * 20), Duration::ZERO);
    }

    #[test]
    fn undecrypted_packets_are_counted_by_why() {
        let mut totals = Totals::default();
        for e in [
            client::Error::NotConnected,
            client::Error::NotConnected,
            client::Error::Srtp(srtp::Error::AuthFailed),
            client::Error::Srtp(srtp::Error::TooShort),
            client::Error::Srtp(srtp::Error::Replay),
            client::Error::Srtp(srtp::Error::TooOld),
        ] {
            count_undecrypted(&mut totals, &e);
        }
        assert_eq!(totals.before_keys, 2);
        assert_eq!(totals.auth_failures, 2);
        assert_eq!(totals.replayed, 2);
    }
}
