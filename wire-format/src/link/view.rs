//! The decoded frames: what [`decode_client`], [`decode_server`] and the version-aware
//! [`Version::decode_client`] and [`Version::decode_server`] return, borrowing the frame's
//! bytes (strings, tokens and lists are not copied).
//!
//! It exists to hold the link's frame types apart from the code that reads and writes them.
//! Every list in a frame is a [`FixedList`] of records validated by the decoder; the names
//! below ([`UserList`], [`PresenceList`], [`EventList`], [`SpanList`], [`ShardPorts`] and their
//! iterators) are that one view at each record type.
//!
//! [`ClientFrame`] is version 1's set of gateway → daemon frames, which both versions share;
//! [`GatewayFrame`] adds the ones version 2 brings (HISTORY). [`ServerFrame`] covers both
//! versions (a version-1 decoder never returns GOAWAY or HISTORY_REPLY).

#[cfg(doc)]
use super::{
    decode_client, decode_server, encode_error, MAX_CLIENT_NAME_LEN, MAX_ERROR_MESSAGE_LEN,
    MAX_GOAWAY_MESSAGE_LEN, MAX_STATS_JSON_LEN, MAX_TOKEN_LEN,
};
use super::{
    ErrorCode, Event, FrameType, GoAwayReason, Limits, PresenceRecord, Span, Timings, Version,
    WelcomeV2, HELLO_FLAG_FIREHOSE, PROTOCOL_VERSION,
};
use crate::cluster::MemberMap;
use crate::list::{FixedIter, FixedList};

// ---------------------------------------------------------------------------------------------
// Lists

/// A validated user list (SUBSCRIBE, UNSUBSCRIBE, QUERY, LAGGED): nonzero user ids, 8 bytes
/// each, viewed in place; duplicates are kept.
pub type UserList<'a> = FixedList<'a, u64>;

/// Iterator over a [`UserList`].
pub type Users<'a> = FixedIter<'a, u64>;

/// The validated records of a PRESENCE frame, viewed in place (26 bytes each).
pub type PresenceList<'a> = FixedList<'a, PresenceRecord>;

/// Iterator over a [`PresenceList`].
pub type PresenceIter<'a> = FixedIter<'a, PresenceRecord>;

/// The validated transitions of an EVENTS frame, viewed in place (27 bytes each).
pub type EventList<'a> = FixedList<'a, Event>;

/// Iterator over an [`EventList`].
pub type EventIter<'a> = FixedIter<'a, Event>;

/// The validated spans of a HISTORY_REPLY frame, viewed in place (27 bytes each).
pub type SpanList<'a> = FixedList<'a, Span>;

/// Iterator over a [`SpanList`].
pub type SpanIter<'a> = FixedIter<'a, Span>;

/// The per-shard heartbeat ports of a WELCOME frame (`u16` each), viewed in place. Entry `i`
/// is shard `i`'s port; 0 means the shard has no port of its own (use the shared port). Never
/// empty in a decoded WELCOME.
pub type ShardPorts<'a> = FixedList<'a, u16>;

// ---------------------------------------------------------------------------------------------
// Frames

/// HELLO: the gateway's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello<'a> {
    /// The protocol version the gateway asks for: 1 or 2 (the highest it speaks).
    pub protocol_version: u16,
    /// Flags: bit 0 [`HELLO_FLAG_FIREHOSE`] (informational); bits 1–15 are 0.
    pub flags: u16,
    /// A name for the gateway, for the daemon's logs; with link authentication, the link's
    /// name in the daemon's key file (SPEC.md § P5.1). At most [`MAX_CLIENT_NAME_LEN`] bytes.
    pub client_name: &'a str,
    /// With link authentication, the link's token (SPEC.md § P5.1); else empty (daemons
    /// without `[links]` ignore it). At most [`MAX_TOKEN_LEN`] bytes.
    pub token: &'a [u8],
}

impl<'a> Hello<'a> {
    /// A version-1 HELLO with no flags and no token.
    pub const fn new(client_name: &'a str) -> Hello<'a> {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            flags: 0,
            client_name,
            token: &[],
        }
    }

    /// The same HELLO asking for `version`.
    pub const fn asking(self, version: Version) -> Hello<'a> {
        Hello {
            protocol_version: version.to_u16(),
            ..self
        }
    }

    /// The version asked for, if this module speaks it (always, in a decoded HELLO).
    #[inline]
    pub const fn version(&self) -> Option<Version> {
        Version::from_u16(self.protocol_version)
    }

    /// Whether the firehose flag (bit 0) is set: the gateway means to use the firehose. The
    /// daemon does not act on it; the link's grant decides (SPEC.md § P5.1).
    #[inline]
    pub const fn wants_firehose(&self) -> bool {
        self.flags & HELLO_FLAG_FIREHOSE != 0
    }
}

