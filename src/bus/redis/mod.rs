//! `RedisBus`: the bus of a server in a cluster, over Redis publish/subscribe.
//!
//! Channels: user `u`'s channel is its decimal id (`"42"`), as in the C++ seeds. A push
//! is published as its JSON text unchanged. Each bus also subscribes a private control channel
//! (`chat:ctl:<pid>:<nanos>:<n>`, never a decimal id) used only to wake its subscriber.
//!
//! Threads:
//! - Callers (worker threads): `publish`, `publish_many` and `online_elsewhere`
//!   run on the calling thread over a small pool of publishing connections
//!   ([`publishers`]: connect 500 ms, read/write 2 s, so calls fail fast during an
//!   outage; a connection that failed is dropped, never returned to the pool).
//!   `subscribe` and `unsubscribe` queue a request, publish a wake-up on the control
//!   channel, and block (at most 3 s) until the subscriber thread answers.
//! - The `redis-sub` thread runs the [`subscriber`] state machine, which owns the
//!   subscribing connection ([`sub_conn`]). It reads the stream in order: messages are
//!   handed to the [`Inbox`] as they are read, and a request is answered only when
//!   Redis's `subscribe`/`unsubscribe` confirmation frame for it was read, so everything
//!   that arrived for a user before its unsubscribe was confirmed has been handed over
//!   when `unsubscribe` returns. When idle for 1 s it sends a PING; no data for 2 s
//!   after that means the connection is dead. A broken connection is retried with
//!   backoff (100 ms doubling to 2 s); on reconnect it resubscribes every desired user
//!   and then calls [`Inbox::resubscribed`]. While disconnected it answers requests at
//!   once: `subscribe` fails (the user stays desired and is subscribed on reconnect),
//!   `unsubscribe` succeeds.
//! - `Drop` (any thread): stops the subscriber thread, waiting for it at most 3 s.
//!
//! The subscribing connection speaks RESP2 itself over a `TcpStream` ([`resp`]; the
//! redis crate's sync `PubSub` keeps messages read while waiting for a confirmation in
//! a private queue that can only be drained by a blocking read, and its connection
//! counts a read timeout as a lost reply and skips the next frame); publishing uses the
//! redis crate.

mod publishers;
mod resp;
mod sub_conn;
mod subscriber;

use std::collections::HashSet;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, warn};

use super::{Bus, BusError, Inbox};
use crate::store::UserId;
use publishers::Publishers;
use sub_conn::{SubConn, Target};
use subscriber::Subscriber;

/// Connect timeout of every connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read/write timeout of the publishing connections, and write timeout of the subscriber.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `subscribe`/`unsubscribe` (and `connect`) wait for the subscriber thread.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `Drop` waits for the subscriber thread.
const STOP_WAIT: Duration = Duration::from_secs(3);

type Reply = Sender<Result<(), BusError>>;

/// The bus over Redis. See the module doc for which thread runs what.
pub struct RedisBus {
    publishers: Publishers,
    shared: Arc<Shared>,
    requests: Sender<Request>,
    ctl_channel: String,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the subscriber thread ends.
    exited: Receiver<()>,
}

/// What the subscriber thread shares with the callers.
struct Shared {
    shutdown: AtomicBool,
    /// Whether the subscriber thread holds a connection (else it reads requests directly
    /// and needs no wake-up).
    connected: AtomicBool,
    /// Channels whose subscription Redis confirmed on the current connection.
    active: Mutex<HashSet<Vec<u8>>>,
    /// A clone of the subscribing socket, so `Drop` can shut it down to wake the thread.
    socket: Mutex<Option<TcpStream>>,
}

