//! The push link under pressure, on the real binary over QUIC on loopback: gateways that stop
//! reading cost a bounded amount of memory and are closed after `link.stall_timeout`, while
//! the gateways that keep reading lose nothing; connections opened and closed by the
//! thousand leave the daemon's memory where it was; links spread over several QUIC endpoints
//! sharing the port each get every event; links spread over several hub threads each get
//! every event, a subscribe racing with transitions misses none, and STATS reports the
//! daemon's totals.

mod common;

use common::Daemon;
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push, RawLink, Trust};
use presenced_wire::link::{Event, WireState};
use presenced_wire::State;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn options(name: &str) -> ConnectOptions {
    ConnectOptions {
        client_name: name.into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    }
}

const MIB: u64 = 1 << 20;

/// Links that keep reading, each subscribed to one user of its own.
const READERS: u64 = 900;
/// Links that subscribe to everyone and then read nothing.
const STUCK: u64 = 100;
/// Users brought online and then offline: two transitions each.
const USERS: u64 = 40_000;
/// Each link's queue limit, which is also QUIC's send window for it.
const QUEUE_BYTES: u64 = 128 * 1024;
/// The stuck links' receive window.
const STUCK_WINDOW: u32 = 16 * 1024;
/// The set of users a lagging link is owed (`hub::LAG_USERS_LIMIT`, 8,000 user ids in a hash
/// set of 16,384 slots of 9 bytes).
const LAGGED_USERS_BYTES: u64 = 16_384 * 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_links_cost_bounded_memory_and_are_closed_while_readers_lose_nothing() {
    let queue = QUEUE_BYTES.to_string();
    let d = Daemon::start(&[
        "--shards",
        "1",
        "--set",
        "link.max_links=1100",
        "--set",
        &format!("link.queue_bytes={queue}"),
        "--set",
        "link.stall_timeout=2s",
        "--set",
        "link.max_frame_len=65536",
        "--set",
        "presence.heartbeat_interval=30s",
    ]);
    let started = d.memory().0;
    let addr = d.link;
    let mut readers = Vec::new();
    for chunk in (1..=READERS).collect::<Vec<_>>().chunks(50) {
        let opened = futures_join(chunk.iter().map(move |&user| async move {
            let link = LinkClient::connect(addr, options(&format!("reader-{user}")))
                .await
                .expect("connect a reader");
            link.subscribe(&[user]).await.expect("subscribe");
            (user, link)
        }))
        .await;
        readers.extend(opened);
    }
    // Every user online and offline once before the stuck links open, so that the state the
    // daemon keeps for them (records, last seen, log) is in place before the measurement.
    let mut gw = HeartbeatClient::new(1, 1, d.heartbeat).expect("udp");
    churn(&mut gw, 1);
    for (user, link) in &readers {
        expect_online_then_offline(*user, link).await;
    }
    let mut stuck = Vec::new();
    for i in 0..STUCK {
        let mut link = RawLink::connect(d.link, options(&format!("stuck-{i}")), STUCK_WINDOW)
            .await
            .expect("connect a stuck link");
        link.subscribe_all().await.expect("firehose");
        stuck.push(link);
    }
    let (open, _) = d.memory();

    // Every user online, then offline: far more than each stuck link may hold. Each reader
    // sees its user online and then offline.
    churn(&mut gw, 2);
    for (user, link) in &readers {
        expect_online_then_offline(*user, link).await;
    }

    // The stuck links are closed once they have taken nothing for the stall timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let stats = readers[0].1.stats().await.expect("stats");
        let closed = stats.link.links_stalled == STUCK && stats.link.links == READERS;
        if closed || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.link.links_stalled, STUCK, "{:?}", stats.link);
    assert_eq!(stats.link.links, READERS);
    assert!(stats.link.per_link.iter().all(|l| l.events_dropped == 0));
    assert!(stats.link.events_dropped > 0, "the stuck links lost events");
    let (after, peak) = d.memory();
    let growth = peak.saturating_sub(open);
    // What the stuck links may hold: each its queue, one LAGGED frame (64 KiB at most),
    // QUIC's send window of the same size as the queue, and the set of users it lagged on;
    // the transitions they would have been sent, 27 bytes an event, are many times that.
    let bound = STUCK * (2 * QUEUE_BYTES + 64 * 1024 + LAGGED_USERS_BYTES);
    let unbounded = STUCK * 2 * USERS * 27;
    eprintln!(
        "RSS: started {} MiB, {} links open {} MiB, peak {} MiB (+{} MiB), after {} MiB; \
         stuck links' bound {} MiB, their events {} MiB",
        started / MIB,
        READERS + STUCK,
        open / MIB,
        peak / MIB,
        growth / MIB,
        after / MIB,
        bound / MIB,
        unbounded / MIB,
    );
    assert!(
        growth < bound + 16 * MIB,
        "RSS grew {} MiB with stuck links (bound {} MiB)",
        growth / MIB,
        bound / MIB
    );
    for link in stuck {
        drop(link);
    }
}

