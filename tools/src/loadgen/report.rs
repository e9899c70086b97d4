//! What a run reports: the summary (a table for people, one JSON object with `--json`) and the
//! progress line printed once a second on stderr.

use super::cluster::ClusterReport;
use super::daemon_stats::DaemonCounters;
use super::restart::RestartReport;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// The percentiles as JSON (µs).
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "p999": self.p999, "max": self.max, "mean": (self.mean * 10.0).round() / 10.0,
        })
    }

    /// The percentiles on one line, in ms.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "none".into();
        }
        format!(
            "n {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            grouped(self.count),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// The run's setup, as reported.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Scenario name.
    pub scenario: String,
    /// Users.
    pub users: u32,
    /// Devices in total.
    pub devices: u64,
    /// Mean devices per user asked for.
    pub devices_mean: f64,
    /// Gateways.
    pub gateways: u32,
    /// Sender threads.
    pub threads: u32,
    /// The daemon's shards.
    pub shards: u16,
    /// Shard-aware routing.
    pub shard_aware: bool,
    /// `max`, or the per-device period in µs.
    pub period_us: Option<u64>,
    /// Jitter range of the gaps, µs.
    pub gaps_us: (u64, u64),
    /// Planned heartbeats per second (None with `--max`).
    pub planned_rate: Option<f64>,
    /// Churn per second.
    pub churn_per_s: f64,
    /// Observers.
    pub observers: u32,
    /// Watched users.
    pub watch: u32,
    /// Firehose.
    pub firehose: bool,
    /// The daemon's timeout, µs.
    pub timeout_us: u64,
}

/// What the senders did.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// Send window, seconds.
    pub seconds: f64,
    /// Entries sent in the window (heartbeats, logins, logouts).
    pub entries: u64,
    /// Datagrams sent in the window.
    pub datagrams: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Heartbeats sent more than 10 ms late.
    pub late: u64,
    /// Largest lateness, µs.
    pub max_lag_us: u64,
    /// Beats so late their user's transitions are excused.
    pub excused_beats: u64,
    /// User logins.
    pub logins: u64,
    /// User logouts (not counting the final sweep).
    pub logouts: u64,
    /// Churn events skipped (picked users busy).
    pub churn_skipped: u64,
    /// Storms.
    pub storms: u64,
    /// The longest heartbeat interval the daemon asked for during the run (PACE: back-off
    /// under load), ms; 0: it never asked.
    pub paced_max_ms: u64,
    /// The last send error, if any.
    pub last_error: Option<String>,
}

/// What the checks found.
#[derive(Clone, Debug, Default)]
pub struct Checks {
    /// Transitions the simulation caused × observers.
    pub expected: u64,
    /// Transitions observed (watched users, all observers).
    pub observed: u64,
    /// Expected but never seen.
    pub missing: u64,
    /// Expected but never caused at the daemon: the login's datagram was lost (see `check`).
    pub lost: u64,
    /// Seen without a cause.
    pub spurious: u64,
    /// Seen without a cause, for users the generator served too late (not violations).
    pub excused: u64,
    /// Versions not above the previous one.
    pub version_regressions: u64,
    /// Transitions not continuing from the state last seen.
    pub gaps: u64,
    /// Transitions to idle.
    pub idle: u64,
    /// Timeouts seen before the deadline from the last send (a lost beat).
    pub early_offline: u64,
    /// Logouts that ended in a timeout instead (the logout was lost; not timed).
    pub logout_timed_out: u64,
    /// Transitions of users not watched (firehose).
    pub foreign: u64,
    /// LAGGED signals.
    pub lag_signals: u64,
    /// Events the client library dropped.
    pub client_dropped: u64,
    /// Links that ended by themselves, with why.
    pub links_closed: Vec<String>,
}

