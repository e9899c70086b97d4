//! A real daemon for the tools' tests, started in this process on ephemeral loopback ports
//! with short timings, and stopped when dropped.

#![allow(dead_code)]

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
