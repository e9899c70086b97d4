//! The hub's rules, driven as its thread drives it: shard messages and link commands in,
//! requests and frames out, every frame decoded with the wire codec.

use super::*;
use crate::bus::TransitionBatch;
use presenced_core::event::{Cause, Presence, PublicState, Transition};
use presenced_wire::link::{decode_server, ErrorCode, ServerFrame, WireState};

/// A frame as a test reads it.
#[derive(Debug, PartialEq)]
enum Seen {
    Presence {
        request: u32,
        last: bool,
        users: Vec<u64>,
    },
    Events(Vec<(u64, WireState)>),
    Lagged(Vec<u64>),
    LaggedAll,
    Ack(u32),
    Error(u32, ErrorCode),
    Stats(u32, Box<Stats>),
    Pace(u32),
}

fn read(out: &Outgoing) -> Seen {
    let frame = &out.frame[4..];
    if let Ok(ServerFrame::Pace { interval_ms }) = wire::Version::V3.decode_server(frame) {
        return Seen::Pace(interval_ms);
    }
    match decode_server(frame).expect("the hub writes valid frames") {
        ServerFrame::Presence(p) => Seen::Presence {
            request: p.request_id,
            last: p.is_final,
            users: p.records.iter().map(|r| r.user).collect(),
        },
        ServerFrame::Events(e) => Seen::Events(e.iter().map(|e| (e.user, e.state)).collect()),
        ServerFrame::Lagged(users) => {
            let mut users: Vec<u64> = users.iter().collect();
            users.sort_unstable();
            Seen::Lagged(users)
        }
        ServerFrame::LaggedAll => Seen::LaggedAll,
        ServerFrame::Ack { request_id } => Seen::Ack(request_id),
        ServerFrame::Error(e) => Seen::Error(e.request_id, e.error_code().unwrap()),
        ServerFrame::StatsReply { request_id, json } => {
            Seen::Stats(request_id, Box::new(Stats::from_json(json).unwrap()))
        }
        other => panic!("the hub does not send {other:?}"),
    }
}

fn hub(shards: usize, queue_bytes: usize) -> Hub {
    Hub::new(HubConfig {
        shards,
        index: 0,
        queue_bytes,
        cluster: None,
    })
}

/// A queue limit no test below reaches.
const ROOM: usize = 1 << 20;

/// The limits `open` announces: the smallest frame limit, 100 subscriptions.
const LIMITS: wire::Limits = wire::Limits {
    max_frame_len: wire::MIN_MAX_FRAME_LEN,
    max_users_per_request: 1_000,
    max_subscriptions: 100,
    max_requests_in_flight: 8,
};

/// Every frame the hub has for links now, as `(link, frame)`.
fn frames(hub: &mut Hub) -> Vec<(u32, Seen)> {
    sized(hub).into_iter().map(|(l, f, _)| (l, f)).collect()
}

/// Every frame the hub has for links now, as `(link, frame, what it takes in the queue)`.
fn sized(hub: &mut Hub) -> Vec<(u32, Seen, usize)> {
    std::iter::from_fn(|| hub.poll_transmit())
        .map(|(link, out)| (link, read(&out), out.queued_bytes()))
        .collect()
}

/// The one frame the hub has now, for link 1, and what it takes in the queue.
fn one(hub: &mut Hub) -> (Seen, usize) {
    let mut got = sized(hub);
    assert_eq!(got.len(), 1, "{got:?}");
    let (link, seen, bytes) = got.remove(0);
    assert_eq!(link, 1);
    (seen, bytes)
}

/// Opens link `link` (version 1), named `gw-<link>`, from 127.0.0.1:<5000 + link>, announced
/// [`LIMITS`].
fn open(hub: &mut Hub, link: u32) {
    open_with(hub, link, LIMITS);
}

/// Opens link `link` as `open` does, announced `limits`.
fn open_with(hub: &mut Hub, link: u32, limits: wire::Limits) {
    hub.handle_command(Command::Open {
        link,
        version: presenced_wire::link::Version::V1,
        name: format!("gw-{link}"),
        peer: SocketAddr::from(([127, 0, 0, 1], 5000 + link as u16)),
        limits,
    });
}

fn requests(hub: &mut Hub) -> Vec<(usize, Request)> {
    std::iter::from_fn(|| hub.poll_request()).collect()
}

fn online(user: u64, version: u64) -> Transition {
    Transition {
        user,
        state: PublicState::Online,
        prev: PublicState::Offline,
        at_ms: 1_000,
        cause: Cause::FirstHeartbeat,
        version,
        devices: 1,
        seen: true,
    }
}

