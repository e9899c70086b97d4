//! The watcher against a real daemon started in this process on loopback: a link whose queue
//! holds one frame (`link.queue_bytes = 1`: an empty queue takes one frame, and no more)
//! loses transitions of a burst and is told LAGGED; the watcher queries those users again and
//! its view ends up as the daemon's.

use presenced::daemon;
use presenced::settings::Sources;
use presenced_client::{
    entry, ConnectOptions, HeartbeatClient, LinkClient, RecordReason, WatchConfig, WatchEvent,
    Watcher,
};
use presenced_wire::link::WireState;
use presenced_wire::State;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Users in the burst: transitions in batches of 32 from two shards, far more EVENTS frames
/// than a queue of one holds while the hub hears back from the link's task.
const USERS: u64 = 20_000;

/// A daemon in this process with its own state directory (removed when dropped).
struct InProcess(Option<daemon::Running>, std::path::PathBuf);

impl InProcess {
    fn start(extra: &[(&str, &str)]) -> InProcess {
        let dir =
            std::env::temp_dir().join(format!("presenced-client-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.display().to_string();
        let mut sources = Sources::default();
        let base = [
            ("state.dir", state.as_str()),
            ("ingest.listen", "127.0.0.1:0"),
            ("link.listen", "127.0.0.1:0"),
            ("shards.count", "2"),
            ("shards.pin", "false"),
        ];
        for (key, value) in base.iter().chain(extra) {
            sources.set(key, value).expect("setting");
        }
        let settings = sources.build(2).expect("settings");
        InProcess(Some(daemon::start(settings).expect("daemon starts")), dir)
    }

    fn running(&self) -> &daemon::Running {
        self.0.as_ref().expect("running")
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

#[tokio::test]
async fn after_lagged_the_watcher_requeries_and_converges() {
    let d = InProcess::start(&[("link.queue_bytes", "1")]);
    let addr = d.running().link;
    let mut watcher = Watcher::connect(
        addr,
        ConnectOptions::local("lag-test"),
        WatchConfig::users(1..=USERS),
    )
    .await
    .expect("connect");
    // Everyone offline at first (unsure: the daemon just started), then watching.
    let mut view: HashMap<u64, (WireState, u64)> = HashMap::new();
    loop {
        match watcher.next().await.expect("an event") {
            WatchEvent::Record { record, reason } => {
                // A fresh daemon is warming: its offlines are unsure.
                assert_eq!(reason, RecordReason::Warming);
                assert_eq!(record.state, WireState::Offline);
                view.insert(record.user, (record.state, record.version));
            }
            WatchEvent::Watching { users, .. } => {
                assert_eq!(users as u64, USERS);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(view.len() as u64, USERS);

    // The burst: every user comes online at once, each to its own shard's port; again every
    // 300 ms (which changes nothing) in case the kernel dropped some of the datagrams.
    let probe = LinkClient::connect(addr, ConnectOptions::local("probe"))
        .await
        .expect("probe link");
    let (shared, shards) = probe.welcome().heartbeat_addrs(addr.ip());
    let mut sender = HeartbeatClient::new(1, 1, shared)
        .unwrap()
        .with_shard_ports(shards);
    let sending = Arc::new(AtomicBool::new(true));
    let gateway = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            while sending.load(Ordering::Relaxed) {
                for user in 1..=USERS {
                    sender.push(entry(user, 1, State::Online, true)).unwrap();
                }
                sender.flush().unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Transitions and re-queried records until the view is everyone online.
    let mut lagged = 0;
    let mut requeried = 0;
    let converge = async {
        while view.values().any(|&(state, _)| state != WireState::Online) {
            match watcher.next().await.expect("an event") {
                WatchEvent::Transition(e) => {
                    let (_, known) = view[&e.user];
                    assert!(e.version > known, "{e:?} after version {known}");
                    view.insert(e.user, (e.state, e.version));
                }
                WatchEvent::Record { record, reason } => {
                    assert_eq!(reason, RecordReason::Lagged);
                    let (_, known) = view[&record.user];
                    assert!(record.version > known, "{record:?} after version {known}");
                    view.insert(record.user, (record.state, record.version));
                    requeried += 1;
                }
                WatchEvent::Lagged { .. } => lagged += 1,
                other => panic!("{other:?}"),
            }
        }
    };
    let converged = tokio::time::timeout(Duration::from_secs(30), converge).await;
    sending.store(false, Ordering::Relaxed);
    gateway.join().unwrap();
    converged.expect("the view converges within 30 s");
    assert!(lagged > 0, "the burst did not make the link lag");
    assert!(requeried > 0, "no user came back through a re-query");

    // The view is the daemon's: same state and version for every user.
    let users: Vec<u64> = (1..=USERS).collect();
    for record in probe.query(&users).await.expect("query") {
        assert_eq!(
            view[&record.user],
            (record.state, record.version),
            "user {}",
            record.user
        );
    }
    let stats = probe.stats().await.expect("stats");
    assert!(stats.link.lag_signals > 0, "{:?}", stats.link);
    assert!(stats.link.events_dropped > 0, "{:?}", stats.link);
    probe.close().await;
    watcher.close().await;
}
