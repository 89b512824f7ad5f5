//! duet's mailbox relay: a small store-and-forward server for when a couple's
//! devices are not online at the same time.
//!
//! # Its job
//! A device posts **bundles** (sealed, signed changes; see
//! `duet_sync::proto::bundle`) for its space; the space's other devices fetch
//! them when they next connect. The relay keeps each bundle until every other
//! device of the space has acknowledged it, or until the retention time
//! (30 days by default) has passed, and bounds what each space may keep
//! (64 MiB by default) and over all spaces (4 GiB by default), and how many
//! spaces one device or address may register. Anyone the couple trusts to keep a server running can
//! run one: `duet relay --listen ADDR [--data DIR]`.
//!
//! # What it learns, and what it does not
//! - It learns **space tags** (16 bytes of a hash of the space id: not the id),
//!   the **device keys** that connect and the access lists they sign, the
//!   **sizes** and **times** of posts and fetches, and the devices' network
//!   addresses.
//! - It never learns **content or names**: bundles are sealed with a space key
//!   only member devices hold (XChaCha20-Poly1305; the keys travel inside the
//!   couple's document, sealed to each device), and it stores and logs them as
//!   opaque bytes. It cannot forge changes either: every change is signed by
//!   the device that made it and checked by the devices that receive it.
//! - Who may use a space is a **signed access list**
//!   ([`SignedAccess`](duet_sync::proto::relay::SignedAccess)): the first
//!   device to register a space names its devices; only a listed device may
//!   replace the list (with a larger serial), post, fetch or read it. A device
//!   removed from the list is refused at once.
//!
//! # Layout
//! - [`service`]: the rules, over a store, with no sockets: what each request
//!   may do, the quota, expiry, the long-poll wait of a fetch.
//! - [`store`]: the [`RelayStore`](store::RelayStore) trait and its SQLite and
//!   in-memory implementations. The trait is small and per space so that a
//!   relay serving many couples can sit on an object store instead; its docs
//!   say how.
//! - [`gate`]: how many connections one address may hold and how fast it
//!   may open them, without sockets or a clock.
//! - [`server`]: the QUIC server ([`server::run`]), with bounds on
//!   connections, streams and slow peers.
//! - [`client`]: [`RelayClient`], a device's connection.
//!
//! The messages are `duet_sync::proto::relay` (one request and one answer per
//! QUIC stream, ALPN `duet-relay/1`).

pub mod client;
mod error;
pub mod gate;
mod io;
pub mod server;
pub mod service;
pub mod store;

pub use client::RelayClient;
pub use error::RelayError;
pub use server::{RelayOptions, run};
