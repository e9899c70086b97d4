//! The real `presenced` binary driven over real UDP and QUIC on loopback.

mod common;

use common::{Daemon, FAST, TICK_MS, TIMEOUT_MS};
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push, Trust};
use presenced_wire::link::{ErrorCode, Event, WireCause, WireState};
use presenced_wire::State;
use std::time::{Duration, Instant};

fn options() -> ConnectOptions {
    ConnectOptions {
        client_name: "test".into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    }
}

async fn link(d: &Daemon) -> LinkClient {
    LinkClient::connect(d.link, options())
        .await
        .expect("connect")
}

fn gateway(d: &Daemon, id: u32) -> HeartbeatClient {
    HeartbeatClient::new(id, 1, d.heartbeat).expect("udp")
}

fn beat(gw: &mut HeartbeatClient, user: u64, device: u32, state: State, active: bool) {
    gw.push(entry(user, device, state, active)).unwrap();
    gw.flush().unwrap();
}

/// Waits for `n` events (failing after `within`).
async fn events(link: &LinkClient, n: usize, within: Duration) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, link.next_push()).await {
            Ok(Some(Push::Events(batch))) => got.extend(batch),
            Ok(Some(other)) => panic!("unexpected push {other:?} after {} events", got.len()),
            Ok(None) => panic!("link ended after {} events", got.len()),
            Err(_) => panic!(
                "only {} of {n} events in {within:?}; the last: {:?}",
                got.len(),
                got.last()
            ),
        }
    }
    got
}

/// Asserts that no push arrives for `quiet`.
async fn quiet(link: &LinkClient, quiet: Duration) {
    if let Ok(push) = tokio::time::timeout(quiet, link.next_push()).await {
        panic!("expected silence, got {push:?}");
    }
}

