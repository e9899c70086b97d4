//! Little-endian reads and writes at fixed offsets, shared by the datagram and link codecs.
//!
//! They exist so that the codecs can read and patch fields by offset without indexing (which
//! could panic): none of these functions panics; a read out of range yields zeros and a write
//! out of range does nothing. Neither happens on validated input, where every offset is in
//! bounds.

/// `W` bytes at `at`, or zeros when `b` is shorter.
#[inline(always)]
pub(crate) fn array<const W: usize>(b: &[u8], at: usize) -> [u8; W] {
    match b.get(at..at.saturating_add(W)) {
        Some(s) => <[u8; W]>::try_from(s).unwrap_or([0; W]),
        None => [0; W],
    }
}

/// The `u16` at `at`.
#[inline(always)]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

/// The `u32` at `at`.
#[inline(always)]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

/// The `u64` at `at`.
#[inline(always)]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

/// The byte at `at`.
#[inline(always)]
pub(crate) fn byte_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// Copies `src` into `dst` at `at`.
#[inline(always)]
pub(crate) fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at.saturating_add(src.len())) {
        d.copy_from_slice(src);
    }
}

/// `usize` → `u32`, saturating (lengths and counts here are bounded by a `u32` frame length).
#[inline(always)]
pub(crate) fn sat_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
