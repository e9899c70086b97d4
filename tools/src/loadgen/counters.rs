//! Counters the sender threads publish for the progress line and the summary: plain atomics,
//! added to once per sender loop, not once per entry.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the senders did, all threads together.
#[derive(Default, Debug)]
pub struct SendCounters {
    /// Entries sent (heartbeats and logouts); against a cluster, each once per replica it
    /// went to.
    pub entries: AtomicU64,
    /// User entries sent, each once however many cluster members it went to (against one
    /// daemon, `entries`).
    pub user_entries: AtomicU64,
    /// Datagrams sent.
    pub datagrams: AtomicU64,
    /// Sends that failed (each loses a datagram).
    pub send_errors: AtomicU64,
    /// Heartbeats sent more than `plan::LATE_US` after their scheduled time.
    pub late: AtomicU64,
    /// The largest lateness seen, µs.
    pub max_lag_us: AtomicU64,
    /// Heartbeats so late their device may have passed its deadline (users excused).
    pub excused_beats: AtomicU64,
    /// User logins (first device connecting) sent.
    pub logins: AtomicU64,
    /// User logouts (last device leaving) sent.
    pub logouts: AtomicU64,
    /// Churn events skipped because the picked users still had a transition in flight.
    pub churn_skipped: AtomicU64,
    /// Storms (silences) started.
    pub storms: AtomicU64,
}

/// A thread's counts since it last published.
#[derive(Default, Debug, Clone, Copy)]
pub struct LocalCounts {
    /// See [`SendCounters::late`].
    pub late: u64,
    /// See [`SendCounters::max_lag_us`].
    pub max_lag_us: u64,
    /// See [`SendCounters::excused_beats`].
    pub excused_beats: u64,
    /// See [`SendCounters::logins`].
    pub logins: u64,
    /// See [`SendCounters::logouts`].
    pub logouts: u64,
    /// See [`SendCounters::churn_skipped`].
    pub churn_skipped: u64,
}

impl SendCounters {
    /// Adds a thread's counts and clears them.
    pub fn publish(&self, local: &mut LocalCounts) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.late, local.late);
        add(&self.excused_beats, local.excused_beats);
        add(&self.logins, local.logins);
        add(&self.logouts, local.logouts);
        add(&self.churn_skipped, local.churn_skipped);
        self.max_lag_us
            .fetch_max(local.max_lag_us, Ordering::Relaxed);
        *local = LocalCounts::default();
    }

    /// Reads a counter.
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}
