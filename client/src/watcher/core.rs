//! The watcher's core: what a gateway knows about the users it watches, what it tells the
//! application, and when it reconnects. Sans-IO in quinn-proto's manner, like the daemon's
//! node and hub: the driver ([`Watcher`](super::Watcher)) feeds it what happened on the link
//! (`handle_*`, with the time passed in) and carries out what it asks (`poll_action`), sleeping
//! until `poll_timeout`; reports for the application come out of `poll_event`. It never reads
//! a clock, touches a socket or draws randomness of its own (the jitter comes from a seeded
//! generator), so every rule below is tested with fake time and a fixed seed.
//!
//! Why it keeps a view per user (SPEC.md § P6.2, § P6.11): a link's subscriptions end with it,
//! and transitions sent while no link was up are not replayed. A reconnecting gateway
//! subscribes again and compares each record with what it knew: versions only grow, also across
//! a restart, so an equal version means nothing happened and the application hears nothing (a
//! daemon restarted while gateways kept heartbeating changes no one's presence); a different
//! version means something happened while away, and the record is reported as a resync. On the
//! same link records and transitions apply only forwards (a record if its version is at least
//! the one known, a transition if greater), so they may be handled in any order.
//!
//! Why it reconnects with jitter: every gateway of a restarting daemon loses its link at the
//! same moment. The first attempt waits GOAWAY's `reconnect_after` (nothing without a GOAWAY)
//! plus a uniform jitter, so they do not all come back at once; failed attempts back off
//! exponentially with full jitter (uniform from 0 to a ceiling that doubles per failure up to a
//! cap), so a daemon that is down long is not hammered.
//!
//! Why it holds offline records back (SPEC.md § P6.10): a daemon that started without its saved
//! state ("warming") shows users offline whose devices have not heartbeated since its start.
//! Such an offline, from an answer marked warming, is not applied while the watcher knows the
//! user online or idle, until a transition of the user confirms something or warming ends;
//! then the user is queried again. About a user it knows nothing of, the watcher has no view
//! to keep: it reports the record as [`RecordReason::Warming`] (an application that would
//! rather show such users as unknown, as SPEC.md suggests, can) and queries the user again
//! when warming ends too.
//!
//! Lag (SPEC.md § P6.7): after LAGGED the named users (all watched users for scope 1) are
//! queried again, and only records that move the view are reported.
//!
//! Limits: the users watched by id must fit the daemon's `max_subscriptions` (WELCOME); users
//! seen only through the firehose are remembered up to
//! [`max_firehose_users`](WatchConfig::max_firehose_users) (beyond it their transitions are
//! still reported, but they are not resynchronised); re-queries are merged into one set of at
//! most the users remembered; the reports of one step are at most one per user remembered plus
//! the transitions handed in.

use crate::{ClientError, GoAway, LinkInfo, Push, Snapshot};
use presenced_wire::hash::mix64;
use presenced_wire::link::{Event, Limits, PresenceRecord, WireState};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Default jitter of the first attempt after a link is lost: uniform in 0 to this, on top of
/// GOAWAY's `reconnect_after` (SPEC.md § P6.11 suggests 0–1 s).
pub const RECONNECT_JITTER_MS: u64 = 1_000;
/// Default ceiling of the backoff after the first failed attempt; it doubles per further
/// failure.
pub const RECONNECT_MIN_MS: u64 = 1_000;
/// Default cap of the backoff's ceiling.
pub const RECONNECT_MAX_MS: u64 = 30_000;
/// When a query sent after warming should have ended is still answered as warming (the
/// daemon's clock ran behind this one), the users it showed offline are asked again this much
/// later.
pub const WARMING_RECHECK_MS: u64 = 1_000;
/// Default of [`WatchConfig::max_firehose_users`].
pub const MAX_FIREHOSE_USERS: usize = 1_000_000;

