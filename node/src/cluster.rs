//! This member's view of the cluster: the member map read from etcd, its own lease, and which
//! users it is primary for. A state machine in quinn-proto's manner: what the daemon's etcd
//! thread learnt goes in (`handle_etcd`, with the time), the hub asks `is_primary` per
//! transition, and `poll_timeout` says when roles may change without news (a lease about to
//! lapse, a member turning warm).
//!
//! **Every replica keeps the state; only the primary pushes.** Gateways send each heartbeat
//! entry to every member of the user's replica set (`presenced_wire::cluster::Placement`), so
//! each replica's shards apply them all and need to know nothing of the cluster. The hub pushes
//! a user's transitions only while this member is the user's primary: the first warm member of
//! its replica set in the map it holds.
//!
//! **A member that cannot renew its lease steps down before it lapses.** Each renewal says
//! when it was sent and for how long etcd granted the lease; from `sent + ttl − skew` on, with
//! no newer renewal, this member is primary for no one, so by the time etcd lets the lease
//! lapse and the others take over, it has stopped (two primaries for at most the clock-skew
//! allowance). A renewal makes it primary again under the map it holds.
//!
//! **An etcd that no member reaches stops no one.** When etcd is down for every member, no
//! lease can lapse and no member can take another's users, so stepping down would only stop
//! all pushes. The daemon asks the other members over their push links (MAP, answered with
//! their map, which says whether they reach etcd: `EtcdEvent::Peer`). A member unsure of its
//! lease stays primary only while **every** other member of its map said, within one lease,
//! that it does not reach etcd either; one that reaches it, or one that does not answer, and
//! this member steps down as above. A member cut off from etcd alone (or from everyone) thus
//! steps down; a cluster whose etcd is down keeps pushing.
//!
//! **Without etcd the map stays.** An unreachable etcd changes nothing here but the lease: the
//! last map read is kept and served. A map only moves forwards (a read of an older revision is
//! ignored), and a value that does not parse, names another member than its key, or is not a
//! valid member is skipped and counted, never trusted.
//!
//! **Gaining a user means re-querying it.** While another member was primary, this one pushed
//! nothing for the user: a gateway that subscribed here early missed those transitions. The hub
//! compares the roles before and after each change ([`Roles`]) and sends a LAGGED naming the
//! users gained to the links subscribed to them, which re-query and so see the current state.

use presenced_core::clock::Now;
use presenced_wire::cluster::{Member, MemberMap, Placement};
use std::collections::BTreeMap;

/// What the etcd thread learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdEvent {
    /// A lease was granted or renewed: the request was sent at `sent_us` (monotonic µs), and
    /// etcd granted `ttl_ms` from then. `fresh` for a new lease (this member's key was put
    /// again, with the warm time the etcd thread gave it).
    Lease {
        /// When the request left, monotonic µs.
        sent_us: u64,
        /// What etcd granted, ms (0: the lease is gone).
        ttl_ms: u64,
        /// A new lease (not a renewal).
        fresh: bool,
    },
    /// Every key under the cluster's member prefix, as read at `revision`.
    Members {
        /// The read's etcd revision.
        revision: u64,
        /// `(member id from the key, value)`.
        values: Vec<(String, Vec<u8>)>,
    },
    /// etcd could not be reached or answered an error.
    Unreachable,
    /// Another member's map, as its push link answered a MAP request (it says whether that
    /// member reaches etcd).
    Peer(Box<MemberMap>),
}

/// The cluster's settings and this member's own entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This member's entry (its id, addresses and warm time).
    pub member: Member,
    /// Replicas of each user.
    pub replicas: u16,
    /// The lease etcd grants, ms: a peer's word that it does not reach etcd holds this long.
    pub lease_ms: u64,
    /// How long before its lease lapses this member stops acting as primary, ms.
    pub skew_ms: u64,
}

/// Counters of the cluster view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Member maps read from etcd and taken.
    pub maps: u64,
    /// Values under the member prefix skipped (not JSON of a member, another id than the key's,
    /// an invalid member), and peers' maps skipped (invalid, or from no other member).
    pub bad_values: u64,
    /// Times etcd was unreachable.
    pub etcd_errors: u64,
    /// Times this member stepped down from active (its lease about to lapse unrenewed).
    pub step_downs: u64,
    /// Maps in which a member that was there is gone while this one is active: the users whose
    /// primary it was fall to their next replica.
    pub takeovers: u64,
}

/// What this member is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in the map (yet): primary for no one.
    Joining,
    /// In the map, with a live lease: primary for its users.
    Active,
    /// Its lease is about to lapse or lapsed unrenewed: primary for no one.
    SteppedDown,
}

