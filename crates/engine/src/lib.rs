//! duet's engine: a couple's shared record, kept on their own devices.
//!
//! [`Home`] is the API an app embeds (the `duet` command-line app is a thin layer
//! over it): open or create a home, read the couple document as typed values,
//! make edits, keep a private journal, export everything.
//!
//! # Layout
//! - [`home`]: [`Home`] and the values it returns for status and history;
//! - [`export`]: JSON, Markdown and raw automerge exports;
//! - [`sync`]: direct sync over QUIC ([`sync_once`], [`serve`]), and
//!   [`pairing`];
//! - [`bundle`]: sealed bundles of signed changes, for files and the relay;
//! - [`relay`]: sync through a mailbox relay ([`relay_sync`]);
//! - [`discovery`]: finding the couple's devices on the local network (mDNS);
//! - [`error`]: one [`Error`] whose text is a sentence for the user.
//!
//! Below it, `duet-model` holds the document's meaning (pure, no I/O) and
//! `duet-store` the SQLite persistence. A command flows
//! CLI → `Home` method → `Store::write` (lock, catch up, run the edit) →
//! `Editor` (one automerge change) → change log row → commit.
//!
//! # Logging
//! The engine logs through `tracing` and installs no subscriber. An app that
//! installs one should keep the `automerge` target at `warn`: automerge's own
//! spans format its whole change graph at `info`, which costs tens of
//! milliseconds per received change on a long history (the `duet` binary adds
//! `automerge=warn` unless `RUST_LOG` names automerge).
//!
//! # Example
//! ```
//! use duet::{Home, InitOptions};
//! use duet::model::{IssueStatus, NewIssue};
//!
//! let dir = tempfile::tempdir()?;
//! let mut home = Home::init(dir.path(), &InitOptions { name: "Sam".into(), device_name: None })?;
//! let issue = home.add_issue(&NewIssue { title: "Screen time at dinner".into(), ..Default::default() })?;
//! home.set_status(&issue.id.as_str()[..4], IssueStatus::Discussing)?;
//! assert_eq!(home.issue(issue.id.as_str())?.status, IssueStatus::Discussing);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod discovery;
pub mod error;
pub mod export;
pub mod home;
mod keys;
mod lan;
pub mod pairing;
pub mod relay;
pub mod sni;
pub mod sync;
mod wake;

pub use bundle::{ExportedBundle, ImportReport, Since};
pub use error::{Error, Result};
pub use export::{Export, ExportFormat};
pub use home::{Home, InitOptions, LogLine, Status, Who, this_week};
pub use lan::discover;
pub use pairing::{
    CONFIRM_TIMEOUT, PAIR_TIMEOUT, PairHost, PairOutcome, PendingJoin, WhoseDevice, pair_join,
};
pub use relay::{RelayReport, relay_sync};
pub use sync::{ServeOptions, SyncReport, serve, sync_once};

/// The couple document's types, re-exported for embedders.
pub use duet_model as model;
/// The mailbox relay (its server and client), re-exported for the `duet relay` command.
pub use duet_relay as relay_server;
/// The store's types, re-exported for embedders.
pub use duet_store as store;
/// The sync protocol's types (bundles, space keys), re-exported for embedders.
pub use duet_sync::proto as sync_proto;
