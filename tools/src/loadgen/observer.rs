//! Observers: push links subscribed to the watched users. Each checks every transition as it
//! arrives (versions only grow, each continues from the previous state, none without a
//! cause) and measures its latency against the stamp of the send that caused it.

use super::clock::Clock;
use super::population::{Population, TIMEOUT, TIME_MASK, UNTIMED};
use hdrhistogram::Histogram;
use presenced_client::{ClientError, LinkClient, Push};
use presenced_core::cache::prefetch;
use presenced_wire::link::{Event, PresenceRecord, WireCause, WireState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Latency histograms: 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Histograms an observer fills and the progress line reads.
pub struct Hists {
    /// Transition latency: causing send → push arrival (logins, logouts).
    pub latency: Histogram<u64>,
    /// Offline detection lateness: timeout push arrival − deadline.
    pub lateness: Histogram<u64>,
    /// Latency since the progress line last looked.
    pub recent: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        Hists {
            latency: histogram(),
            lateness: histogram(),
            recent: histogram(),
        }
    }
}

/// Checks shared by every observer, for the progress line and the end.
#[derive(Default)]
pub struct Shared {
    /// Phase: false while the initial logout of stale users runs (transitions only tracked),
    /// true once the run proper has begun (transitions checked and counted).
    pub running: AtomicBool,
    /// Watched users not offline, summed over observers.
    pub not_offline: AtomicI64,
    /// Transitions of users that had none pending, as they arrived (the final count decides).
    pub spurious_now: AtomicU64,
    /// Versions not above the user's previous one.
    pub version_regressions: AtomicU64,
    /// Transitions, all observers.
    pub events: AtomicU64,
    /// LAGGED signals received.
    pub lag_signals: AtomicU64,
    /// Set when the run is over (a link closing after it is no finding).
    pub finishing: AtomicBool,
    /// Set when the senders stop without logging users out: transitions beyond those caused
    /// are then the users timing out, not findings.
    pub ended: AtomicBool,
    /// Transitions ignored because they came after the end (see `ended`).
    pub after_end: AtomicU64,
    /// Reconnections of observers that survive a restart ([`WatchObserver`]), all observers.
    pub reconnected: AtomicU64,
}

/// What one observer found, returned when its link closes.
pub struct Findings {
    /// Transitions seen per watched user.
    pub counts: Vec<u32>,
    /// Transitions of users outside the watched ones (firehose).
    pub foreign: u64,
    /// Transitions whose `prev` was not the state last seen (one was missed before it).
    pub gaps: u64,
    /// Transitions to idle (the generator always reports activity).
    pub idle: u64,
    /// Timeout transitions that arrived before the deadline computed from the last send
    /// (possible only if that last beat was lost).
    pub early_offline: u64,
    /// Logouts whose user went offline by timeout instead (the logout was lost): not timed.
    pub logout_timed_out: u64,
    /// Why the link ended, if it ended on its own.
    pub closed: Option<String>,
    /// Events the client library dropped (this observer fell behind).
    pub dropped_by_client: u64,
    /// How long each of this observer's links was down before it reconnected (observers
    /// that survive a restart only).
    pub reconnects: Vec<std::time::Duration>,
    /// Records that differed from what the observer knew when it reconnected (or when a
    /// warming daemon finished): changes the simulation did not cause.
    pub changed_records: u64,
}

/// One transition as an observer received it, whatever carried it (a presenced push link or
/// a Redis pub/sub message).
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// The watched index of its user (see [`Population::watched_index`]).
    pub index: u32,
    /// The new state.
    pub state: WireState,
    /// The state it says it left, where the transport carries one (presenced's `prev`):
    /// checked against the state last seen.
    pub prev: Option<WireState>,
    /// Its version, where the transport carries one: must grow per user.
    pub version: Option<u64>,
    /// Whether it says its cause was a timeout.
    pub timeout: bool,
}

impl Seen {
    /// A transition pushed by presenced, of watched user `index`.
    pub fn pushed(index: u32, e: &Event) -> Seen {
        Seen {
            index,
            state: e.state,
            prev: Some(e.prev),
            version: Some(e.version),
            timeout: e.cause == WireCause::Timeout,
        }
    }
}

/// What a batch of checks adds to the counters the observers share.
#[derive(Default)]
struct SharedCounts {
    not_offline: i64,
    events: u64,
    seen: u64,
}