fn transitions(ts: &[Transition]) -> ToHub {
    let mut batch = TransitionBatch::new();
    for &t in ts {
        batch.push(t);
    }
    ToHub::Transitions(batch)
}

fn answer(request: Request) -> ToHub {
    let Request::Snapshot {
        link,
        request,
        subscribe,
        users,
    } = request
    else {
        panic!("not a snapshot request: {request:?}")
    };
    ToHub::Snapshot {
        link,
        request,
        subscribe,
        presence: users.into_iter().map(|u| (u, Presence::UNKNOWN)).collect(),
        warming: false,
    }
}

fn subscribe(hub: &mut Hub, link: u32, request: u32, users: &[u64]) {
    hub.handle_command(Command::Subscribe {
        link,
        request,
        users: users.to_vec(),
    });
    for (_, r) in requests(hub) {
        hub.handle_shard(answer(r));
    }
}

#[test]
fn subscribe_is_atomic_with_its_snapshot() {
    let mut hub = hub(1, ROOM);
    open(&mut hub, 1);
    hub.handle_command(Command::Subscribe {
        link: 1,
        request: 9,
        users: vec![5],
    });
    let asked = requests(&mut hub);
    assert_eq!(asked.len(), 1);
    // The shard emitted a transition before it answered: the snapshot reflects it, so the
    // new subscriber must not get it as an event too.
    hub.handle_shard(transitions(&[online(5, 1)]));
    assert_eq!(frames(&mut hub), vec![]);
    hub.handle_shard(answer(asked[0].1.clone()));
    // A transition after the answer reaches it.
    hub.handle_shard(transitions(&[online(5, 2)]));
    assert_eq!(
        frames(&mut hub),
        vec![
            (
                1,
                Seen::Presence {
                    request: 9,
                    last: true,
                    users: vec![5]
                }
            ),
            (1, Seen::Events(vec![(5, WireState::Online)])),
        ]
    );
}

#[test]
fn each_link_gets_a_transition_once() {
    let mut hub = hub(2, ROOM);
    for link in [1, 2, 3] {
        open(&mut hub, link);
    }
    // Link 1: subscribed twice and on the firehose; link 2: once; link 3: firehose only.
    subscribe(&mut hub, 1, 1, &[5, 6]);
    subscribe(&mut hub, 1, 2, &[5]);
    hub.handle_command(Command::Firehose {
        link: 1,
        request: 3,
        on: true,
    });
    subscribe(&mut hub, 2, 1, &[5]);
    hub.handle_command(Command::Firehose {
        link: 3,
        request: 1,
        on: true,
    });
    frames(&mut hub);
    hub.handle_shard(transitions(&[online(5, 1), online(7, 1)]));
    let mut got = frames(&mut hub);
    got.sort_by_key(|(link, _)| *link);
    assert_eq!(
        got,
        vec![
            (
                1,
                Seen::Events(vec![(5, WireState::Online), (7, WireState::Online)])
            ),
            (2, Seen::Events(vec![(5, WireState::Online)])),
            (
                3,
                Seen::Events(vec![(5, WireState::Online), (7, WireState::Online)])
            ),
        ]
    );
    // Unsubscribed and closed links get nothing more.
    hub.handle_command(Command::Unsubscribe {
        link: 2,
        request: 2,
        users: vec![5],
    });
    hub.handle_command(Command::Close { link: 3 });
    assert_eq!(frames(&mut hub), vec![(2, Seen::Ack(2))]);
    hub.handle_shard(transitions(&[online(5, 2)]));
    assert_eq!(
        frames(&mut hub),
        vec![(1, Seen::Events(vec![(5, WireState::Online)]))]
    );
    assert_eq!(hub.links(), 2);
}

