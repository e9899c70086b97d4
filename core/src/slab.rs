//! Large fixed arrays that cost memory only once used: zeroed by the allocator (fresh pages
//! from the kernel, not written here). A shard sized for millions of users starts small and
//! its resident size follows the users actually present; the address space is still reserved
//! up front, so nothing grows or reallocates after construction.
//!
//! Page policy (huge pages or not) is the daemon's: the core never calls the kernel, it only
//! says where its arrays lie ([`Region`], `Shard::regions`).

use bytemuck::Zeroable;

/// `len` all-zero values, allocated with `alloc_zeroed`, so the pages are not touched.
pub fn zeroed<T: Zeroable>(len: usize) -> Box<[T]> {
    bytemuck::zeroed_slice_box(len)
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
            let s: Box<[u64]> = zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0));
            assert_eq!(Region::of(&s).len_bytes, len * 8);
        }
    }
}
