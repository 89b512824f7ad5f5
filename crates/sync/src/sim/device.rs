//! A simulated device: what its store holds (the document as of the last
//! accepted write, the newest attestation per device, the sync state saved per
//! peer) and the random edits its partner makes on it.
//!
//! The store's rules are kept exactly: a local edit is one write that signs the
//! device's newest change; a received frame is applied inside a write that is
//! kept only if the session accepts it, together with the attestations the
//! session verified; a refused write drops the in-memory document, which is
//! reloaded from what was stored.

use std::collections::BTreeMap;

use automerge::{Automerge, ChangeHash, ReadDoc};
use duet_model::{
    AgreementKind, Attestation, CheckInEntry, DeviceId, DeviceSecret, Editor, Founder, IssueEdit,
    IssueStatus, ItemId, Membership, NewIssue, Outcome, Owner, Rating, Seat, TimeKind, Week, space,
};

use super::rng::Rng;

/// The space every simulated device keeps.
pub(crate) const SPACE_ID: &str = "5eed";
/// Virtual time zero, as wall-clock milliseconds written into the record.
pub(crate) const T0: i64 = 1_764_000_000_000;
/// The weeks check-ins are written for: few, so devices often start the same one.
pub(crate) const WEEKS: [&str; 2] = ["2026-W47", "2026-W48"];
/// The tags issues get: few, so devices often add the same one.
const TAGS: [&str; 3] = ["chores", "money", "family"];
/// The seat of each device: the founder (a), the partner's phone (b), the
/// founder's second device (a), the partner's second device (b).
const SEATS: [Seat; 4] = [Seat::A, Seat::B, Seat::A, Seat::B];
/// Device names, for the record.
const NAMES: [&str; 4] = ["laptop", "phone", "tablet", "desktop"];

/// One edit a partner makes on one device.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    AddIssue,
    Retitle(ItemId),
    Rewrite(ItemId, String),
    SetStatus(ItemId, IssueStatus),
    Tag(ItemId, &'static str),
    AddNote(ItemId),
    AddStep(ItemId, Owner),
    AcceptStep(ItemId, ItemId),
    CompleteStep(ItemId, ItemId, Outcome),
    CheckIn(usize, Entry),
    AddAgreement(AgreementKind),
    AcceptAgreement(ItemId),
    ReviseAgreement(ItemId),
}

/// A check-in entry, its text chosen when it is written.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Appreciation,
    WentWell,
    Rating(u8),
    Time(TimeKind, u32),
    Request,
    Agenda(ItemId),
}

impl Edit {
    /// A short name of the kind of edit, for counts.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Edit::AddIssue => "add issue",
            Edit::Retitle(_) => "edit title",
            Edit::Rewrite(..) => "edit body",
            Edit::SetStatus(..) => "set status",
            Edit::Tag(..) => "tag issue",
            Edit::AddNote(_) => "add note",
            Edit::AddStep(..) => "add step",
            Edit::AcceptStep(..) => "accept step",
            Edit::CompleteStep(..) => "complete step",
            Edit::CheckIn(..) => "check-in",
            Edit::AddAgreement(_) => "add agreement",
            Edit::AcceptAgreement(_) => "accept agreement",
            Edit::ReviseAgreement(_) => "edit agreement",
        }
    }
}

