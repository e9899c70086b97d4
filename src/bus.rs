//! Messages between threads: heartbeat batches between shards, requests from the push-link hub
//! to a shard, and what a shard sends the hub. Every channel is bounded; senders never block.
//!
//! Ordering is the point of the design: a shard sends its transitions and its answers to
//! subscribe requests down one FIFO channel, so the hub registers a subscription exactly between
//! the transitions the snapshot already reflects and the ones that follow it.

use presenced_core::event::{Heartbeat, Presence, Transition};
use std::sync::Arc;

/// The most entries one cross-shard batch carries (`shards.cross_shard_batch` is at most this).
pub const MAX_BATCH: usize = 64;

/// Heartbeat entries received by one shard for users another shard owns.
#[derive(Clone, Copy)]
pub struct EntryBatch {
    /// When the datagrams were received, monotonic µs since the daemon started.
    pub received_us: u64,
    len: u8,
    entries: [Heartbeat; MAX_BATCH],
}

impl EntryBatch {
    /// An empty batch.
    pub fn new() -> EntryBatch {
        const BLANK: Heartbeat = Heartbeat {
            user: 0,
            device: 0,
            report: presenced_core::event::Report::Offline,
            active: false,
        };
        EntryBatch {
            received_us: 0,
            len: 0,
            entries: [BLANK; MAX_BATCH],
        }
    }

    /// Appends an entry; the caller sends the batch when `len` reaches its batch size.
    pub fn push(&mut self, hb: Heartbeat) {
        self.entries[self.len as usize] = hb;
        self.len += 1;
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries.
    pub fn entries(&self) -> &[Heartbeat] {
        &self.entries[..self.len as usize]
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for EntryBatch {
    fn default() -> Self {
        EntryBatch::new()
    }
}

/// What the hub asks a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Current presence of `users` (all owned by this shard); `subscribe` marks the answer as
    /// the snapshot of a subscription.
    Snapshot {
        /// The link asking.
        link: u32,
        /// The link's request id.
        request: u32,
        /// Register a subscription when the answer reaches the hub.
        subscribe: bool,
        /// Users, all owned by this shard.
        users: Vec<u64>,
    },
    /// The shard's counters.
    Stats {
        /// The link asking.
        link: u32,
        /// The link's request id.
        request: u32,
    },
}

/// What reaches a shard's inbox.
// Batches travel by value in the bounded channel's preallocated slots: boxing them would cost
// an allocation per batch on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Inbox {
    /// Entries from another shard.
    Entries(EntryBatch),
    /// A request from the hub.
    Request(Request),
    /// The gateway key file was reloaded: verify with these keys from now on.
    Keys(Arc<crate::auth::Keys>),
}

/// What a shard sends the hub, in order.
pub enum ToHub {
    /// Transitions, in the order the shard emitted them.
    Transitions {
        /// Monotonic µs at which the earliest datagram behind this batch was received (for
        /// transitions of timers: when the shard processed them).
        since_us: u64,
        /// The transitions.
        transitions: Vec<Transition>,
    },
    /// The answer to a `Request::Snapshot`.
    Snapshot {
        /// The link asking.
        link: u32,
        /// The link's request id.
        request: u32,
        /// Whether to register a subscription.
        subscribe: bool,
        /// Users with their presence.
        presence: Vec<(u64, Presence)>,
    },
    /// The answer to a `Request::Stats`.
    Stats {
        /// The link asking.
        link: u32,
        /// The link's request id.
        request: u32,
        /// The counters.
        counters: Arc<presenced_wire::stats::ShardStats>,
    },
    /// The shard dropped this many transitions since its last message (outbox full): the hub
    /// must tell subscribers to re-query.
    Shed(u64),
}
