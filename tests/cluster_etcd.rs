//! Cluster members and a real etcd (`[cluster]`, src/etcd.rs): each member holds its key with
//! a lease, revokes it on a clean stop and loses it when killed; members see each other; an
//! etcd that is down at start, stops, comes back or holds garbage under the prefix stops no
//! member; bad settings are refused naming the key. etcd and the daemons are real processes
//! on loopback.

mod common;

use common::etcd::{Entry, Etcd};
use common::{Daemon, FAST};
use presenced_client::{ConnectOptions, LinkClient, Trust};
use presenced_wire::cluster::Member;
use presenced_wire::stats::ClusterStats;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A cluster name of this test's own.
fn cluster_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts member `id` of cluster `name` on `etcd`, with `extra` settings.
fn member(etcd: &str, name: &str, id: &str, extra: &[&str]) -> Daemon {
    let settings = [
        format!("cluster.etcd={etcd}"),
        format!("cluster.name={name}"),
        format!("cluster.member={id}"),
    ];
    let mut args: Vec<&str> = FAST.to_vec();
    for s in &settings {
        args.extend(["--set", s]);
    }
    for s in extra {
        args.extend(["--set", s]);
    }
    Daemon::start(&args)
}

fn key(name: &str, id: &str) -> String {
    format!("/{name}/members/{id}")
}

fn has(entries: &[Entry], key: &str) -> bool {
    entries.iter().any(|e| e.key == key)
}

/// The daemon's STATS cluster section, asked over its push link until `done` holds of it (at
/// most 10 s).
fn cluster_stats(d: &Daemon, done: impl Fn(&ClusterStats) -> bool) -> ClusterStats {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = ConnectOptions {
            client_name: "test".into(),
            trust: Trust::InsecureLocal,
            server_name: "localhost".into(),
            token: None,
        };
        let link = LinkClient::connect(d.link, options).await.unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = link.stats().await.unwrap();
            let cluster = stats
                .cluster
                .expect("a member's STATS has a cluster section");
            if done(&cluster) {
                return cluster;
            }
            assert!(Instant::now() < until, "STATS' cluster: {cluster:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Whether the process runs (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn a_member_holds_its_key_with_a_lease_and_revokes_it_on_a_clean_stop() {
    let etcd = Etcd::start();
    let name = cluster_name();
    // A long lease: a key gone at once after the stop was revoked, not left to lapse.
    let daemon = member(&etcd.url(), &name, "a", &["cluster.lease=10s"]);
    let prefix = format!("/{name}/members/");
    let own = key(&name, "a");
    let entries = etcd.wait_for(&prefix, Duration::from_secs(10), |e| has(e, &own));
    let entry = entries.iter().find(|e| e.key == own).unwrap();
    let value: Member = serde_json::from_slice(&entry.value).expect("a member's JSON");
    assert_eq!(value.id, "a");
    assert_eq!(
        value.link,
        daemon.link.to_string(),
        "the bound push-link port"
    );
    assert_eq!(value.heartbeat, daemon.heartbeat.to_string());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Warm after the offline timeout (FAST: 500 ms) from its start.
    assert!(
        value.warm_at_ms > now_ms.saturating_sub(10_000) && value.warm_at_ms < now_ms + 1_000,
        "{value:?} at {now_ms}"
    );
    assert_ne!(entry.lease, 0, "the key is held with a lease");
    let ttl = etcd.lease_ttl(entry.lease);
    assert!((1..=10).contains(&ttl), "TTL {ttl}");
    // Renewed: after a third of the lease and more, the TTL is back near the full one.
    std::thread::sleep(Duration::from_secs(5));
    let ttl = etcd.lease_ttl(entry.lease);
    assert!(ttl >= 5, "renewed every third of the lease: TTL {ttl}");

    let lease = entry.lease;
    assert_eq!(daemon.stop(), Some(0));
    let gone = etcd.get(&prefix);
    assert!(!has(&gone, &own), "revoked at the stop: {gone:?}");
    assert_eq!(etcd.lease_ttl(lease), -1, "the lease is revoked");
}

#[test]
fn a_killed_member_s_key_goes_when_its_lease_lapses() {
    let etcd = Etcd::start();
    let name = cluster_name();
    let daemon = member(&etcd.url(), &name, "k", &["cluster.lease=2s"]);
    let prefix = format!("/{name}/members/");
    let own = key(&name, "k");
    etcd.wait_for(&prefix, Duration::from_secs(10), |e| has(e, &own));
    // Dropping it kills it (SIGKILL): no revoke.
    drop(daemon);
    let killed = Instant::now();
    // etcd finds a lease expired on its leader's check (every 500 ms) and revokes it through
    // raft: on a loaded 2-core CI machine that once took more than a second past the TTL.
    etcd.wait_for(&prefix, Duration::from_secs(4), |e| !has(e, &own));
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "gone within lease + 2 s"
    );
}