/// Every edit any device made, checked on every device after the final heal.
/// Each entry carries the number of the edit that made it; `authors` says
/// which device made that edit and in which of its changes, so that the
/// check can tell an edit that must survive from one a revoked device made
/// after its cut-off (which may travel on or not).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    counter: u64,
    /// Edit number -> (device index, sequence number of its change).
    pub(crate) authors: BTreeMap<u64, (usize, u64)>,
    pub(crate) issues: Vec<(u64, ItemId)>,
    pub(crate) notes: Vec<(u64, ItemId, String, Seat)>,
    pub(crate) steps: Vec<(u64, ItemId, ItemId)>,
    pub(crate) accepted_steps: Vec<(u64, ItemId, ItemId, Seat)>,
    pub(crate) done_steps: Vec<(u64, ItemId, ItemId)>,
    pub(crate) tags: Vec<(u64, ItemId, &'static str)>,
    pub(crate) lists: Vec<(u64, usize, Seat, &'static str, String)>,
    pub(crate) agenda: Vec<(u64, usize, Seat, ItemId)>,
    pub(crate) minutes: Vec<(u64, usize, Seat, u32)>,
    pub(crate) agreements: Vec<(u64, ItemId)>,
    pub(crate) weeks: Vec<(u64, usize)>,
}

impl Ledger {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// The issues recorded, whoever made them.
    pub(crate) fn issue_ids(&self) -> Vec<ItemId> {
        self.issues.iter().map(|(_, i)| i.clone()).collect()
    }
}

/// One device of the couple and its store.
pub(crate) struct Device {
    /// Its index in the simulation.
    pub(crate) index: usize,
    key: DeviceSecret,
    /// Its id (public key).
    pub(crate) id: DeviceId,
    /// Whose device it is.
    pub(crate) seat: Seat,
    /// The document as of the last accepted write (plus, like the store's
    /// in-memory copy, changes automerge holds back until their dependencies
    /// arrive; a reload keeps those, as the store's snapshots do).
    pub(crate) doc: Automerge,
    /// The newest attestation per device, with the sequence number it signs.
    atts: BTreeMap<[u8; 32], (u64, Attestation)>,
    /// The sync state saved for each peer (by index) at the end of a session.
    pub(crate) sync_states: BTreeMap<usize, Vec<u8>>,
    /// False while the device is down (crashed, not yet restarted).
    pub(crate) up: bool,
    /// Its side of the current partition (all 0 when there is none).
    pub(crate) group: u8,
    /// Per author, the highest sequence number of a change this store holds
    /// that no stored attestation vouched for when it was written.
    unvouched: BTreeMap<[u8; 32], u64>,
    /// Part of the couple: added to the space (at setup, or joined during the
    /// run). A device not yet joined does nothing.
    pub(crate) joined: bool,
    /// The device that added it (none for the founder).
    pub(crate) added_by: Option<usize>,
}

/// The couple's `n` devices (2 to 4). The founder makes the space, the
/// devices not in `late` are added (each by a device of its own seat, or the
/// partner's first device by the founder, as pairing does) with a little
/// shared history (two issues with a step each, an agreement, a check-in), and
/// start from a copy of that document, as pairing leaves it. A device in
/// `late` joins during the run ([`Device::add`], then a first sync from an
/// empty document); until then it is not part of the couple.
pub(crate) fn couple(
    n: usize,
    late: &[bool],
    rng: &mut Rng,
    ledger: &mut Ledger,
) -> Result<Vec<Device>, String> {
    let n = n.clamp(1, SEATS.len());
    let is_late = |i: usize| i > 0 && late.get(i).copied().unwrap_or(false);
    let mut devices: Vec<Device> = (0..n)
        .map(|i| Device::new(i, DeviceSecret::from_bytes(&[i as u8 + 1; 32])))
        .collect();
    let founder = Founder {
        space_id: SPACE_ID.into(),
        name: "Sam".into(),
        device: devices[0].id,
        device_name: NAMES[0].into(),
    };
    let mut doc = Automerge::new().with_actor(devices[0].id.actor());
    space::create(&mut doc, &founder, T0).map_err(|e| format!("creating the space: {e}"))?;
    devices[0].doc = doc;
    devices[0].joined = true;
    devices[0].sign_all();
    for i in 1..n {
        if is_late(i) {
            continue;
        }
        // A device of its own seat adds it; the partner's first device comes
        // in through the founder.
        let adder = (0..i)
            .find(|&a| devices[a].joined && devices[a].seat == SEATS[i])
            .unwrap_or(0);
        let (id, seat, name) = (devices[i].id, devices[i].seat, devices[i].name());
        // The adder writes on the shared document as itself.
        let mut shared = std::mem::replace(&mut devices[0].doc, Automerge::new());
        shared.set_actor(devices[adder].id.actor());
        std::mem::swap(&mut devices[adder].doc, &mut shared);
        let added = devices[adder].add(id, seat, name, 0);
        std::mem::swap(&mut devices[adder].doc, &mut shared);
        shared.set_actor(devices[0].id.actor());
        devices[0].doc = shared;
        added.map_err(|e| format!("adding device {i}: {e}"))?;
        let att = devices[adder].atts.get(devices[adder].id.as_bytes()).copied();
        if let Some((seq, a)) = att {
            devices[0].put_attestation(a, seq);
        }
        devices[i].joined = true;
        devices[i].added_by = Some(adder);
    }
    let first = &mut devices[0];
    Editor::new(&mut first.doc, Seat::A, T0)
        .set_partner_name(Seat::B, "Alex")
        .map_err(|e| format!("naming the partner: {e}"))?;
    for _ in 0..2 {
        first.apply(&Edit::AddIssue, ledger, rng, 0)?;
    }
    for issue in ledger.issue_ids() {
        first.apply(&Edit::AddStep(issue, Owner::Both), ledger, rng, 0)?;
    }
    first.apply(&Edit::AddAgreement(AgreementKind::Boundary), ledger, rng, 0)?;
    first.apply(&Edit::CheckIn(0, Entry::Appreciation), ledger, rng, 0)?;
    first.sign_all();
    let (doc, atts) = (first.doc.clone(), first.atts.clone());
    for d in devices.iter_mut().skip(1).filter(|d| d.joined) {
        d.doc = doc.clone().with_actor(d.id.actor());
        d.atts = atts.clone();
    }
    Ok(devices)
}

impl Device {
    /// Device `index` with key `key`, not yet part of the couple: an empty
    /// store.
    fn new(index: usize, key: DeviceSecret) -> Device {
        let id = key.device_id();
        Device {
            index,
            key,
            id,
            seat: SEATS[index % SEATS.len()],
            doc: Automerge::new().with_actor(id.actor()),
            atts: BTreeMap::new(),
            sync_states: BTreeMap::new(),
            up: true,
            group: 0,
            unvouched: BTreeMap::new(),
            joined: false,
            added_by: None,
        }
    }

    /// The device's name in the record.
    pub(crate) fn name(&self) -> &'static str {
        NAMES[self.index % NAMES.len()]
    }

    /// True once its store holds the couple's record (after its first sync,
    /// for a device that joined during the run).
    pub(crate) fn has_record(&self) -> bool {
        !self.doc.get_heads().is_empty()
    }

    /// The membership as this device's document shows it, grown from the
    /// founder every device pinned.
    pub(crate) fn membership(&self, founder: DeviceId) -> Membership {
        Membership::pinned(&self.doc, founder)
    }

    /// Adds device `id` to `seat`, as one signed write (pairing on the host,
    /// or `duet device add` by a device of that seat).
    pub(crate) fn add(&mut self, id: DeviceId, seat: Seat, name: &str, now_ms: u64) -> Result<(), String> {
        let before = self.doc.get_heads();
        Editor::new(&mut self.doc, self.seat, at(now_ms))
            .add_device(id, seat, name)
            .map_err(|e| format!("device {} could not add device {}: {e}", self.index, id.short()))?;
        self.sign_local(&before);
        Ok(())
    }

    /// Revokes device `id`, as one signed write (`duet device revoke`).
    pub(crate) fn revoke(&mut self, id: DeviceId, now_ms: u64) -> Result<(), String> {
        let before = self.doc.get_heads();
        Editor::new(&mut self.doc, self.seat, at(now_ms))
            .revoke_device(id)
            .map_err(|e| {
                format!(
                    "device {} could not revoke device {}: {e}",
                    self.index,
                    id.short()
                )
            })?;
        self.sign_local(&before);
        Ok(())
    }

    /// Signs this device's newest change, whatever it is.
    fn sign_all(&mut self) {
        self.sign_local(&[]);
    }

    /// Signs this device's newest change among those made since `before`, as
    /// the store does at the end of every write.
    fn sign_local(&mut self, before: &[ChangeHash]) -> Option<u64> {
        // Change metadata comes from automerge's change graph; whole changes
        // would be rebuilt from the op set, which costs far more.
        let me = self.id.actor();
        let tip = self
            .doc
            .get_changes_meta(before)
            .into_iter()
            .filter(|c| *c.actor == me)
            .max_by_key(|c| c.seq)
            .map(|c| (c.hash, c.seq));
        let (hash, seq) = tip?;
        let a = self.key.attest(&hash);
        self.put_attestation(a, seq);
        Some(seq)
    }

    fn put_attestation(&mut self, a: Attestation, seq: u64) {
        let key = *a.device.as_bytes();
        if self.atts.get(&key).is_none_or(|(s, _)| *s < seq) {
            self.atts.insert(key, (seq, a));
        }
    }

    /// Keeps attestations a session verified, for changes now in the document
    /// (the store keeps the newest per device).
    pub(crate) fn keep(&mut self, atts: &[Attestation]) {
        for a in atts {
            if let Some(seq) = self.doc.get_change_meta_by_hash(&a.hash).map(|c| c.seq) {
                self.put_attestation(*a, seq);
            }
        }
    }

    /// This device's signature over its change `hash`.
    pub(crate) fn sign(&self, hash: &ChangeHash) -> Attestation {
        self.key.attest(hash)
    }

    /// The newest attestation of every device, as the store lists them.
    pub(crate) fn attestations(&self) -> Vec<Attestation> {
        self.atts.values().map(|(_, a)| *a).collect()
    }

    /// Reloads the document from the store: what was written survives, and
    /// so do held-back changes, since the store's snapshots are automerge's
    /// `save()`, which keeps them.
    pub(crate) fn reload(&mut self) -> Result<(), String> {
        let bytes = self.doc.save();
        let doc = Automerge::load(&bytes)
            .map_err(|e| format!("device {} cannot reload its document: {e}", self.index))?;
        self.doc = doc.with_actor(self.id.actor());
        Ok(())
    }

    /// Notes the changes written since `before` that no stored attestation
    /// vouches for (an attestation of a device's change vouches for all of its
    /// changes with a lower sequence number). True if there is such a change.
    pub(crate) fn note_unvouched(&mut self, before: &[ChangeHash]) -> bool {
        let mut found = false;
        for c in self.doc.get_changes_meta(before) {
            let Ok(author) = <[u8; 32]>::try_from(c.actor.to_bytes()) else {
                continue;
            };
            let stored = self.atts.get(&author).map_or(0, |(s, _)| *s);
            if c.seq > stored {
                found = true;
                let e = self.unvouched.entry(author).or_default();
                *e = (*e).max(c.seq);
            }
        }
        found
    }

    /// True if this store holds any change no stored attestation vouches for.
    pub(crate) fn has_any_unvouched(&self) -> bool {
        self.unvouched
            .iter()
            .any(|(author, seq)| *seq > self.atts.get(author).map_or(0, |(s, _)| *s))
    }

    /// True if this store holds a change by the device `short` (its short id)
    /// that no stored attestation vouches for.
    pub(crate) fn has_unvouched(&self, short: &str) -> bool {
        self.unvouched.iter().any(|(author, seq)| {
            let covered = self.atts.get(author).map_or(0, |(s, _)| *s);
            *seq > covered && DeviceId::from_bytes(author).is_some_and(|d| d.short() == short)
        })
    }

    /// True if the sync state saved for `peer` names, as held by both, a
    /// change this store does not hold.
    pub(crate) fn state_names_unknown(&self, peer: usize) -> bool {
        self.sync_states
            .get(&peer)
            .and_then(|b| automerge::sync::State::decode(b).ok())
            .is_some_and(|s| {
                s.shared_heads
                    .iter()
                    .any(|h| self.doc.get_change_meta_by_hash(h).is_none())
            })
    }

    /// The heads, sorted.
    pub(crate) fn heads(&self) -> Vec<ChangeHash> {
        let mut h = self.doc.get_heads();
        h.sort();
        h
    }

    /// A random edit this device can make on what it holds, if any.
    pub(crate) fn random_edit(&self, rng: &mut Rng) -> Option<Edit> {
        let view = View::of(&self.doc);
        let issues: Vec<&ItemId> = view.issues.iter().map(|(i, _)| i).collect();
        let pick_issue = |rng: &mut Rng| rng.pick(&issues).map(|i| (*i).clone());
        let steps: Vec<(&ItemId, &ItemId, Owner)> = view
            .issues
            .iter()
            .flat_map(|(i, steps)| steps.iter().map(move |(s, o)| (i, s, *o)))
            .collect();
        // Weights: issues and check-ins most, so the same items see concurrent
        // edits often.
        let roll = rng.below(30);
        let edit = match roll {
            0..=2 => Edit::AddIssue,
            3 => Edit::Retitle(pick_issue(rng)?),
            4..=5 => Edit::Rewrite(pick_issue(rng)?, body(rng)),
            6..=8 => Edit::SetStatus(pick_issue(rng)?, *rng.pick(IssueStatus::ALL)?),
            9 => Edit::Tag(pick_issue(rng)?, rng.pick(&TAGS)?),
            10..=12 => Edit::AddNote(pick_issue(rng)?),
            13..=14 => Edit::AddStep(pick_issue(rng)?, owner(rng)),
            15 => {
                let mine: Vec<&(&ItemId, &ItemId, Owner)> =
                    steps.iter().filter(|(_, _, o)| o.includes(self.seat)).collect();
                let (i, s, _) = rng.pick(&mine)?;
                Edit::AcceptStep((*i).clone(), (*s).clone())
            }
            16 => {
                // Only a step's owner records its outcome.
                let mine: Vec<&(&ItemId, &ItemId, Owner)> =
                    steps.iter().filter(|(_, _, o)| o.includes(self.seat)).collect();
                let (i, s, _) = rng.pick(&mine)?;
                Edit::CompleteStep((*i).clone(), (*s).clone(), *rng.pick(Outcome::ALL)?)
            }
            17..=25 => {
                let week = rng.index(WEEKS.len());
                let entry = match rng.below(6) {
                    0 => Entry::Appreciation,
                    1 => Entry::WentWell,
                    2 => Entry::Rating(rng.range(1, 10) as u8),
                    3 => Entry::Time(*rng.pick(TimeKind::ALL)?, rng.range(1, 180) as u32),
                    4 => Entry::Request,
                    _ => Entry::Agenda(pick_issue(rng)?),
                };
                Edit::CheckIn(week, entry)
            }
            26 => Edit::AddAgreement(*rng.pick(AgreementKind::ALL)?),
            27..=28 => Edit::AcceptAgreement(rng.pick(&view.agreements)?.clone()),
            _ => Edit::ReviseAgreement(rng.pick(&view.agreements)?.clone()),
        };
        Some(edit)
    }

    /// Makes `edit` as one write at virtual time `now_ms`, recording what must
    /// survive in `ledger`.
    pub(crate) fn apply(
        &mut self,
        edit: &Edit,
        ledger: &mut Ledger,
        rng: &mut Rng,
        now_ms: u64,
    ) -> Result<(), String> {
        let now = at(now_ms);
        let seat = self.seat;
        let before = self.doc.get_heads();
        let n = ledger.next();
        let who = self.index;
        let mut e = Editor::new(&mut self.doc, seat, now);
        let result = match edit {
            Edit::AddIssue => {
                let id = ItemId::from_random(rng.bytes8());
                let new = NewIssue {
                    title: format!("issue {n}"),
                    body: "what happened".into(),
                    ..Default::default()
                };
                e.add_issue(&id, &new).map(|()| ledger.issues.push((n, id)))
            }
            Edit::Retitle(id) => {
                let edit = IssueEdit {
                    title: Some(format!("title {n} by device {who}")),
                    ..Default::default()
                };
                e.edit_issue(id, &edit)
            }
            Edit::Rewrite(id, body) => {
                let edit = IssueEdit {
                    body: Some(body.clone()),
                    ..Default::default()
                };
                e.edit_issue(id, &edit)
            }
            Edit::SetStatus(id, status) => e.set_status(id, *status),
            Edit::Tag(id, tag) => e
                .tag_issue(id, tag)
                .map(|()| ledger.tags.push((n, id.clone(), tag))),
            Edit::AddNote(id) => {
                let text = format!("note {n} by device {who}");
                e.add_note(id, &text)
                    .map(|()| ledger.notes.push((n, id.clone(), text, seat)))
            }
            Edit::AddStep(issue, owner) => {
                let step = ItemId::from_random(rng.bytes8());
                let text = format!("step {n} by device {who}");
                e.add_step(issue, &step, &text, *owner, Some("2026-12-01"))
                    .map(|()| {
                        if owner.includes(seat) {
                            ledger.accepted_steps.push((n, issue.clone(), step.clone(), seat));
                        }
                        ledger.steps.push((n, issue.clone(), step));
                    })
            }
            Edit::AcceptStep(issue, step) => {
                let key = (issue.clone(), step.clone());
                e.accept_step(&key)
                    .map(|()| ledger.accepted_steps.push((n, key.0, key.1, seat)))
            }
            Edit::CompleteStep(issue, step, outcome) => {
                let key = (issue.clone(), step.clone());
                e.complete_step(&key, *outcome)
                    .map(|()| ledger.done_steps.push((n, key.0, key.1)))
            }
            Edit::CheckIn(w, entry) => checkin(&mut e, ledger, *w, entry, seat, n, who),
            Edit::AddAgreement(kind) => {
                let id = ItemId::from_random(rng.bytes8());
                e.add_agreement(&id, &format!("agreement {n}"), *kind)
                    .map(|()| ledger.agreements.push((n, id)))
            }
            Edit::AcceptAgreement(id) => e.accept_agreement(id).map(|_| ()),
            Edit::ReviseAgreement(id) => e.edit_agreement(id, &format!("agreement text {n}")).map(|_| ()),
        };
        result.map_err(|e| format!("device {who} could not {}: {e}", edit.label()))?;
        // An edit that changes nothing (a value put again) makes no change:
        // it stands with the device's newest one.
        let seq = self
            .sign_local(&before)
            .unwrap_or_else(|| duet_model::members::latest_seq(&self.doc, &self.id.actor()));
        ledger.authors.insert(n, (who, seq));
        Ok(())
    }
}

