//! The watcher's core with fake time and fixed seeds: what the application is told on the
//! first link, after transitions, lag, a restart and warming; the reconnection schedule.

use super::*;
use crate::GoAwayReason;
use presenced_wire::link::{Version, WireCause};
use proptest::prelude::*;

const SEED: u64 = 7;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rec(user: u64, state: WireState, version: u64) -> PresenceRecord {
    PresenceRecord {
        user,
        state,
        last_seen_ms: (version > 0).then_some(1_000 + version),
        version,
    }
}

fn ev(user: u64, prev: WireState, state: WireState, version: u64) -> Event {
    Event {
        user,
        state,
        prev,
        cause: WireCause::StateChange,
        at_ms: 2_000 + version,
        version,
    }
}

fn info(warm_remaining: Option<Duration>) -> LinkInfo {
    LinkInfo {
        version: Version::V2,
        warming: warm_remaining.is_some(),
        warm_remaining: warm_remaining.unwrap_or_default(),
        idle_timeout: Some(Duration::from_secs(30)),
        keep_alive: Duration::from_secs(5),
    }
}

fn limits(max_subscriptions: u32) -> Limits {
    Limits {
        max_frame_len: 1 << 20,
        max_users_per_request: 100_000,
        max_subscriptions,
        max_requests_in_flight: 64,
    }
}

fn answer(records: Vec<PresenceRecord>, warming: bool) -> Snapshot {
    Snapshot { records, warming }
}

fn drain(core: &mut WatchCore) -> Vec<WatchEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn go_away(after_ms: u64) -> Push {
    Push::Closed {
        code: Some(presenced_wire::link::ErrorCode::ShuttingDown),
        message: "restarting".into(),
        go_away: Some(GoAway {
            reason: GoAwayReason::Restarting,
            reconnect_after: ms(after_ms),
        }),
    }
}

fn retry_in(events: &[WatchEvent]) -> Duration {
    match events.last() {
        Some(WatchEvent::Disconnected { retry_in, .. })
        | Some(WatchEvent::ConnectFailed { retry_in, .. }) => *retry_in,
        other => panic!("no retry scheduled: {other:?}"),
    }
}

/// Connects (the driver's part done at `t`) and answers the subscription with `records`.
fn link_up(core: &mut WatchCore, t: Instant, records: Vec<PresenceRecord>, warming: bool) {
    assert_eq!(core.poll_action(), Some(Action::Connect));
    let warm = warming.then(|| Duration::from_secs(5));
    core.handle_connected(t, &info(warm), &limits(1000));
    let users: Vec<u64> = records.iter().map(|r| r.user).collect();
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Subscribe(users)))
    );
    assert_eq!(core.poll_action(), None, "one request at a time");
    core.handle_records(t, answer(records, warming));
}

/// A core watching users 1 and 2, up on its first link at `t0`: 1 online (v10), 2 offline (v20).
fn watching(t0: Instant) -> WatchCore {
    let mut core = WatchCore::new(WatchConfig::users([1, 2, 1]), SEED).unwrap();
    link_up(
        &mut core,
        t0,
        vec![
            rec(1, WireState::Online, 10),
            rec(2, WireState::Offline, 20),
        ],
        false,
    );
    drain(&mut core);
    core
}

/// Loses the link at `t` with a GOAWAY and reconnects when due; returns the reconnect time.
fn restart(core: &mut WatchCore, t: Instant) -> Instant {
    core.handle_push(t, go_away(250));
    let retry = retry_in(&drain(core));
    assert_eq!(core.poll_action(), None, "not before the delay");
    let at = t + retry;
    assert_eq!(core.poll_timeout(), Some(at));
    core.handle_timeout(at);
    at
}

