//! A gateway's rules for a presenced cluster (SPEC.md § P6.14), sans-IO: which member map to
//! believe, where each heartbeat entry goes, where each user is subscribed, and which records
//! and transitions to apply.
//!
//! It exists so that the rules a gateway must follow across map changes and failovers are
//! tested with plain values, like the watcher's ([`crate::watcher`]): the async side only
//! moves frames between links and this core.
//!
//! - [`judge_map`]: a MEMBERS map is taken only if its sender is among its own members (else
//!   the sender left the cluster and its map is stale) and its revision is not older than the
//!   one held. [`LinkClient`](crate::LinkClient) and [`ClusterCore`] both use it.
//! - [`ClusterCore`] keeps the newest map, the users a gateway watches and the member each is
//!   subscribed at. [`poll_subscribe`](ClusterCore::poll_subscribe) says which users to
//!   subscribe where (their primary, when they are not subscribed there);
//!   [`subscribed`](ClusterCore::subscribed) records a SUBSCRIBE that succeeded and returns the
//!   UNSUBSCRIBEs then due at the members the users left (subscribe at the new primary first,
//!   so no transition falls between the two). [`link_lost`](ClusterCore::link_lost) forgets
//!   the subscriptions of a member whose link closed, so the next poll places them again.
//! - Records and transitions are applied only forwards by version, per user
//!   ([`apply_record`](ClusterCore::apply_record), [`apply_event`](ClusterCore::apply_event)),
//!   whichever member sends them: versions a subscriber sees keep growing across a failover.
//! - [`heartbeat_targets`](ClusterCore::heartbeat_targets): every replica of a user gets each
//!   of its heartbeat entries.
//! - [`ClusterHeartbeats`] (`heartbeats.rs`) sends them so, and [`ClusterLink`] (`link.rs`)
//!   drives member links by these rules: the two parts that do IO.

mod heartbeats;
mod link;

pub use heartbeats::ClusterHeartbeats;
pub use link::{ClusterLink, ClusterPush};

use presenced_wire::cluster::{Member, MemberMap, Placement};
use presenced_wire::link::{Event, PresenceRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a gateway does with a member map a member sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapVerdict {
    /// Take it: its revision is the held one's or newer.
    Accept,
    /// Ignore it: `from` is not among its members (the sender is no member; its map is stale).
    NotAMember,
    /// Ignore it: older than the map held.
    Stale,
}

/// Whether to take `map` when holding `held` (SPEC.md § P6.14).
pub fn judge_map(held: Option<&MemberMap>, map: &MemberMap) -> MapVerdict {
    if map.member(&map.from).is_none() {
        MapVerdict::NotAMember
    } else if held.is_some_and(|h| map.revision < h.revision) {
        MapVerdict::Stale
    } else {
        MapVerdict::Accept
    }
}

/// Maps a gateway ignored, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredMaps {
    /// Sent by a member absent from its own map.
    pub not_a_member: u64,
    /// Older than the map held.
    pub stale: u64,
}

impl IgnoredMaps {
    /// Counts one verdict (nothing for [`MapVerdict::Accept`]).
    pub fn count(&mut self, verdict: MapVerdict) {
        match verdict {
            MapVerdict::Accept => {}
            MapVerdict::NotAMember => self.not_a_member += 1,
            MapVerdict::Stale => self.stale += 1,
        }
    }
}

/// The gateway's view of the cluster: the newest map, the watched users, where each is
/// subscribed and the newest version applied per user.
#[derive(Debug, Default)]
pub struct ClusterCore {
    map: Option<MemberMap>,
    placement: Placement,
    /// Watched users → the member they are subscribed at (`None`: nowhere yet).
    watched: BTreeMap<u64, Option<String>>,
    /// The newest version applied, per user.
    versions: HashMap<u64, u64>,
    ignored: IgnoredMaps,
}

impl ClusterCore {
    /// A core holding no map.
    pub fn new() -> ClusterCore {
        ClusterCore::default()
    }

    /// The map held.
    pub fn map(&self) -> Option<&MemberMap> {
        self.map.as_ref()
    }

    /// Maps ignored so far.
    pub fn ignored(&self) -> IgnoredMaps {
        self.ignored
    }

    /// A map a member sent (members sorted by id, as a decoded MEMBERS gives it): taken or
    /// ignored and counted, per [`judge_map`].
    pub fn handle_map(&mut self, map: MemberMap) -> MapVerdict {
        let verdict = judge_map(self.map.as_ref(), &map);
        self.ignored.count(verdict);
        if verdict == MapVerdict::Accept {
            self.placement = map.placement();
            self.map = Some(map);
        }
        verdict
    }

    fn member(&self, index: usize) -> Option<&Member> {
        self.map.as_ref().and_then(|m| m.members.get(index))
    }

    /// The user's primary at `now_ms` (Unix ms).
    pub fn primary(&self, user: u64, now_ms: u64) -> Option<&Member> {
        self.placement
            .primary(user, now_ms)
            .and_then(|i| self.member(i))
    }

