//! `link.txt`'s version-4 blocks (SPEC.md § P6.14): MAP and MEMBERS (the cluster's member
//! map) and version 4's HELLO and WELCOME, valid and invalid, and both frames refused on a
//! version-3 link.
//!
//! Built by hand from the SPEC.md tables, like the blocks of the parent module: MEMBERS' JSON
//! is written out as text here (not by serde), in the form SPEC.md gives; every block states
//! its link version (`version:`).

use super::v2::{welcome_v2_frame, SPEC_WELCOME_V2};
use super::{b, hello, le16, le32, le64, quoted, spec_welcome, Frame, HELLO, V};

/// MAP's frame type (SPEC.md § P2), version 4.
const MAP: u8 = 0x09;
/// MEMBERS' frame type (SPEC.md § P2), version 4.
const MEMBERS: u8 = 0x8b;

/// A block for a link of `version`.
fn at(v: V, version: u16) -> V {
    v.f("version", version)
}

fn err(v: V, e: &str) -> V {
    v.f("error", e)
}

/// MAP: `request_id u32`, `revision u64`.
fn map_frame(request_id: u32, revision: u64) -> Frame {
    Frame::new(MAP).line(vec![le32(request_id), le64(revision)])
}

fn map_vector(name: &str, note: &str, request_id: u32, revision: u64) -> V {
    at(
        V::new(name, "client", note, &map_frame(request_id, revision)),
        4,
    )
    .f("type", "map")
    .f("request_id", request_id)
    .f("revision", revision)
}

/// One member's JSON object, fields in SPEC.md's order.
fn member(id: &str, link: &str, heartbeat: &str, warm_at_ms: u64) -> String {
    format!(
        r#"{{"id":"{id}","link":"{link}","heartbeat":"{heartbeat}","warm_at_ms":{warm_at_ms}}}"#
    )
}

/// A member map's JSON, fields in SPEC.md's order, no white space.
fn map_json(from: &str, revision: u64, replicas: u16, etcd: bool, members: &[String]) -> String {
    format!(
        r#"{{"from":"{from}","revision":{revision},"replicas":{replicas},"etcd":{etcd},"members":[{}]}}"#,
        members.join(",")
    )
}

/// MEMBERS carrying `json`, one line of hex per 32 bytes.
fn members_frame(json: &str) -> Frame {
    json.as_bytes()
        .chunks(32)
        .fold(Frame::new(MEMBERS), |f, c| f.line(vec![c.to_vec()]))
}

/// The worked example's map: three members, `m3` still warming, read at etcd revision 41.
fn spec_map_json() -> String {
    map_json(
        "m1",
        41,
        2,
        true,
        &[
            member("m1", "10.0.0.1:7500", "10.0.0.1:7400", 1_700_000_000_000),
            member("m2", "10.0.0.2:7500", "10.0.0.2:7400", 1_700_000_000_000),
            member("m3", "10.0.0.3:7500", "10.0.0.3:7400", 1_700_000_090_000),
        ],
    )
}

fn members_vector(name: &str, note: &str, json: &str) -> V {
    at(V::new(name, "server", note, &members_frame(json)), 4)
        .f("type", "members")
        .f("json", quoted(json))
}

pub(super) fn valid() -> Vec<V> {
    let mut v = Vec::new();
    let w = spec_welcome();
    let ports = w
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    v.push(
        at(
            V::new(
                "v4_hello",
                "client",
                "HELLO from gw-eu-1 asking for version 4",
                &hello(4, 0, b"gw-eu-1", b""),
            ),
            4,
        )
        .f("type", "hello")
        .f("protocol_version", 4)
        .f("flags", 0)
        .f("client_name", quoted("gw-eu-1"))
        .f("token", ""),
    );
    let (flags, remaining, idle) = SPEC_WELCOME_V2;
    v.push(
        at(
            V::new(
                "v4_welcome",
                "server",
                "WELCOME version 4: version 2's layout and fields, protocol_version 4",
                &welcome_v2_frame(4, &w, Some(SPEC_WELCOME_V2)),
            ),
            4,
        )
        .f("type", "welcome")
        .f("protocol_version", 4)
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
        .f("flags", flags)
        .f("warm_remaining_ms", remaining)
        .f("idle_timeout_ms", idle),
    );
    v.push(map_vector(
        "spec_v4_map",
        "the worked example, version 4: a gateway holding no map asks for one",
        5,
        0,
    ));
    v.push(map_vector(
        "v4_map_held",
        "MAP from a gateway holding the map of revision 41",
        6,
        41,
    ));
    v.push(members_vector(
        "spec_v4_members",
        "the worked example, version 4: three members, m3 warming until 1700000090000",
        &spec_map_json(),
    ));
    v.push(members_vector(
        "v4_members_alone",
        "one member that lost etcd: its last map, one replica, no other member",
        &map_json(
            "solo",
            7,
            1,
            false,
            &[member("solo", "[::1]:7500", "[::1]:7400", 0)],
        ),
    ));
    v
}

