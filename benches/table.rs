//! Criterion benches of the presence table with a 28-byte value (the size of a user record),
//! at 1M and 10M entries in tables sized to hold exactly that many (`capacity = n`).
//!
//! - `insert_empty`: insert n keys into an empty table (mean cost over fills 0 → 100%), which
//!   starts small and grows by quarters on the way, as a shard's does while its users arrive.
//! - `insert_reserved`: the same into a table grown to full size first ([`Table::reserve`], as
//!   a restore does): the ratio of the two is what the growths cost over a fill.
//! - the largest move (printed, not a criterion bench: a move happens once per table): a table
//!   filled to the brink of its growth into full size, then the insert that starts the move
//!   and every `move_step(MOVE_SLOTS_PER_ROUND)` a shard's rounds make until it ends, each
//!   timed: the longest a growth holds up a shard at once.
//! - `get_hit` / `get_miss`: lookups in the full table (present keys / absent keys).
//! - `insert_churn` / `remove_churn`: the table slides a window of n − n/10 .. n live keys:
//!   inserts of fresh keys and removals of the oldest ones, so the fill stays at 90–100%.
//! - `table/slot_bytes_1M`: the shard's lookup pattern (a datagram's 89 keys' control bytes, then
//!   their slots prefetched, then the keys looked up) in full tables of 1M entries (load 9/10)
//!   whose slots are 24, 32, 36 (the daemon's: an 8-byte tag and the 28-byte record), 40 and
//!   48 bytes: what slot sizes cost a shard (issue 13, "Memory and per-core speed"). Times are
//!   per 89-key batch.
//! - `table/max_load_1M`: the same batched lookups, and a removal plus an insert (the churn of
//!   a full shard), in tables of 1M 36-byte slots filled to 875 ‰, 900 ‰ (the default, 9/10)
//!   and 950 ‰ (`presence.table_max_load_permille`): what a denser table costs a shard.
//!
//! Keys are `fmix64(i + 1)` (distinct, nonzero, random-looking), computed inside the timed
//! loops (a few ns, overlapped with the memory access). Times are per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use presenced::memory::{advise, Pages};
use presenced_core::shard::MOVE_SLOTS_PER_ROUND;
use presenced_core::table::{grown, Table};

/// Stand-in for the 28-byte `#[repr(C)]` user record (aligned to 4: a 36-byte slot).
type Record = [u32; 7];

const TABLE_SEED: u64 = 0x5eed_0f9e_5ece_5d00;

