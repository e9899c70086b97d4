//! The daemon's settings: one serde struct per TOML section, each key written once (name, type,
//! default, valid range, help) in the `settings!` list below, filled from the TOML file and
//! the command line (defaults < file < command line), checked with errors that name the key
//! and the fix.
//!
//! The list generates the section structs, their `Default`, their range checks and [`KEYS`]
//! (what `presenced --help` prints). Every count and byte size is read by one helper
//! ([`parse_count`]: `_` separators, k/M/G and Ki/Mi/Gi suffixes); every duration by humantime
//! (`500us`, `10ms`, `20s`, `5m`, `2h`, `30d`).

use crate::ingest::allow::{Cidr, MAX_ALLOW_ENTRIES, MAX_KERNEL_BLOCKS};
use crate::link::LinkLimits;
use presenced_core::config::{extension_ticks, max_extension_ticks, CoreConfig, MAX_DEVICES_LIMIT};
use presenced_node::auth::sources::SourceLimits;
use presenced_node::backoff::BackoffConfig;
use presenced_wire::link::{Timings, MIN_MAX_FRAME_LEN};
use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most shard threads (`shards.count`; with `0`, the cores available, at most this many).
pub const MAX_SHARDS: usize = 1024;

/// Generates, from one list of sections and keys: the section structs (serde, `deny_unknown_fields`,
/// every field defaulted), their `Default`, their range checks, the [`Settings`] struct and
/// [`KEYS`]. A key is `/// help` then `field [as "toml_name"]: Type = default [, range VALID];`
/// where VALID is a `RangeInclusive` of the field's type, [`PowerOfTwo`] or [`AutoOr`].
macro_rules! settings {
    ($(
        $(#[doc = $section_doc:literal])+
        [$section:ident] $Section:ident {
            $(
                $(#[doc = $help:literal])+
                $field:ident $(as $key:literal)? : $ty:ty = $default:expr $(, range $range:expr)?;
            )+
        }
    )+) => {
        $(
            $(#[doc = $section_doc])+
            #[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
            #[serde(default, deny_unknown_fields)]
            pub struct $Section {
                $(
                    $(#[doc = $help])+
                    $(#[serde(rename = $key)])?
                    #[serde(with = "value")]
                    pub $field: $ty,
                )+
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section { $($field: $default,)+ }
                }
            }

            impl $Section {
                /// Checks every key of the section against its valid range; the error names
                /// the key.
                pub fn check_ranges(&self) -> Result<(), SettingsError> {
                    $(
                        check(
                            &self.$field,
                            &valid!($($range)?),
                            key_name!($section, $field $($key)?),
                        )?;
                    )+
                    Ok(())
                }
            }
        )+

        /// Every setting of the daemon, one field per TOML section. Build it with
        /// [`Sources::build`], which also resolves `shards.count = 0` and checks every rule.
        #[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Default)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $section_doc])+
                pub $section: $Section,
            )+
        }

        impl Settings {
    /// Keys SIGHUP applies to a running daemon (besides the key file's contents); the link
    /// limits each as [`LinkLimits`] says (some to new links only).
    pub const RELOADABLE: &'static [&'static str] = &[
        "log.level",
        "link.max_links",
        "link.max_frame_len",
        "link.max_users_per_request",
        "link.max_subscriptions",
        "link.max_requests_in_flight",
        "link.queue_bytes",
        "link.stall_timeout",
        "link.idle_timeout",
    ];

    /// The keys whose values differ between `self` (running) and `other` (just read) and
    /// that only a restart applies (every key but [`Settings::RELOADABLE`]), sorted.
    pub fn differences_needing_restart(&self, other: &Settings) -> Vec<String> {
        self.differences(other)
            .into_iter()
            .filter(|key| !Self::RELOADABLE.contains(&key.as_str()))
            .collect()
    }

    /// The keys of [`Settings::RELOADABLE`] whose values differ between `self` (running) and
    /// `other` (just read), sorted.
    pub fn reloadable_differences(&self, other: &Settings) -> Vec<String> {
        self.differences(other)
            .into_iter()
            .filter(|key| Self::RELOADABLE.contains(&key.as_str()))
            .collect()
    }

    /// The keys whose values differ between `self` and `other`, sorted.
    fn differences(&self, other: &Settings) -> Vec<String> {
        let table = |s: &Settings| toml::Table::try_from(s).unwrap_or_default();
        let (old, new) = (table(self), table(other));
        let mut keys = Vec::new();
        for (section, body) in &old {
            let (Some(body), Some(fresh)) = (
                body.as_table(),
                new.get(section).and_then(toml::Value::as_table),
            ) else {
                continue;
            };
            for (key, value) in body {
                if fresh.get(key) != Some(value) {
                    keys.push(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

            /// Checks every key against its valid range (not the rules across keys).
            pub fn check_ranges(&self) -> Result<(), SettingsError> {
                $(self.$section.check_ranges()?;)+
                Ok(())
            }
        }

        /// The TOML sections, in order.
        pub const SECTIONS: &[&str] = &[$(stringify!($section)),+];

        /// Every key, in order: what `presenced --help` lists.
        pub const KEYS: &[Key] = &[
            $($(
                Key {
                    name: key_name!($section, $field $($key)?),
                    help: concat!($($help),+),
                    default: || Value::show(&$Section::default().$field),
                    valid: || Valid::<$ty>::describe(&valid!($($range)?)),
                    text: <$ty as Value>::TEXT,
                },
            )+)+
        ];
    };
}

/// `section.key`: the field's name, or the `as "name"` given for it.
macro_rules! key_name {
    ($section:ident, $field:ident) => {
        concat!(stringify!($section), ".", stringify!($field))
    };
    ($section:ident, $field:ident $key:literal) => {
        concat!(stringify!($section), ".", $key)
    };
}

/// The key's valid values: its range, or anything its type reads.
macro_rules! valid {
    () => {
        Any
    };
    ($range:expr) => {
        $range
    };
}

settings! {
    /// `[ingest]`: the heartbeat sockets.
    [ingest] IngestSettings {
        /// UDP address for heartbeat datagrams (every shard listens on it with SO_REUSEPORT).
        listen: SocketAddr = v4([127, 0, 0, 1], 7070);
        /// Optional second UDP address, e.g. [::1]:7070 ("": none).
        listen_v6: Option<SocketAddr> = None;
        /// Each shard also listens on its own port (listen port + 1 + shard index) so
        /// shard-aware gateways skip the cross-shard hop.
        shard_ports: bool = true;
        /// Datagrams read per recvmmsg call.
        recv_batch: usize = 32, range 1..=1024;
        /// SO_RCVBUF bytes per socket: room for a burst (32 MiB holds about 1M heartbeat
        /// entries); capped at net.core.rmem_max unless the process has CAP_NET_ADMIN, with a
        /// warning at start.
        socket_recv_buffer_bytes as "socket_recv_buffer": usize = 32 << 20,
            range 4096..=1 << 30;
        /// Source networks heartbeats are accepted from, e.g. ["10.0.0.0/8", "2001:db8::/32"]
        /// ([]: everyone); a kernel socket filter drops the rest before they take buffer room
        /// (counted in kernel_dropped). The filter sees the source address as the kernel
        /// delivers the packet (after NAT on this host); an IPv4-mapped network counts as IPv4.
        allow: Vec<Cidr> = Vec::new();
        /// Source addresses each shard tracks for failed datagrams (undecodable or failing
        /// authentication), 48 bytes each, in sets of 8.
        failing_sources: usize = 4096, range PowerOfTwo(8..=1 << 20);
        /// Failures a source may have in a burst before it is blocked.
        source_failure_burst: u32 = 100, range 1..=1 << 20;
        /// Failures per second a source is allowed beyond its burst.
        source_failures_per_sec: u32 = 10, range 1..=1 << 20;
        /// How long a blocked source's datagrams are dropped unread (counted in
        /// dropped.source_blocked).
        source_block: Duration = secs(10), range ms(1)..=days(1);
        /// Blocked source addresses each shard also drops in the kernel, in its sockets'
        /// filter (re-attached as blocks begin and end), so that a flood from them takes no
        /// receive-buffer room and no shard time; blocks beyond these are dropped unread in
        /// the shard (counted in kernel_blocks_full).
        kernel_blocks: usize = 64, range 0..=MAX_KERNEL_BLOCKS;
        /// While a shard runs hot (the kernel drops its datagrams, its receive calls keep
        /// finding a backlog, entries are shed between shards), ask gateways for a longer
        /// heartbeat interval (PACE, wire-format/SPEC.md § P6.13) and extend every deadline to
        /// match: presence stays right, only less fresh. Counted in backoff_entered.
        backoff: bool = true;
        /// The heartbeat interval gateways are asked for while backing off (asked at once,
        /// in one step, when a shard runs hot); above presence.heartbeat_interval, and at most
        /// half of presence.idle_after (a longer one is asked as that, so that activity
        /// reported at every heartbeat keeps devices active). The timeout stretches in
        /// proportion: offline by silence is detected that much later.
        backoff_interval: Duration = secs(80), range ms(1)..=hours(1);
        /// How long no shard may run hot before gateways are asked for the normal interval
        /// again.
        backoff_calm: Duration = secs(60), range ms(1)..=hours(1);
    }

    /// `[shards]`: the shard threads and the channels between them.
    [shards] ShardSettings {
        // `Sources::build` resolves 0 to the cores available.
        /// Shard threads; 0 = one per available core not kept by shards.service_cores.
        count: usize = 0, range 0..=MAX_SHARDS;
        /// Pin each shard to a core of its own (shard i to the i-th core left after
        /// shards.service_cores).
        pin: bool = true;
        /// With shards.pin, the first cores this process may run on kept for the hub, the push
        /// link, the store and the metrics threads, so no shard shares its core with them; kept
        /// only while a core is left for the shards. shards.count = 0 makes one shard per
        /// other core.
        service_cores: usize = 1, range 0..=64;
        /// Batches a shard's inbox holds; beyond it entries are shed and counted.
        cross_shard_queue: usize = 1024, range 1..=1 << 20;
        /// Heartbeat entries per batch sent to another shard (a batch holds at most 64).
        cross_shard_batch: usize = 64, range 1..=presenced_node::bus::MAX_ENTRY_BATCH;
        /// Transitions a shard holds for the push link beyond what the hub's channel took (32
        /// bytes each, allocated only while a burst waits); beyond it transitions are shed,
        /// counted, and subscribers told to re-query.
        link_outbox: usize = 1 << 20, range 1..=1 << 26;
    }

    /// `[presence]`: the presence core's timings and limits (per shard).
    [presence] PresenceSettings {
        /// Timing-wheel resolution: offline is detected within one tick of the deadline.
        tick: Duration = ms(10), range us(100)..=secs(1);
        /// How often gateways send each live device's heartbeat.
        heartbeat_interval: Duration = secs(20), range ms(1)..=hours(1);
        /// Allowance for delay and jitter: a device is offline after heartbeat_interval +
        /// 2 × grace of silence (under 2^20 ticks: 2.9 h at a 10 ms tick).
        grace: Duration = secs(12), range secs(0)..=hours(1);
        /// A device with no activity flag for this long is idle (under 2^20 ticks: 2.9 h at
        /// a 10 ms tick, 12 days at the longest tick).
        idle_after: Duration = mins(5), range ms(1)..=days(12);
        /// How long an offline user's last seen is kept (under 2^30 ticks).
        last_seen_retention: Duration = days(30), range secs(0)..=days(3650);
        /// Users (online or remembered) one shard holds; new users beyond it are refused and
        /// counted.
        users_per_shard: u32 = 1_000_000, range 1..=1 << 30;
        /// Devices one user may have at once; more are refused and counted.
        max_devices_per_user: u8 = 8, range 1..=MAX_DEVICES_LIMIT;
        /// Users with two devices or more one shard holds (auto: a quarter of
        /// users_per_shard, at most users_per_shard); further second devices are refused and
        /// counted.
        multi_device_users: Option<u32> = None, range AutoOr(0..=1 << 30);
        /// The most of its slots a shard's presence table fills, thousandths: 900 (9/10)
        /// costs 41.1 bytes of table an online user (a 36-byte slot and its control byte),
        /// 950 costs 38.9, 800 costs 46.3 (benches/README.md, "Control bytes").
        table_max_load_permille: u32 = 900, range 500..=950;
    }

    /// `[link]`: the QUIC push link to gateways and its per-link limits.
    [link] LinkSettings {
        /// UDP address of the QUIC push link.
        listen: SocketAddr = v4([127, 0, 0, 1], 7060);
        /// PEM certificate chain for the push link ("": a self-signed certificate for
        /// localhost); give link.key with it.
        cert: Option<PathBuf> = None;
        /// PEM private key for link.cert.
        key: Option<PathBuf> = None;
        /// Gateway links at once; more are refused.
        max_links: usize = 1024, range 1..=1 << 16;
        /// Largest frame accepted or sent, bytes.
        max_frame_len: usize = 1 << 20, range (MIN_MAX_FRAME_LEN as usize)..=64 << 20;
        /// User ids in one subscribe, unsubscribe or query.
        max_users_per_request: usize = 100_000, range 1..=1 << 24;
        /// Users one link may be subscribed to.
        max_subscriptions: usize = 1_000_000, range 1..=1 << 28;
        /// Requests of one link being answered at once.
        max_requests_in_flight: usize = 64, range 1..=1 << 16;
        /// Bytes queued for one gateway (frames and 64 bytes each besides), and the most QUIC
        /// holds for it unacknowledged (at least 64 KiB); a gateway that falls further behind
        /// loses events and is told it lagged.
        queue_bytes: usize = 4 << 20, range 1..=1 << 32;
        /// How long a gateway with frames waiting may take none of them before its link is
        /// closed (counted in links_stalled).
        stall_timeout: Duration = secs(10), range ms(100)..=hours(1);
        /// QUIC idle timeout of a link (sent in WELCOME from protocol version 2; gateways
        /// ping at least every third of it).
        idle_timeout: Duration = secs(30), range secs(1)..=mins(10);
        /// QUIC endpoints on link.listen, each its own UDP socket in one SO_REUSEPORT group
        /// with its own receive driver (the kernel keeps each gateway's packets on one);
        /// auto: one per service core (shards.service_cores), at least 1.
        endpoints: Option<u32> = None, range AutoOr(1..=64);
        /// Threads of the push link's runtime, which run the links' tasks and QUIC
        /// connections; auto: as many as endpoints, at least 2.
        threads: Option<u32> = None, range AutoOr(1..=256);
        /// Hub threads, each serving its own share of the links (link id modulo hubs) and
        /// receiving every shard's transitions, so fan-out to many gateways uses several
        /// cores; auto: 1 with fewer than 4 service cores (shards.service_cores), else half
        /// of them, at most 8. In a cluster each hub keeps its own view of the members.
        hubs: Option<u32> = None, range AutoOr(1..=presenced_node::bus::MAX_HUBS as u32);
        /// Receive and send buffer of each push-link socket, bytes (capped by the kernel's
        /// net.core.rmem_max and wmem_max unless the daemon has CAP_NET_ADMIN).
        socket_buffer_bytes: usize = 4 << 20, range (64 << 10)..=1 << 30;
    }

    /// `[auth]`: signed heartbeats and push-link tokens.
    [auth] AuthSettings {
        /// Key file (TOML, mode 0600, reloaded on SIGHUP; wire-format/SPEC.md § 9.5):
        /// [gateways] id = "<64 hex digits>", or a list of up to 4 keys during a rotation;
        /// [links] name = { token = "<16 to 256 bytes of text>", firehose = true } makes push
        /// links authenticate. Set, every datagram must be signed ("": unauthenticated
        /// datagrams only).
        keys_file: Option<PathBuf> = None;
        /// A signed datagram's send time may differ from the daemon's clock by this much.
        max_clock_skew: Duration = secs(30), range ms(1)..=days(1);
        /// Sequence numbers remembered per gateway for anti-replay (8 bytes each).
        replay_window: usize = 8192, range PowerOfTwo(64..=1 << 20);
        /// Gateways the key file may list.
        max_gateways: usize = 4096, range 1..=1 << 20;
        /// Listen beyond loopback without a key file (anyone who reaches the ports can set
        /// any user's presence and watch everyone's); only for networks you fully control.
        allow_unauthenticated: bool = false;
    }

    /// `[log]`: what the daemon writes to stderr (the journal under systemd).
    [log] LogSettings {
        /// The least severe lines written: error, warn, info, debug or trace (SIGHUP applies
        /// a changed value without a restart).
        level: LogLevel = LogLevel::Info;
    }

    /// `[state]`: what survives a restart (snapshots and the transition log).
    [state] StateSettings {
        /// Keep presence, last seen, versions and anti-replay marks across restarts in `dir`
        /// (false: every start is a cold start, with no history).
        enabled: bool = true;
        /// The state directory, relative to the working directory unless absolute (created if
        /// missing; the packaged unit uses systemd's StateDirectory, /var/lib/presenced).
        dir: PathBuf = PathBuf::from("presenced-state");
        /// How often each shard is snapshotted (a slice per round, never a stall); the log
        /// replays what happened since.
        snapshot_interval: Duration = secs(60), range secs(1)..=days(1);
        /// How often the log and the anti-replay marks are fsynced: a crash (`kill -9`)
        /// loses at most this much.
        sync_interval: Duration = ms(100), range ms(1)..=secs(60);
        /// Bytes of transition log kept at most, all shards (oldest segments go first, after
        /// the age limit `presence.last_seen_retention`).
        log_max_bytes: usize = 4 << 30, range 64 << 20..=1 << 50;
        /// Bytes per log segment file.
        segment_bytes: usize = 64 << 20, range 1 << 20..=1 << 30;
        /// Transitions a shard holds for the log beyond the store's channel; beyond it they are
        /// not logged, counted, and a snapshot is taken to cover them.
        queue: usize = 1 << 20, range 1024..=1 << 26;
        /// Table slots a snapshot pass covers per shard round, between reads of its sockets
        /// (4Ki slots: about 0.3 ms of the shard's time; 16Ki measured 1.2 ms and added
        /// 0.8 ms to the transition latency p99 with snapshots back to back,
        /// benches/README.md "Durable state").
        snapshot_slots_per_round: usize = 4 << 10,
            range 64..=presenced_node::node::MAX_SNAPSHOT_SLOTS_PER_ROUND;
    }

    /// `[metrics]`: the HTTP endpoint for Prometheus (`GET /metrics`) and health checks
    /// (`GET /healthz`).
    [metrics] MetricsSettings {
        /// TCP address of the endpoint ("": none; the packaged settings use 127.0.0.1:9464).
        /// It answers anyone who reaches it: keep it on loopback or a monitoring network.
        listen: Option<SocketAddr> = None;
        /// HTTP connections served at once (scrapers, health checks); more are closed at once
        /// and counted.
        max_connections: usize = 8, range 1..=1024;
        /// A connection must send a whole request head within this, and is closed when idle
        /// this long between requests; counted.
        read_timeout: Duration = secs(5), range ms(100)..=mins(1);
    }

    /// `[cluster]`: this daemon as a member of a cluster, its membership and liveness in etcd
    /// (off unless cluster.etcd is set).
    [cluster] ClusterSettings {
        /// etcd's client URLs, e.g. ["http://10.0.0.1:2379", "http://10.0.0.2:2379"] (plain
        /// http: keep etcd on a network you trust; []: not a cluster member). etcd is on the control path only: while it is unreachable the
        /// members keep their last member map and keep serving.
        etcd: Vec<EtcdUrl> = Vec::new();
        /// The cluster's name: its members' keys are /NAME/members/MEMBER in etcd (1-64 bytes
        /// of A-Z a-z 0-9 . _ -).
        name: String = "presenced".to_string(), range Id;
        /// This member's id, unique in the cluster (1-64 bytes of A-Z a-z 0-9 . _ -); required
        /// with cluster.etcd.
        member: Option<String> = None, range Id;
        /// TTL of this member's lease on its key: a member that stops renewing it (killed,
        /// cut off from etcd) loses its users to their next replica after this long. etcd's
        /// TTLs are whole seconds, at least 2.
        lease: Duration = secs(2), range WholeSeconds(secs(2)..=mins(5));
        /// Members holding each user's state (its replica set; the first warm one pushes).
        replicas: u16 = 2, range 1..=presenced_wire::cluster::MAX_REPLICAS;
        /// How far the members' clocks may disagree: a member that cannot renew its lease stops
        /// pushing this long before the lease lapses (less than half of cluster.lease).
        skew_allowance: Duration = ms(500), range ms(0)..=mins(2);
        /// HOST:PORT the gateways and the other members reach this member's push link at
        /// ("": link.listen, unless it is 0.0.0.0 or [::]).
        advertise_link: Option<String> = None, range HostPort;
        /// HOST:PORT the gateways send this member's heartbeats to ("": ingest.listen, unless
        /// it is 0.0.0.0 or [::]).
        advertise_heartbeat: Option<String> = None, range HostPort;
        /// How long a member that joins (or comes back) warms, seeing every heartbeat, before
        /// it may push for the users it gained (auto: two offline timeouts, 2 x
        /// (presence.heartbeat_interval + 2 x presence.grace): the state it restored lapses
        /// within the first, unpushed, and gateways have a whole timeout to find it).
        /// Shorter than two timeouts, a member whose gateways learn its address late pushes
        /// false offlines of the users it restored.
        warm: Option<Duration> = None, range AutoOr(secs(0)..=days(1));
        /// How long connecting to etcd, or one request to it, may take before etcd counts as
        /// unreachable (then retried with a back-off of 250 ms to 1 s).
        connect_timeout: Duration = secs(1), range ms(10)..=mins(1);
        /// PEM file of the CA (or of the members' certificates) to trust for the other members'
        /// push links ("": link.cert, since members usually share a certificate or a CA). While
        /// etcd is unreachable this member asks the others over their links whether they reach
        /// it, and keeps its users only while none does; with neither file, or push links that
        /// need a token ([links] in auth.keys_file) and no cluster.peer_token_file, it asks no
        /// one and steps down when its lease runs out, even if etcd is down for every member.
        peer_ca: Option<PathBuf> = None;
        /// Token file (wire-format/SPEC.md § 9.5) for the peer probe's push links when they
        /// need a token: the other members' [links] list this member's id (its HELLO's name)
        /// with this token ("": none).
        peer_token_file: Option<PathBuf> = None;
    }
}

const fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        port,
    ))
}
const fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}
const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

// ---------------------------------------------------------------------------------------------
// Rules across keys, and what the components are given.

impl Settings {
    /// Replaces `shards.count = 0` by `cores`, less `shards.service_cores` when the shards are
    /// pinned and a core is left for them (at least 1, at most [`MAX_SHARDS`]), then checks
    /// everything ([`validate`](Settings::validate)).
    pub fn resolve(mut self, cores: usize) -> Result<Settings, SettingsError> {
        if self.shards.count == 0 {
            let service = if self.shards.pin && cores > self.shards.service_cores {
                self.shards.service_cores
            } else {
                0
            };
            self.shards.count = (cores - service).clamp(1, MAX_SHARDS);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every key's range, then the rules across keys: shard ports within 65535,
    /// link.cert and link.key together, and the presence core's own checks.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.check_ranges()?;
        let shards = self.shards.count.max(1);
        if self.ingest.shard_ports && usize::from(self.ingest.listen.port()) + shards > 65535 {
            return Err(error(
                "ingest.shard_ports",
                format!(
                    "the per-shard ports (ingest.listen's port + 1 + shard index, {shards} \
                     shards) would run past 65535; lower ingest.listen's port or set \
                     ingest.shard_ports = false"
                ),
            ));
        }
        match (&self.link.cert, &self.link.key) {
            (Some(_), None) => {
                return Err(error(
                    "link.key",
                    "is empty but link.cert is set; give both or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(error(
                    "link.cert",
                    "is empty but link.key is set; give both or neither",
                ))
            }
            _ => {}
        }
        if let (Some((key, addr)), None, false) = (
            self.exposed(),
            &self.auth.keys_file,
            self.auth.allow_unauthenticated,
        ) {
            return Err(error(
                "auth.keys_file",
                format!(
                    "is empty but {key} = {addr} is reachable beyond this host: anyone could \
                     set any user's presence. Give a key file (every gateway then signs its \
                     heartbeats, wire-format/SPEC.md § 9), listen on 127.0.0.1, or set \
                     auth.allow_unauthenticated = true on a network you fully control"
                ),
            ));
        }
        self.cluster.validate(&self.ingest, &self.link)?;
        let core = self.presence.core_config()?;
        // The longest deadline extension back-off makes (the node's) must be one the shards
        // take.
        let asked_us = u64::try_from(self.ingest.backoff_interval_for(&self.presence).as_micros())
            .unwrap_or(u64::MAX);
        let ticks = extension_ticks(
            asked_us,
            core.heartbeat_interval_us,
            core.timeout_us(),
            core.tick_us,
        );
        let max_ticks = max_extension_ticks(core.timeout_us(), core.tick_us);
        if self.ingest.backoff && ticks > max_ticks {
            return Err(error(
                "ingest.backoff_interval",
                format!(
                    "stretches the timeout by {ticks} ticks of {} µs, past the {max_ticks} a \
                     device's timers allow (2^20 ticks in all): shorten it (or \
                     presence.idle_after, which bounds it) or raise presence.tick",
                    core.tick_us
                ),
            ));
        }
        Ok(())
    }

    /// The first listen address reachable beyond this host, with its key.
    fn exposed(&self) -> Option<(&'static str, SocketAddr)> {
        [
            ("ingest.listen", self.ingest.listen),
            ("link.listen", self.link.listen),
        ]
        .into_iter()
        .find(|(_, addr)| !addr.ip().is_loopback())
    }

    /// Settings that are valid but probably a mistake, each naming its key and why.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.presence.grace.is_zero() {
            out.push(
                "presence.grace = 0s: a single late or lost heartbeat puts a user offline \
                 (false offline); the default is 12s"
                    .to_string(),
            );
        }
        if self.auth.max_clock_skew < Duration::from_secs(1) {
            out.push(format!(
                "auth.max_clock_skew = {}: gateways whose clocks drift further are refused \
                 (`clock_skew`); use NTP and the default 30s",
                show_duration(self.auth.max_clock_skew)
            ));
        }
        let backoff = self.ingest.backoff_interval_for(&self.presence);
        if self.ingest.backoff && backoff <= self.presence.heartbeat_interval {
            out.push(format!(
                "ingest.backoff_interval = {} (at most half of presence.idle_after = {}) is not \
                 above presence.heartbeat_interval = {}: a shard that runs hot cannot ask \
                 gateways to back off, and loses heartbeats instead",
                show_duration(self.ingest.backoff_interval),
                show_duration(self.presence.idle_after),
                show_duration(self.presence.heartbeat_interval)
            ));
        } else if self.ingest.backoff && backoff < self.ingest.backoff_interval {
            out.push(format!(
                "ingest.backoff_interval = {} is asked as {}, half of presence.idle_after: \
                 longer, devices active at every heartbeat would go idle between two",
                show_duration(self.ingest.backoff_interval),
                show_duration(backoff)
            ));
        }
        if self.auth.keys_file.is_none() && self.exposed().is_some() {
            out.push(
                "auth.allow_unauthenticated = true: the listen addresses reach beyond this \
                 host and heartbeats are not signed; anyone who reaches them can set any \
                 user's presence"
                    .to_string(),
            );
        }
        out
    }
}

impl IngestSettings {
    /// When and how far a shard asks gateways to back off, for `presence`'s timings.
    pub fn backoff_config(&self, presence: &PresenceSettings) -> BackoffConfig {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        BackoffConfig {
            enabled: self.backoff,
            normal_ms: ms(presence.heartbeat_interval),
            interval_ms: ms(self.backoff_interval_for(presence)),
            calm_ms: ms(self.backoff_calm),
        }
    }

    /// The interval asked while backing off: `backoff_interval`, at most half of
    /// `presence.idle_after`.
    pub fn backoff_interval_for(&self, presence: &PresenceSettings) -> Duration {
        self.backoff_interval.min(presence.idle_after / 2)
    }

    /// Each shard's budget for sources that keep failing.
    pub fn source_limits(&self) -> SourceLimits {
        SourceLimits {
            entries: self.failing_sources,
            failure_burst: self.source_failure_burst,
            failures_per_sec: self.source_failures_per_sec,
            block_ms: u64::try_from(self.source_block.as_millis()).unwrap_or(u64::MAX),
            kernel_blocks: self.kernel_blocks,
        }
    }
}

impl LinkSettings {
    /// The push link's address, sockets and threads with `service_cores` cores kept for the service
    /// threads (`auto` resolved).
    pub fn sockets(&self, service_cores: usize) -> LinkSockets {
        let endpoints = self.endpoints.map_or(service_cores.max(1), |n| n as usize);
        LinkSockets {
            listen: self.listen,
            endpoints,
            threads: self.threads.map_or(endpoints.max(2), |n| n as usize),
            buffer_bytes: self.socket_buffer_bytes,
        }
    }

    /// Hub threads with `service_cores` cores kept for the service threads (`auto`
    /// resolved): one per two service cores from four on, at most [`AUTO_HUBS_MAX`].
    pub fn hubs(&self, service_cores: usize) -> usize {
        match self.hubs {
            Some(n) => n as usize,
            None if service_cores < 4 => 1,
            None => (service_cores / 2).min(AUTO_HUBS_MAX),
        }
    }

    /// The limits a reload can replace.
    pub fn limits(&self) -> LinkLimits {
        LinkLimits {
            max_links: self.max_links,
            max_frame_len: self.max_frame_len,
            max_users_per_request: self.max_users_per_request,
            max_subscriptions: self.max_subscriptions,
            max_requests_in_flight: self.max_requests_in_flight,
            queue_bytes: self.queue_bytes,
            stall_timeout: self.stall_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Records `limits` as in force (after a reload put them there).
    pub fn set_limits(&mut self, limits: LinkLimits) {
        let LinkLimits {
            max_links,
            max_frame_len,
            max_users_per_request,
            max_subscriptions,
            max_requests_in_flight,
            queue_bytes,
            stall_timeout,
            idle_timeout,
        } = limits;
        self.max_links = max_links;
        self.max_frame_len = max_frame_len;
        self.max_users_per_request = max_users_per_request;
        self.max_subscriptions = max_subscriptions;
        self.max_requests_in_flight = max_requests_in_flight;
        self.queue_bytes = queue_bytes;
        self.stall_timeout = stall_timeout;
        self.idle_timeout = idle_timeout;
    }
}

impl ClusterSettings {
    /// Whether this daemon is a cluster member (`cluster.etcd` is set).
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// The rules across keys, when `cluster.etcd` is set: a member id, a skew allowance under
    /// half the lease, and addresses to advertise.
    fn validate(&self, ingest: &IngestSettings, link: &LinkSettings) -> Result<(), SettingsError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.member.is_none() {
            return Err(error(
                "cluster.member",
                "is empty but cluster.etcd is set: give this member an id unique in the \
                 cluster (1-64 bytes of A-Z a-z 0-9 . _ -), e.g. member = \"presenced-1\"",
            ));
        }
        if self.skew_allowance * 2 >= self.lease {
            return Err(error(
                "cluster.skew_allowance",
                format!(
                    "is {}, not less than half of cluster.lease = {}: a member would stop \
                     pushing before it renewed its lease; lower it or lengthen cluster.lease",
                    show_duration(self.skew_allowance),
                    show_duration(self.lease)
                ),
            ));
        }
        for (key, advertised, listen_key, listen) in [
            (
                "cluster.advertise_link",
                &self.advertise_link,
                "link.listen",
                link.listen,
            ),
            (
                "cluster.advertise_heartbeat",
                &self.advertise_heartbeat,
                "ingest.listen",
                ingest.listen,
            ),
        ] {
            if advertised.is_none() && listen.ip().is_unspecified() {
                return Err(error(
                    key,
                    format!(
                        "is empty and {listen_key} = {listen} names no one address the other \
                         members and the gateways could reach: give HOST:PORT, e.g. \
                         \"10.0.0.5:{}\"",
                        listen.port()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// This member's key prefix in etcd: `/NAME/members/`.
    pub fn prefix(&self) -> String {
        format!("/{}/members/", self.name)
    }

    /// The file the peer probe trusts the other members' certificates by: `cluster.peer_ca`,
    /// else `link.cert` (`None`: no probe).
    pub fn peer_ca<'a>(&'a self, link: &'a LinkSettings) -> Option<&'a PathBuf> {
        self.peer_ca.as_ref().or(link.cert.as_ref())
    }

    /// How long a joining member warms: `cluster.warm`, or two offline timeouts of `core`
    /// (ARCHITECTURE.md, "The cluster": a restarted member's restored deadlines lapse one
    /// timeout after its start, and it must not be primary before they have).
    pub fn warm_for(&self, core: &CoreConfig) -> Duration {
        self.warm
            .unwrap_or(Duration::from_micros(core.timeout_us().saturating_mul(2)))
    }

    /// The push link's and the heartbeats' `HOST:PORT` to advertise: the settings, else the
    /// addresses actually bound (`link`, `heartbeat`: with port 0 in the settings, the port
    /// the kernel chose).
    pub fn advertised(&self, link: SocketAddr, heartbeat: SocketAddr) -> (String, String) {
        (
            self.advertise_link
                .clone()
                .unwrap_or_else(|| link.to_string()),
            self.advertise_heartbeat
                .clone()
                .unwrap_or_else(|| heartbeat.to_string()),
        )
    }
}

impl PresenceSettings {
    /// The presence core's configuration, checked by the core (errors name
    /// `presence.<key>`). `hash_seed` is 0: the daemon sets one per shard at start.
    pub fn core_config(&self) -> Result<CoreConfig, SettingsError> {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let core = CoreConfig {
            tick_us: us(self.tick),
            heartbeat_interval_us: us(self.heartbeat_interval),
            grace_us: us(self.grace),
            idle_after_us: us(self.idle_after),
            last_seen_retention_us: us(self.last_seen_retention),
            user_capacity: self.users_per_shard,
            max_devices_per_user: self.max_devices_per_user,
            multi_device_users: self.multi_device_users.unwrap_or(self.users_per_shard / 4),
            hash_seed: 0,
            table_initial_slots: presenced_core::table::INITIAL_SLOTS,
            table_max_load_permille: self.table_max_load_permille,
        };
        core.validate()
            .map_err(|e| error(&format!("presence.{}", e.key), e.problem))?;
        Ok(core)
    }

    /// The timings the push link announces in WELCOME (the ranges keep each within a u32).
    pub fn wire_timings(&self) -> Timings {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Timings {
            heartbeat_interval_ms: ms(self.heartbeat_interval),
            grace_ms: ms(self.grace),
            idle_after_ms: ms(self.idle_after),
            tick_us: u32::try_from(self.tick.as_micros()).unwrap_or(u32::MAX),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A setting the daemon cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The key at fault (`section.key`), the section, or the file.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setting `{}`: {}", self.key, self.problem)
    }
}

impl std::error::Error for SettingsError {}

fn error(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The key list, for help and for checking names.

/// One setting as `presenced --help` lists it.
pub struct Key {
    /// Dotted name, `section.key` (TOML `[section] key = …`), e.g. `presence.grace`.
    pub name: &'static str,
    help: &'static str,
    default: fn() -> String,
    valid: fn() -> String,
    /// From `--set`, only a quoted TOML string is read as TOML (addresses, paths).
    text: bool,
}

impl Key {
    /// The TOML section, e.g. `presence`.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(s, _)| s)
    }

    /// The key within its section, e.g. `grace`.
    pub fn key(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, k)| k)
    }

    /// What the key does.
    pub fn help(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The default, as written in TOML or on the command line (`""`: none).
    pub fn default_value(&self) -> String {
        (self.default)()
    }

    /// The values accepted, e.g. `1 to 64` or `true or false`.
    pub fn valid_values(&self) -> String {
        (self.valid)()
    }
}

/// The key `section.key`; the error names the unknown section or key and where to look.
pub fn lookup(section: &str, key: &str) -> Result<&'static Key, SettingsError> {
    if !SECTIONS.contains(&section) {
        let list: Vec<String> = SECTIONS.iter().map(|s| format!("[{s}]")).collect();
        return Err(error(
            section,
            format!(
                "unknown section; the sections are {}; `presenced --help` lists every key",
                list.join(", ")
            ),
        ));
    }
    KEYS.iter()
        .find(|k| k.section() == section && k.key() == key)
        .ok_or_else(|| {
            let mut problem = "unknown key; `presenced --help` lists every key".to_string();
            if let Some(other) = KEYS.iter().find(|k| k.key() == key) {
                problem.push_str(&format!(" (did you mean `{}`?)", other.name));
            }
            error(&format!("{section}.{key}"), problem)
        })
}

/// The key list as help text: every key with what it does, its default and its valid values.
pub fn keys_help() -> String {
    let mut out = String::from(
        "Settings: TOML `[section] key = value` in --config, or `--set section.key=value`;\n\
         the command line wins over the file. Counts and sizes take `_` and k, M, G (x1000)\n\
         or Ki, Mi, Gi (x1024), e.g. 10M, 32Mi; durations 500us, 10ms, 20s, 5m, 2h, 30d.\n",
    );
    let mut section = "";
    for k in KEYS {
        if k.section() != section {
            section = k.section();
            out.push_str(&format!("\n[{section}]\n"));
        }
        out.push_str(&format!("  {}\n", k.name));
        let mut line = String::new();
        for word in k.help().split(' ') {
            if !line.is_empty() && line.len() + 1 + word.len() > 88 {
                out.push_str(&format!("      {line}\n"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&format!("      {line}\n"));
        out.push_str(&format!(
            "      default: {}; valid: {}\n",
            k.default_value(),
            k.valid_values()
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sources: the file and the command line, layered.

/// Where settings come from: the TOML file, then the command line (each later value wins over
/// an earlier one, and any of them over the default). Keys are checked as they come in.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    table: toml::Table,
}

impl Sources {
    /// Reads and merges a TOML settings file (`--config`).
    pub fn merge_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(&origin, format!("cannot read the settings file: {e}")))?;
        self.merge_toml(&text, &origin)
    }

    /// Merges a TOML document: tables are sections, e.g. `[presence] grace = "12s"`; `origin`
    /// names it in errors.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| error(origin, format!("not valid TOML: {e}")))?;
        for (section, body) in doc {
            let toml::Value::Table(table) = body else {
                let problem = match KEYS.iter().find(|k| k.key() == section) {
                    Some(k) => format!("is not in a section; write it under [{}]", k.section()),
                    None => "top-level keys must be tables such as [presence]".to_string(),
                };
                return Err(error(&section, problem));
            };
            for (name, value) in table {
                let known = lookup(&section, &name)?;
                self.put(known, value);
            }
        }
        Ok(())
    }

    /// Sets one key from the command line. The value is read as a TOML value (`false`, `32`,
    /// `"12s"`) and otherwise taken as a string (`12s`, `10M`, `[::1]:7070`); for addresses
    /// and paths anything but a quoted TOML string is taken as written.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let (section, field) = name.split_once('.').ok_or_else(|| {
            error(
                name,
                "expected section.key, e.g. presence.grace; `presenced --help` lists every key",
            )
        })?;
        let known = lookup(section.trim(), field.trim())?;
        let value = value.trim();
        let value = match toml_value(value) {
            Some(v @ toml::Value::String(_)) => v,
            Some(v) if !known.text => v,
            _ => toml::Value::String(value.to_string()),
        };
        self.put(known, value);
        Ok(())
    }

    /// Reads `KEY=VALUE` (as given to `--set`).
    pub fn set_pair(&mut self, pair: &str) -> Result<(), SettingsError> {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| error(pair, "expected KEY=VALUE, e.g. presence.grace=12s"))?;
        self.set(key.trim(), value)
    }

    /// The typed settings: every value read and checked, `shards.count = 0` replaced by
    /// `cores` ([`Settings::resolve`]).
    pub fn build(&self, cores: usize) -> Result<Settings, SettingsError> {
        let doc = toml::Value::Table(self.table.clone());
        let settings: Settings = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            error(&key, e.into_inner().message().trim().to_string())
        })?;
        settings.resolve(cores)
    }

    fn put(&mut self, key: &Key, value: toml::Value) {
        let section = self
            .table
            .entry(key.section())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = section {
            table.insert(key.key().to_string(), value);
        }
    }
}

/// `text` as one TOML value, if it is one.
fn toml_value(text: &str) -> Option<toml::Value> {
    let mut doc: toml::Table = format!("v = {text}").parse().ok()?;
    (doc.len() == 1).then(|| doc.remove("v")).flatten()
}

// ---------------------------------------------------------------------------------------------
// Values: how each type of key is read, written and shown.

/// A whole number with `_` separators and an optional suffix: `k`, `M`, `G` (×1000) or `Ki`,
/// `Mi`, `Gi` (×1024), as in `users_per_shard = "10M"`, `socket_recv_buffer = "32Mi"`. The one
/// reader of every count and byte size.
pub fn parse_count(text: &str) -> Option<u64> {
    let digits = text.trim().replace('_', "");
    let (number, scale) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|&(suffix, scale)| digits.strip_suffix(suffix).map(|n| (n, scale)))
    .unwrap_or((&digits, 1));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// A count as help shows it: with a suffix when it is a large round number (`32Mi`, `1M`).
pub fn show_count(n: u64) -> String {
    if n >= 10_000 {
        for (suffix, scale) in [
            ("Gi", 1u64 << 30),
            ("G", 1_000_000_000),
            ("Mi", 1 << 20),
            ("M", 1_000_000),
            ("Ki", 1 << 10),
            ("k", 1_000),
        ] {
            if n % scale == 0 {
                return format!("{}{suffix}", n / scale);
            }
        }
    }
    n.to_string()
}

/// A duration as help shows it, in its largest whole unit: `30d`, `5m`, `10ms`.
pub fn show_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns % size == 0 {
            return format!("{}{unit}", ns / size);
        }
    }
    humantime::format_duration(d).to_string()
}

/// One value as TOML or the command line gives it.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Scalar>),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Str(s) if s.is_empty() => f.write_str("\"\""),
            Scalar::Str(s) => f.write_str(s),
            Scalar::List(items) => {
                let items: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Int(i) => s.serialize_i64(*i),
            Scalar::Float(x) => s.serialize_f64(*x),
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Str(t) => s.serialize_str(t),
            Scalar::List(items) => s.collect_seq(items),
        }
    }
}