#[test]
fn a_full_queue_loses_events_and_the_lagged_frame_goes_out_at_once() {
    let mut hub = hub(1, 300);
    open(&mut hub, 1);
    subscribe(&mut hub, 1, 1, &[1, 2, 3, 4]);
    // The PRESENCE answer (4 + 10 + 4 × 26 bytes) and one EVENTS frame (4 + 5 + 27), each
    // with its 64 bytes of overhead, fit under 300.
    let (_, presence) = one(&mut hub);
    hub.handle_shard(transitions(&[online(1, 1)]));
    let (_, events) = one(&mut hub);
    assert_eq!((presence, events), (182, 100));
    // The next EVENTS frame would pass 300: dropped, and LAGGED goes out at once, above the
    // limit.
    hub.handle_shard(transitions(&[online(2, 1), online(3, 1)]));
    let (seen, lagged) = one(&mut hub);
    assert_eq!(seen, Seen::Lagged(vec![2, 3]));
    // With that LAGGED frame unwritten, no transition goes ahead of the next one.
    hub.handle_shard(transitions(&[online(4, 1)]));
    assert_eq!(frames(&mut hub), vec![]);
    assert_eq!(hub.stats().events_dropped, 3);
    // The task wrote everything: the next LAGGED names the user dropped since.
    let bytes = presence + events + lagged;
    hub.handle_command(Command::Written { link: 1, bytes });
    let (seen, lagged) = one(&mut hub);
    assert_eq!(seen, Seen::Lagged(vec![4]));
    assert_eq!(hub.stats().lag_signals, 2);
    // Caught up: events flow again.
    hub.handle_command(Command::Written {
        link: 1,
        bytes: lagged,
    });
    hub.handle_shard(transitions(&[online(4, 2)]));
    assert_eq!(one(&mut hub).0, Seen::Events(vec![(4, WireState::Online)]));
}

#[test]
fn an_empty_queue_takes_any_frame_and_a_stuck_link_still_gets_its_lagged_frame() {
    // A limit smaller than any frame: the link holds one EVENTS frame at a time.
    let mut hub = hub(1, 1);
    open(&mut hub, 1);
    subscribe(&mut hub, 1, 1, &[1, 2]);
    // Request answers are never held to the limit.
    let (_, presence) = one(&mut hub);
    hub.handle_command(Command::Written {
        link: 1,
        bytes: presence,
    });
    hub.handle_shard(transitions(&[online(1, 1)]));
    assert_eq!(one(&mut hub).0, Seen::Events(vec![(1, WireState::Online)]));
    // The gateway reads no more: every later event is lost, and it is told so at once.
    hub.handle_shard(transitions(&[online(2, 1)]));
    assert_eq!(one(&mut hub).0, Seen::Lagged(vec![2]));
    for version in 2..100 {
        hub.handle_shard(transitions(&[online(1, version), online(2, version)]));
        assert_eq!(frames(&mut hub), vec![]);
    }
    assert_eq!(hub.stats().events_dropped, 1 + 2 * 98);
    assert_eq!(hub.stats().lag_signals, 1);
}

#[test]
fn transitions_shed_by_a_shard_make_every_watching_link_lag() {
    let mut hub = hub(1, ROOM);
    for link in [1, 2, 3] {
        open(&mut hub, link);
    }
    subscribe(&mut hub, 1, 1, &[1]);
    hub.handle_command(Command::Firehose {
        link: 2,
        request: 1,
        on: true,
    });
    frames(&mut hub);
    hub.handle_shard(ToHub::Shed(10));
    let mut got = frames(&mut hub);
    got.sort_by_key(|(link, _)| *link);
    // Link 3 watches nobody: it lost nothing.
    assert_eq!(got, vec![(1, Seen::LaggedAll), (2, Seen::LaggedAll)]);
    assert_eq!(hub.stats().shard_shed, 10);
}

#[test]
fn queries_ask_each_owning_shard_and_the_last_answer_is_final() {
    let mut hub = hub(4, ROOM);
    open(&mut hub, 1);
    let users: Vec<u64> = (1..=40).collect();
    hub.handle_command(Command::Query {
        link: 1,
        request: 3,
        users: users.clone(),
    });
    let asked = requests(&mut hub);
    assert!(asked.len() > 1, "40 users span several of 4 shards");
    let mut seen: Vec<u64> = Vec::new();
    for (shard, request) in &asked {
        let Request::Snapshot {
            users, subscribe, ..
        } = request
        else {
            panic!()
        };
        assert!(!subscribe);
        assert!(users.iter().all(|&u| owner(u, 4) == *shard));
        seen.extend(users);
    }
    seen.sort_unstable();
    assert_eq!(seen, users);
    for (_, request) in asked.clone() {
        hub.handle_shard(answer(request));
    }
    let got = frames(&mut hub);
    assert_eq!(got.len(), asked.len());
    let finals: Vec<bool> = got
        .iter()
        .map(|(_, f)| matches!(f, Seen::Presence { last: true, .. }))
        .collect();
    assert_eq!(finals.iter().filter(|&&f| f).count(), 1);
    assert!(finals.last().unwrap());
    // A query creates no subscription.
    hub.handle_shard(transitions(&[online(1, 1)]));
    assert_eq!(frames(&mut hub), vec![]);
}

