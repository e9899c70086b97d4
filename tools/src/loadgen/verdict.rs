//! The verdict: what every observer saw compared with what the simulation caused, and the
//! summary's parts and warnings assembled from the run's counters.

use super::cli::Args;
use super::counters::SendCounters;
use super::lock;
use super::observer::{self, Findings, Hists};
use super::plan::{Pacing, Plan};
use super::population::Population;
use super::report::{self, Checks, Percentiles, Sent, Setup, Summary};
use super::warmup::Warmup;
use hdrhistogram::Histogram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

impl Summary {
    /// Fills the timings: the observers' latency and lateness, and when timing began.
    pub fn time(&mut self, hists: &[Arc<Mutex<Hists>>], warmup: &Warmup) {
        let (latency, lateness) = merge(hists);
        self.latency = Percentiles::of(&latency);
        self.lateness = Percentiles::of(&lateness);
        self.timed_from_s = warmup.started_us.map(|us| us as f64 / 1e6);
    }
}

/// Merges the observers' latency and lateness histograms.
pub fn merge(hists: &[Arc<Mutex<Hists>>]) -> (Histogram<u64>, Histogram<u64>) {
    let mut latency = observer::histogram();
    let mut lateness = observer::histogram();
    for h in hists {
        let h = lock(h);
        let _ = latency.add(&h.latency);
        let _ = lateness.add(&h.lateness);
    }
    (latency, lateness)
}

/// Compares what every observer saw with what the simulation caused. With `lossy` (the daemon
/// received fewer datagrams than were sent, or shed entries), a user whose only missing
/// transitions are its last login (and the logout that followed) is counted as `lost`: its
/// login datagram was lost and no later heartbeat came before the end.
pub fn check(
    pop: &Population,
    findings: &[Findings],
    shared: &observer::Shared,
    lossy: bool,
) -> Checks {
    let mut c = Checks {
        version_regressions: shared.version_regressions.load(Ordering::Relaxed),
        lag_signals: shared.lag_signals.load(Ordering::Relaxed),
        ..Checks::default()
    };
    let missing_observers = pop.observers as usize - findings.len().min(pop.observers as usize);
    for i in 0..pop.watch {
        let e = pop.expected(i);
        c.expected += u64::from(e) * u64::from(pop.observers);
        c.missing += u64::from(e) * missing_observers as u64;
        let seen = |f: &Findings| f.counts.get(i as usize).copied().unwrap_or(0);
        // Transitions alternate from offline: odd counts are logins.
        let tail = if e % 2 == 1 { 1 } else { 2 };
        if lossy && e >= tail && findings.iter().all(|f| seen(f) == e - tail) {
            c.lost += u64::from(tail) * findings.len() as u64;
            c.observed += u64::from(e - tail) * findings.len() as u64;
            continue;
        }
        for f in findings {
            let seen = seen(f);
            c.observed += u64::from(seen);
            if seen < e {
                c.missing += u64::from(e - seen);
            } else if seen > e {
                if pop.is_excused(i) {
                    c.excused += u64::from(seen - e);
                } else {
                    c.spurious += u64::from(seen - e);
                }
            }
        }
    }
    for f in findings {
        c.gaps += f.gaps;
        c.idle += f.idle;
        c.early_offline += f.early_offline;
        c.logout_timed_out += f.logout_timed_out;
        c.foreign += f.foreign;
        c.client_dropped += f.dropped_by_client;
        if let Some(why) = &f.closed {
            c.links_closed.push(why.clone());
        }
    }
    for _ in findings.len()..pop.observers as usize {
        c.links_closed
            .push("an observer did not finish within 10 s".into());
    }
    c
}

