//! Membership: which devices belong to the space, and which of their changes
//! count.
//!
//! The space's devices are recorded in the document itself (`devices`), so a
//! partner's new laptop becomes known to every device through ordinary sync.
//! What a device may write there is judged where it wrote it, in the change's
//! causal past, when the change arrives ([`crate::authority`]): an entry
//! replaced, a seat taken, a revocation undone never gets into a document.
//! Reading the membership of a document is then the closure, from the
//! **founding device**, over "added by a member":
//!
//! - the founder is the device whose change created the space. Devices pin it
//!   when they create or join a space; [`Membership::pinned`] takes it as
//!   given, [`Membership::of`] reads it from the document (the `devices` map
//!   made by the lowest operation id, the founding change's: a map made later,
//!   to replace it, has a higher one);
//! - an entry counts when its writer is a member and did not write it after its
//!   own revocation (an edit a revoked device made before it learned of its
//!   revocation, relayed by a member, keeps its content but carries no
//!   authority); a device such an entry names is listed as revoked from its
//!   first change;
//! - revocation marks a device's entry with the last of its changes that still
//!   counts (`revoked_after`, a sequence number of its automerge actor, and
//!   `revoked_after_op`, that change's last operation). Its changes up to
//!   there stay part of the record; any later change it signs is refused by
//!   every device that has learned of the revocation. A revocation by a member
//!   always counts, so two devices that revoke each other at once both end up
//!   revoked wherever both revocations arrive (each travels only through
//!   members that take it before they learn of the other, so the first to
//!   spread can strand the other); if several cut-offs are set, the earliest
//!   counts.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use serde::Serialize;

use crate::access;
use crate::error::ModelError;
use crate::identity::DeviceId;
use crate::space::{Editor, map_in};
use crate::vocab::Seat;

/// A member device and its standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The device.
    pub id: DeviceId,
    /// Whose device it is.
    pub seat: Seat,
    /// Its name.
    pub name: String,
    /// When it was added (milliseconds since the epoch).
    pub added_at: i64,
    /// The device that added it (`None` for the founding device).
    pub added_by: Option<DeviceId>,
    /// If revoked: the last of its changes (by sequence number) that counts.
    pub revoked_after: Option<u64>,
    /// If revoked and known: the last operation (counter) that counts.
    #[serde(skip)]
    pub revoked_after_op: Option<u64>,
}

impl Member {
    /// True unless the device has been revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_after.is_none()
    }

    /// True if this device's operation `counter` came after its cut-off.
    fn wrote_after_cut(&self, counter: u64) -> bool {
        self.revoked_after_op.is_some_and(|cut| counter > cut)
    }
}

/// Why a change does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    /// The actor is not a device key.
    #[error("a change was made by an actor that is not a device key")]
    NotADevice,
    /// The device is not a member of the space.
    #[error("a change was made by device {0}, which is not a member of this space")]
    NotAMember(String),
    /// The device was revoked before it made the change.
    #[error("a change was made by device {0} after it was revoked")]
    Revoked(String),
    /// The change writes something its author has no right to write where it
    /// wrote it.
    #[error("device {device} wrote {what}, which it has no right to")]
    NoRight {
        /// The author, short.
        device: String,
        /// What it wrote, in words.
        what: String,
    },
}

/// The space's member devices.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    founder: Option<DeviceId>,
    members: Vec<Member>,
}

/// Where membership is read: the document now, or as it was at some heads.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, D: ReadDoc> {
    pub doc: &'a D,
    pub heads: Option<&'a [ChangeHash]>,
}

impl<D: ReadDoc> View<'_, D> {
    /// Every value at `obj[key]`, with the id of the operation that set it.
    pub fn all(&self, obj: &ObjId, key: &str) -> Vec<(Value<'_>, ObjId)> {
        let got = match self.heads {
            None => self.doc.get_all(obj, key),
            Some(h) => self.doc.get_all_at(obj, key, h),
        };
        got.unwrap_or_default()
    }

    /// Every object of type `ty` at `obj[key]`.
    pub fn objects(&self, obj: &ObjId, key: &str, ty: ObjType) -> Vec<ObjId> {
        self.all(obj, key)
            .into_iter()
            .filter_map(|(v, id)| matches!(v, Value::Object(t) if t == ty).then_some(id))
            .collect()
    }

    /// The keys of a map.
    pub fn keys(&self, obj: &ObjId) -> Vec<String> {
        match self.heads {
            None => self.doc.keys(obj).collect(),
            Some(h) => self.doc.keys_at(obj, h).collect(),
        }
    }
}

