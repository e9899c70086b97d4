//! `link.txt`'s version-2 blocks (SPEC.md § P5–P7): version 2's frames and fields, valid and
//! invalid, and version 2's frames and bits refused on a version-1 link.
//!
//! Built by hand from the SPEC.md tables, like the version-1 blocks of the parent module; every
//! block states its link version (`version:`).

use super::{
    b, error_frame, hello, le16, le32, le64, presence_frame, quoted, request_only, spec_welcome,
    string, Frame, Rec, Welcome, ACK, CAUSES, HELLO, SEEN_1001, STATES, V,
};

// Version 2's frame types (SPEC.md § P2).
pub(super) const HISTORY: u8 = 0x08;
pub(super) const GOAWAY: u8 = 0x88;
pub(super) const HISTORY_REPLY: u8 = 0x89;
const WELCOME: u8 = 0x81;

/// A block for a link of `version`.
fn at(v: V, version: u16) -> V {
    v.f("version", version)
}

/// WELCOME's version-1 fields with protocol version `version`, then version 2's `extra`
/// (flags, warm_remaining_ms, idle_timeout_ms) when given.
pub(super) fn welcome_v2_frame(version: u16, w: &Welcome, extra: Option<(u16, u32, u32)>) -> Frame {
    let mut f = Frame::new(WELCOME).line(vec![
        le16(version),
        le16(w.ports.len() as u16),
        le16(w.heartbeat_port),
    ]);
    f = f.line(w.ports.iter().map(|&p| le16(p)).collect());
    f = f.line(w.limits.iter().map(|&v| le32(v)).collect());
    f = f.line(w.timings.iter().map(|&v| le32(v)).collect());
    if let Some((flags, remaining, idle)) = extra {
        f = f.line(vec![le16(flags), le32(remaining), le32(idle)]);
    }
    f
}

fn welcome_v2_vector(name: &str, note: &str, w: &Welcome, extra: (u16, u32, u32)) -> V {
    let f = welcome_v2_frame(2, w, Some(extra));
    let ports = w
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    at(V::new(name, "server", note, &f), 2)
        .f("type", "welcome")
        .f("protocol_version", 2)
        .f("heartbeat_port", w.heartbeat_port)
        .f("shard_ports", ports)
        .f("max_frame_len", w.limits[0])
        .f("max_users_per_request", w.limits[1])
        .f("max_subscriptions", w.limits[2])
        .f("max_requests_in_flight", w.limits[3])
        .f("heartbeat_interval_ms", w.timings[0])
        .f("grace_ms", w.timings[1])
        .f("idle_after_ms", w.timings[2])
        .f("tick_us", w.timings[3])
        .f("flags", extra.0)
        .f("warm_remaining_ms", extra.1)
        .f("idle_timeout_ms", extra.2)
}

/// (request id, user, since_ms, after_version, max_spans)
type Hist = (u32, u64, u64, u64, u32);

pub(super) fn history_frame(h: Hist) -> Frame {
    Frame::new(HISTORY)
        .line(vec![le32(h.0), le64(h.1)])
        .line(vec![le64(h.2), le64(h.3), le32(h.4)])
}

fn history_vector(name: &str, note: &str, h: Hist) -> V {
    at(V::new(name, "client", note, &history_frame(h)), 2)
        .f("type", "history")
        .f("request_id", h.0)
        .f("user", h.1)
        .f("since_ms", h.2)
        .f("after_version", h.3)
        .f("max_spans", h.4)
}

/// (version, start_ms, end_ms, state, cause, devices)
pub(super) type Sp = (u64, u64, u64, u8, u8, u8);

/// HISTORY_REPLY: request id, flags, has_last_seen, last_seen_ms, count, spans.
pub(super) fn history_reply_frame(
    request: u32,
    flags: u8,
    seen: (u8, u64),
    count: u32,
    spans: &[Sp],
) -> Frame {
    let mut f = Frame::new(HISTORY_REPLY)
        .line(vec![le32(request), b(flags)])
        .line(vec![b(seen.0), le64(seen.1)])
        .line(vec![le32(count)]);
    for s in spans {
        f = f.line(vec![
            le64(s.0),
            le64(s.1),
            le64(s.2),
            b(s.3),
            b(s.4),
            b(s.5),
        ]);
    }
    f
}

