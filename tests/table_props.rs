//! Property tests of `presenced_core::table::Table` against `std::collections::HashMap`.
//!
//! Capacities are small (1..300) so that tables run full and `Full` is exercised; keys come
//! mostly from a small range (repeats, replacements, removals of present keys, dense
//! clusters) and sometimes from the whole nonzero `u64` range. Tables start with 1 to 32
//! slots, so they grow (by quarters) on the way to full size. The structural invariants (every entry
//! reachable, Robin Hood order, entry count, load under 9/10 before full size) are checked
//! after every op.

use std::collections::HashMap;

use presenced_core::table::{Full, Table};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(u64, u64),
    Get(u64),
    Remove(u64),
    /// `get_or_insert_with(key, || value)`, then add 1 through the returned reference.
    GetOrInsert(u64, u64),
    /// `get_mut(key)`, adding the delta.
    Modify(u64, u64),
}

fn key(small_max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1..=small_max, 1 => 1..=u64::MAX]
}

fn op(small_max: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(small_max), any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key(small_max).prop_map(Op::Get),
        3 => key(small_max).prop_map(Op::Remove),
        2 => (key(small_max), any::<u64>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
        1 => (key(small_max), any::<u64>()).prop_map(|(k, d)| Op::Modify(k, d)),
    ]
}

fn capacity() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..8, 8u32..64, 64u32..300]
}

/// Slots a table starts with, before it grows.
fn initial_slots() -> impl Strategy<Value = usize> {
    1usize..=32
}

/// (capacity, seed, initial slots, ops): up to ~4 ops per entry of capacity, keys mostly
/// below 2 × capacity.
fn scenario() -> impl Strategy<Value = (u32, u64, usize, Vec<Op>)> {
    capacity().prop_flat_map(|cap| {
        let small_max = u64::from(cap) * 2 + 2;
        let max_ops = cap as usize * 4 + 40;
        (
            Just(cap),
            any::<u64>(),
            initial_slots(),
            prop::collection::vec(op(small_max), 0..max_ops),
        )
    })
}

fn apply(t: &mut Table<u64>, model: &mut HashMap<u64, u64>, op: &Op) {
    let cap = t.capacity();
    let room = model.len() < cap;
    match *op {
        Op::Insert(k, v) => {
            let expected = match model.get(&k) {
                Some(&old) => Ok(Some(old)),
                None if room => Ok(None),
                None => Err(Full),
            };
            if expected.is_ok() {
                model.insert(k, v);
            }
            assert_eq!(t.insert(k, v), expected, "{op:?}");
        }
        Op::Get(k) => assert_eq!(t.get(k), model.get(&k), "{op:?}"),
        Op::Remove(k) => assert_eq!(t.remove(k), model.remove(&k), "{op:?}"),
        Op::GetOrInsert(k, v) => {
            let mut called = false;
            let got = t.get_or_insert_with(k, || {
                called = true;
                v
            });
            let inserted = match (got, model.get(&k).copied()) {
                (Ok((r, inserted)), Some(old)) => {
                    assert!(!inserted && *r == old, "{op:?}: got {r}, {inserted}");
                    *r = old.wrapping_add(1);
                    model.insert(k, old.wrapping_add(1));
                    inserted
                }
                (Ok((r, inserted)), None) => {
                    assert!(room && inserted && *r == v, "{op:?}: got {r}, {inserted}");
                    *r = v.wrapping_add(1);
                    model.insert(k, v.wrapping_add(1));
                    inserted
                }
                (Err(Full), old) => {
                    assert!(old.is_none() && !room, "{op:?}: unexpected Full");
                    false
                }
            };
            assert_eq!(called, inserted, "{op:?}: make called iff inserted");
            assert_eq!(
                t.get(k),
                model.get(&k),
                "{op:?}: write through the reference"
            );
        }
        Op::Modify(k, d) => {
            let got = t.get_mut(k).map(|r| {
                *r = r.wrapping_add(d);
                *r
            });
            let want = model.get_mut(&k).map(|r| {
                *r = r.wrapping_add(d);
                *r
            });
            assert_eq!(got, want, "{op:?}");
        }
    }
    assert_eq!(t.len(), model.len(), "len after {op:?}");
    assert_eq!(t.is_empty(), model.is_empty());
    t.check_invariants();
}

fn assert_same_contents(t: &Table<u64>, model: &HashMap<u64, u64>) {
    let mut seen = HashMap::with_capacity(t.len());
    for (k, &v) in t.iter() {
        assert!(seen.insert(k, v).is_none(), "key {k} iterated twice");
    }
    assert_eq!(&seen, model);
    for (&k, v) in model {
        assert_eq!(t.get(k), Some(v));
    }
    let stats = t.probe_stats();
    assert_eq!(stats.len, model.len());
    assert!(stats.max <= t.max_probe_seen());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// Random op sequences agree with the HashMap model, op by op and in full at the end.
    #[test]
    fn matches_hashmap((cap, seed, initial, ops) in scenario()) {
        let mut t: Table<u64> = Table::try_starting_with(cap, seed, initial).unwrap();
        prop_assert_eq!(t.capacity(), cap as usize);
        let mut model = HashMap::new();
        for op in &ops {
            apply(&mut t, &mut model, op);
        }
        assert_same_contents(&t, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Filling to capacity then draining in random order keeps every remaining key
    /// reachable and the Robin Hood order intact (long clusters, backward shifts, wrap).
    #[test]
    fn fill_then_drain(
        cap in capacity(),
        seed in any::<u64>(),
        initial in initial_slots(),
        dense in any::<bool>(),
        order_seed in any::<u64>(),
    ) {
        let mut t: Table<u64> = Table::try_starting_with(cap, seed, initial).unwrap();
        // Dense sequential ids (like user ids) or scattered ones.
        let keys: Vec<u64> = (1..=u64::from(cap))
            .map(|i| if dense { i } else { i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 })
            .collect();
        for &k in &keys {
            prop_assert_eq!(t.insert(k, !k), Ok(None));
        }
        prop_assert_eq!(t.len(), t.capacity());
        prop_assert_eq!(t.insert(u64::MAX - 1, 0), Err(Full));
        t.check_invariants();
        // Drain in a pseudo-random order (a rotation and stride coprime to the length).
        let n = keys.len();
        let mut stride = (order_seed as usize % n) | 1;
        while gcd(stride, n) != 1 {
            stride += 2;
        }
        let start = (order_seed >> 32) as usize % n;
        for step in 0..n {
            let k = keys[(start + step * stride) % n];
            prop_assert_eq!(t.remove(k), Some(!k));
            prop_assert_eq!(t.get(k), None);
            t.check_invariants();
        }
        prop_assert!(t.is_empty());
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