impl Checks {
    /// The expected and observed counts, on one line.
    pub fn transitions_line(&self) -> String {
        format!(
            "expected {}, observed {}: missing {}, lost {}, spurious {}, excused {}",
            grouped(self.expected),
            grouped(self.observed),
            grouped(self.missing),
            grouped(self.lost),
            grouped(self.spurious),
            grouped(self.excused)
        )
    }

    /// The checks as JSON (the summary's `transitions`).
    pub fn to_json(&self) -> Value {
        json!({
            "expected": self.expected, "observed": self.observed, "missing": self.missing,
            "lost": self.lost,
            "spurious": self.spurious, "excused": self.excused,
            "version_regressions": self.version_regressions, "gaps": self.gaps,
            "idle": self.idle,
            "early_offline": self.early_offline, "logout_timed_out": self.logout_timed_out,
            "foreign": self.foreign,
            "lag_signals": self.lag_signals, "client_dropped": self.client_dropped,
            "links_closed": self.links_closed,
        })
    }

    /// Violations: missing, spurious, version regressions, gaps, idle transitions, links lost.
    pub fn violations(&self) -> u64 {
        self.missing
            + self.spurious
            + self.version_regressions
            + self.gaps
            + self.idle
            + self.links_closed.len() as u64
    }
}

/// Everything a run reports.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Setup.
    pub setup: Setup,
    /// Senders.
    pub sent: Sent,
    /// The daemon's counters over the send window (and the drain that follows).
    pub daemon: DaemonCounters,
    /// The daemon's refusals and push-link losses over the whole run.
    pub daemon_after: DaemonCounters,
    /// Checks.
    pub checks: Checks,
    /// When transitions started being timed (seconds into the run), if they did.
    pub timed_from_s: Option<f64>,
    /// Transition latency.
    pub latency: Percentiles,
    /// Offline detection lateness.
    pub lateness: Percentiles,
    /// Things the reader should know (refusals, excused users, interrupted run).
    pub warnings: Vec<String>,
    /// The restart (`--restart-cmd`), if there was one.
    pub restart: Option<RestartReport>,
    /// The cluster's part (`--cluster`).
    pub cluster: Option<ClusterReport>,
}

