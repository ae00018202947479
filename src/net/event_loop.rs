//! `EventLoop`: one sub-reactor thread, muduo's `EventLoop` plus the connections it owns.
//!
//! Everything here runs on the loop's own thread: socket reads and writes, the
//! handler's callbacks, and closures queued by other threads through `LoopPool`.
//!
//! Each callback for a connection (and each closure queued for it) runs under
//! `panic_guard::catch`: a panic in it is logged once and closes that connection only.
//! Reading stops while a connection wants no input (see `Connection`'s backpressure);
//! the loop never blocks, and runs at most the tasks queued when it starts a turn, so
//! producers refilling its queue cannot keep it from its sockets.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::connection::{ConnRef, Connection};
use super::loop_pool::{Job, LoopHandle, Task, TASK_BOUND};
use super::Handler;
use crate::panic_guard;
use crate::queue::{Consumer, Queue};

/// The waker's token; slab keys are far below it.
const WAKER: Token = Token(usize::MAX);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per readiness event before other connections get their turn: one, as in
/// muduo, so a connection whose frames are costly to parse holds its loop for one
/// chunk's work at a time (it is read again after the others).
const READS_PER_TURN: usize = 1;
/// How often `on_tick` runs.
const TICK: Duration = Duration::from_secs(1);
/// How long a connection closing after its output may wait for a slow reader.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown tries to flush queued output.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(1000);

pub(crate) struct EventLoop<H: Handler> {
    index: u32,
    poll: Poll,
    conns: Slab<Connection<H::Context>>,
    tasks: Consumer<Task<H::Context>>,
    wake_pending: Arc<AtomicBool>,
    next_generation: u32,
    /// Connections of the whole server, for `--max-conns`.
    live: Arc<AtomicUsize>,
    /// Keys whose socket may hold more input: read again without waiting for an event
    /// (their turn ran out, or reading was held back and may go on).
    reread: Vec<usize>,
    scratch: Vec<u8>,
}

impl<H: Handler> EventLoop<H> {
    pub(crate) fn new(index: u32, live: Arc<AtomicUsize>) -> io::Result<(EventLoop<H>, LoopHandle<H::Context>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = Queue::new(TASK_BOUND);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let handle = LoopHandle { tasks: tx, waker, wake_pending: Arc::clone(&wake_pending) };
        let el = EventLoop {
            index,
            poll,
            conns: Slab::new(),
            tasks: rx,
            wake_pending,
            next_generation: 0,
            live,
            reread: Vec::new(),
            scratch: vec![0; READ_CHUNK],
        };
        Ok((el, handle))
    }

