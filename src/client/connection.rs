//! One TCP connection to the chat server: the socket, the reader thread, the keepalive
//! thread, and the matching of replies to requests by `reqid`.
//!
//! # Threads
//!
//! - The caller's thread (the client's main thread) runs [`Connection::call`]: it gives
//!   the request a fresh integer `reqid`, sends it and blocks until the reply carrying
//!   that `reqid` arrives, the connection ends, or the reply timeout passes. Frames that
//!   get no reply (RECEIVED) go out through an [`Outlet`], from the push printer thread.
//! - The reader thread, started by [`Connection::connect`], is the only one that reads
//!   the socket. It cuts frames, hands each reply to the call waiting on its `reqid`
//!   (through a one-slot crossbeam channel), forwards pushes (ONE_CHAT, GROUP_CHAT and
//!   `reqid`-less ERROR frames) to [`Connection::pushes`], and when the stream ends it
//!   fails every waiting call and reports why on [`Connection::closed`].
//! - The keepalive thread sends PING (`{"msgid":16}`, no `reqid`; its PONG is dropped by
//!   the reader) whenever nothing was sent for the keepalive interval, so an idle
//!   timeout in a load balancer does not cut the connection.
//!
//! Writes from every thread go through one mutex, so frames never interleave. Every frame sent ends with `\n`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use super::error::{describe, ClientError};
use super::frame::{FrameBuf, FrameError};
use super::Options;
use crate::proto::msg::{ERROR, GROUP_CHAT, ONE_CHAT, PING, PONG};

/// The longest server frame the client accepts (a LOGIN_ACK with many offline messages
/// can be large).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// How long one write may block before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A live connection. Dropping it stops the keepalive thread, shuts the socket down and
/// joins the reader thread (which ends the push channel).
pub struct Connection {
    server: String,
    shared: Arc<Shared>,
    pushes: Receiver<Value>,
    closed: Receiver<String>,
    reply_timeout: Duration,
    reader: Option<JoinHandle<()>>,
    keepalive: Option<(Sender<()>, JoinHandle<()>)>,
}

/// Sends frames that get no reply (RECEIVED) on a connection, from any thread. Clones
/// share the connection; it fails once the connection is gone.
#[derive(Clone)]
pub struct Outlet(Arc<Shared>);

impl Outlet {
    pub fn send(&self, frame: &Value) -> io::Result<()> {
        self.0.send(frame)
    }
}

/// What the threads of one connection share.
struct Shared {
    writer: Mutex<Writer>,
    pending: Mutex<Pending>,
    next_reqid: AtomicU64,
}

struct Writer {
    stream: TcpStream,
    last_sent: Instant,
}

/// Calls waiting for their reply, by reqid.
struct Pending {
    /// Why the connection ended, once it has: no call may wait after that.
    ended: Option<String>,
    waiting: HashMap<u64, Sender<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `host:port`, with brackets around an IPv6 host.
pub fn server_name(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Connection {
    /// Connects to `host:port` (trying each address the name resolves to) and starts the
    /// reader and keepalive threads.
    pub fn connect(host: &str, port: u16, options: &Options) -> Result<Connection, ClientError> {
        let server = server_name(host, port);
        let fail = |reason: String| ClientError::Connect { server: server.clone(), reason };
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| fail(describe(&e)))?.collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(fail(describe(&e))),
            (None, None) => return Err(fail("the name resolves to no address".into())),
        };
        let setup = |stream: &TcpStream| -> io::Result<TcpStream> {
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
            stream.try_clone()
        };
        let read_half = setup(&stream).map_err(|e| fail(describe(&e)))?;
        log::debug!("connected to {server}");

        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer { stream, last_sent: Instant::now() }),
            pending: Mutex::new(Pending { ended: None, waiting: HashMap::new() }),
            next_reqid: AtomicU64::new(1),
        });
        let (push_tx, pushes) = unbounded();
        let (closed_tx, closed) = bounded(1);
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("chat-reader".into())
                .spawn(move || read_loop(read_half, &shared, &push_tx, &closed_tx))
                .map_err(|e| fail(describe(&e)))?
        };
        let mut conn = Connection {
            server: server.clone(),
            shared,
            pushes,
            closed,
            reply_timeout: options.reply_timeout,
            reader: Some(reader),
            keepalive: None,
        };
        if !options.keepalive.is_zero() {
            let (stop_tx, stop_rx) = bounded::<()>(0);
            let shared = Arc::clone(&conn.shared);
            let interval = options.keepalive;
            let handle = std::thread::Builder::new()
                .name("chat-keepalive".into())
                .spawn(move || keepalive_loop(&shared, interval, &stop_rx))
                .map_err(|e| fail(describe(&e)))?;
            conn.keepalive = Some((stop_tx, handle));
        }
        Ok(conn)
    }

    /// The server as `host:port`, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Pushes as they arrive: ONE_CHAT (6), GROUP_CHAT (10), and ERROR frames that answer
    /// no request. The channel ends when the reader thread does.
    pub fn pushes(&self) -> Receiver<Value> {
        self.pushes.clone()
    }

    /// A handle for sending frames that get no reply.
    pub fn outlet(&self) -> Outlet {
        Outlet(Arc::clone(&self.shared))
    }

    /// Gets one message, the reason, when the connection ends (then disconnects).
    pub fn closed(&self) -> &Receiver<String> {
        &self.closed
    }

    /// Sends `request` (an object) with a fresh `reqid` and waits for its reply.
    ///
    /// Runs on the caller's thread; safe to call from any thread.
    pub fn call(&self, mut request: Value) -> Result<Value, ClientError> {
        let reqid = self.shared.next_reqid.fetch_add(1, Ordering::Relaxed);
        if let Value::Object(fields) = &mut request {
            fields.insert("reqid".into(), reqid.into());
        }
        let (tx, rx) = bounded(1);
        {
            let mut pending = lock(&self.shared.pending);
            if let Some(reason) = &pending.ended {
                return Err(self.lost(reason.clone()));
            }
            pending.waiting.insert(reqid, tx);
        }
        if let Err(e) = self.shared.send(&request) {
            lock(&self.shared.pending).waiting.remove(&reqid);
            return Err(self.lost(describe(&e)));
        }
        match rx.recv_timeout(self.reply_timeout) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.shared.pending).waiting.remove(&reqid);
                Err(ClientError::NoReply { server: self.server.clone(), after: self.reply_timeout })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let reason = lock(&self.shared.pending).ended.clone().unwrap_or_else(|| "the connection ended".into());
                Err(self.lost(reason))
            }
        }
    }

    /// Shuts the socket down: the reader thread ends, and with it the push channel.
    pub fn close(&self) {
        let _ = lock(&self.shared.writer).stream.shutdown(Shutdown::Both);
    }

    /// The error for a connection that ended for `reason`.
    pub fn lost(&self, reason: String) -> ClientError {
        ClientError::Lost { server: self.server.clone(), reason }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.keepalive.take() {
            drop(stop);
            let _ = handle.join();
        }
        self.close();
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
    }
}