fn states(events: &[Event]) -> Vec<(u64, WireState, WireCause)> {
    events.iter().map(|e| (e.user, e.state, e.cause)).collect()
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_heartbeat_is_online_at_once_and_logout_is_immediate() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    let snapshot = link.subscribe(&[42]).await.unwrap();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].state, WireState::Offline);
    assert_eq!(snapshot[0].last_seen_ms, None);
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 42, 1, State::Online, true);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(42, WireState::Online, WireCause::FirstHeartbeat)]
    );
    beat(&mut gw, 42, 1, State::Offline, false);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(states(&got), [(42, WireState::Offline, WireCause::Logout)]);
    let q = link.query(&[42]).await.unwrap();
    assert_eq!(q[0].state, WireState::Offline);
    assert!(q[0].last_seen_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_device_is_silent_and_last_device_gone_is_one_offline() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe(&[7]).await.unwrap();
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 7, 1, State::Online, true);
    beat(&mut gw, 7, 2, State::Online, true);
    assert_eq!(events(&link, 1, WAIT).await.len(), 1);
    quiet(&link, Duration::from_millis(200)).await;
    // Device 1 goes silent while device 2 keeps beating: no transition.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        beat(&mut gw, 7, 2, State::Online, true);
    }
    quiet(&link, Duration::from_millis(100)).await;
    // Device 2 goes silent too: exactly one offline, by timeout.
    let got = events(&link, 1, WAIT).await;
    assert_eq!(states(&got), [(7, WireState::Offline, WireCause::Timeout)]);
    quiet(&link, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_goes_offline_within_a_tick_of_the_deadline() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe(&[9]).await.unwrap();
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 9, 1, State::Online, true);
    let online = events(&link, 1, WAIT).await[0];
    let offline = events(&link, 1, WAIT).await[0];
    assert_eq!(offline.cause, WireCause::Timeout);
    // Both stamps are the daemon's wall clock when it processed the change.
    let silence = offline.at_ms - online.at_ms;
    eprintln!("offline after {silence} ms of silence (timeout {TIMEOUT_MS} ms, tick {TICK_MS} ms)");
    assert!(silence >= TIMEOUT_MS, "early: {silence} ms");
    // One tick, plus an allowance for the OS waking the shard thread on a loaded machine.
    assert!(silence <= TIMEOUT_MS + TICK_MS + 30, "late: {silence} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_detection_stays_within_a_tick_under_load() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    let watched: Vec<u64> = (1..=50).map(|u| u * 1_000_003).collect();
    link.subscribe(&watched).await.unwrap();
    // 20,000 other users kept alive at 100,000 heartbeats/s through the shared port.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, target) = (stop.clone(), d.heartbeat);
        std::thread::spawn(move || {
            let mut gw = HeartbeatClient::new(2, 1, target).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for u in 1..=20_000u64 {
                    gw.push(entry(u, 1, State::Online, true)).unwrap();
                }
                gw.flush().unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gw = gateway(&d, 1);
    for &u in &watched {
        gw.push(entry(u, 1, State::Online, true)).unwrap();
    }
    gw.flush().unwrap();
    let got = events(&link, 100, WAIT).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let mut worst = 0;
    for &u in &watched {
        let mine: Vec<&Event> = got.iter().filter(|e| e.user == u).collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert_eq!(mine[1].cause, WireCause::Timeout);
        let silence = mine[1].at_ms - mine[0].at_ms;
        assert!(silence >= TIMEOUT_MS, "early: {silence} ms");
        worst = worst.max(silence);
    }
    eprintln!("latest offline after {worst} ms of silence under load (timeout {TIMEOUT_MS} ms)");
    assert!(worst <= TIMEOUT_MS + TICK_MS + 30, "late: {worst} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_within_the_deadline_produces_no_transition() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe(&[5]).await.unwrap();
    let mut gw = gateway(&d, 1);
    let start = Instant::now();
    beat(&mut gw, 5, 1, State::Online, true);
    assert_eq!(events(&link, 1, WAIT).await.len(), 1);
    while start.elapsed() < Duration::from_secs(2) {
        // Jittery but always within the 500 ms deadline.
        tokio::time::sleep(Duration::from_millis(
            250 + (start.elapsed().as_millis() % 150) as u64,
        ))
        .await;
        beat(&mut gw, 5, 1, State::Online, true);
    }
    quiet(&link, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reported_and_inferred() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe(&[11]).await.unwrap();
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 11, 1, State::Online, true);
    beat(&mut gw, 11, 1, State::Idle, false);
    beat(&mut gw, 11, 1, State::Online, false);
    let got = events(&link, 3, WAIT).await;
    assert_eq!(
        states(&got),
        [
            (11, WireState::Online, WireCause::FirstHeartbeat),
            (11, WireState::Idle, WireCause::StateChange),
            (11, WireState::Online, WireCause::StateChange),
        ]
    );
    // Heartbeats without the activity flag: idle after idle_after (1 s).
    let mut pushes = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        beat(&mut gw, 11, 1, State::Online, false);
        while let Some(Push::Events(batch)) = link.try_next_push() {
            pushes.extend(batch);
        }
    }
    assert_eq!(
        states(&pushes),
        [(11, WireState::Idle, WireCause::Inactivity)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_reads_offline_and_leaves_in_one_heartbeat() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe(&[13]).await.unwrap();
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 13, 1, State::Online, true);
    events(&link, 1, WAIT).await;
    beat(&mut gw, 13, 1, State::Invisible, true);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(13, WireState::Offline, WireCause::StateChange)]
    );
    let frozen = link.query(&[13]).await.unwrap()[0];
    assert_eq!(frozen.state, WireState::Offline);
    tokio::time::sleep(Duration::from_millis(100)).await;
    beat(&mut gw, 13, 1, State::Invisible, true);
    quiet(&link, Duration::from_millis(100)).await;
    assert_eq!(
        link.query(&[13]).await.unwrap()[0].last_seen_ms,
        frozen.last_seen_ms
    );
    beat(&mut gw, 13, 1, State::Online, true);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(13, WireState::Online, WireCause::StateChange)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_returns_state_with_no_gap() {
    let d = Daemon::start(FAST);
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 21, 1, State::Online, true);
    std::thread::sleep(Duration::from_millis(50));
    // A gateway flips the user between online and idle as fast as it can while we subscribe.
    let target = d.heartbeat;
    let flipper = std::thread::spawn(move || {
        let mut gw = HeartbeatClient::new(2, 1, target).unwrap();
        for i in 0..4000u32 {
            let state = if i % 2 == 0 {
                State::Idle
            } else {
                State::Online
            };
            gw.push(entry(21, 1, state, false)).unwrap();
            gw.flush().unwrap();
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let link = link(&d).await;
    let snapshot = link.subscribe(&[21]).await.unwrap()[0];
    flipper.join().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let final_state = link.query(&[21]).await.unwrap()[0];
    // Every event after the snapshot continues the chain from it: none is missing.
    let mut state = snapshot.state;
    let mut version = snapshot.version;
    let mut seen = 0;
    while let Some(push) = link.try_next_push() {
        let Push::Events(batch) = push else {
            panic!("unexpected {push:?}");
        };
        for e in batch {
            assert!(e.version > version, "event {e:?} not after {version}");
            assert_eq!(e.prev, state, "gap before {e:?}");
            state = e.state;
            version = e.version;
            seen += 1;
        }
    }
    assert_eq!((state, version), (final_state.state, final_state.version));
    eprintln!("{seen} events followed the snapshot without a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_ten_thousand_users() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    let users: Vec<u64> = (1..=10_000).map(|i| i * 7919).collect();
    let mut gw = gateway(&d, 1);
    for chunk in users.chunks(890) {
        for &u in chunk {
            gw.push(entry(u, 1, State::Online, true)).unwrap();
        }
        gw.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut asked = users.clone();
    asked.push(1); // never seen
    let answer = link.query(&asked).await.unwrap();
    assert_eq!(answer.len(), asked.len());
    let online = answer
        .iter()
        .filter(|r| r.state == WireState::Online)
        .count();
    assert_eq!(online, 10_000);
    let unknown = answer.iter().find(|r| r.user == 1).unwrap();
    assert_eq!(
        (unknown.state, unknown.last_seen_ms, unknown.version),
        (WireState::Offline, None, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_counted_and_change_nothing() {
    let d = Daemon::start(FAST);
    let link = link(&d).await;
    link.subscribe_all().await.unwrap();
    let gw = gateway(&d, 1);
    let mut valid = presenced_wire::Encoder::new(presenced_wire::Header::new(1, 1, 0, 0));
    valid.push(entry(99, 1, State::Online, true)).unwrap();
    let good = valid.finish().unwrap().to_vec();
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    let mut bad_state = good.clone();
    bad_state[32 + 12] = 9;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0u8; 10],
        good[..good.len() - 1].to_vec(),
        [good.clone(), vec![0]].concat(),
        bad_magic,
        bad_state,
        vec![0x55; 1500],
        vec![0xAA; 1600],
    ];
    for c in &cases {
        gw.send_raw(c).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    quiet(&link, Duration::from_millis(100)).await;
    assert_eq!(link.query(&[99]).await.unwrap()[0].version, 0);
    let stats = link.stats().await.unwrap();
    let dropped: u64 = stats.shards.iter().map(|s| s.dropped_total()).sum();
    assert_eq!(dropped, cases.len() as u64, "{stats:?}");
    // The valid datagram still works.
    gw.send_raw(&good).unwrap();
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(99, WireState::Online, WireCause::FirstHeartbeat)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_shards_work_with_and_without_the_cross_shard_hop() {
    // Default timings: nobody times out while the test runs, however slow the machine.
    let d = Daemon::start(&["--shards", "2"]);
    assert_eq!(d.shard_ports.len(), 2);
    let link = link(&d).await;
    assert_eq!(link.welcome().shard_count, 2);
    link.subscribe_all().await.unwrap();
    // Through the shared port: entries for both shards, some cross the hop.
    let mut shared = gateway(&d, 1);
    for u in 1..=200u64 {
        shared.push(entry(u, 1, State::Online, true)).unwrap();
    }
    shared.flush().unwrap();
    assert_eq!(events(&link, 200, WAIT).await.len(), 200);
    // Shard-aware: each entry straight to its owner's port.
    let mut aware = HeartbeatClient::new(2, 1, d.heartbeat)
        .unwrap()
        .with_shard_ports(d.shard_ports.clone());
    for u in 1001..=1200u64 {
        aware.push(entry(u, 1, State::Online, true)).unwrap();
    }
    aware.flush().unwrap();
    assert_eq!(events(&link, 200, WAIT).await.len(), 200);
    let stats = link.stats().await.unwrap();
    let heartbeats: Vec<u64> = stats.shards.iter().map(|s| s.core.heartbeats).collect();
    assert_eq!(heartbeats.len(), 2);
    assert!(heartbeats.iter().all(|&h| h > 0), "{stats:?}");
    assert_eq!(heartbeats.iter().sum::<u64>(), 400);
    // Only the shared-port entries crossed between shards.
    let routed: u64 = stats.shards.iter().map(|s| s.routed_out).sum();
    assert!(routed > 0 && routed <= 200, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gateway_is_told_it_lagged_while_another_keeps_receiving() {
    let d = Daemon::start(&[
        "--shards",
        "2",
        "--set",
        "link.queue_bytes=524288",
        "--set",
        "link.max_frame_len=65536",
    ]);
    let mut slow = presenced_client::RawLink::connect(d.link, options(), 16 * 1024)
        .await
        .unwrap();
    slow.subscribe_all().await.unwrap();
    let fast = link(&d).await;
    fast.subscribe_all().await.unwrap();
    // 20,000 users online then offline: 40,000 transitions (over 1 MB of events), far more
    // than the slow gateway's 16 KiB stream window and 512 KiB queue hold.
    let mut gw = gateway(&d, 1);
    for round in [State::Online, State::Offline] {
        for chunk in (1..=20_000u64).collect::<Vec<_>>().chunks(890) {
            for &u in chunk {
                gw.push(entry(u, 1, round, true)).unwrap();
            }
            gw.flush().unwrap();
            // Each burst becomes about 24 KB of EVENTS: 45 bursts overflow the slow gateway's
            // queue, while the fast one has about 21 bursts (210 ms) of slack.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(
        events(&fast, 40_000, Duration::from_secs(20)).await.len(),
        40_000
    );
    // The slow gateway reads again: it finds a LAGGED frame among what was kept for it.
    let lagged = slow
        .read_until_lagged(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(lagged, "no LAGGED frame reached the slow gateway");
    let stats = fast.stats().await.unwrap();
    assert!(stats.link.lag_signals > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_sources_reach_the_daemon() {
    let mut args = FAST.to_vec();
    args.extend(["--set", "ingest.allow=127.0.0.2/32"]);
    let d = Daemon::start(&args);
    let link = link(&d).await;
    link.subscribe_all().await.unwrap();
    let datagram = |user: u64| {
        let mut enc = presenced_wire::Encoder::new(presenced_wire::Header::new(1, 1, 0, 0));
        enc.push(entry(user, 1, State::Online, true)).unwrap();
        enc.finish().unwrap().to_vec()
    };
    // From 127.0.0.1, unlisted, to the shared port and a shard's own; then from 127.0.0.2.
    let unlisted = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    unlisted.send_to(&datagram(5), d.heartbeat).unwrap();
    unlisted.send_to(&datagram(5), d.shard_ports[0]).unwrap();
    let listed = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    listed.send_to(&datagram(6), d.heartbeat).unwrap();
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(6, WireState::Online, WireCause::FirstHeartbeat)]
    );
    quiet(&link, Duration::from_millis(200)).await;
    let stats = link.stats().await.unwrap();
    let received: u64 = stats.shards.iter().map(|s| s.datagrams).sum();
    assert_eq!(
        received, 1,
        "the kernel dropped the unlisted ones: {stats:?}"
    );
    assert_eq!(link.query(&[5]).await.unwrap()[0].version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_arrive_over_ipv6_too() {
    let mut args = FAST.to_vec();
    args.extend(["--set", "ingest.listen_v6=[::1]:0"]);
    let d = Daemon::start(&args);
    let v6 = *d.heartbeat_all.last().unwrap();
    assert!(v6.is_ipv6(), "{:?}", d.heartbeat_all);
    let link = link(&d).await;
    link.subscribe(&[77]).await.unwrap();
    let mut gw = HeartbeatClient::new(1, 1, v6).unwrap();
    beat(&mut gw, 77, 1, State::Online, true);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(77, WireState::Online, WireCause::FirstHeartbeat)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_once_per_link_and_none_after_unsubscribe() {
    let d = Daemon::start(&["--shards", "2"]);
    let link = link(&d).await;
    // Many of the gateway's clients watch user 31: it subscribes again and again, and turns
    // the firehose on too.
    assert_eq!(link.subscribe(&[31, 31]).await.unwrap().len(), 2);
    link.subscribe(&[31, 32]).await.unwrap();
    link.subscribe_all().await.unwrap();
    let mut gw = gateway(&d, 1);
    beat(&mut gw, 31, 1, State::Online, true);
    assert_eq!(events(&link, 1, WAIT).await.len(), 1);
    quiet(&link, Duration::from_millis(200)).await;
    // Firehose off, then unsubscribe: nothing more of 31, while 32 still arrives.
    link.unsubscribe_all().await.unwrap();
    link.unsubscribe(&[31]).await.unwrap();
    beat(&mut gw, 31, 1, State::Idle, true);
    beat(&mut gw, 32, 1, State::Online, true);
    let got = events(&link, 1, WAIT).await;
    assert_eq!(
        states(&got),
        [(32, WireState::Online, WireCause::FirstHeartbeat)]
    );
    quiet(&link, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_certificate_files_are_served_and_checked() {
    let dir = std::env::temp_dir().join(format!("presenced-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("presenced test CA");
    let (other_ca, _) = ca("someone else");
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("server.pem"), server.pem()).unwrap();
    std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
    // A private key others can read is refused, like the gateway key file.
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(path("server.key"), private).unwrap();
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("other.pem"), other_ca.pem()).unwrap();
    let cert_arg = format!("link.cert={}", path("server.pem"));
    let key_arg = format!("link.key={}", path("server.key"));
    let d = Daemon::start(&["--shards", "1", "--set", &cert_arg, "--set", &key_arg]);
    let with_ca = |file: &str| ConnectOptions {
        client_name: "test".into(),
        trust: Trust::CaFile(dir.join(file)),
        server_name: "localhost".into(),
        token: None,
    };
    let good = LinkClient::connect(d.link, with_ca("ca.pem"))
        .await
        .unwrap();
    assert_eq!(good.query(&[1]).await.unwrap().len(), 1);
    let bad = LinkClient::connect(d.link, with_ca("other.pem")).await;
    let err = bad.err().expect("a certificate from another CA is refused");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_limits_and_malformed_frames_get_error_frames() {
    let d = Daemon::start(&["--shards", "2", "--set", "link.max_users_per_request=10"]);
    let options = options();
    let mut raw = presenced_client::RawLink::connect(d.link, options.clone(), 1 << 20)
        .await
        .unwrap();
    // Eleven users in one QUERY: refused with the request's id; the link stays open.
    let mut frame = bytes::BytesMut::new();
    presenced_wire::link::encode_query(&mut frame, 7, &(1..=11).collect::<Vec<u64>>()).unwrap();
    raw.send_raw(&frame).await.unwrap();
    let (request, code, message) = raw.next_error(WAIT).await.unwrap().expect("ERROR");
    assert_eq!(
        (request, code),
        (7, Some(ErrorCode::TooManyUsers)),
        "{message}"
    );
    // The client library splits long lists to the limit instead.
    let client = link(&d).await;
    let users: Vec<u64> = (1..=25).collect();
    assert_eq!(client.query(&users).await.unwrap().len(), 25);
    // A frame of an unknown type ends the link with bad_frame.
    raw.send_raw(&[1, 0, 0, 0, 0x7f]).await.unwrap();
    let (request, code, _) = raw.next_error(WAIT).await.unwrap().expect("ERROR");
    assert_eq!((request, code), (0, Some(ErrorCode::BadFrame)));
    assert_eq!(
        raw.next_error(WAIT).await.unwrap(),
        None,
        "the link is closed"
    );
    // A length prefix over max_frame_len: frame_too_large, before its bytes arrive.
    let mut raw = presenced_client::RawLink::connect(d.link, options, 1 << 20)
        .await
        .unwrap();
    raw.send_raw(&u32::MAX.to_le_bytes()).await.unwrap();
    let (_, code, _) = raw.next_error(WAIT).await.unwrap().expect("ERROR");
    assert_eq!(code, Some(ErrorCode::FrameTooLarge));
    // The daemon carries on.
    assert_eq!(client.query(&[1]).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let d = Daemon::start(FAST);
    let _link = link(&d).await;
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn bad_settings_are_clear_errors_and_help_lists_every_key() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(args)
            .output()
            .expect("run presenced")
    };
    let out = run(&["--set", "presence.grace=soon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("presence.grace"), "{err}");
    let out = run(&["--set", "presence.no_such_key=1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key") && err.contains("--help"),
        "{err}"
    );
    let out = run(&["--config", "/nonexistent/presenced.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in presenced::settings::KEYS {
        assert!(help.contains(key.name), "--help lacks {}", key.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_and_in_flight_limits_refuse_the_request_not_the_link() {
    let d = Daemon::start(&[
        "--shards",
        "2",
        "--set",
        "link.max_subscriptions=5",
        "--set",
        "link.max_requests_in_flight=1",
    ]);
    let mut raw = presenced_client::RawLink::connect(d.link, options(), 1 << 20)
        .await
        .unwrap();
    let mut frame = bytes::BytesMut::new();
    presenced_wire::link::encode_subscribe(&mut frame, 1, &[1, 2, 3, 4, 5, 6]).unwrap();
    raw.send_raw(&frame).await.unwrap();
    let (request, code, _) = raw.next_error(WAIT).await.unwrap().expect("ERROR");
    assert_eq!((request, code), (1, Some(ErrorCode::SubscriptionLimit)));
    // Fifty queries at once with one allowed in flight: some are refused, by id.
    let mut frames = bytes::BytesMut::new();
    for id in 100..150 {
        presenced_wire::link::encode_query(&mut frames, id, &[1]).unwrap();
    }
    raw.send_raw(&frames).await.unwrap();
    let (request, code, _) = raw.next_error(WAIT).await.unwrap().expect("ERROR");
    assert!((100..150).contains(&request), "{request}");
    assert_eq!(code, Some(ErrorCode::TooManyRequests));
    // The client library keeps within the limit and splits nothing it need not.
    let client = link(&d).await;
    assert_eq!(client.subscribe(&[1, 2, 3, 4, 5]).await.unwrap().len(), 5);
    let refused = client.subscribe(&[6]).await.unwrap_err();
    assert!(
        refused.to_string().contains("subscription_limit"),
        "{refused}"
    );
}
