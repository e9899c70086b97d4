//! The push link: the framed protocol gateways speak with the daemon over one QUIC stream to
//! subscribe to users, query presence and receive pushed transitions.
//!
//! The normative description is `wire-format/SPEC.md`, section "Push link (QUIC)"; this module
//! is the codec only (no networking).
//!
//! - A frame on the stream is `u32 length` (little-endian; the bytes after it) + `u8 type` +
//!   body. [`FrameReader::next_frame`] splits a byte buffer into frames and enforces
//!   `max_frame_len`; [`decode_client`] and [`decode_server`] validate one frame's
//!   `type + body` completely and return zero-copy views ([`UserList`], [`PresenceList`],
//!   [`EventList`]) whose iterators cannot fail.
//! - `encode_*` functions append complete frames (length prefix included) to a [`BytesMut`];
//!   [`encode_presence`] and [`encode_events`] split long lists into frames no longer than a
//!   given `max_frame_len`. [`EventsWriter`] and [`PresenceWriter`] build such frames one
//!   transition or record at a time in their own buffer, for a daemon that keeps a frame open
//!   per link. Nothing they produce fails to decode; on error `out` is left as it was.
//! - [`shard_of`] is the user → shard owner function the daemon and gateways share.
//!
//! No function of this module panics, whatever its input.
//!
//! ```
//! use bytes::BytesMut;
//! use presenced_wire::link::{
//!     decode_client, encode_subscribe, ClientFrame, FrameReader, DEFAULT_MAX_FRAME_LEN,
//! };
//!
//! let mut out = BytesMut::new();
//! encode_subscribe(&mut out, 1, &[1001, 1002]).unwrap();
//! let reader = FrameReader::new(DEFAULT_MAX_FRAME_LEN);
//! let (frame, used) = reader.next_frame(&out).unwrap().unwrap();
//! assert_eq!(used, out.len());
//! match decode_client(frame).unwrap() {
//!     ClientFrame::Subscribe { request_id, users } => {
//!         assert_eq!(request_id, 1);
//!         assert_eq!(users.iter().collect::<Vec<_>>(), [1001, 1002]);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use std::fmt;
use std::iter::FusedIterator;
use std::slice::ChunksExact;

use bytes::{BufMut, BytesMut};

// ---------------------------------------------------------------------------------------------
// Constants

/// The TLS ALPN protocol id of the push link: `presenced/1`.
pub const ALPN: &[u8] = b"presenced/1";
/// The link protocol version this module reads and writes (HELLO and WELCOME).
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of the frame length prefix (`u32`, little-endian).
pub const LENGTH_PREFIX_LEN: usize = 4;
/// The daemon's default `max_frame_len`: 1 MiB. A gateway reads the first frame (WELCOME or
/// ERROR) with this limit, then with the `max_frame_len` WELCOME announces.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
/// The smallest `max_frame_len` a daemon may announce (64 KiB): every fixed-size frame, the
/// longest STATS_REPLY included, fits.
pub const MIN_MAX_FRAME_LEN: u32 = 65_536;
/// Longest HELLO `client_name`, in bytes.
pub const MAX_CLIENT_NAME_LEN: usize = 64;
/// Longest HELLO `token`, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest ERROR `message`, in bytes (longer messages are cut by [`encode_error`]).
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;
/// Longest STATS_REPLY `json`, in bytes.
pub const MAX_STATS_JSON_LEN: usize = 60_000;
/// Bytes per user id in a user list.
pub const USER_ID_LEN: usize = 8;
/// Bytes per PRESENCE record.
pub const PRESENCE_RECORD_LEN: usize = 26;
/// Bytes per EVENTS transition.
pub const EVENT_LEN: usize = 27;
/// Frame length (type + body) of a PRESENCE frame without records: type, request id, flags,
/// count.
pub const PRESENCE_HEADER_LEN: usize = 10;
/// Frame length (type + body) of an EVENTS frame without transitions: type, count.
pub const EVENTS_HEADER_LEN: usize = 5;
/// Frame length (type + body) of a SUBSCRIBE, UNSUBSCRIBE or QUERY without users: type,
/// request id, count.
pub const USER_REQUEST_HEADER_LEN: usize = 9;
/// Frame length (type + body) of a LAGGED frame without users: type, scope, count.
pub const LAGGED_HEADER_LEN: usize = 6;
/// HELLO flags bit 0: the gateway wants the firehose permission (reserved for
/// authentication; v1 daemons grant the firehose to every link and ignore it).
pub const HELLO_FLAG_FIREHOSE: u16 = 0x0001;
/// PRESENCE flags bit 0: the last PRESENCE frame of its request.
pub const PRESENCE_FLAG_FINAL: u8 = 0x01;
/// LAGGED scope 0: transitions of the listed users were dropped.
pub const LAGGED_SCOPE_USERS: u8 = 0;
/// LAGGED scope 1: transitions of any user may have been dropped.
pub const LAGGED_SCOPE_ALL: u8 = 1;

// ---------------------------------------------------------------------------------------------
// Enumerations

/// Every frame type of the link. Gateway → daemon types are 0x01–0x07, daemon → gateway types
/// 0x81–0x87.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameType {
    /// 0x01, gateway → daemon: opens the link.
    Hello,
    /// 0x02, gateway → daemon: subscribe to users and get their presence.
    Subscribe,
    /// 0x03, gateway → daemon: unsubscribe from users.
    Unsubscribe,
    /// 0x04, gateway → daemon: subscribe to every transition (the firehose).
    SubscribeAll,
    /// 0x05, gateway → daemon: stop the firehose.
    UnsubscribeAll,
    /// 0x06, gateway → daemon: get users' presence.
    Query,
    /// 0x07, gateway → daemon: get the daemon's counters.
    Stats,
    /// 0x81, daemon → gateway: answers HELLO.
    Welcome,
    /// 0x82, daemon → gateway: presence records answering SUBSCRIBE or QUERY.
    Presence,
    /// 0x83, daemon → gateway: pushed transitions.
    Events,
    /// 0x84, daemon → gateway: transitions were dropped.
    Lagged,
    /// 0x85, daemon → gateway: a request was carried out.
    Ack,
    /// 0x86, daemon → gateway: a request or the link failed.
    Error,
    /// 0x87, daemon → gateway: answers STATS.
    StatsReply,
}

impl FrameType {
    /// Every frame type, in wire-value order.
    pub const ALL: [FrameType; 14] = [
        FrameType::Hello,
        FrameType::Subscribe,
        FrameType::Unsubscribe,
        FrameType::SubscribeAll,
        FrameType::UnsubscribeAll,
        FrameType::Query,
        FrameType::Stats,
        FrameType::Welcome,
        FrameType::Presence,
        FrameType::Events,
        FrameType::Lagged,
        FrameType::Ack,
        FrameType::Error,
        FrameType::StatsReply,
    ];

    /// The type byte.
    #[inline]
    pub const fn to_u8(self) -> u8 {
        match self {
            FrameType::Hello => 0x01,
            FrameType::Subscribe => 0x02,
            FrameType::Unsubscribe => 0x03,
            FrameType::SubscribeAll => 0x04,
            FrameType::UnsubscribeAll => 0x05,
            FrameType::Query => 0x06,
            FrameType::Stats => 0x07,
            FrameType::Welcome => 0x81,
            FrameType::Presence => 0x82,
            FrameType::Events => 0x83,
            FrameType::Lagged => 0x84,
            FrameType::Ack => 0x85,
            FrameType::Error => 0x86,
            FrameType::StatsReply => 0x87,
        }
    }

    /// The frame type of a type byte; `None` for bytes no frame type uses.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<FrameType> {
        Some(match value {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Subscribe,
            0x03 => FrameType::Unsubscribe,
            0x04 => FrameType::SubscribeAll,
            0x05 => FrameType::UnsubscribeAll,
            0x06 => FrameType::Query,
            0x07 => FrameType::Stats,
            0x81 => FrameType::Welcome,
            0x82 => FrameType::Presence,
            0x83 => FrameType::Events,
            0x84 => FrameType::Lagged,
            0x85 => FrameType::Ack,
            0x86 => FrameType::Error,
            0x87 => FrameType::StatsReply,
            _ => return None,
        })
    }

    /// Whether gateways send this type (as opposed to the daemon).
    #[inline]
    pub const fn is_client(self) -> bool {
        self.to_u8() < 0x80
    }

    /// Lower-case name (`hello`, `subscribe`, …, `stats_reply`), for logs and test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "hello",
            FrameType::Subscribe => "subscribe",
            FrameType::Unsubscribe => "unsubscribe",
            FrameType::SubscribeAll => "subscribe_all",
            FrameType::UnsubscribeAll => "unsubscribe_all",
            FrameType::Query => "query",
            FrameType::Stats => "stats",
            FrameType::Welcome => "welcome",
            FrameType::Presence => "presence",
            FrameType::Events => "events",
            FrameType::Lagged => "lagged",
            FrameType::Ack => "ack",
            FrameType::Error => "error",
            FrameType::StatsReply => "stats_reply",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user's public presence state on the link (PRESENCE records and EVENTS transitions).
///
/// Not the heartbeat entry's state: here 0 is offline (invisible users read as offline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireState {
    /// 0: no live device, or the user is invisible.
    Offline,
    /// 1: at least one live device is active.
    Online,
    /// 2: every live device is idle.
    Idle,
}

impl WireState {
    /// Every state, in wire-value order.
    pub const ALL: [WireState; 3] = [WireState::Offline, WireState::Online, WireState::Idle];

    /// The wire value: 0 offline, 1 online, 2 idle.
    #[inline]
    pub const fn to_u8(self) -> u8 {
        match self {
            WireState::Offline => 0,
            WireState::Online => 1,
            WireState::Idle => 2,
        }
    }

    /// The state of a wire value; `None` for values above 2.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<WireState> {
        match value {
            0 => Some(WireState::Offline),
            1 => Some(WireState::Online),
            2 => Some(WireState::Idle),
            _ => None,
        }
    }

    /// Lower-case name (`offline`, `online`, `idle`), as in the test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            WireState::Offline => "offline",
            WireState::Online => "online",
            WireState::Idle => "idle",
        }
    }
}