/// Virtual time `now_ms` as the wall-clock milliseconds written into the
/// record.
fn at(now_ms: u64) -> i64 {
    T0 + i64::try_from(now_ms).unwrap_or(i64::MAX - T0)
}

fn checkin(
    e: &mut Editor<'_>,
    ledger: &mut Ledger,
    w: usize,
    entry: &Entry,
    seat: Seat,
    n: u64,
    who: usize,
) -> Result<(), duet_model::ModelError> {
    let week: Week = WEEKS[w % WEEKS.len()].parse()?;
    let (model_entry, list) = match entry {
        Entry::Appreciation => (
            CheckInEntry::Appreciation(format!("appreciation {n} by device {who}")),
            Some("appreciations"),
        ),
        Entry::WentWell => (
            CheckInEntry::WentWell(format!("went well {n} by device {who}")),
            Some("went_well"),
        ),
        Entry::Rating(r) => (CheckInEntry::Rating(Rating::new(i64::from(*r))?), None),
        Entry::Time(kind, minutes) => (CheckInEntry::Time(*kind, *minutes), None),
        Entry::Request => (
            CheckInEntry::Request(format!("request {n} by device {who}")),
            None,
        ),
        Entry::Agenda(id) => (CheckInEntry::Agenda(id.clone()), None),
    };
    e.checkin(week, &model_entry)?;
    ledger.weeks.push((n, w));
    match (&model_entry, list) {
        (CheckInEntry::Appreciation(t) | CheckInEntry::WentWell(t), Some(list)) => {
            ledger.lists.push((n, w, seat, list, t.clone()));
        }
        (CheckInEntry::Time(_, m), _) => ledger.minutes.push((n, w, seat, *m)),
        (CheckInEntry::Agenda(id), _) => ledger.agenda.push((n, w, seat, id.clone())),
        _ => {}
    }
    Ok(())
}

