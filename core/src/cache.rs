//! A cache hint, for code whose speed is the number of cache misses it keeps in flight: the
//! table's batch lookups, the hub's batches of transitions (their subscriber lists), and the
//! load generator's observers, which check events against per-user state spread over tens of
//! megabytes.

/// Starts loading the cache line holding the byte at `at`, which is never dereferenced. On
/// x86-64 this is a prefetch instruction, which retires at once, so a batch of them keeps
/// dozens of misses in flight; elsewhere it does nothing.
#[inline(always)]
pub fn prefetch_at(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint with no architectural effect, at any address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Starts loading the cache line holding `value`'s first byte.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_at(std::ptr::from_ref(value).cast::<u8>());
}
