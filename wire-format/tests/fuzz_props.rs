//! The fuzz targets' properties (`fuzz/fuzz_targets/datagram.rs` and `link_frames.rs`) as
//! short property tests, so that CI, which cannot run libFuzzer, checks them too: on arbitrary
//! bytes, and on mutated valid encodings (random byte flips, overwrites, truncations and
//! extensions), so that a good share of the inputs is accepted and the round trip is actually
//! exercised. The checks themselves are in `fuzz_checks/mod.rs`, shared with the fuzz targets.

mod fuzz_checks;

use bytes::BytesMut;
use fuzz_checks::{check_datagram, check_stream, StreamSummary};
use presenced_wire::link::{
    encode_ack, encode_error, encode_events, encode_goaway, encode_hello, encode_history,
    encode_history_reply, encode_lagged, encode_lagged_all, encode_presence, encode_presence_v2,
    encode_query, encode_stats, encode_stats_reply, encode_subscribe, encode_subscribe_all,
    encode_unsubscribe, encode_unsubscribe_all, encode_welcome, encode_welcome_v2, ErrorCode,
    Event, GoAwayReason, Hello, HistoryRequest, Limits, PresenceRecord, Span, Timings, Version,
    WelcomeV2, WireCause, WireState, DEFAULT_MAX_FRAME_LEN,
};
use presenced_wire::{auth, encode, Encoder, Entry, Header, State, MAX_ENTRIES};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Cases per property (`PROPTEST_CASES` overrides it): the file runs in well under a second.
const CASES: u32 = 5000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// One change to an encoding.
#[derive(Clone, Debug)]
enum Mutation {
    /// `bytes[at % len] ^= xor`.
    Flip { at: usize, xor: u8 },
    /// `bytes[at % len] = value`.
    Set { at: usize, value: u8 },
    /// Keep the first `at % (len + 1)` bytes.
    Truncate { at: usize },
    /// Append bytes.
    Extend(Vec<u8>),
    /// Remove the byte at `at % len`.
    Delete { at: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        5 => (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        3 => (any::<usize>(), prop::sample::select(vec![0u8, 1, 2, 3, 4, 0x7f, 0x80, 0xff]))
            .prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => prop::collection::vec(any::<u8>(), 1..24).prop_map(Mutation::Extend),
        1 => any::<usize>().prop_map(|at| Mutation::Delete { at }),
    ]
}

/// No mutation a third of the time, else one to three.
fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(arb_mutation(), 1..=3),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip { at, xor } if len > 0 => bytes[at % len] ^= xor,
            Mutation::Set { at, value } if len > 0 => bytes[at % len] = *value,
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Delete { at } if len > 0 => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Datagrams

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        prop_oneof![1..=100u64, 1..=u64::MAX],
        any::<u32>(),
        prop::sample::select(State::ALL.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(user, device, state, active)| Entry {
            user,
            device,
            state,
            active,
        })
}

fn arb_valid_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        1..=u32::MAX,
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![
            3 => prop::collection::vec(arb_entry(), 1..=4),
            1 => prop::collection::vec(arb_entry(), 1..=MAX_ENTRIES),
        ],
        prop_oneof![3 => Just(None), 1 => any::<[u8; 32]>().prop_map(Some)],
    )
        .prop_map(|(gateway, epoch, seq, time, entries, key)| {
            let header = Header::new(gateway, epoch, seq, time);
            match key {
                None => encode(&header, &entries).unwrap(),
                Some(key) => {
                    // Signed: AUTH set and a MAC as the tag.
                    let mut enc = Encoder::new(header);
                    for e in &entries {
                        enc.push(*e).unwrap();
                    }
                    enc.finish_signed(&auth::Key::new(key)).unwrap().to_vec()
                }
            }
        })
}

#[test]
fn datagram_arbitrary_bytes() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..100),
        prop::collection::vec(any::<u8>(), 0..1600),
        // The right magic and version, then anything.
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|rest| {
            let mut b = b"PRSD\x01\x00".to_vec();
            b.extend_from_slice(&rest);
            b
        }),
    ];
    runner()
        .run(&strategy, |bytes| {
            check_datagram(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn datagram_mutated_valid_encodings() {
    let accepted = std::cell::Cell::new(0u32);
    runner()
        .run(
            &(arb_valid_datagram(), arb_mutations()),
            |(mut bytes, mutations)| {
                mutate(&mut bytes, &mutations);
                if check_datagram(&bytes) {
                    accepted.set(accepted.get() + 1);
                }
                Ok(())
            },
        )
        .unwrap();
    // Both outcomes are exercised: a good share decodes (and so round-trips), a good share not.
    let (accepted, n) = (accepted.get(), cases());
    assert!(
        accepted > n / 5 && accepted < n * 9 / 10,
        "{accepted} of {n} accepted"
    );
}

// ---------------------------------------------------------------------------------------------
// Push-link frames

fn arb_user() -> impl Strategy<Value = u64> {
    prop_oneof![1..=1000u64, 1..=u64::MAX]
}

fn arb_users() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(arb_user(), 0..6)
}

fn arb_state() -> impl Strategy<Value = WireState> {
    prop::sample::select(WireState::ALL.to_vec())
}

fn arb_text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::char::range('a', 'z'), 0..=max_chars),
        prop::collection::vec(any::<char>(), 0..=max_chars),
    ]
    .prop_map(String::from_iter)
}