/// WELCOME: the daemon's answer to HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Welcome<'a> {
    /// The link protocol version: the version of the link from now on, 1 or 2 (the one HELLO
    /// asked for). 2 exactly when [`v2`](Welcome::v2) is `Some`.
    pub protocol_version: u16,
    /// The shared heartbeat UDP port (any shard's users).
    pub heartbeat_port: u16,
    /// Per-shard heartbeat ports; their number is the shard count (at least 1).
    pub shard_ports: ShardPorts<'a>,
    /// The daemon's limits.
    pub limits: Limits,
    /// The daemon's timings.
    pub timings: Timings,
    /// Version 2's fields (warming, idle timeout); `None` in a version-1 WELCOME.
    pub v2: Option<WelcomeV2>,
}

impl Welcome<'_> {
    /// The link's version (a decoded WELCOME always has one this module speaks; a hand-built
    /// one with another version reads as version 1).
    #[inline]
    pub const fn version(&self) -> Version {
        match Version::from_u16(self.protocol_version) {
            Some(v) => v,
            None => Version::V1,
        }
    }

    /// Whether the daemon said it is warming (version 2, flag `WARMING`).
    #[inline]
    pub const fn is_warming(&self) -> bool {
        matches!(
            self.v2,
            Some(WelcomeV2 {
                warm_remaining_ms: Some(_),
                ..
            })
        )
    }

    /// The number of shards (at least 1 in a decoded WELCOME).
    #[inline]
    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.shard_ports.len()).unwrap_or(u16::MAX)
    }

    /// The UDP port to send `user`'s heartbeats to: the port of the shard that owns it
    /// ([`shard_of`](crate::shard_of)), or the shared port when that shard has none (0).
    #[inline]
    pub fn heartbeat_port_for(&self, user: u64) -> u16 {
        let shard = crate::shard_of(user, self.shard_count());
        match self.shard_ports.get(usize::from(shard)) {
            Some(p) if p != 0 => p,
            _ => self.heartbeat_port,
        }
    }
}

/// PRESENCE: records answering a SUBSCRIBE or QUERY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PresenceFrame<'a> {
    /// The request answered; nonzero.
    pub request_id: u32,
    /// FINAL: the request's last PRESENCE frame.
    pub is_final: bool,
    /// WARMING (version 2): the records were read while the daemon was warming, so an offline
    /// among them may be wrong (SPEC.md § P6.10). Always false on a version-1 link.
    pub warming: bool,
    /// The records.
    pub records: PresenceList<'a>,
}

/// ERROR: a request or the link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorFrame<'a> {
    /// The request refused, or 0 when the error is about the link (which then closes).
    pub request_id: u32,
    /// The raw code; see [`error_code`](ErrorFrame::error_code).
    pub code: u16,
    /// Human-readable detail; at most [`MAX_ERROR_MESSAGE_LEN`] bytes.
    pub message: &'a str,
}

impl ErrorFrame<'_> {
    /// The code, if this version defines it (unknown codes read as `internal`).
    #[inline]
    pub const fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    /// Whether the daemon closes the link after this error (request id 0).
    #[inline]
    pub const fn closes_link(&self) -> bool {
        self.request_id == 0
    }
}

/// GOAWAY (version 2): the daemon is going away; its last frame on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoAwayFrame<'a> {
    /// The raw reason; see [`go_away_reason`](GoAwayFrame::go_away_reason).
    pub reason: u16,
    /// Wait at least this long (plus jitter) before reconnecting, milliseconds.
    pub reconnect_after_ms: u32,
    /// Human-readable detail; at most [`MAX_GOAWAY_MESSAGE_LEN`] bytes.
    pub message: &'a str,
}

impl GoAwayFrame<'_> {
    /// The reason, if this version defines it (receivers treat unknown reasons as
    /// [`ShuttingDown`](GoAwayReason::ShuttingDown)).
    #[inline]
    pub const fn go_away_reason(&self) -> Option<GoAwayReason> {
        GoAwayReason::from_u16(self.reason)
    }
}

/// HISTORY (version 2): a request for one user's presence history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryRequest {
    /// Nonzero request id.
    pub request_id: u32,
    /// The user; nonzero.
    pub user: u64,
    /// Only spans that end at or after this Unix millisecond (ongoing spans always); 0: all
    /// the daemon keeps.
    pub since_ms: u64,
    /// Paging: only spans whose starting transition's version is greater; 0: from the first.
    pub after_version: u64,
    /// At most this many spans, at least 1 (the daemon may send fewer).
    pub max_spans: u32,
}

/// HISTORY_REPLY (version 2): the answer to HISTORY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryReply<'a> {
    /// The HISTORY request answered; nonzero.
    pub request_id: u32,
    /// MORE: more spans follow; ask again with `after_version` = the last span's version.
    pub more: bool,
    /// The user's last seen, Unix milliseconds; `None` when unknown.
    pub last_seen_ms: Option<u64>,
    /// The spans, in version order.
    pub spans: SpanList<'a>,
}

