pub mod net;
pub mod proto;
