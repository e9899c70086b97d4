//! The daemon's settings: one table of keys with defaults and help, filled from a TOML file and
//! the command line, parsed into typed values with errors that name the key and the fix.

use presenced_core::config::CoreConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One setting: its dotted name (`section.key` in TOML), default, and what it does.
pub struct Key {
    /// Dotted name, e.g. `presence.grace`.
    pub name: &'static str,
    /// Default value, as written in TOML or on the command line.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every setting the daemon has.
pub const KEYS: &[Key] = &[
    Key { name: "ingest.listen", default: "127.0.0.1:7070", help: "UDP address for heartbeat datagrams (every shard listens on it with SO_REUSEPORT)" },
    Key { name: "ingest.listen_v6", default: "", help: "optional second UDP address, e.g. [::1]:7070 (empty: none)" },
    Key { name: "ingest.shard_ports", default: "true", help: "each shard also listens on its own port (listen port + 1 + shard index) so shard-aware gateways skip the cross-shard hop" },
    Key { name: "ingest.recv_batch", default: "32", help: "datagrams read per recvmmsg call (1..=1024)" },
    Key { name: "ingest.socket_recv_buffer", default: "32Mi", help: "SO_RCVBUF bytes per socket: room for a burst (32 MiB holds about 1M heartbeat entries); capped at net.core.rmem_max unless the process has CAP_NET_ADMIN, with a warning at start" },
    Key { name: "shards.count", default: "0", help: "shard threads; 0 = one per available core" },
    Key { name: "shards.pin", default: "true", help: "pin shard i to the i-th core this process may run on" },
    Key { name: "shards.cross_shard_queue", default: "1024", help: "batches a shard's inbox holds; beyond it entries are shed and counted" },
    Key { name: "shards.cross_shard_batch", default: "64", help: "heartbeat entries per batch sent to another shard (1..=256)" },
    Key { name: "shards.link_outbox", default: "4096", help: "transition batches a shard holds for the push link; beyond it transitions are shed and counted" },
    Key { name: "presence.tick", default: "10ms", help: "timing-wheel resolution: offline is detected within one tick of the deadline" },
    Key { name: "presence.heartbeat_interval", default: "20s", help: "how often gateways send each live device's heartbeat" },
    Key { name: "presence.grace", default: "12s", help: "allowance for delay and jitter: a device is offline after heartbeat_interval + 2 × grace of silence" },
    Key { name: "presence.idle_after", default: "5m", help: "a device with no activity flag for this long is idle" },
    Key { name: "presence.last_seen_retention", default: "30d", help: "how long an offline user's last seen is kept" },
    Key { name: "presence.users_per_shard", default: "1000000", help: "users (online or remembered) one shard holds; new users beyond it are refused and counted" },
    Key { name: "presence.max_devices_per_user", default: "8", help: "devices one user may have at once (1..=31); more are refused and counted" },
    Key { name: "presence.multi_device_users", default: "auto", help: "users with two devices or more one shard holds (auto: a quarter of users_per_shard); further second devices are refused and counted" },
    Key { name: "link.listen", default: "127.0.0.1:7060", help: "UDP address of the QUIC push link" },
    Key { name: "link.cert", default: "", help: "PEM certificate chain for the push link (empty: a self-signed certificate for localhost)" },
    Key { name: "link.key", default: "", help: "PEM private key for link.cert" },
    Key { name: "link.max_links", default: "1024", help: "gateway links at once; more are refused" },
    Key { name: "link.max_frame_len", default: "1048576", help: "largest frame accepted or sent, bytes" },
    Key { name: "link.max_users_per_request", default: "100000", help: "user ids in one subscribe, unsubscribe or query" },
    Key { name: "link.max_subscriptions", default: "1000000", help: "users one link may be subscribed to" },
    Key { name: "link.max_requests_in_flight", default: "64", help: "requests of one link being answered at once" },
    Key { name: "link.queue_depth", default: "1024", help: "frames queued for one gateway; a gateway that falls further behind is told it lagged" },
    Key { name: "auth.keys_file", default: "", help: "gateway key file (TOML [gateways] id = \"<64 hex digits>\", mode 0600; reloaded on SIGHUP); set, every datagram must be signed (empty: unauthenticated datagrams only)" },
    Key { name: "auth.max_clock_skew", default: "30s", help: "a signed datagram's send time may differ from the daemon's clock by this much" },
    Key { name: "auth.replay_window", default: "8192", help: "sequence numbers remembered per gateway for anti-replay (a power of two, 64..=1048576; 8 bytes each)" },
    Key { name: "auth.max_gateways", default: "4096", help: "gateways the key file may list" },
];

/// A setting the daemon cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The key at fault (or the file).
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

/// Raw values by key, defaults first, then the file, then the command line.
pub struct Raw(BTreeMap<&'static str, String>);

impl Default for Raw {
    fn default() -> Self {
        Raw(KEYS
            .iter()
            .map(|k| (k.name, k.default.to_string()))
            .collect())
    }
}

impl Raw {
    /// Sets one key; unknown keys are an error that lists where to find the known ones.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        let known = KEYS
            .iter()
            .find(|k| k.name == key)
            .ok_or_else(|| error(key, "unknown key; `presenced --help` lists every key"))?;
        self.0.insert(known.name, value.to_string());
        Ok(())
    }

    /// Reads `KEY=VALUE` (as given to `--set`).
    pub fn set_pair(&mut self, pair: &str) -> Result<(), SettingsError> {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| error(pair, "expected KEY=VALUE, e.g. presence.grace=12s"))?;
        self.set(key.trim(), value.trim())
    }

