//! The hub thread: moves the shards' messages and the links' events into the sans-IO hub
//! (`presenced_node::hub::Hub`) and its requests and frames out to the shards' inboxes and the
//! links' tasks. It never blocks on a gateway: a link's frame queue is bounded by the hub's own
//! count of frames queued and not yet written. The metrics endpoint's scrapes come through the
//! same channel as the links' events; their answers go back on the scrape's own reply channel.

use super::{Frame, LinkEvent};
use crate::shard_thread::Peer;
use crossbeam_channel::{Receiver, Select};
use presenced_node::bus::{Inbox, ToHub};
use presenced_node::hub::{Command, Hub};
use presenced_wire::stats::Stats;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// Messages read from one channel before the hub's output is sent.
const DRAIN: usize = 256;
/// How long a shard's inbox may stay full before a request for it is given up (a shard drains
/// its inbox every round; only a stopped shard keeps it full).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the thread looks at the stop flag when nothing arrives.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// Runs the hub until `stop` is set.
pub fn run(
    mut hub: Hub,
    from_shards: &[Receiver<ToHub>],
    events: &Receiver<LinkEvent>,
    peers: &[Peer],
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut links: HashMap<u32, UnboundedSender<Frame>> = HashMap::new();
    // Scrapes awaiting the shards, by the request id given here; one whose asker gave up
    // (timed out) is forgotten at the next scrape, as the hub forgets it.
    let mut scrapes: HashMap<u32, oneshot::Sender<Box<Stats>>> = HashMap::new();
    let mut next_scrape: u32 = 0;
    let mut select = Select::new();
    for r in from_shards {
        select.recv(r);
    }
    let events_index = select.recv(events);
    while !stop.load(Ordering::Relaxed) {
        match select.ready_timeout(IDLE_WAKE) {
            Ok(i) if i == events_index => {
                for event in events.try_iter().take(DRAIN) {
                    match event {
                        LinkEvent::Open {
                            link,
                            version,
                            name,
                            peer,
                            limits,
                            frames,
                        } => {
                            links.insert(link, frames);
                            hub.handle_command(Command::Open {
                                link,
                                version,
                                name,
                                peer,
                                limits,
                            });
                        }
                        LinkEvent::Scrape { server, reply } => {
                            scrapes.retain(|_, r| !r.is_closed());
                            next_scrape = next_scrape.wrapping_add(1);
                            scrapes.insert(next_scrape, reply);
                            hub.handle_command(Command::Scrape {
                                request: next_scrape,
                                server,
                            });
                        }
                        LinkEvent::Command(command) => {
                            if let Command::Close { link } = command {
                                links.remove(&link);
                            }
                            hub.handle_command(command);
                        }
                    }
                }
            }
            Ok(i) => {
                for message in from_shards[i].try_iter().take(DRAIN) {
                    hub.handle_shard(message);
                }
            }
            Err(_) => {}
        }
        while let Some((shard, request)) = hub.poll_request() {
            // Lost only when the shard has stopped (the daemon is going down).
            let _ = peers[shard].send(Inbox::Request(request), REQUEST_TIMEOUT);
        }
        while let Some((link, frame)) = hub.poll_transmit() {
            if let Some(frames) = links.get(&link) {
                // A task that is gone has its Close on the way.
                let _ = frames.send(Frame::Hub(frame));
            }
        }
        while let Some((request, stats)) = hub.poll_scrape() {
            if let Some(reply) = scrapes.remove(&request) {
                // The asker may have given up.
                let _ = reply.send(stats);
            }
        }
    }
    Ok(())
}