/// How many transitions ahead of its check [`Tally::note_frame`] starts loading a user's
/// records: enough to cover a miss with the checks between.
const PREFETCH_AHEAD: usize = 16;

/// What one observer knows of one watched user, in one place: a transition's check reads and
/// writes one 16-byte record of the observer's own (three arrays cost three cache misses).
#[derive(Clone, Copy, Default)]
struct Known {
    /// The latest version seen.
    version: u64,
    /// Transitions seen.
    count: u32,
    /// The state last seen (wire value).
    state: u8,
}

const _: () = assert!(std::mem::size_of::<Known>() == 16);

/// What one observer tracks per watched user and the checks it makes on every transition it
/// receives, independent of the transport: counts against the simulation's expectations,
/// latency and lateness against the causing send's stamp.
pub struct Tally {
    pop: Arc<Population>,
    shared: Arc<Shared>,
    known: Vec<Known>,
    /// The frame being checked (kept to reuse its allocation).
    pending: Vec<Option<Seen>>,
    /// What is found beside the per-user counts, which [`into_findings`](Tally::into_findings)
    /// adds from `known`.
    findings: Findings,
}

impl Tally {
    /// A tally of `pop`'s watched users, every one offline at version 0.
    pub fn new(pop: Arc<Population>, shared: Arc<Shared>) -> Tally {
        let offline = Known {
            state: WireState::Offline.to_u8(),
            ..Known::default()
        };
        Tally {
            known: vec![offline; pop.watch as usize],
            pending: Vec::new(),
            pop,
            shared,
            findings: Findings {
                counts: Vec::new(),
                foreign: 0,
                gaps: 0,
                idle: 0,
                early_offline: 0,
                logout_timed_out: 0,
                closed: None,
                dropped_by_client: 0,
                reconnects: Vec::new(),
                changed_records: 0,
            },
        }
    }

    /// Counts a transition of a user that is not watched.
    pub fn foreign(&mut self) {
        self.findings.foreign += 1;
    }

    /// Records that the transport ended by itself (no finding once the run is finishing).
    pub fn closed(&mut self, why: String) {
        if !self.shared.finishing.load(Ordering::Acquire) {
            self.findings.closed = Some(why);
        }
    }

    /// The findings, with the events the transport itself dropped.
    pub fn into_findings(mut self, dropped_by_client: u64) -> Findings {
        self.findings.dropped_by_client = dropped_by_client;
        self.findings.counts = self.known.iter().map(|k| k.count).collect();
        self.findings
    }

    /// Takes `record` as what is now known of its user (a first record, or one read again
    /// after a reconnection or lag), without counting it as a transition; false if the user is
    /// not watched.
    pub fn resync(&mut self, record: &PresenceRecord) -> bool {
        let Some(i) = self.pop.watched_index(record.user) else {
            return false;
        };
        let known = &mut self.known[i as usize];
        // A record replaces what was known, even with a lower version (a daemon that lost
        // its state): later transitions continue from it.
        known.version = record.version;
        let offline = WireState::Offline.to_u8();
        let (before, after) = (known.state, record.state.to_u8());
        if before == offline && after != offline {
            self.shared.not_offline.fetch_add(1, Ordering::AcqRel);
        } else if before != offline && after == offline {
            self.shared.not_offline.fetch_sub(1, Ordering::AcqRel);
        }
        known.state = after;
        true
    }

    /// The state last seen of watched user `index` (wire value).
    pub fn state_of(&self, index: u32) -> Option<u8> {
        self.known.get(index as usize).map(|k| k.state)
    }

    /// Transitions of watched user `index` counted so far.
    pub fn count_of(&self, index: u32) -> u32 {
        self.known.get(index as usize).map_or(0, |k| k.count)
    }

    /// Watched users last seen online or idle.
    pub fn stale_users(&self) -> Vec<u64> {
        self.known
            .iter()
            .enumerate()
            .filter(|(_, k)| k.state != WireState::Offline.to_u8())
            .map(|(i, _)| self.pop.id(i as u32))
            .collect()
    }

    /// Checks transition `e`, received at `now`; `running` is false during the initial
    /// clean-up (the state is tracked, nothing is counted).
    pub fn note(&mut self, e: Seen, now: u64, running: bool, h: &mut Hists) {
        let mut counts = SharedCounts::default();
        self.check(e, now, running, h, &mut counts);
        self.publish(counts);
    }

