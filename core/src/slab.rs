//! Large arrays that cost memory only once used: zeroed by the allocator (fresh pages from the
//! kernel, not written here). A shard sized for millions of users reserves the address space
//! for them up front and its resident size follows the users actually present: the wheel and
//! the blocks are used from their low end, and the table grows into fresh arrays of these (the
//! last into the full-size one reserved at start).
//!
//! Page policy (huge pages or not) is the daemon's: the core never calls the kernel, it only
//! says where its arrays lie ([`Region`], `Shard::regions`).

use bytemuck::Zeroable;

/// `len` all-zero values, allocated with `alloc_zeroed`, so the pages are not touched; `Err`
/// when the machine refuses the address space.
pub fn zeroed<T: Zeroable>(len: usize) -> Result<Box<[T]>, OutOfMemory> {
    bytemuck::try_zeroed_slice_box(len).map_err(|()| OutOfMemory {
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })
}

/// The allocator refused an array of this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// The array's size.
    pub bytes: usize,
}

impl OutOfMemory {
    /// The configuration error: `key` sized an array (`what`) the machine cannot hold.
    pub fn too_big(self, key: &'static str, what: &str) -> crate::config::ConfigError {
        crate::config::ConfigError {
            key,
            problem: format!(
                "{what} needs {} MiB of address space, which this machine refuses: lower it \
                 (or use fewer shards, or a machine with more memory)",
                self.bytes >> 20
            ),
        }
    }
}

/// Where one large array lies in the address space: its first byte and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Address of the first byte.
    pub start: usize,
    /// Length, bytes.
    pub len_bytes: usize,
}

impl Region {
    /// The region a slice occupies.
    pub fn of<T>(slice: &[T]) -> Region {
        Region {
            start: slice.as_ptr() as usize,
            len_bytes: std::mem::size_of_val(slice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_arrays_read_as_zero_and_have_the_asked_length() {
        for len in [0, 1, 1000, 786_437] {
            let s: Box<[u64]> = zeroed(len).unwrap();
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0));
            assert_eq!(Region::of(&s).len_bytes, len * 8);
        }
    }

    #[test]
    fn an_array_the_machine_cannot_hold_is_an_error() {
        let e = zeroed::<u64>(usize::MAX / 16).unwrap_err();
        assert_eq!(e.bytes, usize::MAX / 16 * 8);
    }
}
