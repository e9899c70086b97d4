//! `link.txt`: the push link's vectors (SPEC.md § P10).
//!
//! Every byte is built by hand from the SPEC.md tables ("Push link (QUIC)"), independently of
//! `presenced_wire::link`, and each invalid vector's error is stated by hand, so
//! `wire-format/tests/link.rs` checks the codec against the spec, not against itself.
//! [`spec_dumps`] prints the worked example's frames (SPEC.md § P8) as hex dumps. Version 2's
//! blocks are in [`v2`], after version 1's; version 3's in [`v3`], then version 4's in
//! [`v4`], last.

mod v2;
mod v3;
mod v4;

use std::fmt::Write as _;

use super::hex;

fn le16(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn le64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn b(v: u8) -> Vec<u8> {
    vec![v]
}

/// A line of hex: groups separated by spaces.
type Line = Vec<Vec<u8>>;

/// A frame: the type byte, then lines of body groups (the length prefix is computed).
struct Frame {
    ty: u8,
    body: Vec<Line>,
}

impl Frame {
    fn new(ty: u8) -> Frame {
        Frame {
            ty,
            body: Vec::new(),
        }
    }
    fn line(mut self, groups: Line) -> Frame {
        self.body.push(groups);
        self
    }
    fn body_len(&self) -> usize {
        self.body.iter().flatten().map(Vec::len).sum()
    }
    fn bytes(&self) -> Vec<u8> {
        let len = 1 + self.body_len() as u32;
        let mut out = le32(len);
        out.push(self.ty);
        for g in self.body.iter().flatten() {
            out.extend_from_slice(g);
        }
        out
    }
    fn hex_lines(&self) -> Vec<String> {
        let len = 1 + self.body_len() as u32;
        let mut lines = vec![format!("{} {:02x}", hex(&le32(len)), self.ty)];
        for l in &self.body {
            let groups: Vec<String> = l.iter().filter(|g| !g.is_empty()).map(|g| hex(g)).collect();
            let s = groups.join(" ");
            if !s.is_empty() {
                lines.push(s);
            }
        }
        lines
    }
}

struct V {
    name: String,
    dir: &'static str,
    note: String,
    hex: Vec<String>,
    fields: Vec<(String, String)>,
}

impl V {
    fn new(name: &str, dir: &'static str, note: &str, frame: &Frame) -> V {
        V {
            name: name.into(),
            dir,
            note: format!("{note} ({} bytes)", frame.bytes().len()),
            hex: frame.hex_lines(),
            fields: Vec::new(),
        }
    }
    fn raw(name: &str, dir: &'static str, note: &str, bytes: &[u8]) -> V {
        V {
            name: name.into(),
            dir,
            note: format!("{note} ({} bytes)", bytes.len()),
            hex: vec![hex(bytes)],
            fields: Vec::new(),
        }
    }
    fn f(mut self, k: &str, v: impl ToString) -> V {
        self.fields.push((k.into(), v.to_string()));
        self
    }
    fn render(&self, out: &mut String) {
        writeln!(out, "name: {}", self.name).unwrap();
        writeln!(out, "dir: {}", self.dir).unwrap();
        writeln!(out, "note: {}", self.note).unwrap();
        if self.hex.iter().all(|l| l.is_empty()) {
            writeln!(out, "hex:").unwrap();
        } else {
            writeln!(out, "hex:").unwrap();
            for l in &self.hex {
                writeln!(out, "  {l}").unwrap();
            }
        }
        for (k, v) in &self.fields {
            if v.is_empty() {
                writeln!(out, "{k}:").unwrap();
            } else {
                writeln!(out, "{k}: {v}").unwrap();
            }
        }
        out.push('\n');
    }
}

// Frame type bytes (SPEC.md).
const HELLO: u8 = 0x01;
const SUBSCRIBE: u8 = 0x02;
const UNSUBSCRIBE: u8 = 0x03;
const SUBSCRIBE_ALL: u8 = 0x04;
const UNSUBSCRIBE_ALL: u8 = 0x05;
const QUERY: u8 = 0x06;
const STATS: u8 = 0x07;
const WELCOME: u8 = 0x81;
const PRESENCE: u8 = 0x82;
const EVENTS: u8 = 0x83;
const LAGGED: u8 = 0x84;
const ACK: u8 = 0x85;
const ERROR: u8 = 0x86;
const STATS_REPLY: u8 = 0x87;

fn string(s: &[u8]) -> Line {
    vec![le16(s.len() as u16), s.to_vec()]
}

fn hello(version: u16, flags: u16, name: &[u8], token: &[u8]) -> Frame {
    Frame::new(HELLO)
        .line(vec![le16(version), le16(flags)])
        .line(string(name))
        .line(string(token))
}

fn user_request(ty: u8, request: u32, users: &[u64]) -> Frame {
    let mut f = Frame::new(ty).line(vec![le32(request), le32(users.len() as u32)]);
    for &u in users {
        f = f.line(vec![le64(u)]);
    }
    f
}

fn request_only(ty: u8, request: u32) -> Frame {
    Frame::new(ty).line(vec![le32(request)])
}

fn users_field(users: &[u64]) -> String {
    users
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Welcome {
    heartbeat_port: u16,
    ports: Vec<u16>,
    limits: [u32; 4],
    timings: [u32; 4],
}

fn welcome_frame(version: u16, count: u16, w: &Welcome) -> Frame {
    let mut f = Frame::new(WELCOME).line(vec![le16(version), le16(count), le16(w.heartbeat_port)]);
    f = f.line(w.ports.iter().map(|&p| le16(p)).collect());
    f = f.line(w.limits.iter().map(|&v| le32(v)).collect());
    f.line(w.timings.iter().map(|&v| le32(v)).collect())
}

fn welcome_vector(name: &str, note: &str, w: &Welcome) -> V {
    let f = welcome_frame(1, w.ports.len() as u16, w);
    let ports = w
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    V::new(name, "server", note, &f)
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
        .f("tick_us", w.timings[3])
}

/// (user, state byte, has_last_seen byte, last_seen, version)
type Rec = (u64, u8, u8, u64, u64);

fn rec_line(r: &Rec) -> Line {
    vec![le64(r.0), b(r.1), b(r.2), le64(r.3), le64(r.4)]
}

fn presence_frame(request: u32, flags: u8, count: u32, recs: &[Rec]) -> Frame {
    let mut f = Frame::new(PRESENCE).line(vec![le32(request), b(flags), le32(count)]);
    for r in recs {
        f = f.line(rec_line(r));
    }
    f
}

const STATES: [&str; 3] = ["offline", "online", "idle"];
const CAUSES: [&str; 5] = [
    "first_heartbeat",
    "state_change",
    "logout",
    "timeout",
    "inactivity",
];

fn presence_vector(name: &str, note: &str, request: u32, fin: bool, recs: &[Rec]) -> V {
    let f = presence_frame(request, u8::from(fin), recs.len() as u32, recs);
    let mut v = V::new(name, "server", note, &f)
        .f("type", "presence")
        .f("request_id", request)
        .f("final", u8::from(fin));
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

/// (user, state, prev, cause, at_ms, version)
type Ev = (u64, u8, u8, u8, u64, u64);

fn events_frame(count: u32, evs: &[Ev]) -> Frame {
    let mut f = Frame::new(EVENTS).line(vec![le32(count)]);
    for e in evs {
        f = f.line(vec![
            le64(e.0),
            b(e.1),
            b(e.2),
            b(e.3),
            le64(e.4),
            le64(e.5),
        ]);
    }
    f
}

fn events_vector(name: &str, note: &str, evs: &[Ev]) -> V {
    let f = events_frame(evs.len() as u32, evs);
    let mut v = V::new(name, "server", note, &f).f("type", "events");
    for e in evs {
        v = v.f(
            "event",
            format!(
                "{} {} {} {} {} {}",
                e.0, STATES[e.1 as usize], STATES[e.2 as usize], CAUSES[e.3 as usize], e.4, e.5
            ),
        );
    }
    v
}

fn lagged_frame(scope: u8, users: &[u64]) -> Frame {
    let mut f = Frame::new(LAGGED).line(vec![b(scope), le32(users.len() as u32)]);
    for &u in users {
        f = f.line(vec![le64(u)]);
    }
    f
}

fn error_frame(request: u32, code: u16, msg: &[u8]) -> Frame {
    Frame::new(ERROR)
        .line(vec![le32(request), le16(code)])
        .line(string(msg))
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

fn spec_welcome() -> Welcome {
    Welcome {
        heartbeat_port: 7400,
        ports: vec![7401, 7402],
        limits: [1_048_576, 100_000, 1_000_000, 64],
        timings: [20_000, 12_000, 300_000, 10_000],
    }
}

const SEEN_1001: u64 = 1_700_000_100_000;
const AT_1002: u64 = 1_700_000_123_456;

fn spec_records() -> Vec<Rec> {
    vec![(1001, 1, 1, SEEN_1001, SEEN_1001 << 16), (1002, 0, 0, 0, 0)]
}

fn spec_events() -> Vec<Ev> {
    vec![(1002, 1, 0, 0, AT_1002, AT_1002 << 16)]
}

fn valid() -> Vec<V> {
    let mut v = Vec::new();
    // ---- gateway -> daemon
    let f = hello(1, 0, b"gw-eu-1", b"");
    v.push(
        V::new(
            "spec_hello",
            "client",
            "the worked example: HELLO from gateway gw-eu-1, no token",
            &f,
        )
        .f("type", "hello")
        .f("protocol_version", 1)
        .f("flags", 0)
        .f("client_name", quoted("gw-eu-1"))
        .f("token", ""),
    );
    let name = "passerelle-é";
    let f = hello(1, 1, name.as_bytes(), &[0xde, 0xad, 0xbe, 0xef]);
    v.push(
        V::new(
            "hello_firehose_token",
            "client",
            "firehose flag, UTF-8 name, a 4-byte token",
            &f,
        )
        .f("type", "hello")
        .f("protocol_version", 1)
        .f("flags", 1)
        .f("client_name", quoted(name))
        .f("token", "deadbeef"),
    );
    let long = "g".repeat(64);
    let f = hello(1, 0, long.as_bytes(), b"");
    v.push(
        V::new("hello_longest_name", "client", "a 64-byte client name", &f)
            .f("type", "hello")
            .f("protocol_version", 1)
            .f("flags", 0)
            .f("client_name", quoted(&long))
            .f("token", ""),
    );
    let f = user_request(SUBSCRIBE, 1, &[1001, 1002]);
    v.push(
        V::new(
            "spec_subscribe",
            "client",
            "the worked example: SUBSCRIBE request 1 to users 1001 and 1002",
            &f,
        )
        .f("type", "subscribe")
        .f("request_id", 1)
        .f("users", "1001 1002"),
    );
    let f = user_request(SUBSCRIBE, 2, &[]);
    v.push(
        V::new("subscribe_empty", "client", "SUBSCRIBE with no users", &f)
            .f("type", "subscribe")
            .f("request_id", 2)
            .f("users", ""),
    );
    let f = user_request(UNSUBSCRIBE, 3, &[1002]);
    v.push(
        V::new("unsubscribe", "client", "UNSUBSCRIBE one user", &f)
            .f("type", "unsubscribe")
            .f("request_id", 3)
            .f("users", "1002"),
    );
    let f = request_only(SUBSCRIBE_ALL, 4);
    v.push(
        V::new(
            "subscribe_all",
            "client",
            "SUBSCRIBE_ALL (the firehose)",
            &f,
        )
        .f("type", "subscribe_all")
        .f("request_id", 4),
    );
    let f = request_only(UNSUBSCRIBE_ALL, 5);
    v.push(
        V::new("unsubscribe_all", "client", "UNSUBSCRIBE_ALL", &f)
            .f("type", "unsubscribe_all")
            .f("request_id", 5),
    );
    let users = [1, u64::MAX, 1];
    let f = user_request(QUERY, u32::MAX, &users);
    v.push(
        V::new(
            "query_extremes",
            "client",
            "QUERY with the largest request id, the smallest and largest user ids, a repeat",
            &f,
        )
        .f("type", "query")
        .f("request_id", u32::MAX)
        .f("users", users_field(&users)),
    );
    let f = request_only(STATS, 7);
    v.push(
        V::new("stats", "client", "STATS", &f)
            .f("type", "stats")
            .f("request_id", 7),
    );

    // ---- daemon -> gateway
    v.push(welcome_vector(
        "spec_welcome",
        "the worked example: WELCOME, 2 shards with their own ports, default limits and timings",
        &spec_welcome(),
    ));
    v.push(welcome_vector(
        "welcome_one_shard",
        "WELCOME, one shard without a port of its own (0)",
        &Welcome {
            heartbeat_port: 9999,
            ports: vec![0],
            limits: [65_536, 1, 2, 3],
            timings: [1, 2, 3, 4],
        },
    ));
    v.push(presence_vector(
        "spec_presence",
        "the worked example: PRESENCE answering request 1, FINAL, two records",
        1,
        true,
        &spec_records(),
    ));
    v.push(presence_vector(
        "presence_final_empty",
        "an empty FINAL PRESENCE frame completing request 9",
        9,
        true,
        &[],
    ));
    v.push(presence_vector(
        "presence_partial",
        "a non-final PRESENCE frame: idle user, last seen known and 0 (the epoch)",
        10,
        false,
        &[(u64::MAX, 2, 1, 0, u64::MAX)],
    ));
    v.push(events_vector(
        "spec_events",
        "the worked example: user 1002 comes online",
        &spec_events(),
    ));
    let base = 1_735_689_600_000u64;
    v.push(events_vector(
        "events_every_cause",
        "one transition per cause",
        &[
            (5, 1, 0, 0, base, base << 16),
            (5, 2, 1, 1, base + 1, (base + 1) << 16),
            (5, 0, 2, 2, base + 2, (base + 2) << 16),
            (6, 0, 1, 3, base + 3, 7),
            (7, 2, 1, 4, base + 4, 8),
        ],
    ));
    let f = lagged_frame(0, &[1001, 1002]);
    v.push(
        V::new("lagged_users", "server", "LAGGED, scope 0, two users", &f)
            .f("type", "lagged")
            .f("scope", "users")
            .f("users", "1001 1002"),
    );
    let f = lagged_frame(1, &[]);
    v.push(
        V::new("lagged_all", "server", "LAGGED, scope 1 (everything)", &f)
            .f("type", "lagged")
            .f("scope", "all")
            .f("users", ""),
    );
    let f = request_only(ACK, 3);
    v.push(
        V::new("ack", "server", "ACK of request 3", &f)
            .f("type", "ack")
            .f("request_id", 3),
    );
    let msg = "200000 users; max_users_per_request is 100000";
    let f = error_frame(2, 5, msg.as_bytes());
    v.push(
        V::new(
            "error_request",
            "server",
            "ERROR too_many_users refusing request 2",
            &f,
        )
        .f("type", "error")
        .f("request_id", 2)
        .f("code", 5)
        .f("message", quoted(msg)),
    );
    let msg = "first frame must be HELLO";
    let f = error_frame(0, 4, msg.as_bytes());
    v.push(
        V::new(
            "error_link",
            "server",
            "ERROR hello_required about the link (request id 0)",
            &f,
        )
        .f("type", "error")
        .f("request_id", 0)
        .f("code", 4)
        .f("message", quoted(msg)),
    );
    let f = error_frame(9, 999, b"");
    v.push(
        V::new(
            "error_unknown_code",
            "server",
            "ERROR with a code this version does not define (decoders accept it)",
            &f,
        )
        .f("type", "error")
        .f("request_id", 9)
        .f("code", 999)
        .f("message", quoted("")),
    );
    let json = r#"{"shards":[{"heartbeats":12,"transitions":3}],"link":{"links":1}}"#;
    let f = Frame::new(STATS_REPLY)
        .line(vec![le32(7)])
        .line(string(json.as_bytes()));
    v.push(
        V::new("stats_reply", "server", "STATS_REPLY to request 7", &f)
            .f("type", "stats_reply")
            .f("request_id", 7)
            .f("json", quoted(json)),
    );
    v
}

fn err(v: V, e: &str) -> V {
    v.f("error", e)
}

fn invalid() -> Vec<V> {
    let mut v = Vec::new();
    let c = "client";
    let s = "server";
    // ---- framing
    v.push(err(
        V::raw("zero_length", c, "length prefix 0", &le32(0)),
        "bad_length",
    ));
    v.push(err(
        V::raw(
            "too_large_prefix_only",
            c,
            "length 1 MiB + 1: refused from the prefix alone, before the body arrives",
            &le32(1_048_577),
        ),
        "frame_too_large len=1048577 max=1048576",
    ));
    v.push(
        err(
            V::new(
                "too_large_small_limit",
                c,
                "a valid SUBSCRIBE of 25 bytes read with max_frame_len 24",
                &user_request(SUBSCRIBE, 1, &[1001, 1002]),
            ),
            "frame_too_large len=25 max=24",
        )
        .f("max_frame_len", 24),
    );
    v.push(err(
        V::new("unknown_type_zero", c, "type 0x00", &Frame::new(0x00)),
        "unknown_type value=0",
    ));
    v.push(err(
        V::new(
            "server_type_to_daemon",
            c,
            "an ACK sent by a gateway",
            &request_only(ACK, 1),
        ),
        "unknown_type value=133",
    ));
    v.push(err(
        V::new(
            "client_type_to_gateway",
            s,
            "a STATS sent by the daemon",
            &request_only(STATS, 1),
        ),
        "unknown_type value=7",
    ));
    v.push(err(
        V::new("unknown_type_0x88", s, "type 0x88", &request_only(0x88, 1)),
        "unknown_type value=136",
    ));
    // ---- HELLO
    v.push(err(
        V::new(
            "hello_truncated_version",
            c,
            "one byte of the version",
            &Frame::new(HELLO).line(vec![b(1)]),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "hello_version_2",
            c,
            "version 2: refused before the rest is read (here: nothing follows)",
            &Frame::new(HELLO).line(vec![le16(2)]),
        ),
        "unsupported_version value=2",
    ));
    v.push(err(
        V::new(
            "hello_version_0",
            c,
            "version 0 with a v1 body",
            &hello(0, 0, b"gw", b""),
        ),
        "unsupported_version value=0",
    ));
    v.push(err(
        V::new(
            "hello_reserved_flags",
            c,
            "flags bit 1 set",
            &hello(1, 2, b"gw", b""),
        ),
        "reserved_flags value=2",
    ));
    v.push(err(
        V::new(
            "hello_flags_before_name",
            c,
            "reserved flags and an over-long name: flags are checked first",
            &hello(1, 0x8001, &[b'a'; 65], b""),
        ),
        "reserved_flags value=32769",
    ));
    v.push(err(
        V::new(
            "hello_name_too_long",
            c,
            "a 65-byte client name",
            &hello(1, 0, &[b'a'; 65], b""),
        ),
        "string_too_long len=65 max=64",
    ));
    v.push(err(
        V::new(
            "hello_name_too_long_absent",
            c,
            "name length 65 with no name bytes: the limit is checked before the bytes",
            &Frame::new(HELLO)
                .line(vec![le16(1), le16(0)])
                .line(vec![le16(65)]),
        ),
        "string_too_long len=65 max=64",
    ));
    v.push(err(
        V::new(
            "hello_name_truncated",
            c,
            "name length 7, 3 bytes present",
            &Frame::new(HELLO)
                .line(vec![le16(1), le16(0)])
                .line(vec![le16(7), b"gw-".to_vec()]),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "hello_name_bad_utf8",
            c,
            "name bytes ff fe",
            &hello(1, 0, &[0xff, 0xfe], b""),
        ),
        "bad_utf8",
    ));
    v.push(err(
        V::new(
            "hello_name_overlong_utf8",
            c,
            "an overlong UTF-8 encoding of '/' (c0 af)",
            &hello(1, 0, &[0xc0, 0xaf], b""),
        ),
        "bad_utf8",
    ));
    v.push(err(
        V::new(
            "hello_missing_token",
            c,
            "no token length",
            &Frame::new(HELLO)
                .line(vec![le16(1), le16(0)])
                .line(string(b"gw")),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "hello_token_too_long",
            c,
            "token length 257",
            &Frame::new(HELLO)
                .line(vec![le16(1), le16(0)])
                .line(string(b"gw"))
                .line(vec![le16(257)]),
        ),
        "string_too_long len=257 max=256",
    ));
    v.push(err(
        V::new(
            "hello_trailing_byte",
            c,
            "a valid HELLO and one more byte",
            &hello(1, 0, b"gw", b"").line(vec![b(0)]),
        ),
        "trailing_bytes extra=1",
    ));
    // ---- requests
    v.push(err(
        V::new(
            "subscribe_zero_request",
            c,
            "request id 0",
            &user_request(SUBSCRIBE, 0, &[1001]),
        ),
        "zero_request_id",
    ));
    v.push(err(
        V::new(
            "subscribe_zero_user",
            c,
            "users 1001, 0, 0: the first zero is reported",
            &user_request(SUBSCRIBE, 1, &[1001, 0, 0]),
        ),
        "zero_user index=1",
    ));
    v.push(err(
        V::new(
            "subscribe_count_short",
            c,
            "count 2, one id",
            &Frame::new(SUBSCRIBE)
                .line(vec![le32(1), le32(2)])
                .line(vec![le64(1001)]),
        ),
        "count_mismatch count=2 bytes=8",
    ));
    v.push(err(
        V::new(
            "subscribe_count_extra",
            c,
            "count 1, nine bytes",
            &Frame::new(SUBSCRIBE)
                .line(vec![le32(1), le32(1)])
                .line(vec![le64(1001), b(0)]),
        ),
        "count_mismatch count=1 bytes=9",
    ));
    v.push(err(
        V::new(
            "query_count_huge",
            c,
            "count 4294967295, one id",
            &Frame::new(QUERY)
                .line(vec![le32(1), le32(u32::MAX)])
                .line(vec![le64(1001)]),
        ),
        "count_mismatch count=4294967295 bytes=8",
    ));
    v.push(err(
        V::new(
            "count_before_users",
            c,
            "a zero user in a list whose count is wrong: the count is checked first",
            &Frame::new(UNSUBSCRIBE)
                .line(vec![le32(1), le32(2)])
                .line(vec![le64(0)]),
        ),
        "count_mismatch count=2 bytes=8",
    ));
    v.push(err(
        V::new(
            "unsubscribe_no_count",
            c,
            "request id, no count",
            &request_only(UNSUBSCRIBE, 1),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "subscribe_all_zero_request",
            c,
            "request id 0",
            &request_only(SUBSCRIBE_ALL, 0),
        ),
        "zero_request_id",
    ));
    v.push(err(
        V::new(
            "unsubscribe_all_trailing",
            c,
            "UNSUBSCRIBE_ALL with two more bytes",
            &request_only(UNSUBSCRIBE_ALL, 1).line(vec![le16(0)]),
        ),
        "trailing_bytes extra=2",
    ));
    v.push(err(
        V::new("stats_no_request", c, "type byte only", &Frame::new(STATS)),
        "too_short",
    ));
    // ---- WELCOME
    let w = spec_welcome();
    v.push(err(
        V::new(
            "welcome_version_2",
            s,
            "protocol version 2",
            &welcome_frame(2, 2, &w),
        ),
        "unsupported_version value=2",
    ));
    v.push(err(
        V::new(
            "welcome_zero_shards",
            s,
            "shard count 0",
            &Frame::new(WELCOME).line(vec![le16(1), le16(0), le16(7400)]),
        ),
        "zero_shard_count",
    ));
    v.push(err(
        V::new(
            "welcome_truncated_ports",
            s,
            "shard count 3, two ports, nothing else",
            &Frame::new(WELCOME)
                .line(vec![le16(1), le16(3), le16(7400)])
                .line(vec![le16(7401), le16(7402)]),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "welcome_truncated_timings",
            s,
            "the last timing is missing a byte",
            &Frame::new(WELCOME)
                .line(vec![le16(1), le16(1), le16(7400)])
                .line(vec![le16(0)])
                .line(vec![le32(65_536), le32(1), le32(1), le32(1)])
                .line(vec![le32(1), le32(1), le32(1), vec![1, 0, 0]]),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "welcome_trailing",
            s,
            "a valid WELCOME and two more bytes",
            &welcome_frame(1, 2, &w).line(vec![le16(0)]),
        ),
        "trailing_bytes extra=2",
    ));
    // ---- PRESENCE
    let ok: Rec = (1001, 1, 1, SEEN_1001, 1);
    v.push(err(
        V::new(
            "presence_zero_request",
            s,
            "request id 0",
            &presence_frame(0, 1, 1, &[ok]),
        ),
        "zero_request_id",
    ));
    v.push(err(
        V::new(
            "presence_reserved_flags",
            s,
            "flags bit 1 set",
            &presence_frame(1, 0x03, 1, &[ok]),
        ),
        "reserved_flags value=3",
    ));
    v.push(err(
        V::new(
            "presence_count_mismatch",
            s,
            "count 2, one record",
            &presence_frame(1, 1, 2, &[ok]),
        ),
        "count_mismatch count=2 bytes=26",
    ));
    v.push(err(
        V::new(
            "presence_zero_user",
            s,
            "record 1 has user 0",
            &presence_frame(1, 1, 2, &[ok, (0, 1, 1, 5, 1)]),
        ),
        "zero_user index=1",
    ));
    v.push(err(
        V::new(
            "presence_bad_state",
            s,
            "state 3 (there is no invisible on the link)",
            &presence_frame(1, 1, 1, &[(1001, 3, 1, 5, 1)]),
        ),
        "bad_state index=0 value=3",
    ));
    v.push(err(
        V::new(
            "presence_has_last_seen_2",
            s,
            "has_last_seen 2",
            &presence_frame(1, 1, 1, &[(1001, 1, 2, 5, 1)]),
        ),
        "bad_last_seen index=0",
    ));
    v.push(err(
        V::new(
            "presence_unknown_last_seen_nonzero",
            s,
            "record 1: has_last_seen 0 but last_seen_ms 5",
            &presence_frame(1, 1, 2, &[ok, (1002, 0, 0, 5, 0)]),
        ),
        "bad_last_seen index=1",
    ));
    v.push(err(
        V::new(
            "presence_user_before_state",
            s,
            "user 0 and state 9 in one record: the user is checked first",
            &presence_frame(1, 1, 1, &[(0, 9, 9, 5, 1)]),
        ),
        "zero_user index=0",
    ));
    // ---- EVENTS
    let e: Ev = (1002, 1, 0, 0, AT_1002, 1);
    v.push(err(
        V::new(
            "events_bad_state",
            s,
            "state 3",
            &events_frame(1, &[(1002, 3, 0, 0, AT_1002, 1)]),
        ),
        "bad_state index=0 value=3",
    ));
    v.push(err(
        V::new(
            "events_bad_prev",
            s,
            "event 1: prev 7",
            &events_frame(2, &[e, (1002, 0, 7, 2, AT_1002, 2)]),
        ),
        "bad_state index=1 value=7",
    ));
    v.push(err(
        V::new(
            "events_bad_cause",
            s,
            "cause 5",
            &events_frame(1, &[(1002, 1, 0, 5, AT_1002, 1)]),
        ),
        "bad_cause index=0 value=5",
    ));
    v.push(err(
        V::new(
            "events_zero_user",
            s,
            "event 1: user 0, also a bad cause: the user is checked first",
            &events_frame(2, &[e, (0, 1, 0, 9, AT_1002, 2)]),
        ),
        "zero_user index=1",
    ));
    v.push(err(
        V::new(
            "events_count_mismatch",
            s,
            "count 1, one transition missing its last byte",
            &Frame::new(EVENTS).line(vec![le32(1)]).line(vec![
                le64(1002),
                b(1),
                b(0),
                b(0),
                le64(AT_1002),
                vec![0; 7],
            ]),
        ),
        "count_mismatch count=1 bytes=26",
    ));
    v.push(err(
        V::new("events_no_count", s, "type byte only", &Frame::new(EVENTS)),
        "too_short",
    ));
    // ---- LAGGED
    v.push(err(
        V::new("lagged_bad_scope", s, "scope 2", &lagged_frame(2, &[])),
        "bad_scope value=2",
    ));
    v.push(err(
        V::new(
            "lagged_all_with_users",
            s,
            "scope 1 with a user",
            &lagged_frame(1, &[1001]),
        ),
        "bad_scope value=1",
    ));
    v.push(err(
        V::new(
            "lagged_zero_user",
            s,
            "scope 0, user 0",
            &lagged_frame(0, &[0]),
        ),
        "zero_user index=0",
    ));
    // ---- ACK, ERROR, STATS_REPLY
    v.push(err(
        V::new("ack_zero_request", s, "request id 0", &request_only(ACK, 0)),
        "zero_request_id",
    ));
    v.push(err(
        V::new(
            "ack_truncated",
            s,
            "three bytes of request id",
            &Frame::new(ACK).line(vec![vec![1, 0, 0]]),
        ),
        "too_short",
    ));
    v.push(err(
        V::new(
            "error_message_too_long",
            s,
            "message length 1025 (no bytes follow)",
            &Frame::new(ERROR)
                .line(vec![le32(1), le16(10)])
                .line(vec![le16(1025)]),
        ),
        "string_too_long len=1025 max=1024",
    ));
    v.push(err(
        V::new(
            "error_bad_utf8",
            s,
            "message bytes 61 80",
            &error_frame(0, 10, &[0x61, 0x80]),
        ),
        "bad_utf8",
    ));
    v.push(err(
        V::new(
            "stats_reply_zero_request",
            s,
            "request id 0",
            &Frame::new(STATS_REPLY)
                .line(vec![le32(0)])
                .line(string(b"{}")),
        ),
        "zero_request_id",
    ));
    v.push(err(
        V::new(
            "stats_reply_too_long",
            s,
            "JSON length 60001 (no bytes follow)",
            &Frame::new(STATS_REPLY)
                .line(vec![le32(7)])
                .line(vec![le16(60_001)]),
        ),
        "string_too_long len=60001 max=60000",
    ));
    v.push(err(
        V::new(
            "stats_reply_trailing",
            s,
            "a valid STATS_REPLY and one more byte",
            &Frame::new(STATS_REPLY)
                .line(vec![le32(7)])
                .line(string(b"{}"))
                .line(vec![b(b' ')]),
        ),
        "trailing_bytes extra=1",
    ));
    v
}

const HEADER: &str = "\
# presenced push link v1: test vectors (SPEC.md, \"Push link (QUIC)\", test vectors).
# Blocks of `key: value` lines, each starting with `name:`; `#` lines and blank lines are
# ignored; an indented line continues the previous value. `hex:` is one whole frame, length
# prefix included (whitespace between digits ignored). `dir:` says who sends it: `client`
# (gateway -> daemon) or `server` (daemon -> gateway).
# A block with `error:` is invalid: reading it with the frame limit its `max_frame_len:`
# gives (default 1048576) and decoding it for its direction fails with that reason and
# details. Any other block is valid: read with the limit 1048576, it decodes to exactly the
# `type:` and fields listed (a WELCOME's `max_frame_len:` is its field), and encoding those
# gives exactly `hex:`.
# `version:` is the protocol version of the link the frame is read on (SPEC.md § P5, P7): 1
# to 4; a block without it is for version 1. Before WELCOME that is, for a daemon reading
# HELLO, the newest version it speaks and, for a gateway reading WELCOME, the version its
# HELLO asked for. Every valid block also decodes, to the same fields, on a link of a later
# version. The version-2 blocks follow the version-1 ones, then the version-3 and the
# version-4 blocks. A MEMBERS block's `json:` is its body, quoted; its fields are those of
# the member map it decodes to (SPEC.md § P6.14), which encoded gives exactly that JSON.
";

/// `link.txt`.
pub fn render() -> String {
    let mut out = String::from(HEADER);
    out.push_str("\n# ---- valid\n\n");
    for v in valid() {
        v.render(&mut out);
    }
    out.push_str("# ---- invalid\n\n");
    for v in invalid() {
        v.render(&mut out);
    }
    out.push_str("# ---- version 2: valid\n\n");
    for v in v2::valid() {
        v.render(&mut out);
    }
    out.push_str(
        "# ---- version 2: invalid, and version 2's frames and bits on a version-1 link\n\n",
    );
    for v in v2::invalid() {
        v.render(&mut out);
    }
    out.push_str("# ---- version 3: valid\n\n");
    for v in v3::valid() {
        v.render(&mut out);
    }
    out.push_str("# ---- version 3: invalid, and PACE on a version-2 link\n\n");
    for v in v3::invalid() {
        v.render(&mut out);
    }
    out.push_str("# ---- version 4: valid\n\n");
    for v in v4::valid() {
        v.render(&mut out);
    }
    out.push_str("# ---- version 4: invalid, and MAP and MEMBERS on a version-3 link\n\n");
    for v in v4::invalid() {
        v.render(&mut out);
    }
    out.trim_end().to_string() + "\n"
}

/// The worked example's frames (SPEC.md § P8), each as a hex dump of 16 bytes a line under
/// its vector's name.
pub fn spec_dumps() -> String {
    let r = spec_records();
    let e = spec_events();
    let frames = [
        ("spec_hello", hello(1, 0, b"gw-eu-1", b"").bytes()),
        ("spec_welcome", welcome_frame(1, 2, &spec_welcome()).bytes()),
        (
            "spec_subscribe",
            user_request(SUBSCRIBE, 1, &[1001, 1002]).bytes(),
        ),
        (
            "spec_presence",
            presence_frame(1, 1, r.len() as u32, &r).bytes(),
        ),
        ("spec_events", events_frame(e.len() as u32, &e).bytes()),
        ("spec_v2_hello", v2::spec_hello_v2().bytes()),
        (
            "spec_v2_welcome",
            v2::welcome_v2_frame(2, &spec_welcome(), Some(v2::SPEC_WELCOME_V2)).bytes(),
        ),
        (
            "spec_v2_history",
            v2::history_frame(v2::spec_history()).bytes(),
        ),
        ("spec_v2_history_reply", v2::spec_history_reply().bytes()),
        (
            "spec_v2_goaway",
            v2::goaway_frame(
                v2::SPEC_GOAWAY.0,
                v2::SPEC_GOAWAY.1,
                v2::SPEC_GOAWAY.2.as_bytes(),
            )
            .bytes(),
        ),
        ("spec_v3_pace", v3::spec_pace().bytes()),
        ("spec_v4_map", v4::spec_map().bytes()),
        ("spec_v4_members", v4::spec_members().bytes()),
    ];
    let mut out = String::new();
    for (name, bytes) in frames {
        writeln!(out, "{name}:").unwrap();
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let hexes: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
            writeln!(out, "{:04x}: {}", i * 16, hexes.join(" ")).unwrap();
        }
    }
    out
}
