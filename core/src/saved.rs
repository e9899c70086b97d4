//! A user's record as it survives a restart: the bytes a snapshot holds for one user, and their
//! decoding. The layout is the core's (it knows what a record means); the store frames these
//! bytes in checksummed blocks and files, and says which [`RECORD_ENCODING`] it holds.
//!
//! Times are wall-clock Unix ms (a restart starts a new monotonic clock), so a record can be
//! read by a daemon started later, on another host, or with another shard count. Decoding
//! never panics: every field is checked, and a record that does not check is an error.
//!
//! Layout, little-endian, no padding:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | user (nonzero) |
//! | 8 | version |
//! | 8 | last seen, Unix ms (0: unknown) |
//! | 8 | with no device, when the user went deviceless, Unix ms (for the retention); else 0 |
//! | 1 | device count n (0 to 31) |
//! | 21 × n | devices: id u32, flags u8 (bits 0–1 state: 0 online, 1 idle, 2 invisible; bit 2 lapsed; bit 3 restored; bits 4–7 zero), deadline u64 ms, end of the activity window u64 ms |

use crate::config::MAX_DEVICES_LIMIT;
use crate::record::DeviceState;
use std::fmt;

/// The version of this layout; a store refuses records of another.
pub const RECORD_ENCODING: u16 = 1;
/// Bytes of a record before its devices.
pub const USER_BYTES: usize = 33;
/// Bytes of one saved device.
pub const DEVICE_BYTES: usize = 21;
/// The longest encoded record.
pub const MAX_RECORD_BYTES: usize = USER_BYTES + DEVICE_BYTES * MAX_DEVICES_LIMIT as usize;

const FLAG_STATE: u8 = 0b0011;
const FLAG_LAPSED: u8 = 0b0100;
const FLAG_RESTORED: u8 = 0b1000;

/// One device of a saved user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedDevice {
    /// Gateway-chosen device id.
    pub id: u32,
    /// Reported state.
    pub state: DeviceState,
    /// Its activity window had passed.
    pub lapsed: bool,
    /// It stood in for devices lost in an earlier restart.
    pub restored: bool,
    /// When it times out, Unix ms.
    pub deadline_ms: u64,
    /// When its activity window ends, Unix ms.
    pub active_until_ms: u64,
}

impl SavedDevice {
    const EMPTY: SavedDevice = SavedDevice {
        id: 0,
        state: DeviceState::Online,
        lapsed: false,
        restored: false,
        deadline_ms: 0,
        active_until_ms: 0,
    };
}

/// A saved user: the record without its table slot and timer. Holds its devices inline, so
/// reading a snapshot allocates nothing per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedUser {
    /// The user.
    pub user: u64,
    /// Version of the user's latest transition.
    pub version: u64,
    /// Last seen, Unix ms.
    pub last_seen_ms: Option<u64>,
    /// With no device: when the user went deviceless, Unix ms.
    pub offline_since_ms: u64,
    count: u8,
    devices: [SavedDevice; MAX_DEVICES_LIMIT as usize],
}

impl SavedUser {
    /// A user with no device.
    pub fn new(user: u64, version: u64, last_seen_ms: Option<u64>, offline_since_ms: u64) -> Self {
        SavedUser {
            user,
            version,
            last_seen_ms,
            offline_since_ms,
            count: 0,
            devices: [SavedDevice::EMPTY; MAX_DEVICES_LIMIT as usize],
        }
    }

    /// Adds a device; false (nothing added) when 31 are there.
    pub fn push(&mut self, device: SavedDevice) -> bool {
        let Some(slot) = self.devices.get_mut(self.count as usize) else {
            return false;
        };
        *slot = device;
        self.count += 1;
        true
    }

