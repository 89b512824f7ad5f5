//! The `document_ops` target: a hostile document built by a program of raw
//! automerge edits by five writers, with merges, then every model read.
//! Input: `[flags]`, then at most 64 operations of a byte each (writer and
//! edit) followed by their operands (see [`document_ops()`]).

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value};

use super::fixtures::{Input, KNOWN, device, home, read_everything};
use super::membership::membership_invariants;

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
