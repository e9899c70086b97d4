//! The presence core of presenced: one shard's presence logic as a deterministic state machine.
//!
//! Heartbeat entries and the current time go in ([`shard::Shard::heartbeat`],
//! [`shard::Shard::advance`]); user-level transitions come out into a buffer the caller owns.
//! The core never reads a clock, never touches a socket, a file or a thread, and allocates only
//! at construction: every rule is testable with simulated time, and the same code runs in the
//! daemon, the simulation and the fuzzers. The normative rules are in ARCHITECTURE.md
//! ("Presence rules") and `wire-format/SPEC.md`.

pub mod cache;
pub mod clock;
pub mod config;
pub mod event;
pub mod near;
pub mod persist;
pub mod record;
pub(crate) mod ring_bits;
pub mod saved;
pub mod shard;
pub mod slab;
pub mod table;
mod timers;
pub mod wheel;