/// What to watch and how to reconnect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Users watched by id: subscribed with their presence on every link. A user listed twice
    /// is watched once. At most the daemon's `max_subscriptions` (WELCOME).
    pub users: Vec<u64>,
    /// Also every transition of every user (SUBSCRIBE_ALL; there is no snapshot of everyone).
    pub firehose: bool,
    /// Users seen only through the firehose whose presence is remembered, to resynchronise
    /// them after lag and reconnection.
    pub max_firehose_users: usize,
    /// The first attempt after a link is lost waits a uniform jitter up to this (after
    /// GOAWAY's `reconnect_after`).
    pub reconnect_jitter: Duration,
    /// The backoff's ceiling after the first failed attempt (doubling per failure); more than
    /// zero.
    pub reconnect_min: Duration,
    /// The backoff's cap; at least `reconnect_min`.
    pub reconnect_max: Duration,
    /// Stop ([`WatchEvent::GaveUp`]) once no link has been up for this long; `None`: keep
    /// trying.
    pub give_up_after: Option<Duration>,
}

impl WatchConfig {
    /// Watch `users`, with the default reconnection settings.
    pub fn users(users: impl IntoIterator<Item = u64>) -> WatchConfig {
        WatchConfig {
            users: users.into_iter().collect(),
            firehose: false,
            max_firehose_users: MAX_FIREHOSE_USERS,
            reconnect_jitter: Duration::from_millis(RECONNECT_JITTER_MS),
            reconnect_min: Duration::from_millis(RECONNECT_MIN_MS),
            reconnect_max: Duration::from_millis(RECONNECT_MAX_MS),
            give_up_after: None,
        }
    }

    /// Watch every user (the firehose), with the default reconnection settings.
    pub fn firehose() -> WatchConfig {
        WatchConfig {
            firehose: true,
            ..WatchConfig::users([])
        }
    }

    /// Checks the configuration; the error names the field.
    pub fn check(&self) -> Result<(), ClientError> {
        if self.users.is_empty() && !self.firehose {
            return Err(ClientError::Config(
                "nothing to watch: give users or turn the firehose on".into(),
            ));
        }
        if self.users.contains(&0) {
            return Err(ClientError::Config("users: user id 0 is reserved".into()));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(ClientError::Config(format!(
                "reconnect_min ({:?}) must be more than zero and at most reconnect_max ({:?})",
                self.reconnect_min, self.reconnect_max
            )));
        }
        Ok(())
    }
}

/// Why a record is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordReason {
    /// The user's presence on the first link.
    Initial,
    /// Transitions of the user were dropped (LAGGED); this is the user's presence now.
    Lagged,
    /// The user's presence changed while no link was up.
    Reconnected,
    /// Read while the daemon was warming, about a user the watcher knew nothing of: an offline
    /// that may be wrong. The user is queried again when warming ends (and reported as
    /// [`Warmed`](RecordReason::Warmed) if the answer differs).
    Warming,
    /// The daemon finished warming: the user's presence, held back or unsure until now.
    Warmed,
}

/// What the watcher tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A user's presence: the first one known, or one that differs from what was known.
    Record {
        /// The record.
        record: PresenceRecord,
        /// Why it is reported.
        reason: RecordReason,
    },
    /// A pushed transition that moved the user's presence.
    Transition(Event),
    /// The first link is up and subscribed: transitions flow from now on.
    Watching {
        /// Users watched by id.
        users: usize,
        /// Whether the firehose is on.
        firehose: bool,
        /// Users shown offline by a warming daemon, queried again when it is done: held back
        /// where the watcher knew them online, reported as [`RecordReason::Warming`] where it
        /// knew nothing.
        unsure: usize,
    },
    /// Transitions were dropped; the users are being queried again.
    Lagged {
        /// How many users were named; `None`: any user (all of them are queried).
        users: Option<usize>,
    },
    /// The link went away; the next attempt is in `retry_in`.
    Disconnected {
        /// Why, in words.
        reason: String,
        /// The daemon's GOAWAY, when it said it was going away.
        go_away: Option<GoAway>,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// An attempt to connect failed; the next one is in `retry_in`.
    ConnectFailed {
        /// Failed attempts since the link was lost.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// A link is up and subscribed again; the records that changed while away were reported
    /// just before.
    Reconnected {
        /// How long no link was up.
        down: Duration,
        /// Users whose presence changed while away.
        changes: usize,
        /// Users shown offline by a warming daemon, queried again when it is done: held back
        /// where the watcher knew them online, reported as [`RecordReason::Warming`] where it
        /// knew nothing.
        unsure: usize,
    },
    /// No link for `give_up_after`: the watcher stopped. Nothing follows.
    GaveUp {
        /// How long no link was up.
        down: Duration,
        /// The last error.
        error: String,
    },
    /// The daemon refused what the watcher needs (a subscription over its limits, the firehose
    /// without the grant), or the options cannot work: the watcher stopped. Nothing follows.
    Failed {
        /// Why.
        error: String,
    },
}

/// What the driver is to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect a link, then call `handle_connected` or `handle_connect_failed`.
    Connect,
    /// Send a request on the link and hand its answer in.
    Send(Request),
}

