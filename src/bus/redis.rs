//! `RedisBus`: the bus of a server in a cluster, over Redis publish/subscribe.
//!
//! Channels: user `u`'s channel is its decimal id (`"42"`), as in the C++ seeds. A push
//! is published as its JSON text unchanged; the doorbell is the payload `mailbox` on the
//! same channel. Each bus also subscribes a private control channel
//! (`chat:ctl:<pid>:<nanos>:<n>`, never a decimal id) used only to wake its subscriber.
//!
//! Threads:
//! - Callers (worker threads): `publish`, `publish_many`, `ring` and `online_elsewhere`
//!   run on the calling thread over a small pool of publishing connections (connect
//!   500 ms, read/write 2 s, so calls fail fast during an outage; a connection that
//!   failed is dropped, never returned to the pool). `subscribe` and `unsubscribe` queue
//!   a request, publish a wake-up on the control channel, and block (at most 3 s) until
//!   the subscriber thread answers.
//! - The `redis-sub` thread owns the subscribing connection. It reads the stream in
//!   order: messages are handed to the [`Inbox`] as they are read, and a request is
//!   answered only when Redis's `subscribe`/`unsubscribe` confirmation frame for it was
//!   read, so everything that arrived for a user before its unsubscribe was confirmed
//!   has been handed over when `unsubscribe` returns. When idle for 1 s it sends a PING;
//!   no data for 2 s after that means the connection is dead. A broken connection is
//!   retried with backoff (100 ms doubling to 2 s); on reconnect it resubscribes every
//!   desired user and then calls [`Inbox::resubscribed`]. While disconnected it answers
//!   requests at once: `subscribe` fails (the user stays desired and is subscribed on
//!   reconnect), `unsubscribe` succeeds.
//! - `Drop` (any thread): stops the subscriber thread, waiting for it at most 3 s.
//!
//! The subscribing connection speaks RESP2 itself over a `TcpStream` (the redis crate's
//! sync `PubSub` keeps messages read while waiting for a confirmation in a private queue
//! that can only be drained by a blocking read, and its connection counts a read timeout
//! as a lost reply and skips the next frame); publishing uses the redis crate.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use redis::{ConnectionAddr, ConnectionLike, RedisResult};

use super::{Bus, BusError, Inbox, Incoming};
use crate::store::UserId;

