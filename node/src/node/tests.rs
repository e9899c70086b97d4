//! The shard node's rules under fake time: datagrams and inbox messages in, transmits and
//! deadlines out.

use super::*;
use crate::auth::Keys;
use crate::bus::{EntryBatch, ToStore, TRANSITION_BATCH};
use presenced_core::event::{Cause, PublicState};
use presenced_wire::{encode, Entry, Header, State};
use std::sync::Arc;

const WALL0: u64 = 1_700_000_000_000;
const SEC: u64 = 1_000_000;
/// The source address of the test's datagrams.
const GATEWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn at(mono_us: u64) -> Now {
    Now {
        mono_us,
        wall_ms: WALL0 + mono_us / 1000,
    }
}

fn config(index: usize, shards: usize) -> NodeConfig {
    NodeConfig {
        index,
        shards,
        hubs: 1,
        core: CoreConfig {
            user_capacity: 1000,
            multi_device_users: 10,
            ..CoreConfig::default()
        },
        cross_shard_batch: 4,
        link_outbox: 1000,
        store: None,
        warming_until_us: None,
        sources: crate::auth::sources::SourceLimits::default(),
        backoff: crate::backoff::BackoffConfig::disabled(),
    }
}

fn node(config: NodeConfig) -> ShardNode {
    ShardNode::new(config, Verifier::new(None, 30_000), at(0)).unwrap()
}

fn datagram(users: &[u64], state: State) -> Vec<u8> {
    let entries: Vec<Entry> = users
        .iter()
        .map(|&user| Entry {
            user,
            device: 1,
            state,
            active: true,
        })
        .collect();
    encode(&Header::new(1, 1, 0, WALL0), &entries).unwrap()
}

/// Users owned by `shard` of `shards`, in increasing order.
fn owned_by(shard: usize, shards: usize) -> impl Iterator<Item = u64> {
    (1u64..).filter(move |&u| owner(u, shards) == shard)
}

/// Everything the node has to send now: entries per shard, and transitions for the hub.
#[derive(Default)]
struct Sent {
    peers: Vec<(usize, Vec<u64>)>,
    transitions: Vec<Transition>,
    other: Vec<String>,
    store: Vec<ToStore>,
}

fn drain(node: &mut ShardNode) -> Sent {
    let mut sent = Sent::default();
    while let Some(t) = node.poll_transmit() {
        match t {
            Transmit::Peer { shard, batch } => sent
                .peers
                .push((shard, batch.items().iter().map(|h| h.user).collect())),
            Transmit::Hub(_, ToHub::Transitions(b)) => sent.transitions.extend(b.items()),
            Transmit::Hub(_, ToHub::Shed(n)) => sent.other.push(format!("shed {n}")),
            Transmit::Hub(_, ToHub::Snapshot { presence, .. }) => {
                sent.other.push(format!("snapshot {presence:?}"))
            }
            Transmit::Hub(_, ToHub::Stats { .. }) => sent.other.push("stats".into()),
            Transmit::Hub(_, ToHub::Pace { shard, interval_ms }) => {
                sent.other.push(format!("pace {shard} {interval_ms}"))
            }
            Transmit::Hub(_, ToHub::Paced { shard, interval_ms }) => {
                sent.other.push(format!("paced {shard} {interval_ms}"))
            }
            Transmit::Store(message) => sent.store.push(message),
        }
    }
    sent
}

#[test]
fn entries_go_to_the_shard_that_owns_their_user() {
    let mut node = node(config(0, 3));
    let mine: Vec<u64> = owned_by(0, 3).take(2).collect();
    let theirs: Vec<u64> = owned_by(2, 3).take(5).collect();
    let users: Vec<u64> = mine.iter().chain(&theirs).copied().collect();
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&users, State::Online));
    // Owned entries applied at once; a full batch of 4 for shard 2 ready at once.
    let sent = drain(&mut node);
    assert_eq!(sent.peers, vec![(2, theirs[..4].to_vec())]);
    let online: Vec<u64> = sent.transitions.iter().map(|t| t.user).collect();
    assert_eq!(online, mine);
    assert!(sent
        .transitions
        .iter()
        .all(|t| t.cause == Cause::FirstHeartbeat));
    // The partial batch leaves at the end of the round.
    assert_eq!(node.poll_timeout(), Some(0));
    node.handle_timeout(at(SEC));
    assert_eq!(drain(&mut node).peers, vec![(2, theirs[4..].to_vec())]);
    let stats = node.stats();
    assert_eq!((stats.routed_out, stats.datagrams), (5, 1));
}

