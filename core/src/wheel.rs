//! The timing wheel: cancellable timers in a fixed slab, a ring for the near future and
//! hierarchical levels for the far one.
//!
//! A timer due less than `RING` (2^16) ticks ahead sits in ring slot `at mod RING`: as the
//! clock advances it reaches that slot exactly at `at`, so near timers (every heartbeat deadline
//! and activity window, 655 s at a 10 ms tick) are filed once and never moved. A timer further
//! ahead sits in one of three far levels of 64 slots (6-bit digits above the ring's 16 bits),
//! in the level of the highest digit in which `at` differs from the current tick; when the
//! clock reaches a far slot's first tick its timers cascade into the ring or a lower level.
//! Only far timers (last-seen retention) ever cascade, so a million users' deadlines never
//! move in one bulk that would stall the shard for tens of milliseconds.
//!
//! Each slot is a circular doubly-linked list through a sentinel node, so insert, cancel and
//! reschedule are O(1) and nothing allocates after construction; occupancy bitmaps (two-level
//! for the ring) find the next busy slot in a few word operations.

use crate::clock::Tick;
use crate::ring_bits::{RingBits, RING, RING_BITS, RING_MASK};
use crate::slab::OutOfMemory;
use bytemuck::Zeroable;

/// Far levels above the ring, 64 slots each: the wheel spans 2^(16 + 3 × 6) = 2^34 ticks.
const FAR_LEVELS: usize = 3;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// Sentinels: the ring's `RING`, then `FAR_LEVELS × SLOTS` for the far levels.
const SENTINELS: u32 = (RING + FAR_LEVELS * SLOTS) as u32;
/// No link: marks a free node.
const NIL: u32 = u32::MAX;

/// The farthest a timer may be set from the current tick (the wheel spans 2^34 ticks; deadlines
/// are also stored in 32 bits elsewhere, so 2^31 is the usable bound).
pub const MAX_SPAN: u64 = 1 << 31;

/// A handle to a scheduled timer: valid from `insert` until it fires or is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId(u32);

impl TimerId {
    /// The handle as a plain index, for storing in a packed record.
    pub fn index(self) -> u32 {
        self.0
    }

    /// Rebuilds a handle stored with [`TimerId::index`]; using a stale one panics.
    pub fn from_index(index: u32) -> TimerId {
        TimerId(index)
    }
}

/// The slab is full: every timer is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelFull;

impl std::fmt::Display for WheelFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timing wheel full")
    }
}

impl std::error::Error for WheelFull {}

// 20 bytes a timer: packed to 4-byte alignment so a slab of millions stays small.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Node {
    key: u64,
    /// Due tick, low 32 bits (widened against the wheel's current tick).
    at: u32,
    next: u32,
    prev: u32,
}

// SAFETY: integers only; a zero node is a never-used one (`Wheel::fresh` tells them apart).
unsafe impl Zeroable for Node {}

/// The timing wheel. Each timer carries a `u64` key (the shard stores user ids).
pub struct Wheel {
    /// Sentinels `0..SENTINELS` (ring slot `i` is node `i`, far slot `(level, slot)` is node
    /// `RING + level * 64 + slot`), then timer nodes.
    nodes: Box<[Node]>,
    /// Head of the list of released timer nodes (linked through `next`), reused first.
    free: u32,
    /// Nodes below this index have been used at least once; those from it on never were.
    fresh: u32,
    /// Ring slots holding timers.
    ring_bits: RingBits,
    /// Far slots holding timers, one word per level.
    far_occupied: [u64; FAR_LEVELS],
    /// Timers re-filed by cascades so far.
    cascaded: u64,
    now: Tick,
    len: usize,
    capacity: usize,
}

