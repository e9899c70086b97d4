//! The core's limits and timings: every one has a default and is checked at start.

use std::fmt;

/// Largest allowed `max_devices_per_user` (a saved record holds at most 31: `crate::saved`).
pub const MAX_DEVICES_LIMIT: u8 = 31;

/// Largest horizon, in ticks, of any timer (deadline, idle, retention): ticks are stored in at
/// most 32 bits and compared with wrapping arithmetic.
pub const MAX_HORIZON_TICKS: u64 = 1 << 30;

/// Largest horizon, in ticks, of a device's timers: its timeout with any back-off extension,
/// and its idle window. A record keeps its one device's ticks in 22 bits each
/// (`crate::record`), so that a slot is 36 bytes.
pub const DEVICE_HORIZON_TICKS: u64 = 1 << 20;

/// The deadline extension, ticks, for heartbeats `asked_us` apart where `interval_us` is the
/// normal interval: the timeout stretched in the same proportion (SPEC.md § P6.13), so that as
/// many beats in a row may be lost. 0 at or below the normal interval.
pub fn extension_ticks(asked_us: u64, interval_us: u64, timeout_us: u64, tick_us: u64) -> u64 {
    let extra_us = u128::from(asked_us.saturating_sub(interval_us)) * u128::from(timeout_us)
        / u128::from(interval_us.max(1));
    u64::try_from(extra_us)
        .unwrap_or(u64::MAX)
        .div_ceil(tick_us)
}

/// The longest deadline extension a shard takes with this timeout: the extended timeout stays
/// under [`DEVICE_HORIZON_TICKS`], with two ticks to spare for rounding.
pub fn max_extension_ticks(timeout_us: u64, tick_us: u64) -> u64 {
    (DEVICE_HORIZON_TICKS - 1).saturating_sub(timeout_us / tick_us + 2)
}

/// Timings and limits of one shard's presence core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// Timing-wheel resolution in microseconds (`tick`, default 10 ms).
    pub tick_us: u64,
    /// Expected time between a device's heartbeats, microseconds (`heartbeat_interval`, 20 s).
    pub heartbeat_interval_us: u64,
    /// Allowance for delay and jitter, microseconds (`grace`, 12 s); a device is offline after
    /// `heartbeat_interval + 2 × grace` of silence.
    pub grace_us: u64,
    /// A device with no activity flag for this long is idle, microseconds (`idle_after`, 5 min).
    pub idle_after_us: u64,
    /// How long an offline user's last seen is kept, microseconds (`last_seen_retention`, 30 d).
    pub last_seen_retention_us: u64,
    /// Users one shard holds, online or remembered offline (`users_per_shard`, 1,000,000).
    pub user_capacity: u32,
    /// Devices one user may have at once; more are refused (`max_devices_per_user`, 8).
    pub max_devices_per_user: u8,
    /// Users with two devices or more that one shard holds at once (`multi_device_users`,
    /// 250,000); each takes one overflow block.
    pub multi_device_users: u32,
    /// Seed of the table's hash (random in the daemon, fixed in tests).
    pub hash_seed: u64,
    /// Slots the presence table starts with before it grows ([`crate::table::INITIAL_SLOTS`]
    /// in the daemon; tests start smaller, so that growth runs under every rule).
    pub table_initial_slots: usize,
    /// The most of its slots the presence table fills, thousandths (`table_max_load_permille`,
    /// 900 = 9/10): higher costs fewer bytes a user and longer probes.
    pub table_max_load_permille: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            tick_us: 10_000,
            heartbeat_interval_us: 20_000_000,
            grace_us: 12_000_000,
            idle_after_us: 300_000_000,
            last_seen_retention_us: 30 * 24 * 3600 * 1_000_000,
            user_capacity: 1_000_000,
            max_devices_per_user: 8,
            multi_device_users: 250_000,
            hash_seed: 0x5eed_0f9e_5ece_5d00,
            table_initial_slots: crate::table::INITIAL_SLOTS,
            table_max_load_permille: crate::table::DEFAULT_MAX_LOAD_PERMILLE,
        }
    }
}

