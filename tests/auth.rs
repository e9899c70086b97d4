//! Authenticated heartbeats against the real daemon: forged, unknown, replayed, stale,
//! unsigned, truncated and oversized datagrams are refused, counted and change nothing, a key
//! rotation (SIGHUP) takes effect, and a valid gateway keeps working throughout.

mod common;

use common::{Daemon, FAST};
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push};
use presenced_wire::auth::Key;
use presenced_wire::link::{WireCause, WireState};
use presenced_wire::stats::Stats;
use presenced_wire::{Encoder, Header, State};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
const KEY_C: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn key(hex: &str) -> Key {
    Key::from_hex(hex).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn write_keys(path: &Path, gateway_1: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(
        &tmp,
        format!("[gateways]\n1 = \"{gateway_1}\"\n2 = \"{KEY_B}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One datagram of gateway `gw`, epoch `epoch`, sequence `seq`: user `user` online.
fn datagram(gw: u32, epoch: u32, seq: u64, time: u64, user: u64, with: Option<&str>) -> Vec<u8> {
    let mut enc = Encoder::new(Header::new(gw, epoch, seq, time));
    enc.push(entry(user, 1, State::Online, true)).unwrap();
    match with {
        Some(k) => enc.finish_signed(&key(k)).unwrap().to_vec(),
        None => enc.finish().unwrap().to_vec(),
    }
}

/// The sum of a per-shard counter.
/// Datagrams dropped for `reason`, all shards.
fn dropped(stats: &Stats, reason: &str) -> u64 {
    stats.shards.iter().map(|s| s.dropped[reason]).sum()
}

struct KeyDir(PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_refused_counted_and_change_nothing() {
    let dir = KeyDir(std::env::temp_dir().join(format!("presenced-auth-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let keys = dir.0.join("keys.toml");
    write_keys(&keys, KEY_A);
    let keys_arg = format!("auth.keys_file={}", keys.display());
    let mut args = FAST.to_vec();
    args.extend(["--set", &keys_arg]);
    let d = Daemon::start(&args);
    let link = LinkClient::connect(d.link, ConnectOptions::local("test"))
        .await
        .unwrap();
    link.subscribe_all().await.unwrap();

    // Gateway 2 keeps users 1..=50 alive every 100 ms, signed, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let (stop, target) = (stop.clone(), d.heartbeat);
        std::thread::spawn(move || {
            let mut gw = HeartbeatClient::new(2, 1, target)
                .unwrap()
                .with_key(key(KEY_B));
            while !stop.load(Ordering::Relaxed) {
                for u in 1..=50 {
                    gw.push(entry(u, 1, State::Online, true)).unwrap();
                }
                gw.flush().unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let gw = HeartbeatClient::new(1, 7, d.heartbeat).unwrap();
    let t = now_ms();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("bad_mac", datagram(1, 7, 0, t, 1001, Some(KEY_B))),
        ("unknown_gateway", datagram(9, 7, 0, t, 1002, Some(KEY_A))),
        (
            "clock_skew",
            datagram(1, 7, 1, t - 3_600_000, 1003, Some(KEY_A)),
        ),
        ("unauthenticated", datagram(1, 7, 2, t, 1004, None)),
        (
            "too_short",
            datagram(1, 7, 3, t, 1005, Some(KEY_A))[..20].to_vec(),
        ),
        (
            "length_mismatch",
            datagram(1, 7, 4, t, 1006, Some(KEY_A))[..63].to_vec(),
        ),
        ("too_long", vec![0x50; 1600]),
    ];
    for (_, bytes) in &hostile {
        gw.send_raw(bytes).unwrap();
    }
    // A valid datagram, then the same bytes again (a replay), and an older epoch.
    let valid = datagram(1, 7, 10, now_ms(), 1100, Some(KEY_A));
    gw.send_raw(&valid).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.send_raw(&valid).unwrap();
    gw.send_raw(&datagram(1, 6, 11, now_ms(), 1101, Some(KEY_A)))
        .unwrap();
    // Gateway 2 (whose key stays) far ahead of its steady sender: replayed after the reload.
    let kept = datagram(2, 1, 1_000_000, now_ms(), 1300, Some(KEY_B));
    gw.send_raw(&kept).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let records = link
        .query(&[1001, 1002, 1003, 1004, 1005, 1006, 1101])
        .await
        .unwrap();
    assert!(records.iter().all(|r| r.version == 0), "{records:?}");
    let accepted = link.query(&[1100, 1300]).await.unwrap();
    assert!(
        accepted.iter().all(|r| r.state == WireState::Online),
        "{accepted:?}"
    );
    let stats = link.stats().await.unwrap();
    for (reason, _) in &hostile {
        assert!(
            dropped(&stats, reason) >= 1,
            "{reason} not counted: {stats:?}"
        );
    }
    assert_eq!(dropped(&stats, "replayed"), 1, "{stats:?}");
    assert_eq!(dropped(&stats, "stale_epoch"), 1, "{stats:?}");
    // Per gateway: gateway 1 had one accepted, and its refusals by reason.
    let gateway = &stats.auth.per_gateway[&1];
    assert_eq!(gateway.accepted, 1, "{stats:?}");
    assert!(gateway.refused["bad_mac"] >= 1, "{stats:?}");

    // Rotation: gateway 1's key becomes C. After SIGHUP, A is refused and C accepted.
    write_keys(&keys, KEY_C);
    d.signal(libc::SIGHUP);
    let mut seq = 100;
    let rotated = loop {
        seq += 1;
        gw.send_raw(&datagram(1, 7, seq, now_ms(), 1200, Some(KEY_C)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if link.query(&[1200]).await.unwrap()[0].version != 0 {
            break true;
        }
        if seq > 200 {
            break false;
        }
    };
    assert!(rotated, "the new key never took effect");
    gw.send_raw(&datagram(1, 7, 500, now_ms(), 1201, Some(KEY_A)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(link.query(&[1201]).await.unwrap()[0].version, 0);
    // Gateway 1 restarts: a greater boot epoch, its sequence numbers from 0 again.
    gw.send_raw(&datagram(1, 8, 0, now_ms(), 1400, Some(KEY_C)))
        .unwrap();
    gw.send_raw(&datagram(1, 7, 501, now_ms(), 1401, Some(KEY_C)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let restarted = link.query(&[1400, 1401]).await.unwrap();
    assert_eq!(
        restarted[0].state,
        WireState::Online,
        "the new epoch is accepted"
    );
    assert_eq!(restarted[1].version, 0, "the old epoch is stale");
    // Replays of datagrams accepted before the reload are still refused.
    let before = dropped(&link.stats().await.unwrap(), "replayed");
    gw.send_raw(&kept).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        dropped(&link.stats().await.unwrap(), "replayed"),
        before + 1
    );

    stop.store(true, Ordering::Relaxed);
    steady.join().unwrap();
    // Gateway 2's users never went offline: every transition of theirs is the first online.
    while let Some(push) = link.try_next_push() {
        if let Push::Events(events) = push {
            for e in events.iter().filter(|e| e.user <= 50) {
                assert_eq!(e.cause, WireCause::FirstHeartbeat, "{e:?}");
            }
        }
    }
}

#[test]
fn a_key_file_others_can_read_stops_the_daemon_with_a_clear_error() {
    let dir =
        KeyDir(std::env::temp_dir().join(format!("presenced-auth-mode-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let keys = dir.0.join("keys.toml");
    write_keys(&keys, KEY_A);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(["--listen", "127.0.0.1:0", "--link-listen", "127.0.0.1:0"])
        .arg("--set")
        .arg(format!("auth.keys_file={}", keys.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keys_file") && err.contains("chmod 600"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_links_need_a_token_and_the_firehose_a_grant() {
    use presenced_client::ClientError;
    use presenced_wire::link::ErrorCode;
    let dir = KeyDir(std::env::temp_dir().join(format!("presenced-links-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let keys = dir.0.join("keys.toml");
    std::fs::write(
        &keys,
        "[links]\nops = { token = \"ops-token-0123456789\", firehose = true }\n\
         gw = { token = \"gw-token-0123456789\" }\n",
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys_arg = format!("auth.keys_file={}", keys.display());
    let d = Daemon::start(&["--shards", "2", "--set", &keys_arg]);
    let connect = |name: &str, token: Option<&str>| {
        let options = ConnectOptions {
            token: token.map(str::to_string),
            ..ConnectOptions::local(name)
        };
        LinkClient::connect(d.link, options)
    };
    for (name, token) in [("test", None), ("gw", Some("ops-token-0123456789"))] {
        match connect(name, token).await {
            Err(ClientError::Closed { code, .. }) => {
                assert_eq!(code, Some(ErrorCode::Unauthorized), "{name}")
            }
            Err(other) => panic!("{name}: {other}"),
            Ok(_) => panic!("{name}: connected without a valid token"),
        }
    }
    let gw = connect("gw", Some("gw-token-0123456789")).await.unwrap();
    assert_eq!(gw.query(&[1]).await.unwrap().len(), 1);
    match gw.subscribe_all().await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, Some(ErrorCode::Unauthorized)),
        other => panic!("firehose without a grant: {other:?}"),
    }
    assert_eq!(
        gw.subscribe(&[1]).await.unwrap().len(),
        1,
        "the link stays usable"
    );
    let ops = connect("ops", Some("ops-token-0123456789")).await.unwrap();
    ops.subscribe_all().await.unwrap();
    let stats = ops.stats().await.unwrap();
    assert_eq!(stats.link.links_unauthorized, 2, "{stats:?}");
}