#[test]
fn the_first_link_reports_every_record_then_watching() {
    let t0 = Instant::now();
    let mut core = WatchCore::new(WatchConfig::users([5, 6, 5]), SEED).unwrap();
    link_up(
        &mut core,
        t0,
        vec![rec(5, WireState::Idle, 3), rec(6, WireState::Offline, 0)],
        false,
    );
    assert_eq!(
        drain(&mut core),
        [
            WatchEvent::Record {
                record: rec(5, WireState::Idle, 3),
                reason: RecordReason::Initial
            },
            WatchEvent::Record {
                record: rec(6, WireState::Offline, 0),
                reason: RecordReason::Initial
            },
            WatchEvent::Watching {
                users: 2,
                firehose: false,
                unsure: 0
            },
        ]
    );
    assert_eq!(core.poll_action(), None);
    assert_eq!(core.poll_timeout(), None, "nothing to wait for");
}

#[test]
fn transitions_apply_forwards_only() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let newer = ev(1, WireState::Online, WireState::Idle, 11);
    core.handle_push(
        t0,
        Push::Events(vec![
            ev(1, WireState::Offline, WireState::Online, 10),
            newer,
            ev(2, WireState::Offline, WireState::Online, 19),
        ]),
    );
    assert_eq!(drain(&mut core), [WatchEvent::Transition(newer)]);
    // A record at the version known moves nothing; an older one neither.
    core.handle_push(t0, Push::Lagged { users: vec![1] });
    drain(&mut core);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1])))
    );
    core.handle_records(t0, answer(vec![rec(1, WireState::Online, 10)], false));
    assert_eq!(drain(&mut core), []);
}

#[test]
fn lagged_requeries_the_named_users_and_reports_only_what_moved() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    core.handle_push(t0, Push::Lagged { users: vec![1, 2] });
    core.handle_push(t0, Push::Lagged { users: vec![2, 99] });
    assert_eq!(
        drain(&mut core),
        [
            WatchEvent::Lagged { users: Some(2) },
            WatchEvent::Lagged { users: Some(2) }
        ]
    );
    // Merged into one query of the watched users (99 is not watched).
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1, 2])))
    );
    assert_eq!(core.poll_action(), None);
    core.handle_records(
        t0,
        answer(
            vec![rec(1, WireState::Online, 10), rec(2, WireState::Online, 21)],
            false,
        ),
    );
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Record {
            record: rec(2, WireState::Online, 21),
            reason: RecordReason::Lagged
        }]
    );
    // The transition the daemon dropped does not come back as news.
    core.handle_push(
        t0,
        Push::Events(vec![ev(2, WireState::Offline, WireState::Online, 21)]),
    );
    assert_eq!(drain(&mut core), []);
}

#[test]
fn lagged_all_requeries_every_watched_user() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    core.handle_push(t0, Push::LaggedAll);
    assert_eq!(drain(&mut core), [WatchEvent::Lagged { users: None }]);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1, 2])))
    );
}

#[test]
fn a_restart_with_equal_versions_tells_only_that_it_reconnected() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let back = restart(&mut core, t0);
    assert_eq!(core.poll_action(), Some(Action::Connect));
    let linked = back + ms(40);
    core.handle_connected(linked, &info(None), &limits(1000));
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Subscribe(vec![1, 2])))
    );
    // Same versions; user 1's last seen moved (activity), which is no news.
    let mut one = rec(1, WireState::Online, 10);
    one.last_seen_ms = Some(5_000);
    core.handle_records(
        linked,
        answer(vec![one, rec(2, WireState::Offline, 20)], false),
    );
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Reconnected {
            down: linked - t0,
            changes: 0,
            unsure: 0
        }]
    );
    // The next link's transitions flow as before.
    let next = ev(1, WireState::Online, WireState::Offline, 12);
    core.handle_push(linked, Push::Events(vec![next]));
    assert_eq!(drain(&mut core), [WatchEvent::Transition(next)]);
}

