//! Saving a shard and restoring it after a restart (ARCHITECTURE.md, rule 8).
//!
//! **Snapshot.** [`Shard::snapshot_begin`] starts a pass over the table that heartbeats and
//! timers may interleave with; [`Shard::snapshot_step`] encodes a bounded number of slots'
//! records ([`crate::saved`]) per call, so a shard of ten million users is saved a slice per
//! round without stalling its ingest. The snapshot is fuzzy: a record is saved as it was when
//! its slot was visited. The transition log, kept from the pass's start, brings every user's
//! public state, version and last seen up to date over it.
//!
//! **Restore.** [`Shard::import`] puts a saved record back, [`Shard::replay`] applies a logged
//! transition newer than what the record holds. Neither emits a transition: a restart changes
//! no one's presence. The downtime was not the devices' silence: every restored device's
//! deadline is `start + timeout` (heartbeats sent while the daemon was down were lost), and an
//! activity window that was open runs on for `min(timeout, idle_after)` at least and never
//! past a fresh window's end (`start + idle_after`), so later activity only moves it later. Where the log says a user's public state
//! differs from what its saved devices give (the devices changed after the snapshot), the
//! devices are replaced by one *restored* device in that state; the user's next heartbeat from a
//! device not listed takes it over, so a gateway that kept heartbeating causes no transition.

use crate::clock::{Now, Tick};
use crate::event::{PublicState, Transition};
use crate::record::{device_of, Device, DeviceState, Devices, Record, MAX_WALL_MS};
use crate::saved::{SavedDevice, SavedUser};
use crate::shard::{evaluate, next_wake, NowTicks, Shard};
use crate::table::Full;

impl Shard {
    /// Starts a snapshot pass (restarting one already going on).
    pub fn snapshot_begin(&mut self) {
        self.table.sweep_begin();
    }

    /// Whether a snapshot pass is going on.
    pub fn snapshotting(&self) -> bool {
        self.table.sweeping()
    }

    /// Encodes the records of up to `max_slots` more slots of the pass onto `out`, as of `now`
    /// (wall times are derived from it); returns how many records it wrote and whether the
    /// pass is over. Every record present from `snapshot_begin` to the pass's end is written at
    /// least once; a later copy of a user is newer than an earlier one.
    pub fn snapshot_step(
        &mut self,
        now: Now,
        max_slots: usize,
        out: &mut Vec<u8>,
    ) -> (usize, bool) {
        let clock = WallClock::new(self, now);
        let n = self.tick();
        let Shard { table, blocks, .. } = self;
        let mut written = 0;
        let done = table.sweep_step(max_slots, |user, rec| {
            save(user, rec, blocks, n, &clock).encode(out);
            written += 1;
        });
        (written, done)
    }

    /// Puts a saved record back as of `now` (a copy replaces an earlier one of the same user).
    /// Devices beyond `max_devices_per_user`, or beyond the first when no overflow block is
    /// free, are left out and counted in the result. `Err(Full)` when the table is full.
    pub fn import(&mut self, now: Now, saved: &SavedUser) -> Result<Imported, Full> {
        self.set_now(self.now_us.max(now.mono_us));
        let clock = WallClock::new(self, now);
        let NowTicks {
            now: n,
            timeout: deadline,
            idle: active_cap,
        } = self.ticks;
        // An open activity window runs on after the restart (the downtime was not inactivity)
        // but never past a fresh window's end, so activity only ever moves it later. (`due`
        // grows with its span, so the due tick of the shorter span is the earlier one.)
        let active_floor = deadline.min(active_cap);
        let max_devices = self.max_devices;
        let Shard {
            table,
            blocks,
            timers,
            stats,
            retention_ticks,
            extension_ticks,
            ..
        } = self;
        let (rec, created) = table.get_or_insert_with(saved.user, Record::new)?;
        let mut devices = Devices::new(rec, blocks, n);
        stats.devices -= devices.len() as u64;
        devices.clear();
        devices.rec.set_version(saved.version);
        if let Some(ms) = saved.last_seen_ms {
            devices.rec.set_last_seen(ms);
        }
        let mut left_out = 0;
        for d in saved.devices() {
            let room = devices.len() < max_devices
                && (devices.len() != 1 || devices.blocks_available() > 0);
            if !room {
                left_out += 1;
                continue;
            }
            let active_until = clock
                .tick_of(d.active_until_ms)
                .clamp(active_floor, active_cap);
            devices.push(Device {
                id: d.id,
                deadline_tick: deadline as u32,
                active_until_tick: if d.lapsed {
                    n as u32
                } else {
                    active_until as u32
                },
                state: d.state,
                lapsed: d.lapsed,
                restored: d.restored,
            });
        }
        stats.devices += devices.len() as u64;
        if devices.is_empty() {
            let floor = n.saturating_sub(*retention_ticks);
            devices
                .rec
                .set_offline_since(clock.tick_of(saved.offline_since_ms).clamp(floor, n));
        }
        let agg = evaluate(&mut devices, n);
        devices.rec.set_aggregate(agg);
        if created {
            stats.users += 1;
        }
        let at = next_wake(&devices, n, *retention_ticks, *extension_ticks);
        timers.schedule(devices.rec, saved.user, at);
        Ok(Imported {
            created,
            devices_left_out: left_out,
        })
    }

