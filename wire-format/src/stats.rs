//! The daemon's counters as STATS_REPLY carries them (SPEC.md § P4, STATS_REPLY): one typed
//! schema, serialised by the daemon and read by `presencectl`, the load generator and anyone
//! else. Every field is required when reading, so a field the daemon renamed or dropped is an
//! error at the reader, never a silent 0; fields a reader does not know are ignored, so a newer
//! daemon can add counters.
//!
//! ```
//! use presenced_wire::stats::Stats;
//! let stats = Stats::default();
//! let json = stats.to_json().unwrap();
//! assert_eq!(Stats::from_json(&json).unwrap(), stats);
//! assert!(Stats::from_json(r#"{"shards":[]}"#).is_err());
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Everything STATS reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Datagram authentication.
    pub auth: AuthStats,
    /// Durable state (`[state]`).
    pub state: StateStats,
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardStats>,
    /// The push link.
    pub link: LinkStats,
    /// The cluster (`[cluster]`): `null` for a daemon that is no member of one.
    pub cluster: Option<ClusterStats>,
}

/// This member's view of its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// The member map it holds (`from` is this member).
    pub map: crate::cluster::MemberMap,
    /// What it is: `joining` (not in the map yet), `active` (primary for its users) or
    /// `stepped_down` (its lease about to lapse unrenewed: primary for no one).
    pub role: String,
    /// Member maps read from etcd and taken.
    pub maps: u64,
    /// Values under the member prefix skipped as not a valid member.
    pub bad_values: u64,
    /// Times etcd turned unreachable.
    pub etcd_errors: u64,
    /// Times this member stepped down.
    pub step_downs: u64,
    /// Maps in which a member left while this one was active (its users fell to their next
    /// replica).
    pub takeovers: u64,
    /// MAP requests answered with this member's map because the gateway's was another.
    pub stale_maps: u64,
    /// Transitions not pushed because this member was not the user's primary.
    pub not_primary: u64,
    /// Users named in LAGGED frames because this member became their primary.
    pub gained: u64,
    /// This member's role for each shard's users, by shard index (placement is per user, so
    /// a member is primary for some of every shard's users and a replica for others): the
    /// shard's transitions it pushed as their primary, and those it kept as a replica.
    pub shards: Vec<ShardRole>,
}

/// What a cluster member did with one shard's transitions (`ClusterStats::shards`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRole {
    /// Transitions pushed: this member was the user's primary.
    pub primary: u64,
    /// Transitions kept, not pushed: this member was a replica (or no longer active).
    pub replica: u64,
}

impl Stats {
    /// The JSON text STATS_REPLY carries.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads a STATS_REPLY's JSON; a missing or mistyped field is an error.
    pub fn from_json(json: &str) -> Result<Stats, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The presence core's counters of one shard; every refusal has its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Records held now (online, or offline and remembered).
    pub users: u64,
    /// Live devices now.
    pub devices: u64,
    /// Heartbeat entries applied or refused.
    pub heartbeats: u64,
    /// Transitions emitted.
    pub transitions: u64,
    /// New users refused because the table was full (`presence.users_per_shard`).
    pub refused_user_capacity: u64,
    /// New devices refused because the user had `presence.max_devices_per_user`.
    pub refused_device_limit: u64,
    /// Second devices refused because no overflow block was free
    /// (`presence.multi_device_users`).
    pub refused_overflow_full: u64,
    /// Entries for the reserved user id 0.
    pub refused_user_zero: u64,
    /// Logouts of a user or device the shard does not know.
    pub logout_unknown: u64,
    /// Calls whose monotonic time was behind an earlier call's.
    pub clock_backwards: u64,
    /// Offline records dropped after `presence.last_seen_retention`.
    pub records_dropped: u64,
    /// Timers that fired, near and far (including early ones re-checked and moved).
    pub timers_fired: u64,
    /// Far timers (last-seen retention) moved down a level of the wheel as their time came.
    pub timers_cascaded: u64,
    /// Near timer entries that found no user due at their tick: left behind by a timer moved
    /// earlier (or fired by another entry of the same tick whose user shares the prefix).
    #[serde(default)]
    pub timers_stale: u64,
    /// Near timers set in the wheel instead because the near ring's pool was spent (it holds
    /// `presence.users_per_shard` timers and a quarter more).
    #[serde(default)]
    pub timers_near_pool_full: u64,
    /// Fired timers re-armed by the back-off deadline extension: a device's deadline had
    /// passed but its extended deadline had not (ARCHITECTURE.md "Back-off under load").
    pub deadlines_extended: u64,
}

