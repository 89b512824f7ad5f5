//! duet's fuzz harness: one function per fuzz target.
//!
//! The same functions serve the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`,
//! each a one-line `fuzz_target!`) and the stable regression test
//! (`crates/sync/tests/fuzz_corpus.rs`, which includes this file as a module
//! and replays every committed corpus and regression input through [`TARGETS`]).
//! So a crash found by the fuzzer, once its input is saved under
//! `fuzz/regressions/<target>/`, is replayed by `cargo test` on stable.
//!
//! Every function takes arbitrary bytes and must not panic. Where a property can
//! be stated (a round trip, "a refused message leaves the session closed", "no
//! confirmation without the code"), it is asserted, so a violation is a crash
//! too. Each function documents how it reads its input; the seeds in
//! `fuzz/corpus/` are made by [`seeds`] (run `cargo run --example seeds` in
//! `fuzz/`).
//!
//! Everything is deterministic: fixed device keys, fixed times, fixed pairing
//! entropy. A recorded peer's bytes therefore replay exactly, which is what
//! lets the seeds reach deep states (a whole sync, a whole pairing) and the
//! fuzzer mutate from there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod inflate;
pub use inflate::inflate_check;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Once, OnceLock};

use automerge::transaction::Transactable;
use automerge::{
    ActorId, Automerge, Change, ChangeHash, LoadOptions, ObjId, ObjType, OnPartialLoad, Prop, ROOT, ReadDoc,
    ScalarValue, Value, VerificationMode,
};
use duet_model::members::latest_seq;
use duet_model::{
    AgreementKind, Attestation, ChangeRefusal, CheckInEntry, DeviceId, DeviceSecret, Editor, Founder,
    IssueFilter, IssueStatus, ItemId, Membership, NewIssue, Owner, Rating, Seat, Week, agreements, checkins,
    issues, space,
};
use duet_sync::proto::bundle::{self, BundleBody};
use duet_sync::proto::frame::{self, Frame, FrameDecoder};
use duet_sync::proto::keyring::{Keyring, SpaceKey};
use duet_sync::proto::pairing::{
    self, FRAME_TYPES, JoinAccept, JoinRequest, JoinerEvent, PairingCode, PairingError, PairingHost,
    PairingJoiner,
};
use duet_sync::proto::relay::{self as relay_proto, Request, Response};
use duet_sync::proto::session::{Event, IDLE_TIMEOUT_MS, Session};
use duet_sync::proto::verify;
use duet_sync::proto::wire::{self, Message, SyncMessage};
use sha2::{Digest, Sha256};

/// Panics in dependencies that are known, reported, and not yet fixed or
/// worked around (see `fuzz/known-crashes/README.md`): the source file (the
/// end of its path, version included) and line. While fuzzing, an input that
/// ends in one of these is treated as uninteresting rather than as a crash, so
/// that a run goes on looking for new bugs instead of stopping at a known one
/// within seconds. The inputs themselves are kept under
/// `fuzz/known-crashes/<target>/`, and the stable test checks that they still
/// crash (and says to move them to `fuzz/regressions/` once they do not).
/// Set `DUET_FUZZ_STRICT=1` to have the fuzz targets crash on them too.
pub const KNOWN_PANICS: &[(&str, u32)] = &[
    // Applying a change whose actor (or one of its other actors) the document
    // does not know, when the change's seq is not 1: `lookup_actor(..).unwrap()`.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 1121),
    // Applying a change (or loading a document) with an operation on an
    // object that does not exist: `panic!("Obj {:?} Missing from Index")`.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 920),
    // Applying a change whose seq is not one more than its actor's last:
    // `assert_eq!(self.seq_index[actor].len() + 1, change.seq())`.
    ("automerge-0.12.0/src/change_graph.rs", 569),
    // Applying hostile list or text operations: `a.pos.unwrap()` when sorting
    // a sequence's new operations.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 146),
    // `Change::from_bytes` (so `verify::parse_chunks`) of a change whose
    // operation ids do not fit: `u32::try_from(..).unwrap()` in `ObjId::new`.
    ("automerge-0.12.0/src/types.rs", 464),
    // `get_changes` after applying some hostile changes:
    // `from_build_meta_inner(..).unwrap()` on `MissingOps`.
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 788),
    // Loading a document whose columns end early: hexane's LEB128 decoder
    // unwraps an `UnexpectedEof`.
    ("hexane-1.0.0-alpha.5/src/lib.rs", 354),
    // `get_changes` after applying some hostile changes: a self-check that
    // only runs with debug assertions (`Bundle::for_hashes(..).unwrap()`).
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 753),
    // Found in the last runs, not diagnosed further (see known-crashes/README.md):
    // a change with an author whose seq is not 1 (`assert!(change.seq() == 1)`),
    ("automerge-0.12.0/src/change_graph.rs", 564),
    // `import_ops_to(..).unwrap()` while applying,
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 859),
    // `debug_assert!(doc.ops.validate_op_order())` after applying (debug only),
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 949),
    // `assert!(self.data[index].is_none())` in the change collector,
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 299),
    // hexane's "take past end" assertion while decoding columns,
    ("hexane-1.0.0-alpha.5/src/raw.rs", 622),
    // `assert!(self.entry.is_empty())` while applying,
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 136),
    // an index out of bounds in `write_change_ops` while loading rebuilds
    // the changes of a document,
    ("automerge-0.12.0/src/op_set2/change.rs", 306),
    // and `Change::decode()` (which duet never calls) unwrapping actor lookups.
    ("automerge-0.12.0/src/change.rs", 322),
    ("automerge-0.12.0/src/change.rs", 331),
    // `save()` of a document loaded without checking its heads
    // (`VerificationMode::DontCheck`), whose heads name no change.
    ("automerge-0.12.0/src/change_graph.rs", 144),
];

thread_local! {
    static KNOWN_PANIC_SEEN: Cell<bool> = const { Cell::new(false) };
}

/// Whether a panic at `file:line` is one of [`KNOWN_PANICS`].
pub fn is_known_panic(file: &str, line: u32) -> bool {
    let file = file.replace('\\', "/");
    KNOWN_PANICS.iter().any(|(f, l)| file.ends_with(f) && line == *l)
}

/// Runs `target` on `data` for a cargo-fuzz target: any panic is a crash
/// (libfuzzer-sys's hook aborts), except one of [`KNOWN_PANICS`], after which
/// the input is simply dropped.
pub fn fuzz(target: fn(&[u8]), data: &[u8]) {
    static HOOK: Once = Once::new();
    static STRICT: OnceLock<bool> = OnceLock::new();
    if *STRICT.get_or_init(|| std::env::var_os("DUET_FUZZ_STRICT").is_some_and(|v| v != "0")) {
        target(data);
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location()
                && is_known_panic(at.file(), at.line())
            {
                KNOWN_PANIC_SEEN.with(|k| k.set(true));
                return;
            }
            previous(info);
        }));
    });
    KNOWN_PANIC_SEEN.with(|k| k.set(false));
    if std::panic::catch_unwind(|| target(data)).is_err() && !KNOWN_PANIC_SEEN.with(Cell::get) {
        // The previous hook (libfuzzer-sys's) normally aborted already.
        std::process::abort();
    }
}

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the
/// cargo-fuzz binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("frame_decoder", frame_decoder),
    ("wire_message", wire_message),
    ("session", session),
    ("pairing_host", pairing_host),
    ("pairing_joiner", pairing_joiner),
    ("parse_chunks", parse_chunks),
    ("check_new_changes", check_new_changes),
    ("attestation", attestation),
    ("membership", membership),
    ("document_load", document_load),
    ("document_ops", document_ops),
    ("store_open", store_open),
    ("bundle_open", bundle_open),
    ("relay_wire", relay_wire),
    ("inflate_check", inflate_check),
];

// ---------------------------------------------------------------------------
// Fixed world: keys, the space, pairing parameters.
// ---------------------------------------------------------------------------

/// The space id of the harness's space.
pub const SPACE_ID: &str = "5eed5eed";
/// The time the space was founded (ms since the epoch).
pub const T0: i64 = 1_764_000_000_000;
/// The founding device (seat a).
pub const FOUNDER: u8 = 1;
/// The partner's device (seat b), a member.
pub const PARTNER: u8 = 2;
/// A third device (seat b): a member in the relay scenario.
pub const THIRD: u8 = 3;
/// A device that is no member of anything.
pub const STRANGER: u8 = 9;
/// Every device whose secret the harness knows.
pub const KNOWN: [u8; 4] = [FOUNDER, PARTNER, THIRD, STRANGER];

/// The pairing code both sides use (unless the input says otherwise).
pub const CODE: &str = "7-guitar-orbit";
/// Another code, for wrong-code runs.
pub const OTHER_CODE: &str = "8-guitar-orbit";
/// The TLS channel binding both sides see.
pub const BINDING: [u8; 32] = [9; 32];
/// The host's SPAKE2 entropy.
pub const HOST_ENTROPY: [u8; 32] = [11; 32];
/// The joiner's SPAKE2 entropy.
pub const JOINER_ENTROPY: [u8; 32] = [22; 32];

/// The secret key of harness device `n`.
pub fn secret(n: u8) -> DeviceSecret {
    DeviceSecret::from_bytes(&[n; 32])
}

/// The id of harness device `n`.
pub fn device(n: u8) -> DeviceId {
    secret(n).device_id()
}

/// An issue id of the harness's documents.
pub fn item(n: u8) -> ItemId {
    ItemId::from_random([n; 8])
}

/// The check-in week used by the harness's documents.
pub fn week() -> Week {
    "2025-W48".parse().expect("a valid week")
}

