//! Where the objects a change writes into sit in the document, and whether
//! any rule of [`super`] names them.
//!
//! A received history writes into a few thousand objects, most of them text
//! (an issue's body, a note's text) that no rule bears on beyond "any active
//! member". Each object's place is worked out once, from its parent's (one
//! step up the document per object rather than a walk to the root per
//! operation), and shared by every operation into it.

use std::collections::HashMap;
use std::rc::Rc;

use automerge::legacy::{Key, ObjectId, Op, OpId};
use automerge::{ActorId, Automerge, ObjId, ObjType, Prop, ROOT, ReadDoc, Value, ValueRef};

/// Objects looked up one by one before the rest of the document is mapped
/// in one walk (a sync message's few changes never get there; a whole
/// history does at once).
const LOOKUPS_BEFORE_WALK: usize = 64;

/// How a list position reads in a path matched against the rules (a map key
/// that happens to read the same only makes a rule apply where it would not).
pub(super) const LIST_POSITION: &str = "[]";

/// An object's path from the root (map keys, [`LIST_POSITION`] for a list
/// position), and whether a rule names objects there.
#[derive(Debug)]
pub(super) struct Place {
    path: Vec<String>,
    ruled: bool,
}

impl Place {
    fn new(path: Vec<String>) -> Place {
        let ruled = {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            names_a_rule(&segs)
        };
        Place { path, ruled }
    }

    /// The root.
    pub(super) fn root() -> Place {
        Place::new(Vec::new())
    }

    /// The place of this object's child at `seg`.
    pub(super) fn child(&self, seg: String) -> Place {
        self.below(std::iter::once(seg))
    }

    /// The place reached from this one through `segs`.
    pub(super) fn below(&self, segs: impl IntoIterator<Item = String>) -> Place {
        let mut path = self.path.clone();
        path.extend(segs);
        Place::new(path)
    }

    /// The path, segment by segment.
    pub(super) fn segs(&self) -> Vec<&str> {
        self.path.iter().map(String::as_str).collect()
    }

    /// True for the root.
    pub(super) fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// The last segment (`None` for the root).
    pub(super) fn last(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }

    /// True if some rule beyond "any active member" may apply to an operation
    /// into this object, whatever its key and action: false for text, a
    /// title, tags, settings. Operations into other objects still face the
    /// rule that nothing is made over or deleted away (judged apart).
    pub(super) fn is_ruled(&self) -> bool {
        self.ruled
    }
}

/// True if `segs` is the path of an object some arm of the rules in
/// [`super::Judge::check`] matches (by path; the arm may then look at the key
/// and the action). Must cover every arm there but the last (`_`): an object
/// it says no to is not matched against them.
pub(super) fn names_a_rule(segs: &[&str]) -> bool {
    matches!(
        segs,
        [] | ["devices" | "keys" | "partners" | "checkins", ..]
            | ["issues" | "agreements"]
            | ["issues" | "agreements", _]
            | ["agreements", _, "accepted"]
            | ["issues", _, "steps"]
            | ["issues", _, "steps", _]
            | ["issues", _, "steps", _, "accepted_by"]
            | ["issues", _, "notes", LIST_POSITION]
    )
}

/// The places of the objects a document holds, each worked out once.
pub(super) struct Places<'a> {
    doc: &'a Automerge,
    root: Rc<Place>,
    known: HashMap<OpId, Option<Rc<Place>>>,
    lookups: usize,
    walked: bool,
}

