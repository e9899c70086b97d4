//! `presence-gateway`: a reference gateway, built the way a gateway team should build theirs.
//! Browsers connect over a WebSocket, each as one device of the user its signed token names
//! ([`token`]); the gateway heartbeats those devices to the daemon with the client library
//! (batched, signed, shard-aware), reports a hidden page as idle and a closed one as logged
//! out, and forwards to each browser the transitions of the users in its roster, over one push
//! link for the whole gateway with subscriptions shared between browsers. The rules live in
//! [`core`] (sans-IO, tested with fake time); [`server`] only moves bytes; [`protocol`] is the
//! JSON spoken with browsers; `page.html` is the page it serves.

pub mod cli;
pub mod core;
pub mod protocol;
pub mod server;
pub mod token;

use presenced_client::ConnectOptions;
use presenced_wire::auth::Key;
use std::net::SocketAddr;

/// Everything a gateway needs to start.
pub struct Settings {
    /// The HTTP address (the page, `/ws`, `/stats`).
    pub listen: SocketAddr,
    /// The daemon's push-link address (its heartbeat ports come from WELCOME).
    pub link: SocketAddr,
    /// How to connect the push link.
    pub connect: ConnectOptions,
    /// This gateway's id in its heartbeats (and in the daemon's key file).
    pub gateway_id: u32,
    /// The key heartbeats are signed with, for a daemon that requires it.
    pub key: Option<Key>,
    /// The secret browser tokens are checked with.
    pub secret: token::Secret,
    /// The limits on browsers.
    pub limits: core::Limits,
    /// A browser silent this long (no message, no answer to pings) is closed and logged out.
    pub silence_timeout: std::time::Duration,
}