    /// Merges a TOML document: tables are sections, e.g. `[presence] grace = "12s"`.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| error(origin, format!("not valid TOML: {e}")))?;
        for (section, body) in &doc {
            let table = body.as_table().ok_or_else(|| {
                error(section, "top-level keys must be tables such as [presence]")
            })?;
            for (name, value) in table {
                let key = format!("{section}.{name}");
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(error(
                            &key,
                            format!("expected a string, integer or boolean, got {other}"),
                        ))
                    }
                };
                self.set(&key, &text)?;
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .map(String::as_str)
            .expect("every key has a default")
    }

    /// A whole number, with `_` separators and an optional suffix: `k`, `M`, `G` (×1000) or
    /// `Ki`, `Mi`, `Gi` (×1024), as in `users_per_shard = "10M"`, `socket_recv_buffer = "32Mi"`.
    fn num<T>(&self, key: &str, min: T, max: T) -> Result<T, SettingsError>
    where
        T: TryFrom<u64> + PartialOrd + fmt::Display + Copy,
    {
        let text = self.get(key);
        let bad = || {
            error(
                key,
                format!("`{text}` is not a whole number (suffixes k, M, G, Ki, Mi, Gi allowed)"),
            )
        };
        let digits = text.replace('_', "");
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
        let v = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(bad)?;
        let v = T::try_from(v).map_err(|_| error(key, format!("is {v}; use {min} to {max}")))?;
        if v < min || v > max {
            return Err(error(key, format!("is {v}; use {min} to {max}")));
        }
        Ok(v)
    }

    fn flag(&self, key: &str) -> Result<bool, SettingsError> {
        match self.get(key) {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(error(key, format!("`{other}` is not true or false"))),
        }
    }

    fn addr(&self, key: &str) -> Result<Option<SocketAddr>, SettingsError> {
        let text = self.get(key);
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            error(
                key,
                format!("`{text}` is not an address such as 127.0.0.1:7070 or [::1]:7070"),
            )
        })
    }

    fn duration_us(&self, key: &str) -> Result<u64, SettingsError> {
        let text = self.get(key);
        parse_duration_us(text).ok_or_else(|| {
            error(
                key,
                format!("`{text}` is not a duration such as 500us, 10ms, 20s, 5m, 2h or 30d"),
            )
        })
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let text = self.get(key);
        (!text.is_empty()).then(|| PathBuf::from(text))
    }
}