#[test]
fn subscriptions_past_the_limit_are_refused() {
    let mut hub = hub(1, ROOM);
    open(&mut hub, 1);
    let users: Vec<u64> = (1..=100).collect();
    subscribe(&mut hub, 1, 1, &users);
    frames(&mut hub);
    hub.handle_command(Command::Subscribe {
        link: 1,
        request: 2,
        users: vec![101],
    });
    assert_eq!(requests(&mut hub), vec![]);
    assert_eq!(
        frames(&mut hub),
        vec![(1, Seen::Error(2, ErrorCode::SubscriptionLimit))]
    );
}

#[test]
fn each_link_keeps_the_limits_its_welcome_announced() {
    let mut hub = hub(1, ROOM);
    let small = wire::Limits {
        max_subscriptions: 2,
        ..LIMITS
    };
    let large = wire::Limits {
        max_frame_len: 1 << 20,
        ..LIMITS
    };
    open_with(&mut hub, 1, small);
    open_with(&mut hub, 2, large);
    // Link 1 was told 2 subscriptions, link 2 100.
    subscribe(&mut hub, 1, 1, &[1, 2]);
    subscribe(&mut hub, 2, 1, &[1, 2, 3]);
    frames(&mut hub);
    hub.handle_command(Command::Subscribe {
        link: 1,
        request: 2,
        users: vec![3],
    });
    assert_eq!(requests(&mut hub), vec![]);
    assert_eq!(
        frames(&mut hub),
        vec![(1, Seen::Error(2, ErrorCode::SubscriptionLimit))]
    );
    // Link 1 was told 64 KiB frames, link 2 1 MiB: 5000 events take link 1 several frames,
    // none longer than its limit, and link 2 one.
    for link in [1, 2] {
        hub.handle_command(Command::Firehose {
            link,
            request: 3,
            on: true,
        });
    }
    frames(&mut hub);
    let burst: Vec<Transition> = (1..=5_000).map(|u| online(u, 1)).collect();
    for chunk in burst.chunks(32) {
        hub.handle_shard(transitions(chunk));
    }
    let out: Vec<(u32, Outgoing)> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    let frames_of = |link: u32| out.iter().filter(move |(l, _)| *l == link);
    assert_eq!(frames_of(2).count(), 1);
    assert!(frames_of(1).count() > 1);
    for (link, o) in &out {
        let limit = if *link == 1 { small } else { large }.max_frame_len as usize;
        assert!(o.frame.len() - 4 <= limit, "link {link}: {}", o.frame.len());
    }
}

#[test]
fn a_lowered_queue_limit_applies_from_the_next_frame_and_a_raised_one_lets_events_through() {
    let mut hub = hub(1, 1_000);
    open(&mut hub, 1);
    subscribe(&mut hub, 1, 1, &[1, 2, 3]);
    hub.handle_shard(transitions(&[online(1, 1)]));
    // PRESENCE and EVENTS queued: 156 + 100 bytes, under 1,000.
    assert_eq!(sized(&mut hub).iter().map(|f| f.2).sum::<usize>(), 256);
    // Lowered to 200: nothing queued is taken back, the next events are lost.
    hub.handle_command(Command::QueueBytes { bytes: 200 });
    hub.handle_shard(transitions(&[online(2, 1)]));
    assert_eq!(frames(&mut hub), vec![(1, Seen::Lagged(vec![2]))]);
    assert_eq!(hub.stats().events_dropped, 1);
    // Raised to 1,000: room again, with nothing written.
    hub.handle_command(Command::QueueBytes { bytes: 1_000 });
    hub.handle_shard(transitions(&[online(3, 1)]));
    assert_eq!(
        frames(&mut hub),
        vec![(1, Seen::Events(vec![(3, WireState::Online)]))]
    );
}

#[test]
fn stats_gather_every_shard_and_the_servers_figures() {
    let mut hub = hub(3, ROOM);
    open(&mut hub, 1);
    let server = ServerStats {
        links_refused: 2,
        ..ServerStats::default()
    };
    hub.handle_command(Command::Stats {
        link: 1,
        request: 4,
        server: Box::new(server),
    });
    let asked = requests(&mut hub);
    assert_eq!(asked.len(), 3);
    // Answers arrive in any order; the reply lists shards in order.
    for (shard, _) in asked.iter().rev() {
        hub.handle_shard(ToHub::Stats {
            link: Some(1),
            request: 4,
            stats: Box::new(ShardStats {
                shard: *shard as u32,
                datagrams: 10 + *shard as u64,
                ..ShardStats::default()
            }),
        });
    }
    let got = frames(&mut hub);
    let [(1, Seen::Stats(4, stats))] = &got[..] else {
        panic!("{got:?}")
    };
    let shards: Vec<(u32, u64)> = stats
        .shards
        .iter()
        .map(|s| (s.shard, s.datagrams))
        .collect();
    assert_eq!(shards, vec![(0, 10), (1, 11), (2, 12)]);
    assert_eq!(stats.link.links_refused, 2);
    assert_eq!(stats.link.links, 1);
}

