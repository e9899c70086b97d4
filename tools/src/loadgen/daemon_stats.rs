//! The daemon's counters, read from its STATS reply (the typed schema,
//! [`presenced_wire::stats::Stats`]: per-shard counters and the push link's), summed over
//! shards; the run reports differences between two readings.

use super::clock::Clock;
use super::{lock, RunError};
use presenced_client::LinkClient;
use presenced_wire::stats::Stats;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The counters the load generator reports, summed over shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonCounters {
    /// Heartbeat entries applied, per shard.
    pub heartbeats_by_shard: Vec<u64>,
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams dropped as invalid (every decode reason).
    pub dropped: u64,
    /// Entries shed because another shard's inbox was full.
    pub cross_shard_shed: u64,
    /// Datagrams the kernel dropped at the daemon's full receive buffers.
    pub kernel_dropped: u64,
    /// Entries sent to the owning shard by another.
    pub routed_out: u64,
    /// Transitions shed because the outbox to the push link was full.
    pub transitions_shed: u64,
    /// New users refused: table full.
    pub refused_user_capacity: u64,
    /// New devices refused: per-user limit.
    pub refused_device_limit: u64,
    /// Second devices refused: no overflow block free.
    pub refused_overflow_full: u64,
    /// Users in the daemon's tables.
    pub users: u64,
    /// Transitions the shards emitted.
    pub transitions: u64,
    /// Events the push link dropped for slow gateways.
    pub events_dropped: u64,
    /// LAGGED signals the push link sent.
    pub lag_signals: u64,
    /// Shard batches the hub found shed.
    pub shard_shed: u64,
}

impl DaemonCounters {
    /// The counters of a STATS reply, summed over shards.
    pub fn from_stats(stats: &Stats) -> DaemonCounters {
        let mut c = DaemonCounters::default();
        for s in &stats.shards {
            c.heartbeats_by_shard.push(s.core.heartbeats);
            c.datagrams += s.datagrams;
            c.dropped += s.dropped_total();
            c.cross_shard_shed += s.cross_shard_shed;
            c.kernel_dropped += s.kernel_dropped;
            c.routed_out += s.routed_out;
            c.transitions_shed += s.transitions_shed;
            c.refused_user_capacity += s.core.refused_user_capacity;
            c.refused_device_limit += s.core.refused_device_limit;
            c.refused_overflow_full += s.core.refused_overflow_full;
            c.users += s.core.users;
            c.transitions += s.core.transitions;
        }
        c.events_dropped = stats.link.events_dropped;
        c.lag_signals = stats.link.lag_signals;
        c.shard_shed = stats.link.shard_shed;
        c
    }

    /// Parses a STATS reply's JSON; a field missing or renamed is an error, never a 0.
    pub fn parse(json: &str) -> Result<DaemonCounters, String> {
        Stats::from_json(json)
            .map(|stats| DaemonCounters::from_stats(&stats))
            .map_err(|e| format!("daemon stats do not match the stats schema: {e}"))
    }

    /// Heartbeat entries applied, all shards.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats_by_shard.iter().sum()
    }

    /// `self − earlier`, counter by counter (saturating; `users` is kept as a level).
    pub fn since(&self, earlier: &DaemonCounters) -> DaemonCounters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        DaemonCounters {
            heartbeats_by_shard: self
                .heartbeats_by_shard
                .iter()
                .enumerate()
                .map(|(i, &h)| d(h, earlier.heartbeats_by_shard.get(i).copied().unwrap_or(0)))
                .collect(),
            datagrams: d(self.datagrams, earlier.datagrams),
            dropped: d(self.dropped, earlier.dropped),
            cross_shard_shed: d(self.cross_shard_shed, earlier.cross_shard_shed),
            kernel_dropped: d(self.kernel_dropped, earlier.kernel_dropped),
            routed_out: d(self.routed_out, earlier.routed_out),
            transitions_shed: d(self.transitions_shed, earlier.transitions_shed),
            refused_user_capacity: d(self.refused_user_capacity, earlier.refused_user_capacity),
            refused_device_limit: d(self.refused_device_limit, earlier.refused_device_limit),
            refused_overflow_full: d(self.refused_overflow_full, earlier.refused_overflow_full),
            users: self.users,
            transitions: d(self.transitions, earlier.transitions),
            events_dropped: d(self.events_dropped, earlier.events_dropped),
            lag_signals: d(self.lag_signals, earlier.lag_signals),
            shard_shed: d(self.shard_shed, earlier.shard_shed),
        }
    }

    /// `self + other`, counter by counter, shard by shard index (the counters of several
    /// daemons together; `users` too).
    pub fn plus(&self, other: &DaemonCounters) -> DaemonCounters {
        let n = self
            .heartbeats_by_shard
            .len()
            .max(other.heartbeats_by_shard.len());
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        DaemonCounters {
            heartbeats_by_shard: (0..n)
                .map(|i| at(&self.heartbeats_by_shard, i) + at(&other.heartbeats_by_shard, i))
                .collect(),
            datagrams: self.datagrams + other.datagrams,
            dropped: self.dropped + other.dropped,
            cross_shard_shed: self.cross_shard_shed + other.cross_shard_shed,
            kernel_dropped: self.kernel_dropped + other.kernel_dropped,
            routed_out: self.routed_out + other.routed_out,
            transitions_shed: self.transitions_shed + other.transitions_shed,
            refused_user_capacity: self.refused_user_capacity + other.refused_user_capacity,
            refused_device_limit: self.refused_device_limit + other.refused_device_limit,
            refused_overflow_full: self.refused_overflow_full + other.refused_overflow_full,
            users: self.users + other.users,
            transitions: self.transitions + other.transitions,
            events_dropped: self.events_dropped + other.events_dropped,
            lag_signals: self.lag_signals + other.lag_signals,
            shard_shed: self.shard_shed + other.shard_shed,
        }
    }

    /// Devices or users the daemon refused (the simulation's expectations do not hold for
    /// them).
    pub fn refused(&self) -> u64 {
        self.refused_user_capacity + self.refused_device_limit + self.refused_overflow_full
    }
}

