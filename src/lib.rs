//! presenced: the presence core (sans-IO) and, later, the daemon around it.
//!
//! See ARCHITECTURE.md for the code map and the normative presence rules.

pub mod clock;
pub mod config;
pub mod event;
pub mod record;
pub mod settings;
pub mod shard;
pub mod table;
pub mod wheel;
