//! The integration suite: one binary, a module per area. Tests start the real binaries
//! on free loopback ports in temp dirs and talk to them over TCP.

mod support;

mod backpressure;
mod bus;
mod client;
mod cluster;
mod cost;
mod framing;
mod hardening;
mod lifecycle;
mod messages;
mod mysql;
mod protocol;
mod ring;
mod store;