#[test]
fn a_reconnection_reports_records_whose_version_differs_either_way() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let back = restart(&mut core, t0);
    link_up(
        &mut core,
        back,
        // User 1 logged out while away; user 2's daemon lost what it had (version 0 is lower,
        // and what the daemon now says).
        vec![
            rec(1, WireState::Offline, 15),
            rec(2, WireState::Offline, 0),
        ],
        false,
    );
    let events = drain(&mut core);
    assert_eq!(
        events,
        [
            WatchEvent::Record {
                record: rec(1, WireState::Offline, 15),
                reason: RecordReason::Reconnected
            },
            WatchEvent::Record {
                record: rec(2, WireState::Offline, 0),
                reason: RecordReason::Reconnected
            },
            WatchEvent::Reconnected {
                down: back - t0,
                changes: 2,
                unsure: 0
            },
        ]
    );
    // On this link, versions only go forwards again.
    core.handle_push(
        back,
        Push::Events(vec![ev(2, WireState::Offline, WireState::Online, 0)]),
    );
    assert_eq!(drain(&mut core), []);
}

#[test]
fn a_first_attempt_waits_the_go_away_then_jitter() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    core.handle_push(t0, go_away(250));
    let events = drain(&mut core);
    let retry = retry_in(&events);
    assert!(
        retry >= ms(250) && retry <= ms(250 + RECONNECT_JITTER_MS),
        "{retry:?}"
    );
    assert!(matches!(
        &events[0],
        WatchEvent::Disconnected { go_away: Some(g), .. } if g.reconnect_after == ms(250)
    ));
    // Without a GOAWAY: the jitter alone.
    let mut core = watching(t0);
    core.handle_push(
        t0,
        Push::Closed {
            code: None,
            message: "timed out".into(),
            go_away: None,
        },
    );
    assert!(retry_in(&drain(&mut core)) <= ms(RECONNECT_JITTER_MS));
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let schedule = |seed| {
        let t0 = Instant::now();
        let mut core = WatchCore::new(WatchConfig::users([1]), seed).unwrap();
        assert_eq!(core.poll_action(), Some(Action::Connect));
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            core.handle_connect_failed(t, "refused".into());
            let d = retry_in(&drain(&mut core));
            delays.push(d);
            t += d;
            core.handle_timeout(t);
            assert_eq!(core.poll_action(), Some(Action::Connect));
        }
        delays
    };
    assert_eq!(schedule(1), schedule(1));
    assert_ne!(schedule(1), schedule(2));
}

#[test]
fn first_delays_spread_over_the_whole_jitter() {
    let t0 = Instant::now();
    let delays: Vec<Duration> = (0..2000)
        .map(|seed| {
            let mut core = WatchCore::new(WatchConfig::users([1]), seed).unwrap();
            link_up(&mut core, t0, vec![rec(1, WireState::Online, 1)], false);
            drain(&mut core);
            core.handle_push(t0, go_away(0));
            retry_in(&drain(&mut core))
        })
        .collect();
    let (low, high) = (
        ms(RECONNECT_JITTER_MS / 10),
        ms(RECONNECT_JITTER_MS * 9 / 10),
    );
    assert!(delays.iter().any(|&d| d < low), "none below {low:?}");
    assert!(delays.iter().any(|&d| d > high), "none above {high:?}");
    assert!(delays.iter().all(|&d| d <= ms(RECONNECT_JITTER_MS)));
}

#[test]
fn a_link_lost_before_it_was_up_to_date_counts_as_a_failed_attempt() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let back = restart(&mut core, t0);
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connected(back, &info(None), &limits(1000));
    assert!(matches!(core.poll_action(), Some(Action::Send(_))));
    // The subscription failed with the link: the backoff grows, down time keeps counting.
    core.handle_link_lost(back, "reset".into(), None);
    assert!(retry_in(&drain(&mut core)) <= ms(RECONNECT_MIN_MS));
    core.handle_timeout(back + ms(RECONNECT_MIN_MS));
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connect_failed(back + ms(RECONNECT_MIN_MS), "refused".into());
    let events = drain(&mut core);
    assert!(matches!(
        events[0],
        WatchEvent::ConnectFailed { attempt: 2, .. }
    ));
    assert!(retry_in(&events) <= ms(2 * RECONNECT_MIN_MS));
    let again = back + ms(3 * RECONNECT_MIN_MS);
    core.handle_timeout(again);
    link_up(
        &mut core,
        again,
        vec![
            rec(1, WireState::Online, 10),
            rec(2, WireState::Offline, 20),
        ],
        false,
    );
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Reconnected {
            down: again - t0,
            changes: 0,
            unsure: 0
        }]
    );
}

