//! Byte layouts shared by the files: little-endian field access that never panics, the
//! CRC-32C helper, and the log's record framing and payloads (transition, seal). Kept apart
//! from the readers and writers so each layout is written down once, with its size checked at
//! compile time.
//!
//! **Log record frame** (little-endian): `len u16 | crc u32 | payload[len]`, where `crc` is
//! CRC-32C over the two `len` bytes followed by the payload, and the payload's first byte is its
//! kind. A zero `len` is never written (zero-filled space after a crash reads as a torn tail).
//!
//! **Transition payload** (kind 1, 30 bytes): `kind u8 | user u64 | state u8 | prev u8 |
//! cause u8 | at_ms u64 | version u64 | devices u8 | flags u8`; states: 0 offline, 1 online,
//! 2 idle; causes: 0 first heartbeat, 1 state change, 2 logout, 3 timeout, 4 inactivity;
//! flags: bit 0 `seen` (the transition set the user's last seen), other bits zero.
//!
//! **Seal payload** (kind 2, 33 bytes), the last record of a sealed segment: `kind u8 |
//! records u64 | first_seq u64 | min_at_ms u64 | max_at_ms u64` (records before the seal, the
//! segment's first sequence number, and the oldest and newest transition times in it; both are
//! the segment's creation time when it holds no transition).

use presenced_core::event::{Cause, PublicState, Transition};

/// Bytes of a record frame's header (`len u16 | crc u32`).
pub const FRAME_HEADER: usize = 6;
/// The largest payload a frame holds.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Payload kind of a transition record.
pub const KIND_TRANSITION: u8 = 1;
/// Payload kind of the seal record ending a sealed segment.
pub const KIND_SEAL: u8 = 2;
/// Kinds below this are the store's own; the daemon may log records of kinds from here on.
pub const FIRST_OTHER_KIND: u8 = 16;

/// Bytes of a transition payload.
pub const TRANSITION_PAYLOAD: usize = 30;
/// Bytes of a framed transition record.
pub const TRANSITION_FRAME: usize = FRAME_HEADER + TRANSITION_PAYLOAD;
/// Bytes of a seal payload.
pub const SEAL_PAYLOAD: usize = 33;
/// Bytes of a framed seal record.
pub const SEAL_FRAME: usize = FRAME_HEADER + SEAL_PAYLOAD;

const _: () = assert!(TRANSITION_PAYLOAD == 1 + 8 + 1 + 1 + 1 + 8 + 8 + 1 + 1);
const _: () = assert!(TRANSITION_FRAME == 36);
const FLAG_SEEN: u8 = 1;
const _: () = assert!(SEAL_PAYLOAD == 1 + 8 * 4);
const _: () = assert!(SEAL_FRAME == 39);

/// CRC-32C of `parts` concatenated.
pub(crate) fn crc(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |acc, part| crc32c::crc32c_append(acc, part))
}

/// A bounds-checked little-endian reader over a byte slice: every getter returns `None` past
/// the end instead of panicking.
pub(crate) struct Rd<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Rd { bytes, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A little-endian writer into a fixed array (the caller sizes it; overruns are bugs caught by
/// the compile-time size checks and the tests).
pub(crate) struct Wr<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> Wr<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Wr { bytes, at: 0 }
    }

