//! The `session` target: a sync [`Session`] against a small real space, fed a
//! peer's byte stream. Input: `[flags]` (the [`Scenario`], [`SIGN`], [`SAVED`]),
//! an optional saved sync state, then the peer's frames (see [`session()`]).
//!
//! Also here: [`HomeSide`], the home end as the engine's driver runs it, and
//! the recorders the seeds are made with ([`record_session`],
//! [`member_sends`]).

use std::collections::HashMap;

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use duet_model::{Attestation, DeviceId, Membership, space};
use duet_sync::proto::frame::Frame;
use duet_sync::proto::session::{Event, IDLE_TIMEOUT_MS, Session};
use duet_sync::proto::verify;
use duet_sync::proto::wire::{self, Message, SyncMessage};

use super::fixtures::{
    FOUNDER, Input, KNOWN, PARTNER, SPACE_ID, STRANGER, THIRD, attest_all, device, frames, home, own_frame,
    read_everything, relay_home, secret,
};

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

/// A session input that crashes the home (automerge 0.12.0, see
/// [`KNOWN_PANICS`]): the partner's device, an active member, says Hello and
/// sends one sync message carrying `change` (such as [`seq_gap_change`] or
/// [`missing_object_change`]), with no attestation at all. `Session::handle`
/// passes it to `receive_sync_message`, which panics before any signature or
/// membership check runs.
///
/// [`KNOWN_PANICS`]: super::KNOWN_PANICS
/// [`seq_gap_change`]: super::seq_gap_change
/// [`missing_object_change`]: super::missing_object_change
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
