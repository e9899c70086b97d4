//! `presence-loadgen --cluster` against a real cluster: a real etcd and three presenced members
//! on loopback (each its own process; see `cluster/mod.rs`), one of them killed with SIGKILL
//! mid-run.
//!
//! - With two replicas per user (the default) the killed member's users fall to their next
//!   replica, which holds their state: the run must end with exit status 0, no false and no
//!   missing transition, none charged to any member, and must have seen the member go.
//! - With one replica the killed member's users have no replica: their new primary knows
//!   nothing of them, so the run must fail, with its false transitions charged to the killed
//!   member and none to the others.
//!
//! A test binary without libtest's harness: it is also the members' executable.

mod cluster;

use cluster::{Etcd, Member};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(90);

fn main() {
    if let Ok(settings) = std::env::var(cluster::MEMBER_ENV) {
        cluster::run_member(&settings);
    }
    let tests: [(&str, fn()); 2] = [
        (
            "a_killed_member_with_two_replicas_makes_no_false_or_missing_transition",
            a_killed_member_with_two_replicas_makes_no_false_or_missing_transition,
        ),
        (
            "a_killed_member_with_one_replica_is_charged_its_users_false_transitions",
            a_killed_member_with_one_replica_is_charged_its_users_false_transitions,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        test();
        println!("test {name} ... ok ({:?})", started.elapsed());
    }
}

/// Three members of a fresh cluster with `extra` settings, active and warm.
fn start_cluster(etcd: &Etcd, extra: &[(&str, &str)]) -> Vec<Member> {
    let name = format!("lg{}", std::process::id());
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|id| Member::start(etcd, &name, id, extra))
        .collect();
    cluster::wait_settled(&members);
    members
}

/// Runs `presence-loadgen --cluster` (all three members as seeds) with `args`, killing member
/// `victim` after `kill_after`; returns the exit status and the JSON summary.
fn run_with_kill(
    mut members: Vec<Member>,
    victim: usize,
    kill_after: Duration,
    args: &[&str],
) -> (Option<i32>, Value) {
    let seeds: Vec<String> = members.iter().map(|m| m.link.to_string()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .arg("--cluster")
        .arg(seeds.join(","))
        .args(args)
        .args(["--json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run presence-loadgen");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    std::thread::sleep(kill_after);
    members.remove(victim).kill();
    let until = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for presence-loadgen") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("presence-loadgen ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let summary: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: exit {:?}\nstdout: {out}\nstderr: {err}",
            status.code()
        )
    });
    eprintln!(
        "presence-loadgen {args:?}: exit {:?}\n{summary}",
        status.code()
    );
    (status.code(), summary)
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in the summary", path.join(".")))
}

/// The summary's per-member entry of `id`.
fn member<'a>(summary: &'a Value, id: &str) -> &'a Value {
    summary["cluster"]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("no member {id} in {summary}"))
}

fn a_killed_member_with_two_replicas_makes_no_false_or_missing_transition() {
    let etcd = Etcd::start();
    let members = start_cluster(&etcd, &[]);
    let (code, s) = run_with_kill(
        members,
        0,
        Duration::from_secs(4),
        &[
            "--scenario",
            "churn",
            "--users",
            "400",
            "--churn",
            "40",
            "--duration",
            "12s",
        ],
    );
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(num(&s, &["transitions", "missing"]), 0, "{s}");
    assert_eq!(num(&s, &["transitions", "spurious"]), 0, "{s}");
    assert_eq!(num(&s, &["transitions", "gaps"]), 0, "{s}");
    assert!(
        num(&s, &["sent", "logins"]) > 400,
        "churn logged users in: {s}"
    );
    // The kill was seen: the last map has two members, and a's counters could not be read.
    assert_eq!(num(&s, &["cluster", "members_last"]), 2, "{s}");
    assert!(member(&s, "a")["heartbeats"].is_null(), "{s}");
    for id in ["a", "b", "c"] {
        let m = member(&s, id);
        assert_eq!(num(m, &["false_transitions"]), 0, "{s}");
        assert_eq!(num(m, &["missing"]), 0, "{s}");
    }
    for id in ["b", "c"] {
        assert!(num(member(&s, id), &["heartbeats"]) > 0, "{s}");
    }
    // Each entry went to both replicas of its user (the killed member's users had two before
    // the kill, and the two survivors after it).
    assert_eq!(
        num(&s, &["cluster", "replica_entries"]),
        2 * num(&s, &["cluster", "user_entries"]),
        "{s}"
    );
}

fn a_killed_member_with_one_replica_is_charged_its_users_false_transitions() {
    let etcd = Etcd::start();
    let members = start_cluster(&etcd, &[("cluster.replicas", "1")]);
    let (code, s) = run_with_kill(
        members,
        0,
        Duration::from_secs(3),
        &["--scenario", "steady", "--users", "300", "--duration", "9s"],
    );
    assert_eq!(code, Some(1), "the run must fail: {s}");
    let killed = member(&s, "a");
    let charged = num(killed, &["false_transitions"]) + num(killed, &["missing"]);
    assert!(charged > 0, "nothing charged to the killed member: {s}");
    for id in ["b", "c"] {
        let m = member(&s, id);
        assert_eq!(num(m, &["false_transitions"]), 0, "{id}: {s}");
        assert_eq!(num(m, &["missing"]), 0, "{id}: {s}");
    }
    // Every false and missing transition is charged to some member.
    assert_eq!(
        num(&s, &["transitions", "spurious"]) + num(&s, &["transitions", "missing"]),
        charged,
        "{s}"
    );
    assert_eq!(num(&s, &["cluster", "unattributed"]), 0, "{s}");
}