#[test]
fn a_first_link_lost_before_it_was_up_to_date_leaves_the_next_one_first() {
    let t0 = Instant::now();
    let mut core = WatchCore::new(WatchConfig::users([1]), SEED).unwrap();
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connected(t0, &info(None), &limits(1000));
    assert!(core.poll_action().is_some());
    core.handle_push(t0, go_away(0));
    let again = t0 + retry_in(&drain(&mut core));
    core.handle_timeout(again);
    link_up(&mut core, again, vec![rec(1, WireState::Online, 4)], false);
    assert_eq!(
        drain(&mut core),
        [
            WatchEvent::Record {
                record: rec(1, WireState::Online, 4),
                reason: RecordReason::Initial
            },
            WatchEvent::Watching {
                users: 1,
                firehose: false,
                unsure: 0
            }
        ]
    );
}

proptest! {
    /// After n failed attempts the delay is uniform up to min × 2^(n−1), capped; the first
    /// attempt after a GOAWAY waits its delay plus at most the jitter.
    #[test]
    fn backoff_stays_within_its_bounds(
        seed in any::<u64>(),
        after_ms in 0u64..10_000,
        failures in 1usize..40,
        min_ms in 1u64..5_000,
        extra_ms in 0u64..60_000,
    ) {
        let t0 = Instant::now();
        let config = WatchConfig {
            reconnect_min: ms(min_ms),
            reconnect_max: ms(min_ms + extra_ms),
            ..WatchConfig::users([1])
        };
        let mut core = WatchCore::new(config.clone(), seed).unwrap();
        link_up(&mut core, t0, vec![rec(1, WireState::Online, 1)], false);
        drain(&mut core);
        core.handle_push(t0, go_away(after_ms));
        let first = retry_in(&drain(&mut core));
        prop_assert!(first >= ms(after_ms));
        prop_assert!(first <= ms(after_ms) + config.reconnect_jitter);
        let mut t = t0 + first;
        for n in 1..=failures {
            core.handle_timeout(t);
            prop_assert_eq!(core.poll_action(), Some(Action::Connect));
            core.handle_connect_failed(t, "refused".into());
            let d = retry_in(&drain(&mut core));
            let doubled = config.reconnect_min.saturating_mul(1 << (n - 1).min(31));
            prop_assert!(d <= doubled.min(config.reconnect_max), "attempt {}: {:?}", n, d);
            t += d;
        }
    }
}

