//! The relay crate's errors, for the server and the client.

use std::path::PathBuf;

use duet_sync::net::tls::TlsError;

use crate::store::StoreError;

/// Why the relay, or a request to it, failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the relay could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The relay's key file is not a key.
    #[error("the relay's key file {path} is damaged ({detail}); move it away to make a new key")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The system gave no randomness for a new key.
    #[error("cannot make a key: no randomness from the system: {0}")]
    Random(String),
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    /// The network failed: cannot listen, connect, or the connection broke.
    #[error("{0}")]
    Net(String),
    /// The request cannot be sent (a bundle over the size limit, a list of
    /// too many devices).
    #[error("cannot send this request to the relay: {0}")]
    Request(String),
    /// The relay refused the request; the text is the relay's.
    #[error("the relay refused: {0}")]
    Refused(String),
    /// The relay answered something this device does not accept.
    #[error("the relay's answer is not acceptable: {0}")]
    Protocol(String),
}

impl RelayError {
    /// The relay's own text, if it refused the request.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            RelayError::Refused(text) => Some(text),
            _ => None,
        }
    }
}
