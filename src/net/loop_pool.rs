//! `LoopPool`: the handles through which any thread reaches the loops' connections.
//!
//! Safe to call from other threads. A closure queued with [`LoopPool::run`] or
//! [`LoopPool::post`] runs on the loop that owns the connection, in the order queued,
//! with `Some(conn)` while that very connection is open and `None` once it is gone
//! (closed, or its slot reused). If the loop has stopped, the closure is dropped
//! without running.
//!
//! Each loop's task queue is bounded ([`TASK_BOUND`]), and a full queue holds up the
//! producer, never drops a task (see `crate::queue`):
//!
//! - `run` (worker threads) waits while the queue is full. That cannot deadlock: a loop
//!   never blocks (it never waits for a worker or for another loop), so it always goes
//!   on draining its queue.
//! - `post` never waits and goes past the bound: for the tasks that a loop or the
//!   acceptor queues (a loop must never block, and one loop waiting for another could
//!   deadlock), and for any task whose number is bounded by construction. Those are a
//!   new connection's registration (at most `--max-conns` in all), the write of a
//!   user's pending live pushes (`Hub::offer`, at most one queued per online user), and
//!   the wake-up of a connection whose worker's queue has room again (at most one per
//!   connection), so the queue holds at most `TASK_BOUND` plus a few per connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::Waker;

use super::connection::{ConnRef, Connection};
use crate::queue::Queue;

/// Tasks from worker threads queued on one loop at most; past it `LoopPool::run` waits.
pub const TASK_BOUND: usize = 4096;

pub(crate) type Job<C> = Box<dyn FnOnce(Option<&mut Connection<C>>) + Send>;

pub(crate) enum Task<C> {
    /// A socket accepted for this loop.
    Register(TcpStream, std::net::SocketAddr),
    Run(ConnRef, Job<C>),
    /// Flush what can be flushed, close every connection, exit.
    Shutdown,
}

pub(crate) struct LoopHandle<C> {
    pub(crate) tasks: Queue<Task<C>>,
    pub(crate) waker: Arc<Waker>,
    /// Set while a wake-up is pending, so a burst of tasks costs one wake-up.
    pub(crate) wake_pending: Arc<AtomicBool>,
}

impl<C> LoopHandle<C> {
    /// Queues `task` past the bound; never waits (see the module doc for who may).
    pub(crate) fn push(&self, task: Task<C>) {
        if self.tasks.push_always(task).is_ok() {
            self.wake();
        }
    }

    /// Queues `task`, first waiting while the queue is full.
    fn push_wait(&self, task: Task<C>) {
        if self.tasks.push_wait(task).is_ok() {
            self.wake();
        }
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake an event loop: {e}");
            }
        }
    }
}

pub struct LoopPool<C> {
    pub(crate) loops: Arc<[LoopHandle<C>]>,
}

impl<C> Clone for LoopPool<C> {
    fn clone(&self) -> Self {
        LoopPool { loops: Arc::clone(&self.loops) }
    }
}

impl<C> LoopPool<C> {
    /// Runs `f` on the loop that owns `conn`, first waiting while that loop's queue is
    /// full. For threads that may block; never from a loop thread (use `post`).
    pub fn run(&self, conn: ConnRef, f: impl FnOnce(Option<&mut Connection<C>>) + Send + 'static) {
        if let Some(handle) = self.loops.get(conn.loop_index as usize) {
            handle.push_wait(Task::Run(conn, Box::new(f)));
        }
    }

    /// Runs `f` on the loop that owns `conn`; never waits. Any thread, for tasks whose
    /// number is bounded by construction (say why where you call it).
    pub fn post(&self, conn: ConnRef, f: impl FnOnce(Option<&mut Connection<C>>) + Send + 'static) {
        if let Some(handle) = self.loops.get(conn.loop_index as usize) {
            handle.push(Task::Run(conn, Box::new(f)));
        }
    }
}