#[test]
fn three_members_see_each_other_in_etcd() {
    let etcd = Etcd::start();
    let name = cluster_name();
    let prefix = format!("/{name}/members/");
    let daemons: Vec<Daemon> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| member(&etcd.url(), &name, id, &[]))
        .collect();
    let entries = etcd.wait_for(&prefix, Duration::from_secs(10), |e| e.len() == 3);
    let mut links: Vec<String> = entries
        .iter()
        .map(|e| serde_json::from_slice::<Member>(&e.value).unwrap().link)
        .collect();
    links.sort();
    let mut bound: Vec<String> = daemons.iter().map(|d| d.link.to_string()).collect();
    bound.sort();
    assert_eq!(links, bound);
    let leases: std::collections::HashSet<i64> = entries.iter().map(|e| e.lease).collect();
    assert_eq!(leases.len(), 3, "a lease each: {entries:?}");
    // Each sees all three, reaches etcd, and is active once warm (FAST: 500 ms).
    for (d, id) in daemons.iter().zip(["m1", "m2", "m3"]) {
        let c = cluster_stats(d, |c| c.map.members.len() == 3 && c.role == "active");
        assert_eq!(c.map.from, id);
        assert!(c.map.etcd);
        assert_eq!(c.map.replicas, 2);
        let ids: Vec<&str> = c.map.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
    }
    // One stops cleanly: the two others stay.
    let mut daemons = daemons;
    assert_eq!(daemons.remove(0).stop(), Some(0));
    let left = etcd.wait_for(&prefix, Duration::from_secs(1), |e| e.len() == 2);
    assert!(!has(&left, &key(&name, "m1")), "{left:?}");
    for d in &daemons {
        let c = cluster_stats(d, |c| c.map.members.len() == 2);
        assert!(c.takeovers >= 1, "m1's users fell to the others: {c:?}");
    }
}

