//! The shard node's hot path allocates nothing per datagram: once its buffers are warm,
//! datagrams (owned entries applied, others batched for their shard, transitions batched for
//! the hub) and rounds of timers run without one heap allocation. Counted by an allocator that
//! counts this thread's allocations; one test in this binary, so nothing else runs beside it.

use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_node::auth::Verifier;
use presenced_node::bus::owner;
use presenced_node::node::{NodeConfig, ShardNode, StoreLimits, Transmit};
use presenced_wire::{encode, Entry, Header, State, MAX_ENTRIES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

/// The source address of the test's datagrams.
const GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// thread-local cell with a const initialiser, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn at(mono_us: u64) -> Now {
    Now {
        mono_us,
        wall_ms: 1_700_000_000_000 + mono_us / 1000,
    }
}

#[test]
fn datagrams_and_timers_allocate_nothing_once_warm() {
    let config = NodeConfig {
        index: 0,
        shards: 2,
        hubs: 1,
        core: CoreConfig {
            user_capacity: 100_000,
            multi_device_users: 1000,
            ..CoreConfig::default()
        },
        cross_shard_batch: 64,
        link_outbox: 1 << 20,
        // The log on, as in the daemon: its copies of the batches must not allocate either.
        store: Some(StoreLimits {
            queue_transitions: 1 << 20,
            snapshot_slots_per_round: 16 << 10,
        }),
        warming_until_us: None,
        sources: presenced_node::auth::sources::SourceLimits::default(),
        backoff: presenced_node::backoff::BackoffConfig::disabled(),
    };
    let mut node = ShardNode::new(config, Verifier::new(None, 30_000), at(0)).unwrap();
    // Full datagrams of users of both shards, each state flipping every round, so that every
    // round emits transitions and routes entries.
    let users: Vec<u64> = (1..=20 * MAX_ENTRIES as u64).collect();
    assert!(users.iter().any(|&u| owner(u, 2) == 1));
    let datagrams = |state: State| -> Vec<Vec<u8>> {
        users
            .chunks(MAX_ENTRIES)
            .map(|chunk| {
                let entries: Vec<Entry> = chunk
                    .iter()
                    .map(|&user| Entry {
                        user,
                        device: 1,
                        state,
                        active: true,
                    })
                    .collect();
                encode(&Header::new(1, 1, 0, 1), &entries).unwrap()
            })
            .collect()
    };
    let rounds = [datagrams(State::Online), datagrams(State::Idle)];
    let mut sent = (0u64, 0u64, 0u64);
    let mut run = |node: &mut ShardNode, round: usize, mono_us: u64| {
        for bytes in &rounds[round % 2] {
            node.handle_datagram(at(mono_us), GATEWAY, bytes);
            while let Some(t) = node.poll_transmit() {
                match t {
                    Transmit::Peer { batch, .. } => sent.0 += batch.len() as u64,
                    Transmit::Hub(..) => sent.1 += 1,
                    Transmit::Store(_) => sent.2 += 1,
                }
            }
        }
        node.handle_timeout(at(mono_us));
        while node.poll_transmit().is_some() {}
    };
    // Warm: records created, buffers at their working size.
    for round in 0..4 {
        run(&mut node, round, 1_000_000 + round as u64 * 1000);
    }
    let before = allocations();
    for round in 4..40 {
        run(&mut node, round, 1_000_000 + round as u64 * 1000);
    }
    let after = allocations();
    assert!(
        sent.0 > 0 && sent.1 > 0,
        "entries routed and transitions sent: {sent:?}"
    );
    assert_eq!(after - before, 0, "allocations in 36 warm rounds");
}
