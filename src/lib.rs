//! presenced: the presence core (sans-IO), the daemon around it, and the gateway-side client.
//!
//! See ARCHITECTURE.md for the code map and the normative presence rules.

pub mod auth;
pub mod bus;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod event;
pub mod ingest;
pub mod link;
pub mod record;
pub mod route;
pub mod settings;
pub mod shard;
pub mod slab;
pub mod table;
pub mod wheel;
pub mod worker;
