//! The push link: the framed protocol gateways speak with the daemon over one QUIC stream to
//! subscribe to users, query presence and receive pushed transitions.
//!
//! The normative description is `wire-format/SPEC.md`, section "Push link (QUIC)"; this module
//! is the codec only (no networking).
//!
//! - A frame on the stream is `u32 length` (little-endian; the bytes after it) + `u8 type` +
//!   body. [`FrameReader::next_frame`] splits a byte buffer into frames and enforces
//!   `max_frame_len`.
//! - **Versions.** A link speaks protocol version 1 to 4 ([`Version`]; SPEC.md § P5): the
//!   gateway asks in HELLO, the daemon names the link's version in WELCOME. Decoding depends
//!   on it where the versions differ (version 2's, 3's and 4's frame types, PRESENCE's `WARMING`
//!   bit, WELCOME's layout), so [`Version::decode_client`] and [`Version::decode_server`] validate
//!   one frame's `type + body` completely *for a link of that version* (before WELCOME: the
//!   highest version the receiver accepts) and return zero-copy views ([`UserList`],
//!   [`PresenceList`], [`EventList`], [`SpanList`], [`ShardPorts`]: each a [`FixedList`])
//!   whose iterators cannot fail. [`decode_client`] and [`decode_server`] are version 1's.
//! - `encode_*` functions append complete frames (length prefix included) to a
//!   [`BytesMut`](bytes::BytesMut);
//!   [`encode_presence`] and [`encode_events`] split long lists into frames no longer than a
//!   given `max_frame_len`. [`EventsWriter`] and [`PresenceWriter`] build such frames one
//!   transition or record at a time in their own buffer, for a daemon that keeps a frame open
//!   per link. [`ClientFrame::encode`], [`GatewayFrame::encode`] and [`ServerFrame::encode`]
//!   write a decoded frame back. Nothing they produce fails to decode on a link of the
//!   frame's version; on error `out` is left as it was. Version 2's frames and fields have
//!   their own functions ([`encode_welcome_v2`], whose layout every later version's WELCOME
//!   keeps, [`encode_presence_v2`], [`encode_goaway`], [`encode_history`],
//!   [`encode_history_reply`]), and so do version 3's ([`encode_pace`]) and version 4's
//!   ([`encode_map`], [`encode_members`]: the cluster's member map); a daemon calls them only
//!   on links of their version (or later).
//! - [`shard_of`](crate::shard_of) (at the crate's root) is the user → shard owner function
//!   the daemon and gateways share; [`Welcome::heartbeat_port_for`] applies it.
//!
//! The module's files, by concern: `types` (frame types, states, causes, error codes and the
//! records frames carry), `error` (why a frame is refused or cannot be written), `view` (the
//! decoded frames), `decode` ([`FrameReader`] and validation), `encode` (the one frame builder
//! and every `encode_*` function) and `writer` (the frame-at-a-time writers).
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

mod decode;
mod encode;
mod error;
mod types;
mod view;
mod writer;

pub use crate::list::{FixedIter, FixedList, Record};
pub use decode::{decode_client, decode_server, FrameReader};
pub use encode::{
    encode_ack, encode_error, encode_events, encode_goaway, encode_hello, encode_history,
    encode_history_reply, encode_lagged, encode_lagged_all, encode_map, encode_members,
    encode_pace, encode_presence, encode_presence_v2, encode_query, encode_stats,
    encode_stats_reply, encode_subscribe, encode_subscribe_all, encode_unsubscribe,
    encode_unsubscribe_all, encode_welcome, encode_welcome_v2, error_message, error_reason,
    max_events, max_history_spans, max_lagged_users, max_presence_records, max_request_users,
};
pub use error::{EncodeError, FrameError};
pub use types::{
    ErrorCode, Event, FrameType, GoAwayReason, Limits, PresenceRecord, Span, Timings, Version,
    WelcomeV2, WireCause, WireState,
};
pub use view::{
    ClientFrame, ErrorFrame, EventIter, EventList, GatewayFrame, GoAwayFrame, Hello, HistoryReply,
    HistoryRequest, MembersFrame, PresenceFrame, PresenceIter, PresenceList, ServerFrame,
    ShardPorts, SpanIter, SpanList, UserList, Users, Welcome,
};
pub use writer::{EventsWriter, PresenceWriter};

/// The TLS ALPN protocol id of the push link: `presenced/1`.
pub const ALPN: &[u8] = b"presenced/1";
/// Protocol version 1's number ([`Version::V1`]): what [`Hello::new`] asks for, what
/// [`encode_welcome`] writes, and the version of links [`decode_client`] and [`decode_server`]
/// read. [`Version::LATEST`] is the newest this module speaks.
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
/// Longest GOAWAY `message`, in bytes (longer messages are cut by [`encode_goaway`]).
pub const MAX_GOAWAY_MESSAGE_LEN: usize = 1024;
/// Longest STATS_REPLY `json`, in bytes.
pub const MAX_STATS_JSON_LEN: usize = 60_000;
/// Bytes per user id in a user list.
pub const USER_ID_LEN: usize = 8;
/// Bytes per PRESENCE record.
pub const PRESENCE_RECORD_LEN: usize = 26;
/// Bytes per EVENTS transition.
pub const EVENT_LEN: usize = 27;
/// Bytes per HISTORY_REPLY span.
pub const SPAN_LEN: usize = 27;
/// The most live devices a span may report (a user has at most 31 devices).
pub const MAX_SPAN_DEVICES: u8 = 31;
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
/// Frame length (type + body) of a HISTORY_REPLY frame without spans: type, request id, flags,
/// has_last_seen, last_seen_ms, count.
pub const HISTORY_REPLY_HEADER_LEN: usize = 19;
/// Frame length (type + body) of a HISTORY frame: type, request id, user, since_ms,
/// after_version, max_spans.
pub const HISTORY_LEN: usize = 33;
/// HELLO flags bit 0 (`FIREHOSE`): the gateway intends to use the firehose (SUBSCRIBE_ALL).
/// Informational only: daemons ignore it, and whether a link may use the firehose is decided
/// by the link's grant in the daemon's key file (`[links]`, SPEC.md § P5.1).
pub const HELLO_FLAG_FIREHOSE: u16 = 0x0001;
/// PRESENCE flags bit 0: the last PRESENCE frame of its request.
pub const PRESENCE_FLAG_FINAL: u8 = 0x01;
/// PRESENCE flags bit 1 (version 2): the records were read while the daemon was warming.
pub const PRESENCE_FLAG_WARMING: u8 = 0x02;
/// WELCOME flags bit 0 (version 2): the daemon is warming (started without its saved state).
pub const WELCOME_FLAG_WARMING: u16 = 0x0001;
/// HISTORY_REPLY flags bit 0: more spans follow; ask again after the last one's version.
pub const HISTORY_FLAG_MORE: u8 = 0x01;
/// LAGGED scope 0: transitions of the listed users were dropped.
pub const LAGGED_SCOPE_USERS: u8 = 0;
/// LAGGED scope 1: transitions of any user may have been dropped.
pub const LAGGED_SCOPE_ALL: u8 = 1;
