//! [`ClusterLink`]: push links to a cluster's members, driven by [`ClusterCore`]'s rules
//! (SPEC.md § P6.14): QUERY and SUBSCRIBE at each user's primary, subscriptions moved when the
//! map changes or a member's link closes, records and transitions passed on only forwards by
//! version.
//!
//! It exists so that a gateway (and the tools and tests) talk to a cluster as to one daemon:
//! one driver task owns the decisions (through the core, under one lock) and a pump task per
//! member link takes its pushes and maps.

use super::ClusterCore;
use crate::{ClientError, ConnectOptions, LinkClient, Push};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::{Event, PresenceRecord};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Mutex, Notify};

/// How often the driver looks again without being woken (reconnects, warm members).
const RETRY: Duration = Duration::from_millis(500);
/// How long a member's link may take to connect before the driver gives up until its next
/// look.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an UNSUBSCRIBE at a member the users moved away from may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a [`ClusterLink`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterPush {
    /// Transitions, each newer than anything reported before for its user.
    Events(Vec<Event>),
    /// Presence records from a (re)subscription or a re-query after LAGGED, each newer than
    /// anything reported before for its user.
    Records(Vec<PresenceRecord>),
    /// A newer member map was taken.
    Map(MemberMap),
    /// A member's link closed; its users are subscribed again where the map says.
    MemberLost(String),
}

struct State {
    core: ClusterCore,
    links: BTreeMap<String, Arc<LinkClient>>,
    /// The address each link in `links` was opened to: a map that gives the member another
    /// (it restarted on other ports) or none (it left) retires the link.
    addresses: BTreeMap<String, String>,
}

impl State {
    /// Whether `link` is the one held for `member`.
    fn holds(&self, member: &str, link: &Arc<LinkClient>) -> bool {
        self.links.get(member).is_some_and(|l| Arc::ptr_eq(l, link))
    }

    /// Retires the links of members the map held no longer lists at the address they were
    /// opened to; their users are placed again. Each retired link is aborted, so a request
    /// waiting on a member that died (a SUBSCRIBE sent just before its kill) fails now, not at
    /// QUIC's idle timeout, and its users are placed again at once.
    fn retire_stale_links(&mut self) {
        let stale: Vec<String> = self
            .links
            .keys()
            .filter(|id| {
                let listed = self.core.map().and_then(|m| m.member(id)).map(|m| &m.link);
                listed != self.addresses.get(*id)
            })
            .cloned()
            .collect();
        for id in stale {
            if let Some(link) = self.links.remove(&id) {
                link.abort("the member left the map");
            }
            self.addresses.remove(&id);
            self.core.link_lost(&id);
        }
    }
}

struct Inner {
    options: ConnectOptions,
    state: Mutex<State>,
    wake: Notify,
    out: mpsc::UnboundedSender<ClusterPush>,
}