impl Wheel {
    /// A wheel holding at most `capacity` timers, with its clock at tick `now`. The slab is
    /// reserved now, zeroed by the allocator ([`crate::slab::zeroed`]); nodes are handed out
    /// from the lowest never-used one, so its pages cost memory as timers are first used.
    ///
    /// # Panics
    /// When the machine refuses the address space; [`Wheel::try_new`] returns the error.
    pub fn new(capacity: u32, now: Tick) -> Wheel {
        Wheel::try_new(capacity, now).expect("address space for the wheel")
    }

    /// [`Wheel::new`], or the error when the machine refuses the address space.
    pub fn try_new(capacity: u32, now: Tick) -> Result<Wheel, OutOfMemory> {
        assert!((capacity as u64) < (NIL - SENTINELS) as u64);
        let mut nodes: Box<[Node]> = crate::slab::zeroed((SENTINELS + capacity) as usize)?;
        for (i, sentinel) in nodes.iter_mut().take(SENTINELS as usize).enumerate() {
            sentinel.next = i as u32;
            sentinel.prev = i as u32;
        }
        Ok(Wheel {
            nodes,
            free: NIL,
            fresh: SENTINELS,
            ring_bits: RingBits::new(),
            far_occupied: [0; FAR_LEVELS],
            cascaded: 0,
            now,
            len: 0,
            capacity: capacity as usize,
        })
    }

    /// The wheel's current tick: every timer due at or before it has been returned by `poll`.
    pub fn now(&self) -> Tick {
        self.now
    }

    /// Timers scheduled now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most timers the wheel holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Timers moved by cascades since construction (only timers set `RING` ticks or more
    /// ahead ever move).
    pub fn cascaded(&self) -> u64 {
        self.cascaded
    }

    /// Where the timer slab lies (for the daemon's page policy).
    pub fn region(&self) -> crate::slab::Region {
        crate::slab::Region::of(&self.nodes)
    }

