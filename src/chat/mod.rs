//! The chat service: where net, proto, store and bus meet.
//!
//! - `frontend` (loop threads): the `net::Handler`; frames in, jobs out, and ONE_CHAT to
//!   a user live here handled on the spot (`message::one_chat_now`).
//! - `worker` + `dispatch` (worker threads): the msgid handler table, and one file per
//!   group of handlers: `account`, `message`, `friend`, `group`, `history`, `receipt`.
//! - `message` + `delivery`: a message is committed to the log with its recipients'
//!   inbox rows (the log writer's thread), then pushed live here, published to other
//!   servers, or left in the inbox for the next login.
//! - `registry`: who is online on which local connection, the pushes pending for them;
//!   per-user delivery locks.
//! - `server`: builds it all from a `Config` and runs it; `run` is what `main` calls.

mod account;
mod config;
mod conn_state;
mod delivery;
mod dispatch;
mod friend;
mod frontend;
mod group;
mod history;
mod hub;
mod login_guard;
mod message;
mod password;
mod receipt;
mod registry;
mod remote;
mod server;
mod session;
mod test_hooks;
mod worker;
mod worker_pool;

pub use config::Config;
pub use server::{run, ChatServer, Error};
