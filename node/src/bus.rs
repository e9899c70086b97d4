//! What travels between the shard nodes and the hub: heartbeat entries between shards,
//! requests from the hub to a shard, and what a shard tells the hub. Entries and transitions
//! travel by value in fixed batches ([`Batch`]), so the hot path allocates nothing per
//! datagram: a batch lives in the channel's preallocated slot.
//!
//! Ordering is the point of the design: a shard sends its transitions and its answers to
//! subscribe requests down one FIFO, so the hub registers a subscription exactly between the
//! transitions the snapshot already reflects and the ones that follow it.

use presenced_core::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};
use presenced_wire::stats::ShardStats;
use std::sync::Arc;

/// The most entries one cross-shard batch carries (`shards.cross_shard_batch` is at most this).
pub const MAX_ENTRY_BATCH: usize = 64;
/// Transitions per batch to the hub.
pub const TRANSITION_BATCH: usize = 32;

/// A value that fills the unused slots of a [`Batch`].
pub trait Blank: Copy {
    /// The filler (never read as data).
    const BLANK: Self;
}

impl Blank for Heartbeat {
    const BLANK: Self = Heartbeat {
        user: 0,
        device: 0,
        report: Report::Offline,
        active: false,
    };
}

impl Blank for Transition {
    const BLANK: Self = Transition {
        user: 0,
        state: PublicState::Offline,
        prev: PublicState::Offline,
        at_ms: 0,
        cause: Cause::Timeout,
        version: 0,
        devices: 0,
        seen: false,
    };
}

/// Up to `N` items and the receipt time of the earliest datagram behind them.
#[derive(Clone, Copy)]
pub struct Batch<T: Blank, const N: usize> {
    /// Monotonic µs at which the earliest datagram behind these items was received (for
    /// transitions of timers: when the shard processed them).
    pub since_us: u64,
    len: u8,
    items: [T; N],
}

/// Heartbeat entries received by one shard for users another shard owns.
pub type EntryBatch = Batch<Heartbeat, MAX_ENTRY_BATCH>;
/// Transitions of one shard, in the order it emitted them.
pub type TransitionBatch = Batch<Transition, TRANSITION_BATCH>;

const _: () = assert!(MAX_ENTRY_BATCH <= u8::MAX as usize && TRANSITION_BATCH <= 255);
// A batch is one channel slot: keep them near 1 KiB.
const _: () = assert!(std::mem::size_of::<EntryBatch>() <= 1040);
const _: () = assert!(std::mem::size_of::<TransitionBatch>() <= 1040);

impl<T: Blank, const N: usize> Batch<T, N> {
    /// An empty batch.
    pub const fn new() -> Batch<T, N> {
        Batch {
            since_us: 0,
            len: 0,
            items: [T::BLANK; N],
        }
    }

    /// Appends an item; the caller sends the batch before it is full.
    pub fn push(&mut self, item: T) {
        self.items[self.len as usize] = item;
        self.len += 1;
    }

    /// Items in the batch.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the batch holds `N` items.
    pub fn is_full(&self) -> bool {
        self.len as usize == N
    }

