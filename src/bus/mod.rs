//! The bus: how a server reaches users connected to other servers of the cluster.
//!
//! Storage is the truth, the bus is the doorbell. Every message is in its recipients'
//! inboxes before anything is published; then a push for a user held elsewhere is
//! published on that user's channel (the decimal user id, as in the seeds), and a
//! server that holds the user writes it to them. A publish that reaches nobody, or is
//! lost, costs nothing but latency: the inbox row waits for the next login, or for the
//! re-read after a resubscription.
//!
//! Methods are called from worker threads and may block briefly. What arrives for this
//! server's users is handed to the [`Inbox`] given at construction, on the bus's own
//! thread; the inbox must not block.

mod local;
mod redis;

pub use local::LocalBus;
pub use redis::RedisBus;

use std::fmt;
use std::sync::Arc;

use crate::store::UserId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError(pub String);

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bus unavailable: {}", self.0)
    }
}

impl std::error::Error for BusError {}

/// What arrives for a local user from another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A push to write to the user's connection.
    Push(UserId, Arc<str>),
}

/// Receives what the bus brings in. Called on the bus's thread: must not block.
pub trait Inbox: Send + Sync {
    fn incoming(&self, msg: Incoming);
    /// The bus reconnected and resubscribed these users; pushes published meanwhile were
    /// lost, so their inboxes should be read again.
    fn resubscribed(&self, users: Vec<UserId>);
}

pub trait Bus: Send + Sync {
    /// Whether other servers may hold users (false for a lone server: publishing would
    /// reach nobody).
    fn is_clustered(&self) -> bool {
        true
    }
    /// Hands a push for `user` to the server that holds them. `Ok(false)` when no
    /// server does (the message waits in the user's inbox).
    fn publish(&self, user: UserId, push: &str) -> Result<bool, BusError>;
    /// `publish` for many recipients in one round trip; one answer per message.
    fn publish_many(&self, msgs: &[(UserId, Arc<str>)]) -> Result<Vec<bool>, BusError> {
        msgs.iter().map(|(u, m)| self.publish(*u, m)).collect()
    }
    /// Starts receiving `user`'s channel; returns once the subscription is confirmed.
    fn subscribe(&self, user: UserId) -> Result<(), BusError>;
    /// Stops receiving `user`'s channel; returns once confirmed, so nothing for `user`
    /// arrives after it returns (what arrived before was handed to the inbox).
    fn unsubscribe(&self, user: UserId) -> Result<(), BusError>;
    /// Gives up `user`'s presence, once everything that arrived for them before
    /// `unsubscribe` is stored: only then may another server log them in.
    fn release(&self, user: UserId) -> Result<(), BusError>;
    /// Whether another server holds `user`: a live session, or one whose last messages
    /// it is still storing.
    fn online_elsewhere(&self, user: UserId) -> Result<bool, BusError>;
}