/// Parses `<integer><unit>` with unit us, ms, s, m, h or d, into microseconds.
pub fn parse_duration_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Typed settings of the whole daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Heartbeat address (SO_REUSEPORT group).
    pub listen: SocketAddr,
    /// Optional second heartbeat address (typically IPv6).
    pub listen_v6: Option<SocketAddr>,
    /// Whether each shard also has its own port.
    pub shard_ports: bool,
    /// Datagrams per receive call.
    pub recv_batch: usize,
    /// SO_RCVBUF per socket.
    pub socket_recv_buffer: usize,
    /// Shard threads.
    pub shards: usize,
    /// Whether shard threads are pinned to cores.
    pub pin: bool,
    /// Batches a shard inbox holds.
    pub cross_shard_queue: usize,
    /// Entries per cross-shard batch.
    pub cross_shard_batch: usize,
    /// Messages a shard holds for the push link.
    pub link_outbox: usize,
    /// The presence core's settings (per shard).
    pub core: CoreConfig,
    /// Push-link address.
    pub link_listen: SocketAddr,
    /// Certificate chain and key files, or `None` for a self-signed certificate.
    pub link_tls: Option<(PathBuf, PathBuf)>,
    /// Links at once.
    pub max_links: usize,
    /// Largest frame.
    pub max_frame_len: usize,
    /// User ids per request.
    pub max_users_per_request: usize,
    /// Subscriptions per link.
    pub max_subscriptions: usize,
    /// Requests in flight per link.
    pub max_requests_in_flight: usize,
    /// Frames queued per gateway.
    pub queue_depth: usize,
    /// The gateway key file, or `None`: authentication off.
    pub keys_file: Option<PathBuf>,
    /// Allowed difference between a signed datagram's send time and the daemon's clock, ms.
    pub max_clock_skew_ms: u64,
    /// Anti-replay slots per gateway.
    pub replay_window: usize,
    /// Gateways the key file may list.
    pub max_gateways: usize,
}

impl Raw {
    /// Parses and checks every value; `cores` is the number of cores available.
    pub fn parse(&self, cores: usize) -> Result<Settings, SettingsError> {
        let listen = self
            .addr("ingest.listen")?
            .ok_or_else(|| error("ingest.listen", "is empty; give an address"))?;
        let link_listen = self
            .addr("link.listen")?
            .ok_or_else(|| error("link.listen", "is empty; give an address"))?;
        let shards = match self.num("shards.count", 0usize, 1024)? {
            0 => cores.max(1),
            n => n,
        };
        let shard_ports = self.flag("ingest.shard_ports")?;
        if shard_ports && usize::from(listen.port()) + shards >= 65536 {
            return Err(error(
                "ingest.shard_ports",
                "the per-shard ports would run past 65535; lower ingest.listen's port",
            ));
        }
        let link_tls = match (self.path("link.cert"), self.path("link.key")) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
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
        };
        let user_capacity = self.num("presence.users_per_shard", 1u32, 1 << 30)?;
        let core = CoreConfig {
            tick_us: self.duration_us("presence.tick")?,
            heartbeat_interval_us: self.duration_us("presence.heartbeat_interval")?,
            grace_us: self.duration_us("presence.grace")?,
            idle_after_us: self.duration_us("presence.idle_after")?,
            last_seen_retention_us: self.duration_us("presence.last_seen_retention")?,
            user_capacity,
            max_devices_per_user: self.num("presence.max_devices_per_user", 1u8, 31)?,
            multi_device_users: match self.get("presence.multi_device_users") {
                "auto" => user_capacity / 4,
                _ => self.num("presence.multi_device_users", 0u32, 1 << 30)?,
            },
            hash_seed: 0,
        };
        core.validate()
            .map_err(|e| error(&format!("presence.{}", e.key), e.problem))?;
        Ok(Settings {
            listen,
            listen_v6: self.addr("ingest.listen_v6")?,
            shard_ports,
            recv_batch: self.num("ingest.recv_batch", 1usize, 1024)?,
            socket_recv_buffer: self.num("ingest.socket_recv_buffer", 4096usize, 1 << 30)?,
            shards,
            pin: self.flag("shards.pin")?,
            cross_shard_queue: self.num("shards.cross_shard_queue", 1usize, 1 << 20)?,
            cross_shard_batch: self.num("shards.cross_shard_batch", 1usize, 256)?,
            link_outbox: self.num("shards.link_outbox", 1usize, 1 << 20)?,
            core,
            link_listen,
            link_tls,
            max_links: self.num("link.max_links", 1usize, 1 << 16)?,
            max_frame_len: self.num("link.max_frame_len", 65_536usize, 64 << 20)?,
            max_users_per_request: self.num("link.max_users_per_request", 1usize, 1 << 24)?,
            max_subscriptions: self.num("link.max_subscriptions", 1usize, 1 << 28)?,
            max_requests_in_flight: self.num("link.max_requests_in_flight", 1usize, 1 << 16)?,
            queue_depth: self.num("link.queue_depth", 1usize, 1 << 20)?,
            keys_file: self.path("auth.keys_file"),
            max_clock_skew_ms: self.duration_us("auth.max_clock_skew")? / 1000,
            replay_window: {
                let n = self.num("auth.replay_window", 64usize, 1 << 20)?;
                if !n.is_power_of_two() {
                    return Err(error(
                        "auth.replay_window",
                        format!("{n} is not a power of two; use e.g. 4096 or 8192"),
                    ));
                }
                n
            },
            max_gateways: self.num("auth.max_gateways", 1usize, 1 << 20)?,
        })
    }
}

