//! The open-addressed presence table: `u64` key → `V: Copy`, up to a fixed capacity.
//!
//! A table of capacity `c` ends at `ceil(c × 10 / 9)` slots, so the load factor never exceeds
//! 9/10 (or `ceil(c / load)` for another maximum load, [`Table::try_with_load`]). It starts far
//! smaller ([`INITIAL_SLOTS`]) and grows by a quarter ([`grown`]) when an insert would take it
//! past that load of the slots it has: its memory follows the entries present
//! (a table written at random is all resident once each page holds a few entries, so a sparse
//! full-size table would cost its whole size for a few thousand users). Growing by a quarter
//! rather than doubling keeps the load between 18/25 and 9/10 (36-byte slots and their control
//! bytes: 41.1 to 51.4 bytes an entry; doubling let it fall to 9/20, 82.2 bytes) for about
//! four times the moves over a fill.
//! The full-size array is reserved at construction, untouched until the table grows into it,
//! so a capacity the machine cannot hold is refused at once and the last growth cannot fail;
//! it never shrinks. Every array is shown to the owner's page advice ([`Table::set_advice`])
//! before its first entry is written, so the daemon's huge pages apply from the first fault.
//!
//! A growth never stalls its caller for a pass over every entry: the entries move from the
//! old array to the new one a few clusters at a time ([`MOVE_SLOTS_PER_INSERT`] old slots per
//! insert of a new key, and [`Table::move_step`] from the owner's rounds), long before the new
//! array can need to grow. Meanwhile a key lives in exactly one of the two (see [`Old`]), a
//! lookup of a key whose old home has not moved yet probes the old array first, and new keys go
//! to the new one. [`Table::reserve`] grows for a known number of inserts (a restore) at once.
//!
//! A key is mapped to its home slot with *fastrange* (`(h × slots) >> 64`), so the slot count
//! need not be a power of two.
//! Collisions are resolved with Robin Hood linear probing (an insert takes the slot of the
//! first entry that sits closer to its own home than the new key would) and removals use
//! backward-shift deletion, so there are no tombstones. Probing wraps at the end of the array.
//!
//! A slot stores a *tag* instead of the key: `tag = mix(key ^ seed) ^ mix(seed)`, where `mix`
//! is the splitmix64 finaliser, a bijection on `u64`. The key is recovered by inverting `mix`
//! (only [`Table::iter`] needs it), so a slot is `8 + size_of::<V>()` bytes and probing never
//! re-hashes a stored key: the home of any slot is one multiplication away. Key 0 maps to
//! tag 0, which marks an empty slot; key 0 is therefore reserved and every public method
//! asserts it is not passed.
//!
//! Beside each array of slots lies a byte per slot (SwissTable's control bytes): 0 for an empty
//! slot, otherwise 7 bits of its tag. A lookup scans those bytes from the home and reads a slot
//! only where its byte matches, so a batch of lookups ([`Table::prefetch`], then
//! [`Table::prefetch_entry`], then the lookups) loads each key's control bytes, then exactly the
//! line or two of its slot: probing the slots themselves walked a run of ~3.5 slots (~130
//! bytes) that a prefetch of three lines often missed the end of, and a lookup that misses
//! waits on memory. Robin Hood's order and the placement of inserts still read the tags.
//!
//! The seed spreads sequential user ids; it is not a keyed PRF, so it does not make the table
//! proof against an adversary who can choose keys *and* learn the seed.

use crate::cache::{prefetch, prefetch_at};
use crate::slab::{OutOfMemory, Region};
use bytemuck::Zeroable;
use presenced_wire::hash::{mix64 as mix, mod_inverse, unmix64 as unmix};
use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The key could not be added: it is absent and the table already holds `capacity` entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("presence table is full")
    }
}

impl std::error::Error for Full {}

/// The top 32 bits of keys' tags, the handle a near timer keeps (`crate::near`), computed
/// without holding the table ([`Table::prefixer`]).
#[derive(Clone, Copy, Debug)]
pub struct Prefixer {
    seed: u64,
    salt: u64,
}

impl Prefixer {
    /// The top 32 bits of `key`'s tag. Panics if `key == 0`.
    #[inline]
    pub fn prefix(self, key: u64) -> u32 {
        (tag_of(key, self.seed, self.salt) >> 32) as u32
    }
}

/// Displacement statistics of the present entries, computed by a full scan (for reporting).
///
/// An entry's displacement is its distance, in slots, from its home slot (0 = at home); a
/// lookup of a present key inspects `displacement + 1` slots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeStats {
    /// Entries present.
    pub len: usize,
    /// Slots in the table.
    pub slots: usize,
    /// Largest displacement of any present entry (0 when empty).
    pub max: usize,
    /// Mean displacement of the present entries (0.0 when empty).
    pub mean: f64,
    /// 99th percentile of the displacements (0 when empty).
    pub p99: usize,
}

#[derive(Clone, Copy)]
struct Slot<V> {
    /// `0` = empty; otherwise the tag of the key stored here (see the module docs).
    tag: Tag,
    /// Meaningless (a stale or zero value) when the slot is empty.
    value: V,
}

// SAFETY: a slot is a `Tag` (two `u32`s) and a `V`, and all-zero bytes are a valid `V`
// (`V: Zeroable`).
unsafe impl<V: Zeroable> Zeroable for Slot<V> {}

/// A slot's `u64` tag kept as two `u32` halves, so that a slot is only as aligned as its value
/// needs: a 28-byte value makes a 36-byte slot, not a 40-byte one (an `u64` would align it to
/// 8). Loads and stores compile to one 8-byte access.
#[derive(Clone, Copy)]
#[repr(C)]
struct Tag([u32; 2]);

const _: () = assert!(std::mem::align_of::<Tag>() == 4 && std::mem::size_of::<Tag>() == 8);

impl Tag {
    #[inline(always)]
    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }

    #[inline(always)]
    fn new(tag: u64) -> Tag {
        Tag([tag as u32, (tag >> 32) as u32])
    }
}

/// One array of slots and, after them in the same allocation, a control byte per slot: 0 when
/// the slot is empty, otherwise its tag's [`control_of`]. A lookup scans the control bytes (64
/// to a cache line, 1/36 of the slots' bytes, so a shard's are mostly in cache) and reads only
/// the slot whose byte matches: a batch of lookups then knows, before reading any slot, the
/// one line or two that each needs ([`Table::prefetch_entry`]), where probing the slots
/// themselves walks a run of ~3.5 slots, often onto a line no prefetch covered.
///
/// One allocation, not two: the allocator serves an array of control bytes (1/36 of its
/// slots' size) from its heap, where the arrays a growing table frees leave holes that stay
/// resident (2 MB at 1M users, measured), while the slots' arrays are mapped and unmapped
/// whole.
struct Array<V> {
    /// `len` slots, then `len` control bytes; allocated zeroed with [`Array::layout`].
    start: NonNull<Slot<V>>,
    len: usize,
    owns: PhantomData<Slot<V>>,
}

// SAFETY: an `Array` owns its allocation, as a `Box<[Slot<V>]>` would.
unsafe impl<V: Send> Send for Array<V> {}
// SAFETY: shared access only reads, as through a `&[Slot<V>]`.
unsafe impl<V: Sync> Sync for Array<V> {}

impl<V: Copy + Zeroable> Array<V> {
    /// `len` empty slots (at least one), zeroed by the allocator: a page costs memory once an
    /// entry lands in it.
    fn zeroed(len: usize) -> Result<Array<V>, OutOfMemory> {
        let len = len.max(1);
        let layout = Array::<V>::layout(len).ok_or(OutOfMemory { bytes: usize::MAX })?;
        // SAFETY: the layout's size is not zero (one slot at least). All-zero bytes are empty
        // slots (`V: Zeroable`) and zero control bytes.
        let start = unsafe { std::alloc::alloc_zeroed(layout) };
        let start = NonNull::new(start.cast::<Slot<V>>()).ok_or(OutOfMemory {
            bytes: layout.size(),
        })?;
        Ok(Array {
            start,
            len,
            owns: PhantomData,
        })
    }
}

