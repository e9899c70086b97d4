//! `presence-loadgen` against a real daemon on loopback (started in this process, short
//! timings): the flap and steady scenarios at a small scale, checked from `--json`.

mod common;

use common::{InProcess, Restartable, StateDir};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn loadgen(d: &InProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .arg("--link")
        .arg(d.link_arg())
        .args(args)
        .output()
        .expect("run presence-loadgen")
}

/// Runs a scenario with `--json` and returns the summary, requiring exit status 0.
fn run_json(d: &InProcess, args: &[&str]) -> Value {
    let started = Instant::now();
    let out = loadgen(d, &[args, &["--json", "--quiet"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "presence-loadgen {args:?} exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    eprintln!("presence-loadgen {args:?}: {:?}", started.elapsed());
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in the summary", path.join(".")))
}

#[test]
fn flap_and_steady_at_small_scale() {
    let d = InProcess::start(&[]);
    let users = 2000u64;

    // Flap: jitter, duplicates, devices dropping and coming back, all inside the deadline.
    let flap = run_json(
        &d,
        &["--scenario", "flap", "--users", "2000", "--duration", "3s"],
    );
    eprintln!("flap: {flap}");
    assert_eq!(flap["ok"], true, "{flap}");
    // Every user's one login and one logout (the final sweep) arrived; nothing else did
    // (beyond transitions of users this generator itself served too late, if the machine
    // stalled it: those are excused, and reported).
    assert_eq!(num(&flap, &["transitions", "expected"]), 2 * users);
    assert_eq!(
        num(&flap, &["transitions", "observed"]),
        2 * users + num(&flap, &["transitions", "excused"])
    );
    assert_eq!(num(&flap, &["transitions", "spurious"]), 0);
    assert_eq!(num(&flap, &["transitions", "missing"]), 0);
    assert_eq!(num(&flap, &["transitions", "version_regressions"]), 0);
    assert_eq!(num(&flap, &["sent", "logins"]), users);
    assert_eq!(num(&flap, &["latency_us", "count"]), users);
    assert!(num(&flap, &["sent", "entries"]) > 3 * users);
    assert!(num(&flap, &["daemon", "heartbeats"]) > 0);

    // Steady, shard-aware: one online per user, every heartbeat accepted.
    let steady = run_json(
        &d,
        &[
            "--scenario",
            "steady",
            "--users",
            "2000",
            "--devices",
            "2",
            "--duration",
            "3s",
            "--shard-aware",
        ],
    );
    eprintln!("steady: {steady}");
    assert_eq!(steady["ok"], true, "{steady}");
    assert_eq!(num(&steady, &["transitions", "expected"]), 2 * users);
    assert_eq!(
        num(&steady, &["transitions", "observed"]),
        2 * users + num(&steady, &["transitions", "excused"])
    );
    assert_eq!(num(&steady, &["transitions", "spurious"]), 0);
    assert_eq!(num(&steady, &["transitions", "missing"]), 0);
    let sent = num(&steady, &["sent", "entries"]);
    let accepted = num(&steady, &["daemon", "heartbeats"]);
    assert!(
        accepted > 0 && accepted <= sent,
        "{sent} sent, {accepted} accepted"
    );
    // Shard-aware: no entry had to cross between shards.
    assert_eq!(num(&steady, &["daemon", "routed_out"]), 0);
    assert!(num(&steady, &["latency_us", "p50"]) > 0);
}

#[test]
fn users_an_earlier_run_left_online_are_logged_out_before_the_run() {
    let d = InProcess::start(&[]);
    let args = ["--scenario", "steady", "--users", "500", "--duration", "1s"];
    let first = run_json(&d, &[&args[..], &["--no-logout"]].concat());
    assert_eq!(first["ok"], true, "{first}");
    // The same users again: each is online at the start, so the run must log them out (and see
    // them offline) before its own logins can be seen.
    let again = run_json(&d, &args);
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(num(&again, &["transitions", "expected"]), 2 * 500);
    assert_eq!(num(&again, &["transitions", "missing"]), 0);
    assert_eq!(num(&again, &["transitions", "spurious"]), 0);
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let d = InProcess::start(&[]);
    let out = loadgen(&d, &["--users", "ten"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a count"));
    // Checked against the daemon's timings: a rate this low cannot keep anyone online.
    let started = Instant::now();
    let out = loadgen(&d, &["--users", "2000", "--rate", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timeout"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn signs_datagrams_and_presents_a_token_for_an_authenticating_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let dir = std::env::temp_dir().join(format!("loadgen-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    let mut text = String::from("[gateways]\n");
    for g in ["1", "2", "4294967295"] {
        text.push_str(&format!("{g} = \"{key}\"\n"));
    }
    text.push_str("[links]\nloadgen = { token = \"loadgen-token-0123\", firehose = true }\n");
    std::fs::write(&keys, text).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("gw.key"), key).unwrap();
    std::fs::write(dir.join("token"), "loadgen-token-0123\n").unwrap();
    let d = InProcess::start(&[("auth.keys_file", keys.to_str().unwrap())]);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (key_file, token_file) = (path("gw.key"), path("token"));
    let auth = [
        "--key-file",
        key_file.as_str(),
        "--token-file",
        token_file.as_str(),
        "--link-name",
        "loadgen",
        "--gateways",
        "2",
    ];
    let steady = run_json(
        &d,
        &[
            &[
                "--scenario",
                "steady",
                "--users",
                "1000",
                "--duration",
                "2s",
            ],
            &auth[..],
        ]
        .concat(),
    );
    assert_eq!(steady["ok"], true, "{steady}");
    assert_eq!(num(&steady, &["transitions", "expected"]), 2000);
    // With the token but without the key every datagram is refused: nobody comes online,
    // which the generator reports as missing transitions (exit status 1).
    let out = loadgen(
        &d,
        &[
            &["--scenario", "steady", "--users", "10", "--duration", "1s"],
            &auth[2..6],
            &["--json", "--quiet", "--settle", "1s"],
        ]
        .concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The restart scenario against a daemon restarted in this process (SIGTERM's shutdown, then
/// the same ports and state): the library's restart hook stops and starts it, where the
/// command line would run `--restart-cmd`.
#[test]
fn restart_with_durable_state_moves_nobody() {
    use clap::Parser;
    use presenced_tools::loadgen::{self, cli::Args};
    let state = StateDir::new();
    // Offline after 1 s + 2 × 1 s of silence: the restart and the gateways' next beats fit.
    let timings = [
        ("presence.heartbeat_interval", "1s"),
        ("presence.grace", "1s"),
        ("presence.idle_after", "5m"),
    ];
    let mut d = Restartable::start(state.path(), &timings);
    let link = d.link_arg();
    let args = Args::try_parse_from([
        "presence-loadgen",
        "--link",
        &link,
        "--users",
        "3000",
        "--devices",
        "1.5",
        "--observers",
        "2",
        "--duration",
        "6s",
        "--restart-wait",
        "30s",
        "--quiet",
    ])
    .expect("arguments");
    let started = Instant::now();
    let mut restarts = 0;
    let mut hook = || {
        restarts += 1;
        d.stop();
        d.start_again();
        Ok(())
    };
    let summary = loadgen::run(&args, Some(&mut hook)).expect("the run");
    assert_eq!(restarts, 1);
    eprintln!("restart: {:?}\n{}", started.elapsed(), summary.table());
    let json = summary.to_json();
    let r = &json["restart"];
    assert_eq!(num(r, &["false_transitions"]), 0, "{json}");
    assert_eq!(num(r, &["changed_records"]), 0, "{json}");
    assert_eq!(num(r, &["not_reconnected"]), 0, "{json}");
    // Both observers lost their link once and came back.
    let downs = r["reconnect_down_ms"].as_array().expect("downs");
    assert_eq!(downs.len(), 2, "{json}");
    assert!(
        downs.iter().all(|d| d.as_array().map(Vec::len) == Some(1)),
        "{json}"
    );
    // Every user was read on both sides of the restart, unchanged.
    assert_eq!(num(r, &["compared", "users"]), 3000, "{json}");
    assert_eq!(num(r, &["compared", "state_changed"]), 0, "{json}");
    assert_eq!(num(r, &["compared", "version_changed"]), 0, "{json}");
    assert_eq!(num(r, &["compared", "last_seen_back"]), 0, "{json}");
    // The rest of the run's checks hold: one login and one logout per user and observer.
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(num(&json, &["transitions", "expected"]), 2 * 2 * 3000);
    assert_eq!(num(&json, &["transitions", "missing"]), 0, "{json}");
    // The restarted daemon received the heartbeats sent after it came back.
    assert!(num(&json, &["daemon", "heartbeats"]) > 0, "{json}");
}