    /// [`note`](Tally::note) for every transition of one frame (`None`: a user not watched),
    /// adding to the counters the observers share once for the whole frame: eight observers
    /// adding to the same counters for every transition spent more time on those cache lines
    /// than on the checks.
    ///
    /// The users' records are spread over megabytes (this observer's and the shared ones), so
    /// each transition's are loaded [`PREFETCH_AHEAD`] checks before its own: the misses of a
    /// frame overlap instead of each stalling its check.
    pub fn note_frame(
        &mut self,
        frame: impl Iterator<Item = Option<Seen>>,
        now: u64,
        running: bool,
        h: &mut Hists,
    ) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        pending.extend(frame);
        for e in pending.iter().take(PREFETCH_AHEAD).flatten() {
            self.prefetch(e.index);
        }
        let mut counts = SharedCounts::default();
        for (n, seen) in pending.iter().enumerate() {
            if let Some(Some(ahead)) = pending.get(n + PREFETCH_AHEAD) {
                self.prefetch(ahead.index);
            }
            match *seen {
                Some(e) => self.check(e, now, running, h, &mut counts),
                None => self.foreign(),
            }
        }
        self.pending = pending;
        self.publish(counts);
    }

    /// Starts loading what a check of user `index` reads.
    fn prefetch(&self, index: u32) {
        if let Some(known) = self.known.get(index as usize) {
            prefetch(known);
        }
        self.pop.prefetch(index);
    }

    fn publish(&self, counts: SharedCounts) {
        if counts.not_offline != 0 {
            self.shared
                .not_offline
                .fetch_add(counts.not_offline, Ordering::AcqRel);
        }
        if counts.events != 0 {
            self.shared
                .events
                .fetch_add(counts.events, Ordering::Relaxed);
        }
        self.pop.saw_total(counts.seen);
    }

    fn check(
        &mut self,
        e: Seen,
        now: u64,
        running: bool,
        h: &mut Hists,
        counts: &mut SharedCounts,
    ) {
        let index = e.index;
        let Some(known) = self.known.get_mut(index as usize) else {
            self.findings.foreign += 1;
            return;
        };
        let f = &mut self.findings;
        if let Some(version) = e.version {
            if version <= known.version {
                self.shared
                    .version_regressions
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                known.version = version;
            }
        }
        let offline = WireState::Offline.to_u8();
        let (before, after) = (known.state, e.state.to_u8());
        if before == offline && after != offline {
            counts.not_offline += 1;
        } else if before != offline && after == offline {
            counts.not_offline -= 1;
        }
        if running && e.prev.is_some_and(|p| p.to_u8() != before) {
            f.gaps += 1;
        }
        known.state = after;
        if !running {
            return;
        }
        counts.events += 1;
        if e.state == WireState::Idle {
            f.idle += 1;
        }
        let expected = self.pop.expected(index);
        if known.count >= expected && self.shared.ended.load(Ordering::Acquire) {
            self.shared.after_end.fetch_add(1, Ordering::Relaxed);
            return;
        }
        known.count += 1;
        if self.pop.saw(index) {
            counts.seen += 1;
        }
        if known.count > expected {
            self.shared.spurious_now.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let online = e.state != WireState::Offline;
        let stamp = self.pop.stamp(index, online);
        if !online && stamp & TIMEOUT == 0 && e.timeout {
            // The logout was lost and the devices timed out instead: not timed.
            f.logout_timed_out += 1;
            return;
        }
        if stamp & UNTIMED != 0 {
            return;
        }
        let at = stamp & TIME_MASK;
        if !online && stamp & TIMEOUT != 0 {
            if now < at {
                f.early_offline += 1;
            } else {
                let _ = h.lateness.record((now - at).max(1));
            }
        } else {
            let latency = now.saturating_sub(at).max(1);
            let _ = h.latency.record(latency);
            let _ = h.recent.record(latency);
        }
    }
}

/// One observer's state, owned by its task.
pub struct Observer {
    link: Arc<LinkClient>,
    pop: Arc<Population>,
    clock: Clock,
    shared: Arc<Shared>,
    hists: Arc<Mutex<Hists>>,
    tally: Tally,
}