/// Push links to the members of a cluster, following its member map.
pub struct ClusterLink {
    inner: Arc<Inner>,
    pushes: mpsc::UnboundedReceiver<ClusterPush>,
    driver: tokio::task::JoinHandle<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ClusterLink {
    /// Connects to the first of `seeds` that answers and is a cluster member, and follows its
    /// map. `options` are used for every member (trust: one CA file holding each member's
    /// certificate, or their CA; every certificate must carry `server_name`). Fails when no
    /// seed answers with a member map.
    pub async fn connect(
        seeds: &[SocketAddr],
        options: ConnectOptions,
    ) -> Result<ClusterLink, ClientError> {
        let mut errors = Vec::new();
        let (tx, pushes) = mpsc::unbounded_channel();
        for &seed in seeds {
            let link = match LinkClient::connect(seed, options.clone()).await {
                Ok(l) => l,
                Err(e) => {
                    errors.push(format!("{seed}: {e}"));
                    continue;
                }
            };
            if let Err(e) = link.map(0).await {
                errors.push(format!("{seed}: {e}"));
                continue;
            }
            let Some(map) = link.members() else {
                errors.push(format!("{seed}: no cluster member"));
                continue;
            };
            let mut core = ClusterCore::new();
            let from = map.from.clone();
            core.handle_map(map);
            let inner = Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    core,
                    links: BTreeMap::new(),
                    addresses: BTreeMap::new(),
                }),
                wake: Notify::new(),
                out: tx,
            });
            let link = Arc::new(link);
            {
                let mut state = inner.state.lock().await;
                let address = state
                    .core
                    .map()
                    .and_then(|m| m.member(&from))
                    .map(|m| m.link.clone());
                state.links.insert(from.clone(), link.clone());
                state
                    .addresses
                    .insert(from.clone(), address.unwrap_or_default());
            }
            tokio::spawn(pump(inner.clone(), from, link));
            let driver = tokio::spawn(drive(inner.clone()));
            return Ok(ClusterLink {
                inner,
                pushes,
                driver,
            });
        }
        Err(ClientError::Connect(format!(
            "no cluster member answered: {}",
            errors.join("; ")
        )))
    }

    /// The member map held.
    pub async fn map(&self) -> Option<MemberMap> {
        self.inner.state.lock().await.core.map().cloned()
    }

    /// Watches `users`: subscribes each at its primary, now and whenever it moves; returns
    /// the records of the first subscriptions (those newer than any reported before).
    pub async fn subscribe(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        self.inner.state.lock().await.core.watch(users);
        place(&self.inner).await
    }

    /// Stops watching `users` (UNSUBSCRIBE where each is subscribed).
    pub async fn unsubscribe(&self, users: &[u64]) -> Result<(), ClientError> {
        let mut state = self.inner.state.lock().await;
        let due = state.core.unwatch(users);
        for (member, users) in due {
            if let Some(link) = state.links.get(&member) {
                link.unsubscribe(&users).await?;
            }
        }
        Ok(())
    }

    /// Presence of `users`, each asked of its primary, in the order given (a user whose
    /// primary cannot be reached fails the whole query).
    pub async fn query(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        let routes = self.inner.state.lock().await.core.route(users, now_ms());
        let mut found = BTreeMap::new();
        for (member, group) in routes {
            let link = link_to(&self.inner, &member).await?;
            for r in link.query(&group).await? {
                found.insert(r.user, r);
            }
        }
        Ok(users.iter().filter_map(|u| found.get(u).copied()).collect())
    }

    /// The next report; `None` once closed.
    pub async fn next(&mut self) -> Option<ClusterPush> {
        self.pushes.recv().await
    }

    /// Closes every member link.
    pub async fn close(self) {
        self.driver.abort();
        let links: Vec<Arc<LinkClient>> = {
            let mut state = self.inner.state.lock().await;
            std::mem::take(&mut state.links).into_values().collect()
        };
        for link in links {
            if let Ok(link) = Arc::try_unwrap(link) {
                link.close().await;
            }
        }
    }
}

/// The link to `member`, connecting it (and starting its pump) if there is none. The state
/// is not held while connecting: a member that does not answer (killed, not yet listening)
/// delays no other link's pushes, and gives up after [`CONNECT_TIMEOUT`].
async fn link_to(inner: &Arc<Inner>, member: &str) -> Result<Arc<LinkClient>, ClientError> {
    let address = {
        let state = inner.state.lock().await;
        if let Some(link) = state.links.get(member) {
            return Ok(link.clone());
        }
        state
            .core
            .map()
            .and_then(|m| m.member(member))
            .map(|m| m.link.clone())
            .ok_or_else(|| ClientError::Config(format!("member {member} is not in the map")))?
    };
    let addr = tokio::net::lookup_host(&address)
        .await?
        .next()
        .ok_or_else(|| ClientError::Config(format!("member {member}: cannot resolve {address}")))?;
    let connect = LinkClient::connect(addr, inner.options.clone());
    let link = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Connect(format!("member {member} at {addr}: no answer")))??;
    let link = Arc::new(link);
    let mut state = inner.state.lock().await;
    if let Some(raced) = state.links.get(member) {
        // Another task connected meanwhile: keep its link.
        return Ok(raced.clone());
    }
    state.links.insert(member.to_owned(), link.clone());
    state.addresses.insert(member.to_owned(), address);
    tokio::spawn(pump(inner.clone(), member.to_owned(), link.clone()));
    Ok(link)
}