/// A request on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// SUBSCRIBE_ALL, then `handle_ack`.
    SubscribeAll,
    /// SUBSCRIBE these users, then `handle_records` with the answer.
    Subscribe(Vec<u64>),
    /// QUERY these users, then `handle_records` with the answer.
    Query(Vec<u64>),
}

/// Why a request was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// Bringing a new link up to date.
    Catchup,
    /// After LAGGED.
    Lagged,
    /// Users shown offline while the daemon was warming.
    Warmed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connect as soon as the driver asks.
    ConnectDue,
    /// The driver is connecting.
    Connecting,
    /// A link is up.
    Linked,
    /// No link; connect at `retry_at`.
    Down { retry_at: Instant },
    /// Gave up or failed.
    Finished,
}

/// A user's presence as the watcher knows it.
#[derive(Clone, Copy, Debug)]
struct Known {
    record: PresenceRecord,
    /// Learnt on an earlier link: the next record replaces it if its version differs at all
    /// (the daemon may have lost what it had), not only if it is greater.
    stale: bool,
}

/// Bringing a new link up to date.
#[derive(Clone, Copy, Debug)]
struct Catchup {
    first: bool,
    /// Requests not yet answered.
    left: usize,
    /// Records that differed from what was known.
    changes: usize,
}

/// splitmix64: a small seeded generator for the jitter.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in 0 to `max`, in whole milliseconds.
    fn up_to(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        let draw = match ms.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        };
        Duration::from_millis(draw)
    }
}

/// The watcher's state machine (see the module's documentation).
#[derive(Debug)]
pub struct WatchCore {
    config: WatchConfig,
    /// The users watched by id, each once, in the order given.
    users: Vec<u64>,
    by_id: HashSet<u64>,
    rng: Rng,
    known: HashMap<u64, Known>,
    /// Entries of `known` for users seen only through the firehose.
    firehose_known: usize,
    /// Users shown offline by a warming daemon, to query again when it is done.
    unsure: BTreeSet<u64>,
    phase: Phase,
    /// Since when no link has been up to date (`None` while one is, and before the first).
    down_since: Option<Instant>,
    /// Attempts failed since then.
    failures: u32,
    last_error: String,
    /// Until when the daemon is warming, as far as this link knows.
    warm_until: Option<Instant>,
    /// Query the unsure users again once no other request is queued.
    recheck_unsure: bool,
    /// Requests bringing a new link up to date, in order.
    queued: VecDeque<Request>,
    /// Users to query again after LAGGED, once the link is up to date.
    lagged: BTreeSet<u64>,
    /// The request the driver is carrying out.
    in_flight: Option<Purpose>,
    catchup: Option<Catchup>,
    /// A link was brought up to date once ([`WatchEvent::Watching`] was reported).
    linked_before: bool,
    events: VecDeque<WatchEvent>,
}

impl WatchCore {
    /// A watcher that connects as soon as the driver asks for an action; `seed` drives the
    /// jitter.
    pub fn new(config: WatchConfig, seed: u64) -> Result<WatchCore, ClientError> {
        config.check()?;
        let mut by_id = HashSet::with_capacity(config.users.len());
        let users: Vec<u64> = config
            .users
            .iter()
            .copied()
            .filter(|&u| by_id.insert(u))
            .collect();
        Ok(WatchCore {
            config,
            users,
            by_id,
            rng: Rng(seed),
            known: HashMap::new(),
            firehose_known: 0,
            unsure: BTreeSet::new(),
            phase: Phase::ConnectDue,
            down_since: None,
            failures: 0,
            last_error: String::new(),
            warm_until: None,
            recheck_unsure: false,
            queued: VecDeque::new(),
            lagged: BTreeSet::new(),
            in_flight: None,
            catchup: None,
            linked_before: false,
            events: VecDeque::new(),
        })
    }

