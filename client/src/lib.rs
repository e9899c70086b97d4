//! The gateway-side client: what a gateway (and every tool and test here) uses to talk to the
//! daemon. [`HeartbeatClient`] batches heartbeat entries into full UDP datagrams and routes
//! them to the owning shard's port; [`LinkClient`] speaks the QUIC push link (subscribe,
//! query, stats, history, pushed transitions), protocol version 2 with a daemon that speaks
//! it and version 1 with one that does not; [`Watcher`] watches users over a link it keeps up,
//! reconnecting when the daemon restarts and reporting only what changed meanwhile. One
//! implementation, shared by `presencectl`, the load generator and the integration tests.

pub mod cluster;
mod heartbeat;
mod link;
mod pace;
mod tls;
pub mod watcher;

pub use heartbeat::{entry, HeartbeatClient};
pub use link::{LinkClient, RawLink};
pub use pace::Pacer;
pub use presenced_wire::link::{GoAwayReason, Span, Version};
pub use tls::client_config;
pub use watcher::{RecordReason, WatchConfig, WatchEvent, Watcher};

use presenced_wire::link::{ErrorCode, Event, Limits, PresenceRecord, Timings};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reads a gateway key file (64 hex digits, surrounding whitespace ignored). The error says
/// what is wrong; callers add the file and the option it came from.
pub fn read_key_file(path: &Path) -> Result<presenced_wire::auth::Key, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    presenced_wire::auth::Key::from_hex(&text).map_err(|e| e.to_string())
}

/// Reads a link token file (its text, surrounding whitespace ignored).
pub fn read_token_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

/// Whom the client trusts to be the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Any certificate, for a daemon on this host using its generated self-signed certificate.
    /// Refused for addresses other than loopback.
    InsecureLocal,
    /// Certificates issued by the CA in this PEM file.
    CaFile(PathBuf),
}

/// How to connect a push link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The gateway's name in the daemon's logs (at most 64 bytes).
    pub client_name: String,
    /// Whom to trust.
    pub trust: Trust,
    /// The name the daemon's certificate must carry (`localhost` for the self-signed one).
    pub server_name: String,
    /// The link's token, for a daemon whose key file lists `[links]` (`client_name` must then
    /// be the link's name there).
    pub token: Option<String>,
}

impl ConnectOptions {
    /// Options for a daemon on this host with its self-signed certificate.
    pub fn local(client_name: &str) -> ConnectOptions {
        ConnectOptions {
            client_name: client_name.into(),
            trust: Trust::InsecureLocal,
            server_name: "localhost".into(),
            token: None,
        }
    }
}

/// Something the daemon pushed without being asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    /// Transitions, in the order they arrived (per user, in version order).
    Events(Vec<Event>),
    /// Transitions of these users were dropped: query them again.
    Lagged {
        /// The users.
        users: Vec<u64>,
    },
    /// Transitions of any watched user may have been dropped (by the daemon, or by this client
    /// when the application fell more than `LinkClient::MAX_BUFFERED_EVENTS` behind): query
    /// every watched user again.
    LaggedAll,
    /// The link ended; no push follows. After a daemon's GOAWAY (version 2) or ERROR
    /// `shutting_down` (version 1) the code is [`ErrorCode::ShuttingDown`]; reconnect as
    /// SPEC.md § P6.11 says (after `go_away`'s `reconnect_after` plus jitter, then HELLO and
    /// SUBSCRIBE again).
    Closed {
        /// The daemon's error code, if it gave one.
        code: Option<ErrorCode>,
        /// Why, in words.
        message: String,
        /// The daemon's GOAWAY, when it said it was going away (version 2 links).
        go_away: Option<GoAway>,
    },
}

/// A daemon's GOAWAY (version 2): it stops or restarts, and the link is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// Why (a reason this client does not know reads as
    /// [`ShuttingDown`](GoAwayReason::ShuttingDown)).
    pub reason: GoAwayReason,
    /// Wait at least this long, plus jitter, before reconnecting.
    pub reconnect_after: Duration,
}

/// What the link negotiated, beyond WELCOME's shards, limits and timings
/// ([`LinkClient::link_info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link's protocol version: the newest both sides speak (3, 2 or 1).
    pub version: Version,
    /// Whether WELCOME said the daemon was warming: it started without its saved state, so
    /// for `warm_remaining` its answers may show users offline who are online (SPEC.md
    /// § P6.10). Always false on a version-1 link (a version-1 daemon does not say).
    pub warming: bool,
    /// How much longer the daemon was warming when it sent WELCOME (zero when not warming).
    pub warm_remaining: Duration,
    /// The link's QUIC idle timeout as WELCOME stated it (`None` on a version-1 link, or when
    /// the daemon has none).
    pub idle_timeout: Option<Duration>,
    /// The QUIC keep-alive interval this client uses on the link: a third of the idle timeout
    /// at most.
    pub keep_alive: Duration,
}

/// Records answering a SUBSCRIBE or QUERY, and whether the daemon read any of them while
/// warming ([`LinkClient::subscribe_snapshot`], [`LinkClient::query_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// One record per listed user, in the order listed.
    pub records: Vec<PresenceRecord>,
    /// Some record came in a PRESENCE frame marked `WARMING`: an offline among them may be
    /// wrong; hold it back until a transition confirms it or warming ends, then query again
    /// (SPEC.md § P6.10).
    pub warming: bool,
}