/// The counter and actor of an operation id (`None` for the root).
pub(crate) fn op_of(id: &ObjId) -> Option<(u64, &ActorId)> {
    match id {
        ObjId::Root => None,
        ObjId::Id(counter, actor, _) => Some((*counter, actor)),
    }
}

/// One entry of `devices`, as written.
struct Entry {
    id: DeviceId,
    by: Option<DeviceId>,
    counter: u64,
    seat: Option<Seat>,
    name: String,
    added_at: i64,
    obj: ObjId,
}

impl Membership {
    /// Reads the membership of `doc`, taking the founder from the document
    /// (the device that made the first `devices` map).
    pub fn of(doc: &impl ReadDoc) -> Membership {
        let view = View { doc, heads: None };
        match founder_in(&view) {
            Some(founder) => Membership::read(&view, founder),
            None => Membership::default(),
        }
    }

    /// Reads the membership of `doc` grown from `founder`, the founding
    /// device this home pinned when it made or joined the space.
    pub fn pinned(doc: &impl ReadDoc, founder: DeviceId) -> Membership {
        Membership::read(&View { doc, heads: None }, founder)
    }

    /// The membership of `doc` as it was at `heads` (a change's causal past,
    /// its dependencies), grown from `founder`. At no heads (before the
    /// space's first change) the founder alone, in seat a.
    pub fn at(doc: &Automerge, heads: &[ChangeHash], founder: DeviceId) -> Membership {
        if heads.is_empty() {
            return Membership {
                founder: Some(founder),
                members: vec![Member {
                    id: founder,
                    seat: Seat::A,
                    name: String::new(),
                    added_at: 0,
                    added_by: None,
                    revoked_after: None,
                    revoked_after_op: None,
                }],
            };
        }
        Membership::read(
            &View {
                doc,
                heads: Some(heads),
            },
            founder,
        )
    }

    fn read<D: ReadDoc>(view: &View<'_, D>, founder: DeviceId) -> Membership {
        let entries = entries(view);
        // Revocations move cut-offs, and a cut-off can void an entry its device
        // wrote after it (and with it that entry's revocations): repeat until
        // nothing moves. A couple has a handful of devices.
        let mut members = Vec::new();
        let mut cuts: Vec<(DeviceId, u64, Option<u64>)> = Vec::new();
        for _ in 0..8 {
            members = closure(&entries, founder, &cuts);
            let next = revocations(view, &entries, &members);
            if next == cuts {
                break;
            }
            cuts = next;
        }
        for (id, seq, op) in &cuts {
            if let Some(m) = members.iter_mut().find(|m| m.id == *id) {
                m.revoked_after = Some(*seq);
                m.revoked_after_op = *op;
            }
        }
        members.extend(voided(&entries, &members));
        members.sort_by_key(|m| (m.seat, m.added_at));
        Membership {
            founder: Some(founder),
            members,
        }
    }

    /// The device that founded the space.
    pub fn founder(&self) -> Option<DeviceId> {
        self.founder
    }

    /// Every member, revoked ones included.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `id`, if it is one.
    pub fn get(&self, id: &DeviceId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == *id)
    }

    /// The member that writes as `actor`.
    pub fn by_actor(&self, actor: &ActorId) -> Option<&Member> {
        self.members.iter().find(|m| m.id.is_actor(actor))
    }

    /// True if `id` is a member that has not been revoked: such a device may
    /// connect.
    pub fn is_active(&self, id: &DeviceId) -> bool {
        self.get(id).is_some_and(Member::is_active)
    }

    /// The devices that may connect.
    pub fn active(&self) -> Vec<DeviceId> {
        self.members
            .iter()
            .filter(|m| m.is_active())
            .map(|m| m.id)
            .collect()
    }

    /// True if some active device sits in `seat`.
    pub fn seat_is_held(&self, seat: Seat) -> bool {
        self.members.iter().any(|m| m.seat == seat && m.is_active())
    }

    /// True if the operation with id `op` (counter and actor) was written by
    /// a member before any cut-off of its own: a value that may speak for the
    /// space (a membership entry, a key).
    pub fn counts(&self, op: &ObjId) -> bool {
        op_of(op)
            .is_some_and(|(counter, actor)| self.by_actor(actor).is_some_and(|m| !m.wrote_after_cut(counter)))
    }

    /// Whether change number `seq` of `actor` counts.
    pub fn check_change(&self, actor: &ActorId, seq: u64) -> Result<(), ChangeRefusal> {
        // Members are matched by bytes: decoding the key is only needed to name
        // a stranger.
        let Some(m) = self.by_actor(actor) else {
            return Err(match DeviceId::from_actor(actor) {
                Some(id) => ChangeRefusal::NotAMember(id.short()),
                None => ChangeRefusal::NotADevice,
            });
        };
        match m.revoked_after {
            Some(cut) if seq > cut => Err(ChangeRefusal::Revoked(m.id.short())),
            _ => Ok(()),
        }
    }
}

