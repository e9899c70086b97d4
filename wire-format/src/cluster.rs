//! The cluster's member map and placement (SPEC.md § P6.14): which members hold a user's
//! state, and which one of them pushes the user's transitions.
//!
//! One type, [`MemberMap`], is everything a member, a gateway and the tools know of the
//! cluster: each member's value in etcd is a [`Member`] in JSON, and the MEMBERS frame carries
//! a whole map in JSON. Placement is rendezvous hashing ([`Placement`]): each member scores
//! each user, the `replicas` highest scores are the user's replica set, and the first **warm**
//! member of the set (in score order) is the user's primary. Adding or removing a member moves
//! only the users whose replica set it enters or leaves. Every side computes it alike from the
//! same map: a gateway sends each heartbeat entry to every replica and subscribes at the
//! primary; each member pushes the transitions of the users it is primary for.
//!
//! No function here panics, whatever the map holds: [`MemberMap::check`] says what is wrong
//! with one read from a peer.

use crate::hash::mix64;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most members in one map (a MEMBERS frame of this many fits the smallest frame limit).
pub const MAX_MEMBERS: usize = 128;

/// Longest member id, cluster name and address, bytes.
pub const MAX_ID_LEN: usize = 64;

/// Most replicas of one user.
pub const MAX_REPLICAS: u16 = 8;

/// One member: its id and addresses, and from when it may be primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's id (`cluster.member`): 1–64 bytes of `A–Z a–z 0–9 . _ -`.
    pub id: String,
    /// Its push link, `HOST:PORT` (QUIC).
    pub link: String,
    /// Its shared heartbeat port, `HOST:PORT` (UDP).
    pub heartbeat: String,
    /// Unix ms from which it is warm: it has seen every heartbeat for one timeout, so it may be
    /// primary.
    pub warm_at_ms: u64,
}

/// The member map as one member sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMap {
    /// The member that says so.
    pub from: String,
    /// The etcd revision the map was read at (0: none read yet). Maps only move forwards.
    pub revision: u64,
    /// Replicas of each user (`cluster.replicas`).
    pub replicas: u16,
    /// Whether `from` reaches etcd now (else this is the last map it read).
    pub etcd: bool,
    /// The members, sorted by id, each once.
    pub members: Vec<Member>,
}

/// What is wrong with a member map or a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// More than [`MAX_MEMBERS`].
    TooManyMembers(usize),
    /// An id that is empty, too long or has other characters.
    BadId(String),
    /// An address that is empty or too long.
    BadAddress(String),
    /// The same id twice.
    DuplicateMember(String),
    /// `replicas` of 0 or above [`MAX_REPLICAS`].
    BadReplicas(u16),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::TooManyMembers(n) => write!(f, "{n} members, more than {MAX_MEMBERS}"),
            MapError::BadId(id) => write!(
                f,
                "member id {id:?}: want 1-{MAX_ID_LEN} bytes of A-Z a-z 0-9 . _ -"
            ),
            MapError::BadAddress(a) => write!(f, "address {a:?}: want 1-{MAX_ID_LEN} bytes"),
            MapError::DuplicateMember(id) => write!(f, "member id {id:?} twice"),
            MapError::BadReplicas(n) => write!(f, "replicas {n}: want 1-{MAX_REPLICAS}"),
        }
    }
}

impl std::error::Error for MapError {}

/// Whether `id` is a valid member id (or cluster name): 1–64 bytes of `A–Z a–z 0–9 . _ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Member {
    /// What is wrong with the member, if anything.
    pub fn check(&self) -> Result<(), MapError> {
        if !valid_id(&self.id) {
            return Err(MapError::BadId(self.id.clone()));
        }
        for address in [&self.link, &self.heartbeat] {
            if address.is_empty() || address.len() > MAX_ID_LEN {
                return Err(MapError::BadAddress(address.clone()));
            }
        }
        Ok(())
    }
}

