//! One shard thread: a mio event loop over the shard's heartbeat sockets and its inbox, driving
//! one presence core (`Shard`). Pinned to its core; never blocks on anything downstream.
//!
//! Each round: read datagrams (recvmmsg, bounded per socket so the inbox is not starved),
//! decode and validate them, apply entries this shard owns and batch the others to their
//! owners; drain the inbox (entries from other shards, requests from the hub); advance the
//! timing wheel to now; hand transitions to the hub through a bounded outbox. The poll timeout
//! is the time to the next tick, so offline detection stays within a tick of the deadline.

use crate::auth::{AuthError, Verifier};
use crate::bus::{EntryBatch, Inbox, Request, ToHub};
use crate::ingest::RecvBatch;
use crate::route::owner;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Heartbeat, Report, Transition};
use presenced_core::shard::Shard;
use presenced_wire::stats::ShardStats;
use presenced_wire::DecodeError;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The token of a shard's waker.
pub const WAKER: Token = Token(usize::MAX);
/// Receive calls per socket per round before the loop serves its inbox and timers.
const RECV_ROUNDS: usize = 16;
/// Inbox messages per round before the loop serves its sockets and timers.
const INBOX_ROUND: usize = 1024;
/// Refused datagrams are logged at most once per reason per shard in this many ms.
const LOG_EVERY_MS: u64 = 10_000;

/// How to reach a shard: its inbox and its waker.
#[derive(Clone)]
pub struct Peer {
    /// The shard's inbox.
    pub inbox: Sender<Inbox>,
    /// Wakes the shard's event loop.
    pub waker: Arc<Waker>,
}

/// Everything a shard thread needs, built by the daemon before it starts.
pub struct ShardSetup {
    /// This shard's index.
    pub index: usize,
    /// The presence core's configuration.
    pub core: CoreConfig,
    /// The event loop (its waker is in `peers[index]`).
    pub poll: Poll,
    /// Heartbeat sockets this shard reads.
    pub sockets: Vec<std::net::UdpSocket>,
    /// This shard's inbox.
    pub inbox: Receiver<Inbox>,
    /// Every shard, this one included, by index.
    pub peers: Vec<Peer>,
    /// The channel to the push-link hub.
    pub to_hub: Sender<ToHub>,
    /// Datagrams per receive call.
    pub recv_batch: usize,
    /// Entries per cross-shard batch.
    pub cross_shard_batch: usize,
    /// Messages the outbox to the hub holds before transitions are shed.
    pub link_outbox: usize,
    /// Time zero of the daemon's monotonic clock.
    pub origin: Instant,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// The CPU to pin this thread to, if any.
    pub cpu: Option<usize>,
    /// Datagram authentication (keys, skew, replay windows).
    pub verifier: Verifier,
}

