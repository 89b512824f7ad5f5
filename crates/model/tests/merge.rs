//! Property test: three replicas of one space (two devices of partner a, one of
//! partner b) make random edits, partly sync with each other in between, and are
//! finally merged together in a random order. Every replica must then read the
//! same record, and no edit any of them made may be lost.
//!
//! Alongside the documents, the test keeps a model of what each replica knows:
//! the items it has seen and, for every single-valued field, the writes it has
//! seen and the writes it has seen overwritten (a multi-value register, which is
//! what automerge implements). A field's live values are the writes seen and not
//! overwritten; after the final merge they are exactly the values the record must
//! show (the shown value plus the values of its conflict).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use duet_model::automerge::{Automerge, ChangeHash};
use duet_model::checkins::{self, PartnerCheckIn};
use duet_model::{
    Agreement, AgreementKind, CheckInEntry, Conflict, DeviceSecret, Editor, Founder, IssueEdit, IssueFilter,
    IssueStatus, ItemId, NewIssue, Outcome, Owner, Rating, Seat, TimeKind, Week, agreements, issues, space,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// The seat each replica writes as: replica 0 founds the space in seat a,
/// replica 1 is partner b's device, replica 2 is partner a's second device.
const SEATS: [Seat; 3] = [Seat::A, Seat::B, Seat::A];
/// The weeks check-ins are written for (few, so replicas often start the same one).
const WEEKS: [&str; 2] = ["2026-W47", "2026-W48"];
/// The tags issues are tagged with (few, so replicas often add the same one).
const TAGS: [&str; 3] = ["chores", "money", "family"];
const T0: i64 = 1_764_000_000_000;

#[derive(Debug, Clone)]
enum Entry {
    Appreciation,
    WentWell,
    Rating(u8),
    Time(TimeKind, u32),
    Request,
    Agenda(Index),
}

#[derive(Debug, Clone)]
enum Action {
    AddIssue,
    EditTitle(Index),
    EditBody(Index, String),
    SetStatus(Index, IssueStatus),
    Tag(Index, usize),
    AddNote(Index),
    AddStep(Index, Owner),
    CompleteStep(Index, Outcome),
    AcceptStep(Index),
    CheckIn(usize, Entry),
    AddAgreement(AgreementKind),
    AcceptAgreement(Index),
    EditAgreement(Index),
    /// Merge replica `(r + 1 + k) % 3` into this replica `r`.
    Sync(usize),
}

#[derive(Debug, Clone)]
struct Op {
    replica: usize,
    action: Action,
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::Both),
        Just(Owner::One(Seat::A)),
        Just(Owner::One(Seat::B))
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        Just(Entry::Appreciation),
        Just(Entry::WentWell),
        (1u8..=10).prop_map(Entry::Rating),
        (prop::sample::select(TimeKind::ALL), 1u32..=1440).prop_map(|(k, m)| Entry::Time(k, m)),
        Just(Entry::Request),
        any::<Index>().prop_map(Entry::Agenda),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::AddIssue),
        1 => any::<Index>().prop_map(Action::EditTitle),
        2 => (any::<Index>(), "[a-c ]{0,10}").prop_map(|(i, b)| Action::EditBody(i, b)),
        2 => (any::<Index>(), prop::sample::select(IssueStatus::ALL)).prop_map(|(i, s)| Action::SetStatus(i, s)),
        1 => (any::<Index>(), 0..TAGS.len()).prop_map(|(i, t)| Action::Tag(i, t)),
        2 => any::<Index>().prop_map(Action::AddNote),
        2 => (any::<Index>(), owner()).prop_map(|(i, o)| Action::AddStep(i, o)),
        1 => (any::<Index>(), prop::sample::select(Outcome::ALL)).prop_map(|(i, o)| Action::CompleteStep(i, o)),
        1 => any::<Index>().prop_map(Action::AcceptStep),
        4 => (0..WEEKS.len(), entry()).prop_map(|(w, e)| Action::CheckIn(w, e)),
        1 => prop::sample::select(AgreementKind::ALL).prop_map(Action::AddAgreement),
        1 => any::<Index>().prop_map(Action::AcceptAgreement),
        1 => any::<Index>().prop_map(Action::EditAgreement),
        4 => (0..2usize).prop_map(Action::Sync),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (0..3usize, action()).prop_map(|(replica, action)| Op { replica, action }),
        0..40,
    )
}

