//! The daemon's page policy for the core's large arrays. Each shard's table, wheel and overflow
//! blocks are reserved up front and zeroed by the allocator, so they cost memory only once
//! used, and resident memory follows the users present. Transparent huge pages would break
//! that: the table is written at random, so with huge pages (THP `always`, or advised) a few
//! thousand users make every 2 MiB page of it resident (about 100 MB per shard at the default
//! size, whatever the population).
//!
//! So every array starts with small pages (`MADV_NOHUGEPAGE`), and a shard's table switches
//! to huge pages ([`HugePages`]) once it is dense enough that its small pages are nearly all
//! resident anyway: from then on huge pages cost no memory and spare most of the table's
//! random reads a TLB miss. The wheel and the blocks are handed out from their low end, so
//! small pages follow their use exactly; they keep them.

use presenced_core::slab::Region;

/// Bytes in a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The table switches to huge pages when it holds at least this fraction (1/n) of its
/// capacity: with 40-byte slots, a 4 KiB page has about 100 slots, so at 1/16 full a page
/// holds six entries on average and all but 0.3 % of pages are resident already.
pub const HUGE_PAGES_AT_FRACTION: usize = 16;

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

/// When one shard's table switches to huge pages (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct HugePages {
    at_users: usize,
    switched: bool,
}

impl HugePages {
    /// For a table of `capacity` users.
    pub fn new(capacity: usize) -> HugePages {
        HugePages {
            at_users: (capacity / HUGE_PAGES_AT_FRACTION).max(1),
            switched: false,
        }
    }

    /// Whether the table, now holding `users`, should switch now (true once).
    pub fn due(&mut self, users: usize) -> bool {
        let due = !self.switched && users >= self.at_users;
        self.switched |= due;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_switches_once_when_a_sixteenth_full() {
        let mut h = HugePages::new(1_000_000);
        assert!(!h.due(0));
        assert!(!h.due(62_499));
        assert!(h.due(62_500));
        assert!(!h.due(70_000), "once");
        assert!(!h.due(0), "and never back");
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
