//! `RemoteInbox`: what the bus brings in from other servers, handed to the workers.
//!
//! Runs on the bus's subscriber thread and never blocks: a push for a local user is
//! queued on that user's registry entry at once (so it keeps its place even if the
//! user's connection is closing, and a logout that unsubscribes finds it), then a
//! worker keyed by the user hands the queue over. Doorbells and resubscriptions make
//! a worker pump the user's mailbox.

use std::sync::{Arc, Mutex};

use super::registry::Registry;
use super::worker::Job;
use super::worker_pool::Dispatcher;
use crate::bus::{Inbox, Incoming};
use crate::store::UserId;

pub struct RemoteInbox {
    registry: Arc<Registry>,
    /// Set once the workers exist; cleared at shutdown so the workers can stop.
    workers: Mutex<Option<Dispatcher<Job>>>,
}

/// The worker key of jobs about a user (rather than a connection): one user's jobs
/// run in order.
pub fn user_key(user: UserId) -> u64 {
    (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl RemoteInbox {
    pub fn new(registry: Arc<Registry>) -> RemoteInbox {
        RemoteInbox { registry, workers: Mutex::new(None) }
    }

    pub fn attach(&self, workers: Option<Dispatcher<Job>>) {
        *self.workers.lock().unwrap_or_else(|p| p.into_inner()) = workers;
    }

    /// Past the workers' bound: this thread must not wait (see `worker_pool`).
    fn dispatch(&self, user: UserId, job: Job) {
        match &*self.workers.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(workers) => workers.dispatch_always(user_key(user), job),
            None => log::warn!("a message from the bus for {user} arrived while the workers are down"),
        }
    }
}

impl Inbox for RemoteInbox {
    fn incoming(&self, msg: Incoming) {
        match msg {
            Incoming::Push(user, push) => match self.registry.incoming(user, push) {
                Ok(true) => self.dispatch(user, Job::Inbox(user)),
                Ok(false) => {}
                Err(push) => self.dispatch(user, Job::Store(user, push)),
            },
            Incoming::Doorbell(user) => self.dispatch(user, Job::Doorbell(user)),
        }
    }

    fn resubscribed(&self, users: Vec<UserId>) {
        for user in users {
            self.dispatch(user, Job::Doorbell(user));
        }
    }
}