/// The founding device: the maker of the `devices` map with the lowest
/// operation id. The founding change's operations come first in every
/// history; any later map has a higher counter.
fn founder_in<D: ReadDoc>(view: &View<'_, D>) -> Option<DeviceId> {
    view.objects(&ROOT, "devices", ObjType::Map)
        .iter()
        .filter_map(|o| op_of(o).map(|(c, a)| (c, a.clone())))
        .min()
        .and_then(|(_, actor)| DeviceId::from_actor(&actor))
}

/// Every entry of every `devices` map, with the device that wrote it.
fn entries<D: ReadDoc>(view: &View<'_, D>) -> Vec<Entry> {
    let mut out = Vec::new();
    for coll in view.objects(&ROOT, "devices", ObjType::Map) {
        for key in view.keys(&coll) {
            let Ok(id) = key.parse::<DeviceId>() else { continue };
            for obj in view.objects(&coll, &key, ObjType::Map) {
                let Some((counter, actor)) = op_of(&obj) else {
                    continue;
                };
                let by = DeviceId::from_actor(actor);
                // Only what the entry's writer put in it describes the device.
                let own = |field: &str| -> Vec<ScalarValue> {
                    view.all(&obj, field)
                        .into_iter()
                        .filter(|(_, op)| op_of(op).is_some_and(|(_, a)| a == actor))
                        .filter_map(|(v, _)| match v {
                            Value::Scalar(s) => Some(s.into_owned()),
                            Value::Object(_) => None,
                        })
                        .collect()
                };
                let seat = own("seat")
                    .iter()
                    .find_map(|s| s.as_str().and_then(|s| s.parse().ok()));
                let name = own("name")
                    .iter()
                    .find_map(|s| s.as_str().map(str::to_string))
                    .unwrap_or_default();
                let added_at = own("added_at").iter().find_map(access::scalar_int).unwrap_or(0);
                out.push(Entry {
                    id,
                    by,
                    counter,
                    seat,
                    name,
                    added_at,
                    obj,
                });
            }
        }
    }
    // Deterministic: the earliest entry for a device is the one that counts.
    out.sort_by_key(|e| (e.counter, e.by.map(|b| *b.as_bytes())));
    out
}

/// The closure from `founder` over entries written by a member, before any
/// cut-off of the writer in `cuts`.
fn closure(entries: &[Entry], founder: DeviceId, cuts: &[(DeviceId, u64, Option<u64>)]) -> Vec<Member> {
    let after_cut = |by: &DeviceId, counter: u64| {
        cuts.iter()
            .any(|(d, _, op)| d == by && op.is_some_and(|cut| counter > cut))
    };
    let mut members: Vec<Member> = Vec::new();
    let mut grew = true;
    while grew {
        grew = false;
        for e in entries {
            if members.iter().any(|m| m.id == e.id) {
                continue;
            }
            let writer_ok = match e.by {
                Some(by) if by == founder && e.id == founder => true,
                Some(by) => members.iter().any(|m| m.id == by) && !after_cut(&by, e.counter),
                None => false,
            };
            let Some(seat) = e.seat else { continue };
            if !writer_ok {
                continue;
            }
            members.push(Member {
                id: e.id,
                seat,
                name: e.name.clone(),
                added_at: e.added_at,
                added_by: e.by.filter(|b| *b != e.id),
                revoked_after: None,
                revoked_after_op: None,
            });
            grew = true;
        }
    }
    members
}

/// Devices added by a member after its own cut-off (or by such a device): they
/// never counted, but their edits may have reached members that had not yet
/// heard of the revocation, and travel on like the revoked device's own. They
/// are listed as revoked from their first change, so nothing they wrote has
/// authority and none of their changes is taken from them directly.
fn voided(entries: &[Entry], members: &[Member]) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::new();
    let mut grew = true;
    while grew {
        grew = false;
        for e in entries {
            let Some(seat) = e.seat else { continue };
            let Some(by) = e.by else { continue };
            if members.iter().chain(out.iter()).any(|m| m.id == e.id) {
                continue;
            }
            if !members.iter().chain(out.iter()).any(|m| m.id == by) {
                continue;
            }
            out.push(Member {
                id: e.id,
                seat,
                name: e.name.clone(),
                added_at: e.added_at,
                added_by: Some(by),
                revoked_after: Some(0),
                revoked_after_op: Some(0),
            });
            grew = true;
        }
    }
    out
}

