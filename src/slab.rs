//! Large fixed arrays that cost memory only once used: zeroed by the allocator (fresh pages
//! from the kernel, not written here) and backed by transparent huge pages where the kernel
//! allows. A shard sized for millions of users starts small and its resident size follows the
//! users actually present; the address space is still reserved up front, so nothing grows or
//! reallocates after construction.

use bytemuck::Zeroable;

/// Bytes in a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE: usize = 2 << 20;

/// `len` all-zero values, allocated with `alloc_zeroed` (so the pages are not touched) and,
/// for arrays spanning whole huge pages, advised to use them: the table and the wheel are read
/// at random, and 2 MiB pages spare most of those reads a TLB miss.
pub fn zeroed<T: Zeroable>(len: usize) -> Box<[T]> {
    let slice: Box<[T]> = bytemuck::zeroed_slice_box(len);
    advise_huge_pages(&slice);
    slice
}

/// Asks the kernel to back the whole huge pages inside `slice` with huge pages. Only a hint:
/// where transparent huge pages are off, the slice keeps small pages.
fn advise_huge_pages<T>(slice: &[T]) {
    let start = slice.as_ptr() as usize;
    let end = start + std::mem::size_of_val(slice);
    let aligned = start.next_multiple_of(HUGE);
    if end > aligned + HUGE {
        let len = (end - aligned) / HUGE * HUGE;
        // SAFETY: the range lies inside the allocation `slice` borrows; MADV_HUGEPAGE changes
        // no contents, and a failure only leaves small pages.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_arrays_read_as_zero_and_have_the_asked_length() {
        for len in [0, 1, 1000, (HUGE * 3) / 8 + 5] {
            let s: Box<[u64]> = zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&x| x == 0));
        }
    }
}