impl fmt::Display for WireState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a transition happened, on the link (EVENTS transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireCause {
    /// 0: the first heartbeat of a device while the user had no live device.
    FirstHeartbeat,
    /// 1: a heartbeat changed a device's reported state (or added a device).
    StateChange,
    /// 2: a device logged out.
    Logout,
    /// 3: a device's heartbeat deadline passed.
    Timeout,
    /// 4: no activity for `idle_after`.
    Inactivity,
}

impl WireCause {
    /// Every cause, in wire-value order.
    pub const ALL: [WireCause; 5] = [
        WireCause::FirstHeartbeat,
        WireCause::StateChange,
        WireCause::Logout,
        WireCause::Timeout,
        WireCause::Inactivity,
    ];

    /// The wire value: 0 first_heartbeat, 1 state_change, 2 logout, 3 timeout, 4 inactivity.
    #[inline]
    pub const fn to_u8(self) -> u8 {
        match self {
            WireCause::FirstHeartbeat => 0,
            WireCause::StateChange => 1,
            WireCause::Logout => 2,
            WireCause::Timeout => 3,
            WireCause::Inactivity => 4,
        }
    }

    /// The cause of a wire value; `None` for values above 4.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<WireCause> {
        match value {
            0 => Some(WireCause::FirstHeartbeat),
            1 => Some(WireCause::StateChange),
            2 => Some(WireCause::Logout),
            3 => Some(WireCause::Timeout),
            4 => Some(WireCause::Inactivity),
            _ => None,
        }
    }

    /// Snake_case name (`first_heartbeat`, `state_change`, `logout`, `timeout`,
    /// `inactivity`), as in the test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            WireCause::FirstHeartbeat => "first_heartbeat",
            WireCause::StateChange => "state_change",
            WireCause::Logout => "logout",
            WireCause::Timeout => "timeout",
            WireCause::Inactivity => "inactivity",
        }
    }
}

impl fmt::Display for WireCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code of an ERROR frame. The numbers are stable.
///
/// An ERROR with request id 0 is about the link, and the daemon closes the link after sending
/// it; an ERROR with a request id refuses that request only. The codes for which
/// [`closes_link`](ErrorCode::closes_link) is true are always sent with request id 0.
///
/// The discriminants are the wire values, so `code as u16` (or `as u32`, e.g. for a QUIC
/// application error code) equals [`to_u16`](ErrorCode::to_u16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ErrorCode {
    /// 1: a malformed frame (any [`FrameError`] but the two below). Closes the link.
    BadFrame = 1,
    /// 2: a frame longer than `max_frame_len`. Closes the link.
    FrameTooLarge = 2,
    /// 3: HELLO asked for an unsupported protocol version. Closes the link.
    ProtocolVersion = 3,
    /// 4: the first frame was not HELLO, or a second HELLO came. Closes the link.
    HelloRequired = 4,
    /// 5: a request lists more than `max_users_per_request` users. Refuses the request.
    TooManyUsers = 5,
    /// 6: the SUBSCRIBE would exceed `max_subscriptions`; nothing of it was done. Refuses the
    /// request.
    SubscriptionLimit = 6,
    /// 7: `max_requests_in_flight` requests are already in flight. Refuses the request.
    TooManyRequests = 7,
    /// 8: reserved for authentication (bad token, or firehose not permitted). Closes the link.
    Unauthorized = 8,
    /// 9: the daemon is shutting down: refuses the request, or (request id 0) closes the link.
    ShuttingDown = 9,
    /// 10: an internal error: refuses the request, or (request id 0) closes the link.
    Internal = 10,
}

impl ErrorCode {
    /// Every code, in wire-value order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::ProtocolVersion,
        ErrorCode::HelloRequired,
        ErrorCode::TooManyUsers,
        ErrorCode::SubscriptionLimit,
        ErrorCode::TooManyRequests,
        ErrorCode::Unauthorized,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The wire value (1–10).
    #[inline]
    pub const fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::ProtocolVersion => 3,
            ErrorCode::HelloRequired => 4,
            ErrorCode::TooManyUsers => 5,
            ErrorCode::SubscriptionLimit => 6,
            ErrorCode::TooManyRequests => 7,
            ErrorCode::Unauthorized => 8,
            ErrorCode::ShuttingDown => 9,
            ErrorCode::Internal => 10,
        }
    }

    /// The code of a wire value; `None` for values this version does not define (receivers
    /// treat those like [`Internal`](ErrorCode::Internal)).
    #[inline]
    pub const fn from_u16(value: u16) -> Option<ErrorCode> {
        Some(match value {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::ProtocolVersion,
            4 => ErrorCode::HelloRequired,
            5 => ErrorCode::TooManyUsers,
            6 => ErrorCode::SubscriptionLimit,
            7 => ErrorCode::TooManyRequests,
            8 => ErrorCode::Unauthorized,
            9 => ErrorCode::ShuttingDown,
            10 => ErrorCode::Internal,
            _ => return None,
        })
    }

    /// Whether this code always closes the link (bad_frame, frame_too_large,
    /// protocol_version, hello_required, unauthorized). `shutting_down` and `internal` close
    /// it only when sent with request id 0.
    #[inline]
    pub const fn closes_link(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::ProtocolVersion
                | ErrorCode::HelloRequired
                | ErrorCode::Unauthorized
        )
    }

    /// Stable snake_case name (`bad_frame`, …, `internal`).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::ProtocolVersion => "protocol_version",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::TooManyUsers => "too_many_users",
            ErrorCode::SubscriptionLimit => "subscription_limit",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a frame was refused by [`FrameReader`], [`decode_client`] or [`decode_server`].
///
/// Every one is a protocol error that ends the link: the daemon answers with the ERROR code
/// of [`error_code`](FrameError::error_code) (request id 0) and closes it. Within a frame the
/// fields are checked in wire order and the first failure is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The frame ends inside a fixed-size field, a string or a token.
    TooShort,
    /// The length prefix is 0 (or the frame given to a decoder is empty): a frame has at
    /// least its type byte.
    BadLength,
    /// The length prefix announces more than the receiver's `max_frame_len`.
    FrameTooLarge {
        /// The announced length (type + body).
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The type byte is not a frame type of this direction; carries the byte.
    UnknownType(u8),
    /// Bytes follow the frame's last field.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The bytes after a list's count are not exactly `count` elements (truncated, or extra
    /// bytes).
    CountMismatch {
        /// The count read.
        count: u32,
        /// The bytes present for the elements.
        bytes: usize,
    },
    /// A string (client name, error message, stats JSON) is not valid UTF-8.
    BadUtf8,
    /// A string or token is longer than its limit.
    StringTooLong {
        /// The length read.
        len: u16,
        /// The field's limit.
        max: u16,
    },
    /// A user id is 0 (reserved).
    ZeroUser {
        /// Index of the first bad element of the list.
        index: u32,
    },
    /// A request id that must be nonzero is 0 (0 is reserved for errors about the link).
    ZeroRequestId,
    /// A state byte (state, or an event's prev) is above 2.
    BadState {
        /// Index of the record or transition.
        index: u32,
        /// The byte read.
        value: u8,
    },
    /// An event's cause byte is above 4.
    BadCause {
        /// Index of the transition.
        index: u32,
        /// The byte read.
        value: u8,
    },
    /// LAGGED scope is above 1, or scope 1 (everything) comes with a non-empty user list;
    /// carries the scope byte.
    BadScope(u8),
    /// A record's `has_last_seen` is neither 0 nor 1, or is 0 with a nonzero `last_seen_ms`.
    BadLastSeen {
        /// Index of the record.
        index: u32,
    },
    /// A reserved flag bit is set (HELLO bits 1–15, PRESENCE bits 1–7); carries the flags.
    ReservedFlags(u16),
    /// HELLO or WELCOME carries a protocol version other than [`PROTOCOL_VERSION`]; carries
    /// it. The rest of the frame is not read.
    UnsupportedVersion(u16),
    /// WELCOME announces 0 shards.
    ZeroShardCount,
}

impl FrameError {
    /// Every [`reason`](FrameError::reason), indexed by [`code`](FrameError::code): handy to
    /// register one counter per reason up front.
    pub const REASONS: [&'static str; 17] = [
        "too_short",
        "bad_length",
        "frame_too_large",
        "unknown_type",
        "trailing_bytes",
        "count_mismatch",
        "bad_utf8",
        "string_too_long",
        "zero_user",
        "zero_request_id",
        "bad_state",
        "bad_cause",
        "bad_scope",
        "bad_last_seen",
        "reserved_flags",
        "unsupported_version",
        "zero_shard_count",
    ];

    /// A dense, stable index of the variant (0..17); indexes
    /// [`REASONS`](FrameError::REASONS).
    pub const fn code(&self) -> usize {
        match self {
            FrameError::TooShort => 0,
            FrameError::BadLength => 1,
            FrameError::FrameTooLarge { .. } => 2,
            FrameError::UnknownType(_) => 3,
            FrameError::TrailingBytes { .. } => 4,
            FrameError::CountMismatch { .. } => 5,
            FrameError::BadUtf8 => 6,
            FrameError::StringTooLong { .. } => 7,
            FrameError::ZeroUser { .. } => 8,
            FrameError::ZeroRequestId => 9,
            FrameError::BadState { .. } => 10,
            FrameError::BadCause { .. } => 11,
            FrameError::BadScope(_) => 12,
            FrameError::BadLastSeen { .. } => 13,
            FrameError::ReservedFlags(_) => 14,
            FrameError::UnsupportedVersion(_) => 15,
            FrameError::ZeroShardCount => 16,
        }
    }

