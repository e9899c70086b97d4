//! The daemon's page policy for the core's large arrays. Each shard's wheel and overflow blocks
//! are reserved up front, zeroed by the allocator and handed out from their low end, so they
//! cost memory only once used; its table starts small and doubles as users arrive, so it is
//! always at least 7/16 full (after its first doubling) and written all over.
//!
//! Transparent huge pages would break the first: on a sparse array, every 2 MiB page a few
//! records touch becomes resident. So every array starts with small pages
//! (`MADV_NOHUGEPAGE`). The table is dense whatever its size, so huge pages cost it no memory
//! and spare most of its random reads a TLB miss: each time it grows into a new array, that
//! array is advised huge pages ([`TablePages`]).

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

/// Follows one shard's table from array to array as it grows (a restore may have moved it
/// before the shard thread starts), so that each array is advised huge pages once.
#[derive(Clone, Copy, Debug, Default)]
pub struct TablePages {
    advised: Option<Region>,
}

impl TablePages {
    /// Whether the table's array, which lies at `region` now, is one not advised yet (true
    /// once per array).
    pub fn moved(&mut self, region: Region) -> bool {
        self.advised.replace(region) != Some(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_advised_once_each_time_it_moves() {
        let at = |start| Region {
            start,
            len_bytes: 4096,
        };
        let mut pages = TablePages::default();
        assert!(pages.moved(at(1 << 20)));
        assert!(!pages.moved(at(1 << 20)));
        assert!(pages.moved(at(8 << 20)));
        assert!(!pages.moved(at(8 << 20)), "once");
    }

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
