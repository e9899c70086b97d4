//! presenced wire format: the heartbeat datagram, version 1 (this module), its authentication
//! ([`auth`]), the push link, protocol versions 1 to 4 ([`link`]), the cluster's member map and placement ([`cluster`]), the user → shard owner
//! function ([`shard_of`]), the typed STATS schema ([`stats`]) and the metrics endpoint's
//! health answer ([`health`]).
//!
//! The normative description is `wire-format/SPEC.md`; this crate implements it exactly.
//!
//! - [`decode`] validates a whole datagram up front (header, length, tag and every entry)
//!   without allocating, and returns a zero-copy [`Datagram`] view whose entry iterator cannot
//!   fail. Decoding a `bytes::Bytes` or `bytes::BytesMut` is zero-copy too: pass `&buf` (both
//!   dereference to `[u8]`). A datagram with the `AUTH` flag carries a MAC as its tag;
//!   [`auth::verify`] checks it.
//! - [`Encoder`] batches entries into one datagram in a fixed internal buffer (no allocation)
//!   and hands out the bytes to send, unsigned ([`finish`](Encoder::finish)) or signed
//!   ([`finish_signed`](Encoder::finish_signed)); [`encode`] is the one-shot (unsigned)
//!   convenience.
//! - For every valid unsigned datagram `b`, encoding the header and entries of `decode(b)`
//!   gives `b` back byte for byte.
//!
//! No function of this crate panics, whatever its input.
//!
//! ```
//! use presenced_wire::{decode, encode, Entry, Header, State};
//!
//! let header = Header::new(7, 1_700_000_000, 42, 1_700_000_123_456);
//! let entries = [Entry { user: 1001, device: 1, state: State::Online, active: true }];
//! let bytes = encode(&header, &entries).unwrap();
//! let datagram = decode(&bytes).unwrap();
//! assert_eq!(*datagram.header(), header);
//! assert_eq!(datagram.entries().collect::<Vec<_>>(), entries);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

use std::fmt;

use bytes::BytesMut;

pub mod auth;
pub mod cluster;
pub mod hash;
pub mod health;
mod le;
pub mod link;
mod list;
pub mod stats;

pub use hash::shard_of;
pub use list::{FixedIter, FixedList, Record};

use le::{array, byte_at, put, u16_at, u32_at, u64_at};

/// The first four bytes of every datagram: ASCII `PRSD` (`0x50 0x52 0x53 0x44`).
pub const MAGIC: [u8; 4] = *b"PRSD";
/// The layout version this crate reads and writes (byte 4 of the header).
pub const VERSION: u8 = 1;
/// Length of the datagram header in bytes.
pub const HEADER_LEN: usize = 32;
/// Length of one entry in bytes.
pub const ENTRY_LEN: usize = 16;
/// Length of the trailing tag in bytes: the datagram's MAC when the [`FLAG_AUTH`] flag is set
/// (SPEC.md § 9), else all zero.
pub const TAG_LEN: usize = 16;
/// Most entries in one datagram: the largest count whose datagram fits an unfragmented IPv4
/// UDP payload over a 1500-byte MTU.
pub const MAX_ENTRIES: usize = 89;
/// Longest valid datagram: `HEADER_LEN + MAX_ENTRIES * ENTRY_LEN + TAG_LEN` = 1472 bytes
/// (1500-byte MTU − 20-byte IPv4 header − 8-byte UDP header).
pub const MAX_DATAGRAM_LEN: usize = HEADER_LEN + MAX_ENTRIES * ENTRY_LEN + TAG_LEN;
/// Most entries a gateway should put in one datagram sent over IPv6 with a 1500-byte MTU:
/// 87 entries make 1440 bytes, within the 1452-byte unfragmented payload (1500 − 40 − 8).
pub const MAX_ENTRIES_IPV6: usize = 87;
/// Shortest valid datagram (one entry): 64 bytes.
pub const MIN_DATAGRAM_LEN: usize = HEADER_LEN + ENTRY_LEN + TAG_LEN;

/// Header flag bit 0 (`AUTH`): the tag is the MAC of the header and entries (SPEC.md § 9;
/// [`auth::verify`] checks it, [`Encoder::finish_signed`] writes it).
pub const FLAG_AUTH: u8 = 0x01;
/// Entry flag bit 0: the user did something since this device's previous heartbeat.
pub const ENTRY_FLAG_ACTIVITY: u8 = 0x01;

