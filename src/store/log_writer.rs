//! Placeholder until the group-commit writer lands: appends synchronously.

use std::sync::Arc;

use super::{Accepted, Mid, NewMessage, Result, Store, UserId};

pub struct LogWriter {
    store: Arc<dyn Store>,
}

impl LogWriter {
    pub fn start(store: Arc<dyn Store>) -> LogWriter {
        LogWriter { store }
    }

    pub fn submit(&self, msg: NewMessage, done: Box<dyn FnOnce(Result<Accepted>) + Send>) {
        let r = self.store.append(std::slice::from_ref(&msg)).map(|mut v| v.remove(0));
        done(r)
    }

    pub fn settle(&self, user: UserId, mids: Vec<Mid>) {
        if let Err(e) = self.store.settle(user, &mids) {
            log::warn!("settle: {e}");
        }
    }

    pub fn barrier(&self) {}
}
