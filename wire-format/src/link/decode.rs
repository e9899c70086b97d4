//! Reading frames: [`FrameReader`] splits a stream into frames under `max_frame_len`, and
//! [`Version::decode_client`] and [`Version::decode_server`] validate one frame completely for
//! a link of that version (SPEC.md § P7) and return a zero-copy view of it;
//! [`decode_client`] and [`decode_server`] are version 1's.
//!
//! It exists to keep every validation rule of the link in one place, in the order SPEC.md
//! gives: the views of `view` are only made here, which is what lets them read records without
//! checks.

use super::MembersFrame;
use super::{
    ClientFrame, ErrorFrame, Event, EventList, FrameError, FrameType, GatewayFrame, GoAwayFrame,
    Hello, HistoryReply, HistoryRequest, Limits, PresenceFrame, PresenceList, PresenceRecord,
    ServerFrame, ShardPorts, Span, SpanList, Timings, UserList, Version, Welcome, WelcomeV2,
    DEFAULT_MAX_FRAME_LEN, EVENT_LEN, HELLO_FLAG_FIREHOSE, HISTORY_FLAG_MORE, LAGGED_SCOPE_ALL,
    LENGTH_PREFIX_LEN, MAX_CLIENT_NAME_LEN, MAX_ERROR_MESSAGE_LEN, MAX_GOAWAY_MESSAGE_LEN,
    MAX_SPAN_DEVICES, MAX_STATS_JSON_LEN, MAX_TOKEN_LEN, PRESENCE_FLAG_FINAL,
    PRESENCE_FLAG_WARMING, PRESENCE_RECORD_LEN, SPAN_LEN, USER_ID_LEN, WELCOME_FLAG_WARMING,
};
use crate::cluster::MemberMap;
use crate::le::{array, byte_at, sat_u32, u64_at};
use crate::list::Record;

/// Splits a byte stream into frames, enforcing a maximum frame length.
///
/// Typical use over a QUIC stream: append received bytes to a `BytesMut`, then while
/// [`next_frame`](FrameReader::next_frame) returns `Some((frame, used))`, decode `frame` with
/// the link's [`Version`] and `advance(used)` (or `split_to(used).freeze()` to keep the frame's
/// bytes zero-copy). [`next_client`](FrameReader::next_client) and
/// [`next_server`](FrameReader::next_server) split and decode in one step on a version-1 link.
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

    /// [`next_frame`](FrameReader::next_frame), then [`decode_client`] (a version-1 link).
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

    /// [`next_frame`](FrameReader::next_frame), then [`decode_server`] (a version-1 link).
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
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }

    /// A protocol version: HELLO's or WELCOME's first field, accepted from 1 up to `max`.
    #[inline]
    fn version(&mut self, max: Version) -> Result<Version, FrameError> {
        let v = self.u16()?;
        match Version::from_u16(v) {
            Some(version) if version <= max => Ok(version),
            _ => Err(FrameError::UnsupportedVersion(v)),
        }
    }

    /// `has_last_seen u8` + `last_seen_ms u64`, as in PRESENCE records (`index` for the
    /// error).
    #[inline]
    fn last_seen(&mut self, index: u32) -> Result<Option<u64>, FrameError> {
        let has = self.u8()?;
        let ms = self.u64()?;
        match has {
            1 => Ok(Some(ms)),
            0 if ms == 0 => Ok(None),
            _ => Err(FrameError::BadLastSeen { index }),
        }
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

    /// `u32 count` + exactly `count` records of `R`: the rest of the frame, whose records the
    /// caller validates.
    #[inline]
    fn list<R: Record>(&mut self) -> Result<&'a [u8], FrameError> {
        let count = self.u32()?;
        let bytes = self.rest;
        let want = u64::from(count).saturating_mul(R::LEN as u64);
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

/// A user list: count, then nonzero user ids.
#[inline]
fn user_list<'a>(c: &mut Cursor<'a>) -> Result<UserList<'a>, FrameError> {
    let bytes = c.list::<u64>()?;
    validate_users(bytes)?;
    Ok(UserList::from_validated(bytes))
}