/// Reads any scalar, or a list of them; `0` says what the key expects, for the error on
/// anything else.
#[derive(Clone, Copy)]
struct ScalarVisitor(&'static str);

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("is {v}, too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Scalar::List(items))
    }
}

impl<'de> de::DeserializeSeed<'de> for ScalarVisitor {
    type Value = Scalar;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

/// How one type of key is read from TOML or `--set`, written back, and shown in help.
trait Value: Sized {
    /// What is accepted, for help and for errors.
    const EXPECTED: &'static str;
    /// From `--set`, only a quoted TOML string is read as TOML: `true` is a file name.
    const TEXT: bool = false;
    /// Reads the value; the error says what is wrong (the caller adds the key).
    fn from_scalar(scalar: Scalar) -> Result<Self, String>;
    /// The value as written to TOML.
    fn to_scalar(&self) -> Scalar;
    /// The value as help shows it.
    fn show(&self) -> String {
        self.to_scalar().to_string()
    }
}

/// `#[serde(with = "value")]` for every key: through [`Value`].
mod value {
    use super::{Scalar, ScalarVisitor, Value};
    use serde::{de, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Value, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.to_scalar().serialize(s)
    }

    pub(super) fn deserialize<'de, T: Value, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let scalar: Scalar = d.deserialize_any(ScalarVisitor(T::EXPECTED))?;
        T::from_scalar(scalar).map_err(de::Error::custom)
    }
}

