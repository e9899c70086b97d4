//! The daemon's counters, read from its STATS reply (JSON: per-shard counters and the push
//! link's), summed over shards; the run reports differences between two readings.

use super::clock::Clock;
use super::{lock, RunError};
use presenced_client::LinkClient;
use serde_json::Value;
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

fn field(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or(0)
}

impl DaemonCounters {
    /// Parses a STATS reply.
    pub fn parse(json: &str) -> Result<DaemonCounters, String> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| format!("daemon stats are not JSON: {e}"))?;
        let shards = v
            .get("shards")
            .and_then(Value::as_array)
            .ok_or("daemon stats have no \"shards\" list")?;
        let mut c = DaemonCounters::default();
        for s in shards {
            c.heartbeats_by_shard.push(field(s, "heartbeats"));
            c.datagrams += field(s, "datagrams");
            c.dropped += s
                .get("dropped")
                .and_then(Value::as_object)
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            c.cross_shard_shed += field(s, "cross_shard_shed");
            c.kernel_dropped += field(s, "kernel_dropped");
            c.routed_out += field(s, "routed_out");
            c.transitions_shed += field(s, "transitions_shed");
            c.refused_user_capacity += field(s, "refused_user_capacity");
            c.refused_device_limit += field(s, "refused_device_limit");
            c.refused_overflow_full += field(s, "refused_overflow_full");
            c.users += field(s, "users");
            c.transitions += field(s, "transitions");
        }
        if let Some(link) = v.get("link") {
            c.events_dropped = field(link, "events_dropped");
            c.lag_signals = field(link, "lag_signals");
            c.shard_shed = field(link, "shard_shed");
        }
        Ok(c)
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
    let json = tokio::time::timeout(Duration::from_secs(10), link.stats())
        .await
        .map_err(|_| RunError::failed("the daemon did not answer STATS within 10 s"))?
        .map_err(|e| RunError::failed(format!("daemon stats: {e}")))?;
    DaemonCounters::parse(&json).map_err(RunError::failed)
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

    #[test]
    fn sums_shards_and_subtracts() {
        let json = r#"{"shards":[{"shard":0,"datagrams":5,"heartbeats":100,"dropped":{"bad_magic":2,"too_short":1},"refused_overflow_full":3},
            {"shard":1,"datagrams":7,"heartbeats":50,"dropped":{}}],
            "link":{"events_dropped":4,"lag_signals":1}}"#;
        let c = DaemonCounters::parse(json).unwrap();
        assert_eq!(c.heartbeats(), 150);
        assert_eq!((c.datagrams, c.dropped, c.refused()), (12, 3, 3));
        assert_eq!((c.events_dropped, c.lag_signals), (4, 1));
        let d = c.since(&DaemonCounters {
            heartbeats_by_shard: vec![40, 50],
            ..DaemonCounters::default()
        });
        assert_eq!(d.heartbeats_by_shard, vec![60, 0]);
        assert!(DaemonCounters::parse("nope").is_err());
    }
}
