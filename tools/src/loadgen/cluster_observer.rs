//! Observers of a cluster (`--cluster`): a [`ClusterLink`] each (every watched user subscribed
//! at its primary, moved when the map changes or a member's link closes, records and
//! transitions passed on only forwards by version) feeding the same [`Tally`] as the plain
//! observers.
//!
//! A failover shows itself to a subscriber as a record from the new primary: one whose state
//! differs from the state last seen is taken as the transition it reports (the observer
//! learned of it then; a correct cluster loses none), one with the same state only moves the
//! version on. Every map the link takes is passed to the senders, which send by it. Each false
//! transition is charged, as it arrives, to the member of its user's latest caused transition
//! ([`Owners`]).

use super::clock::Clock;
use super::observer::{Findings, Hists, Seen, Shared, Tally};
use super::owners::Owners;
use super::population::Population;
use presenced_client::cluster::{ClusterLink, ClusterPush};
use presenced_client::{ClientError, ConnectOptions};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::PresenceRecord;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a cluster observer found.
pub struct ClusterFindings {
    /// What every observer reports.
    pub findings: Findings,
    /// Each false transition as it arrived: (watched index, member number in [`Owners`]).
    pub falses: Vec<(u32, u16)>,
    /// Member links that closed under this observer (killed or restarted members).
    pub members_lost: Vec<String>,
}

/// Passes `map` on to the senders if it is newer than the one they hold.
pub fn publish_map(maps: &watch::Sender<Option<MemberMap>>, map: MemberMap) {
    maps.send_if_modified(|held| {
        let newer = held.as_ref().map_or(true, |h| {
            map.revision > h.revision || (map.revision == h.revision && map != *h)
        });
        if newer {
            *held = Some(map);
        }
        newer
    });
}

/// One cluster observer, owned by its task.
pub struct ClusterObserver {
    link: ClusterLink,
    pop: Arc<Population>,
    clock: Clock,
    shared: Arc<Shared>,
    hists: Arc<Mutex<Hists>>,
    tally: Tally,
    owners: Arc<Owners>,
    maps: Arc<watch::Sender<Option<MemberMap>>>,
    falses: Vec<(u32, u16)>,
    members_lost: Vec<String>,
}

impl ClusterObserver {
    /// Connects to the cluster through the first of `seeds` that answers, subscribes the
    /// watched users at their primaries and records their current state and version.
    pub async fn subscribe(
        seeds: &[SocketAddr],
        options: ConnectOptions,
        pop: Arc<Population>,
        clock: Clock,
        shared: Arc<Shared>,
        owners: Arc<Owners>,
        maps: Arc<watch::Sender<Option<MemberMap>>>,
    ) -> Result<ClusterObserver, ClientError> {
        let link = ClusterLink::connect(seeds, options).await?;
        if let Some(map) = link.map().await {
            publish_map(&maps, map);
        }
        let users: Vec<u64> = (0..pop.watch).map(|i| pop.id(i)).collect();
        let records = link.subscribe(&users).await?;
        let mut tally = Tally::new(pop.clone(), shared.clone());
        for r in &records {
            tally.resync(r);
        }
        Ok(ClusterObserver {
            link,
            pop,
            clock,
            shared,
            hists: Arc::new(Mutex::new(Hists::default())),
            tally,
            owners,
            maps,
            falses: Vec::new(),
            members_lost: Vec::new(),
        })
    }

    /// Watched users this observer last saw online or idle.
    pub fn stale_users(&self) -> Vec<u64> {
        self.tally.stale_users()
    }

    /// The histograms, for the progress line.
    pub fn hists(&self) -> Arc<Mutex<Hists>> {
        self.hists.clone()
    }

    /// Reads reports until `stop` turns true; returns the findings.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> ClusterFindings {
        loop {
            let push = tokio::select! {
                push = self.link.next() => push,
                _ = stop.wait_for(|&s| s) => break,
            };
            match push {
                Some(push) => self.take(push),
                None => {
                    self.tally.closed("the cluster link ended".into());
                    break;
                }
            }
        }
        // What arrived before the stop is taken; the link's own queue is then closed.
        while let Ok(Some(push)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), self.link.next()).await
        {
            self.take(push);
        }
        self.link.close().await;
        ClusterFindings {
            findings: self.tally.into_findings(0),
            falses: self.falses,
            members_lost: self.members_lost,
        }
    }

    fn take(&mut self, push: ClusterPush) {
        match push {
            ClusterPush::Events(events) => {
                let seen: Vec<Option<Seen>> = events
                    .iter()
                    .map(|e| {
                        self.pop
                            .watched_index(e.user)
                            .map(|index| Seen::pushed(index, e))
                    })
                    .collect();
                self.note(seen);
            }
            ClusterPush::Records(records) => {
                let mut changed = Vec::new();
                for r in &records {
                    match self.pop.watched_index(r.user) {
                        Some(index) if self.tally.state_of(index) != Some(r.state.to_u8()) => {
                            changed.push(Some(from_record(index, r)));
                        }
                        Some(_) => {
                            self.tally.resync(r);
                        }
                        None => {}
                    }
                }
                if !changed.is_empty() {
                    self.note(changed);
                }
            }
            ClusterPush::Map(map) => publish_map(&self.maps, map),
            ClusterPush::MemberLost(id) => self.members_lost.push(id),
        }
    }

    /// Checks one frame's transitions, charging each false one to its member first.
    fn note(&mut self, frame: Vec<Option<Seen>>) {
        let now = self.clock.now_us();
        let running = self.shared.running.load(Ordering::Acquire);
        let ended = self.shared.ended.load(Ordering::Acquire);
        for seen in frame.iter().flatten() {
            let expected = self.pop.expected(seen.index);
            if running && !ended && self.tally.count_of(seen.index) >= expected {
                let member = self.owners.member_of(seen.index, expected, expected);
                self.falses.push((seen.index, member));
            }
        }
        let hists = self.hists.clone();
        let mut h = hists.lock().unwrap_or_else(|e| e.into_inner());
        self.tally
            .note_frame(frame.into_iter(), now, running, &mut h);
    }
}

/// A record whose state differs from the one last seen, as the transition it reports.
fn from_record(index: u32, r: &PresenceRecord) -> Seen {
    Seen {
        index,
        state: r.state,
        prev: None,
        version: Some(r.version),
        timeout: false,
    }
}
