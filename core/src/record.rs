//! The per-user record stored in the presence table, and the overflow blocks for users with
//! two devices or more.
//!
//! A record is 32 bytes (40 with its key in the table). A user with one device keeps it inline;
//! a user with more moves all of them into one overflow block of `max_devices_per_user` devices.
//! Ticks are stored in 32 bits and widened against the current tick: every stored tick lies
//! within 2^30 ticks of now (the config enforces it, and stale activity ticks are flagged).

use crate::clock::Tick;
use crate::event::PublicState;
use crate::slab::OutOfMemory;
use bytemuck::Zeroable;

/// Marks "no timer" in a record.
const NO_TIMER: u32 = u32::MAX;
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
    let delta = stored.wrapping_sub(near as u32) as i32 as i64;
    (near as i64 + delta) as Tick
}

// Layout of `Record::bits`.
const SEEN_BITS: u32 = 44;
const SEEN_MASK: u64 = (1 << SEEN_BITS) - 1;
const AGG_SHIFT: u32 = 44; // 2 bits
const NDEV_SHIFT: u32 = 46; // 5 bits
const DEV_STATE_SHIFT: u32 = 51; // 2 bits: inline device state
const DEV_LAPSED_SHIFT: u32 = 53; // 1 bit: inline device lapsed
const DEV_RESTORED_SHIFT: u32 = 54; // 1 bit: inline device restored
const NEAR_SHIFT: u32 = 55; // 1 bit: `timer` is a near timer's due tick

/// Where a user's one timer is (`crate::timers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// None set.
    None,
    /// A near timer due at the tick with these low 32 bits.
    Near(u32),
    /// A wheel timer, by its index ([`crate::wheel::TimerId::index`]).
    Far(u32),
}

/// A user's record: 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    /// Version of the latest transition (0: none yet).
    pub version: u64,
    /// Last seen (44 bits, 0 = unknown), aggregate, device count, the inline device's state,
    /// lapsed and restored flags, and whether `timer` is a near timer's due tick.
    bits: u64,
    /// The user's one timer: a near timer's due tick when the `NEAR` bit is set, else a wheel
    /// timer's index or `NO_TIMER`.
    timer: u32,
    /// One device: inline device id; with ≥ 2 devices, the overflow block index.
    dev_id: u32,
    /// Inline device deadline; with no device, the tick the user went deviceless.
    dev_deadline_tick: u32,
    /// Inline device `active_until_tick`.
    dev_active_until_tick: u32,
}