/// The key table as help text: one line per key with its default.
pub fn keys_help() -> String {
    let mut out =
        String::from("Settings (TOML `[section] key = value`, or `--set section.key=value`; numbers take k, M, G or Ki, Mi, Gi, durations us, ms, s, m, h, d):\n");
    for k in KEYS {
        let default = if k.default.is_empty() {
            "\"\""
        } else {
            k.default
        };
        out.push_str(&format!(
            "  {:<34} {}\n  {:<34} default: {}\n",
            k.name, k.help, "", default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Raw::default().parse(4).unwrap();
        assert_eq!(s.shards, 4);
        assert_eq!(s.core.timeout_us(), 44_000_000);
        assert_eq!(s.core.last_seen_retention_us, 30 * 86_400_000_000);
    }

    #[test]
    fn toml_and_overrides() {
        let mut raw = Raw::default();
        raw.merge_toml(
            "[presence]\ngrace = \"1s\"\nusers_per_shard = 10\n[shards]\npin = false\n",
            "f",
        )
        .unwrap();
        raw.set_pair("shards.count=3").unwrap();
        let s = raw.parse(8).unwrap();
        assert_eq!(
            (s.core.grace_us, s.core.user_capacity, s.pin, s.shards),
            (1_000_000, 10, false, 3)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut raw = Raw::default();
        assert_eq!(
            raw.set_pair("presence.nope=1").unwrap_err().key,
            "presence.nope"
        );
        raw.set_pair("presence.grace=12 parsecs").unwrap();
        let e = raw.parse(1).unwrap_err();
        assert_eq!(e.key, "presence.grace");
        assert!(e.to_string().contains("duration"), "{e}");
        let mut raw = Raw::default();
        raw.set_pair("presence.max_devices_per_user=40").unwrap();
        assert_eq!(
            raw.parse(1).unwrap_err().key,
            "presence.max_devices_per_user"
        );
        let mut raw = Raw::default();
        raw.set_pair("presence.tick=1ms").unwrap();
        raw.set_pair("presence.last_seen_retention=365d").unwrap();
        assert_eq!(
            raw.parse(1).unwrap_err().key,
            "presence.last_seen_retention"
        );
        let mut raw = Raw::default();
        assert!(raw.merge_toml("grace = 1", "f").is_err());
        assert_eq!(raw.merge_toml("[x]\ny = 1", "f").unwrap_err().key, "x.y");
    }

    #[test]
    fn numbers_take_suffixes() {
        let mut raw = Raw::default();
        raw.merge_toml("[presence]\nusers_per_shard = \"10M\"\n", "f")
            .unwrap();
        raw.set_pair("ingest.socket_recv_buffer=32Mi").unwrap();
        raw.set_pair("presence.multi_device_users=250k").unwrap();
        let s = raw.parse(1).unwrap();
        assert_eq!(s.core.user_capacity, 10_000_000);
        assert_eq!(s.socket_recv_buffer, 32 << 20);
        assert_eq!(s.core.multi_device_users, 250_000);
        for bad in ["10X", "k", "1.5M", "-1", "5000G"] {
            let mut raw = Raw::default();
            raw.set_pair(&format!("presence.users_per_shard={bad}"))
                .unwrap();
            let e = raw.parse(1).unwrap_err();
            assert_eq!(e.key, "presence.users_per_shard", "{bad}");
        }
    }

    #[test]
    fn shipped_config_parses() {
        let mut raw = Raw::default();
        raw.merge_toml(
            include_str!("../systemd/presenced.toml"),
            "systemd/presenced.toml",
        )
        .unwrap();
        let s = raw.parse(2).unwrap();
        assert_eq!(s.listen.port(), 7070);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("10ms"), Some(10_000));
        assert_eq!(parse_duration_us("5m"), Some(300_000_000));
        assert_eq!(parse_duration_us("5"), None);
        assert_eq!(parse_duration_us("ms"), None);
        assert_eq!(parse_duration_us("99999999999999999d"), None);
    }
}
