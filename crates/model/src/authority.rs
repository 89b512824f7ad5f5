//! Authority: what a device may write, judged where it wrote it.
//!
//! Every device checks every change it receives before it keeps it, against
//! the membership of the change's **causal past** (the document at the
//! change's dependencies), never against the merged result. The check is the
//! same on every device that receives the change, and stays true whatever
//! arrives later, so replicas agree on what counts.
//!
//! The rights of a couple:
//!
//! | what | who may write it |
//! | --- | --- |
//! | the space's root (schema, id, collections) | the founding change; later changes only add what is missing (a newer schema, a new collection), never replace |
//! | a device entry (`devices/<id>`) | an active member, for its own seat; for the other seat only while that seat holds no active device (the partner's first device, at pairing); never over an existing entry; its fields only in the change that makes it |
//! | a revocation (`revoked_after` on an entry) | an active member, of any active device (a lost device of one's own, or the other partner's devices when a couple separates); never undone |
//! | a space key and its envelopes | an active member; envelopes only for active members, never over an existing one |
//! | a partner's name (`partners/<seat>`) | that seat's devices, or anyone while the seat has no name yet (at pairing) |
//! | a seat's part of a check-in (`checkins/<week>/<seat>`) | that seat's devices |
//! | an acceptance (`accepted/<seat>` of an agreement, `accepted_by/<seat>` of a step) | that seat's devices |
//! | a step's outcome (`done`, `outcome`, `done_at`, `done_by`) | its owner's devices (either partner's for a step owned by both) |
//! | who wrote something (`raised_by`, `created_by`, `done_by`, a note's `author`) | only the writer's own seat |
//! | a step's owner | only when the step is made |
//! | deleting or replacing an issue, a step, an agreement or a week's check-in, or any object in them (notes, acceptances, a check-in part) | nobody |
//! | everything else (titles, bodies, notes, statuses, tags, settings) | any active member |
//!
//! What a revoked device wrote after its cut-off is refused by every device
//! that knows of the revocation when that device delivers it, and carries no
//! authority in any case (see [`crate::members`]).

mod places;

use std::collections::HashMap;

use automerge::legacy::{Key, ObjectId, Op, OpType};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ScalarValue, Value};

use crate::identity::DeviceId;
use crate::members::{ChangeRefusal, Membership, View};
use crate::vocab::{Owner, Seat};
use places::{LIST_POSITION, Places, exid};

/// Judges changes held in one document (after they were applied to it: the
/// objects they write to are then known) against the rights their authors
/// had where they wrote them.
pub struct Judge<'a> {
    doc: &'a Automerge,
    founder: DeviceId,
    now: Membership,
    at: HashMap<Vec<ChangeHash>, Membership>,
    places: Places<'a>,
    /// The device key of each actor seen (decoding one costs a square root).
    authors: Vec<(ActorId, Option<DeviceId>)>,
}