fn history_reply_vector(
    name: &str,
    note: &str,
    request: u32,
    more: bool,
    last_seen: Option<u64>,
    spans: &[Sp],
) -> V {
    let seen = last_seen.map_or((0, 0), |ms| (1, ms));
    let f = history_reply_frame(request, u8::from(more), seen, spans.len() as u32, spans);
    let mut v = at(V::new(name, "server", note, &f), 2)
        .f("type", "history_reply")
        .f("request_id", request)
        .f("more", u8::from(more))
        .f(
            "last_seen_ms",
            last_seen.map_or_else(|| "-".to_string(), |ms| ms.to_string()),
        );
    for s in spans {
        let end = if s.2 == 0 {
            "-".to_string()
        } else {
            s.2.to_string()
        };
        v = v.f(
            "span",
            format!(
                "{} {} {} {} {} {}",
                s.0, s.1, end, STATES[s.3 as usize], CAUSES[s.4 as usize], s.5
            ),
        );
    }
    v
}

pub(super) fn goaway_frame(reason: u16, after: u32, msg: &[u8]) -> Frame {
    Frame::new(GOAWAY)
        .line(vec![le16(reason), le32(after)])
        .line(string(msg))
}

fn goaway_vector(name: &str, note: &str, reason: u16, after: u32, msg: &str) -> V {
    at(
        V::new(
            name,
            "server",
            note,
            &goaway_frame(reason, after, msg.as_bytes()),
        ),
        2,
    )
    .f("type", "goaway")
    .f("reason", reason)
    .f("reconnect_after_ms", after)
    .f("message", quoted(msg))
}

fn presence_v2_vector(name: &str, note: &str, request: u32, flags: u8, recs: &[Rec]) -> V {
    let f = presence_frame(request, flags, recs.len() as u32, recs);
    let mut v = at(V::new(name, "server", note, &f), 2)
        .f("type", "presence")
        .f("request_id", request)
        .f("final", flags & 1)
        .f("warming", (flags >> 1) & 1);
    for r in recs {
        let seen = if r.2 == 1 {
            r.3.to_string()
        } else {
            "-".into()
        };
        v = v.f(
            "record",
            format!("{} {} {} {}", r.0, STATES[r.1 as usize], seen, r.4),
        );
    }
    v
}

// ---- The worked example's version-2 frames (SPEC.md § P8.2)

/// When user 1001 turned idle: five minutes after it was last seen.
pub(super) const IDLE_1001: u64 = SEEN_1001 + 300_000;

pub(super) fn spec_hello_v2() -> Frame {
    hello(2, 0, b"gw-eu-1", b"")
}

/// Not warming (the daemon restarted with its saved state), idle timeout 30 s.
pub(super) const SPEC_WELCOME_V2: (u16, u32, u32) = (0, 0, 30_000);

pub(super) fn spec_history() -> Hist {
    (2, 1001, 0, 0, 100)
}

pub(super) fn spec_spans() -> Vec<Sp> {
    vec![
        (SEEN_1001 << 16, SEEN_1001, IDLE_1001, 1, 0, 1),
        (IDLE_1001 << 16, IDLE_1001, 0, 2, 4, 1),
    ]
}

pub(super) fn spec_history_reply() -> Frame {
    let spans = spec_spans();
    history_reply_frame(2, 0, (1, SEEN_1001), spans.len() as u32, &spans)
}

pub(super) const SPEC_GOAWAY: (u16, u32, &str) = (1, 2_000, "restarting");

