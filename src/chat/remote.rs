//! `RemoteInbox`: what the bus brings in from other servers, handed to the workers.
//!
//! Runs on the bus's subscriber thread and never blocks: a push for a local user goes
//! to the worker its user picks (so one user's pushes stay in order), which offers it
//! to the user's registry entry. A push for a user no longer here is dropped: it is in
//! their inbox. A resubscription makes a worker read the user's inbox again.

use std::sync::Mutex;

use serde::Deserialize;

use super::registry::Push;
use super::worker::Job;
use super::worker_pool::Dispatcher;
use crate::bus::{Inbox, Incoming};
use crate::store::UserId;

pub struct RemoteInbox {
    /// Set once the workers exist; cleared at shutdown so the workers can stop.
    workers: Mutex<Option<Dispatcher<Job>>>,
}

/// The worker key of jobs about a user (rather than a connection): one user's jobs
/// run in order.
pub fn user_key(user: UserId) -> u64 {
    (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl RemoteInbox {
    pub fn new() -> RemoteInbox {
        RemoteInbox { workers: Mutex::new(None) }
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

/// The one field of a push the receiving server needs.
#[derive(Deserialize)]
struct MidOf {
    mid: i64,
}

impl Inbox for RemoteInbox {
    fn incoming(&self, msg: Incoming) {
        match msg {
            Incoming::Push(user, text) => match serde_json::from_str::<MidOf>(&text) {
                Ok(MidOf { mid }) => self.dispatch(user, Job::Remote(user, Push { mid, text })),
                Err(e) => log::warn!("a push from the bus for {user} has no mid ({e}); dropped"),
            },
        }
    }

    fn resubscribed(&self, users: Vec<UserId>) {
        for user in users {
            self.dispatch(user, Job::Doorbell(user));
        }
    }
}