impl<V> Array<V> {
    /// `len` slots then `len` bytes; `None` past the address space.
    fn layout(len: usize) -> Option<Layout> {
        let (layout, control_at) = Layout::array::<Slot<V>>(len)
            .ok()?
            .extend(Layout::array::<u8>(len).ok()?)
            .ok()?;
        debug_assert_eq!(control_at, len * std::mem::size_of::<Slot<V>>());
        Some(layout)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn slots(&self) -> &[Slot<V>] {
        // SAFETY: the allocation begins with `len` initialised slots (see `zeroed`).
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    #[inline(always)]
    fn slots_mut(&mut self) -> &mut [Slot<V>] {
        // SAFETY: as in `slots`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }

    #[inline(always)]
    fn control(&self) -> &[u8] {
        // SAFETY: the `len` control bytes follow the slots in the allocation (`layout`), all
        // initialised (zeroed, then written as bytes), and no slot reference covers them.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr().add(self.len).cast(), self.len) }
    }

    #[inline(always)]
    fn control_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `control`, borrowed mutably through `self`.
        unsafe {
            std::slice::from_raw_parts_mut(self.start.as_ptr().add(self.len).cast(), self.len)
        }
    }

    /// The memory the array occupies: its slots and its control bytes.
    fn region(&self) -> Region {
        Region {
            start: self.start.as_ptr() as usize,
            len_bytes: self.bytes(),
        }
    }

    fn bytes(&self) -> usize {
        self.len * (std::mem::size_of::<Slot<V>>() + 1)
    }
}

impl<V> Drop for Array<V> {
    fn drop(&mut self) {
        let layout = Array::<V>::layout(self.len).expect("the layout it was allocated with");
        // SAFETY: allocated in `zeroed` with this layout. The slots are not dropped: a table
        // holds `Copy` values only.
        unsafe { std::alloc::dealloc(self.start.as_ptr().cast(), layout) };
    }
}

impl<V: Copy> Array<V> {
    /// The tag at `index` (0: empty).
    #[inline(always)]
    fn tag(&self, index: usize) -> u64 {
        self.slots()[index].tag.get()
    }

    /// Stores `slot` at `index`, and its control byte.
    #[inline]
    fn put(&mut self, index: usize, slot: Slot<V>) {
        self.control_mut()[index] = control_of(slot.tag.get());
        self.slots_mut()[index] = slot;
    }

    /// Empties the slot at `index`.
    #[inline]
    fn clear(&mut self, index: usize) {
        self.control_mut()[index] = 0;
        self.slots_mut()[index].tag = Tag::new(0);
    }
}

/// A full slot's control byte: the tag's low 7 bits with the top bit set, so never 0 (empty).
/// The home is the tag's high bits (fastrange), so the entries of one run differ here as much
/// as anywhere: a scan reads a slot whose tag is not the one sought once in 128 full slots.
#[inline(always)]
fn control_of(tag: u64) -> u8 {
    (tag as u8 & 0x7f) | 0x80
}

/// Where a probe for a tag ended.
enum Probe {
    /// The tag is stored at this index.
    Found(usize),
    /// The tag is absent; it belongs at `index`, `dist` slots from its home. The slot there
    /// is empty or holds an entry closer to its own home (which an insert shifts right).
    Vacant { index: usize, dist: usize },
}

/// Multiplied in before `mix` so the table's hash is unrelated to the shard-owner function
/// (plain `mix64` of the user id) for every seed: otherwise one shard's users, which share a
/// range of `mix64(user)`, would crowd into a fraction of its slots.
const PRE: u64 = 0x9e37_79b9_7f4a_7c15;
const PRE_INV: u64 = mod_inverse(PRE);

/// Starts loading the slots a probe of the slots from `home` reads (an insert's, a prefix's):
/// ~4.5 slots past home on average at 9/10 (~160 bytes), so the home slot's line and the two
/// after it.
#[inline(always)]
fn prefetch_run<V>(slots: &[Slot<V>], home: usize) {
    // Past the array's end a run wraps to its start, unprefetched: rarely, and no harm.
    for step in [0, 2, 4] {
        if let Some(slot) = slots.get(home + step) {
            prefetch(slot);
        }
    }
}

/// Starts loading the line or two holding `slot`.
#[inline(always)]
fn prefetch_slot<V>(slot: &Slot<V>) {
    let first = std::ptr::from_ref(slot).cast::<u8>();
    prefetch_at(first);
    prefetch_at(first.wrapping_add(std::mem::size_of::<Slot<V>>() - 1));
}

/// The most a table's slots are filled by default, in thousandths (9/10).
pub const DEFAULT_MAX_LOAD_PERMILLE: u32 = 900;
/// The loads a table may be given ([`Table::try_with_load`]): at most 95 % full, so a probe
/// always ends at an empty slot; at least half, so a growth's move ends before the next one.
pub const MAX_LOAD_PERMILLE: std::ops::RangeInclusive<u32> = 500..=950;

/// Slots a table starts with (148 KiB of 36-byte slots and their control bytes), or all of them
/// when it has fewer.
pub const INITIAL_SLOTS: usize = 4096;

/// Old slots moved into the new array per insert of a new key while the table grows: the move
/// ends after at most `old slots / 16` such inserts, when the new array (at least 5/4 of the
/// old one's slots, see [`grown`]) is at most 4/5 of its load + 1/20 full (18/25 + 1/20 at 9/10,
/// and below the load for any load of 1/2 or more), so it never has to grow before
/// the move is done.
pub const MOVE_SLOTS_PER_INSERT: usize = 16;

/// A growing table's next size: a quarter more slots (at least one more), before the cap at
/// full size.
pub fn grown(slots: usize) -> usize {
    slots.saturating_add((slots / 4).max(1))
}

/// An open-addressed hash map from nonzero `u64` keys to `V`, up to a fixed capacity, that
/// grows into its memory (see module docs).
pub struct Table<V> {
    /// The slots in use: the initial count grown by quarters ([`grown`]), or the full size.
    array: Array<V>,
    /// The array the table is growing out of, while its entries move into `array`.
    old: Option<Old<V>>,
    /// The full-size array, reserved at construction and untouched (no memory) until the
    /// table grows into it; `None` once it has.
    reserve: Option<Array<V>>,
    /// Slots at full size: `ceil(capacity / load)`, at least 1.
    full_slots: usize,
    /// The most of its slots an array is filled, thousandths.
    load: usize,
    /// An insert that finds this many entries grows the table first (`usize::MAX` at full size).
    grow_at: usize,
    len: usize,
    capacity: usize,
    seed: u64,
    /// `mix(seed)`: xored into every tag so that key 0 ↔ tag 0.
    salt: u64,
    max_probe_seen: usize,
    /// A pass over every entry in progress, if any (see [`Table::sweep_begin`]).
    sweep: Option<Sweep>,
    /// The owner's page advice for each array before its first entry is written, if any.
    advice: Option<fn(Region)>,
}

/// The array a growing table moves out of. Its slots are emptied in cyclic order from `start`
/// (a slot that was empty, so no cluster spans it) a whole cluster at a time: the `moved` slots
/// from `start` on are empty, and the next one is empty or begins a cluster. A cluster holds
/// the homes of its entries, so a key is still here exactly when its home here has not moved,
/// and is never in both arrays. Nothing is inserted here, and a removal's backward shift stays
/// inside its cluster, so the slots that are empty stay empty.
struct Old<V> {
    array: Array<V>,
    start: usize,
    moved: usize,
}

impl<V> Old<V> {
    /// Whether the entries whose home here is `home` have moved to the new array.
    #[inline]
    fn moved_home(&self, home: usize) -> bool {
        let n = self.array.len();
        (home + n - self.start) % n < self.moved
    }
}

/// Where a tag is, or would go.
enum Where {
    /// In the old array of a growing table, at this index.
    Old(usize),
    /// In the slots in use, as probed there.
    New(Probe),
}

/// A pass over every entry that inserts and removals may interleave with. Slots below
/// `cursor` have been visited. A shift can carry an entry from an unvisited slot into a
/// visited one in only two ways: a removal's backward shift pulls the entry at `cursor` to
/// `cursor − 1`, and an insert's forward shift that wraps carries the last slot's entry to slot
/// 0. Those entries are remembered in `late` and visited at the end (an entry carried the other
/// way is visited twice, which a reader takes as the newer copy winning).
#[derive(Clone, Debug)]
struct Sweep {
    cursor: usize,
    late: Vec<u64>,
}

impl<V: Copy + Zeroable> Table<V> {
    /// An empty table that will hold up to `capacity` entries, with hash seed `seed`.
    ///
    /// Starts with [`INITIAL_SLOTS`] slots and reserves the full `ceil(capacity × 8 / 7)`
    /// (at least one) now, zeroed by the allocator ([`crate::slab::zeroed`]): a page costs
    /// memory once an entry lands in it.
    ///
    /// # Panics
    /// When the machine refuses the address space; [`Table::try_new`] returns the error.
    pub fn new(capacity: u32, seed: u64) -> Table<V> {
        Table::try_new(capacity, seed).expect("address space for the table")
    }

    /// [`Table::new`], or the error when the machine refuses the address space.
    pub fn try_new(capacity: u32, seed: u64) -> Result<Table<V>, OutOfMemory> {
        Table::try_starting_with(capacity, seed, INITIAL_SLOTS)
    }

    /// [`Table::try_new`] starting with `initial_slots` slots (at least one) instead of
    /// [`INITIAL_SLOTS`] (tests start small, so that tables grow).
    pub fn try_starting_with(
        capacity: u32,
        seed: u64,
        initial_slots: usize,
    ) -> Result<Table<V>, OutOfMemory> {
        Table::try_with_load(capacity, seed, initial_slots, DEFAULT_MAX_LOAD_PERMILLE)
    }

    /// [`Table::try_starting_with`] filling at most `max_load_permille` thousandths of its
    /// slots (in [`MAX_LOAD_PERMILLE`]) instead of 9/10: fewer bytes an entry for longer probes
    /// (benches/README.md, "Memory and per-core speed").
    ///
    /// # Panics
    /// When `max_load_permille` is outside [`MAX_LOAD_PERMILLE`].
    pub fn try_with_load(
        capacity: u32,
        seed: u64,
        initial_slots: usize,
        max_load_permille: u32,
    ) -> Result<Table<V>, OutOfMemory> {
        assert!(
            MAX_LOAD_PERMILLE.contains(&max_load_permille),
            "load {max_load_permille}‰ outside {MAX_LOAD_PERMILLE:?}"
        );
        let load = max_load_permille as usize;
        let full = (u64::from(capacity) * 1000)
            .div_ceil(u64::from(max_load_permille))
            .max(1);
        let full = usize::try_from(full).map_err(|_| OutOfMemory { bytes: usize::MAX })?;
        let reserve = Array::zeroed(full)?;
        let initial = initial_slots.max(1);
        let (array, reserve) = if initial >= full {
            (reserve, None)
        } else {
            (Array::zeroed(initial)?, Some(reserve))
        };
        Ok(Table {
            grow_at: grow_at(array.len(), full, load),
            load,
            array,
            old: None,
            reserve,
            full_slots: full,
            len: 0,
            capacity: capacity as usize,
            seed,
            salt: mix(seed),
            max_probe_seen: 0,
            sweep: None,
            advice: None,
        })
    }
}

impl<V: Copy + Zeroable> Table<V> {
    /// The value stored under `key`, if any. Panics if `key == 0`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<&V> {
        match self.find(self.tag(key)) {
            Where::Old(i) => self.old.as_ref().map(|old| &old.array.slots()[i].value),
            Where::New(Probe::Found(i)) => Some(&self.array.slots()[i].value),
            Where::New(Probe::Vacant { .. }) => None,
        }
    }

    /// Starts loading the control bytes where a probe for `key` begins, so that a later
    /// [`Table::prefetch_entry`] of it finds them in cache. Callers touch a whole batch of keys
    /// first, letting the memory accesses overlap. Panics if `key == 0`.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        let tag = self.tag(key);
        let array = self.probed(tag);
        prefetch_at(&array.control()[home_of(tag, array.len())]);
    }