#[test]
fn entries_from_another_shard_are_applied_and_timed_from_their_receipt() {
    let mut node = node(config(1, 2));
    let user = owned_by(1, 2).next().unwrap();
    let mut batch = EntryBatch::new();
    batch.since_us = 5;
    batch.push(Heartbeat {
        user,
        device: 1,
        report: Report::Online,
        active: true,
    });
    node.handle_inbox(at(SEC), Inbox::Entries(batch));
    node.handle_timeout(at(SEC));
    let Some(Transmit::Hub(_, ToHub::Transitions(out))) = node.poll_transmit() else {
        panic!("a transition for the hub")
    };
    assert_eq!((out.items()[0].user, out.since_us), (user, 5));
    assert_eq!(node.stats().routed_in, 1);
}

#[test]
fn a_full_inbox_sheds_and_counts_the_batch() {
    let mut node = node(config(0, 2));
    let theirs: Vec<u64> = owned_by(1, 2).take(4).collect();
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&theirs, State::Online));
    let t = node.poll_transmit().unwrap();
    node.handle_refused(t);
    let stats = node.stats();
    assert_eq!((stats.routed_out, stats.cross_shard_shed), (0, 4));
}

#[test]
fn a_hub_message_the_channel_refused_is_sent_again_first() {
    let mut node = node(config(0, 1));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3], State::Online));
    let first = node.poll_transmit().unwrap();
    node.handle_refused(first);
    // Nothing more for that hub this turn; the next turn sends it first.
    assert!(node.poll_transmit().is_none());
    let users: Vec<u64> = drain(&mut node)
        .transitions
        .iter()
        .map(|t| t.user)
        .collect();
    assert_eq!(users, vec![1, 2, 3]);
}

#[test]
fn transitions_past_the_outbox_are_shed_then_reported_before_the_next() {
    let mut cfg = config(0, 1);
    cfg.link_outbox = 2;
    let mut node = node(cfg);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    // The outbox holds two transitions: three more are shed whole.
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3, 4, 5], State::Online));
    assert_eq!(node.stats().transitions_shed, 3);
    let sent = drain(&mut node);
    assert_eq!(sent.transitions.len(), 2);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[6], State::Online));
    let sent = drain(&mut node);
    assert_eq!(sent.other, vec!["shed 3"]);
    assert_eq!(sent.transitions[0].user, 6);
}

#[test]
fn transitions_travel_in_fixed_batches() {
    let mut node = node(config(0, 1));
    let users: Vec<u64> = (1..=89).collect();
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&users, State::Online));
    let mut sizes = Vec::new();
    while let Some(Transmit::Hub(_, ToHub::Transitions(b))) = node.poll_transmit() {
        sizes.push(b.len());
    }
    assert_eq!(
        sizes,
        vec![
            TRANSITION_BATCH,
            TRANSITION_BATCH,
            89 - 2 * TRANSITION_BATCH
        ]
    );
}

#[test]
fn a_snapshot_answer_follows_the_transitions_before_it() {
    let mut node = node(config(0, 1));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[7], State::Online));
    node.handle_inbox(
        at(SEC),
        Inbox::Request(Request::Snapshot {
            link: 1,
            request: 2,
            subscribe: true,
            users: vec![7, 8],
        }),
    );
    let sent = drain(&mut node);
    assert_eq!(sent.transitions.len(), 1);
    assert_eq!(sent.other.len(), 1);
    assert!(sent.other[0].contains("Online") && sent.other[0].contains("Offline"));
}

