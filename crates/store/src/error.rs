//! Errors of the local store. Each names the file it concerns and says what to do.

use std::path::PathBuf;

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// There is no home at the path.
    #[error("no duet home at {} (run `duet init --name NAME`, or pass --home)", .0.display())]
    NoHome(PathBuf),
    /// A home already exists at the path.
    #[error("a duet home already exists at {}", .0.display())]
    AlreadyExists(PathBuf),
    /// The database file is damaged beyond what the change log can rebuild.
    #[error("the database {} is damaged: {detail} (restore it from a backup, or sync from a partner's device into a new home)", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The database was written by a newer duet.
    #[error("the database {} was written by a newer duet (store version {found}; this duet knows up to {supported}): upgrade duet", path.display())]
    NewerStore {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The disk is full; nothing was written.
    #[error("the disk holding {} is full; nothing was written", .0.display())]
    DiskFull(PathBuf),
    /// Another process held the database too long.
    #[error("the database {} stayed locked by another duet process; try again", .0.display())]
    Busy(PathBuf),
    /// Too many changes from bundles would wait for their dependencies.
    #[error("{} MiB of changes would wait for their dependencies (at most {} MiB): import the earlier bundles first, or sync with a partner's device", .bytes / (1024 * 1024), crate::MAX_PENDING_BYTES / (1024 * 1024))]
    TooMuchWaiting {
        /// The bytes that would wait.
        bytes: usize,
    },
    /// The file could not be opened or read.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Any other SQLite failure.
    #[error("database error in {}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Classifies a SQLite error on the database at `path`.
    pub(crate) fn sqlite(path: &std::path::Path, err: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        match err.sqlite_error_code() {
            Some(C::NotADatabase | C::DatabaseCorrupt) => StoreError::Damaged {
                path,
                detail: err.to_string(),
            },
            Some(C::DiskFull) => StoreError::DiskFull(path),
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Busy(path),
            Some(C::CannotOpen) => StoreError::Io {
                path,
                source: std::io::Error::other(err.to_string()),
            },
            _ => StoreError::Sqlite { path, source: err },
        }
    }
}