#[test]
fn giving_up_after_the_configured_time_down() {
    let t0 = Instant::now();
    let config = WatchConfig {
        give_up_after: Some(Duration::from_secs(5)),
        ..WatchConfig::users([1])
    };
    let mut core = WatchCore::new(config, SEED).unwrap();
    link_up(&mut core, t0, vec![rec(1, WireState::Online, 1)], false);
    drain(&mut core);
    core.handle_push(
        t0,
        Push::Closed {
            code: None,
            message: "gone".into(),
            go_away: None,
        },
    );
    let t = loop {
        let t = core.poll_timeout().expect("a deadline");
        assert!(t <= t0 + Duration::from_secs(5));
        core.handle_timeout(t);
        if core.is_finished() {
            break t;
        }
        // Attempts hang until the deadline, or fail.
        assert_eq!(core.poll_action(), Some(Action::Connect));
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        core.handle_connect_failed(t, "no answer".into());
    };
    let events = drain(&mut core);
    assert_eq!(
        events.last(),
        Some(&WatchEvent::GaveUp {
            down: Duration::from_secs(5),
            error: "no answer".into()
        })
    );
    assert_eq!(t, t0 + Duration::from_secs(5));
    assert_eq!(core.poll_action(), None);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn warming_holds_an_offline_back_until_warming_ends() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let back = restart(&mut core, t0);
    // The daemon came back without its state: user 1 (online here) reads offline, version 0.
    link_up(
        &mut core,
        back,
        vec![
            rec(1, WireState::Offline, 0),
            rec(2, WireState::Offline, 20),
        ],
        true,
    );
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Reconnected {
            down: back - t0,
            changes: 0,
            unsure: 1
        }]
    );
    assert_eq!(core.poll_action(), None, "nothing asked while warming");
    let warm_end = back + Duration::from_secs(5);
    assert_eq!(core.poll_timeout(), Some(warm_end));
    core.handle_timeout(warm_end);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1])))
    );
    // Still offline once warming is over: it is true now.
    core.handle_records(warm_end, answer(vec![rec(1, WireState::Offline, 0)], false));
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Record {
            record: rec(1, WireState::Offline, 0),
            reason: RecordReason::Warmed
        }]
    );
    assert_eq!(core.poll_action(), None);
}

#[test]
fn an_unknown_user_shown_offline_while_warming_is_reported_as_unsure() {
    let t0 = Instant::now();
    let mut core = WatchCore::new(WatchConfig::users([1, 2]), SEED).unwrap();
    // A first link to a warming daemon: nothing known of user 1, who reads offline.
    link_up(
        &mut core,
        t0,
        vec![rec(1, WireState::Offline, 0), rec(2, WireState::Online, 9)],
        true,
    );
    assert_eq!(
        drain(&mut core),
        [
            WatchEvent::Record {
                record: rec(1, WireState::Offline, 0),
                reason: RecordReason::Warming
            },
            WatchEvent::Record {
                record: rec(2, WireState::Online, 9),
                reason: RecordReason::Initial
            },
            WatchEvent::Watching {
                users: 2,
                firehose: false,
                unsure: 1
            }
        ]
    );
    // Asked again when warming ends; the same answer is no news.
    let warm_end = t0 + Duration::from_secs(5);
    core.handle_timeout(warm_end);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1])))
    );
    core.handle_records(warm_end, answer(vec![rec(1, WireState::Offline, 0)], false));
    assert_eq!(drain(&mut core), []);
    assert_eq!(core.poll_action(), None);
}

#[test]
fn a_transition_settles_an_unsure_user() {
    let t0 = Instant::now();
    let mut core = WatchCore::new(WatchConfig::users([1]), SEED).unwrap();
    link_up(&mut core, t0, vec![rec(1, WireState::Offline, 0)], true);
    drain(&mut core);
    let online = ev(1, WireState::Offline, WireState::Online, 30);
    core.handle_push(t0, Push::Events(vec![online]));
    assert_eq!(drain(&mut core), [WatchEvent::Transition(online)]);
    core.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(core.poll_action(), None, "nobody left to ask about");
}

#[test]
fn an_answer_read_after_warming_ends_it_early() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    let back = restart(&mut core, t0);
    link_up(
        &mut core,
        back,
        vec![
            rec(1, WireState::Offline, 0),
            rec(2, WireState::Offline, 20),
        ],
        true,
    );
    drain(&mut core);
    core.handle_push(back, Push::Lagged { users: vec![2] });
    drain(&mut core);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![2])))
    );
    core.handle_records(back, answer(vec![rec(2, WireState::Offline, 20)], false));
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1])))
    );
    // Still answered as warming (the daemon's clock is behind): held, asked again later.
    core.handle_records(back, answer(vec![rec(1, WireState::Offline, 0)], true));
    assert_eq!(drain(&mut core), []);
    let recheck = back + ms(WARMING_RECHECK_MS);
    assert_eq!(core.poll_timeout(), Some(recheck));
    core.handle_timeout(recheck);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![1])))
    );
    core.handle_records(recheck, answer(vec![rec(1, WireState::Offline, 0)], false));
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Record {
            record: rec(1, WireState::Offline, 0),
            reason: RecordReason::Warmed
        }]
    );
}