/// One shard thread: its presence core's counters and its ingest's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// The shard's index.
    pub shard: u32,
    /// The presence core.
    #[serde(flatten)]
    pub core: CoreStats,
    /// Datagrams received on this shard's sockets.
    pub datagrams: u64,
    /// Datagrams dropped, by reason: decode reasons (SPEC.md § 6), authentication reasons
    /// (§ 9), and `source_blocked` (dropped unread: their source address kept sending
    /// datagrams that failed decoding or authentication).
    pub dropped: BTreeMap<String, u64>,
    /// Times a source address was blocked for failing decoding or authentication (its
    /// datagrams then dropped unread for a while, counted as `source_blocked`).
    #[serde(default)]
    pub sources_blocked: u64,
    /// Blocks that found no room in the kernel's socket filter (`ingest.kernel_blocks` were
    /// in it): that source's datagrams were dropped unread by the shard instead.
    #[serde(default)]
    pub kernel_blocks_full: u64,
    /// Receive calls made.
    pub recv_calls: u64,
    /// Datagrams the kernel dropped on this shard's sockets because their receive buffers
    /// were full (`ingest.socket_recv_buffer`).
    pub kernel_dropped: u64,
    /// Entries sent to the shards that own them.
    pub routed_out: u64,
    /// Entries received from other shards.
    pub routed_in: u64,
    /// Entries shed because another shard's inbox was full (`shards.cross_shard_queue`).
    pub cross_shard_shed: u64,
    /// Transitions shed because the outbox to the push link was full (`shards.link_outbox`);
    /// with several hubs (`link.hubs`), once for each hub whose outbox was full.
    pub transitions_shed: u64,
    /// Transitions not written to the transition log because its queue was full
    /// (`state.queue`); each gap makes the daemon take a snapshot.
    pub log_shed: u64,
    /// Snapshot passes completed.
    pub snapshots: u64,
    /// Users restored at start (from the snapshot, then the log).
    pub restored_users: u64,
    /// Saved users or logged transitions not restored: the table was full, or the bytes did
    /// not decode.
    pub restore_refused: u64,
    /// The heartbeat interval this shard asks gateways for because it runs hot, ms; 0: none
    /// (SPEC.md § P6.13; `ingest.backoff`).
    pub backoff_interval_ms: u64,
    /// Times this shard began asking for a longer interval.
    pub backoff_entered: u64,
    /// How much later than normal every device's deadline is now, ms: the timeout stretched
    /// by the interval asked of the gateways over the normal one, less the timeout (kept one
    /// extended timeout longer when lowered).
    pub deadline_extension_ms: u64,
}

impl ShardStats {
    /// Datagrams dropped, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// Durable state: the snapshots and transition logs in the state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateStats {
    /// Whether state is kept (`state.enabled`, and the directory could be written at start).
    pub enabled: bool,
    /// The state directory.
    pub dir: String,
    /// This start found no saved state (its answers were marked warming for one timeout).
    pub cold_start: bool,
    /// Users restored at start, all shards (snapshots, then the log).
    pub restored_users: u64,
    /// Logged transitions replayed at start.
    pub restored_transitions: u64,
    /// Files or records skipped at start because they could not be read.
    pub restore_skipped: u64,
    /// How long the restore took, ms.
    pub restore_ms: u64,
    /// Transitions appended to the logs.
    pub log_records: u64,
    /// Transitions the logs refused (their write buffer was full: the disk is not keeping up
    /// or failing); a snapshot covers them.
    pub log_dropped: u64,
    /// Group syncs (fdatasync of every log and the replay marks).
    pub syncs: u64,
    /// The last sync's duration, µs.
    pub last_sync_us: u64,
    /// The longest sync's duration, µs.
    pub max_sync_us: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// The last snapshot's size, bytes.
    pub last_snapshot_bytes: u64,
    /// The last snapshot pass's duration, from its start to its file's rename, ms.
    pub last_snapshot_ms: u64,
    /// Log segments removed by retention.
    pub segments_removed: u64,
    /// History requests answered.
    pub history_requests: u64,
    /// Storage errors, by kind (`no_space`, `permission_denied`, `checksum`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The last write to each shard's log, each shard's snapshots and the replay marks
    /// succeeded (false while any of them is failing: the directory became unwritable, the
    /// disk is full or failing; `errors` says how; false too when state is not kept).
    pub writable: bool,
}

/// Datagram authentication (SPEC.md § 9).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStats {
    /// Whether datagrams must be signed (`auth.keys_file` is set).
    pub enabled: bool,
    /// Gateways in the key file.
    pub gateways: u64,
    /// Memory held by the replay windows, bytes.
    pub replay_memory_bytes: u64,
    /// Per gateway id.
    pub per_gateway: BTreeMap<u32, GatewayStats>,
}

/// One gateway's datagrams.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStats {
    /// Datagrams accepted.
    pub accepted: u64,
    /// Datagrams refused, by authentication reason.
    pub refused: BTreeMap<String, u64>,
}

