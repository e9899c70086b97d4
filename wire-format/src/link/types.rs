//! The values the link's frames carry: the protocol versions, the frame types, the public
//! states and causes of presence, the ERROR codes and GOAWAY reasons, the PRESENCE, EVENTS and
//! HISTORY_REPLY records, and WELCOME's limits, timings and version-2 fields.
//!
//! It exists to give every wire value one definition — its number on the wire, its name in
//! logs and test vectors, and for the records their byte layout, written by `to_bytes` and read
//! back (after validation) through [`Record`] — used alike by the decoder, the encoders and the
//! writers.

use std::fmt;

#[cfg(doc)]
use super::{FrameError, MIN_MAX_FRAME_LEN};
use super::{EVENT_LEN, MAX_SPAN_DEVICES, PRESENCE_RECORD_LEN, SPAN_LEN};
use crate::le::{byte_at, put, u64_at};
use crate::list::{sealed, Record};

// ---------------------------------------------------------------------------------------------
// Enumerations

/// A version of the link protocol: HELLO's and WELCOME's `protocol_version` (SPEC.md § P5,
/// § P9).
///
/// A link speaks the version WELCOME names. Version 2 is version 1 plus GOAWAY, HISTORY and
/// HISTORY_REPLY, WELCOME's warming and idle-timeout fields and PRESENCE's `WARMING` flag;
/// version 3 is version 2 plus PACE (the daemon asks for a longer heartbeat interval under
/// load); version 4 is version 3 plus MAP and MEMBERS (the cluster's member map). A link carries exactly its version's frames. Decoding needs the link's version where
/// the two differ: see [`Version::decode_client`] and [`Version::decode_server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Version 1: the first published version.
    V1,
    /// Version 2: adds GOAWAY, HISTORY, HISTORY_REPLY, warming and the idle timeout.
    V2,
    /// Version 3: adds PACE (back-off under load).
    V3,
    /// Version 4: adds MAP and MEMBERS (the cluster's member map).
    V4,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 4] = [Version::V1, Version::V2, Version::V3, Version::V4];

    /// The newest version this module speaks.
    pub const LATEST: Version = Version::V4;

    /// The wire value (`protocol_version`).
    #[inline]
    pub const fn to_u16(self) -> u16 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::V3 => 3,
            Version::V4 => 4,
        }
    }

    /// The version of a wire value; `None` for versions this module does not speak.
    #[inline]
    pub const fn from_u16(value: u16) -> Option<Version> {
        match value {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            4 => Some(Version::V4),
            _ => None,
        }
    }

    /// Whether a link of this version carries frames of type `t`.
    #[inline]
    pub const fn has(self, t: FrameType) -> bool {
        t.since().to_u16() <= self.to_u16()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_u16())
    }
}

/// Every frame type of the link. Gateway → daemon types are 0x01–0x09, daemon → gateway types
/// 0x81–0x8B; HISTORY (0x08), GOAWAY (0x88) and HISTORY_REPLY (0x89) exist from version 2 on,
/// PACE (0x8A) from version 3 on, MAP (0x09) and MEMBERS (0x8B) from version 4 on
/// ([`since`](FrameType::since)).
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
    /// 0x08, gateway → daemon, version 2: get a user's presence history.
    History,
    /// 0x09, gateway → daemon, version 4: the member map the gateway holds; asks for a newer one.
    Map,
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
    /// 0x88, daemon → gateway, version 2: the daemon is going away; its last frame.
    GoAway,
    /// 0x89, daemon → gateway, version 2: answers HISTORY.
    HistoryReply,
    /// 0x8A, daemon → gateway, version 3: the heartbeat interval the daemon asks for.
    Pace,
    /// 0x8B, daemon → gateway, version 4: the cluster's member map (JSON).
    Members,
}