#[test]
fn the_node_sleeps_until_its_next_timer() {
    let mut node = node(config(0, 1));
    assert_eq!(node.poll_timeout(), None);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[7], State::Online));
    assert_eq!(node.poll_timeout(), Some(0), "a transition to send");
    drain(&mut node);
    node.handle_timeout(at(SEC));
    // The earliest timer: the activity window (idle_after, 5 min) or the heartbeat deadline
    // (20 s + 2 × 12 s), whichever comes first, at the start of its tick.
    let tick = CoreConfig::default().tick_us;
    let deadline = SEC + CoreConfig::default().timeout_us();
    let wake = node.poll_timeout().unwrap();
    assert_eq!(wake, (deadline / tick + 1) * tick);
    // Nothing happens before it; at it, the user goes offline.
    node.handle_timeout(at(wake - 1));
    assert!(drain(&mut node).transitions.is_empty());
    node.handle_timeout(at(wake));
    let sent = drain(&mut node);
    assert_eq!(sent.transitions.len(), 1);
    assert_eq!(sent.transitions[0].state, PublicState::Offline);
    assert_eq!(sent.transitions[0].cause, Cause::Timeout);
}

#[test]
fn malformed_and_refused_datagrams_are_counted_by_reason_and_reported_once() {
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let keys = Keys::parse(&format!("[gateways]\n7 = \"{key}\"\n"), 64, 10, None).unwrap();
    let mut node = ShardNode::new(
        config(0, 1),
        Verifier::new(Some(Arc::new(keys)), 30_000),
        at(0),
    )
    .unwrap();
    node.handle_datagram(at(SEC), GATEWAY, b"not a datagram");
    let unsigned = datagram(&[1], State::Online);
    for i in 0..3 {
        node.handle_datagram(at(SEC + i), GATEWAY, &unsigned);
    }
    let stats = node.stats();
    assert_eq!(stats.dropped["unauthenticated"], 3);
    assert_eq!(stats.dropped_total(), 4);
    assert_eq!(stats.core.heartbeats, 0, "nothing reached the core");
    // One report now; the next after REFUSAL_REPORT_EVERY_MS, with the count since.
    let report = |count| NodeEvent::Refused {
        reason: "unauthenticated",
        count,
        gateway: 1,
    };
    assert_eq!(node.poll_event(), Some(report(1)));
    assert_eq!(node.poll_event(), None);
    node.handle_datagram(at(SEC + REFUSAL_REPORT_EVERY_MS * 1000), GATEWAY, &unsigned);
    assert_eq!(node.poll_event(), Some(report(3)));
}

#[test]
fn a_source_that_keeps_failing_is_dropped_unread_and_others_are_not() {
    use presenced_wire::auth::Key;
    let limits = config(0, 1).sources;
    let (burst, block_ms) = (limits.failure_burst, limits.block_ms);
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let keys = Keys::parse(&format!("[gateways]\n1 = \"{key}\"\n"), 64, 10, None).unwrap();
    let mut node = ShardNode::new(
        config(0, 1),
        Verifier::new(Some(Arc::new(keys)), 30_000),
        at(0),
    )
    .unwrap();
    let signed = |seq: u64, key: &str| {
        let entry = Entry {
            user: 5,
            device: 1,
            state: State::Online,
            active: true,
        };
        let mut enc = presenced_wire::Encoder::new(Header::new(1, 1, seq, WALL0));
        enc.push(entry).unwrap();
        enc.finish_signed(&Key::from_hex(key).unwrap())
            .unwrap()
            .to_vec()
    };
    let forged = signed(0, &"a5".repeat(32));
    let flooder: IpAddr = "192.0.2.66".parse().unwrap();
    for _ in 0..=burst {
        node.handle_datagram(at(SEC), flooder, &forged);
    }
    // One failure past the burst blocked it: its next datagrams are not even decoded.
    for _ in 0..5 {
        node.handle_datagram(at(SEC), flooder, &forged);
    }
    // A valid gateway at another address, with a refused datagram now and then, goes on.
    node.handle_datagram(at(SEC), GATEWAY, &signed(1, key));
    node.handle_datagram(at(SEC), GATEWAY, &signed(1, key));
    node.handle_datagram(at(SEC), GATEWAY, &signed(2, key));
    let stats = node.stats();
    assert_eq!(stats.dropped["bad_mac"], u64::from(burst) + 1);
    assert_eq!(stats.dropped[SOURCE_BLOCKED], 5);
    assert_eq!(stats.dropped["replayed"], 1);
    assert_eq!(stats.sources_blocked, 1);
    assert_eq!(stats.core.heartbeats, 2);
    let events: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
    assert!(events.contains(&NodeEvent::SourcesBlocked {
        count: 1,
        latest: flooder,
        block_ms,
    }));
    // The block ends: the flooder's datagrams are checked (and refused) again.
    node.handle_datagram(at(SEC + block_ms * 1000), flooder, &forged);
    let stats = node.stats();
    assert_eq!(stats.dropped["bad_mac"], u64::from(burst) + 2);
    assert_eq!(stats.dropped[SOURCE_BLOCKED], 5);
}

