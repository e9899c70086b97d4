//! Writing frames: the one frame builder, every `encode_*` function, and `encode` on the
//! decoded frames ([`ClientFrame::encode`], [`ServerFrame::encode`]).
//!
//! It exists so that there is one way to write a frame. [`Frame`] writes the length prefix
//! and the type byte, and [`Frame::check`] is the only place a frame's length is checked.
//! [`ListFrame`] builds on it for the frames whose last field is a list (SUBSCRIBE,
//! UNSUBSCRIBE, QUERY, LAGGED, PRESENCE, EVENTS): it takes the list as values (checked before
//! anything is written) or as a decoded view (copied as it is, already valid), so the typed
//! functions, `encode` on decoded frames and the writers of `writer` share each frame's
//! layout. Every function checks its inputs before it writes, so `out` is unchanged on error.
//! Version 2's frames and fields are written by the same builders.

use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};

#[cfg(doc)]
use super::{decode_client, decode_server};
use super::{
    ClientFrame, EncodeError, ErrorCode, Event, FrameType, GatewayFrame, GoAwayReason, Hello,
    HistoryRequest, Limits, PresenceRecord, ServerFrame, Span, Timings, Version, WelcomeV2,
    EVENTS_HEADER_LEN, EVENT_LEN, HELLO_FLAG_FIREHOSE, HISTORY_FLAG_MORE, HISTORY_REPLY_HEADER_LEN,
    LAGGED_HEADER_LEN, LAGGED_SCOPE_ALL, LAGGED_SCOPE_USERS, LENGTH_PREFIX_LEN,
    MAX_CLIENT_NAME_LEN, MAX_ERROR_MESSAGE_LEN, MAX_GOAWAY_MESSAGE_LEN, MAX_STATS_JSON_LEN,
    MAX_TOKEN_LEN, PRESENCE_FLAG_FINAL, PRESENCE_FLAG_WARMING, PRESENCE_HEADER_LEN,
    PRESENCE_RECORD_LEN, SPAN_LEN, USER_ID_LEN, USER_REQUEST_HEADER_LEN, WELCOME_FLAG_WARMING,
};
use crate::cluster::MemberMap;
use crate::le::{put, sat_u32};
use crate::list::{FixedList, Record};

// ---------------------------------------------------------------------------------------------
// The frame builder

/// Bytes of a list's `u32` count.
const COUNT_LEN: usize = 4;

/// A frame being written at the end of a buffer: where its length prefix is, and the longest
/// it may get (type + body).
#[derive(Clone, Copy, Debug)]
struct Frame {
    start: usize,
    max: u32,
}

impl Frame {
    /// Fails unless a frame whose body is `body` bytes is no longer than `max` (type + body):
    /// the one frame-length check of the encoders and writers.
    #[inline]
    fn check(body: usize, max: u32) -> Result<(), EncodeError> {
        let len = (body as u64).saturating_add(1);
        if len > u64::from(max) {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: u64::from(max),
            });
        }
        Ok(())
    }

    /// Starts a frame of type `t` at the end of `out` (the caller has checked its length):
    /// a length prefix, filled in by [`close`](Frame::close), and the type byte.
    #[inline]
    fn begin(out: &mut BytesMut, t: FrameType, max: u32) -> Frame {
        let start = out.len();
        out.put_u32_le(0);
        out.put_u8(t.to_u8());
        Frame { start, max }
    }

    /// The frame's length so far (type + body).
    #[inline]
    fn len(&self, out: &BytesMut) -> usize {
        out.len()
            .saturating_sub(self.start.saturating_add(LENGTH_PREFIX_LEN))
    }

    /// How many more bytes the frame may take.
    #[inline]
    fn room(&self, out: &BytesMut) -> usize {
        usize::try_from(self.max)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.len(out))
    }

    /// Completes the frame: its length prefix becomes the bytes written after it.
    #[inline]
    fn close(self, out: &mut BytesMut) {
        let len = sat_u32(self.len(out));
        put(out, self.start, &len.to_le_bytes());
    }
}

/// Appends a whole frame of type `t` whose body, `body` bytes, `write` puts: the way every
/// frame without a list is written.
fn put_frame(
    out: &mut BytesMut,
    t: FrameType,
    body: usize,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), EncodeError> {
    Frame::check(body, u32::MAX)?;
    out.reserve(LENGTH_PREFIX_LEN.saturating_add(1).saturating_add(body));
    let frame = Frame::begin(out, t, u32::MAX);
    write(out);
    frame.close(out);
    Ok(())
}

/// A record the encoders write.
pub(super) trait PutRecord: Record {
    /// Whether the value may be sent: a user id of 0 may not.
    fn sendable(&self) -> bool;

