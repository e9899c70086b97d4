//! The per-user record stored in the presence table, and the overflow blocks for users with
//! two devices or more.
//!
//! A record is 28 bytes (36 with its key in the table: the table aligns a slot to 4). A user
//! with one device keeps it inline; a user with more moves all of them into one overflow block
//! of `max_devices_per_user` devices. Ticks are stored in fewer bits than a tick has and
//! widened against the current tick: a went-offline tick in 32 bits (within 2^30 ticks of now:
//! the config bounds retention), a near timer's due tick in 31, and the inline device's
//! deadline and activity-window end in 22 each (within 2^20 ticks of now: the config bounds
//! every timeout, back-off extension and idle window by [`crate::config::DEVICE_HORIZON_TICKS`],
//! and an activity window that has passed is flagged lapsed, its tick no longer read).

use crate::clock::Tick;
use crate::event::PublicState;
use crate::slab::OutOfMemory;
use bytemuck::Zeroable;

/// Marks "no timer" in a record (no wheel index reaches it: capacities are at most 2^30).
const NO_TIMER: u32 = (1 << 31) - 1;
/// The timer word's flag for a near timer (its low 31 bits are the due tick's).
const NEAR_FLAG: u32 = 1 << 31;
/// Largest wall-clock value a record stores: 2^44 − 1 ms, in the year 2527.
pub const MAX_WALL_MS: u64 = (1 << 44) - 1;

/// A user's aggregate state, including the one subscribers never see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// No live device.
    Offline = 0,
    /// Some live device is active.
    Online = 1,
    /// Every live device is idle.
    Idle = 2,
    /// Some live device is invisible: reads as offline.
    Invisible = 3,
}

impl Aggregate {
    /// What subscribers and queries see.
    pub fn public(self) -> PublicState {
        match self {
            Aggregate::Offline | Aggregate::Invisible => PublicState::Offline,
            Aggregate::Online => PublicState::Online,
            Aggregate::Idle => PublicState::Idle,
        }
    }

    fn from_bits(bits: u64) -> Aggregate {
        match bits & 3 {
            0 => Aggregate::Offline,
            1 => Aggregate::Online,
            2 => Aggregate::Idle,
            _ => Aggregate::Invisible,
        }
    }
}

/// A device's reported state (whether its activity window has lapsed is `Device::lapsed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceState {
    /// Reported online.
    Online = 0,
    /// Reported idle.
    Idle = 1,
    /// Reported invisible.
    Invisible = 2,
}

/// One live device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    /// Gateway-chosen device id.
    pub id: u32,
    /// Tick at which the device times out (low 32 bits).
    pub deadline_tick: u32,
    /// First tick at which the device is no longer active (low 32 bits).
    pub active_until_tick: u32,
    /// Reported state.
    pub state: DeviceState,
    /// `active_until_tick` has passed: the device is idle until its next activity.
    pub lapsed: bool,
    /// The device stands in, after a restart, for the devices that made the user's last
    /// logged state (their ids were not saved): the user's next heartbeat from a device not
    /// listed takes it over instead of adding a device.
    pub restored: bool,
}

impl Device {
    const EMPTY: Device = Device {
        id: 0,
        deadline_tick: 0,
        active_until_tick: 0,
        state: DeviceState::Online,
        lapsed: false,
        restored: false,
    };

    /// Whether the device counts as active at tick `at` (`at` also widens the stored tick).
    pub fn active_at(&self, at: Tick) -> bool {
        self.state == DeviceState::Online && !self.lapsed && widen(self.active_until_tick, at) > at
    }
}

/// Rebuilds a full tick from its low 32 bits, given a tick within 2^31 of it.
pub fn widen(stored: u32, near: Tick) -> Tick {
    widen_low(stored, 32, near)
}

/// Rebuilds a near timer's full due tick from the low 31 bits [`Timer::Near`] holds, given a
/// tick within 2^30 of it.
pub fn widen_near(stored: u32, near: Tick) -> Tick {
    widen_low(stored, 31, near)
}

/// Rebuilds a full tick from its low `bits` bits (1 to 32), given a tick within 2^(bits − 1)
/// of it.
fn widen_low(stored: u32, bits: u32, near: Tick) -> Tick {
    let shift = 64 - bits;
    let delta = ((u64::from(stored).wrapping_sub(near) << shift) as i64) >> shift;
    near.wrapping_add(delta as u64)
}

