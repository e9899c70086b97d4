//! The one hash of presenced: the splitmix64 finaliser, a bijection on `u64` with
//! `mix64(0) == 0`. It names the shard that owns a user ([`shard_of`], SPEC.md "Shard-aware
//! routing", which gateways compute too) and, pre-multiplied and seeded, places keys in the
//! daemon's presence table (which also needs the inverse, [`unmix64`]).

const M1: u64 = 0xbf58_476d_1ce4_e5b9;
const M2: u64 = 0x94d0_49bb_1331_11eb;
const M1_INV: u64 = mod_inverse(M1);
const M2_INV: u64 = mod_inverse(M2);

/// Multiplicative inverse of an odd `a` modulo 2^64 (Newton's iteration: 3 → 96 good bits).
pub const fn mod_inverse(a: u64) -> u64 {
    let mut x = a; // a·a ≡ 1 (mod 8) for odd a: 3 good bits.
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The splitmix64 finaliser.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(M1);
    x ^= x >> 27;
    x = x.wrapping_mul(M2);
    x ^ (x >> 31)
}

/// The inverse of [`mix64`]: `unmix64(mix64(x)) == x` for every `x`.
#[inline]
pub const fn unmix64(mut x: u64) -> u64 {
    x ^= (x >> 31) ^ (x >> 62);
    x = x.wrapping_mul(M2_INV);
    x ^= (x >> 27) ^ (x >> 54);
    x = x.wrapping_mul(M1_INV);
    x ^ (x >> 30) ^ (x >> 60)
}

/// The shard that owns `user` among `shard_count` shards:
/// `((mix64(user) as u128 * shard_count as u128) >> 64)` (SPEC.md, "Shard-aware routing").
/// Always below `shard_count`; 0 when `shard_count` is 0.
///
/// ```
/// use presenced_wire::shard_of;
/// assert_eq!(shard_of(1001, 1), 0);
/// assert!(shard_of(1001, 8) < 8);
/// assert_eq!(shard_of(1001, 0), 0);
/// ```
#[inline]
pub const fn shard_of(user: u64, shard_count: u16) -> u16 {
    let wide = (mix64(user) as u128 * shard_count as u128) >> 64;
    // wide < shard_count <= u16::MAX.
    wide as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_a_bijection_with_zero_fixed() {
        assert_eq!(mix64(0), 0);
        let mut x = 0x0123_4567_89ab_cdefu64;
        for _ in 0..100_000 {
            assert_eq!(unmix64(mix64(x)), x);
            assert_eq!(mix64(unmix64(x)), x);
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        for a in [1u64, 3, M1, M2, u64::MAX] {
            assert_eq!(a.wrapping_mul(mod_inverse(a)), 1);
        }
    }
}