/// Checks PRESENCE records in order: user, state, last seen.
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

/// Checks EVENTS transitions in order: user, state, prev, cause.
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

/// Checks HISTORY_REPLY spans in order: start/end, state, cause, devices.
fn validate_spans(bytes: &[u8]) -> Result<(), FrameError> {
    for (i, c) in bytes.chunks_exact(SPAN_LEN).enumerate() {
        let index = sat_u32(i);
        let (start, end) = (u64_at(c, 8), u64_at(c, 16));
        if end != 0 && start > end {
            return Err(FrameError::BadSpan { index });
        }
        let state = byte_at(c, 24);
        if state > 2 {
            return Err(FrameError::BadState {
                index,
                value: state,
            });
        }
        let cause = byte_at(c, 25);
        if cause > 4 {
            return Err(FrameError::BadCause {
                index,
                value: cause,
            });
        }
        let devices = byte_at(c, 26);
        if devices > MAX_SPAN_DEVICES {
            return Err(FrameError::BadDevices {
                index,
                value: devices,
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

/// Validates one gateway → daemon frame of a version-1 link — `buf` is its `type + body`, the
/// length prefix already stripped (see [`FrameReader`]) — and returns a zero-copy view of it.
/// Allocates nothing. The same as [`Version::V1`]'s [`decode_client`](Version::decode_client),
/// which never returns a version-2 frame.
///
/// Fields are checked in wire order and the first failure is returned (SPEC.md, "Push link",
/// validation). A daemon → gateway type, and HISTORY (version 2), are
/// [`UnknownType`](FrameError::UnknownType) here; a HELLO asking for version 2 is
/// [`UnsupportedVersion`](FrameError::UnsupportedVersion).
pub fn decode_client(buf: &[u8]) -> Result<ClientFrame<'_>, FrameError> {
    match client(buf, Version::V1)? {
        GatewayFrame::Common(f) => Ok(f),
        // A version-1 link has no HISTORY nor MAP: `client` refused their types already.
        GatewayFrame::History(_) => Err(FrameError::UnknownType(FrameType::History.to_u8())),
        GatewayFrame::Map { .. } => Err(FrameError::UnknownType(FrameType::Map.to_u8())),
    }
}

/// Validates one daemon → gateway frame of a version-1 link — `buf` is its `type + body`, the
/// length prefix already stripped (see [`FrameReader`]) — and returns a zero-copy view of it.
/// Allocates nothing. The same as [`Version::V1`]'s [`decode_server`](Version::decode_server).
///
/// Fields are checked in wire order and the first failure is returned (SPEC.md, "Push link",
/// validation). A gateway → daemon type, and GOAWAY and HISTORY_REPLY (version 2), are
/// [`UnknownType`](FrameError::UnknownType) here.
pub fn decode_server(buf: &[u8]) -> Result<ServerFrame<'_>, FrameError> {
    server(buf, Version::V1)
}

impl Version {
    /// Validates one gateway → daemon frame for a link of this version — `frame` is its
    /// `type + body`, the length prefix already stripped (see [`FrameReader`]) — and returns a
    /// zero-copy view of it. Allocates nothing.
    ///
    /// Before the link's version is known (the first frame, HELLO), a daemon passes the
    /// highest version it speaks: a HELLO asking for any version from 1 to that one decodes,
    /// and its `protocol_version` is the link's version (the daemon then answers WELCOME of
    /// that version). Version-2 frame types on a version-1 link are
    /// [`UnknownType`](FrameError::UnknownType).
    pub fn decode_client(self, frame: &[u8]) -> Result<GatewayFrame<'_>, FrameError> {
        client(frame, self)
    }

    /// Validates one daemon → gateway frame for a link of this version — `frame` is its
    /// `type + body`, the length prefix already stripped (see [`FrameReader`]) — and returns a
    /// zero-copy view of it. Allocates nothing.
    ///
    /// Before WELCOME, a gateway passes the version its HELLO asked for: a WELCOME of that
    /// version or an older one decodes with its own version's layout, and its
    /// `protocol_version` is the link's version from then on. Version-2 frame types, and
    /// PRESENCE's `WARMING` bit, on a version-1 link are refused
    /// ([`UnknownType`](FrameError::UnknownType), [`ReservedFlags`](FrameError::ReservedFlags)).
    pub fn decode_server(self, frame: &[u8]) -> Result<ServerFrame<'_>, FrameError> {
        server(frame, self)
    }
}

/// The type byte's frame type, if it is one of the receiving direction on a link of `version`.
#[inline]
fn frame_type(t: u8, client: bool, version: Version) -> Result<FrameType, FrameError> {
    match FrameType::from_u8(t) {
        Some(ft) if ft.is_client() == client && version.has(ft) => Ok(ft),
        _ => Err(FrameError::UnknownType(t)),
    }
}

fn client(buf: &[u8], version: Version) -> Result<GatewayFrame<'_>, FrameError> {
    let (t, mut c) = open(buf)?;
    let frame = match frame_type(t, true, version)? {
        FrameType::Hello => {
            let protocol_version = c.version(version)?.to_u16();
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
            .into()
        }
        FrameType::Subscribe => ClientFrame::Subscribe {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        }
        .into(),
        FrameType::Unsubscribe => ClientFrame::Unsubscribe {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        }
        .into(),
        FrameType::SubscribeAll => ClientFrame::SubscribeAll {
            request_id: c.request_id()?,
        }
        .into(),
        FrameType::UnsubscribeAll => ClientFrame::UnsubscribeAll {
            request_id: c.request_id()?,
        }
        .into(),
        FrameType::Query => ClientFrame::Query {
            request_id: c.request_id()?,
            users: user_list(&mut c)?,
        }
        .into(),
        FrameType::Stats => ClientFrame::Stats {
            request_id: c.request_id()?,
        }
        .into(),
        FrameType::Map => GatewayFrame::Map {
            request_id: c.request_id()?,
            revision: c.u64()?,
        },
        FrameType::History => {
            let request_id = c.request_id()?;
            let user = c.u64()?;
            if user == 0 {
                return Err(FrameError::ZeroUser { index: 0 });
            }
            let since_ms = c.u64()?;
            let after_version = c.u64()?;
            let max_spans = c.u32()?;
            if max_spans == 0 {
                return Err(FrameError::ZeroMaxSpans);
            }
            GatewayFrame::History(HistoryRequest {
                request_id,
                user,
                since_ms,
                after_version,
                max_spans,
            })
        }
        // `frame_type` let only gateway → daemon types through.
        _ => return Err(FrameError::UnknownType(t)),
    };
    c.end()?;
    Ok(frame)
}