const COUNT: &str = "a whole number (suffixes k, M, G, Ki, Mi, Gi allowed)";

fn count<T: TryFrom<u64>>(scalar: Scalar) -> Result<T, String> {
    let n = match &scalar {
        Scalar::Int(i) => u64::try_from(*i).map_err(|_| format!("is {i}; use {COUNT} ≥ 0"))?,
        Scalar::Str(t) => parse_count(t).ok_or_else(|| format!("`{t}` is not {COUNT}"))?,
        other => return Err(format!("`{other}` is not {COUNT}")),
    };
    T::try_from(n).map_err(|_| {
        format!(
            "is {}, too large (`presenced --help` gives the range)",
            show_count(n)
        )
    })
}

macro_rules! count_value {
    ($($t:ty),+) => {$(
        impl Value for $t {
            const EXPECTED: &'static str = COUNT;
            fn from_scalar(scalar: Scalar) -> Result<Self, String> {
                count(scalar)
            }
            fn to_scalar(&self) -> Scalar {
                Scalar::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
            fn show(&self) -> String {
                show_count(u64::try_from(*self).unwrap_or(u64::MAX))
            }
        }
    )+};
}

count_value!(u8, u16, u32, usize);

/// The most hub threads `link.hubs = auto` gives: past it a host's cores serve the shards
/// better (a hub's link share shrinks, its per-transition work does not).
pub const AUTO_HUBS_MAX: usize = 8;

/// The push link's endpoints, runtime threads and socket buffers ([`LinkSettings::sockets`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSockets {
    /// The address they share (`link.listen`).
    pub listen: SocketAddr,
    /// QUIC endpoints (UDP sockets sharing `listen`).
    pub endpoints: usize,
    /// Worker threads of the link's runtime.
    pub threads: usize,
    /// Receive and send buffer of each socket, bytes.
    pub buffer_bytes: usize,
}

