//! The daemon's page policy for the core's large arrays: each shard's table, wheel and
//! overflow blocks are reserved up front and zeroed by the allocator (so they cost memory only
//! once used); the whole 2 MiB pages inside them are advised to be transparent huge pages, as
//! they are read at random and huge pages spare most of those reads a TLB miss.

use presenced_core::slab::Region;

/// Bytes in a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks the kernel to back the whole huge pages inside `region` with huge pages. Only a hint:
/// where transparent huge pages are off, the region keeps small pages.
pub fn advise_huge_pages(region: Region) {
    let end = region.start + region.len_bytes;
    let aligned = region.start.next_multiple_of(HUGE_PAGE_BYTES);
    if end > aligned + HUGE_PAGE_BYTES {
        let len = (end - aligned) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        // SAFETY: the range lies inside the region, which the caller's live allocation
        // covers; MADV_HUGEPAGE changes no contents, and a failure only leaves small pages.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}