    /// The members that get each heartbeat entry of `user`: its replicas, highest score first.
    pub fn heartbeat_targets(&self, user: u64) -> impl Iterator<Item = &Member> {
        let set = self.placement.replicas(user);
        let members: Vec<&Member> = set
            .as_slice()
            .iter()
            .filter_map(|&i| self.member(usize::from(i)))
            .collect();
        members.into_iter()
    }

    /// `users` grouped by their primary's id (QUERY goes there); users with no primary (no map
    /// yet) are left out.
    pub fn route(&self, users: &[u64], now_ms: u64) -> BTreeMap<String, Vec<u64>> {
        let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for &user in users {
            if let Some(m) = self.primary(user, now_ms) {
                by.entry(m.id.clone()).or_default().push(user);
            }
        }
        by
    }

    /// Starts watching `users` (subscribed by the next [`poll_subscribe`](Self::poll_subscribe)).
    pub fn watch(&mut self, users: &[u64]) {
        for &user in users {
            self.watched.entry(user).or_insert(None);
        }
    }

    /// Stops watching `users`: the UNSUBSCRIBEs due, per member.
    pub fn unwatch(&mut self, users: &[u64]) -> BTreeMap<String, Vec<u64>> {
        let mut due: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for user in users {
            if let Some(Some(at)) = self.watched.remove(user) {
                due.entry(at).or_default().push(*user);
            }
            self.versions.remove(user);
        }
        due
    }

    /// Watched users not subscribed at their primary at `now_ms`, grouped by that primary's
    /// id: subscribe them there, then report it with [`subscribed`](Self::subscribed).
    pub fn poll_subscribe(&self, now_ms: u64) -> BTreeMap<String, Vec<u64>> {
        let mut due: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (&user, at) in &self.watched {
            if let Some(primary) = self.primary(user, now_ms) {
                if at.as_deref() != Some(primary.id.as_str()) {
                    due.entry(primary.id.clone()).or_default().push(user);
                }
            }
        }
        due
    }

    /// `users` are now subscribed at `member` (its PRESENCE answer is applied with
    /// [`apply_record`](Self::apply_record)); returns the UNSUBSCRIBEs due at the members they
    /// were subscribed at before, per member. Users no longer watched are left out.
    pub fn subscribed(&mut self, member: &str, users: &[u64]) -> BTreeMap<String, Vec<u64>> {
        let mut due: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for user in users {
            if let Some(at) = self.watched.get_mut(user) {
                if let Some(old) = at.replace(member.to_owned()) {
                    if old != member {
                        due.entry(old).or_default().push(*user);
                    }
                }
            }
        }
        due
    }

    /// `member`'s link closed: its users are subscribed nowhere until the next poll places
    /// them again (at the same member once its link is back, if the map still says so).
    pub fn link_lost(&mut self, member: &str) {
        for at in self.watched.values_mut() {
            if at.as_deref() == Some(member) {
                *at = None;
            }
        }
    }

    /// The member `user` is subscribed at.
    pub fn subscribed_at(&self, user: u64) -> Option<&str> {
        self.watched.get(&user).and_then(|at| at.as_deref())
    }

    /// The watched users subscribed at `member`.
    pub fn watched_at(&self, member: &str) -> Vec<u64> {
        self.watched
            .iter()
            .filter(|(_, at)| at.as_deref() == Some(member))
            .map(|(&user, _)| user)
            .collect()
    }

