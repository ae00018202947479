//! The reactor, after muduo's `net/`: it moves bytes and knows nothing of chat.
//!
//! - [`TcpServer`] (`server.rs`) ties it together: the caller's thread runs the
//!   [`Acceptor`](acceptor) loop, which hands each new socket round-robin to one of N
//!   [`EventLoop`](event_loop) threads.
//! - Each `EventLoop` owns a `mio::Poll` and a slab of [`Connection`]s, reads until
//!   WouldBlock, and calls the [`Handler`]'s callbacks on its own thread.
//! - [`listen`] makes the listening socket with the backlog asked for (std's is 128);
//!   [`raise_fd_limit`] lets the process hold as many connections as it may.
//! - [`LoopPool`] is how any other thread reaches a connection: it queues a closure on
//!   the owning loop and wakes it; a stale [`ConnRef`] gets `None`. Each loop's queue is
//!   bounded (`crate::queue`): a worker waits for room, a loop never does.
//! - Backpressure: a connection is not read while its unsent output is past its
//!   high-water mark or the handler has paused it (`Connection::pause_reading`); then
//!   the peer's TCP window fills and holds it back.
//! - A panic in a callback for one connection closes that connection, not the loop.

mod acceptor;
mod buffer;
mod connection;
mod event_loop;
mod listener;
mod loop_pool;
mod server;

pub use buffer::Buffer;
pub use connection::{ConnRef, Connection, DEFAULT_HIGH_WATER};
pub use listener::{listen, raise_fd_limit, somaxconn};
pub use loop_pool::{LoopPool, TASK_BOUND};
pub use server::{ServerOptions, ShutdownHandle, TcpServer};

use std::time::Instant;

/// The upper layer's callbacks. All run on the loop thread that owns the connection,
/// so they must not block.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state kept in [`Connection::ctx`].
    type Context: Send + 'static;

    /// The state of a connection just accepted.
    fn new_context(&self, conn: ConnRef) -> Self::Context;

    /// The connection came up (`conn.is_open()`) or went down (`!conn.is_open()`: it
    /// can no longer be written to; this is the last callback for it).
    fn on_connection(&self, conn: &mut Connection<Self::Context>);

    /// Bytes arrived in `conn.input`; consume what was handled. Also called, maybe with
    /// no new bytes, when reading resumes after a pause (`Connection::resume_reading`,
    /// or output drained below the high-water mark). Input left unconsumed while
    /// reading is paused is handed over again then.
    fn on_message(&self, conn: &mut Connection<Self::Context>);

    /// The output queued on `conn` has all been written to its socket (muduo's write
    /// complete callback): a good moment to queue more. Not called when `send` wrote
    /// everything at once.
    fn on_write_complete(&self, _conn: &mut Connection<Self::Context>) {}

    /// Called about once a second for every connection, for timeouts.
    fn on_tick(&self, _conn: &mut Connection<Self::Context>, _now: Instant) {}
}
