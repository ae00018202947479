//! `LoopPool`: the handles through which any thread reaches the loops' connections.
//!
//! Safe to call from other threads. A closure queued with [`LoopPool::run`] runs on the
//! loop that owns the connection, in the order queued, with `Some(conn)` while that
//! very connection is open and `None` once it is gone (closed, or its slot reused).
//! If the loop has stopped, the closure is dropped without running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::Waker;

use super::connection::{ConnRef, Connection};

pub(crate) type Job<C> = Box<dyn FnOnce(Option<&mut Connection<C>>) + Send>;

pub(crate) enum Task<C> {
    /// A socket accepted for this loop.
    Register(TcpStream, std::net::SocketAddr),
    Run(ConnRef, Job<C>),
    /// Flush what can be flushed, close every connection, exit.
    Shutdown,
}

pub(crate) struct LoopHandle<C> {
    pub(crate) tasks: Sender<Task<C>>,
    pub(crate) waker: Arc<Waker>,
    /// Set while a wake-up is pending, so a burst of tasks costs one wake-up.
    pub(crate) wake_pending: Arc<AtomicBool>,
}

impl<C> LoopHandle<C> {
    pub(crate) fn push(&self, task: Task<C>) {
        if self.tasks.send(task).is_err() {
            return; // the loop has stopped
        }
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
    /// Runs `f` on the loop that owns `conn`. Safe to call from any thread.
    pub fn run(&self, conn: ConnRef, f: impl FnOnce(Option<&mut Connection<C>>) + Send + 'static) {
        if let Some(handle) = self.loops.get(conn.loop_index as usize) {
            handle.push(Task::Run(conn, Box::new(f)));
        }
    }
}
