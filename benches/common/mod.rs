//! Shared by the bench targets: starting the servers, the load generator, the peer.

pub mod load;
pub mod peer;
pub mod server;
pub mod wire;