/// Reads both clocks.
pub fn now(origin: Instant) -> Now {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Now {
        mono_us: origin.elapsed().as_micros() as u64,
        wall_ms,
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE, checked.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpu index too large",
            ));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to`; CPU_ISSET reads within the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

struct Worker {
    index: usize,
    shard: Shard,
    peers: Vec<Peer>,
    routes: Vec<EntryBatch>,
    to_wake: Vec<bool>,
    batch_size: usize,
    out: Vec<Transition>,
    outbox: VecDeque<ToHub>,
    outbox_limit: usize,
    shed_unreported: u64,
    /// Receipt time of the earliest datagram applied since the last flush (`u64::MAX`: none).
    pending_since: u64,
    to_hub: Sender<ToHub>,
    counters: ShardStats,
    dropped: [u64; DecodeError::REASONS.len()],
    verifier: Verifier,
    refused: [u64; AuthError::REASONS.len()],
    /// Per refusal reason: wall ms of the last log line, and refusals since.
    log: [(u64, u64); AuthError::REASONS.len()],
    origin: Instant,
}

/// Runs a shard thread until `stop` is set.
pub fn run(setup: ShardSetup) -> io::Result<()> {
    if let Some(cpu) = setup.cpu {
        pin_to(cpu)?;
    }
    let ShardSetup {
        index,
        core,
        mut poll,
        sockets,
        inbox,
        peers,
        to_hub,
        recv_batch,
        cross_shard_batch,
        link_outbox,
        origin,
        stop,
        verifier,
        ..
    } = setup;
    let tick_us = core.tick_us;
    let tick = Duration::from_micros(tick_us);
    let shard = Shard::new(core, now(origin))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    for region in shard.regions() {
        crate::memory::advise_huge_pages(region);
    }
    let mut sockets: Vec<UdpSocket> = sockets.into_iter().map(UdpSocket::from_std).collect();
    for (i, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, Token(i), Interest::READABLE)?;
    }
    let shards = peers.len();
    let mut w = Worker {
        index,
        shard,
        routes: vec![EntryBatch::new(); shards],
        to_wake: vec![false; shards],
        peers,
        batch_size: cross_shard_batch.clamp(1, crate::bus::MAX_BATCH),
        out: Vec::with_capacity(1024),
        outbox: VecDeque::with_capacity(link_outbox),
        outbox_limit: link_outbox,
        shed_unreported: 0,
        pending_since: u64::MAX,
        to_hub,
        counters: ShardStats {
            shard: index as u32,
            ..ShardStats::default()
        },
        dropped: [0; DecodeError::REASONS.len()],
        verifier,
        refused: [0; AuthError::REASONS.len()],
        log: [(0, 0); AuthError::REASONS.len()],
        origin,
    };
    let mut recv = RecvBatch::new(recv_batch);
    let mut events = Events::with_capacity(64);
    // Edge-triggered readiness: a socket stays "readable" until a read finds it empty.
    let mut readable = vec![true; sockets.len()];
    // Per socket: the kernel's drop count last seen (SO_RXQ_OVFL).
    let mut kernel_drops = vec![0u32; sockets.len()];
    while !stop.load(Ordering::Relaxed) {
        let busy = readable.iter().any(|&r| r) || !w.outbox.is_empty() || !inbox.is_empty();
        let timeout = if busy {
            Duration::ZERO
        } else {
            let mono = origin.elapsed();
            tick.saturating_sub(Duration::from_micros(mono.as_micros() as u64 % tick_us))
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for event in events.iter() {
            if let Some(r) = readable.get_mut(event.token().0) {
                *r = true;
            }
        }
        for (i, socket) in sockets.iter().enumerate() {
            for _ in 0..RECV_ROUNDS {
                if !readable[i] {
                    break;
                }
                let n = recv.recv(socket)?;
                w.counters.recv_calls += 1;
                if n == 0 {
                    readable[i] = false;
                    break;
                }
                if let Some(drops) = recv.kernel_drops() {
                    // The kernel's count is per socket and wraps at 2^32.
                    let since = drops.wrapping_sub(std::mem::replace(&mut kernel_drops[i], drops));
                    w.counters.kernel_dropped += u64::from(since);
                }
                let now = now(origin);
                for d in 0..n {
                    let (bytes, truncated) = recv.datagram(d);
                    w.datagram(now, bytes, truncated);
                    // A datagram's transitions leave at once, not at the end of the round: a
                    // full receive call is up to ~0.5 ms of work and a busy round 16 of them,
                    // which would otherwise add to every transition's latency. A message per
                    // datagram that changed something stays cheap: under a login storm each
                    // carries up to 89 transitions.
                    if !w.out.is_empty() {
                        w.flush_out(now.mono_us);
                        w.flush_outbox();
                    }
                }
            }
        }
        for message in inbox.try_iter().take(INBOX_ROUND) {
            w.inbox(message);
        }
        let now = now(origin);
        w.shard.advance(now, &mut w.out);
        w.flush_routes();
        w.flush_out(now.mono_us);
        w.flush_outbox();
    }
    Ok(())
}

impl Worker {
    fn datagram(&mut self, now: Now, bytes: &[u8], truncated: bool) {
        self.counters.datagrams += 1;
        let decoded = if truncated {
            Err(DecodeError::TooLong)
        } else {
            presenced_wire::decode(bytes)
        };
        let datagram = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.dropped[e.code()] += 1;
                return;
            }
        };
        if let Err(e) = self.verifier.check(&datagram, now.wall_ms) {
            self.refuse(e, datagram.header().gateway, now.wall_ms);
            return;
        }
        let shards = self.peers.len();
        let mut owned = [Heartbeat {
            user: 0,
            device: 0,
            report: Report::Offline,
            active: false,
        }; presenced_wire::MAX_ENTRIES];
        let mut n = 0;
        for entry in datagram.entries() {
            let hb = Heartbeat {
                user: entry.user,
                device: entry.device,
                report: match entry.state {
                    presenced_wire::State::Online => Report::Online,
                    presenced_wire::State::Idle => Report::Idle,
                    presenced_wire::State::Offline => Report::Offline,
                    presenced_wire::State::Invisible => Report::Invisible,
                },
                active: entry.active,
            };
            let to = owner(hb.user, shards);
            if to == self.index {
                owned[n] = hb;
                n += 1;
            } else {
                self.route(to, hb, now.mono_us);
            }
        }
        if n > 0 {
            self.pending_since = self.pending_since.min(now.mono_us);
            self.shard.heartbeats(now, &owned[..n], &mut self.out);
        }
    }

    /// Counts a refused datagram and logs it, at most once per reason every 10 s.
    fn refuse(&mut self, e: AuthError, gateway: u32, wall_ms: u64) {
        self.refused[e.code()] += 1;
        let (last, since) = &mut self.log[e.code()];
        *since += 1;
        if wall_ms >= *last + LOG_EVERY_MS {
            eprintln!(
                "presenced: shard {}: refused {} datagram(s) as {} (latest from gateway {gateway})",
                self.index,
                since,
                e.reason()
            );
            *last = wall_ms;
            *since = 0;
        }
    }

    fn route(&mut self, to: usize, hb: Heartbeat, received_us: u64) {
        let batch = &mut self.routes[to];
        if batch.is_empty() {
            batch.received_us = received_us;
        }
        batch.push(hb);
        if batch.len() >= self.batch_size {
            self.send_route(to);
        }
    }

    fn send_route(&mut self, to: usize) {
        let batch = self.routes[to];
        self.routes[to].clear();
        let n = batch.len() as u64;
        match self.peers[to].inbox.try_send(Inbox::Entries(batch)) {
            Ok(()) => {
                self.counters.routed_out += n;
                self.to_wake[to] = true;
            }
            Err(_) => self.counters.cross_shard_shed += n,
        }
    }

    fn flush_routes(&mut self) {
        for to in 0..self.routes.len() {
            if !self.routes[to].is_empty() {
                self.send_route(to);
            }
            if std::mem::take(&mut self.to_wake[to]) {
                // A failed wake means the peer is gone (shutting down): nothing to do.
                let _ = self.peers[to].waker.wake();
            }
        }
    }

    fn inbox(&mut self, message: Inbox) {
        match message {
            Inbox::Entries(batch) => {
                self.counters.routed_in += batch.len() as u64;
                self.pending_since = self.pending_since.min(batch.received_us);
                self.shard
                    .heartbeats(now(self.origin), batch.entries(), &mut self.out);
            }
            Inbox::Keys(keys) => self.verifier.set_keys(keys),
            Inbox::Request(request) => {
                // Transitions emitted so far must reach the hub before this answer.
                let now = now(self.origin);
                self.shard.advance(now, &mut self.out);
                self.flush_out(now.mono_us);
                let answer = match request {
                    Request::Snapshot {
                        link,
                        request,
                        subscribe,
                        users,
                    } => ToHub::Snapshot {
                        link,
                        request,
                        subscribe,
                        presence: users.iter().map(|&u| (u, self.shard.query(u))).collect(),
                    },
                    Request::Stats { link, request } => ToHub::Stats {
                        link,
                        request,
                        counters: Arc::new(self.counters()),
                    },
                };
                // Answers are bounded by the hub's requests in flight: never shed.
                self.outbox.push_back(answer);
            }
        }
    }

    fn counters(&self) -> ShardStats {
        let mut c = self.counters.clone();
        c.core = self.shard.stats().clone();
        c.dropped = DecodeError::REASONS
            .iter()
            .zip(self.dropped.iter())
            .chain(AuthError::REASONS.iter().zip(self.refused.iter()))
            .map(|(&r, &n)| (r.to_string(), n))
            .collect();
        c
    }

    /// Moves this round's transitions into the outbox, or sheds them if it is full.
    fn flush_out(&mut self, now_us: u64) {
        let since_us = std::mem::replace(&mut self.pending_since, u64::MAX).min(now_us);
        if self.outbox.len() >= self.outbox_limit {
            let n = self.out.len() as u64;
            self.counters.transitions_shed += n;
            self.shed_unreported += n;
            self.out.clear();
            return;
        }
        if self.shed_unreported > 0 {
            let shed = std::mem::take(&mut self.shed_unreported);
            self.outbox.push_back(ToHub::Shed(shed));
        }
        if !self.out.is_empty() {
            // Sized to its contents: a message waiting in the channel holds no spare room
            // (4096 messages of a few transitions each must not pin 4096 × 1024 slots).
            let transitions = self.out.as_slice().to_vec();
            self.out.clear();
            self.outbox.push_back(ToHub::Transitions {
                since_us,
                transitions,
            });
        }
    }

    fn flush_outbox(&mut self) {
        while let Some(message) = self.outbox.pop_front() {
            match self.to_hub.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    self.outbox.push_front(message);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
    }
}