#[test]
fn a_closed_link_leaves_nothing_behind() {
    let mut hub = hub(2, ROOM);
    open(&mut hub, 1);
    subscribe(&mut hub, 1, 1, &[1, 2, 3]);
    hub.handle_command(Command::Query {
        link: 1,
        request: 2,
        users: vec![4],
    });
    let asked = requests(&mut hub);
    hub.handle_command(Command::Close { link: 1 });
    assert_eq!(frames(&mut hub), vec![]);
    // A late answer for the closed link is dropped.
    for (_, r) in asked {
        hub.handle_shard(answer(r));
    }
    hub.handle_shard(transitions(&[online(1, 1)]));
    assert_eq!(frames(&mut hub), vec![]);
    assert!(hub.subscribers.is_empty() && hub.pending.is_empty());
}

/// Answers every stats request the hub has for the shards with a shard's empty counters.
fn answer_stats(hub: &mut Hub) {
    for (shard, request) in requests(hub) {
        let Request::Stats { link, request } = request else {
            panic!("not a stats request: {request:?}")
        };
        hub.handle_shard(ToHub::Stats {
            link,
            request,
            stats: Box::new(ShardStats {
                shard: shard as u32,
                ..ShardStats::default()
            }),
        });
    }
}

#[test]
fn the_daemons_scrape_gets_every_links_figures_and_no_link_a_frame() {
    let mut hub = hub(1, 1);
    open(&mut hub, 1);
    open(&mut hub, 2);
    subscribe(&mut hub, 1, 1, &[1, 2, 3, 4]);
    hub.handle_command(Command::Firehose {
        link: 2,
        request: 1,
        on: true,
    });
    // Link 1's PRESENCE answer and link 2's ACK, written.
    for (link, _, bytes) in sized(&mut hub) {
        hub.handle_command(Command::Written { link, bytes });
    }
    // One EVENTS frame each fills both queues; the next transitions are dropped for both,
    // and both are told.
    hub.handle_shard(transitions(&[online(1, 1)]));
    let mut got = sized(&mut hub);
    hub.handle_shard(transitions(&[online(2, 1), online(3, 1)]));
    got.extend(sized(&mut hub));
    let queued: usize = got.iter().filter(|f| f.0 == 1).map(|f| f.2).sum();
    let seen: Vec<(u32, Seen)> = got.into_iter().map(|(l, f, _)| (l, f)).collect();
    assert_eq!(
        seen,
        vec![
            (1, Seen::Events(vec![(1, WireState::Online)])),
            (2, Seen::Events(vec![(1, WireState::Online)])),
            (1, Seen::Lagged(vec![2, 3])),
            (2, Seen::Lagged(vec![2, 3])),
        ]
    );

    hub.handle_command(Command::Scrape {
        request: 9,
        server: Box::new(ServerStats {
            links_refused: 5,
            ..ServerStats::default()
        }),
    });
    answer_stats(&mut hub);
    assert_eq!(frames(&mut hub), vec![]);
    let (request, stats) = hub.poll_scrape().expect("the scrape is answered");
    assert_eq!(request, 9);
    assert!(hub.poll_scrape().is_none());
    assert_eq!(stats.shards.len(), 1);
    assert_eq!(stats.link.links_refused, 5);
    assert_eq!(stats.link.per_link_omitted, 0);
    let peer = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        stats.link.per_link,
        vec![
            PerLinkStats {
                id: 1,
                name: "gw-1".into(),
                peer: peer(5001),
                queued_bytes: queued as u64,
                subscribed_users: 4,
                firehose: false,
                events_sent: 1,
                events_dropped: 2,
                lag_signals: 1,
            },
            PerLinkStats {
                id: 2,
                name: "gw-2".into(),
                peer: peer(5002),
                queued_bytes: queued as u64,
                subscribed_users: 0,
                firehose: true,
                events_sent: 1,
                events_dropped: 2,
                lag_signals: 1,
            },
        ]
    );
    assert_eq!(stats.link.events_dropped, 4);
}

#[test]
fn only_the_newest_scrapes_are_kept_waiting() {
    let mut hub = hub(1, ROOM);
    for request in 1..=SCRAPES_PENDING as u32 + 1 {
        hub.handle_command(Command::Scrape {
            request,
            server: Box::default(),
        });
    }
    answer_stats(&mut hub);
    let answered: Vec<u32> = std::iter::from_fn(|| hub.poll_scrape())
        .map(|(r, _)| r)
        .collect();
    let newest: Vec<u32> = (2..=SCRAPES_PENDING as u32 + 1).collect();
    assert_eq!(answered, newest);
}

