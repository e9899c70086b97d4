//! `presence-loadgen --target ws://…` against a real `presence-gateway` in front of a daemon
//! (in this process) that requires signed heartbeats, all on loopback: a few browsers flip
//! their visibility and every flip reaches the partner watching it, with its latency
//! measured.

mod common;

use common::gateway::start_gateway_with;
use common::InProcess;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Gateway 1's heartbeat key (test data only).
const KEY: &str = "8f3a6c21d94e07b5a1c3e5f7092b4d6f8a0c2e4f6b8d0a2c4e6f8b0d2a4c6e8f";

#[test]
fn browsers_flip_and_their_partners_see_every_flip() {
    let dir = std::env::temp_dir().join(format!("presence-loadgen-gw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    // The daemon takes only datagrams signed with gateway 1's key: the gateway's heartbeats
    // must be signed, or no browser would ever see its partner online.
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, format!("[gateways]\n1 = \"{KEY}\"\n")).expect("key file");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let key_file = dir.join("gateway.key");
    std::fs::write(&key_file, KEY).expect("gateway key file");
    let keys_setting = keys.display().to_string();
    // Idle only when a page says so; no one times out within the run.
    let daemon = InProcess::start(&[
        ("presence.heartbeat_interval", "2s"),
        ("presence.grace", "2s"),
        ("presence.idle_after", "60s"),
        ("auth.keys_file", &keys_setting),
    ]);
    let secret = dir.join("gateway.secret");
    let key_arg = key_file.display().to_string();
    let (_gateway, base) = start_gateway_with(
        daemon.running().link,
        &secret,
        &["--gateway-id", "1", "--key-file", &key_arg],
    );
    let target = base.replacen("http://", "ws://", 1);
    let out = Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .args(["--target", &target, "--users", "6", "--duration", "2s"])
        .args(["--toggle-every", "250ms", "--json", "--quiet"])
        .arg("--gateway-secret-file")
        .arg(&secret)
        .output()
        .expect("run presence-loadgen");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    eprintln!("{summary}");
    assert_eq!(summary["browsers"], 6);
    let flips = summary["flips"].as_u64().expect("flips");
    // Six browsers, eight flips each in 2 s (give or take the first and last).
    assert!((30..=60).contains(&flips), "{summary}");
    assert_eq!(
        summary["latency_us"]["count"].as_u64(),
        Some(flips),
        "{summary}"
    );
    assert_eq!(summary["missed"], 0);
    assert_eq!(summary["errors"], 0);
}
