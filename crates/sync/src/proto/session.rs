//! The per-peer sync session: a deterministic state machine with no I/O.
//!
//! The driver owns the connection and the store. It feeds the session the frames
//! it reads ([`Session::handle`]) together with the document (inside a store
//! write, so that what a frame applies is stored atomically, or not at all if the
//! session refuses it), asks it for bytes to send ([`Session::poll_transmit`]),
//! and tells it the time ([`Session::handle_timeout`]).
//!
//! ```text
//!  A                                    B
//!  Hello ─────────────────────────────▶
//!        ◀───────────────────────────── Hello
//!  Sync (automerge sync message,
//!        attestations) ───────────────▶ verify, apply
//!        ◀───────────────────────────── Sync
//!  ...  until both hold the same heads
//!  Bye ───────────────────────────────▶ (the side that dialled closes)
//! ```
//!
//! Any refusal (a bad frame, a forged or unsigned change, a change by a revoked
//! device, a different space) ends the session: the session queues a Failure
//! frame telling the peer why, and the driver closes the connection.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ChangeMetadata, ReadDoc};
use duet_model::{Attestation, DeviceId, Membership};

use super::frame::Frame;
use super::inflate;
use super::verify::{self, VerifyError};
use super::wire::{self, Failure, Hello, Message, SyncMessage, WireError};

/// How long a session may go without hearing from its peer.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How many sync messages in a row may bring nothing new before the session
/// gives up: two sides that keep answering each other without converging would
/// otherwise loop until the connection dies.
pub const MAX_IDLE_ROUNDS: u32 = 64;

/// How many bytes of received changes may wait in a session for their
/// dependencies or signatures before the session gives up on the peer.
pub const MAX_WAITING_BYTES: usize = 64 << 20;

/// How many distinct attestations a session keeps.
pub const MAX_VERIFIED: usize = 4096;

/// How many missing dependencies of waiting changes one message asks for.
const MAX_NEEDS: usize = 1024;

/// Why a session ended badly.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The peer sent something that is not a valid message.
    #[error("the other device sent an invalid message: {0}")]
    Wire(#[from] WireError),
    /// The peer's changes were refused; nothing from that message was applied.
    #[error("refused the other device's changes, nothing from them was applied: {0}")]
    Refused(#[from] VerifyError),
    /// No common protocol version.
    #[error("the other device speaks sync protocol {theirs_min}..={theirs_max}, this one {MIN}..={MAX}: update duet on the older device", MIN = wire::MIN_PROTOCOL, MAX = wire::PROTOCOL)]
    Version {
        /// Their oldest.
        theirs_min: u16,
        /// Their newest.
        theirs_max: u16,
    },
    /// The peer keeps another space.
    #[error("the other device keeps a different space")]
    OtherSpace,
    /// The peer is not an active member of the space.
    #[error("device {0} is not a member of this space (or was revoked)")]
    NotAMember(String),
    /// A message arrived out of order.
    #[error("the other device broke the protocol: {0}")]
    Protocol(&'static str),
    /// The peer ended the session with a reason.
    #[error("the other device ended the sync: {0}")]
    PeerFailed(String),
    /// Automerge refused the message.
    #[error("the other device's sync message does not apply: {0}")]
    Automerge(String),
    /// This side is shutting down before the sync finished.
    #[error("the other device is shutting down")]
    ShuttingDown,
    /// The peer went quiet.
    #[error("the other device stopped responding")]
    Timeout,
    /// One of the two devices could not store what it received.
    #[error("could not store the changes: {0}")]
    Storage(String),
}

/// Runs automerge on bytes from a peer, turning a panic inside automerge into a
/// refusal. Automerge 0.12 panics on some malformed changes (found by fuzzing:
/// `fuzz/known-crashes/`); a peer must not be able to crash this device with
/// one. The caller discards the document on any error, so the half-applied
/// state a panic may leave is never kept.
///
/// Such a panic is an expected refusal, not a crash: it is kept out of the
/// panic hook (no message or backtrace on standard error, which a peer could
/// otherwise trigger at will while this home's lock is held).
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, SyncError> {
    quiet_panics_install();
    CONTAINED.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    result.map_err(|_| {
        SyncError::Refused(VerifyError::Malformed(
            "automerge could not process the changes".into(),
        ))
    })
}

thread_local! {
    /// How deep this thread is inside [`contained`].
    static CONTAINED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Wraps the panic hook once so that it stays silent for panics inside
/// [`contained`] and reports every other panic as before.
fn quiet_panics_install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(|c| c.get()) == 0 {
                previous(info);
            }
        }));
    });
}