    /// The stable snake_case name of the variant, for counters and logs (see `SPEC.md`).
    pub const fn reason(&self) -> &'static str {
        match self {
            FrameError::TooShort => "too_short",
            FrameError::BadLength => "bad_length",
            FrameError::FrameTooLarge { .. } => "frame_too_large",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::TrailingBytes { .. } => "trailing_bytes",
            FrameError::CountMismatch { .. } => "count_mismatch",
            FrameError::BadUtf8 => "bad_utf8",
            FrameError::StringTooLong { .. } => "string_too_long",
            FrameError::ZeroUser { .. } => "zero_user",
            FrameError::ZeroRequestId => "zero_request_id",
            FrameError::BadState { .. } => "bad_state",
            FrameError::BadCause { .. } => "bad_cause",
            FrameError::BadScope(_) => "bad_scope",
            FrameError::BadLastSeen { .. } => "bad_last_seen",
            FrameError::ReservedFlags(_) => "reserved_flags",
            FrameError::UnsupportedVersion(_) => "unsupported_version",
            FrameError::ZeroShardCount => "zero_shard_count",
        }
    }

    /// The ERROR code the daemon answers this error with (request id 0, then it closes the
    /// link): [`FrameTooLarge`](ErrorCode::FrameTooLarge),
    /// [`ProtocolVersion`](ErrorCode::ProtocolVersion) for an unsupported HELLO version, and
    /// [`BadFrame`](ErrorCode::BadFrame) for everything else.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::ProtocolVersion,
            _ => ErrorCode::BadFrame,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::TooShort => f.write_str("frame ends inside a field"),
            FrameError::BadLength => f.write_str("frame length 0 (a frame has a type byte)"),
            FrameError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds max_frame_len {max}")
            }
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t:#04x}"),
            FrameError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes after the frame's last field")
            }
            FrameError::CountMismatch { count, bytes } => {
                write!(f, "list count {count} does not match its {bytes} bytes")
            }
            FrameError::BadUtf8 => f.write_str("string is not valid UTF-8"),
            FrameError::StringTooLong { len, max } => {
                write!(f, "string or token of {len} bytes exceeds {max}")
            }
            FrameError::ZeroUser { index } => write!(f, "element {index}: user id is 0"),
            FrameError::ZeroRequestId => f.write_str("request id is 0"),
            FrameError::BadState { index, value } => {
                write!(f, "element {index}: invalid state {value}")
            }
            FrameError::BadCause { index, value } => {
                write!(f, "element {index}: invalid cause {value}")
            }
            FrameError::BadScope(s) => {
                write!(f, "invalid lagged scope {s} (or scope 1 with users)")
            }
            FrameError::BadLastSeen { index } => {
                write!(f, "record {index}: invalid has_last_seen / last_seen_ms")
            }
            FrameError::ReservedFlags(flags) => write!(f, "reserved flag bits set ({flags:#x})"),
            FrameError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (expected {PROTOCOL_VERSION})"
                )
            }
            FrameError::ZeroShardCount => f.write_str("shard count is 0"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why an `encode_*` function or a writer refused to produce a frame. Nothing invalid is ever
/// produced, and `out` is unchanged on error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// A request id that must be nonzero is 0.
    ZeroRequestId,
    /// A user id is 0.
    ZeroUser {
        /// Index of the first zero user (for a writer's `push`, the index it would have had).
        index: usize,
    },
    /// A string or token is longer than its limit.
    StringTooLong {
        /// Its length in bytes.
        len: usize,
        /// The field's limit.
        max: usize,
    },
    /// WELCOME: no shard ports, or more than 65,535; carries the number given.
    BadShardCount(usize),
    /// HELLO: the protocol version is not [`PROTOCOL_VERSION`]; carries it.
    UnsupportedVersion(u16),
    /// HELLO: reserved flag bits (1–15) set; carries the flags.
    ReservedFlags(u16),
    /// The frame would be longer than allowed: `u32::MAX`, or the `max_frame_len` a writer
    /// was given (also when not even one element fits it).
    FrameTooLarge {
        /// The frame length (type + body) it would have.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A writer's `push`: the element does not fit the frame's limit; finish the frame and
    /// start another.
    Full,
}

impl EncodeError {
    /// The stable snake_case name of the variant.
    pub const fn reason(&self) -> &'static str {
        match self {
            EncodeError::ZeroRequestId => "zero_request_id",
            EncodeError::ZeroUser { .. } => "zero_user",
            EncodeError::StringTooLong { .. } => "string_too_long",
            EncodeError::BadShardCount(_) => "bad_shard_count",
            EncodeError::UnsupportedVersion(_) => "unsupported_version",
            EncodeError::ReservedFlags(_) => "reserved_flags",
            EncodeError::FrameTooLarge { .. } => "frame_too_large",
            EncodeError::Full => "full",
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::ZeroRequestId => f.write_str("request id is 0"),
            EncodeError::ZeroUser { index } => write!(f, "element {index}: user id is 0"),
            EncodeError::StringTooLong { len, max } => {
                write!(f, "string or token of {len} bytes exceeds {max}")
            }
            EncodeError::BadShardCount(n) => write!(f, "{n} shard ports (1 to 65535 allowed)"),
            EncodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v}: this codec writes {PROTOCOL_VERSION}"
                )
            }
            EncodeError::ReservedFlags(flags) => write!(f, "reserved flag bits set ({flags:#x})"),
            EncodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes would exceed {max}")
            }
            EncodeError::Full => f.write_str("the element does not fit the frame's limit"),
        }
    }
}

impl std::error::Error for EncodeError {}

// ---------------------------------------------------------------------------------------------
// Records

/// One user's presence in a PRESENCE frame (26 bytes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PresenceRecord {
    /// The user; nonzero.
    pub user: u64,
    /// Public state.
    pub state: WireState,
    /// Last seen, Unix milliseconds; `None` when unknown.
    pub last_seen_ms: Option<u64>,
    /// Version of the user's latest transition; 0 for a user the daemon does not know.
    pub version: u64,
}

impl PresenceRecord {
    /// The record's 26 wire bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; PRESENCE_RECORD_LEN] {
        let mut b = [0u8; PRESENCE_RECORD_LEN];
        put(&mut b, 0, &self.user.to_le_bytes());
        put(
            &mut b,
            8,
            &[self.state.to_u8(), u8::from(self.last_seen_ms.is_some())],
        );
        put(&mut b, 10, &self.last_seen_ms.unwrap_or(0).to_le_bytes());
        put(&mut b, 18, &self.version.to_le_bytes());
        b
    }
}

/// One user-level transition in an EVENTS frame (27 bytes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The user; nonzero.
    pub user: u64,
    /// The new public state.
    pub state: WireState,
    /// The public state before.
    pub prev: WireState,
    /// Why it happened.
    pub cause: WireCause,
    /// Wall-clock time of the change, Unix milliseconds.
    pub at_ms: u64,
    /// Per-user version; strictly greater than every earlier one of the user.
    pub version: u64,
}

impl Event {
    /// The transition's 27 wire bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; EVENT_LEN] {
        let mut b = [0u8; EVENT_LEN];
        put(&mut b, 0, &self.user.to_le_bytes());
        put(
            &mut b,
            8,
            &[self.state.to_u8(), self.prev.to_u8(), self.cause.to_u8()],
        );
        put(&mut b, 11, &self.at_ms.to_le_bytes());
        put(&mut b, 19, &self.version.to_le_bytes());
        b
    }
}

/// The daemon's limits, announced in WELCOME.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Limits {
    /// Longest frame (type + body) either side may send; at least [`MIN_MAX_FRAME_LEN`].
    pub max_frame_len: u32,
    /// Most users in one SUBSCRIBE, UNSUBSCRIBE or QUERY (else `too_many_users`).
    pub max_users_per_request: u32,
    /// Most users one link may be subscribed to (else `subscription_limit`).
    pub max_subscriptions: u32,
    /// Most requests of one link in flight at once (else `too_many_requests`).
    pub max_requests_in_flight: u32,
}

/// The daemon's presence timings, announced in WELCOME.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Timings {
    /// How often gateways re-announce each live device, milliseconds.
    pub heartbeat_interval_ms: u32,
    /// Allowance for delay and one lost datagram, milliseconds.
    pub grace_ms: u32,
    /// Inactivity after which a device counts as idle, milliseconds.
    pub idle_after_ms: u32,
    /// The daemon's timer tick, microseconds.
    pub tick_us: u32,
}

// ---------------------------------------------------------------------------------------------
// Byte helpers: none can panic; out-of-range reads yield zeros (never reached on validated
// input, where every offset is in bounds).

#[inline(always)]
fn array<const W: usize>(b: &[u8], at: usize) -> [u8; W] {
    match b.get(at..at.saturating_add(W)) {
        Some(s) => <[u8; W]>::try_from(s).unwrap_or([0; W]),
        None => [0; W],
    }
}

#[inline(always)]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

#[inline(always)]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

#[inline(always)]
fn byte_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline(always)]
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at.saturating_add(src.len())) {
        d.copy_from_slice(src);
    }
}

/// `usize` → `u32`, saturating (lengths here are bounded by a `u32` frame length).
#[inline(always)]
fn sat_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[inline(always)]
fn state_from_validated(b: u8) -> WireState {
    match b {
        0 => WireState::Offline,
        1 => WireState::Online,
        _ => WireState::Idle,
    }
}

#[inline(always)]
fn cause_from_validated(b: u8) -> WireCause {
    match b {
        0 => WireCause::FirstHeartbeat,
        1 => WireCause::StateChange,
        2 => WireCause::Logout,
        3 => WireCause::Timeout,
        _ => WireCause::Inactivity,
    }
}

#[inline(always)]
fn record_from_validated(c: &[u8]) -> PresenceRecord {
    PresenceRecord {
        user: u64_at(c, 0),
        state: state_from_validated(byte_at(c, 8)),
        last_seen_ms: if byte_at(c, 9) != 0 {
            Some(u64_at(c, 10))
        } else {
            None
        },
        version: u64_at(c, 18),
    }
}

#[inline(always)]
fn event_from_validated(c: &[u8]) -> Event {
    Event {
        user: u64_at(c, 0),
        state: state_from_validated(byte_at(c, 8)),
        prev: state_from_validated(byte_at(c, 9)),
        cause: cause_from_validated(byte_at(c, 10)),
        at_ms: u64_at(c, 11),
        version: u64_at(c, 19),
    }
}

// ---------------------------------------------------------------------------------------------
// Zero-copy lists

/// A validated user list: `count` nonzero user ids, 8 bytes each, viewed in place.
///
/// Only decoding makes one, so iteration cannot fail and allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UserList<'a> {
    bytes: &'a [u8],
}

