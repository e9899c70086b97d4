//! `presence-loadgen --target redis://…` against a redis-server started on a free loopback
//! port, at a small scale: steady must get replies back; churn, fanout and flap must find no
//! violation and time their transitions; the restart scenario, with redis-server restarted by
//! `--restart-cmd`, must show what a restart costs with and without persistence while the
//! generator's connections come back. Needs `redis-server` and `redis-cli` on PATH (`.ci/run`
//! installs them): without them the tests fail, naming the package.

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
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

/// Starts redis-server on a free loopback port, without persistence.
fn start_redis() -> Redis {
    start_redis_with(port_free(), &NO_PERSISTENCE)
}

/// Server arguments: keys live in memory only (a restart loses them).
const NO_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

fn port_free() -> u16 {
    assert!(
        redis_server_on_path(),
        "redis-server is not on PATH: apt-get install redis-server (.ci/run does)"
    );
    free_port()
}

/// Starts redis-server on loopback `port` with `config` (persistence) arguments.
fn start_redis_with(port: u16, config: &[&str]) -> Redis {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(config)
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

/// Runs presence-loadgen against the server on `port` with `--json`.
fn loadgen(port: u16, args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .arg("--target")
        .arg(format!("redis://127.0.0.1:{port}"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run presence-loadgen");
    eprintln!("presence-loadgen {args:?}: {:?}", started.elapsed());
    out
}

/// The summary of a run that exited with `status` (0: clean, 1: violations found).
fn summary_of(out: &Output, status: i32, args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(status),
        "presence-loadgen {args:?}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Runs presence-loadgen against `redis` with `--json`, requiring exit status 0, and returns
/// the summary.
fn run_json(redis: &Redis, args: &[&str]) -> Value {
    summary_of(&loadgen(redis.port, args), 0, args)
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

/// A redis-server on a loopback port and a script that restarts it for `--restart-cmd`: the
/// script stops it (`SHUTDOWN NOSAVE`: no RDB snapshot; an append-only file is still flushed),
/// waits until it no longer answers, and starts it again, daemonized, on the same port with the
/// same arguments. The restarted server is killed on drop and its directory removed.
struct RestartableRedis {
    first: Redis,
    dir: PathBuf,
    script: PathBuf,
}

impl RestartableRedis {
    /// Starts the server with `config`, its files (append-only file, pid file) in a directory
    /// of its own.
    fn start(config: &[&str]) -> RestartableRedis {
        let port = port_free();
        let dir = std::env::temp_dir().join(format!(
            "presenced-redis-restart-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the server's directory");
        let mut args: Vec<String> = config.iter().map(|a| a.to_string()).collect();
        args.extend(["--dir".to_string(), dir.display().to_string()]);
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = dir.join("restart.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 redis-cli -p {port} shutdown nosave >/dev/null 2>&1\n\
                 while redis-cli -p {port} ping >/dev/null 2>&1; do sleep 0.05; done\n\
                 exec redis-server --bind 127.0.0.1 --port {port} {} --daemonize yes \
                 --pidfile '{}/restarted.pid' --logfile ''\n",
                quoted.join(" "),
                dir.display()
            ),
        )
        .expect("the restart script");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let first = start_redis_with(port, &args);
        RestartableRedis { first, dir, script }
    }

    /// `--restart-cmd`.
    fn restart_cmd(&self) -> String {
        format!("sh {}", self.script.display())
    }
}

impl Drop for RestartableRedis {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("restarted.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The restart runs: 2,000 single-device users beating every second, one observer, the
/// server restarted 1.5 s in; 4 s leave every device at least one beat after the server is
/// back. Grace 1 s (key TTL 3 s): a device whose beat was lost while the server was down
/// beats again (gaps up to 1.1 s) before its key would expire.
fn run_restart(redis: &RestartableRedis, status: i32) -> Value {
    let cmd = redis.restart_cmd();
    let args = [
        &["--users", "2000", "--interval", "1s", "--grace", "1s"][..],
        &["--devices", "1", "--scenario", "steady", "--duration", "4s"],
        &["--restart-after", "1500ms", "--restart-wait", "20s"],
        &["--restart-cmd", &cmd],
    ]
    .concat();
    let summary = summary_of(&loadgen(redis.first.port, &args), status, &args);
    eprintln!("redis restart: {summary}");
    summary
}

/// The generator's connections survived the restart: every gateway and the observer
/// reconnected once, the beats sent while the server was down were counted, and every
/// device's final logout found its key again.
fn assert_reconnected(s: &Value) {
    let r = &s["restart"];
    assert_eq!(num(r, &["not_reconnected"]), 0, "{s}");
    assert_eq!(
        r["reconnect_down_ms"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    assert_eq!(
        r["reconnect_down_ms"][0].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    assert_eq!(
        num(s, &["connections", "gateway_reconnects"]),
        num(s, &["setup", "gateways"]),
        "{s}"
    );
    assert_eq!(num(s, &["connections", "observer_reconnects"]), 1, "{s}");
    assert!(num(s, &["sent", "unsent"]) > 0, "{s}");
    assert!(r["back_after_s"].as_f64().is_some_and(|t| t > 0.0), "{s}");
    assert_eq!(num(s, &["transitions", "missing"]), 0, "{s}");
    assert_eq!(num(s, &["expiries", "spurious"]), 0, "{s}");
    assert_eq!(num(s, &["sent", "send_errors"]), 0, "{s}");
}

#[test]
fn restart_without_persistence_loses_every_key() {
    let redis = RestartableRedis::start(&NO_PERSISTENCE);
    // Violations found: exit status 1.
    let s = run_restart(&redis, 1);
    assert_reconnected(&s);
    let devices = num(&s, &["setup", "devices"]);
    assert_eq!(devices, 2000, "{s}");
    let r = &s["restart"];
    // Every key vanished: every device read offline after the restart...
    assert_eq!(num(r, &["devices_read"]), devices, "{s}");
    assert_eq!(num(r, &["false_offline"]), devices, "{s}");
    // ...and its next beat found no key and published a login nobody caused.
    assert_eq!(num(r, &["false_transitions"]), devices, "{s}");
    assert_eq!(num(&s, &["transitions", "spurious"]), devices, "{s}");
    assert_eq!(num(&s, &["violations"]), 2 * devices, "{s}");
}

#[test]
fn restart_with_an_append_only_file_keeps_the_keys() {
    // Every write fsynced before its reply: the restarted server loads every key, with its
    // expiry, from the file.
    let redis = RestartableRedis::start(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let s = run_restart(&redis, 0);
    assert_reconnected(&s);
    let devices = num(&s, &["setup", "devices"]);
    let r = &s["restart"];
    assert_eq!(num(r, &["devices_read"]), devices, "{s}");
    assert_eq!(num(r, &["false_offline"]), 0, "{s}");
    assert_eq!(num(r, &["false_transitions"]), 0, "{s}");
    assert_eq!(s["ok"], true, "{s}");
}
