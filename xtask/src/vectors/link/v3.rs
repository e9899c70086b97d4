//! `link.txt`'s version-3 blocks (SPEC.md § P4, § P6.13): PACE and version 3's HELLO and
//! WELCOME, valid and invalid, and PACE refused on a version-2 link.
//!
//! Built by hand from the SPEC.md tables, like the blocks of the parent module; every block
//! states its link version (`version:`).

use super::v2::{welcome_v2_frame, SPEC_WELCOME_V2};
use super::{b, hello, le16, le32, quoted, spec_welcome, Frame, HELLO, V};

/// PACE's frame type (SPEC.md § P2), version 3.
const PACE: u8 = 0x8a;

/// A block for a link of `version`.
fn at(v: V, version: u16) -> V {
    v.f("version", version)
}

fn err(v: V, e: &str) -> V {
    v.f("error", e)
}

/// PACE asking for `interval_ms`.
fn pace_frame(interval_ms: u32) -> Frame {
    Frame::new(PACE).line(vec![le32(interval_ms)])
}

fn pace_vector(name: &str, note: &str, interval_ms: u32) -> V {
    at(V::new(name, "server", note, &pace_frame(interval_ms)), 3)
        .f("type", "pace")
        .f("interval_ms", interval_ms)
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
                "v3_hello",
                "client",
                "HELLO from gw-eu-1 asking for version 3",
                &hello(3, 0, b"gw-eu-1", b""),
            ),
            3,
        )
        .f("type", "hello")
        .f("protocol_version", 3)
        .f("flags", 0)
        .f("client_name", quoted("gw-eu-1"))
        .f("token", ""),
    );
    let (flags, remaining, idle) = SPEC_WELCOME_V2;
    v.push(
        at(
            V::new(
                "v3_welcome",
                "server",
                "WELCOME version 3: version 2's layout and fields, protocol_version 3",
                &welcome_v2_frame(3, &w, Some(SPEC_WELCOME_V2)),
            ),
            3,
        )
        .f("type", "welcome")
        .f("protocol_version", 3)
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
    v.push(pace_vector(
        "spec_v3_pace",
        "the worked example, version 3: the daemon runs hot and asks for a 40 s interval",
        40_000,
    ));
    v.push(pace_vector(
        "v3_pace_normal",
        "PACE 0: back to the normal interval (WELCOME's heartbeat_interval_ms)",
        0,
    ));
    v.push(pace_vector(
        "v3_pace_max",
        "PACE with the largest interval (valid; a gateway bounds what it obeys, § P6.13)",
        u32::MAX,
    ));
    v
}

pub(super) fn invalid() -> Vec<V> {
    vec![
        err(
            at(
                V::new(
                    "v2_pace",
                    "server",
                    "a valid PACE on a version-2 link",
                    &pace_frame(40_000),
                ),
                2,
            ),
            "unknown_type value=138",
        ),
        err(
            at(
                V::new(
                    "v3_pace_to_daemon",
                    "client",
                    "a PACE sent by a gateway",
                    &pace_frame(40_000),
                ),
                3,
            ),
            "unknown_type value=138",
        ),
        err(
            at(
                V::new(
                    "v3_pace_too_short",
                    "server",
                    "PACE with 3 bytes of interval",
                    &Frame::new(PACE).line(vec![vec![0x40, 0x9c, 0x00]]),
                ),
                3,
            ),
            "too_short",
        ),
        err(
            at(
                V::new(
                    "v3_pace_trailing",
                    "server",
                    "PACE with a byte after its interval",
                    &Frame::new(PACE).line(vec![le32(40_000), b(0)]),
                ),
                3,
            ),
            "trailing_bytes extra=1",
        ),
        err(
            at(
                V::new(
                    "v3_hello_version_4",
                    "client",
                    "version 4: refused before the rest is read (here: nothing follows)",
                    &Frame::new(HELLO).line(vec![le16(4)]),
                ),
                3,
            ),
            "unsupported_version value=4",
        ),
    ]
}

/// The worked example's PACE (SPEC.md § P8).
pub(super) fn spec_pace() -> Frame {
    pace_frame(40_000)
}