/// One page of a user's presence history ([`LinkClient::history`]), or all of it up to a
/// bound ([`LinkClient::history_all`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The spans, in version order (each from one transition to the next).
    pub spans: Vec<Span>,
    /// The user's last seen, Unix milliseconds; `None` when unknown.
    pub last_seen_ms: Option<u64>,
    /// More spans follow: ask again with `after_version` = the last span's version.
    pub more: bool,
}

/// What WELCOME told the client about the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WelcomeInfo {
    /// The shared heartbeat UDP port.
    pub heartbeat_port: u16,
    /// Each shard's heartbeat port (0: use the shared port).
    pub shard_ports: Vec<u16>,
    /// Number of shards.
    pub shard_count: u16,
    /// The daemon's per-link limits.
    pub limits: Limits,
    /// The daemon's presence timings.
    pub timings: Timings,
}

impl WelcomeInfo {
    /// The shared heartbeat address and each shard's, on host `ip` (the daemon's address), for
    /// [`HeartbeatClient::new`] and [`HeartbeatClient::with_shard_ports`].
    pub fn heartbeat_addrs(&self, ip: IpAddr) -> (SocketAddr, Vec<SocketAddr>) {
        let shared = SocketAddr::new(ip, self.heartbeat_port);
        let shards = self
            .shard_ports
            .iter()
            .map(|&p| {
                if p == 0 {
                    shared
                } else {
                    SocketAddr::new(ip, p)
                }
            })
            .collect();
        (shared, shards)
    }
}

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket operation failed.
    Io(std::io::Error),
    /// Bad options (the message says which and how to fix it).
    Config(String),
    /// The TLS configuration could not be built.
    Tls(String),
    /// The QUIC connection could not be set up.
    Connect(String),
    /// The daemon sent something this client does not understand, or nothing in time.
    Protocol(String),
    /// The daemon refused the request (an ERROR frame with its request id).
    Refused {
        /// The error code (`None`: one this version does not know).
        code: Option<ErrorCode>,
        /// The daemon's explanation.
        message: String,
    },
    /// The link is closed.
    Closed {
        /// The daemon's error code, if it gave one.
        code: Option<ErrorCode>,
        /// Why, in words.
        message: String,
    },
    /// An entry or request could not be encoded (user id 0, for one).
    Encode(String),
    /// The daemon's STATS_REPLY is not JSON of the stats schema
    /// ([`presenced_wire::stats::Stats`]): a field is missing, renamed or mistyped (a daemon
    /// of another version). The message is the parser's, naming the field.
    StatsSchema(String),
    /// The link's protocol version does not have this request (HISTORY on a version-1 link:
    /// the daemon speaks only version 1). Nothing was sent.
    Unsupported(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Config(m) => write!(f, "bad option: {m}"),
            ClientError::Tls(m) => write!(f, "TLS: {m}"),
            ClientError::Connect(m) => write!(f, "cannot connect: {m}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Refused { code, message } => match code {
                Some(code) => write!(f, "refused ({code}){}", detail(*code, message)),
                None => write!(f, "refused: {message}"),
            },
            ClientError::Closed { code, message } => match code {
                Some(code) => write!(f, "link closed ({code}){}", detail(*code, message)),
                None => write!(f, "link closed: {message}"),
            },
            ClientError::Encode(m) => write!(f, "cannot encode: {m}"),
            ClientError::StatsSchema(m) => write!(
                f,
                "the daemon's stats do not match this client's stats schema \
                 (a daemon of another version?): {m}"
            ),
            ClientError::Unsupported(m) => write!(f, "not supported by the daemon: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// `: ` and the daemon's message for a display that already names `code`, without the reason
/// name the message starts with when that is the code's own (SPEC.md § P4): `refused
/// (too_many_users): 11 users …`, not `… (too_many_users): too_many_users: 11 users …`. Other
/// reasons (the § P7 reason of a `bad_frame`) stay.
fn detail(code: ErrorCode, message: &str) -> String {
    let rest = match message.strip_prefix(code.name()) {
        Some(rest) if rest.is_empty() || rest.starts_with(':') => rest.trim_start_matches(':'),
        _ => message,
    };
    let rest = rest.trim_start();
    if rest.is_empty() {
        String::new()
    } else {
        format!(": {rest}")
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<presenced_wire::EncodeError> for ClientError {
    fn from(e: presenced_wire::EncodeError) -> Self {
        ClientError::Encode(e.to_string())
    }
}

impl From<presenced_wire::link::EncodeError> for ClientError {
    fn from(e: presenced_wire::link::EncodeError) -> Self {
        ClientError::Encode(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_reason_name_once() {
        let refused = |message: &str| ClientError::Refused {
            code: Some(ErrorCode::TooManyUsers),
            message: message.into(),
        };
        let shown = refused("too_many_users: 11 users").to_string();
        assert_eq!(shown, "refused (too_many_users): 11 users");
        assert_eq!(
            refused("too_many_users").to_string(),
            "refused (too_many_users)"
        );
        let older = refused("11 users in one request").to_string();
        assert_eq!(older, "refused (too_many_users): 11 users in one request");
        let closed = ClientError::Closed {
            code: Some(ErrorCode::BadFrame),
            message: "zero_request_id: request id is 0".into(),
        };
        let shown = closed.to_string();
        assert_eq!(
            shown,
            "link closed (bad_frame): zero_request_id: request id is 0"
        );
    }
}