    /// Applies a logged transition newer than the user's record as of `now` (an older or equal
    /// version is already reflected and changes nothing; returns whether it applied). The
    /// record takes the transition's version, its last seen (rule 4), and its public state: no
    /// device for offline; for online or idle the saved devices if they give that state, else
    /// one restored device that does. `Err(Full)` when the user is new and the table is full.
    pub fn replay(&mut self, now: Now, t: &Transition) -> Result<bool, Full> {
        self.set_now(self.now_us.max(now.mono_us));
        let clock = WallClock::new(self, now);
        let NowTicks {
            now: n,
            timeout: deadline,
            idle: active_until,
        } = self.ticks;
        let Shard {
            table,
            blocks,
            timers,
            stats,
            retention_ticks,
            extension_ticks,
            ..
        } = self;
        let (rec, created) = table.get_or_insert_with(t.user, Record::new)?;
        if !created && t.version <= rec.version() {
            return Ok(false);
        }
        if created {
            stats.users += 1;
        }
        rec.set_version(t.version);
        if t.seen {
            rec.set_last_seen(t.at_ms);
        }
        let mut devices = Devices::new(rec, blocks, n);
        let keeps = !devices.is_empty() && devices.rec.aggregate().public() == t.state;
        if !keeps {
            stats.devices -= devices.len() as u64;
            devices.clear();
            match t.state {
                PublicState::Offline => {
                    let floor = n.saturating_sub(*retention_ticks);
                    devices
                        .rec
                        .set_offline_since(clock.tick_of(t.at_ms).clamp(floor, n));
                }
                PublicState::Online | PublicState::Idle => {
                    let idle = t.state == PublicState::Idle;
                    devices.push(Device {
                        id: 0,
                        deadline_tick: deadline as u32,
                        active_until_tick: if idle { n as u32 } else { active_until as u32 },
                        state: DeviceState::Online,
                        lapsed: idle,
                        restored: true,
                    });
                    stats.devices += 1;
                }
            }
        }
        let agg = evaluate(&mut devices, n);
        debug_assert_eq!(agg.public(), t.state, "a replayed record reads as logged");
        devices.rec.set_aggregate(agg);
        let at = next_wake(&devices, n, *retention_ticks, *extension_ticks);
        timers.schedule(devices.rec, t.user, at);
        Ok(true)
    }
}

/// What [`Shard::import`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The user was not in the table before.
    pub created: bool,
    /// Devices left out for want of room.
    pub devices_left_out: u32,
}

/// Converts between the shard's ticks and the wall clock at one instant.
struct WallClock {
    tick_us: i128,
    mono_us: i128,
    wall_ms: i128,
}

impl WallClock {
    fn new(shard: &Shard, now: Now) -> WallClock {
        WallClock {
            tick_us: i128::from(shard.tick_us),
            mono_us: i128::from(shard.now_us),
            wall_ms: i128::from(now.wall_ms),
        }
    }

    /// Wall ms of the start of tick `t` (clamped to what a record stores).
    fn wall_of(&self, t: Tick) -> u64 {
        let ms = self.wall_ms + (i128::from(t) * self.tick_us - self.mono_us) / 1000;
        ms.clamp(0, i128::from(MAX_WALL_MS)) as u64
    }

    /// The tick in which wall ms `ms` falls (0 for a time before the shard's clock began).
    fn tick_of(&self, ms: u64) -> Tick {
        let mono = self.mono_us + (i128::from(ms) - self.wall_ms) * 1000;
        (mono.max(0) / self.tick_us).min(i128::from(u64::MAX)) as Tick
    }
}

/// A record as saved at tick `n`.
fn save(
    user: u64,
    rec: &Record,
    blocks: &crate::record::Blocks,
    n: Tick,
    clock: &WallClock,
) -> SavedUser {
    let count = rec.device_count();
    let offline_since_ms = if count == 0 {
        clock.wall_of(rec.offline_since(n))
    } else {
        0
    };
    let mut saved = SavedUser::new(user, rec.version(), rec.last_seen(), offline_since_ms);
    for i in 0..count {
        let d = device_of(rec, blocks, i, n);
        saved.push(SavedDevice {
            id: d.id,
            state: d.state,
            lapsed: d.lapsed,
            restored: d.restored,
            deadline_ms: clock.wall_of(crate::record::widen(d.deadline_tick, n)),
            active_until_ms: clock.wall_of(crate::record::widen(d.active_until_tick, n)),
        });
    }
    saved
}

#[cfg(test)]
mod tests;