impl FrameType {
    /// Every frame type, in wire-value order.
    pub const ALL: [FrameType; 20] = [
        FrameType::Hello,
        FrameType::Subscribe,
        FrameType::Unsubscribe,
        FrameType::SubscribeAll,
        FrameType::UnsubscribeAll,
        FrameType::Query,
        FrameType::Stats,
        FrameType::History,
        FrameType::Map,
        FrameType::Welcome,
        FrameType::Presence,
        FrameType::Events,
        FrameType::Lagged,
        FrameType::Ack,
        FrameType::Error,
        FrameType::StatsReply,
        FrameType::GoAway,
        FrameType::HistoryReply,
        FrameType::Pace,
        FrameType::Members,
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
            FrameType::History => 0x08,
            FrameType::Welcome => 0x81,
            FrameType::Presence => 0x82,
            FrameType::Events => 0x83,
            FrameType::Lagged => 0x84,
            FrameType::Ack => 0x85,
            FrameType::Error => 0x86,
            FrameType::StatsReply => 0x87,
            FrameType::GoAway => 0x88,
            FrameType::HistoryReply => 0x89,
            FrameType::Pace => 0x8A,
            FrameType::Map => 0x09,
            FrameType::Members => 0x8B,
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
            0x08 => FrameType::History,
            0x81 => FrameType::Welcome,
            0x82 => FrameType::Presence,
            0x83 => FrameType::Events,
            0x84 => FrameType::Lagged,
            0x85 => FrameType::Ack,
            0x86 => FrameType::Error,
            0x87 => FrameType::StatsReply,
            0x88 => FrameType::GoAway,
            0x89 => FrameType::HistoryReply,
            0x8A => FrameType::Pace,
            0x09 => FrameType::Map,
            0x8B => FrameType::Members,
            _ => return None,
        })
    }

    /// Whether gateways send this type (as opposed to the daemon).
    #[inline]
    pub const fn is_client(self) -> bool {
        self.to_u8() < 0x80
    }

    /// The first protocol version with this frame type: [`Version::V4`] for MAP and MEMBERS,
    /// [`Version::V3`] for PACE, [`Version::V2`] for HISTORY, GOAWAY and HISTORY_REPLY,
    /// [`Version::V1`] for the others.
    #[inline]
    pub const fn since(self) -> Version {
        match self {
            FrameType::Map | FrameType::Members => Version::V4,
            FrameType::Pace => Version::V3,
            FrameType::History | FrameType::GoAway | FrameType::HistoryReply => Version::V2,
            _ => Version::V1,
        }
    }

    /// Lower-case name (`hello`, `subscribe`, …, `pace`), for logs and test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "hello",
            FrameType::Subscribe => "subscribe",
            FrameType::Unsubscribe => "unsubscribe",
            FrameType::SubscribeAll => "subscribe_all",
            FrameType::UnsubscribeAll => "unsubscribe_all",
            FrameType::Query => "query",
            FrameType::Stats => "stats",
            FrameType::History => "history",
            FrameType::Welcome => "welcome",
            FrameType::Presence => "presence",
            FrameType::Events => "events",
            FrameType::Lagged => "lagged",
            FrameType::Ack => "ack",
            FrameType::Error => "error",
            FrameType::StatsReply => "stats_reply",
            FrameType::GoAway => "goaway",
            FrameType::HistoryReply => "history_reply",
            FrameType::Pace => "pace",
            FrameType::Map => "map",
            FrameType::Members => "members",
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
    /// 8: link authentication failed (SPEC.md § P5.1). With request id 0, HELLO named no
    /// granted link or carried a wrong token, and the link closes; with a request id, a
    /// SUBSCRIBE_ALL came from a link not granted the firehose, and only that request is
    /// refused.
    Unauthorized = 8,
    /// 9: the daemon is shutting down: refuses the request, or (request id 0) closes the link.
    ShuttingDown = 9,
    /// 10: an internal error: refuses the request, or (request id 0) closes the link.
    Internal = 10,
    /// 11 (version 2): the daemon keeps no history (it runs without saved state); refuses the
    /// HISTORY request.
    HistoryUnavailable = 11,
    /// 12: the gateway took nothing of the frames waiting for it for the daemon's stall
    /// timeout; only ever a QUIC close code (the link is not reading), which closes the link.
    Stalled = 12,
}

impl ErrorCode {
    /// Every code, in wire-value order.
    pub const ALL: [ErrorCode; 12] = [
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
        ErrorCode::HistoryUnavailable,
        ErrorCode::Stalled,
    ];

    /// The wire value (1–12).
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
            ErrorCode::HistoryUnavailable => 11,
            ErrorCode::Stalled => 12,
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
            11 => ErrorCode::HistoryUnavailable,
            12 => ErrorCode::Stalled,
            _ => return None,
        })
    }

    /// Whether this code always closes the link (bad_frame, frame_too_large,
    /// protocol_version, hello_required, stalled). `unauthorized`, `shutting_down` and `internal`
    /// close it only when sent with request id 0.
    #[inline]
    pub const fn closes_link(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::ProtocolVersion
                | ErrorCode::HelloRequired
                | ErrorCode::Stalled
        )
    }

    /// Stable snake_case name (`bad_frame`, …, `stalled`).
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
            ErrorCode::HistoryUnavailable => "history_unavailable",
            ErrorCode::Stalled => "stalled",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the daemon goes away: GOAWAY's `reason` (version 2). The numbers are stable; receivers
