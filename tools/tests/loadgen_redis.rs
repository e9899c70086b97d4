//! `presence-loadgen --target redis://…` against a redis-server started on a free loopback
//! port, at a small scale: steady must get replies back; churn, fanout and flap must find no
//! violation and time their transitions. Needs `redis-server` on PATH (`.ci/run` installs it):
//! without it the tests fail, naming the package.

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child on a loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_on_path() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts redis-server on a free loopback port.
fn start_redis() -> Redis {
    assert!(
        redis_server_on_path(),
        "redis-server is not on PATH: apt-get install redis-server (.ci/run does)"
    );
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let redis = Redis { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    redis
}

/// Runs presence-loadgen against `redis` with `--json`, requiring exit status 0, and returns
/// the summary.
fn run_json(redis: &Redis, args: &[&str]) -> Value {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .arg("--target")
        .arg(format!("redis://127.0.0.1:{}", redis.port))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run presence-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "presence-loadgen {args:?} exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("presence-loadgen {args:?}: {:?}", started.elapsed());
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The population and timings of every run here: small, with a 2 s deadline.
const SMALL: [&str; 6] = ["--users", "2000", "--interval", "1s", "--grace", "500ms"];

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in the summary", path.join(".")))
}

/// The checks every scenario must pass: no violation of any kind (spurious expiries
/// included), every expected publication seen by every observer, no failed command.
fn assert_clean(s: &Value) {
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(num(s, &["violations"]), 0, "{s}");
    assert_eq!(num(s, &["transitions", "missing"]), 0, "{s}");
    assert_eq!(num(s, &["transitions", "spurious"]), 0, "{s}");
    // Beyond the expected, only transitions of devices this generator itself served too
    // late (if the machine stalled it): excused, and reported.
    assert_eq!(
        num(s, &["transitions", "observed"]),
        num(s, &["transitions", "expected"]) + num(s, &["transitions", "excused"]),
        "{s}"
    );
    assert_eq!(num(s, &["expiries", "spurious"]), 0, "{s}");
    assert_eq!(num(s, &["sent", "send_errors"]), 0, "{s}");
    assert_eq!(
        s["transitions"]["links_closed"],
        serde_json::json!([]),
        "{s}"
    );
}

#[test]
fn steady_against_redis() {
    let redis = start_redis();
    let summary = run_json(
        &redis,
        &[
            &SMALL[..],
            &["--scenario", "steady", "--devices", "2", "--duration", "2s"],
        ]
        .concat(),
    );
    eprintln!("redis steady: {summary}");
    let accepted = summary["daemon"]["heartbeats"].as_u64().unwrap_or(0);
    assert!(accepted > 0, "no replies counted: {summary}");
    assert_clean(&summary);
    // Every device was SET at least once, so every key was there before the final GETDELs.
    let devices = num(&summary, &["setup", "devices"]);
    assert!(devices >= 2000, "{summary}");
    assert_eq!(
        num(&summary, &["daemon", "keys_online"]),
        devices,
        "{summary}"
    );
    // Each device's login and final logout, each published once.
    assert_eq!(num(&summary, &["transitions", "expected"]), 2 * devices);
    assert_eq!(num(&summary, &["sent", "publishes"]), 2 * devices);
    assert_eq!(num(&summary, &["latency_us", "count"]), devices);
}

#[test]
fn churn_and_fanout_against_redis() {
    let redis = start_redis();
    let base = [
        &SMALL[..],
        &["--devices", "1", "--churn", "400", "--warmup", "500ms"],
    ]
    .concat();
    // Churn: devices logging in and out on top of the heartbeats, one observer.
    let churn = run_json(
        &redis,
        &[&base[..], &["--scenario", "churn", "--duration", "3s"]].concat(),
    );
    eprintln!("redis churn: {churn}");
    assert_clean(&churn);
    assert!(num(&churn, &["sent", "logouts"]) > 100, "{churn}");
    // The churn's logins and logouts after the warm-up are timed, with percentiles.
    let timed = num(&churn, &["latency_us", "count"]);
    assert!(timed > 100, "too few latency samples: {churn}");
    for p in ["p50", "p90", "p99", "max"] {
        assert!(num(&churn, &["latency_us", p]) > 0, "{p}: {churn}");
    }
    assert!(churn["timed_from_s"].as_f64().is_some(), "{churn}");

    // Fanout: two observers on the same users; every transition reaches both.
    let fanout = run_json(
        &redis,
        &[
            &base[..],
            &[
                "--scenario",
                "fanout",
                "--observers",
                "2",
                "--duration",
                "2s",
            ],
        ]
        .concat(),
    );
    eprintln!("redis fanout: {fanout}");
    assert_clean(&fanout);
    assert_eq!(num(&fanout, &["setup", "observers"]), 2);
    // Each publication is expected once per observer.
    assert_eq!(
        num(&fanout, &["transitions", "expected"]),
        2 * num(&fanout, &["sent", "publishes"]),
        "{fanout}"
    );
    assert!(num(&fanout, &["latency_us", "count"]) > 100, "{fanout}");
}

#[test]
fn flap_against_redis() {
    let redis = start_redis();
    // Wide jitter and duplicate beats, always inside the TTL: no transition after the
    // initial logins but the final logouts, and no key may expire.
    let flap = run_json(
        &redis,
        &[
            &SMALL[..],
            &["--scenario", "flap", "--devices", "2", "--duration", "3s"],
        ]
        .concat(),
    );
    eprintln!("redis flap: {flap}");
    assert_clean(&flap);
    let devices = num(&flap, &["setup", "devices"]);
    assert_eq!(num(&flap, &["sent", "logins"]), devices, "{flap}");
    assert_eq!(num(&flap, &["sent", "logouts"]), 0, "{flap}");
    assert_eq!(
        num(&flap, &["transitions", "expected"]),
        2 * devices,
        "{flap}"
    );
    assert_eq!(num(&flap, &["latency_us", "count"]), devices, "{flap}");
}