/// A configuration value the core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl CoreConfig {
    /// Silence after which a device is offline: `heartbeat_interval + 2 × grace`, microseconds.
    pub fn timeout_us(&self) -> u64 {
        self.heartbeat_interval_us + 2 * self.grace_us
    }

    /// Checks every value; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem: String| Err(ConfigError { key, problem });
        if self.tick_us < 100 || self.tick_us > 1_000_000 {
            return err("tick", format!("is {} µs; use 100 µs to 1 s", self.tick_us));
        }
        if self.heartbeat_interval_us == 0 || self.heartbeat_interval_us > 3_600_000_000 {
            return err(
                "heartbeat_interval",
                format!(
                    "is {} µs; use more than 0 and at most 1 h",
                    self.heartbeat_interval_us
                ),
            );
        }
        if self.grace_us > 3_600_000_000 {
            return err("grace", format!("is {} µs; use at most 1 h", self.grace_us));
        }
        if self.idle_after_us == 0 {
            return err("idle_after", "is 0; use a positive duration".to_string());
        }
        for (key, us, max_ticks, max) in [
            (
                "idle_after",
                self.idle_after_us,
                DEVICE_HORIZON_TICKS,
                "2^20",
            ),
            (
                "last_seen_retention",
                self.last_seen_retention_us,
                MAX_HORIZON_TICKS,
                "2^30",
            ),
            (
                "heartbeat_interval",
                self.timeout_us(),
                DEVICE_HORIZON_TICKS,
                "2^20",
            ),
        ] {
            if us / self.tick_us >= max_ticks {
                return err(
                    key,
                    format!(
                        "spans {} ticks of {} µs; at most {max} ticks are allowed: shorten it or raise `tick`",
                        us / self.tick_us,
                        self.tick_us
                    ),
                );
            }
        }
        if self.user_capacity == 0 || self.user_capacity > (1 << 30) {
            return err(
                "users_per_shard",
                format!("is {}; use 1 to 2^30", self.user_capacity),
            );
        }
        if self.max_devices_per_user == 0 || self.max_devices_per_user > MAX_DEVICES_LIMIT {
            return err(
                "max_devices_per_user",
                format!(
                    "is {}; use 1 to {MAX_DEVICES_LIMIT}",
                    self.max_devices_per_user
                ),
            );
        }
        let loads = crate::table::MAX_LOAD_PERMILLE;
        if !loads.contains(&self.table_max_load_permille) {
            return err(
                "table_max_load_permille",
                format!(
                    "is {}; use {} to {}",
                    self.table_max_load_permille,
                    loads.start(),
                    loads.end()
                ),
            );
        }
        if self.multi_device_users > self.user_capacity {
            return err(
                "multi_device_users",
                format!(
                    "is {}, more than users_per_shard ({}); lower it",
                    self.multi_device_users, self.user_capacity
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device's timeout and idle window stay under the device horizon, retention under the
    /// wider one; the error names the key.
    #[test]
    fn horizons_are_refused_by_key() {
        let tick_us = CoreConfig::default().tick_us;
        assert_eq!(CoreConfig::default().validate(), Ok(()));
        let longest = CoreConfig {
            idle_after_us: (DEVICE_HORIZON_TICKS - 1) * tick_us,
            heartbeat_interval_us: 3_600_000_000,
            grace_us: ((DEVICE_HORIZON_TICKS - 1) * tick_us - 3_600_000_000) / 2,
            last_seen_retention_us: (MAX_HORIZON_TICKS - 1) * tick_us,
            ..CoreConfig::default()
        };
        assert_eq!(longest.validate(), Ok(()));
        for (config, key) in [
            (
                CoreConfig {
                    idle_after_us: DEVICE_HORIZON_TICKS * tick_us,
                    ..longest.clone()
                },
                "idle_after",
            ),
            (
                CoreConfig {
                    grace_us: longest.grace_us + tick_us,
                    ..longest.clone()
                },
                "heartbeat_interval",
            ),
            (
                CoreConfig {
                    last_seen_retention_us: MAX_HORIZON_TICKS * tick_us,
                    ..longest.clone()
                },
                "last_seen_retention",
            ),
        ] {
            assert_eq!(config.validate().map_err(|e| e.key), Err(key));
        }
    }
}