impl MemberMap {
    /// What is wrong with the map, if anything: its members' ids and addresses, their order
    /// aside (a map read from a peer is sorted by [`MemberMap::sort`] after its check).
    pub fn check(&self) -> Result<(), MapError> {
        if self.members.len() > MAX_MEMBERS {
            return Err(MapError::TooManyMembers(self.members.len()));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(MapError::BadReplicas(self.replicas));
        }
        if !valid_id(&self.from) {
            return Err(MapError::BadId(self.from.clone()));
        }
        let mut ids: Vec<&str> = Vec::with_capacity(self.members.len());
        for m in &self.members {
            m.check()?;
            ids.push(&m.id);
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w.first() == w.get(1)) {
            let id = w.first().copied().unwrap_or_default();
            return Err(MapError::DuplicateMember(id.to_owned()));
        }
        Ok(())
    }

    /// Sorts the members by id.
    pub fn sort(&mut self) {
        self.members.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The map's placement.
    pub fn placement(&self) -> Placement {
        Placement::new(
            self.members.iter().map(|m| (m.id.as_str(), m.warm_at_ms)),
            self.replicas,
        )
    }
}

/// A member's seed in the rendezvous score: FNV-1a of its id, mixed.
pub fn member_seed(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// A member's score for a user: the highest scores are the user's replicas, in that order.
#[inline]
pub fn score(user: u64, seed: u64) -> u64 {
    mix64(user ^ seed)
}

/// Placement over one map: per member, its seed and when it is warm; the index in the map's
/// order is what [`Placement::replicas`] and [`Placement::primary`] return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    seeds: Vec<u64>,
    warm_at_ms: Vec<u64>,
    replicas: usize,
}

/// A user's replica set: indexes into the map's members, highest score first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaSet {
    members: [u8; MAX_REPLICAS as usize],
    len: u8,
}

