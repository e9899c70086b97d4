//! The values the link's frames carry: the frame types, the public states and causes of
//! presence, the ERROR codes, the PRESENCE and EVENTS records, and WELCOME's limits and
//! timings.
//!
//! It exists to give every wire value one definition — its number on the wire, its name in
//! logs and test vectors, and for the records their byte layout, written by `to_bytes` and read
//! back (after validation) through [`Record`] — used alike by the decoder, the encoders and the
//! writers.

use std::fmt;

#[cfg(doc)]
use super::{FrameError, MIN_MAX_FRAME_LEN};
use super::{EVENT_LEN, PRESENCE_RECORD_LEN};
use crate::le::{byte_at, put, u64_at};
use crate::list::{sealed, Record};

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
    /// 8: link authentication failed (SPEC.md § P5.1). With request id 0, HELLO named no
    /// granted link or carried a wrong token, and the link closes; with a request id, a
    /// SUBSCRIBE_ALL came from a link not granted the firehose, and only that request is
    /// refused.
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
    /// protocol_version, hello_required). `unauthorized`, `shutting_down` and `internal`
    /// close it only when sent with request id 0.
    #[inline]
    pub const fn closes_link(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::ProtocolVersion
                | ErrorCode::HelloRequired
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
        assert_eq!(ErrorCode::from_u16(11), None);
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
    }
}
