//! `Registry`: which local connection holds which user, and each user's delivery lock.
//!
//! Shared by every thread. The map's mutex is held only for a lookup or an update,
//! never across I/O, so loop threads may take it. The per-user delivery lock (striped)
//! is held by worker threads across a whole delivery to that user — live push with its
//! confirmation, or mailbox write — and across a login's "become reachable, drain the
//! mailbox, send LOGIN_ACK". That lock is what keeps one sender's messages to one
//! recipient in order, and nothing pushed before LOGIN_ACK. Never held by a loop thread.
//!
//! When a logged-in connection closes, its loop moves the pushes it could not write
//! into the entry (`Leaving`). Whoever next holds that user's lock stores them first,
//! before any newer message, so they keep their place in the mailbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

use crate::net::ConnRef;
use crate::store::UserId;

const STRIPES: usize = 1024;

enum Entry {
    Online(ConnRef),
    /// The connection closed; these pushes to the user were never written.
    Leaving(ConnRef, Vec<Arc<str>>),
}

pub struct Registry {
    users: Mutex<HashMap<UserId, Entry>>,
    stripes: Box<[Mutex<()>]>,
}

/// Where a push for a user goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Local(ConnRef),
    /// Not held by a live connection here.
    NotHere,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { users: Mutex::new(HashMap::new()), stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl Registry {
    fn users(&self) -> MutexGuard<'_, HashMap<UserId, Entry>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `user`'s delivery lock. Worker threads only.
    pub fn lock(&self, user: UserId) -> MutexGuard<'_, ()> {
        let i = (user as u64 % STRIPES as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn route(&self, user: UserId) -> Route {
        match self.users().get(&user) {
            Some(Entry::Online(conn)) => Route::Local(*conn),
            _ => Route::NotHere,
        }
    }

    /// Whether a live local connection holds `user`.
    pub fn is_online(&self, user: UserId) -> bool {
        matches!(self.route(user), Route::Local(_))
    }

    /// Makes `conn` hold `user`, unless another live connection does (`Err` with it).
    /// Hold the user's lock and store `take_leftovers` first.
    pub fn connect(&self, user: UserId, conn: ConnRef) -> Result<(), ConnRef> {
        let mut users = self.users();
        if let Some(Entry::Online(other)) = users.get(&user) {
            return Err(*other);
        }
        users.insert(user, Entry::Online(conn));
        Ok(())
    }

    /// Pushes a closed connection left unsent for `user`, oldest first. Hold the lock.
    pub fn take_leftovers(&self, user: UserId) -> Vec<Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Leaving(_, unsent)) => std::mem::take(unsent),
            _ => Vec::new(),
        }
    }

    /// Puts back leftovers that could not be stored, ahead of any newer ones.
    pub fn restore_leftovers(&self, user: UserId, mut msgs: Vec<Arc<str>>) {
        if let Some(Entry::Leaving(_, unsent)) = self.users().get_mut(&user) {
            msgs.append(unsent);
            *unsent = msgs;
        }
    }

    /// Loop thread, as `conn` closes: keeps its unsent pushes for `user` in the entry.
    /// Returns them back if `conn` no longer holds `user`.
    pub fn mark_leaving(&self, user: UserId, conn: ConnRef, unsent: Vec<Arc<str>>) -> Vec<Arc<str>> {
        let mut users = self.users();
        if matches!(users.get(&user), Some(Entry::Online(c)) if *c == conn) {
            users.insert(user, Entry::Leaving(conn, unsent));
            Vec::new()
        } else {
            unsent
        }
    }

    /// Removes `user`'s entry if `conn` holds it (live or leaving); true if it did.
    /// Hold the lock and store `take_leftovers` first.
    pub fn disconnect(&self, user: UserId, conn: ConnRef) -> bool {
        let mut users = self.users();
        let held = matches!(users.get(&user), Some(Entry::Online(c)) | Some(Entry::Leaving(c, _)) if *c == conn);
        if held {
            users.remove(&user);
        }
        held
    }

    /// Every user with an entry, live or leaving.
    pub fn all_users(&self) -> Vec<UserId> {
        self.users().keys().copied().collect()
    }
}