impl<'a> UserList<'a> {
    /// Number of users (duplicates counted).
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / USER_ID_LEN
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// User `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u64> {
        let at = i.checked_mul(USER_ID_LEN)?;
        let c = self.bytes.get(at..at.checked_add(USER_ID_LEN)?)?;
        Some(u64_at(c, 0))
    }

    /// The users, in wire order.
    #[inline]
    pub fn iter(&self) -> Users<'a> {
        Users {
            chunks: self.bytes.chunks_exact(USER_ID_LEN),
        }
    }

    /// The raw bytes of the ids (`8 × len()`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for UserList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for UserList<'a> {
    type Item = u64;
    type IntoIter = Users<'a>;

    fn into_iter(self) -> Users<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &UserList<'a> {
    type Item = u64;
    type IntoIter = Users<'a>;

    fn into_iter(self) -> Users<'a> {
        self.iter()
    }
}

/// Iterator over a [`UserList`].
#[derive(Clone, Debug)]
pub struct Users<'a> {
    chunks: ChunksExact<'a, u8>,
}

impl Iterator for Users<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        self.chunks.next().map(|c| u64_at(c, 0))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<u64> {
        self.chunks.nth(n).map(|c| u64_at(c, 0))
    }
}

impl DoubleEndedIterator for Users<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<u64> {
        self.chunks.next_back().map(|c| u64_at(c, 0))
    }
}

impl ExactSizeIterator for Users<'_> {}

impl FusedIterator for Users<'_> {}

/// The validated records of a PRESENCE frame, viewed in place (26 bytes each).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PresenceList<'a> {
    bytes: &'a [u8],
}

impl<'a> PresenceList<'a> {
    /// Number of records.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / PRESENCE_RECORD_LEN
    }

    /// Whether there is no record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Record `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<PresenceRecord> {
        let at = i.checked_mul(PRESENCE_RECORD_LEN)?;
        let c = self.bytes.get(at..at.checked_add(PRESENCE_RECORD_LEN)?)?;
        Some(record_from_validated(c))
    }

    /// The records, in wire order.
    #[inline]
    pub fn iter(&self) -> PresenceIter<'a> {
        PresenceIter {
            chunks: self.bytes.chunks_exact(PRESENCE_RECORD_LEN),
        }
    }

    /// The raw bytes of the records (`26 × len()`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for PresenceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for PresenceList<'a> {
    type Item = PresenceRecord;
    type IntoIter = PresenceIter<'a>;

    fn into_iter(self) -> PresenceIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &PresenceList<'a> {
    type Item = PresenceRecord;
    type IntoIter = PresenceIter<'a>;

    fn into_iter(self) -> PresenceIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`PresenceList`].
#[derive(Clone, Debug)]
pub struct PresenceIter<'a> {
    chunks: ChunksExact<'a, u8>,
}

impl Iterator for PresenceIter<'_> {
    type Item = PresenceRecord;

    #[inline]
    fn next(&mut self) -> Option<PresenceRecord> {
        self.chunks.next().map(record_from_validated)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<PresenceRecord> {
        self.chunks.nth(n).map(record_from_validated)
    }
}

impl DoubleEndedIterator for PresenceIter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<PresenceRecord> {
        self.chunks.next_back().map(record_from_validated)
    }
}

impl ExactSizeIterator for PresenceIter<'_> {}

impl FusedIterator for PresenceIter<'_> {}

/// The validated transitions of an EVENTS frame, viewed in place (27 bytes each).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventList<'a> {
    bytes: &'a [u8],
}

impl<'a> EventList<'a> {
    /// Number of transitions.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / EVENT_LEN
    }

    /// Whether there is no transition.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Transition `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Event> {
        let at = i.checked_mul(EVENT_LEN)?;
        let c = self.bytes.get(at..at.checked_add(EVENT_LEN)?)?;
        Some(event_from_validated(c))
    }

    /// The transitions, in wire order.
    #[inline]
    pub fn iter(&self) -> EventIter<'a> {
        EventIter {
            chunks: self.bytes.chunks_exact(EVENT_LEN),
        }
    }

    /// The raw bytes of the transitions (`27 × len()`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for EventList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for EventList<'a> {
    type Item = Event;
    type IntoIter = EventIter<'a>;

    fn into_iter(self) -> EventIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &EventList<'a> {
    type Item = Event;
    type IntoIter = EventIter<'a>;

    fn into_iter(self) -> EventIter<'a> {
        self.iter()
    }
}

/// Iterator over an [`EventList`].
#[derive(Clone, Debug)]
pub struct EventIter<'a> {
    chunks: ChunksExact<'a, u8>,
}

impl Iterator for EventIter<'_> {
    type Item = Event;

    #[inline]
    fn next(&mut self) -> Option<Event> {
        self.chunks.next().map(event_from_validated)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<Event> {
        self.chunks.nth(n).map(event_from_validated)
    }
}

impl DoubleEndedIterator for EventIter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Event> {
        self.chunks.next_back().map(event_from_validated)
    }
}

impl ExactSizeIterator for EventIter<'_> {}

impl FusedIterator for EventIter<'_> {}

/// The per-shard heartbeat ports of a WELCOME frame (`u16` each), viewed in place. Entry `i`
/// is shard `i`'s port; 0 means the shard has no port of its own (use the shared port).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShardPorts<'a> {
    bytes: &'a [u8],
}

impl<'a> ShardPorts<'a> {
    /// Number of shards.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// Whether there is no shard (never, in a decoded WELCOME).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Port of shard `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u16> {
        let at = i.checked_mul(2)?;
        let c = self.bytes.get(at..at.checked_add(2)?)?;
        Some(u16_at(c, 0))
    }

    /// The ports, shard 0 first.
    #[inline]
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u16> + ExactSizeIterator + 'a {
        self.bytes.chunks_exact(2).map(|c| u16_at(c, 0))
    }

    /// The raw bytes (`2 × len()`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for ShardPorts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// HELLO: the gateway's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello<'a> {
    /// The link protocol version; [`PROTOCOL_VERSION`] (a decoded HELLO always has it).
    pub protocol_version: u16,
    /// Flags: bit 0 [`HELLO_FLAG_FIREHOSE`]; bits 1–15 are 0.
    pub flags: u16,
    /// A name for the gateway, for the daemon's logs; at most [`MAX_CLIENT_NAME_LEN`] bytes.
    pub client_name: &'a str,
    /// Authentication token; at most [`MAX_TOKEN_LEN`] bytes; empty until a later revision
    /// defines authentication.
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

    /// Whether the firehose flag (bit 0) is set.
    #[inline]
    pub const fn wants_firehose(&self) -> bool {
        self.flags & HELLO_FLAG_FIREHOSE != 0
    }
}

/// WELCOME: the daemon's answer to HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Welcome<'a> {
    /// The link protocol version; [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The shared heartbeat UDP port (any shard's users).
    pub heartbeat_port: u16,
    /// Per-shard heartbeat ports; their number is the shard count (at least 1).
    pub shard_ports: ShardPorts<'a>,
    /// The daemon's limits.
    pub limits: Limits,
    /// The daemon's timings.
    pub timings: Timings,
}

impl Welcome<'_> {
    /// The number of shards (at least 1 in a decoded WELCOME).
    #[inline]
    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.shard_ports.len()).unwrap_or(u16::MAX)
    }

    /// The UDP port to send `user`'s heartbeats to: the port of the shard that owns it
    /// ([`shard_of`]), or the shared port when that shard has none (0).
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

/// A decoded gateway → daemon frame.
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

    /// Appends the frame (length prefix included) to `out`. Fails only for a hand-built
    /// [`Hello`] or a zero request id that [`decode_client`] would refuse; `out` is unchanged
    /// then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match *self {
            ClientFrame::Hello(ref h) => encode_hello(out, h),
            ClientFrame::Subscribe { request_id, users } => {
                encode_user_request_raw(out, FrameType::Subscribe, request_id, users)
            }
            ClientFrame::Unsubscribe { request_id, users } => {
                encode_user_request_raw(out, FrameType::Unsubscribe, request_id, users)
            }
            ClientFrame::SubscribeAll { request_id } => encode_subscribe_all(out, request_id),
            ClientFrame::UnsubscribeAll { request_id } => encode_unsubscribe_all(out, request_id),
            ClientFrame::Query { request_id, users } => {
                encode_user_request_raw(out, FrameType::Query, request_id, users)
            }
            ClientFrame::Stats { request_id } => encode_stats(out, request_id),
        }
    }
}