    /// Runs until a `Shutdown` task arrives or every handle is dropped.
    pub(crate) fn run(mut self, handler: &H) {
        let mut events = Events::with_capacity(1024);
        let mut last_tick = Instant::now();
        loop {
            let timeout = if self.reread.is_empty() && self.tasks.is_empty() { TICK } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("loop {}: poll failed: {e}", self.index);
                break;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(key) => {
                        let hup = event.is_read_closed() || event.is_error();
                        self.handle_io(handler, key, event.is_readable() || hup, hup, event.is_writable())
                    }
                }
            }
            for key in std::mem::take(&mut self.reread) {
                self.read_again(handler, key);
            }
            if !self.run_tasks(handler) {
                break;
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.tick(handler, now);
            }
        }
        self.shutdown(handler);
    }

    /// Runs the tasks queued now (those queued meanwhile wait for the next turn); false
    /// when the loop must stop.
    fn run_tasks(&mut self, handler: &H) -> bool {
        self.wake_pending.store(false, Ordering::Release);
        for _ in 0..self.tasks.len().max(1) {
            match self.tasks.try_pop() {
                Ok(Task::Register(stream, peer)) => self.register(handler, stream, peer),
                Ok(Task::Run(conn, job)) => {
                    let key = conn.key as usize;
                    match self.conns.get_mut(key) {
                        Some(c) if c.id() == conn && c.is_open() => {
                            guarded(c, "a queued task", |c| job(Some(c)));
                            self.after_callback(handler, key);
                        }
                        _ => self.run_orphan(job),
                    }
                }
                Ok(Task::Shutdown) => return false,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Runs a task whose connection is gone.
    fn run_orphan(&self, job: Job<H::Context>) {
        if let Err(why) = panic_guard::catch(|| job(None)) {
            log::error!("loop {}: a task for a closed connection failed: {why}", self.index);
        }
    }

    fn register(&mut self, handler: &H, mut stream: mio::net::TcpStream, peer: std::net::SocketAddr) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("{peer}: cannot register: {e}");
            self.live.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnRef { loop_index: self.index, key: key as u32, generation: self.next_generation };
        let ctx = handler.new_context(id);
        let conn = entry.insert(Connection::new(id, stream, peer, ctx));
        guarded(conn, "on_connection", |c| handler.on_connection(c));
        // Bytes that arrived before registration need no extra read: registering a
        // ready socket reports it at once, edge-triggered or not.
        self.after_callback(handler, key);
    }

    /// `hup`: the peer may have closed, so read until the socket says so (see `read_input`).
    fn handle_io(&mut self, handler: &H, key: usize, readable: bool, hup: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if writable && conn.unsent() > 0 {
            conn.flush();
            if conn.unsent() == 0 && conn.is_open() {
                guarded(conn, "on_write_complete", |c| handler.on_write_complete(c));
            }
        }
        if readable && read_input(handler, conn, &mut self.scratch, hup) {
            self.reread.push(key);
        }
        self.after_callback(handler, key);
    }

    /// Reads a connection without waiting for an event: its turn ran out, or reading
    /// was held back and may go on. Then the buffered input goes to `on_message` first
    /// (it may hold whole frames, and the handler may have work to retry), and the
    /// socket is read until it says WouldBlock: no new edge comes for bytes that
    /// arrived while the loop was not reading, nor for a close.
    fn read_again(&mut self, handler: &H, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.input_held {
            if !conn.wants_input() {
                return; // held back again meanwhile; a later change puts it back here
            }
            conn.input_held = false;
            deliver(handler, conn);
        }
        if read_input(handler, conn, &mut self.scratch, true) {
            self.reread.push(key);
        }
        self.after_callback(handler, key);
    }

    /// Removes the connection if a callback or an I/O error closed it.
    fn after_callback(&mut self, handler: &H, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !conn.is_reading() && conn.closing_since.is_none() {
            conn.closing_since = Some(Instant::now());
            conn.flush();
        }
        if conn.should_remove() {
            self.remove(handler, key);
        } else if conn.input_held && conn.wants_input() && !self.reread.contains(&key) {
            self.reread.push(key); // reading may go on: input may be waiting
        }
    }

    fn remove(&mut self, handler: &H, key: usize) {
        let mut conn = self.conns.remove(key);
        conn.mark_closed();
        guarded(&mut conn, "on_connection", |c| handler.on_connection(c));
        if let Err(e) = self.poll.registry().deregister(conn.stream()) {
            log::debug!("{}: deregister: {e}", conn.peer());
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    fn tick(&mut self, handler: &H, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            match conn.closing_since {
                Some(since) if now.duration_since(since) > CLOSE_GRACE => conn.abort(),
                Some(_) => {}
                None => guarded(conn, "on_tick", |c| handler.on_tick(c, now)),
            }
            self.after_callback(handler, key);
        }
    }

    /// Flushes what the sockets take within a short grace period, then closes all.
    fn shutdown(&mut self, handler: &H) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        let mut events = Events::with_capacity(256);
        loop {
            let mut pending = false;
            for (_, conn) in self.conns.iter_mut() {
                conn.flush();
                pending |= conn.unsent() > 0 && conn.is_open();
            }
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            let _ = self.poll.poll(&mut events, Some((deadline - now).min(Duration::from_millis(50))));
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove(handler, key);
        }
        // Closures still queued see their connection gone.
        while let Ok(task) = self.tasks.try_pop() {
            if let Task::Run(_, job) = task {
                self.run_orphan(job);
            }
        }
    }
}

/// Reads `conn` until the socket is drained, reading must stop, or its turn is up
/// (true: read it again soon). Each read goes to `on_message` at once.
///
/// Without `hup`, a read that does not fill the buffer has taken everything there was
/// (data that arrives later raises a new edge), and the `WouldBlock` read is skipped.
/// When reading must stop (the connection wants no input), it only notes that input
/// may be waiting (`input_held`); `after_callback` puts it back on `reread` once
/// reading may go on. No syscall is spent on that while nobody floods.
fn read_input<H: Handler>(handler: &H, conn: &mut Connection<H::Context>, scratch: &mut [u8], hup: bool) -> bool {
    if !conn.wants_input() {
        conn.input_held = conn.is_reading();
        return false;
    }
    for _ in 0..READS_PER_TURN {
        match conn.read_once(scratch) {
            Ok(0) => {
                conn.mark_closed();
                return false;
            }
            Ok(n) => {
                deliver(handler, conn);
                if !conn.wants_input() {
                    conn.input_held = conn.is_reading();
                    return false;
                }
                if n < scratch.len() && !hup {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                log::debug!("{}: read failed: {e}", conn.peer());
                conn.mark_closed();
                return false;
            }
        }
    }
    true
}

/// Hands the buffered input to `on_message`, corked, then writes its replies in one send.
fn deliver<H: Handler>(handler: &H, conn: &mut Connection<H::Context>) {
    conn.corked = true;
    guarded(conn, "on_message", |c| handler.on_message(c));
    conn.corked = false;
    conn.flush();
}

/// Runs one of `conn`'s callbacks; a panic in it is logged once and closes this
/// connection only.
fn guarded<C>(conn: &mut Connection<C>, what: &str, f: impl FnOnce(&mut Connection<C>)) {
    if let Err(why) = panic_guard::catch(|| f(conn)) {
        log::error!("{}: {what} failed: {why}; connection closed", conn.peer());
        conn.abort();
    }
}