/// The setup part of the summary.
pub fn setup_of(plan: &Plan, args: &Args) -> Setup {
    let (period_us, gaps_us) = match plan.pacing {
        Pacing::Scheduled {
            period_us,
            gap_min_us,
            gap_max_us,
        } => (Some(period_us), (gap_min_us, gap_max_us)),
        Pacing::Max => (None, (0, 0)),
    };
    Setup {
        scenario: plan.scenario.name().into(),
        users: plan.users,
        devices: plan.total_devices,
        devices_mean: plan.devices_mean,
        gateways: plan.gateways,
        threads: plan.threads,
        shards: plan.shards,
        shard_aware: args.shard_aware,
        period_us,
        gaps_us,
        planned_rate: period_us.map(|p| plan.total_devices as f64 / (p as f64 / 1e6)),
        churn_per_s: plan.churn_per_s,
        observers: plan.observers,
        watch: plan.watch,
        firehose: plan.firehose,
        timeout_us: plan.daemon.timeout_us,
    }
}

/// The senders' counters, over a send window of `seconds`.
pub fn sent_of(c: &SendCounters, seconds: f64) -> Sent {
    let get = SendCounters::get;
    Sent {
        seconds,
        entries: get(&c.entries),
        datagrams: get(&c.datagrams),
        send_errors: get(&c.send_errors),
        late: get(&c.late),
        max_lag_us: get(&c.max_lag_us),
        excused_beats: get(&c.excused_beats),
        logins: get(&c.logins),
        logouts: get(&c.logouts),
        churn_skipped: get(&c.churn_skipped),
        storms: get(&c.storms),
        paced_max_ms: 0,
        last_error: None,
    }
}

/// What the reader should know about the run.
pub fn warnings(s: &Summary, interrupted: bool, observers_done: usize, plan: &Plan) -> Vec<String> {
    let mut w = Vec::new();
    if interrupted {
        w.push("interrupted: the run was cut short".into());
    }
    let a = &s.daemon_after;
    if a.refused() > 0 {
        w.push(format!(
            "the daemon refused {} users (table full) and {} devices (per-user limit), {} second \
             devices (no overflow block): the simulation's expectations do not hold for those \
             users; raise presence.users_per_shard or presence.multi_device_users, or lower \
             --users or --devices",
            a.refused_user_capacity, a.refused_device_limit, a.refused_overflow_full
        ));
    }
    if s.checks.excused > 0 || s.sent.excused_beats > 0 {
        w.push(format!(
            "{} heartbeats were sent so late (over {}) that their devices may have timed out: \
             {} transitions of those users are excused; the generator is overloaded (fewer \
             --users, a lower --rate, or more --threads)",
            s.sent.excused_beats,
            report::ms(plan.excuse_after_us),
            s.checks.excused
        ));
    }
    if s.sent.paced_max_ms > 0 {
        w.push(format!(
            "the daemon was overloaded and asked for heartbeats up to {} apart (PACE): it \
             stretched its timeouts to match, so offlines by timeout came later than the plain \
             timeout and may count as missing; run below the daemon's capacity, or with the \
             daemon's ingest.backoff=false, to time them",
            report::ms(s.sent.paced_max_ms * 1000)
        ));
    }
    if s.checks.lost > 0 {
        w.push(format!(
            "{} transitions never happened because heartbeats were lost (the daemon received \
             fewer datagrams than were sent, or shed entries between shards): those users' \
             logins never arrived and no later heartbeat came before the end",
            s.checks.lost
        ));
    }
    if s.checks.lag_signals > 0 || a.events_dropped > 0 {
        w.push(format!(
            "the push link dropped {} events and sent {} LAGGED signals: observers fell behind",
            a.events_dropped, s.checks.lag_signals
        ));
    }
    if s.sent.send_errors > 0 {
        w.push(format!(
            "{} sends failed; the last: {}",
            s.sent.send_errors,
            s.sent.last_error.as_deref().unwrap_or("?")
        ));
    }
    if observers_done < plan.observers as usize {
        w.push("some observers did not finish: their transitions count as missing".into());
    }
    w
}