/// True for a message's changes that are one whole saved document.
fn is_whole_document(changes: &sync::ChunkList) -> bool {
    let mut chunks = changes.iter();
    matches!((chunks.next(), chunks.next()), (Some(c), None) if verify::is_document_chunk(c))
}

/// What happened, for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Changes were applied; store these verified attestations with them.
    Applied {
        /// How many changes.
        changes: usize,
        /// Attestations to keep (their changes are now in the document).
        attestations: Vec<Attestation>,
        /// The changes themselves, in the order they were applied: exactly what
        /// the message added to the document, so the store need not rebuild
        /// them from it. Empty when the message was a whole document.
        applied: Vec<Change>,
        /// The saved document a new device's empty document was made from,
        /// as it came (then `applied` is empty): for the store to keep whole.
        document: Option<Vec<u8>>,
    },
    /// The peer said goodbye after both held the same heads.
    PeerDone,
}

/// Counts for "what moved".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Changes received and applied.
    pub changes_in: usize,
    /// Sync messages sent.
    pub messages_out: usize,
    /// Sync messages received.
    pub messages_in: usize,
    /// Bytes sent (frames).
    pub bytes_out: usize,
    /// Bytes received (frames).
    pub bytes_in: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Syncing,
    Closed,
}

/// One sync session with one peer device.
pub struct Session {
    peer: DeviceId,
    space_id: String,
    /// The device that founded the space: pinned by this home, or, for a
    /// joining device, taken from the beginning of the history it receives.
    founder: Option<DeviceId>,
    joining: bool,
    phase: Phase,
    state: sync::State,
    /// Attestations verified this session (their changes may still be on the way).
    verified: Vec<Attestation>,
    /// Changes received but not applied yet: waiting for their dependencies or
    /// for an attestation that reaches them (see [`verify::place`]).
    waiting: HashMap<ChangeHash, Change>,
    /// This home's heads when it last sent its whole document.
    document_sent_at: Option<Vec<ChangeHash>>,
    /// The sync state before the last sync message was handled, for
    /// [`Session::fail_to_store`].
    state_before_last: Option<sync::State>,
    outbox: VecDeque<Vec<u8>>,
    last_heard: u64,
    /// Sync messages in a row that brought nothing (reset by any change).
    idle_rounds: u32,
    stats: Stats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session with `peer` (as authenticated by the transport) for space
    /// `space_id`, founded by `founder` (as this home pinned it), resuming
    /// from a saved sync state if there is one. Queues Hello.
    pub fn new(peer: DeviceId, space_id: &str, founder: DeviceId, saved: Option<&[u8]>, now: u64) -> Session {
        let mut s = Session::start(peer, space_id, saved, now);
        s.founder = Some(founder);
        s
    }

    fn start(peer: DeviceId, space_id: &str, saved: Option<&[u8]>, now: u64) -> Session {
        let state = saved
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        let mut s = Session {
            peer,
            space_id: space_id.to_string(),
            founder: None,
            joining: false,
            phase: Phase::AwaitHello,
            state,
            verified: Vec::new(),
            waiting: HashMap::new(),
            document_sent_at: None,
            state_before_last: None,
            outbox: VecDeque::new(),
            last_heard: now,
            idle_rounds: 0,
            stats: Stats::default(),
        };
        s.send(&Message::Hello(Hello {
            min_protocol: wire::MIN_PROTOCOL,
            max_protocol: wire::PROTOCOL,
            space_id: space_id.to_string(),
        }));
        s
    }

    /// A session for a device that has just paired and holds nothing of the space
    /// yet: it takes the peer's word for the space (pairing authenticated the
    /// peer), pins as the founder the device that began the history it
    /// receives, and checks every change against it.
    pub fn joining(peer: DeviceId, space_id: &str, now: u64) -> Session {
        let mut s = Session::start(peer, space_id, None, now);
        s.joining = true;
        s
    }