/// Every user online, then offline, as device `round` of each, in datagrams of 890 entries.
fn churn(gw: &mut HeartbeatClient, round: u32) {
    for state in [State::Online, State::Offline] {
        for chunk in (1..=USERS).collect::<Vec<_>>().chunks(890) {
            for &user in chunk {
                gw.push(entry(user, round, state, true)).unwrap();
            }
            gw.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits for `user` online and then offline on `link`, and nothing else.
async fn expect_online_then_offline(user: u64, link: &LinkClient) {
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), link.next_push()).await {
            Ok(Some(Push::Events(events))) => {
                seen.extend(events.iter().map(|e| (e.user, e.state)));
            }
            other => panic!("reader {user}: {other:?} after {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [(user, WireState::Online), (user, WireState::Offline)],
        "reader {user}"
    );
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

/// Connections opened and closed, 50 at a time, after a warm-up of 1,000 (the allocator's
/// and QUIC's tables settle at their working size), each subscribing to a user of its own.
const CHURNED: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_closed_leave_memory_where_it_was() {
    let d = Daemon::start(&["--shards", "1"]);
    let addr = d.link;
    let round = |first: u64, count: u64| async move {
        for chunk in (first..first + count).collect::<Vec<_>>().chunks(50) {
            futures_join(chunk.iter().map(move |&i| async move {
                let link = LinkClient::connect(addr, options(&format!("churn-{i}")))
                    .await
                    .expect("connect");
                link.subscribe(&[i]).await.expect("subscribe");
                link.close().await;
            }))
            .await;
        }
    };
    let (idle, _) = d.memory();
    round(1, 1_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (warm, _) = d.memory();
    let started = Instant::now();
    let mut samples = Vec::new();
    for k in 0..10 {
        round(1_001 + k * CHURNED / 10, CHURNED / 10).await;
        samples.push(d.memory().0 / 1024);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, peak) = d.memory();
    eprintln!(
        "RSS idle {} KiB; after a warm-up of 1,000 connections {} KiB; every 1,000 more {:?} \
         KiB; after {CHURNED} more {} KiB (peak {} KiB) in {:?}",
        idle / 1024,
        warm / 1024,
        samples,
        after / 1024,
        peak / 1024,
        started.elapsed()
    );
    assert!(
        after < warm + 8 * MIB,
        "RSS grew {} KiB over {CHURNED} connections",
        (after - warm) / 1024
    );
}

/// The UDP sockets of process `pid` bound to `port` on loopback (from its descriptors and
/// /proc/net/udp).
fn udp_sockets_on(pid: u32, port: u16) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && inodes.iter().any(|i| i == f[9]))
        .count()
}

/// Links connected to a daemon with three endpoints on the link port.
const SPREAD_LINKS: u64 = 24;
/// Users each of them watches.
const SPREAD_USERS: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_spread_over_several_endpoints_each_get_every_event() {
    let d = Daemon::start(&[
        "--shards",
        "1",
        "--set",
        "link.endpoints=3",
        "--set",
        "link.threads=3",
    ]);
    assert_eq!(
        udp_sockets_on(d.pid(), d.link.port()),
        3,
        "three endpoints on the port"
    );
    let users: Vec<u64> = (1..=SPREAD_USERS).collect();
    let mut links = Vec::new();
    for i in 0..SPREAD_LINKS {
        // Each link its own client socket, so the kernel spreads them by source port.
        let link = LinkClient::connect(d.link, options(&format!("spread-{i}")))
            .await
            .expect("connect");
        link.subscribe(&users).await.expect("subscribe");
        links.push(link);
    }
    let mut gw = HeartbeatClient::new(1, 1, d.heartbeat).expect("udp");
    for state in [State::Online, State::Offline] {
        for &user in &users {
            gw.push(entry(user, 1, state, true)).unwrap();
        }
        gw.flush().unwrap();
    }
    for (i, link) in links.iter().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < 2 * users.len() {
            match tokio::time::timeout(Duration::from_secs(20), link.next_push()).await {
                Ok(Some(Push::Events(events))) => {
                    seen.extend(events.iter().map(|e| (e.user, e.state)));
                }
                other => panic!("link {i}: {other:?} after {} events", seen.len()),
            }
        }
        let online: Vec<_> = users.iter().map(|&u| (u, WireState::Online)).collect();
        let offline: Vec<_> = users.iter().map(|&u| (u, WireState::Offline)).collect();
        assert_eq!(seen, [online, offline].concat(), "link {i}");
    }
    let stats = links[0].stats().await.expect("stats");
    assert_eq!(stats.link.links, SPREAD_LINKS);
    assert_eq!(stats.link.events_dropped, 0);
}

/// Hub threads of the daemon in the hubs test.
const HUBS: usize = 3;
/// Links subscribed before any transition, spread over the hubs by id.
const HUB_LINKS: u64 = 12;
/// Users each link watches.
const HUB_USERS: u64 = 400;
/// Rounds of every user online then offline: two transitions each.
const HUB_ROUNDS: u32 = 4;

/// Reads `link`'s events until it has `n`, by user in the order received.
async fn events_by_user(link: &LinkClient, n: usize, what: &str) -> HashMap<u64, Vec<Event>> {
    let mut by_user: HashMap<u64, Vec<Event>> = HashMap::new();
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(20), link.next_push()).await {
            Ok(Some(Push::Events(events))) => {
                seen += events.len();
                for e in events {
                    by_user.entry(e.user).or_default().push(e);
                }
            }
            other => panic!("{what}: {other:?} after {seen} of {n} events"),
        }
    }
    by_user
}