/// The push link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Links open.
    pub links: u64,
    /// Users with at least one subscriber; with several hubs (`link.hubs`), summed over them
    /// (a user subscribed on links of two hubs counts twice).
    pub subscribed_users: u64,
    /// Links subscribed to everyone.
    pub firehose_links: u64,
    /// Transitions read from the shards.
    pub transitions: u64,
    /// Events queued to links.
    pub events_sent: u64,
    /// Events dropped because a link's queue was full (`link.queue_bytes`).
    pub events_dropped: u64,
    /// LAGGED frames sent.
    pub lag_signals: u64,
    /// Transitions the shards shed before they reached the push link (summed over the hubs,
    /// each counting what was shed for it).
    pub shard_shed: u64,
    /// Connections refused because `link.max_links` were open.
    pub links_refused: u64,
    /// Links closed at HELLO for a bad name or token.
    pub links_unauthorized: u64,
    /// Links closed because they took nothing for `link.stall_timeout` with frames waiting.
    pub links_stalled: u64,
    /// Transition latency, from datagram receipt to the EVENTS frame written, microseconds.
    pub latency_us: LatencySummary,
    /// Each open link, by id. A STATS_REPLY, whose JSON is limited to 60 000 bytes, may carry
    /// only some of them (the metrics endpoint, which has no such limit, gets them all).
    pub per_link: Vec<PerLinkStats>,
    /// Open links left out of `per_link` to fit the STATS_REPLY limit.
    pub per_link_omitted: u64,
    /// Whether the daemon asks gateways for a longer heartbeat interval (back-off under
    /// load, SPEC.md § P6.13).
    pub backoff_active: bool,
    /// The heartbeat interval asked of the gateways, ms; 0: the normal one.
    pub pace_interval_ms: u64,
    /// PACE frames sent to links.
    pub pace_frames: u64,
}

/// One open gateway link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerLinkStats {
    /// The link's id (the daemon numbers links as they connect).
    pub id: u32,
    /// The name the gateway gave in HELLO (with `[links]` grants, the granted link's name).
    pub name: String,
    /// The gateway's address.
    pub peer: SocketAddr,
    /// Bytes queued for the link and not yet written, frames and their overhead (at most
    /// `link.queue_bytes` and one LAGGED frame above it, besides answers to its requests).
    pub queued_bytes: u64,
    /// Users the link is subscribed to.
    pub subscribed_users: u64,
    /// Whether the link is subscribed to everyone.
    pub firehose: bool,
    /// Events queued to the link.
    pub events_sent: u64,
    /// Events dropped because the link's queue was full.
    pub events_dropped: u64,
    /// LAGGED frames sent to the link.
    pub lag_signals: u64,
}

/// A latency distribution, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let mut shard = ShardStats {
            shard: 1,
            datagrams: 5,
            ..ShardStats::default()
        };
        shard.core.heartbeats = 100;
        shard.dropped.insert("bad_magic".into(), 2);
        let mut auth = AuthStats {
            enabled: true,
            gateways: 1,
            ..AuthStats::default()
        };
        auth.per_gateway.insert(
            7,
            GatewayStats {
                accepted: 3,
                refused: BTreeMap::from([("replayed".to_string(), 1)]),
            },
        );
        Stats {
            auth,
            state: StateStats::default(),
            shards: vec![shard],
            link: LinkStats {
                events_dropped: 4,
                per_link: vec![PerLinkStats {
                    id: 3,
                    name: "gw-eu-1".into(),
                    peer: "127.0.0.1:4433".parse().unwrap(),
                    queued_bytes: 2,
                    subscribed_users: 10,
                    firehose: false,
                    events_sent: 9,
                    events_dropped: 1,
                    lag_signals: 1,
                }],
                ..LinkStats::default()
            },
            cluster: Some(ClusterStats {
                role: "active".into(),
                takeovers: 1,
                shards: vec![ShardRole {
                    primary: 3,
                    replica: 1,
                }],
                ..ClusterStats::default()
            }),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_flat_shard_layout() {
        let stats = sample();
        let json = stats.to_json().unwrap();
        assert!(json.contains(r#""shard":1,"users":0"#), "{json}");
        assert!(
            json.contains(r#""per_gateway":{"7":{"accepted":3"#),
            "{json}"
        );
        assert!(json.contains(r#""peer":"127.0.0.1:4433""#), "{json}");
        assert_eq!(Stats::from_json(&json).unwrap(), stats);
    }

    #[test]
    fn a_missing_field_is_an_error_and_an_unknown_one_is_ignored() {
        let json = sample().to_json().unwrap();
        let missing = json.replace(r#""events_dropped":4,"#, "");
        let e = Stats::from_json(&missing).unwrap_err();
        assert!(e.to_string().contains("events_dropped"), "{e}");
        let renamed = json.replace("\"heartbeats\"", "\"heartbeat_entries\"");
        assert!(Stats::from_json(&renamed).is_err());
        let extra = json.replacen('{', r#"{"added_later":{"x":1},"#, 1);
        assert_eq!(Stats::from_json(&extra).unwrap(), sample());
    }
}
