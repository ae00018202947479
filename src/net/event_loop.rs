//! `EventLoop`: one sub-reactor thread, muduo's `EventLoop` plus the connections it owns.
//!
//! Everything here runs on the loop's own thread: socket reads and writes, the
//! handler's callbacks, and closures queued by other threads through `LoopPool`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::connection::{ConnRef, Connection};
use super::loop_pool::{LoopHandle, Task};
use super::Handler;

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
    tasks: Receiver<Task<H::Context>>,
    wake_pending: Arc<AtomicBool>,
    next_generation: u32,
    /// Connections of the whole server, for `--max-conns`.
    live: Arc<AtomicUsize>,
    /// Keys whose socket may hold more input: read again without waiting for an event.
    reread: Vec<usize>,
    scratch: Vec<u8>,
}

impl<H: Handler> EventLoop<H> {
    pub(crate) fn new(index: u32, live: Arc<AtomicUsize>) -> io::Result<(EventLoop<H>, LoopHandle<H::Context>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
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
            let timeout = if self.reread.is_empty() { TICK } else { Duration::ZERO };
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
                self.handle_io(handler, key, true, true, false);
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

    /// Runs queued tasks; false when the loop must stop.
    fn run_tasks(&mut self, handler: &H) -> bool {
        self.wake_pending.store(false, Ordering::Release);
        loop {
            match self.tasks.try_recv() {
                Ok(Task::Register(stream, peer)) => self.register(handler, stream, peer),
                Ok(Task::Run(conn, job)) => {
                    let key = conn.key as usize;
                    match self.conns.get_mut(key) {
                        Some(c) if c.id() == conn && c.is_open() => {
                            job(Some(c));
                            self.after_callback(handler, key);
                        }
                        _ => job(None),
                    }
                }
                Ok(Task::Shutdown) => return false,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
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
        handler.on_connection(conn);
        // Bytes that arrived before registration need no extra read: registering a
        // ready socket reports it at once, edge-triggered or not.
        self.after_callback(handler, key);
    }

    /// `hup`: the peer may have closed, so read until the socket says so; otherwise a
    /// read that does not fill the buffer has taken everything there was (data that
    /// arrives later raises a new edge), and the `WouldBlock` read is skipped.
    fn handle_io(&mut self, handler: &H, key: usize, readable: bool, hup: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if writable && conn.unsent() > 0 {
            conn.flush();
            if conn.unsent() == 0 && conn.is_open() {
                handler.on_write_complete(conn);
            }
        }
        if readable && conn.is_reading() {
            let mut reads = 0;
            loop {
                match conn.read_once(&mut self.scratch) {
                    Ok(0) => {
                        conn.mark_closed();
                        break;
                    }
                    Ok(n) => {
                        conn.corked = true;
                        handler.on_message(conn);
                        conn.corked = false;
                        conn.flush();
                        if !conn.is_reading() || (n < self.scratch.len() && !hup) {
                            break;
                        }
                        reads += 1;
                        if reads == READS_PER_TURN {
                            self.reread.push(key);
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::debug!("{}: read failed: {e}", conn.peer());
                        conn.mark_closed();
                        break;
                    }
                }
            }
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
        }
    }

    fn remove(&mut self, handler: &H, key: usize) {
        let mut conn = self.conns.remove(key);
        conn.mark_closed();
        handler.on_connection(&mut conn);
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
                None => handler.on_tick(conn, now),
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
        while let Ok(task) = self.tasks.try_recv() {
            if let Task::Run(_, job) = task {
                job(None);
            }
        }
    }
}
