//! Which shard owns a user: a fixed function of the user id and the shard count, shared with
//! gateways (published in the push link's WELCOME and in `wire-format/SPEC.md`).

/// The shard that owns `user` among `shards` (`shards` ≥ 1).
pub fn owner(user: u64, shards: usize) -> usize {
    presenced_wire::shard_of(user, shards as u16) as usize
}