/// A field of [`Record::words`]: its first bit (of the words read as one little-endian
/// string) and its width; it lies within two adjacent words.
#[derive(Clone, Copy)]
struct Field {
    at: u32,
    bits: u32,
}

// Layout of `Record::words`: the version in words 0–1, then these.
const SEEN: Field = Field { at: 64, bits: 44 };
const AGG: Field = Field { at: 108, bits: 2 };
/// 0 or 1 devices; 2: two or more, their count in `DEADLINE` (unused then).
const COUNT: Field = Field { at: 110, bits: 2 };
const DEV_STATE: Field = Field { at: 112, bits: 2 };
const DEV_LAPSED: Field = Field { at: 114, bits: 1 };
const DEV_RESTORED: Field = Field { at: 115, bits: 1 };
/// The inline device's deadline, low 22 bits; with two devices or more, their count.
const DEADLINE: Field = Field { at: 116, bits: 22 };
/// The inline device's `active_until_tick`, low 22 bits.
const ACTIVE_UNTIL: Field = Field { at: 138, bits: 22 };
/// Bits of the inline device's ticks.
const DEVICE_TICK_BITS: u32 = 22;
// The inline device's fields, side by side up to the end of word 4 (`Record::inline`).
const _: () = assert!(
    DEV_STATE.at == 112
        && DEV_LAPSED.at == DEV_STATE.at + DEV_STATE.bits
        && DEV_RESTORED.at == DEV_LAPSED.at + 1
        && DEADLINE.at == DEV_RESTORED.at + 1
        && ACTIVE_UNTIL.at == DEADLINE.at + DEADLINE.bits
        && ACTIVE_UNTIL.at + ACTIVE_UNTIL.bits == 32 * 5
);
const _: () = assert!(DEADLINE.bits == DEVICE_TICK_BITS && ACTIVE_UNTIL.bits == DEVICE_TICK_BITS);
const _: () = assert!(1 << (DEVICE_TICK_BITS - 2) == crate::config::DEVICE_HORIZON_TICKS);

/// Where a user's one timer is (`crate::timers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// None set.
    None,
    /// A near timer due at the tick with these low 31 bits ([`widen_near`]).
    Near(u32),
    /// A wheel timer, by its index ([`crate::wheel::TimerId::index`]).
    Far(u32),
}

/// A user's record: 28 bytes, aligned to 4, so that its table slot is 36.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    /// The version of the latest transition (0: none yet) in words 0–1; last seen (44 bits,
    /// 0 = unknown), the aggregate, the device count and the inline device's state, flags and
    /// ticks in words 2–4 (the `Field` constants).
    words: [u32; 5],
    /// The user's one timer: with `NEAR_FLAG`, a near timer's due tick (low 31 bits); else a
    /// wheel timer's index or `NO_TIMER`.
    timer: u32,
    /// One device: its id; two or more: their overflow block's index; none: the tick the user
    /// went deviceless (low 32 bits).
    dev: u32,
}

const _: () = assert!(std::mem::size_of::<Record>() == 28);
const _: () = assert!(std::mem::align_of::<Record>() == 4);
const _: () = assert!(std::mem::size_of::<Device>() == 16);

// SAFETY: integers only; all-zero bytes are `Record::default()`.
unsafe impl Zeroable for Record {}
// SAFETY: integers, a bool and a `repr(u8)` enum whose 0 is `Online`: all-zero bytes are
// `Device::EMPTY`.
unsafe impl Zeroable for Device {}

impl Record {
    /// A fresh record: offline, no devices, never seen, no timer.
    pub fn new() -> Record {
        Record {
            timer: NO_TIMER,
            ..Record::default()
        }
    }

    /// The words a field lies in, read as one: its first word and the next, or the first alone
    /// when the field ends in it (constant per field once inlined).
    #[inline(always)]
    fn span(&self, f: Field) -> u64 {
        let w = (f.at / 32) as usize;
        let next = if f.at % 32 + f.bits > 32 {
            u64::from(self.words[w + 1]) << 32
        } else {
            0
        };
        u64::from(self.words[w]) | next
    }

    /// A field's value.
    #[inline(always)]
    fn field(&self, f: Field) -> u64 {
        (self.span(f) >> (f.at % 32)) & ((1 << f.bits) - 1)
    }

