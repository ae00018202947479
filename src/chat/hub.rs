//! `Hub`: what every worker shares — the store, the bus, the registry of who is online
//! here, and the loops through which replies and pushes reach connections.
//!
//! Built once in `chat::run` and passed down; no globals. Its methods block and run on
//! worker threads only, except `offer` and `fan_out` (`delivery`) and `append`
//! (`message`), which any thread may call. What they queue on a loop waits while that
//! loop's queue is full (`LoopPool::run`), which cannot deadlock: a loop never waits
//! for a worker or the log writer.

use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;

use super::conn_state::{answered, send_frame, ConnState};
use super::login_guard::LoginGuard;
use super::registry::Registry;
use super::worker::Job;
use super::worker_pool::Dispatcher;
use crate::bus::Bus;
use crate::net::{ConnRef, Connection, LoopPool};
use crate::proto::msg::{errno, Fail};
use crate::store::{LogWriter, Store, StoreError};

pub struct Hub {
    pub store: Arc<dyn Store>,
    /// Appends messages to the log in group commits; settles inbox rows.
    pub writer: Arc<LogWriter>,
    pub bus: Arc<dyn Bus>,
    pub registry: Arc<Registry>,
    pub loops: LoopPool<ConnState>,
    pub login_guard: LoginGuard,
    /// The workers, for jobs queued by threads that are not (the log writer's). Set
    /// once they exist; cleared at shutdown so they can stop.
    pub workers: Mutex<Option<Dispatcher<Job>>>,
}

impl Hub {
    /// Queues `job` on the worker `key` picks; false when the workers are down. Never
    /// blocks: for jobs bounded by construction (a publish per committed message, whose
    /// sender has at most `MAX_IN_FLIGHT` requests in flight).
    pub fn dispatch(&self, key: u64, job: Job) -> bool {
        match &*self.workers.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(workers) => {
                workers.dispatch_always(key, job);
                true
            }
            None => false,
        }
    }

    /// Queues a reply on `conn`, ending the request's in-flight count.
    pub fn reply(&self, conn: ConnRef, body: Vec<u8>, close: bool) {
        self.loops.run(conn, move |c| {
            if let Some(c) = c {
                answered(c);
                send_frame(c, &body);
                if close {
                    c.close();
                }
            }
        });
    }

    /// Runs `f` on `conn`'s loop and waits for its answer; `None` when the connection
    /// is gone (or `f` says so), or the loop has stopped.
    pub fn run_on_conn<T: Send + 'static>(
        &self,
        conn: ConnRef,
        f: impl FnOnce(&mut Connection<ConnState>) -> Option<T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = bounded(1);
        self.loops.run(conn, move |c| {
            let _ = tx.send(c.and_then(f));
        });
        rx.recv().ok().flatten()
    }
}

/// A storage failure as a reply: 503, try again.
pub fn unavailable(e: StoreError) -> Fail {
    match e {
        StoreError::Unavailable(why) => {
            log::warn!("storage: {why}");
            Fail::new(errno::UNAVAILABLE, "storage unavailable, try again")
        }
        StoreError::Conflict => Fail::new(errno::CONFLICT, "conflict"),
        StoreError::NotFound => Fail::new(errno::NOT_FOUND, "not found"),
    }
}