    /// Why the value may not be sent, as the error of a record at `index`: for every record
    /// but spans, [`EncodeError::ZeroUser`].
    #[inline]
    fn refusal(index: usize) -> EncodeError {
        EncodeError::ZeroUser { index }
    }

    /// Appends the record's wire bytes.
    fn put(&self, out: &mut BytesMut);
}

impl PutRecord for u64 {
    #[inline]
    fn sendable(&self) -> bool {
        *self != 0
    }

    #[inline]
    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(*self);
    }
}

impl PutRecord for u16 {
    #[inline]
    fn sendable(&self) -> bool {
        true
    }

    #[inline]
    fn put(&self, out: &mut BytesMut) {
        out.put_u16_le(*self);
    }
}

/// PRESENCE records and EVENTS transitions: sendable unless their user is 0.
macro_rules! user_record {
    ($($record:ty),*) => {$(
        impl PutRecord for $record {
            #[inline]
            fn sendable(&self) -> bool {
                self.user != 0
            }

            #[inline]
            fn put(&self, out: &mut BytesMut) {
                out.put_slice(&self.to_bytes());
            }
        }
    )*};
}

user_record!(PresenceRecord, Event);

/// HISTORY_REPLY spans: sendable when valid ([`Span::is_valid`]).
impl PutRecord for Span {
    #[inline]
    fn sendable(&self) -> bool {
        self.is_valid()
    }

    #[inline]
    fn refusal(index: usize) -> EncodeError {
        EncodeError::BadSpan { index }
    }

    #[inline]
    fn put(&self, out: &mut BytesMut) {
        out.put_slice(&self.to_bytes());
    }
}

/// A list field's records as the encoders take them: values (`&[R]`, checked), or a decoded
/// list ([`FixedList`], valid already, copied as it is).
trait Records<R> {
    /// Number of records.
    fn count(&self) -> usize;

    /// The error of the first record that may not be sent ([`EncodeError::ZeroUser`], or
    /// [`EncodeError::BadSpan`] for spans), with its index.
    fn check(&self) -> Result<(), EncodeError>;

    /// Appends the records' wire bytes.
    fn put(&self, out: &mut BytesMut);
}

impl<R: PutRecord> Records<R> for &[R] {
    fn count(&self) -> usize {
        self.len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        match self.iter().position(|r| !r.sendable()) {
            Some(index) => Err(R::refusal(index)),
            None => Ok(()),
        }
    }

    fn put(&self, out: &mut BytesMut) {
        for r in self.iter() {
            r.put(out);
        }
    }
}

impl<R: Record> Records<R> for FixedList<'_, R> {
    fn count(&self) -> usize {
        self.len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_slice(self.as_bytes());
    }
}

/// A frame whose last field is a list, open at the end of a buffer: `H` bytes of head (the
/// fields before the list), a `u32` count, then records of `R`. The head and the count are
/// written when it closes; records are appended while they fit.
#[derive(Debug)]
pub(super) struct ListFrame<R, const H: usize> {
    frame: Frame,
    t: FrameType,
    count: u32,
    record: PhantomData<fn() -> R>,
}

impl<R, const H: usize> Clone for ListFrame<R, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R, const H: usize> Copy for ListFrame<R, H> {}

impl<R: PutRecord, const H: usize> ListFrame<R, H> {
    /// Fails unless a frame of this layout with `records` records fits `max`.
    #[inline]
    pub(super) fn check(records: usize, max: u32) -> Result<(), EncodeError> {
        let body = (H + COUNT_LEN).saturating_add(records.saturating_mul(R::LEN));
        Frame::check(body, max)
    }

    /// Starts a frame of type `t` at the end of `out`, no longer than `max` (the caller has
    /// checked that the records it will hold fit).
    #[inline]
    pub(super) fn begin(out: &mut BytesMut, t: FrameType, max: u32) -> ListFrame<R, H> {
        let frame = Frame::begin(out, t, max);
        out.put_bytes(0, H + COUNT_LEN);
        ListFrame {
            frame,
            t,
            count: 0,
            record: PhantomData,
        }
    }

    /// Starts the next frame of the same type and limit at the end of `out`.
    #[inline]
    pub(super) fn next(&self, out: &mut BytesMut) -> ListFrame<R, H> {
        ListFrame::begin(out, self.t, self.frame.max)
    }

