//! One shard's node: everything a shard thread does between its sockets and its presence core,
//! as a state machine in quinn-proto's manner. Time and input go in (`handle_*`); what to send
//! and when to wake come out (`poll_*`). The node never reads a clock, touches a socket,
//! blocks or spawns; the daemon's shard thread only moves bytes between the kernel, the
//! channels and this type, so every rule here is tested with fake time.
//!
//! Per datagram: drop it unread if its source address is blocked for failing authentication
//! (`auth::sources`), decode, verify (SPEC.md § 9), apply the entries this shard owns to the core
//! and batch the others for the shards that own them; the transitions it caused leave for the
//! hub at once. Per round of input (`handle_timeout`): fire the timers due, release partial
//! cross-shard batches and the transitions of entries from other shards.
//!
//! Nothing on this path allocates per datagram: entries and transitions travel in fixed
//! batches, the routing queue and the transition buffer keep their capacity.
//!
//! Back-off (SPEC.md § P6.13, [`crate::backoff`]): the node judges from its receive calls and
//! shed entries whether the shard runs hot, and tells the hub the heartbeat interval it asks
//! for (`ToHub::Pace`), stretching its own deadlines at once for a longer one; the hub asks
//! every shard for the longest interval asked (`Request::Pace`), by which the core extends
//! every deadline, and each shard tells every hub when it has (`ToHub::Paced`).
//!
//! **Several hubs** (`link.hubs`, each serving its own links) each get every transition, shed
//! report and pace, down an outbox of their own; an answer goes only to the hub that asked
//! (`bus::hub_of`), after the transitions queued for that hub before it. A hub whose channel is
//! full holds back only its own outbox.
//!
//! Limits, each counted when hit: each hub's outbox holds `link_outbox` transitions beyond
//! what its channel took (more are shed for that hub, `transitions_shed` counting each hub's
//! copy, and that hub is told to make its subscribers re-query); a full inbox of another shard sheds the batch (`cross_shard_shed`);
//! refusals, blocked sources, and losses (kernel drops, shedding), are reported at most once per
//! reason every [`REFUSAL_REPORT_EVERY_MS`].

use crate::auth::sources::{FailingSources, Source, SourceLimits};
use crate::auth::{AuthError, Verifier};
use crate::backoff::{Backoff, BackoffConfig};
use crate::bus::{owner, Blank, EntryBatch, Inbox, Request, ToHub, ToStore, TransitionBatch};
use presenced_core::clock::Now;
use presenced_core::config::{ConfigError, CoreConfig};
use presenced_core::event::{Heartbeat, Report, Transition};
use presenced_core::saved::{SavedError, SavedUser};
use presenced_core::shard::Shard;
use presenced_core::slab::Region;
use presenced_wire::stats::ShardStats;
use presenced_wire::DecodeError;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Refused datagrams, and each kind of loss, are reported at most once per reason per shard
/// in this many ms.
pub const REFUSAL_REPORT_EVERY_MS: u64 = 10_000;

/// The `dropped` reason of datagrams dropped unread because their source address was blocked
/// for failing authentication (`auth::sources`).
pub const SOURCE_BLOCKED: &str = "source_blocked";

/// Table slots in one snapshot chunk at most (`state.snapshot_slots_per_round` is at most
/// this), so a chunk holds at most [`MAX_SNAPSHOT_CHUNK_BYTES`].
pub const MAX_SNAPSHOT_SLOTS_PER_ROUND: usize = 1 << 16;

/// The largest snapshot chunk: every slot a user with the most devices.
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize =
    MAX_SNAPSHOT_SLOTS_PER_ROUND * presenced_core::saved::MAX_RECORD_BYTES;

/// A node's place among the shards and its limits.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This shard's index.
    pub index: usize,
    /// Shards in the daemon (≥ 1).
    pub shards: usize,
    /// Hub threads in the daemon (1 to [`crate::bus::MAX_HUBS`], `link.hubs`): each gets every
    /// transition.
    pub hubs: usize,
    /// The presence core's timings and capacities.
    pub core: CoreConfig,
    /// Entries per cross-shard batch (`shards.cross_shard_batch`, 1 to
    /// [`crate::bus::MAX_ENTRY_BATCH`]).
    pub cross_shard_batch: usize,
    /// Transitions held for each hub beyond what its channel took (`shards.link_outbox`);
    /// more are shed for that hub.
    pub link_outbox: usize,
    /// The store's limits, when state is kept (`state.enabled`); `None`: nothing is logged.
    pub store: Option<StoreLimits>,
    /// A cold start (no saved state): answers are marked warming until this monotonic µs.
    pub warming_until_us: Option<u64>,
    /// The table of sources failing authentication or decoding, and their budget.
    pub sources: SourceLimits,
    /// When and how far to ask gateways for a longer heartbeat interval (`ingest.backoff*`).
    pub backoff: BackoffConfig,
}