fn owner(rng: &mut Rng) -> Owner {
    match rng.below(3) {
        0 => Owner::Both,
        1 => Owner::One(Seat::A),
        _ => Owner::One(Seat::B),
    }
}

/// A short body, so concurrent edits of the same body overlap.
fn body(rng: &mut Rng) -> String {
    let len = rng.range(0, 12) as usize;
    (0..len)
        .map(|_| match rng.below(4) {
            0 => 'a',
            1 => 'b',
            2 => 'c',
            _ => ' ',
        })
        .collect()
}

/// What a device holds that edits can target, read straight from the document
/// (the model's typed reads also work out conflicts and authors, which the
/// edit generator does not need).
struct View {
    /// Issues with their steps and each step's owner.
    issues: Vec<(ItemId, Vec<(ItemId, Owner)>)>,
    agreements: Vec<ItemId>,
}

impl View {
    fn of(doc: &Automerge) -> View {
        let issues = child_map(doc, &automerge::ROOT, "issues")
            .map(|m| {
                item_keys(doc, &m)
                    .into_iter()
                    .map(|(id, key)| {
                        let steps = child_map(doc, &m, &key)
                            .and_then(|issue| child_map(doc, &issue, "steps"))
                            .map(|steps| {
                                item_keys(doc, &steps)
                                    .into_iter()
                                    .map(|(sid, skey)| {
                                        let owner = child_map(doc, &steps, &skey)
                                            .and_then(|st| match doc.get(&st, "owner") {
                                                Ok(Some((automerge::Value::Scalar(v), _))) => {
                                                    v.as_str().and_then(Owner::parse_stored)
                                                }
                                                _ => None,
                                            })
                                            .unwrap_or(Owner::Both);
                                        (sid, owner)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        (id, steps)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let agreements = child_map(doc, &automerge::ROOT, "agreements")
            .map(|m| item_keys(doc, &m).into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        View { issues, agreements }
    }

    fn issue_ids(&self) -> Vec<ItemId> {
        self.issues.iter().map(|(i, _)| i.clone()).collect()
    }

    /// The steps both partners own: any device may record their outcome,
    /// so several do at once.
    fn step_ids(&self) -> Vec<(ItemId, ItemId)> {
        self.issues
            .iter()
            .flat_map(|(i, steps)| {
                steps
                    .iter()
                    .filter(|(_, o)| *o == Owner::Both)
                    .map(move |(s, _)| (i.clone(), s.clone()))
            })
            .collect()
    }
}

/// The map at `obj[key]`, if there is one.
fn child_map(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> Option<automerge::ObjId> {
    match doc.get(obj, key) {
        Ok(Some((automerge::Value::Object(automerge::ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

/// The keys of a map of items, with the item ids they spell (16 hex digits).
fn item_keys(doc: &Automerge, map: &automerge::ObjId) -> Vec<(ItemId, String)> {
    doc.keys(map)
        .filter_map(|k| {
            let n = u64::from_str_radix(&k, 16).ok().filter(|_| k.len() == 16)?;
            Some((ItemId::from_random(n.to_be_bytes()), k))
        })
        .collect()
}

/// Edits several devices make of the same thing at the same moment: one kind,
/// one target every one of them holds, different values.
pub(crate) fn concurrent_edits(devices: &[&Device], rng: &mut Rng) -> Vec<Edit> {
    let views: Vec<View> = devices.iter().map(|d| View::of(&d.doc)).collect();
    if views.is_empty() {
        return Vec::new();
    }
    fn common<T: PartialEq + Clone>(views: &[View], of: impl Fn(&View) -> Vec<T>) -> Vec<T> {
        let lists: Vec<Vec<T>> = views.iter().map(&of).collect();
        let Some((head, rest)) = lists.split_first() else {
            return Vec::new();
        };
        head.iter()
            .filter(|x| rest.iter().all(|l| l.contains(x)))
            .cloned()
            .collect()
    }
    let issues_all = common(&views, View::issue_ids);
    let n = devices.len();
    let edits: Option<Vec<Edit>> = match rng.below(8) {
        0 => {
            let id = rng.pick(&issues_all).cloned();
            let mut statuses = IssueStatus::ALL.to_vec();
            rng.shuffle(&mut statuses);
            id.map(|id| {
                (0..n)
                    .map(|k| Edit::SetStatus(id.clone(), statuses[k % statuses.len()]))
                    .collect()
            })
        }
        1 => rng
            .pick(&issues_all)
            .cloned()
            .map(|id| (0..n).map(|_| Edit::Retitle(id.clone())).collect()),
        2 => rng
            .pick(&issues_all)
            .cloned()
            .map(|id| (0..n).map(|_| Edit::Rewrite(id.clone(), body(rng))).collect()),
        3 => rng
            .pick(&issues_all)
            .cloned()
            .map(|id| (0..n).map(|_| Edit::AddNote(id.clone())).collect()),
        4 => {
            let steps = common(&views, View::step_ids);
            rng.pick(&steps).cloned().map(|(i, s)| {
                let mut outcomes = Outcome::ALL.to_vec();
                rng.shuffle(&mut outcomes);
                (0..n)
                    .map(|k| Edit::CompleteStep(i.clone(), s.clone(), outcomes[k % outcomes.len()]))
                    .collect()
            })
        }
        5 => {
            let ids = common(&views, |v| v.agreements.clone());
            rng.pick(&ids).cloned().map(|id| {
                (0..n)
                    .map(|k| {
                        if k % 2 == 0 {
                            Edit::ReviseAgreement(id.clone())
                        } else {
                            Edit::AcceptAgreement(id.clone())
                        }
                    })
                    .collect()
            })
        }
        // Check-ins of the same week, the most likely thing to be started on
        // several devices at once.
        _ => {
            let week = rng.index(WEEKS.len());
            Some(
                (0..n)
                    .map(|_| {
                        let entry = match rng.below(4) {
                            0 => Entry::Appreciation,
                            1 => Entry::Rating(rng.range(1, 10) as u8),
                            2 => Entry::Time(TimeKind::Date, rng.range(10, 120) as u32),
                            _ => Entry::WentWell,
                        };
                        Edit::CheckIn(week, entry)
                    })
                    .collect(),
            )
        }
    };
    edits.unwrap_or_default()
}