/// The i-th bench key: murmur3's fmix64 of `i + 1` (a bijection fixing 0, so never 0).
#[inline]
fn key(i: u64) -> u64 {
    let mut x = i + 1;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn record(i: u64) -> Record {
    let i = i as u32;
    [i, !i, i.rotate_left(17), 1, i, !i, 2]
}

/// An empty table. The daemon advises huge pages for each array the table grows into; here
/// an array grown into keeps the system's default, and a full table is advised once built.
fn table(capacity: u32) -> Table<Record> {
    let t = Table::<Record>::new(capacity, TABLE_SEED);
    advise(t.region(), Pages::Huge);
    t
}

fn fill(t: &mut Table<Record>, range: std::ops::Range<u64>) {
    for i in range {
        t.insert(key(i), record(i)).expect("below capacity");
    }
}

fn report(label: &str, what: &str, t: &Table<Record>) {
    let s = t.probe_stats();
    eprintln!(
        "table {label} {what}: len {} / capacity {} in {} slots (load {:.3}); \
         slot {} B, {} MiB, {:.1} B per entry at capacity; displacement mean {:.3}, \
         p99 {}, max {}, max_probe_seen {}",
        s.len,
        t.capacity(),
        s.slots,
        s.len as f64 / s.slots as f64,
        t.memory_bytes() / t.slots(),
        t.memory_bytes() >> 20,
        t.memory_bytes() as f64 / t.capacity() as f64,
        s.mean,
        s.p99,
        s.max,
        t.max_probe_seen(),
    );
}

/// Times the growth into full size of a table of `capacity`, one step at a time (module docs).
fn largest_move(label: &str, capacity: u32) {
    let mut t = table(capacity);
    let mut i = 0;
    while grown(t.slots()) < t.full_slots() || t.grows_at() != Some(t.len()) {
        t.insert(key(i), record(i)).expect("below capacity");
        i += 1;
    }
    let start = Instant::now();
    t.insert(key(i), record(i)).expect("below capacity");
    let first = start.elapsed();
    assert!(t.moving());
    let mut steps = Vec::new();
    loop {
        let start = Instant::now();
        let done = t.move_step(MOVE_SLOTS_PER_ROUND);
        steps.push(start.elapsed());
        if done {
            break;
        }
    }
    // The last step also frees the old array.
    let last = steps.pop().expect("a step");
    steps.sort_unstable();
    eprintln!(
        "table {label} largest move: {} entries into {} slots; the insert that began it {:.2?}; \
         {} steps of {MOVE_SLOTS_PER_ROUND} slots: median {:.2?}, max {:.2?}, then the last \
         (freeing the old array) {:.2?}; total {:.2?}",
        t.len(),
        t.slots(),
        first,
        steps.len() + 1,
        steps[steps.len() / 2],
        steps[steps.len() - 1],
        last,
        steps.iter().sum::<Duration>() + last,
    );
}

/// Live keys are `key(lo..hi)`; keeps `len` between `n - chunk` and `n`.
struct Window {
    lo: u64,
    hi: u64,
}

fn bench_size(c: &mut Criterion, n: u64, label: &str) {
    let capacity = u32::try_from(n).unwrap();
    let mut group = c.benchmark_group(format!("table/{label}"));

    // Insert n keys into an empty table: one table per iteration, built outside the timing.
    group.throughput(Throughput::Elements(n));
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(if n > 1_000_000 { 12 } else { 3 }));
    group.bench_function("insert_empty", |b| {
        b.iter_batched(
            || table(capacity),
            |mut t| {
                fill(&mut t, 0..n);
                t // dropped outside the timing
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("insert_reserved", |b| {
        b.iter_batched(
            || {
                let mut t = table(capacity);
                t.reserve(n as usize);
                advise(t.region(), Pages::Huge);
                t
            },
            |mut t| {
                fill(&mut t, 0..n);
                t
            },
            BatchSize::PerIteration,
        )
    });

    largest_move(label, capacity);

    let start = Instant::now();
    let mut t = table(capacity);
    fill(&mut t, 0..n);
    advise(t.region(), Pages::Huge);
    eprintln!("table {label}: built in {:.2?}", start.elapsed());
    report(label, "full", &t);

    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Auto);
    group.measurement_time(Duration::from_secs(2));
    lookups(&mut group, &t, n);

    // Churn: start at n - chunk live keys, slide the window by `chunk` keys at a time.
    let chunk = n / 10;
    for i in 0..chunk {
        t.remove(key(i)).expect("present");
    }
    let mut w = Window { lo: chunk, hi: n };
    churn(&mut group, &mut t, &mut w, chunk);
    report(label, "after churn", &t);
    group.finish();
}

fn lookups(group: &mut BenchmarkGroup<'_, WallTime>, t: &Table<Record>, n: u64) {
    let mut i = 0;
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            i = if i + 1 == n { 0 } else { i + 1 };
            black_box(t.get(key(i)).map(|r| r[0]))
        })
    });
    let mut j = n;
    group.bench_function("get_miss", |b| {
        b.iter(|| {
            j += 1;
            black_box(t.get(key(j)).is_some())
        })
    });
}

fn churn(
    group: &mut BenchmarkGroup<'_, WallTime>,
    t: &mut Table<Record>,
    w: &mut Window,
    chunk: u64,
) {
    // Each step: insert `k` fresh keys, remove the `k` oldest; only one half is timed.
    fn run(
        t: &mut Table<Record>,
        w: &mut Window,
        chunk: u64,
        iters: u64,
        time_insert: bool,
    ) -> Duration {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let k = left.min(chunk);
            left -= k;
            let start = Instant::now();
            if time_insert {
                fill(t, w.hi..w.hi + k);
                timed += start.elapsed();
            } else {
                fill(t, w.hi..w.hi + k);
            }
            let start = Instant::now();
            for i in w.lo..w.lo + k {
                black_box(t.remove(key(i)));
            }
            if !time_insert {
                timed += start.elapsed();
            }
            w.lo += k;
            w.hi += k;
        }
        timed
    }
    group.bench_function("insert_churn", |b| {
        b.iter_custom(|iters| run(t, w, chunk, iters, true))
    });
    group.bench_function("remove_churn", |b| {
        b.iter_custom(|iters| run(t, w, chunk, iters, false))
    });
}