#[test]
fn a_stats_reply_with_too_many_links_for_its_limit_leaves_some_out() {
    let mut hub = hub(1, ROOM);
    let links = 1_000;
    for link in 1..=links {
        open(&mut hub, link);
    }
    hub.handle_command(Command::Stats {
        link: 1,
        request: 2,
        server: Box::default(),
    });
    answer_stats(&mut hub);
    let got = frames(&mut hub);
    let [(1, Seen::Stats(2, stats))] = &got[..] else {
        panic!("{got:?}")
    };
    let kept = stats.link.per_link.len() as u64;
    assert!(kept > 0 && kept < u64::from(links), "{kept}");
    assert_eq!(kept + stats.link.per_link_omitted, u64::from(links));
    assert_eq!(stats.link.links, u64::from(links));
}

#[test]
fn the_longest_interval_any_shard_asks_goes_to_version_3_links_and_every_shard() {
    let mut hub = hub(2, ROOM);
    open(&mut hub, 1);
    let open_v3 = |hub: &mut Hub, link: u32| {
        hub.handle_command(Command::Open {
            link,
            version: wire::Version::V3,
            name: format!("gw-{link}"),
            peer: SocketAddr::from(([127, 0, 0, 1], 5000 + link as u16)),
            limits: LIMITS,
        })
    };
    open_v3(&mut hub, 2);
    hub.handle_shard(ToHub::Pace {
        shard: 1,
        interval_ms: 40_000,
    });
    // Every shard extends its deadlines first; the gateways hear of the longer interval only
    // once all have, and only the version-3 link is paced.
    let asked = |ms| Request::Pace { interval_ms: ms };
    assert_eq!(requests(&mut hub), [(0, asked(40_000)), (1, asked(40_000))]);
    let paced = |shard, interval_ms| ToHub::Paced { shard, interval_ms };
    hub.handle_shard(paced(1, 40_000));
    assert!(frames(&mut hub).is_empty(), "shard 0 has not stretched yet");
    hub.handle_shard(paced(0, 40_000));
    assert_eq!(frames(&mut hub), [(2, Seen::Pace(40_000))]);
    // A shorter ask of another shard changes nothing; a link opened now is paced at once.
    hub.handle_shard(ToHub::Pace {
        shard: 0,
        interval_ms: 20_000,
    });
    assert!(frames(&mut hub).is_empty() && requests(&mut hub).is_empty());
    open_v3(&mut hub, 3);
    assert_eq!(frames(&mut hub), [(3, Seen::Pace(40_000))]);
    assert_eq!(hub.stats().pace_frames, 2);
    // Both calm: the normal interval again, told at once (the shards keep the longer
    // deadlines one more timeout).
    hub.handle_shard(ToHub::Pace {
        shard: 1,
        interval_ms: 0,
    });
    let mut got = frames(&mut hub);
    got.sort_by_key(|(l, _)| *l);
    assert_eq!(got, [(2, Seen::Pace(20_000)), (3, Seen::Pace(20_000))]);
    hub.handle_shard(ToHub::Pace {
        shard: 0,
        interval_ms: 0,
    });
    let mut got = frames(&mut hub);
    got.sort_by_key(|(l, _)| *l);
    assert_eq!(got, [(2, Seen::Pace(0)), (3, Seen::Pace(0))]);
    assert_eq!(
        requests(&mut hub),
        [
            (0, asked(20_000)),
            (1, asked(20_000)),
            (0, asked(0)),
            (1, asked(0))
        ]
    );
    assert_eq!(hub.stats().pace_frames, 6);
}

mod roles {
    use super::*;
    use crate::cluster::{ClusterConfig, EtcdEvent};
    use presenced_wire::cluster::Member;