/// What the node may hold for the store.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Transitions held for the log beyond what the store's channel took (`state.queue`);
    /// more are not logged, counted, and reported as a gap.
    pub queue_transitions: usize,
    /// Table slots a snapshot pass covers per round (a slice of ingest time, not a stall);
    /// at most [`MAX_SNAPSHOT_SLOTS_PER_ROUND`].
    pub snapshot_slots_per_round: usize,
}

/// Something for the driver to send.
// Batches travel by value into the channels' preallocated slots.
#[allow(clippy::large_enum_variant)]
pub enum Transmit {
    /// Entries for the shard that owns their users: its inbox.
    Peer {
        /// The owning shard.
        shard: usize,
        /// The entries.
        batch: EntryBatch,
    },
    /// A message for a hub (its index among the hubs), in that hub's order.
    Hub(usize, ToHub),
    /// A message for the store, in order.
    Store(ToStore),
}

/// Something the driver should tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Datagrams refused by authentication since the last report of this reason.
    Refused {
        /// The reason (SPEC.md § 9, `AuthError::REASONS`).
        reason: &'static str,
        /// Refusals since the last report.
        count: u64,
        /// The gateway of the latest one.
        gateway: u32,
    },
    /// Source addresses blocked for failing authentication since the last report.
    SourcesBlocked {
        /// Sources blocked since the last report.
        count: u64,
        /// The latest one.
        latest: IpAddr,
        /// How long each is blocked, ms.
        block_ms: u64,
    },
    /// Heartbeats or transitions lost since the last report of this kind.
    Lost {
        /// What was lost, and where.
        loss: Loss,
        /// How many since the last report.
        count: u64,
    },
}

/// A kind of loss a shard reports ([`NodeEvent::Lost`]); each has its counter in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Datagrams the kernel dropped: the receive buffer was full (`kernel_dropped`).
    KernelDropped,
    /// Entries shed because another shard's inbox was full (`cross_shard_shed`).
    CrossShardShed,
    /// Transitions shed because the outbox to the push link was full (`transitions_shed`).
    TransitionsShed,
    /// Transitions not written to the transition log (`log_shed`).
    LogShed,
}

impl Loss {
    const ALL: [Loss; 4] = [
        Loss::KernelDropped,
        Loss::CrossShardShed,
        Loss::TransitionsShed,
        Loss::LogShed,
    ];

    /// The stats counter that counts it.
    pub fn counter(self) -> &'static str {
        match self {
            Loss::KernelDropped => "kernel_dropped",
            Loss::CrossShardShed => "cross_shard_shed",
            Loss::TransitionsShed => "transitions_shed",
            Loss::LogShed => "log_shed",
        }
    }

    fn total(self, s: &ShardStats) -> u64 {
        match self {
            Loss::KernelDropped => s.kernel_dropped,
            Loss::CrossShardShed => s.cross_shard_shed,
            Loss::TransitionsShed => s.transitions_shed,
            Loss::LogShed => s.log_shed,
        }
    }
}

/// One shard's node (see the module docs).
pub struct ShardNode {
    index: usize,
    shards: usize,
    shard: Shard,
    verifier: Verifier,
    batch_size: usize,
    /// Partial batches, one per shard (this shard's stays empty).
    routes: Vec<EntryBatch>,
    /// Batches ready for their shards.
    ready: VecDeque<(usize, EntryBatch)>,
    /// Transitions the core emitted since the last flush (capacity kept).
    out: Vec<Transition>,
    /// Receipt time of the earliest input behind `out` (`u64::MAX`: none).
    pending_since_us: u64,
    /// One outbox per hub, by the hub's index.
    hubs: Vec<HubOutbox>,
    outbox_limit: usize,
    stats: ShardStats,
    dropped: [u64; DecodeError::REASONS.len()],
    refused: [u64; AuthError::REASONS.len()],
    /// Per refusal reason: wall ms of the last report, and refusals since.
    refusal_reports: [(u64, u64); AuthError::REASONS.len()],
    /// Sources failing authentication; datagrams of blocked ones dropped unread.
    sources: FailingSources,
    /// Datagrams dropped unread from blocked sources.
    dropped_early: u64,
    /// Blocked sources for the kernel's socket filter.
    kernel: KernelBlocks,
    /// Wall ms of the last report of blocked sources, and sources blocked since.
    block_reports: (u64, u64),
    events: VecDeque<NodeEvent>,
    /// Per kind of loss: wall ms of the last report, and the total reported so far.
    loss_reports: [(u64, u64); Loss::ALL.len()],
    journal: Option<Journal>,
    warming_until_us: Option<u64>,
    /// Whether this shard runs hot, and the interval it asks for.
    backoff: Backoff,
    /// The core's tick, normal heartbeat interval and timeout, µs (to turn an asked interval
    /// into a deadline extension).
    tick_us: u64,
    interval_us: u64,
    timeout_us: u64,
}