/// The cut-off of every revoked member: the earliest `revoked_after` written
/// on its entries by any member (with the operation counter written with it,
/// when there is one).
fn revocations<D: ReadDoc>(
    view: &View<'_, D>,
    entries: &[Entry],
    members: &[Member],
) -> Vec<(DeviceId, u64, Option<u64>)> {
    let by_member = |op: &ObjId| {
        op_of(op)
            .and_then(|(_, a)| DeviceId::from_actor(a))
            .is_some_and(|by| members.iter().any(|m| m.id == by))
    };
    let mut cuts: Vec<(DeviceId, u64, Option<u64>)> = Vec::new();
    for e in entries {
        if !members.iter().any(|m| m.id == e.id) {
            continue;
        }
        for (v, op) in view.all(&e.obj, "revoked_after") {
            let Value::Scalar(s) = v else { continue };
            let Some(seq) = access::scalar_int(&s).and_then(|n| u64::try_from(n).ok()) else {
                continue;
            };
            if !by_member(&op) {
                continue;
            }
            // The operation counter written with this cut-off, by the same
            // writer.
            let writer = op_of(&op).map(|(_, a)| a.clone());
            let cut_op = view
                .all(&e.obj, "revoked_after_op")
                .into_iter()
                .filter(|(_, o)| op_of(o).map(|(_, a)| a.clone()) == writer)
                .find_map(|(v, _)| match v {
                    Value::Scalar(s) => access::scalar_int(&s).and_then(|n| u64::try_from(n).ok()),
                    Value::Object(_) => None,
                });
            match cuts.iter_mut().find(|(d, _, _)| *d == e.id) {
                Some(c) if seq < c.1 => *c = (e.id, seq, cut_op),
                Some(_) => {}
                None => cuts.push((e.id, seq, cut_op)),
            }
        }
    }
    cuts.sort_by_key(|(d, _, _)| *d.as_bytes());
    cuts
}

/// The highest sequence number among `actor`'s changes in `doc` (0 if none),
/// and the last operation counter of that change.
pub fn latest_change(doc: &Automerge, actor: &ActorId) -> (u64, u64) {
    doc.get_changes_meta(&[])
        .iter()
        .filter(|c| c.actor.as_ref() == actor)
        .map(|c| (c.seq, c.max_op))
        .max()
        .unwrap_or((0, 0))
}

/// The highest sequence number among `actor`'s changes in `doc` (0 if none).
pub fn latest_seq(doc: &Automerge, actor: &ActorId) -> u64 {
    latest_change(doc, actor).0
}

