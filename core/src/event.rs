//! What goes into a shard (heartbeats) and what comes out (transitions, query answers).

/// A device's state as reported in a heartbeat entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Report {
    /// The device is connected and in the foreground.
    Online,
    /// The device is connected but its user is away.
    Idle,
    /// The device logged out: it is removed at once.
    Offline,
    /// The device is connected but its user hides their presence.
    Invisible,
}

/// One heartbeat entry, as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The user; 0 is reserved and refused.
    pub user: u64,
    /// The device within the user (a gateway-chosen id).
    pub device: u32,
    /// What the device reports.
    pub report: Report,
    /// Whether the user did something since the device's previous heartbeat.
    pub active: bool,
}

/// A user's presence as subscribers and queries see it (invisible reads as offline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublicState {
    /// No live device, or the user is invisible.
    Offline,
    /// At least one live device is active.
    Online,
    /// Every live device is idle.
    Idle,
}

/// Why a user-level transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The first heartbeat of a device while the user had no live device.
    FirstHeartbeat,
    /// A heartbeat changed a device's reported state (or added a device).
    StateChange,
    /// A device logged out.
    Logout,
    /// A device's heartbeat deadline passed.
    Timeout,
    /// No heartbeat carried the activity flag for `idle_after`.
    Inactivity,
}

/// One user-level change of public state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The user.
    pub user: u64,
    /// The new public state.
    pub state: PublicState,
    /// The public state before.
    pub prev: PublicState,
    /// Wall-clock time of the change, Unix milliseconds.
    pub at_ms: u64,
    /// Why it happened.
    pub cause: Cause,
    /// Per-user version; strictly greater than every earlier one for this user.
    pub version: u64,
    /// The user's live devices right after the change (for the history of sessions).
    pub devices: u8,
    /// The change also set the user's last seen to `at_ms` (rule 4: every change to online or
    /// offline, and one to idle made by a heartbeat with the activity flag).
    pub seen: bool,
}

// Two transitions per cache line; a batch of them is one channel slot.
const _: () = assert!(std::mem::size_of::<Transition>() == 32);

/// The answer to a presence query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// Public state.
    pub state: PublicState,
    /// Last seen, Unix milliseconds; `None` when unknown (never seen, or dropped after retention).
    pub last_seen_ms: Option<u64>,
    /// Version of the latest transition; 0 when the user is unknown.
    pub version: u64,
}

impl Presence {
    /// The answer for a user the shard does not know.
    pub const UNKNOWN: Presence = Presence {
        state: PublicState::Offline,
        last_seen_ms: None,
        version: 0,
    };
}