/// `multi_device_users`, `link.endpoints`, `link.threads`, `link.hubs`: `auto` (`None`) or a count.
impl Value for Option<u32> {
    const EXPECTED: &'static str = "auto, or a whole number (suffixes k, M, G, Ki, Mi, Gi allowed)";
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Str(t) if t.trim() == "auto" => Ok(None),
            _ => count(scalar).map(Some).map_err(|e| format!("{e}, or auto")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        match self {
            None => Scalar::Str("auto".into()),
            Some(n) => n.to_scalar(),
        }
    }
    fn show(&self) -> String {
        self.map_or_else(|| "auto".into(), |n| n.show())
    }
}

impl Value for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Bool(b) => Ok(*b),
            Scalar::Str(t) if t.trim() == "true" => Ok(true),
            Scalar::Str(t) if t.trim() == "false" => Ok(false),
            other => Err(format!("`{other}` is not true or false")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Bool(*self)
    }
}

const DURATION: &str = "a duration such as 500us, 10ms, 20s, 5m, 2h or 30d";

impl Value for Duration {
    const EXPECTED: &'static str = DURATION;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Str(t) => humantime::parse_duration(t.trim())
                .map_err(|e| format!("`{t}` is not {DURATION} ({e})")),
            Scalar::Int(i) => Err(format!(
                "`{i}` is not {DURATION}: give the unit, e.g. \"{i}s\""
            )),
            other => Err(format!("`{other}` is not {DURATION}")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(show_duration(*self))
    }
}

