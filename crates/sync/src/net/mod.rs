//! The network driver: QUIC (quinn, rustls) on tokio, feeding the protocol core.
