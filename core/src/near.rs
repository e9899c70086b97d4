//! Near timers, filed lazily: 4 bytes a timer where a wheel node takes 20.
//!
//! Nearly every timer a shard sets is near: a device's heartbeat deadline or the end of its
//! activity window, due less than `RING` (2^16) ticks ahead. Here such a timer is an *entry*
//! in the ring slot of its tick: the top 32 bits of its user's table tag
//! ([`crate::table::Prefixer`]), from which the table finds the user's record and a few others
//! ([`crate::table::Table::visit_prefix`]). The due tick itself lives in the record
//! ([`crate::record::Record::near_due_at`]). When a slot's tick comes, each entry names its
//! candidate records, and the shard fires those whose record says they are due at that tick.
//!
//! So an entry is never moved or taken out before its tick: a timer moved earlier is filed
//! again, and the entry it leaves behind finds no record due when its tick comes (the shard
//! counts it stale). Filing is a push, firing a pop, and nothing here points into the table,
//! whose entries move on every insert and every growth.
//!
//! A slot's entries sit in chunks of [`PER_CHUNK`] (64 bytes each), newest first. The
//! chunks come from a pool reserved at construction, zeroed by the allocator and handed out
//! from its low end, so memory follows the timers filed; a drained chunk goes back to the
//! pool. When the pool is spent [`Near::file`] refuses, and the caller sets a wheel timer
//! instead: the pool bounds the entries, and no timer is lost.

use crate::clock::Tick;
use crate::ring_bits::{RingBits, RING, RING_MASK};
use crate::slab::{OutOfMemory, Region};
use bytemuck::Zeroable;

/// Entries in a chunk.
pub const PER_CHUNK: usize = 15;

/// Chunk index 0 is never handed out: it marks "no chunk".
const NONE: u32 = 0;

/// 64 bytes of entries, linked to the slot's older chunks. Aligned to 4 bytes only: the
/// allocator zeroes an array aligned more strictly by writing it, which would make the whole
/// pool resident at start, so a chunk may straddle two cache lines.
#[derive(Clone, Copy)]
#[repr(C)]
struct Chunk {
    next: u32,
    entries: [u32; PER_CHUNK],
}

const _: () = assert!(std::mem::size_of::<Chunk>() == 64);
// More than malloc's 16 and `slab::zeroed` would write the pool (see `Chunk`).
const _: () = assert!(std::mem::align_of::<Chunk>() <= 16);

// SAFETY: integers only; a zero chunk is a never-used one.
unsafe impl Zeroable for Chunk {}

/// A ring slot: its newest chunk and the entries in it (every older chunk is full).
#[derive(Clone, Copy)]
struct Slot {
    head: u32,
    len: u32,
}

// SAFETY: integers only; a zero slot is an empty one.
unsafe impl Zeroable for Slot {}

/// Every chunk of the pool is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearFull;

/// The ring of near timers.
pub struct Near {
    chunks: Box<[Chunk]>,
    /// Drained chunks, linked through `next`, reused first.
    free: u32,
    /// Chunks from this index on were never used.
    fresh: u32,
    slots: Box<[Slot]>,
    bits: RingBits,
    /// Every entry due before this tick has been polled.
    now: Tick,
    len: usize,
}

impl Near {
    /// A ring for about `timers` timers at once, its clock at tick `now`. The pool holds a
    /// quarter more entries than that (room for stale ones) and a part-filled chunk in every
    /// slot that could be busy; it and the slots are reserved now, zeroed by the allocator,
    /// and cost memory as they are first used.
    pub fn try_new(timers: u32, now: Tick) -> Result<Near, OutOfMemory> {
        let entries = timers as usize + timers as usize / 4;
        let chunks = 1 + entries.div_ceil(PER_CHUNK) + (timers as usize).min(RING);
        Ok(Near {
            chunks: crate::slab::zeroed(chunks)?,
            free: NONE,
            fresh: 1,
            slots: crate::slab::zeroed(RING)?,
            bits: RingBits::new(),
            now,
            len: 0,
        })
    }

    /// The ring's clock: every entry due before it has been polled.
    pub fn now(&self) -> Tick {
        self.now
    }

    /// Entries filed and not yet polled (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a timer due at `at` is near enough to be filed here.
    pub fn covers(&self, at: Tick) -> bool {
        at < self.now + RING as u64
    }

