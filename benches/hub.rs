//! The hub's two costs that grow with its subscriptions.
//!
//! - **Fan-out** (`fan_out_*`): batches of transitions of random users, each user subscribed
//!   by eight links, put into their EVENTS frames and taken out, as the hub thread does with a
//!   shard's messages. The figure per event is what one hub thread can push.
//! - **A change of roles** (`role_change_1M_subscribed`): a cluster member of three leaving and
//!   coming back while one link holds 1M subscriptions. On every change the hub scans every
//!   subscribed user for the ones it became primary of (ARCHITECTURE.md, "The cluster"); the
//!   hub thread pushes nothing meanwhile, so this is how long a takeover stalls every link's
//!   events.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presenced_core::clock::Now;
use presenced_core::event::{Cause, Presence, PublicState, Transition};
use presenced_node::bus::{Request, ToHub, TransitionBatch, TRANSITION_BATCH};
use presenced_node::cluster::{ClusterConfig, EtcdEvent};
use presenced_node::hub::{Command, Hub, HubConfig};
use presenced_wire::cluster::Member;
use presenced_wire::hash::mix64;
use presenced_wire::link::{Limits, Version, DEFAULT_MAX_FRAME_LEN};
use std::net::SocketAddr;

const SUBSCRIBED: u64 = 1_000_000;

fn now(s: u64) -> Now {
    Now {
        mono_us: s * 1_000_000,
        wall_ms: 1_700_000_000_000 + s * 1_000,
    }
}

fn member(id: &str) -> Member {
    Member {
        id: id.to_owned(),
        link: "127.0.0.1:7060".to_owned(),
        heartbeat: "127.0.0.1:7070".to_owned(),
        warm_at_ms: 0,
    }
}

fn map(revision: u64, ids: &[&str]) -> EtcdEvent {
    let values = ids
        .iter()
        .map(|id| ((*id).to_owned(), serde_json::to_vec(&member(id)).unwrap()))
        .collect();
    EtcdEvent::Members { revision, values }
}

/// Users each of the fan-out's links is subscribed to.
const FAN_OUT_USERS: u64 = 100_000;
/// Links subscribed to every one of them.
const FAN_OUT_LINKS: u32 = 8;

/// The id of subscribed user `i` (spread over the key space, as real ids hash).
fn user(i: u64) -> u64 {
    mix64(i) | 1
}

/// Opens link `link` and subscribes it to `users`, answering the snapshot requests as the
/// shards would, and takes the frames out.
fn subscribe(hub: &mut Hub, link: u32, users: u64) {
    hub.handle_command(Command::Open {
        link,
        version: Version::V4,
        name: "bench".to_owned(),
        peer: SocketAddr::from(([127, 0, 0, 1], 5000)),
        limits: Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_users_per_request: users as u32,
            max_subscriptions: users as u32,
            ..Limits::default()
        },
    });
    hub.handle_command(Command::Subscribe {
        link,
        request: 1,
        users: (1..=users).map(user).collect(),
    });
    while let Some((_, request)) = hub.poll_request() {
        let Request::Snapshot {
            link,
            request,
            subscribe,
            users,
        } = request
        else {
            panic!("not a snapshot request: {request:?}")
        };
        hub.handle_shard(ToHub::Snapshot {
            link,
            request,
            subscribe,
            presence: users.into_iter().map(|u| (u, Presence::UNKNOWN)).collect(),
            warming: false,
        });
    }
    while hub.poll_transmit().is_some() {}
}

/// A hub of one shard with `FAN_OUT_LINKS` links, each subscribed to `FAN_OUT_USERS` users.
fn fan_out_hub() -> Hub {
    let mut hub = Hub::new(HubConfig {
        shards: 1,
        index: 0,
        queue_bytes: 1 << 30,
        cluster: None,
    });
    for link in 1..=FAN_OUT_LINKS {
        subscribe(&mut hub, link, FAN_OUT_USERS);
    }
    hub
}

