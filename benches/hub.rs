//! The hub of a cluster member on a change of roles: a member of three leaving and coming back
//! while one link holds 1M subscriptions. On every change the hub scans every subscribed user
//! for the ones it became primary of (ARCHITECTURE.md, "The cluster"); the hub thread pushes
//! nothing meanwhile, so this is how long a takeover stalls every link's events.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use presenced_core::clock::Now;
use presenced_core::event::Presence;
use presenced_node::bus::{Request, ToHub};
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
    hub.handle_command(Command::Open {
        link: 1,
        version: Version::V4,
        name: "bench".to_owned(),
        peer: SocketAddr::from(([127, 0, 0, 1], 5000)),
        limits: Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_users_per_request: SUBSCRIBED as u32,
            max_subscriptions: SUBSCRIBED as u32,
            ..Limits::default()
        },
    });
    hub.handle_command(Command::Subscribe {
        link: 1,
        request: 1,
        users: (1..=SUBSCRIBED).map(|i| mix64(i) | 1).collect(),
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
    hub
}

fn bench(c: &mut Criterion) {
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
    assert!(gained > 0, "the changes moved users to this member");
}

criterion_group!(benches, bench);
criterion_main!(benches);