    pub(crate) fn put(&mut self, src: &[u8]) -> &mut Self {
        self.bytes[self.at..self.at + src.len()].copy_from_slice(src);
        self.at += src.len();
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.put(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn pos(&self) -> usize {
        self.at
    }
}

fn state_byte(s: PublicState) -> u8 {
    match s {
        PublicState::Offline => 0,
        PublicState::Online => 1,
        PublicState::Idle => 2,
    }
}

fn state_of(b: u8) -> Option<PublicState> {
    Some(match b {
        0 => PublicState::Offline,
        1 => PublicState::Online,
        2 => PublicState::Idle,
        _ => return None,
    })
}

fn cause_byte(c: Cause) -> u8 {
    match c {
        Cause::FirstHeartbeat => 0,
        Cause::StateChange => 1,
        Cause::Logout => 2,
        Cause::Timeout => 3,
        Cause::Inactivity => 4,
    }
}

fn cause_of(b: u8) -> Option<Cause> {
    Some(match b {
        0 => Cause::FirstHeartbeat,
        1 => Cause::StateChange,
        2 => Cause::Logout,
        3 => Cause::Timeout,
        4 => Cause::Inactivity,
        _ => return None,
    })
}

/// Writes the frame header (len and crc) in front of the payload already in `frame[6..]`.
pub(crate) fn seal_frame(frame: &mut [u8]) {
    let len = (frame.len() - FRAME_HEADER) as u16;
    let len_bytes = len.to_le_bytes();
    let c = crc(&[&len_bytes, &frame[FRAME_HEADER..]]);
    frame[0..2].copy_from_slice(&len_bytes);
    frame[2..6].copy_from_slice(&c.to_le_bytes());
}

/// A transition as one framed record.
pub(crate) fn transition_frame(t: &Transition) -> [u8; TRANSITION_FRAME] {
    let mut f = [0u8; TRANSITION_FRAME];
    let mut w = Wr::new(&mut f[FRAME_HEADER..]);
    w.u8(KIND_TRANSITION)
        .u64(t.user)
        .u8(state_byte(t.state))
        .u8(state_byte(t.prev))
        .u8(cause_byte(t.cause))
        .u64(t.at_ms)
        .u64(t.version)
        .u8(t.devices)
        .u8(if t.seen { FLAG_SEEN } else { 0 });
    debug_assert_eq!(w.pos(), TRANSITION_PAYLOAD);
    seal_frame(&mut f);
    f
}

/// Decodes a transition payload (kind byte included); `None` when a field is out of range.
pub(crate) fn decode_transition(payload: &[u8]) -> Option<Transition> {
    if payload.len() != TRANSITION_PAYLOAD {
        return None;
    }
    let mut r = Rd::new(payload);
    if r.u8()? != KIND_TRANSITION {
        return None;
    }
    let user = r.u64()?;
    let state = state_of(r.u8()?)?;
    let prev = state_of(r.u8()?)?;
    let cause = cause_of(r.u8()?)?;
    let at_ms = r.u64()?;
    let version = r.u64()?;
    let devices = r.u8()?;
    let flags = r.u8()?;
    if flags & !FLAG_SEEN != 0 {
        return None;
    }
    Some(Transition {
        user,
        state,
        prev,
        at_ms,
        cause,
        version,
        devices,
        seen: flags & FLAG_SEEN != 0,
    })
}

/// The seal record's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    /// Records in the segment before the seal.
    pub records: u64,
    /// The segment's first sequence number.
    pub first_seq: u64,
    /// The oldest transition time in the segment, Unix ms.
    pub min_at_ms: u64,
    /// The newest transition time in the segment, Unix ms.
    pub max_at_ms: u64,
}

impl Seal {
    pub(crate) fn frame(&self) -> [u8; SEAL_FRAME] {
        let mut f = [0u8; SEAL_FRAME];
        Wr::new(&mut f[FRAME_HEADER..])
            .u8(KIND_SEAL)
            .u64(self.records)
            .u64(self.first_seq)
            .u64(self.min_at_ms)
            .u64(self.max_at_ms);
        seal_frame(&mut f);
        f
    }

    pub(crate) fn decode(payload: &[u8]) -> Option<Seal> {
        if payload.len() != SEAL_PAYLOAD {
            return None;
        }
        let mut r = Rd::new(payload);
        if r.u8()? != KIND_SEAL {
            return None;
        }
        Some(Seal {
            records: r.u64()?,
            first_seq: r.u64()?,
            min_at_ms: r.u64()?,
            max_at_ms: r.u64()?,
        })
    }

    /// Decodes a whole frame (header and payload), checking its length and checksum.
    pub(crate) fn from_frame(frame: &[u8]) -> Option<Seal> {
        if frame.len() != SEAL_FRAME {
            return None;
        }
        let len = u16::from_le_bytes([frame[0], frame[1]]) as usize;
        let c = u32::from_le_bytes(frame[2..6].try_into().ok()?);
        if len != SEAL_PAYLOAD || crc(&[&frame[0..2], &frame[FRAME_HEADER..]]) != c {
            return None;
        }
        Seal::decode(&frame[FRAME_HEADER..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_round_trip() {
        let t = Transition {
            user: 0x0102_0304_0506_0708,
            state: PublicState::Idle,
            prev: PublicState::Online,
            at_ms: 1_700_000_000_123,
            cause: Cause::Inactivity,
            version: 99 << 16,
            devices: 3,
            seen: true,
        };
        let f = transition_frame(&t);
        assert_eq!(decode_transition(&f[FRAME_HEADER..]), Some(t));
        let s = Seal {
            records: 5,
            first_seq: 7,
            min_at_ms: 1,
            max_at_ms: 2,
        };
        assert_eq!(Seal::from_frame(&s.frame()), Some(s));
    }
}