/// A single-valued field of the record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Status(ItemId),
    Title(ItemId),
    Outcome(ItemId, ItemId),
    Rating(usize, Seat),
    Request(usize, Seat),
    AgreementText(ItemId),
    AgreementVersion(ItemId),
    Accepted(ItemId, Seat),
}

/// One write of a field: the value as the record renders it.
#[derive(Debug, Clone)]
struct Write {
    field: Field,
    value: String,
}

/// What one replica knows.
#[derive(Debug, Clone, Default)]
struct Knows {
    issues: Vec<ItemId>,
    steps: Vec<(ItemId, ItemId)>,
    agreements: Vec<ItemId>,
    seen: BTreeSet<usize>,
    overwritten: BTreeSet<usize>,
}

fn push_new<T: PartialEq + Clone>(into: &mut Vec<T>, from: &[T]) {
    for x in from {
        if !into.contains(x) {
            into.push(x.clone());
        }
    }
}

impl Knows {
    fn merge(&mut self, other: &Knows) {
        push_new(&mut self.issues, &other.issues);
        push_new(&mut self.steps, &other.steps);
        push_new(&mut self.agreements, &other.agreements);
        self.seen.extend(other.seen.iter().copied());
        self.overwritten.extend(other.overwritten.iter().copied());
    }

    fn live<'w>(&self, writes: &'w [Write], field: &Field) -> BTreeSet<&'w str> {
        self.seen
            .difference(&self.overwritten)
            .map(|&w| &writes[w])
            .filter(|w| w.field == *field)
            .map(|w| w.value.as_str())
            .collect()
    }
}