    /// Starts loading the slot holding `key`, found by its control bytes (so after
    /// [`Table::prefetch`] of it has had time to bring them in), or, when no control byte
    /// matches, the slots an insert of it probes. A shard calls it for a whole batch of keys
    /// between the two: each then has its slot in cache when it is looked up. Panics if
    /// `key == 0`.
    #[inline]
    pub fn prefetch_entry(&self, key: u64) {
        let tag = self.tag(key);
        let array = self.probed(tag);
        let home = home_of(tag, array.len());
        match candidate(array, tag, home) {
            Some(index) => prefetch_slot(&array.slots()[index]),
            None => prefetch_run(array.slots(), home),
        }
    }

    /// The array a lookup of `tag` probes first: the old one while its home there has not
    /// moved, otherwise the one in use.
    #[inline]
    fn probed(&self, tag: u64) -> &Array<V> {
        match &self.old {
            Some(old) if !old.moved_home(home_of(tag, old.array.len())) => &old.array,
            _ => &self.array,
        }
    }

    /// What computes the prefixes [`Table::visit_prefix`] takes.
    pub fn prefixer(&self) -> Prefixer {
        Prefixer {
            seed: self.seed,
            salt: self.salt,
        }
    }

    /// Calls `visit` with the key and value of every entry whose tag begins with `prefix`
    /// ([`Prefixer::prefix`]), until it returns `false`: a user's prefix finds it and the few
    /// others, if any, that share it. Probes as a lookup does (a run of slots from the
    /// prefix's home), in both arrays while the table grows. `visit` may change the values,
    /// not which keys are present.
    pub fn visit_prefix(&mut self, prefix: u32, mut visit: impl FnMut(u64, &mut V) -> bool) {
        let (seed, salt) = (self.seed, self.salt);
        let mut visit = |tag: u64, value: &mut V| visit(key_of(tag, seed, salt), value);
        if let Some(old) = &mut self.old {
            if !visit_prefix_in(old.array.slots_mut(), prefix, &mut visit) {
                return;
            }
        }
        visit_prefix_in(self.array.slots_mut(), prefix, &mut visit);
    }

    /// Starts loading the slots [`Table::visit_prefix`] reads first: the line of the prefix's
    /// home slot and the two after it.
    #[inline]
    pub fn prefetch_prefix(&self, prefix: u32) {
        let array = match &self.old {
            Some(old) if !old.moved_home(prefix_home(prefix, old.array.len())) => &old.array,
            _ => &self.array,
        };
        prefetch_run(array.slots(), prefix_home(prefix, array.len()));
    }

