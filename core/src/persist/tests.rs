//! Saving and restoring a shard: what a restart keeps, and that it changes no one's presence.

use super::*;
use crate::config::CoreConfig;
use crate::event::{Cause, Heartbeat, Presence, Report};
use crate::saved::SavedUser;

const SEC: u64 = 1_000_000;
const WALL0: u64 = 1_700_000_000_000;

fn config() -> CoreConfig {
    CoreConfig {
        user_capacity: 1000,
        multi_device_users: 100,
        ..CoreConfig::default()
    }
}

/// The daemon's clock: mono starts far from 0 so restored past times stay positive.
fn at(true_us: u64) -> Now {
    Now {
        mono_us: (1 << 45) + true_us,
        wall_ms: WALL0 + true_us / 1000,
    }
}

/// After a restart the monotonic clock starts again from the same far origin.
fn restarted_at(true_us: u64, start_us: u64) -> Now {
    Now {
        mono_us: (1 << 45) + true_us - start_us,
        wall_ms: WALL0 + true_us / 1000,
    }
}

fn hb(user: u64, device: u32, report: Report, active: bool) -> Heartbeat {
    Heartbeat {
        user,
        device,
        report,
        active,
    }
}

/// A shard with a bit of everything: online, idle (reported and inferred), invisible, a
/// multi-device user, a user who logged out (remembered offline).
fn populated(out: &mut Vec<Transition>) -> Shard {
    let mut s = Shard::new(config(), at(0)).unwrap();
    let t = at(SEC);
    s.heartbeat(t, &hb(1, 1, Report::Online, true), out);
    s.heartbeat(t, &hb(2, 1, Report::Idle, false), out);
    s.heartbeat(t, &hb(3, 1, Report::Invisible, true), out);
    s.heartbeat(t, &hb(4, 1, Report::Online, true), out);
    s.heartbeat(t, &hb(4, 2, Report::Idle, true), out);
    s.heartbeat(t, &hb(5, 1, Report::Online, true), out);
    s.heartbeat(at(2 * SEC), &hb(5, 1, Report::Offline, false), out);
    s
}

fn snapshot(s: &mut Shard, now: Now) -> Vec<u8> {
    let mut bytes = Vec::new();
    s.snapshot_begin();
    while !s.snapshot_step(now, 3, &mut bytes).1 {}
    bytes
}

fn restore(bytes: &[u8], now: Now) -> Shard {
    let mut s = Shard::new(config(), now).unwrap();
    let mut at = 0;
    while at < bytes.len() {
        let (user, used) = SavedUser::decode(&bytes[at..]).unwrap();
        s.import(now, &user).unwrap();
        at += used;
    }
    s
}

fn answers(s: &Shard) -> Vec<(u64, Presence, usize)> {
    (1..=9)
        .map(|u| (u, s.query(u), s.device_count(u)))
        .collect()
}

#[test]
fn a_restored_shard_answers_as_the_saved_one_and_emits_nothing() {
    let mut out = Vec::new();
    let mut s = populated(&mut out);
    let bytes = snapshot(&mut s, at(3 * SEC));
    // Down for a minute: longer than the timeout.
    let start = 63 * SEC;
    let now = restarted_at(start, start);
    let mut r = restore(&bytes, now);
    assert_eq!(answers(&r), answers(&s));
    assert_eq!(r.stats().users, s.stats().users);
    assert_eq!(r.stats().devices, s.stats().devices);
    let mut fired = Vec::new();
    r.advance(now, &mut fired);
    assert_eq!(fired, vec![], "a restart changes no one's presence");
}

#[test]
fn restored_deadlines_start_over_at_the_restart() {
    let mut out = Vec::new();
    let mut s = populated(&mut out);
    let bytes = snapshot(&mut s, at(3 * SEC));
    let start = 600 * SEC;
    let mut r = restore(&bytes, restarted_at(start, start));
    let timeout = config().timeout_us();
    // User 1's gateway heartbeats within a timeout of the restart: nothing happens.
    let mut fired = Vec::new();
    r.heartbeat(
        restarted_at(start + timeout - SEC, start),
        &hb(1, 1, Report::Online, true),
        &mut fired,
    );
    assert_eq!(fired, vec![]);
    // The others time out a timeout (and a tick) after the restart, not before.
    r.advance(restarted_at(start + timeout - SEC, start), &mut fired);
    assert_eq!(fired, vec![]);
    r.advance(
        restarted_at(start + timeout + 2 * config().tick_us, start),
        &mut fired,
    );
    let mut users: Vec<(u64, Cause)> = fired.iter().map(|t| (t.user, t.cause)).collect();
    users.sort_unstable();
    assert_eq!(users, vec![(2, Cause::Timeout), (4, Cause::Timeout)]);
}

