//! Shared by the bench targets: starting the servers, the load generator, the peer.

pub mod history;
pub mod load;
pub mod peer;
pub mod server;
/// The integration tests' private MariaDB, for `BENCH_STORE=mysql`.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/it/support/services.rs"]
pub mod services;
/// The integration tests' way of starting a server and learning its address.
#[path = "../../tests/it/support/spawn.rs"]
pub mod spawn;
pub mod wire;
