//! `presencectl` against a real daemon on loopback: send, query, watch, stats, history, and the
//! errors a user sees for bad arguments.

mod common;

use common::InProcess;
use presenced_wire::stats::Stats;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The default timings: nobody times out or turns idle between one presencectl run and the
/// next, however busy the machine.
const CALM: &[(&str, &str)] = &[
    ("presence.heartbeat_interval", "20s"),
    ("presence.grace", "12s"),
    ("presence.idle_after", "5m"),
];

fn ctl(d: &InProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .arg("--link")
        .arg(d.link_arg())
        .args(args)
        .output()
        .expect("run presencectl")
}

fn ok(d: &InProcess, args: &[&str]) -> String {
    let out = ctl(d, args);
    assert!(
        out.status.success(),
        "presencectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `presencectl stats --json`, read into the typed schema (every field required).
fn stats_json(d: &InProcess) -> Stats {
    let text = ok(d, &["stats", "--json"]);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    Stats::from_json(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn send_then_query_shows_online_then_logged_out() {
    let d = InProcess::start(CALM);
    ok(&d, &["send", "42", "43"]);
    std::thread::sleep(Duration::from_millis(50));
    let records = json_lines(&ok(&d, &["query", "42", "43", "44", "--json"]));
    let states: Vec<&str> = records
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["online", "online", "offline"]);
    assert!(records[2]["last_seen_ms"].is_null());
    ok(&d, &["send", "42", "--state", "offline"]);
    std::thread::sleep(Duration::from_millis(50));
    let table = ok(&d, &["query", "42"]);
    let row = table.lines().nth(1).expect("a row");
    assert!(row.contains("42") && row.contains("offline"), "{table}");
    assert!(
        !row.contains(" - "),
        "last seen is set after logout: {table}"
    );
}

#[test]
fn watch_all_prints_transitions_as_they_happen() {
    let d = InProcess::start(CALM);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--link", &d.link_arg(), "watch", "--all", "--count", "2"])
        .args(["--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    // It says so on stderr once the firehose is on.
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("watching every user"), "{line}");
    ok(&d, &["send", "7"]);
    ok(&d, &["send", "7", "--state", "offline"]);
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("user 7  offline -> online  (first_heartbeat)"),
        "{text}"
    );
    assert!(
        lines[1].contains("user 7  online -> offline  (logout)"),
        "{text}"
    );
}

#[test]
fn watch_users_starts_with_their_state_and_times_out() {
    let d = InProcess::start(CALM);
    ok(&d, &["send", "5", "--state", "idle"]);
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let text = ok(&d, &["watch", "5", "6", "--timeout", "300ms", "--json"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let records = json_lines(&text);
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["state"], "idle");
    assert_eq!(records[1]["state"], "offline");
}

#[test]
fn stats_counts_heartbeats_per_shard() {
    let d = InProcess::start(CALM);
    let users: Vec<String> = (1..=100).map(|u| u.to_string()).collect();
    let mut args = vec!["send"];
    args.extend(users.iter().map(String::as_str));
    ok(&d, &args);
    std::thread::sleep(Duration::from_millis(100));
    let stats = stats_json(&d);
    assert_eq!(stats.shards.len(), 2);
    let heartbeats: u64 = stats.shards.iter().map(|s| s.core.heartbeats).sum();
    assert_eq!(heartbeats, 100);
    // Sent shard-aware: nothing crossed between shards.
    let routed: u64 = stats.shards.iter().map(|s| s.routed_out).sum();
    assert_eq!(routed, 0, "{stats:?}");
    // `send` closed its link on the way out: only the stats link is open.
    assert_eq!(stats.link.links, 1, "{stats:?}");
    let table = ok(&d, &["stats"]);
    assert!(table.starts_with("       SHARD"), "{table}");
    assert!(table.contains("push link:"), "{table}");
    assert!(table.contains("timers_cascaded"), "{table}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let d = InProcess::start(CALM);
    let out = ctl(&d, &["send", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user id 0 is reserved"));
    let out = ctl(&d, &["watch", "1", "--timeout", "5x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    // Trusting any certificate is refused off loopback, before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--link", "192.0.2.1:7060", "query", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    // Nothing listening: a clear error, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--link", "127.0.0.1:9", "query", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("push link 127.0.0.1:9"));
}

#[test]
fn send_signs_with_a_key_file_for_an_authenticating_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let dir = std::env::temp_dir().join(format!("presencectl-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, format!("[gateways]\n5 = \"{key}\"\n")).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_file = dir.join("gateway5.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let mut settings = CALM.to_vec();
    settings.push(("auth.keys_file", keys.to_str().unwrap()));
    let d = InProcess::start(&settings);
    let key_arg = key_file.to_str().unwrap();
    // Twice within a second: each run's sequence numbers start above the last one's.
    ok(&d, &["send", "42", "--gateway", "5", "--key-file", key_arg]);
    ok(&d, &["send", "43", "--gateway", "5", "--key-file", key_arg]);
    ok(&d, &["send", "44", "--gateway", "5"]);
    std::thread::sleep(Duration::from_millis(100));
    let records = json_lines(&ok(&d, &["query", "42", "43", "44", "--json"]));
    let states: Vec<&str> = records
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    let stats = stats_json(&d);
    assert_eq!(states, ["online", "online", "offline"], "{:?}", stats.auth);
    assert_eq!(stats.auth.per_gateway[&5].accepted, 2, "{stats:?}");
    // Every shard reports every drop reason, 0 included.
    let unsigned: u64 = stats
        .shards
        .iter()
        .map(|s| s.dropped["unauthenticated"])
        .sum();
    assert_eq!(unsigned, 1, "{stats:?}");
    let table = ok(&d, &["stats"]);
    assert!(
        table.contains("gateway 5            accepted 2\n"),
        "{table}"
    );
    let out = ctl(&d, &["send", "1", "--key-file", "/nonexistent/key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-file /nonexistent/key"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn history_arguments_are_checked_before_connecting() {
    // Nothing listens at port 9: each of these is refused before presencectl connects.
    for (args, says) in [
        (&["history", "0"][..], "user id 0 is reserved"),
        (&["history", "1", "--since", "5x"], "not a duration"),
        (&["history", "1", "--max", "0"], "--max"),
        (&["history"], "<USER>"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_presencectl"))
            .args(["--link", "127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Whatever push-link version the daemon speaks, `history` connects (falling back to version 1
/// if need be) and either answers or says plainly why it cannot.
#[test]
fn history_answers_or_says_why_not() {
    let d = InProcess::start(CALM);
    ok(&d, &["send", "42"]);
    std::thread::sleep(Duration::from_millis(50));
    let out = ctl(&d, &["history", "42", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(v["user"], 42, "{stdout}");
        assert!(v["spans"].is_array(), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "history of user 42: the daemon speaks only push-link protocol version 1"
            ) || stderr.contains("history of user 42: the daemon keeps no history"),
            "{stderr}"
        );
    }
}
