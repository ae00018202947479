pub mod bus;
pub mod net;
pub mod proto;
pub mod store;