const ADDRESS: &str = "an address such as 127.0.0.1:7070 or [::1]:7070";

fn address(scalar: &Scalar) -> Result<SocketAddr, String> {
    match scalar {
        Scalar::Str(t) if t.trim().is_empty() => Err(format!("is empty; give {ADDRESS}")),
        Scalar::Str(t) => t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not {ADDRESS}")),
        other => Err(format!("`{other}` is not {ADDRESS} (write it in quotes)")),
    }
}

impl Value for SocketAddr {
    const EXPECTED: &'static str = ADDRESS;
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        address(&scalar)
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(self.to_string())
    }
}

/// An optional address: `""` is none.
impl Value for Option<SocketAddr> {
    const EXPECTED: &'static str = "an address such as [::1]:7070, or \"\" for none";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Str(t) if t.trim().is_empty() => Ok(None),
            _ => address(&scalar).map(Some),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(self.map(|a| a.to_string()).unwrap_or_default())
    }
}

/// A path that must be given.
impl Value for PathBuf {
    const EXPECTED: &'static str = "a path";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match scalar {
            Scalar::Str(t) if t.is_empty() => Err("is empty; give a path".into()),
            Scalar::Str(t) => Ok(PathBuf::from(t)),
            other => Err(format!("`{other}` is not a path (write it in quotes)")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(self.to_string_lossy().into_owned())
    }
}

/// An optional file: `""` is none.
impl Value for Option<PathBuf> {
    const EXPECTED: &'static str = "a file path, or \"\" for none";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match scalar {
            Scalar::Str(t) if t.is_empty() => Ok(None),
            Scalar::Str(t) => Ok(Some(PathBuf::from(t))),
            other => Err(format!(
                "`{other}` is not a file path (write it in quotes, or \"\" for none)"
            )),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(
            self.as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    }
}

/// The strings of a list setting: a TOML list of strings or, on the command line, one string
/// of items separated by commas (empty items skipped). `item` names one item in an error
/// ("a network"), `expected` the whole setting.
fn string_list(scalar: Scalar, item: &str, expected: &str) -> Result<Vec<String>, String> {
    match scalar {
        Scalar::List(items) => items
            .into_iter()
            .map(|i| match i {
                Scalar::Str(t) => Ok(t),
                other => Err(format!("`{other}` is not {item} (write it in quotes)")),
            })
            .collect(),
        Scalar::Str(t) => Ok(t
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        other => Err(format!("`{other}` is not {expected}")),
    }
}

const NETWORKS: &str = "a list of networks such as [\"10.0.0.0/8\", \"2001:db8::/32\"]";

/// `ingest.allow`: networks, from a TOML list or, on the command line, separated by commas.
impl Value for Vec<Cidr> {
    const EXPECTED: &'static str = NETWORKS;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        let items = string_list(scalar, "a network", NETWORKS)?;
        if items.len() > MAX_ALLOW_ENTRIES {
            return Err(format!(
                "lists {} networks; at most {MAX_ALLOW_ENTRIES} fit the kernel's socket filter \
                 (merge neighbouring networks into shorter prefixes)",
                items.len()
            ));
        }
        items.iter().map(|t| t.parse()).collect()
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::List(self.iter().map(|c| Scalar::Str(c.to_string())).collect())
    }
}

const ETCD_URLS: &str =
    "a list of etcd client URLs such as [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]";

/// The most etcd URLs `cluster.etcd` takes.
pub const MAX_ETCD_URLS: usize = 16;

/// One of etcd's client URLs (`cluster.etcd`): `http://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl(String);

impl EtcdUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for EtcdUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<EtcdUrl, String> {
        let text = text.trim();
        let host_port = text.strip_prefix("http://").ok_or_else(|| {
            format!(
                "`{text}` is not an etcd URL such as http://127.0.0.1:2379 (https is not \
                 supported: reach etcd over a network you trust)"
            )
        })?;
        check_host_port(host_port.trim_end_matches('/')).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(EtcdUrl(text.to_string()))
    }
}

impl fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `cluster.etcd`: URLs, from a TOML list or, on the command line, separated by commas.
impl Value for Vec<EtcdUrl> {
    const EXPECTED: &'static str = ETCD_URLS;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        let items = string_list(scalar, "a URL", ETCD_URLS)?;
        if items.len() > MAX_ETCD_URLS {
            return Err(format!(
                "lists {} URLs; give at most {MAX_ETCD_URLS}",
                items.len()
            ));
        }
        items.iter().map(|t| t.parse()).collect()
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::List(self.iter().map(|u| Scalar::Str(u.to_string())).collect())
    }
}

/// `HOST:PORT` as advertised to others: a host (a name, an IPv4 address or a bracketed IPv6
/// one) and a port 1-65535, at most [`MAX_ID_LEN`](presenced_wire::cluster::MAX_ID_LEN) bytes.
fn check_host_port(text: &str) -> Result<(), String> {
    let max = presenced_wire::cluster::MAX_ID_LEN;
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` has no port: give HOST:PORT"))?;
    if host.is_empty() || text.len() > max {
        return Err(format!("`{text}`: give HOST:PORT, at most {max} bytes"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{text}`: the port must be 1-65535")),
    }
}

/// `cluster.name`: text that must be given.
impl Value for String {
    const EXPECTED: &'static str = "text";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match scalar {
            Scalar::Str(t) => Ok(t.trim().to_string()),
            other => Err(format!("`{other}` is not text (write it in quotes)")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(self.clone())
    }
}

/// `cluster.member`, `cluster.advertise_*`: optional text, `""` is none.
impl Value for Option<String> {
    const EXPECTED: &'static str = "text, or \"\" for none";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match scalar {
            Scalar::Str(t) if t.trim().is_empty() => Ok(None),
            Scalar::Str(t) => Ok(Some(t.trim().to_string())),
            other => Err(format!(
                "`{other}` is not text (write it in quotes, or \"\" for none)"
            )),
        }
    }
    fn to_scalar(&self) -> Scalar {
        Scalar::Str(self.clone().unwrap_or_default())
    }
}