#[test]
fn logged_transitions_bring_a_stale_snapshot_up_to_date() {
    let mut log = Vec::new();
    let mut s = populated(&mut log);
    let bytes = snapshot(&mut s, at(3 * SEC));
    // After the snapshot: user 1 logs out, user 6 appears, user 4's active device leaves (the
    // idle one stays), user 2 becomes active, user 5 comes back.
    log.clear();
    let t = at(4 * SEC);
    s.heartbeat(t, &hb(1, 1, Report::Offline, false), &mut log);
    s.heartbeat(t, &hb(6, 3, Report::Online, true), &mut log);
    s.heartbeat(t, &hb(4, 1, Report::Offline, false), &mut log);
    s.heartbeat(t, &hb(2, 1, Report::Online, true), &mut log);
    s.heartbeat(t, &hb(5, 7, Report::Idle, false), &mut log);
    assert_eq!(log.len(), 5);
    let start = 10 * SEC;
    let now = restarted_at(start, start);
    let mut r = restore(&bytes, now);
    for t in &log {
        assert!(r.replay(now, t).unwrap());
        // Replaying again changes nothing.
        assert!(!r.replay(now, t).unwrap());
    }
    for (user, p, _) in answers(&s) {
        assert_eq!(r.query(user), p, "user {user}");
    }
    let mut fired = Vec::new();
    r.advance(now, &mut fired);
    assert_eq!(fired, vec![]);
    // User 6's gateway keeps heartbeating device 3: it takes over the restored device.
    r.heartbeat(
        restarted_at(start + SEC, start),
        &hb(6, 3, Report::Online, true),
        &mut fired,
    );
    assert_eq!((fired.len(), r.device_count(6)), (0, 1));
    // User 5's device 7 reports idle again: still idle, nothing emitted; a second device adds.
    r.heartbeat(
        restarted_at(start + SEC, start),
        &hb(5, 7, Report::Idle, false),
        &mut fired,
    );
    r.heartbeat(
        restarted_at(start + SEC, start),
        &hb(5, 8, Report::Idle, false),
        &mut fired,
    );
    assert_eq!((fired.len(), r.device_count(5)), (0, 2));
}

#[test]
fn a_snapshot_taken_while_the_shard_runs_plus_the_log_gives_the_end_state() {
    let mut log = Vec::new();
    let mut s = Shard::new(config(), at(0)).unwrap();
    for u in 1..=300u64 {
        s.heartbeat(at(SEC), &hb(u, 1, Report::Online, true), &mut log);
    }
    log.clear();
    let mut bytes = Vec::new();
    s.snapshot_begin();
    let mut step = 0u64;
    loop {
        let now = at(2 * SEC + step * 1000);
        if s.snapshot_step(now, 16, &mut bytes).1 {
            break;
        }
        // Between slices: logouts, new users, idles.
        let u = 1 + (step * 37) % 400;
        let report = [Report::Offline, Report::Online, Report::Idle][(step % 3) as usize];
        s.heartbeat(now, &hb(u, 1, report, report == Report::Online), &mut log);
        step += 1;
    }
    assert!(step > 10);
    let start = 30 * SEC;
    let now = restarted_at(start, start);
    let mut r = restore(&bytes, now);
    for t in &log {
        r.replay(now, t).unwrap();
    }
    for u in 1..=400 {
        let (live, back) = (s.query(u), r.query(u));
        assert_eq!(
            (back.state, back.version),
            (live.state, live.version),
            "user {u}"
        );
    }
}

#[test]
fn an_old_offline_record_is_dropped_after_its_retention_not_kept_anew() {
    let mut out = Vec::new();
    let mut s = populated(&mut out);
    let bytes = snapshot(&mut s, at(3 * SEC));
    // Restarted after the retention of user 5 (offline since 2 s) has passed.
    let start = config().last_seen_retention_us + 10 * SEC;
    let now = restarted_at(start, start);
    let mut r = restore(&bytes, now);
    let mut fired = Vec::new();
    r.advance(now, &mut fired);
    assert_eq!(r.query(5), Presence::UNKNOWN);
    assert_eq!(r.stats().records_dropped, 1);
}

#[test]
fn import_keeps_within_the_device_limits() {
    let mut s = Shard::new(
        CoreConfig {
            user_capacity: 2,
            max_devices_per_user: 2,
            multi_device_users: 0,
            ..CoreConfig::default()
        },
        at(0),
    )
    .unwrap();
    let mut user = SavedUser::new(1, 5, Some(WALL0), 0);
    for id in 0..3 {
        user.push(crate::saved::SavedDevice {
            id,
            state: DeviceState::Online,
            lapsed: false,
            restored: false,
            deadline_ms: WALL0 + 10_000,
            active_until_ms: WALL0 + 10_000,
        });
    }
    let imported = s.import(at(SEC), &user).unwrap();
    // No overflow block: only the first device fits.
    assert_eq!(imported.devices_left_out, 2);
    assert_eq!(s.device_count(1), 1);
    assert!(s
        .import(at(SEC), &SavedUser::new(2, 1, None, WALL0))
        .is_ok());
    assert!(s
        .import(at(SEC), &SavedUser::new(3, 1, None, WALL0))
        .is_err());
}