/// Connect timeout of every connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read/write timeout of the publishing connections, and write timeout of the subscriber.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Read timeout of the subscribing connection: how often an idle subscriber wakes up to
/// check for shutdown, queued requests and a dead connection.
const TICK: Duration = Duration::from_secs(1);
/// No data this long after a PING means the subscribing connection is dead.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `subscribe`/`unsubscribe` (and `connect`) wait for the subscriber thread.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff of the subscriber.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long `Drop` waits for the subscriber thread.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// Idle publishing connections kept; more are closed when returned.
const MAX_IDLE_PUBLISHERS: usize = 16;
/// The doorbell payload.
const DOORBELL: &[u8] = b"mailbox";
/// Largest bulk string or array the subscriber accepts (Redis's own default limit).
const MAX_BULK: usize = 512 * 1024 * 1024;

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
        let subscriber = Subscriber {
            target,
            ctl: ctl_channel.clone().into_bytes(),
            inbox,
            requests: request_rx,
            shared: Arc::clone(&shared),
            desired: HashSet::new(),
        };
        let thread = thread::Builder::new()
            .name("redis-sub".into())
            .spawn(move || {
                let _exited = exited_tx;
                subscriber.run(conn, ready_tx);
            })
            .map_err(|e| bus_err("spawn subscriber", e))?;
        let bus = RedisBus {
            publishers: Publishers { client, idle: Mutex::new(Vec::new()) },
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

    fn ring(&self, user: UserId) -> Result<(), BusError> {
        self.publishers.run("ring", |c| redis::cmd("PUBLISH").arg(user).arg(DOORBELL).query::<i64>(c))?;
        Ok(())
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

// ---------------------------------------------------------------------------------
// Publishing connections.

struct Publishers {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
}

impl Publishers {
    fn open(&self) -> RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection, or a new one. A pooled connection found closed
    /// (Redis restarted since it was last used) is replaced once, along with the rest of
    /// the pool; a connection that failed is never returned to the pool.
    fn run<T>(&self, what: &str, mut f: impl FnMut(&mut redis::Connection) -> RedisResult<T>) -> Result<T, BusError> {
        let pooled = lock(&self.idle).pop();
        if let Some(mut con) = pooled {
            match f(&mut con) {
                Ok(v) => {
                    self.put(con);
                    return Ok(v);
                }
                Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                    debug!("redis bus: pooled connection closed ({e}); retrying on a new one");
                    lock(&self.idle).clear();
                }
                Err(e) => return Err(bus_err(what, e)),
            }
        }
        let mut con = self.open().map_err(|e| bus_err(what, e))?;
        let v = f(&mut con).map_err(|e| bus_err(what, e))?;
        self.put(con);
        Ok(v)
    }

    fn put(&self, con: redis::Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PUBLISHERS && con.is_open() {
            idle.push(con);
        }
    }
}

// ---------------------------------------------------------------------------------
// The subscriber thread.

/// Where and how the subscriber connects.
struct Target {
    addr: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Target {
    fn from_info(info: &redis::ConnectionInfo) -> Result<Target, BusError> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(BusError("redis url: only plain TCP (redis://host:port) is supported".into()));
        };
        let settings = info.redis_settings();
        Ok(Target {
            addr: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }
}

/// What to do when a (un)subscribe confirmation arrives.
enum After {
    Nothing,
    Answer(Reply),
    /// The last resubscription after a reconnect: tell the inbox.
    Resubscribed(Vec<UserId>),
}

/// A SUBSCRIBE or UNSUBSCRIBE of one channel sent and not yet confirmed. Redis answers
/// each channel of each such command with one confirmation frame, in order.
struct Pending {
    subscribe: bool,
    channel: Vec<u8>,
    after: After,
}

struct Subscriber {
    target: Target,
    ctl: Vec<u8>,
    inbox: Arc<dyn Inbox>,
    requests: Receiver<Request>,
    shared: Arc<Shared>,
    /// Channels this bus should be subscribed to, whatever the connection's state.
    desired: HashSet<Vec<u8>>,
}

impl Subscriber {
    fn run(mut self, first: SubConn, ready: Reply) {
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
        let msg = if payload == DOORBELL {
            Incoming::Doorbell(user)
        } else {
            let push: Arc<str> = match std::str::from_utf8(payload) {
                Ok(s) => Arc::from(s),
                Err(_) => Arc::from(String::from_utf8_lossy(payload).as_ref()),
            };
            Incoming::Push(user, push)
        };
        self.inbox.incoming(msg);
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

// ---------------------------------------------------------------------------------
// The subscribing connection: RESP2 over a TcpStream.

struct SubConn {
    stream: TcpStream,
    /// Bytes read and not yet parsed start at `start`.
    buf: Vec<u8>,
    start: usize,
    pending: VecDeque<Pending>,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

impl SubConn {
    /// Connects (and authenticates, if the URL has a password).
    fn open(target: &Target) -> io::Result<SubConn> {
        let addrs: Vec<SocketAddr> = (target.addr.as_str(), target.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut conn = SubConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            pending: VecDeque::new(),
            last_rx: Instant::now(),
            ping_sent: None,
        };
        if let Some(password) = &target.password {
            let mut out = Vec::new();
            match &target.username {
                Some(user) => encode(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut out, &[b"AUTH", password.as_bytes()]),
            }
            conn.stream.write_all(&out)?;
            match conn.read_frame(IO_TIMEOUT)? {
                Frame::Simple(_) => {}
                Frame::Error(e) => {
                    return Err(io::Error::other(format!("AUTH: {}", String::from_utf8_lossy(&e))));
                }
                other => return Err(io::Error::other(format!("AUTH: unexpected reply {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Reads one whole frame, waiting at most `limit` (used before subscribing only).
    fn read_frame(&mut self, limit: Duration) -> io::Result<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply from redis"));
            }
            match self.fill() {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by redis")),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the socket has (blocking at most `TICK`).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n > 0 {
            self.buf.extend_from_slice(&chunk[..n]);
            self.last_rx = Instant::now();
            self.ping_sent = None;
        }
        Ok(n)
    }

    /// The next whole frame in the buffer, if any.
    fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        match parse(&self.buf, self.start, 0)? {
            Some((frame, next)) => {
                self.start = next;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// On a read timeout: PINGs an idle connection; fails one that stayed silent after.
    fn idle_check(&mut self) -> io::Result<()> {
        match self.ping_sent {
            Some(at) if at.elapsed() >= PING_TIMEOUT => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to PING"))
            }
            Some(_) => Ok(()),
            None if self.last_rx.elapsed() >= TICK => {
                let mut out = Vec::new();
                encode(&mut out, &[b"PING"]);
                self.stream.write_all(&out)?;
                self.ping_sent = Some(Instant::now());
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Appends a command as a RESP array of bulk strings.
fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A RESP value, as far as a subscribing connection sees them.
#[derive(Debug)]
enum Frame {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(#[allow(dead_code)] i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Frame>>),
}

impl Frame {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Bulk(Some(b)) | Frame::Simple(b) => Some(b),
            _ => None,
        }
    }
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol error: {what}"))
}

/// Parses one frame at `pos`: `Ok(None)` when the buffer does not hold all of it yet.
/// RESP2, plus RESP3's push (`>`) and null (`_`) in case a server sends them.
fn parse(buf: &[u8], pos: usize, depth: usize) -> io::Result<Option<(Frame, usize)>> {
    if depth > 8 {
        return Err(protocol_error("nesting too deep"));
    }
    let Some(&tag) = buf.get(pos) else { return Ok(None) };
    let Some(len) = buf[pos + 1..].windows(2).position(|w| w == b"\r\n") else {
        if buf.len() - pos > 64 * 1024 {
            return Err(protocol_error("header line too long"));
        }
        return Ok(None);
    };
    let line = &buf[pos + 1..pos + 1 + len];
    let next = pos + 1 + len + 2;
    let int = || -> io::Result<i64> {
        std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or_else(|| protocol_error("bad integer"))
    };
    let frame = match tag {
        b'+' => Frame::Simple(line.to_vec()),
        b'-' => Frame::Error(line.to_vec()),
        b':' => Frame::Int(int()?),
        b'_' => Frame::Bulk(None),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Frame::Bulk(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| protocol_error("bad length"))?;
            if n > MAX_BULK {
                return Err(protocol_error("bulk string too long"));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(protocol_error("bulk string not terminated"));
            }
            return Ok(Some((Frame::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)));
        }
        b'*' | b'>' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Frame::Array(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| protocol_error("bad length"))?;
            if n > MAX_BULK {
                return Err(protocol_error("array too long"));
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = next;
            for _ in 0..n {
                let Some((item, after)) = parse(buf, at, depth + 1)? else { return Ok(None) };
                items.push(item);
                at = after;
            }
            return Ok(Some((Frame::Array(Some(items)), at)));
        }
        _ => return Err(protocol_error("unknown frame type")),
    };
    Ok(Some((frame, next)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::Condvar;

    /// A private redis-server on a loopback port, killed when dropped.
    struct Server {
        port: u16,
        child: Option<Child>,
    }

    impl Server {
        fn start() -> Server {
            let port =
                TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
            Server::start_on(port)
        }

        fn start_on(port: u16) -> Server {
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; the server dies with this test thread.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server: {e} (Debian/Ubuntu: apt-get install redis-server)"));
            let server = Server { port, child: Some(child) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut reply = [0u8; 16];
                    if s.write_all(b"PING\r\n").is_ok()
                        && matches!(s.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
                    {
                        return server;
                    }
                }
                assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
                thread::sleep(Duration::from_millis(20));
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Sends `sig` to the server (SIGSTOP/SIGCONT: a stalled server, no FIN).
        fn signal(&self, sig: libc::c_int) {
            let pid = self.child.as_ref().map(|c| c.id()).expect("running");
            let pid = libc::pid_t::try_from(pid).expect("pid");
            // SAFETY: signals our own child, which has not been reaped.
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        }

        fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[derive(Default)]
    struct Recorder {
        got: Mutex<(Vec<Incoming>, Vec<Vec<UserId>>)>,
        cond: Condvar,
    }

    impl Inbox for Recorder {
        fn incoming(&self, msg: Incoming) {
            lock(&self.got).0.push(msg);
            self.cond.notify_all();
        }

        fn resubscribed(&self, users: Vec<UserId>) {
            lock(&self.got).1.push(users);
            self.cond.notify_all();
        }
    }

    impl Recorder {
        /// Waits until `done` holds over what was recorded, at most `limit`.
        fn wait(&self, limit: Duration, done: impl Fn(&[Incoming], &[Vec<UserId>]) -> bool) -> bool {
            let deadline = Instant::now() + limit;
            let mut got = lock(&self.got);
            loop {
                if done(&got.0, &got.1) {
                    return true;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                got = self.cond.wait_timeout(got, deadline - now).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
        }

        fn messages(&self) -> Vec<Incoming> {
            lock(&self.got).0.clone()
        }
    }

    fn bus(server: &Server) -> (RedisBus, Arc<Recorder>) {
        let inbox = Arc::new(Recorder::default());
        let bus = RedisBus::connect(&server.url(), inbox.clone()).expect("connect");
        (bus, inbox)
    }

    fn push(u: UserId, text: &str) -> Incoming {
        Incoming::Push(u, Arc::from(text))
    }

    const WAIT: Duration = Duration::from_secs(3);

    #[test]
    fn push_doorbell_and_unsubscribed_user() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        a.subscribe(7).expect("subscribe");
        a.subscribe(7).expect("subscribing twice is fine");
        let json = r#"{"msgid":5,"id":1,"to":7,"msg":"hi"}"#;
        assert_eq!(b.publish(7, json), Ok(true));
        assert_eq!(b.publish(8, json), Ok(false));
        b.ring(7).expect("ring");
        b.ring(8).expect("ring nobody");
        assert!(inbox.wait(WAIT, |m, _| m.len() >= 2));
        assert_eq!(inbox.messages(), vec![push(7, json), Incoming::Doorbell(7)]);
        a.unsubscribe(9).expect("unsubscribing a user not subscribed is Ok");
    }

    #[test]
    fn order_of_many_pushes() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        a.subscribe(7).expect("subscribe");
        for i in 0..1000 {
            assert_eq!(b.publish(7, &format!("{{\"n\":{i}}}")), Ok(true));
        }
        assert!(inbox.wait(Duration::from_secs(5), |m, _| m.len() >= 1000));
        let want: Vec<Incoming> = (0..1000).map(|i| push(7, &format!("{{\"n\":{i}}}"))).collect();
        assert_eq!(inbox.messages(), want);
    }

    #[test]
    fn online_elsewhere_follows_subscriptions() {
        let server = Server::start();
        let (a, _) = bus(&server);
        let (b, _) = bus(&server);
        assert_eq!(b.online_elsewhere(7), Ok(false));
        a.subscribe(7).expect("subscribe");
        assert_eq!(b.online_elsewhere(7), Ok(true));
        assert_eq!(a.online_elsewhere(7), Ok(false), "not elsewhere from the holder itself");
        a.unsubscribe(7).expect("unsubscribe");
        // Presence outlives the channel until the holder has stored what reached it.
        assert_eq!(b.online_elsewhere(7), Ok(true), "held until released");
        assert_eq!(b.publish(7, "{}"), Ok(false), "but nothing is received any more");
        a.release(7).expect("release");
        assert_eq!(b.online_elsewhere(7), Ok(false));
        assert_eq!(a.online_elsewhere(7), Ok(false));
    }

    #[test]
    fn unsubscribe_returns_after_earlier_messages_were_handed_over() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        for round in 0..5 {
            a.subscribe(7).expect("subscribe");
            let msgs: Vec<(UserId, Arc<str>)> =
                (0..200).map(|i| (7, Arc::from(format!("{{\"r\":{round},\"n\":{i}}}")))).collect();
            assert_eq!(b.publish_many(&msgs), Ok(vec![true; 200]));
            a.unsubscribe(7).expect("unsubscribe");
            // No wait: everything published before the unsubscribe is already there.
            assert_eq!(inbox.messages().len(), 200 * (round + 1), "round {round}");
            assert_eq!(b.publish(7, "{}"), Ok(false));
        }
    }

    #[test]
    fn publish_many_mixed() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        a.subscribe(1).expect("subscribe");
        a.subscribe(3).expect("subscribe");
        let msgs: Vec<(UserId, Arc<str>)> =
            vec![(1, "{\"a\":1}".into()), (2, "{\"a\":2}".into()), (3, "{\"a\":3}".into()), (4, "{\"a\":4}".into())];
        assert_eq!(b.publish_many(&msgs), Ok(vec![true, false, true, false]));
        assert_eq!(b.publish_many(&[]), Ok(vec![]));
        assert!(inbox.wait(WAIT, |m, _| m.len() >= 2));
        assert_eq!(inbox.messages(), vec![push(1, "{\"a\":1}"), push(3, "{\"a\":3}")]);
    }

    #[test]
    fn foreign_channels_are_ignored() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        a.subscribe(7).expect("subscribe");
        // Someone else's traffic on other channels, including a control channel.
        a.publishers.run("t", |c| redis::cmd("PUBLISH").arg("chat:other").arg("x").query::<i64>(c)).expect("pub");
        let ctl = a.ctl_channel.clone();
        a.publishers.run("t", |c| redis::cmd("PUBLISH").arg(&ctl).arg("w").query::<i64>(c)).expect("pub");
        assert_eq!(a.publish(7, "{}"), Ok(true));
        assert!(inbox.wait(WAIT, |m, _| !m.is_empty()));
        thread::sleep(Duration::from_millis(100));
        assert_eq!(inbox.messages(), vec![push(7, "{}")]);
    }

    #[test]
    fn connect_fails_without_redis() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let inbox: Arc<dyn Inbox> = Arc::new(Recorder::default());
        let started = Instant::now();
        assert!(RedisBus::connect(&format!("redis://127.0.0.1:{port}"), inbox.clone()).is_err());
        assert!(RedisBus::connect("http://127.0.0.1:1", inbox).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn drop_stops_the_subscriber_promptly() {
        let server = Server::start();
        let (a, _) = bus(&server);
        a.subscribe(7).expect("subscribe");
        let started = Instant::now();
        drop(a);
        assert!(started.elapsed() < Duration::from_millis(500), "drop took {:?}", started.elapsed());
    }

    #[test]
    fn survives_a_redis_restart() {
        let mut server = Server::start();
        let port = server.port;
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        a.subscribe(7).expect("subscribe");
        assert_eq!(b.publish(7, "{\"n\":1}"), Ok(true));
        assert!(inbox.wait(WAIT, |m, _| m.len() == 1));

        server.kill();
        let started = Instant::now();
        assert!(b.publish(7, "{\"n\":2}").is_err(), "publish during the outage fails");
        assert!(b.ring(7).is_err());
        assert!(b.online_elsewhere(7).is_err());
        let failed_in = started.elapsed();
        assert!(failed_in < Duration::from_secs(3), "outage calls took {failed_in:?}");
        // Once the subscriber noticed: subscribe fails, unsubscribe holds.
        thread::sleep(Duration::from_millis(300));
        assert!(a.subscribe(8).is_err());
        a.unsubscribe(8).expect("unsubscribe while disconnected");
        eprintln!("outage: publish/ring/numsub failed in {failed_in:?}");

        let _server = Server::start_on(port);
        let restarted = Instant::now();
        assert!(inbox.wait(Duration::from_secs(5), |_, r| !r.is_empty()), "resubscribed within 5 s of the restart");
        eprintln!("outage: resubscribed {:?} after the restart", restarted.elapsed());
        assert_eq!(lock(&inbox.got).1, vec![vec![7]]);
        assert_eq!(b.publish(7, "{\"n\":3}"), Ok(true));
        assert!(inbox.wait(WAIT, |m, _| m.len() == 2));
        assert_eq!(inbox.messages(), vec![push(7, "{\"n\":1}"), push(7, "{\"n\":3}")]);
        assert_eq!(b.online_elsewhere(7), Ok(true));
        a.subscribe(8).expect("subscribe after the restart");
    }

    #[test]
    fn survives_a_stalled_redis() {
        let server = Server::start();
        let (a, inbox) = bus(&server);
        let (b, _) = bus(&server);
        a.subscribe(7).expect("subscribe");
        assert_eq!(b.publish(7, "{\"n\":1}"), Ok(true));
        assert!(inbox.wait(WAIT, |m, _| m.len() == 1));

        server.signal(libc::SIGSTOP);
        let started = Instant::now();
        assert!(b.publish(7, "{\"n\":2}").is_err(), "publish to a stalled redis fails");
        let failed_in = started.elapsed();
        assert!(failed_in < Duration::from_secs(3), "publish took {failed_in:?}");
        // The subscriber PINGs its silent connection and gives it up.
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.shared.connected.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let noticed_in = started.elapsed();
        server.signal(libc::SIGCONT);
        assert!(!a.shared.connected.load(Ordering::SeqCst), "dead connection noticed");
        eprintln!("stall: publish failed in {failed_in:?}, subscriber gave up after {noticed_in:?}");

        assert!(inbox.wait(Duration::from_secs(5), |_, r| !r.is_empty()), "resubscribed after SIGCONT");
        assert_eq!(lock(&inbox.got).1, vec![vec![7]]);
        assert_eq!(b.publish(7, "{\"n\":3}"), Ok(true));
        assert!(inbox.wait(WAIT, |m, _| m.iter().any(|x| *x == push(7, "{\"n\":3}"))));
    }

    #[test]
    fn parser_handles_partial_frames() {
        let frame = b"*3\r\n$7\r\nmessage\r\n$2\r\n42\r\n$7\r\nmailbox\r\n";
        for cut in 0..frame.len() {
            assert!(parse(&frame[..cut], 0, 0).expect("partial is not an error").is_none(), "cut {cut}");
        }
        let (f, next) = parse(frame, 0, 0).expect("parse").expect("whole");
        assert_eq!(next, frame.len());
        let Frame::Array(Some(items)) = f else { panic!("array") };
        assert_eq!(items[2].bytes(), Some(&b"mailbox"[..]));
        assert!(parse(b"?x\r\n", 0, 0).is_err());
        assert_eq!(channel_user(b"42"), Some(42));
        assert_eq!(channel_user(b"-1"), None);
        assert_eq!(channel_user(b"chat:ctl:1"), None);
    }
}
