//! The push link codec (`presenced_wire::link`): the committed vectors (`vectors/link.txt`) in
//! both directions and both protocol versions, the worked example of SPEC.md, round trips of
//! every frame type, the writers, the owner function, and property tests (no panics, exact
//! round trips, strictness).

mod common;

use std::collections::BTreeSet;

use bytes::BytesMut;
use common::{load, parse_hex, to_hex, Block};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::*;
use presenced_wire::shard_of;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// An owned model of every frame, to compare decoded frames with and to encode from.

#[derive(Clone, Debug, PartialEq, Eq)]
enum C {
    Hello {
        version: u16,
        flags: u16,
        name: String,
        token: Vec<u8>,
    },
    Subscribe(u32, Vec<u64>),
    Unsubscribe(u32, Vec<u64>),
    SubscribeAll(u32),
    UnsubscribeAll(u32),
    Query(u32, Vec<u64>),
    Stats(u32),
    History(HistoryRequest),
    Map(u32, u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum S {
    Welcome {
        /// 1, 2 or 3; `v2` is `Some` exactly from 2 on.
        version: u16,
        heartbeat_port: u16,
        ports: Vec<u16>,
        limits: Limits,
        timings: Timings,
        v2: Option<WelcomeV2>,
    },
    Presence {
        request_id: u32,
        is_final: bool,
        warming: bool,
        records: Vec<PresenceRecord>,
    },
    Events(Vec<Event>),
    Lagged(Vec<u64>),
    LaggedAll,
    Ack(u32),
    Error {
        request_id: u32,
        code: u16,
        message: String,
    },
    StatsReply(u32, String),
    GoAway {
        reason: u16,
        reconnect_after_ms: u32,
        message: String,
    },
    HistoryReply {
        request_id: u32,
        more: bool,
        last_seen_ms: Option<u64>,
        spans: Vec<Span>,
    },
    Pace(u32),
    Members(MemberMap),
}

impl C {
    /// The oldest version whose links carry this frame.
    fn since(&self) -> Version {
        match self {
            C::History(_) => Version::V2,
            C::Map(..) => Version::V4,
            _ => Version::V1,
        }
    }
}

impl S {
    /// The oldest version whose links carry this frame.
    fn since(&self) -> Version {
        match self {
            S::Welcome { version: 4, .. } | S::Members(_) => Version::V4,
            S::Welcome { version: 3, .. } | S::Pace(_) => Version::V3,
            S::Welcome { v2: Some(_), .. }
            | S::Presence { warming: true, .. }
            | S::GoAway { .. }
            | S::HistoryReply { .. } => Version::V2,
            _ => Version::V1,
        }
    }
}

fn g_of(f: &GatewayFrame<'_>) -> C {
    match f {
        GatewayFrame::Common(f) => c_of(f),
        GatewayFrame::History(h) => C::History(*h),
        GatewayFrame::Map {
            request_id,
            revision,
        } => C::Map(*request_id, *revision),
    }
}

fn c_of(f: &ClientFrame<'_>) -> C {
    match *f {
        ClientFrame::Hello(h) => C::Hello {
            version: h.protocol_version,
            flags: h.flags,
            name: h.client_name.to_string(),
            token: h.token.to_vec(),
        },
        ClientFrame::Subscribe { request_id, users } => {
            C::Subscribe(request_id, users.iter().collect())
        }
        ClientFrame::Unsubscribe { request_id, users } => {
            C::Unsubscribe(request_id, users.iter().collect())
        }
        ClientFrame::SubscribeAll { request_id } => C::SubscribeAll(request_id),
        ClientFrame::UnsubscribeAll { request_id } => C::UnsubscribeAll(request_id),
        ClientFrame::Query { request_id, users } => C::Query(request_id, users.iter().collect()),
        ClientFrame::Stats { request_id } => C::Stats(request_id),
    }
}

fn s_of(f: &ServerFrame<'_>) -> S {
    match *f {
        ServerFrame::Welcome(w) => S::Welcome {
            version: w.protocol_version,
            heartbeat_port: w.heartbeat_port,
            ports: w.shard_ports.iter().collect(),
            limits: w.limits,
            timings: w.timings,
            v2: w.v2,
        },
        ServerFrame::Presence(p) => S::Presence {
            request_id: p.request_id,
            is_final: p.is_final,
            warming: p.warming,
            records: p.records.iter().collect(),
        },
        ServerFrame::Events(e) => S::Events(e.iter().collect()),
        ServerFrame::Lagged(u) => S::Lagged(u.iter().collect()),
        ServerFrame::LaggedAll => S::LaggedAll,
        ServerFrame::Ack { request_id } => S::Ack(request_id),
        ServerFrame::Error(e) => S::Error {
            request_id: e.request_id,
            code: e.code,
            message: e.message.to_string(),
        },
        ServerFrame::StatsReply { request_id, json } => S::StatsReply(request_id, json.to_string()),
        ServerFrame::GoAway(g) => S::GoAway {
            reason: g.reason,
            reconnect_after_ms: g.reconnect_after_ms,
            message: g.message.to_string(),
        },
        ServerFrame::HistoryReply(h) => S::HistoryReply {
            request_id: h.request_id,
            more: h.more,
            last_seen_ms: h.last_seen_ms,
            spans: h.spans.iter().collect(),
        },
        ServerFrame::Pace { interval_ms } => S::Pace(interval_ms),
        ServerFrame::Members(m) => S::Members(m.map().expect("a decoded MEMBERS' map")),
    }
}

fn encode_c(c: &C, out: &mut BytesMut) -> Result<(), EncodeError> {
    match c {
        C::Hello {
            version,
            flags,
            name,
            token,
        } => encode_hello(
            out,
            &Hello {
                protocol_version: *version,
                flags: *flags,
                client_name: name,
                token,
            },
        ),
        C::Subscribe(r, u) => encode_subscribe(out, *r, u),
        C::Unsubscribe(r, u) => encode_unsubscribe(out, *r, u),
        C::SubscribeAll(r) => encode_subscribe_all(out, *r),
        C::UnsubscribeAll(r) => encode_unsubscribe_all(out, *r),
        C::Query(r, u) => encode_query(out, *r, u),
        C::Stats(r) => encode_stats(out, *r),
        C::History(h) => encode_history(out, h),
        C::Map(r, revision) => encode_map(out, *r, *revision),
    }
}

/// Encodes one frame of the model (PRESENCE and EVENTS must fit one default-size frame; EVENTS
/// must not be empty).
fn encode_s(s: &S, out: &mut BytesMut) -> Result<(), EncodeError> {
    match s {
        S::Welcome {
            version: 1,
            heartbeat_port,
            ports,
            limits,
            timings,
            v2: None,
        } => encode_welcome(out, *heartbeat_port, ports, limits, timings),
        S::Welcome {
            version: version @ 2..=4,
            heartbeat_port,
            ports,
            limits,
            timings,
            v2: Some(v2),
        } => match Version::from_u16(*version) {
            Some(v) => encode_welcome_v2(out, v, *heartbeat_port, ports, limits, timings, v2),
            None => Err(EncodeError::UnsupportedVersion(*version)),
        },
        S::Members(map) => encode_members(out, map, DEFAULT_MAX_FRAME_LEN),
        S::Welcome { version, .. } => Err(EncodeError::UnsupportedVersion(*version)),
        S::Pace(interval_ms) => {
            encode_pace(out, *interval_ms);
            Ok(())
        }
        S::Presence {
            request_id,
            is_final,
            warming: false,
            records,
        } => {
            let n = encode_presence(out, *request_id, records, *is_final, DEFAULT_MAX_FRAME_LEN)?;
            assert_eq!(n, 1, "one PRESENCE frame expected");
            Ok(())
        }
        S::Presence {
            request_id,
            is_final,
            warming: true,
            records,
        } => {
            let n = encode_presence_v2(
                out,
                *request_id,
                records,
                *is_final,
                true,
                DEFAULT_MAX_FRAME_LEN,
            )?;
            assert_eq!(n, 1, "one PRESENCE frame expected");
            Ok(())
        }
        S::Events(events) => {
            let n = encode_events(out, events, DEFAULT_MAX_FRAME_LEN)?;
            assert_eq!(n, 1, "one EVENTS frame expected");
            Ok(())
        }
        S::Lagged(users) => encode_lagged(out, users),
        S::LaggedAll => {
            encode_lagged_all(out);
            Ok(())
        }
        S::Ack(r) => encode_ack(out, *r),
        S::Error {
            request_id,
            code,
            message,
        } => match ErrorCode::from_u16(*code) {
            Some(code) => {
                encode_error(out, *request_id, code, message);
                Ok(())
            }
            None => ServerFrame::Error(ErrorFrame {
                request_id: *request_id,
                code: *code,
                message,
            })
            .encode(out),
        },
        S::StatsReply(r, json) => encode_stats_reply(out, *r, json),
        S::GoAway {
            reason,
            reconnect_after_ms,
            message,
        } => match GoAwayReason::from_u16(*reason) {
            Some(reason) => {
                encode_goaway(out, reason, *reconnect_after_ms, message);
                Ok(())
            }
            None => ServerFrame::GoAway(GoAwayFrame {
                reason: *reason,
                reconnect_after_ms: *reconnect_after_ms,
                message,
            })
            .encode(out),
        },
        S::HistoryReply {
            request_id,
            more,
            last_seen_ms,
            spans,
        } => encode_history_reply(
            out,
            *request_id,
            *more,
            *last_seen_ms,
            spans,
            DEFAULT_MAX_FRAME_LEN,
        ),
    }
}

fn one_frame(bytes: &[u8], max: u32) -> Result<&[u8], FrameError> {
    let (frame, used) = FrameReader::new(max)
        .next_frame(bytes)?
        .expect("a whole frame");
    assert_eq!(used, bytes.len(), "one frame, nothing after it");
    Ok(frame)
}

fn decode_dir(dir: &str, version: Version, frame: &[u8]) -> Result<(), FrameError> {
    let got = match dir {
        "client" => version.decode_client(frame).map(|_| ()),
        "server" => version.decode_server(frame).map(|_| ()),
        other => panic!("bad dir {other:?}"),
    };
    if version == Version::V1 {
        // Version 1's own functions agree with `Version::V1`'s.
        let v1 = match dir {
            "client" => decode_client(frame).map(|_| ()),
            _ => decode_server(frame).map(|_| ()),
        };
        assert_eq!(v1, got);
    }
    got
}

/// A block's link version (`version:`, default 1).
fn version_of(v: &Block) -> Version {
    match v.get("version") {
        None | Some("1") => Version::V1,
        Some("2") => Version::V2,
        Some("3") => Version::V3,
        Some("4") => Version::V4,
        Some(other) => panic!("{}: bad version {other:?}", v.name),
    }
}

// ---------------------------------------------------------------------------------------------
// Test vectors

fn unquote(s: &str) -> String {
    assert!(
        s.len() >= 2 && s.starts_with('"') && s.ends_with('"'),
        "not quoted: {s:?}"
    );
    s[1..s.len() - 1].to_string()
}

fn num<T: std::str::FromStr>(v: &Block, key: &str) -> T {
    let s = v
        .get(key)
        .unwrap_or_else(|| panic!("{}: missing `{key}`", v.name));
    s.parse()
        .unwrap_or_else(|_| panic!("{}: bad `{key}`: {s:?}", v.name))
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split_whitespace()
        .map(|x| x.parse().unwrap_or_else(|_| panic!("bad number {x:?}")))
        .collect()
}

fn state(s: &str) -> WireState {
    WireState::ALL
        .into_iter()
        .find(|x| x.name() == s)
        .unwrap_or_else(|| panic!("bad state {s:?}"))
}

fn cause(s: &str) -> WireCause {
    WireCause::ALL
        .into_iter()
        .find(|x| x.name() == s)
        .unwrap_or_else(|| panic!("bad cause {s:?}"))
}

fn expected_client(v: &Block) -> C {
    let rid = || num::<u32>(v, "request_id");
    let users = || list::<u64>(v.get("users").expect("users"));
    match v.get("type").expect("type") {
        "hello" => C::Hello {
            version: num(v, "protocol_version"),
            flags: num(v, "flags"),
            name: unquote(v.get("client_name").expect("client_name")),
            token: parse_hex(v.get("token").expect("token")).unwrap(),
        },
        "subscribe" => C::Subscribe(rid(), users()),
        "unsubscribe" => C::Unsubscribe(rid(), users()),
        "subscribe_all" => C::SubscribeAll(rid()),
        "unsubscribe_all" => C::UnsubscribeAll(rid()),
        "query" => C::Query(rid(), users()),
        "stats" => C::Stats(rid()),
        "history" => C::History(HistoryRequest {
            request_id: rid(),
            user: num(v, "user"),
            since_ms: num(v, "since_ms"),
            after_version: num(v, "after_version"),
            max_spans: num(v, "max_spans"),
        }),
        "map" => C::Map(rid(), num(v, "revision")),
        other => panic!("{}: bad client type {other:?}", v.name),
    }
}

fn expected_server(v: &Block) -> S {
    let rid = || num::<u32>(v, "request_id");
    match v.get("type").expect("type") {
        "welcome" => {
            let protocol_version = num::<u16>(v, "protocol_version");
            let v2 = match protocol_version {
                1 => None,
                2..=4 => {
                    let flags: u16 = num(v, "flags");
                    let remaining: u32 = num(v, "warm_remaining_ms");
                    Some(WelcomeV2 {
                        warm_remaining_ms: (flags & WELCOME_FLAG_WARMING != 0).then_some(remaining),
                        idle_timeout_ms: num(v, "idle_timeout_ms"),
                    })
                }
                other => panic!("{}: bad protocol_version {other}", v.name),
            };
            S::Welcome {
                version: protocol_version,
                heartbeat_port: num(v, "heartbeat_port"),
                ports: list(v.get("shard_ports").expect("shard_ports")),
                limits: Limits {
                    max_frame_len: num(v, "max_frame_len"),
                    max_users_per_request: num(v, "max_users_per_request"),
                    max_subscriptions: num(v, "max_subscriptions"),
                    max_requests_in_flight: num(v, "max_requests_in_flight"),
                },
                timings: Timings {
                    heartbeat_interval_ms: num(v, "heartbeat_interval_ms"),
                    grace_ms: num(v, "grace_ms"),
                    idle_after_ms: num(v, "idle_after_ms"),
                    tick_us: num(v, "tick_us"),
                },
                v2,
            }
        }
        "presence" => S::Presence {
            request_id: rid(),
            is_final: flag(v, "final"),
            warming: v.get("warming").is_some() && flag(v, "warming"),
            records: v
                .all("record")
                .map(|l| {
                    let p: Vec<&str> = l.split_whitespace().collect();
                    assert_eq!(p.len(), 4, "{}: bad record {l:?}", v.name);
                    PresenceRecord {
                        user: p[0].parse().unwrap(),
                        state: state(p[1]),
                        last_seen_ms: (p[2] != "-").then(|| p[2].parse().unwrap()),
                        version: p[3].parse().unwrap(),
                    }
                })
                .collect(),
        },
        "events" => S::Events(
            v.all("event")
                .map(|l| {
                    let p: Vec<&str> = l.split_whitespace().collect();
                    assert_eq!(p.len(), 6, "{}: bad event {l:?}", v.name);
                    Event {
                        user: p[0].parse().unwrap(),
                        state: state(p[1]),
                        prev: state(p[2]),
                        cause: cause(p[3]),
                        at_ms: p[4].parse().unwrap(),
                        version: p[5].parse().unwrap(),
                    }
                })
                .collect(),
        ),
        "lagged" => match v.get("scope") {
            Some("users") => S::Lagged(list(v.get("users").expect("users"))),
            Some("all") => {
                assert_eq!(v.get("users"), Some(""));
                S::LaggedAll
            }
            other => panic!("{}: bad scope {other:?}", v.name),
        },
        "ack" => S::Ack(rid()),
        "error" => S::Error {
            request_id: rid(),
            code: num(v, "code"),
            message: unquote(v.get("message").expect("message")),
        },
        "stats_reply" => S::StatsReply(rid(), unquote(v.get("json").expect("json"))),
        "goaway" => S::GoAway {
            reason: num(v, "reason"),
            reconnect_after_ms: num(v, "reconnect_after_ms"),
            message: unquote(v.get("message").expect("message")),
        },
        "pace" => S::Pace(num(v, "interval_ms")),
        "members" => S::Members(
            serde_json::from_str(&unquote(v.get("json").expect("json")))
                .unwrap_or_else(|e| panic!("{}: json: {e}", v.name)),
        ),
        "history_reply" => S::HistoryReply {
            request_id: rid(),
            more: flag(v, "more"),
            last_seen_ms: match v.get("last_seen_ms") {
                Some("-") => None,
                _ => Some(num(v, "last_seen_ms")),
            },
            spans: v
                .all("span")
                .map(|l| {
                    let p: Vec<&str> = l.split_whitespace().collect();
                    assert_eq!(p.len(), 6, "{}: bad span {l:?}", v.name);
                    Span {
                        version: p[0].parse().unwrap(),
                        start_ms: p[1].parse().unwrap(),
                        end_ms: if p[2] == "-" {
                            0
                        } else {
                            p[2].parse().unwrap()
                        },
                        state: state(p[3]),
                        cause: cause(p[4]),
                        devices: p[5].parse().unwrap(),
                    }
                })
                .collect(),
        },
        other => panic!("{}: bad server type {other:?}", v.name),
    }
}

/// A `0`/`1` field.
fn flag(v: &Block, key: &str) -> bool {
    match v.get(key) {
        Some("1") => true,
        Some("0") => false,
        other => panic!("{}: bad {key} {other:?}", v.name),
    }
}

fn details(e: &FrameError) -> Vec<(String, String)> {
    let kv = |k: &str, v: &dyn ToString| (k.to_string(), v.to_string());
    match *e {
        FrameError::FrameTooLarge { len, max } => vec![kv("len", &len), kv("max", &max)],
        FrameError::UnknownType(t) => vec![kv("value", &t)],
        FrameError::TrailingBytes { extra } => vec![kv("extra", &extra)],
        FrameError::CountMismatch { count, bytes } => {
            vec![kv("count", &count), kv("bytes", &bytes)]
        }
        FrameError::StringTooLong { len, max } => vec![kv("len", &len), kv("max", &max)],
        FrameError::ZeroUser { index }
        | FrameError::BadLastSeen { index }
        | FrameError::BadSpan { index } => {
            vec![kv("index", &index)]
        }
        FrameError::BadState { index, value }
        | FrameError::BadCause { index, value }
        | FrameError::BadDevices { index, value } => {
            vec![kv("index", &index), kv("value", &value)]
        }
        FrameError::BadScope(s) => vec![kv("value", &s)],
        FrameError::ReservedFlags(f) => vec![kv("value", &f)],
        FrameError::UnsupportedVersion(v) => vec![kv("value", &v)],
        FrameError::TooShort
        | FrameError::BadLength
        | FrameError::BadUtf8
        | FrameError::ZeroRequestId
        | FrameError::ZeroShardCount
        | FrameError::ZeroMaxSpans
        | FrameError::BadWarming
        | FrameError::BadMembers => vec![],
    }
}

fn check_valid(v: &Block) {
    let dir = v.get("dir").expect("dir");
    let version = version_of(v);
    let frame = one_frame(&v.bytes, DEFAULT_MAX_FRAME_LEN)
        .unwrap_or_else(|e| panic!("{}: framing: {e}", v.name));
    let mut out = BytesMut::new();
    let mut again = BytesMut::new();
    match dir {
        "client" => {
            let want = expected_client(v);
            let f = version
                .decode_client(frame)
                .unwrap_or_else(|e| panic!("{}: decode: {e}", v.name));
            assert_eq!(f.frame_type().name(), v.get("type").unwrap(), "{}", v.name);
            assert_eq!(g_of(&f), want, "{}: decoded", v.name);
            // Every valid frame reads the same on a link of the latest version.
            let later = Version::LATEST.decode_client(frame).map(|f| g_of(&f));
            assert_eq!(later, Ok(want.clone()), "{}: on a version-4 link", v.name);
            if version == Version::V1 {
                assert_eq!(decode_client(frame).map(|f| c_of(&f)), Ok(want.clone()));
            }
            encode_c(&want, &mut out).unwrap_or_else(|e| panic!("{}: encode: {e}", v.name));
            f.encode(&mut again).unwrap();
        }
        "server" => {
            let want = expected_server(v);
            let f = version
                .decode_server(frame)
                .unwrap_or_else(|e| panic!("{}: decode: {e}", v.name));
            assert_eq!(f.frame_type().name(), v.get("type").unwrap(), "{}", v.name);
            assert_eq!(s_of(&f), want, "{}: decoded", v.name);
            let later = Version::LATEST.decode_server(frame).map(|f| s_of(&f));
            assert_eq!(later, Ok(want.clone()), "{}: on a version-4 link", v.name);
            if version == Version::V1 {
                assert_eq!(decode_server(frame).map(|f| s_of(&f)), Ok(want.clone()));
            }
            encode_s(&want, &mut out).unwrap_or_else(|e| panic!("{}: encode: {e}", v.name));
            f.encode(&mut again).unwrap();
        }
        other => panic!("{}: bad dir {other:?}", v.name),
    }
    assert_eq!(to_hex(&out), to_hex(&v.bytes), "{}: encode", v.name);
    assert_eq!(to_hex(&again), to_hex(&v.bytes), "{}: re-encode", v.name);
}

fn check_invalid(v: &Block) -> String {
    let dir = v.get("dir").expect("dir");
    let max = v
        .get("max_frame_len")
        .map_or(DEFAULT_MAX_FRAME_LEN, |m| m.parse().unwrap());
    let (reason, want_details) = v.error();
    let got = one_frame(&v.bytes, max).and_then(|frame| decode_dir(dir, version_of(v), frame));
    let e = got
        .err()
        .unwrap_or_else(|| panic!("{}: decoded, expected {reason}", v.name));
    assert_eq!(e.reason(), reason, "{}: {e}", v.name);
    assert_eq!(details(&e), want_details, "{}: details", v.name);
    // The reader and decoder never panic on any prefix or with any limit either.
    for n in 0..v.bytes.len() {
        let _ = FrameReader::new(max).next_frame(&v.bytes[..n]);
    }
    reason
}

#[test]
fn vectors() {
    let blocks = load("link.txt");
    let mut names = BTreeSet::new();
    let mut types = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for v in &blocks {
        assert!(names.insert(v.name.clone()), "duplicate vector {}", v.name);
        if v.get("error").is_some() {
            reasons.insert(check_invalid(v));
        } else {
            check_valid(v);
            types.insert(v.get("type").unwrap().to_string());
        }
    }
    // Every frame type has a valid vector; every reason an invalid one.
    let all_types: BTreeSet<String> = FrameType::ALL.iter().map(|t| t.name().into()).collect();
    assert_eq!(types, all_types);
    let all_reasons: BTreeSet<String> = FrameError::REASONS.iter().map(|r| r.to_string()).collect();
    assert_eq!(reasons, all_reasons);
}

/// Every hex dump of SPEC.md's push link example (§ P8) is the vector it names (which
/// `vectors` runs through the codec), and every row of the field-by-field table before it lies
/// at its offset in it.
#[test]
fn spec_example_matches_vectors() {
    let spec = std::fs::read_to_string(common::crate_path("SPEC.md")).unwrap();
    let blocks = load("link.txt");
    let marker = "<!-- link-example:";
    let mut seen = BTreeSet::new();
    let mut tables = 0;
    let mut rest = &spec[spec.find("### P8. Worked example").expect("§ P8")..];
    while let Some(at) = rest.find(marker) {
        let rows = common::table_bytes(&rest[..at]);
        rest = &rest[at + marker.len()..];
        let end = rest.find("-->").expect("marker end");
        let name = rest[..end].trim().to_string();
        rest = &rest[end..];
        let open = rest.find("```").expect("code block") + 3;
        let body = &rest[open..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let close = body.find("```").expect("code block end");
        let hex: String = body[..close]
            .lines()
            .map(|l| l.split_once(':').map_or(l, |(_, bytes)| bytes))
            .collect::<Vec<_>>()
            .join("\n");
        let bytes = parse_hex(&hex).unwrap();
        let v = blocks
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        assert_eq!(to_hex(&bytes), to_hex(&v.bytes), "SPEC example {name}");
        common::check_table(&name, &rows, &v.bytes);
        tables += usize::from(!rows.is_empty());
        rest = &body[close..];
        seen.insert(name);
    }
    // Every frame of the example has its table but version 2's HELLO (told in prose).
    assert_eq!(tables, 11);
    let want: BTreeSet<String> = [
        "spec_hello",
        "spec_welcome",
        "spec_subscribe",
        "spec_presence",
        "spec_events",
        "spec_v2_hello",
        "spec_v2_welcome",
        "spec_v2_history",
        "spec_v2_history_reply",
        "spec_v2_goaway",
        "spec_v3_pace",
        "spec_v4_map",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------------------------
// Round trips and framing

fn sample_event(user: u64, version: u64) -> Event {
    Event {
        user,
        state: WireState::Online,
        prev: WireState::Offline,
        cause: WireCause::FirstHeartbeat,
        at_ms: 1_700_000_123_456,
        version,
    }
}

fn sample_record(user: u64) -> PresenceRecord {
    PresenceRecord {
        user,
        state: WireState::Idle,
        last_seen_ms: Some(1_700_000_000_000 + user),
        version: user << 16,
    }
}

fn sample_span(version: u64) -> Span {
    Span {
        version,
        start_ms: 1_700_000_000_000 + version,
        end_ms: 1_700_000_000_000 + version + 1,
        state: WireState::Online,
        cause: WireCause::StateChange,
        devices: 2,
    }
}

fn sample_history() -> HistoryRequest {
    HistoryRequest {
        request_id: 7,
        user: 1001,
        since_ms: 0,
        after_version: 0,
        max_spans: 100,
    }
}

fn sample_client() -> Vec<C> {
    vec![
        C::Hello {
            version: 1,
            flags: HELLO_FLAG_FIREHOSE,
            name: "gw-1".into(),
            token: vec![1, 2, 3],
        },
        C::Subscribe(1, vec![1001, 1002, 1001]),
        C::Unsubscribe(2, vec![1002]),
        C::SubscribeAll(3),
        C::UnsubscribeAll(4),
        C::Query(5, vec![]),
        C::Stats(6),
    ]
}

fn sample_server() -> Vec<S> {
    vec![
        S::Welcome {
            version: 1,
            heartbeat_port: 7400,
            ports: vec![7401, 0, 7403],
            limits: Limits {
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
                max_users_per_request: 100_000,
                max_subscriptions: 1_000_000,
                max_requests_in_flight: 64,
            },
            timings: Timings {
                heartbeat_interval_ms: 20_000,
                grace_ms: 12_000,
                idle_after_ms: 300_000,
                tick_us: 10_000,
            },
            v2: None,
        },
        S::Presence {
            request_id: 1,
            is_final: true,
            warming: false,
            records: vec![
                sample_record(1001),
                PresenceRecord {
                    user: 1002,
                    state: WireState::Offline,
                    last_seen_ms: None,
                    version: 0,
                },
            ],
        },
        S::Events(vec![sample_event(1002, 5), sample_event(1003, 6)]),
        S::Lagged(vec![1001]),
        S::LaggedAll,
        S::Ack(2),
        S::Error {
            request_id: 0,
            code: ErrorCode::ShuttingDown.to_u16(),
            message: "bye".into(),
        },
        S::StatsReply(6, r#"{"shards":[],"link":{}}"#.into()),
    ]
}

/// Version 2's frames (and version 1's with version 2's fields), one stream each way, read back
/// on a version-2 link; on a version-1 link each is refused.
#[test]
fn round_trip_version_2_frames() {
    let clients = vec![
        C::Hello {
            version: 2,
            flags: 0,
            name: "gw-2".into(),
            token: vec![],
        },
        C::History(sample_history()),
        C::History(HistoryRequest {
            request_id: u32::MAX,
            user: u64::MAX,
            since_ms: u64::MAX,
            after_version: u64::MAX,
            max_spans: 1,
        }),
    ];
    let Some(S::Welcome {
        heartbeat_port,
        ports,
        limits,
        timings,
        ..
    }) = sample_server().into_iter().next()
    else {
        panic!()
    };
    let servers = vec![
        S::Welcome {
            version: 2,
            heartbeat_port,
            ports,
            limits,
            timings,
            v2: Some(WelcomeV2 {
                warm_remaining_ms: Some(44_000),
                idle_timeout_ms: 30_000,
            }),
        },
        S::Presence {
            request_id: 3,
            is_final: false,
            warming: true,
            records: vec![sample_record(5)],
        },
        S::GoAway {
            reason: GoAwayReason::Restarting.to_u16(),
            reconnect_after_ms: 2000,
            message: "restarting".into(),
        },
        S::GoAway {
            reason: 99,
            reconnect_after_ms: 0,
            message: String::new(),
        },
        S::HistoryReply {
            request_id: 7,
            more: true,
            last_seen_ms: Some(1_700_000_000_000),
            spans: vec![
                sample_span(1),
                Span {
                    end_ms: 0,
                    ..sample_span(2)
                },
            ],
        },
        S::HistoryReply {
            request_id: 8,
            more: false,
            last_seen_ms: None,
            spans: vec![],
        },
    ];
    let reader = FrameReader::default();
    let mut cs = BytesMut::new();
    for c in &clients {
        encode_c(c, &mut cs).unwrap();
    }
    let mut got = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = reader.next_frame(&cs[at..]).unwrap() {
        let f = Version::V2.decode_client(frame).unwrap();
        let mut again = BytesMut::new();
        f.encode(&mut again).unwrap();
        assert_eq!(&again[4..], frame);
        got.push(g_of(&f));
        assert!(decode_client(frame).is_err(), "{f:?} on a version-1 link");
        at += used;
    }
    assert_eq!(got, clients);

    let mut ss = BytesMut::new();
    for s in &servers {
        encode_s(s, &mut ss).unwrap();
    }
    let mut got = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = reader.next_frame(&ss[at..]).unwrap() {
        let f = Version::V2.decode_server(frame).unwrap();
        let mut again = BytesMut::new();
        f.encode(&mut again).unwrap();
        assert_eq!(&again[4..], frame);
        got.push(s_of(&f));
        assert!(decode_server(frame).is_err(), "{f:?} on a version-1 link");
        at += used;
    }
    assert_eq!(got, servers);
}

#[test]
fn version_2_accessors() {
    let mut out = BytesMut::new();
    encode_history(&mut out, &sample_history()).unwrap();
    assert_eq!(out.len(), 4 + HISTORY_LEN);
    let f = Version::V2.decode_client(&out[4..]).unwrap();
    assert_eq!(f.frame_type(), FrameType::History);
    assert_eq!(f.frame_type().since(), Version::V2);
    assert_eq!(f.request_id(), Some(7));
    assert_eq!(f.users(), None);
    assert_eq!(decode_client(&out[4..]), Err(FrameError::UnknownType(0x08)));

    let mut out = BytesMut::new();
    encode_subscribe(&mut out, 9, &[3]).unwrap();
    let f = Version::V2.decode_client(&out[4..]).unwrap();
    assert_eq!(f, GatewayFrame::Common(decode_client(&out[4..]).unwrap()));
    assert_eq!(f.request_id(), Some(9));
    assert_eq!(f.users().map(|u| u.len()), Some(1));

    // A daemon speaking version 4 reads every HELLO; one speaking 1 refuses versions 2 to 4.
    for version in Version::ALL {
        let mut out = BytesMut::new();
        encode_hello(&mut out, &Hello::new("gw").asking(version)).unwrap();
        let Ok(GatewayFrame::Common(ClientFrame::Hello(h))) =
            Version::LATEST.decode_client(&out[4..])
        else {
            panic!()
        };
        assert_eq!(h.version(), Some(version));
        assert_eq!(
            decode_client(&out[4..]).is_ok(),
            version == Version::V1,
            "{version}"
        );
    }

    let mut out = BytesMut::new();
    encode_goaway(&mut out, GoAwayReason::Restarting, 2000, &"é".repeat(600));
    let f = Version::V2.decode_server(&out[4..]).unwrap();
    assert!(f.ends_link() && !f.completes_request());
    assert_eq!(f.request_id(), None);
    let ServerFrame::GoAway(g) = f else { panic!() };
    assert_eq!(g.go_away_reason(), Some(GoAwayReason::Restarting));
    assert_eq!(g.reconnect_after_ms, 2000);
    assert_eq!(g.message.len(), MAX_GOAWAY_MESSAGE_LEN);

    let mut out = BytesMut::new();
    let spans = [sample_span(1), sample_span(2)];
    encode_history_reply(&mut out, 5, true, Some(1), &spans, DEFAULT_MAX_FRAME_LEN).unwrap();
    assert_eq!(out.len(), 4 + HISTORY_REPLY_HEADER_LEN + 2 * SPAN_LEN);
    let f = Version::V2.decode_server(&out[4..]).unwrap();
    assert!(f.completes_request() && !f.ends_link());
    assert_eq!(f.request_id(), Some(5));
    let ServerFrame::HistoryReply(h) = f else {
        panic!()
    };
    assert!(h.more);
    assert_eq!(h.last_seen_ms, Some(1));
    assert_eq!(h.spans.iter().collect::<Vec<_>>(), spans);
    // Zero copy: the list views the frame's own bytes.
    assert_eq!(
        h.spans.as_bytes().as_ptr(),
        out[4 + HISTORY_REPLY_HEADER_LEN..].as_ptr()
    );

    // The most spans one frame holds, exactly.
    for max in [DEFAULT_MAX_FRAME_LEN, MIN_MAX_FRAME_LEN, 46] {
        let n = max_history_spans(max);
        let spans: Vec<Span> = (1..=n as u64).map(sample_span).collect();
        let mut out = BytesMut::new();
        encode_history_reply(&mut out, 1, false, None, &spans, max).unwrap();
        assert!(out.len() - 4 <= max as usize);
        let more: Vec<Span> = (1..=n as u64 + 1).map(sample_span).collect();
        assert!(matches!(
            encode_history_reply(&mut out, 1, false, None, &more, max),
            Err(EncodeError::FrameTooLarge { .. })
        ));
    }
    assert_eq!(max_history_spans(DEFAULT_MAX_FRAME_LEN), 38_835);
    assert_eq!(max_history_spans(45), 0);

    let mut out = BytesMut::new();
    let v2 = WelcomeV2 {
        warm_remaining_ms: Some(10),
        idle_timeout_ms: 30_000,
    };
    encode_welcome_v2(
        &mut out,
        Version::V2,
        7400,
        &[0],
        &Limits::default(),
        &Timings::default(),
        &v2,
    )
    .unwrap();
    let ServerFrame::Welcome(w) = Version::V2.decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(w.version(), Version::V2);
    assert!(w.is_warming());
    assert_eq!(w.v2, Some(v2));
    // A version-1 gateway refuses it; one that asked for 2 reads a version-1 WELCOME.
    assert_eq!(
        decode_server(&out[4..]),
        Err(FrameError::UnsupportedVersion(2))
    );
    let mut out = BytesMut::new();
    encode_welcome(
        &mut out,
        7400,
        &[0],
        &Limits::default(),
        &Timings::default(),
    )
    .unwrap();
    let ServerFrame::Welcome(w) = Version::V2.decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (w.version(), w.v2, w.is_warming()),
        (Version::V1, None, false)
    );
}

#[test]
fn presence_warming_flag() {
    let records = [sample_record(1), sample_record(2)];
    let mut plain = BytesMut::new();
    encode_presence(&mut plain, 3, &records, true, DEFAULT_MAX_FRAME_LEN).unwrap();
    let mut v2 = BytesMut::new();
    encode_presence_v2(&mut v2, 3, &records, true, false, DEFAULT_MAX_FRAME_LEN).unwrap();
    assert_eq!(plain, v2, "not warming: version 1's bytes");
    // Warming: every frame of a split answer has the flag, FINAL only the last.
    let mut out = BytesMut::new();
    let n = encode_presence_v2(&mut out, 3, &records, true, true, 36).unwrap();
    assert_eq!(n, 2);
    let mut w = PresenceWriter::new(3, 36).unwrap().with_warming(true);
    w.push(records[0]).unwrap();
    let mut written = w.flush().unwrap();
    w.push(records[1]).unwrap();
    written.extend_from_slice(&w.finish(true).unwrap());
    assert_eq!(written, out, "PresenceWriter vs encode_presence_v2");
    let reader = FrameReader::default();
    let (first, used) = reader.next_frame(&out).unwrap().unwrap();
    let (second, _) = reader.next_frame(&out[used..]).unwrap().unwrap();
    for (frame, last) in [(first, false), (second, true)] {
        let ServerFrame::Presence(p) = Version::V2.decode_server(frame).unwrap() else {
            panic!()
        };
        assert!(p.warming);
        assert_eq!(p.is_final, last);
        assert_eq!(
            decode_server(frame),
            Err(FrameError::ReservedFlags(u16::from(frame[5])))
        );
    }
}

/// Every frame type, encoded into one stream each way, read back with a `FrameReader` — whole,
/// and fed one byte at a time.
#[test]
fn round_trip_every_frame_type() {
    let clients = sample_client();
    let servers = sample_server();
    let mut cs = BytesMut::new();
    for c in &clients {
        encode_c(c, &mut cs).unwrap();
    }
    let mut ss = BytesMut::new();
    for s in &servers {
        encode_s(s, &mut ss).unwrap();
    }
    let reader = FrameReader::default();

    let mut got = Vec::new();
    let mut at = 0;
    while let Some((f, used)) = reader.next_client(&cs[at..]).unwrap() {
        got.push(c_of(&f));
        at += used;
    }
    assert_eq!(at, cs.len());
    assert_eq!(got, clients);

    let mut got = Vec::new();
    let mut at = 0;
    while let Some((f, used)) = reader.next_server(&ss[at..]).unwrap() {
        got.push(s_of(&f));
        at += used;
    }
    assert_eq!(at, ss.len());
    assert_eq!(got, servers);

    // Byte by byte: None until the frame is whole.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in ss.iter() {
        buf.extend_from_slice(&[byte]);
        if let Some((frame, used)) = reader.next_frame(&buf).unwrap() {
            got.push(s_of(&decode_server(frame).unwrap()));
            let _ = buf.split_to(used);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, servers);
}

#[test]
fn accessors() {
    let mut out = BytesMut::new();
    encode_subscribe(&mut out, 9, &[3, 1, 2]).unwrap();
    let (frame, _) = FrameReader::default().next_frame(&out).unwrap().unwrap();
    let f = decode_client(frame).unwrap();
    assert_eq!(f.request_id(), Some(9));
    assert_eq!(f.frame_type(), FrameType::Subscribe);
    assert!(f.frame_type().is_client());
    let users = f.users().unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users.get(2), Some(2));
    assert_eq!(users.get(3), None);
    assert_eq!(users.get(usize::MAX), None);
    assert_eq!(users.iter().rev().collect::<Vec<_>>(), [2, 1, 3]);
    assert_eq!(users.iter().len(), 3);
    assert_eq!((&users).into_iter().nth(1), Some(1));
    assert_eq!(format!("{users:?}"), "[3, 1, 2]");
    // Zero copy: the list views the frame's own bytes.
    assert_eq!(users.as_bytes().as_ptr(), frame[9..].as_ptr());

    let mut out = BytesMut::new();
    let h = Hello::new("gw");
    assert!(!h.wants_firehose());
    encode_hello(&mut out, &h).unwrap();
    let f = decode_client(&out[4..]).unwrap();
    assert_eq!(f, ClientFrame::Hello(h));
    assert_eq!(f.request_id(), None);
    assert_eq!(f.users(), None);

    let mut out = BytesMut::new();
    encode_presence(
        &mut out,
        4,
        &[sample_record(7)],
        false,
        DEFAULT_MAX_FRAME_LEN,
    )
    .unwrap();
    let f = decode_server(&out[4..]).unwrap();
    assert_eq!(f.request_id(), Some(4));
    assert!(!f.completes_request());
    let ServerFrame::Presence(p) = f else {
        panic!()
    };
    assert_eq!(p.records.get(0), Some(sample_record(7)));
    assert_eq!(p.records.get(1), None);
    assert_eq!(p.records.iter().next_back(), Some(sample_record(7)));

    let mut out = BytesMut::new();
    encode_error(&mut out, 0, ErrorCode::Internal, "x");
    let f = decode_server(&out[4..]).unwrap();
    assert_eq!(f.request_id(), None);
    assert!(!f.completes_request());
    let ServerFrame::Error(e) = f else { panic!() };
    assert!(e.closes_link());
    assert_eq!(e.error_code(), Some(ErrorCode::Internal));

    let mut out = BytesMut::new();
    encode_ack(&mut out, 5).unwrap();
    let f = decode_server(&out[4..]).unwrap();
    assert!(f.completes_request());
    assert_eq!(f.request_id(), Some(5));
    assert!(!f.frame_type().is_client());

    let mut out = BytesMut::new();
    encode_welcome(
        &mut out,
        7400,
        &[7401, 0],
        &Limits::default(),
        &Timings::default(),
    )
    .unwrap();
    let ServerFrame::Welcome(w) = decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(w.shard_count(), 2);
    for user in 1..200u64 {
        let port = w.heartbeat_port_for(user);
        match shard_of(user, 2) {
            0 => assert_eq!(port, 7401),
            _ => assert_eq!(port, 7400, "shard 1 has no port: the shared one"),
        }
    }
}

#[test]
fn error_codes_and_frame_error_mapping() {
    let closing: Vec<&str> = ErrorCode::ALL
        .iter()
        .filter(|c| c.closes_link())
        .map(|c| c.name())
        .collect();
    assert_eq!(
        closing,
        [
            "bad_frame",
            "frame_too_large",
            "protocol_version",
            "hello_required",
            "stalled",
        ]
    );
    // `unauthorized` closes the link at HELLO (request id 0) but only refuses a SUBSCRIBE_ALL
    // without the firehose grant (SPEC.md § P5.1).
    assert!(!ErrorCode::Unauthorized.closes_link());
    assert_eq!(
        FrameError::FrameTooLarge { len: 2, max: 1 }.error_code(),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        FrameError::UnsupportedVersion(2).error_code(),
        ErrorCode::ProtocolVersion
    );
    assert_eq!(FrameError::TooShort.error_code(), ErrorCode::BadFrame);
}

#[test]
fn encode_refusals_leave_out_unchanged() {
    let mut out = BytesMut::from(&b"xy"[..]);
    let long = "n".repeat(65);
    let cases: Vec<(Result<(), EncodeError>, &str)> = vec![
        (encode_subscribe(&mut out, 0, &[1]), "zero_request_id"),
        (encode_query(&mut out, 1, &[1, 0]), "zero_user"),
        (encode_lagged(&mut out, &[0]), "zero_user"),
        (encode_ack(&mut out, 0), "zero_request_id"),
        (encode_stats(&mut out, 0), "zero_request_id"),
        (encode_subscribe_all(&mut out, 0), "zero_request_id"),
        (encode_unsubscribe_all(&mut out, 0), "zero_request_id"),
        (encode_unsubscribe(&mut out, 0, &[]), "zero_request_id"),
        (
            encode_hello(&mut out, &Hello::new(&long)),
            "string_too_long",
        ),
        (
            encode_hello(
                &mut out,
                &Hello {
                    token: &[0; 257],
                    ..Hello::new("")
                },
            ),
            "string_too_long",
        ),
        (
            encode_hello(
                &mut out,
                &Hello {
                    protocol_version: 5,
                    ..Hello::new("")
                },
            ),
            "unsupported_version",
        ),
        (
            encode_hello(
                &mut out,
                &Hello {
                    protocol_version: 0,
                    ..Hello::new("")
                },
            ),
            "unsupported_version",
        ),
        (
            encode_history(
                &mut out,
                &HistoryRequest {
                    request_id: 0,
                    ..sample_history()
                },
            ),
            "zero_request_id",
        ),
        (
            encode_history(
                &mut out,
                &HistoryRequest {
                    user: 0,
                    ..sample_history()
                },
            ),
            "zero_user",
        ),
        (
            encode_history(
                &mut out,
                &HistoryRequest {
                    max_spans: 0,
                    ..sample_history()
                },
            ),
            "zero_max_spans",
        ),
        (
            encode_history_reply(&mut out, 0, false, None, &[], DEFAULT_MAX_FRAME_LEN),
            "zero_request_id",
        ),
        (
            encode_history_reply(
                &mut out,
                1,
                false,
                None,
                &[
                    sample_span(1),
                    Span {
                        devices: 32,
                        ..sample_span(2)
                    },
                ],
                DEFAULT_MAX_FRAME_LEN,
            ),
            "bad_span",
        ),
        (
            encode_history_reply(
                &mut out,
                1,
                false,
                None,
                &[Span {
                    start_ms: 5,
                    end_ms: 4,
                    ..sample_span(1)
                }],
                DEFAULT_MAX_FRAME_LEN,
            ),
            "bad_span",
        ),
        (
            encode_history_reply(&mut out, 1, false, None, &[sample_span(1)], 45),
            "frame_too_large",
        ),
        (
            encode_presence_v2(&mut out, 0, &[], true, true, DEFAULT_MAX_FRAME_LEN).map(|_| ()),
            "zero_request_id",
        ),
        (
            encode_welcome_v2(
                &mut out,
                Version::V2,
                1,
                &[],
                &Limits::default(),
                &Timings::default(),
                &WelcomeV2::default(),
            ),
            "bad_shard_count",
        ),
        (
            encode_hello(
                &mut out,
                &Hello {
                    flags: 2,
                    ..Hello::new("")
                },
            ),
            "reserved_flags",
        ),
        (
            encode_welcome(&mut out, 1, &[], &Limits::default(), &Timings::default()),
            "bad_shard_count",
        ),
        (
            encode_stats_reply(&mut out, 1, &"j".repeat(60_001)),
            "string_too_long",
        ),
        (encode_stats_reply(&mut out, 0, "{}"), "zero_request_id"),
        (
            encode_presence(&mut out, 0, &[], true, DEFAULT_MAX_FRAME_LEN).map(|_| ()),
            "zero_request_id",
        ),
        (
            encode_presence(
                &mut out,
                1,
                &[sample_record(0)],
                true,
                DEFAULT_MAX_FRAME_LEN,
            )
            .map(|_| ()),
            "zero_user",
        ),
        (
            encode_presence(&mut out, 1, &[], true, 35).map(|_| ()),
            "frame_too_large",
        ),
        (
            encode_events(&mut out, &[sample_event(0, 1)], DEFAULT_MAX_FRAME_LEN).map(|_| ()),
            "zero_user",
        ),
        (
            encode_events(&mut out, &[sample_event(1, 1)], 31).map(|_| ()),
            "frame_too_large",
        ),
    ];
    for (i, (r, reason)) in cases.into_iter().enumerate() {
        let e = r.expect_err(reason);
        assert_eq!(e.reason(), reason, "case {i}: {e}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(&out[..], b"xy");
    // A WELCOME whose version does not match its fields is refused.
    let w = Welcome {
        protocol_version: 2,
        heartbeat_port: 0,
        shard_ports: Default::default(),
        limits: Limits::default(),
        timings: Timings::default(),
        v2: None,
    };
    for (protocol_version, v2) in [(2, None), (1, Some(WelcomeV2::default())), (3, None)] {
        let welcome = ServerFrame::Welcome(Welcome {
            protocol_version,
            v2,
            ..w
        });
        assert_eq!(
            welcome.encode(&mut out),
            Err(EncodeError::UnsupportedVersion(protocol_version))
        );
    }
    let welcome = ServerFrame::Welcome(Welcome {
        protocol_version: 1,
        ..w
    });
    assert_eq!(welcome.encode(&mut out), Err(EncodeError::BadShardCount(0)));
    assert_eq!(&out[..], b"xy");
    assert_eq!(EncodeError::Full.reason(), "full");
}

#[test]
fn error_message_is_cut_at_a_char_boundary() {
    let mut out = BytesMut::new();
    let msg = "é".repeat(600); // 1200 bytes
    encode_error(&mut out, 3, ErrorCode::Internal, &msg);
    let ServerFrame::Error(e) = decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(e.message.len(), 1024);
    assert_eq!(e.message, &msg[..1024]);
    assert_eq!(e.code, 10);
}

// ---------------------------------------------------------------------------------------------
// Writers

#[test]
fn events_writer_caps_frames_and_never_sends_empty_ones() {
    assert_eq!(
        EventsWriter::new(31).err(),
        Some(EncodeError::FrameTooLarge { len: 32, max: 31 })
    );
    // Room for exactly 3 transitions: 5 + 3 × 27 = 86.
    let mut w = EventsWriter::new(86).unwrap();
    assert_eq!(max_events(86), 3);
    assert!(w.is_empty());
    assert_eq!(w.flush(), None);
    assert_eq!(w.remaining(), 3);
    for u in 1..=3 {
        w.push(sample_event(u, u)).unwrap();
    }
    assert!(w.is_full());
    assert_eq!(w.push(sample_event(4, 4)), Err(EncodeError::Full));
    assert_eq!(
        w.push(sample_event(0, 4)),
        Err(EncodeError::ZeroUser { index: 3 })
    );
    assert_eq!(w.len(), 3);
    let first = w.flush().unwrap();
    assert_eq!(first.len(), 4 + 86);
    // The writer goes on with a new frame.
    assert!(w.is_empty());
    w.push(sample_event(4, 4)).unwrap();
    let second = w.finish().unwrap();
    assert_eq!(EventsWriter::new(86).unwrap().finish(), None);

    let ServerFrame::Events(a) = decode_server(&first[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(a.iter().map(|e| e.user).collect::<Vec<_>>(), [1, 2, 3]);
    let mut want = BytesMut::new();
    encode_events(&mut want, &[sample_event(4, 4)], 86).unwrap();
    assert_eq!(second, want);
}

#[test]
fn presence_writer_final_and_caps() {
    assert_eq!(
        PresenceWriter::new(0, 100).err(),
        Some(EncodeError::ZeroRequestId)
    );
    assert_eq!(
        PresenceWriter::new(1, 35).err(),
        Some(EncodeError::FrameTooLarge { len: 36, max: 35 })
    );
    assert_eq!(max_presence_records(36), 1);
    assert_eq!(max_presence_records(35), 0);
    // Non-final and empty: nothing. Final and empty: a frame.
    assert_eq!(PresenceWriter::new(1, 36).unwrap().finish(false), None);
    let empty = PresenceWriter::new(1, 36).unwrap().finish(true).unwrap();
    assert_eq!(empty.len(), 14);
    assert!(decode_server(&empty[4..]).unwrap().completes_request());

    let mut w = PresenceWriter::new(2, 36).unwrap();
    assert_eq!(w.request_id(), 2);
    assert_eq!(w.flush(), None);
    assert_eq!(w.remaining(), 1);
    w.push(sample_record(5)).unwrap();
    assert_eq!(w.push(sample_record(6)), Err(EncodeError::Full));
    assert_eq!(
        w.push(sample_record(0)),
        Err(EncodeError::ZeroUser { index: 1 })
    );
    assert!(w.is_full());
    assert_eq!(w.len(), 1);
    let a = w.flush().unwrap();
    w.push(sample_record(6)).unwrap();
    let b = w.finish(true).unwrap();
    let ServerFrame::Presence(pa) = decode_server(&a[4..]).unwrap() else {
        panic!()
    };
    let ServerFrame::Presence(pb) = decode_server(&b[4..]).unwrap() else {
        panic!()
    };
    assert!(!pa.is_final && pb.is_final);
    assert_eq!(pa.records.get(0), Some(sample_record(5)));
    assert_eq!(pb.records.get(0), Some(sample_record(6)));
    // The one-shot form gives the same bytes.
    let mut want = BytesMut::new();
    encode_presence(
        &mut want,
        2,
        &[sample_record(5), sample_record(6)],
        true,
        36,
    )
    .unwrap();
    let mut got = a;
    got.extend_from_slice(&b);
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The writers and the one-shot functions cut frames identically.
    #[test]
    fn writers_match_one_shot(n in 0usize..120, max in 36u32..1500, is_final in any::<bool>()) {
        let records: Vec<PresenceRecord> = (1..=n as u64).map(sample_record).collect();
        let mut want = BytesMut::new();
        encode_presence(&mut want, 3, &records, is_final, max).unwrap();
        let mut got = BytesMut::new();
        let mut w = PresenceWriter::new(3, max).unwrap();
        for r in &records {
            if w.push(*r) == Err(EncodeError::Full) {
                got.extend_from_slice(&w.flush().unwrap());
                w.push(*r).unwrap();
            }
        }
        if let Some(f) = w.finish(is_final) {
            got.extend_from_slice(&f);
        }
        prop_assert_eq!(&got[..], &want[..]);

        let events: Vec<Event> = (1..=n as u64).map(|u| sample_event(u, u)).collect();
        let mut want = BytesMut::new();
        encode_events(&mut want, &events, max).unwrap();
        let mut got = BytesMut::new();
        let mut w = EventsWriter::new(max).unwrap();
        for e in &events {
            if w.push(*e) == Err(EncodeError::Full) {
                got.extend_from_slice(&w.flush().unwrap());
                w.push(*e).unwrap();
            }
        }
        if let Some(f) = w.finish() {
            got.extend_from_slice(&f);
        }
        prop_assert_eq!(&got[..], &want[..]);
    }
}

/// Splits `out` into frames with `reader`, checking each fits `max`.
fn frames(out: &[u8], max: u32) -> Vec<ServerFrame<'_>> {
    let reader = FrameReader::new(max);
    let mut at = 0;
    let mut v = Vec::new();
    while let Some((f, used)) = reader.next_server(&out[at..]).unwrap() {
        assert!(used - 4 <= max as usize);
        v.push(f);
        at += used;
    }
    assert_eq!(at, out.len());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn presence_split_preserves_records(
        n in 0usize..200,
        max in 36u32..2000,
        is_final in any::<bool>(),
    ) {
        let records: Vec<PresenceRecord> = (1..=n as u64).map(sample_record).collect();
        let mut out = BytesMut::new();
        let count = encode_presence(&mut out, 77, &records, is_final, max).unwrap();
        let fs = frames(&out, max);
        prop_assert_eq!(fs.len(), count);
        let mut got = Vec::new();
        for (i, f) in fs.iter().enumerate() {
            let ServerFrame::Presence(p) = f else { panic!() };
            prop_assert_eq!(p.request_id, 77);
            prop_assert_eq!(p.is_final, is_final && i + 1 == fs.len());
            prop_assert!(!p.records.is_empty() || (n == 0 && is_final));
            got.extend(p.records.iter());
        }
        prop_assert_eq!(got, records);
        prop_assert_eq!(count == 0, n == 0 && !is_final);
    }

    #[test]
    fn events_split_preserves_order(n in 0usize..300, max in 32u32..3000) {
        let events: Vec<Event> = (1..=n as u64).map(|u| sample_event(u, u)).collect();
        let mut out = BytesMut::new();
        let count = encode_events(&mut out, &events, max).unwrap();
        let fs = frames(&out, max);
        prop_assert_eq!(fs.len(), count);
        let per = (max as usize - EVENTS_HEADER_LEN) / EVENT_LEN;
        prop_assert_eq!(count, n.div_ceil(per));
        let mut got = Vec::new();
        for f in &fs {
            let ServerFrame::Events(e) = f else { panic!() };
            got.extend(e.iter());
        }
        prop_assert_eq!(got, events);
    }
}

// ---------------------------------------------------------------------------------------------
// The owner function

/// splitmix64's first outputs from seed 0 (the reference generator: state += golden gamma,
/// then the finaliser), i.e. mix(k × 0x9e3779b97f4a7c15) for k = 1, 2, 3.
const SPLITMIX_SEED0: [u64; 3] = [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f];
const GAMMA: u64 = 0x9e3779b97f4a7c15;

#[test]
fn shard_of_is_fastrange_of_splitmix64() {
    for (k, &mixed) in SPLITMIX_SEED0.iter().enumerate() {
        let user = GAMMA.wrapping_mul(k as u64 + 1);
        for n in [1u16, 2, 3, 7, 8, 1000, u16::MAX] {
            let want = ((u128::from(mixed) * u128::from(n)) >> 64) as u16;
            assert_eq!(shard_of(user, n), want, "user {user:#x}, {n} shards");
        }
    }
    for user in [0, 1, u64::MAX] {
        assert_eq!(shard_of(user, 0), 0);
        assert_eq!(shard_of(user, 1), 0);
    }
}

/// The values tabulated in SPEC.md.
#[test]
fn shard_of_spec_table() {
    let table: [(u64, [u16; 4]); 4] = [
        (1, [0, 1, 2, 338]),
        (1001, [0, 1, 3, 442]),
        (1002, [1, 2, 5, 703]),
        (u64::MAX, [1, 2, 5, 706]),
    ];
    for (user, want) in table {
        let got = [2, 3, 8, 1000].map(|n| shard_of(user, n));
        assert_eq!(got, want, "user {user}");
    }
}

#[test]
fn shard_of_spreads_sequential_users() {
    for n in [2u16, 3, 8, 12] {
        let mut counts = vec![0u32; n as usize];
        let users = 120_000u64;
        for user in 1..=users {
            counts[shard_of(user, n) as usize] += 1;
        }
        let expect = users as f64 / f64::from(n);
        for &c in &counts {
            assert!(
                (f64::from(c) - expect).abs() < expect * 0.03,
                "{n} shards: {counts:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn arb_state() -> impl Strategy<Value = WireState> {
    prop::sample::select(WireState::ALL.to_vec())
}

fn arb_cause() -> impl Strategy<Value = WireCause> {
    prop::sample::select(WireCause::ALL.to_vec())
}

fn arb_user() -> impl Strategy<Value = u64> {
    prop_oneof![1..=1000u64, 1..=u64::MAX]
}

fn arb_users() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(arb_user(), 0..40)
}

fn arb_rid() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn arb_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max / 4).prop_map(String::from_iter)
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
        arb_cause(),
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
        arb_cause(),
        0..=MAX_SPAN_DEVICES,
    )
        .prop_map(|(version, a, b, state, cause, devices)| Span {
            version,
            start_ms: a.min(b),
            end_ms: if a % 4 == 0 { 0 } else { a.max(b) },
            state,
            cause,
            devices,
        })
}

fn arb_client() -> impl Strategy<Value = C> {
    prop_oneof![
        (
            0u16..2,
            arb_string(MAX_CLIENT_NAME_LEN),
            prop::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN),
            1u16..=2,
        )
            .prop_map(|(flags, name, token, version)| C::Hello {
                version,
                flags,
                name,
                token
            }),
        (
            arb_rid(),
            arb_user(),
            any::<u64>(),
            any::<u64>(),
            1..=u32::MAX
        )
            .prop_map(
                |(request_id, user, since_ms, after_version, max_spans)| C::History(
                    HistoryRequest {
                        request_id,
                        user,
                        since_ms,
                        after_version,
                        max_spans,
                    }
                )
            ),
        (arb_rid(), arb_users()).prop_map(|(r, u)| C::Subscribe(r, u)),
        (arb_rid(), arb_users()).prop_map(|(r, u)| C::Unsubscribe(r, u)),
        arb_rid().prop_map(C::SubscribeAll),
        arb_rid().prop_map(C::UnsubscribeAll),
        (arb_rid(), arb_users()).prop_map(|(r, u)| C::Query(r, u)),
        arb_rid().prop_map(C::Stats),
    ]
}

fn arb_server() -> impl Strategy<Value = S> {
    prop_oneof![
        (
            any::<u16>(),
            prop::collection::vec(any::<u16>(), 1..20),
            any::<[u32; 8]>(),
            prop::option::of((any::<Option<u32>>(), any::<u32>())),
        )
            .prop_map(|(heartbeat_port, ports, v, v2)| S::Welcome {
                version: if v2.is_some() { 2 } else { 1 },
                heartbeat_port,
                ports,
                v2: v2.map(|(warm_remaining_ms, idle_timeout_ms)| WelcomeV2 {
                    warm_remaining_ms,
                    idle_timeout_ms,
                }),
                limits: Limits {
                    max_frame_len: v[0],
                    max_users_per_request: v[1],
                    max_subscriptions: v[2],
                    max_requests_in_flight: v[3],
                },
                timings: Timings {
                    heartbeat_interval_ms: v[4],
                    grace_ms: v[5],
                    idle_after_ms: v[6],
                    tick_us: v[7],
                },
            }),
        (
            arb_rid(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(arb_record(), 1..30)
        )
            .prop_map(|(request_id, is_final, warming, records)| S::Presence {
                request_id,
                is_final,
                warming,
                records
            }),
        (arb_rid(), any::<bool>()).prop_map(|(request_id, warming)| S::Presence {
            request_id,
            is_final: true,
            warming,
            records: vec![]
        }),
        (
            any::<u16>(),
            any::<u32>(),
            arb_string(MAX_GOAWAY_MESSAGE_LEN)
        )
            .prop_map(|(reason, reconnect_after_ms, message)| S::GoAway {
                reason,
                reconnect_after_ms,
                message
            }),
        (
            arb_rid(),
            any::<bool>(),
            any::<Option<u64>>(),
            prop::collection::vec(arb_span(), 0..30)
        )
            .prop_map(|(request_id, more, last_seen_ms, spans)| S::HistoryReply {
                request_id,
                more,
                last_seen_ms,
                spans
            }),
        prop::collection::vec(arb_event(), 1..30).prop_map(S::Events),
        arb_users().prop_map(S::Lagged),
        Just(S::LaggedAll),
        arb_rid().prop_map(S::Ack),
        (
            any::<u32>(),
            any::<u16>(),
            arb_string(MAX_ERROR_MESSAGE_LEN)
        )
            .prop_map(|(request_id, code, message)| S::Error {
                request_id,
                code,
                message
            }),
        (arb_rid(), arb_string(2000)).prop_map(|(r, j)| S::StatsReply(r, j)),
    ]
}

/// Checks a frame's strict prefixes and one-byte extensions all fail to decode, with the
/// length prefix adjusted so that framing is not what refuses them.
fn check_strict(frame: &[u8], decode: impl Fn(&[u8]) -> Result<(), FrameError>) {
    for n in 0..frame.len() {
        let e = decode(&frame[..n]).expect_err("a strict prefix decoded");
        if n == 0 {
            assert_eq!(e, FrameError::BadLength);
        }
    }
    let mut longer = frame.to_vec();
    longer.push(0);
    decode(&longer).expect_err("a frame with a trailing byte decoded");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Random valid frames round-trip exactly, and re-encoding a decoded frame gives its bytes;
    /// on a version-2 link always, on a version-1 link exactly when they are version 1's.
    #[test]
    fn client_frames_round_trip(c in arb_client()) {
        let mut out = BytesMut::new();
        encode_c(&c, &mut out).unwrap();
        let (frame, used) = FrameReader::default().next_frame(&out).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        let f = Version::V2.decode_client(frame).unwrap();
        prop_assert_eq!(g_of(&f), c.clone());
        let mut again = BytesMut::new();
        f.encode(&mut again).unwrap();
        prop_assert_eq!(&again[..], &out[..]);
        check_strict(&out[4..], |b| Version::V2.decode_client(b).map(|_| ()));
        let v1 = matches!(&c, C::Hello { version: 1, .. }) || !matches!(&c, C::Hello { .. });
        if v1 && c.since() == Version::V1 {
            let (f, _) = FrameReader::default().next_client(&out).unwrap().unwrap();
            prop_assert_eq!(c_of(&f), c);
            check_strict(&out[4..], |b| decode_client(b).map(|_| ()));
        } else {
            prop_assert!(decode_client(frame).is_err());
        }
    }

    #[test]
    fn server_frames_round_trip(s in arb_server()) {
        let mut out = BytesMut::new();
        encode_s(&s, &mut out).unwrap();
        let (frame, used) = FrameReader::default().next_frame(&out).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        let f = Version::V2.decode_server(frame).unwrap();
        prop_assert_eq!(s_of(&f), s.clone());
        let mut again = BytesMut::new();
        f.encode(&mut again).unwrap();
        prop_assert_eq!(&again[..], &out[..]);
        check_strict(&out[4..], |b| Version::V2.decode_server(b).map(|_| ()));
        if s.since() == Version::V1 {
            let (f, _) = FrameReader::default().next_server(&out).unwrap().unwrap();
            prop_assert_eq!(s_of(&f), s);
            check_strict(&out[4..], |b| decode_server(b).map(|_| ()));
        } else {
            prop_assert!(decode_server(frame).is_err());
        }
        // A stream cut anywhere inside the frame is "need more bytes", not an error.
        for n in 0..out.len() {
            prop_assert_eq!(FrameReader::default().next_frame(&out[..n]), Ok(None));
        }
    }

    /// Arbitrary bytes never panic anything; whatever decodes re-encodes to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), max in any::<u32>()) {
        if let Ok(f) = decode_client(&bytes) {
            let mut out = BytesMut::new();
            f.encode(&mut out).unwrap();
            prop_assert_eq!(&out[4..], &bytes[..]);
        }
        if let Ok(f) = decode_server(&bytes) {
            let mut out = BytesMut::new();
            f.encode(&mut out).unwrap();
            prop_assert_eq!(&out[4..], &bytes[..]);
        }
        if let Ok(f) = Version::V2.decode_client(&bytes) {
            let mut out = BytesMut::new();
            f.encode(&mut out).unwrap();
            prop_assert_eq!(&out[4..], &bytes[..]);
        }
        if let Ok(f) = Version::V2.decode_server(&bytes) {
            let mut out = BytesMut::new();
            f.encode(&mut out).unwrap();
            prop_assert_eq!(&out[4..], &bytes[..]);
        }
        match FrameReader::new(max).next_frame(&bytes) {
            Ok(Some((frame, used))) => {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(frame.len() + 4, used);
                prop_assert!(!frame.is_empty() && frame.len() as u64 <= u64::from(max));
            }
            Ok(None) => {}
            Err(e) => {
                let framing = matches!(e, FrameError::BadLength | FrameError::FrameTooLarge { .. });
                prop_assert!(framing, "unexpected {:?}", e);
            }
        }
    }

    /// Valid frames with random bytes changed: never a panic; what decodes is canonical.
    #[test]
    fn mutated_frames_never_panic(
        s in arb_server(),
        c in arb_client(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut out = BytesMut::new();
        encode_s(&s, &mut out).unwrap();
        encode_c(&c, &mut out).unwrap();
        let mut bytes = out.to_vec();
        for (i, b) in &edits {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        let reader = FrameReader::default();
        let mut at = 0;
        while let Ok(Some((frame, used))) = reader.next_frame(&bytes[at..]) {
            if let Ok(f) = decode_server(frame) {
                let mut o = BytesMut::new();
                f.encode(&mut o).unwrap();
                prop_assert_eq!(&o[4..], frame);
            }
            if let Ok(f) = decode_client(frame) {
                let mut o = BytesMut::new();
                f.encode(&mut o).unwrap();
                prop_assert_eq!(&o[4..], frame);
            }
            if let Ok(f) = Version::V2.decode_server(frame) {
                let mut o = BytesMut::new();
                f.encode(&mut o).unwrap();
                prop_assert_eq!(&o[4..], frame);
            }
            if let Ok(f) = Version::V2.decode_client(frame) {
                let mut o = BytesMut::new();
                f.encode(&mut o).unwrap();
                prop_assert_eq!(&o[4..], frame);
            }
            at += used;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Version 4: MAP and MEMBERS (SPEC.md § P6.14)

fn sample_map() -> MemberMap {
    use presenced_wire::cluster::Member;
    let member = |id: &str, warm_at_ms| Member {
        id: id.into(),
        link: format!("10.0.0.{}:7500", id.len()),
        heartbeat: format!("10.0.0.{}:7400", id.len()),
        warm_at_ms,
    };
    MemberMap {
        from: "a".into(),
        revision: 12,
        replicas: 2,
        etcd: true,
        members: vec![member("a", 0), member("bb", 1_700_000_000_000)],
    }
}

/// MAP and MEMBERS read back on a version-4 link and are refused (unknown type) on a
/// version-3 one; a decoded MEMBERS' map is sorted by id whatever order it was sent in.
#[test]
fn round_trip_version_4_frames() {
    let mut out = BytesMut::new();
    encode_map(&mut out, 9, u64::MAX).unwrap();
    assert_eq!(out.len(), 4 + 1 + 12);
    let f = Version::V4.decode_client(&out[4..]).unwrap();
    assert_eq!(g_of(&f), C::Map(9, u64::MAX));
    assert_eq!(f.request_id(), Some(9));
    assert_eq!(f.users(), None);
    assert_eq!(f.frame_type().since(), Version::V4);
    let mut again = BytesMut::new();
    f.encode(&mut again).unwrap();
    assert_eq!(again, out);
    assert_eq!(
        Version::V3.decode_client(&out[4..]),
        Err(FrameError::UnknownType(0x09))
    );
    assert_eq!(
        encode_map(&mut BytesMut::new(), 0, 1),
        Err(EncodeError::ZeroRequestId)
    );

    let map = sample_map();
    let mut out = BytesMut::new();
    encode_members(&mut out, &map, DEFAULT_MAX_FRAME_LEN).unwrap();
    let f = Version::V4.decode_server(&out[4..]).unwrap();
    assert_eq!(f.frame_type(), FrameType::Members);
    assert_eq!(f.request_id(), None);
    assert!(!f.completes_request() && !f.ends_link());
    assert_eq!(s_of(&f), S::Members(map.clone()));
    let mut again = BytesMut::new();
    f.encode(&mut again).unwrap();
    assert_eq!(again, out);
    assert_eq!(
        Version::V3.decode_server(&out[4..]),
        Err(FrameError::UnknownType(0x8b))
    );

    let mut reversed = map.clone();
    reversed.members.reverse();
    let mut out = BytesMut::new();
    encode_members(&mut out, &reversed, DEFAULT_MAX_FRAME_LEN).unwrap();
    let ServerFrame::Members(m) = Version::V4.decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(m.map(), Ok(map));
}

#[test]
fn members_refusals() {
    let frame = |body: &[u8]| {
        let mut f = vec![0x8b];
        f.extend_from_slice(body);
        Version::V4.decode_server(&f).map(|_| ())
    };
    let good = serde_json::to_string(&sample_map()).unwrap();
    assert_eq!(frame(good.as_bytes()), Ok(()));
    let mut dup = sample_map();
    dup.members[1].id = "a".into();
    let mut zero_replicas = sample_map();
    zero_replicas.replicas = 0;
    let mut bad_id = sample_map();
    bad_id.from = "not an id".into();
    for (why, body) in [
        ("empty", String::new()),
        ("not json", "members".into()),
        ("cut", good[..good.len() - 1].to_string()),
        ("trailing", format!("{good} x")),
        ("unknown field", good.replacen('{', "{\"extra\":1,", 1)),
        ("missing field", good.replacen("\"etcd\":true,", "", 1)),
        ("duplicate ids", serde_json::to_string(&dup).unwrap()),
        ("replicas 0", serde_json::to_string(&zero_replicas).unwrap()),
        ("bad from", serde_json::to_string(&bad_id).unwrap()),
    ] {
        assert_eq!(frame(body.as_bytes()), Err(FrameError::BadMembers), "{why}");
    }
    assert_eq!(frame(&[0xff, 0xfe]), Err(FrameError::BadMembers));

    // Encoding refuses what decoding would, and a frame over the limit; `out` stays as it was.
    let mut out = BytesMut::from(&b"x"[..]);
    assert_eq!(
        encode_members(&mut out, &dup, DEFAULT_MAX_FRAME_LEN),
        Err(EncodeError::BadMembers)
    );
    let len = good.len() as u64 + 1;
    assert_eq!(
        encode_members(&mut out, &sample_map(), len as u32 - 1),
        Err(EncodeError::FrameTooLarge { len, max: len - 1 })
    );
    assert_eq!(&out[..], b"x");
    encode_members(&mut out, &sample_map(), len as u32).unwrap();
}

/// The largest map (MAX_MEMBERS members, every id and address at its longest) fits the
/// smallest frame limit a daemon may announce.
#[test]
fn the_largest_member_map_fits_the_smallest_frame_limit() {
    use presenced_wire::cluster::{Member, MAX_ID_LEN, MAX_MEMBERS};
    let long = |i: usize, c: char| format!("{i:03}{}", c.to_string().repeat(MAX_ID_LEN - 3));
    let map = MemberMap {
        from: long(0, 'm'),
        revision: u64::MAX,
        replicas: 8,
        etcd: false,
        members: (0..MAX_MEMBERS)
            .map(|i| Member {
                id: long(i, 'm'),
                link: long(i, 'l'),
                heartbeat: long(i, 'h'),
                warm_at_ms: u64::MAX,
            })
            .collect(),
    };
    let mut out = BytesMut::new();
    encode_members(&mut out, &map, MIN_MAX_FRAME_LEN).unwrap();
    let ServerFrame::Members(m) = Version::V4.decode_server(&out[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(m.map(), Ok(map));
}

/// SPEC.md § P6.14's placement tables: the members' seeds and the example users' replica
/// sets and primaries, computed by `presenced_wire::cluster`.
#[test]
fn placement_spec_tables() {
    use presenced_wire::cluster::{member_seed, score, Member};
    let spec = std::fs::read_to_string(common::crate_path("SPEC.md")).unwrap();
    let warm = |id: &str| {
        if id == "m3" {
            1_700_000_090_000
        } else {
            1_700_000_000_000
        }
    };
    let map = MemberMap {
        from: "m1".into(),
        revision: 41,
        replicas: 2,
        etcd: true,
        members: ["m1", "m2", "m3"]
            .iter()
            .map(|id| Member {
                id: (*id).into(),
                link: String::new(),
                heartbeat: String::new(),
                warm_at_ms: warm(id),
            })
            .collect(),
    };
    for m in &map.members {
        let row = format!("| `{}` | `{:#018x}` |", m.id, member_seed(&m.id));
        assert!(spec.contains(&row), "SPEC lacks {row}");
    }
    let p = map.placement();
    for user in [1001u64, 1002] {
        let ids: Vec<&str> = p
            .replicas(user)
            .as_slice()
            .iter()
            .map(|&i| map.members[usize::from(i)].id.as_str())
            .collect();
        let mut all: Vec<(u64, &str)> = map
            .members
            .iter()
            .map(|m| (score(user, member_seed(&m.id)), m.id.as_str()))
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.0));
        let scores: Vec<String> = all
            .iter()
            .map(|(s, id)| format!("`{id}` `{s:#018x}`"))
            .collect();
        let primary = |now| map.members[p.primary(user, now).unwrap()].id.as_str();
        let row = format!(
            "| {user} | {} | `{}` | `{}` | `{}` |",
            scores.join(", "),
            ids.join("`, `"),
            primary(1_700_000_089_999),
            primary(1_700_000_090_000),
        );
        assert!(spec.contains(&row), "SPEC lacks {row}");
    }
}