#[test]
fn a_source_of_undecodable_datagrams_is_blocked_by_its_own_budget() {
    let limits = SourceLimits {
        failure_burst: 3,
        block_ms: 2_000,
        ..SourceLimits::default()
    };
    let mut node = node(NodeConfig {
        sources: limits,
        ..config(0, 1)
    });
    let sprayer: IpAddr = "192.0.2.70".parse().unwrap();
    for _ in 0..4 {
        node.handle_datagram(at(SEC), sprayer, b"not a heartbeat datagram");
    }
    node.handle_datagram(at(SEC), sprayer, b"not a heartbeat datagram");
    let stats = node.stats();
    assert_eq!(stats.sources_blocked, 1);
    assert_eq!(stats.dropped[SOURCE_BLOCKED], 1);
    assert_eq!(stats.dropped.values().sum::<u64>(), 5);
    // Two seconds on, its datagrams are read again.
    node.handle_datagram(at(3 * SEC), sprayer, b"still not one");
    assert_eq!(node.stats().dropped[SOURCE_BLOCKED], 1);
}

#[test]
fn blocked_sources_go_to_the_kernel_filter_while_there_is_room_and_leave_it_when_unblocked() {
    let limits = SourceLimits {
        failure_burst: 1,
        block_ms: 2_000,
        kernel_blocks: 2,
        ..SourceLimits::default()
    };
    let mut node = node(NodeConfig {
        sources: limits,
        ..config(0, 1)
    });
    assert_eq!(node.poll_kernel_blocks(), None);
    let sprayers: Vec<IpAddr> = ["192.0.2.70", "2001:db8::70", "192.0.2.71"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    for (i, &sprayer) in sprayers.iter().enumerate() {
        for _ in 0..2 {
            node.handle_datagram(at(SEC + i as u64 * 100_000), sprayer, b"garbage");
        }
    }
    assert_eq!(node.stats().sources_blocked, 3);
    // Two fit the kernel's list; the third is dropped by the shard only, and counted.
    assert_eq!(node.poll_kernel_blocks(), Some(sprayers[..2].to_vec()));
    assert_eq!(node.poll_kernel_blocks(), None, "given out once per change");
    assert_eq!(node.stats().kernel_blocks_full, 1);
    // No datagram of theirs comes again: the node's own deadline ends the first block.
    assert_eq!(node.poll_timeout(), Some(3 * SEC));
    node.handle_timeout(at(3 * SEC - 1000));
    assert_eq!(node.poll_kernel_blocks(), None);
    node.handle_timeout(at(3 * SEC));
    assert_eq!(node.poll_kernel_blocks(), Some(sprayers[1..2].to_vec()));
    node.handle_timeout(at(3 * SEC + 100_000));
    assert_eq!(node.poll_kernel_blocks(), Some(Vec::new()));
    assert_eq!(node.poll_timeout(), None);
}

#[test]
fn the_receive_counters_add_up() {
    let mut node = node(config(0, 1));
    node.handle_receive(false, 0);
    node.handle_receive(false, 12);
    let stats = node.stats();
    assert_eq!((stats.recv_calls, stats.kernel_dropped), (2, 12));
}

#[test]
fn a_hot_shard_asks_for_a_longer_interval_and_extends_its_own_deadlines_at_once() {
    let mut node = node(NodeConfig {
        backoff: crate::backoff::BackoffConfig {
            enabled: true,
            normal_ms: 20_000,
            interval_ms: 40_000,
            calm_ms: 60_000,
        },
        ..config(0, 1)
    });
    node.handle_timeout(at(SEC));
    assert!(drain(&mut node).other.is_empty(), "calm: nothing asked");
    node.handle_receive(true, 5);
    node.handle_timeout(at(2 * SEC));
    assert_eq!(drain(&mut node).other, ["pace 0 40000"]);
    let stats = node.stats();
    assert_eq!(
        (stats.backoff_interval_ms, stats.backoff_entered),
        (40_000, 1)
    );
    // Its own deadlines are stretched before any gateway can hear of the ask: twice the
    // interval, twice the timeout (20 s + 2 × 12 s), 44 s later.
    assert_eq!(stats.deadline_extension_ms, 44_000);
    // The hub asks every shard for the longest interval any shard asks.
    node.handle_inbox(
        at(2 * SEC),
        Inbox::Request(Request::Pace {
            interval_ms: 60_000,
        }),
    );
    assert_eq!(node.stats().deadline_extension_ms, 88_000);
    // The hubs hear that it has.
    assert_eq!(drain(&mut node).other, ["paced 0 60000"]);
    // A minute without drops: this shard asks for the normal interval again, but its
    // deadlines stay stretched until the hub asks for a shorter one.
    node.handle_timeout(at(62 * SEC));
    assert_eq!(drain(&mut node).other, ["pace 0 0"]);
    assert_eq!(node.stats().backoff_interval_ms, 0);
    assert_eq!(node.stats().deadline_extension_ms, 88_000);
}

#[test]
fn losses_are_reported_at_most_once_per_kind_per_period_with_the_count_since() {
    let mut node = node(config(0, 2));
    let theirs: Vec<u64> = owned_by(1, 2).take(4).collect();
    node.handle_receive(false, 12);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&theirs, State::Online));
    let t = node.poll_transmit().unwrap();
    node.handle_refused(t);
    node.handle_timeout(at(SEC));
    let lost = |loss, count| Some(NodeEvent::Lost { loss, count });
    assert_eq!(node.poll_event(), lost(Loss::KernelDropped, 12));
    assert_eq!(node.poll_event(), lost(Loss::CrossShardShed, 4));
    assert_eq!(node.poll_event(), None);
    // More losses within the period wait; nothing lost, nothing said.
    node.handle_receive(false, 3);
    node.handle_timeout(at(2 * SEC));
    assert_eq!(node.poll_event(), None);
    let later = SEC + REFUSAL_REPORT_EVERY_MS * 1000;
    node.handle_timeout(at(later));
    assert_eq!(node.poll_event(), lost(Loss::KernelDropped, 3));
    assert_eq!(node.poll_event(), None);
    node.handle_timeout(at(later + REFUSAL_REPORT_EVERY_MS * 1000));
    assert_eq!(node.poll_event(), None, "no new loss, no report");
}