/// A decoded daemon → gateway frame.
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
        }
    }

    /// The request id the frame answers; `None` for WELCOME, EVENTS and LAGGED, and for an
    /// ERROR about the link (request id 0).
    pub const fn request_id(&self) -> Option<u32> {
        match *self {
            ServerFrame::Presence(PresenceFrame { request_id, .. })
            | ServerFrame::Ack { request_id }
            | ServerFrame::StatsReply { request_id, .. } => Some(request_id),
            ServerFrame::Error(ErrorFrame { request_id, .. }) if request_id != 0 => {
                Some(request_id)
            }
            _ => None,
        }
    }

    /// Whether the frame completes its request (PRESENCE with FINAL, ACK, ERROR with a
    /// request id, STATS_REPLY).
    pub const fn completes_request(&self) -> bool {
        match *self {
            ServerFrame::Presence(PresenceFrame { is_final, .. }) => is_final,
            ServerFrame::Ack { .. } | ServerFrame::StatsReply { .. } => true,
            ServerFrame::Error(ErrorFrame { request_id, .. }) => request_id != 0,
            _ => false,
        }
    }

    /// Appends the frame (length prefix included) to `out`. Fails only for hand-built fields
    /// that [`decode_server`] would refuse (zero request id, STATS JSON too long, WELCOME
    /// version); `out` is unchanged then. An ERROR message is cut like [`encode_error`] does.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match *self {
            ServerFrame::Welcome(ref w) => {
                if w.protocol_version != PROTOCOL_VERSION {
                    return Err(EncodeError::UnsupportedVersion(w.protocol_version));
                }
                encode_welcome_raw(
                    out,
                    w.heartbeat_port,
                    w.shard_ports.iter(),
                    &w.limits,
                    &w.timings,
                )
            }
            ServerFrame::Presence(ref p) => {
                if p.request_id == 0 {
                    return Err(EncodeError::ZeroRequestId);
                }
                let records = p.records.as_bytes();
                check_frame_len(PRESENCE_HEADER_LEN, records.len())?;
                let start = begin_frame(out, FrameType::Presence);
                out.put_u32_le(p.request_id);
                out.put_u8(if p.is_final { PRESENCE_FLAG_FINAL } else { 0 });
                out.put_u32_le(sat_u32(p.records.len()));
                out.put_slice(records);
                end_frame(out, start);
                Ok(())
            }
            ServerFrame::Events(ref e) => {
                let bytes = e.as_bytes();
                check_frame_len(EVENTS_HEADER_LEN, bytes.len())?;
                let start = begin_frame(out, FrameType::Events);
                out.put_u32_le(sat_u32(e.len()));
                out.put_slice(bytes);
                end_frame(out, start);
                Ok(())
            }
            ServerFrame::Lagged(users) => {
                check_frame_len(LAGGED_HEADER_LEN, users.as_bytes().len())?;
                let start = begin_frame(out, FrameType::Lagged);
                out.put_u8(LAGGED_SCOPE_USERS);
                out.put_u32_le(sat_u32(users.len()));
                out.put_slice(users.as_bytes());
                end_frame(out, start);
                Ok(())
            }
            ServerFrame::LaggedAll => {
                encode_lagged_all(out);
                Ok(())
            }
            ServerFrame::Ack { request_id } => encode_ack(out, request_id),
            ServerFrame::Error(ref e) => {
                encode_error_raw(out, e.request_id, e.code, e.message);
                Ok(())
            }
            ServerFrame::StatsReply { request_id, json } => {
                encode_stats_reply(out, request_id, json)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// Splits a byte stream into frames, enforcing a maximum frame length.
///
/// Typical use over a QUIC stream: append received bytes to a `BytesMut`, then while
/// [`next_frame`](FrameReader::next_frame) returns `Some((frame, used))`, decode `frame` and
/// `advance(used)` (or `split_to(used).freeze()` to keep the frame's bytes zero-copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameReader {
    /// Longest frame (type + body, i.e. the length prefix's value) accepted.
    pub max_frame_len: u32,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameReader {
    /// A reader refusing frames longer than `max_frame_len` (type + body).
    pub const fn new(max_frame_len: u32) -> FrameReader {
        FrameReader { max_frame_len }
    }

    /// The first frame of `buf`: `Some((type + body, bytes consumed including the length
    /// prefix))`, or `None` when `buf` does not yet hold a whole frame.
    ///
    /// Fails with [`BadLength`](FrameError::BadLength) when the length prefix is 0 and with
    /// [`FrameTooLarge`](FrameError::FrameTooLarge) when it exceeds `max_frame_len` — as soon
    /// as the 4-byte prefix is there, without waiting for the frame's bytes. The frame's
    /// content is not checked: pass it to [`decode_client`] or [`decode_server`].
    #[inline]
    pub fn next_frame<'b>(&self, buf: &'b [u8]) -> Result<Option<(&'b [u8], usize)>, FrameError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(array(prefix, 0));
        if len == 0 {
            return Err(FrameError::BadLength);
        }
        if len > self.max_frame_len {
            return Err(FrameError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        // len <= u32::MAX fits usize on every platform with a >= 32-bit usize; saturate
        // otherwise (the slice below then fails and we wait for bytes that cannot come).
        let end = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(LENGTH_PREFIX_LEN);
        Ok(buf.get(LENGTH_PREFIX_LEN..end).map(|frame| (frame, end)))
    }

    /// [`next_frame`](FrameReader::next_frame), then [`decode_client`].
    #[inline]
    pub fn next_client<'b>(
        &self,
        buf: &'b [u8],
    ) -> Result<Option<(ClientFrame<'b>, usize)>, FrameError> {
        match self.next_frame(buf)? {
            Some((frame, used)) => Ok(Some((decode_client(frame)?, used))),
            None => Ok(None),
        }
    }

    /// [`next_frame`](FrameReader::next_frame), then [`decode_server`].
    #[inline]
    pub fn next_server<'b>(
        &self,
        buf: &'b [u8],
    ) -> Result<Option<(ServerFrame<'b>, usize)>, FrameError> {
        match self.next_frame(buf)? {
            Some((frame, used)) => Ok(Some((decode_server(frame)?, used))),
            None => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads fields in order; every read fails with `TooShort` past the end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let head = self.rest.get(..n).ok_or(FrameError::TooShort)?;
        self.rest = self.rest.get(n..).unwrap_or_default();
        Ok(head)
    }

    #[inline]
    fn arr<const W: usize>(&mut self) -> Result<[u8; W], FrameError> {
        Ok(array(self.take(W)?, 0))
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(u8::from_le_bytes(self.arr()?))
    }

    #[inline]
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    #[inline]
    fn request_id(&mut self) -> Result<u32, FrameError> {
        match self.u32()? {
            0 => Err(FrameError::ZeroRequestId),
            id => Ok(id),
        }
    }

    /// `u16 len` + bytes; the limit is checked before the bytes' presence.
    #[inline]
    fn bytes16(&mut self, max: usize) -> Result<&'a [u8], FrameError> {
        let len = self.u16()?;
        if usize::from(len) > max {
            return Err(FrameError::StringTooLong {
                len,
                max: u16::try_from(max).unwrap_or(u16::MAX),
            });
        }
        self.take(usize::from(len))
    }

    #[inline]
    fn string(&mut self, max: usize) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes16(max)?).map_err(|_| FrameError::BadUtf8)
    }

    /// `u32 count` + exactly `count × elem` bytes: the rest of the frame.
    #[inline]
    fn list(&mut self, elem: usize) -> Result<&'a [u8], FrameError> {
        let count = self.u32()?;
        let bytes = self.rest;
        let want = u64::from(count).saturating_mul(elem as u64);
        if bytes.len() as u64 != want {
            return Err(FrameError::CountMismatch {
                count,
                bytes: bytes.len(),
            });
        }
        self.rest = &[];
        Ok(bytes)
    }

    #[inline]
    fn end(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes {
                extra: self.rest.len(),
            })
        }
    }
}

/// Checks a user list's ids (all nonzero). Branch-free scan first; the slow path finds the
/// first zero.
#[inline]
fn validate_users(bytes: &[u8]) -> Result<(), FrameError> {
    let mut bad = false;
    for c in bytes.chunks_exact(USER_ID_LEN) {
        bad |= u64_at(c, 0) == 0;
    }
    if !bad {
        return Ok(());
    }
    first_zero_user(bytes)
}

#[cold]
#[inline(never)]
fn first_zero_user(bytes: &[u8]) -> Result<(), FrameError> {
    match bytes
        .chunks_exact(USER_ID_LEN)
        .position(|c| u64_at(c, 0) == 0)
    {
        Some(i) => Err(FrameError::ZeroUser { index: sat_u32(i) }),
        None => Ok(()),
    }
}

#[inline]
fn user_list<'a>(c: &mut Cursor<'a>) -> Result<UserList<'a>, FrameError> {
    let bytes = c.list(USER_ID_LEN)?;
    validate_users(bytes)?;
    Ok(UserList { bytes })
}

fn validate_records(bytes: &[u8]) -> Result<(), FrameError> {
    for (i, c) in bytes.chunks_exact(PRESENCE_RECORD_LEN).enumerate() {
        let index = sat_u32(i);
        if u64_at(c, 0) == 0 {
            return Err(FrameError::ZeroUser { index });
        }
        let state = byte_at(c, 8);
        if state > 2 {
            return Err(FrameError::BadState {
                index,
                value: state,
            });
        }
        let has = byte_at(c, 9);
        if has > 1 || (has == 0 && u64_at(c, 10) != 0) {
            return Err(FrameError::BadLastSeen { index });
        }
    }
    Ok(())
}

fn validate_events(bytes: &[u8]) -> Result<(), FrameError> {
    for (i, c) in bytes.chunks_exact(EVENT_LEN).enumerate() {
        let index = sat_u32(i);
        if u64_at(c, 0) == 0 {
            return Err(FrameError::ZeroUser { index });
        }
        for value in [byte_at(c, 8), byte_at(c, 9)] {
            if value > 2 {
                return Err(FrameError::BadState { index, value });
            }
        }
        let cause = byte_at(c, 10);
        if cause > 4 {
            return Err(FrameError::BadCause {
                index,
                value: cause,
            });
        }
    }
    Ok(())
}

/// Splits `type + body` into the type byte and a cursor over the body.
#[inline]
fn open(buf: &[u8]) -> Result<(u8, Cursor<'_>), FrameError> {
    match buf.split_first() {
        Some((&t, body)) => Ok((t, Cursor { rest: body })),
        None => Err(FrameError::BadLength),
    }
}

/// Validates one gateway → daemon frame — `buf` is its `type + body`, the length prefix
/// already stripped (see [`FrameReader`]) — and returns a zero-copy view of it. Allocates
/// nothing.
///
/// Fields are checked in wire order and the first failure is returned (SPEC.md, "Push link",
/// validation). A daemon → gateway type is [`UnknownType`](FrameError::UnknownType) here.
pub fn decode_client(buf: &[u8]) -> Result<ClientFrame<'_>, FrameError> {
    let (t, mut c) = open(buf)?;
    let frame = match FrameType::from_u8(t) {
        Some(FrameType::Hello) => {
            let protocol_version = c.u16()?;
            if protocol_version != PROTOCOL_VERSION {
                return Err(FrameError::UnsupportedVersion(protocol_version));
            }
            let flags = c.u16()?;
            if flags & !HELLO_FLAG_FIREHOSE != 0 {
                return Err(FrameError::ReservedFlags(flags));
            }
            let client_name = c.string(MAX_CLIENT_NAME_LEN)?;
            let token = c.bytes16(MAX_TOKEN_LEN)?;
            ClientFrame::Hello(Hello {
                protocol_version,
                flags,
                client_name,
                token,
            })
        }
        Some(FrameType::Subscribe) => ClientFrame::Subscribe {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        },
        Some(FrameType::Unsubscribe) => ClientFrame::Unsubscribe {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        },
        Some(FrameType::SubscribeAll) => ClientFrame::SubscribeAll {
            request_id: c.request_id()?,
        },
        Some(FrameType::UnsubscribeAll) => ClientFrame::UnsubscribeAll {
            request_id: c.request_id()?,
        },
        Some(FrameType::Query) => ClientFrame::Query {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        },
        Some(FrameType::Stats) => ClientFrame::Stats {
            request_id: c.request_id()?,
        },
        _ => return Err(FrameError::UnknownType(t)),
    };
    c.end()?;
    Ok(frame)
}