impl ReplicaSet {
    /// The members' indexes, highest score first.
    pub fn as_slice(&self) -> &[u8] {
        self.members.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether member `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        self.as_slice().iter().any(|&m| usize::from(m) == index)
    }
}

impl Placement {
    /// Placement over `(id, warm_at_ms)` per member, in the map's order, with `replicas` per
    /// user (at least 1, at most [`MAX_REPLICAS`] and the number of members).
    pub fn new<'a>(members: impl Iterator<Item = (&'a str, u64)>, replicas: u16) -> Placement {
        let (seeds, warm_at_ms): (Vec<u64>, Vec<u64>) =
            members.map(|(id, warm)| (member_seed(id), warm)).unzip();
        let replicas = usize::from(replicas.clamp(1, MAX_REPLICAS)).min(seeds.len());
        Placement {
            seeds,
            warm_at_ms,
            replicas,
        }
    }

    /// Members in the map.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether the map has no member.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// The user's replica set: the members with the highest scores, highest first (ties, which
    /// need two members' seeds to collide, go to the earlier member).
    pub fn replicas(&self, user: u64) -> ReplicaSet {
        let mut set = ReplicaSet {
            members: [0; MAX_REPLICAS as usize],
            len: 0,
        };
        let mut scores = [0u64; MAX_REPLICAS as usize];
        for (i, &seed) in self.seeds.iter().enumerate() {
            let s = score(user, seed);
            let len = usize::from(set.len);
            // Insertion into the top `replicas`, kept sorted by score, highest first.
            let mut at = len;
            while at > 0 && scores.get(at - 1).is_some_and(|&prev| prev < s) {
                at -= 1;
            }
            if at >= self.replicas {
                continue;
            }
            let end = (len + 1).min(self.replicas);
            for j in (at + 1..end).rev() {
                if let (Some(&sc), Some(&m)) = (scores.get(j - 1), set.members.get(j - 1)) {
                    if let (Some(ds), Some(dm)) = (scores.get_mut(j), set.members.get_mut(j)) {
                        *ds = sc;
                        *dm = m;
                    }
                }
            }
            if let (Some(ds), Some(dm)) = (scores.get_mut(at), set.members.get_mut(at)) {
                *ds = s;
                *dm = i as u8;
            }
            set.len = end as u8;
        }
        set
    }

    /// The user's primary at `now_ms`: the first warm member of its replica set, or its first
    /// member when none is warm; `None` for an empty map.
    pub fn primary(&self, user: u64, now_ms: u64) -> Option<usize> {
        let set = self.replicas(user);
        let warm = set.as_slice().iter().find(|&&m| {
            self.warm_at_ms
                .get(usize::from(m))
                .is_some_and(|&w| w <= now_ms)
        });
        warm.or(set.as_slice().first()).map(|&m| usize::from(m))
    }

    /// The earliest `warm_at_ms` after `now_ms` (when a primary may change without the map
    /// changing).
    pub fn next_warm_ms(&self, now_ms: u64) -> Option<u64> {
        self.warm_at_ms
            .iter()
            .copied()
            .filter(|&w| w > now_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(ids: &[&str], replicas: u16) -> MemberMap {
        MemberMap {
            from: ids.first().copied().unwrap_or("a").to_owned(),
            revision: 1,
            replicas,
            etcd: true,
            members: ids
                .iter()
                .map(|id| Member {
                    id: (*id).to_owned(),
                    link: format!("{id}:1"),
                    heartbeat: format!("{id}:2"),
                    warm_at_ms: 0,
                })
                .collect(),
        }
    }

    /// The reference: every member scored, sorted.
    fn reference(m: &MemberMap, user: u64) -> Vec<String> {
        let mut scored: Vec<(u64, &str)> = m
            .members
            .iter()
            .map(|x| (score(user, member_seed(&x.id)), x.id.as_str()))
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        scored
            .into_iter()
            .take(usize::from(m.replicas).min(m.members.len()))
            .map(|(_, id)| id.to_owned())
            .collect()
    }

    #[test]
    fn replica_sets_are_the_highest_scores() {
        for n in 1..=9 {
            let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            for replicas in 1..=4 {
                let m = map(&refs, replicas);
                let p = m.placement();
                for user in 1..2_000u64 {
                    let got: Vec<String> = p
                        .replicas(user)
                        .as_slice()
                        .iter()
                        .map(|&i| m.members[usize::from(i)].id.clone())
                        .collect();
                    assert_eq!(got, reference(&m, user), "n {n} replicas {replicas}");
                }
            }
        }
    }

    #[test]
    fn adding_a_member_moves_only_the_users_it_gains() {
        let before = map(&["a", "b", "c"], 2);
        let after = map(&["a", "b", "c", "d"], 2);
        let (pb, pa) = (before.placement(), after.placement());
        let mut moved = 0;
        for user in 1..20_000u64 {
            let set = |m: &MemberMap, p: &Placement| -> Vec<String> {
                let s = p.replicas(user);
                s.as_slice()
                    .iter()
                    .map(|&i| m.members[usize::from(i)].id.clone())
                    .collect()
            };
            let (b, a) = (set(&before, &pb), set(&after, &pa));
            if a.contains(&"d".to_owned()) {
                moved += 1;
            } else {
                assert_eq!(a, b, "user {user} moved between old members");
            }
        }
        // d gains about half of the users (2 of 4 replicas each).
        assert!((8_000..12_000).contains(&moved), "{moved}");
    }

    #[test]
    fn the_primary_is_the_first_warm_replica() {
        let mut m = map(&["a", "b", "c"], 2);
        let user = 42;
        let first = m.placement().replicas(user).as_slice()[0];
        let second = m.placement().replicas(user).as_slice()[1];
        m.members[usize::from(first)].warm_at_ms = 1_000;
        let p = m.placement();
        assert_eq!(p.primary(user, 999), Some(usize::from(second)));
        assert_eq!(p.primary(user, 1_000), Some(usize::from(first)));
        assert_eq!(p.next_warm_ms(500), Some(1_000));
        // None warm: the first.
        for x in &mut m.members {
            x.warm_at_ms = 5_000;
        }
        assert_eq!(m.placement().primary(user, 0), Some(usize::from(first)));
        assert_eq!(Placement::default().primary(user, 0), None);
    }

    #[test]
    fn bad_maps_are_named() {
        let mut m = map(&["a", "b"], 2);
        assert_eq!(m.check(), Ok(()));
        m.members[1].id = "a".into();
        assert_eq!(m.check(), Err(MapError::DuplicateMember("a".into())));
        m.members[1].id = "bad id".into();
        assert!(matches!(m.check(), Err(MapError::BadId(_))));
        m.members[1].id = "b".into();
        m.replicas = 0;
        assert_eq!(m.check(), Err(MapError::BadReplicas(0)));
        m.replicas = 2;
        m.members[0].link = String::new();
        assert!(matches!(m.check(), Err(MapError::BadAddress(_))));
        assert!(serde_json::from_str::<MemberMap>("{\"from\":1}").is_err());
    }
}
