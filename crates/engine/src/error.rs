//! The engine's error: what went wrong, in words a person can act on.

use thiserror::Error;

/// Why an engine operation failed. The `Display` text is a complete sentence
/// for the user; nothing already stored is lost when an operation fails.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad input, unknown id, or an edit the document refuses.
    #[error(transparent)]
    Model(#[from] duet_model::ModelError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] duet_store::StoreError),
    /// The home's own records are inconsistent.
    #[error("the home at {path} is inconsistent: {detail}")]
    Inconsistent {
        /// The home.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The network or a peer failed.
    #[error("{0}")]
    Net(String),
    /// A sync session failed.
    #[error(transparent)]
    Sync(#[from] duet_sync::net::driver::DriveError),
    /// Pairing failed.
    #[error(transparent)]
    Pairing(#[from] duet_sync::proto::pairing::PairingError),
    /// The system gave no randomness.
    #[error("the system's random number source failed: {0}")]
    Random(String),
    /// A bundle could not be made, opened or applied.
    #[error("{0}")]
    Bundle(String),
    /// The relay refused or could not be reached.
    #[error("{0}")]
    Relay(String),
    /// Writing an export failed.
    #[error("cannot write the export: {0}")]
    Export(String),
}

impl From<duet_model::InvalidInput> for Error {
    fn from(e: duet_model::InvalidInput) -> Self {
        Error::Model(e.into())
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
