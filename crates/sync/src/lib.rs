//! duet's sync: how two devices of a couple merge their records.
//!
//! # Layout
//! - [`proto`]: the sans-IO core: frames, the version handshake, the per-peer
//!   session state machine over automerge's sync protocol, signed changes,
//!   pairing. Deterministic and testable without a network.
//! - [`net`]: the thin driver: a quinn endpoint whose TLS is pinned to device
//!   keys, feeding bytes and time to the core.

pub mod net;
pub mod proto;
#[cfg(feature = "sim")]
pub mod sim;
