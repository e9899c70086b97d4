//! The JSON the gateway and a browser exchange over the WebSocket: serde types on both sides
//! of the boundary, so nothing is formatted or parsed by hand. Every message is an object
//! with a `type`. The page in `page.html` is the reference reader and writer.

use serde::{Deserialize, Serialize};

/// What a browser may send.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BrowserMessage {
    /// The users whose presence this browser wants (replaces any earlier roster).
    Roster {
        /// User ids (nonzero; duplicates count once).
        users: Vec<u64>,
    },
    /// The page became visible (the user is here) or hidden (idle), from the Page Visibility
    /// API.
    Visibility {
        /// `document.visibilityState == "visible"`.
        visible: bool,
    },
}

/// A user's presence as the gateway shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Some device is connected and in use.
    Online,
    /// Every connected device is idle.
    Idle,
    /// No device is connected (or the user hides their presence).
    Offline,
}

/// What the gateway sends a browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    /// Sent first: who this browser is and the limits it must keep.
    Welcome {
        /// The user the token names.
        user: u64,
        /// This browser's device id (unique within the gateway).
        device: u32,
        /// The most users a roster may hold.
        max_roster_users: usize,
        /// The longest message accepted, bytes.
        max_message_bytes: usize,
        /// Messages per second accepted (a burst of as many is allowed).
        max_messages_per_second: u32,
    },
    /// A user's presence: after a roster names them, and at every change.
    Presence {
        /// The user.
        user: u64,
        /// Online, idle or offline.
        state: State,
        /// Last seen, Unix milliseconds; `None` when unknown.
        last_seen_ms: Option<u64>,
        /// The daemon's version of the user's presence (grows with every transition).
        version: u64,
        /// The user's browsers connected to this gateway now.
        devices_here: u32,
    },
    /// A message of this browser was refused; nothing else changed.
    Error {
        /// Machine-readable: `bad_json`, `roster_too_large`, `bad_user`, `message_too_large`,
        /// `rate_limited`, `binary_unsupported`.
        code: ErrorCode,
        /// Human-readable.
        message: String,
    },
}

/// Why a browser's message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a message of this protocol.
    BadJson,
    /// A roster longer than `max_roster_users`.
    RosterTooLarge,
    /// User id 0 in a roster.
    BadUser,
    /// A message longer than `max_message_bytes`.
    MessageTooLarge,
    /// More than `max_messages_per_second`.
    RateLimited,
    /// A binary WebSocket message (this protocol is text only).
    BinaryUnsupported,
}