fn arb_record() -> impl Strategy<Value = PresenceRecord> {
    (arb_user(), arb_state(), any::<Option<u64>>(), any::<u64>()).prop_map(
        |(user, state, last_seen_ms, version)| PresenceRecord {
            user,
            state,
            last_seen_ms,
            version,
        },
    )
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        arb_user(),
        arb_state(),
        arb_state(),
        prop::sample::select(WireCause::ALL.to_vec()),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(user, state, prev, cause, at_ms, version)| Event {
            user,
            state,
            prev,
            cause,
            at_ms,
            version,
        })
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_state(),
        prop::sample::select(WireCause::ALL.to_vec()),
        0u8..=31,
    )
        .prop_map(|(version, a, b, state, cause, devices)| Span {
            version,
            start_ms: a.min(b),
            end_ms: if a % 3 == 0 { 0 } else { a.max(b) },
            state,
            cause,
            devices,
        })
}

/// One valid frame of version 2 (of either direction) that version 1 does not have, encoded
/// (length prefix included).
fn arb_frame_v2() -> impl Strategy<Value = Vec<u8>> {
    let rid = 1..=u32::MAX;
    let frame = prop_oneof![
        arb_text(16).prop_map(|name| {
            let mut out = BytesMut::new();
            encode_hello(&mut out, &Hello::new(&name).asking(Version::V2)).unwrap();
            out
        }),
        (
            rid.clone(),
            arb_user(),
            any::<u64>(),
            any::<u64>(),
            1..=u32::MAX
        )
            .prop_map(|(request_id, user, since_ms, after_version, max_spans)| {
                let mut out = BytesMut::new();
                let h = HistoryRequest {
                    request_id,
                    user,
                    since_ms,
                    after_version,
                    max_spans,
                };
                encode_history(&mut out, &h).unwrap();
                out
            }),
        (
            any::<u16>(),
            prop::collection::vec(any::<u16>(), 1..5),
            any::<[u32; 8]>(),
            any::<Option<u32>>(),
            any::<u32>(),
        )
            .prop_map(|(port, ports, v, warm_remaining_ms, idle_timeout_ms)| {
                let mut out = BytesMut::new();
                let limits = Limits {
                    max_frame_len: v[0],
                    max_users_per_request: v[1],
                    max_subscriptions: v[2],
                    max_requests_in_flight: v[3],
                };
                let timings = Timings {
                    heartbeat_interval_ms: v[4],
                    grace_ms: v[5],
                    idle_after_ms: v[6],
                    tick_us: v[7],
                };
                let v2 = WelcomeV2 {
                    warm_remaining_ms,
                    idle_timeout_ms,
                };
                encode_welcome_v2(&mut out, Version::V2, port, &ports, &limits, &timings, &v2)
                    .unwrap();
                out
            }),
        (
            rid.clone(),
            prop::collection::vec(arb_record(), 0..5),
            any::<bool>()
        )
            .prop_map(|(r, records, is_final)| {
                let mut out = BytesMut::new();
                encode_presence_v2(&mut out, r, &records, is_final, true, DEFAULT_MAX_FRAME_LEN)
                    .unwrap();
                out
            }),
        (
            prop::sample::select(GoAwayReason::ALL.to_vec()),
            any::<u32>(),
            arb_text(12)
        )
            .prop_map(|(reason, after, message)| {
                let mut out = BytesMut::new();
                encode_goaway(&mut out, reason, after, &message);
                out
            }),
        (
            rid,
            any::<bool>(),
            any::<Option<u64>>(),
            prop::collection::vec(arb_span(), 0..5)
        )
            .prop_map(|(r, more, last_seen, spans)| {
                let mut out = BytesMut::new();
                encode_history_reply(&mut out, r, more, last_seen, &spans, DEFAULT_MAX_FRAME_LEN)
                    .unwrap();
                out
            }),
    ];
    frame.prop_map(|b| b.to_vec())
}

/// One valid frame of either direction and either version, encoded (length prefix
/// included).
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => arb_frame_v1(), 1 => arb_frame_v2()]
}