#[test]
fn the_firehose_resyncs_the_users_it_has_seen() {
    let t0 = Instant::now();
    let config = WatchConfig {
        max_firehose_users: 2,
        ..WatchConfig::firehose()
    };
    let mut core = WatchCore::new(config, SEED).unwrap();
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connected(t0, &info(None), &limits(1000));
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::SubscribeAll))
    );
    core.handle_ack(t0);
    assert_eq!(
        drain(&mut core),
        [WatchEvent::Watching {
            users: 0,
            firehose: true,
            unsure: 0
        }]
    );
    let seen = [
        ev(7, WireState::Offline, WireState::Online, 1),
        ev(8, WireState::Offline, WireState::Online, 2),
        ev(9, WireState::Offline, WireState::Online, 3),
    ];
    core.handle_push(t0, Push::Events(seen.to_vec()));
    assert_eq!(drain(&mut core).len(), 3, "every transition is reported");
    let back = restart(&mut core, t0);
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connected(back, &info(None), &limits(1000));
    // The firehose first, then the users remembered (9 was past the bound).
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::SubscribeAll))
    );
    core.handle_ack(back);
    assert_eq!(
        core.poll_action(),
        Some(Action::Send(Request::Query(vec![7, 8])))
    );
    core.handle_records(
        back,
        answer(
            vec![rec(7, WireState::Online, 1), rec(8, WireState::Offline, 5)],
            false,
        ),
    );
    assert_eq!(
        drain(&mut core),
        [
            WatchEvent::Record {
                record: rec(8, WireState::Offline, 5),
                reason: RecordReason::Reconnected
            },
            WatchEvent::Reconnected {
                down: back - t0,
                changes: 1,
                unsure: 0
            }
        ]
    );
}

#[test]
fn more_users_than_the_daemon_allows_is_a_failure() {
    let t0 = Instant::now();
    let mut core = WatchCore::new(WatchConfig::users(1..=10), SEED).unwrap();
    assert_eq!(core.poll_action(), Some(Action::Connect));
    core.handle_connected(t0, &info(None), &limits(9));
    let events = drain(&mut core);
    assert!(
        matches!(&events[..], [WatchEvent::Failed { error }] if error.contains("allows 9")),
        "{events:?}"
    );
    assert!(core.is_finished());
    assert_eq!(core.poll_action(), None);
}

#[test]
fn a_refused_request_stops_the_watcher() {
    let t0 = Instant::now();
    let mut core = watching(t0);
    core.handle_push(t0, Push::LaggedAll);
    assert!(core.poll_action().is_some());
    core.handle_fatal("refused (unauthorized)".into());
    assert_eq!(
        drain(&mut core).last(),
        Some(&WatchEvent::Failed {
            error: "refused (unauthorized)".into()
        })
    );
    assert!(core.is_finished());
}

#[test]
fn bad_configurations_are_refused() {
    let check = |c: WatchConfig| WatchCore::new(c, SEED).unwrap_err().to_string();
    assert!(check(WatchConfig::users([])).contains("nothing to watch"));
    assert!(check(WatchConfig::users([3, 0])).contains("user id 0"));
    let slow = WatchConfig {
        reconnect_min: Duration::from_secs(60),
        ..WatchConfig::users([1])
    };
    assert!(check(slow).contains("reconnect_min"));
    let zero = WatchConfig {
        reconnect_min: Duration::ZERO,
        ..WatchConfig::users([1])
    };
    assert!(check(zero).contains("reconnect_min"));
}
