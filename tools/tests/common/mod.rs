//! A real daemon for the tools' tests, started in this process on ephemeral loopback ports
//! with short timings, and stopped when dropped.

#![allow(dead_code)]

pub mod gateway;

use presenced::daemon::{self, Running};
use presenced::settings::Sources;

/// A daemon running in this process, with a state directory of its own (removed when it is
/// dropped).
pub struct InProcess(Option<Running>, std::path::PathBuf);

impl InProcess {
    /// Starts a daemon: two shards, not pinned, tick 5 ms, interval 300 ms, grace 100 ms
    /// (offline after 500 ms of silence), idle after 1 s; then `extra` settings.
    pub fn start(extra: &[(&str, &str)]) -> InProcess {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "presenced-tools-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.display().to_string();
        let mut sources = Sources::default();
        let base = [
            ("state.dir", state.as_str()),
            ("ingest.listen", "127.0.0.1:0"),
            ("link.listen", "127.0.0.1:0"),
            ("shards.count", "2"),
            ("shards.pin", "false"),
            ("presence.tick", "5ms"),
            ("presence.heartbeat_interval", "300ms"),
            ("presence.grace", "100ms"),
            ("presence.idle_after", "1s"),
        ];
        for (key, value) in base.iter().chain(extra) {
            sources.set(key, value).expect("setting");
        }
        let settings = sources.build(2).expect("settings");
        InProcess(Some(daemon::start(settings).expect("daemon starts")), dir)
    }

    /// The running daemon's addresses.
    pub fn running(&self) -> &Running {
        self.0.as_ref().expect("running")
    }

    /// `--link ADDR` for the tools.
    pub fn link_arg(&self) -> String {
        self.running().link.to_string()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            let _ = running.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// A state directory that outlives the daemons started on it (removed when dropped).
pub struct StateDir(std::path::PathBuf);

impl StateDir {
    /// A fresh, empty directory under the system's temporary directory.
    pub fn new() -> StateDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "presenced-tools-state-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon in this process on fixed loopback ports and a state directory the caller keeps,
/// stopped the way presenced stops on SIGTERM (`Running::shutdown`: GOAWAY to every link, a
/// last snapshot of every shard) and started again on the same ports and state. The tools'
/// tests cannot start the `presenced` binary: Cargo builds it only for the daemon's own
/// tests.
pub struct Restartable {
    running: Option<Running>,
    settings: presenced::settings::Settings,
    /// The shared heartbeat address (no per-shard ports).
    pub heartbeat: std::net::SocketAddr,
    /// The push link's address.
    pub link: std::net::SocketAddr,
}

impl Restartable {
    /// Starts a daemon with `InProcess`'s settings, `extra`, state in `dir`, and two loopback
    /// ports free right now: one for heartbeats, one for the push link.
    pub fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> Restartable {
        // Both sockets are open at once, so the two ports differ; both close before the
        // daemon binds them.
        let (heartbeat, link) = {
            let bind = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let (a, b) = (bind(), bind());
            (
                a.local_addr().expect("address"),
                b.local_addr().expect("address"),
            )
        };
        let (heartbeat_arg, link_arg) = (heartbeat.to_string(), link.to_string());
        let state = dir.display().to_string();
        let mut sources = Sources::default();
        let base = [
            ("state.dir", state.as_str()),
            ("ingest.listen", heartbeat_arg.as_str()),
            ("ingest.shard_ports", "false"),
            ("link.listen", link_arg.as_str()),
            ("shards.count", "2"),
            ("shards.pin", "false"),
            ("presence.tick", "5ms"),
            ("presence.heartbeat_interval", "300ms"),
            ("presence.grace", "100ms"),
            ("presence.idle_after", "1s"),
        ];
        for (key, value) in base.iter().chain(extra) {
            sources.set(key, value).expect("setting");
        }
        let settings = sources.build(2).expect("settings");
        let mut daemon = Restartable {
            running: None,
            settings,
            heartbeat,
            link,
        };
        daemon.start_again();
        daemon
    }

    /// Stops the daemon as SIGTERM does; its ports and state stay for `start_again`.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().expect("clean shutdown");
        }
    }

    /// Starts the daemon (again) on the same ports and state directory.
    pub fn start_again(&mut self) {
        assert!(self.running.is_none(), "already running");
        let running = daemon::start(self.settings.clone()).expect("daemon starts");
        assert_eq!(running.link, self.link);
        self.running = Some(running);
    }

    /// `--link ADDR` for the tools.
    pub fn link_arg(&self) -> String {
        self.link.to_string()
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown();
        }
    }
}