    pub fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            link: "127.0.0.1:1".to_owned(),
            heartbeat: "127.0.0.1:2".to_owned(),
            warm_at_ms: 0,
        }
    }

    pub fn now(s: u64) -> Now {
        Now {
            mono_us: s * 1_000_000,
            wall_ms: 1_700_000_000_000 + s * 1_000,
        }
    }

    pub fn map_event(revision: u64, ids: &[&str]) -> EtcdEvent {
        let values = ids
            .iter()
            .map(|id| ((*id).to_owned(), serde_json::to_vec(&member(id)).unwrap()))
            .collect();
        EtcdEvent::Members { revision, values }
    }

    /// Member `b` of {a, b, c} with one replica per user and two shards, its lease renewed
    /// at 0 s for 60 s.
    pub fn member_b() -> Hub {
        let mut hub = Hub::new(HubConfig {
            shards: 2,
            index: 0,
            queue_bytes: ROOM,
            cluster: Some(ClusterConfig {
                member: member("b"),
                replicas: 1,
                lease_ms: 60_000,
                skew_ms: 500,
            }),
        });
        let lease = EtcdEvent::Lease {
            sent_us: 0,
            ttl_ms: 60_000,
            fresh: true,
        };
        hub.handle_etcd(now(0), lease);
        hub.handle_etcd(now(0), map_event(1, &["a", "b", "c"]));
        hub
    }

    /// Users among 1..=n whose primary is (`true`) or is not this member.
    pub fn users(hub: &Hub, n: u64, primary: bool) -> Vec<u64> {
        let c = hub.cluster().unwrap();
        (1..=n).filter(|&u| c.is_primary(u) == primary).collect()
    }

    #[test]
    fn only_the_primary_pushes() {
        let mut hub = member_b();
        open(&mut hub, 1);
        let mine = users(&hub, 30, true);
        let others = users(&hub, 30, false);
        assert!(!mine.is_empty() && !others.is_empty());
        let all: Vec<u64> = (1..=30).collect();
        subscribe(&mut hub, 1, 1, &all);
        frames(&mut hub);
        let ts: Vec<Transition> = all.iter().map(|&u| online(u, 1)).collect();
        hub.handle_shard(transitions(&ts));
        let pushed: Vec<(u64, WireState)> = mine.iter().map(|&u| (u, WireState::Online)).collect();
        assert_eq!(frames(&mut hub), vec![(1, Seen::Events(pushed))]);
        assert_eq!(hub.stats().not_primary, others.len() as u64);
        // Per shard: what it pushed as primary and kept as a replica.
        let mut roles = vec![ShardRole::default(); 2];
        for &u in &mine {
            roles[presenced_wire::shard_of(u, 2) as usize].primary += 1;
        }
        for &u in &others {
            roles[presenced_wire::shard_of(u, 2) as usize].replica += 1;
        }
        assert!(roles.iter().all(|r| r.primary > 0 && r.replica > 0));
        assert_eq!(hub.stats().shard_roles, roles);
    }

    #[test]
    fn a_member_that_gains_users_asks_their_subscribers_to_re_query() {
        let mut hub = member_b();
        open(&mut hub, 1);
        // The users a holds now; b gains some of them when a leaves.
        let before = users(&hub, 60, false);
        subscribe(&mut hub, 1, 1, &before);
        frames(&mut hub);
        hub.handle_etcd(now(1), map_event(2, &["b", "c"]));
        let gained: Vec<u64> = users(&hub, 60, true)
            .into_iter()
            .filter(|u| before.contains(u))
            .collect();
        assert!(!gained.is_empty());
        assert_eq!(frames(&mut hub), vec![(1, Seen::Lagged(gained.clone()))]);
        assert_eq!(hub.stats().gained, gained.len() as u64);
        // Their transitions are pushed from now on.
        hub.handle_shard(transitions(&[online(gained[0], 2)]));
        let pushed = Seen::Events(vec![(gained[0], WireState::Online)]);
        assert_eq!(frames(&mut hub), vec![(1, pushed)]);
    }

    #[test]
    fn a_member_whose_lease_lapses_pushes_nothing() {
        let mut hub = member_b();
        open(&mut hub, 1);
        let mine = users(&hub, 30, true);
        subscribe(&mut hub, 1, 1, &mine);
        frames(&mut hub);
        // Renewal fails; stepping down is due at 60 s − 500 ms.
        hub.handle_etcd(now(10), EtcdEvent::Unreachable);
        assert_eq!(hub.poll_timeout(now(10)), Some(59_500_000));
        hub.handle_timeout(now(60));
        hub.handle_shard(transitions(&[online(mine[0], 2)]));
        assert_eq!(frames(&mut hub), vec![]);
        let stats = hub.cluster().unwrap().stats();
        assert_eq!((stats.step_downs, stats.etcd_errors), (1, 1));
    }
}

mod members {
    use super::roles::*;
    use super::*;
    use presenced_wire::cluster::MemberMap;
    use presenced_wire::link::Version;

