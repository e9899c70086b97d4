//! The peer probe: while etcd is unreachable, this member asks every other member of its last
//! member map, over that member's push link, for its map (MAP, answered with MEMBERS; SPEC.md
//! § P6.14) and hands each answer to the hub as [`EtcdEvent::Peer`]. A map says whether its
//! sender reaches etcd; the hub's `Cluster` keeps this member primary past its unrenewed lease
//! only while every other member said, within one lease, that it does not reach etcd either
//! (ARCHITECTURE.md "The cluster"). Without the probe, an etcd that no member reaches would make
//! every member step down and stop all pushes.
//!
//! It runs as a task on the etcd thread's runtime, told by a watch channel what to do: `None`
//! while etcd answers (no probing, links closed), `Some(members)` while it does not (the last
//! good list read from etcd). A round asks every other member at once, each bounded by
//! `cluster.connect_timeout` (resolving, connecting and the MAP together); rounds come every
//! third of the lease, as renewals do, and sooner ([`RETRY_DIVISOR`]) after a round in which
//! some member did not vouch: members notice an outage at different moments (up to a renewal
//! period plus the timeout apart), and a word that comes late is a step-down. One link per
//! member stays open across rounds; a link that fails is dropped and reconnected next round.
//!
//! An answer is only a claim: the hub checks the map (`MemberMap::check`, a sender of its own
//! map) before it believes it; here a map not sent by the member asked is dropped. An answer
//! that says the member reaches etcd wakes the etcd thread to retry at once
//! ([`ProbeSetup::wake_etcd`]): etcd is back for someone, and every moment this member is
//! without it now it is stepped down.

use crate::etcd::News;
use presenced_client::{ConnectOptions, LinkClient, Trust};
use presenced_node::cluster::EtcdEvent;
use presenced_wire::cluster::{Member, MemberMap};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// After a round in which some member did not vouch, the next comes after the lease over this
/// (instead of a third of it).
pub const RETRY_DIVISOR: u32 = 12;

/// What the probe needs, built by the daemon.
pub struct ProbeSetup {
    /// This member's id (it does not probe itself, and names itself so to the others).
    pub own: String,
    /// Whom to trust as the other members (`cluster.peer_ca`, else `link.cert`).
    pub trust: Trust,
    /// The token its HELLO carries, named by its member id (`cluster.peer_token_file`), for
    /// members whose push links need one (`[links]` in `auth.keys_file`).
    pub token: Option<String>,
    /// The lease's TTL: rounds every third of it.
    pub lease: Duration,
    /// The bound on one member's answer (`cluster.connect_timeout`).
    pub timeout: Duration,
}

/// The other members' maps, as they answer.
pub struct Probe {
    setup: ProbeSetup,
    /// Open links, by member id, with the address each was connected to.
    links: HashMap<String, (String, Arc<LinkClient>)>,
    events: News,
    /// Notified when a member says it reaches etcd.
    wake_etcd: Arc<Notify>,
    /// Whether every member vouched in the last round (for the log: said on a change).
    vouched: Option<bool>,
}

impl Probe {
    /// A probe sending its answers with the etcd thread's own events (`events`).
    pub fn new(setup: ProbeSetup, events: News, wake_etcd: Arc<Notify>) -> Probe {
        Probe {
            setup,
            links: HashMap::new(),
            events,
            wake_etcd,
            vouched: None,
        }
    }

