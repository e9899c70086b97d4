//! [`Watcher`]: a push link that survives the daemon. It watches users (or everyone) and hands
//! the application their presence and transitions; when the link goes away (GOAWAY, a crash,
//! the network) it reconnects with jittered backoff, subscribes again and reports only what
//! changed while it was away. The decisions are [`WatchCore`]'s (sans-IO, tested with fake
//! time); this module only carries them out over [`LinkClient`] in a task of its own.

mod core;

pub use self::core::{
    Action, RecordReason, Request, WatchConfig, WatchCore, WatchEvent, MAX_FIREHOSE_USERS,
    RECONNECT_JITTER_MS, RECONNECT_MAX_MS, RECONNECT_MIN_MS, WARMING_RECHECK_MS,
};

use crate::{ClientError, ConnectOptions, LinkClient, Push};
use presenced_wire::link::ErrorCode;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a link whose request failed is given to deliver its last push (the GOAWAY, with
/// its `reconnect_after`).
const LINK_END_WAIT: Duration = Duration::from_secs(1);

/// How long [`Watcher::close`] waits for the daemon to be told.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A watch over the push link that reconnects by itself (see the module's documentation).
///
/// Reports come from [`next`](Watcher::next) in order; at most
/// [`EVENTS_BUFFERED`](Watcher::EVENTS_BUFFERED) wait for the application, after which the
/// watcher stops reading the link (the link's own bound then applies: the client drops events
/// past `LinkClient::MAX_BUFFERED_EVENTS` and the watcher re-queries everyone, as after LAGGED).
pub struct Watcher {
    events: mpsc::Receiver<WatchEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Reports held for the application at most.
    pub const EVENTS_BUFFERED: usize = 4096;

    /// Connects to the daemon's push link at `addr` and starts watching. The first connection
    /// is made here: its failure is this call's error. Later losses are reconnected as
    /// `config` says, and told through [`next`](Watcher::next).
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
        config: WatchConfig,
    ) -> Result<Watcher, ClientError> {
        let mut core = WatchCore::new(config, RandomState::new().hash_one(addr))?;
        let first = core.poll_action();
        debug_assert_eq!(first, Some(Action::Connect));
        let link = LinkClient::connect(addr, options.clone()).await?;
        core.handle_connected(Instant::now(), link.link_info(), &link.welcome().limits);
        let (tx, events) = mpsc::channel(Self::EVENTS_BUFFERED);
        let (stop, stopped) = oneshot::channel();
        let driver = Driver {
            core,
            link: Some(link),
            addr,
            options,
            events: tx,
        };
        Ok(Watcher {
            events,
            stop: Some(stop),
            task: tokio::spawn(driver.run(stopped)),
        })
    }

    /// The next report; `None` once the watcher has stopped (after [`WatchEvent::GaveUp`] or
    /// [`WatchEvent::Failed`]). Cancel-safe.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// Stops watching and closes the link, waiting (briefly) until the daemon has been told.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, &mut self.task).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries out the core's actions over a [`LinkClient`].
struct Driver {
    core: WatchCore,
    link: Option<LinkClient>,
    addr: SocketAddr,
    options: ConnectOptions,
    events: mpsc::Sender<WatchEvent>,
}

impl Driver {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                going_on = self.step() => if !going_on { break },
            }
        }
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }

    /// Hands out the core's reports, then does its next action or waits for the link or a
    /// timer; false once there is nothing more to do.
    async fn step(&mut self) -> bool {
        while let Some(event) = self.core.poll_event() {
            if self.events.send(event).await.is_err() {
                return false;
            }
        }
        if self.core.is_finished() {
            return false;
        }
        match self.core.poll_action() {
            Some(action) => self.act(action).await,
            None => self.wait().await,
        }
        true
    }

    async fn act(&mut self, action: Action) {
        let request = match action {
            Action::Connect => return self.connect().await,
            Action::Send(request) => request,
        };
        let Some(link) = &self.link else {
            // The core asks for requests only while linked, and hears of every loss.
            return self
                .core
                .handle_link_lost(Instant::now(), "no link".into(), None);
        };
        let result = match request {
            Request::SubscribeAll => link.subscribe_all().await.map(|()| None),
            Request::Subscribe(users) => link.subscribe_snapshot(&users).await.map(Some),
            Request::Query(users) => link.query_snapshot(&users).await.map(Some),
        };
        let now = Instant::now();
        match result {
            Ok(Some(snapshot)) => self.core.handle_records(now, snapshot),
            Ok(None) => self.core.handle_ack(now),
            Err(e) => self.failed(e).await,
        }
    }

    async fn connect(&mut self) {
        let attempt = LinkClient::connect(self.addr, self.options.clone());
        // While connecting, the core's only deadline is giving up.
        let result = match self.core.poll_timeout() {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => return self.core.handle_timeout(Instant::now()),
                }
            }
            None => attempt.await,
        };
        let now = Instant::now();
        match result {
            Ok(link) => {
                self.core
                    .handle_connected(now, link.link_info(), &link.welcome().limits);
                self.link = Some(link);
            }
            Err(e @ (ClientError::Config(_) | ClientError::Tls(_))) => {
                self.core.handle_fatal(e.to_string());
            }
            Err(e) => self.core.handle_connect_failed(now, e.to_string()),
        }
    }

    /// A request failed: the daemon refused it (the watcher cannot go on), or the link is
    /// going or gone (reconnect).
    async fn failed(&mut self, e: ClientError) {
        let link_gone = match &e {
            ClientError::Refused { code, .. } => *code == Some(ErrorCode::ShuttingDown),
            ClientError::Closed { .. } | ClientError::Io(_) | ClientError::Protocol(_) => true,
            _ => false,
        };
        if !link_gone {
            return self.core.handle_fatal(e.to_string());
        }
        let Some(link) = self.link.take() else {
            return self
                .core
                .handle_link_lost(Instant::now(), e.to_string(), None);
        };
        // The pushes up to the link's end, its GOAWAY included.
        let core = &mut self.core;
        let drained = tokio::time::timeout(LINK_END_WAIT, async {
            while let Some(push) = link.next_push().await {
                let closed = matches!(push, Push::Closed { .. });
                core.handle_push(Instant::now(), push);
                if closed {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(drained, Ok(true)) {
            core.handle_link_lost(Instant::now(), e.to_string(), None);
        }
    }

    /// Waits for a push or the core's next deadline.
    async fn wait(&mut self) {
        let deadline = self.core.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let push = match &self.link {
            Some(link) => tokio::select! {
                push = link.next_push() => Some(push),
                () = timer => None,
            },
            None => {
                timer.await;
                None
            }
        };
        let now = Instant::now();
        match push {
            None => self.core.handle_timeout(now),
            Some(Some(push)) => {
                let closed = matches!(push, Push::Closed { .. });
                self.core.handle_push(now, push);
                if closed {
                    self.link = None;
                }
            }
            Some(None) => {
                self.link = None;
                self.core
                    .handle_link_lost(now, "the link ended".into(), None);
            }
        }
    }
}