impl<'a> Judge<'a> {
    /// A judge over `doc`, for a space founded by `founder`.
    pub fn new(doc: &'a Automerge, founder: DeviceId) -> Judge<'a> {
        Judge {
            doc,
            founder,
            now: Membership::pinned(doc, founder),
            at: HashMap::new(),
            places: Places::new(doc),
            authors: Vec::new(),
        }
    }

    /// The membership of the document as it is now.
    pub fn membership(&self) -> &Membership {
        &self.now
    }

    fn at(&mut self, deps: &[ChangeHash]) -> &Membership {
        let (doc, founder) = (self.doc, self.founder);
        self.at
            .entry(deps.to_vec())
            .or_insert_with(|| Membership::at(doc, deps, founder))
    }

    /// Checks `change`: its author may write what it wrote where it wrote it.
    pub fn check(&mut self, change: &Change) -> Result<(), ChangeRefusal> {
        let actor = change.actor_id();
        let author = self.author(actor).ok_or(ChangeRefusal::NotADevice)?;
        let refuse = |what: &str| ChangeRefusal::NoRight {
            device: author.short(),
            what: what.to_string(),
        };
        let deps = change.deps().to_vec();
        if deps.is_empty() {
            // Only the founder starts the space's history, once.
            return if author == self.founder && change.seq() == 1 {
                Ok(())
            } else {
                Err(refuse("a second beginning of the space's history"))
            };
        }
        let Some(my_seat) = self.now.by_actor(actor).map(|m| m.seat) else {
            return Err(ChangeRefusal::NotAMember(author.short()));
        };
        // A device writes only once it is a member: its first change must
        // know of its entry (every later one follows its first).
        if change.seq() == 1 && !self.at(&deps).is_active(&author) {
            return Err(match self.at(&deps).get(&author) {
                Some(_) => ChangeRefusal::Revoked(author.short()),
                None => ChangeRefusal::NotAMember(author.short()),
            });
        }
        let expanded = change.decode();
        let ops = &expanded.operations;
        let start = change.start_op().get();
        let end = start + ops.len() as u64;
        // Objects this change makes: counter -> the op that made it.
        let made: HashMap<u64, &Op> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.action, OpType::Make(_)))
            .map(|(i, op)| (start + i as u64, op))
            .collect();
        let own_obj = |obj: &ObjectId| match obj {
            ObjectId::Id(id) if id.actor() == actor && (start..end).contains(&id.counter()) => {
                Some(id.counter())
            }
            _ => None,
        };
        let doc = self.doc;
        let view = View {
            doc,
            heads: Some(deps.as_slice()),
        };
        // Who owns a step, asked once per step the change writes an outcome
        // of (the same at its dependencies for all its fields).
        let mut owned: Option<(ObjectId, Result<(), ChangeRefusal>)> = None;
        let mut owns = |judge: &Self, op: &Op, obj: &ObjId| -> Result<(), ChangeRefusal> {
            let made_here = own_obj(&op.obj).is_some();
            match &owned {
                Some((o, verdict)) if *o == op.obj => verdict.clone(),
                _ => {
                    let verdict = judge
                        .check_owner(op, obj, &deps, ops, made_here, my_seat)
                        .map_err(|w| refuse(&w));
                    owned = Some((op.obj.clone(), verdict.clone()));
                    verdict
                }
            }
        };
        for (i, op) in ops.iter().enumerate() {
            let place = self
                .places
                .written(&op.obj, actor, &made, &own_obj)
                .ok_or_else(|| refuse("into an object the document does not hold"))?;
            let key = match &op.key {
                Key::Map(k) => Some(k.as_str()),
                Key::Seq(_) => None,
            };
            let made_here = own_obj(&op.obj).is_some();
            let makes = matches!(op.action, OpType::Make(_));
            let deletes = matches!(op.action, OpType::Delete);
            // Most operations type text or set a plain value where no rule
            // reaches (the root is ruled): nothing below can refuse them.
            if !place.is_ruled() && (made_here || !(makes || deletes)) {
                continue;
            }
            let segs = place.segs();
            let obj = exid(&op.obj);
            if !place.is_root() && !made_here {
                // Nothing in the record is made over, or deleted away from
                // under, what is already there (a partner's notes, acceptances,
                // check-in part): duet makes objects only where none is, and
                // deletes only single values and characters of text.
                // Reading at a change's dependencies costs a clock over the
                // history: only makes and deletes of map keys need it.
                let there = |k: &str| view.all(&obj, k);
                let replaces = makes && key.is_some_and(|k| !there(k).is_empty());
                let deletes_object = deletes
                    && key.is_some_and(|k| {
                        there(k)
                            .iter()
                            .any(|(v, _)| matches!(v, automerge::Value::Object(_)))
                    });
                let deletes_note = deletes && key.is_none() && place.last() == Some("notes");
                if replaces || deletes_object || deletes_note {
                    return Err(refuse(&format!("over or away something at {}", segs.join("/"))));
                }
            }
            // A make that got here found nothing at its key where it wrote.
            let found_absent = makes && key.is_some() && !place.is_root() && !made_here;
            if !place.is_ruled() {
                continue;
            }
            // Every arm but the last is for a path `places::names_a_rule` names.
            match (segs.as_slice(), key) {
                ([], Some(k)) => {
                    let existing = view.all(&ROOT, k);
                    let newer_schema = k == "schema"
                        && matches!(&op.action, OpType::Put(v) if int(v) > existing.iter().filter_map(|(v, _)| scalar(v)).filter_map(|v| int(&v)).max());
                    if matches!(op.action, OpType::Delete) || !(existing.is_empty() || newer_schema) {
                        return Err(refuse(&format!("over the space's {k}")));
                    }
                }
                (["devices"], Some(k)) => {
                    let Ok(id) = k.parse::<DeviceId>() else {
                        return Err(refuse("a device entry that is not a device key"));
                    };
                    if !matches!(op.action, OpType::Make(ObjType::Map)) {
                        return Err(refuse("over the space's device list"));
                    }
                    let counter = start + i as u64;
                    let seat = ops
                        .iter()
                        .filter(|o| matches!(&o.obj, ObjectId::Id(x) if x.counter() == counter && x.actor() == actor))
                        .filter(|o| matches!(&o.key, Key::Map(f) if f == "seat"))
                        .find_map(|o| match &o.action {
                            OpType::Put(ScalarValue::Str(s)) => s.parse::<Seat>().ok(),
                            _ => None,
                        })
                        .ok_or_else(|| refuse("a device entry without a seat"))?;
                    let at = self.at(&deps).clone();
                    if !at.is_active(&author) {
                        return Err(ChangeRefusal::Revoked(author.short()));
                    }
                    let devices = view.objects(&ROOT, "devices", ObjType::Map);
                    let known = devices.iter().any(|d| !view.all(d, k).is_empty());
                    if known || at.get(&id).is_some() {
                        return Err(refuse(&format!("over the entry of device {}", id.short())));
                    }
                    if seat != my_seat && at.seat_is_held(seat) {
                        return Err(refuse(&format!(
                            "a device for seat {seat}, which only that partner's devices may add"
                        )));
                    }
                }
                (["devices", _], Some("seat" | "name" | "added_at")) if made_here => {}
                (["devices", id], Some("revoked_after" | "revoked_after_op" | "revoked_at")) => {
                    let target = id.parse::<DeviceId>().ok();
                    let at = self.at(&deps);
                    if !at.is_active(&author) {
                        return Err(ChangeRefusal::Revoked(author.short()));
                    }
                    if !target.is_some_and(|t| at.is_active(&t)) || !matches!(op.action, OpType::Put(_)) {
                        return Err(refuse("a revocation of a device that is not an active member"));
                    }
                }
                (["devices", ..], _) => return Err(refuse("over a device entry")),
                (["keys"], Some(k)) => {
                    let absent = view
                        .all(&ROOT, "keys")
                        .iter()
                        .all(|(_, keys)| view.all(keys, k).is_empty());
                    if !matches!(op.action, OpType::Make(ObjType::Map)) || !absent {
                        return Err(refuse("over a space key"));
                    }
                    if !self.at(&deps).is_active(&author) {
                        return Err(ChangeRefusal::Revoked(author.short()));
                    }
                }
                (["keys", _], Some("generation" | "envelopes")) if made_here => {}
                (["keys", _], Some("envelopes"))
                    if matches!(op.action, OpType::Make(ObjType::Map))
                        && view.all(&obj, "envelopes").is_empty() => {}
                (["keys", _, "envelopes"], Some(k)) => {
                    let to = k.parse::<DeviceId>().ok();
                    let fresh = made_here || view.all(&obj, k).is_empty();
                    let at = self.at(&deps);
                    let for_member = to.is_some_and(|t| at.is_active(&t));
                    if !at.is_active(&author) {
                        return Err(ChangeRefusal::Revoked(author.short()));
                    }
                    if !fresh || !for_member || !matches!(op.action, OpType::Put(ScalarValue::Bytes(_))) {
                        return Err(refuse(
                            "a key envelope over another or for a device that is not an active member",
                        ));
                    }
                }
                (["keys", ..], _) => return Err(refuse("over a space key")),
                (["partners", rest @ ..], k) => {
                    let seat = rest.first().copied().or(k).unwrap_or_default();
                    if seat != my_seat.as_str() && self.seat_is_named(&deps, seat) {
                        return Err(refuse(&format!("the name of the partner in seat {seat}")));
                    }
                }
                (["checkins", _], Some(seat)) => {
                    if seat != my_seat.as_str() {
                        return Err(refuse(&format!("the check-in of the partner in seat {seat}")));
                    }
                    if !matches!(op.action, OpType::Make(ObjType::Map))
                        || !(found_absent || self.absent(&obj, seat, &deps))
                    {
                        return Err(refuse("over a check-in"));
                    }
                }
                (["checkins", _, seat, ..], _) if *seat != my_seat.as_str() => {
                    return Err(refuse("into the other partner's check-in"));
                }
                (["agreements", _, "accepted"], Some(seat))
                | (["issues", _, "steps", _, "accepted_by"], Some(seat))
                    if seat != my_seat.as_str() =>
                {
                    return Err(refuse(&format!("an acceptance for the partner in seat {seat}")));
                }
                (["agreements", _], Some("created_by"))
                | (["issues", _], Some("raised_by"))
                | (["issues", _, "steps", _], Some("created_by" | "done_by"))
                | (["issues", _, "notes", LIST_POSITION], Some("author")) => {
                    // Automerge writes a value equal to the one that wins a
                    // conflict as a deletion of the others: the step's owner
                    // settling who completed it.
                    let settles = key == Some("done_by") && matches!(op.action, OpType::Delete);
                    let own_name = matches!(&op.action, OpType::Put(ScalarValue::Str(s)) if s.as_str() == my_seat.as_str());
                    if !(own_name || settles) {
                        return Err(refuse(&format!(
                            "{} of {} in the other partner's name",
                            key.unwrap_or_default(),
                            segs.join("/")
                        )));
                    }
                    if key == Some("done_by") {
                        owns(self, op, &obj)?;
                    }
                }
                (["issues", _, "steps", _], Some("owner")) if !made_here => {
                    return Err(refuse("a new owner for a step"));
                }
                (["issues", _, "steps", _], Some("done"))
                    if made_here && matches!(op.action, OpType::Put(ScalarValue::Boolean(false))) => {}
                (["issues", _, "steps", _], Some("done" | "outcome" | "done_at")) => {
                    owns(self, op, &obj)?;
                }
                (["issues" | "agreements" | "checkins"], Some(k)) | (["issues", _, "steps"], Some(k))
                    if !made_here && !found_absent && !self.absent(&obj, k, &deps) =>
                {
                    return Err(refuse("over or away a record both partners share"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// True if nothing is at `obj[key]` at `deps`.
    fn absent(&self, obj: &ObjId, key: &str, deps: &[ChangeHash]) -> bool {
        View {
            doc: self.doc,
            heads: Some(deps),
        }
        .all(obj, key)
        .is_empty()
    }

    /// True if the partner in `seat` has a name at `deps`.
    fn seat_is_named(&self, deps: &[ChangeHash], seat: &str) -> bool {
        let view = View {
            doc: self.doc,
            heads: Some(deps),
        };
        view.objects(&ROOT, "partners", ObjType::Map)
            .iter()
            .flat_map(|p| view.objects(p, seat, ObjType::Map))
            .any(|p| !view.all(&p, "name").is_empty())
    }

    /// Checks that `seat` owns the step `obj` (the owner written in this
    /// change, or at `deps`).
    fn check_owner(
        &self,
        op: &Op,
        obj: &ObjId,
        deps: &[ChangeHash],
        ops: &[Op],
        made_here: bool,
        seat: Seat,
    ) -> Result<(), String> {
        let owners: Vec<String> = if made_here {
            ops.iter()
                .filter(|o| o.obj == op.obj && matches!(&o.key, Key::Map(k) if k == "owner"))
                .filter_map(|o| match &o.action {
                    OpType::Put(ScalarValue::Str(s)) => Some(s.to_string()),
                    _ => None,
                })
                .collect()
        } else {
            View {
                doc: self.doc,
                heads: Some(deps),
            }
            .all(obj, "owner")
            .into_iter()
            .filter_map(|(v, _)| scalar(&v).and_then(|s| s.as_str().map(str::to_string)))
            .collect()
        };
        if owners
            .iter()
            .filter_map(|o| Owner::parse_stored(o))
            .any(|o| o.includes(seat))
        {
            Ok(())
        } else {
            Err("the outcome of a step the other partner owns".into())
        }
    }

    /// The device key of `actor`, decoded once per actor.
    fn author(&mut self, actor: &ActorId) -> Option<DeviceId> {
        if let Some((_, id)) = self.authors.iter().find(|(a, _)| a == actor) {
            return *id;
        }
        let id = DeviceId::from_actor(actor);
        self.authors.push((actor.clone(), id));
        id
    }
}

fn scalar(v: &Value<'_>) -> Option<ScalarValue> {
    match v {
        Value::Scalar(s) => Some(s.clone().into_owned()),
        Value::Object(_) => None,
    }
}

fn int(v: &ScalarValue) -> Option<i64> {
    crate::access::scalar_int(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkins::CheckInEntry;
    use crate::identity::DeviceSecret;
    use crate::space::Editor;
    use crate::space::tests::founded;
    use crate::vocab::{AgreementKind, Outcome, Rating, Week};
    use crate::{ItemId, NewIssue};
    use automerge::transaction::Transactable;

    fn device(n: u8) -> DeviceId {
        DeviceSecret::from_bytes(&[n; 32]).device_id()
    }

    fn id(n: u8) -> ItemId {
        ItemId::from_random([n; 8])
    }

    /// A space of device 1 (seat a) with device 2 (seat b), and a shared
    /// issue with a step owned by b and an agreement.
    fn couple() -> (Automerge, DeviceId) {
        let (mut doc, founder) = founded(1);
        let mut e = Editor::new(&mut doc, Seat::A, 1);
        e.add_device(device(2), Seat::B, "phone").unwrap();
        e.set_partner_name(Seat::B, "Alex").unwrap();
        e.add_issue(
            &id(1),
            &NewIssue {
                title: "Dishes".into(),
                ..Default::default()
            },
        )
        .unwrap();
        e.add_step(&id(1), &id(2), "Wash up", Owner::One(Seat::B), None)
            .unwrap();
        e.add_agreement(&id(3), "Breaks", AgreementKind::ConflictRule)
            .unwrap();
        e.add_note(&id(1), "I feel unheard").unwrap();
        (doc, founder)
    }

    /// Makes a change on a fork of `doc` as device `n`, merges it into `doc`,
    /// and judges it there.
    fn judged(
        doc: &mut Automerge,
        founder: DeviceId,
        n: u8,
        f: impl FnOnce(&mut Automerge),
    ) -> Result<(), ChangeRefusal> {
        let mut fork = doc.fork().with_actor(device(n).actor());
        let before = fork.get_heads();
        f(&mut fork);
        let changes = fork.get_changes(&before);
        assert!(!changes.is_empty(), "the edit made a change");
        let mut after = doc.clone();
        after.apply_changes(changes.clone()).unwrap();
        let mut judge = Judge::new(&after, founder);
        let verdict = changes.iter().try_for_each(|c| judge.check(c));
        if verdict.is_ok() {
            *doc = after;
        }
        verdict
    }

    fn raw(
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), automerge::AutomergeError>,
    ) -> impl FnOnce(&mut Automerge) {
        move |doc| {
            doc.transact(|tx| f(tx)).unwrap();
        }
    }

    /// Refused: for want of a right, or (when the change itself made its
    /// author a stranger, replacing the device list) of membership.
    fn no_right(r: &Result<(), ChangeRefusal>) -> bool {
        matches!(
            r,
            Err(ChangeRefusal::NoRight { .. } | ChangeRefusal::NotAMember(_))
        )
    }

    #[test]
    fn every_honest_edit_passes() {
        let (mut doc, f) = couple();
        let week = Week::containing(jiff::civil::date(2026, 11, 30));
        for (n, seat) in [(1, Seat::A), (2, Seat::B)] {
            let r = judged(&mut doc, f, n, |d| {
                let mut e = Editor::new(d, seat, 5);
                e.rename(&format!("name {n}")).unwrap();
                e.add_issue(
                    &id(10 + n),
                    &NewIssue {
                        title: "Money".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
                e.add_note(&id(1), "I feel unheard").unwrap();
                e.add_step(&id(1), &id(20 + n), "Talk", Owner::Both, Some("2026-12-04"))
                    .unwrap();
                e.add_step(&id(1), &id(30 + n), "Plan", Owner::One(seat.other()), None)
                    .unwrap();
                e.complete_step(&(id(1), id(20 + n)), Outcome::Kept).unwrap();
                e.accept_agreement(&id(3)).unwrap();
                e.edit_agreement(&id(3), "Breaks of 20 minutes").unwrap();
                e.checkin(week, &CheckInEntry::Appreciation("dinner".into()))
                    .unwrap();
                e.checkin(week, &CheckInEntry::Rating(Rating::new(8).unwrap()))
                    .unwrap();
                e.set_relay(Some("relay.example.org:7490")).unwrap();
            });
            assert_eq!(r, Ok(()), "device {n}");
        }
        let r = judged(&mut doc, f, 2, |d| {
            let mut e = Editor::new(d, Seat::B, 6);
            e.accept_step(&(id(1), id(2))).unwrap();
            e.complete_step(&(id(1), id(2)), Outcome::Partly).unwrap();
            e.add_device(device(4), Seat::B, "tablet").unwrap();
        });
        assert_eq!(r, Ok(()));
        let r = judged(&mut doc, f, 1, |d| {
            Editor::new(d, Seat::A, 7).revoke_device(device(4)).unwrap();
        });
        assert_eq!(r, Ok(()));
    }

    /// Finding 1: a fresh `devices` map at the root.
    #[test]
    fn replacing_the_device_list_is_refused() {
        let (mut doc, f) = couple();
        let r = judged(
            &mut doc,
            f,
            2,
            raw(|tx| {
                let d = tx.put_object(ROOT, "devices", ObjType::Map)?;
                let me = tx.put_object(&d, device(2).to_string(), ObjType::Map)?;
                tx.put(&me, "seat", "a")
            }),
        );
        assert!(no_right(&r), "{r:?}");
        let (mut doc, f) = couple();
        assert!(no_right(&judged(
            &mut doc,
            f,
            2,
            raw(|tx| tx.delete(ROOT, "devices"))
        )));
        let (mut doc, f) = couple();
        assert!(no_right(&judged(
            &mut doc,
            f,
            2,
            raw(|tx| tx.put(ROOT, "space_id", "mine"))
        )));
    }

    #[test]
    fn a_second_root_of_history_is_refused() {
        let (mut doc, f) = couple();
        let mut other = Automerge::new().with_actor(device(2).actor());
        other
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "schema", 1).map(|_| ()))
            .unwrap();
        let changes = other.get_changes(&[]);
        doc.apply_changes(changes.clone()).unwrap();
        assert!(no_right(&Judge::new(&doc, f).check(&changes[0])));
    }

    /// Finding 3: values that speak for the other partner.
    #[test]
    fn writing_for_the_other_seat_is_refused() {
        let week = Week::containing(jiff::civil::date(2026, 11, 30));
        type Attack = Box<
            dyn Fn(
                &mut automerge::transaction::Transaction<'_>,
                &Automerge,
            ) -> Result<(), automerge::AutomergeError>,
        >;
        let attacks: Vec<(&str, Attack)> = vec![
            (
                "accept the agreement for b",
                Box::new(|tx, _| {
                    let a = crate::access::item(&*tx, "agreements", &id(3)).unwrap();
                    let acc = crate::access::object(&*tx, &a, "accepted", ObjType::Map).unwrap();
                    tx.put(&acc, "b", 1)
                }),
            ),
            (
                "accept b's step for b",
                Box::new(|tx, _| {
                    let s = step_obj(tx);
                    let acc = crate::access::object(&*tx, &s, "accepted_by", ObjType::Map).unwrap();
                    tx.put(&acc, "b", true)
                }),
            ),
            (
                "mark b's step missed",
                Box::new(|tx, _| {
                    let s = step_obj(tx);
                    tx.put(&s, "outcome", "missed")
                }),
            ),
            (
                "take over b's step",
                Box::new(|tx, _| {
                    let s = step_obj(tx);
                    tx.put(&s, "owner", "a")
                }),
            ),
            (
                "write b's check-in",
                Box::new(move |tx, _| {
                    let c = crate::space::map_in(tx, &ROOT, "checkins").unwrap();
                    let w = tx.put_object(&c, week.to_string(), ObjType::Map)?;
                    let p = tx.put_object(&w, "b", ObjType::Map)?;
                    tx.put(&p, "rating", 1)
                }),
            ),
            (
                "a note signed as b",
                Box::new(|tx, _| {
                    let i = crate::access::item(&*tx, "issues", &id(1)).unwrap();
                    let notes = crate::access::object(&*tx, &i, "notes", ObjType::List).unwrap();
                    let n = tx.insert_object(&notes, 0, ObjType::Map)?;
                    tx.put(&n, "author", "b")?;
                    tx.put(&n, "text", "I was wrong")
                }),
            ),
            (
                "rename partner b",
                Box::new(|tx, _| {
                    let p = crate::access::collection(&*tx, "partners")[0].clone();
                    let b = crate::access::object(&*tx, &p, "b", ObjType::Map).unwrap();
                    tx.put(&b, "name", "Ex")
                }),
            ),
            (
                "delete the shared issue",
                Box::new(|tx, _| {
                    let c = crate::access::collection(&*tx, "issues")[0].clone();
                    tx.delete(&c, id(1).as_str())
                }),
            ),
            (
                "a second device for b",
                Box::new(|tx, _| {
                    let d = crate::access::collection(&*tx, "devices")[0].clone();
                    let e = tx.put_object(&d, device(7).to_string(), ObjType::Map)?;
                    tx.put(&e, "seat", "b")
                }),
            ),
        ];
        for (what, attack) in attacks {
            let (mut doc, f) = couple();
            let r = judged(&mut doc, f, 1, |d| {
                let snapshot = d.clone();
                d.transact(|tx| attack(tx, &snapshot)).unwrap();
            });
            assert!(no_right(&r), "{what}: {r:?}");
        }
    }

    fn step_obj(tx: &automerge::transaction::Transaction<'_>) -> ObjId {
        let i = crate::access::item(tx, "issues", &id(1)).unwrap();
        let steps = crate::access::object(tx, &i, "steps", ObjType::Map).unwrap();
        crate::access::object(tx, &steps, id(2).as_str(), ObjType::Map).unwrap()
    }

    #[test]
    fn a_revocation_cannot_be_undone_and_a_revoked_device_adds_nobody() {
        let (mut doc, f) = couple();
        judged(&mut doc, f, 1, |d| {
            Editor::new(d, Seat::A, 3).revoke_device(device(2)).unwrap();
        })
        .unwrap();
        // The founder (a member) tries to lift the revocation.
        let r = judged(
            &mut doc,
            f,
            1,
            raw(|tx| {
                let d = crate::access::collection(&*tx, "devices")[0].clone();
                let e = crate::access::object(&*tx, &d, &device(2).to_string(), ObjType::Map).unwrap();
                tx.put(&e, "revoked_after", i64::MAX)
            }),
        );
        assert!(no_right(&r), "{r:?}");
        // The revoked device, having learned of it, adds a device.
        let r = judged(&mut doc, f, 2, |d| {
            Editor::new(d, Seat::B, 4)
                .add_device(device(8), Seat::B, "new")
                .unwrap();
        });
        assert_eq!(r, Err(ChangeRefusal::Revoked(device(2).short())));
    }

    #[test]
    fn the_first_device_of_the_other_seat_is_added_by_the_host_and_later_ones_by_its_partner() {
        let (mut doc, f) = founded(1);
        assert_eq!(
            judged(&mut doc, f, 1, |d| {
                Editor::new(d, Seat::A, 1)
                    .add_device(device(2), Seat::B, "phone")
                    .unwrap();
            }),
            Ok(())
        );
        assert!(no_right(&judged(&mut doc, f, 1, |d| {
            Editor::new(d, Seat::A, 2)
                .add_device(device(3), Seat::B, "tablet")
                .unwrap();
        })));
        assert_eq!(
            judged(&mut doc, f, 2, |d| {
                Editor::new(d, Seat::B, 2)
                    .add_device(device(3), Seat::B, "tablet")
                    .unwrap();
            }),
            Ok(())
        );
        // A stranger's first change.
        let r = judged(&mut doc, f, 9, |d| {
            Editor::new(d, Seat::B, 2).rename("Mallory").unwrap();
        });
        assert_eq!(r, Err(ChangeRefusal::NotAMember(device(9).short())));
    }

    #[test]
    fn envelopes_go_to_active_members_only_and_never_over_another() {
        let (mut doc, f) = couple();
        let kid = "00112233445566778899aabbccddeeff";
        judged(&mut doc, f, 1, |d| {
            Editor::new(d, Seat::A, 2)
                .add_space_key(kid, 2, &[(device(1), vec![1; 84])])
                .unwrap();
        })
        .unwrap();
        assert!(no_right(&judged(&mut doc, f, 1, |d| {
            Editor::new(d, Seat::A, 3)
                .add_envelopes(kid, &[(device(6), vec![2; 84])])
                .unwrap();
        })));
        assert!(no_right(&judged(&mut doc, f, 2, |d| {
            Editor::new(d, Seat::B, 3)
                .add_envelopes(kid, &[(device(1), vec![3; 84])])
                .unwrap();
        })));
        assert_eq!(
            judged(&mut doc, f, 2, |d| {
                Editor::new(d, Seat::B, 3)
                    .add_envelopes(kid, &[(device(2), vec![3; 84])])
                    .unwrap();
            }),
            Ok(())
        );
    }
}
