//! The sans-IO protocol core: no tokio, no sockets, no clock of its own. Bytes
//! and time go in; bytes and actions come out.

pub mod frame;
