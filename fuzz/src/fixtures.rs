//! The harness's fixed world, shared by the targets and the seeds: device
//! keys, the home documents, pairing parameters and the space key; the cursor
//! the targets read their input with; frame helpers; every read the model
//! offers ([`read_everything`]); and changes that automerge 0.12.0 panics on.
//!
//! Everything here is deterministic (fixed keys, fixed times), so that a
//! recorded peer replays exactly.

use std::sync::OnceLock;

use automerge::{ActorId, Automerge, Change};
use duet_model::members::latest_seq;
use duet_model::{
    AgreementKind, Attestation, CheckInEntry, DeviceId, DeviceSecret, Editor, Founder, IssueFilter,
    IssueStatus, ItemId, NewIssue, Owner, Rating, Seat, Week, agreements, checkins, issues, space,
};
use duet_sync::proto::frame::{Frame, FrameDecoder};
use duet_sync::proto::keyring::SpaceKey;

use super::membership::membership_invariants;

// ---------------------------------------------------------------------------
// Fixed world: keys, the space, pairing parameters, the space key.
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

/// The space key the harness's devices hold (generation 1).
pub fn space_key() -> SpaceKey {
    SpaceKey::from_secret(1, [42; 32])
}

// ---------------------------------------------------------------------------
// Reading fuzz input.
// ---------------------------------------------------------------------------

/// A cursor over fuzz input that never fails: past the end it reads zeros.
pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).try_into().ok()
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A short string: a length byte (at most 63), then that many bytes, lossily UTF-8.
    pub(crate) fn string(&mut self) -> String {
        let n = usize::from(self.byte() & 0x3f);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Decodes every frame of a byte stream, as a driver does, stopping at the
/// first error (an error is final).
pub(crate) fn frames(stream: &[u8]) -> Vec<Frame> {
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
pub(crate) fn own_frame(bytes: &[u8]) -> Frame {
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
// Every model read.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Changes automerge 0.12.0 panics on (see `KNOWN_PANICS`).
// ---------------------------------------------------------------------------

/// A well-formed change by device 2 that automerge 0.12.0 cannot apply to
/// [`home`] without panicking (see [`KNOWN_PANICS`]): device 2's first edit,
/// re-encoded claiming sequence number 2. Its actor is new to the document
/// and its seq is not 1, so `BatchApply::insert_new_actors` never registers
/// the actor and `import_ops` unwraps a failed lookup.
///
/// [`KNOWN_PANICS`]: super::KNOWN_PANICS
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
///
/// [`KNOWN_PANICS`]: super::KNOWN_PANICS
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
