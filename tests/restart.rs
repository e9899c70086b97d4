//! Restarts of the real binary with durable state: presence, last seen, versions and
//! anti-replay survive SIGTERM and `kill -9`; gateways that keep heartbeating see no
//! transition; links are told the daemon is going away; bad state files are skipped, not
//! fatal; a changed shard count restores every user into its new owner; a cold start marks
//! its answers warming for one timeout, a warm start does not.

mod common;

use common::{Daemon, StateDir};
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push};
use presenced_wire::auth::Key;
use presenced_wire::link::{PresenceRecord, WireState};
use presenced_wire::{Encoder, Header, State};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Short timings (heartbeats every 300 ms, offline after 1.3 s of silence: a gateway thread
/// starved by a busy test machine does not time its users out), no inactivity within a
/// test, a sync every 20 ms.
const ARGS: &[&str] = &[
    "--shards",
    "2",
    "--set",
    "presence.tick=5ms",
    "--set",
    "presence.heartbeat_interval=300ms",
    "--set",
    "presence.grace=500ms",
    "--set",
    "presence.idle_after=1h",
    "--set",
    "state.sync_interval=20ms",
];

const USERS: u64 = 10_000;

async fn link(d: &Daemon) -> LinkClient {
    LinkClient::connect(d.link, ConnectOptions::local("restart-test"))
        .await
        .expect("connect")
}

/// A gateway heartbeating `users` every 100 ms to whichever daemon `target` names, until
/// stopped; activity only in the first round, so last seen moves only with transitions.
struct Gateway {
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    fn start(target: SocketAddr, users: std::ops::RangeInclusive<u64>) -> Gateway {
        let target = Arc::new(Mutex::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (target, stop) = (target.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let to = *target.lock().unwrap();
                    let mut gw = HeartbeatClient::new(1, 1, to).unwrap();
                    for u in users.clone() {
                        gw.push(entry(u, 1, State::Online, round == 0)).unwrap();
                    }
                    gw.flush().unwrap();
                    round += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Gateway {
            target,
            stop,
            thread: Some(thread),
        }
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn users() -> Vec<u64> {
    (1..=USERS).collect()
}

/// Every user's (state, last seen, version), once they all read `want`.
async fn settled(link: &LinkClient, users: &[u64], want: WireState) -> Vec<PresenceRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = link.query(users).await.unwrap();
        if records.iter().all(|r| r.state == want) {
            return records;
        }
        assert!(Instant::now() < deadline, "users never all {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Longer than a timeout: a false offline after a restart would show within it.
const QUIET: Duration = Duration::from_millis(1600);

/// No transition for `quiet` on `link`.
async fn quiet(link: &LinkClient, quiet: Duration) {
    match tokio::time::timeout(quiet, link.next_push()).await {
        Err(_) => {}
        Ok(Some(Push::Events(events))) => panic!(
            "{} transitions after the restart, e.g. {:?}",
            events.len(),
            &events[..events.len().min(3)]
        ),
        Ok(other) => panic!("unexpected push {other:?}"),
    }
}

/// Waits until the process has exited (after a signal).
fn wait_exit(d: Daemon) {
    assert_eq!(d.stop(), Some(0), "a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_restart_keeps_presence_and_a_watcher_sees_no_transition() {
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), ARGS);
    let gw = Gateway::start(d.heartbeat, 1..=USERS);
    let watcher = link(&d).await;
    let before = settled(&watcher, &users(), WireState::Online).await;
    watcher.subscribe(&users()).await.unwrap();

    // SIGTERM: the watcher is told at once (GOAWAY on protocol 2), not at an idle timeout.
    let sent = Instant::now();
    d.signal(libc::SIGTERM);
    let told = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match watcher.next_push().await {
                Some(Push::Closed { go_away, .. }) => return go_away,
                None => return None,
                Some(_) => {}
            }
        }
    })
    .await
    .expect("the watcher is told within 2 s");
    let noticed = sent.elapsed();
    assert!(told.is_some(), "a version-2 link gets GOAWAY");
    assert!(
        noticed < Duration::from_millis(500),
        "told after {noticed:?}"
    );
    wait_exit(d);

    let d = Daemon::start_in(dir.path(), ARGS);
    gw.retarget(d.heartbeat);
    let watcher = link(&d).await;
    assert!(
        !watcher.is_warming(),
        "a restart with state is not a cold start"
    );
    let snapshot = watcher.subscribe_snapshot(&users()).await.unwrap();
    assert!(!snapshot.warming);
    assert_eq!(
        snapshot.records, before,
        "presence, last seen and versions kept"
    );
    // More than a timeout of heartbeats through the restarted daemon: nothing changes.
    quiet(&watcher, QUIET).await;
    let after = watcher.query(&users()).await.unwrap();
    assert_eq!(after, before);
    let stats = watcher.stats().await.unwrap();
    assert_eq!(stats.state.restored_users, USERS);
    assert!(!stats.state.cold_start);
    eprintln!(
        "sigterm restart: told after {noticed:?}; restored {} users in {} ms",
        stats.state.restored_users, stats.state.restore_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_keeps_what_was_synced_and_causes_no_false_offline() {
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), ARGS);
    let gw = Gateway::start(d.heartbeat, 1..=1000);
    let link1 = link(&d).await;
    let all: Vec<u64> = (1..=1000).collect();
    settled(&link1, &all, WireState::Online).await;
    // Users 2001..=2100 come and go: their last seen is their logout.
    let mut leaving = HeartbeatClient::new(2, 1, d.heartbeat).unwrap();
    let gone: Vec<u64> = (2001..=2100).collect();
    for &u in &gone {
        leaving.push(entry(u, 1, State::Online, true)).unwrap();
    }
    leaving.flush().unwrap();
    settled(&link1, &gone, WireState::Online).await;
    for &u in &gone {
        leaving.push(entry(u, 1, State::Offline, false)).unwrap();
    }
    leaving.flush().unwrap();
    let logged_out = settled(&link1, &gone, WireState::Offline).await;
    assert!(logged_out.iter().all(|r| r.last_seen_ms.is_some()));
    let online = link1.query(&all).await.unwrap();
    // Longer than the sync interval, then kill -9.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(link1);
    drop(d);

    let d = Daemon::start_in(dir.path(), ARGS);
    gw.retarget(d.heartbeat);
    let watcher = link(&d).await;
    watcher.subscribe(&all).await.unwrap();
    assert_eq!(
        watcher.query(&gone).await.unwrap(),
        logged_out,
        "logouts kept"
    );
    let after = watcher.query(&all).await.unwrap();
    let differ: Vec<(&PresenceRecord, &PresenceRecord)> = online
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(differ.is_empty(), "online users kept: {differ:?}");
    quiet(&watcher, QUIET).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_accepted_before_a_restart_is_refused_after_it() {
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let dir = StateDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, format!("[gateways]\n1 = \"{KEY}\"\n")).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys_arg = format!("auth.keys_file={}", keys.display());
    let mut args = ARGS.to_vec();
    args.extend(["--set", &keys_arg]);
    let signed = |seq: u64, state: State| {
        let mut enc = Encoder::new(Header::new(1, 3, seq, now_ms()));
        enc.push(entry(77, 1, state, true)).unwrap();
        enc.finish_signed(&Key::from_hex(KEY).unwrap())
            .unwrap()
            .to_vec()
    };
    let login = signed(10, State::Online);
    let logout = signed(11, State::Offline);

    for crash in [false, true] {
        let d = Daemon::start_in(dir.path(), &args);
        let l = link(&d).await;
        let gw = HeartbeatClient::new(1, 3, d.heartbeat).unwrap();
        if !crash {
            gw.send_raw(&login).unwrap();
            settled(&l, &[77], WireState::Online).await;
            gw.send_raw(&logout).unwrap();
            settled(&l, &[77], WireState::Offline).await;
            drop(l);
            wait_exit(d);
        } else {
            // After the clean restart the captured login is refused; then a crash.
            gw.send_raw(&login).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stats = l.stats().await.unwrap();
            let replayed: u64 = stats.shards.iter().map(|s| s.dropped["replayed"]).sum();
            assert_eq!(replayed, 1, "refused as a replay after a SIGTERM restart");
            assert_eq!(l.query(&[77]).await.unwrap()[0].state, WireState::Offline);
            drop(l);
            drop(d);
        }
    }
    // After the crash too.
    let d = Daemon::start_in(dir.path(), &args);
    let l = link(&d).await;
    let gw = HeartbeatClient::new(1, 3, d.heartbeat).unwrap();
    gw.send_raw(&login).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = l.stats().await.unwrap();
    let replayed: u64 = stats.shards.iter().map(|s| s.dropped["replayed"]).sum();
    assert_eq!(replayed, 1, "refused as a replay after a crash");
    assert_eq!(l.query(&[77]).await.unwrap()[0].state, WireState::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_shard_count_restores_every_user_into_its_new_owner() {
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), ARGS);
    let gw = Gateway::start(d.heartbeat, 1..=2000);
    let l = link(&d).await;
    let all: Vec<u64> = (1..=2000).collect();
    let before = settled(&l, &all, WireState::Online).await;
    drop(l);
    wait_exit(d);
    let mut args = ARGS.to_vec();
    args[1] = "3";
    let d = Daemon::start_in(dir.path(), &args);
    gw.retarget(d.heartbeat);
    let l = link(&d).await;
    l.subscribe(&all).await.unwrap();
    assert_eq!(l.query(&all).await.unwrap(), before);
    quiet(&l, QUIET).await;
    let stats = l.stats().await.unwrap();
    assert_eq!(stats.shards.len(), 3);
    assert_eq!(stats.state.restored_users, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_files_are_skipped_and_the_daemon_starts_from_what_is_valid() {
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), ARGS);
    let gw = Gateway::start(d.heartbeat, 1..=100);
    let l = link(&d).await;
    let all: Vec<u64> = (1..=100).collect();
    let before = settled(&l, &all, WireState::Online).await;
    drop(l);
    wait_exit(d);
    drop(gw);
    // Corrupt every snapshot (a byte in the middle) and cut every log segment short.
    let mut damaged = 0;
    for shard in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if !shard.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "snap") {
                let mut bytes = std::fs::read(&path).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                std::fs::write(&path, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged >= 2, "snapshots were written at stop");
    let d = Daemon::start_in(dir.path(), ARGS);
    let l = link(&d).await;
    // The log (every transition since the first start) restores the users all the same.
    let records = l.query(&all).await.unwrap();
    let states: Vec<(u64, WireState, u64)> = records
        .iter()
        .map(|r| (r.user, r.state, r.version))
        .collect();
    let want: Vec<(u64, WireState, u64)> = before
        .iter()
        .map(|r| (r.user, r.state, r.version))
        .collect();
    assert_eq!(states, want);
    let stats = l.stats().await.unwrap();
    assert!(stats.state.restore_skipped > 0, "{:?}", stats.state);
    drop(l);
    drop(d);

    // A snapshot of another format version is refused with a message, not read.
    for shard in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if !shard.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "snap") {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[8] = 99;
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    let d = Daemon::start_in(dir.path(), ARGS);
    let l = link(&d).await;
    assert_eq!(l.query(&all).await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_directory_leaves_a_daemon_without_durable_state() {
    let dir = StateDir::new();
    std::fs::write(dir.path(), b"a file, not a directory").unwrap();
    let d = Daemon::start_in(dir.path(), ARGS);
    let l = link(&d).await;
    let stats = l.stats().await.unwrap();
    assert!(!stats.state.enabled);
    assert!(l.is_warming(), "no state: a cold start");
    let mut gw = HeartbeatClient::new(1, 1, d.heartbeat).unwrap();
    gw.push(entry(5, 1, State::Online, true)).unwrap();
    gw.flush().unwrap();
    settled(&l, &[5], WireState::Online).await;
    let _ = std::fs::remove_file(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_marks_answers_warming_for_one_timeout_and_a_warm_start_does_not() {
    // One timeout here is 300 ms + 2 × 500 ms.
    const TIMEOUT: Duration = Duration::from_millis(1300);
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), ARGS);
    let l = link(&d).await;
    let info = *l.link_info();
    assert!(info.warming, "an empty state directory is a cold start");
    assert!(info.warm_remaining > Duration::ZERO && info.warm_remaining <= TIMEOUT);
    assert!(l.subscribe_snapshot(&[7]).await.unwrap().warming);
    assert!(l.stats().await.unwrap().state.cold_start);
    let v1 = LinkClient::connect_version(
        d.link,
        ConnectOptions::local("restart-test-v1"),
        presenced_client::Version::V1,
    )
    .await
    .unwrap();
    assert!(!v1.is_warming(), "a version-1 link is never told");
    assert!(!v1.query_snapshot(&[7]).await.unwrap().warming);
    tokio::time::sleep(info.warm_remaining + Duration::from_millis(100)).await;
    assert!(!l.query_snapshot(&[7]).await.unwrap().warming);
    assert!(!link(&d).await.is_warming(), "warming lasts one timeout");
    v1.close().await;
    l.close().await;
    d.signal(libc::SIGTERM);
    wait_exit(d);
    let d = Daemon::start_in(dir.path(), ARGS);
    let l = link(&d).await;
    assert!(!l.is_warming(), "saved state: a warm start");
    assert!(!l.subscribe_snapshot(&[7]).await.unwrap().warming);
    assert!(!l.stats().await.unwrap().state.cold_start);
}
