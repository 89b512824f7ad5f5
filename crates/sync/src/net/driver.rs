//! The thin async driver: moves bytes between a QUIC stream and a [`Session`],
//! and lets the home ([`Replica`]) apply what the session accepts.
//!
//! One bidirectional stream per session. The dialling side opens it; both sides
//! then run the same loop: send what the session queued, read what arrived, feed
//! complete frames to the session through the replica, let the session generate
//! its next message. The dialler closes once both hold the same heads (one-shot
//! sync), unless it is a live session, which stays open and sends local edits as
//! they happen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_model::DeviceId;
use tokio::sync::watch;

use crate::proto::frame::FrameDecoder;
use crate::proto::session::{Event, IDLE_TIMEOUT_MS, Session, Stats, SyncError};

/// How long a read may wait before the session's idle timer is checked.
const TICK: Duration = Duration::from_millis(500);
/// The most bytes read at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the peer to close after our Bye.
const LINGER: Duration = Duration::from_secs(5);
/// While a frame is half-received, the peer counts as heard from each time
/// this many more of its bytes have arrived (per [`IDLE_TIMEOUT_MS`]: about
/// 2 KiB/s, far below any usable link, far above a trickle).
const MIN_PROGRESS: usize = 64 * 1024;

/// What the driver needs from a home. The engine implements it over its store;
/// every method runs briefly and synchronously (the store is local SQLite).
pub trait Replica: Send + 'static {
    /// Feeds `frame` to `session` inside a store write: what the session accepts
    /// is stored atomically with its attestations; on error nothing is stored.
    fn receive(
        &mut self,
        session: &mut Session,
        frame: &crate::proto::frame::Frame,
        now_ms: u64,
    ) -> Result<Vec<Event>, DriveError>;
    /// Lets `session` queue its next message from the current document (which
    /// includes edits made by other processes on the same home).
    fn generate(&mut self, session: &mut Session) -> Result<(), DriveError>;
    /// True when `session`'s peer holds the same heads as this home.
    fn is_synced(&mut self, session: &Session) -> Result<bool, DriveError>;
    /// Saves `session`'s sync state, so the next session with this peer resumes.
    fn save_state(&mut self, session: &Session) -> Result<(), DriveError>;
}

/// Why driving a session failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The protocol refused something, or the peer did.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// This home could not store or read something.
    #[error("local storage failed: {0}")]
    Local(String),
    /// The connection failed.
    #[error("connection lost: {0}")]
    Connection(String),
    /// The other device refused this one's key in the TLS handshake.
    #[error(
        "the other device refused this one: this device is not one of its space's devices (pair first), or it was revoked"
    )]
    Refused,
    /// This device refused the other one's key in the TLS handshake.
    #[error("the other device is not one of this space's devices (or it was revoked)")]
    Untrusted,
    /// The peer closed before the sync finished.
    #[error("the other device closed the connection before the sync finished")]
    Closed,
}

/// How a session runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Sync until both hold the same heads, then close (this side dialled).
    OneShot,
    /// Answer a peer until it closes.
    Answer,
    /// Stay open: `changed` ticks when this home's document changes; `stop`
    /// turns true to end the session.
    Live {
        /// Ticks on local changes.
        changed: watch::Receiver<u64>,
        /// Becomes true on shutdown.
        stop: watch::Receiver<bool>,
    },
}

/// What a finished session did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The peer.
    pub peer: DeviceId,
    /// Counts.
    pub stats: Stats,
    /// How long it took.
    pub elapsed: Duration,
}

fn lock<R>(replica: &Mutex<R>) -> Result<std::sync::MutexGuard<'_, R>, DriveError> {
    replica
        .lock()
        .map_err(|_| DriveError::Local("the home's lock was poisoned by an earlier failure".into()))
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// TLS alert 49 (access_denied), as QUIC reports it: the other device's
/// handshake refused this device's key.
const ACCESS_DENIED: u8 = 49;

