//! Observers that survive a restart of the daemon: [`presenced_client::Watcher`]s (reconnect
//! with jittered backoff, subscribe again, report only records whose version differs) feeding
//! the same [`Tally`] as the plain observers. Every transition they pass on is checked as
//! usual (one the simulation did not cause is spurious); every record a reconnection (or the
//! end of a daemon's warming) reports is a change the simulation did not cause either.

use super::clock::Clock;
use super::observer::{Findings, Hists, Seen, Shared, Tally};
use super::population::Population;
use presenced_client::{ConnectOptions, RecordReason, WatchConfig, WatchEvent, Watcher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long the first subscription may take.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(60);

/// After the run, how long to wait for each report still on its way.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// One restart-surviving observer, owned by its task.
pub struct WatchObserver {
    watcher: Watcher,
    pop: Arc<Population>,
    clock: Clock,
    shared: Arc<Shared>,
    hists: Arc<Mutex<Hists>>,
    tally: Tally,
    reconnects: Vec<Duration>,
    changed_records: u64,
}

impl WatchObserver {
    /// Connects a watcher of the watched users (and the firehose with `firehose`) and takes
    /// their first records; gives up after `give_up_after` without a link.
    pub async fn subscribe(
        addr: SocketAddr,
        options: ConnectOptions,
        pop: Arc<Population>,
        clock: Clock,
        shared: Arc<Shared>,
        firehose: bool,
        give_up_after: Duration,
    ) -> Result<WatchObserver, String> {
        let config = WatchConfig {
            firehose,
            give_up_after: Some(give_up_after),
            ..WatchConfig::users((0..pop.watch).map(|i| pop.id(i)))
        };
        let watcher = Watcher::connect(addr, options, config)
            .await
            .map_err(|e| e.to_string())?;
        let mut o = WatchObserver {
            watcher,
            tally: Tally::new(pop.clone(), shared.clone()),
            pop,
            clock,
            shared,
            hists: Arc::new(Mutex::new(Hists::default())),
            reconnects: Vec::new(),
            changed_records: 0,
        };
        tokio::time::timeout(SUBSCRIBE_WAIT, async {
            loop {
                match o.watcher.next().await {
                    Some(WatchEvent::Watching { .. }) => return Ok(()),
                    Some(WatchEvent::Failed { error } | WatchEvent::GaveUp { error, .. }) => {
                        return Err(error)
                    }
                    Some(event) => o.take(event),
                    None => return Err("the watcher stopped".to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("not subscribed within {SUBSCRIBE_WAIT:?}"))??;
        Ok(o)
    }

    /// Watched users this observer last saw online or idle.
    pub fn stale_users(&self) -> Vec<u64> {
        self.tally.stale_users()
    }

    /// The histograms, for the progress line.
    pub fn hists(&self) -> Arc<Mutex<Hists>> {
        self.hists.clone()
    }

    /// Takes reports until `stop` turns true (then those that follow within
    /// [`DRAIN_WAIT`]) or the watcher stops; returns the findings.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Findings {
        loop {
            let event = tokio::select! {
                event = self.watcher.next() => event,
                _ = stop.wait_for(|&s| s) => break,
            };
            match event {
                Some(event) => self.take(event),
                None => break,
            }
        }
        while let Ok(Some(event)) = tokio::time::timeout(DRAIN_WAIT, self.watcher.next()).await {
            self.take(event);
        }
        self.watcher.close().await;
        let mut f = self.tally.into_findings(0);
        f.reconnects = self.reconnects;
        f.changed_records = self.changed_records;
        f
    }

    fn take(&mut self, event: WatchEvent) {
        let running = self.shared.running.load(Ordering::Acquire);
        match event {
            WatchEvent::Transition(e) => match self.pop.watched_index(e.user) {
                Some(index) => {
                    let now = self.clock.now_us();
                    let hists = self.hists.clone();
                    let mut h = hists.lock().unwrap_or_else(|e| e.into_inner());
                    self.tally
                        .note(Seen::pushed(index, &e), now, running, &mut h);
                }
                None => self.tally.foreign(),
            },
            WatchEvent::Record { record, reason } => {
                let watched = self.tally.resync(&record);
                let unasked = matches!(
                    reason,
                    RecordReason::Reconnected | RecordReason::Warming | RecordReason::Warmed
                );
                if watched && unasked && running {
                    self.changed_records += 1;
                }
            }
            WatchEvent::Lagged { .. } => {
                self.shared.lag_signals.fetch_add(1, Ordering::Relaxed);
            }
            WatchEvent::Reconnected { down, .. } => {
                self.reconnects.push(down);
                self.shared.reconnected.fetch_add(1, Ordering::AcqRel);
            }
            WatchEvent::GaveUp { error, .. } | WatchEvent::Failed { error } => {
                self.tally.closed(error);
            }
            WatchEvent::Watching { .. }
            | WatchEvent::Disconnected { .. }
            | WatchEvent::ConnectFailed { .. } => {}
        }
    }
}