impl Editor<'_> {
    /// Revokes `device`: its changes so far stay; any later one is refused. The
    /// cut-off is the last of its changes this document holds.
    pub fn revoke_device(&mut self, device: DeviceId) -> Result<u64, ModelError> {
        let members = Membership::of(&*self.doc);
        let Some(member) = members.get(&device) else {
            return Err(ModelError::NotFound {
                what: "device",
                prefix: device.short(),
            });
        };
        if !member.is_active() {
            return Err(ModelError::Refused(format!(
                "device {} is already revoked",
                device.short()
            )));
        }
        let (cut, cut_op) = latest_change(self.doc, &device.actor());
        self.change(format!("revoke device {}", device.short()), |tx, _, now| {
            let devices = map_in(tx, &ROOT, "devices")?;
            for obj in access::objects(&*tx, &devices, &device.to_string(), ObjType::Map) {
                tx.put(&obj, "revoked_after", ScalarValue::Int(cut as i64))?;
                tx.put(&obj, "revoked_after_op", ScalarValue::Int(cut_op as i64))?;
                tx.put(&obj, "revoked_at", ScalarValue::Timestamp(now))?;
            }
            Ok(cut)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceSecret;
    use crate::space::tests::founded;

    fn device(n: u8) -> DeviceId {
        DeviceSecret::from_bytes(&[n; 32]).device_id()
    }

    #[test]
    fn members_are_the_closure_from_the_founder() {
        let (mut doc, founder) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::B, "phone")
            .unwrap();
        // Device 2 (a member) adds device 3.
        let mut as_two = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut as_two, Seat::B, 2)
            .add_device(device(3), Seat::B, "tablet")
            .unwrap();
        // Device 9, not a member, writes an entry for device 8.
        let mut as_nine = as_two.fork().with_actor(device(9).actor());
        Editor::new(&mut as_nine, Seat::A, 3)
            .add_device(device(8), Seat::A, "evil")
            .unwrap();

        let m = Membership::of(&as_nine);
        assert_eq!(m.founder(), Some(founder));
        assert!(m.is_active(&founder));
        assert!(m.is_active(&device(2)));
        assert!(m.is_active(&device(3)));
        assert_eq!(m.get(&device(3)).unwrap().added_by, Some(device(2)));
        assert!(
            !m.is_active(&device(8)),
            "an entry by a non-member does not count"
        );
        assert!(m.get(&device(9)).is_none());
        assert_eq!(
            m.check_change(&device(9).actor(), 1),
            Err(ChangeRefusal::NotAMember(device(9).short()))
        );
        assert_eq!(Membership::pinned(&as_nine, founder).active(), m.active());
    }

    #[test]
    fn a_revoked_device_keeps_its_past_but_not_its_future() {
        let (mut doc, _) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::B, "phone")
            .unwrap();
        let mut phone = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut phone, Seat::B, 2).rename("Alex").unwrap();
        doc.merge(&mut phone).unwrap();
        assert_eq!(
            Editor::new(&mut doc, Seat::A, 3)
                .revoke_device(device(2))
                .unwrap(),
            1
        );
        let m = Membership::of(&doc);
        assert!(!m.is_active(&device(2)));
        assert!(m.check_change(&device(2).actor(), 1).is_ok());
        assert_eq!(
            m.check_change(&device(2).actor(), 2),
            Err(ChangeRefusal::Revoked(device(2).short()))
        );
        assert!(
            Editor::new(&mut doc, Seat::A, 4)
                .revoke_device(device(2))
                .is_err()
        );
        assert!(
            Editor::new(&mut doc, Seat::A, 4)
                .revoke_device(device(7))
                .is_err()
        );
    }

    /// Finding 1 of the security review: a member's change that puts a fresh
    /// `devices` map at the root, holding only its author, made that device
    /// the founder and the only member. Such a change is refused where it
    /// arrives (`authority`); read with the pinned founder, a document that
    /// holds one anyway never makes its author a member.
    #[test]
    fn a_replaced_devices_map_does_not_make_its_author_the_founder() {
        let (mut doc, founder) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::B, "phone")
            .unwrap();
        Editor::new(&mut doc, Seat::A, 2)
            .revoke_device(device(2))
            .unwrap();
        let mut evil = doc.fork().with_actor(device(2).actor());
        evil.transact::<_, _, automerge::AutomergeError>(|tx| {
            let d = tx.put_object(ROOT, "devices", ObjType::Map)?;
            let me = tx.put_object(&d, device(2).to_string(), ObjType::Map)?;
            tx.put(&me, "seat", "a")?;
            tx.put(&me, "name", "mine now")?;
            Ok(())
        })
        .unwrap();
        let pinned = Membership::pinned(&evil, founder);
        assert_eq!(pinned.founder(), Some(founder));
        assert!(!pinned.is_active(&device(2)));
        assert!(pinned.get(&device(2)).is_none());
    }

    #[test]
    fn two_devices_revoking_each_other_at_once_are_both_revoked() {
        let (mut doc, founder) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::A, "phone")
            .unwrap();
        let mut phone = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut doc, Seat::A, 2)
            .revoke_device(device(2))
            .unwrap();
        Editor::new(&mut phone, Seat::A, 2)
            .revoke_device(founder)
            .unwrap();
        doc.merge(&mut phone).unwrap();
        let m = Membership::of(&doc);
        assert!(!m.is_active(&founder));
        assert!(!m.is_active(&device(2)));
    }

    #[test]
    fn an_entry_a_device_wrote_after_its_cut_off_does_not_count() {
        let (mut doc, founder) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::A, "phone")
            .unwrap();
        let mut phone = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut doc, Seat::A, 2)
            .revoke_device(device(2))
            .unwrap();
        // The phone, not yet knowing, adds a device of its own.
        Editor::new(&mut phone, Seat::A, 3)
            .add_device(device(5), Seat::A, "tablet")
            .unwrap();
        doc.merge(&mut phone).unwrap();
        let m = Membership::pinned(&doc, founder);
        assert!(
            !m.is_active(&device(5)),
            "listed as revoked from its first change"
        );
        assert_eq!(m.get(&device(5)).and_then(|d| d.revoked_after), Some(0));
        assert!(!m.is_active(&device(2)));
        // Membership at the phone's causal past: before the revocation.
        let heads = phone.get_heads();
        let then = Membership::at(&doc, &heads, founder);
        assert!(then.is_active(&device(2)));
        assert!(then.is_active(&device(5)));
    }
}
