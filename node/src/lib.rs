//! The sans-IO logic around the presence core: the shard node and the push-link hub.
//!
//! Both are state machines in quinn-proto's manner: time and input are passed in (`handle_*`),
//! output and the next deadline are taken out (`poll_*`). Nothing in this crate reads a clock,
//! touches a socket, a channel or a file, blocks, or spawns a thread; the daemon's threads only
//! move bytes between the kernel, the channels and these types. That is what lets every rule
//! here run under fake time in unit tests, the simulation and the fuzzers.
//!
//! - [`node::ShardNode`]: one shard's datagrams in (decode, verify, route, apply), its timers,
//!   its inbox; batches for other shards and messages for the hub out.
//! - [`hub::Hub`]: subscriptions and fan-out; the shards' messages and the links' commands in,
//!   requests for the shards and frames for the links out.
//! - [`bus`]: the messages between them. [`auth`]: the checks of signed datagrams.
//!   [`backoff`]: whether a shard runs hot, and the heartbeat interval it asks for.

pub mod auth;
pub mod backoff;
pub mod bus;
pub mod cluster;
pub mod hub;
pub mod node;