const _: () = assert!(std::mem::size_of::<Record>() == 32);
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

    /// The user's one timer.
    pub fn timer(&self) -> Timer {
        if (self.bits >> NEAR_SHIFT) & 1 == 1 {
            Timer::Near(self.timer)
        } else if self.timer == NO_TIMER {
            Timer::None
        } else {
            Timer::Far(self.timer)
        }
    }

    /// Sets the user's one timer.
    pub fn set_timer(&mut self, timer: Timer) {
        let (near, value) = match timer {
            Timer::None => (false, NO_TIMER),
            Timer::Near(due) => (true, due),
            Timer::Far(index) => (false, index),
        };
        self.timer = value;
        self.bits = (self.bits & !(1 << NEAR_SHIFT)) | (u64::from(near) << NEAR_SHIFT);
    }

    /// Whether the user's timer is a near one due at tick `t` (its entries at other ticks are
    /// stale: `crate::near`).
    #[inline]
    pub fn near_due_at(&self, t: Tick) -> bool {
        (self.bits >> NEAR_SHIFT) & 1 == 1 && widen(self.timer, t) == t
    }

    /// Last seen in Unix ms, if known.
    pub fn last_seen(&self) -> Option<u64> {
        match self.bits & SEEN_MASK {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Sets last seen (clamped to `1..=MAX_WALL_MS`; 0 would read as unknown).
    pub fn set_last_seen(&mut self, wall_ms: u64) {
        let ms = wall_ms.clamp(1, MAX_WALL_MS);
        self.bits = (self.bits & !SEEN_MASK) | ms;
    }

    /// The aggregate state as last evaluated.
    pub fn aggregate(&self) -> Aggregate {
        Aggregate::from_bits(self.bits >> AGG_SHIFT)
    }

    /// Stores the aggregate state.
    pub fn set_aggregate(&mut self, agg: Aggregate) {
        self.bits = (self.bits & !(3 << AGG_SHIFT)) | ((agg as u64) << AGG_SHIFT);
    }

    /// Live devices.
    pub fn device_count(&self) -> usize {
        ((self.bits >> NDEV_SHIFT) & 31) as usize
    }

    fn set_device_count(&mut self, n: usize) {
        debug_assert!(n <= 31);
        self.bits = (self.bits & !(31 << NDEV_SHIFT)) | ((n as u64) << NDEV_SHIFT);
    }

    /// The tick the user went deviceless (meaningful only with no device).
    pub fn offline_since(&self, near: Tick) -> Tick {
        widen(self.dev_deadline_tick, near)
    }

    /// Records the tick the user went deviceless.
    pub fn set_offline_since(&mut self, tick: Tick) {
        debug_assert_eq!(self.device_count(), 0);
        self.dev_deadline_tick = tick as u32;
    }

    fn inline(&self) -> Device {
        let state = match (self.bits >> DEV_STATE_SHIFT) & 3 {
            0 => DeviceState::Online,
            1 => DeviceState::Idle,
            _ => DeviceState::Invisible,
        };
        Device {
            id: self.dev_id,
            deadline_tick: self.dev_deadline_tick,
            active_until_tick: self.dev_active_until_tick,
            state,
            lapsed: (self.bits >> DEV_LAPSED_SHIFT) & 1 == 1,
            restored: (self.bits >> DEV_RESTORED_SHIFT) & 1 == 1,
        }
    }

    fn set_inline(&mut self, d: Device) {
        self.dev_id = d.id;
        self.dev_deadline_tick = d.deadline_tick;
        self.dev_active_until_tick = d.active_until_tick;
        self.bits = (self.bits & !(15 << DEV_STATE_SHIFT))
            | ((d.state as u64) << DEV_STATE_SHIFT)
            | ((d.lapsed as u64) << DEV_LAPSED_SHIFT)
            | ((d.restored as u64) << DEV_RESTORED_SHIFT);
    }
}

/// Device `i` of a record, read without changing anything (`i < rec.device_count()`).
pub fn device_of(rec: &Record, blocks: &Blocks, i: usize) -> Device {
    assert!(i < rec.device_count());
    if rec.device_count() == 1 {
        rec.inline()
    } else {
        blocks.devices[rec.dev_id as usize * blocks.per_block + i]
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
}

impl<'a> Devices<'a> {
    /// Views the devices of `rec`.
    pub fn new(rec: &'a mut Record, blocks: &'a mut Blocks) -> Devices<'a> {
        Devices { rec, blocks }
    }

    /// How many live devices.
    pub fn len(&self) -> usize {
        self.rec.device_count()
    }

    /// Whether the user has no live device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn block_base(&self) -> usize {
        self.rec.dev_id as usize * self.blocks.per_block
    }

    /// Device `i` (`i < len`).
    pub fn get(&self, i: usize) -> Device {
        assert!(i < self.len());
        if self.len() == 1 {
            self.rec.inline()
        } else {
            self.blocks.devices[self.block_base() + i]
        }
    }

    /// Replaces device `i` (`i < len`).
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
    pub fn find(&self, id: u32) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i).id == id)
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
                let first = self.rec.inline();
                let block = self.blocks.take();
                self.rec.dev_id = block;
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
                let block = self.rec.dev_id;
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
        Devices::new(&mut r, &mut blocks).push(dev(3));
        assert!(Devices::new(&mut r, &mut blocks).get(0).restored);
        assert_eq!(r.last_seen(), Some(MAX_WALL_MS));
        assert_eq!(r.aggregate(), Aggregate::Invisible);
        assert_eq!(r.device_count(), 1);
        assert_eq!(Devices::new(&mut r, &mut blocks).get(0), dev(3));
        r.set_last_seen(0);
        assert_eq!(r.last_seen(), Some(1));
    }

    #[test]
    fn inline_to_block_and_back() {
        let mut r = Record::new();
        let mut blocks = Blocks::new(2, 3).unwrap();
        let mut d = Devices::new(&mut r, &mut blocks);
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

    #[test]
    fn widen_handles_wrap() {
        assert_eq!(widen(5, (1u64 << 32) + 3), (1u64 << 32) + 5);
        assert_eq!(widen(u32::MAX, 1u64 << 32), (1u64 << 32) - 1);
        assert_eq!(widen(10, 20), 10);
    }
}
