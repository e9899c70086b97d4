//! `presence-loadgen --target redis://…` against a redis-server started on a free loopback
//! port: a 2-second steady run at a small scale must get replies back. Skipped (with a note on
//! stderr) where `redis-server` is not on PATH.

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child, killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

#[test]
fn steady_against_redis() {
    if !redis_server_on_path() {
        eprintln!("skipped: redis-server is not on PATH (apt-get install redis-server)");
        return;
    }
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _redis = Redis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_presence-loadgen"))
        .arg("--target")
        .arg(format!("redis://127.0.0.1:{port}"))
        .args(["--scenario", "steady", "--users", "2000", "--devices", "2"])
        .args(["--interval", "1s", "--grace", "500ms", "--duration", "2s"])
        .args(["--json", "--quiet"])
        .output()
        .expect("run presence-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "presence-loadgen exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("redis steady: {summary}");
    let accepted = summary["daemon"]["heartbeats"].as_u64().unwrap_or(0);
    assert!(accepted > 0, "no replies counted: {summary}");
    assert_eq!(summary["sent"]["send_errors"], 0, "{summary}");
    // Every device was SET at least once, so every key was there before the final DELs.
    let devices = summary["setup"]["devices"].as_u64().unwrap_or(0);
    assert!(devices >= 2000, "{summary}");
    assert_eq!(
        summary["daemon"]["keys_online"].as_u64(),
        Some(devices),
        "{summary}"
    );
}