    /// The items.
    pub fn items(&self) -> &[T] {
        &self.items[..self.len as usize]
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<T: Blank, const N: usize> Default for Batch<T, N> {
    fn default() -> Self {
        Batch::new()
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
        /// The link asking; `None`: the daemon itself (its metrics endpoint).
        link: Option<u32>,
        /// The asker's request id.
        request: u32,
    },
    /// The heartbeat interval every gateway is to be asked for (SPEC.md § P6.13), ms; 0: the
    /// normal one. The shard extends its deadlines to match, then tells every hub
    /// (`ToHub::Paced`): a longer interval reaches the gateways only after that.
    Pace {
        /// The interval, ms.
        interval_ms: u32,
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
    /// Begin a snapshot pass (from the store thread; ignored while one is going on).
    Snapshot,
}

/// What a shard sends the hub, in order.
#[allow(clippy::large_enum_variant)]
pub enum ToHub {
    /// Transitions, in the order the shard emitted them.
    Transitions(TransitionBatch),
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
        /// Read while the shard was warming (a cold start: state may be incomplete).
        warming: bool,
    },
    /// The answer to a `Request::Stats`.
    Stats {
        /// The link asking; `None`: the daemon itself.
        link: Option<u32>,
        /// The asker's request id.
        request: u32,
        /// The shard's counters.
        stats: Box<ShardStats>,
    },
    /// The shard dropped this many transitions since its last message (outbox full): the hub
    /// must tell subscribers to re-query.
    Shed(u64),
    /// The heartbeat interval this shard asks gateways for changed (back-off under load,
    /// `crate::backoff`), ms; 0: the normal one.
    Pace {
        /// The shard.
        shard: usize,
        /// The interval, ms.
        interval_ms: u32,
    },
    /// The shard's deadlines now stretch for heartbeats this far apart (its answer to
    /// `Request::Pace`, sent to every hub), ms; 0: the normal interval.
    Paced {
        /// The shard.
        shard: usize,
        /// The interval, ms.
        interval_ms: u32,
    },
}

/// What a shard sends the store (its transition log and its snapshots), in order: a snapshot's
/// begin marks the log position its replay starts from.
// Batches travel by value in the channel's preallocated slots, as to the hub.
#[allow(clippy::large_enum_variant)]
pub enum ToStore {
    /// Transitions, in the order the shard emitted them (the same batches the hub gets).
    Transitions(TransitionBatch),
    /// The log lost this many transitions (its queue was full): a snapshot must cover them.
    Gap(u64),
    /// A snapshot pass began: what follows it in the log replays over it.
    SnapshotBegin {
        /// Wall ms at the pass's start.
        wall_ms: u64,
    },
    /// Encoded records of the pass (`presenced_core::saved`), whole records only.
    SnapshotChunk {
        /// The bytes.
        bytes: Vec<u8>,
        /// Records in them.
        records: u32,
    },
    /// The pass is over: every record is in the chunks before this.
    SnapshotEnd {
        /// Records written in the pass.
        records: u64,
    },
}

/// The most hub threads (`link.hubs` is at most this).
pub const MAX_HUBS: usize = 16;

/// The hub that serves a link among `hubs` (1 to [`MAX_HUBS`]): links are spread over the hubs
/// by id; the daemon's own requests (`None`, its metrics endpoint) go to hub 0. The link server
/// routes a link's commands by it and a shard its answers, so an answer travels down the FIFO
/// of the hub that asked.
pub fn hub_of(link: Option<u32>, hubs: usize) -> usize {
    link.map_or(0, |id| id as usize % hubs.max(1))
}

/// The shard that owns `user` among `shards` (`shards` ≥ 1): `presenced_wire::shard_of`, the
/// function gateways use too (SPEC.md, "Shard-aware routing").
pub fn owner(user: u64, shards: usize) -> usize {
    presenced_wire::shard_of(user, shards as u16) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_spread_over_the_hubs_and_the_daemon_asks_hub_zero() {
        assert_eq!(hub_of(None, 3), 0);
        let hubs: Vec<usize> = (1..=6).map(|id| hub_of(Some(id), 3)).collect();
        assert_eq!(hubs, vec![1, 2, 0, 1, 2, 0]);
        assert_eq!(hub_of(Some(7), 1), 0);
    }

    #[test]
    fn a_batch_fills_and_empties() {
        let mut b = EntryBatch::new();
        assert!(b.is_empty());
        for i in 0..MAX_ENTRY_BATCH as u64 {
            b.push(Heartbeat {
                user: i + 1,
                ..Heartbeat::BLANK
            });
        }
        assert!(b.is_full());
        assert_eq!(b.items().last().unwrap().user, MAX_ENTRY_BATCH as u64);
        b.clear();
        assert_eq!(b.len(), 0);
    }
}
