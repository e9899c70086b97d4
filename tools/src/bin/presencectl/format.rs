//! How presencectl prints: times in UTC, records and transitions as lines or JSON, a user's
//! history as a table or JSON, the daemon's stats as tables, a cluster's member map; and what
//! `history` says when the daemon has none.

use presenced_client::{ClientError, GoAway, GoAwayReason, HistoryPage};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::{ErrorCode, Event, PresenceRecord};
use presenced_wire::stats::{ClusterStats, CoreStats, LinkStats, ShardStats, Stats};
use presenced_wire::State;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds as `YYYY-MM-DDThh:mm:ss.mmmZ`.
pub fn utc(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Boot epoch and first sequence number for a hand-run gateway: the Unix time in seconds, and
/// the microseconds within it × 1000, so that runs within one second still count up
/// (SPEC.md § 8: a signed datagram is accepted once).
pub fn epoch_and_sequence() -> (u32, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
    (epoch, u64::from(now.subsec_micros()) * 1000)
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `history` says when the daemon cannot answer: plainly for a daemon speaking only
/// push-link protocol version 1 and for one without saved state.
pub fn history_error(user: u64, e: &ClientError) -> String {
    match e {
        ClientError::Unsupported(_) => format!(
            "history of user {user}: the daemon speaks only push-link protocol version 1, \
             which has no history (a daemon speaking version 2 has it)"
        ),
        ClientError::Refused {
            code: Some(ErrorCode::HistoryUnavailable),
            message,
        } => format!(
            "history of user {user}: the daemon keeps no history: it runs without saved state \
             (`state.enabled`); it said: {message}"
        ),
        other => format!("history of user {user}: {other}"),
    }
}

fn span_end(end: Option<u64>) -> String {
    end.map_or_else(|| "now".to_string(), utc)
}

/// A user's history as a table: last seen, then one row per span (start, end or `now`,
/// state, cause, devices), oldest first.
pub fn history_table(user: u64, h: &HistoryPage) -> String {
    let mut out = format!(
        "user {user}, last seen {}\n",
        h.last_seen_ms.map_or_else(|| "-".to_string(), utc)
    );
    if h.spans.is_empty() {
        out.push_str("no spans: the daemon keeps no transition of this user in that time\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24}  {:<24}  {:<8}  {:<15}  {:>7}",
        "START", "END", "STATE", "CAUSE", "DEVICES"
    );
    for s in &h.spans {
        let _ = writeln!(
            out,
            "{:<24}  {:<24}  {:<8}  {:<15}  {:>7}",
            utc(s.start_ms),
            span_end(s.end()),
            s.state.name(),
            s.cause.name(),
            s.devices
        );
    }
    out
}

/// A user's history as one JSON object: `user`, `last_seen_ms` (null: unknown), `more`, and
/// `spans` (`version`, `start_ms`, `end_ms` (null: still going on), `state`, `cause`,
/// `devices`).
pub fn history_json(user: u64, h: &HistoryPage) -> String {
    let spans: Vec<_> = h
        .spans
        .iter()
        .map(|s| {
            json!({
                "version": s.version,
                "start_ms": s.start_ms,
                "end_ms": s.end(),
                "state": s.state.name(),
                "cause": s.cause.name(),
                "devices": s.devices,
            })
        })
        .collect();
    json!({
        "user": user,
        "last_seen_ms": h.last_seen_ms,
        "more": h.more,
        "spans": spans,
    })
    .to_string()
}

/// The word for a device report.
pub fn report_name(state: State) -> &'static str {
    match state {
        State::Online => "online",
        State::Idle => "idle",
        State::Offline => "offline (logout)",
        State::Invisible => "invisible",
    }
}

/// One transition: `time  user U  prev -> state  (cause)  v=V`, or JSON.
pub fn event_line(e: &Event, json: bool) -> String {
    if json {
        return json!({
            "user": e.user,
            "state": e.state.name(),
            "prev": e.prev.name(),
            "cause": e.cause.to_string(),
            "at_ms": e.at_ms,
            "version": e.version,
        })
        .to_string();
    }
    format!(
        "{}  user {}  {} -> {}  ({})  v={}",
        utc(e.at_ms),
        e.user,
        e.prev,
        e.state,
        e.cause,
        e.version
    )
}

fn last_seen(r: &PresenceRecord) -> String {
    r.last_seen_ms.map_or_else(|| "-".to_string(), utc)
}

/// What `watch` says when its link goes away: why, and when it tries again.
pub fn link_lost(reason: &str, go_away: Option<&GoAway>, retry_in: Duration) -> String {
    match go_away {
        Some(g) => format!(
            "the daemon went away (GOAWAY {}: {reason}); reconnecting in {} ms (it asked for {} \
             ms at least)",
            match g.reason {
                GoAwayReason::Restarting => "restarting",
                GoAwayReason::ShuttingDown => "shutting_down",
            },
            retry_in.as_millis(),
            g.reconnect_after.as_millis()
        ),
        None => format!(
            "link lost: {reason}; reconnecting in {} ms",
            retry_in.as_millis()
        ),
    }
}

/// What `watch` says when its link is back: how long it was down and how many watched users
/// changed meanwhile (their records are printed).
pub fn reconnected(down: Duration, changes: usize) -> String {
    format!(
        "reconnected after {} ms; {changes} change{}",
        down.as_millis(),
        if changes == 1 { "" } else { "s" }
    )
}

/// A record as one line, for `watch`: `user U  is STATE  (last seen …)  v=V`.
pub fn record_line(r: &PresenceRecord) -> String {
    format!(
        "user {}  is {}  (last seen {})  v={}",
        r.user,
        r.state,
        last_seen(r),
        r.version
    )
}

/// A record as a JSON object.
pub fn record_json(r: &PresenceRecord) -> String {
    json!({
        "user": r.user,
        "state": r.state.name(),
        "last_seen_ms": r.last_seen_ms,
        "version": r.version,
    })
    .to_string()
}

/// Records as a table with a header.
pub fn records_table(records: &[PresenceRecord]) -> String {
    let mut out = format!(
        "{:>20}  {:<8}  {:<24}  {:>20}\n",
        "USER", "STATE", "LAST SEEN", "VERSION"
    );
    for r in records {
        let _ = writeln!(
            out,
            "{:>20}  {:<8}  {:<24}  {:>20}",
            r.user,
            r.state.name(),
            last_seen(r),
            r.version
        );
    }
    out
}

/// A counter's name (or column title) and how to read it from `T`.
type Counter<T> = (&'static str, fn(&T) -> u64);

/// The shard table's columns: a title and how to read the counter from a shard.
const SHARD_COLUMNS: [Counter<ShardStats>; 13] = [
    ("SHARD", |s| u64::from(s.shard)),
    ("DATAGRAMS", |s| s.datagrams),
    ("KERNEL_DROP", |s| s.kernel_dropped),
    ("HEARTBEATS", |s| s.core.heartbeats),
    ("USERS", |s| s.core.users),
    ("DEVICES", |s| s.core.devices),
    ("TRANSITIONS", |s| s.core.transitions),
    ("ROUTED_OUT", |s| s.routed_out),
    ("ROUTED_IN", |s| s.routed_in),
    ("SHED_IN", |s| s.cross_shard_shed),
    ("SHED_OUT", |s| s.transitions_shed),
    ("DROPPED", ShardStats::dropped_total),
    ("SRC_BLOCKED", |s| s.sources_blocked),
];

/// The presence core's refusals (and other lost work), summed over shards under "dropped or
/// refused" after the datagram drops by reason.
const CORE_REFUSALS: [Counter<CoreStats>; 7] = [
    ("refused_user_capacity", |c| c.refused_user_capacity),
    ("refused_device_limit", |c| c.refused_device_limit),
    ("refused_overflow_full", |c| c.refused_overflow_full),
    ("refused_user_zero", |c| c.refused_user_zero),
    ("logout_unknown", |c| c.logout_unknown),
    ("clock_backwards", |c| c.clock_backwards),
    ("records_dropped", |c| c.records_dropped),
];

/// The presence core's timer counters, summed over shards.
const CORE_TIMERS: [Counter<CoreStats>; 5] = [
    ("timers_fired", |c| c.timers_fired),
    ("timers_cascaded", |c| c.timers_cascaded),
    ("timers_stale", |c| c.timers_stale),
    ("timers_near_pool_full", |c| c.timers_near_pool_full),
    ("deadlines_extended", |c| c.deadlines_extended),
];

/// The push link's counters, in the order printed.
const LINK_COUNTERS: [Counter<LinkStats>; 11] = [
    ("links", |l| l.links),
    ("links_refused", |l| l.links_refused),
    ("links_unauthorized", |l| l.links_unauthorized),
    ("links_stalled", |l| l.links_stalled),
    ("subscribed_users", |l| l.subscribed_users),
    ("firehose_links", |l| l.firehose_links),
    ("transitions", |l| l.transitions),
    ("events_sent", |l| l.events_sent),
    ("events_dropped", |l| l.events_dropped),
    ("lag_signals", |l| l.lag_signals),
    ("shard_shed", |l| l.shard_shed),
];

/// The daemon's stats as tables: one row per shard, the drops and refusals by reason, the
/// core's timers, the authenticated gateways, the push link.
pub fn stats_table(stats: &Stats) -> String {
    let mut out = String::new();
    for (title, _) in SHARD_COLUMNS {
        let _ = write!(out, "{title:>12}");
    }
    out.push('\n');
    for shard in &stats.shards {
        for (_, counter) in SHARD_COLUMNS {
            let _ = write!(out, "{:>12}", counter(shard));
        }
        out.push('\n');
    }
    // Datagram drops by reason (every shard reports the same reasons), then the core's
    // refusals; reasons with nothing to report are left out.
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for shard in &stats.shards {
        for (reason, n) in &shard.dropped {
            *reasons.entry(reason).or_default() += n;
        }
    }
    let mut lines: Vec<(&str, u64)> = reasons.into_iter().collect();
    for (name, counter) in CORE_REFUSALS {
        lines.push((name, stats.shards.iter().map(|s| counter(&s.core)).sum()));
    }
    lines.retain(|&(_, n)| n > 0);
    if !lines.is_empty() {
        out.push_str("\ndropped or refused, all shards:\n");
        for (reason, n) in &lines {
            let _ = writeln!(out, "  {reason:<28}{n:>12}");
        }
    }
    out.push_str("\ntimers, all shards:\n");
    for (name, counter) in CORE_TIMERS {
        let total: u64 = stats.shards.iter().map(|s| counter(&s.core)).sum();
        let _ = writeln!(out, "  {name:<28}{total:>12}");
    }
    let link = &stats.link;
    out.push_str("\nback-off under load (wire-format/SPEC.md § P6.13):\n");
    let asked = match link.pace_interval_ms {
        0 => "normal".to_string(),
        ms => format!("{ms} ms"),
    };
    let _ = writeln!(out, "  {:<28}{:>12}", "active", link.backoff_active);
    let _ = writeln!(out, "  {:<28}{asked:>12}", "interval asked");
    let _ = writeln!(out, "  {:<28}{:>12}", "pace_frames", link.pace_frames);
    for s in &stats.shards {
        let _ = writeln!(
            out,
            "  shard {:<4} asks {:>8} ms  entered {:>6}  deadline extension {:>8} ms",
            s.shard, s.backoff_interval_ms, s.backoff_entered, s.deadline_extension_ms
        );
    }
    let auth = &stats.auth;
    if auth.enabled || !auth.per_gateway.is_empty() {
        out.push_str("\nauthenticated gateways (accepted, then refusals by reason):\n");
        let _ = writeln!(
            out,
            "  {:<28}{:>12}",
            "gateways in the key file", auth.gateways
        );
        let _ = writeln!(
            out,
            "  {:<28}{:>12}",
            "replay windows (bytes)", auth.replay_memory_bytes
        );
        for (id, gateway) in &auth.per_gateway {
            let _ = write!(out, "  gateway {id:<12} accepted {}", gateway.accepted);
            for (reason, n) in &gateway.refused {
                if *n > 0 {
                    let _ = write!(out, ", {reason} {n}");
                }
            }
            out.push('\n');
        }
    }
    out.push_str("\npush link:\n");
    for (name, counter) in LINK_COUNTERS {
        let _ = writeln!(out, "  {name:<28}{:>12}", counter(link));
    }
    let lat = &link.latency_us;
    let _ = writeln!(
        out,
        "  {:<28}{:>12}",
        "latency p50/p99/max (µs)",
        format!("{}/{}/{}", lat.p50, lat.p99, lat.max)
    );
    let _ = writeln!(out, "  {:<28}{:>12}", "latency samples", lat.count);
    if let Some(cluster) = &stats.cluster {
        cluster_section(&mut out, cluster);
    }
    out
}

/// A cluster member's part of `stats`: its map and role, its counters, and per shard what it
/// pushed as primary and kept as a replica.
fn cluster_section(out: &mut String, c: &ClusterStats) {
    let _ = writeln!(
        out,
        "\ncluster: member {} ({}), map revision {} of {} member(s), {} replica(s) per user",
        c.map.from,
        c.role,
        c.map.revision,
        c.map.members.len(),
        c.map.replicas
    );
    for (name, n) in [
        ("maps", c.maps),
        ("takeovers", c.takeovers),
        ("step_downs", c.step_downs),
        ("etcd_errors", c.etcd_errors),
        ("bad_values", c.bad_values),
        ("stale_maps", c.stale_maps),
        ("gained", c.gained),
        ("not_primary", c.not_primary),
    ] {
        let _ = writeln!(out, "  {name:<28}{n:>12}");
    }
    for (shard, role) in c.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "  shard {shard:<4} pushed as primary {:>12}  kept as replica {:>12}",
            role.primary, role.replica
        );
    }
}

/// A member map as `members` prints it at `now_ms`: a summary line, then one row per member
/// (warm, or warming with the time left).
pub fn members_table(map: &MemberMap, now_ms: u64) -> String {
    let mut out = format!(
        "revision {}, {} replica(s) per user, {} member(s); from {}, which {}\n",
        map.revision,
        map.replicas,
        map.members.len(),
        map.from,
        if map.etcd {
            "reaches etcd"
        } else {
            "does not reach etcd (its last map)"
        }
    );
    let _ = writeln!(
        out,
        "{:<24}  {:<24}  {:<24}  STATE",
        "MEMBER", "LINK", "HEARTBEAT"
    );
    for m in &map.members {
        let state = if m.warm_at_ms <= now_ms {
            "warm".to_string()
        } else {
            let left = Duration::from_millis(m.warm_at_ms - now_ms);
            format!("warming, {:.1} s left", left.as_secs_f64())
        };
        let _ = writeln!(
            out,
            "{:<24}  {:<24}  {:<24}  {state}",
            m.id, m.link, m.heartbeat
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::stats::{GatewayStats, LatencySummary, ShardRole};

    use presenced_client::Span;
    use presenced_wire::link::{WireCause, WireState};

    fn sample_history() -> HistoryPage {
        HistoryPage {
            spans: vec![
                Span {
                    version: 1_700_000_100_000 << 16,
                    start_ms: 1_700_000_100_000,
                    end_ms: 1_700_000_400_000,
                    state: WireState::Online,
                    cause: WireCause::FirstHeartbeat,
                    devices: 1,
                },
                Span {
                    version: 1_700_000_400_000 << 16,
                    start_ms: 1_700_000_400_000,
                    end_ms: 0,
                    state: WireState::Idle,
                    cause: WireCause::Inactivity,
                    devices: 12,
                },
            ],
            last_seen_ms: Some(1_700_000_100_000),
            more: false,
        }
    }

    #[test]
    fn link_comings_and_goings() {
        let restarting = GoAway {
            reason: GoAwayReason::Restarting,
            reconnect_after: Duration::from_millis(250),
        };
        assert_eq!(
            link_lost("bye", Some(&restarting), Duration::from_millis(900)),
            "the daemon went away (GOAWAY restarting: bye); reconnecting in 900 ms (it asked for \
             250 ms at least)"
        );
        assert_eq!(
            link_lost("timed out", None, Duration::from_millis(7)),
            "link lost: timed out; reconnecting in 7 ms"
        );
        assert_eq!(
            reconnected(Duration::from_millis(180), 0),
            "reconnected after 180 ms; 0 changes"
        );
        assert_eq!(
            reconnected(Duration::from_secs(2), 1),
            "reconnected after 2000 ms; 1 change"
        );
    }

    #[test]
    fn history_as_a_table() {
        let table = history_table(42, &sample_history());
        let lines: Vec<&str> = table.lines().collect();
        let row = |cells: [&str; 5]| {
            format!(
                "{:<24}  {:<24}  {:<8}  {:<15}  {:>7}",
                cells[0], cells[1], cells[2], cells[3], cells[4]
            )
        };
        assert_eq!(lines.len(), 4, "{table}");
        assert_eq!(lines[0], "user 42, last seen 2023-11-14T22:15:00.000Z");
        assert_eq!(lines[1], row(["START", "END", "STATE", "CAUSE", "DEVICES"]));
        assert_eq!(
            lines[2],
            row([
                "2023-11-14T22:15:00.000Z",
                "2023-11-14T22:20:00.000Z",
                "online",
                "first_heartbeat",
                "1"
            ])
        );
        assert_eq!(
            lines[3],
            row([
                "2023-11-14T22:20:00.000Z",
                "now",
                "idle",
                "inactivity",
                "12"
            ])
        );
        assert!(lines[3].ends_with("now                       idle      inactivity            12"));
        let empty = HistoryPage {
            spans: vec![],
            last_seen_ms: None,
            more: false,
        };
        assert_eq!(
            history_table(7, &empty),
            "user 7, last seen -\nno spans: the daemon keeps no transition of this user in \
             that time\n"
        );
    }

    #[test]
    fn history_as_json() {
        let text = history_json(42, &sample_history());
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["user"], 42);
        assert_eq!(v["last_seen_ms"], 1_700_000_100_000u64);
        assert_eq!(v["more"], false);
        let spans = v["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["end_ms"], 1_700_000_400_000u64);
        assert_eq!(spans[0]["state"], "online");
        assert_eq!(spans[0]["cause"], "first_heartbeat");
        assert_eq!(spans[1]["end_ms"], serde_json::Value::Null);
        assert_eq!(spans[1]["devices"], 12);
        assert_eq!(spans[1]["version"], 1_700_000_400_000u64 << 16);
        let empty = HistoryPage {
            spans: vec![],
            last_seen_ms: None,
            more: true,
        };
        let v: serde_json::Value = serde_json::from_str(&history_json(1, &empty)).unwrap();
        assert!(v["last_seen_ms"].is_null());
        assert_eq!(v["more"], true);
        assert_eq!(v["spans"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn history_errors_say_why() {
        let v1 = ClientError::Unsupported("version 1".into());
        assert!(history_error(9, &v1).contains("only push-link protocol version 1"));
        let off = ClientError::Refused {
            code: Some(ErrorCode::HistoryUnavailable),
            message: "no saved state".into(),
        };
        let text = history_error(9, &off);
        assert!(text.starts_with("history of user 9: the daemon keeps no history"));
        assert!(text.contains("state.enabled"), "{text}");
        let other = ClientError::Protocol("x".into());
        assert_eq!(
            history_error(9, &other),
            "history of user 9: protocol error: x"
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_795_434_091_291), "2026-11-23T11:41:31.291Z");
    }

    #[test]
    fn stats_table_sums_drops_by_reason() {
        let shard = |n: u32, heartbeats: u64, dropped: &[(&str, u64)]| {
            let mut s = ShardStats {
                shard: n,
                ..ShardStats::default()
            };
            s.core.heartbeats = heartbeats;
            s.core.timers_cascaded = 3;
            s.dropped = dropped.iter().map(|&(r, n)| (r.to_string(), n)).collect();
            s
        };
        let mut stats = Stats::default();
        stats
            .shards
            .push(shard(0, 5, &[("bad_magic", 2), ("too_short", 0)]));
        stats
            .shards
            .push(shard(1, 7, &[("bad_magic", 1), ("too_short", 4)]));
        stats.shards[0].kernel_dropped = 912;
        stats.shards[1].core.refused_device_limit = 6;
        stats.shards[1].sources_blocked = 8;
        stats.link.links = 1;
        stats.link.backoff_active = true;
        stats.link.pace_interval_ms = 40_000;
        stats.shards[1].backoff_entered = 2;
        stats.link.latency_us = LatencySummary {
            p50: 10,
            p99: 20,
            max: 30,
            count: 40,
        };
        let table = stats_table(&stats);
        assert!(
            table.contains("bad_magic                              3"),
            "{table}"
        );
        assert!(
            table.contains("too_short                              4"),
            "{table}"
        );
        assert!(
            table.contains("refused_device_limit                   6"),
            "{table}"
        );
        assert!(
            table.contains("timers_cascaded                        6"),
            "{table}"
        );
        assert!(table.contains("10/20/30"), "{table}");
        assert!(
            table.contains("interval asked                  40000 ms"),
            "{table}"
        );
        assert!(table.contains("entered      2"), "{table}");
        assert!(table.contains("KERNEL_DROP"), "{table}");
        assert!(table.contains("         912           5"), "{table}");
        // Shard 1: 1 + 4 dropped, then 8 sources blocked in the last column.
        assert!(
            table.contains("           5           8\n\ndropped or refused"),
            "{table}"
        );
        assert!(!table.contains("authenticated gateways"), "{table}");

        stats.auth.enabled = true;
        stats.auth.gateways = 1;
        stats.auth.per_gateway.insert(
            7,
            GatewayStats {
                accepted: 5,
                refused: [("bad_mac", 2), ("replayed", 0)]
                    .into_iter()
                    .map(|(r, n)| (r.to_string(), n))
                    .collect(),
            },
        );
        let table = stats_table(&stats);
        assert!(
            table.contains("gateway 7            accepted 5, bad_mac 2\n"),
            "{table}"
        );
        assert!(
            table.contains(&format!("  {:<28}{:>12}\n", "gateways in the key file", 1)),
            "{table}"
        );
        assert!(!table.contains("cluster"), "{table}");

        stats.cluster = Some(ClusterStats {
            map: MemberMap {
                from: "m2".into(),
                revision: 9,
                replicas: 2,
                etcd: true,
                members: Vec::new(),
            },
            role: "active".into(),
            takeovers: 3,
            shards: vec![
                ShardRole {
                    primary: 10,
                    replica: 11,
                },
                ShardRole {
                    primary: 12,
                    replica: 13,
                },
            ],
            ..ClusterStats::default()
        });
        let table = stats_table(&stats);
        assert!(
            table.contains("cluster: member m2 (active), map revision 9 of 0 member(s)"),
            "{table}"
        );
        assert!(
            table.contains(&format!("  {:<28}{:>12}\n", "takeovers", 3)),
            "{table}"
        );
        assert!(
            table.contains(
                "shard 1    pushed as primary           12  kept as replica           13"
            ),
            "{table}"
        );
    }

    #[test]
    fn members_table_says_warm_or_warming() {
        use presenced_wire::cluster::Member;
        let member = |id: &str, warm_at_ms| Member {
            id: id.into(),
            link: format!("{id}:7500"),
            heartbeat: format!("{id}:7400"),
            warm_at_ms,
        };
        let map = MemberMap {
            from: "m1".into(),
            revision: 41,
            replicas: 2,
            etcd: false,
            members: vec![member("m1", 1_000), member("m2", 13_500)],
        };
        let table = members_table(&map, 1_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "revision 41, 2 replica(s) per user, 2 member(s); from m1, which does not reach \
             etcd (its last map)"
        );
        assert!(lines[1].starts_with("MEMBER"));
        assert!(
            lines[2].starts_with("m1 ") && lines[2].ends_with("  warm"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("m2:7500") && lines[3].ends_with("warming, 12.5 s left"));
        assert_eq!(lines.len(), 4);
    }
}