enum Request {
    Subscribe(Vec<u8>, Reply),
    Unsubscribe(Vec<u8>, Reply),
    /// Wakes a disconnected subscriber so it sees the shutdown flag.
    Shutdown,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bus_err(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError(format!("redis {what}: {e}"))
}

impl RedisBus {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port`): opens the
    /// subscribing connection, confirms the control channel's subscription and starts
    /// the `redis-sub` thread. Fails if Redis cannot be reached now.
    pub fn connect(url: &str, inbox: Arc<dyn Inbox>) -> Result<RedisBus, BusError> {
        let client = redis::Client::open(url).map_err(|e| bus_err("url", e))?;
        let target = Target::from_info(client.get_connection_info())?;
        let ctl_channel = control_channel();
        let conn = SubConn::open(&target).map_err(|e| bus_err(&format!("connect {}", target.addr), e))?;

        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            active: Mutex::new(HashSet::new()),
            socket: Mutex::new(None),
        });
        let (requests, request_rx) = unbounded();
        let (exited_tx, exited) = bounded::<()>(0);
        let (ready_tx, ready_rx) = bounded(1);
        let subscriber =
            Subscriber::new(target, ctl_channel.clone().into_bytes(), inbox, request_rx, Arc::clone(&shared));
        let thread = thread::Builder::new()
            .name("redis-sub".into())
            .spawn(move || {
                let _exited = exited_tx;
                subscriber.run(conn, ready_tx);
            })
            .map_err(|e| bus_err("spawn subscriber", e))?;
        let bus = RedisBus {
            publishers: Publishers::new(client),
            shared,
            requests,
            ctl_channel,
            thread: Some(thread),
            exited,
        };
        match ready_rx.recv_timeout(REQUEST_TIMEOUT) {
            Ok(Ok(())) => Ok(bus),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BusError("redis subscribe to the control channel timed out".into())),
        }
    }

    /// Queues a subscription change and waits for the subscriber thread's answer.
    fn request(&self, what: &str, make: impl FnOnce(Reply) -> Request) -> Result<(), BusError> {
        let (tx, rx) = bounded(1);
        self.requests.send(make(tx)).map_err(|_| BusError("redis subscriber stopped".into()))?;
        if self.shared.connected.load(Ordering::SeqCst) {
            // Best effort: a lost wake-up only delays the answer to the next tick.
            let ctl = self.ctl_channel.as_str();
            if let Err(e) = self.publishers.run("wake", |c| redis::cmd("PUBLISH").arg(ctl).arg("w").query::<i64>(c)) {
                debug!("redis bus: wake-up of the subscriber failed: {e}");
            }
        }
        match rx.recv_timeout(REQUEST_TIMEOUT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(BusError(format!("redis {what} timed out"))),
            Err(RecvTimeoutError::Disconnected) => Err(BusError("redis subscriber stopped".into())),
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, user: UserId, push: &str) -> Result<bool, BusError> {
        let n: i64 = self.publishers.run("publish", |c| redis::cmd("PUBLISH").arg(user).arg(push).query(c))?;
        Ok(n > 0)
    }

    fn publish_many(&self, msgs: &[(UserId, Arc<str>)]) -> Result<Vec<bool>, BusError> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (user, push) in msgs {
            pipe.cmd("PUBLISH").arg(*user).arg(&**push);
        }
        let counts: Vec<i64> = self.publishers.run("publish", |c| pipe.query(c))?;
        if counts.len() != msgs.len() {
            return Err(BusError(format!("redis publish: {} replies to {} messages", counts.len(), msgs.len())));
        }
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }

    fn subscribe(&self, user: UserId) -> Result<(), BusError> {
        // Presence first: from then on a sender whose PUBLISH reaches nobody waits.
        self.request("subscribe", |tx| Request::Subscribe(presence_channel(user), tx))?;
        self.request("subscribe", |tx| Request::Subscribe(user.to_string().into_bytes(), tx))
    }

    fn unsubscribe(&self, user: UserId) -> Result<(), BusError> {
        self.request("unsubscribe", |tx| Request::Unsubscribe(user.to_string().into_bytes(), tx))
    }

    fn release(&self, user: UserId) -> Result<(), BusError> {
        self.request("unsubscribe", |tx| Request::Unsubscribe(presence_channel(user), tx))
    }

    fn online_elsewhere(&self, user: UserId) -> Result<bool, BusError> {
        let channel = presence_channel(user);
        let (_, n): (String, i64) =
            self.publishers.run("pubsub numsub", |c| redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(c))?;
        let mine = i64::from(lock(&self.shared.active).contains(&channel));
        Ok(n - mine > 0)
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = self.requests.send(Request::Shutdown);
        if let Some(socket) = lock(&self.shared.socket).as_ref() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // The thread drops its end of `exited` when it ends.
        match self.exited.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => warn!("redis bus: subscriber thread did not stop in time; detached"),
        }
    }
}

/// A private channel name for one bus: not a decimal id, unique per process and bus.
fn control_channel() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("chat:ctl:{}:{nanos}:{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The channel a server holding `user` stays subscribed to until it has stored
/// everything that arrived for them: presence, as other servers see it.
fn presence_channel(user: UserId) -> Vec<u8> {
    format!("p:{user}").into_bytes()
}

/// The user of a channel named by a decimal id.
fn channel_user(channel: &[u8]) -> Option<UserId> {
    if channel.is_empty() || !channel.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(channel).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Incoming;
    use std::net::TcpListener;
    use std::time::Instant;

    struct Ignore;

    impl Inbox for Ignore {
        fn incoming(&self, _msg: Incoming) {}
        fn resubscribed(&self, _users: Vec<UserId>) {}
    }

    #[test]
    fn connect_fails_without_redis() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let inbox: Arc<dyn Inbox> = Arc::new(Ignore);
        let started = Instant::now();
        assert!(RedisBus::connect(&format!("redis://127.0.0.1:{port}"), inbox.clone()).is_err());
        assert!(RedisBus::connect("http://127.0.0.1:1", inbox).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn only_decimal_channels_name_users() {
        assert_eq!(channel_user(b"42"), Some(42));
        assert_eq!(channel_user(b"-1"), None);
        assert_eq!(channel_user(b""), None);
        assert_eq!(channel_user(b"p:42"), None);
        assert_eq!(channel_user(b"chat:ctl:1"), None);
        assert_eq!(presence_channel(42), b"p:42");
        assert!(channel_user(control_channel().as_bytes()).is_none());
    }
}