#[test]
fn garbage_under_the_prefix_does_not_stop_a_member() {
    let etcd = Etcd::start();
    let name = cluster_name();
    let prefix = format!("/{name}/members/");
    let other = Member {
        id: "someone-else".into(),
        link: "127.0.0.1:1".into(),
        heartbeat: "127.0.0.1:2".into(),
        warm_at_ms: 0,
    };
    let put_garbage = |round: &str| {
        etcd.put(key(&name, &format!("x{round}")).as_bytes(), b"not json {");
        // Another id than the key's, which also duplicates the one under its own key.
        let named_other = serde_json::to_vec(&other).unwrap();
        etcd.put(key(&name, &format!("y{round}")).as_bytes(), &named_other);
        etcd.put(key(&name, "someone-else").as_bytes(), &named_other);
        etcd.put(key(&name, &format!("z{round}")).as_bytes(), &[0xff; 70_000]);
        let mut bad_key = prefix.as_bytes().to_vec();
        bad_key.extend_from_slice(&[0xc3, 0x28, b'/', 0]);
        etcd.put(&bad_key, b"{\"id\":1}");
        etcd.put(key(&name, &format!("w{round}")).as_bytes(), b"");
    };
    put_garbage("0");
    let daemon = member(&etcd.url(), &name, "g", &["cluster.lease=2s"]);
    let own = key(&name, "g");
    let entries = etcd.wait_for(&prefix, Duration::from_secs(10), |e| has(e, &own));
    let lease = entries.iter().find(|e| e.key == own).unwrap().lease;
    // Garbage while it watches, then long enough for renewals to be due twice over.
    put_garbage("1");
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(daemon.pid()), "the member is still running");
    assert!(etcd.lease_ttl(lease) > 0, "and still renews its lease");
    assert!(has(&etcd.get(&prefix), &own));
    // The valid member under its own key is taken once; the rest skipped and counted.
    let c = cluster_stats(&daemon, |c| c.bad_values > 0 && c.role == "active");
    let ids: Vec<&str> = c.map.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["g", "someone-else"], "{c:?}");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_member_started_before_etcd_joins_it_and_one_outlives_an_etcd_restart() {
    let mut etcd = Etcd::stopped();
    let name = cluster_name();
    let prefix = format!("/{name}/members/");
    let own = key(&name, "e");
    // etcd down at start: the daemon starts and serves anyway.
    let daemon = member(
        &etcd.url(),
        &name,
        "e",
        &["cluster.lease=2s", "cluster.connect_timeout=200ms"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(daemon.pid()));
    etcd.resume();
    let entries = etcd.wait_for(&prefix, Duration::from_secs(5), |e| has(e, &own));
    let lease = entries.iter().find(|e| e.key == own).unwrap().lease;

    // etcd stopped for longer than the lease: the member keeps running; once etcd is back
    // (leases survive its restart) the member renews the lease it held, or takes a new one.
    etcd.pause();
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(daemon.pid()), "the member outlives etcd's absence");
    etcd.resume();
    let entries = etcd.wait_for(&prefix, Duration::from_secs(8), |e| {
        e.iter().any(|e| e.key == own && e.lease != 0)
    });
    let held = entries.iter().find(|e| e.key == own).unwrap().lease;
    // Held and renewed: still there after twice the lease.
    std::thread::sleep(Duration::from_secs(4));
    let now = etcd.get(&prefix);
    assert!(
        now.iter().any(|e| e.key == own && e.lease == held),
        "{now:?}"
    );
    assert!(etcd.lease_ttl(held) > 0);
    if held != lease {
        assert_eq!(
            etcd.lease_ttl(lease),
            -1,
            "a new lease only when the old one lapsed"
        );
    }
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn bad_cluster_settings_are_refused_naming_the_key() {
    let refused = |sets: &[&str], key: &str, words: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_presenced"));
        cmd.args(["--listen", "127.0.0.1:0", "--link-listen", "127.0.0.1:0"]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().expect("run presenced");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sets:?}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{sets:?}: {stderr}");
        assert!(stderr.contains(words), "{sets:?}: {stderr}");
    };
    let on = "cluster.etcd=http://127.0.0.1:2379";
    refused(&[on], "cluster.member", "cluster.etcd is set");
    refused(
        &[on, "cluster.member=a", "cluster.lease=1500ms"],
        "cluster.lease",
        "whole seconds",
    );
    refused(
        &[on, "cluster.member=a", "cluster.lease=1s"],
        "cluster.lease",
        "at least 2",
    );
    refused(&[on, "cluster.member=a b"], "cluster.member", "A-Z a-z 0-9");
    refused(
        &[on, "cluster.member=a", "cluster.skew_allowance=1s"],
        "cluster.skew_allowance",
        "half of cluster.lease",
    );
    refused(&["cluster.etcd=etcd:2379"], "cluster.etcd", "http://");
    refused(&[on, "cluster.replicas=9"], "cluster.replicas", "1 to 8");
    refused(
        &[
            on,
            "cluster.member=a",
            "link.listen=0.0.0.0:0",
            "auth.allow_unauthenticated=true",
        ],
        "cluster.advertise_link",
        "HOST:PORT",
    );
    // A token file that cannot be read stops the start, naming the key and the file.
    let out = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(["--listen", "127.0.0.1:0", "--link-listen", "127.0.0.1:0"])
        .args(["--set", on, "--set", "cluster.member=a", "--set"])
        .args(["cluster.peer_ca=/nonexistent/ca.pem", "--set"])
        .args(["cluster.peer_token_file=/nonexistent/peer.token"])
        .args(["--set", "state.enabled=false"])
        .output()
        .expect("run presenced");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`cluster.peer_token_file` (/nonexistent/peer.token)"),
        "{stderr}"
    );
}