/// Everything written, for the final checks.
#[derive(Debug, Default)]
struct Expected {
    writes: Vec<Write>,
    issues: Vec<ItemId>,
    notes: Vec<(ItemId, String, Seat)>,
    tags: Vec<(ItemId, &'static str)>,
    agenda: Vec<(usize, Seat, ItemId)>,
    steps: Vec<(ItemId, ItemId, Seat)>,
    accepted_steps: Vec<(ItemId, ItemId, Seat)>,
    done_steps: Vec<(ItemId, ItemId)>,
    lists: Vec<(usize, Seat, &'static str, String)>,
    minutes: BTreeMap<(usize, Seat), u32>,
    agreements: Vec<ItemId>,
    weeks: BTreeSet<usize>,
}

/// A space founded on device 1 (seat a), with device 2 (seat b) and device 3
/// (seat a) added, forked into one replica per device.
fn replicas() -> Vec<Automerge> {
    let devices: Vec<_> = (1u8..=3)
        .map(|n| DeviceSecret::from_bytes(&[n; 32]).device_id())
        .collect();
    let mut doc = Automerge::new().with_actor(devices[0].actor());
    let founder = Founder {
        space_id: "5eed".into(),
        name: "Sam".into(),
        device: devices[0],
        device_name: "laptop".into(),
    };
    space::create(&mut doc, &founder, T0).unwrap();
    let mut e = Editor::new(&mut doc, Seat::A, T0);
    e.add_device(devices[1], SEATS[1], "phone").unwrap();
    e.add_device(devices[2], SEATS[2], "tablet").unwrap();
    devices.iter().map(|d| doc.fork().with_actor(d.actor())).collect()
}

/// Merges replica `from` into replica `into`.
fn merge(docs: &mut [Automerge], from: usize, into: usize) {
    let [a, b] = docs.get_disjoint_mut([into, from]).unwrap();
    a.merge(b).unwrap();
}

struct World {
    docs: Vec<Automerge>,
    knows: Vec<Knows>,
    expected: Expected,
    counter: u64,
}

impl World {
    fn new() -> World {
        World {
            docs: replicas(),
            knows: vec![Knows::default(); 3],
            expected: Expected::default(),
            counter: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn new_id(&mut self) -> ItemId {
        ItemId::from_random(self.next().to_be_bytes())
    }

    /// Records that replica `r` wrote `value` to `field`, overwriting what it saw.
    ///
    /// Automerge does nothing when a put writes the value the key already shows
    /// (and only deletes the other values if it is in conflict), so the operations
    /// skip such writes: every write recorded here is a new value.
    fn write(&mut self, r: usize, field: Field, value: impl Into<String>) {
        let knows = &mut self.knows[r];
        let writes = &self.expected.writes;
        let old: Vec<usize> = knows
            .seen
            .difference(&knows.overwritten)
            .copied()
            .filter(|&w| writes[w].field == field)
            .collect();
        knows.overwritten.extend(old);
        knows.seen.insert(writes.len());
        self.expected.writes.push(Write {
            field,
            value: value.into(),
        });
    }

    fn apply(&mut self, step: usize, op: &Op) {
        let r = op.replica;
        let seat = SEATS[r];
        let now = T0 + 60_000 * (step as i64 + 1);
        let pick_issue =
            |k: &Knows, i: &Index| (!k.issues.is_empty()).then(|| k.issues[i.index(k.issues.len())].clone());
        let pick_step =
            |k: &Knows, i: &Index| (!k.steps.is_empty()).then(|| k.steps[i.index(k.steps.len())].clone());
        let pick_agreement = |k: &Knows, i: &Index| {
            (!k.agreements.is_empty()).then(|| k.agreements[i.index(k.agreements.len())].clone())
        };
        match &op.action {
            Action::AddIssue => {
                let id = self.new_id();
                let new = NewIssue {
                    title: format!("issue {}", self.counter),
                    body: "the body".into(),
                    ..Default::default()
                };
                Editor::new(&mut self.docs[r], seat, now)
                    .add_issue(&id, &new)
                    .unwrap();
                self.knows[r].issues.push(id.clone());
                self.expected.issues.push(id.clone());
                self.write(r, Field::Status(id.clone()), IssueStatus::Open.as_str());
                self.write(r, Field::Title(id), new.title);
            }
            Action::EditTitle(i) => {
                let Some(id) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                let title = format!("title {}", self.next());
                let edit = IssueEdit {
                    title: Some(title.clone()),
                    ..Default::default()
                };
                Editor::new(&mut self.docs[r], seat, now)
                    .edit_issue(&id, &edit)
                    .unwrap();
                self.write(r, Field::Title(id), title);
            }
            Action::EditBody(i, body) => {
                let Some(id) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                let edit = IssueEdit {
                    body: Some(body.clone()),
                    ..Default::default()
                };
                Editor::new(&mut self.docs[r], seat, now)
                    .edit_issue(&id, &edit)
                    .unwrap();
            }
            Action::SetStatus(i, status) => {
                let Some(id) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                if issues::issue(&self.docs[r], &id).unwrap().status == *status {
                    return; // a no-op for automerge (see `write`)
                }
                Editor::new(&mut self.docs[r], seat, now)
                    .set_status(&id, *status)
                    .unwrap();
                self.write(r, Field::Status(id), status.as_str());
            }
            Action::Tag(i, t) => {
                let Some(id) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                Editor::new(&mut self.docs[r], seat, now)
                    .tag_issue(&id, TAGS[*t])
                    .unwrap();
                self.expected.tags.push((id, TAGS[*t]));
            }
            Action::AddNote(i) => {
                let Some(id) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                let text = format!("note {}", self.next());
                Editor::new(&mut self.docs[r], seat, now)
                    .add_note(&id, &text)
                    .unwrap();
                self.expected.notes.push((id, text, seat));
            }
            Action::AddStep(i, owner) => {
                let Some(issue) = pick_issue(&self.knows[r], i) else {
                    return;
                };
                let step = self.new_id();
                let text = format!("step {}", self.counter);
                Editor::new(&mut self.docs[r], seat, now)
                    .add_step(&issue, &step, &text, *owner, Some("2026-12-01"))
                    .unwrap();
                self.knows[r].steps.push((issue.clone(), step.clone()));
                self.expected.steps.push((issue.clone(), step.clone(), seat));
                if owner.includes(seat) {
                    self.expected.accepted_steps.push((issue, step, seat));
                }
            }
            Action::CompleteStep(i, outcome) => {
                let Some(step) = pick_step(&self.knows[r], i) else {
                    return;
                };
                let issue = issues::issue(&self.docs[r], &step.0).unwrap();
                let shown = issue.steps.iter().find(|s| s.id == step.1).unwrap().outcome;
                if shown == Some(*outcome) {
                    return; // a no-op for automerge (see `write`)
                }
                Editor::new(&mut self.docs[r], seat, now)
                    .complete_step(&step, *outcome)
                    .unwrap();
                self.expected.done_steps.push(step.clone());
                self.write(r, Field::Outcome(step.0, step.1), outcome.as_str());
            }
            Action::AcceptStep(i) => {
                let Some(step) = pick_step(&self.knows[r], i) else {
                    return;
                };
                // Only a step's owner accepts it; the model refuses anyone else.
                let owned = issues::issue(&self.docs[r], &step.0)
                    .and_then(|issue| issue.steps.into_iter().find(|s| s.id == step.1))
                    .is_some_and(|s| s.owner.includes(seat));
                if !owned {
                    return;
                }
                Editor::new(&mut self.docs[r], seat, now)
                    .accept_step(&step)
                    .unwrap();
                self.expected.accepted_steps.push((step.0, step.1, seat));
            }
            Action::CheckIn(w, e) => {
                let week: Week = WEEKS[*w].parse().unwrap();
                match e {
                    Entry::Rating(v) if part(&self.docs[r], *w, seat).rating == Some(*v) => {
                        return; // possibly a no-op for automerge (see `write`)
                    }
                    Entry::Agenda(_) if self.knows[r].issues.is_empty() => return,
                    _ => {}
                }
                let n = self.next();
                let entry = match e {
                    Entry::Appreciation => CheckInEntry::Appreciation(format!("appreciation {n}")),
                    Entry::WentWell => CheckInEntry::WentWell(format!("went well {n}")),
                    Entry::Rating(v) => CheckInEntry::Rating(Rating::new(i64::from(*v)).unwrap()),
                    Entry::Time(kind, minutes) => CheckInEntry::Time(*kind, *minutes),
                    Entry::Request => CheckInEntry::Request(format!("request {n}")),
                    Entry::Agenda(i) => CheckInEntry::Agenda(pick_issue(&self.knows[r], i).unwrap()),
                };
                Editor::new(&mut self.docs[r], seat, now)
                    .checkin(week, &entry)
                    .unwrap();
                self.expected.weeks.insert(*w);
                match entry {
                    CheckInEntry::Appreciation(t) => self.expected.lists.push((*w, seat, "appreciations", t)),
                    CheckInEntry::WentWell(t) => self.expected.lists.push((*w, seat, "went_well", t)),
                    CheckInEntry::Rating(v) => self.write(r, Field::Rating(*w, seat), v.get().to_string()),
                    CheckInEntry::Request(t) => self.write(r, Field::Request(*w, seat), t),
                    CheckInEntry::Time(_, m) => *self.expected.minutes.entry((*w, seat)).or_default() += m,
                    CheckInEntry::Agenda(id) => self.expected.agenda.push((*w, seat, id)),
                }
            }
            Action::AddAgreement(kind) => {
                let id = self.new_id();
                let text = format!("agreement {}", self.counter);
                Editor::new(&mut self.docs[r], seat, now)
                    .add_agreement(&id, &text, *kind)
                    .unwrap();
                self.knows[r].agreements.push(id.clone());
                self.expected.agreements.push(id.clone());
                self.write(r, Field::AgreementText(id.clone()), text);
                self.write(r, Field::AgreementVersion(id.clone()), "1");
                self.write(r, Field::Accepted(id, seat), "1");
            }
            Action::AcceptAgreement(i) => {
                let Some(id) = pick_agreement(&self.knows[r], i) else {
                    return;
                };
                let a = agreements::agreement(&self.docs[r], &id).unwrap();
                if accepted_version(&a, seat) == Some(a.version) {
                    return; // a no-op for automerge (see `write`)
                }
                let version = Editor::new(&mut self.docs[r], seat, now)
                    .accept_agreement(&id)
                    .unwrap();
                self.write(r, Field::Accepted(id, seat), version.to_string());
            }
            Action::EditAgreement(i) => {
                let Some(id) = pick_agreement(&self.knows[r], i) else {
                    return;
                };
                let a = agreements::agreement(&self.docs[r], &id).unwrap();
                if accepted_version(&a, seat) == Some(a.version + 1) {
                    return; // its acceptance would be a no-op for automerge (see `write`)
                }
                let text = format!("agreement text {}", self.next());
                let version = Editor::new(&mut self.docs[r], seat, now)
                    .edit_agreement(&id, &text)
                    .unwrap();
                self.write(r, Field::AgreementText(id.clone()), text);
                self.write(r, Field::AgreementVersion(id.clone()), version.to_string());
                self.write(r, Field::Accepted(id, seat), version.to_string());
            }
            Action::Sync(k) => self.sync((r + 1 + k) % 3, r),
        }
    }

    /// Merges replica `from` into replica `into`.
    fn sync(&mut self, from: usize, into: usize) {
        merge(&mut self.docs, from, into);
        let other = self.knows[from].clone();
        self.knows[into].merge(&other);
    }
}

fn accepted_version(a: &Agreement, seat: Seat) -> Option<u64> {
    a.accepted
        .iter()
        .find(|x| x.partner.seat == Some(seat))
        .map(|x| x.version)
}

fn sorted_heads(doc: &Automerge) -> Vec<ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

/// Everything the record shows, as JSON.
fn reads(doc: &Automerge) -> serde_json::Value {
    let weeks: Vec<_> = WEEKS
        .iter()
        .map(|w| serde_json::to_value(checkins::checkin(doc, w.parse().unwrap())).unwrap())
        .collect();
    serde_json::json!({
        "issues": serde_json::to_value(issues::issues(doc, IssueFilter::default())).unwrap(),
        "checkins": weeks,
        "weeks": serde_json::to_value(checkins::weeks(doc)).unwrap(),
        "agreements": serde_json::to_value(agreements::agreements(doc)).unwrap(),
        "devices": serde_json::to_value(space::devices(doc)).unwrap(),
    })
}

/// The values a field shows: the shown one first, then those of its conflict.
fn shown(value: String, conflicts: &[Conflict], field: &str) -> (String, BTreeSet<String>) {
    let mut all: BTreeSet<String> = conflicts
        .iter()
        .filter(|c| c.field == field)
        .flat_map(|c| c.values.iter().map(|v| v.value.clone()))
        .collect();
    all.insert(value.clone());
    (value, all)
}

/// Checks that a field shows exactly its live values, the shown one among them.
fn check_register(field: &Field, live: &BTreeSet<&str>, shown: Option<(String, BTreeSet<String>)>) {
    match shown {
        None => assert!(
            live.is_empty(),
            "{field:?}: nothing shown, but live values {live:?}"
        ),
        Some((value, all)) => {
            let all: BTreeSet<&str> = all.iter().map(String::as_str).collect();
            assert!(
                live.contains(value.as_str()),
                "{field:?}: shows {value:?}, not a live value of {live:?}"
            );
            assert_eq!(all, *live, "{field:?}: shown values differ from the live writes");
        }
    }
}

fn part(doc: &Automerge, w: usize, seat: Seat) -> PartnerCheckIn {
    let c = checkins::checkin(doc, WEEKS[w].parse().unwrap());
    c.partners
        .into_iter()
        .find(|p| p.partner.seat == Some(seat))
        .unwrap()
}

/// Checks that the fully merged `doc` holds every edit in `expected`, and shows
/// exactly the live values of every field `knows` (the union of all replicas).
fn check_nothing_lost(doc: &Automerge, expected: &Expected, knows: &Knows) {
    let writes = &expected.writes;
    let all = issues::issues(doc, IssueFilter::default());
    let ids: Vec<&ItemId> = all.iter().map(|i| &i.id).collect();
    let mut want: Vec<&ItemId> = expected.issues.iter().collect();
    want.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, want, "the issues");

    for issue in &all {
        let f = Field::Status(issue.id.clone());
        check_register(
            &f,
            &knows.live(writes, &f),
            Some(shown(issue.status.as_str().into(), &issue.conflicts, "status")),
        );
        let f = Field::Title(issue.id.clone());
        check_register(
            &f,
            &knows.live(writes, &f),
            Some(shown(issue.title.clone(), &issue.conflicts, "title")),
        );
        for step in &issue.steps {
            let f = Field::Outcome(issue.id.clone(), step.id.clone());
            let outcome = step
                .outcome
                .map(|o| shown(o.as_str().into(), &step.conflicts, "outcome"));
            check_register(&f, &knows.live(writes, &f), outcome);
            let done = expected.done_steps.contains(&(issue.id.clone(), step.id.clone()));
            assert_eq!(step.done, done, "step {} done", step.id);
        }
    }
    let issue = |id: &ItemId| all.iter().find(|i| i.id == *id).unwrap();

    for (id, text, seat) in &expected.notes {
        let found: Vec<_> = issue(id).notes.iter().filter(|n| n.text == *text).collect();
        assert_eq!(found.len(), 1, "note {text:?} on issue {id}: {found:?}");
        assert_eq!(found[0].author.seat, Some(*seat), "author of note {text:?}");
    }
    for (id, tag) in &expected.tags {
        assert!(issue(id).tags.iter().any(|t| t == tag), "tag {tag} of issue {id}");
    }
    let mut want_steps: Vec<_> = expected.steps.iter().map(|(i, s, _)| (i, s)).collect();
    want_steps.sort();
    let mut got_steps: Vec<_> = all
        .iter()
        .flat_map(|i| i.steps.iter().map(move |s| (&i.id, &s.id)))
        .collect();
    got_steps.sort();
    assert_eq!(got_steps, want_steps, "the steps");
    for (i, s, seat) in &expected.steps {
        let step = issue(i).steps.iter().find(|x| x.id == *s).unwrap();
        assert_eq!(step.created_by.seat, Some(*seat), "step {s} proposer");
    }
    for (i, s, seat) in &expected.accepted_steps {
        let step = issue(i).steps.iter().find(|x| x.id == *s).unwrap();
        assert!(
            step.accepted_by.contains(seat),
            "step {s} accepted by {seat}: {:?}",
            step.accepted_by
        );
    }

    let mut weeks: Vec<Week> = expected
        .weeks
        .iter()
        .map(|&w| WEEKS[w].parse().unwrap())
        .collect();
    weeks.sort_by(|a, b| b.cmp(a));
    assert_eq!(checkins::weeks(doc), weeks, "the weeks with a check-in");
    for (w, seat, list, text) in &expected.lists {
        let p = part(doc, *w, *seat);
        let items = if *list == "appreciations" {
            &p.appreciations
        } else {
            &p.went_well
        };
        let n = items.iter().filter(|t| *t == text).count();
        assert_eq!(n, 1, "{list} {text:?} of {seat} in {}: {items:?}", WEEKS[*w]);
    }
    for (w, seat, id) in &expected.agenda {
        let p = part(doc, *w, *seat);
        let n = p.agenda.iter().filter(|a| a.issue_id == *id).count();
        assert_eq!(n, 1, "issue {id} on the agenda of {seat} in {}", WEEKS[*w]);
    }
    for (w, week) in WEEKS.iter().enumerate() {
        let c = checkins::checkin(doc, week.parse().unwrap());
        let mut total = 0;
        for seat in Seat::ALL {
            let p = part(doc, w, *seat);
            let got: u32 = p.time.iter().map(|t| t.minutes).sum();
            let want = expected.minutes.get(&(w, *seat)).copied().unwrap_or(0);
            assert_eq!(got, want, "minutes of {seat} in {}", WEEKS[w]);
            total += want;

            let f = Field::Rating(w, *seat);
            let rating = p
                .rating
                .map(|v| shown(v.to_string(), &c.conflicts, &format!("{seat}.rating")));
            check_register(&f, &knows.live(writes, &f), rating);
            let f = Field::Request(w, *seat);
            let request = p
                .request
                .clone()
                .map(|v| shown(v, &c.conflicts, &format!("{seat}.request")));
            check_register(&f, &knows.live(writes, &f), request);
        }
        assert_eq!(c.total_minutes, total, "total minutes in {}", WEEKS[w]);
    }

    let all = agreements::agreements(doc);
    let mut got: Vec<&ItemId> = all.iter().map(|a| &a.id).collect();
    got.sort();
    let mut want: Vec<&ItemId> = expected.agreements.iter().collect();
    want.sort();
    assert_eq!(got, want, "the agreements");
    for a in &all {
        let f = Field::AgreementText(a.id.clone());
        check_register(
            &f,
            &knows.live(writes, &f),
            Some(shown(a.text.clone(), &a.conflicts, "text")),
        );
        let f = Field::AgreementVersion(a.id.clone());
        check_register(
            &f,
            &knows.live(writes, &f),
            Some(shown(a.version.to_string(), &a.conflicts, "version")),
        );
        for seat in Seat::ALL {
            let f = Field::Accepted(a.id.clone(), *seat);
            let live = knows.live(writes, &f);
            let accepted = a.accepted.iter().find(|x| x.partner.seat == Some(*seat));
            match accepted {
                None => assert!(live.is_empty(), "{f:?}: no acceptance shown, but live {live:?}"),
                Some(x) => assert!(
                    live.contains(x.version.to_string().as_str()),
                    "{f:?}: shows {}, live {live:?}",
                    x.version
                ),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Keep failures in the output only: no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    })]

    #[test]
    fn replicas_converge_and_lose_nothing(ops in ops(), order in Just(vec![0usize, 1, 2]).prop_shuffle()) {
        let mut world = World::new();
        for (step, op) in ops.iter().enumerate() {
            world.apply(step, op);
        }
        // Gather everything into the first replica of `order`, then hand it back.
        let first = order[0];
        for &r in &order[1..] {
            world.sync(r, first);
        }
        for &r in &order[1..] {
            world.sync(first, r);
        }

        let heads = sorted_heads(&world.docs[0]);
        let read = reads(&world.docs[0]);
        for r in 1..3 {
            prop_assert_eq!(&sorted_heads(&world.docs[r]), &heads, "heads of replica {}", r);
            prop_assert_eq!(&reads(&world.docs[r]), &read, "reads of replica {}", r);
        }
        let mut all = Knows::default();
        for k in &world.knows {
            all.merge(k);
        }
        for doc in &world.docs {
            check_nothing_lost(doc, &world.expected, &all);
        }
    }
}

/// Known bug: a partner's check-in `request` (or `rating`) that they replaced on
/// the same device is still shown as the current value after everyone syncs.
///
/// Three devices start the same week concurrently; device 1 then learns of
/// device 3's week and replaces its request. The replacement is written to the
/// part in the winning week object (device 3's), the old request stays in device
/// 1's own part, and once device 2's week (with no part of seat a) wins, the
/// reader lists seat a's parts in an order that puts the old one first.
#[test]
fn a_replaced_checkin_value_is_not_shown() {
    let mut d = replicas();
    let week: Week = WEEKS[0].parse().unwrap();
    // Device 2 makes one more change first, so that the week it starts wins.
    let new = NewIssue {
        title: "issue".into(),
        body: "the body".into(),
        ..Default::default()
    };
    let issue = ItemId::from_random([1; 8]);
    Editor::new(&mut d[1], Seat::B, T0 + 1)
        .add_issue(&issue, &new)
        .unwrap();
    let entry = CheckInEntry::Appreciation("the walk".into());
    Editor::new(&mut d[1], Seat::B, T0 + 2)
        .checkin(week, &entry)
        .unwrap();
    let entry = CheckInEntry::Request("old request".into());
    Editor::new(&mut d[0], Seat::A, T0 + 3)
        .checkin(week, &entry)
        .unwrap();
    let entry = CheckInEntry::Appreciation("dinner".into());
    Editor::new(&mut d[2], Seat::A, T0 + 4)
        .checkin(week, &entry)
        .unwrap();
    merge(&mut d, 2, 0);
    let entry = CheckInEntry::Request("new request".into());
    Editor::new(&mut d[0], Seat::A, T0 + 5)
        .checkin(week, &entry)
        .unwrap();
    assert_eq!(part(&d[0], 0, Seat::A).request.as_deref(), Some("new request"));

    merge(&mut d, 1, 0);
    merge(&mut d, 2, 0);
    let c = checkins::checkin(&d[0], week);
    assert_eq!(
        c.partners[0].request.as_deref(),
        Some("new request"),
        "{:?}",
        c.conflicts
    );
    assert!(c.conflicts.is_empty(), "{:?}", c.conflicts);
}

/// Known bug: once a partner's two devices both started the week, a conflict on
/// that partner's `rating` (or `request`) can never be settled by setting it
/// again (the documented way, see `duet_model::conflict`), because the new value
/// replaces the one in the winning part only.
#[test]
fn setting_a_checkin_value_again_settles_its_conflict() {
    let mut d = replicas();
    let week: Week = WEEKS[0].parse().unwrap();
    let rate = |n| CheckInEntry::Rating(Rating::new(n).unwrap());
    Editor::new(&mut d[0], Seat::A, T0 + 1)
        .checkin(week, &rate(8))
        .unwrap();
    Editor::new(&mut d[2], Seat::A, T0 + 1)
        .checkin(week, &rate(6))
        .unwrap();
    merge(&mut d, 2, 0);
    merge(&mut d, 0, 2);
    let c = checkins::checkin(&d[0], week);
    assert!(
        c.conflicts.iter().any(|c| c.field == "a.rating"),
        "{:?}",
        c.conflicts
    );

    Editor::new(&mut d[0], Seat::A, T0 + 2)
        .checkin(week, &rate(7))
        .unwrap();
    let c = checkins::checkin(&d[0], week);
    assert_eq!(c.partners[0].rating, Some(7));
    assert!(c.conflicts.is_empty(), "still in conflict: {:?}", c.conflicts);
}