    /// True for a session that joins a space at pairing.
    pub fn is_joining(&self) -> bool {
        self.joining
    }

    /// The space's founding device, once known: for a joining session, the
    /// one this home should pin.
    pub fn founder(&self) -> Option<DeviceId> {
        self.founder
    }

    /// The peer device.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The sync state to save for the next session with this peer.
    pub fn saved_state(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// True once the session ended (by Bye, failure or timeout).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn send(&mut self, m: &Message) {
        match m.encode() {
            Ok(bytes) => {
                self.stats.bytes_out += bytes.len();
                self.outbox.push_back(bytes);
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an outgoing message"),
        }
    }

    /// The next bytes to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Ends the session because of `err`: queues a Failure frame telling the
    /// peer, and returns the error for the caller's own report.
    pub fn fail(&mut self, err: SyncError) -> SyncError {
        if self.phase != Phase::Closed {
            if !matches!(err, SyncError::PeerFailed(_) | SyncError::Timeout) {
                self.send(&Message::Failure(Failure {
                    text: err.to_string(),
                }));
            }
            self.phase = Phase::Closed;
        }
        err
    }

    /// Ends the session because this home could not store what the last frame
    /// brought (a full disk, say): the sync state forgets that frame, as the
    /// store forgot its changes, or the next session would take them for
    /// stored and never ask for them again; and the peer is told why.
    pub fn fail_to_store(&mut self, reason: &str) -> SyncError {
        self.forget_last_message();
        self.waiting.clear();
        self.fail(SyncError::Storage(reason.to_string()))
    }

    /// Puts the sync state back as it was before the last sync message.
    fn forget_last_message(&mut self) {
        if let Some(state) = self.state_before_last.take() {
            self.state = state;
        }
    }

    /// Checks the idle timer.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), SyncError> {
        if self.phase != Phase::Closed && now.saturating_sub(self.last_heard) > IDLE_TIMEOUT_MS {
            return Err(self.fail(SyncError::Timeout));
        }
        Ok(())
    }

    /// Handles one frame from the peer. `doc` is this home's document; on error
    /// the caller must discard whatever the call did to it (the store's write
    /// rolls back) and close the connection after sending what
    /// [`Session::poll_transmit`] returns.
    pub fn handle(&mut self, frame: &Frame, doc: &mut Automerge, now: u64) -> Result<Vec<Event>, SyncError> {
        if self.phase == Phase::Closed {
            return Ok(Vec::new());
        }
        self.last_heard = now;
        self.stats.bytes_in += frame.payload.len() + 5;
        // Only this frame's sync message can be forgotten (fail_to_store).
        self.state_before_last = None;
        let result = Message::decode(frame)
            .map_err(SyncError::from)
            .and_then(|m| self.handle_message(m, doc));
        result.map_err(|e| self.fail(e))
    }

    fn handle_message(&mut self, m: Message, doc: &mut Automerge) -> Result<Vec<Event>, SyncError> {
        match (self.phase, m) {
            (_, Message::Failure(f)) => {
                self.phase = Phase::Closed;
                Err(SyncError::PeerFailed(f.text))
            }
            (Phase::AwaitHello, Message::Hello(h)) => {
                if h.min_protocol > wire::PROTOCOL || h.max_protocol < wire::MIN_PROTOCOL {
                    return Err(SyncError::Version {
                        theirs_min: h.min_protocol,
                        theirs_max: h.max_protocol,
                    });
                }
                if self.joining {
                    self.space_id = h.space_id;
                } else {
                    if h.space_id != self.space_id {
                        return Err(SyncError::OtherSpace);
                    }
                    let founder = self
                        .founder
                        .ok_or(SyncError::Protocol("no founder pinned for this space"))?;
                    if !Membership::pinned(&*doc, founder).is_active(&self.peer) {
                        return Err(SyncError::NotAMember(self.peer.short()));
                    }
                }
                self.phase = Phase::Syncing;
                Ok(Vec::new())
            }
            (Phase::Syncing, Message::Sync(s)) => self.receive_sync(s, doc),
            (Phase::Syncing, Message::Bye) => {
                // Bye means the peer held our heads when it sent it. Our heads
                // may have moved since (a local edit, another session), which
                // is no error: the next session carries the rest. A peer that
                // stops before it is in sync sends a Failure instead.
                self.phase = Phase::Closed;
                Ok(vec![Event::PeerDone])
            }
            (Phase::AwaitHello, _) => Err(SyncError::Protocol("a message before Hello")),
            (_, Message::Hello(_)) => Err(SyncError::Protocol("a second Hello")),
            (Phase::Closed, _) => Ok(Vec::new()),
        }
    }