impl<'a> Places<'a> {
    pub(super) fn new(doc: &'a Automerge) -> Places<'a> {
        Places {
            doc,
            root: Rc::new(Place::root()),
            known: HashMap::new(),
            lookups: 0,
            walked: false,
        }
    }

    /// The root's place.
    pub(super) fn root(&self) -> Rc<Place> {
        self.root.clone()
    }

    /// The place of the object made by operation `id`, `None` if the
    /// document does not hold it.
    pub(super) fn of(&mut self, id: &OpId) -> Option<Rc<Place>> {
        if let Some(known) = self.known.get(id) {
            return known.clone();
        }
        self.lookups += 1;
        if !self.walked && self.lookups > LOOKUPS_BEFORE_WALK {
            self.walk();
            if let Some(known) = self.known.get(id) {
                return known.clone();
            }
        }
        // An object the walk does not reach (one deleted or overwritten, the
        // loser of a conflict), or before it: up the document to the root or an object whose place is known.
        let mut chain: Vec<(OpId, String)> = Vec::new();
        let mut cur = id.clone();
        let mut place = loop {
            let obj = ObjId::Id(cur.counter(), cur.actor().clone(), usize::MAX);
            let parent = self.doc.parents(&obj).ok().and_then(|mut p| p.next());
            let Some(parent) = parent else {
                self.known.insert(cur, None);
                for (o, _) in chain {
                    self.known.insert(o, None);
                }
                return None;
            };
            chain.push((
                cur,
                match parent.prop {
                    Prop::Map(k) => k,
                    Prop::Seq(_) => LIST_POSITION.to_string(),
                },
            ));
            match parent.obj {
                ObjId::Root => break self.root.clone(),
                ObjId::Id(counter, actor, _) => {
                    let up = OpId(counter, actor);
                    match self.known.get(&up) {
                        Some(Some(p)) => break p.clone(),
                        Some(None) => return None,
                        None => cur = up,
                    }
                }
            }
        };
        while let Some((o, seg)) = chain.pop() {
            place = Rc::new(place.child(seg));
            self.known.insert(o, Some(place.clone()));
        }
        Some(place)
    }

    /// The place of the object `obj` an operation of a change by `actor`
    /// writes into: `made` holds the objects the change made (by counter),
    /// `own` tells the change's own object ids.
    pub(super) fn written(
        &mut self,
        obj: &ObjectId,
        actor: &ActorId,
        made: &HashMap<u64, &Op>,
        own: &impl Fn(&ObjectId) -> Option<u64>,
    ) -> Option<Rc<Place>> {
        let mut tail: Vec<String> = Vec::new();
        let mut cur = obj;
        // Objects this change made, up to one the document held before.
        for _ in 0..=made.len() {
            match own(cur).and_then(|c| made.get(&c)) {
                Some(maker) => {
                    tail.push(match &maker.key {
                        Key::Map(k) => k.to_string(),
                        Key::Seq(_) => LIST_POSITION.to_string(),
                    });
                    cur = &maker.obj;
                }
                None => break,
            }
        }
        let held = match cur {
            ObjectId::Root => self.root(),
            ObjectId::Id(id) if id.actor() == actor && own(cur).is_some() => return None,
            ObjectId::Id(id) => self.of(id)?,
        };
        if tail.is_empty() {
            return Some(held);
        }
        tail.reverse();
        Some(Rc::new(held.below(tail)))
    }

    /// Maps the place of every object the document shows (the winning value
    /// of each key and list position), from the root down: a step per object
    /// rather than a search by id. Text is not walked into.
    fn walk(&mut self) {
        self.walked = true;
        let doc = self.doc;
        let mut todo: Vec<(ObjId, ObjType, Rc<Place>)> = vec![(ObjId::Root, ObjType::Map, self.root.clone())];
        while let Some((obj, ty, place)) = todo.pop() {
            let mut found = |seg: String, made: Option<ObjType>, id: ObjId| {
                let (Some(ty), ObjId::Id(counter, actor, _)) = (made, id) else {
                    return;
                };
                let child = Rc::new(place.child(seg));
                self.known
                    .insert(OpId(counter, actor.clone()), Some(child.clone()));
                if ty != ObjType::Text {
                    todo.push((ObjId::Id(counter, actor, usize::MAX), ty, child));
                }
            };
            match ty {
                ObjType::Map | ObjType::Table => {
                    for item in doc.map_range(&obj, ..) {
                        if item.conflict {
                            // Both partners made the same week's check-in.
                            for (value, id) in doc.get_all(&obj, item.key.as_ref()).unwrap_or_default() {
                                found(item.key.to_string(), object(&value), id);
                            }
                        } else {
                            let id = item.id();
                            found(item.key.into_owned(), made(&item.value), id);
                        }
                    }
                }
                ObjType::List => {
                    for item in doc.list_range(&obj, ..) {
                        if item.conflict {
                            for (value, id) in doc.get_all(&obj, item.index).unwrap_or_default() {
                                found(LIST_POSITION.to_string(), object(&value), id);
                            }
                        } else {
                            let id = item.id();
                            found(LIST_POSITION.to_string(), made(&item.value), id);
                        }
                    }
                }
                ObjType::Text => {}
            }
        }
    }
}

/// The document's id for a change's object id.
pub(super) fn exid(obj: &ObjectId) -> ObjId {
    match obj {
        ObjectId::Root => ROOT,
        // The actor index is looked up by the document when it does not match.
        ObjectId::Id(id) => ObjId::Id(id.counter(), id.actor().clone(), usize::MAX),
    }
}

/// The type of the object a value is, if it is one.
fn made(value: &ValueRef<'_>) -> Option<ObjType> {
    match value {
        ValueRef::Object(ty) => Some(*ty),
        ValueRef::Scalar(_) => None,
    }
}

/// The type of the object a value is, if it is one.
fn object(value: &Value<'_>) -> Option<ObjType> {
    match value {
        Value::Object(ty) => Some(*ty),
        Value::Scalar(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::tests::founded;
    use automerge::legacy::OpType;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};

    /// Every object any change of `doc` made, by the id of the making op.
    fn made(doc: &Automerge) -> Vec<OpId> {
        doc.get_changes(&[])
            .iter()
            .flat_map(|c| {
                let start = c.start_op().get();
                let actor = c.actor_id().clone();
                c.decode()
                    .operations
                    .into_iter()
                    .enumerate()
                    .filter(|(_, op)| matches!(op.action, OpType::Make(_)))
                    .map(move |(i, _)| OpId(start + i as u64, actor.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The path of `obj` as automerge walks it up to the root.
    fn up(doc: &Automerge, obj: &OpId) -> Option<Vec<String>> {
        let id = ObjId::Id(obj.counter(), obj.actor().clone(), usize::MAX);
        let parents = doc.parents(&id).ok()?;
        Some(
            parents
                .path()
                .into_iter()
                .map(|(_, prop)| match prop {
                    Prop::Map(k) => k,
                    Prop::Seq(_) => LIST_POSITION.to_string(),
                })
                .collect(),
        )
    }

    /// Objects the walk from the root reaches, objects it does not (deleted,
    /// replaced, the loser of a conflict, inside text) and objects looked up
    /// one by one all get the place automerge gives them.
    #[test]
    fn walked_and_looked_up_places_agree_with_automerge() {
        let (mut doc, _) = founded(1);
        let mut other = doc.fork().with_actor(ActorId::from(&[2; 32][..]));
        for (d, seat) in [(&mut doc, "a"), (&mut other, "b")] {
            d.transact::<_, _, automerge::AutomergeError>(|tx| {
                let c = tx.put_object(ROOT, "checkins", ObjType::Map)?;
                let w = tx.put_object(&c, "2026-W49", ObjType::Map)?;
                let p = tx.put_object(&w, seat, ObjType::Map)?;
                let l = tx.put_object(&p, "appreciations", ObjType::List)?;
                tx.insert(&l, 0, "dinner")?;
                let n = tx.insert_object(&l, 1, ObjType::Map)?;
                tx.put_object(&n, "text", ObjType::Text)?;
                let gone = tx.put_object(&p, "gone", ObjType::Map)?;
                tx.put_object(&gone, "inner", ObjType::List)?;
                tx.delete(&p, "gone")?;
                let replaced = tx.put_object(&p, "replaced", ObjType::Map)?;
                tx.put(&replaced, "x", 1)?;
                tx.put_object(&p, "replaced", ObjType::Map)?;
                Ok(())
            })
            .unwrap();
        }
        doc.merge(&mut other).unwrap();
        let objects = made(&doc);
        assert!(objects.len() > 20, "{}", objects.len());
        for walk_first in [false, true] {
            let mut places = Places::new(&doc);
            if walk_first {
                places.walk();
            }
            for obj in &objects {
                let place = places.of(obj).map(|p| p.path.clone());
                assert_eq!(place, up(&doc, obj), "{walk_first} {:?}", obj.counter());
            }
        }
        // The walk set off by a lookup, innermost objects first.
        let mut places = Places::new(&doc);
        places.lookups = LOOKUPS_BEFORE_WALK;
        for obj in objects.iter().rev() {
            assert_eq!(places.of(obj).map(|p| p.path.clone()), up(&doc, obj));
        }
        assert!(places.walked);
        let stranger = OpId(1, ActorId::from(&[9; 32][..]));
        assert!(places.of(&stranger).is_none());
    }

    #[test]
    fn rules_name_the_records_and_the_membership_but_not_their_text() {
        for ruled in [
            &[][..],
            &["devices"],
            &["devices", "x", "y"],
            &["keys", "k", "envelopes"],
            &["partners", "a"],
            &["checkins"],
            &["checkins", "w", "b", "went_well", "[]"],
            &["issues"],
            &["issues", "i"],
            &["issues", "i", "steps"],
            &["issues", "i", "steps", "s"],
            &["issues", "i", "steps", "s", "accepted_by"],
            &["issues", "i", "notes", "[]"],
            &["agreements", "g"],
            &["agreements", "g", "accepted"],
            // A list where a map was expected is still matched as one.
            &["issues", LIST_POSITION],
        ] {
            assert!(names_a_rule(ruled), "{ruled:?}");
        }
        for plain in [
            &["issues", "i", "body"][..],
            &["issues", "i", "notes"],
            &["issues", "i", "notes", "[]", "text"],
            &["issues", "i", "tags"],
            &["issues", "i", "steps", "s", "text"],
            &["agreements", "g", "text"],
            &["settings"],
        ] {
            assert!(!names_a_rule(plain), "{plain:?}");
        }
    }
}