const _: () = assert!(MAX_DATAGRAM_LEN == 1472);
const _: () = assert!(HEADER_LEN + MAX_ENTRIES_IPV6 * ENTRY_LEN + TAG_LEN <= 1452);
const _: () = assert!(HEADER_LEN + (MAX_ENTRIES_IPV6 + 1) * ENTRY_LEN + TAG_LEN > 1452);

/// The state a device reports in an entry (byte 12 of the entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// 0: the device is connected and in the foreground.
    Online,
    /// 1: the device is connected but its user is away.
    Idle,
    /// 2: the device logged out; the daemon removes it at once.
    Offline,
    /// 3: the device is connected but its user hides their presence.
    Invisible,
}

impl State {
    /// Every state, in wire-value order.
    pub const ALL: [State; 4] = [State::Online, State::Idle, State::Offline, State::Invisible];

    /// The wire value: 0 online, 1 idle, 2 offline, 3 invisible.
    #[inline]
    pub const fn to_u8(self) -> u8 {
        match self {
            State::Online => 0,
            State::Idle => 1,
            State::Offline => 2,
            State::Invisible => 3,
        }
    }

    /// The state of a wire value; `None` for values above 3.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<State> {
        match value {
            0 => Some(State::Online),
            1 => Some(State::Idle),
            2 => Some(State::Offline),
            3 => Some(State::Invisible),
            _ => None,
        }
    }

    /// Lower-case name (`online`, `idle`, `offline`, `invisible`), as in the test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Idle => "idle",
            State::Offline => "offline",
            State::Invisible => "invisible",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One heartbeat entry: a device of a user and what it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The user id; nonzero (0 is reserved).
    pub user: u64,
    /// The device id within the user, chosen by the gateway; any value.
    pub device: u32,
    /// What the device reports.
    pub state: State,
    /// The ACTIVITY flag: the user did something since this device's previous heartbeat.
    pub active: bool,
}

impl Entry {
    /// The entry's 16 wire bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; ENTRY_LEN] {
        let [u0, u1, u2, u3, u4, u5, u6, u7] = self.user.to_le_bytes();
        let [d0, d1, d2, d3] = self.device.to_le_bytes();
        let flags = if self.active { ENTRY_FLAG_ACTIVITY } else { 0 };
        [
            u0,
            u1,
            u2,
            u3,
            u4,
            u5,
            u6,
            u7,
            d0,
            d1,
            d2,
            d3,
            self.state.to_u8(),
            flags,
            0,
            0,
        ]
    }
}

/// The datagram header's fields (magic, version and entry count are implied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// The sending gateway's id; nonzero.
    pub gateway: u32,
    /// The gateway's boot epoch: greater on every restart (a persisted counter, or the boot
    /// time in Unix seconds). With `sequence` it identifies a datagram (anti-replay, § 8).
    pub boot_epoch: u32,
    /// Per `(gateway, boot_epoch)`, increasing by 1 per datagram sent.
    pub sequence: u64,
    /// Send time, Unix milliseconds.
    pub send_time_ms: u64,
    /// The raw header flags byte: [`FLAG_AUTH`] or 0. Encoders take 0 and set `AUTH` themselves
    /// when signing ([`Encoder::finish_signed`]).
    pub flags: u8,
}

impl Header {
    /// A header with the given fields and flags 0.
    pub const fn new(gateway: u32, boot_epoch: u32, sequence: u64, send_time_ms: u64) -> Header {
        Header {
            gateway,
            boot_epoch,
            sequence,
            send_time_ms,
            flags: 0,
        }
    }
}