    fn receive_sync(&mut self, s: SyncMessage, doc: &mut Automerge) -> Result<Vec<Event>, SyncError> {
        self.stats.messages_in += 1;
        // If the message is refused, the caller discards what it did to the
        // document; the sync state must forget it too, or it would name changes
        // this home never stored.
        self.state_before_last = Some(self.state.clone());
        let result = self.apply_sync(s, doc);
        match &result {
            Err(_) => self.forget_last_message(),
            Ok(events) if events.is_empty() => {
                self.idle_rounds += 1;
                if self.idle_rounds > MAX_IDLE_ROUNDS {
                    self.forget_last_message();
                    return Err(SyncError::Protocol("the sync is not making progress"));
                }
            }
            Ok(_) => self.idle_rounds = 0,
        }
        result
    }

    fn apply_sync(&mut self, s: SyncMessage, doc: &mut Automerge) -> Result<Vec<Event>, SyncError> {
        verify::check_signatures(&s.attestations)?;
        let mut message =
            sync::Message::decode(&s.message).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        // Decoding copies the chunks as they are; bound what they inflate to
        // before automerge reads any of them.
        inflate::check_all(message.changes.iter())?;
        verify::check_have(&message.have)?;
        for a in s.attestations {
            if !self.verified.contains(&a) {
                self.verified.push(a);
            }
        }
        if self.verified.len() > MAX_VERIFIED {
            return Err(SyncError::Protocol("too many signatures"));
        }
        if self.waiting.is_empty()
            && doc.get_heads().is_empty()
            && is_whole_document(&message.changes)
            && let Some(events) = self.take_whole_document(&mut message, doc)?
        {
            return Ok(events);
        }
        let nothing_waited = self.waiting.is_empty();
        let mut received = 0;
        for chunk in message.changes.iter() {
            for c in contained(|| verify::parse_chunks(chunk))?? {
                received += 1;
                self.waiting.entry(c.hash()).or_insert(c);
            }
        }
        let waiting_bytes: usize = self.waiting.values().map(|c| c.raw_bytes().len()).sum();
        if waiting_bytes > MAX_WAITING_BYTES {
            return Err(SyncError::Protocol(
                "too many changes wait for their dependencies",
            ));
        }
        // What the document holds already (resent, or brought by another
        // session meanwhile) no longer waits.
        self.waiting
            .retain(|h, _| doc.get_change_meta_by_hash(h).is_none());
        let placement = verify::place(doc, &self.waiting, &self.verified);
        if let Some(device) = placement.unsigned {
            return Err(VerifyError::Unsigned(device.short()).into());
        }
        let ready: Vec<Change> = placement
            .ready
            .iter()
            .filter_map(|h| self.waiting.remove(h))
            .collect();
        // Automerge gets exactly the placed changes, so it never holds one back.
        // When they are all this message brought, its own chunks serve (a whole
        // document loads much faster than its changes one by one).
        if !(nothing_waited && self.waiting.is_empty() && ready.len() == received) {
            let chunks: Vec<Vec<u8>> = ready.iter().map(|c| c.raw_bytes().to_vec()).collect();
            message.changes = chunks.into();
        }
        let state = &mut self.state;
        let t = std::time::Instant::now();
        contained(|| doc.receive_sync_message(state, message))?
            .map_err(|e| SyncError::Automerge(e.to_string()))?;
        let automerge_us = t.elapsed().as_micros() as u64;
        if !doc.get_missing_deps(&[]).is_empty() {
            return Err(SyncError::Protocol("changes arrived without their dependencies"));
        }
        let t = std::time::Instant::now();
        if !ready.is_empty() {
            let founder = self.founder_of(ready.iter().map(|c| (c.actor_id(), c.deps().is_empty())), doc)?;
            let peer = self.peer;
            contained(|| verify::check_members(doc, &ready, founder, Some(&peer)))??;
        }
        tracing::debug!(
            automerge_us,
            members_us = t.elapsed().as_micros() as u64,
            changes = ready.len(),
            "applied a sync message"
        );
        self.stats.changes_in += ready.len();
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Event::Applied {
            changes: ready.len(),
            attestations: placement.attestations,
            applied: ready,
            document: None,
        }])
    }

    /// A new device's first message: one whole saved document, for an empty
    /// document. It is loaded once, with automerge's checks, and checked from
    /// its changes' metadata (authors, sequence numbers, dependencies: no
    /// change is rebuilt from it); then it becomes this device's document as
    /// it is, and the store keeps its bytes as they came. Returns `None` when
    /// not all of it can be placed at once (a change no attestation reaches):
    /// the change-by-change path then sorts out what waits and what is refused.
    fn take_whole_document(
        &mut self,
        message: &mut sync::Message,
        doc: &mut Automerge,
    ) -> Result<Option<Vec<Event>>, SyncError> {
        let Some(bytes) = message.changes.iter().next().map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        let t = std::time::Instant::now();
        let whole = contained(|| verify::load_document(&bytes))??;
        let load_us = t.elapsed().as_micros() as u64;
        let t = std::time::Instant::now();
        let metas = whole.get_changes_meta(&[]);
        let by_hash: verify::FastMap<ChangeHash, &ChangeMetadata<'_>> =
            metas.iter().map(|m| (m.hash, m)).collect();
        let placement = verify::place(doc, &by_hash, &self.verified);
        let place_us = t.elapsed().as_micros() as u64;
        if placement.unsigned.is_some() || placement.ready.len() != metas.len() {
            return Ok(None);
        }
        let founder = self.founder_of(
            metas.iter().map(|m| (m.actor.as_ref(), m.deps.is_empty())),
            &whole,
        )?;
        // Every change is judged where it was written, as one by one: the
        // document's changes are rebuilt for it (timed apart: automerge's
        // rebuilding is now most of the check).
        let peer = self.peer;
        let all = contained(|| whole.get_changes(&[]))?;
        let changes_us = t.elapsed().as_micros() as u64;
        contained(|| verify::check_members(&whole, &all, founder, Some(&peer)))??;
        drop(all);
        let changes = metas.len();
        let check_us = t.elapsed().as_micros() as u64;
        drop(by_hash);
        drop(metas);
        *doc = whole.with_actor(doc.get_actor().clone());
        // Automerge only updates its sync state, as for a message whose
        // changes it holds. It would take an unchanged document for an
        // answered message and so keep this device from answering
        // (`last_sent_heads`), which is put back.
        message.changes = sync::ChunkList::empty();
        let state = &mut self.state;
        let last_sent = state.last_sent_heads.clone();
        contained(|| doc.receive_sync_message(state, message.clone()))?
            .map_err(|e| SyncError::Automerge(e.to_string()))?;
        state.last_sent_heads = last_sent;
        tracing::debug!(
            load_us,
            place_us,
            changes_us,
            check_us,
            changes,
            "took a whole document"
        );
        self.stats.changes_in += changes;
        Ok(Some(vec![Event::Applied {
            changes,
            attestations: placement.attestations,
            applied: Vec::new(),
            document: Some(bytes),
        }]))
    }

    /// The space's founder: pinned, or for a joining session the author of
    /// the one change that begins the history received (its first message
    /// holds the whole history), pinned from then on. When the history came
    /// in through another session of the same join, `doc` (the document with
    /// the received changes applied) already holds that beginning.
    fn founder_of<'c>(
        &mut self,
        received: impl Iterator<Item = (&'c automerge::ActorId, bool)>,
        doc: &Automerge,
    ) -> Result<DeviceId, SyncError> {
        if let Some(f) = self.founder {
            return Ok(f);
        }
        let mut roots: Vec<automerge::ActorId> = received
            .filter(|(_, root)| *root)
            .map(|(a, _)| a.clone())
            .collect();
        if roots.is_empty() {
            roots = doc
                .get_changes_meta(&[])
                .iter()
                .filter(|m| m.deps.is_empty())
                .map(|m| m.actor.as_ref().clone())
                .collect();
        }
        let [root] = roots.as_slice() else {
            return Err(SyncError::Protocol(
                "the space's history does not have one beginning",
            ));
        };
        let founder =
            DeviceId::from_actor(root).ok_or(VerifyError::Refused(duet_model::ChangeRefusal::NotADevice))?;
        self.founder = Some(founder);
        Ok(founder)
    }

    /// Queues the next sync message, if automerge has one for the peer, with
    /// `attestations` (this home's newest per device) to vouch for its changes.
    /// Call after every handled frame and after local edits.
    pub fn generate(&mut self, doc: &Automerge, attestations: &[Attestation]) {
        if self.phase != Phase::Syncing {
            return;
        }
        // Automerge reads what the peer said (its heads, needs and Bloom
        // filters) here too; a panic on hostile values ends the session.
        let state = &mut self.state;
        let generated = match contained(|| doc.generate_sync_message(state)) {
            Ok(generated) => generated,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let Some(mut message) = generated else {
            return;
        };
        // Automerge asks for what it misses to reach the peer's heads, but the
        // changes waiting here are not in automerge: ask for their missing
        // dependencies too, or a peer that believes this device has them (a
        // Bloom filter false positive) would never send them.
        if !self.waiting.is_empty() {
            let mut asked: HashSet<ChangeHash> = message.need.iter().copied().collect();
            let mut need: Vec<ChangeHash> = self
                .waiting
                .values()
                .flat_map(|c| c.deps().iter().copied())
                .filter(|d| !self.waiting.contains_key(d) && doc.get_change_meta_by_hash(d).is_none())
                .filter(|d| asked.insert(*d))
                .collect();
            need.truncate(MAX_NEEDS);
            message.need.extend(need);
            // The encoding requires sorted hashes (it panics otherwise).
            message.need.sort_unstable();
        }
        // Automerge sends the whole document to a peer that holds nothing,
        // again with every message it answers until that peer has taken the
        // first copy. On one reliable stream the first copy is enough.
        if is_whole_document(&message.changes) {
            let heads = doc.get_heads();
            if self.document_sent_at.as_ref() == Some(&heads) {
                message.changes = sync::ChunkList::empty();
            } else {
                self.document_sent_at = Some(heads);
            }
        }
        // With a peer this device never synced with, the first message says
        // only its heads: automerge would add a Bloom filter of the whole
        // history (about 10 bits per change), which a new device, the common
        // case, does not need, and which a device with a shared history is
        // better served by once its heads are known (the filter then covers
        // only what lies beyond them).
        if self.state.shared_heads.is_empty() && self.state.their_heads.is_none() {
            message.have.clear();
        }
        // Once the whole document at these heads went to the peer, what this
        // device has is exactly "everything up to these heads": say so with
        // the heads and an empty filter. Automerge would otherwise send a
        // Bloom filter of every change since the last sync, which for a new
        // device is the whole history again (about 10 bits per change: 87 KB
        // for five years, a quarter of the document).
        let heads = doc.get_heads();
        if self.document_sent_at.as_ref() == Some(&heads) && !message.have.is_empty() {
            message.have = vec![sync::Have {
                last_sync: heads,
                bloom: sync::BloomFilter::default(),
            }];
        }
        let with_changes = !message.changes.is_empty();
        if with_changes {
            self.idle_rounds = 0;
        }
        let mut atts: Vec<Attestation> = if with_changes {
            attestations.to_vec()
        } else {
            Vec::new()
        };
        atts.truncate(wire::MAX_ATTESTATIONS);
        self.stats.messages_out += 1;
        self.send(&Message::Sync(SyncMessage {
            message: message.encode(),
            attestations: atts,
        }));
    }

    /// True when both sides hold the same heads and nothing is in flight.
    pub fn is_synced(&self, doc: &Automerge) -> bool {
        self.phase == Phase::Syncing
            && self.outbox.is_empty()
            && self.state.their_heads.as_deref() == Some(doc.get_heads().as_slice())
    }

    /// Says goodbye: both hold the same heads.
    pub fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.send(&Message::Bye);
            self.phase = Phase::Closed;
        }
    }
}