    /// Number of records in the frame.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.count as usize
    }

    /// How many more records fit the frame's limit.
    #[inline]
    pub(super) fn remaining(&self, out: &BytesMut) -> usize {
        self.frame.room(out) / R::LEN
    }

    /// Appends a record. Refuses one that may not be sent ([`EncodeError::ZeroUser`], with
    /// the index it would have had) and one that does not fit ([`EncodeError::Full`]); the
    /// frame is unchanged then.
    #[inline]
    pub(super) fn push(&mut self, out: &mut BytesMut, record: &R) -> Result<(), EncodeError> {
        if !record.sendable() {
            return Err(R::refusal(self.len()));
        }
        if self.remaining(out) == 0 {
            return Err(EncodeError::Full);
        }
        record.put(out);
        self.count += 1;
        Ok(())
    }

    /// Completes the frame: writes `head` and the count, then the length prefix.
    #[inline]
    pub(super) fn close(self, out: &mut BytesMut, head: [u8; H]) {
        let head_at = self.frame.start + LENGTH_PREFIX_LEN + 1;
        put(out, head_at, &head);
        put(out, head_at + H, &self.count.to_le_bytes());
        self.frame.close(out);
    }
}

/// Appends a whole frame of type `t` whose body is `head`, then the list `records`: the way
/// every list frame but the split PRESENCE and EVENTS answers is written. Refuses a frame
/// longer than `u32::MAX`, then a record that may not be sent.
fn list_frame<R: PutRecord, const H: usize>(
    out: &mut BytesMut,
    t: FrameType,
    head: [u8; H],
    records: impl Records<R>,
) -> Result<(), EncodeError> {
    let count = records.count();
    ListFrame::<R, H>::check(count, u32::MAX)?;
    records.check()?;
    out.reserve((LENGTH_PREFIX_LEN + 1 + H + COUNT_LEN).saturating_add(count * R::LEN));
    let mut frame = ListFrame::<R, H>::begin(out, t, u32::MAX);
    records.put(out);
    frame.count = sat_u32(count);
    frame.close(out, head);
    Ok(())
}

/// Appends `records` as frames of type `t` no longer than `max` each, as many as needed; a
/// frame's head is `head(last)`, `last` true for the final frame. No records make one frame
/// when `empty_frame`, else none. Returns the number of frames. Refuses a `max` too small
/// for one record, then a record that may not be sent.
fn split_list<R: PutRecord, const H: usize>(
    out: &mut BytesMut,
    t: FrameType,
    records: &[R],
    max: u32,
    head: impl Fn(bool) -> [u8; H],
    empty_frame: bool,
) -> Result<usize, EncodeError> {
    ListFrame::<R, H>::check(1, max)?;
    records.check()?;
    if records.is_empty() && !empty_frame {
        return Ok(0);
    }
    out.reserve(records.len().saturating_mul(R::LEN));
    let mut frame = ListFrame::<R, H>::begin(out, t, max);
    let mut frames = 1;
    for r in records {
        if frame.remaining(out) == 0 {
            frame.close(out, head(false));
            frame = frame.next(out);
            frames += 1;
        }
        frame.push(out, r)?;
    }
    frame.close(out, head(true));
    Ok(frames)
}

/// The head of a PRESENCE frame: request id and flags (`warming` only on version-2 links).
pub(super) fn presence_head(request_id: u32, is_final: bool, warming: bool) -> [u8; 5] {
    let [a, b, c, d] = request_id.to_le_bytes();
    let mut flags = 0;
    if is_final {
        flags |= PRESENCE_FLAG_FINAL;
    }
    if warming {
        flags |= PRESENCE_FLAG_WARMING;
    }
    [a, b, c, d, flags]
}

/// The head of a HISTORY_REPLY frame: request id, flags, has_last_seen, last_seen_ms.
fn history_reply_head(request_id: u32, more: bool, last_seen_ms: Option<u64>) -> [u8; 14] {
    let mut head = [0u8; 14];
    put(&mut head, 0, &request_id.to_le_bytes());
    put(
        &mut head,
        4,
        &[
            if more { HISTORY_FLAG_MORE } else { 0 },
            u8::from(last_seen_ms.is_some()),
        ],
    );
    put(&mut head, 6, &last_seen_ms.unwrap_or(0).to_le_bytes());
    head
}

// ---------------------------------------------------------------------------------------------
// Field checks and helpers

#[inline]
fn put_bytes16(out: &mut BytesMut, b: &[u8]) {
    // Callers have checked b.len() against a limit below u16::MAX.
    out.put_u16_le(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(b);
}

#[inline]
fn check_string_len(len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        Err(EncodeError::StringTooLong { len, max })
    } else {
        Ok(())
    }
}