fn with_store(queue_transitions: usize) -> NodeConfig {
    NodeConfig {
        store: Some(StoreLimits {
            queue_transitions,
            snapshot_slots_per_round: 64,
        }),
        ..config(0, 1)
    }
}

/// The store's view: logged transitions, gaps, and the snapshot's marks and records.
fn logged(messages: &[ToStore]) -> (Vec<u64>, Vec<String>, Vec<u8>) {
    let (mut users, mut marks, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for m in messages {
        match m {
            ToStore::Transitions(b) => users.extend(b.items().iter().map(|t| t.user)),
            ToStore::Gap(n) => marks.push(format!("gap {n}")),
            ToStore::SnapshotBegin { .. } => marks.push("begin".into()),
            ToStore::SnapshotChunk { bytes: b, .. } => bytes.extend_from_slice(b),
            ToStore::SnapshotEnd { records } => marks.push(format!("end {records}")),
        }
    }
    (users, marks, bytes)
}

#[test]
fn every_transition_is_logged_and_a_snapshot_marks_where_replay_starts() {
    let mut node = node(with_store(1000));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    node.handle_inbox(at(SEC), Inbox::Snapshot);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3], State::Online));
    let mut store = Vec::new();
    for round in 0..100 {
        node.handle_timeout(at(SEC + round));
        store.extend(drain(&mut node).store);
    }
    let (users, marks, bytes) = logged(&store);
    assert_eq!(users, vec![1, 2, 3]);
    assert_eq!(marks, vec!["begin", "end 3"]);
    // Transitions 1 and 2 are before the mark; 3 after it.
    let begin = store
        .iter()
        .position(|m| matches!(m, ToStore::SnapshotBegin { .. }))
        .unwrap();
    assert!(matches!(&store[begin + 1], ToStore::Transitions(b) if b.items()[0].user == 3));
    assert_eq!(node.stats().snapshots, 1);
    // The chunks restore the users.
    let mut back = super::tests::node(with_store(1000));
    assert_eq!(back.restore_saved(at(2 * SEC), &bytes), Ok(3));
    for u in 1..=3 {
        assert_eq!(back.shard().query(u), node.shard().query(u));
    }
    assert_eq!(back.stats().restored_users, 3);
}