impl Shared {
    /// Writes one frame: the JSON text and `\n`.
    fn send(&self, value: &Value) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut writer = lock(&self.writer);
        writer.stream.write_all(&bytes)?;
        writer.last_sent = Instant::now();
        Ok(())
    }

    /// Fails every waiting call (their senders drop) and refuses new ones.
    fn end(&self, reason: &str) {
        let mut pending = lock(&self.pending);
        pending.ended = Some(reason.to_owned());
        pending.waiting.clear();
    }
}

/// The reader thread: reads until the stream ends, then ends the connection.
fn read_loop(mut stream: TcpStream, shared: &Shared, pushes: &Sender<Value>, closed: &Sender<String>) {
    let mut frames = FrameBuf::new(MAX_FRAME);
    let mut chunk = vec![0u8; 64 * 1024];
    let reason = 'read: loop {
        match stream.read(&mut chunk) {
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(n) => {
                frames.extend(&chunk[..n]);
                while let Some(frame) = frames.next_frame() {
                    match frame {
                        Ok(value) => dispatch(shared, pushes, value),
                        Err(FrameError::Bad(why)) => log::warn!("skipping a frame the client cannot read: {why}"),
                        Err(FrameError::TooLong(n)) => {
                            break 'read format!("the server sent a frame of over {n} bytes")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break describe(&e),
        }
    };
    log::debug!("reader ends: {reason}");
    let _ = stream.shutdown(Shutdown::Both);
    shared.end(&reason);
    let _ = closed.send(reason);
}

/// Routes one frame: a reply to its waiting call, a push to the push channel.
fn dispatch(shared: &Shared, pushes: &Sender<Value>, value: Value) {
    if let Some(reqid) = value.get("reqid") {
        let waiter = reqid.as_u64().and_then(|id| lock(&shared.pending).waiting.remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(value);
            }
            None => log::debug!("dropping a reply nobody waits for: {value}"),
        }
        return;
    }
    match value.get("msgid").and_then(Value::as_i64) {
        Some(ONE_CHAT | GROUP_CHAT | ERROR) => {
            let _ = pushes.send(value);
        }
        Some(PONG) => log::trace!("pong"),
        _ => log::debug!("ignoring an unexpected frame: {value}"),
    }
}

/// The keepalive thread: PING after `interval` without sending anything.
fn keepalive_loop(shared: &Shared, interval: Duration, stop: &Receiver<()>) {
    loop {
        let idle = lock(&shared.writer).last_sent.elapsed();
        if idle >= interval {
            if let Err(e) = shared.send(&json!({ "msgid": PING })) {
                log::debug!("keepalive ends: {e}");
                return;
            }
            continue;
        }
        match stop.recv_timeout(interval - idle) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