    /// Probes while `outage` holds a member list, until its sender is dropped.
    pub async fn run(mut self, mut outage: watch::Receiver<Option<Vec<Member>>>) {
        let period = self.setup.lease / 3;
        let retry = self.setup.lease / RETRY_DIVISOR;
        loop {
            let members = outage.borrow_and_update().clone();
            let pause = match members {
                None => {
                    self.links.clear();
                    self.vouched = None;
                    if outage.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(members) => {
                    if self.round(&members).await {
                        period
                    } else {
                        retry
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = outage.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Asks every other member once; true if every one answered that it does not reach etcd.
    async fn round(&mut self, members: &[Member]) -> bool {
        self.links
            .retain(|id, (addr, _)| members.iter().any(|m| &m.id == id && &m.link == addr));
        let mut asks = JoinSet::new();
        for m in members.iter().filter(|m| m.id != self.setup.own) {
            let link = self.links.remove(&m.id).map(|(_, l)| l);
            let (member, timeout) = (m.clone(), self.setup.timeout);
            let options = ConnectOptions {
                client_name: self.setup.own.clone(),
                trust: self.setup.trust.clone(),
                server_name: host(&member.link).to_owned(),
                token: self.setup.token.clone(),
            };
            asks.spawn(async move {
                let answer = tokio::time::timeout(timeout, ask(&member, link, options)).await;
                let answer = answer.unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within cluster.connect_timeout = {} ms",
                        timeout.as_millis()
                    ))
                });
                (member, answer)
            });
        }
        let mut vouched = true;
        let mut failures = Vec::new();
        while let Some(done) = asks.join_next().await {
            let Ok((member, answer)) = done else {
                // A task that panicked (never expected: nothing here unwraps what a peer sent).
                vouched = false;
                continue;
            };
            match answer {
                Ok((link, Some(map))) => {
                    self.links
                        .insert(member.id.clone(), (member.link.clone(), link));
                    if map.etcd {
                        vouched = false;
                        self.wake_etcd.notify_one();
                    }
                    self.events.send(EtcdEvent::Peer(Box::new(map)));
                }
                Ok((link, None)) => {
                    self.links
                        .insert(member.id.clone(), (member.link.clone(), link));
                    vouched = false;
                    failures.push(format!("{} sent no map of its own", member.id));
                }
                Err(e) => {
                    vouched = false;
                    failures.push(format!("{} at {}: {e}", member.id, member.link));
                }
            }
        }
        if self.vouched != Some(vouched) {
            if vouched {
                tracing::info!(
                    "peer probe: every other member says it does not reach etcd either: this \
                     member keeps its users"
                );
            } else {
                tracing::warn!(
                    "peer probe: not every other member says it is cut off from etcd too \
                     ({}): this member steps down when its lease runs out",
                    if failures.is_empty() {
                        "one reaches etcd".to_owned()
                    } else {
                        failures.join("; ")
                    }
                );
            }
            self.vouched = Some(vouched);
        }
        vouched
    }
}

/// One member's map over its link (`link`, or a new one made with `options`): the link to
/// keep, and the map if the member sent one of its own in answer.
async fn ask(
    member: &Member,
    link: Option<Arc<LinkClient>>,
    options: ConnectOptions,
) -> Result<(Arc<LinkClient>, Option<MemberMap>), String> {
    let link = match link {
        Some(link) => link,
        None => {
            let addr = resolve(&member.link).await?;
            Arc::new(
                LinkClient::connect(addr, options)
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            )
        }
    };
    let mut maps = link.members_watch();
    maps.borrow_and_update();
    link.map(0).await.map_err(|e| format!("MAP: {e}"))?;
    // A MEMBERS frame comes before the ACK; one taken since the request is the answer (an
    // unchanged watch: none came, or the client ignored it as stale or from no member).
    let map = maps
        .has_changed()
        .unwrap_or(false)
        .then(|| maps.borrow_and_update().clone())
        .flatten()
        .filter(|m| m.from == member.id);
    Ok((link, map))
}

/// The first address `HOST:PORT` resolves to.
async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {addr}: no address"))
}

/// The host of `HOST:PORT` (without an IPv6 address's brackets): the name the member's
/// certificate must carry.
fn host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn the_name_to_check_is_the_host_of_the_advertised_address() {
        assert_eq!(host("presence-1.example:7060"), "presence-1.example");
        assert_eq!(host("10.0.0.5:7060"), "10.0.0.5");
        assert_eq!(host("[::1]:7060"), "::1");
    }
}