/// Why [`decode`] refused a datagram. The daemon drops the whole datagram and counts it by
/// [`reason`](DecodeError::reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Shorter than the 32-byte header.
    TooShort,
    /// Longer than [`MAX_DATAGRAM_LEN`].
    TooLong,
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// The version byte is not [`VERSION`]; carries the byte read.
    BadVersion(u8),
    /// A reserved header flag bit (1–7) is set.
    ReservedFlags,
    /// The entry count is 0 or above [`MAX_ENTRIES`]; carries the count read.
    BadCount(u16),
    /// The length is not `32 + 16·count + 16` (truncated, or trailing bytes).
    LengthMismatch {
        /// The length the entry count implies.
        expected: usize,
        /// The datagram's length.
        actual: usize,
    },
    /// The gateway id is 0.
    ZeroGateway,
    /// An entry's user id is 0 (reserved).
    ZeroUser {
        /// Index of the first bad entry.
        index: u16,
    },
    /// An entry's state byte is above 3.
    BadState {
        /// Index of the first bad entry.
        index: u16,
        /// The state byte read.
        value: u8,
    },
    /// An entry has a reserved flag bit (1–7) set or nonzero reserved bytes 14–15.
    ReservedEntryBits {
        /// Index of the first bad entry.
        index: u16,
    },
    /// The tag is not all zero although the AUTH flag is clear.
    NonZeroTag,
}

impl DecodeError {
    /// Every [`reason`](DecodeError::reason), indexed by [`code`](DecodeError::code): handy to
    /// register one counter per reason up front.
    pub const REASONS: [&'static str; 12] = [
        "too_short",
        "too_long",
        "bad_magic",
        "bad_version",
        "reserved_flags",
        "bad_count",
        "length_mismatch",
        "zero_gateway",
        "zero_user",
        "bad_state",
        "reserved_entry_bits",
        "non_zero_tag",
    ];

    /// A dense, stable index of the variant (0..12), for counter arrays; indexes
    /// [`REASONS`](DecodeError::REASONS).
    pub const fn code(&self) -> usize {
        match self {
            DecodeError::TooShort => 0,
            DecodeError::TooLong => 1,
            DecodeError::BadMagic => 2,
            DecodeError::BadVersion(_) => 3,
            DecodeError::ReservedFlags => 4,
            DecodeError::BadCount(_) => 5,
            DecodeError::LengthMismatch { .. } => 6,
            DecodeError::ZeroGateway => 7,
            DecodeError::ZeroUser { .. } => 8,
            DecodeError::BadState { .. } => 9,
            DecodeError::ReservedEntryBits { .. } => 10,
            DecodeError::NonZeroTag => 11,
        }
    }

