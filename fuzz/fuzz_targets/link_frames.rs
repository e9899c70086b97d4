//! Arbitrary bytes as a push-link stream: `FrameReader::next_frame` splits it into frames
//! (default limit, and a small one), `decode_client` and `decode_server` never panic on them,
//! and every accepted frame re-encodes (`ClientFrame::encode` / `ServerFrame::encode`, and the
//! typed `encode_*` functions and writers) to exactly the same bytes. The checks are shared
//! with `wire-format/tests/fuzz_props.rs`, which runs them in CI.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presenced_wire::link::DEFAULT_MAX_FRAME_LEN;

#[path = "../../wire-format/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_stream(data, DEFAULT_MAX_FRAME_LEN);
    fuzz_checks::check_stream(data, 24);
});