/// 1,024 batches of `per_batch` transitions of users drawn from the subscribed ones.
fn transition_batches(per_batch: usize) -> Vec<TransitionBatch> {
    let mut draw = 0;
    (0..1024)
        .map(|_| {
            let mut batch = TransitionBatch::new();
            for _ in 0..per_batch {
                draw += 1;
                let online = draw % 2 == 0;
                batch.push(Transition {
                    user: user(1 + mix64(draw) % FAN_OUT_USERS),
                    state: if online {
                        PublicState::Online
                    } else {
                        PublicState::Offline
                    },
                    prev: if online {
                        PublicState::Offline
                    } else {
                        PublicState::Online
                    },
                    at_ms: 1_700_000_000_000,
                    cause: if online {
                        Cause::FirstHeartbeat
                    } else {
                        Cause::Logout
                    },
                    version: draw,
                    devices: u8::from(online),
                    seen: true,
                });
            }
            batch
        })
        .collect()
}

/// Member `b` of {a, b, c} (two replicas per user), its lease good for the whole run, with one
/// link subscribed to `SUBSCRIBED` users.
fn member_b() -> Hub {
    let mut hub = Hub::new(HubConfig {
        shards: 1,
        index: 0,
        queue_bytes: 1 << 30,
        cluster: Some(ClusterConfig {
            member: member("b"),
            replicas: 2,
            lease_ms: 3_600_000,
            skew_ms: 500,
        }),
    });
    let lease = EtcdEvent::Lease {
        sent_us: 0,
        ttl_ms: 3_600_000,
        fresh: true,
    };
    hub.handle_etcd(now(0), lease);
    hub.handle_etcd(now(0), map(1, &["a", "b", "c"]));
    subscribe(&mut hub, 1, SUBSCRIBED);
    hub
}

/// Fans out batches of `per_batch` transitions (each to `FAN_OUT_LINKS` links), taking the
/// frames out and reporting them written after each, as the link tasks would.
fn fan_out(c: &mut Criterion, per_batch: usize) {
    let mut group = c.benchmark_group("hub");
    let mut hub = fan_out_hub();
    let batches = transition_batches(per_batch);
    let events = batches.len() * per_batch * FAN_OUT_LINKS as usize;
    group.throughput(Throughput::Elements(events as u64));
    let name = format!("fan_out_{per_batch}_per_batch_{FAN_OUT_LINKS}_links_100k_users");
    group.bench_function(name, |b| {
        b.iter(|| {
            for batch in &batches {
                hub.handle_shard(ToHub::Transitions(*batch));
                while let Some((link, out)) = hub.poll_transmit() {
                    let bytes = out.queued_bytes();
                    hub.handle_command(Command::Written { link, bytes });
                }
            }
        });
    });
    group.finish();
    let stats = hub.stats();
    // (Both zero where a filter left the bench out.)
    let links = u64::from(FAN_OUT_LINKS);
    assert_eq!(
        stats.events_sent,
        stats.transitions * links,
        "every link took every event"
    );
    assert_eq!(stats.events_dropped, 0, "no link fell behind");
}

fn bench(c: &mut Criterion) {
    fan_out(c, 1);
    fan_out(c, TRANSITION_BATCH);
    let mut group = c.benchmark_group("hub");
    group.sample_size(10);
    let mut hub = member_b();
    let mut revision = 1;
    // Each iteration is one change of roles: `a` leaves (b gains the users a was primary of
    // with b next), or comes back; the frames it queued (MEMBERS, LAGGED) are taken after.
    group.bench_function("role_change_1M_subscribed", |b| {
        b.iter_batched(
            || {
                revision += 1;
                let ids: &[&str] = if revision % 2 == 0 {
                    &["b", "c"]
                } else {
                    &["a", "b", "c"]
                };
                map(revision, ids)
            },
            |event| hub.handle_etcd(now(1), event),
            BatchSize::PerIteration,
        );
        while hub.poll_transmit().is_some() {}
    });
    group.finish();
    let gained = hub.stats().gained;
    eprintln!("hub: {gained} subscribed users gained over the run's role changes");
    // (None where a filter left the bench out.)
    let changed = revision > 1;
    assert!(
        gained > 0 || !changed,
        "the changes moved users to this member"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
