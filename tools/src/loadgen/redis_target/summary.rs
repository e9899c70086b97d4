//! What a Redis run reports: a table, or one JSON object whose fields follow presenced's where
//! they mean the same (`daemon.accepted_per_s`, `transitions`, `latency_us`,
//! `offline_lateness_us`, `violations`, `restart`).

use crate::loadgen::report::{grouped, latency_line, ms, si, Checks, Percentiles, Sent, Setup};
use crate::loadgen::restart::RestartReport;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// What the generator's connections went through: breaks (a restarted server) and what they
/// cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Connections {
    /// Commands (SET, GETDEL, PUBLISH) that got no reply because their gateway's connection
    /// was down or broke: beats that did not reach Redis.
    pub unsent: u64,
    /// Gateway connections opened again after a break.
    pub gateway_reconnects: u64,
    /// The longest a gateway's connection was down, µs.
    pub gateway_down_max_us: u64,
    /// Observer connections subscribed again after a break.
    pub observer_reconnects: u64,
}

/// What a Redis run reports.
#[derive(Clone, Debug, Default)]
pub struct RedisSummary {
    /// The server, as given.
    pub target: String,
    /// The population, pacing and observers, as presenced's runs report them (the shard
    /// fields do not apply and are not reported).
    pub setup: Setup,
    /// Key TTL, µs.
    pub ttl_us: u64,
    /// What the senders did over the send window (commands as entries, pipelines as
    /// datagrams, device logins and logouts).
    pub sent: Sent,
    /// Replies counted back in the window.
    pub accepted: u64,
    /// `PUBLISH` commands sent (logins and logouts found in replies), the whole run.
    pub publishes: u64,
    /// `used_memory` before the load, bytes.
    pub memory_before: u64,
    /// `used_memory` with every device online, bytes.
    pub memory_online: u64,
    /// Keys with every device online (`DBSIZE`).
    pub keys_online: u64,
    /// Expiry events of keys the simulation had let go.
    pub expired: u64,
    /// Devices expected to expire (storm).
    pub expected_expiries: u64,
    /// Expiry events of keys this run did not set (an earlier run's).
    pub foreign_expiries: u64,
    /// Expiry events of keys the simulation was keeping alive: spurious offlines.
    pub spurious_expiries: u64,
    /// Spurious expiries of devices whose beats the generator sent too late (not violations).
    pub excused_expiries: u64,
    /// What the observers saw against what the simulation caused.
    pub checks: Checks,
    /// Breaks of the generator's connections and what they cost.
    pub connections: Connections,
    /// The restart (`--restart-cmd`), if there was one.
    pub restart: Option<RestartReport>,
    /// When transitions started being timed (seconds into the run), if they did.
    pub timed_from_s: Option<f64>,
    /// Transition latency: send of the pipeline causing a login or logout → its publication's
    /// arrival at an observer.
    pub latency: Percentiles,
    /// Offline-detection lateness (expiry events).
    pub lateness: Percentiles,
}

