//! A garbage flood against a real, authenticating daemon: while `presence-flood` sends random,
//! forged and replayed datagrams as fast as it can, a valid gateway keeps its users alive and
//! logs some out. No valid transition may be missed and no kept-alive user may time out.

mod common;

use common::InProcess;
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push};
use presenced_wire::auth::Key;
use presenced_wire::link::WireCause;
use presenced_wire::State;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY_1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_2: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_datagrams_misses_no_valid_transition() {
    let dir = std::env::temp_dir().join(format!("presence-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        format!("[gateways]\n1 = \"{KEY_1}\"\n2 = \"{KEY_2}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_1 = dir.join("gateway1.key");
    std::fs::write(&key_1, KEY_1).unwrap();
    let d = InProcess::start(&[("auth.keys_file", keys.to_str().unwrap())]);
    let heartbeat = d.running().heartbeat[0];
    let link = LinkClient::connect(d.running().link, ConnectOptions::local("test"))
        .await
        .unwrap();
    link.subscribe_all().await.unwrap();

    // Gateway 2: users 1..=500 alive every 100 ms (timeout 500 ms), signed.
    let stop = Arc::new(AtomicBool::new(false));
    let valid = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut gw = HeartbeatClient::new(2, 1, heartbeat)
                .unwrap()
                .with_key(Key::from_hex(KEY_2).unwrap());
            let mut logged_out = BTreeSet::new();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // After a second, log out users 1..=20, one every round.
                let out = (started.elapsed().as_millis() / 100).saturating_sub(10) as u64;
                for u in 1..=500u64 {
                    let state = if u <= out.min(20) {
                        if !logged_out.insert(u) {
                            continue;
                        }
                        State::Offline
                    } else {
                        State::Online
                    };
                    gw.push(entry(u, 1, state, true)).unwrap();
                }
                gw.flush().unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            (gw.entries_sent(), logged_out)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let flood = Command::new(env!("CARGO_BIN_EXE_presence-flood"))
        .args([
            "--target",
            &heartbeat.to_string(),
            "--duration",
            "3s",
            "--json",
        ])
        .args(["--gateway", "1", "--key-file", key_1.to_str().unwrap()])
        // Its own address: the daemon blocks it without blocking the valid gateway's.
        .args(["--source", "127.0.0.3"])
        .output()
        .expect("run presence-flood");
    assert!(
        flood.status.success(),
        "{}",
        String::from_utf8_lossy(&flood.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, logged_out) = valid.join().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut online = BTreeSet::new();
    let mut logouts = BTreeSet::new();
    let mut timeouts = Vec::new();
    while let Some(push) = link.try_next_push() {
        let Push::Events(events) = push else {
            panic!("unexpected {push:?}");
        };
        for e in events {
            match e.cause {
                WireCause::FirstHeartbeat if e.user <= 500 => {
                    online.insert(e.user);
                }
                WireCause::Logout => {
                    logouts.insert(e.user);
                }
                WireCause::Timeout => timeouts.push(e.user),
                _ => {}
            }
        }
    }
    let stats = link.stats().await.unwrap();
    let g2 = &stats.auth.per_gateway[&2];
    let refused: u64 = stats.shards.iter().map(|s| s.dropped_total()).sum();
    let dropped_early: u64 = stats
        .shards
        .iter()
        .map(|s| s.dropped["source_blocked"])
        .sum();
    let blocked: u64 = stats.shards.iter().map(|s| s.sources_blocked).sum();
    let kernel_dropped: u64 = stats.shards.iter().map(|s| s.kernel_dropped).sum();
    eprintln!(
        "flood: {} | valid entries sent {sent}, gateway 2 datagrams accepted {}, refused \
         {refused} ({dropped_early} dropped unread, {blocked} blocks), kernel dropped \
         {kernel_dropped}",
        String::from_utf8_lossy(&flood.stdout).trim(),
        g2.accepted
    );
    assert_eq!(online.len(), 500, "every valid user came online");
    assert_eq!(logouts, logged_out, "every logout arrived");
    // Users beyond the logged-out ones may time out only after the valid sender stopped.
    assert!(
        timeouts.iter().all(|u| logged_out.contains(u) || *u > 500),
        "kept-alive users timed out during the flood: {timeouts:?}"
    );
    assert!(
        refused + kernel_dropped > 1000,
        "the flood reached the daemon: {stats:?}"
    );
    assert!(blocked >= 1, "the flooder was blocked: {stats:?}");
    // Once blocked, its datagrams are dropped by the sockets' filter in the kernel (a few
    // already queued by then are dropped unread by the shard).
    assert!(
        kernel_dropped > 0,
        "the kernel's filter dropped the blocked flooder's datagrams: {stats:?}"
    );
    assert!(
        g2.refused.values().all(|&n| n == 0),
        "the valid gateway was never refused: {g2:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