    /// Where the chunk pool lies (for the daemon's page policy).
    pub fn region(&self) -> Region {
        Region::of(&self.chunks)
    }

    /// Bytes of the chunk pool, the slots and the bitmap.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.chunks)
            + std::mem::size_of_val(&*self.slots)
            + self.bits.memory_bytes()
    }

    /// Files an entry for `prefix` at tick `at` (a past tick means the ring's clock); returns
    /// the tick it is filed at, or `NearFull` when no chunk is left for it.
    ///
    /// # Panics
    /// When `at` is not covered ([`Near::covers`]).
    pub fn file(&mut self, prefix: u32, at: Tick) -> Result<Tick, NearFull> {
        let at = at.max(self.now);
        assert!(self.covers(at), "a near timer beyond the ring");
        let s = (at & RING_MASK) as usize;
        let slot = self.slots[s];
        if slot.head != NONE && (slot.len as usize) < PER_CHUNK {
            self.chunks[slot.head as usize].entries[slot.len as usize] = prefix;
            self.slots[s].len += 1;
        } else {
            let c = self.take()?;
            let chunk = &mut self.chunks[c as usize];
            chunk.next = slot.head;
            chunk.entries[0] = prefix;
            self.slots[s] = Slot { head: c, len: 1 };
            self.bits.set(s);
        }
        self.len += 1;
        Ok(at)
    }

    /// Whether entries are filed at the clock's tick.
    #[inline]
    pub fn due_at_clock(&self) -> bool {
        self.slots[(self.now & RING_MASK) as usize].head != NONE
    }

    /// The earliest tick with an entry, if any: a caller may sleep until it.
    pub fn next_due(&self) -> Option<Tick> {
        self.bits.next_busy(self.now)
    }

    /// Moves the clock to `target` (if later), which no entry is due at or before.
    pub fn advance_to(&mut self, target: Tick) {
        debug_assert!(self.next_due().map_or(true, |t| t > target));
        self.now = self.now.max(target);
    }

    /// Takes up to `out.len()` entries of the earliest tick with any, if it is at or before
    /// `target`, and moves the clock to that tick; returns `(tick, count)`. With none due the
    /// clock moves to `target` (if later) and the count is 0. Entries filed while a tick's
    /// are handled (at the clock's tick or later) come out of later calls.
    pub fn poll_batch(&mut self, target: Tick, out: &mut [u32]) -> (Tick, usize) {
        let Some(tick) = self.next_due().filter(|&t| t <= target) else {
            self.now = self.now.max(target);
            return (self.now, 0);
        };
        self.now = tick;
        let s = (tick & RING_MASK) as usize;
        let mut n = 0;
        while n < out.len() && self.slots[s].head != NONE {
            let Slot { head, len } = self.slots[s];
            let take = (len as usize).min(out.len() - n);
            let from = len as usize - take;
            let chunk = &self.chunks[head as usize];
            out[n..n + take].copy_from_slice(&chunk.entries[from..len as usize]);
            n += take;
            if from > 0 {
                self.slots[s].len = from as u32;
            } else {
                let next = chunk.next;
                self.release(head);
                let len = if next == NONE { 0 } else { PER_CHUNK as u32 };
                self.slots[s] = Slot { head: next, len };
            }
        }
        if self.slots[s].head == NONE {
            self.bits.clear(s);
        }
        self.len -= n;
        (tick, n)
    }

    fn take(&mut self) -> Result<u32, NearFull> {
        if self.free != NONE {
            let c = self.free;
            self.free = self.chunks[c as usize].next;
            Ok(c)
        } else if (self.fresh as usize) < self.chunks.len() {
            self.fresh += 1;
            Ok(self.fresh - 1)
        } else {
            Err(NearFull)
        }
    }

    fn release(&mut self, c: u32) {
        self.chunks[c as usize].next = self.free;
        self.free = c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry due up to `target`, as `(tick, prefix)`, in the order polled.
    fn drain(near: &mut Near, target: Tick, batch: usize) -> Vec<(Tick, u32)> {
        let mut out = vec![0; batch];
        let mut got = Vec::new();
        loop {
            let (tick, n) = near.poll_batch(target, &mut out);
            if n == 0 {
                return got;
            }
            got.extend(out[..n].iter().map(|&p| (tick, p)));
        }
    }

    #[test]
    fn entries_come_out_at_their_tick_in_tick_order() {
        let mut near = Near::try_new(1000, 100).unwrap();
        for (i, at) in [105u64, 100, 170, 105, 100 + RING as u64 - 1, 99]
            .iter()
            .enumerate()
        {
            assert_eq!(near.file(i as u32, *at), Ok((*at).max(100)));
        }
        assert_eq!(near.next_due(), Some(100));
        assert_eq!(drain(&mut near, 104, 4), vec![(100, 1), (100, 5)]);
        assert_eq!(near.now(), 104);
        assert_eq!(near.next_due(), Some(105));
        let rest = drain(&mut near, Tick::MAX / 2, 1);
        assert_eq!(
            rest,
            vec![(105, 3), (105, 0), (170, 2), (100 + RING as u64 - 1, 4)]
        );
        assert!(near.is_empty());
        assert_eq!(near.next_due(), None);
    }

    #[test]
    fn a_busy_slot_spans_chunks_and_gives_them_back() {
        let mut near = Near::try_new(100, 0).unwrap();
        let n = 3 * PER_CHUNK as u32 + 4;
        for p in 0..n {
            near.file(p, 7).unwrap();
        }
        assert_eq!(near.fresh, 5);
        let mut got: Vec<u32> = drain(&mut near, 7, 10).iter().map(|&(_, p)| p).collect();
        got.sort_unstable();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        // The drained chunks are reused before fresh ones.
        for p in 0..n {
            near.file(p, 9).unwrap();
        }
        assert_eq!(near.fresh, 5);
    }

    #[test]
    fn entries_filed_at_the_polled_tick_come_out_of_the_next_call() {
        let mut near = Near::try_new(10, 0).unwrap();
        near.file(1, 3).unwrap();
        let mut out = [0; 4];
        assert_eq!(near.poll_batch(10, &mut out), (3, 1));
        // A past tick means the clock's (3).
        assert_eq!(near.file(2, 1), Ok(3));
        assert_eq!(near.poll_batch(10, &mut out), (3, 1));
        assert_eq!(out[0], 2);
        assert_eq!(near.poll_batch(10, &mut out), (10, 0));
    }

    #[test]
    fn a_spent_pool_refuses_and_recovers_once_drained() {
        // Room for 2 + 1/4 timers: one chunk of entries and two part-filled ones.
        let mut near = Near::try_new(2, 0).unwrap();
        assert_eq!(near.chunks.len(), 1 + 1 + 2);
        near.file(1, 1).unwrap();
        near.file(2, 2).unwrap();
        near.file(3, 3).unwrap();
        assert_eq!(near.file(4, 4), Err(NearFull));
        for p in 5..5 + PER_CHUNK as u32 - 1 {
            near.file(p, 3).unwrap();
        }
        assert_eq!(near.file(99, 3), Err(NearFull));
        assert_eq!(drain(&mut near, 1, 8), vec![(1, 1)]);
        near.file(4, 4).unwrap();
    }

    #[test]
    #[should_panic(expected = "a near timer beyond the ring")]
    fn a_far_tick_panics() {
        let mut near = Near::try_new(10, 5).unwrap();
        let _ = near.file(1, 5 + RING as u64);
    }

    #[test]
    fn randomized_against_sorted_list() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut near = Near::try_new(5000, 0).unwrap();
        let mut model: Vec<(Tick, u32)> = Vec::new();
        let mut now = 0;
        for round in 0..200u32 {
            for i in 0..(next() % 40) as u32 {
                let at = now + next() % 3000;
                let at = near.file(round * 100 + i, at).unwrap();
                model.push((at, round * 100 + i));
            }
            now += next() % 500;
            let mut got = drain(&mut near, now, 1 + (next() % 20) as usize);
            let due: Vec<Tick> = got.iter().map(|&(t, _)| t).collect();
            assert!(due.windows(2).all(|w| w[0] <= w[1]), "{due:?}");
            let mut want: Vec<(Tick, u32)> =
                model.iter().copied().filter(|&(t, _)| t <= now).collect();
            model.retain(|&(t, _)| t > now);
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want);
            assert_eq!(near.len(), model.len());
        }
    }
}
