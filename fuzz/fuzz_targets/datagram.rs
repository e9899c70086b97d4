//! Arbitrary bytes as a heartbeat datagram: `presenced_wire::decode` never panics; when it
//! accepts, every accessor works and re-encoding the decoded header and entries (`encode`, and
//! `Encoder`) gives back exactly the same bytes. The checks are shared with
//! `wire-format/tests/fuzz_props.rs`, which runs them in CI.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../wire-format/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_datagram(data);
});
