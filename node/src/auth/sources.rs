//! Sources that keep failing authentication, dropped early.
//!
//! A forged datagram costs its receiver a MAC (about 1 µs for a full one, `benches/README.md`
//! "Authentication cost"): a flood of them from one address can take a shard's CPU from the
//! valid gateways it serves. Each source address that fails authentication, or sends a
//! datagram that does not decode, gets a token bucket of failures ([`SourceLimits`]: a burst
//! of 100 refilled at 10 a second by default); a failure with the bucket empty blocks the
//! source (10 s by default), during which its datagrams are dropped before they are decoded. A source that fails now and then (a duplicated datagram, a clock
//! step) never empties its bucket; a gateway that never fails never has an entry at all.
//!
//! The table has a fixed capacity (`SourceLimits::entries` per shard, allocated once) in
//! sets of [`WAYS`]: a source lives in the set its address hashes to. An entry whose bucket is
//! full again and that is not blocked is free. When a set has no free entry, the new source
//! takes the place of the least suspect one: the unblocked entry with the fewest recent
//! failures, or, when every entry of the set is blocked, the one whose block ends first. So a
//! spray of spoofed addresses (each failing once) displaces only each other, never a blocked
//! flooder while an unblocked entry is left; and a displaced source only starts again with a
//! full bucket, which never harms a source under its budget.
//!
//! UDP source addresses can be forged: a flooder that forges a gateway's address gets that
//! gateway blocked with it. `ingest.allow` and the network's own filtering of forged sources
//! are the defence there.
//!
//! Time is passed in (monotonic ms); nothing here reads a clock.

use std::net::IpAddr;

/// Entries per set: a lookup reads at most this many.
pub const WAYS: usize = 8;

/// The table's size and each source's budget (`ingest.failing_sources`,
/// `ingest.source_failure_burst`, `ingest.source_failures_per_sec`, `ingest.source_block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// Entries in one shard's table (48 bytes each): a power of two, at least [`WAYS`].
    pub entries: usize,
    /// Failures a source may have in a burst before it is blocked (≥ 1).
    pub failure_burst: u32,
    /// Failures per second a source's bucket regains, up to `failure_burst` (≥ 1).
    pub failures_per_sec: u32,
    /// How long a blocked source's datagrams are dropped unread, ms.
    pub block_ms: u64,
    /// Blocked sources also dropped in the kernel's socket filter, at most
    /// (`ShardNode::poll_kernel_blocks`).
    pub kernel_blocks: usize,
}

impl Default for SourceLimits {
    /// 4096 entries (192 KiB per shard), a burst of 100 failures refilled at 10 a second,
    /// blocks of 10 s, and 64 of them in the kernel.
    fn default() -> Self {
        SourceLimits {
            entries: 4096,
            failure_burst: 100,
            failures_per_sec: 10,
            block_ms: 10_000,
            kernel_blocks: 64,
        }
    }
}

/// A bucket's content is counted in thousandths of a failure, so that refilling by the ms is
/// exact: `failures_per_sec` thousandths a ms.
const MILLI: u64 = 1000;

/// A datagram's source address, IPv4 as its IPv4-mapped IPv6 form (one key space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source(match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        })
    }
}

impl Source {
    /// The address, IPv4 written as IPv4.
    pub fn ip(self) -> IpAddr {
        std::net::Ipv6Addr::from_bits(self.0).to_canonical()
    }

    /// The source's hash, whose low bits pick its set (multiplicative hashing of both
    /// halves).
    fn set(self) -> usize {
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }
}

/// One source's failures. All zero is a free entry.
#[derive(Clone, Copy, Default)]
struct Entry {
    source: u128,
    /// Thousandths of a failure taken from the bucket, as of `at_ms`.
    spent: u64,
    at_ms: u64,
    /// Datagrams are dropped until then (0: not blocked).
    blocked_until_ms: u64,
}

// Read on every failure and every datagram while some source is blocked.
const _: () = assert!(std::mem::size_of::<Entry>() == 48);

impl Entry {
    /// Thousandths of a failure still taken at `now_ms`, refilled at `per_sec`.
    fn spent_at(&self, now_ms: u64, per_sec: u32) -> u64 {
        let refill = now_ms.saturating_sub(self.at_ms) * u64::from(per_sec);
        self.spent.saturating_sub(refill)
    }

    fn blocked(&self, now_ms: u64) -> bool {
        now_ms < self.blocked_until_ms
    }

    /// Neither blocked nor owing failures: as good as free.
    fn free(&self, now_ms: u64, per_sec: u32) -> bool {
        !self.blocked(now_ms) && self.spent_at(now_ms, per_sec) == 0
    }
}

/// One shard's table of sources failing authentication (see the module docs).
pub struct FailingSources {
    limits: SourceLimits,
    entries: Box<[Entry]>,
    /// Sets in the table, less one (a mask).
    sets_mask: usize,
    /// No source is blocked from this time on (a datagram's check is then one comparison).
    blocks_end_ms: u64,
}

