//! One shard thread: a mio event loop that moves bytes between the kernel, the channels and the
//! shard's sans-IO node (`presenced_node::node::ShardNode`). Everything the shard decides is
//! the node's; this loop only receives datagrams (recvmmsg), drains the inbox, reads the clock,
//! sends what the node hands out, and sleeps until a socket or the inbox has input or the
//! node's next deadline comes. Pinned to its core; never blocks on anything downstream.

use crate::ingest::allow::Cidr;
use crate::ingest::{DropCount, RecvBatch};
use crate::notify::Beat;
use crate::time::Clock;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_node::bus::{Inbox, ToHub, ToStore};
use presenced_node::node::{Loss, NodeEvent, ShardNode, Transmit};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The token of a shard's waker.
pub const WAKER: Token = Token(usize::MAX);
/// Receive calls per socket per round before the loop serves its inbox and timers.
const RECV_ROUNDS: usize = 16;
/// How often the sockets' drop counts are read when no datagram brings them.
const DROPS_READ_EVERY: Duration = Duration::from_millis(100);
/// Inbox messages per round before the loop serves its sockets and timers.
const INBOX_ROUND: usize = 1024;
/// At shutdown, how long one message may wait for room in the store's channel.
const STORE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach a shard: its inbox and its waker.
#[derive(Clone)]
pub struct Peer {
    /// The shard's inbox.
    pub inbox: Sender<Inbox>,
    /// Wakes the shard's event loop.
    pub waker: Arc<Waker>,
}

impl Peer {
    /// Hands a message to the shard and wakes it, waiting while its inbox is full (for the
    /// hub's requests and key reloads: shards drain their inbox every round and never wait
    /// for the hub, so this cannot deadlock). Fails only when the shard has stopped.
    pub fn send(&self, message: Inbox, timeout: Duration) -> Result<(), ShardStopped> {
        self.inbox
            .send_timeout(message, timeout)
            .map_err(|_| ShardStopped)?;
        // A failed wake means the shard is stopping.
        let _ = self.waker.wake();
        Ok(())
    }
}

/// A shard's inbox stayed full or closed: the shard has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardStopped;

/// Everything a shard thread needs, built by the daemon before it starts.
pub struct ShardSetup {
    /// The node, its memory reserved.
    pub node: ShardNode,
    /// The event loop (its waker is in `peers[index]`).
    pub poll: Poll,
    /// Heartbeat sockets this shard reads.
    pub sockets: Vec<std::net::UdpSocket>,
    /// This shard's inbox.
    pub inbox: Receiver<Inbox>,
    /// Every shard, this one included, by index.
    pub peers: Vec<Peer>,
    /// The channels to the push-link hubs, by hub index (`link.hubs`).
    pub to_hubs: Vec<Sender<ToHub>>,
    /// The channel to the store thread, when state is kept.
    pub to_store: Option<Sender<ToStore>>,
    /// Datagrams per receive call.
    pub recv_batch: usize,
    /// The daemon's clocks.
    pub clock: Clock,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// The CPU to pin this thread to, if any.
    pub cpu: Option<usize>,
    /// Bumped every turn of the loop (the watchdog's and the health check's sign of life).
    pub beat: Arc<Beat>,
    /// `ingest.allow`, compiled into the sockets' filter with the sources the node blocks.
    pub allow: Vec<Cidr>,
}

/// Runs a shard thread until `stop` is set.
pub fn run(setup: ShardSetup) -> io::Result<()> {
    if let Some(cpu) = setup.cpu {
        crate::cpu::pin_to(cpu)?;
    }
    let ShardSetup {
        mut node,
        mut poll,
        sockets,
        inbox,
        peers,
        to_hubs,
        to_store,
        recv_batch,
        clock,
        stop,
        beat,
        allow,
        ..
    } = setup;
    let index = node.stats().shard;
    let mut sockets: Vec<UdpSocket> = sockets.into_iter().map(UdpSocket::from_std).collect();
    for (i, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, Token(i), Interest::READABLE)?;
    }
    let mut out = Outputs {
        peers,
        to_hubs,
        to_store,
        wake: Vec::new(),
    };
    out.wake = vec![false; out.peers.len()];
    let mut recv = RecvBatch::new(recv_batch);
    let mut events = Events::with_capacity(64);
    // Edge-triggered readiness: a socket stays "readable" until a read finds it empty.
    let mut readable = vec![true; sockets.len()];
    // Per socket: the kernel's drop count last seen (SO_RXQ_OVFL, or SO_MEMINFO every
    // DROPS_READ_EVERY for a socket whose filter leaves it nothing to receive).
    let mut kernel_drops = vec![DropCount::default(); sockets.len()];
    let mut drops_read_us = 0;
    while !stop.load(Ordering::Relaxed) {
        beat.bump();
        let busy = readable.iter().any(|&r| r) || !inbox.is_empty();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            // Until the node's next deadline; with none, until input or a wake.
            node.poll_timeout()
                .map(|at_us| Duration::from_micros(at_us.saturating_sub(clock.mono_us())))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
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
                let dropped = recv
                    .kernel_drops()
                    .map_or(0, |drops| kernel_drops[i].advance(drops));
                node.handle_receive(n == recv.capacity(), u64::from(dropped));
                if n == 0 {
                    readable[i] = false;
                    break;
                }
                let now = clock.now();
                for d in 0..n {
                    node.handle_datagram(now, recv.source(d), recv.datagram(d));
                    out.send(&mut node);
                }
            }
        }
        let now_us = clock.mono_us();
        if now_us >= drops_read_us + DROPS_READ_EVERY.as_micros() as u64 {
            drops_read_us = now_us;
            for (i, socket) in sockets.iter().enumerate() {
                if let Ok(drops) = crate::ingest::socket_drops(socket) {
                    node.handle_kernel_drops(u64::from(kernel_drops[i].advance(drops)));
                }
            }
        }
        for message in inbox.try_iter().take(INBOX_ROUND) {
            node.handle_inbox(clock.now(), message);
        }
        node.handle_timeout(clock.now());
        out.send(&mut node);
        out.wake_peers();
        if let Some(blocked) = node.poll_kernel_blocks() {
            for socket in &sockets {
                if let Err(e) = crate::ingest::set_filter(socket, &allow, &blocked) {
                    tracing::warn!(
                        shard = index,
                        error = %e,
                        "cannot update the socket filter of blocked sources (their datagrams \
                         are still dropped unread by the shard)"
                    );
                }
            }
            tracing::debug!(
                shard = index,
                blocked = blocked.len(),
                "kernel filter updated"
            );
        }
        while let Some(event) = node.poll_event() {
            match event {
                NodeEvent::Refused {
                    reason,
                    count,
                    gateway,
                } => tracing::warn!(
                    shard = index,
                    reason,
                    count,
                    latest_gateway = gateway,
                    "datagrams refused"
                ),
                NodeEvent::SourcesBlocked {
                    count,
                    latest,
                    block_ms,
                } => tracing::warn!(
                    shard = index,
                    count,
                    latest = %latest,
                    block_ms,
                    "source addresses blocked (ingest.source_block): they kept sending \
                     datagrams that fail decoding or authentication (their datagrams are \
                     dropped unread; a gateway's own address here means a wrong key, clock or \
                     replays, a broken encoder, or a forged source)"
                ),
                NodeEvent::Lost { loss, count } => tracing::warn!(
                    shard = index,
                    counter = loss.counter(),
                    count,
                    "{}",
                    loss_advice(loss)
                ),
            }
        }
    }
    // Stopping: the whole shard is saved (ingest has stopped), chunk by chunk, and every
    // message for the store is handed over, waiting for it as long as it takes; then the
    // channel closes, which tells the store this shard is done.
    let now = clock.now();
    while out.to_store.is_some() && node.snapshot_final(now) {
        out.send_all_to_store(&mut node);
    }
    out.send_all_to_store(&mut node);
    out.to_store = None;
    Ok(())
}