    /// Stores a field's value (the caller keeps it within the field's width).
    #[inline(always)]
    fn set_field(&mut self, f: Field, value: u64) {
        debug_assert!(value < 1 << f.bits);
        let w = (f.at / 32) as usize;
        let mask = ((1u64 << f.bits) - 1) << (f.at % 32);
        let span = (self.span(f) & !mask) | (value << (f.at % 32));
        self.words[w] = span as u32;
        if f.at % 32 + f.bits > 32 {
            self.words[w + 1] = (span >> 32) as u32;
        }
    }

    /// The version of the user's latest transition (0: none yet).
    #[inline]
    pub fn version(&self) -> u64 {
        u64::from(self.words[0]) | (u64::from(self.words[1]) << 32)
    }

    /// Stores the version.
    #[inline]
    pub fn set_version(&mut self, version: u64) {
        self.words[0] = version as u32;
        self.words[1] = (version >> 32) as u32;
    }

    /// The user's one timer.
    #[inline]
    pub fn timer(&self) -> Timer {
        if self.timer & NEAR_FLAG != 0 {
            Timer::Near(self.timer & !NEAR_FLAG)
        } else if self.timer == NO_TIMER {
            Timer::None
        } else {
            Timer::Far(self.timer)
        }
    }

    /// Sets the user's one timer (a near one's due tick is kept to its low 31 bits).
    pub fn set_timer(&mut self, timer: Timer) {
        self.timer = match timer {
            Timer::None => NO_TIMER,
            Timer::Near(due) => due | NEAR_FLAG,
            Timer::Far(index) => {
                debug_assert!(index < NO_TIMER);
                index
            }
        };
    }

    /// Whether the user's timer is a near one due at tick `t` (its entries at other ticks are
    /// stale: `crate::near`).
    #[inline]
    pub fn near_due_at(&self, t: Tick) -> bool {
        self.timer == (t as u32) | NEAR_FLAG
    }