    /// The members users are subscribed at, each once.
    pub fn members_in_use(&self) -> BTreeSet<&str> {
        self.watched
            .values()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// Applies a PRESENCE record if its version is newer than the user's newest applied (or
    /// the first seen); whether it was.
    pub fn apply_record(&mut self, record: &PresenceRecord) -> bool {
        self.forward(record.user, record.version)
    }

    /// Applies a transition if its version is newer than the user's newest applied; whether
    /// it was.
    pub fn apply_event(&mut self, event: &Event) -> bool {
        self.forward(event.user, event.version)
    }

    fn forward(&mut self, user: u64, version: u64) -> bool {
        match self.versions.get(&user) {
            Some(&held) if version <= held => false,
            _ => {
                self.versions.insert(user, version);
                true
            }
        }
    }

    /// When a primary next changes without the map changing (a member's `warm_at_ms` after
    /// `now_ms`): poll again then.
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        self.placement.next_warm_ms(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::link::{WireCause, WireState};

    fn map(from: &str, revision: u64, ids: &[&str]) -> MemberMap {
        let mut m = MemberMap {
            from: from.into(),
            revision,
            replicas: 2,
            etcd: true,
            members: ids
                .iter()
                .map(|id| Member {
                    id: (*id).into(),
                    link: format!("{id}:7500"),
                    heartbeat: format!("{id}:7400"),
                    warm_at_ms: 0,
                })
                .collect(),
        };
        m.sort();
        m
    }

    fn record(user: u64, version: u64) -> PresenceRecord {
        PresenceRecord {
            user,
            state: WireState::Online,
            last_seen_ms: None,
            version,
        }
    }

    #[test]
    fn maps_from_non_members_and_older_maps_are_ignored_and_counted() {
        let mut core = ClusterCore::new();
        assert_eq!(
            core.handle_map(map("x", 5, &["a", "b"])),
            MapVerdict::NotAMember
        );
        assert!(core.map().is_none());
        assert_eq!(
            core.handle_map(map("a", 5, &["a", "b"])),
            MapVerdict::Accept
        );
        assert_eq!(
            core.handle_map(map("b", 4, &["a", "b", "c"])),
            MapVerdict::Stale
        );
        assert_eq!(core.map().map(|m| m.members.len()), Some(2));
        // The same revision from another member is taken (it may say etcd is lost).
        let mut same = map("b", 5, &["a", "b"]);
        same.etcd = false;
        assert_eq!(core.handle_map(same), MapVerdict::Accept);
        assert_eq!(core.map().map(|m| m.etcd), Some(false));
        assert_eq!(
            core.ignored(),
            IgnoredMaps {
                not_a_member: 1,
                stale: 1
            }
        );
    }

    #[test]
    fn users_are_subscribed_at_their_primary_and_moved_subscribe_first() {
        let mut core = ClusterCore::new();
        core.watch(&[1, 2, 3]);
        assert!(
            core.poll_subscribe(0).is_empty(),
            "no map, nowhere to subscribe"
        );
        core.handle_map(map("a", 1, &["a", "b"]));
        let due = core.poll_subscribe(0);
        for (member, users) in &due {
            for &u in users {
                assert_eq!(
                    core.primary(u, 0).map(|m| m.id.as_str()),
                    Some(member.as_str())
                );
            }
            assert!(core.subscribed(member, users).is_empty());
        }
        assert!(core.poll_subscribe(0).is_empty());

        // A third member: only the users whose primary it becomes move, subscribe first.
        core.handle_map(map("a", 2, &["a", "b", "c"]));
        let before: Vec<Option<String>> = (1..=3)
            .map(|u| core.subscribed_at(u).map(str::to_owned))
            .collect();
        let due = core.poll_subscribe(0);
        for (member, users) in &due {
            let unsubscribe = core.subscribed(member, users);
            for (old, moved) in unsubscribe {
                assert_ne!(old, *member);
                for u in moved {
                    assert_eq!(before[(u - 1) as usize].as_deref(), Some(old.as_str()));
                }
            }
        }
        for u in 1..=3 {
            assert_eq!(
                core.subscribed_at(u),
                core.primary(u, 0).map(|m| m.id.as_str())
            );
        }
        let moved = (1..=3u64)
            .filter(|&u| before[(u - 1) as usize].as_deref() != core.subscribed_at(u))
            .count();
        assert_eq!(moved, due.values().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn a_lost_link_is_placed_again_and_a_warming_primary_waits() {
        let mut core = ClusterCore::new();
        let mut m = map("a", 1, &["a", "b"]);
        core.watch(&[42]);
        core.handle_map(m.clone());
        let first = core.primary(42, 0).map(|x| x.id.clone()).unwrap();
        core.subscribed(&first, &[42]);
        core.link_lost(&first);
        assert_eq!(core.subscribed_at(42), None);
        assert_eq!(core.poll_subscribe(0).get(&first), Some(&vec![42]));

        // The first replica warms until 1000: the other is primary until then.
        for x in &mut m.members {
            if x.id == first {
                x.warm_at_ms = 1_000;
            }
        }
        m.revision = 2;
        core.handle_map(m);
        let other = core.primary(42, 999).map(|x| x.id.clone()).unwrap();
        assert_ne!(other, first);
        assert_eq!(core.next_change_ms(999), Some(1_000));
        assert_eq!(core.poll_subscribe(1_000).get(&first), Some(&vec![42]));
        assert_eq!(
            core.heartbeat_targets(42).count(),
            2,
            "every replica gets the heartbeats"
        );
    }

    #[test]
    fn versions_only_move_forwards_across_members() {
        let mut core = ClusterCore::new();
        assert!(core.apply_record(&record(7, 10)));
        assert!(!core.apply_record(&record(7, 10)));
        // The old primary's late transition, and the new primary's older snapshot.
        let event = |version| Event {
            user: 7,
            state: WireState::Offline,
            prev: WireState::Online,
            cause: WireCause::Timeout,
            at_ms: 0,
            version,
        };
        assert!(!core.apply_event(&event(9)));
        assert!(core.apply_event(&event(11)));
        assert!(!core.apply_record(&record(7, 11)));
        assert!(core.apply_record(&record(8, 1)));
        core.watch(&[7]);
        core.unwatch(&[7]);
        assert!(core.apply_record(&record(7, 1)), "unwatched: forgotten");
    }

    #[test]
    fn queries_go_to_each_users_primary() {
        let mut core = ClusterCore::new();
        assert!(core.route(&[1, 2], 0).is_empty());
        core.handle_map(map("a", 1, &["a", "b", "c"]));
        let routed = core.route(&(1..100).collect::<Vec<_>>(), 0);
        assert_eq!(routed.values().map(Vec::len).sum::<usize>(), 99);
        for (member, users) in routed {
            for u in users {
                assert_eq!(
                    core.primary(u, 0).map(|m| m.id.clone()),
                    Some(member.clone())
                );
            }
        }
    }
}
