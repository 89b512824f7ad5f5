//! Typed, forgiving reads of automerge values.
//!
//! A document arrives from the partner's devices, so nothing in it is trusted to
//! have the expected shape: a value of the wrong type reads as absent, never as a
//! panic. Where two devices created the same key concurrently, automerge keeps
//! both objects as a conflict; [`objects`] returns all of them so that readers can
//! merge their contents instead of silently showing only the winner.

use automerge::ObjId;

use crate::ids::ItemId;
use automerge::{ActorId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

/// A scalar value and the actor whose operation set it.
#[derive(Debug, Clone)]
pub(crate) struct SetValue {
    pub value: ScalarValue,
    pub actor: Option<ActorId>,
}

/// The actor of the operation that made `id`.
pub(crate) fn actor_of(id: &ObjId) -> Option<ActorId> {
    match id {
        ObjId::Root => None,
        ObjId::Id(_, actor, _) => Some(actor.clone()),
    }
}

/// The scalar at `obj[key]`, if there is one.
pub(crate) fn scalar(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
        _ => None,
    }
}

/// The string at `obj[key]`: a scalar string or a text object.
pub(crate) fn string(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_string),
        Ok(Some((Value::Object(ObjType::Text), id))) => doc.text(&id).ok(),
        _ => None,
    }
}

/// The integer at `obj[key]` (signed, unsigned or a timestamp).
pub(crate) fn int(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<i64> {
    scalar(doc, obj, key).and_then(|s| scalar_int(&s))
}

/// A scalar as an integer, if it is one.
pub(crate) fn scalar_int(s: &ScalarValue) -> Option<i64> {
    match s {
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(*i),
        ScalarValue::Uint(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

/// The boolean at `obj[key]`.
pub(crate) fn boolean(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<bool> {
    scalar(doc, obj, key).and_then(|s| s.as_bool())
}

/// Every value currently set at `obj[key]`: one, or several when devices set it
/// concurrently. The winner (what [`scalar`] returns) comes first.
pub(crate) fn all_scalars(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Vec<SetValue> {
    let Ok(all) = doc.get_all(obj, key) else {
        return Vec::new();
    };
    let winner = match doc.get(obj, key) {
        Ok(Some((_, id))) => Some(id),
        _ => None,
    };
    let mut out: Vec<(bool, SetValue)> = all
        .into_iter()
        .filter_map(|(v, id)| match v {
            Value::Scalar(s) => Some((
                Some(&id) == winner.as_ref(),
                SetValue {
                    value: s.into_owned(),
                    actor: actor_of(&id),
                },
            )),
            Value::Object(_) => None,
        })
        .collect();
    out.sort_by_key(|(is_winner, _)| !*is_winner);
    out.into_iter().map(|(_, v)| v).collect()
}

/// Every object of type `ty` at `obj[key]`, the winner first. Usually one; more
/// when two devices created the same key concurrently (two partners starting this
/// week's check-in offline).
pub(crate) fn objects(doc: &impl ReadDoc, obj: &ObjId, key: &str, ty: ObjType) -> Vec<ObjId> {
    let Ok(all) = doc.get_all(obj, key) else {
        return Vec::new();
    };
    let winner = match doc.get(obj, key) {
        Ok(Some((_, id))) => Some(id),
        _ => None,
    };
    let mut out: Vec<ObjId> = all
        .into_iter()
        .filter_map(|(v, id)| matches!(v, Value::Object(t) if t == ty).then_some(id))
        .collect();
    out.sort_by_key(|id| Some(id) != winner.as_ref());
    out
}

/// The winning object of type `ty` at `obj[key]`.
pub(crate) fn object(doc: &impl ReadDoc, obj: &ObjId, key: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(obj, key) {
        Ok(Some((Value::Object(t), id))) if t == ty => Some(id),
        _ => None,
    }
}

/// The strings of a list object, skipping anything that is not a string.
pub(crate) fn string_list(doc: &impl ReadDoc, list: &ObjId) -> Vec<String> {
    doc.list_range(list, ..)
        .filter_map(|item| match Value::from(item.value) {
            Value::Scalar(s) => s.as_str().map(str::to_string),
            Value::Object(_) => None,
        })
        .collect()
}

/// The keys of a map object.
pub(crate) fn keys(doc: &impl ReadDoc, map: &ObjId) -> Vec<String> {
    doc.keys(map).collect()
}

/// A top-level collection (all of its objects, see [`objects`]).
pub(crate) fn collection(doc: &impl ReadDoc, name: &str) -> Vec<ObjId> {
    objects(doc, &ROOT, name, ObjType::Map)
}

/// The item `id` of a top-level collection of items keyed by id.
pub(crate) fn item(doc: &impl ReadDoc, collection_name: &str, id: &ItemId) -> Option<ObjId> {
    collection(doc, collection_name)
        .iter()
        .find_map(|c| object(doc, c, id.as_str(), ObjType::Map))
}

/// Every item id of a top-level collection, sorted.
pub(crate) fn item_ids(doc: &impl ReadDoc, collection_name: &str) -> Vec<ItemId> {
    let mut ids: Vec<ItemId> = collection(doc, collection_name)
        .iter()
        .flat_map(|c| keys(doc, c))
        .filter_map(|k| ItemId::from_stored(&k))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
