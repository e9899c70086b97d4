//! Why a frame is refused ([`FrameError`], from the reader and the decoders) and why one
//! cannot be written ([`EncodeError`], from the encoders and the writers).
//!
//! It exists to keep the protocol's error vocabulary in one place: each refusal has a stable
//! snake_case reason (SPEC.md § P7, the daemon's counters), and [`FrameError::error_code`] is
//! the one mapping from a refused frame to the ERROR code the daemon answers it with.

use std::fmt;

#[cfg(doc)]
use super::{decode_client, decode_server, encode_events, encode_presence, FrameReader};
use super::{ErrorCode, MAX_SPAN_DEVICES};

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
        /// Index of the record, transition or span.
        index: u32,
        /// The byte read.
        value: u8,
    },
    /// A cause byte (an event's, a span's) is above 4.
    BadCause {
        /// Index of the transition or span.
        index: u32,
        /// The byte read.
        value: u8,
    },
    /// LAGGED scope is above 1, or scope 1 (everything) comes with a non-empty user list;
    /// carries the scope byte.
    BadScope(u8),
    /// A record's `has_last_seen` is neither 0 nor 1, or is 0 with a nonzero `last_seen_ms`
    /// (also HISTORY_REPLY's own last seen, reported as index 0).
    BadLastSeen {
        /// Index of the record (0 for HISTORY_REPLY).
        index: u32,
    },
    /// A reserved flag bit is set for the link's version (HELLO bits 1–15; PRESENCE bits 1–7
    /// on a version-1 link, 2–7 on a version-2 link; WELCOME bits 1–15; HISTORY_REPLY bits
    /// 1–7); carries the flags.
    ReservedFlags(u16),
    /// HELLO or WELCOME carries a protocol version that is 0 or above the receiver's (for a
    /// daemon, the newest it speaks; for a gateway, the one its HELLO asked for); carries it.
    /// The rest of the frame is not read.
    UnsupportedVersion(u16),
    /// WELCOME announces 0 shards.
    ZeroShardCount,
    /// A span's `devices` is above 31 ([`MAX_SPAN_DEVICES`]).
    BadDevices {
        /// Index of the span.
        index: u32,
        /// The byte read.
        value: u8,
    },
    /// A span's `start_ms` is after its nonzero `end_ms`.
    BadSpan {
        /// Index of the span.
        index: u32,
    },
    /// HISTORY asks for 0 spans (`max_spans` is at least 1).
    ZeroMaxSpans,
    /// WELCOME (version 2): `warm_remaining_ms` is nonzero while the `WARMING` flag is clear.
    BadWarming,
    /// MEMBERS (version 4): the body is not a member map in JSON, or the map fails its check
    /// (ids, addresses, duplicates, replicas, size: `MemberMap::check`).
    BadMembers,
}

impl FrameError {
    /// Every [`reason`](FrameError::reason), indexed by [`code`](FrameError::code): handy to
    /// register one counter per reason up front.
    pub const REASONS: [&'static str; 22] = [
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
        "bad_devices",
        "bad_span",
        "zero_max_spans",
        "bad_warming",
        "bad_members",
    ];

    /// A dense, stable index of the variant (0..22); indexes
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
            FrameError::BadDevices { .. } => 17,
            FrameError::BadSpan { .. } => 18,
            FrameError::ZeroMaxSpans => 19,
            FrameError::BadWarming => 20,
            FrameError::BadMembers => 21,
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
            FrameError::BadDevices { .. } => "bad_devices",
            FrameError::BadSpan { .. } => "bad_span",
            FrameError::ZeroMaxSpans => "zero_max_spans",
            FrameError::BadWarming => "bad_warming",
            FrameError::BadMembers => "bad_members",
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
            FrameError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            FrameError::ZeroShardCount => f.write_str("shard count is 0"),
            FrameError::BadDevices { index, value } => write!(
                f,
                "span {index}: {value} devices (at most {MAX_SPAN_DEVICES})"
            ),
            FrameError::BadSpan { index } => write!(f, "span {index}: starts after it ends"),
            FrameError::ZeroMaxSpans => f.write_str("max_spans is 0"),
            FrameError::BadWarming => {
                f.write_str("warm_remaining_ms is nonzero but the WARMING flag is clear")
            }
            FrameError::BadMembers => {
                f.write_str("MEMBERS does not hold a valid member map in JSON")
            }
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
    /// HELLO: a protocol version this module does not speak; WELCOME (written back from a
    /// decoded frame): a version that does not match its fields. Carries the version.
    UnsupportedVersion(u16),
    /// HELLO: reserved flag bits (1–15) set; carries the flags.
    ReservedFlags(u16),
    /// The frame would be longer than allowed: `u32::MAX`, or the `max_frame_len` given to a
    /// writer, [`encode_presence`] or [`encode_events`] (also when not even one element fits
    /// it).
    FrameTooLarge {
        /// The frame length (type + body) it would have.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A writer's `push`: the element does not fit the frame's limit; finish the frame and
    /// start another.
    Full,
    /// HISTORY: `max_spans` is 0.
    ZeroMaxSpans,
    /// HISTORY_REPLY: a span with more than 31 devices, or starting after its nonzero end.
    BadSpan {
        /// Index of the first such span.
        index: usize,
    },
    /// MEMBERS: the map fails `MemberMap::check` (a MEMBERS frame holds only valid maps).
    BadMembers,
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
            EncodeError::ZeroMaxSpans => "zero_max_spans",
            EncodeError::BadSpan { .. } => "bad_span",
            EncodeError::BadMembers => "bad_members",
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
            EncodeError::UnsupportedVersion(v) => write!(
                f,
                "protocol version {v}: this codec writes 1 to 4, each with its own fields"
            ),
            EncodeError::ReservedFlags(flags) => write!(f, "reserved flag bits set ({flags:#x})"),
            EncodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes would exceed {max}")
            }
            EncodeError::Full => f.write_str("the element does not fit the frame's limit"),
            EncodeError::ZeroMaxSpans => f.write_str("max_spans is 0"),
            EncodeError::BadSpan { index } => write!(
                f,
                "span {index}: more than {MAX_SPAN_DEVICES} devices, or it starts after it ends"
            ),
            EncodeError::BadMembers => f.write_str("the member map fails its check"),
        }
    }
}

impl std::error::Error for EncodeError {}

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
            FrameError::BadDevices {
                index: 0,
                value: 32,
            },
            FrameError::BadSpan { index: 0 },
            FrameError::ZeroMaxSpans,
            FrameError::BadWarming,
            FrameError::BadMembers,
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
}