    /// The value stored under `key`, mutably, if any. Panics if `key == 0`.
    #[inline]
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        match self.find(self.tag(key)) {
            Where::Old(i) => self
                .old
                .as_mut()
                .map(|old| &mut old.array.slots_mut()[i].value),
            Where::New(Probe::Found(i)) => Some(&mut self.array.slots_mut()[i].value),
            Where::New(Probe::Vacant { .. }) => None,
        }
    }

    /// Stores `value` under `key`, returning the value it replaces, if any.
    ///
    /// `Err(Full)` (table unchanged) only when `key` is absent and `len() == capacity()`.
    /// Panics if `key == 0`.
    #[inline]
    pub fn insert(&mut self, key: u64, value: V) -> Result<Option<V>, Full> {
        match self.get_or_insert_with(key, || value)? {
            (_, true) => Ok(None),
            (slot, false) => Ok(Some(std::mem::replace(slot, value))),
        }
    }

    /// The value under `key`, inserting `make()` first if it is absent; the flag is `true`
    /// when it was inserted.
    ///
    /// `Err(Full)` (table unchanged, `make` not called) only when `key` is absent and
    /// `len() == capacity()`. Panics if `key == 0`.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce() -> V,
    ) -> Result<(&mut V, bool), Full> {
        let tag = self.tag(key);
        match self.find(tag) {
            Where::Old(i) => match self.old.as_mut() {
                Some(old) => Ok((&mut old.array.slots_mut()[i].value, false)),
                None => unreachable!("found in the old array"),
            },
            Where::New(Probe::Found(i)) => Ok((&mut self.array.slots_mut()[i].value, false)),
            Where::New(Probe::Vacant { index, dist }) => {
                if self.len == self.capacity {
                    return Err(Full);
                }
                let (index, dist) = self.room_for(tag, index, dist);
                let value = make();
                self.place(index, dist, tag, value);
                self.len += 1;
                // `place` shifts the entries after `index`, never the new one.
                Ok((&mut self.array.slots_mut()[index].value, true))
            }
        }
    }

    /// Removes `key`, returning its value if it was present. Panics if `key == 0`.
    #[inline]
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let (seed, salt) = (self.seed, self.salt);
        let value = match self.find(self.tag(key)) {
            Where::New(Probe::Vacant { .. }) => return None,
            Where::New(Probe::Found(hole)) => {
                let value = self.array.slots()[hole].value;
                shift_back(&mut self.array, hole, self.sweep.as_mut(), seed, salt);
                value
            }
            Where::Old(hole) => {
                let old = self.old.as_mut()?;
                let value = old.array.slots()[hole].value;
                // No pass runs over the old array (a pass waits for the move to end).
                shift_back(&mut old.array, hole, None, seed, salt);
                value
            }
        };
        self.len -= 1;
        Some(value)
    }

    /// Entries present.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is present.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries the table holds (the `capacity` given to [`Table::new`]).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots in use now: [`INITIAL_SLOTS`] grown by quarters as the table grew, at most
    /// [`Table::full_slots`] (while a growth's move goes on, the new array's).
    #[inline]
    pub fn slots(&self) -> usize {
        self.array.len()
    }

    /// Slots at full size: `ceil(capacity / load)` (`ceil(capacity × 8 / 7)` at the default),
    /// at least 1.
    pub fn full_slots(&self) -> usize {
        self.full_slots
    }

    /// Bytes of the slots in use and their control bytes (`slots() × (9 + size_of::<V>())`,
    /// padding included), and of the old array while a growth's move goes on; the reserved
    /// full-size array costs none until the table grows into it.
    pub fn memory_bytes(&self) -> usize {
        self.array.bytes() + self.old.as_ref().map_or(0, |old| old.array.bytes())
    }

    /// The entry count at which the next insert of a new key grows the table; `None` at full
    /// size.
    pub fn grows_at(&self) -> Option<usize> {
        (self.grow_at != usize::MAX).then_some(self.grow_at)
    }

    /// Whether a growth's move is going on.
    pub fn moving(&self) -> bool {
        self.old.is_some()
    }

    /// Grows the table now, if need be, so that `additional` more entries fit without a
    /// growth on the way, and moves every entry at once (one pass for a known number of
    /// inserts, as a restore makes).
    pub fn reserve(&mut self, additional: usize) {
        let entries = self.len.saturating_add(additional);
        if entries > self.grow_at {
            self.grow_to_hold(entries);
        }
        self.move_step(usize::MAX);
    }

    /// Moves the entries of at least `max_slots` more old slots (whole clusters) into the new
    /// array, if a growth's move is going on; `true` once none is. The table's owner calls
    /// it from its rounds, so that a move ends even when no new key arrives.
    pub fn move_step(&mut self, max_slots: usize) -> bool {
        let Table {
            array,
            old: old_slot,
            sweep,
            max_probe_seen,
            seed,
            salt,
            ..
        } = self;
        let Some(old) = old_slot else {
            return true;
        };
        let n = old.array.len();
        let mut stepped = 0;
        while old.moved < n {
            let i = (old.start + old.moved) % n;
            let slot = old.array.slots()[i];
            old.moved += 1;
            stepped += 1;
            if slot.tag.get() == 0 {
                // Between clusters: the only place a step may end.
                if stepped >= max_slots {
                    break;
                }
                continue;
            }
            old.array.clear(i);
            let (index, dist) = vacancy(array, slot.tag.get());
            place(
                array,
                (index, dist),
                slot,
                sweep.as_mut(),
                max_probe_seen,
                (*seed, *salt),
            );
        }
        if old.moved == n {
            *old_slot = None;
            return true;
        }
        false
    }

    /// Has `advice` called on the slots in use and the reserved full-size array now, and on
    /// every array the table grows into before any entry is written there (the daemon's page
    /// policy: advice given after the move had written the array would find its pages already
    /// faulted in small).
    pub fn set_advice(&mut self, advice: fn(Region)) {
        self.advice = Some(advice);
        for array in std::iter::once(&self.array).chain(&self.reserve) {
            advice(array.region());
        }
    }

    /// The present entries (unspecified order, changes with every insert/remove).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        let old = self.old.iter().flat_map(|old| old.array.slots().iter());
        old.chain(self.array.slots().iter())
            .filter(|s| s.tag.get() != 0)
            .map(move |s| (self.key_of(s.tag.get()), &s.value))
    }

    /// Starts a pass over every entry present now that inserts and removals may interleave
    /// with (a snapshot taken without stopping the shard). Restarts a pass already going on.
    /// A pass's steps first finish a growth's move; a growth during the pass starts it
    /// again from the first slot of the new array, so entries visited before it are visited
    /// again (later, so a later copy is newer).
    pub fn sweep_begin(&mut self) {
        self.sweep = Some(Sweep {
            cursor: 0,
            late: Vec::new(),
        });
    }

    /// Whether a pass is going on.
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Visits up to `max_slots` more slots of the pass, calling `visit` for each entry there;
    /// after the last slot, visits the entries shifts carried behind the cursor meanwhile
    /// (looked up again: one removed since is skipped) and ends the pass, returning `true`.
    /// While a growth's move goes on, moves `max_slots` old slots instead and visits none.
    /// Every entry present from `sweep_begin` to the end of the pass is visited at least
    /// once, as it was at its visit; entries inserted meanwhile may or may not be. Returns
    /// `true` at once when no pass is going on.
    pub fn sweep_step(&mut self, max_slots: usize, mut visit: impl FnMut(u64, &V)) -> bool {
        let Some(cursor) = self.sweep.as_ref().map(|s| s.cursor) else {
            return true;
        };
        if self.old.is_some() {
            self.move_step(max_slots);
            return false;
        }
        let end = cursor.saturating_add(max_slots).min(self.array.len());
        for slot in &self.array.slots()[cursor..end] {
            if slot.tag.get() != 0 {
                visit(self.key_of(slot.tag.get()), &slot.value);
            }
        }
        if end < self.array.len() {
            if let Some(sweep) = &mut self.sweep {
                sweep.cursor = end;
            }
            return false;
        }
        let late = self.sweep.take().map(|s| s.late).unwrap_or_default();
        for key in late {
            if let Some(value) = self.get(key) {
                visit(key, value);
            }
        }
        true
    }

    /// The largest displacement any insert has produced since creation (never decreases;
    /// removals may leave every present entry nearer home). Kept on the insert path.
    #[inline]
    pub fn max_probe_seen(&self) -> usize {
        self.max_probe_seen
    }

    /// Displacement statistics of the present entries, by a scan of every slot (of both
    /// arrays while a growth's move goes on).
    pub fn probe_stats(&self) -> ProbeStats {
        let mut histogram: Vec<usize> = Vec::new();
        let mut total: u64 = 0;
        let old = self.old.as_ref().map(|old| old.array.slots());
        for slots in old.into_iter().chain([self.array.slots()]) {
            for (i, s) in slots.iter().enumerate() {
                if s.tag.get() != 0 {
                    let d = displacement_of(i, s.tag.get(), slots.len());
                    if d >= histogram.len() {
                        histogram.resize(d + 1, 0);
                    }
                    histogram[d] += 1;
                    total += d as u64;
                }
            }
        }
        let (mut mean, mut p99) = (0.0, 0);
        if self.len > 0 {
            mean = total as f64 / self.len as f64;
            // The smallest d with at least 99% of the entries at displacement <= d.
            let target = (self.len * 99).div_ceil(100);
            let mut seen = 0;
            for (d, &count) in histogram.iter().enumerate() {
                seen += count;
                if seen >= target {
                    p99 = d;
                    break;
                }
            }
        }
        ProbeStats {
            len: self.len,
            slots: self.array.len(),
            max: histogram.len().saturating_sub(1),
            mean,
            p99,
        }
    }

    /// Checks every structural invariant, panicking on the first violation (for tests):
    /// the entry count, the control bytes those of the tags, each entry reachable by lookup
    /// and by its control byte, the Robin Hood order (an entry is
    /// at most one slot farther from home than its predecessor, with no gap before it),
    /// `max_probe_seen` bounding every displacement, the load under its maximum before full size, and
    /// during a move, the old array's moved slots empty and every entry left there at an
    /// unmoved home.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let n = self.array.len();
        assert!(self.len <= self.capacity, "len {} > capacity", self.len);
        assert!(n <= self.full_slots, "{n} slots > full size");
        if n == self.full_slots {
            assert!(self.capacity < n, "no free slot");
        } else {
            assert!(
                self.len <= self.grow_at && self.grow_at < n,
                "over its maximum load"
            );
            assert!(
                self.reserve.is_some(),
                "the reserve is gone before full size"
            );
        }
        let mut count = self.check_array(&self.array);
        if let Some(old) = &self.old {
            let m = old.array.len();
            assert!(old.moved < m, "a finished move is kept");
            assert_eq!(
                old.array.tag(old.start),
                0,
                "the move starts at a full slot"
            );
            for k in 0..old.moved {
                assert_eq!(
                    old.array.tag((old.start + k) % m),
                    0,
                    "moved slot not empty"
                );
            }
            for (i, s) in old.array.slots().iter().enumerate() {
                if s.tag.get() != 0 {
                    let home = home_of(s.tag.get(), m);
                    assert!(!old.moved_home(home), "old slot {i}: its home has moved");
                    assert!(
                        matches!(self.find(s.tag.get()), Where::Old(j) if j == i),
                        "old slot {i}: not reachable"
                    );
                    assert!(
                        matches!(probe_in(&self.array, s.tag.get()), Probe::Vacant { .. }),
                        "old slot {i}: also in the new array"
                    );
                }
            }
            count += self.check_array(&old.array);
        }
        assert_eq!(count, self.len, "occupied slots vs len");
    }

    /// [`Table::check_invariants`] for one array: its control bytes those of its tags, its
    /// entries in Robin Hood order, each found where it is; returns how many.
    fn check_array(&self, array: &Array<V>) -> usize {
        let slots = array.slots();
        let n = slots.len();
        let mut count = 0;
        for (i, s) in slots.iter().enumerate() {
            let expected = if s.tag.get() == 0 {
                0
            } else {
                control_of(s.tag.get())
            };
            assert_eq!(array.control()[i], expected, "slot {i}: control byte");
            if s.tag.get() == 0 {
                continue;
            }
            count += 1;
            let d = displacement_of(i, s.tag.get(), n);
            assert!(
                d <= self.max_probe_seen,
                "slot {i}: displacement {d} > max seen"
            );
            if d > 0 {
                let prev = &slots[(i + n - 1) % n];
                assert!(
                    prev.tag.get() != 0,
                    "slot {i}: displaced by {d} after an empty slot"
                );
                let pd = displacement_of((i + n - 1) % n, prev.tag.get(), n);
                assert!(
                    d <= pd + 1,
                    "slot {i}: displacement {d} after {pd} (Robin Hood)"
                );
            }
            let key = self.key_of(s.tag.get());
            assert_ne!(key, 0);
            assert_eq!(
                self.tag(key),
                s.tag.get(),
                "slot {i}: tag does not round-trip"
            );
            assert!(
                matches!(probe_in(array, s.tag.get()), Probe::Found(j) if j == i),
                "slot {i}: key {key} not reachable"
            );
            assert_eq!(
                scan(array, s.tag.get(), home_of(s.tag.get(), n)),
                Some(i),
                "slot {i}: key {key} not found by its control byte"
            );
        }
        count
    }

    /// The tag of a (nonzero) key.
    #[inline]
    fn tag(&self, key: u64) -> u64 {
        tag_of(key, self.seed, self.salt)
    }

    /// The key whose tag this is (inverse of [`Table::tag`]).
    #[inline]
    pub(crate) fn key_of(&self, tag: u64) -> u64 {
        key_of(tag, self.seed, self.salt)
    }

    /// Home slot of a tag in the slots in use (fastrange).
    #[cfg(test)]
    fn home(&self, tag: u64) -> usize {
        home_of(tag, self.array.len())
    }

    /// Where `tag` is: in the old array when its home there has not moved and it is there,
    /// otherwise as probed in the slots in use.
    #[inline]
    fn find(&self, tag: u64) -> Where {
        if let Some(old) = &self.old {
            let home = home_of(tag, old.array.len());
            if !old.moved_home(home) {
                if let Some(i) = scan(&old.array, tag, home) {
                    return Where::Old(i);
                }
            }
        }
        Where::New(probe_in(&self.array, tag))
    }

    /// Probes the slots in use for `tag`.
    #[cfg(test)]
    fn probe(&self, tag: u64) -> Probe {
        probe_in(&self.array, tag)
    }

    /// Where an absent `tag` goes once the table has room for one more entry: `(index, dist)`
    /// as probed, or as probed again after a step of a move or a growth.
    #[inline]
    fn room_for(&mut self, tag: u64, index: usize, dist: usize) -> (usize, usize) {
        if self.old.is_none() && self.len < self.grow_at {
            return (index, dist);
        }
        self.move_step(MOVE_SLOTS_PER_INSERT);
        if self.len >= self.grow_at {
            self.grow_to_hold(self.len + 1);
        }
        vacancy(&self.array, tag)
    }

    /// Grows the slots in use by quarters ([`grown`]; into the reserved full-size array at the
    /// end, or when a fresh array is refused) until `entries` fit under its load of them, and starts
    /// moving the entries into the new array (a move going on is finished first). A pass going
    /// on starts again.
    #[cold]
    #[inline(never)]
    fn grow_to_hold(&mut self, entries: usize) {
        self.move_step(usize::MAX);
        let mut target = self.array.len();
        while target < self.full_slots && grow_at(target, self.full_slots, self.load) < entries {
            target = grown(target).min(self.full_slots);
        }
        if target == self.array.len() {
            return;
        }
        let fresh = if target < self.full_slots {
            Array::zeroed(target).ok()
        } else {
            None
        };
        let fresh = match fresh.or_else(|| self.reserve.take()) {
            Some(array) => array,
            // Neither a fresh array nor the reserve: the table already is at full size.
            None => return,
        };
        if let Some(advice) = self.advice {
            advice(fresh.region());
        }
        let old = std::mem::replace(&mut self.array, fresh);
        self.grow_at = grow_at(self.array.len(), self.full_slots, self.load);
        if let Some(sweep) = &mut self.sweep {
            sweep.cursor = 0;
            sweep.late.clear();
        }
        // There is always an empty slot (the load was at most 95 %).
        let start = old.control().iter().position(|&c| c == 0).unwrap_or(0);
        self.old = Some(Old {
            array: old,
            start,
            moved: 0,
        });
    }

    /// Stores an absent `tag` at `index` (from [`Probe::Vacant`]) of the slots in use.
    fn place(&mut self, index: usize, dist: usize, tag: u64, value: V) {
        debug_assert!(self.len < self.capacity);
        place(
            &mut self.array,
            (index, dist),
            Slot {
                tag: Tag::new(tag),
                value,
            },
            self.sweep.as_mut(),
            &mut self.max_probe_seen,
            (self.seed, self.salt),
        );
    }
}