/// `cluster.warm`: `auto` (`None`) or a duration.
impl Value for Option<Duration> {
    const EXPECTED: &'static str = "auto, or a duration such as 500us, 10ms, 20s, 5m, 2h or 30d";
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Str(t) if t.trim() == "auto" => Ok(None),
            _ => Duration::from_scalar(scalar)
                .map(Some)
                .map_err(|e| format!("{e}, or auto")),
        }
    }
    fn to_scalar(&self) -> Scalar {
        match self {
            None => Scalar::Str("auto".into()),
            Some(d) => d.to_scalar(),
        }
    }
}

/// How much the daemon logs (`log.level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only what stops a part of the daemon.
    Error,
    /// Also what an operator should look at (refusals, shedding, storage errors).
    Warn,
    /// Also starts, stops, links coming and going, reloads.
    Info,
    /// Also detail for diagnosing.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    const NAMES: [(&'static str, LogLevel); 5] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];
}

impl Value for LogLevel {
    const EXPECTED: &'static str = "error, warn, info, debug or trace";
    const TEXT: bool = true;
    fn from_scalar(scalar: Scalar) -> Result<Self, String> {
        match &scalar {
            Scalar::Str(t) => LogLevel::NAMES
                .iter()
                .find(|(name, _)| *name == t.trim())
                .map(|(_, level)| *level)
                .ok_or_else(|| format!("`{t}` is not {}", Self::EXPECTED)),
            other => Err(format!("`{other}` is not {}", Self::EXPECTED)),
        }
    }
    fn to_scalar(&self) -> Scalar {
        let name = LogLevel::NAMES
            .iter()
            .find(|(_, l)| l == self)
            .map(|(n, _)| *n);
        Scalar::Str(name.unwrap_or("info").into())
    }
}

// ---------------------------------------------------------------------------------------------
// Valid values: ranges.

/// The values a key accepts: checked, and described for help.
trait Valid<T> {
    /// `Err` says what is wrong and what to use (the caller adds the key).
    fn check(&self, value: &T) -> Result<(), String>;
    /// E.g. `1 to 64`.
    fn describe(&self) -> String;
}

fn check<T, V: Valid<T>>(value: &T, valid: &V, key: &str) -> Result<(), SettingsError> {
    valid.check(value).map_err(|problem| error(key, problem))
}

/// Whatever the type reads (addresses, paths, flags).
struct Any;

impl<T: Value> Valid<T> for Any {
    fn check(&self, _: &T) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        T::EXPECTED.to_string()
    }
}

impl<T: Value + PartialOrd> Valid<T> for RangeInclusive<T> {
    fn check(&self, value: &T) -> Result<(), String> {
        if self.contains(value) {
            Ok(())
        } else {
            Err(format!("is {}; use {}", value.show(), self.describe()))
        }
    }
    fn describe(&self) -> String {
        format!("{} to {}", self.start().show(), self.end().show())
    }
}

/// A power of two within a range.
struct PowerOfTwo(RangeInclusive<usize>);

