//! Waking a running `serve` when another process edits the same home.
//!
//! `serve` notices other processes' commits by polling SQLite's
//! `data_version`; that costs a poll period per edit. So every edit also sends
//! an empty datagram to a Unix socket `serve` listens on in the home's folder
//! (owner-only, like the folder), and `serve` checks at once. The datagram
//! carries nothing: it only says "look now". Without a listener the send fails
//! and nothing happens; polling stays as the fallback.

use std::path::Path;

/// The socket's file name in the home's folder.
pub(crate) const SOCKET: &str = "serve.sock";

/// Tells a `serve` running on the home in `dir`, if any, to look for changes.
pub(crate) fn poke(dir: &Path) {
    #[cfg(unix)]
    if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = socket.set_nonblocking(true);
        let _ = socket.send_to(&[], dir.join(SOCKET));
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Listens for pokes on the home in `dir`. `None` where it cannot (no Unix
/// sockets, a path too long for one): then polling alone notices edits.
#[cfg(unix)]
pub(crate) fn listen(dir: &Path) -> Option<Listener> {
    let path = dir.join(SOCKET);
    // A socket left by a `serve` that was killed.
    let _ = std::fs::remove_file(&path);
    match tokio::net::UnixDatagram::bind(&path) {
        Ok(socket) => Some(Listener { socket, path }),
        Err(e) => {
            tracing::debug!(error = %e, "cannot listen for edits by other processes; polling only");
            None
        }
    }
}

/// Listens for pokes on the home in `dir` (not on this platform).
#[cfg(not(unix))]
pub(crate) fn listen(_dir: &Path) -> Option<Listener> {
    None
}

/// A bound wake-up socket; removed when dropped.
pub(crate) struct Listener {
    #[cfg(unix)]
    socket: tokio::net::UnixDatagram,
    #[cfg(unix)]
    path: std::path::PathBuf,
}

impl Listener {
    /// Waits for the next poke.
    pub(crate) async fn poked(&self) {
        #[cfg(unix)]
        {
            let mut buf = [0u8; 16];
            if self.socket.recv(&mut buf).await.is_err() {
                // A broken socket must not spin: fall back to polling.
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poke_wakes_the_listener_and_the_socket_is_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let listener = listen(dir.path()).unwrap();
        poke(dir.path());
        tokio::time::timeout(std::time::Duration::from_secs(5), listener.poked())
            .await
            .unwrap();
        drop(listener);
        assert!(!dir.path().join(SOCKET).exists());
        // With nobody listening, a poke is harmless.
        poke(dir.path());
    }
}