/// Names a lost connection, telling a refused key (either way) apart from a
/// network failure.
pub fn connection_error(e: &quinn::ConnectionError) -> DriveError {
    let denied = quinn::TransportErrorCode::crypto(ACCESS_DENIED);
    match e {
        // The other side's handshake sent the alert: it refused our key.
        quinn::ConnectionError::ConnectionClosed(c) if c.error_code == denied => DriveError::Refused,
        // Our own handshake refused the other side's key.
        quinn::ConnectionError::TransportError(t) if t.code == denied => DriveError::Untrusted,
        other => DriveError::Connection(other.to_string()),
    }
}

async fn flush(session: &mut Session, send: &mut quinn::SendStream) -> Result<(), DriveError> {
    while let Some(bytes) = session.poll_transmit() {
        tracing::debug!(bytes = bytes.len(), "frame out");
        send.write_all(&bytes).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(c) => connection_error(&c),
            other => DriveError::Connection(other.to_string()),
        })?;
    }
    Ok(())
}

/// Runs `session` over one stream until it ends. The session's sync state is
/// saved at the end, whatever the outcome.
pub async fn drive<R: Replica>(
    mut session: Session,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    replica: Arc<Mutex<R>>,
    mut mode: Mode,
) -> Result<Report, DriveError> {
    let start = Instant::now();
    let result = drive_inner(&mut session, &mut send, &mut recv, &replica, &mut mode, start).await;
    if let Ok(mut r) = lock(&replica)
        && let Err(e) = r.save_state(&session)
    {
        tracing::warn!(error = %e, "could not save the sync state");
    }
    // Whatever happened, tell the peer (a Failure frame may be queued), and give
    // it a moment to receive that before the connection is dropped.
    // A peer that stopped responding will not acknowledge anything either:
    // waiting for it would only delay the error.
    let gone = matches!(result, Err(DriveError::Sync(SyncError::Timeout)));
    if !gone {
        let _ = flush(&mut session, &mut send).await;
    }
    if send.finish().is_ok() && !gone {
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
    }
    result.map(|()| Report {
        peer: session.peer(),
        stats: session.stats(),
        elapsed: start.elapsed(),
    })
}

async fn drive_inner<R: Replica>(
    session: &mut Session,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    replica: &Arc<Mutex<R>>,
    mode: &mut Mode,
    start: Instant,
) -> Result<(), DriveError> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    // When the bytes of a half-received frame last made progress (see
    // `check_idle`), on the session's clock, and the bytes since.
    let mut progress_at = millis(start);
    let mut progress_bytes = 0usize;
    lock(replica)?.generate(session)?;
    loop {
        flush(session, send).await?;
        if session.is_closed() {
            // Our Bye went out, or the peer's arrived: wait briefly for the
            // peer to finish its side, then end.
            let _ = tokio::time::timeout(LINGER, recv.read(&mut buf)).await;
            return Ok(());
        }
        if matches!(mode, Mode::OneShot) && lock(replica)?.is_synced(session)? {
            tracing::debug!(peer = %session.peer().short(), "in sync; closing");
            session.close();
            continue;
        }
        let read = match mode {
            Mode::Live { changed, stop } => {
                tokio::select! {
                    r = tokio::time::timeout(TICK, recv.read(&mut buf)) => r,
                    _ = changed.changed() => {
                        lock(replica)?.generate(session)?;
                        // Local changes can come faster than TICK: the idle
                        // timer must not wait for a read to time out.
                        check_idle(session, &decoder, millis(start), progress_at)?;
                        continue;
                    }
                    _ = stop.changed() => {
                        // On shutdown, Bye only if both hold the same heads;
                        // otherwise tell the peer the sync stopped early.
                        if *stop.borrow() {
                            if lock(replica)?.is_synced(session)? {
                                session.close();
                            } else {
                                let _ = session.fail(SyncError::ShuttingDown);
                            }
                        }
                        continue;
                    }
                }
            }
            _ => tokio::time::timeout(TICK, recv.read(&mut buf)).await,
        };
        let now = millis(start);
        match read {
            Err(_elapsed) => check_idle(session, &decoder, now, progress_at)?,
            Ok(Err(quinn::ReadError::ConnectionLost(c))) => return Err(connection_error(&c)),
            Ok(Err(e)) => return Err(DriveError::Connection(e.to_string())),
            Ok(Ok(None)) => {
                return if session.is_closed() {
                    Ok(())
                } else {
                    Err(DriveError::Closed)
                };
            }
            Ok(Ok(Some(n))) => {
                decoder.push(&buf[..n]);
                progress_bytes += n;
                let handled = off_the_runtime(|| handle_frames(session, &mut decoder, replica, now))?;
                let completed = match handled {
                    Handled::PeerDone => return Ok(()),
                    Handled::Frames(n) => n > 0,
                };
                if completed || progress_bytes >= MIN_PROGRESS {
                    progress_at = now;
                    progress_bytes = 0;
                }
                // Checked after data too, not only when a read waits a full
                // TICK: a peer trickling a byte every few hundred milliseconds
                // would otherwise keep the session open for ever.
                check_idle(session, &decoder, now, progress_at)?;
            }
        }
    }
}