/// Keys a heartbeat datagram carries at most.
const DATAGRAM_ENTRIES: u64 = presenced_wire::MAX_ENTRIES as u64;

/// Batched lookups, as a shard makes them, in a full table of `n` entries with values of
/// `$words` 4-byte words (a macro: the table's value bound is `bytemuck::Zeroable`, not a
/// dependency here). A slot is the 8-byte tag and the value, aligned to 4.
macro_rules! slot_bytes {
    ($group:expr, $n:expr, $words:literal) => {{
        let n: u64 = $n;
        let mut t = Table::<[u32; $words]>::new(n as u32, TABLE_SEED);
        t.reserve(n as usize);
        advise(t.region(), Pages::Huge);
        for i in 0..n {
            t.insert(key(i), [i as u32; $words]).expect("room for n");
        }
        let mut at = 0u64;
        $group.bench_function(format!("batch_89_hit/{}B", 8 + 4 * $words), |b| {
            b.iter(|| lookup_batch!(t, n, at))
        });
    }};
}

/// One datagram's lookups in a full table `$t` of keys `0..$n`: its keys' control bytes
/// prefetched, then their slots, then looked up, as `Shard::heartbeats` does; `$at` walks the
/// keys by a stride coprime to `$n`, an order the hardware cannot predict. The sum of the
/// values' first words.
macro_rules! lookup_batch {
    ($t:expr, $n:expr, $at:expr) => {{
        let stride = 7_919 * 7_927;
        let batch: [u64; DATAGRAM_ENTRIES as usize] =
            std::array::from_fn(|k| key(($at + k as u64 * stride) % $n));
        $at = ($at + DATAGRAM_ENTRIES * stride) % $n;
        for &k in &batch {
            $t.prefetch(k);
        }
        for &k in &batch {
            $t.prefetch_entry(k);
        }
        let mut sum = 0;
        for &k in &batch {
            sum += $t.get(k).map_or(0, |v| u64::from(v[0]));
        }
        black_box(sum)
    }};
}

fn slot_sizes(c: &mut Criterion) {
    let n = 1_000_000;
    let mut group = c.benchmark_group("table/slot_bytes_1M");
    group.throughput(Throughput::Elements(DATAGRAM_ENTRIES));
    slot_bytes!(group, n, 4);
    slot_bytes!(group, n, 6);
    slot_bytes!(group, n, 7);
    slot_bytes!(group, n, 8);
    slot_bytes!(group, n, 10);
    group.finish();
}

/// Batched lookups and churn in a full table of `n` 36-byte slots filled to `permille`.
fn max_load(group: &mut BenchmarkGroup<'_, WallTime>, n: u64, permille: u32) {
    let mut t = Table::<Record>::try_with_load(n as u32, TABLE_SEED, 1, permille).unwrap();
    t.reserve(n as usize);
    advise(t.region(), Pages::Huge);
    fill(&mut t, 0..n);
    report(&format!("{permille} permille"), "full", &t);
    let mut at = 0u64;
    group.throughput(Throughput::Elements(DATAGRAM_ENTRIES));
    group.bench_function(format!("batch_89_hit/{permille}"), |b| {
        b.iter(|| lookup_batch!(t, n, at))
    });
    // A window of n live keys sliding by one: the oldest removed, a fresh one inserted.
    t.remove(key(0)).expect("present");
    let (mut lo, mut hi) = (1, n);
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("remove_insert/{permille}"), |b| {
        b.iter(|| {
            t.insert(key(hi), record(hi)).expect("one free");
            t.remove(key(lo)).expect("present");
            hi += 1;
            lo += 1;
        })
    });
}

fn max_loads(c: &mut Criterion) {
    let mut group = c.benchmark_group("table/max_load_1M");
    for permille in [875, 900, 950] {
        max_load(&mut group, 1_000_000, permille);
    }
    group.finish();
}

fn table_benches(c: &mut Criterion) {
    bench_size(c, 1_000_000, "1M");
    bench_size(c, 10_000_000, "10M");
    slot_sizes(c);
    max_loads(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = table_benches
}
criterion_main!(benches);