/// The blocked sources the shard thread puts in its sockets' filter, so that the kernel drops
/// their datagrams before they take receive-buffer room: at most
/// `SourceLimits::kernel_blocks`, each until its block ends.
struct KernelBlocks {
    /// Each source and the monotonic ms its block ends.
    sources: Vec<(Source, u64)>,
    /// The list changed since [`ShardNode::poll_kernel_blocks`] last gave it out.
    changed: bool,
}

/// What the node holds for one hub: every transition, shed report and pace, and the answers
/// to that hub's requests, in order.
struct HubOutbox {
    queue: VecDeque<ToHub>,
    /// Transitions in `queue`.
    transitions: usize,
    /// Transitions shed for this hub and not yet reported to it.
    shed_unreported: u64,
    /// Its channel refused a message since [`ShardNode::poll_transmit`] last returned `None`.
    refused: bool,
}

impl HubOutbox {
    fn new() -> HubOutbox {
        HubOutbox {
            queue: VecDeque::with_capacity(OUTBOX_KEEP),
            transitions: 0,
            shed_unreported: 0,
            refused: false,
        }
    }
}

/// What the node holds for the store: log records and the snapshot pass's chunks, in order.
struct Journal {
    limits: StoreLimits,
    outbox: VecDeque<ToStore>,
    /// Transitions in `outbox`.
    transitions: usize,
    /// Transitions not logged and not yet reported as a gap.
    gap_unreported: u64,
    /// Records written by the pass going on.
    pass_records: u64,
    /// The store's channel refused a message since [`ShardNode::poll_transmit`] last returned
    /// `None`.
    refused: bool,
}

/// Snapshot chunks waiting for the store before the pass pauses (it never sheds them).
const SNAPSHOT_BACKLOG: usize = 4;

impl Journal {
    /// Whether `n` more transitions fit the log's queue; reports a gap first if some were
    /// lost since the last that fit.
    fn admit(&mut self, n: usize) -> bool {
        if self.transitions + n > self.limits.queue_transitions {
            self.gap_unreported += n as u64;
            return false;
        }
        if self.gap_unreported > 0 {
            let lost = std::mem::take(&mut self.gap_unreported);
            self.outbox.push_back(ToStore::Gap(lost));
        }
        self.transitions += n;
        true
    }
}

// `flush_out` keeps the hubs taking a round's transitions as bits of a u32.
const _: () = assert!(crate::bus::MAX_HUBS <= 32);

/// Room kept in the outbox's buffer after a burst has drained (answers and a few batches).
const OUTBOX_KEEP: usize = 1024;

impl ShardNode {
    /// A node whose core is allocated for `config`'s capacities, its clock at `now`.
    pub fn new(config: NodeConfig, verifier: Verifier, now: Now) -> Result<ShardNode, ConfigError> {
        assert!(
            config.index < config.shards,
            "shard index within the shards"
        );
        assert!(
            (1..=crate::bus::MAX_HUBS).contains(&config.hubs),
            "hubs is checked by the settings"
        );
        assert!(
            (1..=crate::bus::MAX_ENTRY_BATCH).contains(&config.cross_shard_batch),
            "cross_shard_batch is checked by the settings"
        );
        let (tick_us, interval_us) = (config.core.tick_us, config.core.heartbeat_interval_us);
        let timeout_us = config.core.timeout_us();
        let shard = Shard::new(config.core, now)?;
        Ok(ShardNode {
            index: config.index,
            shards: config.shards,
            shard,
            verifier,
            batch_size: config.cross_shard_batch,
            routes: vec![EntryBatch::new(); config.shards],
            ready: VecDeque::with_capacity(presenced_wire::MAX_ENTRIES + config.shards),
            out: Vec::with_capacity(4 * presenced_wire::MAX_ENTRIES),
            pending_since_us: u64::MAX,
            hubs: (0..config.hubs).map(|_| HubOutbox::new()).collect(),
            outbox_limit: config.link_outbox,
            stats: ShardStats {
                shard: config.index as u32,
                ..ShardStats::default()
            },
            dropped: [0; DecodeError::REASONS.len()],
            refused: [0; AuthError::REASONS.len()],
            refusal_reports: [(0, 0); AuthError::REASONS.len()],
            sources: FailingSources::new(config.sources),
            dropped_early: 0,
            kernel: KernelBlocks {
                sources: Vec::with_capacity(config.sources.kernel_blocks),
                changed: false,
            },
            block_reports: (0, 0),
            loss_reports: [(0, 0); Loss::ALL.len()],
            events: VecDeque::with_capacity(AuthError::REASONS.len() + 1),
            journal: config.store.map(|limits| Journal {
                limits,
                outbox: VecDeque::with_capacity(OUTBOX_KEEP),
                transitions: 0,
                gap_unreported: 0,
                pass_records: 0,
                refused: false,
            }),
            warming_until_us: config.warming_until_us,
            backoff: Backoff::new(config.backoff),
            tick_us,
            interval_us,
            timeout_us,
        })
    }