/// treat a reason they do not know like [`ShuttingDown`](GoAwayReason::ShuttingDown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum GoAwayReason {
    /// 0: the daemon is stopping (it may or may not come back).
    ShuttingDown = 0,
    /// 1: the daemon is restarting and will be back: reconnect to the same address.
    Restarting = 1,
}

impl GoAwayReason {
    /// Every reason, in wire-value order.
    pub const ALL: [GoAwayReason; 2] = [GoAwayReason::ShuttingDown, GoAwayReason::Restarting];

    /// The wire value.
    #[inline]
    pub const fn to_u16(self) -> u16 {
        match self {
            GoAwayReason::ShuttingDown => 0,
            GoAwayReason::Restarting => 1,
        }
    }

    /// The reason of a wire value; `None` for values this version does not define.
    #[inline]
    pub const fn from_u16(value: u16) -> Option<GoAwayReason> {
        match value {
            0 => Some(GoAwayReason::ShuttingDown),
            1 => Some(GoAwayReason::Restarting),
            _ => None,
        }
    }

    /// Stable snake_case name (`shutting_down`, `restarting`).
    pub const fn name(self) -> &'static str {
        match self {
            GoAwayReason::ShuttingDown => "shutting_down",
            GoAwayReason::Restarting => "restarting",
        }
    }
}

impl fmt::Display for GoAwayReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

/// One span of a user's presence history in a HISTORY_REPLY frame (27 bytes on the wire,
/// version 2): the time from one transition of the user to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The version of the transition that began the span.
    pub version: u64,
    /// When it began (that transition's time), Unix milliseconds.
    pub start_ms: u64,
    /// When it ended (the next transition's time), Unix milliseconds; 0 while it is still
    /// going on. Not before `start_ms` unless 0.
    pub end_ms: u64,
    /// The public state during the span.
    pub state: WireState,
    /// The cause of the transition that began it.
    pub cause: WireCause,
    /// The user's live devices right after that transition, 0 to [`MAX_SPAN_DEVICES`].
    pub devices: u8,
}

impl Span {
    /// When the span ended; `None` while it is still going on (`end_ms` 0).
    #[inline]
    pub const fn end(&self) -> Option<u64> {
        if self.end_ms == 0 {
            None
        } else {
            Some(self.end_ms)
        }
    }

    /// Whether the span is still going on (`end_ms` 0).
    #[inline]
    pub const fn is_ongoing(&self) -> bool {
        self.end_ms == 0
    }

    /// Whether the span may be sent: `devices` at most [`MAX_SPAN_DEVICES`], and `start_ms`
    /// not after `end_ms` unless the span is still going on.
    #[inline]
    pub const fn is_valid(&self) -> bool {
        self.devices <= MAX_SPAN_DEVICES && (self.end_ms == 0 || self.start_ms <= self.end_ms)
    }

    /// The span's 27 wire bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; SPAN_LEN] {
        let mut b = [0u8; SPAN_LEN];
        put(&mut b, 0, &self.version.to_le_bytes());
        put(&mut b, 8, &self.start_ms.to_le_bytes());
        put(&mut b, 16, &self.end_ms.to_le_bytes());
        put(
            &mut b,
            24,
            &[self.state.to_u8(), self.cause.to_u8(), self.devices],
        );
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

/// What a version-2 WELCOME adds after the timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WelcomeV2 {
    /// `Some(ms)` when the daemon is **warming** (flag `WARMING`): it started without its
    /// saved state, so for about `ms` more milliseconds its answers may show users offline who
    /// are online. `None` when not warming (flag clear, `warm_remaining_ms` 0).
    pub warm_remaining_ms: Option<u32>,
    /// The link's QUIC idle timeout, milliseconds (0: none). Gateways send a QUIC PING at
    /// least every third of it.
    pub idle_timeout_ms: u32,
}

impl sealed::Sealed for PresenceRecord {}

impl Record for PresenceRecord {
    const LEN: usize = PRESENCE_RECORD_LEN;

    #[inline(always)]
    fn read(c: &[u8]) -> PresenceRecord {
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
}

impl sealed::Sealed for Event {}

impl Record for Event {
    const LEN: usize = EVENT_LEN;

    #[inline(always)]
    fn read(c: &[u8]) -> Event {
        Event {
            user: u64_at(c, 0),
            state: state_from_validated(byte_at(c, 8)),
            prev: state_from_validated(byte_at(c, 9)),
            cause: cause_from_validated(byte_at(c, 10)),
            at_ms: u64_at(c, 11),
            version: u64_at(c, 19),
        }
    }
}

impl sealed::Sealed for Span {}

impl Record for Span {
    const LEN: usize = SPAN_LEN;