    /// The devices.
    pub fn devices(&self) -> &[SavedDevice] {
        &self.devices[..self.count as usize]
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.user.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.last_seen_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.offline_since_ms.to_le_bytes());
        out.push(self.count);
        for d in self.devices() {
            out.extend_from_slice(&d.id.to_le_bytes());
            let flags = d.state as u8
                | if d.lapsed { FLAG_LAPSED } else { 0 }
                | if d.restored { FLAG_RESTORED } else { 0 };
            out.push(flags);
            out.extend_from_slice(&d.deadline_ms.to_le_bytes());
            out.extend_from_slice(&d.active_until_ms.to_le_bytes());
        }
    }

    /// Reads one record from the front of `bytes`: the user and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(SavedUser, usize), SavedError> {
        let mut r = Reader { bytes, at: 0 };
        let user = r.u64()?;
        if user == 0 {
            return Err(SavedError::ZeroUser);
        }
        let version = r.u64()?;
        let last_seen_ms = Some(r.u64()?).filter(|&ms| ms != 0);
        let offline_since_ms = r.u64()?;
        let count = r.u8()?;
        if count > MAX_DEVICES_LIMIT {
            return Err(SavedError::TooManyDevices(count));
        }
        let mut saved = SavedUser::new(user, version, last_seen_ms, offline_since_ms);
        for _ in 0..count {
            let id = r.u32()?;
            let flags = r.u8()?;
            let state = match flags & FLAG_STATE {
                0 => DeviceState::Online,
                1 => DeviceState::Idle,
                2 => DeviceState::Invisible,
                _ => return Err(SavedError::BadFlags(flags)),
            };
            if flags & !(FLAG_STATE | FLAG_LAPSED | FLAG_RESTORED) != 0 {
                return Err(SavedError::BadFlags(flags));
            }
            saved.push(SavedDevice {
                id,
                state,
                lapsed: flags & FLAG_LAPSED != 0,
                restored: flags & FLAG_RESTORED != 0,
                deadline_ms: r.u64()?,
                active_until_ms: r.u64()?,
            });
        }
        Ok((saved, r.at))
    }
}

/// Why saved bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavedError {
    /// The bytes end inside a record.
    Truncated,
    /// User id 0.
    ZeroUser,
    /// More than 31 devices.
    TooManyDevices(u8),
    /// A device's flags byte has an unknown state or bit.
    BadFlags(u8),
}

impl fmt::Display for SavedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SavedError::Truncated => f.write_str("the bytes end inside a saved record"),
            SavedError::ZeroUser => f.write_str("a saved record names user 0"),
            SavedError::TooManyDevices(n) => {
                write!(f, "a saved record has {n} devices (at most 31)")
            }
            SavedError::BadFlags(b) => write!(f, "a saved device has flags {b:#04x}"),
        }
    }
}

impl std::error::Error for SavedError {}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SavedError> {
        let end = self.at.checked_add(N).ok_or(SavedError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(SavedError::Truncated)?;
        self.at = end;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, SavedError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SavedError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, SavedError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedUser {
        let mut u = SavedUser::new(42, 7 << 16, Some(1_700_000_000_123), 0);
        for (i, state) in [
            DeviceState::Online,
            DeviceState::Idle,
            DeviceState::Invisible,
        ]
        .into_iter()
        .enumerate()
        {
            u.push(SavedDevice {
                id: u32::MAX - i as u32,
                state,
                lapsed: i == 1,
                restored: i == 2,
                deadline_ms: 1_700_000_044_000 + i as u64,
                active_until_ms: 1_700_000_300_000,
            });
        }
        u
    }

    #[test]
    fn round_trips_at_the_documented_size() {
        let u = sample();
        let mut bytes = Vec::new();
        u.encode(&mut bytes);
        assert_eq!(bytes.len(), USER_BYTES + 3 * DEVICE_BYTES);
        bytes.extend_from_slice(b"next");
        let (back, used) = SavedUser::decode(&bytes).unwrap();
        assert_eq!((back, used), (u, USER_BYTES + 3 * DEVICE_BYTES));
        let offline = SavedUser::new(9, 1, None, 1_700_000_000_000);
        let mut bytes = Vec::new();
        offline.encode(&mut bytes);
        assert_eq!(SavedUser::decode(&bytes).unwrap(), (offline, USER_BYTES));
    }

    #[test]
    fn every_truncation_and_bad_field_is_an_error() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for len in 0..bytes.len() {
            assert_eq!(
                SavedUser::decode(&bytes[..len]).err(),
                Some(SavedError::Truncated)
            );
        }
        let mut zero = bytes.clone();
        zero[..8].fill(0);
        assert_eq!(SavedUser::decode(&zero).err(), Some(SavedError::ZeroUser));
        let mut many = bytes.clone();
        many[32] = 32;
        assert_eq!(
            SavedUser::decode(&many).err(),
            Some(SavedError::TooManyDevices(32))
        );
        for flags in [3u8, 0x10, 0x83] {
            let mut bad = bytes.clone();
            bad[USER_BYTES + 4] = flags;
            assert_eq!(
                SavedUser::decode(&bad).err(),
                Some(SavedError::BadFlags(flags))
            );
        }
    }

    #[test]
    fn a_record_holds_at_most_31_devices() {
        let mut u = SavedUser::new(1, 0, None, 0);
        for id in 0..31 {
            assert!(u.push(SavedDevice {
                id,
                ..SavedDevice::EMPTY
            }));
        }
        assert!(!u.push(SavedDevice::EMPTY));
        let mut bytes = Vec::new();
        u.encode(&mut bytes);
        assert_eq!(bytes.len(), MAX_RECORD_BYTES);
    }
}
