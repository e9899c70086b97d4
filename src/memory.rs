//! The daemon's page policy for the core's large arrays. Each shard's wheel and overflow blocks
//! are reserved up front, zeroed by the allocator and handed out from their low end, so they
//! cost memory only once used; its table starts small and grows by quarters as users arrive,
//! so it is always at least 7/10 full (after its first growth) and written all over.
//!
//! Transparent huge pages would break the first: on a sparse array, every 2 MiB page a few
//! records touch becomes resident. So every array starts with small pages
//! (`MADV_NOHUGEPAGE`). The table is dense whatever its size, so huge pages cost it no memory
//! and spare most of its random reads a TLB miss: the table shows each array it grows into to
//! [`huge`] before writing it (`Table::set_advice`), and its reserved full-size array at once.
//! (Advice given after the table had moved its entries in found the pages already faulted in
//! small: the 1M-user table had no huge page at all.)

use presenced_core::slab::Region;

/// Bytes in a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The kernel's page size for a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// 4 KiB pages only: memory follows use page by page.
    Small,
    /// Transparent huge pages where the kernel can.
    Huge,
}

/// Advises the kernel on the whole huge pages inside `region`. Only a hint: where transparent
/// huge pages are off, the region keeps small pages either way.
pub fn advise(region: Region, pages: Pages) {
    let end = region.start + region.len_bytes;
    let aligned = region.start.next_multiple_of(HUGE_PAGE_BYTES);
    if end > aligned + HUGE_PAGE_BYTES {
        let len = (end - aligned) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        let advice = match pages {
            Pages::Small => libc::MADV_NOHUGEPAGE,
            Pages::Huge => libc::MADV_HUGEPAGE,
        };
        // SAFETY: the range lies inside the region, which the caller's live allocation
        // covers; the advice changes no contents, and a failure only leaves the pages as
        // they were.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, advice);
        }
    }
}

/// [`advise`] huge pages: the table's page advice (`ShardNode::set_table_advice`).
pub fn huge(region: Region) {
    advise(region, Pages::Huge);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Residency is what the policy is for: a table with few users keeps small pages.
    #[test]
    fn small_pages_keep_a_sparse_array_sparse() {
        const LEN: usize = 64 << 20;
        let array: Box<[u8]> = presenced_core::slab::zeroed(LEN).unwrap();
        advise(Region::of(&array), Pages::Small);
        let before = resident_bytes(&array);
        // One byte per 64 KiB, at a stride no huge page can hide.
        let mut array = array;
        for i in (0..LEN).step_by(64 << 10) {
            array[i] = 1;
        }
        let touched = resident_bytes(&array) - before;
        assert!(
            touched <= LEN / 8,
            "{touched} bytes resident after touching 1024 bytes"
        );
    }

    /// Resident bytes of a slice, from mincore(2).
    fn resident_bytes(s: &[u8]) -> usize {
        const PAGE: usize = 4096;
        let start = (s.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (s.as_ptr() as usize + s.len()) / PAGE * PAGE;
        let mut vec = vec![0u8; (end - start) / PAGE];
        // SAFETY: the range lies inside the live slice; mincore writes one byte per page
        // into `vec`, which has exactly that many.
        let rc =
            unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&b| b & 1 == 1).count() * PAGE
    }
}