impl RedisSummary {
    /// Replies per second.
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.sent.seconds.max(1e-9)
    }

    /// Bytes of `used_memory` per online user.
    pub fn bytes_per_user(&self) -> f64 {
        self.memory_online.saturating_sub(self.memory_before) as f64
            / f64::from(self.setup.users.max(1))
    }

    /// Missing expiries (storm): devices that never expired within the wait.
    pub fn missing(&self) -> u64 {
        self.expected_expiries.saturating_sub(self.expired)
    }

    /// Violations: the observers' (missing, spurious, links lost), missing expiries,
    /// spurious expiries and the restart's (false offlines, observers not back).
    pub fn violations(&self) -> u64 {
        self.checks.violations()
            + self.missing()
            + self.spurious_expiries
            + self.restart.as_ref().map_or(0, RestartReport::violations)
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> Value {
        let t = &self.sent;
        let c = &self.connections;
        json!({
            "target": self.target,
            "scenario": self.setup.scenario,
            "setup": {
                "users": self.setup.users, "devices": self.setup.devices, "gateways": self.setup.gateways,
                "threads": self.setup.threads, "max": self.setup.period_us.is_none(),
                "period_us": self.setup.period_us, "gap_min_us": self.setup.gaps_us.0,
                "gap_max_us": self.setup.gaps_us.1, "ttl_us": self.ttl_us,
                "churn_per_s": self.setup.churn_per_s, "observers": self.setup.observers,
                "watch": self.setup.watch, "firehose": self.setup.firehose,
            },
            "sent": {
                "seconds": t.seconds, "entries": t.entries, "pipelines": t.datagrams,
                "per_s": t.entries as f64 / t.seconds.max(1e-9), "late": t.late,
                "max_lag_us": t.max_lag_us, "excused_beats": t.excused_beats,
                "logins": t.logins, "logouts": t.logouts, "churn_skipped": t.churn_skipped,
                "publishes": self.publishes,
                "send_errors": t.send_errors, "last_error": t.last_error,
                "unsent": c.unsent,
            },
            "connections": {
                "gateway_reconnects": c.gateway_reconnects,
                "gateway_down_max_us": c.gateway_down_max_us,
                "observer_reconnects": c.observer_reconnects,
            },
            "daemon": {
                "heartbeats": self.accepted, "accepted_per_s": self.accepted_per_s(),
                "used_memory_before": self.memory_before,
                "used_memory_online": self.memory_online, "keys_online": self.keys_online,
                "bytes_per_user": self.bytes_per_user(),
            },
            "expiries": {
                "expected": self.expected_expiries, "observed": self.expired,
                "missing": self.missing(), "foreign": self.foreign_expiries,
                "spurious": self.spurious_expiries, "excused": self.excused_expiries,
            },
            "transitions": self.checks.to_json(),
            "timed_from_s": self.timed_from_s,
            "latency_us": self.latency.to_json(),
            "offline_lateness_us": self.lateness.to_json(),
            "restart": self.restart.as_ref().map(RestartReport::to_json),
            "violations": self.violations(),
            "ok": self.violations() == 0,
        })
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let t = &self.sent;
        let mut rows = vec![
            (
                "target",
                format!("{} ({})", self.target, self.setup.scenario),
            ),
            (
                "setup",
                format!(
                    "{} users, {} devices, {} gateways on {} threads; key TTL {}",
                    grouped(u64::from(self.setup.users)),
                    grouped(self.setup.devices),
                    self.setup.gateways,
                    self.setup.threads,
                    ms(self.ttl_us)
                ),
            ),
            (
                "pacing",
                match self.setup.period_us {
                    Some(p) => format!(
                        "each device every {} (gaps {} to {})",
                        ms(p),
                        ms(self.setup.gaps_us.0),
                        ms(self.setup.gaps_us.1)
                    ),
                    None => "--max: as fast as possible".into(),
                },
            ),
        ];
        if self.setup.churn_per_s > 0.0 {
            rows.push((
                "churn",
                format!("{}/s device logins + logouts", si(self.setup.churn_per_s)),
            ));
        }
        rows.push((
            "observers",
            format!(
                "{} × {} watched users ({})",
                self.setup.observers,
                grouped(u64::from(self.setup.watch)),
                if self.setup.firehose {
                    "PSUBSCRIBE presence:*"
                } else {
                    "SUBSCRIBE per user"
                }
            ),
        ));
        rows.push((
            "sent",
            format!(
                "{} commands in {:.1} s = {}/s, {} pipelines, {} late (max lag {}), {} errors{}",
                grouped(t.entries),
                t.seconds,
                si(t.entries as f64 / t.seconds.max(1e-9)),
                grouped(t.datagrams),
                grouped(t.late),
                ms(t.max_lag_us),
                t.send_errors,
                t.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (last: {e})"))
            ),
        ));
        let c = &self.connections;
        if c.unsent + c.gateway_reconnects + c.observer_reconnects > 0 {
            rows.push((
                "connections",
                format!(
                    "{} commands unsent (connection down); gateways reconnected {} times \
                     (down at most {}), observers {} times",
                    grouped(c.unsent),
                    grouped(c.gateway_reconnects),
                    ms(c.gateway_down_max_us),
                    grouped(c.observer_reconnects)
                ),
            ));
        }
        rows.push((
            "accepted",
            format!(
                "{} replies = {}/s",
                grouped(self.accepted),
                si(self.accepted_per_s())
            ),
        ));
        rows.push((
            "caused",
            format!(
                "{} device logins, {} logouts, {} publishes, {} churn picks skipped",
                grouped(t.logins),
                grouped(t.logouts),
                grouped(self.publishes),
                grouped(t.churn_skipped)
            ),
        ));
        rows.push((
            "memory",
            format!(
                "used_memory {} → {} bytes with {} keys: {:.1} bytes per user",
                grouped(self.memory_before),
                grouped(self.memory_online),
                grouped(self.keys_online),
                self.bytes_per_user()
            ),
        ));
        rows.push(("transitions", self.checks.transitions_line()));
        if !self.checks.links_closed.is_empty() {
            rows.push(("closed", self.checks.links_closed.join("; ")));
        }
        rows.push(("latency", latency_line(&self.latency, self.timed_from_s)));
        rows.push((
            "expiries",
            format!(
                "expected {}, observed {}, missing {}, spurious {}, excused {}, foreign {}",
                grouped(self.expected_expiries),
                grouped(self.expired),
                grouped(self.missing()),
                grouped(self.spurious_expiries),
                grouped(self.excused_expiries),
                grouped(self.foreign_expiries)
            ),
        ));
        rows.push(("lateness", self.lateness.line()));
        if let Some(r) = &self.restart {
            rows.extend(r.rows());
        }
        let v = self.violations();
        rows.push((
            "result",
            if v == 0 {
                "OK: no violation".to_string()
            } else {
                format!("FAILED: {} violations", grouped(v))
            },
        ));
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:>11}  {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::RedisSummary;

    #[test]
    fn table_and_json_agree_on_the_verdict() {
        let mut s = RedisSummary::default();
        assert!(s.table().contains("OK"));
        assert_eq!(s.to_json()["ok"], true);
        s.spurious_expiries = 1;
        s.checks.missing = 2;
        assert!(s.table().contains("FAILED: 3 violations"));
        assert_eq!(s.to_json()["violations"], 3);
    }
}