    /// Bytes of the timer slab and the ring's bitmap.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.nodes) + self.ring_bits.memory_bytes()
    }

    /// Schedules `key` at tick `at` (a past tick means the current one).
    pub fn insert(&mut self, key: u64, at: Tick) -> Result<TimerId, WheelFull> {
        let id = if self.free != NIL {
            let id = self.free;
            self.free = self.nodes[id as usize].next;
            id
        } else if (self.fresh as usize) < self.nodes.len() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return Err(WheelFull);
        };
        self.nodes[id as usize].key = key;
        self.len += 1;
        self.link(id, at);
        Ok(TimerId(id))
    }

    /// The tick a scheduled timer is due at.
    pub fn due(&self, id: TimerId) -> Tick {
        let node = self.node(id);
        self.widen(node.at)
    }

    /// Moves a scheduled timer to tick `at`; the handle stays valid.
    pub fn reschedule(&mut self, id: TimerId, at: Tick) {
        self.node(id);
        self.unlink(id.0);
        self.link(id.0, at);
    }

    /// Whether timers are due at the wheel's current tick.
    #[inline]
    pub fn due_at_clock(&self) -> bool {
        let here = (self.now & RING_MASK) as u32;
        self.nodes[here as usize].next != here
    }

    /// Removes a scheduled timer; its handle becomes invalid.
    pub fn cancel(&mut self, id: TimerId) {
        self.node(id);
        self.unlink(id.0);
        self.release(id.0);
    }

    /// The earliest tick at which [`Wheel::poll`] has work: a timer due then, or a far slot
    /// whose timers cascade then (never later than the earliest timer); `None` when empty. A
    /// caller may sleep until it.
    pub fn next_due(&self) -> Option<Tick> {
        let here = (self.now & RING_MASK) as u32;
        if self.nodes[here as usize].next != here {
            return Some(self.now);
        }
        let far = self.next_busy_far().map(|(_, _, start)| start);
        match (self.next_busy_ring(), far) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Returns the next timer due at or before `target`, in due order, advancing the wheel's
    /// clock to its tick; returns `None` (with the clock at `target`) when none is left.
    /// The fired timer is freed: its handle becomes invalid.
    pub fn poll(&mut self, target: Tick) -> Option<(u64, Tick)> {
        loop {
            let here = (self.now & RING_MASK) as u32;
            let first = self.nodes[here as usize].next;
            if first != here {
                debug_assert_eq!(self.widen(self.nodes[first as usize].at), self.now);
                let key = self.nodes[first as usize].key;
                self.unlink(first);
                self.release(first);
                return Some((key, self.now));
            }
            let ring = self.next_busy_ring();
            match (self.next_busy_far(), ring) {
                // A far slot that starts no later than the next ring timer cascades first.
                (Some((level, slot, start)), _)
                    if start <= target && ring.map_or(true, |tick| start <= tick) =>
                {
                    self.now = start;
                    self.cascade(level, slot);
                }
                (_, Some(tick)) if tick <= target => self.now = tick,
                _ => {
                    if target > self.now {
                        self.now = target;
                    }
                    return None;
                }
            }
        }
    }

    /// Like `poll`, but returns up to `out.len()` timers, all due at the same tick (the next
    /// due one); returns how many. Timers due later are left for later calls, so a caller that
    /// reschedules while handling the batch never schedules behind the wheel's clock.
    pub fn poll_batch(&mut self, target: Tick, out: &mut [(u64, Tick)]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let Some(first) = self.poll(target) else {
            return 0;
        };
        out[0] = first;
        let mut n = 1;
        let here = (self.now & RING_MASK) as u32;
        while n < out.len() {
            let id = self.nodes[here as usize].next;
            if id == here {
                break;
            }
            let key = self.nodes[id as usize].key;
            self.unlink(id);
            self.release(id);
            out[n] = (key, self.now);
            n += 1;
        }
        n
    }

    fn node(&self, id: TimerId) -> Node {
        let node = self.nodes[id.0 as usize];
        assert!(
            id.0 >= SENTINELS && id.0 < self.fresh && node.prev != NIL,
            "stale timer handle"
        );
        node
    }

    fn far_sentinel(level: usize, slot: usize) -> u32 {
        (RING + level * SLOTS + slot) as u32
    }

    /// Rebuilds a full tick from its low 32 bits: timers are never more than `MAX_SPAN` from now.
    fn widen(&self, at: u32) -> Tick {
        let delta = at.wrapping_sub(self.now as u32) as i32 as i64;
        (self.now as i64 + delta) as Tick
    }

    /// The far level of a timer due `RING` ticks or more from now.
    fn far_level_for(&self, at: Tick) -> usize {
        let significant = 63 - (at ^ self.now).leading_zeros();
        debug_assert!(significant >= RING_BITS);
        // Crossing a 2^34-tick boundary sets a bit above the wheel even for a nearer timer:
        // such a timer goes in the top level, whose slots wrap around (see `next_busy_far`).
        (((significant - RING_BITS) / SLOT_BITS) as usize).min(FAR_LEVELS - 1)
    }

    fn link(&mut self, id: u32, at: Tick) {
        let at = at.max(self.now);
        assert!(at - self.now < MAX_SPAN, "timer beyond the wheel's span");
        let head = if at - self.now < RING as u64 {
            let slot = (at & RING_MASK) as usize;
            self.ring_bits.set(slot);
            slot as u32
        } else {
            let level = self.far_level_for(at);
            let shift = RING_BITS + level as u32 * SLOT_BITS;
            let slot = ((at >> shift) & SLOT_MASK) as usize;
            self.far_occupied[level] |= 1 << slot;
            Wheel::far_sentinel(level, slot)
        };
        let tail = self.nodes[head as usize].prev;
        self.nodes[id as usize].at = at as u32;
        self.nodes[id as usize].prev = tail;
        self.nodes[id as usize].next = head;
        self.nodes[tail as usize].next = id;
        self.nodes[head as usize].prev = id;
    }

    fn unlink(&mut self, id: u32) {
        let Node { next, prev, .. } = self.nodes[id as usize];
        self.nodes[prev as usize].next = next;
        self.nodes[next as usize].prev = prev;
        // If the list is now empty, `next == prev` is its sentinel: clear its occupancy bit.
        if next == prev && next < SENTINELS {
            let slot = next as usize;
            if slot < RING {
                self.ring_bits.clear(slot);
            } else {
                let far = slot - RING;
                self.far_occupied[far / SLOTS] &= !(1 << (far % SLOTS));
            }
        }
    }

    fn release(&mut self, id: u32) {
        self.nodes[id as usize].prev = NIL;
        self.nodes[id as usize].next = self.free;
        self.free = id;
        self.len -= 1;
    }

    /// The tick of the earliest busy ring slot (see [`RingBits::next_busy`]).
    #[inline(always)]
    fn next_busy_ring(&self) -> Option<Tick> {
        self.ring_bits.next_busy(self.now)
    }

    /// The earliest busy far slot: `(level, slot, first tick it covers)`. Lower levels always
    /// hold earlier timers than higher ones.
    fn next_busy_far(&self) -> Option<(usize, usize, Tick)> {
        for level in 0..FAR_LEVELS {
            let occupied = self.far_occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = RING_BITS + level as u32 * SLOT_BITS;
            let current = ((self.now >> shift) & SLOT_MASK) as u32;
            // Slots at or after the current digit, in order (timers never sit behind it).
            let distance = occupied.rotate_right(current).trailing_zeros();
            let slot = ((current + distance) as u64 & SLOT_MASK) as usize;
            let level_span = 1u64 << (shift + SLOT_BITS);
            let base = self.now & !(level_span - 1);
            let mut start = base + ((slot as u64) << shift);
            if (slot as u32) < current {
                start += level_span;
            }
            return Some((level, slot, start.max(self.now)));
        }
        None
    }

    /// Re-files every timer of a far slot relative to the (advanced) clock.
    fn cascade(&mut self, level: usize, slot: usize) {
        let head = Wheel::far_sentinel(level, slot);
        loop {
            let id = self.nodes[head as usize].next;
            if id == head {
                break;
            }
            let at = self.widen(self.nodes[id as usize].at);
            self.unlink(id);
            self.link(id, at);
            self.cascaded += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(wheel: &mut Wheel, target: Tick) -> Vec<(u64, Tick)> {
        std::iter::from_fn(|| wheel.poll(target)).collect()
    }

    #[test]
    fn fires_in_due_order_across_levels() {
        let mut wheel = Wheel::new(100, 0);
        let ticks = [5u64, 0, 63, 64, 4095, 4096, 300_000, 1 << 30, 77, 64];
        for (key, &at) in ticks.iter().enumerate() {
            wheel.insert(key as u64, at).unwrap();
        }
        let fired = drain(&mut wheel, u64::from(u32::MAX));
        let mut expected: Vec<(u64, Tick)> = ticks
            .iter()
            .enumerate()
            .map(|(k, &t)| (k as u64, t))
            .collect();
        expected.sort_by_key(|&(k, t)| (t, k));
        let mut got = fired.clone();
        got.sort_by_key(|&(k, t)| (t, k));
        assert_eq!(got, expected);
        let due: Vec<Tick> = fired.iter().map(|&(_, t)| t).collect();
        assert!(due.windows(2).all(|w| w[0] <= w[1]), "{due:?}");
        assert!(wheel.is_empty());
    }

    #[test]
    fn poll_stops_at_target_and_resumes() {
        let mut wheel = Wheel::new(10, 1000);
        wheel.insert(1, 1010).unwrap();
        wheel.insert(2, 1100).unwrap();
        assert_eq!(drain(&mut wheel, 1009), vec![]);
        assert_eq!(wheel.now(), 1009);
        assert_eq!(drain(&mut wheel, 1099), vec![(1, 1010)]);
        assert_eq!(wheel.now(), 1099);
        assert_eq!(drain(&mut wheel, 5000), vec![(2, 1100)]);
    }

    #[test]
    fn reschedule_and_full() {
        let mut wheel = Wheel::new(2, 0);
        wheel.insert(1, 10).unwrap();
        let b = wheel.insert(2, 20).unwrap();
        assert_eq!(wheel.insert(3, 30), Err(WheelFull));
        wheel.reschedule(b, 5);
        assert_eq!(wheel.due(b), 5);
        assert_eq!(drain(&mut wheel, 7), vec![(2, 5)]);
        wheel.insert(3, 7).unwrap();
        assert_eq!(drain(&mut wheel, 100), vec![(3, 7), (1, 10)]);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn fired_nodes_are_reused_before_fresh_ones() {
        let mut wheel = Wheel::new(3, 0);
        let a = wheel.insert(1, 10).unwrap();
        assert_eq!(drain(&mut wheel, 10), vec![(1, 10)]);
        // The released node comes back first; the two never used follow.
        assert_eq!(wheel.insert(2, 10).unwrap(), a);
        let b = wheel.insert(3, 11).unwrap();
        let c = wheel.insert(4, 12).unwrap();
        assert!(a != b && b != c && a != c);
        assert_eq!(wheel.insert(5, 13), Err(WheelFull));
        assert_eq!(drain(&mut wheel, 20), vec![(2, 10), (3, 11), (4, 12)]);
    }

    #[test]
    #[should_panic(expected = "stale timer handle")]
    fn a_handle_to_a_never_used_node_panics() {
        let mut wheel = Wheel::new(4, 0);
        let a = wheel.insert(1, 10).unwrap();
        wheel.due(TimerId::from_index(a.index() + 1));
    }

    #[test]
    fn next_due_is_the_earliest_work() {
        let mut wheel = Wheel::new(8, 100);
        assert_eq!(wheel.next_due(), None);
        wheel.insert(1, 5_000).unwrap();
        assert_eq!(wheel.next_due(), Some(5_000));
        wheel.insert(2, 100).unwrap();
        assert_eq!(wheel.next_due(), Some(100));
        drain(&mut wheel, 100);
        assert_eq!(wheel.next_due(), Some(5_000));
        drain(&mut wheel, 5_000);
        // A far timer: the wheel wakes when its slot cascades, never after it is due.
        wheel.insert(3, 5_000 + (1 << 25)).unwrap();
        let first = wheel.next_due().unwrap();
        assert!(first > 5_000 && first <= 5_000 + (1 << 25), "{first}");
        assert_eq!(drain(&mut wheel, first - 1), vec![]);
        assert_eq!(
            drain(&mut wheel, 5_000 + (1 << 25)),
            vec![(3, 5_000 + (1 << 25))]
        );
        assert_eq!(wheel.next_due(), None);
    }

    #[test]
    fn timers_across_the_wheels_span_boundary() {
        for start in [
            (1u64 << 36) - 3,
            (1 << 36) - 70_000,
            (5 << 36) - 1,
            1 << 40,
            (1 << 34) - 1,
            (3 << 34) - 65_536,
        ] {
            let mut wheel = Wheel::new(8, start);
            let ticks = [
                start + 1,
                start + 5,
                start + 65_535,
                start + 65_536,
                start + 100_000,
                start + (1 << 30),
            ];
            for (key, &at) in ticks.iter().enumerate() {
                wheel.insert(key as u64, at).unwrap();
            }
            let fired = drain(&mut wheel, start + (1 << 31));
            let expected: Vec<(u64, Tick)> = ticks
                .iter()
                .enumerate()
                .map(|(k, &t)| (k as u64, t))
                .collect();
            assert_eq!(fired, expected, "start {start}");
        }
    }

    #[test]
    fn near_timers_are_never_moved_far_ones_cascade_once_per_level() {
        let start = 1_000_000_007;
        let mut wheel = Wheel::new(2_000, start);
        // Deadlines spread over the ring's whole span, as a million users' heartbeats are.
        for key in 0..1_000u64 {
            wheel.insert(key, start + key * 65).unwrap();
        }
        assert_eq!(drain(&mut wheel, start + 65_535).len(), 1_000);
        assert_eq!(wheel.cascaded(), 0);
        // A far timer (last-seen retention) moves down a level at a time, at most 3 times.
        let now = wheel.now();
        wheel.insert(7, now + (1 << 29)).unwrap();
        assert_eq!(
            drain(&mut wheel, now + (1 << 30)),
            vec![(7, now + (1 << 29))]
        );
        assert!((1..=3).contains(&wheel.cascaded()), "{}", wheel.cascaded());
    }

    #[test]
    fn poll_batch_returns_one_tick_at_a_time() {
        let mut wheel = Wheel::new(16, 0);
        for (key, at) in [(1, 5), (2, 5), (3, 5), (4, 6), (5, 70)] {
            wheel.insert(key, at).unwrap();
        }
        let mut out = [(0, 0); 2];
        assert_eq!(wheel.poll_batch(100, &mut out), 2);
        assert_eq!(out, [(1, 5), (2, 5)]);
        assert_eq!(wheel.poll_batch(100, &mut out), 1);
        assert_eq!(out[0], (3, 5));
        assert_eq!(wheel.poll_batch(100, &mut out), 1);
        assert_eq!(out[0], (4, 6));
        assert_eq!(wheel.poll_batch(100, &mut out), 1);
        assert_eq!(out[0], (5, 70));
        assert_eq!(wheel.poll_batch(100, &mut out), 0);
        assert_eq!(wheel.now(), 100);
    }

    #[test]
    fn past_ticks_fire_now() {
        let mut wheel = Wheel::new(4, 50);
        wheel.insert(9, 3).unwrap();
        assert_eq!(drain(&mut wheel, 50), vec![(9, 50)]);
    }

    #[test]
    fn randomized_against_sorted_list() {
        use rand_xoshiro::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256StarStar::seed_from_u64(0x1234_5678_9abc_def0);
        let mut rand = move || rng.next_u64();
        let mut wheel = Wheel::new(64, 7);
        let mut model: Vec<(u64, Tick, TimerId)> = Vec::new();
        let mut next_key = 0u64;
        for _ in 0..200_000 {
            let now = wheel.now();
            match rand() % 4 {
                0 | 1 => {
                    let span = [3u64, 70, 5000, 65_600, 300_000, 1 << 29][(rand() % 6) as usize];
                    let at = now + rand() % span;
                    match wheel.insert(next_key, at) {
                        Ok(id) => model.push((next_key, at, id)),
                        Err(WheelFull) => assert_eq!(model.len(), 64),
                    }
                    next_key += 1;
                }
                2 if !model.is_empty() => {
                    let i = (rand() % model.len() as u64) as usize;
                    let (key, _, id) = model[i];
                    let at = now + rand() % 10_000;
                    wheel.reschedule(id, at);
                    model[i] = (key, at, id);
                }
                _ => {
                    let target = now + [1u64, 64, 4000, 65_536, 1 << 20][(rand() % 5) as usize];
                    let fired = drain(&mut wheel, target);
                    let mut due: Vec<(u64, Tick)> = model
                        .iter()
                        .filter(|&&(_, at, _)| at <= target)
                        .map(|&(k, at, _)| (k, at.max(now)))
                        .collect();
                    model.retain(|&(_, at, _)| at > target);
                    if let Some(first) = model.iter().map(|&(_, at, _)| at).min() {
                        let next = wheel.next_due().expect("timers are scheduled");
                        assert!(next > target && next <= first, "{next} {first}");
                    } else {
                        assert_eq!(wheel.next_due(), None);
                    }
                    due.sort_by_key(|&(k, t)| (t, k));
                    let mut got = fired.clone();
                    assert!(fired.windows(2).all(|w| w[0].1 <= w[1].1));
                    got.sort_by_key(|&(k, t)| (t, k));
                    assert_eq!(got, due);
                    assert_eq!(wheel.now(), target);
                }
            }
            assert_eq!(wheel.len(), model.len());
        }
    }
}
