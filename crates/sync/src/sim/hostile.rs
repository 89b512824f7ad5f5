//! A hostile member device: at random points of a run, one of the couple's
//! devices runs a modified client and offers a victim a change, signed with
//! its own (valid) key, that writes what it has no right to. The victim's
//! session, the one that ships, must refuse it whole; nothing of it reaches
//! the victim's document.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, AutomergeError, ObjId, ObjType, ROOT, ReadDoc, Value};
use duet_model::{Membership, Seat};

use super::device::{Device, SPACE_ID};
use crate::proto::frame::FrameDecoder;
use crate::proto::session::Session;

/// The attacks, by name: each writes into `doc` as the hostile device, of
/// seat `seat`.
const ATTACKS: [(&str, Attack); 6] = [
    ("replaces the device list", |tx, _| {
        let d = tx.put_object(ROOT, "devices", ObjType::Map)?;
        let me = tx.put_object(&d, "00".repeat(32), ObjType::Map)?;
        tx.put(&me, "seat", "a")
    }),
    ("writes the other partner's check-in", |tx, seat| {
        let c = map_or_make(tx, &ROOT, "checkins")?;
        let w = map_or_make(tx, &c, "2026-W49")?;
        match map(tx, &w, seat.other().as_str()) {
            Some(part) => tx.put(&part, "rating", 1),
            None => {
                let part = tx.put_object(&w, seat.other().as_str(), ObjType::Map)?;
                tx.put(&part, "rating", 1)
            }
        }
    }),
    ("accepts an agreement for the other partner", |tx, seat| {
        for a in items(tx, "agreements") {
            if let Some(acc) = map(tx, &a, "accepted") {
                return tx.put(&acc, seat.other().as_str(), 99);
            }
        }
        Ok(())
    }),
    (
        "records the outcome of a step only the other partner owns",
        |tx, seat| {
            let other = seat.other();
            for i in items(tx, "issues") {
                let Some(steps) = map(tx, &i, "steps") else {
                    continue;
                };
                let theirs = tx.keys(&steps).filter_map(|k| map(tx, &steps, &k)).find(|s| {
                matches!(tx.get(s, "owner"), Ok(Some((Value::Scalar(v), _))) if v.as_str() == Some(other.as_str()))
            });
                if let Some(s) = theirs {
                    tx.put(&s, "outcome", "missed")?;
                    return tx.put(&s, "done", true);
                }
            }
            Ok(())
        },
    ),
    ("deletes a shared issue", |tx, _| {
        let Some(issues) = map(tx, &ROOT, "issues") else {
            return Ok(());
        };
        match tx.keys(&issues).next() {
            Some(k) => tx.delete(&issues, k.as_str()),
            None => Ok(()),
        }
    }),
    ("adds a device to the other partner's seat", |tx, seat| {
        let Some(d) = map(tx, &ROOT, "devices") else {
            return Ok(());
        };
        let e = tx.put_object(&d, "11".repeat(32), ObjType::Map)?;
        tx.put(&e, "seat", seat.other().as_str())
    }),
];

/// The attack that adds a device to the other partner's seat.
const ADD_TO_OTHER_SEAT: usize = 5;

type Attack = fn(&mut Transaction<'_>, Seat) -> Result<(), AutomergeError>;

fn map(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

fn map_or_make(tx: &mut Transaction<'_>, obj: &ObjId, key: &str) -> Result<ObjId, AutomergeError> {
    match map(&*tx, obj, key) {
        Some(id) => Ok(id),
        None => tx.put_object(obj, key, ObjType::Map),
    }
}

fn items(doc: &impl ReadDoc, collection: &str) -> Vec<ObjId> {
    let Some(c) = map(doc, &ROOT, collection) else {
        return Vec::new();
    };
    doc.keys(&c).filter_map(|k| map(doc, &c, &k)).collect()
}

/// What became of one attack.
pub(crate) enum Outcome {
    /// The victim refused it, with this reason.
    Refused(String),
    /// There was nothing to attack (say, no step yet).
    Nothing,
    /// The victim took it: a bug.
    Accepted(&'static str),
}

/// Device `hostile` offers device `victim` attack number `kind`, over a
/// session pair driven in memory; the victim's document is a copy (a
/// refused write is discarded, as the store does).
pub(crate) fn attack(devices: &[Device], hostile: usize, victim: usize, kind: u64, now: u64) -> Outcome {
    let (name, write) = ATTACKS[(kind % ATTACKS.len() as u64) as usize];
    let (h, v) = (&devices[hostile], &devices[victim]);
    // The attacker holds everything both hold, and writes on top of it.
    let mut doc: Automerge = h.doc.clone();
    if doc.merge(&mut v.doc.clone()).is_err() {
        return Outcome::Nothing;
    }
    let before = doc.get_heads();
    let seat = h.seat;
    let founder = devices[0].id;
    // Adding a device to the other seat is the host's part in pairing while
    // that seat holds no active device: an attack only once it does.
    if name == ATTACKS[ADD_TO_OTHER_SEAT].0 && !Membership::pinned(&doc, founder).seat_is_held(seat.other()) {
        return Outcome::Nothing;
    }
    if doc.transact(|tx| write(tx, seat)).is_err() {
        return Outcome::Nothing;
    }
    let made = doc.get_changes(&before);
    let [change] = made.as_slice() else {
        return Outcome::Nothing;
    };
    let mut atts = h.attestations();
    atts.extend(v.attestations());
    atts.push(h.sign(&change.hash()));
    let mut theirs = Session::new(v.id, SPACE_ID, founder, None, now);
    let mut mine = Session::new(h.id, SPACE_ID, founder, None, now);
    let mut victim_doc = v.doc.clone();
    for _ in 0..64 {
        let mut moved = false;
        while let Some(bytes) = theirs.poll_transmit() {
            moved = true;
            for frame in frames(&bytes) {
                if let Err(e) = mine.handle(&frame, &mut victim_doc, now) {
                    return Outcome::Refused(e.to_string());
                }
                mine.generate(&victim_doc, &v.attestations());
            }
        }
        while let Some(bytes) = mine.poll_transmit() {
            moved = true;
            for frame in frames(&bytes) {
                let mut scratch = doc.clone();
                if theirs.handle(&frame, &mut scratch, now).is_err() {
                    break;
                }
                theirs.generate(&doc, &atts);
            }
        }
        if !moved || victim_doc.get_change_by_hash(&change.hash()).is_some() {
            break;
        }
    }
    if victim_doc.get_change_by_hash(&change.hash()).is_some() {
        Outcome::Accepted(name)
    } else {
        Outcome::Nothing
    }
}

fn frames(bytes: &[u8]) -> Vec<crate::proto::frame::Frame> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    std::iter::from_fn(|| d.next_frame().ok().flatten()).collect()
}
