//! `Subscriber`: the state machine of the `redis-sub` thread, which owns the subscribing
//! connection: (re)connect, (re)subscribe, answer requests on confirmation, hand
//! pushes to the [`Inbox`].
//!
//! Runs on the `redis-sub` thread only; what it guarantees is in the parent module's
//! doc.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info, warn};

use super::resp::{encode, Frame};
use super::sub_conn::{SubConn, Target};
use super::{channel_user, lock, Reply, Request, Shared};
use crate::bus::{BusError, Inbox, Incoming};
use crate::store::UserId;

/// Reconnect backoff of the subscriber.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What to do when a (un)subscribe confirmation arrives.
enum After {
    Nothing,
    Answer(Reply),
    /// The last resubscription after a reconnect: tell the inbox.
    Resubscribed(Vec<UserId>),
}

/// A SUBSCRIBE or UNSUBSCRIBE of one channel sent and not yet confirmed. Redis answers
/// each channel of each such command with one confirmation frame, in order.
pub(super) struct Pending {
    subscribe: bool,
    channel: Vec<u8>,
    after: After,
}

pub(super) struct Subscriber {
    target: Target,
    ctl: Vec<u8>,
    inbox: Arc<dyn Inbox>,
    requests: Receiver<Request>,
    shared: Arc<Shared>,
    /// Channels this bus should be subscribed to, whatever the connection's state.
    desired: HashSet<Vec<u8>>,
}

impl Subscriber {
    pub(super) fn new(
        target: Target,
        ctl: Vec<u8>,
        inbox: Arc<dyn Inbox>,
        requests: Receiver<Request>,
        shared: Arc<Shared>,
    ) -> Subscriber {
        Subscriber { target, ctl, inbox, requests, shared, desired: HashSet::new() }
    }

    /// Serves `first` (whose control-channel confirmation answers `ready`), then
    /// reconnects after each break, until the bus stops.
    pub(super) fn run(mut self, first: SubConn, ready: Reply) {
        let mut conn = first;
        let mut after_ctl = After::Answer(ready);
        loop {
            let err = self.serve(&mut conn, after_ctl);
            self.shared.connected.store(false, Ordering::SeqCst);
            *lock(&self.shared.socket) = None;
            lock(&self.shared.active).clear();
            fail_pending(&mut conn.pending);
            if self.stopping() {
                break;
            }
            warn!("redis bus: subscriber connection lost: {err}; reconnecting");
            match self.reconnect() {
                Some(c) => conn = c,
                None => break,
            }
            info!("redis bus: subscriber connection restored; resubscribing {} users", self.desired.len());
            after_ctl = After::Nothing;
        }
        debug!("redis bus: subscriber thread stopped");
    }

    fn stopping(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }

    /// Subscribes the control channel and every desired user, then handles the stream
    /// until the connection breaks or the bus stops. Returns why it ended.
    fn serve(&mut self, conn: &mut SubConn, after_ctl: After) -> io::Error {
        match conn.stream.try_clone() {
            Ok(s) => *lock(&self.shared.socket) = Some(s),
            Err(e) => return e,
        }
        self.shared.connected.store(true, Ordering::SeqCst);
        let channels: Vec<Vec<u8>> = self.desired.iter().cloned().collect();
        let users: Vec<UserId> = channels.iter().filter_map(|c| channel_user(c)).collect();
        let mut out = Vec::new();
        let mut args: Vec<Vec<u8>> = vec![b"SUBSCRIBE".to_vec(), self.ctl.clone()];
        conn.pending.push_back(Pending { subscribe: true, channel: self.ctl.clone(), after: after_ctl });
        for (i, channel) in channels.iter().enumerate() {
            let after = if i + 1 == channels.len() { After::Resubscribed(users.clone()) } else { After::Nothing };
            conn.pending.push_back(Pending { subscribe: true, channel: channel.clone(), after });
            args.push(channel.clone());
        }
        encode(&mut out, &args);
        if let Err(e) = conn.stream.write_all(&out) {
            return e;
        }
        loop {
            if self.stopping() {
                return io::Error::other("bus stopped");
            }
            if let Err(e) = self.drain_requests(conn) {
                return e;
            }
            match conn.fill() {
                Ok(0) => return io::Error::new(io::ErrorKind::UnexpectedEof, "closed by redis"),
                Ok(_) => loop {
                    match conn.next_frame() {
                        Ok(Some(frame)) => {
                            if let Err(e) = self.handle(conn, frame) {
                                return e;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return e,
                    }
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if let Err(e) = conn.idle_check() {
                        return e;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e,
            }
        }
    }

    /// Sends the queued subscription changes (connected).
    fn drain_requests(&mut self, conn: &mut SubConn) -> io::Result<()> {
        let mut out = Vec::new();
        while let Ok(req) = self.requests.try_recv() {
            let (subscribe, channel, reply) = match req {
                Request::Subscribe(c, tx) => (true, c, tx),
                Request::Unsubscribe(c, tx) => (false, c, tx),
                Request::Shutdown => continue,
            };
            if subscribe {
                self.desired.insert(channel.clone());
            } else {
                self.desired.remove(&channel);
            }
            let cmd: &[u8] = if subscribe { b"SUBSCRIBE" } else { b"UNSUBSCRIBE" };
            encode(&mut out, &[cmd, &channel]);
            conn.pending.push_back(Pending { subscribe, channel, after: After::Answer(reply) });
        }
        if out.is_empty() {
            return Ok(());
        }
        conn.stream.write_all(&out)
    }

    /// Handles one frame read on the subscribing connection.
    fn handle(&mut self, conn: &mut SubConn, frame: Frame) -> io::Result<()> {
        let items = match frame {
            Frame::Array(Some(items)) => items,
            Frame::Error(e) => {
                return Err(io::Error::other(format!("redis error: {}", String::from_utf8_lossy(&e))));
            }
            Frame::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => return Ok(()),
            other => {
                debug!("redis bus: ignoring unexpected frame {other:?}");
                return Ok(());
            }
        };
        let kind = items.first().and_then(Frame::bytes).unwrap_or_default().to_ascii_lowercase();
        match kind.as_slice() {
            b"message" => {
                let (Some(channel), Some(payload)) =
                    (items.get(1).and_then(Frame::bytes), items.get(2).and_then(Frame::bytes))
                else {
                    return Err(io::Error::other("malformed message frame"));
                };
                self.deliver(channel, payload);
            }
            b"subscribe" | b"unsubscribe" => {
                let Some(channel) = items.get(1).and_then(Frame::bytes) else {
                    return Err(io::Error::other("malformed confirmation frame"));
                };
                self.confirm(conn, kind == b"subscribe", channel)?;
            }
            b"pong" => {}
            _ => debug!("redis bus: ignoring frame of kind {}", String::from_utf8_lossy(&kind)),
        }
        Ok(())
    }

    fn deliver(&self, channel: &[u8], payload: &[u8]) {
        if channel == self.ctl.as_slice() {
            return; // a wake-up: the loop drains the requests
        }
        let Some(user) = channel_user(channel) else {
            debug!("redis bus: ignoring message on channel {}", String::from_utf8_lossy(channel));
            return;
        };
        let push: Arc<str> = match std::str::from_utf8(payload) {
            Ok(s) => Arc::from(s),
            Err(_) => Arc::from(String::from_utf8_lossy(payload).as_ref()),
        };
        self.inbox.incoming(Incoming::Push(user, push));
    }

    fn confirm(&self, conn: &mut SubConn, subscribe: bool, channel: &[u8]) -> io::Result<()> {
        let Some(p) = conn.pending.pop_front() else {
            return Err(io::Error::other("unrequested (un)subscribe confirmation"));
        };
        if p.subscribe != subscribe || p.channel != channel {
            let err = io::Error::other(format!(
                "confirmation for {} does not match the request for {}",
                String::from_utf8_lossy(channel),
                String::from_utf8_lossy(&p.channel)
            ));
            conn.pending.push_front(p);
            return Err(err);
        }
        if channel != self.ctl.as_slice() {
            let mut active = lock(&self.shared.active);
            if subscribe {
                active.insert(channel.to_vec());
            } else {
                active.remove(channel);
            }
        }
        match p.after {
            After::Nothing => {}
            After::Answer(tx) => {
                let _ = tx.try_send(Ok(()));
            }
            After::Resubscribed(users) => self.inbox.resubscribed(users),
        }
        Ok(())
    }

    /// Reconnects with backoff, answering requests meanwhile. `None` when the bus stops.
    fn reconnect(&mut self) -> Option<SubConn> {
        let mut backoff = BACKOFF_MIN;
        loop {
            let deadline = Instant::now() + backoff;
            loop {
                if self.stopping() {
                    return None;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match self.requests.recv_timeout(deadline - now) {
                    Ok(Request::Subscribe(u, tx)) => {
                        self.desired.insert(u);
                        let _ = tx.try_send(Err(BusError("redis subscriber disconnected".into())));
                    }
                    Ok(Request::Unsubscribe(u, tx)) => {
                        self.desired.remove(&u);
                        let _ = tx.try_send(Ok(()));
                    }
                    Ok(Request::Shutdown) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
            match SubConn::open(&self.target) {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    debug!("redis bus: reconnect to {}:{} failed: {e}", self.target.addr, self.target.port);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Answers the requests still waiting when the connection broke: a subscribe failed; an
/// unsubscribe holds (nothing more can arrive on a closed connection).
fn fail_pending(pending: &mut VecDeque<Pending>) {
    for p in pending.drain(..) {
        if let After::Answer(tx) = p.after {
            let answer = if p.subscribe { Err(BusError("redis connection lost".into())) } else { Ok(()) };
            let _ = tx.try_send(answer);
        }
    }
}