impl FailingSources {
    /// An empty table of `limits.entries` entries. Panics unless that is a power of two of at
    /// least [`WAYS`] and the budget is at least one failure a burst and a second (the
    /// settings ensure both).
    pub fn new(limits: SourceLimits) -> FailingSources {
        assert!(limits.entries.is_power_of_two() && limits.entries >= WAYS);
        assert!(limits.failure_burst >= 1 && limits.failures_per_sec >= 1);
        FailingSources {
            limits,
            entries: vec![Entry::default(); limits.entries].into_boxed_slice(),
            sets_mask: limits.entries / WAYS - 1,
            blocks_end_ms: 0,
        }
    }

    /// The limits it was made with.
    pub fn limits(&self) -> SourceLimits {
        self.limits
    }

    /// Whether a datagram from `source` at `now_ms` is to be checked; `false`: the source is
    /// blocked, drop the datagram unread.
    pub fn admits(&self, source: Source, now_ms: u64) -> bool {
        if now_ms >= self.blocks_end_ms {
            return true;
        }
        !self
            .set(source)
            .iter()
            .any(|e| e.source == source.0 && e.blocked(now_ms))
    }

    /// A datagram from `source` failed authentication at `now_ms`; returns whether this
    /// failure blocked the source.
    pub fn handle_failure(&mut self, source: Source, now_ms: u64) -> bool {
        let SourceLimits {
            failure_burst,
            failures_per_sec,
            block_ms,
            ..
        } = self.limits;
        let set = (source.set() & self.sets_mask) * WAYS;
        let ways = &mut self.entries[set..set + WAYS];
        let at = ways
            .iter()
            .position(|e| e.source == source.0)
            .unwrap_or_else(|| Self::victim(ways, now_ms, failures_per_sec));
        let entry = &mut ways[at];
        if entry.source != source.0 || entry.free(now_ms, failures_per_sec) {
            *entry = Entry {
                source: source.0,
                ..Entry::default()
            };
        }
        if entry.blocked(now_ms) {
            // Its datagrams are dropped unread ([`FailingSources::admits`]): nothing to count.
            return false;
        }
        let spent = entry.spent_at(now_ms, failures_per_sec) + MILLI;
        entry.at_ms = now_ms;
        if spent > u64::from(failure_burst) * MILLI {
            // The bucket was empty: blocked, with a full bucket when the block ends.
            entry.spent = 0;
            entry.blocked_until_ms = now_ms + block_ms;
            self.blocks_end_ms = self.blocks_end_ms.max(now_ms + block_ms);
            return true;
        }
        entry.spent = spent;
        false
    }

    /// The entry a new source takes in a set without its own: a free one, else the least
    /// suspect (module docs).
    fn victim(ways: &[Entry], now_ms: u64, per_sec: u32) -> usize {
        let suspicion = |e: &Entry| {
            if e.blocked(now_ms) {
                (1, e.blocked_until_ms)
            } else {
                (0, e.spent_at(now_ms, per_sec))
            }
        };
        (0..ways.len())
            .min_by_key(|&i| suspicion(&ways[i]))
            .unwrap_or(0)
    }