/// Validates one daemon → gateway frame — `buf` is its `type + body`, the length prefix
/// already stripped (see [`FrameReader`]) — and returns a zero-copy view of it. Allocates
/// nothing.
///
/// Fields are checked in wire order and the first failure is returned (SPEC.md, "Push link",
/// validation). A gateway → daemon type is [`UnknownType`](FrameError::UnknownType) here.
pub fn decode_server(buf: &[u8]) -> Result<ServerFrame<'_>, FrameError> {
    let (t, mut c) = open(buf)?;
    let frame = match FrameType::from_u8(t) {
        Some(FrameType::Welcome) => {
            let protocol_version = c.u16()?;
            if protocol_version != PROTOCOL_VERSION {
                return Err(FrameError::UnsupportedVersion(protocol_version));
            }
            let shard_count = c.u16()?;
            if shard_count == 0 {
                return Err(FrameError::ZeroShardCount);
            }
            let heartbeat_port = c.u16()?;
            let shard_ports = ShardPorts {
                bytes: c.take(usize::from(shard_count) * 2)?,
            };
            let limits = Limits {
                max_frame_len: c.u32()?,
                max_users_per_request: c.u32()?,
                max_subscriptions: c.u32()?,
                max_requests_in_flight: c.u32()?,
            };
            let timings = Timings {
                heartbeat_interval_ms: c.u32()?,
                grace_ms: c.u32()?,
                idle_after_ms: c.u32()?,
                tick_us: c.u32()?,
            };
            ServerFrame::Welcome(Welcome {
                protocol_version,
                heartbeat_port,
                shard_ports,
                limits,
                timings,
            })
        }
        Some(FrameType::Presence) => {
            let request_id = c.request_id()?;
            let flags = c.u8()?;
            if flags & !PRESENCE_FLAG_FINAL != 0 {
                return Err(FrameError::ReservedFlags(u16::from(flags)));
            }
            let bytes = c.list(PRESENCE_RECORD_LEN)?;
            validate_records(bytes)?;
            ServerFrame::Presence(PresenceFrame {
                request_id,
                is_final: flags & PRESENCE_FLAG_FINAL != 0,
                records: PresenceList { bytes },
            })
        }
        Some(FrameType::Events) => {
            let bytes = c.list(EVENT_LEN)?;
            validate_events(bytes)?;
            ServerFrame::Events(EventList { bytes })
        }
        Some(FrameType::Lagged) => {
            let scope = c.u8()?;
            if scope > LAGGED_SCOPE_ALL {
                return Err(FrameError::BadScope(scope));
            }
            let users = user_list(&mut c)?;
            if scope == LAGGED_SCOPE_ALL {
                if !users.is_empty() {
                    return Err(FrameError::BadScope(scope));
                }
                ServerFrame::LaggedAll
            } else {
                ServerFrame::Lagged(users)
            }
        }
        Some(FrameType::Ack) => ServerFrame::Ack {
            request_id: c.request_id()?,
        },
        Some(FrameType::Error) => {
            let request_id = c.u32()?;
            let code = c.u16()?;
            let message = c.string(MAX_ERROR_MESSAGE_LEN)?;
            ServerFrame::Error(ErrorFrame {
                request_id,
                code,
                message,
            })
        }
        Some(FrameType::StatsReply) => ServerFrame::StatsReply {
            request_id: c.request_id()?,
            json: c.string(MAX_STATS_JSON_LEN)?,
        },
        _ => return Err(FrameError::UnknownType(t)),
    };
    c.end()?;
    Ok(frame)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Fails unless a frame of `header + elements` bytes (type + body) fits a `u32` length.
#[inline]
fn check_frame_len(header: usize, elements: usize) -> Result<(), EncodeError> {
    let len = (header as u64).saturating_add(elements as u64);
    if len > u64::from(u32::MAX) {
        return Err(EncodeError::FrameTooLarge {
            len,
            max: u64::from(u32::MAX),
        });
    }
    Ok(())
}

/// Writes a zero length prefix and the type byte; returns the frame's start offset.
#[inline]
fn begin_frame(out: &mut BytesMut, t: FrameType) -> usize {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(t.to_u8());
    start
}

/// Patches the length prefix of the frame started at `start` (callers have checked that the
/// length fits a `u32`).
#[inline]
fn end_frame(out: &mut BytesMut, start: usize) {
    let len = out
        .len()
        .saturating_sub(start.saturating_add(LENGTH_PREFIX_LEN));
    put(out, start, &sat_u32(len).to_le_bytes());
}

#[inline]
fn put_bytes16(out: &mut BytesMut, b: &[u8]) {
    // Callers have checked b.len() against a limit below u16::MAX.
    out.put_u16_le(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(b);
}

#[inline]
fn check_len(len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        Err(EncodeError::StringTooLong { len, max })
    } else {
        Ok(())
    }
}

#[inline]
fn check_request_id(request_id: u32) -> Result<(), EncodeError> {
    if request_id == 0 {
        Err(EncodeError::ZeroRequestId)
    } else {
        Ok(())
    }
}