    /// Last seen in Unix ms, if known.
    pub fn last_seen(&self) -> Option<u64> {
        match self.field(SEEN) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Sets last seen (clamped to `1..=MAX_WALL_MS`; 0 would read as unknown).
    #[inline]
    pub fn set_last_seen(&mut self, wall_ms: u64) {
        self.set_field(SEEN, wall_ms.clamp(1, MAX_WALL_MS));
    }

    /// The aggregate state as last evaluated.
    #[inline]
    pub fn aggregate(&self) -> Aggregate {
        Aggregate::from_bits(self.field(AGG))
    }

    /// Stores the aggregate state.
    #[inline]
    pub fn set_aggregate(&mut self, agg: Aggregate) {
        self.set_field(AGG, agg as u64);
    }

    /// Live devices.
    #[inline]
    pub fn device_count(&self) -> usize {
        match self.field(COUNT) {
            2 => self.field(DEADLINE) as usize,
            n => n as usize,
        }
    }

    fn set_device_count(&mut self, n: usize) {
        debug_assert!(n <= 31);
        self.set_field(COUNT, n.min(2) as u64);
        if n >= 2 {
            self.set_field(DEADLINE, n as u64);
        }
    }

    /// The tick the user went deviceless (meaningful only with no device).
    pub fn offline_since(&self, near: Tick) -> Tick {
        widen(self.dev, near)
    }

    /// Records the tick the user went deviceless.
    pub fn set_offline_since(&mut self, tick: Tick) {
        debug_assert_eq!(self.device_count(), 0);
        self.dev = tick as u32;
    }

    /// The inline device, its ticks widened against tick `now`. Its state, flags and ticks
    /// lie side by side (`DEV_STATE` to `ACTIVE_UNTIL`, 48 bits in words 3–4), read at once.
    #[inline]
    fn inline(&self, now: Tick) -> Device {
        let group = self.device_group();
        let bits = |f: Field| (group >> (f.at - DEV_STATE.at)) & ((1 << f.bits) - 1);
        let state = match bits(DEV_STATE) {
            0 => DeviceState::Online,
            1 => DeviceState::Idle,
            _ => DeviceState::Invisible,
        };
        let tick = |f| widen_low(bits(f) as u32, DEVICE_TICK_BITS, now) as u32;
        Device {
            id: self.dev,
            deadline_tick: tick(DEADLINE),
            active_until_tick: tick(ACTIVE_UNTIL),
            state,
            lapsed: bits(DEV_LAPSED) == 1,
            restored: bits(DEV_RESTORED) == 1,
        }
    }

    /// Stores the inline device, its state, flags and ticks written at once.
    #[inline]
    fn set_inline(&mut self, d: Device) {
        let tick = |tick: u32| u64::from(tick) & ((1 << DEVICE_TICK_BITS) - 1);
        let at = |f: Field| f.at - DEV_STATE.at;
        self.dev = d.id;
        self.set_device_group(
            (d.state as u64)
                | (u64::from(d.lapsed) << at(DEV_LAPSED))
                | (u64::from(d.restored) << at(DEV_RESTORED))
                | (tick(d.deadline_tick) << at(DEADLINE))
                | (tick(d.active_until_tick) << at(ACTIVE_UNTIL)),
        );
    }

    /// Words 3–4 from `DEV_STATE` on: the inline device's 48 bits.
    #[inline(always)]
    fn device_group(&self) -> u64 {
        (u64::from(self.words[3]) | (u64::from(self.words[4]) << 32)) >> (DEV_STATE.at - 96)
    }

    #[inline(always)]
    fn set_device_group(&mut self, group: u64) {
        let low = u64::from(self.words[3]) & ((1 << (DEV_STATE.at - 96)) - 1);
        let pair = low | (group << (DEV_STATE.at - 96));
        self.words[3] = pair as u32;
        self.words[4] = (pair >> 32) as u32;
    }
}

/// Device `i` of a record, read without changing anything (`i < rec.device_count()`), its
/// ticks widened against tick `now`.
pub fn device_of(rec: &Record, blocks: &Blocks, i: usize, now: Tick) -> Device {
    assert!(i < rec.device_count());
    if rec.device_count() == 1 {
        rec.inline(now)
    } else {
        blocks.devices[rec.dev as usize * blocks.per_block + i]
    }
}

/// Overflow blocks: one per user with two devices or more, each `per_block` devices wide.
///
/// All blocks are reserved at construction, zeroed by the allocator; blocks are handed out
/// from the lowest never-used index (or the most recently freed one first), so the memory in
/// use follows the multi-device users present, not the reserve.
pub struct Blocks {
    devices: Box<[Device]>,
    /// Freed blocks, reused before fresh ones (capacity `count`: pushing never reallocates).
    free: Vec<u32>,
    /// Blocks below this index have been handed out at least once.
    fresh: u32,
    count: u32,
    per_block: usize,
}

impl Blocks {
    /// `count` blocks of `per_block` devices, all reserved now; `Err` when the machine
    /// refuses the address space.
    pub fn new(count: u32, per_block: u8) -> Result<Blocks, OutOfMemory> {
        let per_block = per_block as usize;
        let mut free = Vec::new();
        free.try_reserve_exact(count as usize)
            .map_err(|_| OutOfMemory {
                bytes: count as usize * std::mem::size_of::<u32>(),
            })?;
        Ok(Blocks {
            devices: crate::slab::zeroed(count as usize * per_block)?,
            free,
            fresh: 0,
            count,
            per_block,
        })
    }

    /// Blocks not in use.
    pub fn available(&self) -> usize {
        self.free.len() + (self.count - self.fresh) as usize
    }

    /// Where the block storage lies (for the daemon's page policy).
    pub fn region(&self) -> crate::slab::Region {
        crate::slab::Region::of(&self.devices)
    }

    /// Bytes reserved for the block storage.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.devices) + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Takes a block: a freed one if any, else the next fresh one. Panics if none is left.
    fn take(&mut self) -> u32 {
        if let Some(block) = self.free.pop() {
            return block;
        }
        assert!(self.fresh < self.count, "caller checked a block is free");
        self.fresh += 1;
        self.fresh - 1
    }

    /// Returns a block taken with [`Blocks::take`].
    fn give_back(&mut self, block: u32) {
        debug_assert!(block < self.fresh && self.free.len() < self.count as usize);
        self.free.push(block);
    }
}

/// A user's devices: the record plus the block storage, seen as one list.
pub struct Devices<'a> {
    /// The user's record.
    pub rec: &'a mut Record,
    blocks: &'a mut Blocks,
    /// The tick the inline device's ticks are widened against.
    now: Tick,
}