    /// The stable snake_case name of the variant, for counters and logs (see `SPEC.md`).
    pub const fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort => "too_short",
            DecodeError::TooLong => "too_long",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::ReservedFlags => "reserved_flags",
            DecodeError::BadCount(_) => "bad_count",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::ZeroGateway => "zero_gateway",
            DecodeError::ZeroUser { .. } => "zero_user",
            DecodeError::BadState { .. } => "bad_state",
            DecodeError::ReservedEntryBits { .. } => "reserved_entry_bits",
            DecodeError::NonZeroTag => "non_zero_tag",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::TooShort => {
                write!(f, "datagram shorter than the {HEADER_LEN}-byte header")
            }
            DecodeError::TooLong => write!(f, "datagram longer than {MAX_DATAGRAM_LEN} bytes"),
            DecodeError::BadMagic => f.write_str("bad magic (expected \"PRSD\")"),
            DecodeError::BadVersion(v) => write!(f, "unsupported version {v} (expected {VERSION})"),
            DecodeError::ReservedFlags => f.write_str("reserved header flag bits set"),
            DecodeError::BadCount(n) => {
                write!(f, "entry count {n} out of range 1..={MAX_ENTRIES}")
            }
            DecodeError::LengthMismatch { expected, actual } => write!(
                f,
                "datagram is {actual} bytes but its entry count implies {expected}"
            ),
            DecodeError::ZeroGateway => f.write_str("gateway id is 0"),
            DecodeError::ZeroUser { index } => write!(f, "entry {index}: user id is 0"),
            DecodeError::BadState { index, value } => {
                write!(f, "entry {index}: invalid state {value}")
            }
            DecodeError::ReservedEntryBits { index } => {
                write!(f, "entry {index}: reserved flag bits or bytes set")
            }
            DecodeError::NonZeroTag => f.write_str("tag is not zero while AUTH is clear"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why an [`Encoder`] or [`encode`] refused to produce a datagram. Nothing invalid is ever
/// produced: every datagram they return decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// [`Encoder::push`]: the encoder already holds [`MAX_ENTRIES`] entries; finish it and
    /// start a new datagram.
    Full,
    /// No entries (a datagram carries 1 to [`MAX_ENTRIES`]).
    Empty,
    /// [`encode`]: more than [`MAX_ENTRIES`] entries; carries the number given.
    TooManyEntries(usize),
    /// An entry's user id is 0 (reserved).
    ZeroUser {
        /// Index of the entry (for [`Encoder::push`], the index it would have had).
        index: usize,
    },
    /// The header's gateway id is 0.
    ZeroGateway,
    /// The header's flags are not 0: encoders take flags 0 and set `AUTH` themselves when
    /// signing ([`Encoder::finish_signed`]); carries the flags byte.
    UnsupportedFlags(u8),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::Full => write!(f, "datagram already holds {MAX_ENTRIES} entries"),
            EncodeError::Empty => f.write_str("a datagram needs at least one entry"),
            EncodeError::TooManyEntries(n) => {
                write!(f, "{n} entries; a datagram holds at most {MAX_ENTRIES}")
            }
            EncodeError::ZeroUser { index } => write!(f, "entry {index}: user id is 0"),
            EncodeError::ZeroGateway => f.write_str("gateway id is 0"),
            EncodeError::UnsupportedFlags(flags) => {
                write!(
                    f,
                    "header flags {flags:#04x}: encoders take 0 (finish_signed sets AUTH)"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

// ---------------------------------------------------------------------------------------------
// Byte layout

/// Total datagram length for `n` entries.
#[inline(always)]
const fn datagram_len(n: usize) -> usize {
    HEADER_LEN + n * ENTRY_LEN + TAG_LEN
}

fn write_header(dst: &mut [u8], header: &Header, count: u16) {
    put(dst, 0, &MAGIC);
    put(dst, 4, &[VERSION, header.flags]);
    put(dst, 6, &count.to_le_bytes());
    put(dst, 8, &header.gateway.to_le_bytes());
    put(dst, 12, &header.boot_epoch.to_le_bytes());
    put(dst, 16, &header.sequence.to_le_bytes());
    put(dst, 24, &header.send_time_ms.to_le_bytes());
}

fn check_header(header: &Header) -> Result<(), EncodeError> {
    if header.gateway == 0 {
        return Err(EncodeError::ZeroGateway);
    }
    if header.flags != 0 {
        return Err(EncodeError::UnsupportedFlags(header.flags));
    }
    Ok(())
}

impl list::sealed::Sealed for Entry {}

impl Record for Entry {
    const LEN: usize = ENTRY_LEN;

    /// Parses a 16-byte entry already validated by [`decode`].
    #[inline(always)]
    fn read(c: &[u8]) -> Entry {
        let state = match byte_at(c, 12) {
            0 => State::Online,
            1 => State::Idle,
            2 => State::Offline,
            _ => State::Invisible,
        };
        Entry {
            user: u64_at(c, 0),
            device: u32_at(c, 8),
            state,
            active: byte_at(c, 13) & ENTRY_FLAG_ACTIVITY != 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A validated datagram: its header and a zero-copy view of its entries.
///
/// Only [`decode`] makes one, so every entry in it is valid and iteration cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    header: Header,
    entries: FixedList<'a, Entry>,
    bytes: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The header's fields.
    #[inline]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of entries (1 to [`MAX_ENTRIES`]).
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false for a decoded datagram (it has at least one entry).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in wire order.
    #[inline]
    pub fn entries(&self) -> Entries<'a> {
        self.entries.iter()
    }

    /// Entry `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn entry(&self, i: usize) -> Option<Entry> {
        self.entries.get(i)
    }

    /// The raw bytes of the entries (`16 × len()` bytes, starting at offset 32).
    #[inline]
    pub fn entry_bytes(&self) -> &'a [u8] {
        self.entries.as_bytes()
    }

    /// The whole datagram as received.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the `AUTH` flag is set: the tag is a MAC (SPEC.md § 9).
    #[inline]
    pub fn is_authenticated(&self) -> bool {
        self.header.flags & FLAG_AUTH != 0
    }

    /// The bytes the MAC covers: header and entries, everything before the tag.
    #[inline]
    pub fn signed_bytes(&self) -> &'a [u8] {
        let end = HEADER_LEN + self.entry_bytes().len();
        self.bytes.get(..end).unwrap_or_default()
    }

    /// The 16-byte tag (zero when `AUTH` is clear).
    #[inline]
    pub fn tag(&self) -> [u8; TAG_LEN] {
        array(self.bytes, HEADER_LEN + self.entry_bytes().len())
    }
}

impl<'a> IntoIterator for &Datagram<'a> {
    type Item = Entry;
    type IntoIter = Entries<'a>;

    fn into_iter(self) -> Entries<'a> {
        self.entries()
    }
}

/// Iterator over the entries of a [`Datagram`].
pub type Entries<'a> = FixedIter<'a, Entry>;

/// Validates a whole datagram and returns a zero-copy view of it. Allocates nothing.
///
/// Checks run cheapest first, and the first failure is returned: length bounds
/// ([`TooShort`](DecodeError::TooShort), [`TooLong`](DecodeError::TooLong)), magic, version,
/// reserved header flag bits, entry count, exact length, gateway, tag (zero unless `AUTH` is
/// set), then the entries in order (for each: user, state, reserved bits). The MAC of an
/// authenticated datagram is not checked here: that takes the gateway's key
/// ([`auth::verify`]).
///
/// `buf` may be a `bytes::Bytes` or `BytesMut` (`decode(&b)`): both dereference to `[u8]`, so
/// nothing is copied.
///
/// Receive into a buffer longer than [`MAX_DATAGRAM_LEN`] (or detect truncation), so that an
/// oversized datagram is refused as [`TooLong`](DecodeError::TooLong) instead of being cut to a
/// length that might look valid.
pub fn decode(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let len = buf.len();
    if len < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    if len > MAX_DATAGRAM_LEN {
        return Err(DecodeError::TooLong);
    }
    if array::<4>(buf, 0) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = byte_at(buf, 4);
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    let flags = byte_at(buf, 5);
    if flags & !FLAG_AUTH != 0 {
        return Err(DecodeError::ReservedFlags);
    }
    let count = u16_at(buf, 6);
    if count == 0 || usize::from(count) > MAX_ENTRIES {
        return Err(DecodeError::BadCount(count));
    }
    let n = usize::from(count);
    let expected = datagram_len(n);
    if len != expected {
        return Err(DecodeError::LengthMismatch {
            expected,
            actual: len,
        });
    }
    let gateway = u32_at(buf, 8);
    if gateway == 0 {
        return Err(DecodeError::ZeroGateway);
    }
    let tag_at = HEADER_LEN + n * ENTRY_LEN;
    // With AUTH the tag is a MAC, checked by the receiver's key (`auth::verify`).
    if flags & FLAG_AUTH == 0 && u64_at(buf, tag_at) | u64_at(buf, tag_at + 8) != 0 {
        return Err(DecodeError::NonZeroTag);
    }
    let entries = buf.get(HEADER_LEN..tag_at).unwrap_or_default();
    validate_entries(entries)?;
    Ok(Datagram {
        header: Header {
            gateway,
            boot_epoch: u32_at(buf, 12),
            sequence: u64_at(buf, 16),
            send_time_ms: u64_at(buf, 24),
            flags,
        },
        entries: FixedList::from_validated(entries),
        bytes: buf,
    })
}

/// Checks every entry; the first bad one decides the error.
#[inline(always)]
fn validate_entries(entries: &[u8]) -> Result<(), DecodeError> {
    // Branch-free scan of all entries (the common case: all valid); the slow path then finds
    // the first bad one.
    let mut bad = false;
    for c in entries.chunks_exact(ENTRY_LEN) {
        bad |= entry_is_bad(c);
    }
    if !bad {
        return Ok(());
    }
    first_entry_error(entries)
}

/// Bytes 12..16 are state, flags, reserved, reserved: an entry is valid iff its user is
/// nonzero, state <= 3, and every bit above the flags' bit 0 is clear.
#[inline(always)]
fn entry_is_bad(c: &[u8]) -> bool {
    (u64_at(c, 0) == 0) | (u32_at(c, 12) & 0xFFFF_FEFC != 0)
}

#[cold]
#[inline(never)]
fn first_entry_error(entries: &[u8]) -> Result<(), DecodeError> {
    for (i, c) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        if entry_is_bad(c) {
            return Err(entry_error(i, u64_at(c, 0), u32_at(c, 12)));
        }
    }
    Ok(())
}