impl Valid<usize> for PowerOfTwo {
    fn check(&self, value: &usize) -> Result<(), String> {
        self.0.check(value)?;
        if !value.is_power_of_two() {
            return Err(format!(
                "is {value}, not a power of two; use {} (e.g. 4096 or 8192)",
                self.describe()
            ));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("a power of two, {}", self.0.describe())
    }
}

/// `auto`, or a value within a range.
struct AutoOr<T>(RangeInclusive<T>);

impl<T: Value + PartialOrd> Valid<Option<T>> for AutoOr<T> {
    fn check(&self, value: &Option<T>) -> Result<(), String> {
        match value {
            None => Ok(()),
            Some(n) => self.0.check(n).map_err(|e| format!("{e}, or auto")),
        }
    }
    fn describe(&self) -> String {
        format!("auto, or {}", self.0.describe())
    }
}

/// A member id or a cluster name: 1-64 bytes of `A-Z a-z 0-9 . _ -` (optional: or none).
struct Id;

const ID: &str = "1-64 bytes of A-Z a-z 0-9 . _ -";

impl Valid<String> for Id {
    fn check(&self, value: &String) -> Result<(), String> {
        if presenced_wire::cluster::valid_id(value) {
            Ok(())
        } else {
            Err(format!("is `{value}`; use {ID}"))
        }
    }
    fn describe(&self) -> String {
        ID.to_string()
    }
}

impl Valid<Option<String>> for Id {
    fn check(&self, value: &Option<String>) -> Result<(), String> {
        value.as_ref().map_or(Ok(()), |v| Id.check(v))
    }
    fn describe(&self) -> String {
        format!("{ID}, or \"\" for none")
    }
}

/// An optional `HOST:PORT` to advertise.
struct HostPort;

impl Valid<Option<String>> for HostPort {
    fn check(&self, value: &Option<String>) -> Result<(), String> {
        value.as_deref().map_or(Ok(()), check_host_port)
    }
    fn describe(&self) -> String {
        "HOST:PORT such as 10.0.0.5:7070 or [2001:db8::5]:7070, or \"\" for none".to_string()
    }
}

/// Whole seconds within a range (etcd's lease TTLs).
struct WholeSeconds(RangeInclusive<Duration>);

impl Valid<Duration> for WholeSeconds {
    fn check(&self, value: &Duration) -> Result<(), String> {
        if value.subsec_nanos() != 0 {
            return Err(format!(
                "is {}; etcd's lease TTLs are whole seconds: use {}",
                show_duration(*value),
                self.describe()
            ));
        }
        self.0.check(value).map_err(|e| {
            format!("{e} (etcd's lease TTLs are whole seconds, and it grants at least 2)")
        })
    }
    fn describe(&self) -> String {
        format!("whole seconds, {}", self.0.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(pairs: &[&str]) -> Result<Settings, SettingsError> {
        let mut sources = Sources::default();
        for pair in pairs {
            sources.set_pair(pair)?;
        }
        sources.build(1)
    }

    fn key_of(pairs: &[&str]) -> String {
        build(pairs).unwrap_err().key
    }

    #[test]
    fn link_hubs_follow_the_service_cores_unless_set() {
        let s = build(&[]).unwrap();
        let auto: Vec<usize> = [0, 1, 3, 4, 5, 8, 16, 64]
            .iter()
            .map(|&cores| s.link.hubs(cores))
            .collect();
        assert_eq!(auto, [1, 1, 1, 2, 2, 4, 8, 8]);
        let s = build(&["link.hubs=3"]).unwrap();
        assert_eq!((s.link.hubs(1), s.link.hubs(16)), (3, 3));
        assert_eq!(build(&["link.hubs=auto"]).unwrap().link.hubs, None);
        let e = build(&["link.hubs=0"]).unwrap_err();
        assert_eq!(e.key, "link.hubs");
        let s = build(&[
            "link.hubs=2",
            "cluster.etcd=http://127.0.0.1:2379",
            "cluster.member=m1",
            "link.listen=127.0.0.1:0",
            "ingest.listen=127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(s.link.hubs(1), 2);
    }

    #[test]
    fn link_endpoints_and_threads_follow_the_service_cores_unless_set() {
        let s = build(&[]).unwrap();
        let auto = |cores| s.link.sockets(cores);
        assert_eq!((auto(0).endpoints, auto(0).threads), (1, 2));
        assert_eq!((auto(1).endpoints, auto(1).threads), (1, 2));
        assert_eq!((auto(4).endpoints, auto(4).threads), (4, 4));
        assert_eq!(auto(4).buffer_bytes, 4 << 20);
        let s = build(&["link.endpoints=3", "link.threads=auto"]).unwrap();
        assert_eq!(
            (s.link.sockets(8).endpoints, s.link.sockets(8).threads),
            (3, 3)
        );
        let s = build(&["link.endpoints=auto", "link.threads=1"]).unwrap();
        assert_eq!(
            (s.link.sockets(2).endpoints, s.link.sockets(2).threads),
            (2, 1)
        );
        assert_eq!(key_of(&["link.endpoints=0"]), "link.endpoints");
        assert_eq!(key_of(&["link.hubs=0"]), "link.hubs");
        assert_eq!(key_of(&["link.hubs=17"]), "link.hubs");
        assert_eq!(key_of(&["link.threads=many"]), "link.threads");
        assert_eq!(
            key_of(&["link.socket_buffer_bytes=1k"]),
            "link.socket_buffer_bytes"
        );
    }

    #[test]
    fn defaults_build() {
        let s = Sources::default().build(4).unwrap();
        assert_eq!(s.shards.count, 3, "one core kept for the service threads");
        let mut unpinned = Sources::default();
        unpinned.set("shards.pin", "false").unwrap();
        assert_eq!(unpinned.build(4).unwrap().shards.count, 4);
        assert_eq!(Sources::default().build(1).unwrap().shards.count, 1);
        let core = s.presence.core_config().unwrap();
        assert_eq!(core.timeout_us(), 44_000_000);
        assert_eq!(core.last_seen_retention_us, 30 * 86_400_000_000);
        assert_eq!(core.multi_device_users, 250_000);
        assert_eq!(s.ingest.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(s.ingest.socket_recv_buffer_bytes, 32 << 20);
        assert_eq!(s.auth.max_clock_skew, Duration::from_secs(30));
        assert_eq!(s.link.cert, None);
        // Settings::default() is the defaults, unresolved.
        assert_eq!(Settings::default().resolve(4).unwrap(), s);
    }

    #[test]
    fn every_default_is_inside_its_range() {
        Settings::default().check_ranges().unwrap();
        Settings::default().resolve(1).unwrap();
        for k in KEYS {
            assert!(!k.default_value().is_empty(), "{}", k.name);
            assert!(!k.valid_values().is_empty(), "{}", k.name);
        }
    }

    #[test]
    fn every_key_is_in_the_help_with_its_default_and_range() {
        let help = keys_help();
        for k in KEYS {
            assert!(help.contains(&format!("  {}\n", k.name)), "{}", k.name);
            let line = format!(
                "default: {}; valid: {}",
                k.default_value(),
                k.valid_values()
            );
            assert!(help.contains(&line), "{}: {line}", k.name);
        }
        for section in SECTIONS {
            assert!(help.contains(&format!("[{section}]")), "{section}");
        }
        assert!(help.contains("shards.cross_shard_batch"));
        assert!(help.contains("default: 64; valid: 1 to 64"), "{help}");
        assert!(help.contains("default: 32Mi; valid: 4096 to 1Gi"), "{help}");
        assert!(help.contains("default: 12s; valid: 0s to 1h"), "{help}");
    }

    #[test]
    fn every_key_is_a_field_and_back() {
        // The serialized defaults hold exactly the keys of the list, and read back equal.
        let text = toml::to_string(&Settings::default()).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let mut names: Vec<String> = doc
            .iter()
            .flat_map(|(s, t)| {
                t.as_table()
                    .unwrap()
                    .keys()
                    .map(move |k| format!("{s}.{k}"))
            })
            .collect();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.name.to_string()).collect();
        names.sort();
        keys.sort();
        assert_eq!(names, keys);
        let mut sources = Sources::default();
        sources.merge_toml(&text, "defaults").unwrap();
        assert_eq!(
            sources.build(3).unwrap(),
            Settings::default().resolve(3).unwrap()
        );
    }

    #[test]
    fn toml_then_command_line() {
        let mut sources = Sources::default();
        sources
            .merge_toml(
                "[presence]\ngrace = \"1s\"\nusers_per_shard = 10\ntick = \"5ms\"\n\
                 [shards]\npin = false\n",
                "f",
            )
            .unwrap();
        sources.set_pair("shards.count=3").unwrap();
        sources.set_pair("presence.tick=20ms").unwrap();
        let s = sources.build(8).unwrap();
        assert_eq!(s.presence.grace, Duration::from_secs(1));
        assert_eq!(s.presence.users_per_shard, 10);
        assert_eq!(s.presence.tick, Duration::from_millis(20));
        assert!(!s.shards.pin);
        assert_eq!(s.shards.count, 3);
        assert!(s.ingest.shard_ports, "untouched keys keep their default");
    }

    #[test]
    fn the_allow_list_reads_networks_and_names_a_bad_one() {
        let mut sources = Sources::default();
        sources
            .merge_toml(
                "[ingest]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
                "f",
            )
            .unwrap();
        let s = sources.build(1).unwrap();
        let shown: Vec<String> = s.ingest.allow.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32"]);
        assert!(Sources::default().build(1).unwrap().ingest.allow.is_empty());
        let s = build(&["ingest.allow=127.0.0.2/32, 192.0.2.0/24"]).unwrap();
        assert_eq!(s.ingest.allow.len(), 2);
        let s = build(&["ingest.allow=[\"127.0.0.2\"]"]).unwrap();
        assert_eq!(s.ingest.allow, ["127.0.0.2/32".parse().unwrap()]);

        let e = build(&["ingest.allow=10.0.0.1/8"]).unwrap_err();
        assert_eq!(e.key, "ingest.allow");
        assert!(e.problem.contains("10.0.0.0/8"), "{e}");
        let e = build(&["ingest.allow=[1]"]).unwrap_err();
        assert_eq!(e.key, "ingest.allow");
        let many: Vec<String> = (0..=MAX_ALLOW_ENTRIES)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let e = build(&[&format!("ingest.allow={}", many.join(","))]).unwrap_err();
        assert_eq!(e.key, "ingest.allow");
        assert!(
            e.problem.contains(&format!("at most {MAX_ALLOW_ENTRIES}")),
            "{e}"
        );
        build(&[&format!("ingest.allow={}", many[1..].join(","))]).unwrap();
    }

    #[test]
    fn set_reads_each_type() {
        let s = build(&[
            "ingest.shard_ports=false",
            "shards.pin = true",
            "presence.grace=12s",
            "presence.idle_after=\"90s\"",
            "presence.users_per_shard=10M",
            "presence.multi_device_users=250k",
            "presence.max_devices_per_user=4",
            "ingest.recv_batch=1_000",
            "ingest.listen=127.0.0.1:7070",
            "ingest.listen_v6=[::1]:7070",
            "link.listen=[::1]:7060",
            "link.cert=/etc/presenced/cert.pem",
            "link.key=key.pem",
            "auth.keys_file=true",
            "auth.max_clock_skew=1500ms",
        ])
        .unwrap();
        assert!(!s.ingest.shard_ports);
        assert!(s.shards.pin);
        assert_eq!(s.presence.grace, Duration::from_secs(12));
        assert_eq!(s.presence.idle_after, Duration::from_secs(90));
        assert_eq!(s.presence.users_per_shard, 10_000_000);
        assert_eq!(s.presence.multi_device_users, Some(250_000));
        assert_eq!(s.presence.max_devices_per_user, 4);
        assert_eq!(s.ingest.recv_batch, 1000);
        assert_eq!(s.ingest.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(s.ingest.listen_v6, Some("[::1]:7070".parse().unwrap()));
        assert_eq!(s.link.listen, "[::1]:7060".parse().unwrap());
        assert_eq!(s.link.cert, Some(PathBuf::from("/etc/presenced/cert.pem")));
        assert_eq!(s.link.key, Some(PathBuf::from("key.pem")));
        assert_eq!(s.auth.keys_file, Some(PathBuf::from("true")));
        assert_eq!(s.auth.max_clock_skew, Duration::from_millis(1500));
        let s = build(&[
            "ingest.listen_v6=",
            "presence.multi_device_users=auto",
            "link.cert=\"\"",
            "link.key=",
        ])
        .unwrap();
        assert_eq!(s.ingest.listen_v6, None);
        assert_eq!(s.presence.multi_device_users, None);
        assert_eq!(
            s.presence.core_config().unwrap().multi_device_users,
            250_000
        );
        assert_eq!((s.link.cert, s.link.key), (None, None));
        // A quoted TOML string is read as TOML, quotes off.
        let s = build(&["link.cert=\"my cert.pem\"", "link.key='k.pem'"]).unwrap();
        assert_eq!(s.link.cert, Some(PathBuf::from("my cert.pem")));
        assert_eq!(s.link.key, Some(PathBuf::from("k.pem")));
    }

    #[test]
    fn errors_name_the_key() {
        let mut sources = Sources::default();
        let e = sources.set_pair("presence.nope=1").unwrap_err();
        assert_eq!(e.key, "presence.nope");
        assert!(
            e.to_string().contains("unknown key") && e.to_string().contains("--help"),
            "{e}"
        );
        let e = sources.set_pair("presence.max_links=1").unwrap_err();
        assert!(e.problem.contains("link.max_links"), "{e}");
        assert_eq!(sources.set_pair("grace=1s").unwrap_err().key, "grace");
        assert_eq!(
            sources.set_pair("presence.grace").unwrap_err().key,
            "presence.grace"
        );

        let e = build(&["presence.grace=12 parsecs"]).unwrap_err();
        assert_eq!(e.key, "presence.grace");
        assert!(e.to_string().contains("duration"), "{e}");
        let e = build(&["presence.grace=12"]).unwrap_err();
        assert_eq!(e.key, "presence.grace");
        assert!(e.problem.contains("\"12s\""), "{e}");
        assert_eq!(
            key_of(&["presence.max_devices_per_user=40"]),
            "presence.max_devices_per_user"
        );
        assert_eq!(key_of(&["shards.pin=yes"]), "shards.pin");
        assert_eq!(key_of(&["ingest.listen=localhost"]), "ingest.listen");
        assert_eq!(key_of(&["ingest.recv_batch=1.5"]), "ingest.recv_batch");
        assert_eq!(key_of(&["ingest.recv_batch=[1]"]), "ingest.recv_batch");
        assert_eq!(key_of(&["shards.count=-1"]), "shards.count");
        assert_eq!(
            key_of(&["presence.multi_device_users=many"]),
            "presence.multi_device_users"
        );
        // The core's own checks, named in the presence section.
        assert_eq!(
            key_of(&["presence.tick=1ms", "presence.last_seen_retention=365d"]),
            "presence.last_seen_retention"
        );
        assert_eq!(
            key_of(&[
                "presence.users_per_shard=100",
                "presence.multi_device_users=200"
            ]),
            "presence.multi_device_users"
        );

        // In the file: wrong types, keys outside sections, unknown keys.
        let file = |text: &str| {
            let mut sources = Sources::default();
            sources
                .merge_toml(text, "f")
                .and_then(|()| sources.build(1).map(drop))
                .unwrap_err()
        };
        assert_eq!(file("grace = 1").key, "grace");
        assert!(file("grace = 1").problem.contains("[presence]"));
        assert_eq!(file("[presence]\ngrace = 12").key, "presence.grace");
        assert_eq!(file("[presence]\nnope = 1").key, "presence.nope");
        assert_eq!(file("[shards]\npin = \"yes\"").key, "shards.pin");
        assert_eq!(file("[ingest]\nlisten = 7070").key, "ingest.listen");
        assert_eq!(file("[link]\ncert = 5").key, "link.cert");
        assert_eq!(file("[presence\n").key, "f");
    }

    #[test]
    fn unknown_sections_are_refused() {
        let mut sources = Sources::default();
        let e = sources.merge_toml("[x]\ny = 1", "f").unwrap_err();
        assert_eq!(e.key, "x");
        assert!(e.problem.contains("unknown section"), "{e}");
        assert!(e.problem.contains("[presence]"), "{e}");
        let e = sources.set_pair("x.y=1").unwrap_err();
        assert_eq!(e.key, "x");
        assert!(e.problem.contains("unknown section"), "{e}");
        // serde refuses them too (deny_unknown_fields), naming the key.
        let e = toml::from_str::<Settings>("[presence]\nnope = 1").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(toml::from_str::<Settings>("[x]\ny = 1").is_err());
    }

    /// A device's ticks wrap in 22 bits: its timeout, its idle window and the timeout back-off
    /// stretches it to stay under 2^20 ticks (5,243 s at a 5 ms tick).
    #[test]
    fn device_horizons_are_refused_by_key() {
        assert_eq!(
            key_of(&["presence.tick=5ms", "presence.idle_after=88m"]),
            "presence.idle_after"
        );
        let fits = ["presence.tick=5ms", "presence.idle_after=87m"];
        build(&fits).unwrap();
        // 20 s + 2 × 12 s stretched by 43 min ÷ 20 s: 5,676 s.
        assert_eq!(
            key_of(&[fits[0], fits[1], "ingest.backoff_interval=43m"]),
            "ingest.backoff_interval"
        );
        build(&[fits[0], fits[1], "ingest.backoff_interval=30m"]).unwrap();
        build(&[
            fits[0],
            fits[1],
            "ingest.backoff_interval=43m",
            "ingest.backoff=false",
        ])
        .unwrap();
    }

    #[test]
    fn clamped_values_are_refused() {
        // The shard's batch array holds bus::MAX_BATCH entries: more is an error, not a clamp.
        let e = build(&["shards.cross_shard_batch=65"]).unwrap_err();
        assert_eq!(e.key, "shards.cross_shard_batch");
        assert!(e.problem.contains("1 to 64"), "{e}");
        let s = build(&["shards.cross_shard_batch=64"]).unwrap();
        assert_eq!(
            s.shards.cross_shard_batch,
            presenced_node::bus::MAX_ENTRY_BATCH
        );
        assert_eq!(
            key_of(&["shards.cross_shard_batch=0"]),
            "shards.cross_shard_batch"
        );
        // A device's idle window stays under 2^20 ticks: 12 days at the longest tick (and
        // WELCOME's u32 of milliseconds, 49.7 days, holds it).
        assert_eq!(
            key_of(&["presence.tick=1s", "presence.idle_after=13d"]),
            "presence.idle_after"
        );
        let s = build(&["presence.tick=1s", "presence.idle_after=12d"]).unwrap();
        assert_eq!(s.presence.wire_timings().idle_after_ms, 12 * 86_400_000);
    }

    #[test]
    fn rules_across_keys() {
        let e = build(&["ingest.listen=127.0.0.1:65535", "shards.count=2"]).unwrap_err();
        assert_eq!(e.key, "ingest.shard_ports");
        build(&["ingest.listen=127.0.0.1:65533", "shards.count=2"]).unwrap();
        build(&[
            "ingest.listen=127.0.0.1:65535",
            "shards.count=2",
            "ingest.shard_ports=false",
        ])
        .unwrap();
        assert_eq!(key_of(&["link.cert=c.pem"]), "link.key");
        assert_eq!(key_of(&["link.key=k.pem"]), "link.cert");
        let e = build(&["auth.replay_window=4000"]).unwrap_err();
        assert_eq!(e.key, "auth.replay_window");
        assert!(e.problem.contains("power of two"), "{e}");
        assert_eq!(key_of(&["auth.replay_window=2Mi"]), "auth.replay_window");
        assert_eq!(
            build(&["auth.replay_window=64"])
                .unwrap()
                .auth
                .replay_window,
            64
        );
    }

    #[test]
    fn numbers_take_suffixes() {
        let mut sources = Sources::default();
        sources
            .merge_toml("[presence]\nusers_per_shard = \"10M\"\n", "f")
            .unwrap();
        sources.set_pair("ingest.socket_recv_buffer=32Mi").unwrap();
        sources
            .set_pair("presence.multi_device_users=250k")
            .unwrap();
        let s = sources.build(1).unwrap();
        assert_eq!(s.presence.users_per_shard, 10_000_000);
        assert_eq!(s.ingest.socket_recv_buffer_bytes, 32 << 20);
        assert_eq!(s.presence.multi_device_users, Some(250_000));
        for bad in ["10X", "k", "1.5M", "-1", "5000G", "2Gi", ""] {
            assert_eq!(
                key_of(&[&format!("presence.users_per_shard={bad}")]),
                "presence.users_per_shard",
                "{bad}"
            );
        }
        assert_eq!(parse_count("1_000"), Some(1000));
        assert_eq!(parse_count("4Gi"), Some(4 << 30));
        assert_eq!(parse_count("+5"), None);
        assert_eq!(parse_count("99999999999G"), None);
        assert_eq!(show_count(1 << 20), "1Mi");
        assert_eq!(show_count(1_000_000), "1M");
        assert_eq!(show_count(100_000), "100k");
        assert_eq!(show_count(8192), "8192");
        assert_eq!(show_count(12_345), "12345");
    }

    #[test]
    fn durations() {
        let grace =
            |text: &str| build(&[&format!("presence.grace={text}")]).map(|s| s.presence.grace);
        assert_eq!(grace("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(grace("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(grace("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(grace("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["5", "ms", "99999999999999999d", "-1s", "2h"] {
            assert_eq!(grace(bad).unwrap_err().key, "presence.grace", "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
        assert_eq!(show_duration(Duration::from_micros(100)), "100us");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn a_reload_names_the_changed_keys_that_need_a_restart() {
        let read = |text: &str| {
            let mut sources = Sources::default();
            sources.merge_toml(text, "f").unwrap();
            sources.build(2).unwrap()
        };
        let running = read("[log]\nlevel = \"info\"\n[presence]\ngrace = \"12s\"\n");
        let same = read("[log]\nlevel = \"debug\"\n[presence]\ngrace = \"12s\"\n");
        assert!(running.differences_needing_restart(&same).is_empty());
        assert_eq!(running.reloadable_differences(&same), vec!["log.level"]);
        let changed = read(
            "[presence]\ngrace = \"5s\"\n[link]\nmax_links = 7\nqueue_bytes = 8\n\
             listen = \"127.0.0.1:7061\"\n",
        );
        assert_eq!(
            running.differences_needing_restart(&changed),
            vec!["link.listen", "presence.grace"]
        );
        assert_eq!(
            running.reloadable_differences(&changed),
            vec!["link.max_links", "link.queue_bytes"]
        );
    }

    #[test]
    fn every_reloadable_key_is_a_key_and_the_link_limits_round_trip() {
        for key in Settings::RELOADABLE {
            assert!(KEYS.iter().any(|k| k.name == *key), "{key}");
        }
        let mut limits = LinkSettings::default().limits();
        limits.max_links = 3;
        limits.idle_timeout = Duration::from_secs(9);
        let mut link = LinkSettings::default();
        link.set_limits(limits);
        assert_eq!(link.limits(), limits);
        assert_eq!(link.listen, LinkSettings::default().listen);
    }

    #[test]
    fn listening_beyond_loopback_needs_a_key_file_or_saying_so() {
        let build = |text: &str| {
            let mut sources = Sources::default();
            sources.merge_toml(text, "f").unwrap();
            sources.build(2)
        };
        let e = build("[ingest]\nlisten = \"0.0.0.0:7070\"\n").unwrap_err();
        assert_eq!(e.key, "auth.keys_file");
        assert!(e.problem.contains("ingest.listen = 0.0.0.0:7070"), "{e}");
        assert!(e.problem.contains("allow_unauthenticated"), "{e}");
        let e = build("[link]\nlisten = \"[::]:7060\"\n").unwrap_err();
        assert!(e.problem.contains("link.listen"), "{e}");
        let said =
            build("[ingest]\nlisten = \"0.0.0.0:7070\"\n[auth]\nallow_unauthenticated = true\n")
                .unwrap();
        assert!(said.warnings()[0].contains("allow_unauthenticated"));
        let keyed =
            build("[ingest]\nlisten = \"0.0.0.0:7070\"\n[auth]\nkeys_file = \"/etc/k.toml\"\n")
                .unwrap();
        assert!(keyed.warnings().is_empty());
    }

    #[test]
    fn risky_values_are_warned_about_by_key() {
        let mut sources = Sources::default();
        sources
            .merge_toml(
                "[presence]\ngrace = \"0s\"\n[auth]\nmax_clock_skew = \"100ms\"\n",
                "f",
            )
            .unwrap();
        let w = sources.build(2).unwrap().warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("presence.grace = 0s"));
        assert!(w[1].starts_with("auth.max_clock_skew = 100ms"));
        assert!(Settings::default().warnings().is_empty());
    }

    #[test]
    fn a_cluster_member_needs_an_id_a_lease_of_whole_seconds_and_addresses_to_advertise() {
        let s = build(&[]).unwrap();
        assert!(!s.cluster.enabled());
        assert_eq!(s.cluster.lease, Duration::from_secs(2));
        assert_eq!(s.cluster.replicas, 2);
        assert_eq!(s.cluster.prefix(), "/presenced/members/");
        let core = s.presence.core_config().unwrap();
        assert_eq!(s.cluster.warm_for(&core), Duration::from_secs(88));

        let on = "cluster.etcd=http://127.0.0.1:2379, http://10.0.0.2:2379/";
        let s = build(&[
            on,
            "cluster.member=m-1",
            "cluster.name=prod.eu",
            "cluster.lease=3s",
            "cluster.warm=5s",
            "cluster.advertise_link=presence-1.example:7060",
        ])
        .unwrap();
        assert!(s.cluster.enabled());
        assert_eq!(s.cluster.etcd.len(), 2);
        assert_eq!(s.cluster.etcd[0].as_str(), "http://127.0.0.1:2379");
        assert_eq!(s.cluster.member.as_deref(), Some("m-1"));
        assert_eq!(s.cluster.prefix(), "/prod.eu/members/");
        assert_eq!(s.cluster.warm_for(&core), Duration::from_secs(5));
        let bound = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            s.cluster
                .advertised(bound("127.0.0.1:40000"), bound("127.0.0.1:40001")),
            (
                "presence-1.example:7060".to_string(),
                "127.0.0.1:40001".to_string()
            )
        );

        let e = build(&[on]).unwrap_err();
        assert_eq!(e.key, "cluster.member");
        assert!(e.problem.contains("cluster.etcd is set"), "{e}");
        for bad in ["1s", "1500ms", "2500ms", "10m"] {
            let e = build(&[on, "cluster.member=a", &format!("cluster.lease={bad}")]).unwrap_err();
            assert_eq!(e.key, "cluster.lease", "{bad}");
            assert!(e.problem.contains("whole seconds"), "{bad}: {e}");
        }
        let e = build(&[on, "cluster.member=a", "cluster.skew_allowance=1s"]).unwrap_err();
        assert_eq!(e.key, "cluster.skew_allowance");
        assert!(e.problem.contains("half of cluster.lease"), "{e}");
        build(&[on, "cluster.member=a", "cluster.skew_allowance=999ms"]).unwrap();
        assert_eq!(key_of(&["cluster.member=a b"]), "cluster.member");
        assert_eq!(key_of(&["cluster.name=a/b"]), "cluster.name");
        assert_eq!(key_of(&["cluster.name="]), "cluster.name");
        assert_eq!(key_of(&["cluster.replicas=0"]), "cluster.replicas");
        assert_eq!(key_of(&["cluster.replicas=9"]), "cluster.replicas");
        assert_eq!(key_of(&["cluster.etcd=127.0.0.1:2379"]), "cluster.etcd");
        assert_eq!(key_of(&["cluster.etcd=https://e:2379"]), "cluster.etcd");
        assert_eq!(key_of(&["cluster.etcd=http://e"]), "cluster.etcd");
        assert_eq!(key_of(&["cluster.warm=soon"]), "cluster.warm");
        for bad in ["nohost", ":7060", "h:0", "h:70000"] {
            assert_eq!(
                key_of(&[&format!("cluster.advertise_heartbeat={bad}")]),
                "cluster.advertise_heartbeat",
                "{bad}"
            );
        }
        let everywhere = [
            on,
            "cluster.member=a",
            "link.listen=0.0.0.0:7060",
            "auth.allow_unauthenticated=true",
        ];
        let e = build(&everywhere).unwrap_err();
        assert_eq!(e.key, "cluster.advertise_link");
        assert!(e.problem.contains("link.listen = 0.0.0.0:7060"), "{e}");
        let mut advertised = everywhere.to_vec();
        advertised.push("cluster.advertise_link=10.0.0.5:7060");
        build(&advertised).unwrap();
    }

    #[test]
    fn shipped_config_parses() {
        let mut sources = Sources::default();
        sources
            .merge_toml(
                include_str!("../systemd/presenced.toml"),
                "systemd/presenced.toml",
            )
            .unwrap();
        let s = sources.build(2).unwrap();
        assert_eq!(s.ingest.listen, v4([127, 0, 0, 1], 7070));
        assert_eq!(s.link.listen.port(), 7060);
        assert_eq!(
            s.shards.count, 1,
            "one core of two kept for the service threads"
        );
        assert_eq!(s.state.dir, PathBuf::from("/var/lib/presenced"));
    }
}
