//! `Connection`: one TCP connection, owned by the loop thread it was assigned to.
//!
//! Not thread safe, but in loop: only the owning `EventLoop` touches a connection. Other
//! threads reach it through a [`ConnRef`] and `LoopPool::run`, which runs a closure on
//! the owning loop with the connection, or with `None` when it is gone.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::buffer::Buffer;

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