fn lock(m: &Mutex<Hists>) -> MutexGuard<'_, Hists> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Observer {
    /// Subscribes `link` to the watched users (or turns its firehose on and queries them)
    /// and records their current state and version.
    pub async fn subscribe(
        link: Arc<LinkClient>,
        pop: Arc<Population>,
        clock: Clock,
        shared: Arc<Shared>,
        firehose: bool,
    ) -> Result<Observer, ClientError> {
        let users: Vec<u64> = (0..pop.watch).map(|i| pop.id(i)).collect();
        let records = if firehose {
            link.subscribe_all().await?;
            link.query(&users).await?
        } else {
            link.subscribe(&users).await?
        };
        let mut observer = Observer {
            tally: Tally::new(pop.clone(), shared.clone()),
            link,
            pop,
            clock,
            shared,
            hists: Arc::new(Mutex::new(Hists::default())),
        };
        observer.baseline(&records);
        Ok(observer)
    }

    fn baseline(&mut self, records: &[PresenceRecord]) {
        for r in records {
            self.tally.resync(r);
        }
    }

    /// Watched users this observer last saw online or idle.
    pub fn stale_users(&self) -> Vec<u64> {
        self.tally.stale_users()
    }

    /// The histograms, for the progress line.
    pub fn hists(&self) -> Arc<Mutex<Hists>> {
        self.hists.clone()
    }

    /// Reads pushes until `stop` turns true (then takes what is already queued) or the link
    /// closes; returns the findings.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Findings {
        loop {
            let push = tokio::select! {
                push = self.link.next_push() => push,
                _ = stop.wait_for(|&s| s) => {
                    while let Some(push) = self.link.try_next_push() {
                        self.take(push);
                    }
                    break;
                }
            };
            match push {
                Some(push) => self.take(push),
                None => break,
            }
        }
        let dropped = self.link.dropped_events();
        self.tally.into_findings(dropped)
    }

    fn take(&mut self, push: Push) {
        match push {
            Push::Events(events) => {
                let now = self.clock.now_us();
                let running = self.shared.running.load(Ordering::Acquire);
                let hists = self.hists.clone();
                let mut h = lock(&hists);
                let pop = &self.pop;
                let frame = events.iter().map(|e| {
                    pop.watched_index(e.user)
                        .map(|index| Seen::pushed(index, e))
                });
                self.tally.note_frame(frame, now, running, &mut h);
            }
            Push::Lagged { .. } | Push::LaggedAll => {
                self.shared.lag_signals.fetch_add(1, Ordering::Relaxed);
            }
            Push::Closed { message, .. } => self.tally.closed(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(index: u32, version: u64, prev: WireState) -> Option<Seen> {
        Some(Seen {
            index,
            state: WireState::Online,
            prev: Some(prev),
            version: Some(version),
            timeout: false,
        })
    }

    #[test]
    fn a_frame_longer_than_the_prefetch_window_checks_every_transition_once() {
        let users = 3 * PREFETCH_AHEAD as u32 + 5;
        let pop = Arc::new(Population::new(100, vec![1; users as usize], users, 1));
        let shared = Arc::new(Shared::default());
        shared.running.store(true, Ordering::Release);
        let mut tally = Tally::new(pop.clone(), shared.clone());
        let mut h = Hists::default();
        for i in 0..users {
            pop.expect(i);
        }
        // Every user's login, with a foreign transition after every fourth.
        let frame: Vec<Option<Seen>> = (0..users)
            .flat_map(|i| {
                let foreign = (i % 4 == 3).then_some(None);
                std::iter::once(online(i, 1, WireState::Offline)).chain(foreign)
            })
            .collect();
        tally.note_frame(frame.into_iter(), 10, true, &mut h);
        assert_eq!(shared.events.load(Ordering::Relaxed), u64::from(users));
        assert_eq!(shared.not_offline.load(Ordering::Relaxed), i64::from(users));
        assert_eq!(pop.in_flight(), 0, "every user settled");
        assert_eq!(h.latency.len(), u64::from(users));
        // Again: a stale version, a transition that skipped one, and one too many.
        let again = [
            online(5, 1, WireState::Online),
            online(6, 2, WireState::Idle),
        ];
        tally.note_frame(again.into_iter(), 20, true, &mut h);
        assert_eq!(shared.version_regressions.load(Ordering::Relaxed), 1);
        assert_eq!(shared.spurious_now.load(Ordering::Relaxed), 2);
        let found = tally.into_findings(0);
        assert_eq!(found.foreign, u64::from(users / 4));
        assert_eq!(found.gaps, 1, "user 6 was online, not idle");
        let mut counts = vec![1; users as usize];
        counts[5] = 2;
        counts[6] = 2;
        assert_eq!(found.counts, counts);
    }
}
