//! `presence-loadgen --target ws://…` against a real `presence-gateway` in front of a daemon
//! (in this process), all on loopback: a few browsers flip their visibility and every flip
//! reaches the partner watching it, with its latency measured.

mod common;

use common::gateway::start_gateway;
use common::InProcess;
use serde_json::Value;
use std::process::Command;

#[test]
fn browsers_flip_and_their_partners_see_every_flip() {
    // Idle only when a page says so; no one times out within the run.
    let daemon = InProcess::start(&[
        ("presence.heartbeat_interval", "2s"),
        ("presence.grace", "2s"),
        ("presence.idle_after", "60s"),
    ]);
    let dir = std::env::temp_dir().join(format!("presence-loadgen-gw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let secret = dir.join("gateway.secret");
    let (_gateway, base) = start_gateway(daemon.running().link, &secret);
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
