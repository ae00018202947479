//! A cluster chat server, wire-compatible with the muduo-based C++ "cluster chat
//! server" seeds, with their faults fixed: framed TCP, parameterised SQL, hashed
//! passwords, identity from the session, and no acknowledged message ever lost.
//!
//! # Layout
//!
//! - [`net`]: the reactor, muduo-style on mio; knows nothing of chat.
//! - [`proto`]: framing and messages of the wire protocol; no I/O.
//! - [`store`]: the model layer behind one trait; an embedded SQLite file or a shared
//!   MySQL (MariaDB) database.
//! - [`bus`]: how servers reach each other's users; in-process when alone.
//! - [`ring`]: the consistent-hash ring, and the interpreter of `ConsistentHash`.
//! - [`queue`]: the bounded FIFO that feeds loops and workers (backpressure).
//! - [`panic_guard`]: a panic fails one request or one connection, not its thread.
//! - [`chat`]: the service, where the others meet; [`run`] is what `ChatServer` calls.
//! - [`client`]: the terminal client behind `ChatClient`.
//! - `src/bin/`: thin binaries that parse arguments and call the library.

pub mod bus;
pub mod chat;
pub mod client;
pub mod net;
pub mod panic_guard;
pub mod proto;
pub mod queue;
pub mod ring;
pub mod store;

pub use chat::{run, ChatServer, Config, Error};
