//! The sans-IO protocol core: no tokio, no sockets, no clock of its own. Bytes
//! and time go in; bytes and actions come out.

pub mod frame;
pub mod pairing;
pub mod session;
pub mod verify;
pub mod wire;
mod words;
