//! Frames and messages of the wire protocol (docs/PROTOCOL.md); no I/O here.
//!
//! - `codec`: cuts a byte stream into JSON object frames, and knows the terminator.
//! - `msg`: message ids, errno values, request fields and reply bodies.
//! - `fields`: a request's top-level fields, as parsed from its frame.

pub mod codec;
pub mod fields;
pub mod msg;