    fn set(&self, source: Source) -> &[Entry] {
        let set = (source.set() & self.sets_mask) * WAYS;
        &self.entries[set..set + WAYS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The budget these tests are written for (the defaults).
    const FAILURE_BURST: u32 = 100;
    const FAILURES_REFILL_PER_SEC: u32 = 10;
    const BLOCK_MS: u64 = 10_000;
    const ENTRIES: usize = 4096;

    fn table() -> FailingSources {
        let limits = SourceLimits {
            entries: ENTRIES,
            failure_burst: FAILURE_BURST,
            failures_per_sec: FAILURES_REFILL_PER_SEC,
            block_ms: BLOCK_MS,
            kernel_blocks: 64,
        };
        assert_eq!(limits, SourceLimits::default());
        FailingSources::new(limits)
    }

    /// The set `source` lives in, in a table of `ENTRIES`.
    fn set_of(source: Source) -> usize {
        source.set() & (ENTRIES / WAYS - 1)
    }

    fn ip(text: &str) -> Source {
        Source::from(text.parse::<IpAddr>().unwrap())
    }

    /// Fails `n` times at `now_ms`; how many of those blocked the source.
    fn fail(t: &mut FailingSources, source: Source, now_ms: u64, n: u32) -> u32 {
        (0..n)
            .map(|_| u32::from(t.handle_failure(source, now_ms)))
            .sum()
    }

    #[test]
    fn blocks_a_source_past_its_burst_for_a_while() {
        let mut t = table();
        let flooder = ip("192.0.2.7");
        let gateway = ip("198.51.100.1");
        assert_eq!(fail(&mut t, flooder, 1000, FAILURE_BURST), 0);
        assert!(t.admits(flooder, 1000));
        assert!(
            t.handle_failure(flooder, 1000),
            "one failure past the burst"
        );
        assert!(!t.admits(flooder, 1000));
        assert!(!t.admits(flooder, 1000 + BLOCK_MS - 1));
        assert!(t.admits(gateway, 1000), "other sources are not touched");
        assert!(t.admits(flooder, 1000 + BLOCK_MS));
        // A full bucket again once the block ends.
        assert_eq!(fail(&mut t, flooder, 1000 + BLOCK_MS, FAILURE_BURST), 0);
        assert!(t.handle_failure(flooder, 1000 + BLOCK_MS));
    }

    #[test]
    fn the_limits_are_the_tables_own() {
        let mut t = FailingSources::new(SourceLimits {
            entries: WAYS,
            failure_burst: 3,
            failures_per_sec: 1,
            block_ms: 500,
            kernel_blocks: 0,
        });
        let source = ip("192.0.2.9");
        assert_eq!(fail(&mut t, source, 0, 3), 0);
        assert!(t.handle_failure(source, 0));
        // One set of WAYS entries: as many new sources take the others, never the blocked one.
        for i in 0..WAYS as u32 {
            t.handle_failure(Source::from(IpAddr::from((i + 1).to_be_bytes())), 1);
        }
        assert!(!t.admits(source, 499));
        assert!(t.admits(source, 500));
    }

    #[test]
    fn the_bucket_refills() {
        let mut t = table();
        let source = ip("2001:db8::5");
        assert_eq!(fail(&mut t, source, 0, FAILURE_BURST), 0);
        // One failure's worth comes back every 1000 / FAILURES_REFILL_PER_SEC ms.
        let every_ms = 1000 / u64::from(FAILURES_REFILL_PER_SEC);
        for i in 1..=1000 {
            assert!(!t.handle_failure(source, i * every_ms), "failure {i}");
        }
        assert!(t.handle_failure(source, 1000 * every_ms));
    }

    #[test]
    fn ipv4_and_its_mapped_form_are_one_source() {
        assert_eq!(ip("10.1.2.3"), ip("::ffff:10.1.2.3"));
        assert_eq!(
            ip("::ffff:10.1.2.3").ip(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_ne!(ip("10.1.2.3"), ip("::a01:203"));
    }

    #[test]
    fn a_full_set_gives_up_its_least_suspect_entry() {
        let mut t = table();
        // WAYS + 2 sources of one set.
        let set = set_of(ip("192.0.2.1"));
        let same: Vec<Source> = (0..u32::MAX)
            .map(|i| Source::from(IpAddr::from(i.to_be_bytes())))
            .filter(|&s| set_of(s) == set)
            .take(WAYS + 2)
            .collect();
        // Every entry of the set blocked but the last, which failed once.
        for (i, &s) in same[..WAYS - 1].iter().enumerate() {
            assert_eq!(fail(&mut t, s, i as u64, FAILURE_BURST + 1), 1);
        }
        t.handle_failure(same[WAYS - 1], 0);
        // The newcomer takes the unblocked entry; every blocked source stays blocked.
        t.handle_failure(same[WAYS], 10);
        assert!(same[..WAYS - 1].iter().all(|&s| !t.admits(s, 10)));
        // With every entry blocked, the block that ends first gives way.
        assert_eq!(fail(&mut t, same[WAYS], 10, FAILURE_BURST), 1);
        t.handle_failure(same[WAYS + 1], 20);
        assert!(t.admits(same[0], 20), "the earliest block was displaced");
        let still_blocked = same[1..WAYS - 1].iter().chain([&same[WAYS]]);
        assert!(still_blocked.into_iter().all(|&s| !t.admits(s, 20)));
    }

    /// Failure times (ms) that a token bucket of `burst` failures refilled at
    /// `FAILURES_REFILL_PER_SEC` admits, from arbitrary gaps; computed in floating point, apart
    /// from the table's integer arithmetic.
    fn under_budget(gaps_ms: &[u64], burst: f64) -> Vec<u64> {
        let (mut tokens, mut now, mut last) = (burst, 0u64, 0u64);
        let mut kept = Vec::new();
        for &gap in gaps_ms {
            now += gap;
            tokens = (tokens + (now - last) as f64 * f64::from(FAILURES_REFILL_PER_SEC) / 1000.0)
                .min(burst);
            last = now;
            if tokens >= 1.0 {
                tokens -= 1.0;
                kept.push(now);
            }
        }
        kept
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A source whose failures stay within the budget is never blocked, whatever other
        /// sources do to the table meanwhile (here: many flooders of the same set and others,
        /// filling and churning it).
        #[test]
        fn a_source_under_budget_is_never_dropped(
            gaps in proptest::collection::vec(0u64..250, 1..1000),
            flood in proptest::collection::vec((0u32..5000, 1u32..150), 0..50),
        ) {
            let mut t = table();
            let honest = ip("198.51.100.1");
            // One failure's margin for the float reference's rounding.
            let times = under_budget(&gaps, f64::from(FAILURE_BURST) - 1.0);
            let mut flood = flood.into_iter().cycle();
            for &now in &times {
                prop_assert!(t.admits(honest, now));
                prop_assert!(!t.handle_failure(honest, now), "blocked at {} ms", now);
                if let Some((address, n)) = flood.next() {
                    let flooder = Source::from(IpAddr::from(address.to_be_bytes()));
                    if t.admits(flooder, now) {
                        fail(&mut t, flooder, now, n);
                    }
                }
            }
        }
    }
}
