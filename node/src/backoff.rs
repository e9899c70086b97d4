//! Back-off under load (SPEC.md § P6.13), sans-IO: whether one shard runs hot, and the
//! heartbeat interval it asks gateways for.
//!
//! A shard that cannot keep up with its heartbeats loses some at random (the kernel drops
//! datagrams from a full receive buffer, a full inbox sheds another shard's entries), and a
//! device whose heartbeats are lost long enough goes offline while it is alive. Asking the
//! gateways for a longer interval, with deadlines extended to match (the core's deadline
//! extension), trades freshness for correctness: fewer heartbeats to take, none of them needed
//! sooner than promised.
//!
//! **Hot** is any sign of falling behind since the last round: datagrams the kernel dropped,
//! entries shed on their way to this shard's peers, or [`BACKLOG_FULL_RECEIVES`] receive calls
//! in a row that filled their batch (the socket had more waiting: a backlog, before any drop).
//! A hot round while at the normal interval asks for `interval` (`entered` counts these) at
//! once, in one step: heartbeats lost while the load is still high are lost at random, and the
//! sooner deadlines are extended and gateways beat less often, the fewer devices lose more
//! beats in a row than the deadline allows. After `calm` without a hot round the normal
//! interval is asked again (and the shard backs off again if that brings it back to hot).
//! The hub asks every gateway for the longest interval any shard asks, and every shard
//! stretches its deadlines in proportion (SPEC.md § P6.13).

/// Receive calls in a row that fill their batch before the shard counts as hot: the socket
/// keeps more waiting than one call takes, round after round.
pub const BACKLOG_FULL_RECEIVES: u32 = 64;

/// The back-off settings of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Whether the shard asks for longer intervals at all (`ingest.backoff`).
    pub enabled: bool,
    /// The normal heartbeat interval, ms (`presence.heartbeat_interval`).
    pub normal_ms: u64,
    /// The interval asked while backing off, ms (`ingest.backoff_interval`; at least
    /// `normal_ms`).
    pub interval_ms: u64,
    /// How long without a hot round before the normal interval is asked again, ms
    /// (`ingest.backoff_calm`).
    pub calm_ms: u64,
}

impl BackoffConfig {
    /// Never backing off (`ingest.backoff = false`): for tests and tools that do not judge
    /// load.
    pub const fn disabled() -> BackoffConfig {
        BackoffConfig {
            enabled: false,
            normal_ms: 1,
            interval_ms: 1,
            calm_ms: 1,
        }
    }
}

/// One shard's judge of pressure (see the module docs).
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    /// The interval asked now, ms (`normal_ms` when not backing off).
    asked_ms: u64,
    /// When the last hot round was, mono ms.
    hot_at_ms: u64,
    /// A sign of falling behind since the last round.
    hot: bool,
    /// Receive calls in a row that filled their batch.
    full_in_a_row: u32,
    /// Times the shard went from the normal interval to a longer one.
    entered: u64,
}

impl Backoff {
    /// A judge at the normal interval.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            asked_ms: config.normal_ms,
            hot_at_ms: 0,
            hot: false,
            full_in_a_row: 0,
            entered: 0,
        }
    }

    /// One receive call: whether it filled its batch, and datagrams the kernel dropped since
    /// the previous one. Drops are a sign of load only with a backlog (a full call): the
    /// sockets' filter (`ingest.allow`, blocked sources) drops a flood's datagrams into the
    /// same count while the shard keeps up.
    pub fn handle_receive(&mut self, full: bool, kernel_dropped: u64) {
        self.full_in_a_row = if full { self.full_in_a_row + 1 } else { 0 };
        self.hot |= (kernel_dropped > 0 && full) || self.full_in_a_row >= BACKLOG_FULL_RECEIVES;
    }

    /// Entries shed on their way to another shard (its inbox was full).
    pub fn handle_shed(&mut self) {
        self.hot = true;
    }

    /// Ends a round at monotonic `now_ms`; returns the newly asked interval, ms, when it
    /// changed.
    pub fn handle_round(&mut self, now_ms: u64) -> Option<u64> {
        let c = self.config;
        let before = self.asked_ms;
        if std::mem::take(&mut self.hot) && c.enabled {
            self.hot_at_ms = now_ms;
            if self.asked_ms == c.normal_ms && c.interval_ms > c.normal_ms {
                self.entered += 1;
                self.asked_ms = c.interval_ms;
            }
        } else if self.asked_ms > c.normal_ms && now_ms >= self.hot_at_ms + c.calm_ms {
            self.asked_ms = c.normal_ms;
        }
        (self.asked_ms != before).then_some(self.asked_ms)
    }

    /// The interval asked now, ms.
    pub fn asked_ms(&self) -> u64 {
        self.asked_ms
    }

    /// Whether a longer interval than the normal one is asked.
    pub fn is_active(&self) -> bool {
        self.asked_ms > self.config.normal_ms
    }

    /// Times the shard went from the normal interval to a longer one.
    pub fn entered(&self) -> u64 {
        self.entered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge() -> Backoff {
        Backoff::new(BackoffConfig {
            enabled: true,
            normal_ms: 1000,
            interval_ms: 4000,
            calm_ms: 5000,
        })
    }

    #[test]
    fn drops_raise_the_interval_and_calm_lowers_it() {
        let mut b = judge();
        assert_eq!(b.handle_round(0), None);
        // Drops with nothing waiting are the sockets' filter at work, not load.
        b.handle_receive(false, 3);
        assert_eq!(b.handle_round(5), None);
        b.handle_receive(true, 3);
        assert_eq!(b.handle_round(10), Some(4000));
        assert!(b.is_active());
        assert_eq!(b.entered(), 1);
        // Still hot: nothing changes, the calm period starts again.
        b.handle_receive(true, 1);
        assert_eq!(b.handle_round(7000), None);
        assert_eq!(b.asked_ms(), 4000);
        // Calm for 5 s after the last hot round: back to normal, once.
        assert_eq!(b.handle_round(11_999), None);
        assert_eq!(b.handle_round(12_000), Some(1000));
        assert_eq!(b.handle_round(20_000), None);
        assert!(!b.is_active());
        b.handle_receive(true, 1);
        assert_eq!(b.handle_round(20_001), Some(4000));
        assert_eq!(b.entered(), 2);
    }

    #[test]
    fn a_backlog_is_hot_before_any_drop() {
        let mut b = judge();
        for _ in 0..BACKLOG_FULL_RECEIVES - 1 {
            b.handle_receive(true, 0);
        }
        b.handle_receive(false, 0);
        for _ in 0..BACKLOG_FULL_RECEIVES - 1 {
            b.handle_receive(true, 0);
        }
        assert_eq!(b.handle_round(0), None, "never that many in a row");
        b.handle_receive(true, 0);
        assert_eq!(b.handle_round(1), Some(4000));
        let mut b = judge();
        b.handle_shed();
        assert_eq!(b.handle_round(1), Some(4000));
    }

    #[test]
    fn disabled_never_asks() {
        let mut b = Backoff::new(BackoffConfig {
            enabled: false,
            ..judge().config
        });
        b.handle_receive(true, 1000);
        b.handle_shed();
        assert_eq!(b.handle_round(1), None);
        assert!(!b.is_active());
    }
}
