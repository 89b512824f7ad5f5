//! The sans-IO protocol core: no tokio, no sockets, no clock of its own. Bytes
//! and time go in; bytes and actions come out.

pub mod bundle;
pub mod frame;
pub mod inflate;
pub mod keyring;
pub mod pairing;
pub mod relay;
pub mod session;
pub mod verify;
pub mod wire;
mod words;
