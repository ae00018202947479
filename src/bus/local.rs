//! `LocalBus`: the bus of a server with no cluster around it. No other server exists,
//! so nothing is published, nobody is online elsewhere, and a message for a user not
//! here waits in their inbox.

use super::{Bus, BusError};
use crate::store::UserId;

#[derive(Debug, Default)]
pub struct LocalBus;

impl Bus for LocalBus {
    fn is_clustered(&self) -> bool {
        false
    }

    fn publish(&self, _user: UserId, _push: &str) -> Result<bool, BusError> {
        Ok(false)
    }

    fn subscribe(&self, _user: UserId) -> Result<(), BusError> {
        Ok(())
    }

    fn unsubscribe(&self, _user: UserId) -> Result<(), BusError> {
        Ok(())
    }

    fn release(&self, _user: UserId) -> Result<(), BusError> {
        Ok(())
    }

    fn online_elsewhere(&self, _user: UserId) -> Result<bool, BusError> {
        Ok(false)
    }
}