#[inline]
pub(super) fn check_request_id(request_id: u32) -> Result<(), EncodeError> {
    if request_id == 0 {
        Err(EncodeError::ZeroRequestId)
    } else {
        Ok(())
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

// ---------------------------------------------------------------------------------------------
// Gateway → daemon frames

/// Appends a HELLO frame (the same layout in every version). Refuses a version this module
/// does not speak (1 and 2 are), reserved flags, a client name over [`MAX_CLIENT_NAME_LEN`]
/// bytes and a token over [`MAX_TOKEN_LEN`] bytes.
pub fn encode_hello(out: &mut BytesMut, hello: &Hello<'_>) -> Result<(), EncodeError> {
    if hello.version().is_none() {
        return Err(EncodeError::UnsupportedVersion(hello.protocol_version));
    }
    if hello.flags & !HELLO_FLAG_FIREHOSE != 0 {
        return Err(EncodeError::ReservedFlags(hello.flags));
    }
    let name = hello.client_name.as_bytes();
    check_string_len(name.len(), MAX_CLIENT_NAME_LEN)?;
    check_string_len(hello.token.len(), MAX_TOKEN_LEN)?;
    put_frame(
        out,
        FrameType::Hello,
        4 + 2 + name.len() + 2 + hello.token.len(),
        |out| {
            out.put_u16_le(hello.protocol_version);
            out.put_u16_le(hello.flags);
            put_bytes16(out, name);
            put_bytes16(out, hello.token);
        },
    )
}

/// SUBSCRIBE, UNSUBSCRIBE or QUERY: request id, then the users.
fn user_request(
    out: &mut BytesMut,
    t: FrameType,
    request_id: u32,
    users: impl Records<u64>,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    list_frame(out, t, request_id.to_le_bytes(), users)
}

/// SUBSCRIBE_ALL, UNSUBSCRIBE_ALL, STATS or ACK: a request id only.
fn request_only(out: &mut BytesMut, t: FrameType, request_id: u32) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    put_frame(out, t, 4, |out| out.put_u32_le(request_id))
}

/// Appends a SUBSCRIBE frame. Refuses request id 0 and user id 0. `users` may be empty and
/// may repeat users; its length is not checked against `max_users_per_request` (the daemon
/// refuses longer requests with `too_many_users`).
pub fn encode_subscribe(
    out: &mut BytesMut,
    request_id: u32,
    users: &[u64],
) -> Result<(), EncodeError> {
    user_request(out, FrameType::Subscribe, request_id, users)
}

/// Appends an UNSUBSCRIBE frame. Refuses request id 0 and user id 0.
pub fn encode_unsubscribe(
    out: &mut BytesMut,
    request_id: u32,
    users: &[u64],
) -> Result<(), EncodeError> {
    user_request(out, FrameType::Unsubscribe, request_id, users)
}

/// Appends a QUERY frame. Refuses request id 0 and user id 0.
pub fn encode_query(out: &mut BytesMut, request_id: u32, users: &[u64]) -> Result<(), EncodeError> {
    user_request(out, FrameType::Query, request_id, users)
}

/// Appends a SUBSCRIBE_ALL frame (the firehose). Refuses request id 0.
pub fn encode_subscribe_all(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    request_only(out, FrameType::SubscribeAll, request_id)
}

/// Appends an UNSUBSCRIBE_ALL frame (stops the firehose). Refuses request id 0.
pub fn encode_unsubscribe_all(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    request_only(out, FrameType::UnsubscribeAll, request_id)
}

/// Appends a STATS frame. Refuses request id 0.
pub fn encode_stats(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    request_only(out, FrameType::Stats, request_id)
}

/// Appends a HISTORY frame (version 2 links only). Refuses request id 0, user 0
/// ([`EncodeError::ZeroUser`] with index 0) and `max_spans` 0.
pub fn encode_history(out: &mut BytesMut, request: &HistoryRequest) -> Result<(), EncodeError> {
    check_request_id(request.request_id)?;
    if request.user == 0 {
        return Err(EncodeError::ZeroUser { index: 0 });
    }
    if request.max_spans == 0 {
        return Err(EncodeError::ZeroMaxSpans);
    }
    put_frame(out, FrameType::History, 4 + 8 + 8 + 8 + 4, |out| {
        out.put_u32_le(request.request_id);
        out.put_u64_le(request.user);
        out.put_u64_le(request.since_ms);
        out.put_u64_le(request.after_version);
        out.put_u32_le(request.max_spans);
    })
}

// ---------------------------------------------------------------------------------------------
// Daemon → gateway frames

/// WELCOME with its shard ports as values or as decoded: version 1, or version 2 or 3 with
/// `v2`'s fields (`version` says which; `v2` is `None` exactly for version 1).
fn welcome(
    out: &mut BytesMut,
    version: Version,
    heartbeat_port: u16,
    shard_ports: impl Records<u16>,
    limits: &Limits,
    timings: &Timings,
    v2: Option<&WelcomeV2>,
) -> Result<(), EncodeError> {
    let extra = match (version, v2) {
        (Version::V1, None) => 0,
        (Version::V2 | Version::V3 | Version::V4, Some(_)) => 2 + 4 + 4,
        _ => return Err(EncodeError::UnsupportedVersion(version.to_u16())),
    };
    let count = match u16::try_from(shard_ports.count()) {
        Ok(n) if n > 0 => n,
        _ => return Err(EncodeError::BadShardCount(shard_ports.count())),
    };
    let ports = usize::from(count) * u16::LEN;
    put_frame(out, FrameType::Welcome, 6 + ports + 32 + extra, |out| {
        out.put_u16_le(version.to_u16());
        out.put_u16_le(count);
        out.put_u16_le(heartbeat_port);
        shard_ports.put(out);
        out.put_u32_le(limits.max_frame_len);
        out.put_u32_le(limits.max_users_per_request);
        out.put_u32_le(limits.max_subscriptions);
        out.put_u32_le(limits.max_requests_in_flight);
        out.put_u32_le(timings.heartbeat_interval_ms);
        out.put_u32_le(timings.grace_ms);
        out.put_u32_le(timings.idle_after_ms);
        out.put_u32_le(timings.tick_us);
        if let Some(v2) = v2 {
            let (flags, remaining) = match v2.warm_remaining_ms {
                Some(ms) => (WELCOME_FLAG_WARMING, ms),
                None => (0, 0),
            };
            out.put_u16_le(flags);
            out.put_u32_le(remaining);
            out.put_u32_le(v2.idle_timeout_ms);
        }
    })
}

/// Appends a version-1 WELCOME frame. `shard_ports[i]` is shard `i`'s heartbeat port (0:
/// none, use `heartbeat_port`); their number is the shard count, 1 to 65,535, else
/// [`EncodeError::BadShardCount`].
pub fn encode_welcome(
    out: &mut BytesMut,
    heartbeat_port: u16,
    shard_ports: &[u16],
    limits: &Limits,
    timings: &Timings,
) -> Result<(), EncodeError> {
    welcome(
        out,
        Version::V1,
        heartbeat_port,
        shard_ports,
        limits,
        timings,
        None,
    )
}

/// Appends a WELCOME frame of `version` 2 or later: [`encode_welcome`]'s fields, then `v2`'s
/// (whether the daemon is warming and for how long, the link's idle timeout); the layout is
/// version 2's in every later version. The answer to a HELLO asking for `version`; version 1
/// is [`encode_welcome`]'s, and is refused here (`UnsupportedVersion`).
pub fn encode_welcome_v2(
    out: &mut BytesMut,
    version: Version,
    heartbeat_port: u16,
    shard_ports: &[u16],
    limits: &Limits,
    timings: &Timings,
    v2: &WelcomeV2,
) -> Result<(), EncodeError> {
    welcome(
        out,
        version,
        heartbeat_port,
        shard_ports,
        limits,
        timings,
        Some(v2),
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

/// How many spans fit one HISTORY_REPLY frame no longer than `max_frame_len` (type + body):
/// `(max_frame_len − 19) / 27`; 38,835 with the default 1 MiB.
pub const fn max_history_spans(max_frame_len: u32) -> usize {
    (max_frame_len as usize).saturating_sub(HISTORY_REPLY_HEADER_LEN) / SPAN_LEN
}

/// Appends the records answering `request_id` to `out` as PRESENCE frames no longer than
/// `max_frame_len` each (as many as needed, [`max_presence_records`] per frame; FINAL set on
/// the last one when `is_final`) and returns how many frames it wrote. No records and
/// `is_final` write one empty FINAL frame; no records and not `is_final` write nothing.
/// Refuses request id 0, a `max_frame_len` too small for one record, and a zero user; `out` is
/// unchanged then. [`PresenceWriter`](super::PresenceWriter) is the record-at-a-time form.
pub fn encode_presence(
    out: &mut BytesMut,
    request_id: u32,
    records: &[PresenceRecord],
    is_final: bool,
    max_frame_len: u32,
) -> Result<usize, EncodeError> {
    encode_presence_v2(out, request_id, records, is_final, false, max_frame_len)
}

/// [`encode_presence`] on a version-2 link: every frame has the `WARMING` flag when
/// `warming` (the records were read while the daemon was warming). With `warming` false the
/// bytes are [`encode_presence`]'s.
pub fn encode_presence_v2(
    out: &mut BytesMut,
    request_id: u32,
    records: &[PresenceRecord],
    is_final: bool,
    warming: bool,
    max_frame_len: u32,
) -> Result<usize, EncodeError> {
    check_request_id(request_id)?;
    split_list(
        out,
        FrameType::Presence,
        records,
        max_frame_len,
        |last| presence_head(request_id, is_final && last, warming),
        is_final,
    )
}

/// Appends `events` to `out` as EVENTS frames no longer than `max_frame_len` each (as many as
/// needed, [`max_events`] per frame; none for no events) and returns how many frames it wrote.
/// Refuses a `max_frame_len` too small for one transition and a zero user; `out` is unchanged
/// then. [`EventsWriter`](super::EventsWriter) is the transition-at-a-time form.
pub fn encode_events(
    out: &mut BytesMut,
    events: &[Event],
    max_frame_len: u32,
) -> Result<usize, EncodeError> {
    split_list(out, FrameType::Events, events, max_frame_len, |_| [], false)
}

/// Appends a LAGGED frame with scope 0: the listed users' transitions were dropped. Refuses
/// user id 0.
pub fn encode_lagged(out: &mut BytesMut, users: &[u64]) -> Result<(), EncodeError> {
    list_frame(out, FrameType::Lagged, [LAGGED_SCOPE_USERS], users)
}

/// Appends a LAGGED frame with scope 1 (everything) and an empty user list.
pub fn encode_lagged_all(out: &mut BytesMut) {
    let none: &[u64] = &[];
    // Cannot fail: an empty list, 10 bytes.
    let _ = list_frame(out, FrameType::Lagged, [LAGGED_SCOPE_ALL], none);
}

/// Appends an ACK frame. Refuses request id 0.
pub fn encode_ack(out: &mut BytesMut, request_id: u32) -> Result<(), EncodeError> {
    request_only(out, FrameType::Ack, request_id)
}

/// Appends a PACE frame (version 3, SPEC.md § P6.13): the heartbeat interval the daemon asks
/// gateways for, ms; 0 asks for the normal one (WELCOME's `heartbeat_interval_ms`). Any value
/// is valid, so this cannot fail.
pub fn encode_pace(out: &mut BytesMut, interval_ms: u32) {
    // Cannot fail: 5 bytes.
    let _ = put_frame(out, FrameType::Pace, 4, |out| out.put_u32_le(interval_ms));
}

/// Appends a MAP frame (version 4, SPEC.md § P6.14): the revision of the member map the
/// gateway holds (0: none). Refuses request id 0.
pub fn encode_map(out: &mut BytesMut, request_id: u32, revision: u64) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    put_frame(out, FrameType::Map, 4 + 8, |out| {
        out.put_u32_le(request_id);
        out.put_u64_le(revision);
    })
}

/// Appends a MEMBERS frame (version 4, SPEC.md § P6.14): `map` in JSON, its members in the
/// order given (a member sends them sorted by id). Refuses a map that fails
/// [`MemberMap::check`] ([`EncodeError::BadMembers`]) and a frame longer than
/// `max_frame_len` (type + body; [`EncodeError::FrameTooLarge`]).
pub fn encode_members(
    out: &mut BytesMut,
    map: &MemberMap,
    max_frame_len: u32,
) -> Result<(), EncodeError> {
    map.check().map_err(|_| EncodeError::BadMembers)?;
    let json = serde_json::to_vec(map).map_err(|_| EncodeError::BadMembers)?;
    members_frame(out, &json, max_frame_len)
}

/// MEMBERS with a body of `json` (already valid), under `max` (type + body).
fn members_frame(out: &mut BytesMut, json: &[u8], max: u32) -> Result<(), EncodeError> {
    Frame::check(json.len(), max)?;
    put_frame(out, FrameType::Members, json.len(), |out| {
        out.put_slice(json)
    })
}

/// ERROR with a raw code (a decoded frame may carry one this version does not define); the
/// message is cut to [`MAX_ERROR_MESSAGE_LEN`] bytes at a character boundary.
fn error_frame(out: &mut BytesMut, request_id: u32, code: u16, message: &str) {
    let message = truncate_str(message, MAX_ERROR_MESSAGE_LEN).as_bytes();
    // Cannot fail: at most 1033 bytes.
    let _ = put_frame(out, FrameType::Error, 4 + 2 + 2 + message.len(), |out| {
        out.put_u32_le(request_id);
        out.put_u16_le(code);
        put_bytes16(out, message);
    });
}

/// An ERROR message laid out as SPEC.md § P4 says a daemon writes it: the reason's name, then
/// `: ` and the detail, or the name alone when the detail is empty. The reason is the § P7
/// reason of the refused frame for `bad_frame`, `frame_too_large` and `protocol_version`
/// ([`FrameError::reason`](super::FrameError::reason)), else the code's
/// [`name`](ErrorCode::name).
pub fn error_message(reason: &str, detail: &str) -> String {
    if detail.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {detail}")
    }
}

/// The reason name an ERROR message starts with (SPEC.md § P4): the text before the first
/// `:`, or the whole message when it has none; `None` when that is not a snake_case name.
pub fn error_reason(message: &str) -> Option<&str> {
    let reason = message.split(':').next().unwrap_or_default();
    let snake = !reason.is_empty()
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    snake.then_some(reason)
}

/// Appends an ERROR frame: `request_id` 0 for an error about the link (the daemon then closes
/// it), else the request refused. A message longer than [`MAX_ERROR_MESSAGE_LEN`] bytes is cut
/// at a character boundary, so this cannot fail.
pub fn encode_error(out: &mut BytesMut, request_id: u32, code: ErrorCode, message: &str) {
    error_frame(out, request_id, code.to_u16(), message);
}

/// GOAWAY with a raw reason (a decoded frame may carry one this version does not define); the
/// message is cut to [`MAX_GOAWAY_MESSAGE_LEN`] bytes at a character boundary.
fn goaway_frame(out: &mut BytesMut, reason: u16, reconnect_after_ms: u32, message: &str) {
    let message = truncate_str(message, MAX_GOAWAY_MESSAGE_LEN).as_bytes();
    // Cannot fail: at most 1033 bytes.
    let _ = put_frame(out, FrameType::GoAway, 2 + 4 + 2 + message.len(), |out| {
        out.put_u16_le(reason);
        out.put_u32_le(reconnect_after_ms);
        put_bytes16(out, message);
    });
}

/// Appends a GOAWAY frame (version-2 links only; a version-1 link gets ERROR `shutting_down`
/// with request id 0 instead): the daemon's last frame on the link, saying why it goes away
/// and how long a gateway waits at least before reconnecting. A message longer than
/// [`MAX_GOAWAY_MESSAGE_LEN`] bytes is cut at a character boundary, so this cannot fail.
pub fn encode_goaway(
    out: &mut BytesMut,
    reason: GoAwayReason,
    reconnect_after_ms: u32,
    message: &str,
) {
    goaway_frame(out, reason.to_u16(), reconnect_after_ms, message);
}

/// Appends a HISTORY_REPLY frame (version-2 links only) answering `request_id`: `MORE` set
/// when `more`, the user's last seen, then `spans` in version order. The frame must fit
/// `max_frame_len` (at most [`max_history_spans`] spans): the daemon sends fewer spans than
/// asked, with `MORE`, rather than a longer frame. Refuses request id 0, a span with more than
/// 31 devices or starting after its nonzero end ([`EncodeError::BadSpan`]), and spans that do
/// not fit ([`EncodeError::FrameTooLarge`]); `out` is unchanged then.
pub fn encode_history_reply(
    out: &mut BytesMut,
    request_id: u32,
    more: bool,
    last_seen_ms: Option<u64>,
    spans: &[Span],
    max_frame_len: u32,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    ListFrame::<Span, 14>::check(spans.len(), max_frame_len)?;
    list_frame(
        out,
        FrameType::HistoryReply,
        history_reply_head(request_id, more, last_seen_ms),
        spans,
    )
}

/// Appends a STATS_REPLY frame. Refuses request id 0 and JSON over [`MAX_STATS_JSON_LEN`]
/// bytes. The JSON itself is not checked.
pub fn encode_stats_reply(
    out: &mut BytesMut,
    request_id: u32,
    json: &str,
) -> Result<(), EncodeError> {
    check_request_id(request_id)?;
    check_string_len(json.len(), MAX_STATS_JSON_LEN)?;
    put_frame(out, FrameType::StatsReply, 4 + 2 + json.len(), |out| {
        out.put_u32_le(request_id);
        put_bytes16(out, json.as_bytes());
    })
}

// ---------------------------------------------------------------------------------------------
// Decoded frames, written back

impl ClientFrame<'_> {
    /// Appends the frame (length prefix included) to `out`. Fails only for a hand-built
    /// [`Hello`] or a zero request id that [`decode_client`] would refuse; `out` is unchanged
    /// then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match *self {
            ClientFrame::Hello(ref h) => encode_hello(out, h),
            ClientFrame::Subscribe { request_id, users } => {
                user_request(out, FrameType::Subscribe, request_id, users)
            }
            ClientFrame::Unsubscribe { request_id, users } => {
                user_request(out, FrameType::Unsubscribe, request_id, users)
            }
            ClientFrame::SubscribeAll { request_id } => encode_subscribe_all(out, request_id),
            ClientFrame::UnsubscribeAll { request_id } => encode_unsubscribe_all(out, request_id),
            ClientFrame::Query { request_id, users } => {
                user_request(out, FrameType::Query, request_id, users)
            }
            ClientFrame::Stats { request_id } => encode_stats(out, request_id),
        }
    }
}