/// Names of the daemon's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_spread_over_several_hubs_each_get_every_event_and_stats_sum_the_hubs() {
    let d = Daemon::start(&["--shards", "2", "--set", &format!("link.hubs={HUBS}")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let hubs = loop {
        let mut hubs: Vec<String> = thread_names(d.pid())
            .into_iter()
            .filter(|n| n.starts_with("hub"))
            .collect();
        hubs.sort();
        if hubs.len() == HUBS || Instant::now() > deadline {
            break hubs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(hubs, ["hub-0", "hub-1", "hub-2"]);
    let users: Vec<u64> = (1..=HUB_USERS).collect();
    let mut links = Vec::new();
    for i in 0..HUB_LINKS {
        let link = LinkClient::connect(d.link, options(&format!("hub-{i}")))
            .await
            .expect("connect");
        link.subscribe(&users).await.expect("subscribe");
        links.push(link);
    }
    // Every user online then offline, HUB_ROUNDS times, while one more link subscribes.
    let heartbeat = d.heartbeat;
    let sender = std::thread::spawn(move || {
        let mut gw = HeartbeatClient::new(1, 1, heartbeat).expect("udp");
        for _ in 0..HUB_ROUNDS {
            for state in [State::Online, State::Offline] {
                for user in 1..=HUB_USERS {
                    gw.push(entry(user, 1, state, true)).unwrap();
                }
                gw.flush().unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(70)).await;
    let racer = LinkClient::connect(d.link, options("racer"))
        .await
        .expect("connect");
    let snapshot = racer.subscribe(&users).await.expect("subscribe");
    sender.join().unwrap();
    let per_link = 2 * HUB_ROUNDS as usize * users.len();
    let mut first = HashMap::new();
    for (i, link) in links.iter().enumerate() {
        let got = events_by_user(link, per_link, &format!("link {i}")).await;
        for &user in &users {
            let states: Vec<WireState> = got[&user].iter().map(|e| e.state).collect();
            let flips = [WireState::Online, WireState::Offline];
            assert_eq!(
                states,
                flips.repeat(HUB_ROUNDS as usize),
                "link {i} user {user}"
            );
        }
        if i == 0 {
            first = got;
        }
    }
    // The racer: its snapshot, then exactly the transitions after it (no gap, no duplicate).
    let mut racer_expected = 0;
    let mut after_snapshot = HashMap::new();
    for record in &snapshot {
        let all = &first[&record.user];
        assert!(
            record.version == 0 || all.iter().any(|e| e.version == record.version),
            "user {}: snapshot version {} is no transition's",
            record.user,
            record.version
        );
        let later: Vec<Event> = all
            .iter()
            .filter(|e| e.version > record.version)
            .copied()
            .collect();
        racer_expected += later.len();
        after_snapshot.insert(record.user, later);
    }
    let raced = events_by_user(&racer, racer_expected, "racer").await;
    for (user, later) in &after_snapshot {
        assert_eq!(
            raced.get(user).cloned().unwrap_or_default(),
            *later,
            "racer, user {user}"
        );
    }
    // The other hubs' figures are at most about 100 ms old.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = links[0].stats().await.expect("stats");
    assert_eq!(stats.link.links, HUB_LINKS + 1);
    let ids: Vec<u32> = stats.link.per_link.iter().map(|l| l.id).collect();
    let mut hubs_used: Vec<u32> = ids.iter().map(|id| id % HUBS as u32).collect();
    hubs_used.sort();
    hubs_used.dedup();
    assert_eq!((ids.len(), hubs_used.len()), (HUB_LINKS as usize + 1, HUBS));
    let received = HUB_LINKS * per_link as u64 + racer_expected as u64;
    assert_eq!(stats.link.events_sent, received);
    assert_eq!(stats.link.events_dropped, 0);
    assert_eq!(stats.link.transitions, per_link as u64);
    let per_link_sent: u64 = stats.link.per_link.iter().map(|l| l.events_sent).sum();
    assert_eq!(per_link_sent, received);
}
