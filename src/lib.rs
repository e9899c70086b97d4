//! presenced, the daemon: it only drives IO. Sockets, threads, channels, clocks and files live
//! here; every decision is made by the sans-IO crates it drives (`presenced-node`'s shard node
//! and hub around `presenced-core`'s presence state machine).
//!
//! See ARCHITECTURE.md for the layers, the code map and the normative presence rules.

pub mod cli;
pub mod cpu;
pub mod daemon;
pub mod etcd;
pub mod ingest;
pub mod keyfile;
pub mod link;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod peer_probe;
pub mod reload;
pub mod settings;
pub mod shard_thread;
pub mod state;
pub mod store_thread;
pub mod time;
