//! `Connection`: one TCP connection, owned by the loop thread it was assigned to.
//!
//! Not thread safe, but in loop: only the owning `EventLoop` touches a connection. Other
//! threads reach it through a [`ConnRef`] and `LoopPool::run`, which runs a closure on
//! the owning loop with the connection, or with `None` when it is gone.
//!
//! Backpressure, as muduo has it: the loop stops reading a connection while its unsent
//! output is past the high-water mark, or while the upper layer has paused reading
//! (`pause_reading`), and the sender's own TCP window then holds it back. Nothing is
//! re-registered with the poller: the loop just stops draining the socket and notes
//! that input may be waiting (`input_held`). When reading may go on again (the output
//! drained, or `resume_reading`), the loop calls `on_message` with what is buffered
//! and reads the socket at once, since an edge-triggered poller reports no new edge
//! for bytes that arrived while it was not reading.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::buffer::Buffer;

/// Unsent output past which a connection is not read, unless the upper layer sets
/// another mark (`set_high_water`).
pub const DEFAULT_HIGH_WATER: usize = 1 << 20;

/// Names a connection from any thread: (loop index, slab key, generation).
///
/// The generation makes a reference to a closed connection stale even after its slab
/// slot is reused, so a send through it is dropped, never misdelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub(crate) loop_index: u32,
    pub(crate) key: u32,
    pub(crate) generation: u32,
}

impl ConnRef {
    /// A number that is the same for the life of the connection; for spreading work.
    pub fn hash_key(self) -> u64 {
        (u64::from(self.loop_index) << 48) ^ (u64::from(self.key) << 16) ^ u64::from(self.generation)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Closing once the output is flushed; input is ignored.
    Closing,
    /// Gone: the loop removes it after the current callback.
    Closed,
}

pub struct Connection<C> {
    id: ConnRef,
    stream: TcpStream,
    peer: SocketAddr,
    state: State,
    pub input: Buffer,
    output: Buffer,
    /// Bytes ever handed to `send`, and bytes the kernel accepted of them.
    queued_total: u64,
    written_total: u64,
    pub(crate) created: Instant,
    pub(crate) last_read: Instant,
    pub(crate) closing_since: Option<Instant>,
    /// While set, `send` only queues: the loop writes once after the callback, so the
    /// replies to all frames of one read cost one `send()`.
    pub(crate) corked: bool,
    /// Unsent output past which the connection is not read.
    high_water: usize,
    /// The upper layer has paused reading.
    read_paused: bool,
    /// The loop stopped reading while the socket may hold more: once reading may go on,
    /// it must read again without waiting for an event.
    pub(crate) input_held: bool,
    /// The upper layer's per-connection state.
    pub ctx: C,
}

impl<C> Connection<C> {
    pub(crate) fn new(id: ConnRef, stream: TcpStream, peer: SocketAddr, ctx: C) -> Self {
        let now = Instant::now();
        Connection {
            id,
            stream,
            peer,
            state: State::Open,
            input: Buffer::new(),
            output: Buffer::new(),
            queued_total: 0,
            written_total: 0,
            created: now,
            last_read: now,
            closing_since: None,
            corked: false,
            high_water: DEFAULT_HIGH_WATER,
            read_paused: false,
            input_held: false,
            ctx,
        }
    }

    pub fn id(&self) -> ConnRef {
        self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When the connection was accepted, and when bytes last arrived on it.
    pub fn created(&self) -> Instant {
        self.created
    }

    pub fn last_read(&self) -> Instant {
        self.last_read
    }

    /// Whether the connection still accepts output.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Queues bytes and writes what the socket takes now; the rest is written when the
    /// socket becomes writable. Dropped once the connection is closing.
    pub fn send(&mut self, bytes: &[u8]) {
        self.send_parts(&[bytes]);
    }

    /// `send` of several slices as one stream of bytes, in one write.
    pub fn send_parts(&mut self, parts: &[&[u8]]) {
        if self.state != State::Open {
            return;
        }
        for part in parts {
            self.queued_total += part.len() as u64;
            self.output.append(part);
        }
        if !self.corked {
            self.flush();
        }
    }

    /// Bytes handed to `send` so far, counted from the start of the connection.
    /// A byte at stream offset `o` has reached the socket once `written() > o`.
    pub fn queued(&self) -> u64 {
        self.queued_total
    }

    pub fn written(&self) -> u64 {
        self.written_total
    }

    /// Bytes queued but not yet taken by the socket (while corked, not yet tried).
    pub fn unsent(&self) -> usize {
        self.output.len()
    }

    /// Stops reading this connection until `resume_reading`; input already buffered
    /// stays in `input`. Takes effect when the current callback returns.
    pub fn pause_reading(&mut self) {
        self.read_paused = true;
    }

    /// Reading may go on: the loop calls `on_message` with what is buffered, then reads
    /// the socket. Nothing happens if reading was not paused.
    pub fn resume_reading(&mut self) {
        self.read_paused = false;
    }

    pub fn is_read_paused(&self) -> bool {
        self.read_paused
    }

    /// Sets the unsent output past which the connection is not read (muduo's
    /// high-water mark): a peer that does not read its replies stops being read.
    pub fn set_high_water(&mut self, bytes: usize) {
        self.high_water = bytes;
    }

    /// Whether the loop may read this connection now.
    pub(crate) fn wants_input(&self) -> bool {
        self.state == State::Open && !self.read_paused && self.output.len() <= self.high_water
    }

    /// Closes after the queued output is written; nothing more is read.
    pub fn close(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
        }
    }

    /// Closes now, dropping queued output.
    pub fn abort(&mut self) {
        self.state = State::Closed;
    }

    pub(crate) fn should_remove(&self) -> bool {
        self.state == State::Closed || (self.state == State::Closing && self.output.is_empty())
    }

    pub(crate) fn is_reading(&self) -> bool {
        self.state == State::Open
    }

    pub(crate) fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads once into `scratch` and appends what came to the input buffer.
    /// Returns the number of bytes read; 0 means the peer closed.
    pub(crate) fn read_once(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(scratch) {
                Ok(n) => {
                    self.input.append(&scratch[..n]);
                    if n > 0 {
                        self.last_read = Instant::now();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes queued output until it is empty or the socket is full.
    pub(crate) fn flush(&mut self) {
        while !self.output.is_empty() && self.state != State::Closed {
            match write_some(&mut self.stream, self.output.readable()) {
                Ok(0) => break,
                Ok(n) => {
                    self.written_total += n as u64;
                    self.output.consume(n);
                }
                Err(e) => {
                    log::debug!("{}: write failed: {e}", self.peer);
                    self.state = State::Closed;
                }
            }
        }
    }

    pub(crate) fn mark_closed(&mut self) {
        self.state = State::Closed;
    }
}

/// Writes as much of `bytes` as the socket takes now; WouldBlock is 0 bytes.
fn write_some(stream: &mut TcpStream, mut bytes: &[u8]) -> io::Result<usize> {
    let mut total = 0;
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n;
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}