pub(super) fn valid() -> Vec<V> {
    let mut v = Vec::new();
    let w = spec_welcome();
    let ports = w
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    // ---- gateway -> daemon
    v.push(
        at(
            V::new(
                "spec_v2_hello",
                "client",
                "the worked example, version 2: HELLO from gw-eu-1 asking for version 2",
                &spec_hello_v2(),
            ),
            2,
        )
        .f("type", "hello")
        .f("protocol_version", 2)
        .f("flags", 0)
        .f("client_name", quoted("gw-eu-1"))
        .f("token", ""),
    );
    v.push(
        at(
            V::new(
                "v2_daemon_reads_hello_v1",
                "client",
                "a daemon speaking version 2 reads a HELLO asking for version 1: the link is \
                 version 1",
                &hello(1, 1, b"old-gw", b""),
            ),
            2,
        )
        .f("type", "hello")
        .f("protocol_version", 1)
        .f("flags", 1)
        .f("client_name", quoted("old-gw"))
        .f("token", ""),
    );
    v.push(history_vector(
        "spec_v2_history",
        "the worked example, version 2: HISTORY request 2, all of user 1001's spans, at most 100",
        spec_history(),
    ));
    v.push(history_vector(
        "v2_history_paging",
        "HISTORY with the largest request id and user, since and after a version, any max_spans",
        (
            u32::MAX,
            u64::MAX,
            1_700_000_000_000,
            (SEEN_1001 << 16) + 1,
            u32::MAX,
        ),
    ));
    // ---- daemon -> gateway
    v.push(welcome_v2_vector(
        "spec_v2_welcome",
        "the worked example, version 2: WELCOME version 2, not warming, idle timeout 30 s",
        &spec_welcome(),
        SPEC_WELCOME_V2,
    ));
    v.push(welcome_v2_vector(
        "v2_welcome_warming",
        "WELCOME version 2 of a daemon warming for 44 s more, no idle timeout (0)",
        &Welcome {
            heartbeat_port: 9999,
            ports: vec![0],
            limits: [65_536, 1, 2, 3],
            timings: [1, 2, 3, 4],
        },
        (1, 44_000, 0),
    ));
    v.push(welcome_v2_vector(
        "v2_welcome_warming_ends",
        "WELCOME version 2: warming, 0 ms left (flag set, the remaining time may be 0)",
        &spec_welcome(),
        (1, 0, 30_000),
    ));
    v.push(
        at(
            V::new(
                "v2_gateway_reads_welcome_v1",
                "server",
                "a gateway that asked for version 2 reads a version-1 WELCOME (its own layout): \
                 the link is version 1",
                &welcome_v2_frame(1, &w, None),
            ),
            2,
        )
        .f("type", "welcome")
        .f("protocol_version", 1)
        .f("heartbeat_port", w.heartbeat_port)
        .f("shard_ports", ports)
        .f("max_frame_len", w.limits[0])
        .f("max_users_per_request", w.limits[1])
        .f("max_subscriptions", w.limits[2])
        .f("max_requests_in_flight", w.limits[3])
        .f("heartbeat_interval_ms", w.timings[0])
        .f("grace_ms", w.timings[1])
        .f("idle_after_ms", w.timings[2])
        .f("tick_us", w.timings[3]),
    );
    v.push(presence_v2_vector(
        "v2_presence_warming",
        "PRESENCE, FINAL and WARMING: read while the daemon was warming",
        4,
        0x03,
        &[(1001, 0, 1, SEEN_1001, SEEN_1001 << 16)],
    ));
    v.push(presence_v2_vector(
        "v2_presence_warming_partial",
        "PRESENCE, WARMING, not FINAL: a user the daemon does not know (yet)",
        5,
        0x02,
        &[(1002, 0, 0, 0, 0)],
    ));
    v.push(presence_v2_vector(
        "v2_presence_final",
        "PRESENCE on a version-2 link without WARMING: the same bytes as on version 1",
        6,
        0x01,
        &[(1002, 0, 0, 0, 0)],
    ));
    let (reason, after, msg) = SPEC_GOAWAY;
    v.push(goaway_vector(
        "spec_v2_goaway",
        "the worked example, version 2: GOAWAY restarting, reconnect after 2 s or more",
        reason,
        after,
        msg,
    ));
    v.push(goaway_vector(
        "v2_goaway_shutting_down",
        "GOAWAY shutting_down, no wait, no message",
        0,
        0,
        "",
    ));
    v.push(goaway_vector(
        "v2_goaway_unknown_reason",
        "GOAWAY with a reason this version does not define (accepted; read as shutting_down)",
        7,
        u32::MAX,
        "maintenance",
    ));
    v.push(history_reply_vector(
        "spec_v2_history_reply",
        "the worked example, version 2: HISTORY_REPLY to request 2: online from its last seen, \
         idle for five minutes on (still going on)",
        2,
        false,
        Some(SEEN_1001),
        &spec_spans(),
    ));
    v.push(history_reply_vector(
        "v2_history_reply_more",
        "HISTORY_REPLY with MORE, one span (offline after a timeout, no device), last seen \
         unknown",
        3,
        true,
        None,
        &[(7, 10, 10, 0, 3, 0)],
    ));
    v.push(history_reply_vector(
        "v2_history_reply_empty",
        "HISTORY_REPLY without spans (a user the daemon does not know)",
        9,
        false,
        None,
        &[],
    ));
    v.push(history_reply_vector(
        "v2_history_reply_extremes",
        "HISTORY_REPLY: every cause, 31 devices, last seen 0 (known)",
        u32::MAX,
        false,
        Some(0),
        &[
            (1, 0, 1, 1, 0, 31),
            (2, 1, 2, 2, 1, 2),
            (3, 2, 3, 1, 1, 1),
            (4, 3, 4, 0, 2, 0),
            (5, 4, 5, 1, 0, 1),
            (6, 5, 5, 0, 3, 0),
            (u64::MAX, u64::MAX, 0, 2, 4, 1),
        ],
    ));
    let msg = "no history: the daemon runs without saved state";
    v.push(
        at(
            V::new(
                "v2_error_history_unavailable",
                "server",
                "ERROR history_unavailable refusing HISTORY request 8",
                &error_frame(8, 11, msg.as_bytes()),
            ),
            2,
        )
        .f("type", "error")
        .f("request_id", 8)
        .f("code", 11)
        .f("message", quoted(msg)),
    );
    v
}