/// Where the node's transmits go.
struct Outputs {
    peers: Vec<Peer>,
    /// Each hub's channel, by index.
    to_hubs: Vec<Sender<ToHub>>,
    /// The store thread's channel, when state is kept.
    to_store: Option<Sender<ToStore>>,
    /// Shards sent entries since the last wake.
    wake: Vec<bool>,
}

impl Outputs {
    /// Sends what the node has, without blocking: a full inbox of another shard sheds the
    /// batch; a full hub (or store) channel keeps the rest of that destination's messages for
    /// the next turn, and the others go on.
    fn send(&mut self, node: &mut ShardNode) {
        while let Some(transmit) = node.poll_transmit() {
            match transmit {
                Transmit::Peer { shard, batch } => {
                    match self.peers[shard].inbox.try_send(Inbox::Entries(batch)) {
                        Ok(()) => self.wake[shard] = true,
                        Err(e) => {
                            if let Inbox::Entries(batch) = e.into_inner() {
                                node.handle_refused(Transmit::Peer { shard, batch });
                            }
                        }
                    }
                }
                Transmit::Hub(hub, message) => match self.to_hubs[hub].try_send(message) {
                    Ok(()) => {}
                    Err(TrySendError::Full(message)) => {
                        node.handle_refused(Transmit::Hub(hub, message));
                    }
                    // The hub is gone: the daemon is stopping.
                    Err(TrySendError::Disconnected(_)) => {}
                },
                Transmit::Store(message) => {
                    let Some(to_store) = &self.to_store else {
                        continue;
                    };
                    match to_store.try_send(message) {
                        Ok(()) => {}
                        Err(TrySendError::Full(message)) => {
                            node.handle_refused(Transmit::Store(message));
                        }
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
            }
        }
    }

    /// Hands every store message over, waiting for room (at shutdown only); everything else
    /// is dropped (the hub and the other shards are stopping too). A store that is gone or
    /// stuck is let go: nothing more can be saved.
    fn send_all_to_store(&mut self, node: &mut ShardNode) {
        while let Some(transmit) = node.poll_transmit() {
            let (Transmit::Store(message), Some(to_store)) = (transmit, &self.to_store) else {
                continue;
            };
            if to_store.send_timeout(message, STORE_STOP_TIMEOUT).is_err() {
                self.to_store = None;
            }
        }
    }

    fn wake_peers(&mut self) {
        for (peer, wake) in self.peers.iter().zip(&mut self.wake) {
            if std::mem::take(wake) {
                // A failed wake means the peer is gone (shutting down): nothing to do.
                let _ = peer.waker.wake();
            }
        }
    }
}

/// What a loss means and what lifts it, for the log.
fn loss_advice(loss: Loss) -> &'static str {
    match loss {
        Loss::KernelDropped => {
            "the kernel dropped datagrams: the receive buffer was full (raise \
             ingest.socket_recv_buffer and net.core.rmem_max, or add shards)"
        }
        Loss::CrossShardShed => {
            "heartbeats shed between shards: an inbox was full (shards.cross_shard_queue)"
        }
        Loss::TransitionsShed => {
            "transitions shed before the push link: subscribers were told to query again \
             (shards.link_outbox; slow gateways?)"
        }
        Loss::LogShed => {
            "transitions not logged: the store is behind (a snapshot covers them; state.queue, \
             a slow or full disk?)"
        }
    }
}