    #[inline(always)]
    fn read(c: &[u8]) -> Span {
        Span {
            version: u64_at(c, 0),
            start_ms: u64_at(c, 8),
            end_ms: u64_at(c, 16),
            state: state_from_validated(byte_at(c, 24)),
            cause: cause_from_validated(byte_at(c, 25)),
            devices: byte_at(c, 26),
        }
    }
}

/// A state byte the decoder has checked (at most 2).
#[inline(always)]
fn state_from_validated(b: u8) -> WireState {
    match b {
        0 => WireState::Offline,
        1 => WireState::Online,
        _ => WireState::Idle,
    }
}

/// A cause byte the decoder has checked (at most 4).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_wire_values() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_u8(t.to_u8()), Some(t));
        }
        for (i, s) in WireState::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.to_u8()), i);
            assert_eq!(WireState::from_u8(s.to_u8()), Some(*s));
            assert_eq!(state_from_validated(s.to_u8()), *s);
        }
        assert_eq!(WireState::from_u8(3), None);
        for (i, c) in WireCause::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.to_u8()), i);
            assert_eq!(WireCause::from_u8(c.to_u8()), Some(*c));
            assert_eq!(cause_from_validated(c.to_u8()), *c);
        }
        assert_eq!(WireCause::from_u8(5), None);
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.to_u16()), i + 1);
            assert_eq!(*c as u16, c.to_u16());
            assert_eq!(ErrorCode::from_u16(c.to_u16()), Some(*c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(13), None);
        for (i, r) in GoAwayReason::ALL.iter().enumerate() {
            assert_eq!(usize::from(r.to_u16()), i);
            assert_eq!(*r as u16, r.to_u16());
            assert_eq!(GoAwayReason::from_u16(r.to_u16()), Some(*r));
        }
        assert_eq!(GoAwayReason::from_u16(2), None);
        for v in Version::ALL {
            assert_eq!(Version::from_u16(v.to_u16()), Some(v));
        }
        assert_eq!(Version::from_u16(0), None);
        assert_eq!(Version::from_u16(5), None);
        assert_eq!(Version::LATEST, Version::V4);
        let v2_only: Vec<FrameType> = FrameType::ALL
            .into_iter()
            .filter(|t| !Version::V1.has(*t))
            .collect();
        assert_eq!(
            v2_only,
            [
                FrameType::History,
                FrameType::Map,
                FrameType::GoAway,
                FrameType::HistoryReply,
                FrameType::Pace,
                FrameType::Members
            ]
        );
        assert!(!Version::V2.has(FrameType::Pace));
        assert!(!Version::V3.has(FrameType::Map));
        assert!(!Version::V3.has(FrameType::Members));
        assert!(FrameType::ALL.iter().all(|t| Version::V4.has(*t)));
        let mut values: Vec<u8> = FrameType::ALL.iter().map(|t| t.to_u8()).collect();
        values.sort_unstable();
        assert_eq!(values, FrameType::ALL.map(FrameType::to_u8));
    }

    #[test]
    fn records_read_back_what_they_write() {
        let r = PresenceRecord {
            user: 7,
            state: WireState::Idle,
            last_seen_ms: Some(1_700_000_000_000),
            version: 3 << 16,
        };
        assert_eq!(PresenceRecord::read(&r.to_bytes()), r);
        let r = PresenceRecord {
            last_seen_ms: None,
            ..r
        };
        assert_eq!(PresenceRecord::read(&r.to_bytes()), r);
        let e = Event {
            user: u64::MAX,
            state: WireState::Online,
            prev: WireState::Offline,
            cause: WireCause::Inactivity,
            at_ms: 1,
            version: 2,
        };
        assert_eq!(Event::read(&e.to_bytes()), e);
        let s = Span {
            version: 9 << 16,
            start_ms: 1,
            end_ms: 0,
            state: WireState::Idle,
            cause: WireCause::Inactivity,
            devices: 31,
        };
        assert_eq!(Span::read(&s.to_bytes()), s);
        assert!(s.is_valid() && s.is_ongoing() && s.end().is_none());
        assert!(!Span { devices: 32, ..s }.is_valid());
        assert!(!Span {
            end_ms: 1,
            start_ms: 2,
            ..s
        }
        .is_valid());
        assert_eq!(Span { end_ms: 2, ..s }.end(), Some(2));
    }
}