/// Home slot of a tag in an array of `n` slots (fastrange).
#[inline]
fn home_of(tag: u64, n: usize) -> usize {
    ((u128::from(tag) * n as u128) >> 64) as usize
}

/// Distance from its home of the entry with tag `tag` stored at `index` of `n` slots.
#[inline]
fn displacement_of(index: usize, tag: u64, n: usize) -> usize {
    let home = home_of(tag, n);
    if index >= home {
        index - home
    } else {
        index + n - home
    }
}

/// The tag of a (nonzero) key under `seed` and its `salt`.
#[inline]
fn tag_of(key: u64, seed: u64, salt: u64) -> u64 {
    assert!(key != 0, "key 0 is reserved (empty slot marker)");
    mix((key ^ seed).wrapping_mul(PRE)) ^ salt
}

/// The home, in an array of `n` slots, of the first tag that begins with `prefix`: every tag
/// that does has its home there or at the next slot (the low 32 bits move `tag × n` by less
/// than 2^64 while `n` < 2^32).
#[inline]
fn prefix_home(prefix: u32, n: usize) -> usize {
    ((u64::from(prefix) * n as u64) >> 32) as usize
}

/// Calls `visit` with the tag and value of every entry of `slots` whose tag begins with
/// `prefix`, until it returns `false` (then returns `false`): in Robin Hood order they lie in
/// the run of entries whose homes are the prefix's home, or the next slot for the few
/// prefixes (about `n` in 2^32) whose tags straddle two homes.
fn visit_prefix_in<V>(
    slots: &mut [Slot<V>],
    prefix: u32,
    mut visit: impl FnMut(u64, &mut V) -> bool,
) -> bool {
    let n = slots.len();
    let mut index = prefix_home(prefix, n);
    // Homes of the prefix's tags past its first one's: 0, or 1 where a home begins among them.
    let span = home_of((u64::from(prefix) << 32) | u64::from(u32::MAX), n) - index;
    // `dist`: slots from the prefix's home; an entry `dist − disp` slots past it has its home.
    for dist in 0..n {
        let slot = &mut slots[index];
        if slot.tag.get() == 0 {
            if dist < span {
                // No entry has its home here, but some may have theirs at the next slot.
                index = if index + 1 == n { 0 } else { index + 1 };
                continue;
            }
            return true;
        }
        let disp = displacement_of(index, slot.tag.get(), n);
        if disp + span < dist {
            // Home past the prefix's last: so is every later one.
            return true;
        }
        if disp <= dist
            && (slot.tag.get() >> 32) as u32 == prefix
            && !visit(slot.tag.get(), &mut slot.value)
        {
            return false;
        }
        index = if index + 1 == n { 0 } else { index + 1 };
    }
    true
}

/// The key whose tag this is, under `seed` and its `salt`.
#[inline]
fn key_of(tag: u64, seed: u64, salt: u64) -> u64 {
    unmix(tag ^ salt).wrapping_mul(PRE_INV) ^ seed
}

/// The index of `tag` in `array`, found by its control bytes from its home `home` on: a slot
/// is read only where its control byte matches. `None` at the end of the run (an empty slot)
/// when the tag is absent. Terminates: an array always has an empty slot (its load is at most
/// 95 %).
#[inline]
fn scan<V: Copy>(array: &Array<V>, tag: u64, home: usize) -> Option<usize> {
    let mut from = home;
    loop {
        let index = candidate(array, tag, from)?;
        if array.tag(index) == tag {
            return Some(index);
        }
        from = if index + 1 == array.len() {
            0
        } else {
            index + 1
        };
    }
}

/// The first slot from `from` on, in the run that ends at an empty slot, whose control byte
/// is `tag`'s: where `tag` is, unless another tag of that run shares its byte (one slot in
/// 128). Reads no slot, so it stalls on nothing but the control bytes.
#[inline]
fn candidate<V>(array: &Array<V>, tag: u64, from: usize) -> Option<usize> {
    let control = control_of(tag);
    let n = array.len();
    let mut index = from;
    loop {
        match array.control()[index] {
            0 => return None,
            c if c == control => return Some(index),
            _ => index = if index + 1 == n { 0 } else { index + 1 },
        }
    }
}

/// Probes `array` for `tag`: by its control bytes ([`scan`]), then, when it is absent, by the
/// slots' tags for the place it would take. Terminates: an array always has an empty slot
/// (its load is at most 95 %).
#[inline]
fn probe_in<V: Copy>(array: &Array<V>, tag: u64) -> Probe {
    let n = array.len();
    let home = home_of(tag, n);
    if let Some(index) = scan(array, tag, home) {
        return Probe::Found(index);
    }
    let slots = array.slots();
    let mut index = home;
    let mut dist = 0;
    loop {
        let t = slots[index].tag.get();
        if t == tag {
            return Probe::Found(index);
        }
        // Robin Hood order: past an entry nearer its home than we are, `tag` cannot be.
        if t == 0 || displacement_of(index, t, n) < dist {
            return Probe::Vacant { index, dist };
        }
        dist += 1;
        index = if index + 1 == n { 0 } else { index + 1 };
    }
}