    /// One datagram as received from `source` (a datagram the kernel truncated arrives longer
    /// than any valid one and is refused as too long). Its transitions are queued for the hub
    /// at once.
    pub fn handle_datagram(&mut self, now: Now, source: IpAddr, bytes: &[u8]) {
        self.stats.datagrams += 1;
        let source = Source::from(source);
        let now_ms = now.mono_us / 1000;
        if !self.sources.admits(source, now_ms) {
            self.dropped_early += 1;
            return;
        }
        let datagram = match presenced_wire::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                self.dropped[e.code()] += 1;
                self.source_failed(source, now_ms, now.wall_ms);
                return;
            }
        };
        if let Err(e) = self.verifier.check(&datagram, now.wall_ms) {
            self.refuse(e, datagram.header().gateway, now.wall_ms);
            if e.counts_against_source() {
                self.source_failed(source, now_ms, now.wall_ms);
            }
            return;
        }
        let mut owned = [Heartbeat::BLANK; presenced_wire::MAX_ENTRIES];
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
            let to = owner(hb.user, self.shards);
            if to == self.index {
                owned[n] = hb;
                n += 1;
            } else {
                self.route(to, hb, now.mono_us);
            }
        }
        if n > 0 {
            self.pending_since_us = self.pending_since_us.min(now.mono_us);
            self.shard.heartbeats(now, &owned[..n], &mut self.out);
        }
        // A datagram's transitions leave at once, not at the end of the round: a full receive
        // call is up to ~0.5 ms of work, which would otherwise add to every transition's
        // latency. Under a login storm each datagram carries up to 89 transitions.
        if !self.out.is_empty() {
            self.flush_out(now.mono_us);
        }
    }

    /// One receive call on this shard's sockets: whether it filled its batch (more were
    /// waiting), and how many datagrams the kernel dropped for want of buffer room since the
    /// previous call (SO_RXQ_OVFL).
    pub fn handle_receive(&mut self, full: bool, kernel_dropped: u64) {
        self.stats.recv_calls += 1;
        self.stats.kernel_dropped += kernel_dropped;
        self.backoff.handle_receive(full, kernel_dropped);
    }

    /// Datagrams the kernel dropped on this shard's sockets (a full buffer, or their filter:
    /// `ingest.allow` and the blocked sources) since the count was last given, read from a
    /// socket between receive calls (SO_MEMINFO). Not a sign of load: a socket with nothing
    /// to receive is not behind, so these are its filter's drops.
    pub fn handle_kernel_drops(&mut self, kernel_dropped: u64) {
        self.stats.kernel_dropped += kernel_dropped;
    }

    /// One message from this shard's inbox.
    pub fn handle_inbox(&mut self, now: Now, message: Inbox) {
        match message {
            Inbox::Entries(batch) => {
                self.stats.routed_in += batch.len() as u64;
                self.pending_since_us = self.pending_since_us.min(batch.since_us);
                self.shard.heartbeats(now, batch.items(), &mut self.out);
            }
            Inbox::Keys(keys) => self.verifier.set_keys(keys),
            Inbox::Snapshot => self.snapshot_begin(now),
            Inbox::Request(Request::Pace { interval_ms }) => {
                // The interval every gateway is asked for (the longest any shard asks).
                // The settings bound the interval so that the extension fits the horizon.
                let _ = self
                    .shard
                    .set_deadline_extension(self.extension_ticks(interval_ms));
                // Every hub waits for every shard's word before it asks its gateways for a
                // longer interval (SPEC.md § P6.13: the timeout stretches from before the
                // PACE). One message per change: never shed.
                let shard = self.index;
                for outbox in &mut self.hubs {
                    outbox.queue.push_back(ToHub::Paced { shard, interval_ms });
                }
            }
            Inbox::Request(request) => {
                // Transitions emitted so far must reach the hub before this answer.
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
                        warming: self.warming(now),
                    },
                    Request::Stats { link, request } => ToHub::Stats {
                        link,
                        request,
                        stats: Box::new(self.stats()),
                    },
                    Request::Pace { .. } => unreachable!("handled above"),
                };
                let hub = match &answer {
                    ToHub::Snapshot { link, .. } => {
                        crate::bus::hub_of(Some(*link), self.hubs.len())
                    }
                    ToHub::Stats { link, .. } => crate::bus::hub_of(*link, self.hubs.len()),
                    _ => unreachable!("an answer"),
                };
                // Answers are bounded by the hub's requests in flight: never shed.
                self.hubs[hub].queue.push_back(answer);
            }
        }
    }

    /// Fires the timers due by `now`, then ends the round: partial cross-shard batches and
    /// the transitions of this round are released. Call it when [`ShardNode::poll_timeout`]
    /// has passed and after each round of input.
    pub fn handle_timeout(&mut self, now: Now) {
        let now_ms = now.mono_us / 1000;
        let blocked = self.kernel.sources.len();
        self.kernel
            .sources
            .retain(|&(_, until_ms)| until_ms > now_ms);
        self.kernel.changed |= self.kernel.sources.len() != blocked;
        self.shard.advance(now, &mut self.out);
        for to in 0..self.routes.len() {
            if !self.routes[to].is_empty() {
                self.release_route(to);
            }
        }
        self.flush_out(now.mono_us);
        for outbox in &mut self.hubs {
            if outbox.queue.is_empty() && outbox.queue.capacity() > 4 * OUTBOX_KEEP {
                // A burst has drained: give its memory back.
                outbox.queue.shrink_to(OUTBOX_KEEP);
            }
        }
        self.snapshot_round(now);
        self.report_losses(now.wall_ms);
        if let Some(asked_ms) = self.backoff.handle_round(now.mono_us / 1000) {
            let interval_ms = if self.backoff.is_active() {
                u32::try_from(asked_ms).unwrap_or(u32::MAX)
            } else {
                0
            };
            // A longer ask stretches this shard's own deadlines now, before any gateway can
            // hear of it: the hub's answer would reach a shard this hot only once it had
            // read its inbox, and a gateway that had already stretched its gap meanwhile
            // would see its devices expired early. A lower ask waits for the hub's answer
            // (the longest any shard asks).
            let ticks = self.extension_ticks(interval_ms);
            if ticks > self.shard.deadline_extension_ticks() {
                let _ = self.shard.set_deadline_extension(ticks);
            }
            // One message per change, a few per minute at most: never shed.
            for outbox in &mut self.hubs {
                outbox.queue.push_back(ToHub::Pace {
                    shard: self.index,
                    interval_ms,
                });
            }
        }
    }

    /// The deadline extension for heartbeats `interval_ms` apart (0: the normal interval), in
    /// ticks ([`presenced_core::config::extension_ticks`]).
    fn extension_ticks(&self, interval_ms: u32) -> u64 {
        presenced_core::config::extension_ticks(
            u64::from(interval_ms) * 1000,
            self.interval_us,
            self.timeout_us,
            self.tick_us,
        )
    }

    /// Queues a report of each kind of loss that grew, at most once per kind every
    /// [`REFUSAL_REPORT_EVERY_MS`].
    fn report_losses(&mut self, wall_ms: u64) {
        for (i, loss) in Loss::ALL.into_iter().enumerate() {
            let (last_ms, reported) = &mut self.loss_reports[i];
            let total = loss.total(&self.stats);
            if total > *reported && wall_ms >= *last_ms + REFUSAL_REPORT_EVERY_MS {
                self.events.push_back(NodeEvent::Lost {
                    loss,
                    count: total - *reported,
                });
                *last_ms = wall_ms;
                *reported = total;
            }
        }
    }

    /// The next thing to send: batches for other shards first, then each hub's messages in
    /// order, then the store's. A send the channel refuses goes back through
    /// [`ShardNode::handle_refused`], and that hub (or the store) gets nothing more until this
    /// has returned `None`: the driver's next turn tries it again, and the others go on.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some((shard, batch)) = self.ready.pop_front() {
            return Some(Transmit::Peer { shard, batch });
        }
        for (hub, outbox) in self.hubs.iter_mut().enumerate() {
            if outbox.refused {
                continue;
            }
            if let Some(message) = outbox.queue.pop_front() {
                if let ToHub::Transitions(batch) = &message {
                    outbox.transitions -= batch.len();
                }
                return Some(Transmit::Hub(hub, message));
            }
        }
        if let Some(journal) = self.journal.as_mut().filter(|j| !j.refused) {
            if let Some(message) = journal.outbox.pop_front() {
                if let ToStore::Transitions(batch) = &message {
                    journal.transitions -= batch.len();
                }
                return Some(Transmit::Store(message));
            }
        }
        for outbox in &mut self.hubs {
            outbox.refused = false;
        }
        if let Some(journal) = &mut self.journal {
            journal.refused = false;
        }
        None
    }

    /// A transmit whose channel was full: entries for another shard are shed and counted; a
    /// hub or store message goes back to the front of its outbox, and [`ShardNode::poll_transmit`]
    /// gives nothing more for that destination until it has returned `None`.
    pub fn handle_refused(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Peer { batch, .. } => {
                self.stats.routed_out -= batch.len() as u64;
                self.stats.cross_shard_shed += batch.len() as u64;
                self.backoff.handle_shed();
            }
            Transmit::Hub(hub, message) => {
                let outbox = &mut self.hubs[hub];
                if let ToHub::Transitions(batch) = &message {
                    outbox.transitions += batch.len();
                }
                outbox.queue.push_front(message);
                outbox.refused = true;
            }
            Transmit::Store(message) => {
                if let Some(journal) = &mut self.journal {
                    if let ToStore::Transitions(batch) = &message {
                        journal.transitions += batch.len();
                    }
                    journal.outbox.push_front(message);
                    journal.refused = true;
                }
            }
        }
    }

    /// When the node next needs [`ShardNode::handle_timeout`], in monotonic µs: at or before
    /// the time it was last given when it has something to send or release, else the start of
    /// the core's next busy tick; `None` when nothing is pending at all.
    pub fn poll_timeout(&self) -> Option<u64> {
        let pending = !self.ready.is_empty()
            || self.hubs.iter().any(|o| !o.queue.is_empty())
            || !self.out.is_empty()
            || self.routes.iter().any(|b| !b.is_empty())
            || self.journal.as_ref().is_some_and(|j| !j.outbox.is_empty())
            || self.shard.snapshotting();
        if pending || self.kernel.changed {
            return Some(0);
        }
        let unblock_us = self
            .kernel
            .sources
            .iter()
            .map(|&(_, until_ms)| until_ms * 1000)
            .min();
        match (self.shard.next_deadline_us(), unblock_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing to tell the operator.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Every counter of this shard (the STATS schema's per-shard entry).
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.core = self.shard.stats();
        s.dropped = DecodeError::REASONS
            .iter()
            .zip(self.dropped.iter())
            .chain(AuthError::REASONS.iter().zip(self.refused.iter()))
            .chain([(&SOURCE_BLOCKED, &self.dropped_early)])
            .map(|(&reason, &n)| (reason.to_string(), n))
            .collect();
        s.backoff_interval_ms = if self.backoff.is_active() {
            self.backoff.asked_ms()
        } else {
            0
        };
        s.backoff_entered = self.backoff.entered();
        s.deadline_extension_ms = self.shard.deadline_extension_ticks() * self.tick_us / 1000;
        s
    }

    /// The presence core, for inspection.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Where the core's large arrays lie (for the daemon's page policy).
    pub fn regions(&self) -> [Region; 4] {
        self.shard.regions()
    }

    /// The daemon's page advice for each array the core's table grows into
    /// (`Shard::set_table_advice`).
    pub fn set_table_advice(&mut self, advice: fn(Region)) {
        self.shard.set_table_advice(advice);
    }

    /// Counts a refused datagram and queues a report, at most once per reason every
    /// [`REFUSAL_REPORT_EVERY_MS`].
    fn refuse(&mut self, e: AuthError, gateway: u32, wall_ms: u64) {
        self.refused[e.code()] += 1;
        let (last, since) = &mut self.refusal_reports[e.code()];
        *since += 1;
        if wall_ms >= *last + REFUSAL_REPORT_EVERY_MS {
            self.events.push_back(NodeEvent::Refused {
                reason: e.reason(),
                count: *since,
                gateway,
            });
            *last = wall_ms;
            *since = 0;
        }
    }

    /// A datagram from `source` did not decode or failed authentication: counted against the
    /// source, which may block it.
    fn source_failed(&mut self, source: Source, now_ms: u64, wall_ms: u64) {
        if self.sources.handle_failure(source, now_ms) {
            self.stats.sources_blocked += 1;
            if self.kernel.sources.len() < self.sources.limits().kernel_blocks {
                let until_ms = now_ms + self.sources.limits().block_ms;
                self.kernel.sources.push((source, until_ms));
                self.kernel.changed = true;
            } else {
                self.stats.kernel_blocks_full += 1;
            }
            self.report_block(source, wall_ms);
        }
    }

    /// The blocked sources to drop in the kernel, when they changed since the last call (a
    /// block began or ended): the shard thread compiles them into its sockets' filter with
    /// `ingest.allow`. A block ends at the first [`ShardNode::handle_timeout`] after it is
    /// due, which [`ShardNode::poll_timeout`] asks for: no datagram of a source the kernel
    /// drops comes to end it.
    pub fn poll_kernel_blocks(&mut self) -> Option<Vec<IpAddr>> {
        if !std::mem::take(&mut self.kernel.changed) {
            return None;
        }
        Some(self.kernel.sources.iter().map(|(s, _)| s.ip()).collect())
    }

    /// Queues a report of blocked sources, at most once every [`REFUSAL_REPORT_EVERY_MS`].
    fn report_block(&mut self, source: Source, wall_ms: u64) {
        let (last, since) = &mut self.block_reports;
        *since += 1;
        if wall_ms >= *last + REFUSAL_REPORT_EVERY_MS {
            self.events.push_back(NodeEvent::SourcesBlocked {
                count: *since,
                latest: source.ip(),
                block_ms: self.sources.limits().block_ms,
            });
            *last = wall_ms;
            *since = 0;
        }
    }

    fn route(&mut self, to: usize, hb: Heartbeat, received_us: u64) {
        let batch = &mut self.routes[to];
        if batch.is_empty() {
            batch.since_us = received_us;
        }
        batch.push(hb);
        if batch.len() >= self.batch_size {
            self.release_route(to);
        }
    }

    fn release_route(&mut self, to: usize) {
        let batch = self.routes[to];
        self.routes[to].clear();
        self.stats.routed_out += batch.len() as u64;
        self.ready.push_back((to, batch));
    }

    /// Moves the transitions of this round into each hub's outbox in batches, or sheds them
    /// for a hub whose outbox holds `link_outbox` transitions (counted once per hub).
    fn flush_out(&mut self, now_us: u64) {
        let since_us = std::mem::replace(&mut self.pending_since_us, u64::MAX).min(now_us);
        if self.out.is_empty() {
            return;
        }
        let n = self.out.len();
        // The hubs that take this round's transitions, as bits by index (at most MAX_HUBS).
        let mut taking: u32 = 0;
        for (hub, outbox) in self.hubs.iter_mut().enumerate() {
            if outbox.transitions + n > self.outbox_limit {
                self.stats.transitions_shed += n as u64;
                outbox.shed_unreported += n as u64;
                continue;
            }
            if outbox.shed_unreported > 0 {
                let shed = std::mem::take(&mut outbox.shed_unreported);
                outbox.queue.push_back(ToHub::Shed(shed));
            }
            outbox.transitions += n;
            taking |= 1 << hub;
        }
        // The log takes them even when every hub shed them: a full hub is no gap in the
        // history or in what a restart replays.
        let logged = self.journal.as_mut().is_some_and(|j| j.admit(n));
        if !logged && self.journal.is_some() {
            self.stats.log_shed += n as u64;
        }
        if taking == 0 && !logged {
            // No batch to build: an overloaded shard spends nothing more on what it sheds.
            self.out.clear();
            return;
        }
        for chunk in self.out.chunks(crate::bus::TRANSITION_BATCH) {
            let mut batch = TransitionBatch::new();
            batch.since_us = since_us;
            for &t in chunk {
                batch.push(t);
            }
            for (hub, outbox) in self.hubs.iter_mut().enumerate() {
                if taking & (1 << hub) != 0 {
                    outbox.queue.push_back(ToHub::Transitions(batch));
                }
            }
            if logged {
                if let Some(journal) = &mut self.journal {
                    journal.outbox.push_back(ToStore::Transitions(batch));
                }
            }
        }
        self.out.clear();
    }

    /// Whether answers are read while warming (a cold start, one timeout long).
    fn warming(&self, now: Now) -> bool {
        self.warming_until_us
            .is_some_and(|until| now.mono_us < until)
    }

    /// Starts a snapshot pass, marking the log position its replay starts from.
    fn snapshot_begin(&mut self, now: Now) {
        if self.journal.is_none() || self.shard.snapshotting() {
            return;
        }
        // Transitions emitted so far belong before the mark.
        self.shard.advance(now, &mut self.out);
        self.flush_out(now.mono_us);
        let Some(journal) = &mut self.journal else {
            return;
        };
        journal.pass_records = 0;
        journal.outbox.push_back(ToStore::SnapshotBegin {
            wall_ms: now.wall_ms,
        });
        self.shard.snapshot_begin();
    }

    /// One slice of the snapshot pass, unless the store is behind on the chunks already cut.
    fn snapshot_round(&mut self, now: Now) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        if !self.shard.snapshotting() {
            return;
        }
        let backlog = journal
            .outbox
            .iter()
            .filter(|m| matches!(m, ToStore::SnapshotChunk { .. }))
            .count();
        if backlog >= SNAPSHOT_BACKLOG {
            return;
        }
        let slots = journal.limits.snapshot_slots_per_round;
        self.snapshot_slice(now, slots.min(MAX_SNAPSHOT_SLOTS_PER_ROUND));
    }

    /// Cuts the next `slots` slots of the pass into a chunk; ends the pass after the last.
    fn snapshot_slice(&mut self, now: Now, slots: usize) {
        let mut bytes = Vec::new();
        let (records, done) = self.shard.snapshot_step(now, slots, &mut bytes);
        let Some(journal) = &mut self.journal else {
            return;
        };
        if records > 0 {
            journal.pass_records += records as u64;
            journal.outbox.push_back(ToStore::SnapshotChunk {
                bytes,
                records: records as u32,
            });
        }
        if done {
            journal.outbox.push_back(ToStore::SnapshotEnd {
                records: journal.pass_records,
            });
            self.stats.snapshots += 1;
        }
    }

    /// Saves the whole shard now, however large (at shutdown, once ingest has stopped), a
    /// chunk of at most [`MAX_SNAPSHOT_SLOTS_PER_ROUND`] slots per call: a pass going on is
    /// continued, else one is begun. Returns whether more remains: the driver hands over what
    /// [`ShardNode::poll_transmit`] gives and calls again, so the chunks are never all held
    /// at once.
    pub fn snapshot_final(&mut self, now: Now) -> bool {
        if self.journal.is_none() {
            return false;
        }
        if !self.shard.snapshotting() {
            self.snapshot_begin(now);
        }
        self.snapshot_slice(now, MAX_SNAPSHOT_SLOTS_PER_ROUND);
        self.shard.snapshotting()
    }

    /// Restores saved records (whole encoded records, as a snapshot chunk holds them) as of
    /// `now`; returns how many. A record that does not decode ends the chunk (the rest of it
    /// cannot be framed) and is counted, as is a user the table has no room for.
    pub fn restore_saved(&mut self, now: Now, mut bytes: &[u8]) -> Result<u64, SavedError> {
        let mut restored = 0;
        while !bytes.is_empty() {
            let (user, used) = match SavedUser::decode(bytes) {
                Ok(decoded) => decoded,
                Err(e) => {
                    self.stats.restore_refused += 1;
                    return Err(e);
                }
            };
            bytes = &bytes[used..];
            if self.restore_user(now, &user) {
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Grows the table for `users` restored records to come (see [`Shard::reserve_users`]).
    pub fn reserve_users(&mut self, users: usize) {
        self.shard.reserve_users(users);
    }

    /// Restores one saved record as of `now`; false (counted) when it is not this shard's or
    /// the table has no room.
    pub fn restore_user(&mut self, now: Now, user: &SavedUser) -> bool {
        if owner(user.user, self.shards) != self.index {
            // Not this shard's: the driver routes by owner; count, never store astray.
            self.stats.restore_refused += 1;
            return false;
        }
        match self.shard.import(now, user) {
            Ok(imported) => {
                if imported.created {
                    self.stats.restored_users += 1;
                }
                true
            }
            Err(_) => {
                self.stats.restore_refused += 1;
                false
            }
        }
    }

    /// Applies a logged transition over the restored records (ARCHITECTURE.md, rule 8).
    pub fn restore_logged(&mut self, now: Now, t: &Transition) {
        if owner(t.user, self.shards) != self.index {
            self.stats.restore_refused += 1;
            return;
        }
        let known = self.shard.is_known(t.user);
        match self.shard.replay(now, t) {
            Ok(_) if !known => self.stats.restored_users += 1,
            Ok(_) => {}
            Err(_) => self.stats.restore_refused += 1,
        }
    }
}

#[cfg(test)]
mod tests;
