//! `presencectl` against a real daemon on loopback: send, query, watch (across a restart of the
//! daemon too), stats, history, and the errors a user sees for bad arguments.

mod common;

use common::{InProcess, Restartable, StateDir};
use presenced_client::{entry, HeartbeatClient};
use presenced_wire::stats::Stats;
use presenced_wire::State;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    run_ok(&[&["--link", &d.link_arg()][..], args].concat())
}

/// Runs presencectl with `args` as they are; its stdout, once it succeeded.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(args)
        .output()
        .expect("run presencectl");
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

#[test]
fn history_gives_spans_last_seen_and_pages() {
    let d = InProcess::start(CALM);
    ok(&d, &["send", "42"]);
    std::thread::sleep(Duration::from_millis(50));
    ok(&d, &["send", "42", "--state", "offline"]);
    // The store answers from the transitions it has been handed; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let v: serde_json::Value =
            serde_json::from_str(ok(&d, &["history", "42", "--json"]).trim()).expect("JSON");
        if v["spans"].as_array().map_or(0, Vec::len) >= 2 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(history["user"], 42, "{history}");
    assert_eq!(history["more"], false, "{history}");
    let spans = history["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{history}");
    assert_eq!(spans[0]["state"], "online", "{history}");
    assert_eq!(spans[0]["cause"], "first_heartbeat", "{history}");
    assert_eq!(spans[0]["devices"], 1, "{history}");
    assert_eq!(spans[1]["state"], "offline", "{history}");
    assert_eq!(spans[1]["cause"], "logout", "{history}");
    assert_eq!(spans[1]["devices"], 0, "{history}");
    // Spans abut; the last one goes on; the logout set last seen.
    assert_eq!(spans[0]["end_ms"], spans[1]["start_ms"], "{history}");
    assert!(spans[1]["end_ms"].is_null(), "{history}");
    assert!(spans[0]["version"].as_u64() < spans[1]["version"].as_u64());
    assert_eq!(history["last_seen_ms"], spans[1]["start_ms"], "{history}");

    // One span at most: the oldest, and word that more follow.
    let out = ctl(&d, &["history", "42", "--json", "--max", "1"]);
    assert!(out.status.success());
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(first["more"], true, "{first}");
    assert_eq!(first["spans"].as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(first["spans"][0], spans[0], "{first}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("more spans follow: raise --max (now 1)"),
        "{stderr}"
    );

    // The table: last seen, then one row per span, the last one until now.
    let table = ok(&d, &["history", "42"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("user 42, last seen 20"), "{table}");
    assert!(
        lines[2].contains("online") && lines[2].contains("first_heartbeat"),
        "{table}"
    );
    assert!(
        lines[3].contains("now") && lines[3].contains("logout"),
        "{table}"
    );
}

#[test]
fn history_of_a_daemon_without_state_says_it_keeps_none() {
    let mut settings = CALM.to_vec();
    settings.push(("state.enabled", "false"));
    let d = InProcess::start(&settings);
    ok(&d, &["send", "42"]);
    let out = ctl(&d, &["history", "42"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("history of user 42: the daemon keeps no history"),
        "{stderr}"
    );
}

/// A gateway heartbeating users every 100 ms from a thread of its own, until dropped.
struct Gateway {
    logouts: Option<mpsc::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    fn start(addr: std::net::SocketAddr, users: &[u64]) -> Gateway {
        let mut users = users.to_vec();
        let (logouts, logged_out) = mpsc::channel::<u64>();
        let mut sender = HeartbeatClient::new(1, 1, addr).expect("heartbeat socket");
        let thread = std::thread::spawn(move || loop {
            loop {
                match logged_out.try_recv() {
                    Ok(user) => {
                        users.retain(|&u| u != user);
                        sender.push(entry(user, 1, State::Offline, true)).unwrap();
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            for &user in &users {
                sender.push(entry(user, 1, State::Online, true)).unwrap();
            }
            // While the daemon is down, datagrams are lost (or refused by the kernel).
            let _ = sender.flush();
            std::thread::sleep(Duration::from_millis(100));
        });
        Gateway {
            logouts: Some(logouts),
            thread: Some(thread),
        }
    }

    /// The user's device logs out (and is heartbeated no more).
    fn log_out(&self, user: u64) {
        self.logouts.as_ref().unwrap().send(user).unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.logouts.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lines of a child's output, as they come, read by a thread.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Every line left until the output ends (the process exited: its reader sees the end of the
/// stream), waiting at most `within` in all: after a `wait` the reader may not have passed on
/// the last lines yet.
fn rest_of(lines: &mpsc::Receiver<String>, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
        rest.push(line);
    }
    rest
}

/// The next line within `within`, or a panic saying what was awaited.
fn next_line(lines: &mpsc::Receiver<String>, within: Duration, what: &str) -> String {
    lines
        .recv_timeout(within)
        .unwrap_or_else(|e| panic!("no {what} within {within:?}: {e}"))
}

#[test]
fn watch_survives_a_daemon_restart_and_prints_no_transition_for_it() {
    let state = StateDir::new();
    let mut d = Restartable::start(state.path(), CALM);
    let users = [101u64, 102, 103];
    let gateway = Gateway::start(d.heartbeat, &users);
    let link = d.link_arg();
    let query = ["--link", &link, "query", "101", "102", "103", "--json"];
    let deadline = Instant::now() + Duration::from_secs(10);
    while json_lines(&run_ok(&query))
        .iter()
        .any(|r| r["state"] != "online")
    {
        assert!(Instant::now() < deadline, "users not online within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut watch = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--link", &link, "watch", "101", "102", "103", "--json"])
        .args(["--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let stdout = lines_of(watch.stdout.take().unwrap());
    let stderr = lines_of(watch.stderr.take().unwrap());
    let wait = Duration::from_secs(20);
    for user in users {
        let record: serde_json::Value =
            serde_json::from_str(&next_line(&stdout, wait, "record")).expect("JSON");
        assert_eq!(record["user"], user, "{record}");
        assert_eq!(record["state"], "online", "{record}");
    }
    let watching = next_line(&stderr, wait, "watching line");
    assert_eq!(watching, "watching 3 user(s); interrupt to stop");

    // SIGTERM's shutdown, then the daemon again on the same ports and state, while the
    // gateway keeps heartbeating.
    d.stop();
    d.start_again();
    let gone = next_line(&stderr, wait, "line about the link going");
    assert!(
        gone.starts_with("the daemon went away (GOAWAY restarting: "),
        "{gone}"
    );
    let back = next_line(&stderr, Duration::from_secs(40), "reconnected line");
    assert!(
        back.starts_with("reconnected after ") && back.ends_with(" ms; 0 changes"),
        "{back}"
    );
    assert_eq!(
        stdout.try_recv().ok(),
        None,
        "nothing printed for the restart"
    );

    // Live again: a logout shows up.
    gateway.log_out(103);
    let event: serde_json::Value =
        serde_json::from_str(&next_line(&stdout, wait, "logout event")).expect("JSON");
    assert_eq!(event["user"], 103, "{event}");
    assert_eq!(event["prev"], "online", "{event}");
    assert_eq!(event["state"], "offline", "{event}");
    assert_eq!(event["cause"], "logout", "{event}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stdout.try_recv().ok(), None, "one transition only");
    assert_eq!(stderr.try_recv().ok(), None, "nothing more to say");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn watch_gives_up_when_told_to() {
    let state = StateDir::new();
    let mut d = Restartable::start(state.path(), CALM);
    let link = d.link_arg();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--link", &link, "watch", "7", "--give-up-after", "1500ms"])
        .args(["--timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let stderr = lines_of(watch.stderr.take().unwrap());
    let wait = Duration::from_secs(20);
    assert_eq!(
        next_line(&stderr, wait, "watching line"),
        "watching 1 user(s); interrupt to stop"
    );
    let stopped = Instant::now();
    d.stop();
    let status = watch.wait().expect("watch exits");
    let said = rest_of(&stderr, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{said:?}");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "gave up too soon: {said:?}"
    );
    // Maybe a word about the daemon warming first (it just started, and user 7 reads offline).
    assert!(
        said.iter()
            .any(|l| l.starts_with("the daemon went away (GOAWAY restarting: ")),
        "{said:?}"
    );
    let last = said.last().expect("a last word");
    assert!(
        last.starts_with("presencectl: gave up: no link for "),
        "{said:?}"
    );
}

/// `--cluster` with a daemon that is no cluster member: `members` says so, `query` skips a
/// seed that does not answer and asks the daemon like `--link` does; `--cluster` and `--link`
/// together are refused.
#[test]
fn cluster_options_with_a_single_daemon() {
    let d = InProcess::start(CALM);
    ok(&d, &["send", "42"]);
    std::thread::sleep(Duration::from_millis(50));
    let seeds = format!("127.0.0.1:9,{}", d.link_arg());
    let records = json_lines(&run_ok(&[
        "--cluster",
        &seeds,
        "query",
        "43",
        "42",
        "--json",
    ]));
    let states: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["user"].as_u64().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(43, "offline"), (42, "online")]);
    let out = Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["--cluster", &d.link_arg(), "members"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no cluster member"), "{stderr}");
    let out = ctl(&d, &["--cluster", &d.link_arg(), "members"]);
    assert_eq!(out.status.code(), Some(2), "--link and --cluster together");
}