    /// What to do next, if anything: one request at a time (the next comes once this one is
    /// answered, failed, or the link is lost).
    pub fn poll_action(&mut self) -> Option<Action> {
        match self.phase {
            Phase::ConnectDue => {
                self.phase = Phase::Connecting;
                return Some(Action::Connect);
            }
            Phase::Linked if self.in_flight.is_none() => {}
            _ => return None,
        }
        let (request, purpose) = if let Some(request) = self.queued.pop_front() {
            (request, Purpose::Catchup)
        } else if self.catchup.is_some() {
            return None;
        } else if !self.lagged.is_empty() {
            let users = std::mem::take(&mut self.lagged).into_iter().collect();
            (Request::Query(users), Purpose::Lagged)
        } else if self.recheck_unsure && !self.unsure.is_empty() {
            self.recheck_unsure = false;
            (
                Request::Query(self.unsure.iter().copied().collect()),
                Purpose::Warmed,
            )
        } else {
            return None;
        };
        self.in_flight = Some(purpose);
        Some(Action::Send(request))
    }

    /// When `handle_timeout` is next due: the next attempt, giving up, or the end of warming.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let give_up = self.give_up_at();
        match self.phase {
            Phase::Down { retry_at } => Some(give_up.map_or(retry_at, |g| g.min(retry_at))),
            Phase::ConnectDue | Phase::Connecting => give_up,
            Phase::Linked => self.warm_until,
            Phase::Finished => None,
        }
    }

    /// The next report for the application.
    pub fn poll_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// Whether the watcher stopped ([`WatchEvent::GaveUp`] or [`WatchEvent::Failed`]).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Time passed: gives up, schedules the next attempt, or ends warming, as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.give_up_at() {
            let down = matches!(
                self.phase,
                Phase::Down { .. } | Phase::ConnectDue | Phase::Connecting
            );
            if down && now >= at {
                let since = self.down_since.unwrap_or(now);
                self.events.push_back(WatchEvent::GaveUp {
                    down: now.saturating_duration_since(since),
                    error: self.last_error.clone(),
                });
                self.phase = Phase::Finished;
                return;
            }
        }
        match self.phase {
            Phase::Down { retry_at } if now >= retry_at => self.phase = Phase::ConnectDue,
            Phase::Linked if self.warm_until.is_some_and(|w| now >= w) => self.warming_over(),
            _ => {}
        }
    }

    /// A link is up (after [`Action::Connect`]): `info` and `limits` are its WELCOME's.
    pub fn handle_connected(&mut self, now: Instant, info: &LinkInfo, limits: &Limits) {
        if self.phase != Phase::Connecting {
            return;
        }
        let max = usize::try_from(limits.max_subscriptions).unwrap_or(usize::MAX);
        if self.users.len() > max {
            self.fail(format!(
                "watching {} users, but the daemon allows {max} per link \
                 (its link.max_subscriptions)",
                self.users.len()
            ));
            return;
        }
        self.phase = Phase::Linked;
        self.in_flight = None;
        for k in self.known.values_mut() {
            k.stale = true;
        }
        self.warm_until = info.warming.then(|| now + info.warm_remaining);
        if self.config.firehose {
            self.queued.push_back(Request::SubscribeAll);
        }
        if !self.users.is_empty() {
            self.queued
                .push_back(Request::Subscribe(self.users.clone()));
        }
        // Users seen through the firehose: asked once the firehose is on again, so that no
        // transition falls between the answer and the firehose.
        let by_id = &self.by_id;
        let firehose_users: BTreeSet<u64> = self
            .known
            .keys()
            .chain(&self.unsure)
            .copied()
            .filter(|u| !by_id.contains(u))
            .collect();
        if !firehose_users.is_empty() {
            self.queued
                .push_back(Request::Query(firehose_users.into_iter().collect()));
        }
        self.catchup = Some(Catchup {
            first: !self.linked_before,
            left: self.queued.len(),
            changes: 0,
        });
    }

    /// An attempt to connect failed.
    pub fn handle_connect_failed(&mut self, now: Instant, error: String) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.down_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let retry_in = self.retry_delay(None);
        self.phase = Phase::Down {
            retry_at: now + retry_in,
        };
        self.events.push_back(WatchEvent::ConnectFailed {
            attempt: self.failures,
            error: error.clone(),
            retry_in,
        });
        self.last_error = error;
    }

    /// The link was lost: closed by either side, a GOAWAY, or a request that failed because
    /// the link did.
    pub fn handle_link_lost(&mut self, now: Instant, reason: String, go_away: Option<GoAway>) {
        if self.phase != Phase::Linked {
            return;
        }
        let was_up = self.down_since.is_none() && self.catchup.is_none();
        self.down_since.get_or_insert(now);
        self.failures = if was_up {
            0
        } else {
            // The last attempt connected but did not last until up to date.
            self.failures.saturating_add(1)
        };
        self.in_flight = None;
        self.queued.clear();
        self.lagged.clear();
        self.catchup = None;
        self.warm_until = None;
        self.recheck_unsure = false;
        let retry_in = self.retry_delay(go_away);
        self.phase = Phase::Down {
            retry_at: now + retry_in,
        };
        self.events.push_back(WatchEvent::Disconnected {
            reason: reason.clone(),
            go_away,
            retry_in,
        });
        self.last_error = reason;
    }

    /// A push from the link.
    pub fn handle_push(&mut self, now: Instant, push: Push) {
        if self.phase != Phase::Linked {
            return;
        }
        match push {
            Push::Events(events) => {
                for e in events {
                    self.apply_transition(e);
                }
            }
            Push::Lagged { users } => {
                self.events.push_back(WatchEvent::Lagged {
                    users: Some(users.len()),
                });
                for u in users {
                    let room = self.config.firehose
                        && self.firehose_known + self.lagged.len() < self.config.max_firehose_users;
                    if self.by_id.contains(&u) || self.known.contains_key(&u) || room {
                        self.lagged.insert(u);
                    }
                }
            }
            Push::LaggedAll => {
                self.events.push_back(WatchEvent::Lagged { users: None });
                let all = self
                    .users
                    .iter()
                    .chain(self.known.keys())
                    .chain(&self.unsure);
                self.lagged.extend(all);
            }
            Push::Closed {
                message, go_away, ..
            } => self.handle_link_lost(now, message, go_away),
        }
    }

    /// The answer to [`Request::Subscribe`] or [`Request::Query`].
    pub fn handle_records(&mut self, now: Instant, snapshot: Snapshot) {
        if self.phase != Phase::Linked {
            return;
        }
        let Some(purpose) = self.in_flight.take() else {
            return;
        };
        if !snapshot.warming && self.warm_until.is_some() {
            // Read after warming ended (SPEC.md § P6.10).
            self.warming_over();
        }
        let reason = match purpose {
            Purpose::Catchup if self.catchup.is_some_and(|s| s.first) => RecordReason::Initial,
            Purpose::Catchup => RecordReason::Reconnected,
            Purpose::Lagged => RecordReason::Lagged,
            Purpose::Warmed => RecordReason::Warmed,
        };
        let mut changes = 0;
        for record in snapshot.records {
            if self.apply_record(record, reason, snapshot.warming) {
                changes += 1;
            }
        }
        if snapshot.warming && !self.unsure.is_empty() && self.warm_until.is_none() {
            // Still warming past the time WELCOME gave: ask again a little later.
            self.warm_until = Some(now + Duration::from_millis(WARMING_RECHECK_MS));
        }
        if purpose == Purpose::Catchup {
            self.answered(now, changes);
        }
    }

    /// The ACK of [`Request::SubscribeAll`].
    pub fn handle_ack(&mut self, now: Instant) {
        if self.phase != Phase::Linked || self.in_flight.take().is_none() {
            return;
        }
        self.answered(now, 0);
    }

    /// The daemon refused a request, or the options cannot work: retrying would not help.
    pub fn handle_fatal(&mut self, error: String) {
        if self.phase != Phase::Finished {
            self.fail(error);
        }
    }

    fn give_up_at(&self) -> Option<Instant> {
        Some(self.down_since? + self.config.give_up_after?)
    }

    /// The delay before the next attempt: GOAWAY's `reconnect_after` (0 without one), plus a
    /// uniform draw up to `reconnect_jitter` for the first attempt, or up to
    /// `reconnect_min × 2^(failures − 1)` (at most `reconnect_max`) after failures.
    fn retry_delay(&mut self, go_away: Option<GoAway>) -> Duration {
        let floor = go_away.map_or(Duration::ZERO, |g| g.reconnect_after);
        floor + self.rng.up_to(self.backoff_ceiling())
    }

    /// The jitter's bound for the attempt after `failures` failed ones.
    fn backoff_ceiling(&self) -> Duration {
        if self.failures == 0 {
            return self.config.reconnect_jitter;
        }
        let doublings = (self.failures - 1).min(31);
        self.config
            .reconnect_min
            .saturating_mul(1 << doublings)
            .min(self.config.reconnect_max)
    }

    /// One request bringing the link up to date was answered, `changes` records differing.
    fn answered(&mut self, now: Instant, changes: usize) {
        let Some(catchup) = &mut self.catchup else {
            return;
        };
        catchup.changes += changes;
        catchup.left = catchup.left.saturating_sub(1);
        if catchup.left > 0 {
            return;
        }
        let catchup = *catchup;
        self.catchup = None;
        self.linked_before = true;
        let unsure = self.unsure.len();
        self.events.push_back(if catchup.first {
            WatchEvent::Watching {
                users: self.users.len(),
                firehose: self.config.firehose,
                unsure,
            }
        } else {
            WatchEvent::Reconnected {
                down: self
                    .down_since
                    .map_or(Duration::ZERO, |d| now.saturating_duration_since(d)),
                changes: catchup.changes,
                unsure,
            }
        });
        self.down_since = None;
        self.failures = 0;
        self.last_error.clear();
    }

    fn warming_over(&mut self) {
        self.warm_until = None;
        self.recheck_unsure = !self.unsure.is_empty();
    }

    fn fail(&mut self, error: String) {
        self.events.push_back(WatchEvent::Failed { error });
        self.phase = Phase::Finished;
    }

    /// Whether a user not yet known may be remembered.
    fn may_remember(&self, user: u64) -> bool {
        self.by_id.contains(&user)
            || (self.config.firehose && self.firehose_known < self.config.max_firehose_users)
    }

    fn remember(&mut self, record: PresenceRecord) {
        if !self.may_remember(record.user) {
            return;
        }
        if !self.by_id.contains(&record.user) {
            self.firehose_known += 1;
        }
        self.known.insert(
            record.user,
            Known {
                record,
                stale: false,
            },
        );
    }

    /// Applies a transition; reports it if it moves the view (or the user is not remembered).
    fn apply_transition(&mut self, e: Event) {
        let last_seen = |before: Option<u64>| match e.state {
            WireState::Online | WireState::Offline => Some(e.at_ms),
            WireState::Idle => before,
        };
        match self.known.get_mut(&e.user) {
            Some(k) if !k.stale && e.version <= k.record.version => return,
            Some(k) => {
                k.record = PresenceRecord {
                    user: e.user,
                    state: e.state,
                    last_seen_ms: last_seen(k.record.last_seen_ms),
                    version: e.version,
                };
                k.stale = false;
            }
            None => self.remember(PresenceRecord {
                user: e.user,
                state: e.state,
                last_seen_ms: last_seen(None),
                version: e.version,
            }),
        }
        // A transition confirms or replaces whatever was held back.
        self.unsure.remove(&e.user);
        self.events.push_back(WatchEvent::Transition(e));
    }

    /// Applies a record; reports it and returns true if it moves the view (or is the first
    /// known of the user).
    fn apply_record(
        &mut self,
        record: PresenceRecord,
        reason: RecordReason,
        warming: bool,
    ) -> bool {
        let maybe_wrong = warming && record.state == WireState::Offline;
        let reason = match self.known.get(&record.user) {
            Some(k) if maybe_wrong && k.record.state != WireState::Offline => {
                // Keep the user online or idle until sure (SPEC.md § P6.10).
                self.unsure.insert(record.user);
                return false;
            }
            None if maybe_wrong => {
                self.unsure.insert(record.user);
                RecordReason::Warming
            }
            _ => {
                self.unsure.remove(&record.user);
                reason
            }
        };
        match self.known.get_mut(&record.user) {
            None => self.remember(record),
            Some(k) => {
                let moves = if k.stale {
                    record.version != k.record.version
                } else {
                    record.version > k.record.version
                };
                k.stale = false;
                if !moves {
                    if record.version == k.record.version {
                        // Activity moves last seen without a transition.
                        k.record.last_seen_ms = k.record.last_seen_ms.max(record.last_seen_ms);
                    }
                    return false;
                }
                k.record = record;
            }
        }
        self.events.push_back(WatchEvent::Record { record, reason });
        true
    }
}