pub(super) fn invalid() -> Vec<V> {
    let mut v = Vec::new();
    let bad = |name: &str, note: &str, json: &str| {
        err(
            at(V::new(name, "server", note, &members_frame(json)), 4),
            "bad_members",
        )
    };
    v.push(err(
        at(
            V::new(
                "v3_map",
                "client",
                "a valid MAP on a version-3 link",
                &map_frame(5, 0),
            ),
            3,
        ),
        "unknown_type value=9",
    ));
    v.push(err(
        at(
            V::new(
                "v3_members",
                "server",
                "a valid MEMBERS on a version-3 link",
                &members_frame(&spec_map_json()),
            ),
            3,
        ),
        "unknown_type value=139",
    ));
    v.push(err(
        at(
            V::new(
                "v4_members_to_daemon",
                "client",
                "a MEMBERS sent by a gateway",
                &members_frame(&spec_map_json()),
            ),
            4,
        ),
        "unknown_type value=139",
    ));
    v.push(err(
        at(
            V::new(
                "v4_map_zero_request_id",
                "client",
                "MAP with request id 0",
                &map_frame(0, 41),
            ),
            4,
        ),
        "zero_request_id",
    ));
    v.push(err(
        at(
            V::new(
                "v4_map_too_short",
                "client",
                "MAP with 4 bytes of revision",
                &Frame::new(MAP).line(vec![le32(5), le32(41)]),
            ),
            4,
        ),
        "too_short",
    ));
    v.push(err(
        at(
            V::new(
                "v4_map_trailing",
                "client",
                "MAP with a byte after its revision",
                &Frame::new(MAP).line(vec![le32(5), le64(41), b(0)]),
            ),
            4,
        ),
        "trailing_bytes extra=1",
    ));
    v.push(bad(
        "v4_members_not_json",
        "MEMBERS whose body is not JSON",
        "members: m1 m2",
    ));
    v.push(bad(
        "v4_members_duplicate",
        "MEMBERS naming member m1 twice",
        &map_json(
            "m1",
            41,
            2,
            true,
            &[
                member("m1", "10.0.0.1:7500", "10.0.0.1:7400", 0),
                member("m1", "10.0.0.2:7500", "10.0.0.2:7400", 0),
            ],
        ),
    ));
    v.push(bad(
        "v4_members_unknown_field",
        "MEMBERS with a field the map does not have",
        &spec_map_json().replacen('{', r#"{"leader":"m1","#, 1),
    ));
    v.push(bad(
        "v4_members_no_replicas",
        "MEMBERS with replicas 0",
        &map_json(
            "m1",
            41,
            0,
            true,
            &[member("m1", "10.0.0.1:7500", "10.0.0.1:7400", 0)],
        ),
    ));
    v.push(bad(
        "v4_members_bad_id",
        "MEMBERS with a member id holding a space",
        &map_json(
            "m1",
            41,
            1,
            true,
            &[
                member("m1", "10.0.0.1:7500", "10.0.0.1:7400", 0),
                member("m 2", "10.0.0.2:7500", "10.0.0.2:7400", 0),
            ],
        ),
    ));
    v.push(err(
        at(
            V::new(
                "v4_hello_version_5",
                "client",
                "version 5: refused before the rest is read (here: nothing follows)",
                &Frame::new(HELLO).line(vec![le16(5)]),
            ),
            4,
        ),
        "unsupported_version value=5",
    ));
    v
}

/// The worked example's MAP (SPEC.md § P8).
pub(super) fn spec_map() -> Frame {
    map_frame(5, 0)
}

/// The worked example's MEMBERS (SPEC.md § P8).
pub(super) fn spec_members() -> Frame {
    members_frame(&spec_map_json())
}