/// The etcd thread in-process: what it tells the hub, in order.
#[test]
fn the_etcd_thread_tells_the_hub_of_its_lease_the_map_and_etcd_s_absence() {
    use presenced::etcd::{start, EtcdSetup};
    use presenced_node::cluster::EtcdEvent;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let mut etcd = Etcd::start();
    let name = cluster_name();
    let prefix = format!("/{name}/members/");
    // Two hubs: this test reads the first one's channel, a thread the second's; both must be
    // told the same, in the same order.
    let (news, mut ends) = presenced::etcd::News::channels(2);
    let (first_hub, second_hub) = (ends.remove(0), ends.remove(0));
    let second = std::thread::spawn(move || second_hub.iter().collect::<Vec<EtcdEvent>>());
    let told = std::cell::RefCell::new(Vec::new());
    let recv = |within: Duration| {
        let event = first_hub.recv_timeout(within);
        if let Ok(e) = &event {
            told.borrow_mut().push(e.clone());
        }
        event
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clock = presenced::time::Clock::start_at(0);
    let me = Member {
        id: "p".into(),
        link: "127.0.0.1:7060".into(),
        heartbeat: "127.0.0.1:7070".into(),
        warm_at_ms: 1_234,
    };
    let before_us = clock.mono_us();
    let handle = start(EtcdSetup {
        endpoints: vec![etcd.url()],
        prefix: prefix.clone(),
        member: me.clone(),
        lease: Duration::from_secs(2),
        warm: Duration::from_secs(7),
        timeout: Duration::from_millis(300),
        events: news,
        clock,
        stop: stop.clone(),
        probe: None,
    })
    .unwrap();
    let next = || recv(Duration::from_secs(5)).expect("an event within 5 s");
    match next() {
        EtcdEvent::Lease {
            sent_us,
            ttl_ms,
            fresh: true,
        } => {
            assert!((before_us..=clock.mono_us()).contains(&sent_us));
            assert_eq!(ttl_ms, 2_000);
        }
        other => panic!("first a fresh lease, not {other:?}"),
    }
    let first_revision = match next() {
        EtcdEvent::Members { revision, values } => {
            assert_eq!(values.len(), 1, "{values:?}");
            assert_eq!(values[0].0, "p", "the id from the key");
            let value: Member = serde_json::from_slice(&values[0].1).unwrap();
            assert_eq!(
                value, me,
                "the first lease keeps the warm time it was given"
            );
            revision
        }
        other => panic!("then the map, not {other:?}"),
    };
    // A change under the prefix: the map again, newer.
    etcd.put(format!("{prefix}q").as_bytes(), b"garbage");
    let mut renewals = 0;
    loop {
        match next() {
            EtcdEvent::Members { revision, values } => {
                assert!(revision > first_revision);
                assert_eq!(values.len(), 2);
                assert!(values.iter().any(|(id, v)| id == "q" && v == b"garbage"));
                break;
            }
            EtcdEvent::Lease {
                fresh: false,
                ttl_ms,
                ..
            } => {
                assert!(ttl_ms > 0);
                renewals += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // Renewals every third of the lease, each with the TTL etcd answered.
    let until = Instant::now() + Duration::from_millis(1_600);
    while Instant::now() < until {
        if let Ok(EtcdEvent::Lease { fresh, ttl_ms, .. }) = recv(Duration::from_millis(100)) {
            assert!(!fresh);
            assert!((1_000..=2_000).contains(&ttl_ms), "{ttl_ms}");
            renewals += 1;
        }
    }
    assert!(renewals >= 2, "{renewals} renewals in 1.6 s of a 2 s lease");

    // The lease lost (revoked behind its back): said, then a new one, warming again.
    let own = |etcd: &Etcd| {
        etcd.get(&prefix)
            .into_iter()
            .find(|e| e.key.ends_with("/p"))
    };
    etcd.revoke(own(&etcd).unwrap().lease);
    let lost_ms = clock.now().wall_ms;
    loop {
        match next() {
            EtcdEvent::Lease { ttl_ms: 0, .. } => break,
            EtcdEvent::Lease { fresh: false, .. } | EtcdEvent::Members { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        next(),
        EtcdEvent::Lease {
            fresh: true,
            ttl_ms: 2_000,
            ..
        }
    ));
    match next() {
        EtcdEvent::Members { values, .. } => {
            let (_, value) = values.iter().find(|(id, _)| id == "p").unwrap();
            let value: Member = serde_json::from_slice(value).unwrap();
            assert!(
                (lost_ms + 7_000..lost_ms + 8_000).contains(&value.warm_at_ms),
                "warm 7 s after the new lease: {value:?}, lost at {lost_ms}"
            );
        }
        other => panic!("{other:?}"),
    }

    // etcd gone: Unreachable, and tries again.
    etcd.pause();
    let until = Instant::now() + Duration::from_secs(3);
    let mut unreachable = 0;
    while Instant::now() < until {
        if let Ok(EtcdEvent::Unreachable) = recv(Duration::from_millis(100)) {
            unreachable += 1;
        }
    }
    assert!(unreachable >= 2, "retried: {unreachable}");
    // Back within the lease's life (etcd's restart extends it): the same lease, kept.
    etcd.resume();
    let kept = loop {
        match next() {
            EtcdEvent::Lease { fresh, ttl_ms, .. } => break (fresh, ttl_ms),
            EtcdEvent::Unreachable => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(!kept.0 && kept.1 > 0, "{kept:?}");
    match next() {
        EtcdEvent::Members { values, .. } => assert_eq!(values.len(), 2),
        other => panic!("{other:?}"),
    }
    let lease = own(&etcd).unwrap().lease;
    stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    handle.join().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "stops promptly"
    );
    assert_eq!(etcd.lease_ttl(lease), -1, "revoked");
    assert_eq!(etcd.get(&prefix).len(), 1, "only the garbage is left");
    while recv(Duration::ZERO).is_ok() {}
    assert_eq!(
        second.join().unwrap(),
        told.take(),
        "every hub is told the same"
    );
}

/// An "etcd" that answers garbage: Unreachable, retried, and a prompt stop; no panic.
#[test]
fn an_etcd_answering_garbage_is_unreachable_and_retried() {
    use presenced::etcd::{start, EtcdSetup};
    use presenced_node::cluster::EtcdEvent;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU32::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = stream.read(&mut [0; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n\x00\xff garbage \x00\x00\x00\x05");
        }
    });
    let (news, mut ends) = presenced::etcd::News::channels(1);
    let rx = ends.remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = start(EtcdSetup {
        endpoints: vec![format!("http://{addr}")],
        prefix: "/g/members/".into(),
        member: Member {
            id: "g".into(),
            link: "127.0.0.1:7060".into(),
            heartbeat: "127.0.0.1:7070".into(),
            warm_at_ms: 0,
        },
        lease: Duration::from_secs(2),
        warm: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        events: news,
        clock: presenced::time::Clock::start_at(0),
        stop: stop.clone(),
        probe: None,
    })
    .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut unreachable = 0;
    while Instant::now() < until {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(EtcdEvent::Unreachable) => unreachable += 1,
            Ok(other) => panic!("garbage taken for an answer: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(unreachable >= 2, "retried: {unreachable}");
    assert!(served.load(Ordering::Relaxed) >= 2, "it did connect");
    assert!(!handle.is_finished(), "the thread runs on");
    stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    handle.join().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

/// A certificate for `localhost` and 127.0.0.1 that the test's members share (`link.cert`,
/// `link.key`), so each trusts the others' push links by its own certificate.
struct SharedCert {
    dir: common::StateDir,
}

impl SharedCert {
    fn new() -> SharedCert {
        use std::os::unix::fs::PermissionsExt;
        let dir = common::StateDir::new();
        std::fs::create_dir_all(dir.path()).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        SharedCert { dir }
    }

    fn settings(&self) -> [String; 2] {
        [
            format!("link.cert={}", self.dir.path().join("cert.pem").display()),
            format!("link.key={}", self.dir.path().join("key.pem").display()),
        ]
    }
}

/// The probe tests' lease and etcd timeout: a renewal every second, a step-down 2.5 s after
/// the last one.
const PROBED: &[&str] = &["cluster.lease=3s", "cluster.connect_timeout=300ms"];

/// Member `id` with the shared certificate and [`PROBED`]'s lease.
fn probed_member(etcd: &str, name: &str, id: &str, cert: &SharedCert) -> Daemon {
    let tls = cert.settings();
    let mut extra: Vec<&str> = PROBED.to_vec();
    extra.extend(tls.iter().map(String::as_str));
    member(etcd, name, id, &extra)
}

async fn stats_link(d: &Daemon) -> LinkClient {
    let options = ConnectOptions {
        client_name: "test".into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    };
    LinkClient::connect(d.link, options).await.unwrap()
}

async fn cluster_of(link: &LinkClient) -> ClusterStats {
    link.stats()
        .await
        .unwrap()
        .cluster
        .expect("a cluster section")
}

/// Waits (at most 15 s) until every member sees all of `n` members and is active.
async fn all_active(links: &[LinkClient], n: usize) -> Vec<ClusterStats> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let mut all = Vec::new();
        for l in links {
            all.push(cluster_of(l).await);
        }
        if all
            .iter()
            .all(|c| c.map.members.len() == n && c.role == "active")
        {
            return all;
        }
        assert!(Instant::now() < until, "not all active: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends heartbeats of users 1..=4 (device 1) to every member every 100 ms; user 1 is online
/// while `online` holds, logged out while not. Stops when `stop` is set.
fn heartbeats(
    members: &[&Daemon],
    online: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use presenced_client::{entry, HeartbeatClient};
    use presenced_wire::State;
    let mut gateways: Vec<HeartbeatClient> = members
        .iter()
        .map(|d| HeartbeatClient::new(1, 1, d.heartbeat).unwrap())
        .collect();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for gw in &mut gateways {
                for user in 1..=4 {
                    let state = if user != 1 || online.load(Ordering::Relaxed) {
                        State::Online
                    } else {
                        State::Offline
                    };
                    gw.push(entry(user, 1, state, true)).unwrap();
                }
                gw.flush().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Waits up to `within` for a transition of `user` to `state` on `link`.
async fn transition(
    link: &LinkClient,
    user: u64,
    state: presenced_wire::link::WireState,
    within: Duration,
) -> bool {
    use presenced_client::Push;
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, link.next_push()).await {
            Ok(Some(Push::Events(events))) => {
                if events.iter().any(|e| e.user == user && e.state == state) {
                    return true;
                }
            }
            Ok(Some(Push::Closed { message, .. })) => panic!("the link closed: {message}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// etcd down for every member for 30 s: each asks the others over their push links, all say
/// they are cut off too, so each stays active and keeps pushing its users' transitions; once
/// etcd is back they hold their leases and stay active.
#[test]
fn an_etcd_that_no_member_reaches_stops_no_pushes() {
    // The etcd helper blocks on a runtime of its own: it lives outside this one.
    let etcd = Etcd::start();
    let etcd = multi_thread().block_on(no_member_reaches(etcd));
    drop(etcd);
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn no_member_reaches(mut etcd: Etcd) -> Etcd {
    use presenced_wire::link::WireState;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let name = cluster_name();
    let cert = SharedCert::new();
    let ids = ["p1", "p2", "p3"];
    let daemons: Vec<Daemon> = ids
        .iter()
        .map(|id| probed_member(&etcd.url(), &name, id, &cert))
        .collect();
    let mut links = Vec::new();
    for d in &daemons {
        links.push(stats_link(d).await);
    }
    let before = all_active(&links, 3).await;
    let map = &before[0].map;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let primary = map.placement().primary(1, now_ms).unwrap();
    let id = &map.members[primary].id;
    let at = ids.iter().position(|i| i == id).unwrap();
    let subscriber = stats_link(&daemons[at]).await;
    subscriber.subscribe(&[1]).await.unwrap();
    let online = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = heartbeats(
        &daemons.iter().collect::<Vec<_>>(),
        online.clone(),
        stop.clone(),
    );
    assert!(
        transition(&subscriber, 1, WireState::Online, Duration::from_secs(3)).await,
        "user 1 online at its primary {id}"
    );

    let down = Instant::now();
    tokio::task::block_in_place(|| etcd.pause());
    // 30 s: every member's role each second; user 1 toggled every 3 s, each transition pushed
    // by its primary within 2 s.
    let mut toggles = 0;
    let mut pushed = 0;
    let mut samples = 0;
    while down.elapsed() < Duration::from_secs(30) {
        let second = Instant::now();
        for (l, id) in links.iter().zip(ids) {
            let c = cluster_of(l).await;
            assert_eq!(
                c.role,
                "active",
                "{id} {:.1} s into etcd's outage: {c:?}",
                down.elapsed().as_secs_f64()
            );
            if down.elapsed() > Duration::from_secs(3) {
                assert!(!c.map.etcd, "{id} does not reach etcd: {c:?}");
            }
            samples += 1;
        }
        if samples % 9 == 0 {
            let to = !online.load(Ordering::Relaxed);
            online.store(to, Ordering::Relaxed);
            toggles += 1;
            let state = if to {
                WireState::Online
            } else {
                WireState::Offline
            };
            if transition(&subscriber, 1, state, Duration::from_secs(2)).await {
                pushed += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(second.elapsed())).await;
    }
    assert!(toggles >= 9, "{toggles} toggles");
    assert_eq!(pushed, toggles, "every transition pushed during the outage");
    for (l, id) in links.iter().zip(ids) {
        let c = cluster_of(l).await;
        assert_eq!(
            c.step_downs, 0,
            "{id} never stepped down in the outage: {c:?}"
        );
    }

    // etcd back: each member reconnects (a member hearing that another reaches etcd again
    // retries at once), holds its lease (etcd extends leases across its restart) and stays
    // active.
    tokio::task::block_in_place(|| etcd.resume());
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = Vec::new();
        for l in &links {
            all.push(cluster_of(l).await);
        }
        if all.iter().all(|c| c.map.etcd && c.role == "active") {
            break;
        }
        assert!(Instant::now() < until, "back with etcd: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(5) {
        for (l, id) in links.iter().zip(ids) {
            let c = cluster_of(l).await;
            assert_eq!(c.role, "active", "{id} after etcd came back: {c:?}");
            assert_eq!(c.map.members.len(), 3, "{id}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (l, id) in links.iter().zip(ids) {
        let c = cluster_of(l).await;
        eprintln!(
            "{id} after the outage: step_downs {}, etcd_errors {}",
            c.step_downs, c.etcd_errors
        );
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    etcd
}

#[test]
fn with_push_links_that_need_tokens_the_probe_presents_its_own() {
    let etcd = Etcd::start();
    let etcd = multi_thread().block_on(probe_with_tokens(etcd));
    drop(etcd);
}

/// Three members whose push links need a token (`[links]` in the key file lists each member's
/// id, and the test's link): each probe presents its member's token (`cluster.peer_token_file`),
/// so with etcd down for all for three leases every member stays active. A probe without the
/// token would be refused, and every member would step down 2.5 s into the outage.
async fn probe_with_tokens(mut etcd: Etcd) -> Etcd {
    use std::os::unix::fs::PermissionsExt;
    let name = cluster_name();
    let cert = SharedCert::new();
    let ids = ["t1", "t2", "t3"];
    let dir = common::StateDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let token = |id: &str| format!("{id}-token-0123456789abcdef");
    let mut keys = String::from("[links]\n");
    for id in ids.iter().chain(&["test"]) {
        keys.push_str(&format!("{id} = {{ token = \"{}\" }}\n", token(id)));
        std::fs::write(dir.path().join(format!("{id}.token")), token(id) + "\n").unwrap();
    }
    let keys_file = dir.path().join("keys.toml");
    std::fs::write(&keys_file, keys).unwrap();
    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemons: Vec<Daemon> = ids
        .iter()
        .map(|id| {
            let tls = cert.settings();
            let auth = [
                format!("auth.keys_file={}", keys_file.display()),
                format!(
                    "cluster.peer_token_file={}",
                    dir.path().join(format!("{id}.token")).display()
                ),
            ];
            let mut extra: Vec<&str> = PROBED.to_vec();
            extra.extend(tls.iter().chain(&auth).map(String::as_str));
            member(&etcd.url(), &name, id, &extra)
        })
        .collect();
    let mut links = Vec::new();
    for d in &daemons {
        let options = ConnectOptions {
            client_name: "test".into(),
            trust: Trust::InsecureLocal,
            server_name: "localhost".into(),
            token: Some(token("test")),
        };
        links.push(LinkClient::connect(d.link, options).await.unwrap());
    }
    all_active(&links, 3).await;

    let down = Instant::now();
    tokio::task::block_in_place(|| etcd.pause());
    while down.elapsed() < Duration::from_secs(9) {
        for (l, id) in links.iter().zip(ids) {
            let c = cluster_of(l).await;
            assert_eq!(
                c.role,
                "active",
                "{id} {:.1} s into etcd's outage: {c:?}",
                down.elapsed().as_secs_f64()
            );
            assert_eq!(c.step_downs, 0, "{id}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::task::block_in_place(|| etcd.resume());
    etcd
}

/// A TCP forwarder on loopback to `to`, for a member whose way to etcd the test cuts: dropping
/// it (or [`Proxy::cut`]) closes every forwarded connection and refuses new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(to: std::net::SocketAddr) -> Proxy {
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (stopping, streams) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let mut held = streams.lock().unwrap();
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
                held.extend([client, server]);
            }
        });
        Proxy {
            addr,
            stop,
            open,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every forwarded connection and stops listening.
    fn cut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A member cut off from etcd alone hears from the others that they reach it: it steps down
/// before its lease lapses, and the two others, active throughout, take its users over.
#[test]
fn a_member_cut_off_from_etcd_alone_steps_down() {
    let etcd = Etcd::start();
    multi_thread().block_on(cut_off_alone(&etcd));
}

async fn cut_off_alone(etcd: &Etcd) {
    let name = cluster_name();
    let cert = SharedCert::new();
    let to: std::net::SocketAddr = etcd.url().trim_start_matches("http://").parse().unwrap();
    let mut proxy = Proxy::start(to);
    let daemons = [
        probed_member(&etcd.url(), &name, "q1", &cert),
        probed_member(&etcd.url(), &name, "q2", &cert),
        probed_member(&proxy.url(), &name, "q3", &cert),
    ];
    let mut links = Vec::new();
    for d in &daemons {
        links.push(stats_link(d).await);
    }
    let before = all_active(&links, 3).await;

    let cut = Instant::now();
    proxy.cut();
    // q3 renewed at most a second before the cut: it steps down by 2.5 s after it (lease −
    // skew allowance), before etcd lets its lease lapse at 3 s.
    let stepped = loop {
        let c = cluster_of(&links[2]).await;
        if c.role == "stepped_down" {
            break cut.elapsed();
        }
        assert_eq!(c.role, "active", "q3: {c:?}");
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "q3 still active: {c:?}"
        );
        for (l, id) in links[..2].iter().zip(["q1", "q2"]) {
            let c = cluster_of(l).await;
            assert_eq!(c.role, "active", "{id}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("q3 stepped down {} ms after the cut", stepped.as_millis());
    // q3's key lapses; q1 and q2, active throughout, take its users over.
    let until = Instant::now() + Duration::from_secs(6);
    loop {
        let mut now = Vec::new();
        for l in &links[..2] {
            let c = cluster_of(l).await;
            assert_eq!(c.role, "active", "{c:?}");
            now.push(c);
        }
        if now
            .iter()
            .zip(&before)
            .all(|(c, b)| c.map.members.len() == 2 && c.takeovers > b.takeovers)
        {
            break;
        }
        assert!(Instant::now() < until, "no takeover: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = cluster_of(&links[2]).await;
    assert_eq!(c.role, "stepped_down", "q3 stays down: {c:?}");
    assert!(!c.map.etcd);
}
