//! Several hubs, one daemon's figures. With `link.hubs` > 1 each hub serves its own links and
//! reads every shard's transitions, so its link figures are its share of the daemon's while its
//! per-transition counters repeat every other hub's. Each hub thread publishes its share now and
//! then (`Hub::share`), and the hub answering a STATS or a scrape merges the others' latest
//! shares with its own (`Hub::handle_peers`): link figures summed, per-transition figures taken
//! from hub 0 alone, so nothing is counted twice and no link is missing. A cluster member's
//! counters split the same way ([`ClusterCounts`]); its view of the cluster (map, role, etcd's
//! figures) is not shared: every hub reads the same news from the etcd thread and answers with
//! its own.

use presenced_wire::stats::{LinkStats, ShardRole};

/// One hub's own figures, as it last published them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubShare {
    /// The hub's index (0: the one whose per-transition counters are the daemon's).
    pub hub: usize,
    /// Its links' figures and its counters; the server's figures (refused, stalled and
    /// unauthorized links, latency) are not a hub's and stay zero.
    pub link: LinkStats,
    /// Its cluster counters (all zero outside a cluster).
    pub cluster: ClusterCounts,
}

/// A hub's counters of a cluster member: `stale_maps` and `gained` count its own links' MAP
/// requests and subscribed users, `not_primary` and `shards` every transition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// MAP requests of its links answered with this member's map (the gateway held another).
    pub stale_maps: u64,
    /// Users subscribed on its links named in LAGGED frames because this member became their
    /// primary.
    pub gained: u64,
    /// Transitions not pushed because this member was not the user's primary.
    pub not_primary: u64,
    /// Per shard: transitions pushed as primary and kept as a replica.
    pub shards: Vec<ShardRole>,
}

/// The daemon's link figures from every hub's share (each hub once): per-link figures and
/// link counters summed (a user subscribed on links of two hubs counts in each hub's
/// `subscribed_users`), transitions and the pace asked from hub 0's share; the cluster
/// counters likewise. The server's figures are left zero for the caller.
pub fn merge<'a>(shares: impl IntoIterator<Item = &'a HubShare>) -> (LinkStats, ClusterCounts) {
    let mut all = LinkStats::default();
    let mut cluster = ClusterCounts::default();
    for share in shares {
        cluster.stale_maps += share.cluster.stale_maps;
        cluster.gained += share.cluster.gained;
        if share.hub == 0 {
            cluster.not_primary = share.cluster.not_primary;
            cluster.shards.clone_from(&share.cluster.shards);
        }
        let s = &share.link;
        all.links += s.links;
        all.subscribed_users += s.subscribed_users;
        all.firehose_links += s.firehose_links;
        all.events_sent += s.events_sent;
        all.events_dropped += s.events_dropped;
        all.lag_signals += s.lag_signals;
        // Each hub's own sheds: a shard sheds for one hub while another takes the batch.
        all.shard_shed += s.shard_shed;
        all.pace_frames += s.pace_frames;
        all.per_link.extend(s.per_link.iter().cloned());
        if share.hub == 0 {
            all.transitions = s.transitions;
            all.backoff_active = s.backoff_active;
            all.pace_interval_ms = s.pace_interval_ms;
        }
    }
    all.per_link.sort_unstable_by_key(|l| l.id);
    (all, cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::stats::PerLinkStats;

    fn link(id: u32, events_sent: u64) -> PerLinkStats {
        PerLinkStats {
            id,
            name: format!("gw{id}"),
            peer: "127.0.0.1:9".parse().unwrap(),
            queued_bytes: 0,
            subscribed_users: 1,
            firehose: false,
            events_sent,
            events_dropped: 0,
            lag_signals: 0,
        }
    }

    fn share(hub: usize, ids: &[u32], transitions: u64) -> HubShare {
        let per_link: Vec<PerLinkStats> = ids.iter().map(|&id| link(id, 10)).collect();
        HubShare {
            hub,
            link: LinkStats {
                links: ids.len() as u64,
                subscribed_users: ids.len() as u64,
                transitions,
                events_sent: 10 * ids.len() as u64,
                shard_shed: hub as u64,
                pace_frames: 1,
                backoff_active: hub == 0,
                pace_interval_ms: if hub == 0 { 40_000 } else { 0 },
                per_link,
                ..LinkStats::default()
            },
            cluster: ClusterCounts {
                stale_maps: 1,
                gained: ids.len() as u64,
                not_primary: transitions / 2,
                shards: vec![
                    ShardRole {
                        primary: transitions / 2,
                        replica: transitions / 2,
                    };
                    2
                ],
            },
        }
    }

    #[test]
    fn link_figures_are_summed_and_per_transition_ones_taken_from_hub_zero() {
        let shares = [
            share(1, &[1, 4], 700),
            share(0, &[3, 6], 500),
            share(2, &[2], 900),
        ];
        let (all, cluster) = merge(&shares);
        assert_eq!(all.links, 5);
        assert_eq!(all.subscribed_users, 5);
        assert_eq!(all.events_sent, 50);
        assert_eq!(all.shard_shed, 3);
        assert_eq!(all.pace_frames, 3);
        assert_eq!(all.transitions, 500);
        assert!(all.backoff_active);
        assert_eq!(all.pace_interval_ms, 40_000);
        let ids: Vec<u32> = all.per_link.iter().map(|l| l.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 6]);
        assert_eq!((cluster.stale_maps, cluster.gained), (3, 5));
        assert_eq!(cluster.not_primary, 250);
        assert_eq!(cluster.shards, shares[1].cluster.shards);
    }

    #[test]
    fn one_hub_is_its_own_total() {
        let one = share(0, &[1, 2], 500);
        assert_eq!(merge([&one]), (one.link.clone(), one.cluster.clone()));
    }
}