    /// What a version-4 link got: `Some(map)` per MEMBERS frame, `None` per other frame.
    fn got(hub: &mut Hub) -> Vec<Option<MemberMap>> {
        std::iter::from_fn(|| hub.poll_transmit())
            .map(
                |(_, out)| match Version::V4.decode_server(&out.frame[4..]).unwrap() {
                    ServerFrame::Members(m) => Some(m.map().unwrap()),
                    _ => None,
                },
            )
            .collect()
    }

    fn open_v4(hub: &mut Hub) {
        hub.handle_command(Command::Open {
            link: 1,
            version: Version::V4,
            name: "gw".into(),
            peer: SocketAddr::from(([127, 0, 0, 1], 5001)),
            limits: LIMITS,
        });
    }

    #[test]
    fn a_member_tells_each_new_link_and_every_change_and_answers_a_stale_map() {
        let mut hub = member_b();
        open_v4(&mut hub);
        let first = got(&mut hub);
        assert_eq!(first.len(), 1);
        let map = first[0].clone().expect("MEMBERS after WELCOME");
        assert_eq!(
            (map.from.as_str(), map.revision, map.members.len()),
            ("b", 1, 3)
        );
        // The gateway holds the same map: ACK only.
        hub.handle_command(Command::Map {
            link: 1,
            request: 7,
            revision: 1,
        });
        assert_eq!(got(&mut hub), vec![None]);
        // A stale one: the map, then ACK.
        hub.handle_command(Command::Map {
            link: 1,
            request: 8,
            revision: 0,
        });
        let answer = got(&mut hub);
        assert_eq!(answer.len(), 2);
        assert_eq!(answer[0].as_ref().map(|m| m.revision), Some(1));
        assert_eq!(answer[1], None);
        assert_eq!(hub.stats().stale_maps, 1);
        // A new map reaches every link.
        hub.handle_etcd(now(1), map_event(2, &["b", "c"]));
        let news = got(&mut hub);
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].as_ref().map(|m| m.members.len()), Some(2));
    }

    #[test]
    fn a_daemon_outside_a_cluster_answers_map_with_ack_only() {
        let mut hub = hub(1, ROOM);
        open_v4(&mut hub);
        assert_eq!(got(&mut hub), vec![]);
        hub.handle_command(Command::Map {
            link: 1,
            request: 7,
            revision: 3,
        });
        assert_eq!(got(&mut hub), vec![None]);
        // Not counted as stale: there is no map to be stale against.
        assert_eq!(hub.stats().stale_maps, 0);
    }
}

#[test]
fn a_second_hub_paces_its_links_but_leaves_the_shards_to_hub_zero() {
    let mut hub = Hub::new(HubConfig {
        shards: 2,
        index: 1,
        queue_bytes: ROOM,
        cluster: None,
    });
    hub.handle_command(Command::Open {
        link: 4,
        version: wire::Version::V3,
        name: "gw-4".into(),
        peer: SocketAddr::from(([127, 0, 0, 1], 5004)),
        limits: LIMITS,
    });
    hub.handle_shard(ToHub::Pace {
        shard: 1,
        interval_ms: 40_000,
    });
    assert!(requests(&mut hub).is_empty());
    // Hub 0 asked the shards; this one paces its links once both have stretched.
    for shard in [0, 1] {
        hub.handle_shard(ToHub::Paced {
            shard,
            interval_ms: 40_000,
        });
    }
    assert_eq!(frames(&mut hub), [(4, Seen::Pace(40_000))]);
}

#[test]
fn stats_merge_the_other_hubs_shares_and_count_transitions_once() {
    // This is hub 1 of 2, serving link 1; hub 0 serves two links.
    let mut hub = Hub::new(HubConfig {
        shards: 1,
        index: 1,
        queue_bytes: ROOM,
        cluster: None,
    });
    open(&mut hub, 1);
    subscribe(&mut hub, 1, 1, &[1]);
    hub.handle_shard(transitions(&[online(1, 1), online(2, 1)]));
    frames(&mut hub);
    let mut other = self::hub(1, ROOM);
    open(&mut other, 2);
    open(&mut other, 4);
    other.handle_shard(transitions(&[online(1, 1), online(2, 1)]));
    hub.handle_peers(vec![Arc::new(other.share())]);
    hub.handle_command(Command::Stats {
        link: 1,
        request: 9,
        server: Box::default(),
    });
    answer_stats(&mut hub);
    let got = frames(&mut hub);
    let [(1, Seen::Stats(9, stats))] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!(stats.link.links, 3);
    assert_eq!(stats.link.transitions, 2);
    assert_eq!(stats.link.events_sent, 1);
    let ids: Vec<u32> = stats.link.per_link.iter().map(|l| l.id).collect();
    assert_eq!(ids, [1, 2, 4]);
}
