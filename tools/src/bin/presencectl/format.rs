//! How presencectl prints: times in UTC, records and transitions as lines or JSON, and the
//! daemon's stats as tables.

use presenced_wire::link::{Event, PresenceRecord};
use presenced_wire::State;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

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

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The daemon's stats JSON as tables: one row per shard, the drops by reason, the link.
pub fn stats_table(stats: &str) -> Result<String, String> {
    let v: Value =
        serde_json::from_str(stats).map_err(|e| format!("the daemon's stats are not JSON: {e}"))?;
    let columns = [
        ("shard", "SHARD"),
        ("datagrams", "DATAGRAMS"),
        ("kernel_dropped", "KERNEL_DROP"),
        ("heartbeats", "HEARTBEATS"),
        ("users", "USERS"),
        ("devices", "DEVICES"),
        ("transitions", "TRANSITIONS"),
        ("routed_out", "ROUTED_OUT"),
        ("routed_in", "ROUTED_IN"),
        ("cross_shard_shed", "SHED_IN"),
        ("transitions_shed", "SHED_OUT"),
    ];
    let mut out = String::new();
    for (_, title) in columns {
        let _ = write!(out, "{title:>12}");
    }
    out.push_str(&format!("{:>12}\n", "DROPPED"));
    let shards = v
        .get("shards")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for shard in &shards {
        for (key, _) in columns {
            let _ = write!(out, "{:>12}", number(shard, key));
        }
        let mut dropped = 0;
        if let Some(map) = shard.get("dropped").and_then(Value::as_object) {
            for (reason, n) in map {
                let n = n.as_u64().unwrap_or(0);
                dropped += n;
                match reasons.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, total)) => *total += n,
                    None => reasons.push((reason.clone(), n)),
                }
            }
        }
        let _ = writeln!(out, "{dropped:>12}");
    }
    let refusals = [
        "refused_user_capacity",
        "refused_device_limit",
        "refused_overflow_full",
        "refused_user_zero",
        "logout_unknown",
        "clock_backwards",
        "records_dropped",
    ];
    for key in refusals {
        let total: u64 = shards.iter().map(|s| number(s, key)).sum();
        if total > 0 {
            reasons.push((key.to_string(), total));
        }
    }
    reasons.retain(|(_, n)| *n > 0);
    if !reasons.is_empty() {
        out.push_str("\ndropped or refused, all shards:\n");
        for (reason, n) in &reasons {
            let _ = writeln!(out, "  {reason:<28}{n:>12}");
        }
    }
    if let Some(gateways) = v
        .get("auth")
        .and_then(|a| a.get("per_gateway"))
        .and_then(Value::as_object)
    {
        out.push_str("\nauthenticated gateways (accepted, then refusals by reason):\n");
        for (id, counters) in gateways {
            let _ = write!(
                out,
                "  gateway {id:<12} accepted {}",
                number(counters, "accepted")
            );
            if let Some(map) = counters.as_object() {
                for (reason, n) in map {
                    let n = n.as_u64().unwrap_or(0);
                    if reason != "accepted" && n > 0 {
                        let _ = write!(out, ", {reason} {n}");
                    }
                }
            }
            out.push('\n');
        }
    }
    if let Some(link) = v.get("link") {
        out.push_str("\npush link:\n");
        for key in [
            "links",
            "links_refused",
            "links_unauthorized",
            "subscribed_users",
            "firehose_links",
            "transitions",
            "events_sent",
            "events_dropped",
            "lag_signals",
            "shard_shed",
        ] {
            let _ = writeln!(out, "  {key:<28}{:>12}", number(link, key));
        }
        if let Some(lat) = link.get("latency_us") {
            let _ = writeln!(
                out,
                "  {:<28}{:>12}",
                "latency p50/p99/max (µs)",
                format!(
                    "{}/{}/{}",
                    number(lat, "p50"),
                    number(lat, "p99"),
                    number(lat, "max")
                )
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_795_434_091_291), "2026-11-23T11:41:31.291Z");
    }

    #[test]
    fn stats_table_sums_drops_by_reason() {
        let json = r#"{"shards":[{"shard":0,"heartbeats":5,"kernel_dropped":912,"dropped":{"bad_magic":2}},
            {"shard":1,"heartbeats":7,"dropped":{"bad_magic":1,"too_short":4}}],
            "link":{"links":1,"latency_us":{"p50":10,"p99":20,"max":30}}}"#;
        let table = stats_table(json).unwrap();
        assert!(
            table.contains("bad_magic                              3"),
            "{table}"
        );
        assert!(
            table.contains("too_short                              4"),
            "{table}"
        );
        assert!(table.contains("10/20/30"), "{table}");
        assert!(table.contains("KERNEL_DROP"), "{table}");
        assert!(table.contains("         912           5"), "{table}");
        let with_auth = r#"{"auth":{"enabled":true,"per_gateway":{"7":{"accepted":5,"bad_mac":2,"replayed":0}}},"shards":[]}"#;
        let table = stats_table(with_auth).unwrap();
        assert!(
            table.contains("gateway 7            accepted 5, bad_mac 2\n"),
            "{table}"
        );
        assert!(stats_table("not json").is_err());
    }
}