fn entry_error(i: usize, user: u64, tail: u32) -> DecodeError {
    // i < MAX_ENTRIES, so it fits a u16.
    let index = u16::try_from(i).unwrap_or(u16::MAX);
    let [state, ..] = tail.to_le_bytes();
    if user == 0 {
        DecodeError::ZeroUser { index }
    } else if state > 3 {
        DecodeError::BadState {
            index,
            value: state,
        }
    } else {
        DecodeError::ReservedEntryBits { index }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes one unsigned datagram (`AUTH` clear, zero tag) in a fresh `Vec`.
///
/// Refuses (in this order) a zero gateway, nonzero header flags, no entries, more than
/// [`MAX_ENTRIES`] entries, and a zero user id. Gateways batching many heartbeats should reuse
/// an [`Encoder`] instead, which allocates nothing and also signs
/// ([`Encoder::finish_signed`]).
pub fn encode(header: &Header, entries: &[Entry]) -> Result<Vec<u8>, EncodeError> {
    check_header(header)?;
    if entries.is_empty() {
        return Err(EncodeError::Empty);
    }
    if entries.len() > MAX_ENTRIES {
        return Err(EncodeError::TooManyEntries(entries.len()));
    }
    if let Some(index) = entries.iter().position(|e| e.user == 0) {
        return Err(EncodeError::ZeroUser { index });
    }
    let n = entries.len();
    let mut out = vec![0u8; datagram_len(n)];
    // n <= MAX_ENTRIES, so it fits a u16.
    write_header(&mut out, header, u16::try_from(n).unwrap_or(0));
    for (i, e) in entries.iter().enumerate() {
        put(&mut out, HEADER_LEN + i * ENTRY_LEN, &e.to_bytes());
    }
    Ok(out)
}

/// Builds datagrams one entry at a time in a fixed internal buffer of [`MAX_DATAGRAM_LEN`]
/// bytes; allocates nothing and is reusable.
///
/// A gateway keeps one per socket: [`push`](Encoder::push) entries until
/// [`is_full`](Encoder::is_full) (or its flush timer fires), set the header's sequence number
/// and send time with [`set_header`](Encoder::set_header), send the bytes of
/// [`finish`](Encoder::finish) (or, to a daemon with a key file,
/// [`finish_signed`](Encoder::finish_signed)), then [`clear`](Encoder::clear).
///
/// ```
/// use presenced_wire::{decode, Encoder, Entry, Header, State, MAX_ENTRIES};
///
/// let mut enc = Encoder::new(Header::new(7, 3, 0, 1_700_000_000_000));
/// for user in 1..=MAX_ENTRIES as u64 {
///     enc.push(Entry { user, device: 0, state: State::Online, active: false }).unwrap();
/// }
/// assert!(enc.is_full());
/// let datagram = enc.finish().unwrap();
/// assert_eq!(datagram.len(), 1472);
/// assert_eq!(decode(datagram).unwrap().len(), MAX_ENTRIES);
/// enc.clear();
/// ```
#[derive(Clone)]
pub struct Encoder {
    header: Header,
    count: usize,
    buf: [u8; MAX_DATAGRAM_LEN],
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An empty encoder that will write `header` (checked by [`finish`](Encoder::finish)).
    pub fn new(header: Header) -> Encoder {
        Encoder {
            header,
            count: 0,
            buf: [0; MAX_DATAGRAM_LEN],
        }
    }

    /// The header the next [`finish`](Encoder::finish) writes.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Replaces the header (typically the sequence number and send time, just before
    /// [`finish`](Encoder::finish)); the entries are kept.
    pub fn set_header(&mut self, header: Header) {
        self.header = header;
    }

    /// Appends an entry. Refuses it with [`EncodeError::Full`] when the encoder already holds
    /// [`MAX_ENTRIES`], and with [`EncodeError::ZeroUser`] when its user id is 0; the encoder is
    /// unchanged then.
    #[inline]
    pub fn push(&mut self, entry: Entry) -> Result<(), EncodeError> {
        if self.count >= MAX_ENTRIES {
            return Err(EncodeError::Full);
        }
        if entry.user == 0 {
            return Err(EncodeError::ZeroUser { index: self.count });
        }
        put(
            &mut self.buf,
            HEADER_LEN + self.count * ENTRY_LEN,
            &entry.to_bytes(),
        );
        self.count += 1;
        Ok(())
    }

    /// Number of entries held.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no entry is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether [`MAX_ENTRIES`] entries are held (the next push is refused).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.count >= MAX_ENTRIES
    }

    /// How many more entries fit.
    #[inline]
    pub fn remaining(&self) -> usize {
        MAX_ENTRIES.saturating_sub(self.count)
    }

    /// Drops every entry; the header is kept.
    #[inline]
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Writes the header and the zero tag and returns the complete datagram (valid until the
    /// encoder is next changed). Refuses a zero gateway, nonzero header flags and an empty
    /// encoder. The entries are kept: call [`clear`](Encoder::clear) to start the next
    /// datagram.
    pub fn finish(&mut self) -> Result<&[u8], EncodeError> {
        check_header(&self.header)?;
        if self.count == 0 {
            return Err(EncodeError::Empty);
        }
        let n = self.count;
        write_header(&mut self.buf, &self.header, u16::try_from(n).unwrap_or(0));
        let tag_at = HEADER_LEN + n * ENTRY_LEN;
        put(&mut self.buf, tag_at, &[0; TAG_LEN]);
        Ok(self.buf.get(..tag_at + TAG_LEN).unwrap_or_default())
    }

    /// Like [`finish`](Encoder::finish), but sets the `AUTH` flag and writes the MAC of the
    /// header and entries under `key` as the tag (SPEC.md § 9). The header's own flags must
    /// be 0.
    pub fn finish_signed(&mut self, key: &auth::Key) -> Result<&[u8], EncodeError> {
        check_header(&self.header)?;
        if self.count == 0 {
            return Err(EncodeError::Empty);
        }
        let n = self.count;
        let signed_header = Header {
            flags: FLAG_AUTH,
            ..self.header
        };
        write_header(&mut self.buf, &signed_header, u16::try_from(n).unwrap_or(0));
        let tag_at = HEADER_LEN + n * ENTRY_LEN;
        let tag = auth::tag(key, self.buf.get(..tag_at).unwrap_or_default());
        put(&mut self.buf, tag_at, &tag);
        Ok(self.buf.get(..tag_at + TAG_LEN).unwrap_or_default())
    }

    /// Like [`finish`](Encoder::finish), but appends the datagram to `out` and returns its
    /// length. `out` is unchanged on error.
    pub fn finish_into(&mut self, out: &mut BytesMut) -> Result<usize, EncodeError> {
        let bytes = self.finish()?;
        out.extend_from_slice(bytes);
        Ok(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<Entry>) {
        let header = Header::new(7, 1_700_000_000, 42, 1_700_000_123_456);
        let entries = vec![
            Entry {
                user: 1001,
                device: 1,
                state: State::Online,
                active: true,
            },
            Entry {
                user: 1002,
                device: 7,
                state: State::Idle,
                active: false,
            },
        ];
        (header, entries)
    }

    #[test]
    fn reasons_are_unique_and_indexed_by_code() {
        let all = [
            DecodeError::TooShort,
            DecodeError::TooLong,
            DecodeError::BadMagic,
            DecodeError::BadVersion(2),
            DecodeError::ReservedFlags,
            DecodeError::BadCount(0),
            DecodeError::LengthMismatch {
                expected: 64,
                actual: 65,
            },
            DecodeError::ZeroGateway,
            DecodeError::ZeroUser { index: 0 },
            DecodeError::BadState { index: 0, value: 4 },
            DecodeError::ReservedEntryBits { index: 0 },
            DecodeError::NonZeroTag,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code(), i);
            assert_eq!(DecodeError::REASONS[i], e.reason());
            assert!(!e.to_string().is_empty());
        }
        let mut names = DecodeError::REASONS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DecodeError::REASONS.len());
    }

    #[test]
    fn state_wire_values() {
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.to_u8()), i);
            assert_eq!(State::from_u8(s.to_u8()), Some(*s));
        }
        for v in 4..=255u8 {
            assert_eq!(State::from_u8(v), None);
        }
    }

    #[test]
    fn encoder_matches_encode_and_bytes_is_zero_copy() {
        let (header, entries) = sample();
        let want = encode(&header, &entries).unwrap();
        let mut enc = Encoder::new(Header::new(1, 0, 0, 0));
        assert_eq!(enc.finish(), Err(EncodeError::Empty));
        for e in &entries {
            enc.push(*e).unwrap();
        }
        enc.set_header(header);
        assert_eq!(enc.finish().unwrap(), &want[..]);
        let mut out = BytesMut::new();
        assert_eq!(enc.finish_into(&mut out).unwrap(), want.len());
        let frozen = out.freeze();
        let d = decode(&frozen).unwrap();
        assert_eq!(d.as_bytes().as_ptr(), frozen.as_ptr());
        assert_eq!(d.entries().collect::<Vec<_>>(), entries);
        assert_eq!(d.entry(1), Some(entries[1]));
        assert_eq!(d.entry(2), None);
        assert_eq!(d.entry(usize::MAX), None);
        assert_eq!(d.entries().len(), 2);
        assert_eq!(d.entries().next_back(), Some(entries[1]));
        enc.clear();
        assert!(enc.is_empty());
        assert_eq!(enc.header(), &header);
    }

    #[test]
    fn encoder_refuses_the_90th_and_zero_user() {
        let mut enc = Encoder::new(Header::new(1, 0, 0, 0));
        let e = |user| Entry {
            user,
            device: 0,
            state: State::Online,
            active: false,
        };
        assert_eq!(enc.push(e(0)), Err(EncodeError::ZeroUser { index: 0 }));
        for u in 1..=MAX_ENTRIES as u64 {
            assert!(!enc.is_full());
            enc.push(e(u)).unwrap();
        }
        assert!(enc.is_full());
        assert_eq!(enc.remaining(), 0);
        assert_eq!(enc.push(e(1000)), Err(EncodeError::Full));
        assert_eq!(enc.finish().unwrap().len(), MAX_DATAGRAM_LEN);
    }

    #[test]
    fn encode_refusals() {
        let (header, entries) = sample();
        let zero_gw = Header {
            gateway: 0,
            ..header
        };
        assert_eq!(encode(&zero_gw, &entries), Err(EncodeError::ZeroGateway));
        let auth = Header {
            flags: FLAG_AUTH,
            ..header
        };
        assert_eq!(
            encode(&auth, &entries),
            Err(EncodeError::UnsupportedFlags(1))
        );
        assert_eq!(encode(&header, &[]), Err(EncodeError::Empty));
        let many = vec![entries[0]; MAX_ENTRIES + 1];
        assert_eq!(encode(&header, &many), Err(EncodeError::TooManyEntries(90)));
        let mut bad = entries.clone();
        bad[1].user = 0;
        assert_eq!(
            encode(&header, &bad),
            Err(EncodeError::ZeroUser { index: 1 })
        );
        let mut enc = Encoder::new(auth);
        enc.push(entries[0]).unwrap();
        assert_eq!(enc.finish(), Err(EncodeError::UnsupportedFlags(1)));
        let mut out = BytesMut::new();
        assert!(enc.finish_into(&mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn first_bad_entry_decides() {
        let (header, mut entries) = sample();
        entries.push(entries[0]);
        let mut b = encode(&header, &entries).unwrap();
        // Entry 2 has reserved bits; entry 1 a bad state: entry 1 wins.
        b[HEADER_LEN + 2 * ENTRY_LEN + 14] = 1;
        b[HEADER_LEN + ENTRY_LEN + 12] = 9;
        assert_eq!(
            decode(&b),
            Err(DecodeError::BadState { index: 1, value: 9 })
        );
        // Within an entry: user before state before reserved bits.
        b[HEADER_LEN + ENTRY_LEN..HEADER_LEN + ENTRY_LEN + 8].fill(0);
        b[HEADER_LEN + ENTRY_LEN + 13] = 0x80;
        assert_eq!(decode(&b), Err(DecodeError::ZeroUser { index: 1 }));
    }
}