/// Subscribes the users not subscribed at their primary there, then unsubscribes them where
/// they were; the records applied (forwards only). Each member's SUBSCRIBE runs on its own
/// task, so a member that does not answer (killed, its lease not yet lapsed) holds up no other
/// member's. The state is held only between the requests, never across one.
async fn place(inner: &Arc<Inner>) -> Result<Vec<PresenceRecord>, ClientError> {
    let due = inner.state.lock().await.core.poll_subscribe(now_ms());
    let mut subscribing = tokio::task::JoinSet::new();
    for (member, users) in due {
        let inner = inner.clone();
        subscribing.spawn(async move {
            let got = match link_to(&inner, &member).await {
                Ok(link) => link.subscribe(&users).await,
                Err(e) => Err(e),
            };
            (member, users, got)
        });
    }
    let mut records = Vec::new();
    let mut first_error = None;
    while let Some(done) = subscribing.join_next().await {
        let (member, users, subscribed) = match done {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        match subscribed {
            Ok(got) => {
                let olds: Vec<(Arc<LinkClient>, Vec<u64>)> = {
                    let mut state = inner.state.lock().await;
                    records.extend(got.into_iter().filter(|r| state.core.apply_record(r)));
                    let due = state.core.subscribed(&member, &users);
                    due.into_iter()
                        .filter_map(|(old, users)| Some((state.links.get(&old)?.clone(), users)))
                        .collect()
                };
                for (old, users) in olds {
                    // The old member may be gone (killed, its link not yet timed out): the
                    // UNSUBSCRIBE goes on its own, bounded, so the records above are not held
                    // back by a link that will never answer.
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(REQUEST_TIMEOUT, old.unsubscribe(&users)).await;
                    });
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if records.is_empty() => Err(e),
        _ => Ok(records),
    }
}

/// Takes one member link's pushes and maps until it closes.
async fn pump(inner: Arc<Inner>, member: String, link: Arc<LinkClient>) {
    let mut maps = link.members_watch();
    loop {
        tokio::select! {
            changed = maps.changed() => {
                if changed.is_err() {
                    continue;
                }
                let map = maps.borrow_and_update().clone();
                if let Some(map) = map {
                    let mut state = inner.state.lock().await;
                    let revision = state.core.map().map(|m| m.revision);
                    if state.core.handle_map(map.clone()) == super::MapVerdict::Accept
                        && revision != Some(map.revision)
                    {
                        state.retire_stale_links();
                        let _ = inner.out.send(ClusterPush::Map(map));
                        inner.wake.notify_one();
                    }
                    if !state.holds(&member, &link) {
                        // Retired: the map no longer lists this member at this address.
                        return;
                    }
                }
            }
            push = link.next_push() => {
                let mut state = inner.state.lock().await;
                if !state.holds(&member, &link) {
                    return;
                }
                match push {
                    Some(Push::Events(events)) => {
                        let newer: Vec<Event> =
                            events.into_iter().filter(|e| state.core.apply_event(e)).collect();
                        if !newer.is_empty() {
                            let _ = inner.out.send(ClusterPush::Events(newer));
                        }
                    }
                    Some(Push::Lagged { users }) => {
                        let users: Vec<u64> = users
                            .into_iter()
                            .filter(|&u| state.core.subscribed_at(u).is_some())
                            .collect();
                        drop(state);
                        tokio::spawn(requery(inner.clone(), users));
                    }
                    Some(Push::LaggedAll) => {
                        let users: Vec<u64> = state.core.watched_at(&member);
                        drop(state);
                        tokio::spawn(requery(inner.clone(), users));
                    }
                    Some(Push::Closed { .. }) | None => {
                        // A retired link's end changes nothing: another may be held by now.
                        if state.holds(&member, &link) {
                            state.core.link_lost(&member);
                            state.links.remove(&member);
                            state.addresses.remove(&member);
                            let _ = inner.out.send(ClusterPush::MemberLost(member));
                            inner.wake.notify_one();
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Re-queries `users` at their primaries after LAGGED, over the links open (a primary
/// without one is subscribed, with its records, by the driver's next placing); passes on the
/// newer records. It runs on a task of its own: the pump that took the LAGGED goes on taking
/// pushes meanwhile. The state is not held across a query.
async fn requery(inner: Arc<Inner>, users: Vec<u64>) {
    let routes: Vec<(Arc<LinkClient>, Vec<u64>)> = {
        let state = inner.state.lock().await;
        state
            .core
            .route(&users, now_ms())
            .into_iter()
            .filter_map(|(member, group)| Some((state.links.get(&member)?.clone(), group)))
            .collect()
    };
    for (link, group) in routes {
        if let Ok(records) = link.query(&group).await {
            let mut state = inner.state.lock().await;
            let newer: Vec<PresenceRecord> = records
                .into_iter()
                .filter(|r| state.core.apply_record(r))
                .collect();
            if !newer.is_empty() {
                let _ = inner.out.send(ClusterPush::Records(newer));
            }
        }
    }
}

/// Places users again whenever woken (a new map, a lost member) and every [`RETRY`] (links to
/// reconnect, members becoming warm).
async fn drive(inner: Arc<Inner>) {
    loop {
        let _ = tokio::time::timeout(RETRY, inner.wake.notified()).await;
        if let Ok(records) = place(&inner).await {
            if !records.is_empty() {
                let _ = inner.out.send(ClusterPush::Records(records));
            }
        }
    }
}