/// Latest daemon reading: when (µs on the run's clock) and what.
pub type Reading = Arc<Mutex<Vec<(u64, DaemonCounters)>>>;

/// Asks the daemon for its counters (at most 10 s).
pub async fn read_stats(link: &LinkClient) -> Result<DaemonCounters, RunError> {
    let stats = tokio::time::timeout(Duration::from_secs(10), link.stats())
        .await
        .map_err(|_| RunError::failed("the daemon did not answer STATS within 10 s"))?
        .map_err(|e| RunError::failed(format!("daemon stats: {e}")))?;
    Ok(DaemonCounters::from_stats(&stats))
}

/// Reads the daemon's counters once a second, keeping the last two readings in `readings`.
pub async fn poll_stats(link: Arc<LinkClient>, readings: Reading, clock: Clock) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Ok(c) = read_stats(&link).await {
            let mut r = lock(&readings);
            r.push((clock.now_us(), c));
            let n = r.len();
            if n > 2 {
                r.drain(..n - 2);
            }
        }
    }
}

/// Reads the daemon's counters until the heartbeats applied stop growing (its socket buffers
/// are drained), for at most `window`.
pub async fn quiesce(link: &LinkClient, window: Duration) -> Result<DaemonCounters, RunError> {
    let until = tokio::time::Instant::now() + window;
    let mut last = read_stats(link).await?;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(last);
        }
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        let now = read_stats(link).await?;
        if now.heartbeats() == last.heartbeats() && now.datagrams == last.datagrams {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::DaemonCounters;
    use presenced_wire::stats::{ShardStats, Stats};

    fn two_shards() -> Stats {
        let mut stats = Stats::default();
        let mut s0 = ShardStats {
            shard: 0,
            datagrams: 5,
            ..ShardStats::default()
        };
        s0.core.heartbeats = 100;
        s0.core.refused_overflow_full = 3;
        s0.dropped = [("bad_magic", 2), ("too_short", 1)]
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        let mut s1 = ShardStats {
            shard: 1,
            datagrams: 7,
            ..ShardStats::default()
        };
        s1.core.heartbeats = 50;
        stats.shards = vec![s0, s1];
        stats.link.events_dropped = 4;
        stats.link.lag_signals = 1;
        stats
    }

    #[test]
    fn sums_shards_and_subtracts() {
        let json = two_shards().to_json().unwrap();
        let c = DaemonCounters::parse(&json).unwrap();
        assert_eq!(c, DaemonCounters::from_stats(&two_shards()));
        assert_eq!(c.heartbeats(), 150);
        assert_eq!((c.datagrams, c.dropped, c.refused()), (12, 3, 3));
        assert_eq!((c.events_dropped, c.lag_signals), (4, 1));
        let d = c.since(&DaemonCounters {
            heartbeats_by_shard: vec![40, 50],
            ..DaemonCounters::default()
        });
        assert_eq!(d.heartbeats_by_shard, vec![60, 0]);
        let two = c.plus(&d);
        assert_eq!(two.heartbeats_by_shard, vec![160, 50]);
        assert_eq!(two.datagrams, 2 * c.datagrams);
        assert!(DaemonCounters::parse("nope").is_err());
    }

    #[test]
    fn a_missing_or_renamed_field_is_an_error_not_zero() {
        let json = two_shards().to_json().unwrap();
        let missing = json.replace(r#""lag_signals":1,"#, "");
        assert_ne!(missing, json);
        let e = DaemonCounters::parse(&missing).unwrap_err();
        assert!(e.contains("lag_signals"), "{e}");
        let renamed = json.replace(r#""datagrams":"#, r#""datagrams_received":"#);
        assert_ne!(renamed, json);
        let e = DaemonCounters::parse(&renamed).unwrap_err();
        assert!(e.contains("datagrams"), "{e}");
        // The old hand-written shape (no auth, shards without most counters) is refused too.
        let partial = r#"{"shards":[{"shard":0,"heartbeats":5,"dropped":{}}],"link":{}}"#;
        assert!(DaemonCounters::parse(partial).is_err());
    }
}