impl<'a> Devices<'a> {
    /// Views the devices of `rec` at tick `now`, the shard's: every device tick read lies
    /// within [`crate::config::DEVICE_HORIZON_TICKS`] of it (an activity window's end is read
    /// only while its device reports online and has not lapsed).
    pub fn new(rec: &'a mut Record, blocks: &'a mut Blocks, now: Tick) -> Devices<'a> {
        Devices { rec, blocks, now }
    }

    /// How many live devices.
    #[inline]
    pub fn len(&self) -> usize {
        self.rec.device_count()
    }

    /// Whether the user has no live device.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn block_base(&self) -> usize {
        self.rec.dev as usize * self.blocks.per_block
    }

    /// Device `i` (`i < len`).
    #[inline]
    pub fn get(&self, i: usize) -> Device {
        assert!(i < self.len());
        if self.len() == 1 {
            self.rec.inline(self.now)
        } else {
            self.blocks.devices[self.block_base() + i]
        }
    }

    /// Replaces device `i` (`i < len`).
    #[inline]
    pub fn set(&mut self, i: usize, d: Device) {
        assert!(i < self.len());
        if self.len() == 1 {
            self.rec.set_inline(d);
        } else {
            let base = self.block_base();
            self.blocks.devices[base + i] = d;
        }
    }

    /// The index of the device with this id.
    #[inline]
    pub fn find(&self, id: u32) -> Option<usize> {
        match self.len() {
            1 => (self.rec.dev == id).then_some(0),
            n => (0..n).find(|&i| self.blocks.devices[self.block_base() + i].id == id),
        }
    }

    /// Overflow blocks not in use (a second device needs one).
    pub fn blocks_available(&self) -> usize {
        self.blocks.available()
    }

    /// The index of a device restored after a restart, if any.
    pub fn find_restored(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i).restored)
    }

    /// Removes every device.
    pub fn clear(&mut self) {
        while !self.is_empty() {
            self.swap_remove(self.len() - 1);
        }
    }

    /// Adds a device; the caller has checked the per-user limit and, for a second device, that
    /// a block is available (`Blocks::available`).
    pub fn push(&mut self, d: Device) {
        let n = self.len();
        assert!(n < self.blocks.per_block || n == 0);
        match n {
            0 => {
                self.rec.set_device_count(1);
                self.rec.set_inline(d);
            }
            1 => {
                let first = self.rec.inline(self.now);
                let block = self.blocks.take();
                self.rec.dev = block;
                self.rec.set_device_count(2);
                let base = self.block_base();
                self.blocks.devices[base] = first;
                self.blocks.devices[base + 1] = d;
            }
            _ => {
                let base = self.block_base();
                self.blocks.devices[base + n] = d;
                self.rec.set_device_count(n + 1);
            }
        }
    }

    /// Removes device `i` (the last one takes its place).
    pub fn swap_remove(&mut self, i: usize) {
        let n = self.len();
        assert!(i < n);
        match n {
            1 => {
                self.rec.set_inline(Device::EMPTY);
                self.rec.set_device_count(0);
            }
            2 => {
                let block = self.rec.dev;
                let keep = self.blocks.devices[self.block_base() + (1 - i)];
                self.blocks.give_back(block);
                self.rec.set_device_count(1);
                self.rec.set_inline(keep);
            }
            _ => {
                let base = self.block_base();
                self.blocks.devices[base + i] = self.blocks.devices[base + n - 1];
                self.rec.set_device_count(n - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: u32) -> Device {
        Device {
            id,
            deadline_tick: id * 10,
            active_until_tick: id * 100,
            state: DeviceState::Idle,
            lapsed: id % 2 == 0,
            restored: id % 3 == 0,
        }
    }

    #[test]
    fn bits_do_not_interfere() {
        let mut r = Record::new();
        r.set_last_seen(MAX_WALL_MS + 5);
        r.set_aggregate(Aggregate::Invisible);
        let mut blocks = Blocks::new(1, 4).unwrap();
        Devices::new(&mut r, &mut blocks, 0).push(dev(3));
        assert!(Devices::new(&mut r, &mut blocks, 0).get(0).restored);
        assert_eq!(r.last_seen(), Some(MAX_WALL_MS));
        assert_eq!(r.aggregate(), Aggregate::Invisible);
        assert_eq!(r.device_count(), 1);
        assert_eq!(Devices::new(&mut r, &mut blocks, 0).get(0), dev(3));
        r.set_last_seen(0);
        assert_eq!(r.last_seen(), Some(1));
    }

    #[test]
    fn inline_to_block_and_back() {
        let mut r = Record::new();
        let mut blocks = Blocks::new(2, 3).unwrap();
        let mut d = Devices::new(&mut r, &mut blocks, 0);
        for id in 1..=3 {
            d.push(dev(id));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.find(2), Some(1));
        d.swap_remove(0);
        assert_eq!((d.get(0).id, d.get(1).id), (3, 2));
        d.swap_remove(0);
        assert_eq!(d.get(0), dev(2));
        assert_eq!(blocks.available(), 2);
        assert_eq!(r.device_count(), 1);
    }

    #[test]
    fn blocks_reuse_freed_before_fresh_and_run_out() {
        let mut blocks = Blocks::new(3, 2).unwrap();
        let taken: Vec<u32> = (0..3).map(|_| blocks.take()).collect();
        assert_eq!(taken, [0, 1, 2]);
        assert_eq!(blocks.available(), 0);
        blocks.give_back(1);
        assert_eq!(blocks.available(), 1);
        assert_eq!(blocks.take(), 1);
        assert_eq!(blocks.available(), 0);
        // Fresh blocks read as empty devices.
        assert!(blocks.devices.iter().all(|d| *d == Device::EMPTY));
    }

    /// The inline device's 22-bit ticks come back whole on either side of their wrap, within
    /// the device horizon of the tick they are read at, ahead and behind.
    #[test]
    fn inline_ticks_widen_across_their_wrap() {
        let h = crate::config::DEVICE_HORIZON_TICKS;
        let wrap = 1u64 << DEVICE_TICK_BITS;
        for now in [h, wrap - 3, wrap, wrap + 3, 5 * wrap - 1, (1 << 32) + 7] {
            for (deadline, active_until) in [(now + h, now - h), (now - h, now + h), (now, now + 1)]
            {
                let mut r = Record::new();
                let mut blocks = Blocks::new(1, 2).unwrap();
                let device = Device {
                    deadline_tick: deadline as u32,
                    active_until_tick: active_until as u32,
                    ..dev(9)
                };
                Devices::new(&mut r, &mut blocks, 0).push(device);
                assert_eq!(
                    Devices::new(&mut r, &mut blocks, now).get(0),
                    device,
                    "at {now}"
                );
                assert_eq!(device_of(&r, &blocks, 0, now), device);
            }
        }
    }

    /// The count of two devices or more, kept in the inline ticks' bits, and a deviceless
    /// user's went-offline tick, kept in the device word, leave every other field alone.
    #[test]
    fn counts_and_offline_ticks_share_the_inline_device_s_bits() {
        let mut r = Record::new();
        r.set_version(u64::MAX - 1);
        r.set_last_seen(MAX_WALL_MS);
        r.set_aggregate(Aggregate::Idle);
        r.set_timer(Timer::Near(u32::MAX));
        let mut blocks = Blocks::new(1, 31).unwrap();
        let mut d = Devices::new(&mut r, &mut blocks, 0);
        for id in 1..=31 {
            d.push(dev(id));
            assert_eq!(d.len(), id as usize);
        }
        for id in (1..=31).rev() {
            assert_eq!(d.get(id as usize - 1), dev(id));
            d.swap_remove(id as usize - 1);
        }
        assert!(d.is_empty());
        r.set_offline_since(u64::from(u32::MAX) + 5);
        assert_eq!(r.offline_since(1 << 32), u64::from(u32::MAX) + 5);
        assert_eq!(r.version(), u64::MAX - 1);
        assert_eq!(r.last_seen(), Some(MAX_WALL_MS));
        assert_eq!(r.aggregate(), Aggregate::Idle);
        assert_eq!(r.timer(), Timer::Near(u32::MAX >> 1));
        assert!(r.near_due_at(u64::from(u32::MAX)) && !r.near_due_at(u64::from(u32::MAX >> 1) - 1));
        r.set_timer(Timer::Far(NO_TIMER - 1));
        assert_eq!(r.timer(), Timer::Far(NO_TIMER - 1));
        r.set_timer(Timer::None);
        assert_eq!(r.timer(), Timer::None);
    }

    #[test]
    fn widen_handles_wrap() {
        assert_eq!(widen(5, (1u64 << 32) + 3), (1u64 << 32) + 5);
        assert_eq!(widen(u32::MAX, 1u64 << 32), (1u64 << 32) - 1);
        assert_eq!(widen(10, 20), 10);
    }
}