/// What [`handle_frames`] did with the bytes read so far.
enum Handled {
    /// The peer said goodbye.
    PeerDone,
    /// This many whole frames were handled (and answered).
    Frames(usize),
}

/// Handles every whole frame the decoder holds, each inside a store write.
fn handle_frames<R: Replica>(
    session: &mut Session,
    decoder: &mut FrameDecoder,
    replica: &Arc<Mutex<R>>,
    now: u64,
) -> Result<Handled, DriveError> {
    let mut frames = 0;
    // Whether the last frame handled was answered already.
    let mut answered = false;
    let mut r = lock(replica)?;
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(session.fail(SyncError::Wire(e.into())).into()),
        };
        tracing::debug!(kind = frame.kind, bytes = frame.payload.len(), "frame in");
        frames += 1;
        let events = r.receive(session, &frame, now)?;
        if events.contains(&Event::PeerDone) {
            return Ok(Handled::PeerDone);
        }
        // A frame that brought changes is answered before the next is
        // handled. Automerge takes a later message saying "I hold your heads"
        // as proof that the peer knows this side's heads, and so would never
        // tell the peer that it took the changes (a one-shot sync then waits
        // for ever).
        answered = events.iter().any(|e| matches!(e, Event::Applied { .. }));
        if answered {
            r.generate(session)?;
        }
    }
    // The other frames of a read are answered together: their answers would
    // only repeat the same heads.
    if frames > 0 && !answered {
        r.generate(session)?;
    }
    Ok(Handled::Frames(frames))
}

/// Runs `f`, which blocks on the store (a large frame takes tens of
/// milliseconds to verify and store), so that it does not hold up the
/// runtime's other tasks: on a multi-threaded runtime they move to another
/// worker meanwhile. Otherwise the connection's own task may wait behind it,
/// its acknowledgements come late, and QUIC takes the delay for a slow path
/// (round-trip estimates of tens of milliseconds that then pace the next
/// large frame).
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Ends the session if the peer went quiet. With no frame half-received, the
/// session's own timer decides (it counts whole frames). While a frame is
/// arriving, its bytes must keep coming, [`MIN_PROGRESS`] of them per
/// [`IDLE_TIMEOUT_MS`]: a slow link may take minutes over a large frame (a
/// first sync), but a peer trickling a frame it never completes is cut off.
fn check_idle(
    session: &mut Session,
    decoder: &FrameDecoder,
    now: u64,
    progress_at: u64,
) -> Result<(), SyncError> {
    if decoder.buffered() == 0 {
        session.handle_timeout(now)
    } else if now.saturating_sub(progress_at) > IDLE_TIMEOUT_MS {
        Err(session.fail(SyncError::Timeout))
    } else {
        Ok(())
    }
}