/// One valid frame of either direction of version 1, encoded (length prefix included).
fn arb_frame_v1() -> impl Strategy<Value = Vec<u8>> {
    let rid = 1..=u32::MAX;
    let frame = prop_oneof![
        (
            0u16..2,
            arb_text(16),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(flags, name, token)| {
                let mut out = BytesMut::new();
                let hello = Hello {
                    flags,
                    token: &token,
                    ..Hello::new(&name)
                };
                encode_hello(&mut out, &hello).unwrap();
                out
            }),
        (0u8..3, rid.clone(), arb_users()).prop_map(|(kind, r, users)| {
            let mut out = BytesMut::new();
            let enc = [encode_subscribe, encode_unsubscribe, encode_query][usize::from(kind)];
            enc(&mut out, r, &users).unwrap();
            out
        }),
        (0u8..4, rid.clone()).prop_map(|(kind, r)| {
            let mut out = BytesMut::new();
            let enc = [
                encode_subscribe_all,
                encode_unsubscribe_all,
                encode_stats,
                encode_ack,
            ][usize::from(kind)];
            enc(&mut out, r).unwrap();
            out
        }),
        (
            any::<u16>(),
            prop::collection::vec(any::<u16>(), 1..5),
            any::<[u32; 8]>()
        )
            .prop_map(|(port, ports, v)| {
                let mut out = BytesMut::new();
                let limits = Limits {
                    max_frame_len: v[0],
                    max_users_per_request: v[1],
                    max_subscriptions: v[2],
                    max_requests_in_flight: v[3],
                };
                let timings = Timings {
                    heartbeat_interval_ms: v[4],
                    grace_ms: v[5],
                    idle_after_ms: v[6],
                    tick_us: v[7],
                };
                encode_welcome(&mut out, port, &ports, &limits, &timings).unwrap();
                out
            }),
        (
            rid.clone(),
            prop::collection::vec(arb_record(), 0..5),
            any::<bool>()
        )
            .prop_map(|(r, records, is_final)| {
                let mut out = BytesMut::new();
                encode_presence(&mut out, r, &records, is_final, DEFAULT_MAX_FRAME_LEN).unwrap();
                out
            }),
        prop::collection::vec(arb_event(), 1..5).prop_map(|events| {
            let mut out = BytesMut::new();
            encode_events(&mut out, &events, DEFAULT_MAX_FRAME_LEN).unwrap();
            out
        }),
        (arb_users(), any::<bool>()).prop_map(|(users, all)| {
            let mut out = BytesMut::new();
            if all {
                encode_lagged_all(&mut out);
            } else {
                encode_lagged(&mut out, &users).unwrap();
            }
            out
        }),
        (
            any::<u32>(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            arb_text(12)
        )
            .prop_map(|(r, code, message)| {
                let mut out = BytesMut::new();
                encode_error(&mut out, r, code, &message);
                out
            }),
        (rid, arb_text(24)).prop_map(|(r, json)| {
            let mut out = BytesMut::new();
            encode_stats_reply(&mut out, r, &json).unwrap();
            out
        }),
    ];
    frame.prop_map(|b| b.to_vec())
}

/// One to three valid frames back to back.
fn arb_valid_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(arb_frame(), 1..=3).prop_map(|frames| frames.concat())
}

fn check_both_limits(bytes: &[u8]) -> StreamSummary {
    // A small limit refuses most frames as too large; the default one reads them.
    check_stream(bytes, 24);
    check_stream(bytes, DEFAULT_MAX_FRAME_LEN)
}

#[test]
fn link_frames_arbitrary_bytes() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..600),
        // A plausible length prefix, a frame type of either direction, then anything.
        (
            0u32..80,
            prop::sample::select(vec![
                1u8, 2, 3, 4, 5, 6, 7, 8, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89
            ]),
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(len, t, rest)| {
                let mut b = len.to_le_bytes().to_vec();
                b.push(t);
                b.extend_from_slice(&rest);
                b
            }),
    ];
    runner()
        .run(&strategy, |bytes| {
            check_both_limits(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn link_frames_mutated_valid_encodings() {
    let total = std::cell::Cell::new(StreamSummary::default());
    let rejected_first = std::cell::Cell::new(0u32);
    runner()
        .run(
            &(arb_valid_stream(), arb_mutations()),
            |(mut bytes, mutations)| {
                mutate(&mut bytes, &mutations);
                let s = check_both_limits(&bytes);
                if s.client_ok + s.server_ok < s.frames || s.frames == 0 {
                    rejected_first.set(rejected_first.get() + 1);
                }
                let mut t = total.get();
                t.frames += s.frames;
                t.client_ok += s.client_ok;
                t.server_ok += s.server_ok;
                t.client_ok_v2 += s.client_ok_v2;
                t.server_ok_v2 += s.server_ok_v2;
                total.set(t);
                Ok(())
            },
        )
        .unwrap();
    let (t, rejected, n) = (total.get(), rejected_first.get(), cases());
    // Both directions decode often on both versions, version 2 more often (it reads every
    // version-1 frame too), and mutations are refused often.
    assert!(
        t.client_ok > t.frames / 10 && t.server_ok > t.frames / 5,
        "{t:?} of {n} streams"
    );
    assert!(
        t.client_ok_v2 > t.client_ok && t.server_ok_v2 > t.server_ok,
        "{t:?} of {n} streams"
    );
    assert!(
        rejected > n / 5,
        "only {rejected} of {n} streams had a bad frame"
    );
}
