//! A real `presenced` process for integration tests: started on ephemeral loopback ports,
//! stopped (SIGTERM, then kill) when dropped.

#![allow(dead_code)]

pub mod etcd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A state directory of this test process's own, removed when dropped.
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// A fresh, empty directory under the system's temporary directory.
    pub fn new() -> StateDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "presenced-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }

    /// `state.dir=<it>`, for `--set`.
    pub fn setting(&self) -> String {
        format!("state.dir={}", self.0.display())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon and the addresses it bound.
pub struct Daemon {
    child: Child,
    /// Its own state directory, when the test did not give one.
    _state: Option<StateDir>,
    /// The shared heartbeat address.
    pub heartbeat: SocketAddr,
    /// Every shared heartbeat address (IPv4, then IPv6 with `ingest.listen_v6`).
    pub heartbeat_all: Vec<SocketAddr>,
    /// Each shard's own heartbeat address.
    pub shard_ports: Vec<SocketAddr>,
    /// The QUIC push link address.
    pub link: SocketAddr,
    /// The metrics endpoint's address, when `metrics.listen` is set.
    pub metrics: Option<SocketAddr>,
}

/// Settings with short timings: tick 5 ms, interval 300 ms, grace 100 ms (timeout 500 ms),
/// idle after 1 s, two shards, not pinned.
pub const FAST: &[&str] = &[
    "--shards",
    "2",
    "--set",
    "presence.tick=5ms",
    "--set",
    "presence.heartbeat_interval=300ms",
    "--set",
    "presence.grace=100ms",
    "--set",
    "presence.idle_after=1s",
];

/// `FAST`'s timeout and tick, in milliseconds.
pub const TIMEOUT_MS: u64 = 500;
/// `FAST`'s tick in milliseconds.
pub const TICK_MS: u64 = 5;

impl Daemon {
    /// Starts the daemon with `args` after the loopback defaults, with a state directory of
    /// its own (removed when it is dropped).
    pub fn start(args: &[&str]) -> Daemon {
        let state = StateDir::new();
        let mut daemon = Daemon::start_in(state.path(), args);
        daemon._state = Some(state);
        daemon
    }

    /// Starts the daemon with `args` after the loopback defaults, keeping its state in `dir`
    /// (which outlives it: start another daemon on it to test a restart).
    pub fn start_in(dir: &Path, args: &[&str]) -> Daemon {
        let state = format!("state.dir={}", dir.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--link-listen",
                "127.0.0.1:0",
                "--set",
                "shards.pin=false",
                "--set",
                &state,
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start presenced");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("presenced did not print its ready line within 30 s");
            }
        };
        let field = |name: &str| -> Vec<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("address"))
                .collect()
        };
        Daemon {
            _state: None,
            heartbeat: field("heartbeat=")[0],
            heartbeat_all: field("heartbeat="),
            shard_ports: field("shard_ports="),
            link: field("link=")[0],
            metrics: field("metrics=").first().copied(),
            child,
        }
    }

    /// The daemon's resident memory now and at its peak so far (VmRSS, VmHWM), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the daemon's /proc status");
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /proc status"));
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .expect("a size in kB");
            kib * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the daemon a signal (e.g. `libc::SIGHUP`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