#[inline]
fn check_users(users: &[u64]) -> Result<(), EncodeError> {
    match users.iter().position(|&u| u == 0) {
        Some(index) => Err(EncodeError::ZeroUser { index }),
        None => Ok(()),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Appends a HELLO frame. Refuses a version other than [`PROTOCOL_VERSION`], reserved flags,
/// a client name over [`MAX_CLIENT_NAME_LEN`] bytes and a token over [`MAX_TOKEN_LEN`] bytes.
pub fn encode_hello(out: &mut BytesMut, hello: &Hello<'_>) -> Result<(), EncodeError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(EncodeError::UnsupportedVersion(hello.protocol_version));
    }
    if hello.flags & !HELLO_FLAG_FIREHOSE != 0 {
        return Err(EncodeError::ReservedFlags(hello.flags));
    }
    check_len(hello.client_name.len(), MAX_CLIENT_NAME_LEN)?;
    check_len(hello.token.len(), MAX_TOKEN_LEN)?;
    let start = begin_frame(out, FrameType::Hello);
    out.put_u16_le(hello.protocol_version);
    out.put_u16_le(hello.flags);
    put_bytes16(out, hello.client_name.as_bytes());
    put_bytes16(out, hello.token);
    end_frame(out, start);
    Ok(())
}

fn encode_user_request(
    out: &mut BytesMut,
    t: FrameType,
    request_id: u32,
    users: &[u64],
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    check_frame_len(
        USER_REQUEST_HEADER_LEN,
        users.len().saturating_mul(USER_ID_LEN),
    )?;
    check_users(users)?;
    let start = begin_frame(out, t);
    out.put_u32_le(request_id);
    out.put_u32_le(sat_u32(users.len()));
    out.reserve(users.len().saturating_mul(USER_ID_LEN));
    for &u in users {
        out.put_u64_le(u);
    }
    end_frame(out, start);
    Ok(())
}

fn encode_user_request_raw(
    out: &mut BytesMut,
    t: FrameType,
    request_id: u32,
    users: UserList<'_>,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    check_frame_len(USER_REQUEST_HEADER_LEN, users.as_bytes().len())?;
    let start = begin_frame(out, t);
    out.put_u32_le(request_id);
    out.put_u32_le(sat_u32(users.len()));
    out.put_slice(users.as_bytes());
    end_frame(out, start);
    Ok(())
}

fn encode_request_only(
    out: &mut BytesMut,
    t: FrameType,
    request_id: u32,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    let start = begin_frame(out, t);
    out.put_u32_le(request_id);
    end_frame(out, start);
    Ok(())
}

/// Appends a SUBSCRIBE frame. Refuses request id 0 and user id 0. `users` may be empty and
/// may repeat users; its length is not checked against `max_users_per_request` (the daemon
/// refuses longer requests with `too_many_users`).
pub fn encode_subscribe(
    out: &mut BytesMut,
    request_id: u32,
    users: &[u64],
) -> Result<(), EncodeError> {
    encode_user_request(out, FrameType::Subscribe, request_id, users)
}

/// Appends an UNSUBSCRIBE frame. Refuses request id 0 and user id 0.
pub fn encode_unsubscribe(
    out: &mut BytesMut,
    request_id: u32,
    users: &[u64],
) -> Result<(), EncodeError> {
    encode_user_request(out, FrameType::Unsubscribe, request_id, users)
}

/// Appends a QUERY frame. Refuses request id 0 and user id 0.
pub fn encode_query(out: &mut BytesMut, request_id: u32, users: &[u64]) -> Result<(), EncodeError> {
    encode_user_request(out, FrameType::Query, request_id, users)
}

/// Appends a SUBSCRIBE_ALL frame (the firehose). Refuses request id 0.
pub fn encode_subscribe_all(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    encode_request_only(out, FrameType::SubscribeAll, request_id)
}

/// Appends an UNSUBSCRIBE_ALL frame (stops the firehose). Refuses request id 0.
pub fn encode_unsubscribe_all(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    encode_request_only(out, FrameType::UnsubscribeAll, request_id)
}

/// Appends a STATS frame. Refuses request id 0.
pub fn encode_stats(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    encode_request_only(out, FrameType::Stats, request_id)
}

fn encode_welcome_raw(
    out: &mut BytesMut,
    heartbeat_port: u16,
    shard_ports: impl ExactSizeIterator<Item = u16>,
    limits: &Limits,
    timings: &Timings,
) -> Result<(), EncodeError> {
    let count = match u16::try_from(shard_ports.len()) {
        Ok(n) if n > 0 => n,
        _ => return Err(EncodeError::BadShardCount(shard_ports.len())),
    };
    let start = begin_frame(out, FrameType::Welcome);
    out.put_u16_le(PROTOCOL_VERSION);
    out.put_u16_le(count);
    out.put_u16_le(heartbeat_port);
    out.reserve(2 * usize::from(count) + 32);
    for p in shard_ports {
        out.put_u16_le(p);
    }
    out.put_u32_le(limits.max_frame_len);
    out.put_u32_le(limits.max_users_per_request);
    out.put_u32_le(limits.max_subscriptions);
    out.put_u32_le(limits.max_requests_in_flight);
    out.put_u32_le(timings.heartbeat_interval_ms);
    out.put_u32_le(timings.grace_ms);
    out.put_u32_le(timings.idle_after_ms);
    out.put_u32_le(timings.tick_us);
    end_frame(out, start);
    Ok(())
}

/// Appends a WELCOME frame (protocol version [`PROTOCOL_VERSION`]). `shard_ports[i]` is shard
/// `i`'s heartbeat port (0: none, use `heartbeat_port`); their number is the shard count, 1
/// to 65,535, else [`EncodeError::BadShardCount`].
pub fn encode_welcome(
    out: &mut BytesMut,
    heartbeat_port: u16,
    shard_ports: &[u16],
    limits: &Limits,
    timings: &Timings,
) -> Result<(), EncodeError> {
    encode_welcome_raw(
        out,
        heartbeat_port,
        shard_ports.iter().copied(),
        limits,
        timings,
    )
}

/// How many records fit one PRESENCE frame no longer than `max_frame_len` (type + body):
/// `(max_frame_len − 10) / 26`, 0 when not even one fits.
pub const fn max_presence_records(max_frame_len: u32) -> usize {
    (max_frame_len as usize).saturating_sub(PRESENCE_HEADER_LEN) / PRESENCE_RECORD_LEN
}

/// How many transitions fit one EVENTS frame no longer than `max_frame_len` (type + body):
/// `(max_frame_len − 5) / 27`, 0 when not even one fits.
pub const fn max_events(max_frame_len: u32) -> usize {
    (max_frame_len as usize).saturating_sub(EVENTS_HEADER_LEN) / EVENT_LEN
}

/// How many users fit one SUBSCRIBE, UNSUBSCRIBE or QUERY frame no longer than
/// `max_frame_len` (type + body): `(max_frame_len − 9) / 8`. Gateways also respect
/// `max_users_per_request`.
pub const fn max_request_users(max_frame_len: u32) -> usize {
    (max_frame_len as usize).saturating_sub(USER_REQUEST_HEADER_LEN) / USER_ID_LEN
}

/// How many users fit one LAGGED frame no longer than `max_frame_len` (type + body):
/// `(max_frame_len − 6) / 8`.
pub const fn max_lagged_users(max_frame_len: u32) -> usize {
    (max_frame_len as usize).saturating_sub(LAGGED_HEADER_LEN) / USER_ID_LEN
}

/// One list frame being built in a buffer: where it starts, where its count goes, how many
/// elements it holds and how long it may get.
#[derive(Clone, Copy, Debug)]
struct ListFrame {
    /// Offset of the length prefix in the buffer.
    start: usize,
    /// Offset of the `u32` count from `start`.
    count_at: usize,
    /// Element size.
    elem: usize,
    count: u32,
    /// Longest frame length (type + body) allowed.
    cap: usize,
}

impl ListFrame {
    fn frame_len(&self, buf: &BytesMut) -> usize {
        buf.len()
            .saturating_sub(self.start.saturating_add(LENGTH_PREFIX_LEN))
    }

    fn remaining(&self, buf: &BytesMut) -> usize {
        self.cap.saturating_sub(self.frame_len(buf)) / self.elem
    }

    /// Patches the count and the length prefix.
    fn seal(&self, buf: &mut BytesMut) {
        put(
            buf,
            self.start.saturating_add(self.count_at),
            &self.count.to_le_bytes(),
        );
        end_frame(buf, self.start);
    }
}

/// The cap as a `usize`, after checking that `header + one element` fits it.
fn writer_cap(max_frame_len: u32, header: usize, elem: usize) -> Result<usize, EncodeError> {
    let one = (header + elem) as u64;
    if u64::from(max_frame_len) < one {
        return Err(EncodeError::FrameTooLarge {
            len: one,
            max: u64::from(max_frame_len),
        });
    }
    Ok(usize::try_from(max_frame_len).unwrap_or(usize::MAX))
}

/// Builds PRESENCE frames for one request in its own buffer, a record at a time, each frame
/// no longer than a given `max_frame_len`. [`encode_presence`] is the one-shot form.
///
/// [`push`](PresenceWriter::push) records; when it answers [`EncodeError::Full`],
/// [`flush`](PresenceWriter::flush) the frame (non-final) and push again; end with
/// [`finish`](PresenceWriter::finish). Frames are handed out as `BytesMut` split off the
/// writer's buffer (no copy; the buffer's spare capacity is reused for the next frame).
///
/// ```
/// use presenced_wire::link::{decode_server, PresenceRecord, PresenceWriter, ServerFrame,
///     WireState};
///
/// let mut w = PresenceWriter::new(1, 1 << 20).unwrap();
/// w.push(PresenceRecord { user: 1001, state: WireState::Online,
///     last_seen_ms: Some(1_700_000_100_000), version: 7 }).unwrap();
/// let frame = w.finish(true).unwrap();
/// let ServerFrame::Presence(p) = decode_server(&frame[4..]).unwrap() else { panic!() };
/// assert!(p.is_final);
/// assert_eq!(p.records.len(), 1);
/// ```
#[derive(Debug)]
pub struct PresenceWriter {
    buf: BytesMut,
    request_id: u32,
    frame: ListFrame,
}

impl PresenceWriter {
    /// A writer for the answer to `request_id`, whose frames' length (type + body) will not
    /// exceed `max_frame_len`. Refuses request id 0, and a `max_frame_len` too small for one
    /// record (below 36: [`EncodeError::FrameTooLarge`]).
    pub fn new(request_id: u32, max_frame_len: u32) -> Result<PresenceWriter, EncodeError> {
        check_request_id(request_id)?;
        let cap = writer_cap(max_frame_len, PRESENCE_HEADER_LEN, PRESENCE_RECORD_LEN)?;
        let mut buf = BytesMut::new();
        let frame = begin_presence(&mut buf, request_id, cap);
        Ok(PresenceWriter {
            buf,
            request_id,
            frame,
        })
    }

    /// Appends a record to the current frame. Refuses user id 0 ([`EncodeError::ZeroUser`])
    /// and a record that would make the frame longer than `max_frame_len`
    /// ([`EncodeError::Full`]: [`flush`](PresenceWriter::flush), then push again); the frame
    /// is unchanged then.
    #[inline]
    pub fn push(&mut self, record: PresenceRecord) -> Result<(), EncodeError> {
        if record.user == 0 {
            return Err(EncodeError::ZeroUser {
                index: self.frame.count as usize,
            });
        }
        if self.frame.remaining(&self.buf) == 0 {
            return Err(EncodeError::Full);
        }
        self.buf.put_slice(&record.to_bytes());
        self.frame.count += 1;
        Ok(())
    }

    /// The request answered.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// Number of records in the current frame.
    #[inline]
    pub fn len(&self) -> usize {
        self.frame.count as usize
    }

    /// Whether the current frame has no record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frame.count == 0
    }

    /// How many more records fit the current frame.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.frame.remaining(&self.buf)
    }

    /// Whether the next record would not fit the current frame.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.remaining() == 0
    }

    fn seal(&mut self, is_final: bool) -> BytesMut {
        let flags = if is_final { PRESENCE_FLAG_FINAL } else { 0 };
        put(&mut self.buf, self.frame.start + 9, &[flags]);
        self.frame.seal(&mut self.buf);
        self.buf.split()
    }

    /// Completes the current frame (not FINAL) and returns it, length prefix included, then
    /// starts a new one; `None`, and nothing changes, when it has no record.
    pub fn flush(&mut self) -> Option<BytesMut> {
        if self.frame.count == 0 {
            return None;
        }
        let frame = self.seal(false);
        self.frame = begin_presence(&mut self.buf, self.request_id, self.frame.cap);
        Some(frame)
    }

    /// Completes the current frame — FINAL set if `is_final` — and returns it, length prefix
    /// included. A final frame is returned even without records (an empty FINAL frame
    /// completes a request); a non-final one without records is `None`.
    pub fn finish(mut self, is_final: bool) -> Option<BytesMut> {
        if self.frame.count == 0 && !is_final {
            return None;
        }
        Some(self.seal(is_final))
    }
}

fn begin_presence(buf: &mut BytesMut, request_id: u32, cap: usize) -> ListFrame {
    let start = begin_frame(buf, FrameType::Presence);
    buf.put_u32_le(request_id);
    buf.put_u8(0);
    buf.put_u32_le(0);
    ListFrame {
        start,
        count_at: 10,
        elem: PRESENCE_RECORD_LEN,
        count: 0,
        cap,
    }
}

/// Appends the records answering `request_id` to `out` as PRESENCE frames no longer than
/// `max_frame_len` each (as many as needed, [`max_presence_records`] per frame; FINAL set on
/// the last one when `is_final`) and returns how many frames it wrote. No records and
/// `is_final` write one empty FINAL frame; no records and not `is_final` write nothing.
/// Refuses request id 0, a zero user, and a `max_frame_len` too small for one record; `out` is
/// unchanged then.
pub fn encode_presence(
    out: &mut BytesMut,
    request_id: u32,
    records: &[PresenceRecord],
    is_final: bool,
    max_frame_len: u32,
) -> Result<usize, EncodeError> {
    check_request_id(request_id)?;
    let per = writer_cap(max_frame_len, PRESENCE_HEADER_LEN, PRESENCE_RECORD_LEN)
        .map(|_| max_presence_records(max_frame_len))?;
    if let Some(index) = records.iter().position(|r| r.user == 0) {
        return Err(EncodeError::ZeroUser { index });
    }
    if records.is_empty() {
        if is_final {
            let frame = begin_presence(out, request_id, usize::MAX);
            put(out, frame.start + 9, &[PRESENCE_FLAG_FINAL]);
            frame.seal(out);
            return Ok(1);
        }
        return Ok(0);
    }
    let chunks = records.chunks(per);
    let n = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        let mut frame = begin_presence(out, request_id, usize::MAX);
        out.reserve(chunk.len() * PRESENCE_RECORD_LEN);
        for r in chunk {
            out.put_slice(&r.to_bytes());
        }
        frame.count = sat_u32(chunk.len());
        if is_final && i + 1 == n {
            put(out, frame.start + 9, &[PRESENCE_FLAG_FINAL]);
        }
        frame.seal(out);
    }
    Ok(n)
}