/// The probe result in `array` for a tag known to be absent from it.
#[inline]
fn vacancy<V: Copy>(array: &Array<V>, tag: u64) -> (usize, usize) {
    match probe_in(array, tag) {
        Probe::Vacant { index, dist } => (index, dist),
        Probe::Found(_) => unreachable!("the tag is absent"),
    }
}

/// Stores `slot` (an absent tag) at `index` of `slots`, `dist` from its home, shifting the rest
/// of the cluster one slot right; an entry a wrapping shift carries behind a pass's cursor is
/// remembered in `sweep`. Raises `max_probe_seen` to the largest displacement made.
fn place<V: Copy>(
    array: &mut Array<V>,
    (index, dist): (usize, usize),
    slot: Slot<V>,
    sweep: Option<&mut Sweep>,
    max_probe_seen: &mut usize,
    (seed, salt): (u64, u64),
) {
    let n = array.len();
    let mut max = dist;
    if array.control()[index] != 0 {
        let mut empty = if index + 1 == n { 0 } else { index + 1 };
        while array.control()[empty] != 0 {
            empty = if empty + 1 == n { 0 } else { empty + 1 };
        }
        // Shift [index, empty) right by one, last first; each moved entry is one slot farther
        // from home.
        let mut j = empty;
        while j != index {
            let prev = if j == 0 { n - 1 } else { j - 1 };
            let moved = array.slots()[prev];
            array.put(j, moved);
            max = max.max(displacement_of(j, moved.tag.get(), n));
            j = prev;
        }
        if empty < index {
            // The run wrapped: the last slot's entry now sits in slot 0.
            if let Some(sweep) = sweep.filter(|s| s.cursor > 0 && s.cursor < n) {
                sweep.late.push(key_of(array.tag(0), seed, salt));
            }
        }
    }
    array.put(index, slot);
    if max > *max_probe_seen {
        *max_probe_seen = max;
    }
}

/// Removes the entry at `hole` of `array` by backward shift: pulls each following displaced
/// entry one slot nearer its home, until an empty slot or an entry already at home ends the
/// cluster. An entry pulled from a pass's cursor to behind it is remembered in `sweep`.
fn shift_back<V: Copy>(
    array: &mut Array<V>,
    mut hole: usize,
    mut sweep: Option<&mut Sweep>,
    seed: u64,
    salt: u64,
) {
    let n = array.len();
    loop {
        let next = if hole + 1 == n { 0 } else { hole + 1 };
        let tag = array.tag(next);
        if tag == 0 || displacement_of(next, tag, n) == 0 {
            break;
        }
        if let Some(sweep) = sweep.as_deref_mut() {
            if sweep.cursor == next && next != 0 {
                // Carried from the first unvisited slot into the visited ones.
                sweep.late.push(key_of(tag, seed, salt));
            }
        }
        array.put(hole, array.slots()[next]);
        hole = next;
    }
    array.clear(hole);
}

/// The entry count at which a table of `slots` (of `full` at full size) grows: past `load`
/// thousandths of its slots, never at full size (the capacity bounds it there).
fn grow_at(slots: usize, full: usize, load: usize) -> usize {
    if slots >= full {
        usize::MAX
    } else {
        slots / 1000 * load + slots % 1000 * load / 1000
    }
}

impl<V> Table<V> {
    /// Where the slots in use and their control bytes lie (for the daemon's page policy);
    /// moves when the table grows.
    pub fn region(&self) -> Region {
        self.array.region()
    }
}