/// A decoded gateway → daemon frame of version 1's set (which version 2 keeps unchanged).
/// [`GatewayFrame`] adds version 2's HISTORY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientFrame<'a> {
    /// HELLO (0x01).
    Hello(Hello<'a>),
    /// SUBSCRIBE (0x02).
    Subscribe {
        /// Nonzero request id.
        request_id: u32,
        /// The users.
        users: UserList<'a>,
    },
    /// UNSUBSCRIBE (0x03).
    Unsubscribe {
        /// Nonzero request id.
        request_id: u32,
        /// The users.
        users: UserList<'a>,
    },
    /// SUBSCRIBE_ALL (0x04).
    SubscribeAll {
        /// Nonzero request id.
        request_id: u32,
    },
    /// UNSUBSCRIBE_ALL (0x05).
    UnsubscribeAll {
        /// Nonzero request id.
        request_id: u32,
    },
    /// QUERY (0x06).
    Query {
        /// Nonzero request id.
        request_id: u32,
        /// The users.
        users: UserList<'a>,
    },
    /// STATS (0x07).
    Stats {
        /// Nonzero request id.
        request_id: u32,
    },
}

impl ClientFrame<'_> {
    /// The frame's type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            ClientFrame::Hello(_) => FrameType::Hello,
            ClientFrame::Subscribe { .. } => FrameType::Subscribe,
            ClientFrame::Unsubscribe { .. } => FrameType::Unsubscribe,
            ClientFrame::SubscribeAll { .. } => FrameType::SubscribeAll,
            ClientFrame::UnsubscribeAll { .. } => FrameType::UnsubscribeAll,
            ClientFrame::Query { .. } => FrameType::Query,
            ClientFrame::Stats { .. } => FrameType::Stats,
        }
    }

    /// The request id; `None` for HELLO.
    pub const fn request_id(&self) -> Option<u32> {
        match *self {
            ClientFrame::Hello(_) => None,
            ClientFrame::Subscribe { request_id, .. }
            | ClientFrame::Unsubscribe { request_id, .. }
            | ClientFrame::SubscribeAll { request_id }
            | ClientFrame::UnsubscribeAll { request_id }
            | ClientFrame::Query { request_id, .. }
            | ClientFrame::Stats { request_id } => Some(request_id),
        }
    }

    /// The user list of SUBSCRIBE, UNSUBSCRIBE and QUERY.
    pub const fn users(&self) -> Option<UserList<'_>> {
        match *self {
            ClientFrame::Subscribe { users, .. }
            | ClientFrame::Unsubscribe { users, .. }
            | ClientFrame::Query { users, .. } => Some(users),
            _ => None,
        }
    }
}

/// A decoded gateway → daemon frame of any version: what [`Version::decode_client`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayFrame<'a> {
    /// A frame of version 1's set (HELLO to STATS), the same on every version.
    Common(ClientFrame<'a>),
    /// HISTORY (0x08), version 2.
    History(HistoryRequest),
    /// MAP (0x09), version 4: the revision of the member map the gateway holds (SPEC.md
    /// § P6.14). A cluster member answers with MEMBERS when its own revision differs, then
    /// ACK; a daemon that is no member answers ACK only.
    Map {
        /// Nonzero request id.
        request_id: u32,
        /// The revision of the gateway's map; 0: it holds none.
        revision: u64,
    },
}

impl GatewayFrame<'_> {
    /// The frame's type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            GatewayFrame::Common(f) => f.frame_type(),
            GatewayFrame::History(_) => FrameType::History,
            GatewayFrame::Map { .. } => FrameType::Map,
        }
    }

    /// The request id; `None` for HELLO.
    pub const fn request_id(&self) -> Option<u32> {
        match self {
            GatewayFrame::Common(f) => f.request_id(),
            GatewayFrame::History(h) => Some(h.request_id),
            GatewayFrame::Map { request_id, .. } => Some(*request_id),
        }
    }

    /// The user list of SUBSCRIBE, UNSUBSCRIBE and QUERY.
    pub const fn users(&self) -> Option<UserList<'_>> {
        match self {
            GatewayFrame::Common(f) => f.users(),
            GatewayFrame::History(_) | GatewayFrame::Map { .. } => None,
        }
    }
}

impl<'a> From<ClientFrame<'a>> for GatewayFrame<'a> {
    fn from(f: ClientFrame<'a>) -> GatewayFrame<'a> {
        GatewayFrame::Common(f)
    }
}