/// Builds EVENTS frames in its own buffer, a transition at a time, each frame no longer than
/// a given `max_frame_len`. [`encode_events`] is the one-shot form.
///
/// The daemon's hot path: keep one writer per link, [`push`](EventsWriter::push) each
/// transition as it comes; when `push` answers [`EncodeError::Full`], or when the batch ends,
/// [`flush`](EventsWriter::flush) the frame and send it. Frames are handed out as `BytesMut`
/// split off the writer's buffer (no copy; the buffer's spare capacity is reused for the next
/// frame). Empty EVENTS frames are never produced.
///
/// ```
/// use presenced_wire::link::{decode_server, Event, EventsWriter, ServerFrame, WireCause,
///     WireState};
///
/// let mut w = EventsWriter::new(1 << 20).unwrap();
/// assert_eq!(w.flush(), None);
/// w.push(Event { user: 7, state: WireState::Online, prev: WireState::Offline,
///     cause: WireCause::FirstHeartbeat, at_ms: 1, version: 1 << 16 }).unwrap();
/// let frame = w.flush().unwrap();
/// assert_eq!(frame.len(), 4 + 5 + 27);
/// let ServerFrame::Events(events) = decode_server(&frame[4..]).unwrap() else { panic!() };
/// assert_eq!(events.get(0).unwrap().user, 7);
/// assert!(w.is_empty());
/// ```
#[derive(Debug)]
pub struct EventsWriter {
    buf: BytesMut,
    frame: ListFrame,
}

impl EventsWriter {
    /// A writer whose frames' length (type + body) will not exceed `max_frame_len`. Refuses a
    /// `max_frame_len` too small for one transition (below 32:
    /// [`EncodeError::FrameTooLarge`]).
    pub fn new(max_frame_len: u32) -> Result<EventsWriter, EncodeError> {
        let cap = writer_cap(max_frame_len, EVENTS_HEADER_LEN, EVENT_LEN)?;
        let mut buf = BytesMut::new();
        let frame = begin_events(&mut buf, cap);
        Ok(EventsWriter { buf, frame })
    }

    /// Appends a transition to the current frame. Refuses user id 0
    /// ([`EncodeError::ZeroUser`]) and a transition that would make the frame longer than
    /// `max_frame_len` ([`EncodeError::Full`]: [`flush`](EventsWriter::flush), then push
    /// again); the frame is unchanged then.
    #[inline]
    pub fn push(&mut self, event: Event) -> Result<(), EncodeError> {
        if event.user == 0 {
            return Err(EncodeError::ZeroUser {
                index: self.frame.count as usize,
            });
        }
        if self.frame.remaining(&self.buf) == 0 {
            return Err(EncodeError::Full);
        }
        self.buf.put_slice(&event.to_bytes());
        self.frame.count += 1;
        Ok(())
    }

    /// Number of transitions in the current frame.
    #[inline]
    pub fn len(&self) -> usize {
        self.frame.count as usize
    }

    /// Whether the current frame has no transition.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frame.count == 0
    }

    /// How many more transitions fit the current frame.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.frame.remaining(&self.buf)
    }

    /// Whether the next transition would not fit the current frame.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.remaining() == 0
    }

    /// Completes the current frame and returns it, length prefix included, then starts a new
    /// one; `None`, and nothing changes, when it has no transition.
    pub fn flush(&mut self) -> Option<BytesMut> {
        if self.frame.count == 0 {
            return None;
        }
        self.frame.seal(&mut self.buf);
        let frame = self.buf.split();
        self.frame = begin_events(&mut self.buf, self.frame.cap);
        Some(frame)
    }

    /// Completes the current frame and returns it; `None` when it has no transition.
    pub fn finish(mut self) -> Option<BytesMut> {
        self.flush()
    }
}

fn begin_events(buf: &mut BytesMut, cap: usize) -> ListFrame {
    let start = begin_frame(buf, FrameType::Events);
    buf.put_u32_le(0);
    ListFrame {
        start,
        count_at: 5,
        elem: EVENT_LEN,
        count: 0,
        cap,
    }
}

/// Appends `events` to `out` as EVENTS frames no longer than `max_frame_len` each (as many as
/// needed, [`max_events`] per frame; none for no events) and returns how many frames it wrote.
/// Refuses a zero user and a `max_frame_len` too small for one transition; `out` is unchanged
/// then.
pub fn encode_events(
    out: &mut BytesMut,
    events: &[Event],
    max_frame_len: u32,
) -> Result<usize, EncodeError> {
    let per = writer_cap(max_frame_len, EVENTS_HEADER_LEN, EVENT_LEN)
        .map(|_| max_events(max_frame_len))?;
    if let Some(index) = events.iter().position(|e| e.user == 0) {
        return Err(EncodeError::ZeroUser { index });
    }
    let chunks = events.chunks(per);
    let n = chunks.len();
    for chunk in chunks {
        let mut frame = begin_events(out, usize::MAX);
        out.reserve(chunk.len() * EVENT_LEN);
        for e in chunk {
            out.put_slice(&e.to_bytes());
        }
        frame.count = sat_u32(chunk.len());
        frame.seal(out);
    }
    Ok(n)
}

/// Appends a LAGGED frame with scope 0: the listed users' transitions were dropped. Refuses
/// user id 0.
pub fn encode_lagged(out: &mut BytesMut, users: &[u64]) -> Result<(), EncodeError> {
    check_frame_len(LAGGED_HEADER_LEN, users.len().saturating_mul(USER_ID_LEN))?;
    check_users(users)?;
    let start = begin_frame(out, FrameType::Lagged);
    out.put_u8(LAGGED_SCOPE_USERS);
    out.put_u32_le(sat_u32(users.len()));
    out.reserve(users.len().saturating_mul(USER_ID_LEN));
    for &u in users {
        out.put_u64_le(u);
    }
    end_frame(out, start);
    Ok(())
}

/// Appends a LAGGED frame with scope 1 (everything) and an empty user list.
pub fn encode_lagged_all(out: &mut BytesMut) {
    let start = begin_frame(out, FrameType::Lagged);
    out.put_u8(LAGGED_SCOPE_ALL);
    out.put_u32_le(0);
    end_frame(out, start);
}

/// Appends an ACK frame. Refuses request id 0.
pub fn encode_ack(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    encode_request_only(out, FrameType::Ack, request_id)
}

fn encode_error_raw(out: &mut BytesMut, request_id: u32, code: u16, message: &str) {
    let message = truncate_str(message, MAX_ERROR_MESSAGE_LEN);
    let start = begin_frame(out, FrameType::Error);
    out.put_u32_le(request_id);
    out.put_u16_le(code);
    put_bytes16(out, message.as_bytes());
    end_frame(out, start);
}

/// Appends an ERROR frame: `request_id` 0 for an error about the link (the daemon then closes
/// it), else the request refused. A message longer than [`MAX_ERROR_MESSAGE_LEN`] bytes is cut
/// at a character boundary, so this cannot fail.
pub fn encode_error(out: &mut BytesMut, request_id: u32, code: ErrorCode, message: &str) {
    encode_error_raw(out, request_id, code.to_u16(), message);
}

/// Appends a STATS_REPLY frame. Refuses request id 0 and JSON over [`MAX_STATS_JSON_LEN`]
/// bytes. The JSON itself is not checked.
pub fn encode_stats_reply(
    out: &mut BytesMut,
    request_id: u32,
    json: &str,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    check_len(json.len(), MAX_STATS_JSON_LEN)?;
    let start = begin_frame(out, FrameType::StatsReply);
    out.put_u32_le(request_id);
    put_bytes16(out, json.as_bytes());
    end_frame(out, start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_indexed_by_code() {
        let all = [
            FrameError::TooShort,
            FrameError::BadLength,
            FrameError::FrameTooLarge { len: 2, max: 1 },
            FrameError::UnknownType(0),
            FrameError::TrailingBytes { extra: 1 },
            FrameError::CountMismatch { count: 1, bytes: 0 },
            FrameError::BadUtf8,
            FrameError::StringTooLong { len: 65, max: 64 },
            FrameError::ZeroUser { index: 0 },
            FrameError::ZeroRequestId,
            FrameError::BadState { index: 0, value: 3 },
            FrameError::BadCause { index: 0, value: 5 },
            FrameError::BadScope(2),
            FrameError::BadLastSeen { index: 0 },
            FrameError::ReservedFlags(2),
            FrameError::UnsupportedVersion(2),
            FrameError::ZeroShardCount,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code(), i);
            assert_eq!(FrameError::REASONS[i], e.reason());
            assert!(!e.to_string().is_empty());
        }
        let mut names = FrameError::REASONS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FrameError::REASONS.len());
    }

    #[test]
    fn enum_wire_values() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_u8(t.to_u8()), Some(t));
        }
        for (i, s) in WireState::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.to_u8()), i);
            assert_eq!(WireState::from_u8(s.to_u8()), Some(*s));
        }
        assert_eq!(WireState::from_u8(3), None);
        for (i, c) in WireCause::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.to_u8()), i);
            assert_eq!(WireCause::from_u8(c.to_u8()), Some(*c));
        }
        assert_eq!(WireCause::from_u8(5), None);
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.to_u16()), i + 1);
            assert_eq!(*c as u16, c.to_u16());
            assert_eq!(ErrorCode::from_u16(c.to_u16()), Some(*c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(11), None);
    }

    #[test]
    fn truncate_str_respects_char_boundaries() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
