//! The bus: how a server reaches users connected to other servers of the cluster.
//!
//! Storage is the truth, the bus is the doorbell. A push for a user held elsewhere is
//! published on that user's channel (the decimal user id, as in the seeds); when
//! nobody holds the user, the sender stores it in the mailbox and rings the doorbell,
//! so a server that does hold the user drains the mailbox to them.
//!
//! Methods are called from worker threads and may block briefly.

mod local;

pub use local::LocalBus;

use std::fmt;

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
    Push(UserId, String),
    /// The user's mailbox has mail: drain it to them.
    Doorbell(UserId),
}

pub trait Bus: Send + Sync {
    /// Hands a push for `user` to the server that holds them. `Ok(false)` when no
    /// server does: the caller stores it.
    fn publish(&self, user: UserId, push: &str) -> Result<bool, BusError>;
    /// Tells whichever server holds `user` that their mailbox has mail.
    fn ring(&self, user: UserId) -> Result<(), BusError>;
    /// Starts receiving `user`'s channel; returns once the subscription is confirmed.
    fn subscribe(&self, user: UserId) -> Result<(), BusError>;
    /// Stops receiving `user`'s channel.
    fn unsubscribe(&self, user: UserId);
    /// Whether another server holds a live session of `user`.
    fn online_elsewhere(&self, user: UserId) -> Result<bool, BusError>;
}
