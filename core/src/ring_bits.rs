//! The occupancy bitmap of a ring of `RING` slots, one per tick, shared by the timing wheel's
//! ring and the near timers (`crate::near`): a bit per slot and a summary bit per nonzero word,
//! so the next busy slot after any tick is found in a few word operations however sparse the
//! ring is.

use crate::clock::Tick;

/// Ticks covered by a ring, and its slot count.
pub(crate) const RING_BITS: u32 = 16;
pub(crate) const RING: usize = 1 << RING_BITS;
pub(crate) const RING_MASK: u64 = RING as u64 - 1;
/// Words of the bitmap, and of its summary (one bit per nonzero word).
const WORDS: usize = RING / 64;
const SUMMARY_WORDS: usize = WORDS / 64;

/// Which ring slots are busy.
pub(crate) struct RingBits {
    words: Box<[u64]>,
    summary: [u64; SUMMARY_WORDS],
}

impl RingBits {
    /// No slot busy.
    pub(crate) fn new() -> RingBits {
        RingBits {
            words: vec![0; WORDS].into_boxed_slice(),
            summary: [0; SUMMARY_WORDS],
        }
    }

    /// Bytes of the bitmap.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.words) + std::mem::size_of_val(&self.summary)
    }

    /// Marks `slot` busy.
    #[inline]
    pub(crate) fn set(&mut self, slot: usize) {
        self.words[slot / 64] |= 1 << (slot % 64);
        self.summary[slot / 4096] |= 1 << (slot / 64 % 64);
    }

    /// Marks `slot` idle.
    #[inline]
    pub(crate) fn clear(&mut self, slot: usize) {
        let word = &mut self.words[slot / 64];
        *word &= !(1 << (slot % 64));
        if *word == 0 {
            self.summary[slot / 4096] &= !(1 << (slot / 64 % 64));
        }
    }

    /// The tick of the earliest busy slot at or after tick `now`'s, cyclically (a slot before
    /// it stands for a tick a whole turn later). Inlined into the pollers, the hot callers.
    #[inline(always)]
    pub(crate) fn next_busy(&self, now: Tick) -> Option<Tick> {
        let from = (now & RING_MASK) as usize;
        let word = from / 64;
        let bits = self.words[word] & (u64::MAX << (from % 64));
        let slot = if bits != 0 {
            word * 64 + bits.trailing_zeros() as usize
        } else {
            // The first nonzero word after this one, else (wrapping) from the start.
            let w = self
                .first_busy_word(word + 1)
                .or_else(|| self.first_busy_word(0))?;
            w * 64 + self.words[w].trailing_zeros() as usize
        };
        Some(now + ((slot as u64).wrapping_sub(from as u64) & RING_MASK))
    }

    /// The first word at or after `start` with a busy slot, from the summary.
    fn first_busy_word(&self, start: usize) -> Option<usize> {
        if start >= WORDS {
            return None;
        }
        let mut s = start / 64;
        let mut bits = self.summary[s] & (u64::MAX << (start % 64));
        loop {
            if bits != 0 {
                return Some(s * 64 + bits.trailing_zeros() as usize);
            }
            s += 1;
            if s == SUMMARY_WORDS {
                return None;
            }
            bits = self.summary[s];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_busy_slot_wraps_around_the_ring() {
        let mut bits = RingBits::new();
        assert_eq!(bits.next_busy(5), None);
        bits.set(3);
        bits.set(4_464);
        // From tick 5: slot 3 is a whole turn later, slot 4,464 comes first.
        assert_eq!(bits.next_busy(5), Some(4_464));
        // From tick 70,000 (slot 4,464), its own slot.
        assert_eq!(bits.next_busy(70_000), Some(70_000));
        bits.clear(4_464);
        assert_eq!(bits.next_busy(5), Some(RING as u64 + 3));
        assert_eq!(bits.next_busy(3), Some(3));
        bits.clear(3);
        assert_eq!(bits.next_busy(0), None);
    }
}