/// A decoded daemon → gateway frame (either version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerFrame<'a> {
    /// WELCOME (0x81).
    Welcome(Welcome<'a>),
    /// PRESENCE (0x82).
    Presence(PresenceFrame<'a>),
    /// EVENTS (0x83).
    Events(EventList<'a>),
    /// LAGGED (0x84) with scope 0: transitions of these users were dropped.
    Lagged(UserList<'a>),
    /// LAGGED (0x84) with scope 1: transitions of any user may have been dropped.
    LaggedAll,
    /// ACK (0x85).
    Ack {
        /// The request carried out; nonzero.
        request_id: u32,
    },
    /// ERROR (0x86).
    Error(ErrorFrame<'a>),
    /// STATS_REPLY (0x87).
    StatsReply {
        /// The STATS request answered; nonzero.
        request_id: u32,
        /// The daemon's counters as a JSON object; at most [`MAX_STATS_JSON_LEN`] bytes.
        json: &'a str,
    },
    /// GOAWAY (0x88), version 2: the daemon's last frame on the link.
    GoAway(GoAwayFrame<'a>),
    /// HISTORY_REPLY (0x89), version 2.
    HistoryReply(HistoryReply<'a>),
    /// PACE (0x8A), version 3: the heartbeat interval the daemon asks for (SPEC.md § P6.13).
    Pace {
        /// The interval asked, ms; 0: the normal one (WELCOME's `heartbeat_interval_ms`).
        interval_ms: u32,
    },
    /// MEMBERS (0x8B), version 4: the cluster's member map (SPEC.md § P6.14).
    Members(MembersFrame<'a>),
}

impl ServerFrame<'_> {
    /// The frame's type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            ServerFrame::Welcome(_) => FrameType::Welcome,
            ServerFrame::Presence(_) => FrameType::Presence,
            ServerFrame::Events(_) => FrameType::Events,
            ServerFrame::Lagged(_) | ServerFrame::LaggedAll => FrameType::Lagged,
            ServerFrame::Ack { .. } => FrameType::Ack,
            ServerFrame::Error(_) => FrameType::Error,
            ServerFrame::StatsReply { .. } => FrameType::StatsReply,
            ServerFrame::GoAway(_) => FrameType::GoAway,
            ServerFrame::HistoryReply(_) => FrameType::HistoryReply,
            ServerFrame::Pace { .. } => FrameType::Pace,
            ServerFrame::Members(_) => FrameType::Members,
        }
    }

    /// The request id the frame answers; `None` for WELCOME, EVENTS, LAGGED, GOAWAY, PACE and
    /// MEMBERS (a push, also when it answers MAP), and for an ERROR about the link (request
    /// id 0).
    pub const fn request_id(&self) -> Option<u32> {
        match *self {
            ServerFrame::Presence(PresenceFrame { request_id, .. })
            | ServerFrame::Ack { request_id }
            | ServerFrame::StatsReply { request_id, .. }
            | ServerFrame::HistoryReply(HistoryReply { request_id, .. }) => Some(request_id),
            ServerFrame::Error(ErrorFrame { request_id, .. }) if request_id != 0 => {
                Some(request_id)
            }
            _ => None,
        }
    }

    /// Whether the frame completes its request (PRESENCE with FINAL, ACK, ERROR with a
    /// request id, STATS_REPLY, HISTORY_REPLY).
    pub const fn completes_request(&self) -> bool {
        match *self {
            ServerFrame::Presence(PresenceFrame { is_final, .. }) => is_final,
            ServerFrame::Ack { .. }
            | ServerFrame::StatsReply { .. }
            | ServerFrame::HistoryReply(_) => true,
            ServerFrame::Error(ErrorFrame { request_id, .. }) => request_id != 0,
            _ => false,
        }
    }

    /// Whether the daemon ends the link after this frame: GOAWAY, and an ERROR about the link
    /// (request id 0).
    pub const fn ends_link(&self) -> bool {
        match *self {
            ServerFrame::GoAway(_) => true,
            ServerFrame::Error(ErrorFrame { request_id, .. }) => request_id == 0,
            _ => false,
        }
    }
}

/// A decoded MEMBERS frame (version 4): its JSON, which the decoder has parsed as a
/// [`MemberMap`] and checked ([`MemberMap::check`]). Only the decoder makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MembersFrame<'a> {
    json: &'a str,
}

impl<'a> MembersFrame<'a> {
    /// A view of JSON the decoder has validated.
    pub(super) const fn from_validated(json: &'a str) -> MembersFrame<'a> {
        MembersFrame { json }
    }

    /// The frame's body: the member map in JSON, as sent.
    pub const fn json(&self) -> &'a str {
        self.json
    }

    /// The member map, its members sorted by id. The decoder has parsed and checked this JSON
    /// already, so this fails only as it would have there (never for a decoded frame).
    pub fn map(&self) -> Result<MemberMap, super::FrameError> {
        super::decode::members_map(self.json.as_bytes())
    }
}