impl<V> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("slots", &self.array.len())
            .field("full_slots", &self.full_slots)
            .field("max_probe_seen", &self.max_probe_seen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shards_users_spread_over_the_whole_table() {
        // Every key owned by shard 0 of 8, with seed 0: the table must not crowd them.
        let mut table: Table<u64> = Table::new(20_000, 0);
        let keys = (1u64..).filter(|&k| presenced_wire::shard_of(k, 8) == 0);
        for k in keys.take(20_000) {
            table.insert(k, k).unwrap();
        }
        let stats = table.probe_stats();
        assert!(stats.mean < 6.0 && stats.max < 100, "{stats:?}");
    }

    const SEED: u64 = 0x0123_4567_89ab_cdef;

    /// Nonzero keys whose home slot in `t` is `home`, the first `count` found from 1 up.
    fn keys_with_home(t: &Table<u64>, home: usize, count: usize) -> Vec<u64> {
        (1u64..)
            .filter(|&k| t.home(t.tag(k)) == home)
            .take(count)
            .collect()
    }

    fn index_of(t: &Table<u64>, key: u64) -> usize {
        match t.probe(t.tag(key)) {
            Probe::Found(i) => i,
            Probe::Vacant { .. } => panic!("key {key} absent"),
        }
    }

    #[test]
    fn a_control_byte_shared_in_a_run_reads_past_the_wrong_slot() {
        let mut t: Table<u64> = Table::new(14, SEED); // 16 slots
                                                      // Three keys with home 5; the last two share the first one's control byte, so a
                                                      // lookup of either meets a matching byte at a slot holding another tag first.
        let same_home = keys_with_home(&t, 5, 2000);
        let control = control_of(t.tag(same_home[0]));
        let mut keys = vec![same_home[0]];
        keys.extend(
            same_home[1..]
                .iter()
                .filter(|&&k| control_of(t.tag(k)) == control)
                .take(2),
        );
        assert_eq!(keys.len(), 3, "keys sharing a control byte");
        for &k in &keys {
            t.insert(k, k * 10).unwrap();
        }
        t.check_invariants();
        for &k in &keys {
            t.prefetch(k);
            t.prefetch_entry(k);
            assert_eq!(t.get(k), Some(&(k * 10)));
        }
        // The first candidate a prefetch finds is the wrong slot; the lookup reads on.
        let home = t.home(t.tag(keys[2]));
        assert_eq!(
            candidate(&t.array, t.tag(keys[2]), home),
            Some(index_of(&t, keys[0]))
        );
        assert_eq!(t.remove(keys[0]), Some(keys[0] * 10));
        t.check_invariants();
        assert_eq!(t.get(keys[0]), None);
        assert_eq!(t.get(keys[2]), Some(&(keys[2] * 10)));
        // An absent key with the same byte is not found, and goes where a probe puts it.
        assert_eq!(t.insert(keys[0], 1), Ok(None));
        t.check_invariants();
    }

    #[test]
    fn tags_are_nonzero_and_give_their_key_back() {
        assert_eq!(PRE.wrapping_mul(PRE_INV), 1);
        let t: Table<u64> = Table::new(10, SEED);
        for k in [1, 2, SEED, u64::MAX, SEED ^ 1] {
            assert_ne!(t.tag(k), 0);
            assert_eq!(t.key_of(t.tag(k)), k);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Slot<[u64; 4]>>(), 40);
        let t: Table<[u64; 4]> = Table::new(7, 1);
        assert_eq!(t.slots(), 8);
        assert_eq!(t.memory_bytes(), 8 * (40 + 1), "slots and control bytes");
        let t: Table<u64> = Table::new(1_000_000, 1);
        assert_eq!(t.full_slots(), 1_111_112); // ceil(10_000_000 / 9)
        assert_eq!(t.slots(), INITIAL_SLOTS);
        assert_eq!(t.memory_bytes(), INITIAL_SLOTS * 17);
        assert_eq!(Table::<u64>::new(0, 1).slots(), 1);
        assert_eq!(Table::<u64>::new(1, 1).slots(), 2);
    }

    #[test]
    fn wrap_around_cluster() {
        let mut t: Table<u64> = Table::new(14, SEED); // 16 slots
        let last = t.slots() - 1;
        let ks = keys_with_home(&t, last, 3);
        let k0 = keys_with_home(&t, 0, 1)[0];
        for (v, &k) in ks.iter().enumerate() {
            assert_eq!(t.insert(k, v as u64), Ok(None));
        }
        assert_eq!(
            [
                index_of(&t, ks[0]),
                index_of(&t, ks[1]),
                index_of(&t, ks[2])
            ],
            [last, 0, 1]
        );
        // A key at home 0 goes after the wrapped entries, which are farther from home.
        t.insert(k0, 99).unwrap();
        assert_eq!(index_of(&t, k0), 2);
        assert_eq!(t.max_probe_seen(), 2);
        t.check_invariants();
        // Removing the entry in the last slot pulls the wrapped ones back across the end.
        assert_eq!(t.remove(ks[0]), Some(0));
        assert_eq!(
            [index_of(&t, ks[1]), index_of(&t, ks[2]), index_of(&t, k0)],
            [last, 0, 1]
        );
        assert_eq!(t.get(ks[2]), Some(&2));
        assert_eq!(t.get(k0), Some(&99));
        t.check_invariants();
        assert_eq!(t.probe_stats().max, 1);
    }

    #[test]
    fn remove_from_middle_of_cluster() {
        let mut t: Table<u64> = Table::new(28, SEED); // 32 slots
        let a = keys_with_home(&t, 5, 3);
        let b = keys_with_home(&t, 6, 2);
        let c = keys_with_home(&t, 10, 1)[0];
        for &k in a.iter().chain(&b).chain([&c]) {
            t.insert(k, k).unwrap();
        }
        // Cluster: 5:a0 6:a1 7:a2 8:b0 9:b1 10:c
        let order = [a[0], a[1], a[2], b[0], b[1], c];
        for (i, &k) in order.iter().enumerate() {
            assert_eq!(index_of(&t, k), 5 + i);
        }
        t.check_invariants();
        assert_eq!(t.remove(a[1]), Some(a[1]));
        // a2, b0, b1 shift back; c is at home and stays.
        assert_eq!(index_of(&t, a[2]), 6);
        assert_eq!(index_of(&t, b[0]), 7);
        assert_eq!(index_of(&t, b[1]), 8);
        assert_eq!(index_of(&t, c), 10);
        assert_eq!(t.get(a[1]), None);
        assert_eq!(t.remove(a[1]), None);
        t.check_invariants();
        // Removing b0 pulls b1 one slot nearer home (a2 still holds slot 6).
        t.remove(b[0]).unwrap();
        assert_eq!(index_of(&t, b[1]), 7);
        assert_eq!(t.len(), 4);
        t.check_invariants();
    }

    #[test]
    fn insert_steals_from_nearer_entry() {
        let mut t: Table<u64> = Table::new(28, SEED);
        let a = keys_with_home(&t, 3, 3);
        let b = keys_with_home(&t, 4, 1)[0];
        t.insert(a[0], 0).unwrap();
        t.insert(b, 1).unwrap(); // at home 4
        t.insert(a[1], 2).unwrap(); // displacement 1 > b's 0: takes slot 4, b → 5
        assert_eq!((index_of(&t, a[1]), index_of(&t, b)), (4, 5));
        let (v, inserted) = t.get_or_insert_with(a[2], || 3).unwrap();
        assert_eq!((*v, inserted), (3, true));
        *v = 33;
        assert_eq!((index_of(&t, a[2]), index_of(&t, b)), (5, 6));
        assert_eq!(t.get(a[2]), Some(&33));
        assert_eq!(t.max_probe_seen(), 2);
        t.check_invariants();
    }

    #[test]
    fn capacity_one() {
        let mut t: Table<u64> = Table::new(1, SEED);
        assert_eq!(t.slots(), 2);
        assert!(t.is_empty());
        assert_eq!(t.insert(7, 70), Ok(None));
        assert_eq!(t.insert(8, 80), Err(Full));
        assert_eq!(t.insert(7, 71), Ok(Some(70)));
        assert!(t.get_or_insert_with(8, || unreachable!()).is_err());
        assert_eq!(
            t.get_or_insert_with(7, || unreachable!()),
            Ok((&mut 71, false))
        );
        assert_eq!(t.remove(7), Some(71));
        assert_eq!(t.insert(8, 80), Ok(None));
        assert_eq!(t.get(8), Some(&80));
        assert_eq!(t.get(7), None);
        t.check_invariants();
    }

    #[test]
    fn capacity_zero_refuses_everything() {
        let mut t: Table<u64> = Table::new(0, SEED);
        assert_eq!(t.insert(1, 1), Err(Full));
        assert_eq!(t.get(1), None);
        assert_eq!(t.remove(1), None);
        assert_eq!(
            t.probe_stats(),
            ProbeStats {
                slots: 1,
                ..ProbeStats::default()
            }
        );
        t.check_invariants();
    }

    #[test]
    fn full_table_refuses_only_new_keys() {
        let cap = 100;
        let mut t: Table<u64> = Table::new(cap, SEED);
        for k in 1..=u64::from(cap) {
            assert_eq!(t.insert(k, k), Ok(None));
        }
        assert_eq!(t.len(), t.capacity());
        assert_eq!(t.insert(1000, 0), Err(Full));
        assert_eq!(
            t.get_or_insert_with(1000, || panic!("make called")),
            Err(Full)
        );
        assert_eq!(t.get(1000), None);
        assert_eq!(t.insert(50, 5000), Ok(Some(50)));
        *t.get_mut(51).unwrap() += 1;
        assert_eq!(t.get(51), Some(&52));
        assert_eq!(t.len(), 100);
        t.check_invariants();
        // A removal makes room for exactly one new key.
        assert_eq!(t.remove(1), Some(1));
        assert_eq!(t.insert(1000, 7), Ok(None));
        assert_eq!(t.insert(1001, 7), Err(Full));
        t.check_invariants();
    }

    #[test]
    fn reinsert_after_remove() {
        let mut t: Table<u64> = Table::new(50, SEED);
        for round in 0..5u64 {
            for k in 1..=50 {
                assert_eq!(t.insert(k, k + round), Ok(None));
            }
            t.check_invariants();
            for k in (1..=50).rev() {
                assert_eq!(t.remove(k), Some(k + round));
            }
            assert!(t.is_empty());
            t.check_invariants();
        }
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn sequential_keys_spread() {
        let cap = 200_000;
        let mut t: Table<u64> = Table::new(cap, SEED);
        for k in 1..=u64::from(cap) {
            t.insert(k, k).unwrap();
        }
        let s = t.probe_stats();
        // Linear probing at load 9/10: mean displacement ≈ (1/(1-α) - 1)/2 = 4.5.
        assert!(s.mean < 5.5, "{s:?}");
        assert!(s.max < 100 && s.max <= t.max_probe_seen(), "{s:?}");
        assert!(s.p99 <= s.max);
        let mut keys: Vec<u64> = t
            .iter()
            .map(|(k, &v)| {
                assert_eq!(k, v);
                k
            })
            .collect();
        keys.sort_unstable();
        assert!(keys.iter().copied().eq(1..=u64::from(cap)));
    }

    #[test]
    fn memory_follows_the_entries_and_growth_keeps_every_one() {
        let mut t: Table<u64> = Table::new(1_000_000, SEED);
        let mut sizes = vec![t.slots()];
        for k in 1..=10_000u64 {
            t.insert(k, k * 3).unwrap();
            if sizes.last() != Some(&t.slots()) {
                sizes.push(t.slots());
            }
        }
        // 3,686 entries fill 4,096 slots to 9/10; each growth adds a quarter; 10,000 fit in
        // 12,500 (9/10 of 10,000 is 9,000).
        assert_eq!(sizes, [4096, 5120, 6400, 8000, 10_000, 12_500]);
        assert_eq!(t.grows_at(), Some(11_250));
        assert_eq!(t.memory_bytes(), 12_500 * 17);
        t.check_invariants();
        assert!((1..=10_000u64).all(|k| t.get(k) == Some(&(k * 3))));
        // Removals never shrink it.
        for k in 1..=10_000u64 {
            t.remove(k).unwrap();
        }
        assert_eq!(t.slots(), 12_500);
        t.check_invariants();
    }

    thread_local! {
        static ADVISED: std::cell::RefCell<Vec<Region>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn record_advice(region: Region) {
        ADVISED.with(|a| a.borrow_mut().push(region));
    }

    fn advised() -> Vec<Region> {
        ADVISED.with(|a| a.borrow().clone())
    }

    #[test]
    fn every_array_is_advised_before_its_first_entry() {
        let mut t: Table<u64> = Table::try_starting_with(4000, SEED, 1024).unwrap();
        t.set_advice(record_advice);
        let full = t.reserve.as_ref().map(|r| r.region()).unwrap();
        assert_eq!(advised(), [t.region(), full], "now: in use and reserved");
        for k in 1..=4000u64 {
            let before = t.region();
            t.insert(k, k).unwrap();
            if t.region() != before {
                // Advised in the growth, while the new array held only the entries moved in
                // by the same insert (none of which had been advised away).
                assert_eq!(advised().last(), Some(&t.region()), "at key {k}");
            }
        }
        let seen = advised();
        // 1,024 slots grown by quarters six times (3,906), then into the reserve (4,572).
        assert_eq!(seen.len(), 2 + 7, "{seen:?}");
        assert_eq!(t.region(), full, "the last growth is into the reserve");
        assert_eq!(seen.last(), Some(&full));
    }

    #[test]
    fn lookups_inserts_and_removals_during_moves_agree_with_a_model() {
        use rand_xoshiro::rand_core::{RngCore, SeedableRng};
        use std::collections::HashMap;
        let mut rng = rand_xoshiro::Xoshiro256StarStar::seed_from_u64(7);
        let cap = 50_000;
        let mut t: Table<u64> = Table::try_starting_with(cap, SEED, 1024).unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let (mut moves, mut was_moving, mut checked_moving) = (0, false, 0);
        for step in 0..150_000u64 {
            let k = 1 + rng.next_u64() % 60_000;
            match rng.next_u64() % 8 {
                0..=4 => {
                    let v = rng.next_u64();
                    match t.insert(k, v) {
                        Ok(prev) => assert_eq!(prev, model.insert(k, v), "step {step}"),
                        Err(Full) => assert!(!model.contains_key(&k) && model.len() == 50_000),
                    }
                }
                5 => assert_eq!(t.remove(k), model.remove(&k), "step {step}"),
                6 => assert_eq!(t.get(k), model.get(&k), "step {step}"),
                _ => match (t.get_mut(k), model.get_mut(&k)) {
                    (Some(a), Some(b)) => {
                        *a += 1;
                        *b += 1;
                    }
                    (None, None) => {}
                    (a, b) => panic!("step {step}: {a:?} vs {b:?}"),
                },
            }
            moves += usize::from(t.moving() && !was_moving);
            was_moving = t.moving();
            if step % 4999 == 0 || (t.moving() && step % 97 == 0) {
                t.check_invariants();
                checked_moving += usize::from(t.moving());
            }
            if step % 7 == 0 {
                // The key's prefix finds it, with its value, among keys of that prefix only.
                let prefix = t.prefixer().prefix(k);
                let mut found = Vec::new();
                t.visit_prefix(prefix, |key, &mut v| {
                    found.push((key, v));
                    true
                });
                assert!(found
                    .iter()
                    .all(|&(key, _)| t.prefixer().prefix(key) == prefix));
                let present = model.get(&k).map(|&v| (k, v));
                assert_eq!(found.iter().find(|&&(key, _)| key == k).copied(), present);
            }
        }
        assert!(
            moves >= 5 && checked_moving > 20,
            "{moves} moves, {checked_moving} checks"
        );
        t.check_invariants();
        let mut got: Vec<(u64, u64)> = t.iter().map(|(k, &v)| (k, v)).collect();
        let mut want: Vec<(u64, u64)> = model.into_iter().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn a_prefix_finds_every_key_that_shares_it_and_no_other() {
        let mut t: Table<u64> = Table::new(10_000, SEED);
        let prefix = 0x8000_0001u32;
        let shared: Vec<u64> = (1..=40u64)
            .map(|low| t.key_of((u64::from(prefix) << 32) | (low * 7919)))
            .collect();
        // The neighbours: the prefixes on either side, whose homes are the same or next.
        let neighbours: Vec<u64> = [prefix - 1, prefix + 1]
            .iter()
            .flat_map(|&p| (1..=20u64).map(move |low| (p, low)))
            .map(|(p, low)| t.key_of((u64::from(p) << 32) | low))
            .collect();
        for (i, &k) in shared.iter().chain(&neighbours).enumerate() {
            t.insert(k, i as u64).unwrap();
        }
        for k in 1..5_000u64 {
            t.insert(k, 0).unwrap();
        }
        let mut found = Vec::new();
        t.visit_prefix(prefix, |key, _| {
            found.push(key);
            true
        });
        found.sort_unstable();
        let mut want = shared.clone();
        want.sort_unstable();
        assert_eq!(found, want);
        for &k in &shared[..10] {
            t.remove(k);
        }
        let mut count = 0;
        t.visit_prefix(prefix, |_, _| {
            count += 1;
            true
        });
        assert_eq!(count, 30);
        // Stopped after the first: one visit more.
        t.visit_prefix(prefix, |_, _| {
            count += 1;
            false
        });
        assert_eq!(count, 31);
        t.check_invariants();
    }

    #[test]
    fn a_prefix_finds_keys_whose_home_is_past_the_prefix_s_home() {
        // A prefix just below a multiple of 2^32 / n has its home at h, and a tag of it with
        // large enough low bits has its home at h + 1; in a sparse table slot h is empty. One
        // such key per multiple, among other keys or none.
        for (capacity, others) in [
            (1000u32, 0u32),
            (1000, 900),
            (50_000, 20_000),
            (50_000, 49_000),
        ] {
            let mut t: Table<u64> = Table::new(capacity, SEED);
            t.reserve(capacity as usize);
            let n = t.slots() as u64;
            for k in 1..=u64::from(others) {
                t.insert(k, 0).unwrap();
            }
            let mut edge = Vec::new();
            for multiple in 1..=(capacity as u64 - u64::from(others)).min(60) {
                let p = (multiple << 32) / n;
                let r = (multiple << 32) - p * n;
                if r == 0 {
                    continue;
                }
                let lo = (r << 32).div_ceil(n);
                let tag = (p << 32) | lo;
                assert_eq!(
                    home_of(tag, n as usize),
                    prefix_home(p as u32, n as usize) + 1
                );
                let key = t.key_of(tag);
                t.insert(key, multiple).unwrap();
                edge.push((p as u32, key, multiple));
            }
            assert!(edge.len() > 40);
            for &(p, key, value) in &edge {
                let mut found = Vec::new();
                t.visit_prefix(p, |k, &mut v| {
                    found.push((k, v));
                    true
                });
                assert_eq!(
                    found,
                    [(key, value)],
                    "capacity {capacity}, {others} others"
                );
            }
        }
    }

    #[test]
    fn a_move_ends_by_steps_alone_and_frees_the_old_array() {
        let mut t: Table<u64> = Table::try_starting_with(100_000, SEED, 1024).unwrap();
        let mut k = 0;
        while !t.moving() {
            k += 1;
            t.insert(k, k).unwrap();
        }
        assert_eq!(
            t.memory_bytes(),
            (1280 + 1024) * 17,
            "both arrays while moving"
        );
        let mut steps = 0;
        while !t.move_step(64) {
            steps += 1;
            t.check_invariants();
        }
        assert!(steps >= 1024 / 64 / 2, "{steps} steps");
        assert_eq!(t.memory_bytes(), 1280 * 17);
        assert!((1..=k).all(|k| t.get(k) == Some(&k)));
    }

    #[test]
    fn a_table_grows_into_its_full_size_and_is_bounded_there() {
        let cap = 20_000;
        let mut t: Table<u64> = Table::try_starting_with(cap, SEED, 100).unwrap();
        for k in 1..=u64::from(cap) {
            t.insert(k, k).unwrap();
        }
        assert_eq!(t.slots(), t.full_slots());
        assert_eq!(t.grows_at(), None);
        assert_eq!(t.insert(u64::from(cap) + 1, 0), Err(Full));
        t.check_invariants();
    }

    #[test]
    fn reserve_grows_once_for_the_inserts_to_come() {
        let mut t: Table<u64> = Table::new(1_000_000, SEED);
        t.insert(1, 1).unwrap();
        t.reserve(100_000);
        let slots = t.slots();
        assert!(
            (100_001 * 8 / 7..100_001 * 8 / 7 * 5 / 4 + 1).contains(&slots),
            "{slots}"
        );
        for k in 2..=100_001u64 {
            t.insert(k, k).unwrap();
        }
        assert_eq!(t.slots(), slots, "no growth on the way");
        t.reserve(10_000_000);
        assert_eq!(t.slots(), t.full_slots(), "never past the full size");
        t.check_invariants();
    }

    #[test]
    #[should_panic(expected = "key 0 is reserved")]
    fn zero_key_panics() {
        let t: Table<u64> = Table::new(4, SEED);
        let _ = t.get(0);
    }

    #[test]
    fn a_sweep_visits_every_entry_present_throughout_whatever_shifts() {
        use rand_xoshiro::rand_core::{RngCore, SeedableRng};
        use std::collections::BTreeSet;
        let mut late_seen = 0;
        for seed in 0..400u64 {
            let mut rng = rand_xoshiro::Xoshiro256StarStar::seed_from_u64(seed);
            let cap = 1 + (rng.next_u64() % 64) as u32;
            let pool = u64::from(cap) * 2 + 2;
            // Starting small, so that inserts during the pass grow the table under it.
            let initial = 1 + (rng.next_u64() % 8) as usize;
            let mut t: Table<u64> = Table::try_starting_with(cap, seed, initial).unwrap();
            let mut present = BTreeSet::new();
            for _ in 0..cap * 2 {
                let k = 1 + rng.next_u64() % pool;
                if t.insert(k, k).is_ok() {
                    present.insert(k);
                }
            }
            t.sweep_begin();
            let throughout = present.clone();
            let mut gone = BTreeSet::new();
            let mut visited = BTreeSet::new();
            loop {
                let step = 1 + (rng.next_u64() % 4) as usize;
                if t.sweep_step(step, |k, &v| {
                    assert_eq!(k, v);
                    visited.insert(k);
                }) {
                    break;
                }
                for _ in 0..rng.next_u64() % 6 {
                    let k = 1 + rng.next_u64() % pool;
                    if rng.next_u64() % 2 == 0 {
                        if t.remove(k).is_some() {
                            gone.insert(k);
                        }
                    } else if t.insert(k, k).is_ok() {
                        present.insert(k);
                    }
                }
                late_seen += t.sweep.as_ref().map_or(0, |s| s.late.len());
            }
            assert!(!t.sweeping());
            for k in throughout.difference(&gone) {
                assert!(visited.contains(k), "seed {seed}: key {k} never visited");
            }
            t.check_invariants();
        }
        assert!(
            late_seen > 0,
            "no shift ever carried an entry behind the cursor"
        );
    }
}