impl Role {
    /// Lower-case name, for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Joining => "joining",
            Role::Active => "active",
            Role::SteppedDown => "stepped_down",
        }
    }
}

/// Who is primary for a user at one moment: compared before and after a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    placement: Placement,
    /// This member's index in the map, while it is active.
    own: Option<usize>,
    now_ms: u64,
}

impl Roles {
    /// Whether this member is the user's primary.
    #[inline]
    pub fn is_primary(&self, user: u64) -> bool {
        self.own.is_some() && self.placement.primary(user, self.now_ms) == self.own
    }

    /// Whether the roles may differ from `other` for some user.
    pub fn differs(&self, other: &Roles) -> bool {
        self.own.is_some() != other.own.is_some()
            || (self.own.is_some()
                && (self.placement != other.placement
                    || self
                        .placement
                        .next_warm_ms(other.now_ms.min(self.now_ms))
                        .is_some_and(|w| w <= self.now_ms.max(other.now_ms))))
    }
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A new map was taken.
    Map {
        /// Its revision.
        revision: u64,
        /// Its members.
        members: usize,
    },
    /// A value was skipped.
    BadValue {
        /// The key's member id.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The role changed.
    Role(Role),
}

/// Events kept for `poll_event` before older ones are dropped.
const EVENTS_MAX: usize = 64;

/// This member's view of the cluster (see the module docs).
pub struct Cluster {
    config: ClusterConfig,
    map: MemberMap,
    roles: Roles,
    role: Role,
    /// Monotonic µs from which this member is no longer sure of its lease.
    lease_until_us: Option<u64>,
    etcd_ok: bool,
    /// Each other member's last word on etcd: when it came (monotonic µs) and whether that
    /// member reached etcd.
    peers: BTreeMap<String, (u64, bool)>,
    stats: ClusterStats,
    events: Vec<ClusterEvent>,
}

impl Cluster {
    /// A member that has read no map and holds no lease.
    pub fn new(config: ClusterConfig) -> Cluster {
        let map = MemberMap {
            from: config.member.id.clone(),
            revision: 0,
            replicas: config.replicas,
            etcd: false,
            members: Vec::new(),
        };
        Cluster {
            config,
            map,
            roles: Roles::default(),
            role: Role::Joining,
            lease_until_us: None,
            etcd_ok: false,
            peers: BTreeMap::new(),
            stats: ClusterStats::default(),
            events: Vec::new(),
        }
    }

    /// What the etcd thread learnt, at `now`.
    pub fn handle_etcd(&mut self, now: Now, event: EtcdEvent) {
        match event {
            EtcdEvent::Lease {
                sent_us, ttl_ms, ..
            } => {
                self.etcd_ok = true;
                self.lease_until_us = (ttl_ms > 0).then(|| {
                    sent_us.saturating_add(ttl_ms.saturating_sub(self.config.skew_ms) * 1_000)
                });
            }
            EtcdEvent::Members { revision, values } => {
                self.etcd_ok = true;
                self.take_map(revision, values);
            }
            EtcdEvent::Unreachable => {
                if self.etcd_ok {
                    self.stats.etcd_errors += 1;
                }
                self.etcd_ok = false;
            }
            EtcdEvent::Peer(map) => {
                let known = self.map.member(&map.from).is_some();
                if map.check().is_err() || !known || map.from == self.config.member.id {
                    self.stats.bad_values += 1;
                } else {
                    self.peers.insert(map.from.clone(), (now.mono_us, map.etcd));
                }
            }
        }
        self.map.etcd = self.etcd_ok;
        self.handle_timeout(now);
    }

    /// Roles as of `now`: a lease that lapsed, a member that turned warm.
    pub fn handle_timeout(&mut self, now: Now) {
        let sure = self.lease_until_us.is_some_and(|until| now.mono_us < until)
            || (self.lease_until_us.is_some() && self.vouched_until(now).is_some());
        let own = self
            .map
            .members
            .iter()
            .position(|m| m.id == self.config.member.id);
        let role = match (own, sure) {
            (None, _) => Role::Joining,
            (Some(_), true) => Role::Active,
            (Some(_), false) => Role::SteppedDown,
        };
        if role != self.role {
            if self.role == Role::Active && role == Role::SteppedDown {
                self.stats.step_downs += 1;
            }
            self.role = role;
            self.event(ClusterEvent::Role(role));
        }
        self.roles.own = own.filter(|_| role == Role::Active);
        self.roles.now_ms = now.wall_ms;
    }