impl GatewayFrame<'_> {
    /// Appends the frame (length prefix included) to `out`. Fails only for hand-built fields
    /// that [`Version::decode_client`] would refuse; `out` is unchanged then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            GatewayFrame::Common(f) => f.encode(out),
            GatewayFrame::History(h) => encode_history(out, h),
            GatewayFrame::Map {
                request_id,
                revision,
            } => encode_map(out, *request_id, *revision),
        }
    }
}

impl ServerFrame<'_> {
    /// Appends the frame (length prefix included) to `out`. Fails only for hand-built fields
    /// that [`Version::decode_server`] would refuse (zero request id, STATS JSON too long,
    /// WELCOME version not matching its fields, no shard, an invalid span); `out` is unchanged
    /// then. An ERROR or GOAWAY message is cut like [`encode_error`] does.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match *self {
            ServerFrame::Welcome(ref w) => match Version::from_u16(w.protocol_version) {
                Some(version) => welcome(
                    out,
                    version,
                    w.heartbeat_port,
                    w.shard_ports,
                    &w.limits,
                    &w.timings,
                    w.v2.as_ref(),
                ),
                None => Err(EncodeError::UnsupportedVersion(w.protocol_version)),
            },
            ServerFrame::Presence(ref p) => {
                check_request_id(p.request_id)?;
                let head = presence_head(p.request_id, p.is_final, p.warming);
                list_frame(out, FrameType::Presence, head, p.records)
            }
            ServerFrame::Events(events) => list_frame(out, FrameType::Events, [], events),
            ServerFrame::Lagged(users) => {
                list_frame(out, FrameType::Lagged, [LAGGED_SCOPE_USERS], users)
            }
            ServerFrame::LaggedAll => {
                encode_lagged_all(out);
                Ok(())
            }
            ServerFrame::Ack { request_id } => encode_ack(out, request_id),
            ServerFrame::Error(ref e) => {
                error_frame(out, e.request_id, e.code, e.message);
                Ok(())
            }
            ServerFrame::StatsReply { request_id, json } => {
                encode_stats_reply(out, request_id, json)
            }
            ServerFrame::Pace { interval_ms } => {
                encode_pace(out, interval_ms);
                Ok(())
            }
            ServerFrame::Members(m) => members_frame(out, m.json().as_bytes(), u32::MAX),
            ServerFrame::GoAway(ref g) => {
                goaway_frame(out, g.reason, g.reconnect_after_ms, g.message);
                Ok(())
            }
            ServerFrame::HistoryReply(ref h) => {
                check_request_id(h.request_id)?;
                list_frame(
                    out,
                    FrameType::HistoryReply,
                    history_reply_head(h.request_id, h.more, h.last_seen_ms),
                    h.spans,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_str_respects_char_boundaries() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }

    #[test]
    fn error_messages_start_with_their_reason() {
        let message = error_message("too_many_users", "11 users; the limit is 10");
        assert_eq!(message, "too_many_users: 11 users; the limit is 10");
        assert_eq!(error_reason(&message), Some("too_many_users"));
        assert_eq!(error_message("hello_required", ""), "hello_required");
        assert_eq!(error_reason("hello_required"), Some("hello_required"));
        assert_eq!(error_reason("Prose: no name"), None);
        assert_eq!(error_reason(""), None);
    }

    #[test]
    fn the_frame_length_check() {
        assert_eq!(Frame::check(35, 36), Ok(()));
        assert_eq!(
            Frame::check(36, 36),
            Err(EncodeError::FrameTooLarge { len: 37, max: 36 })
        );
        assert_eq!(
            Frame::check(usize::MAX, u32::MAX),
            Err(EncodeError::FrameTooLarge {
                len: u64::MAX,
                max: u64::from(u32::MAX)
            })
        );
        assert!(ListFrame::<u64, 4>::check((u32::MAX as usize - 9) / 8, u32::MAX).is_ok());
        assert!(ListFrame::<u64, 4>::check((u32::MAX as usize - 9) / 8 + 1, u32::MAX).is_err());
    }
}
