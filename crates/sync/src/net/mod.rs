//! The network driver: QUIC (quinn, rustls) on tokio, feeding the protocol core.
//!
//! - [`tls`]: TLS 1.3 pinned to device keys: each side presents its ed25519
//!   device key and checks the other's against the space's devices during the
//!   handshake, so an unknown device never gets to send application data;
//! - [`driver`]: moves bytes between a QUIC stream and a session.

pub mod driver;
pub mod tls;
