//! Arbitrary bytes as a configuration, a start time and a sequence of operations on the
//! daemon's shard node (`presenced_node::node::ShardNode` around a small presence core):
//! heartbeat datagrams handed to it as received, time passing, jumps past every timer horizon,
//! wall-clock steps either way and stale monotonic times. The node must never panic and its
//! invariants must hold after every operation (see `tests/shard_harness/mod.rs`, shared with
//! `tests/shard_fuzz_props.rs`, which runs the same harness in CI).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/shard_harness/mod.rs"]
mod shard_harness;

fuzz_target!(|data: &[u8]| {
    shard_harness::run(data);
});