#[test]
fn transitions_every_hub_shed_are_logged_all_the_same() {
    let mut node = node(NodeConfig {
        link_outbox: 1,
        ..with_store(1000)
    });
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    let sent = drain(&mut node);
    assert!(sent.transitions.is_empty(), "over the hub's outbox: shed");
    assert_eq!(node.stats().transitions_shed, 2);
    let (users, marks, _) = logged(&sent.store);
    assert_eq!(users, vec![1, 2], "but in the log");
    assert!(marks.is_empty());
    assert_eq!(node.stats().log_shed, 0);
}

#[test]
fn a_full_log_queue_loses_transitions_as_a_gap_never_the_hubs() {
    let mut node = node(with_store(2));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3, 4, 5], State::Online));
    assert_eq!(node.stats().log_shed, 3);
    let sent = drain(&mut node);
    assert_eq!(sent.transitions.len(), 5, "the hub gets every transition");
    let (users, marks, _) = logged(&sent.store);
    assert_eq!((users, marks.len()), (vec![1, 2], 0));
    // The next transitions that fit are logged after a gap the store must cover.
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[6], State::Online));
    let store = drain(&mut node).store;
    assert!(matches!(store[0], ToStore::Gap(3)));
    assert_eq!(logged(&store).0, vec![6]);
}

#[test]
fn restored_users_come_back_with_their_logged_state() {
    let mut live = node(with_store(1000));
    live.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    let mut bytes = Vec::new();
    live.handle_inbox(at(SEC), Inbox::Snapshot);
    while live.snapshot_final(at(SEC)) {}
    let (_, _, snapshot) = logged(&drain(&mut live).store);
    bytes.extend(snapshot);
    live.handle_datagram(at(2 * SEC), GATEWAY, &datagram(&[1], State::Offline));
    live.handle_datagram(at(2 * SEC), GATEWAY, &datagram(&[7], State::Idle));
    let log: Vec<Transition> = drain(&mut live).transitions;
    let mut back = node(with_store(1000));
    back.restore_saved(at(3 * SEC), &bytes).unwrap();
    for t in &log {
        back.restore_logged(at(3 * SEC), t);
    }
    for u in [1, 2, 7] {
        assert_eq!(back.shard().query(u), live.shard().query(u), "user {u}");
    }
    assert_eq!(back.stats().restored_users, 3);
    assert_eq!(
        back.restore_saved(at(3 * SEC), &[1, 2, 3]),
        Err(SavedError::Truncated)
    );
    assert_eq!(back.stats().restore_refused, 1);
}

#[test]
fn the_final_snapshot_comes_in_bounded_chunks_one_per_call() {
    const USERS: u64 = 100_000;
    let mut cfg = with_store(1 << 20);
    cfg.core.user_capacity = USERS as u32;
    let mut node = node(cfg);
    let users: Vec<u64> = (1..=USERS).collect();
    for chunk in users.chunks(89) {
        node.handle_datagram(at(SEC), GATEWAY, &datagram(chunk, State::Online));
    }
    drain(&mut node);
    let (mut calls, mut chunks, mut records) = (0, 0, 0);
    loop {
        calls += 1;
        let more = node.snapshot_final(at(SEC));
        for m in drain(&mut node).store {
            if let ToStore::SnapshotChunk { bytes, records: r } = m {
                assert!(bytes.len() <= MAX_SNAPSHOT_CHUNK_BYTES);
                assert!(r as usize <= MAX_SNAPSHOT_SLOTS_PER_ROUND);
                chunks += 1;
                records += u64::from(r);
            }
        }
        if !more {
            break;
        }
    }
    // 114,286 slots: two chunks, each handed over before the next is cut.
    assert_eq!((calls, chunks, records), (2, 2, USERS));
}