    /// While etcd is out of reach: until when every other member of the map has said it does
    /// not reach etcd either (monotonic µs), if all have within one lease and none said it
    /// does.
    fn vouched_until(&self, now: Now) -> Option<u64> {
        if self.etcd_ok {
            return None;
        }
        let window_us = self.config.lease_ms * 1_000;
        let mut until = u64::MAX;
        for m in &self.map.members {
            if m.id == self.config.member.id {
                continue;
            }
            let (at, reaches_etcd) = *self.peers.get(&m.id)?;
            let expires = at.saturating_add(window_us);
            if reaches_etcd || expires <= now.mono_us {
                return None;
            }
            until = until.min(expires);
        }
        Some(until)
    }

    /// When roles may next change without news, monotonic µs: the lease's step-down time (or
    /// the end of the peers' word), or the next member turning warm (given `now` to map wall
    /// time onto monotonic time).
    pub fn poll_timeout(&self, now: Now) -> Option<u64> {
        let lease = self
            .lease_until_us
            .filter(|_| self.role == Role::Active)
            .map(|until| match self.vouched_until(now) {
                Some(vouched) if until <= now.mono_us => vouched,
                _ => until,
            });
        let warm = self
            .roles
            .placement
            .next_warm_ms(now.wall_ms)
            .map(|w| now.mono_us + (w - now.wall_ms) * 1_000);
        match (lease, warm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The roles now (for the hub to compare with those after a change).
    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// Whether this member is the user's primary now.
    #[inline]
    pub fn is_primary(&self, user: u64) -> bool {
        self.roles.is_primary(user)
    }

    /// The member map this member holds.
    pub fn map(&self) -> &MemberMap {
        &self.map
    }

    /// This member's entry.
    pub fn member(&self) -> &Member {
        &self.config.member
    }

    /// What this member is now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The next event worth a log line.
    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    fn event(&mut self, event: ClusterEvent) {
        if self.events.len() < EVENTS_MAX {
            self.events.push(event);
        }
    }

    fn take_map(&mut self, revision: u64, values: Vec<(String, Vec<u8>)>) {
        if revision < self.map.revision {
            return;
        }
        let (members, bad) = parse_members(values);
        for (key, reason) in bad {
            self.stats.bad_values += 1;
            self.event(ClusterEvent::BadValue { key, reason });
        }
        let left = self
            .map
            .members
            .iter()
            .any(|old| !members.iter().any(|m| m.id == old.id));
        if left && self.role == Role::Active {
            self.stats.takeovers += 1;
        }
        self.map.revision = revision;
        self.map.members = members;
        self.roles.placement = self.map.placement();
        self.stats.maps += 1;
        let event = ClusterEvent::Map {
            revision,
            members: self.map.members.len(),
        };
        self.event(event);
    }
}

/// The members among the values under the cluster's member prefix (`(id from the key, value)`),
/// sorted by id, one per id, at most [`MAX_MEMBERS`](presenced_wire::cluster::MAX_MEMBERS);
/// and the values skipped, as `(key, why)`: not a member's JSON, another id than the key's, an
/// invalid member, one more than a map holds. One rule for the hub's map and for the etcd
/// thread's list of peers to probe, so both see the same members.
pub fn parse_members(values: Vec<(String, Vec<u8>)>) -> (Vec<Member>, Vec<(String, String)>) {
    let mut members = Vec::with_capacity(values.len());
    let mut bad = Vec::new();
    for (key, value) in values {
        let member = match serde_json::from_slice::<Member>(&value) {
            Ok(m) if m.id != key => Err(format!("the value names member {:?}", m.id)),
            Ok(m) => m.check().map(|()| m).map_err(|e| e.to_string()),
            Err(e) => Err(format!("not a member's JSON: {e}")),
        };
        match member {
            Ok(m) if members.len() < presenced_wire::cluster::MAX_MEMBERS => members.push(m),
            Ok(m) => bad.push((m.id, "more members than a map holds".to_owned())),
            Err(reason) => bad.push((key, reason)),
        }
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members.dedup_by(|a, b| a.id == b.id);
    (members, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, warm_at_ms: u64) -> Member {
        Member {
            id: id.to_owned(),
            link: format!("127.0.0.1:{}", 7000 + id.len()),
            heartbeat: "127.0.0.1:7001".to_owned(),
            warm_at_ms,
        }
    }

    fn value(m: &Member) -> (String, Vec<u8>) {
        (m.id.clone(), serde_json::to_vec(m).unwrap())
    }

    fn at(s: u64) -> Now {
        Now {
            mono_us: s * 1_000_000,
            wall_ms: 1_000_000 + s * 1_000,
        }
    }

    fn cluster(id: &str) -> Cluster {
        Cluster::new(ClusterConfig {
            member: member(id, 0),
            replicas: 2,
            lease_ms: 2_000,
            skew_ms: 500,
        })
    }

    fn members(ids: &[&str]) -> EtcdEvent {
        EtcdEvent::Members {
            revision: 10,
            values: ids.iter().map(|id| value(&member(id, 0))).collect(),
        }
    }

    /// Users 1..n this member is primary for.
    fn primaries(c: &Cluster, n: u64) -> usize {
        (1..n).filter(|&u| c.is_primary(u)).count()
    }

    #[test]
    fn each_user_has_one_primary_among_active_members() {
        let ids = ["a", "b", "c"];
        let mut cs: Vec<Cluster> = ids.iter().map(|id| cluster(id)).collect();
        for c in &mut cs {
            c.handle_etcd(at(0), members(&ids));
            let lease = EtcdEvent::Lease {
                sent_us: 0,
                ttl_ms: 2_000,
                fresh: true,
            };
            c.handle_etcd(at(0), lease);
            assert_eq!(c.role(), Role::Active);
        }
        for user in 1..5_000 {
            assert_eq!(cs.iter().filter(|c| c.is_primary(user)).count(), 1);
        }
    }

    #[test]
    fn a_member_steps_down_before_its_lease_lapses_and_comes_back_on_renewal() {
        let mut c = cluster("a");
        c.handle_etcd(at(0), members(&["a", "b"]));
        assert_eq!(c.role(), Role::SteppedDown, "no lease yet");
        let lease = |sent_us| EtcdEvent::Lease {
            sent_us,
            ttl_ms: 2_000,
            fresh: false,
        };
        c.handle_etcd(at(0), lease(0));
        let user = (1..100)
            .find(|&u| c.is_primary(u))
            .expect("a is primary for some");
        // Stepping down is due at 2 s − 500 ms.
        assert_eq!(c.poll_timeout(at(1)), Some(1_500_000));
        c.handle_etcd(at(1), EtcdEvent::Unreachable);
        assert!(c.is_primary(user), "the lease still holds");
        let late = Now {
            mono_us: 1_500_000,
            wall_ms: 1_001_500,
        };
        c.handle_timeout(late);
        assert_eq!(c.role(), Role::SteppedDown);
        assert!(!c.is_primary(user));
        assert_eq!(c.stats().step_downs, 1);
        c.handle_etcd(at(3), lease(3_000_000));
        assert!(c.is_primary(user));
    }

    #[test]
    fn bad_values_are_skipped_and_counted_and_old_maps_ignored() {
        let mut c = cluster("a");
        let good = value(&member("a", 0));
        let values = vec![
            good.clone(),
            ("b".to_owned(), b"{not json".to_vec()),
            ("c".to_owned(), serde_json::to_vec(&member("d", 0)).unwrap()),
            (
                "e".to_owned(),
                serde_json::to_vec(&member("e e", 0)).unwrap(),
            ),
        ];
        c.handle_etcd(
            at(0),
            EtcdEvent::Members {
                revision: 5,
                values,
            },
        );
        assert_eq!(c.map().members.len(), 1);
        assert_eq!(c.stats().bad_values, 3);
        let older = EtcdEvent::Members {
            revision: 4,
            values: vec![],
        };
        c.handle_etcd(at(0), older);
        assert_eq!(c.map().members.len(), 1);
        assert_eq!(c.map().revision, 5);
    }

    #[test]
    fn a_lost_member_s_users_fall_to_their_next_replica() {
        let mut b = cluster("b");
        let lease = EtcdEvent::Lease {
            sent_us: 0,
            ttl_ms: 60_000,
            fresh: true,
        };
        b.handle_etcd(at(0), lease);
        b.handle_etcd(at(0), members(&["a", "b", "c"]));
        let before = b.roles().clone();
        let n = 20_000;
        let had = primaries(&b, n);
        b.handle_etcd(
            at(1),
            EtcdEvent::Members {
                revision: 11,
                values: vec![value(&member("b", 0)), value(&member("c", 0))],
            },
        );
        assert!(b.roles().differs(&before));
        assert_eq!(b.stats().takeovers, 1);
        // b gains the users a held with b as their second replica, loses none.
        let gained = (1..n)
            .filter(|&u| !before.is_primary(u) && b.is_primary(u))
            .count();
        assert!(gained > 0);
        assert!((1..n).all(|u| !before.is_primary(u) || b.is_primary(u)));
        assert_eq!(primaries(&b, n), had + gained);
    }

    #[test]
    fn a_warming_member_becomes_primary_when_warm() {
        let mut a = cluster("a");
        let lease = EtcdEvent::Lease {
            sent_us: 0,
            ttl_ms: 600_000,
            fresh: true,
        };
        a.handle_etcd(at(0), lease);
        let warm_at = at(10).wall_ms;
        let values = vec![value(&member("a", warm_at)), value(&member("b", 0))];
        a.handle_etcd(
            at(0),
            EtcdEvent::Members {
                revision: 3,
                values,
            },
        );
        // With two members and two replicas, every user has both: b is primary for all until a
        // is warm, then each is primary for its own.
        assert_eq!(primaries(&a, 1_000), 0);
        assert_eq!(a.poll_timeout(at(0)), Some(at(10).mono_us));
        let before = a.roles().clone();
        a.handle_timeout(at(10));
        assert!(a.roles().differs(&before));
        assert!(primaries(&a, 1_000) > 300);
    }
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            link: "127.0.0.1:1".to_owned(),
            heartbeat: "127.0.0.1:2".to_owned(),
            warm_at_ms: 0,
        }
    }

    fn at_ms(ms: u64) -> Now {
        Now {
            mono_us: ms * 1_000,
            wall_ms: 1_000_000 + ms,
        }
    }

    fn peer(from: &str, etcd: bool) -> EtcdEvent {
        EtcdEvent::Peer(Box::new(MemberMap {
            from: from.to_owned(),
            revision: 1,
            replicas: 2,
            etcd,
            members: vec![member("a"), member("b"), member("c")],
        }))
    }

    /// Member `a` of {a, b, c}, its lease renewed at 0 for 2 s, etcd gone at 1 s.
    fn cut_off() -> Cluster {
        let mut c = Cluster::new(ClusterConfig {
            member: member("a"),
            replicas: 2,
            lease_ms: 2_000,
            skew_ms: 500,
        });
        let values = ["a", "b", "c"]
            .iter()
            .map(|id| ((*id).to_owned(), serde_json::to_vec(&member(id)).unwrap()))
            .collect();
        c.handle_etcd(
            at_ms(0),
            EtcdEvent::Members {
                revision: 1,
                values,
            },
        );
        let lease = EtcdEvent::Lease {
            sent_us: 0,
            ttl_ms: 2_000,
            fresh: true,
        };
        c.handle_etcd(at_ms(0), lease);
        c.handle_etcd(at_ms(1_000), EtcdEvent::Unreachable);
        c
    }

    #[test]
    fn a_cluster_whose_etcd_is_down_keeps_its_primaries() {
        let mut c = cut_off();
        c.handle_etcd(at_ms(1_200), peer("b", false));
        c.handle_etcd(at_ms(1_300), peer("c", false));
        c.handle_timeout(at_ms(1_600));
        assert_eq!(c.role(), Role::Active, "both others are cut off too");
        // Their word holds one lease: b's ends at 3.2 s.
        assert_eq!(c.poll_timeout(at_ms(1_600)), Some(3_200_000));
        c.handle_timeout(at_ms(3_200));
        assert_eq!(c.role(), Role::SteppedDown, "b said nothing more");
        c.handle_etcd(at_ms(3_300), peer("b", false));
        assert_eq!(c.role(), Role::SteppedDown, "c's word ended at 3.3 s");
        c.handle_etcd(at_ms(3_400), peer("c", false));
        assert_eq!(c.role(), Role::Active);
    }

    #[test]
    fn a_member_cut_off_alone_steps_down() {
        let mut c = cut_off();
        c.handle_etcd(at_ms(1_200), peer("b", false));
        c.handle_etcd(at_ms(1_300), peer("c", true));
        c.handle_timeout(at_ms(1_500));
        assert_eq!(c.role(), Role::SteppedDown, "c reaches etcd");
        // Silence from one member is no word either.
        let mut c = cut_off();
        c.handle_etcd(at_ms(1_200), peer("b", false));
        c.handle_timeout(at_ms(1_500));
        assert_eq!(c.role(), Role::SteppedDown);
    }

    #[test]
    fn a_word_from_no_member_is_skipped() {
        let mut c = cut_off();
        c.handle_etcd(at_ms(1_200), peer("x", false));
        c.handle_etcd(at_ms(1_200), peer("a", false));
        let mut bad = peer("b", false);
        if let EtcdEvent::Peer(m) = &mut bad {
            m.members.push(member("b"));
        }
        c.handle_etcd(at_ms(1_200), bad);
        assert_eq!(c.stats().bad_values, 3);
        c.handle_timeout(at_ms(1_500));
        assert_eq!(c.role(), Role::SteppedDown);
    }
}