fn server(buf: &[u8], version: Version) -> Result<ServerFrame<'_>, FrameError> {
    let (t, mut c) = open(buf)?;
    let frame = match frame_type(t, false, version)? {
        FrameType::Welcome => {
            let link = c.version(version)?;
            let shard_count = c.u16()?;
            if shard_count == 0 {
                return Err(FrameError::ZeroShardCount);
            }
            let heartbeat_port = c.u16()?;
            // Any port is valid (0: the shard has none of its own).
            let shard_ports =
                ShardPorts::from_validated(c.take(usize::from(shard_count) * u16::LEN)?);
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
            let v2 = match link {
                Version::V1 => None,
                Version::V2 | Version::V3 | Version::V4 => {
                    let flags = c.u16()?;
                    if flags & !WELCOME_FLAG_WARMING != 0 {
                        return Err(FrameError::ReservedFlags(flags));
                    }
                    let remaining = c.u32()?;
                    let warm_remaining_ms = if flags & WELCOME_FLAG_WARMING != 0 {
                        Some(remaining)
                    } else if remaining == 0 {
                        None
                    } else {
                        return Err(FrameError::BadWarming);
                    };
                    Some(WelcomeV2 {
                        warm_remaining_ms,
                        idle_timeout_ms: c.u32()?,
                    })
                }
            };
            ServerFrame::Welcome(Welcome {
                protocol_version: link.to_u16(),
                heartbeat_port,
                shard_ports,
                limits,
                timings,
                v2,
            })
        }
        FrameType::Presence => {
            let request_id = c.request_id()?;
            let flags = c.u8()?;
            let valid = match version {
                Version::V1 => PRESENCE_FLAG_FINAL,
                Version::V2 | Version::V3 | Version::V4 => {
                    PRESENCE_FLAG_FINAL | PRESENCE_FLAG_WARMING
                }
            };
            if flags & !valid != 0 {
                return Err(FrameError::ReservedFlags(u16::from(flags)));
            }
            let bytes = c.list::<PresenceRecord>()?;
            validate_records(bytes)?;
            ServerFrame::Presence(PresenceFrame {
                request_id,
                is_final: flags & PRESENCE_FLAG_FINAL != 0,
                warming: flags & PRESENCE_FLAG_WARMING != 0,
                records: PresenceList::from_validated(bytes),
            })
        }
        FrameType::Events => {
            let bytes = c.list::<Event>()?;
            validate_events(bytes)?;
            ServerFrame::Events(EventList::from_validated(bytes))
        }
        FrameType::Lagged => {
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
        FrameType::Ack => ServerFrame::Ack {
            request_id: c.request_id()?,
        },
        FrameType::Error => {
            let request_id = c.u32()?;
            let code = c.u16()?;
            let message = c.string(MAX_ERROR_MESSAGE_LEN)?;
            ServerFrame::Error(ErrorFrame {
                request_id,
                code,
                message,
            })
        }
        FrameType::StatsReply => ServerFrame::StatsReply {
            request_id: c.request_id()?,
            json: c.string(MAX_STATS_JSON_LEN)?,
        },
        FrameType::GoAway => ServerFrame::GoAway(GoAwayFrame {
            reason: c.u16()?,
            reconnect_after_ms: c.u32()?,
            message: c.string(MAX_GOAWAY_MESSAGE_LEN)?,
        }),
        FrameType::HistoryReply => {
            let request_id = c.request_id()?;
            let flags = c.u8()?;
            if flags & !HISTORY_FLAG_MORE != 0 {
                return Err(FrameError::ReservedFlags(u16::from(flags)));
            }
            let last_seen_ms = c.last_seen(0)?;
            let bytes = c.list::<Span>()?;
            validate_spans(bytes)?;
            ServerFrame::HistoryReply(HistoryReply {
                request_id,
                more: flags & HISTORY_FLAG_MORE != 0,
                last_seen_ms,
                spans: SpanList::from_validated(bytes),
            })
        }
        FrameType::Pace => ServerFrame::Pace {
            interval_ms: c.u32()?,
        },
        FrameType::Members => {
            // The body is the JSON, to the frame's end.
            let body = c.take(c.rest.len())?;
            members_map(body)?;
            let json = std::str::from_utf8(body).map_err(|_| FrameError::BadMembers)?;
            ServerFrame::Members(MembersFrame::from_validated(json))
        }
        // `frame_type` let only daemon → gateway types through.
        _ => return Err(FrameError::UnknownType(t)),
    };
    c.end()?;
    Ok(frame)
}

/// MEMBERS' body as a member map: JSON of [`MemberMap`]'s fields (no other field), passing
/// [`MemberMap::check`]; its members sorted by id. Anything else is
/// [`BadMembers`](FrameError::BadMembers).
pub(super) fn members_map(json: &[u8]) -> Result<MemberMap, FrameError> {
    let mut map: MemberMap = serde_json::from_slice(json).map_err(|_| FrameError::BadMembers)?;
    map.check().map_err(|_| FrameError::BadMembers)?;
    map.sort();
    Ok(map)
}