#[test]
fn answers_read_during_a_cold_start_are_marked_warming() {
    let mut cfg = config(0, 1);
    cfg.warming_until_us = Some(10 * SEC);
    let mut node = node(cfg);
    let ask = |node: &mut ShardNode, t| {
        node.handle_inbox(
            at(t),
            Inbox::Request(Request::Snapshot {
                link: 1,
                request: 1,
                subscribe: false,
                users: vec![1],
            }),
        );
        match node.poll_transmit() {
            Some(Transmit::Hub(_, ToHub::Snapshot { warming, .. })) => warming,
            _ => panic!("a snapshot answer"),
        }
    };
    assert!(ask(&mut node, SEC));
    assert!(!ask(&mut node, 10 * SEC));
}

/// What each hub got, in order, as short strings ("t USER", "shed N", "snapshot LINK"); a hub
/// whose index is in `full` refuses everything, as a full channel does.
fn drain_hubs(node: &mut ShardNode, hubs: usize, full: &[usize]) -> Vec<Vec<String>> {
    let mut got = vec![Vec::new(); hubs];
    while let Some(t) = node.poll_transmit() {
        match t {
            Transmit::Hub(hub, message) if full.contains(&hub) => {
                node.handle_refused(Transmit::Hub(hub, message));
            }
            Transmit::Hub(hub, ToHub::Transitions(b)) => {
                got[hub].extend(b.items().iter().map(|t| format!("t {}", t.user)));
            }
            Transmit::Hub(hub, ToHub::Shed(n)) => got[hub].push(format!("shed {n}")),
            Transmit::Hub(hub, ToHub::Snapshot { link, .. }) => {
                got[hub].push(format!("snapshot {link}"));
            }
            Transmit::Hub(hub, _) => got[hub].push("other".into()),
            Transmit::Peer { .. } | Transmit::Store(_) => {}
        }
    }
    got
}

#[test]
fn every_hub_gets_every_transition_and_only_the_asking_hub_its_answer() {
    let mut node = node(NodeConfig {
        hubs: 3,
        ..config(0, 1)
    });
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    // Link 5 is hub 2's (5 % 3): its snapshot follows the transitions before it, there only.
    node.handle_inbox(
        at(SEC),
        Inbox::Request(Request::Snapshot {
            link: 5,
            request: 1,
            subscribe: true,
            users: vec![1],
        }),
    );
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3], State::Online));
    let got = drain_hubs(&mut node, 3, &[]);
    assert_eq!(got[0], ["t 1", "t 2", "t 3"]);
    assert_eq!(got[1], got[0]);
    assert_eq!(got[2], ["t 1", "t 2", "snapshot 5", "t 3"]);
}

#[test]
fn a_full_hub_holds_back_and_sheds_only_its_own_transitions() {
    let mut node = node(NodeConfig {
        hubs: 2,
        link_outbox: 2,
        ..config(0, 1)
    });
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[1, 2], State::Online));
    // Hub 1's channel is full: hub 0 still gets everything.
    let got = drain_hubs(&mut node, 2, &[1]);
    assert_eq!(got[0], ["t 1", "t 2"]);
    assert!(got[1].is_empty());
    // Hub 1's outbox is full: these are shed for it alone, and counted once for it.
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[3], State::Online));
    assert_eq!(node.stats().transitions_shed, 1);
    let got = drain_hubs(&mut node, 2, &[1]);
    assert_eq!(got[0], ["t 3"]);
    // Its channel has room again: what it held, then the report of what it lost.
    let got = drain_hubs(&mut node, 2, &[]);
    assert_eq!(got[1], ["t 1", "t 2"]);
    node.handle_datagram(at(SEC), GATEWAY, &datagram(&[4], State::Online));
    let got = drain_hubs(&mut node, 2, &[]);
    assert_eq!(got[0], ["t 4"]);
    assert_eq!(got[1], ["shed 1", "t 4"]);
}