/// The home document: device 1 founded the space (seat a), added device 2
/// (seat b), raised an issue with a step and a note, proposed an agreement and
/// started this week's check-in.
pub fn home() -> Automerge {
    static HOME: OnceLock<Automerge> = OnceLock::new();
    HOME.get_or_init(|| {
        let mut doc = Automerge::new().with_actor(device(FOUNDER).actor());
        let founder = Founder {
            space_id: SPACE_ID.into(),
            name: "Sam".into(),
            device: device(FOUNDER),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, T0).expect("found the space");
        let mut e = Editor::new(&mut doc, Seat::A, T0 + 1_000);
        e.add_device(device(PARTNER), Seat::B, "phone")
            .expect("add device");
        let new = NewIssue {
            title: "Who does the dishes".into(),
            body: "every evening".into(),
            tags: vec!["home".into()],
            ..Default::default()
        };
        e.add_issue(&item(1), &new).expect("add issue");
        e.add_step(&item(1), &item(2), "make a rota", Owner::Both, Some("2025-12-01"))
            .expect("add step");
        e.add_note(&item(1), "talked on sunday").expect("add note");
        e.add_agreement(&item(3), "no phones at dinner", AgreementKind::Ritual)
            .expect("add agreement");
        e.checkin(week(), &CheckInEntry::Appreciation("made dinner".into()))
            .expect("check in");
        e.checkin(week(), &CheckInEntry::Rating(Rating::new(8).expect("rating")))
            .expect("rate");
        e.checkin(week(), &CheckInEntry::Agenda(item(1))).expect("agenda");
        doc
    })
    .clone()
}

/// The home document of the relay scenario: [`home`], then device 3 (seat b)
/// added, then device 2 revoked (it had made no change here, so its cut-off
/// is 0).
pub fn relay_home() -> Automerge {
    static RELAY: OnceLock<Automerge> = OnceLock::new();
    RELAY
        .get_or_init(|| {
            let mut doc = with_third();
            Editor::new(&mut doc, Seat::A, T0 + 3_000)
                .revoke_device(device(PARTNER))
                .expect("revoke");
            doc
        })
        .clone()
}

/// [`home`] with device 3 added (before the revocation of [`relay_home`]).
pub fn with_third() -> Automerge {
    let mut doc = home();
    Editor::new(&mut doc, Seat::A, T0 + 2_000)
        .add_device(device(THIRD), Seat::B, "tablet")
        .expect("add device");
    doc
}

/// `doc` as device `n` would write to it.
pub fn as_device(doc: &Automerge, n: u8) -> Automerge {
    doc.fork().with_actor(device(n).actor())
}

/// What device 2 (seat b) typically writes: its name, an issue, an acceptance,
/// its part of the check-in.
pub fn partner_edits(doc: &mut Automerge, at: i64) {
    let mut e = Editor::new(doc, Seat::B, at);
    e.rename("Alex").expect("rename");
    let new = NewIssue {
        title: "Weekends".into(),
        body: "more time outside".into(),
        ..Default::default()
    };
    e.add_issue(&item(4), &new).expect("add issue");
    e.accept_agreement(&item(3)).expect("accept");
    e.checkin(week(), &CheckInEntry::WentWell("the walk".into()))
        .expect("check in");
    e.set_status(&item(1), IssueStatus::Discussing).expect("status");
}