/// The latency row: the percentiles, and when timing started (`None`: it never did).
pub fn latency_line(latency: &Percentiles, timed_from_s: Option<f64>) -> String {
    match timed_from_s {
        Some(t) if t > 0.0 => format!("{} (timed from {t:.1} s)", latency.line()),
        Some(_) => latency.line(),
        None => "none (the warm-up never ended)".into(),
    }
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with a k/M suffix: `1.23M`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Microseconds as milliseconds: `1.25 ms`.
pub fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Summary {
    /// Violations found.
    pub fn violations(&self) -> u64 {
        self.checks.violations() + self.restart.as_ref().map_or(0, RestartReport::violations)
    }

    /// Heartbeats per second offered.
    pub fn offered_per_s(&self) -> f64 {
        self.sent.entries as f64 / self.sent.seconds.max(1e-9)
    }

    /// Heartbeats per second the daemon applied.
    pub fn accepted_per_s(&self) -> f64 {
        self.daemon.heartbeats() as f64 / self.sent.seconds.max(1e-9)
    }

    /// Datagrams lost: sent but not received by the daemon, as a fraction.
    pub fn datagram_loss(&self) -> f64 {
        ratio(
            self.sent.datagrams.saturating_sub(self.daemon.datagrams),
            self.sent.datagrams,
        )
    }

    /// Entries lost: sent but not applied, as a fraction.
    pub fn entry_loss(&self) -> f64 {
        ratio(
            self.sent.entries.saturating_sub(self.daemon.heartbeats()),
            self.sent.entries,
        )
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut rows: Vec<(&str, String)> = Vec::new();
        rows.push((
            "setup",
            format!(
                "{} users, {} devices (mean {:.2}), {} gateways on {} threads; {} shards, {}",
                grouped(u64::from(s.users)),
                grouped(s.devices),
                s.devices_mean,
                s.gateways,
                s.threads,
                s.shards,
                if s.shard_aware {
                    "shard-aware"
                } else {
                    "shared port"
                }
            ),
        ));
        rows.push((
            "pacing",
            match (s.period_us, s.planned_rate) {
                (Some(p), Some(rate)) => format!(
                    "each device every {} (gaps {} to {}): {}/s planned",
                    ms(p),
                    ms(s.gaps_us.0),
                    ms(s.gaps_us.1),
                    si(rate)
                ),
                _ => "--max: as fast as possible".into(),
            },
        ));
        if s.churn_per_s > 0.0 {
            rows.push(("churn", format!("{}/s logins + logouts", si(s.churn_per_s))));
        }
        rows.push((
            "observers",
            format!(
                "{} × {} watched users{}",
                s.observers,
                grouped(u64::from(s.watch)),
                if s.firehose { " (firehose)" } else { "" }
            ),
        ));
        let t = &self.sent;
        let late = if s.period_us.is_some() {
            format!("{} late (max lag {})", grouped(t.late), ms(t.max_lag_us))
        } else {
            "no schedule".into()
        };
        rows.push((
            "sent",
            format!(
                "{} entries in {:.1} s = {}/s offered, {} datagrams; {late}, {} send errors",
                grouped(t.entries),
                t.seconds,
                si(self.offered_per_s()),
                grouped(t.datagrams),
                grouped(t.send_errors)
            ),
        ));
        let d = &self.daemon;
        let shards: Vec<String> = d.heartbeats_by_shard.iter().map(|&h| grouped(h)).collect();
        rows.push((
            "accepted",
            format!(
                "{} heartbeats = {}/s (by shard: {})",
                grouped(d.heartbeats()),
                si(self.accepted_per_s()),
                shards.join(" / ")
            ),
        ));
        rows.push((
            "loss",
            format!(
                "datagrams {:.3} %, entries {:.3} %; kernel-dropped {}, invalid {}, cross-shard shed {}",
                100.0 * self.datagram_loss(),
                100.0 * self.entry_loss(),
                grouped(d.kernel_dropped),
                grouped(d.dropped),
                grouped(d.cross_shard_shed)
            ),
        ));
        if t.logins + t.logouts + t.storms > 0 {
            rows.push((
                "caused",
                format!(
                    "{} logins, {} logouts, {} storms, {} churn picks skipped",
                    grouped(t.logins),
                    grouped(t.logouts),
                    t.storms,
                    grouped(t.churn_skipped)
                ),
            ));
        }
        let c = &self.checks;
        rows.push(("transitions", c.transitions_line()));
        rows.push((
            "order",
            format!(
                "version regressions {}, gaps {}, idle {}, lag signals {}, early offlines {}, \
                 logouts lost (timed out) {}",
                c.version_regressions,
                c.gaps,
                c.idle,
                c.lag_signals,
                c.early_offline,
                c.logout_timed_out
            ),
        ));
        rows.push(("latency", latency_line(&self.latency, self.timed_from_s)));
        rows.push(("offline late", self.lateness.line()));
        if let Some(r) = &self.restart {
            rows.extend(r.rows());
        }
        if let Some(c) = &self.cluster {
            rows.extend(c.rows());
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
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("presence-loadgen: {}\n", s.scenario);
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        out
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> Value {
        let s = &self.setup;
        let t = &self.sent;
        let d = &self.daemon;
        let a = &self.daemon_after;
        let c = &self.checks;
        json!({
            "scenario": s.scenario,
            "setup": {
                "users": s.users, "devices": s.devices, "devices_mean": s.devices_mean,
                "gateways": s.gateways, "threads": s.threads, "shards": s.shards,
                "shard_aware": s.shard_aware, "max": s.period_us.is_none(),
                "period_us": s.period_us, "gap_min_us": s.gaps_us.0, "gap_max_us": s.gaps_us.1,
                "planned_per_s": s.planned_rate, "churn_per_s": s.churn_per_s,
                "observers": s.observers, "watch": s.watch, "firehose": s.firehose,
                "daemon_timeout_us": s.timeout_us,
            },
            "sent": {
                "seconds": t.seconds, "entries": t.entries, "datagrams": t.datagrams,
                "per_s": self.offered_per_s(), "late": t.late, "max_lag_us": t.max_lag_us,
                "send_errors": t.send_errors, "excused_beats": t.excused_beats,
                "logins": t.logins, "logouts": t.logouts, "churn_skipped": t.churn_skipped,
                "storms": t.storms, "paced_max_ms": t.paced_max_ms, "last_error": t.last_error,
            },
            "daemon": {
                "heartbeats": d.heartbeats(), "heartbeats_by_shard": d.heartbeats_by_shard,
                "accepted_per_s": self.accepted_per_s(), "datagrams": d.datagrams,
                "dropped_invalid": d.dropped, "cross_shard_shed": d.cross_shard_shed,
                "kernel_dropped": d.kernel_dropped,
                "routed_out": d.routed_out, "transitions_shed": a.transitions_shed,
                "refused_user_capacity": a.refused_user_capacity,
                "refused_device_limit": a.refused_device_limit,
                "refused_overflow_full": a.refused_overflow_full,
                "events_dropped": a.events_dropped, "lag_signals": a.lag_signals,
            },
            "loss": { "datagrams": self.datagram_loss(), "entries": self.entry_loss() },
            "transitions": c.to_json(),
            "timed_from_s": self.timed_from_s,
            "latency_us": self.latency.to_json(),
            "offline_lateness_us": self.lateness.to_json(),
            "restart": self.restart.as_ref().map(RestartReport::to_json),
            "cluster": self.cluster.as_ref().and_then(|c| serde_json::to_value(c).ok()),
            "violations": self.violations(),
            "ok": self.violations() == 0,
            "warnings": self.warnings,
        })
    }
}

/// One progress line's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Seconds since the scenario started.
    pub elapsed_s: f64,
    /// Entries sent per second over the last second.
    pub sent_per_s: f64,
    /// Heartbeats applied per second, from the daemon's last two readings.
    pub accepted_per_s: Option<f64>,
    /// Late beats so far.
    pub late: u64,
    /// Transitions per second observed over the last second.
    pub events_per_s: f64,
    /// Latency over the last second.
    pub recent: Percentiles,
    /// Transitions caused and not yet seen by every observer.
    pub in_flight: u64,
    /// Transitions seen without a cause so far.
    pub spurious: u64,
}

impl Progress {
    /// The line.
    pub fn line(&self) -> String {
        let accepted = self.accepted_per_s.map_or_else(|| "-".to_string(), si);
        let latency = if self.recent.count == 0 {
            String::new()
        } else {
            format!(
                " (p50 {}, p99 {})",
                ms(self.recent.p50),
                ms(self.recent.p99)
            )
        };
        format!(
            "[{:>6.1}s] sent {}/s  accepted {}/s  late {}  transitions {}/s{}  in flight {}  spurious {}",
            self.elapsed_s,
            si(self.sent_per_s),
            accepted,
            grouped(self.late),
            si(self.events_per_s),
            latency,
            grouped(self.in_flight),
            grouped(self.spurious)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(100), "100");
        assert_eq!(si(1_500_000.0), "1.50M");
        assert_eq!(si(2500.0), "2.5k");
        assert_eq!(ms(1250), "1.25 ms");
    }

    #[test]
    fn table_and_json_agree_on_the_verdict() {
        let mut s = Summary::default();
        assert!(s.table().contains("OK"));
        assert_eq!(s.to_json()["ok"], true);
        s.checks.spurious = 2;
        assert!(s.table().contains("FAILED: 2 violations"));
        assert_eq!(s.to_json()["violations"], 2);
    }
}
