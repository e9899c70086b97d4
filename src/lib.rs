//! presenced: the presence core (sans-IO), the daemon around it, and the gateway-side client.
//!
//! See ARCHITECTURE.md for the code map and the normative presence rules.

pub mod auth;
pub mod bus;
pub mod daemon;
pub mod ingest;
pub mod link;
pub mod memory;
pub mod route;
pub mod settings;
pub mod worker;