/// The newest attestation of every known device that wrote to `doc`.
pub fn attest_all(doc: &Automerge) -> Vec<Attestation> {
    let changes = doc.get_changes(&[]);
    KNOWN
        .iter()
        .filter_map(|&n| {
            let actor = device(n).actor();
            changes
                .iter()
                .filter(|c| *c.actor_id() == actor)
                .max_by_key(|c| c.seq())
                .map(|c| secret(n).attest(&c.hash()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Reading fuzz input.
// ---------------------------------------------------------------------------

/// A cursor over fuzz input that never fails: past the end it reads zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).try_into().ok()
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A short string: a length byte (at most 63), then that many bytes, lossily UTF-8.
    fn string(&mut self) -> String {
        let n = usize::from(self.byte() & 0x3f);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Decodes every frame of a byte stream, as a driver does, stopping at the
/// first error (an error is final).
fn frames(stream: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new();
    d.push(stream);
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        out.push(f);
    }
    out
}

/// Decodes bytes a state machine queued for sending: they must be exactly
/// one well-formed frame.
fn own_frame(bytes: &[u8]) -> Frame {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let f = d
        .next_frame()
        .expect("an outgoing frame is well formed")
        .expect("an outgoing frame is complete");
    assert_eq!(d.buffered(), 0, "an outgoing buffer is exactly one frame");
    f
}

// ---------------------------------------------------------------------------
// Target: frame_decoder
// ---------------------------------------------------------------------------

/// The frame decoder fed a stream in arbitrary pieces.
///
/// Input: repeated `[n: u8][n bytes]`; each piece is pushed, then every
/// complete frame drained. Checks: each frame re-encodes to exactly the bytes
/// it came from, `buffered` counts the rest, the limit holds, and decoding the
/// same stream in one piece gives the same frames and the same error.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input(data);
    let mut d = FrameDecoder::new();
    let mut pushed: Vec<u8> = Vec::new();
    let mut consumed = 0usize;
    let mut got = Vec::new();
    let mut failed = None;
    while !input.is_empty() && failed.is_none() {
        let n = usize::from(input.byte());
        let piece = input.take(n);
        d.push(piece);
        pushed.extend_from_slice(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() < frame::MAX_FRAME, "a frame over the limit");
                    let bytes = frame::encode(f.kind, &f.payload).expect("a decoded frame re-encodes");
                    assert_eq!(
                        pushed.get(consumed..consumed + bytes.len()),
                        Some(bytes.as_slice()),
                        "a frame is not the bytes it came from"
                    );
                    consumed += bytes.len();
                    got.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    // The error comes from the header just after the last frame.
                    let header: [u8; frame::HEADER] = pushed[consumed..consumed + frame::HEADER]
                        .try_into()
                        .expect("a header");
                    assert_eq!(FrameDecoder::announced(header), Err(e.clone()));
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            assert_eq!(d.buffered(), pushed.len() - consumed, "buffered bytes miscounted");
        }
    }
    let mut whole = FrameDecoder::new();
    whole.push(&pushed);
    let mut again = Vec::new();
    let error = loop {
        match whole.next_frame() {
            Ok(Some(f)) => again.push(f),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert_eq!(again, got, "the frames depend on how the stream was cut");
    assert_eq!(error, failed, "the error depends on how the stream was cut");
}

// ---------------------------------------------------------------------------
// Target: wire_message
// ---------------------------------------------------------------------------

/// `Message::decode` on an arbitrary frame.
///
/// Input: `[kind][payload...]`. Checks: a decoded message re-encodes into one
/// frame of the same type that decodes to the same message; a sync message's
/// inner automerge message is decoded as the session would.
pub fn wire_message(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        kind,
        payload: payload.to_vec(),
    };
    match Message::decode(&frame) {
        Ok(m) => {
            let bytes = m.encode().expect("a decoded message re-encodes");
            let f = own_frame(&bytes);
            assert_eq!(f.kind, kind);
            assert_eq!(
                Message::decode(&f).as_ref(),
                Ok(&m),
                "the round trip changed the message"
            );
            match &m {
                Message::Hello(h) => assert!(h.space_id.len() <= wire::MAX_SPACE_ID),
                Message::Sync(s) => {
                    assert!(s.attestations.len() <= wire::MAX_ATTESTATIONS);
                    let _ = verify::check_signatures(&s.attestations);
                    if let Ok(inner) = automerge::sync::Message::decode(&s.message) {
                        for chunk in inner.changes.iter() {
                            let _ = verify::parse_chunks(chunk);
                        }
                    }
                }
                Message::Failure(f) => assert!(f.text.len() <= wire::MAX_FAILURE_TEXT),
                Message::Bye => assert!(payload.is_empty()),
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------
// Target: session
// ---------------------------------------------------------------------------

/// Who the harness's home syncs with, chosen by the session input's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Home device 1 on [`home`]; the peer is device 2, a member.
    Partner = 0,
    /// Home device 2 with an empty document, joining after pairing; the peer is
    /// device 1.
    Joining = 1,
    /// Home device 1 on [`relay_home`] (device 2 revoked); the peer is device 3,
    /// relaying device 2's changes.
    Relay = 2,
    /// Home device 1 on [`home`]; the peer is device 9, no member.
    Stranger = 3,
}

impl Scenario {
    fn from_flags(flags: u8) -> Scenario {
        match flags & 3 {
            0 => Scenario::Partner,
            1 => Scenario::Joining,
            2 => Scenario::Relay,
            _ => Scenario::Stranger,
        }
    }

    /// The home's document, its device and the peer's device.
    fn home(self) -> (Automerge, u8, u8) {
        match self {
            Scenario::Partner => (home(), FOUNDER, PARTNER),
            Scenario::Joining => (
                Automerge::new().with_actor(device(PARTNER).actor()),
                PARTNER,
                FOUNDER,
            ),
            Scenario::Relay => (relay_home(), FOUNDER, THIRD),
            Scenario::Stranger => (home(), FOUNDER, STRANGER),
        }
    }
}

/// Input flag: sign every change the frames carry with the key of its author,
/// when the harness knows that key (see [`session`]).
pub const SIGN: u8 = 4;
/// Input flag: a saved sync state follows (`[len: u16 LE][bytes]`).
pub const SAVED: u8 = 8;

/// The home side of a session, driven as the engine's driver does: each frame
/// handled inside a "write" that is rolled back on error, then a sync message
/// generated and everything queued sent.
pub struct HomeSide {
    /// The home's document.
    pub doc: Automerge,
    /// The session.
    pub session: Session,
    atts: HashMap<DeviceId, (u64, Attestation)>,
    now: u64,
    /// Whether a frame's changes may carry signatures the harness made up.
    signed_by_harness: bool,
}

impl HomeSide {
    /// The home of `scenario`, resuming from `saved`.
    pub fn new(scenario: Scenario, saved: Option<&[u8]>, signed_by_harness: bool) -> HomeSide {
        let (doc, _, peer) = scenario.home();
        let session = match scenario {
            Scenario::Joining => Session::joining(device(peer), SPACE_ID, 0),
            _ => Session::new(device(peer), SPACE_ID, device(FOUNDER), saved, 0),
        };
        let mut atts = HashMap::new();
        for a in attest_all(&doc) {
            let seq = doc.get_change_by_hash(&a.hash).map_or(0, |c| c.seq());
            atts.insert(a.device, (seq, a));
        }
        HomeSide {
            doc,
            session,
            atts,
            now: 0,
            signed_by_harness,
        }
    }

    /// The attestations this home sends.
    pub fn attestations(&self) -> Vec<Attestation> {
        let mut v: Vec<(u64, Attestation)> = self.atts.values().copied().collect();
        v.sort_by_key(|(_, a)| *a.device.as_bytes());
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// Everything the session queued, each checked to be a valid message.
    pub fn outgoing(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(bytes) = self.session.poll_transmit() {
            let f = own_frame(&bytes);
            Message::decode(&f).expect("the session sends only valid messages");
            out.push(bytes);
        }
        out
    }

    /// Handles one frame from the peer and answers it.
    pub fn receive(&mut self, frame: &Frame) {
        self.now += 1;
        let was_closed = self.session.is_closed();
        let had_changes = !self.doc.get_heads().is_empty();
        let before = self.doc.clone();
        match self.session.handle(frame, &mut self.doc, self.now) {
            Ok(events) => {
                if was_closed {
                    assert!(events.is_empty(), "a closed session reported events");
                    assert_eq!(
                        self.doc.get_heads(),
                        before.get_heads(),
                        "a closed session changed the document"
                    );
                }
                for e in events {
                    match e {
                        Event::Applied {
                            changes,
                            attestations,
                            applied,
                            document,
                        } => {
                            assert!(changes > 0);
                            match document {
                                // A whole document, for a document that was empty.
                                Some(bytes) => {
                                    assert!(applied.is_empty() && !had_changes);
                                    let loaded = automerge::Automerge::load(&bytes)
                                        .expect("a document taken whole loads");
                                    assert_eq!(loaded.get_heads(), self.doc.get_heads());
                                    assert_eq!(loaded.get_changes(&[]).len(), changes);
                                }
                                None => {
                                    assert_eq!(applied.len(), changes, "the applied changes are all reported")
                                }
                            }
                            for a in attestations {
                                assert!(a.verify(), "a kept attestation does not verify");
                                let c = self
                                    .doc
                                    .get_change_by_hash(&a.hash)
                                    .expect("a kept attestation's change is in the document");
                                if self.atts.get(&a.device).is_none_or(|(s, _)| *s < c.seq()) {
                                    self.atts.insert(a.device, (c.seq(), a));
                                }
                            }
                        }
                        Event::PeerDone => assert!(self.session.is_closed()),
                    }
                }
                if self.signed_by_harness {
                    // Signed by a member, only what its author may write gets
                    // in; reads must still not panic.
                    read_everything(&self.doc);
                } else if had_changes || !self.doc.get_heads().is_empty() {
                    // Without made-up signatures, only changes the real devices
                    // signed can be in: the document is still a space.
                    space::check_schema(&self.doc).expect("an accepted sync broke the document's schema");
                }
                if !self.doc.get_heads().is_empty() {
                    // Signed or not, no accepted change moves the founder:
                    // the device list is never replaced.
                    let members = Membership::of(&self.doc);
                    assert!(
                        members.founder() == Some(device(FOUNDER)),
                        "the space changed founder"
                    );
                }
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(
                    self.session.is_closed(),
                    "a session that refused a frame is still open"
                );
                // The driver's write rolls back.
                self.doc = before;
            }
        }
        self.session.generate(&self.doc, &self.attestations());
    }

    /// The end: a session that never hears from its peer times out.
    pub fn finish(&mut self) {
        let closed = self.session.is_closed();
        let r = self.session.handle_timeout(self.now + IDLE_TIMEOUT_MS + 1);
        assert_eq!(r.is_err(), !closed, "the idle timer");
        assert!(self.session.is_closed());
        self.outgoing();
        let saved = self.session.saved_state();
        automerge::sync::State::decode(&saved).expect("a saved sync state decodes");
        let _ = self.session.stats();
        let _ = self.session.is_synced(&self.doc);
    }
}

/// Adds attestations, signed with the harness's keys, for every change a sync
/// frame carries whose author the harness knows.
fn sign_frame(frame: Frame) -> Frame {
    let Ok(Message::Sync(mut s)) = Message::decode(&frame) else {
        return frame;
    };
    let Ok(inner) = automerge::sync::Message::decode(&s.message) else {
        return frame;
    };
    let mut changes: Vec<Change> = Vec::new();
    for chunk in inner.changes.iter() {
        if let Ok(cs) = verify::parse_chunks(chunk) {
            changes.extend(cs);
        } else if let Ok(doc) = Automerge::load(chunk) {
            changes.extend(doc.get_changes(&[]));
        }
    }
    for c in changes {
        if s.attestations.len() >= wire::MAX_ATTESTATIONS {
            break;
        }
        if let Some(n) = KNOWN
            .iter()
            .copied()
            .find(|&n| device(n).actor() == *c.actor_id())
        {
            s.attestations.push(secret(n).attest(&c.hash()));
        }
    }
    match Message::Sync(s).encode() {
        Ok(bytes) => own_frame(&bytes),
        Err(_) => frame,
    }
}

/// A session fed arbitrary frames against a small real space.
///
/// Input: `[flags]`, then with [`SAVED`] a saved sync state `[len: u16 LE]
/// [bytes]`, then the peer's byte stream (frames). Flags: bits 0-1 the
/// [`Scenario`]; [`SIGN`] has the harness sign every change a frame carries
/// whose author's key it knows, so that hostile changes get past the signature
/// check and into the document.
///
/// Checks: no panic; every frame the session sends is a valid message; after
/// any error the session is closed (and the harness rolls the document back,
/// as the store does); without [`SIGN`], the document is still a space with
/// its founder after every accepted frame; with it, every model read still
/// works; kept attestations verify and name changes in the document; the idle
/// timer and the saved state work at the end.
pub fn session(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let saved = if flags & SAVED != 0 {
        let n = usize::from(input.u16());
        Some(input.take(n))
    } else {
        None
    };
    let mut home = HomeSide::new(Scenario::from_flags(flags), saved, flags & SIGN != 0);
    home.outgoing();
    for f in frames(input.rest()) {
        let f = if flags & SIGN != 0 { sign_frame(f) } else { f };
        home.receive(&f);
        home.outgoing();
    }
    home.finish();
}

/// Runs a real peer against the harness's home in `scenario` and returns the
/// bytes the peer sent, in order: a session seed (after its flags byte).
/// `peer_doc` is the peer's document; the peer says Bye once in sync.
pub fn record_session(scenario: Scenario, peer_doc: Automerge) -> Vec<u8> {
    let (_, home_device, _) = scenario.home();
    let mut home = HomeSide::new(scenario, None, false);
    let mut peer_doc = peer_doc;
    let mut peer = Session::new(device(home_device), SPACE_ID, device(FOUNDER), None, 0);
    let peer_atts = attest_all(&peer_doc);
    let mut recorded = Vec::new();
    let mut to_peer: Vec<Vec<u8>> = home.outgoing();
    let mut now = 0;
    for _ in 0..100 {
        now += 1;
        for bytes in to_peer.drain(..) {
            for f in frames(&bytes) {
                let _ = peer.handle(&f, &mut peer_doc, now);
            }
        }
        peer.generate(&peer_doc, &peer_atts);
        let mut sent = Vec::new();
        while let Some(b) = peer.poll_transmit() {
            sent.push(b);
        }
        if sent.is_empty() {
            if !peer.is_closed() && peer.is_synced(&peer_doc) {
                peer.close();
                while let Some(b) = peer.poll_transmit() {
                    sent.push(b);
                }
            } else {
                break;
            }
        }
        for b in sent {
            recorded.extend_from_slice(&b);
            for f in frames(&b) {
                home.receive(&f);
            }
            to_peer.extend(home.outgoing());
        }
        if peer.is_closed() {
            break;
        }
    }
    recorded
}

// ---------------------------------------------------------------------------
// Targets: pairing_host, pairing_joiner
// ---------------------------------------------------------------------------

/// Pairing input flag: this side uses [`OTHER_CODE`] (the recorded peer used [`CODE`]).
pub const WRONG_CODE: u8 = 1;
/// Pairing input flag: this side sees another TLS channel binding.
pub const MISMATCH: u8 = 2;
/// Pairing input flag: the host rejects the request instead of accepting it.
pub const REJECT: u8 = 4;

fn code(s: &str) -> PairingCode {
    s.parse().expect("a valid code")
}

/// The request the harness's joiner sends.
pub fn join_request() -> JoinRequest {
    JoinRequest {
        name: "Alex".into(),
        device_name: "Alex's phone".into(),
    }
}

/// The harness host's answer.
pub fn join_accept() -> JoinAccept {
    JoinAccept {
        space_id: SPACE_ID.into(),
        seat: "b".into(),
    }
}

/// The rule both ends apply to pairing texts.
fn valid_text(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= pairing::MAX_TEXT && !s.chars().any(char::is_control)
}

fn pairing_setup(flags: u8) -> (PairingCode, [u8; 32]) {
    let c = if flags & WRONG_CODE != 0 { OTHER_CODE } else { CODE };
    let mut binding = BINDING;
    if flags & MISMATCH != 0 {
        binding[0] ^= 1;
    }
    (code(c), binding)
}

fn pairing_outgoing(next: &mut dyn FnMut() -> Option<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(bytes) = next() {
        let f = own_frame(&bytes);
        assert!(FRAME_TYPES.contains(&f.kind), "pairing sent a non-pairing frame");
        out.push(bytes);
    }
    out
}

/// The pairing host fed arbitrary frames.
///
/// Input: `[flags]` ([`WRONG_CODE`], [`MISMATCH`], [`REJECT`]), then the
/// joiner's byte stream. The host is device 1 with code [`CODE`]; the seeds are
/// a real joiner's recorded frames. Checks: a join request surfaces only when
/// code and channel match (the fuzzer cannot forge the joiner's proof), only
/// once, from the TLS peer, with valid texts; accept and reject then work;
/// every error ends the attempt, and a finished host answers only `Finished`;
/// the host sends only pairing frames.
pub fn pairing_host(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let (c, binding) = pairing_setup(flags);
    let mut host = PairingHost::new(&c, device(FOUNDER), device(PARTNER), binding, HOST_ENTROPY);
    pairing_outgoing(&mut || host.poll_transmit());
    let mut requests = 0;
    for f in frames(input.rest()) {
        let was_finished = host.is_finished();
        match host.handle(&f) {
            Ok(Some(asked)) => {
                requests += 1;
                assert_eq!(requests, 1, "a second join request");
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "a join request without the code or over another channel"
                );
                assert_eq!(asked.peer, device(PARTNER));
                assert!(valid_text(&asked.request.name) && valid_text(&asked.request.device_name));
                assert_eq!(asked.phrase.split(' ').count(), 4);
                if flags & REJECT != 0 {
                    host.reject("not now").expect("reject a waiting request");
                } else {
                    let paired = host.accept(join_accept()).expect("accept a waiting request");
                    assert_eq!(paired.peer, device(PARTNER));
                    assert_eq!(paired.phrase, asked.phrase);
                }
                assert!(host.is_finished());
            }
            Ok(None) => assert!(!was_finished, "a finished host accepted a frame"),
            Err(e) => {
                assert!(host.is_finished(), "an error left the host open");
                if was_finished {
                    assert_eq!(e, PairingError::Finished);
                }
                assert!(host.accept(join_accept()).is_err());
            }
        }
        pairing_outgoing(&mut || host.poll_transmit());
    }
}

/// The pairing joiner fed arbitrary frames.
///
/// Input: `[flags]` ([`WRONG_CODE`], [`MISMATCH`]), then the host's byte
/// stream. The joiner is device 2 with code [`CODE`]; the seeds are a real
/// host's recorded frames. Checks: confirmation and pairing happen only when
/// code and channel match, in that order, once each; the pairing names the TLS
/// peer and carries valid texts; a rejection's reason is a valid text; every
/// error ends the attempt; the joiner sends only pairing frames.
pub fn pairing_joiner(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let (c, binding) = pairing_setup(flags);
    let mut joiner = PairingJoiner::new(
        &c,
        device(PARTNER),
        device(FOUNDER),
        binding,
        join_request(),
        JOINER_ENTROPY,
    )
    .expect("a valid request");
    pairing_outgoing(&mut || joiner.poll_transmit());
    let mut confirmed = None;
    let mut paired = false;
    for f in frames(input.rest()) {
        let was_finished = joiner.is_finished();
        match joiner.handle(&f) {
            Ok(Some(JoinerEvent::Confirmed { phrase })) => {
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "confirmed without the code or over another channel"
                );
                assert!(confirmed.is_none(), "confirmed twice");
                assert_eq!(phrase.split(' ').count(), 4);
                confirmed = Some(phrase);
            }
            Ok(Some(JoinerEvent::Paired(p))) => {
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "paired without the code or over another channel"
                );
                assert!(!paired, "paired twice");
                assert_eq!(confirmed.as_ref(), Some(&p.phrase), "paired before confirmation");
                assert_eq!(p.peer, device(FOUNDER));
                assert_eq!(p.request, join_request());
                assert!(valid_text(&p.accept.space_id) && valid_text(&p.accept.seat));
                assert!(joiner.is_finished());
                paired = true;
            }
            Ok(None) => assert!(!was_finished, "a finished joiner accepted a frame"),
            Err(e) => {
                assert!(joiner.is_finished(), "an error left the joiner open");
                if was_finished {
                    assert_eq!(e, PairingError::Finished);
                }
                if let PairingError::Rejected(reason) = &e {
                    assert!(confirmed.is_some(), "rejected before confirmation");
                    assert!(valid_text(reason));
                }
            }
        }
        pairing_outgoing(&mut || joiner.poll_transmit());
    }
}

/// A real pairing between the harness's host and joiner, recorded: the bytes
/// the host sent and the bytes the joiner sent. The host accepts unless
/// `reject`.
pub fn record_pairing(reject: bool) -> (Vec<u8>, Vec<u8>) {
    let mut host = PairingHost::new(
        &code(CODE),
        device(FOUNDER),
        device(PARTNER),
        BINDING,
        HOST_ENTROPY,
    );
    let mut joiner = PairingJoiner::new(
        &code(CODE),
        device(PARTNER),
        device(FOUNDER),
        BINDING,
        join_request(),
        JOINER_ENTROPY,
    )
    .expect("a valid request");
    let (mut from_host, mut from_joiner) = (Vec::new(), Vec::new());
    let mut moved = true;
    while moved {
        moved = false;
        while let Some(b) = host.poll_transmit() {
            moved = true;
            from_host.extend_from_slice(&b);
            for f in frames(&b) {
                let _ = joiner.handle(&f);
            }
        }
        while let Some(b) = joiner.poll_transmit() {
            moved = true;
            from_joiner.extend_from_slice(&b);
            for f in frames(&b) {
                if let Ok(Some(_)) = host.handle(&f) {
                    if reject {
                        let _ = host.reject("not now");
                    } else {
                        let _ = host.accept(join_accept());
                    }
                }
            }
        }
    }
    (from_host, from_joiner)
}

// ---------------------------------------------------------------------------
// Targets: parse_chunks, check_new_changes, attestation
// ---------------------------------------------------------------------------

/// `verify::parse_chunks` on arbitrary chunk data.
///
/// Input: the data. Checks: every change it returns re-parses from its own
/// bytes to the same hash; the changes then go through automerge's apply on a
/// copy of the home document, and the model reads still work on the result.
pub fn parse_chunks(data: &[u8]) {
    let Ok(changes) = verify::parse_chunks(data) else {
        return;
    };
    for c in &changes {
        let again = Change::from_bytes(c.raw_bytes().to_vec()).expect("a parsed change re-parses");
        assert_eq!(again.hash(), c.hash(), "a change's hash changed on re-parsing");
        let _ = (c.deps(), c.seq(), c.message(), c.timestamp(), c.len());
        let _ = c.decode();
        let _ = DeviceId::from_actor(c.actor_id());
    }
    let mut doc = home();
    if doc.apply_changes(changes).is_ok() {
        read_everything(&doc);
    }
}

/// `verify::place` and `verify::check_members` with arbitrary changes and
/// attestations (the target keeps its old name so its corpus stays put).
///
/// Input: `[flags][count]`, then `count % 8` attestation specs, then chunk
/// data (changes). Flags: bit 0 the relay document ([`relay_home`]) instead of
/// [`home`]; bits 1-2 the delivering peer (devices 2, 3, 9, 1). A spec is a byte:
/// `& 3 == 0` raw (device, hash, signature: 128 bytes follow); `1` a valid
/// signature by known device `KNOWN[(b >> 2) & 3]` over the hash of change
/// `next byte` of the data; `2` the same key over 32 hash bytes that follow;
/// `3` that change's hash signed by the change's own author when known.
///
/// The changes wait, and `place` picks what may be applied. Checks: what it
/// picks applies in order with nothing held back, each picked change is
/// reached from an attestation by its own author naming a picked change, and
/// if the membership check passes, every author may write its change (or is
/// a revoked one relayed by someone else).
pub fn check_new_changes(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let count = input.byte() % 8;
    // (spec byte, raw attestation, hash, change index)
    type Spec = (u8, Option<[u8; 128]>, Option<[u8; 32]>, u8);
    let specs: Vec<Spec> = (0..count)
        .map(|_| {
            let b = input.byte();
            match b & 3 {
                0 => (b, input.array::<128>(), None, 0),
                1 | 3 => (b, None, None, input.byte()),
                _ => (b, None, input.array::<32>(), 0),
            }
        })
        .collect();
    let Ok(changes) = verify::parse_chunks(input.rest()) else {
        return;
    };
    let mut atts = Vec::new();
    for (b, raw, hash, index) in specs {
        let key = KNOWN[usize::from((b >> 2) & 3)];
        let change = changes.get(usize::from(index) % changes.len().max(1));
        let a = match b & 3 {
            0 => raw.and_then(|r| {
                let device = DeviceId::from_bytes(&r[..32])?;
                Some(Attestation {
                    device,
                    hash: ChangeHash(r[32..64].try_into().ok()?),
                    signature: r[64..].try_into().ok()?,
                })
            }),
            1 => change.map(|c| secret(key).attest(&c.hash())),
            2 => hash.map(|h| secret(key).attest(&ChangeHash(h))),
            _ => change.and_then(|c| {
                let n = KNOWN
                    .iter()
                    .copied()
                    .find(|&n| device(n).actor() == *c.actor_id())?;
                Some(secret(n).attest(&c.hash()))
            }),
        };
        atts.extend(a);
    }
    let peer = device([PARTNER, THIRD, STRANGER, FOUNDER][usize::from((flags >> 1) & 3)]);
    let mut doc = if flags & 1 != 0 { relay_home() } else { home() };
    let waiting: HashMap<ChangeHash, Change> = changes.into_iter().map(|c| (c.hash(), c)).collect();
    let placement = verify::place(&doc, &waiting, &atts);
    let ready: Vec<Change> = placement.ready.iter().map(|h| waiting[h].clone()).collect();
    for c in &ready {
        let author = DeviceId::from_actor(c.actor_id());
        assert!(
            placement
                .attestations
                .iter()
                .any(|a| Some(a.device) == author && placement.ready.contains(&a.hash)),
            "a change placed without an attestation by its author among the placed"
        );
    }
    if doc.apply_changes(ready.clone()).is_err() {
        return;
    }
    assert!(
        doc.get_missing_deps(&[]).is_empty(),
        "a placed change was held back"
    );
    let signatures = verify::check_signatures(&atts);
    match verify::check_members(&doc, &ready, device(FOUNDER), Some(&peer)) {
        Ok(()) => {
            let members = Membership::of(&doc);
            for c in &ready {
                let author = DeviceId::from_actor(c.actor_id()).expect("a placed change is by a device");
                match members.check_change(c.actor_id(), c.seq()) {
                    Ok(()) => {}
                    Err(ChangeRefusal::Revoked(_)) => {
                        assert_ne!(author, peer, "a revoked peer's own change accepted")
                    }
                    Err(other) => panic!("a change accepted that does not count: {other}"),
                }
            }
            if signatures.is_ok() {
                // Both checks passed: every author is a device whose key signed.
                for c in &ready {
                    assert!(
                        atts.iter()
                            .any(|a| a.device.actor() == *c.actor_id() && a.verify())
                    );
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `Attestation::verify` on arbitrary bytes.
///
/// Input: device key (32), change hash (32), signature (64), then the bytes
/// of an automerge sync message. Checks: `verify` agrees with
/// `check_signatures`; a valid signature stops verifying when the hash
/// changes; the attestation survives the wire round trip; the key's text
/// forms round-trip.
pub fn attestation(data: &[u8]) {
    let mut input = Input(data);
    let (Some(key), Some(hash), Some(signature)) =
        (input.array::<32>(), input.array::<32>(), input.array::<64>())
    else {
        return;
    };
    let Some(device) = DeviceId::from_bytes(&key) else {
        return;
    };
    assert_eq!(device.to_string().parse::<DeviceId>().ok(), Some(device));
    assert_eq!(DeviceId::from_actor(&device.actor()), Some(device));
    let _ = (device.fingerprint(), device.short(), format!("{device:?}"));
    let a = Attestation {
        device,
        hash: ChangeHash(hash),
        signature,
    };
    let ok = a.verify();
    assert_eq!(verify::check_signatures(&[a]).is_ok(), ok);
    if ok {
        let mut other = a;
        other.hash.0[0] ^= 1;
        assert!(!other.verify(), "a signature verified for another hash");
    }
    let m = Message::Sync(SyncMessage {
        message: input.rest().to_vec(),
        attestations: vec![a],
    });
    let bytes = m.encode().expect("a sync message encodes");
    assert_eq!(Message::decode(&own_frame(&bytes)), Ok(m));
}

// ---------------------------------------------------------------------------
// Targets: membership, document_load, document_ops
// ---------------------------------------------------------------------------

/// Loads a document from damaged bytes.
///
/// Input: `[flags]` then the bytes. Flags: bit 0 recompute every chunk's
/// checksum first (so that mutations get past it), bit 1 skip the heads check,
/// bit 2 accept a partial load. With flags 0 this is `Automerge::load`, what
/// the store does with a snapshot.
fn load_damaged(data: &[u8]) -> Option<Automerge> {
    let mut input = Input(data);
    let flags = input.byte();
    let mut bytes = input.rest().to_vec();
    if flags & 1 != 0 {
        fix_checksums(&mut bytes);
    }
    let mut options = LoadOptions::new();
    if flags & 2 != 0 {
        options = options.verification_mode(VerificationMode::DontCheck);
    }
    if flags & 4 != 0 {
        options = options.on_partial_load(OnPartialLoad::Ignore);
    }
    Automerge::load_with_options(&bytes, options).ok()
}

/// Rewrites the checksum of every uncompressed chunk (automerge's storage
/// format: magic, checksum, type, LEB128 length, data; the checksum is the
/// first 4 bytes of SHA-256 over type, length and data).
pub fn fix_checksums(bytes: &mut [u8]) {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut at = 0;
    while bytes.len() >= at + 9 && bytes[at..at + 4] == MAGIC {
        let kind = bytes[at + 8];
        let (mut len, mut used) = (0u64, 0usize);
        for (i, b) in bytes[at + 9..].iter().enumerate().take(10) {
            len |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            used = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let start = at + 9 + used;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return;
        };
        if end > bytes.len() {
            return;
        }
        if kind != 2 {
            let mut h = Sha256::new();
            h.update([kind]);
            let mut l = end - start;
            loop {
                let b = (l & 0x7f) as u8;
                l >>= 7;
                if l == 0 {
                    h.update([b]);
                    break;
                }
                h.update([b | 0x80]);
            }
            h.update(&bytes[start..end]);
            let digest = h.finalize();
            bytes[at + 4..at + 8].copy_from_slice(&digest[..4]);
        }
        at = end;
    }
}

/// Every read the model offers, on a document nobody vouches for. Nothing is
/// asserted about the values: only that reading never panics.
pub fn read_everything(doc: &Automerge) {
    let _ = space::check_schema(doc);
    let _ = space::space_id(doc);
    let people: Vec<_> = Seat::ALL
        .iter()
        .map(|&s| {
            let _ = space::partner_name(doc, s);
            space::person(doc, s)
        })
        .collect();
    for o in [Owner::Both, Owner::One(Seat::A), Owner::One(Seat::B)] {
        let _ = space::owner_name(o, &people);
    }
    let _ = space::devices(doc);
    let changes = doc.get_changes(&[]);
    let mut actors: Vec<ActorId> = changes.iter().map(|c| c.actor_id().clone()).collect();
    actors.dedup();
    for a in actors.iter().take(8) {
        let _ = space::seat_of_actor(doc, a);
        let _ = space::author_of_actor(doc, Some(a));
        let _ = latest_seq(doc, a);
    }
    let _ = space::author_of_actor(doc, None);
    let all = issues::issues(doc, IssueFilter::default());
    for status in IssueStatus::ALL {
        let _ = issues::issues(
            doc,
            IssueFilter {
                status: Some(*status),
                kind: None,
            },
        );
    }
    for i in &all {
        let _ = format!("{i:?}");
        let _ = i.created_at.to_string();
        if let Some(s) = &i.startup {
            let _ = s.sentence();
        }
        let _ = issues::issue(doc, &i.id);
        let _ = issues::resolve_issue(doc, i.id.short());
        for s in &i.steps {
            let _ = s.created_at.to_string();
            let _ = s.done_at.map(|m| m.to_string());
            let _ = issues::resolve_step(doc, s.id.as_str());
        }
        for n in &i.notes {
            let _ = n.at.to_string();
        }
    }
    let _ = issues::resolve_issue(doc, "a");
    let _ = issues::resolve_step(doc, "0");
    let mut weeks = checkins::weeks(doc);
    weeks.push(week());
    for w in weeks.iter().take(16) {
        let _ = w.to_string();
        let _ = w.monday();
        let c = checkins::checkin(doc, *w);
        let _ = format!("{c:?}");
    }
    for a in agreements::agreements(doc) {
        let _ = format!("{a:?}");
        let _ = a.created_at.to_string();
        let _ = agreements::agreement(doc, &a.id);
        let _ = agreements::resolve_agreement(doc, a.id.as_str());
    }
    let _ = agreements::resolve_agreement(doc, "f");
    membership_invariants(doc);
}

/// What membership promises, on any document: the founder counts first, every
/// other member was added by a member, and `check_change`, `is_active` and
/// `active` agree with the member list.
fn membership_invariants(doc: &Automerge) {
    let m = Membership::of(doc);
    let members = m.members();
    for (i, a) in members.iter().enumerate() {
        assert!(
            members[i + 1..].iter().all(|b| b.id != a.id),
            "a device listed twice"
        );
        if Some(a.id) == m.founder() {
            assert_eq!(a.added_by, None);
        } else {
            let by = a.added_by.expect("a non-founder member has an adder");
            assert!(m.get(&by).is_some(), "a member added by a non-member");
        }
        assert_eq!(m.is_active(&a.id), a.revoked_after.is_none());
    }
    if !members.is_empty() {
        let f = m.founder().expect("members without a founder");
        assert!(m.get(&f).is_some(), "members without the founder");
    }
    assert_eq!(
        m.active(),
        members
            .iter()
            .filter(|x| x.is_active())
            .map(|x| x.id)
            .collect::<Vec<_>>()
    );
    assert_eq!(space::devices(doc), members.to_vec());
    for c in doc.get_changes(&[]).iter().take(256) {
        let expected = match DeviceId::from_actor(c.actor_id()) {
            None => Err(ChangeRefusal::NotADevice),
            Some(d) => match m.get(&d) {
                None => Err(ChangeRefusal::NotAMember(d.short())),
                Some(x) if x.revoked_after.is_some_and(|cut| c.seq() > cut) => {
                    Err(ChangeRefusal::Revoked(d.short()))
                }
                Some(_) => Ok(()),
            },
        };
        assert_eq!(m.check_change(c.actor_id(), c.seq()), expected);
    }
}

/// `Membership::of` on a document loaded from arbitrary bytes.
///
/// Input: as for [`document_load`]. Checks the membership rules (founder
/// first, members added by members, checks consistent with the list).
pub fn membership(data: &[u8]) {
    if let Some(doc) = load_damaged(data) {
        membership_invariants(&doc);
    }
}

/// A document loaded from damaged bytes, then every model read.
///
/// Input: `[flags]` then document bytes; flags as for the loading options
/// (bit 0 fix checksums, bit 1 skip the heads check, bit 2 accept a partial
/// load). Checks: no read panics; saving works; an older schema migrates or
/// fails cleanly.
pub fn document_load(data: &[u8]) {
    let Some(doc) = load_damaged(data) else {
        return;
    };
    read_everything(&doc);
    let _ = doc.save();
    if let Ok(space::SchemaCheck::Older(_)) = space::check_schema(&doc) {
        let mut d = doc.with_actor(device(FOUNDER).actor());
        let _ = Editor::new(&mut d, Seat::A, T0).migrate();
        read_everything(&d);
    }
}

/// Keys the model reads, so that programs hit its layout.
const KEYS: &[&str] = &[
    "schema",
    "space_id",
    "created_at",
    "partners",
    "devices",
    "issues",
    "checkins",
    "agreements",
    "a",
    "b",
    "name",
    "seat",
    "added_at",
    "revoked_after",
    "revoked_at",
    "title",
    "body",
    "kind",
    "status",
    "raised_by",
    "startup",
    "feel",
    "about",
    "need",
    "tags",
    "steps",
    "notes",
    "text",
    "owner",
    "due",
    "accepted_by",
    "done",
    "outcome",
    "done_at",
    "created_by",
    "author",
    "at",
    "version",
    "accepted",
    "appreciations",
    "went_well",
    "agenda",
    "time",
    "minutes",
    "request",
    "rating",
    "both",
    "open",
    "resolved",
    "solvable",
    "ritual",
    "date",
    "kept",
    "2025-W48",
    "2025-W01",
    "2026-W53",
    "0000-W01",
    "9999-W52",
    "-001-W01",
    "0101010101010101",
    "0404040404040404",
    "ab",
    "AB",
    "",
];

fn pick_key(input: &mut Input<'_>) -> String {
    let b = input.byte();
    let i = usize::from(b);
    if i < KEYS.len() {
        KEYS[i].to_string()
    } else if b < 0xf0 {
        // A device id: one of the known ones.
        device(KNOWN[i % KNOWN.len()]).to_string()
    } else {
        input.string()
    }
}

fn pick_value(input: &mut Input<'_>) -> ScalarValue {
    match input.byte() % 12 {
        0 => ScalarValue::Str(KEYS[usize::from(input.byte()) % KEYS.len()].into()),
        1 => ScalarValue::Str(input.string().into()),
        2 => ScalarValue::Int(input.u64() as i64),
        3 => ScalarValue::Int(i64::from(input.byte() as i8)),
        4 => ScalarValue::Uint(input.u64()),
        5 => ScalarValue::F64(f64::from_bits(input.u64())),
        6 => ScalarValue::Timestamp(input.u64() as i64),
        7 => ScalarValue::Boolean(input.byte() & 1 == 1),
        8 => ScalarValue::Null,
        9 => ScalarValue::counter(i64::from(input.byte() as i8)),
        10 => ScalarValue::Bytes(input.string().into_bytes()),
        _ => ScalarValue::Str(
            device(KNOWN[usize::from(input.byte()) % KNOWN.len()])
                .to_string()
                .into(),
        ),
    }
}

fn pick_type(input: &mut Input<'_>) -> ObjType {
    match input.byte() % 3 {
        0 => ObjType::Map,
        1 => ObjType::List,
        _ => ObjType::Text,
    }
}

/// Every object reachable from the root (a few levels deep), for programs to
/// write into.
fn objects_of(doc: &Automerge) -> Vec<ObjId> {
    let mut out = vec![ROOT];
    let mut i = 0;
    while i < out.len() && out.len() < 200 {
        let obj = out[i].clone();
        i += 1;
        let props: Vec<Prop> = match doc.object_type(&obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => doc.keys(&obj).map(Prop::Map).collect(),
            Ok(ObjType::List) => (0..doc.length(&obj)).map(Prop::Seq).collect(),
            _ => Vec::new(),
        };
        for p in props {
            if let Ok(all) = doc.get_all(&obj, p) {
                for (v, id) in all {
                    if let Value::Object(_) = v {
                        out.push(id);
                    }
                }
            }
        }
    }
    out
}

/// A hostile document built by a program of raw automerge edits by five
/// writers (the four known devices and an actor that is no device key), with
/// merges between them, then every model read.
///
/// Input: `[flags]` (bit 0: start from [`home`] rather than an empty
/// document), then operations: a byte whose top 3 bits pick the writer and
/// whose low 3 bits pick the edit (put a scalar, put an object, insert a
/// scalar, insert an object, splice text, delete, merge another writer in,
/// increment), followed by its operands. At most 64 operations.
///
/// Checks: the reads never panic, and the membership rules hold, on every
/// writer's document and on all of them merged.
pub fn document_ops(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let base = if flags & 1 != 0 { home() } else { Automerge::new() };
    let mut objs = objects_of(&base);
    let actors: Vec<ActorId> = KNOWN
        .iter()
        .map(|&n| device(n).actor())
        .chain([ActorId::from(&[0xab; 16][..])])
        .collect();
    let mut docs: Vec<Automerge> = actors.iter().map(|a| base.fork().with_actor(a.clone())).collect();
    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        let op = input.byte();
        let w = usize::from(op >> 5) % docs.len();
        let obj = objs[usize::from(input.byte()) % objs.len()].clone();
        let is_seq = matches!(docs[w].object_type(&obj), Ok(ObjType::List) | Ok(ObjType::Text));
        if op & 7 == 6 {
            let other = usize::from(input.byte()) % docs.len();
            if other != w {
                let mut o = docs[other].clone();
                let _ = docs[w].merge(&mut o);
            }
            continue;
        }
        let mut tx = docs[w].transaction();
        let index = usize::from(input.byte());
        let prop: Prop = if is_seq {
            Prop::Seq(index)
        } else {
            Prop::Map(pick_key(&mut input))
        };
        let result = match op & 7 {
            0 => tx.put(&obj, prop, pick_value(&mut input)).map(|_| None),
            1 => tx.put_object(&obj, prop, pick_type(&mut input)).map(Some),
            2 => tx.insert(&obj, index, pick_value(&mut input)).map(|_| None),
            3 => tx.insert_object(&obj, index, pick_type(&mut input)).map(Some),
            4 => {
                let del = isize::from(input.byte() as i8);
                let text = input.string();
                tx.splice_text(&obj, index, del, &text).map(|_| None)
            }
            5 => tx.delete(&obj, prop).map(|_| None),
            _ => tx
                .increment(&obj, prop, i64::from(input.byte() as i8))
                .map(|_| None),
        };
        match result {
            Ok(new) => {
                tx.commit();
                if let Some(id) = new
                    && objs.len() < 256
                {
                    objs.push(id);
                }
            }
            Err(_) => {
                tx.rollback();
            }
        }
    }
    for d in &docs {
        membership_invariants(d);
    }
    let mut all = docs[0].clone();
    for d in &docs[1..] {
        let mut d = d.clone();
        let _ = all.merge(&mut d);
    }
    read_everything(&all);
}

// ---------------------------------------------------------------------------
// Target: bundle_open
// ---------------------------------------------------------------------------

/// The space key the harness's devices hold (generation 1).
pub fn space_key() -> SpaceKey {
    SpaceKey::from_secret(1, [42; 32])
}

/// The first byte picks what the rest is. `0`: a bundle file for the home,
/// opened by the partner's device holding [`space_key`]. `1`: the plaintext
/// inside a bundle's seal (which mutations of a whole file almost never get
/// past, the seal being authenticated). A body that decodes is imported into
/// [`home`] with nothing waiting. Properties: opening and decoding never
/// panic; an opened bundle names the home's space; importing either fails
/// (the document is then discarded, as the store does) or leaves no change
/// with missing dependencies in the document.
pub fn bundle_open(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        let mut ring = Keyring::default();
        ring.insert(space_key());
        let _ = bundle::header_space(data);
        let Ok(opened) = bundle::open(data, SPACE_ID, &ring, &secret(PARTNER)) else {
            return;
        };
        opened.body
    } else {
        // The plaintext inside the seal, signed as the partner's device
        // would sign it (a body naming another sender is refused as
        // unsigned).
        let plaintext = bundle::signed_plaintext(BUNDLE_AAD, data, &secret(PARTNER));
        let Ok(body) = bundle::decode_body(BUNDLE_AAD, &plaintext, SPACE_ID) else {
            return;
        };
        body
    };
    let opened = bundle::Opened {
        body,
        key: space_key(),
    };
    assert_eq!(opened.body.space_id, SPACE_ID);
    let mut doc = home();
    let mut waiting = HashMap::new();
    let mut verified = Vec::new();
    if bundle::import(
        &mut doc,
        &opened.body,
        device(FOUNDER),
        &mut waiting,
        &mut verified,
    )
    .is_ok()
    {
        assert!(doc.get_missing_deps(&[]).is_empty());
    }
}

/// The bytes before the ciphertext that the plaintext mode of
/// [`bundle_open`] signs its bodies under (any will do: the signature covers
/// them).
const BUNDLE_AAD: &[u8] = b"DUETBNDL\x02";

/// A bundle of `doc`'s changes after `after`, sealed with [`space_key`] by
/// `sender`, with envelopes for devices 1 and 2.
fn sealed_bundle(
    doc: &Automerge,
    after: &[ChangeHash],
    sender: u8,
    attestations: Vec<Attestation>,
) -> Vec<u8> {
    use rand_chacha::rand_core::SeedableRng;
    let body = BundleBody {
        space_id: SPACE_ID.into(),
        sender: device(sender),
        created_ms: T0 as u64,
        automerge: if after.is_empty() {
            doc.save()
        } else {
            doc.save_after(after)
        },
        attestations,
    };
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    bundle::seal(
        &body,
        &secret(sender),
        &space_key(),
        &[device(FOUNDER), device(PARTNER)],
        &mut rng,
    )
    .expect("seal")
}

// ---------------------------------------------------------------------------
// Target: relay_wire
// ---------------------------------------------------------------------------

/// Reads the input as one relay frame: a type byte, then the payload; decodes
/// it as a request and as a response. Properties: decoding never panics; what
/// decodes re-encodes to a frame that decodes to the same value; a decoded
/// access list keeps its bounds.
pub fn relay_wire(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        kind,
        payload: payload.to_vec(),
    };
    if let Ok(r) = Request::decode(&frame) {
        let bytes = r.encode().expect("a decoded request re-encodes");
        let f = own_frame(&bytes);
        assert_eq!(
            Request::decode(&f).as_ref(),
            Ok(&r),
            "the round trip changed the request"
        );
        if let Request::SetAccess(a) = &r {
            assert!(a.devices.len() <= relay_proto::MAX_ACCESS_DEVICES);
            let _ = a.verify();
        }
    }
    if let Ok(r) = Response::decode(&frame) {
        let bytes = r.encode().expect("a decoded response re-encodes");
        let f = own_frame(&bytes);
        assert_eq!(
            Response::decode(&f).as_ref(),
            Ok(&r),
            "the round trip changed the response"
        );
    }
}

// ---------------------------------------------------------------------------
// Target: store_open
// ---------------------------------------------------------------------------

/// The store opening a damaged database file.
///
/// Input: the bytes of `duet.db`, written into a fresh temporary directory.
/// Then `Store::open` and every read the store offers, the document's through
/// every model read. Checks: no panic (errors are fine).
pub fn store_open(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join(duet_store::DB_FILE), data).is_err() {
        return;
    }
    let mut store = match duet_store::Store::open(dir.path()) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = store.read(read_everything);
    let _ = store.read(|doc| doc.get_heads());
    let _ = store.device_id();
    let _ = store.device_name();
    let _ = store.meta_get("space_id");
    let _ = store.meta_get("seat");
    let _ = store.data_version();
    let _ = store
        .log(Some(20))
        .map(|l| l.iter().map(|e| format!("{e:?}")).count());
    let _ = store.stats();
    if let Ok(atts) = store.attestations() {
        let _ = verify::check_signatures(&atts);
    }
    let _ = store.peers();
    let _ = store.journal();
    let _ = store.private_get("review");
    for n in KNOWN {
        if let Ok(Some(state)) = store.sync_state(&device(n)) {
            // What a driver does with a saved state.
            let _ = Session::new(device(n), SPACE_ID, device(FOUNDER), Some(&state), 0);
        }
    }
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// A frame's bytes.
fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    frame::encode(kind, payload).expect("a small frame")
}

/// Cuts a stream into the frame decoder target's `[n][n bytes]` pieces.
fn pieces(stream: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in stream.chunks(size.clamp(1, 255)) {
        out.push(p.len() as u8);
        out.extend_from_slice(p);
    }
    out
}

fn with_flags(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(rest);
    v
}

/// A well-formed change by device 2 that automerge 0.12.0 cannot apply to
/// [`home`] without panicking (see [`KNOWN_PANICS`]): device 2's first edit,
/// re-encoded claiming sequence number 2. Its actor is new to the document
/// and its seq is not 1, so `BatchApply::insert_new_actors` never registers
/// the actor and `import_ops` unwraps a failed lookup.
pub fn seq_gap_change() -> Change {
    seq_gap_change_on(&home())
}

/// [`seq_gap_change`] on top of `doc` (its dependencies are `doc`'s heads).
pub fn seq_gap_change_on(doc: &Automerge) -> Change {
    let mut partner = as_device(doc, PARTNER);
    Editor::new(&mut partner, Seat::B, T0 + 5_000)
        .rename("Alex")
        .expect("rename");
    let first = partner.get_changes(&doc.get_heads()).pop().expect("one change");
    let mut e = first.decode();
    e.seq = 2;
    e.hash = None;
    e.into()
}

/// A well-formed change by device 2 that automerge 0.12.0 cannot apply to
/// [`home`] without panicking (see [`KNOWN_PANICS`]): device 2's first edit,
/// its operations retargeted at an object that does not exist.
pub fn missing_object_change() -> Change {
    let mut partner = as_device(&home(), PARTNER);
    Editor::new(&mut partner, Seat::B, T0 + 5_000)
        .rename("Alex")
        .expect("rename");
    let first = partner
        .get_changes(&home().get_heads())
        .pop()
        .expect("one change");
    let mut e = first.decode();
    for op in &mut e.operations {
        op.obj = automerge::legacy::ObjectId::Id(automerge::legacy::OpId::new(999, &device(FOUNDER).actor()));
    }
    e.hash = None;
    e.into()
}

/// A session input that crashes the home (automerge 0.12.0, see
/// [`KNOWN_PANICS`]): the partner's device, an active member, says Hello and
/// sends one sync message carrying `change` (such as [`seq_gap_change`] or
/// [`missing_object_change`]), with no attestation at all. `Session::handle`
/// passes it to `receive_sync_message`, which panics before any signature or
/// membership check runs.
pub fn member_sends(change: &Change) -> Vec<u8> {
    member_sends_chunks(change.raw_bytes(), vec![change.hash()])
}

/// Like [`member_sends`], with raw change data (which need not decode) and
/// the heads the sync message announces.
pub fn member_sends_chunks(chunks: &[u8], heads: Vec<ChangeHash>) -> Vec<u8> {
    let hello = Message::Hello(wire::Hello {
        min_protocol: wire::MIN_PROTOCOL,
        max_protocol: wire::PROTOCOL,
        space_id: SPACE_ID.into(),
    });
    let inner = automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![chunks.to_vec()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let sync = Message::Sync(SyncMessage {
        message: inner.encode(),
        attestations: Vec::new(),
    });
    let mut out = vec![Scenario::Partner as u8];
    out.extend(hello.encode().expect("encode"));
    out.extend(sync.encode().expect("encode"));
    out
}

/// A small, valid seed for every target but `store_open` (whose seeds need a
/// real store on disk; see `fuzz/examples/seeds.rs`): `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |t: &'static str, n: &str, b: Vec<u8>| out.push((t, n.to_string(), b));

    // Real sync conversations, as the home received them.
    let mut partner_doc = as_device(&home(), PARTNER);
    partner_edits(&mut partner_doc, T0 + 10_000);
    let partner = record_session(Scenario::Partner, partner_doc.clone());
    let in_sync = record_session(Scenario::Partner, as_device(&home(), PARTNER));
    let joining = record_session(Scenario::Joining, as_device(&home(), FOUNDER));
    let mut third_doc = as_device(&with_third(), THIRD);
    let mut from_partner = partner_doc.fork();
    third_doc.merge(&mut from_partner).expect("merge");
    Editor::new(&mut third_doc, Seat::B, T0 + 20_000)
        .add_note(&item(4), "from the tablet")
        .expect("note");
    let relay = record_session(Scenario::Relay, third_doc);
    let stranger = record_session(Scenario::Stranger, as_device(&home(), STRANGER));

    add(
        "session",
        "partner",
        with_flags(Scenario::Partner as u8, &partner),
    );
    add(
        "session",
        "partner-signed",
        with_flags(Scenario::Partner as u8 | SIGN, &partner),
    );
    add(
        "session",
        "in-sync",
        with_flags(Scenario::Partner as u8, &in_sync),
    );
    add(
        "session",
        "joining",
        with_flags(Scenario::Joining as u8, &joining),
    );
    add("session", "relay", with_flags(Scenario::Relay as u8, &relay));
    add(
        "session",
        "stranger",
        with_flags(Scenario::Stranger as u8, &stranger),
    );
    let mut saved = vec![Scenario::Partner as u8 | SAVED];
    let state = automerge::sync::State::new().encode();
    saved.extend_from_slice(&(state.len() as u16).to_le_bytes());
    saved.extend_from_slice(&state);
    saved.extend_from_slice(&in_sync);
    add("session", "saved-state", saved);

    // Frames and messages from those conversations.
    let all_frames = frames(&partner);
    add(
        "frame_decoder",
        "partner-7",
        pieces(&partner[..partner.len().min(600)], 7),
    );
    add(
        "frame_decoder",
        "joining-200",
        pieces(&joining[..joining.len().min(900)], 200),
    );
    add(
        "frame_decoder",
        "empty-and-huge",
        pieces(&[0, 0, 0, 1, 3, 0xff, 0xff, 0xff, 0xff], 3),
    );
    add("frame_decoder", "too-large", pieces(&[0x02, 0, 0, 1, 1], 2));
    for (i, f) in all_frames.iter().enumerate().take(4) {
        add(
            "wire_message",
            &format!("partner-{i}"),
            with_flags(f.kind, &f.payload),
        );
    }
    let failure = Message::Failure(wire::Failure { text: "nope".into() })
        .encode()
        .expect("encode");
    let f = own_frame(&failure);
    add("wire_message", "failure", with_flags(f.kind, &f.payload));
    add("wire_message", "bye", vec![wire::BYE]);

    // Pairing, both ways.
    let (host_accepts, joiner_sent) = record_pairing(false);
    let (host_rejects, _) = record_pairing(true);
    add("pairing_host", "accept", with_flags(0, &joiner_sent));
    add("pairing_host", "reject", with_flags(REJECT, &joiner_sent));
    add("pairing_host", "wrong-code", with_flags(WRONG_CODE, &joiner_sent));
    add(
        "pairing_host",
        "abort",
        with_flags(0, &framed(pairing::ABORT, &[1])),
    );
    add("pairing_joiner", "accepted", with_flags(0, &host_accepts));
    add("pairing_joiner", "rejected", with_flags(0, &host_rejects));
    add("pairing_joiner", "mismatch", with_flags(MISMATCH, &host_accepts));

    // Changes and documents.
    let new: Vec<Change> = partner_doc.get_changes(&home().get_heads());
    let chunk_data: Vec<u8> = new.iter().flat_map(|c| c.raw_bytes().to_vec()).collect();
    add("parse_chunks", "partner-changes", chunk_data.clone());
    add("parse_chunks", "one-change", new[0].raw_bytes().to_vec());
    let mut compressed = home();
    compressed
        .transact(|tx| tx.put(ROOT, "blob", ScalarValue::Bytes(vec![7; 600])))
        .expect("edit");
    let mut big = compressed.get_changes(&home().get_heads());
    add(
        "parse_chunks",
        "compressed",
        big.iter_mut().flat_map(|c| c.bytes().into_owned()).collect(),
    );
    add("parse_chunks", "document", home().save());

    // check_new_changes: the partner's changes with its real tip signed (spec 1
    // picks change index 4, the last), with its own signature per change (spec
    // 3), and a stranger's change signed by the stranger.
    let tip = (new.len() - 1) as u8;
    let spec_key = |n: u8| (KNOWN.iter().position(|&k| k == n).expect("known") as u8) << 2;
    add(
        "check_new_changes",
        "partner-tip",
        [vec![0, 1, 1 | spec_key(PARTNER), tip], chunk_data.clone()].concat(),
    );
    add(
        "check_new_changes",
        "partner-own",
        [vec![0, 2, 3, 0, 3, tip], chunk_data.clone()].concat(),
    );
    let mut stranger_doc = as_device(&home(), STRANGER);
    Editor::new(&mut stranger_doc, Seat::B, T0)
        .rename("Mallory")
        .expect("rename");
    let stranger_changes: Vec<u8> = stranger_doc
        .get_changes(&home().get_heads())
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    add(
        "check_new_changes",
        "stranger",
        [vec![4, 1, 1 | spec_key(STRANGER), 0], stranger_changes].concat(),
    );
    let mut relayed = vec![1 | 2, 2, 3, tip, 1 | spec_key(THIRD), 0];
    relayed.extend_from_slice(&chunk_data);
    add("check_new_changes", "relayed-revoked", relayed);

    let valid = secret(PARTNER).attest(&new[0].hash());
    let att = |a: &Attestation| [a.device.as_bytes().as_slice(), &a.hash.0, &a.signature].concat();
    add("attestation", "valid", att(&valid));
    let mut forged = valid;
    forged.signature[5] ^= 0x40;
    add("attestation", "forged", att(&forged));
    add(
        "attestation",
        "with-message",
        [att(&valid), vec![0x42, 0, 0, 0]].concat(),
    );

    let docs = [
        ("home", home()),
        ("relay", relay_home()),
        ("partner", partner_doc.clone()),
    ];
    for (name, d) in &docs {
        add("membership", name, with_flags(0, &d.save()));
        add("document_load", name, with_flags(0, &d.save()));
        add(
            "document_load",
            &format!("{name}-raw-fixed"),
            with_flags(1 | 2, &d.save_nocompress()),
        );
    }
    let mut changes_only = Vec::new();
    for c in partner_doc.get_changes(&[]) {
        changes_only.extend_from_slice(c.raw_bytes());
    }
    add("document_load", "changes", with_flags(1, &changes_only));
    add("membership", "changes", with_flags(1, &changes_only));

    // document_ops: a founded space by device 1 (op 0/1 by writer 0), then a
    // device entry written by the stranger (writer 3) and a merge.
    let root = 0u8;
    let ops: Vec<u8> = vec![
        0, // flags: empty document
        0x01, root, 0, 4, 0, // writer 0: put_object ROOT["devices"] = map
        0x00, root, 0, 0, 3, 1, // writer 0: put ROOT["schema"] = Int(1)
        0x01, 1, 0, 0xb0, 0, // writer 0: put_object devices[device 1] = map
        0x00, 2, 0, 11, 0, 8, // writer 0: put entry["seat"] = "a"
        0x66, 0, 0, // writer 3 merges writer 0
        0x61, 1, 0, 0xb1, 0, // writer 3: put_object devices[device 2] = map
        0x60, 3, 0, 11, 0, 9, // writer 3: put entry["seat"] = "b"
        0x06, 0, 3, // writer 0 merges writer 3
    ];
    add("document_ops", "devices", ops);
    let mut on_home = vec![1u8];
    for i in 0..24u8 {
        // Puts of assorted values under assorted keys of the home's objects, by
        // assorted writers.
        on_home.extend_from_slice(&[
            (i % 5) << 5,
            i.wrapping_mul(7),
            0,
            i.wrapping_mul(3),
            i % 12,
            i,
            i,
            i,
            i,
            i,
            i,
            i,
            i,
        ]);
    }
    add("document_ops", "home-puts", on_home);

    // Bundles: the whole home, and the partner's edits after it, signed.
    let whole_home = home();
    let founder_att = {
        let tip = whole_home.get_heads();
        secret(FOUNDER).attest(&tip[0])
    };
    // Mode 0 is a bundle file; mode 1 the plaintext inside its seal.
    let as_file = |file: Vec<u8>| [vec![0], file].concat();
    let whole = sealed_bundle(&whole_home, &[], FOUNDER, vec![founder_att]);
    add("bundle_open", "whole-home", as_file(whole.clone()));
    let mut partner_doc = as_device(&home(), PARTNER);
    partner_edits(&mut partner_doc, T0 + 10_000);
    let partner_tip = partner_doc
        .get_changes(&whole_home.get_heads())
        .iter()
        .filter(|c| device(PARTNER).is_actor(c.actor_id()))
        .max_by_key(|c| c.seq())
        .map(|c| c.hash())
        .expect("the partner made changes");
    let signed = sealed_bundle(
        &partner_doc,
        &whole_home.get_heads(),
        PARTNER,
        vec![secret(PARTNER).attest(&partner_tip)],
    );
    add("bundle_open", "partner-edits", as_file(signed.clone()));
    let unsigned = sealed_bundle(&partner_doc, &whole_home.get_heads(), PARTNER, Vec::new());
    add("bundle_open", "unsigned", as_file(unsigned));
    let mut ring = Keyring::default();
    ring.insert(space_key());
    for (name, file) in [("whole-home-inside", whole), ("partner-edits-inside", signed)] {
        let opened = bundle::open(&file, SPACE_ID, &ring, &secret(PARTNER)).expect("a seed opens");
        let plaintext = bundle::encode_body(&opened.body).expect("a seed encodes");
        add("bundle_open", name, [vec![1], plaintext].concat());
    }

    // Relay frames: every request and answer.
    let space = relay_proto::SpaceTag::of(SPACE_ID);
    let access =
        relay_proto::SignedAccess::sign(&secret(FOUNDER), space, 3, [device(FOUNDER), device(PARTNER)])
            .expect("sign");
    let requests = [
        ("access", Request::Access { space }),
        ("set-access", Request::SetAccess(access.clone())),
        (
            "post",
            Request::Post {
                space,
                bundle: vec![7; 40],
            },
        ),
        (
            "fetch",
            Request::Fetch {
                space,
                after: 9,
                wait_ms: 1000,
            },
        ),
    ];
    for (name, r) in requests {
        let f = own_frame(&r.encode().expect("encode"));
        let mut bytes = vec![f.kind];
        bytes.extend_from_slice(&f.payload);
        add("relay_wire", name, bytes);
    }
    let answers = [
        ("access-list", Response::Access(Some(access))),
        ("done", Response::Done),
        ("posted", Response::Posted { seq: 12 }),
        (
            "bundles",
            Response::Bundles {
                items: vec![(1, vec![1, 2]), (4, vec![3])],
                more: true,
            },
        ),
        ("failure", Response::Failure("not allowed".into())),
    ];
    for (name, r) in answers {
        let f = own_frame(&r.encode().expect("encode"));
        let mut bytes = vec![f.kind];
        bytes.extend_from_slice(&f.payload);
        add("relay_wire", name, bytes);
    }
    out
}