fn err(v: V, e: &str) -> V {
    v.f("error", e)
}

pub(super) fn invalid() -> Vec<V> {
    let mut v = Vec::new();
    let c = "client";
    let s = "server";
    // ---- version 2's frames and bits on a version-1 link
    v.push(err(
        at(
            V::new(
                "v1_daemon_reads_hello_v2",
                c,
                "a whole HELLO asking for version 2, read by a daemon speaking only version 1 \
                 (it answers ERROR protocol_version)",
                &spec_hello_v2(),
            ),
            1,
        ),
        "unsupported_version value=2",
    ));
    v.push(err(
        at(
            V::new(
                "v1_history",
                c,
                "a valid HISTORY on a version-1 link",
                &history_frame(spec_history()),
            ),
            1,
        ),
        "unknown_type value=8",
    ));
    let (reason, after, msg) = SPEC_GOAWAY;
    v.push(err(
        at(
            V::new(
                "v1_welcome_v2",
                s,
                "a whole version-2 WELCOME read by a gateway that asked for version 1",
                &welcome_v2_frame(2, &spec_welcome(), Some(SPEC_WELCOME_V2)),
            ),
            1,
        ),
        "unsupported_version value=2",
    ));
    v.push(err(
        at(
            V::new(
                "v1_goaway",
                s,
                "a valid GOAWAY on a version-1 link",
                &goaway_frame(reason, after, msg.as_bytes()),
            ),
            1,
        ),
        "unknown_type value=136",
    ));
    v.push(err(
        at(
            V::new(
                "v1_history_reply",
                s,
                "a valid HISTORY_REPLY on a version-1 link",
                &spec_history_reply(),
            ),
            1,
        ),
        "unknown_type value=137",
    ));
    v.push(err(
        at(
            V::new(
                "v1_presence_warming",
                s,
                "PRESENCE with WARMING (bit 1) on a version-1 link",
                &presence_frame(4, 0x02, 0, &[]),
            ),
            1,
        ),
        "reserved_flags value=2",
    ));
    // ---- types on a version-2 link
    v.push(err(
        at(
            V::new(
                "v2_server_type_to_daemon",
                c,
                "a GOAWAY sent by a gateway",
                &goaway_frame(0, 0, b""),
            ),
            2,
        ),
        "unknown_type value=136",
    ));
    v.push(err(
        at(
            V::new(
                "v2_client_type_to_gateway",
                s,
                "a HISTORY sent by the daemon",
                &history_frame(spec_history()),
            ),
            2,
        ),
        "unknown_type value=8",
    ));
    v.push(err(
        at(
            V::new(
                "v2_unknown_type_0x09",
                c,
                "type 0x09",
                &request_only(0x09, 1),
            ),
            2,
        ),
        "unknown_type value=9",
    ));
    v.push(err(
        at(
            V::new(
                "v2_unknown_type_0x8a",
                s,
                "type 0x8a",
                &request_only(0x8a, 1),
            ),
            2,
        ),
        "unknown_type value=138",
    ));
    // ---- HELLO and WELCOME, version 2
    v.push(err(
        at(
            V::new(
                "v2_hello_version_3",
                c,
                "version 3: refused before the rest is read (here: nothing follows)",
                &Frame::new(HELLO).line(vec![le16(3)]),
            ),
            2,
        ),
        "unsupported_version value=3",
    ));
    v.push(err(
        at(
            V::new(
                "v2_hello_version_0",
                c,
                "version 0 with a whole body",
                &hello(0, 0, b"gw", b""),
            ),
            2,
        ),
        "unsupported_version value=0",
    ));
    let w = spec_welcome();
    v.push(err(
        at(
            V::new(
                "v2_welcome_version_3",
                s,
                "a WELCOME of version 3 for a gateway that asked for 2",
                &welcome_v2_frame(3, &w, Some(SPEC_WELCOME_V2)),
            ),
            2,
        ),
        "unsupported_version value=3",
    ));
    v.push(err(
        at(
            V::new(
                "v2_welcome_missing_fields",
                s,
                "version 2 with version 1's fields only",
                &welcome_v2_frame(2, &w, None),
            ),
            2,
        ),
        "too_short",
    ));
    v.push(err(
        at(
            V::new(
                "v2_welcome_reserved_flags",
                s,
                "flags bit 1 set",
                &welcome_v2_frame(2, &w, Some((0x0003, 5, 30_000))),
            ),
            2,
        ),
        "reserved_flags value=3",
    ));
    v.push(err(
        at(
            V::new(
                "v2_welcome_bad_warming",
                s,
                "not warming, but 5 ms of warming left",
                &welcome_v2_frame(2, &w, Some((0, 5, 30_000))),
            ),
            2,
        ),
        "bad_warming",
    ));
    v.push(err(
        at(
            V::new(
                "v2_welcome_flags_before_warming",
                s,
                "reserved flags and warming left without the flag: flags are checked first",
                &welcome_v2_frame(2, &w, Some((0x8000, 5, 30_000))),
            ),
            2,
        ),
        "reserved_flags value=32768",
    ));
    v.push(err(
        at(
            V::new(
                "v2_welcome_trailing",
                s,
                "a valid version-2 WELCOME and one more byte",
                &welcome_v2_frame(2, &w, Some(SPEC_WELCOME_V2)).line(vec![b(0)]),
            ),
            2,
        ),
        "trailing_bytes extra=1",
    ));
    // ---- PRESENCE, version 2
    v.push(err(
        at(
            V::new(
                "v2_presence_reserved_flags",
                s,
                "flags bit 2 set (with FINAL and WARMING)",
                &presence_frame(4, 0x07, 0, &[]),
            ),
            2,
        ),
        "reserved_flags value=7",
    ));
    // ---- HISTORY
    let h = spec_history();
    v.push(err(
        at(
            V::new(
                "v2_history_zero_request",
                c,
                "request id 0",
                &history_frame((0, h.1, h.2, h.3, h.4)),
            ),
            2,
        ),
        "zero_request_id",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_zero_user",
                c,
                "user 0",
                &history_frame((h.0, 0, h.2, h.3, h.4)),
            ),
            2,
        ),
        "zero_user index=0",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_zero_max_spans",
                c,
                "max_spans 0",
                &history_frame((h.0, h.1, h.2, h.3, 0)),
            ),
            2,
        ),
        "zero_max_spans",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_user_before_max_spans",
                c,
                "user 0 and max_spans 0: the user is checked first",
                &history_frame((h.0, 0, h.2, h.3, 0)),
            ),
            2,
        ),
        "zero_user index=0",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_truncated",
                c,
                "max_spans missing a byte",
                &Frame::new(HISTORY)
                    .line(vec![le32(h.0), le64(h.1)])
                    .line(vec![le64(h.2), le64(h.3), vec![100, 0, 0]]),
            ),
            2,
        ),
        "too_short",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_trailing",
                c,
                "a valid HISTORY and one more byte",
                &history_frame(h).line(vec![b(0)]),
            ),
            2,
        ),
        "trailing_bytes extra=1",
    ));
    // ---- GOAWAY
    v.push(err(
        at(
            V::new(
                "v2_goaway_truncated",
                s,
                "reason and three bytes of reconnect_after_ms",
                &Frame::new(GOAWAY).line(vec![le16(1), vec![0xd0, 0x07, 0]]),
            ),
            2,
        ),
        "too_short",
    ));
    v.push(err(
        at(
            V::new(
                "v2_goaway_message_too_long",
                s,
                "message length 1025 (no bytes follow)",
                &Frame::new(GOAWAY)
                    .line(vec![le16(0), le32(0)])
                    .line(vec![le16(1025)]),
            ),
            2,
        ),
        "string_too_long len=1025 max=1024",
    ));
    v.push(err(
        at(
            V::new(
                "v2_goaway_bad_utf8",
                s,
                "message bytes 61 80",
                &goaway_frame(0, 0, &[0x61, 0x80]),
            ),
            2,
        ),
        "bad_utf8",
    ));
    v.push(err(
        at(
            V::new(
                "v2_goaway_trailing",
                s,
                "a valid GOAWAY and one more byte",
                &goaway_frame(0, 0, b"").line(vec![b(0)]),
            ),
            2,
        ),
        "trailing_bytes extra=1",
    ));
    // ---- HISTORY_REPLY
    let ok: Sp = (SEEN_1001 << 16, SEEN_1001, 0, 1, 0, 1);
    let reply = |flags: u8, seen: (u8, u64), count: u32, spans: &[Sp]| {
        history_reply_frame(2, flags, seen, count, spans)
    };
    v.push(err(
        at(
            V::new(
                "v2_history_reply_zero_request",
                s,
                "request id 0",
                &history_reply_frame(0, 0, (0, 0), 0, &[]),
            ),
            2,
        ),
        "zero_request_id",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_reserved_flags",
                s,
                "flags bit 1 set",
                &reply(0x03, (0, 0), 0, &[]),
            ),
            2,
        ),
        "reserved_flags value=3",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_has_last_seen_2",
                s,
                "has_last_seen 2",
                &reply(0, (2, 5), 0, &[]),
            ),
            2,
        ),
        "bad_last_seen index=0",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_unknown_last_seen_nonzero",
                s,
                "has_last_seen 0 but last_seen_ms 5",
                &reply(0, (0, 5), 0, &[]),
            ),
            2,
        ),
        "bad_last_seen index=0",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_count_mismatch",
                s,
                "count 2, one span",
                &reply(0, (0, 0), 2, &[ok]),
            ),
            2,
        ),
        "count_mismatch count=2 bytes=27",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_bad_span",
                s,
                "span 1 starts after it ends",
                &reply(0, (0, 0), 2, &[ok, (9, 20, 10, 0, 3, 0)]),
            ),
            2,
        ),
        "bad_span index=1",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_bad_state",
                s,
                "state 3 (there is no invisible on the link)",
                &reply(0, (0, 0), 1, &[(9, 10, 20, 3, 1, 1)]),
            ),
            2,
        ),
        "bad_state index=0 value=3",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_bad_cause",
                s,
                "span 1: cause 5",
                &reply(0, (0, 0), 2, &[ok, (9, 10, 0, 1, 5, 1)]),
            ),
            2,
        ),
        "bad_cause index=1 value=5",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_bad_devices",
                s,
                "32 devices",
                &reply(0, (0, 0), 1, &[(9, 10, 0, 1, 0, 32)]),
            ),
            2,
        ),
        "bad_devices index=0 value=32",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_span_before_state",
                s,
                "a span starting after its end, with state 9: the times are checked first",
                &reply(0, (0, 0), 1, &[(9, 20, 10, 9, 9, 99)]),
            ),
            2,
        ),
        "bad_span index=0",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_cause_before_devices",
                s,
                "cause 7 and 99 devices: the cause is checked first",
                &reply(0, (0, 0), 1, &[(9, 10, 0, 2, 7, 99)]),
            ),
            2,
        ),
        "bad_cause index=0 value=7",
    ));
    v.push(err(
        at(
            V::new(
                "v2_history_reply_no_count",
                s,
                "no span count",
                &Frame::new(HISTORY_REPLY)
                    .line(vec![le32(2), b(0)])
                    .line(vec![b(0), le64(0)]),
            ),
            2,
        ),
        "too_short",
    ));
    // The other daemon → gateway frames keep their version-1 checks on a version-2 link.
    v.push(err(
        at(
            V::new(
                "v2_ack_zero_request",
                s,
                "request id 0",
                &request_only(ACK, 0),
            ),
            2,
        ),
        "zero_request_id",
    ));
    v.push(err(
        at(
            V::new(
                "v2_error_bad_utf8",
                s,
                "message bytes 61 80",
                &error_frame(0, 9, &[0x61, 0x80]),
            ),
            2,
        ),
        "bad_utf8",
    ));
    v
}
