//! Telling a refusal between honest devices that one of the former bugs
//! explains (see "Former bugs" in the simulator's docs) from a new one, and
//! explaining a refused frame in a trace.

use crate::proto::frame::{Frame, FrameDecoder};
use crate::proto::session::SyncError;
use crate::proto::verify::VerifyError;
use crate::proto::wire;

/// For a trace: what a refused sync frame carried, against what the device
/// held before (`doc`) and after automerge applied it (`working`).
pub(super) fn explain(
    doc: &automerge::Automerge,
    working: &automerge::Automerge,
    frame: &Frame,
) -> Vec<String> {
    use automerge::ReadDoc;
    use automerge::sync::Message as AmMessage;
    let mut out = Vec::new();
    let Ok(wire::Message::Sync(m)) = wire::Message::decode(frame) else {
        return out;
    };
    for a in &m.attestations {
        let seq = working.get_change_by_hash(&a.hash).map(|c| c.seq());
        let held = doc.get_change_by_hash(&a.hash).is_some();
        out.push(format!(
            "          attests {} at {} (seq {seq:?}, held before: {held})",
            a.device.short(),
            a.hash
        ));
    }
    let Ok(am) = AmMessage::decode(&m.message) else {
        return out;
    };
    out.push(format!("          heads {:?} need {:?}", am.heads, am.need));
    for chunk in am.changes.iter() {
        for c in crate::proto::verify::parse_chunks(chunk).unwrap_or_default() {
            let who = duet_model::DeviceId::from_actor(c.actor_id()).map_or("?".into(), |d| d.short());
            out.push(format!(
                "          carries {} seq {} {} deps {:?} (held before: {}, after: {})",
                who,
                c.seq(),
                c.hash(),
                c.deps(),
                doc.get_change_by_hash(&c.hash()).is_some(),
                working.get_change_by_hash(&c.hash()).is_some()
            ));
        }
    }
    let before = doc.get_heads();
    for c in working.get_changes(&before) {
        let who = duet_model::DeviceId::from_actor(c.actor_id()).map_or("?".into(), |d| d.short());
        out.push(format!("          applied {} seq {} {}", who, c.seq(), c.hash()));
    }
    out
}

/// True when `err` is the first known bug in the protocol core: a change automerge
/// held back in this device's document (received earlier, from another session,
/// while one of its dependencies was missing) is released by this frame, and
/// the session, which never saw the change nor an attestation for it, refuses
/// the whole message as unsigned. Recognised by a change applied by the frame
/// that no frame of this session carried.
pub(super) fn released_refusal(
    err: &SyncError,
    doc: &automerge::Automerge,
    working: &automerge::Automerge,
    received: &[Frame],
) -> bool {
    use automerge::sync::Message as AmMessage;
    if !matches!(
        err,
        SyncError::Refused(crate::proto::verify::VerifyError::Unsigned(_))
    ) {
        return false;
    }
    let mut carried = std::collections::BTreeSet::new();
    for f in received {
        let Ok(wire::Message::Sync(m)) = wire::Message::decode(f) else {
            continue;
        };
        let Ok(am) = AmMessage::decode(&m.message) else {
            continue;
        };
        for chunk in am.changes.iter() {
            for c in crate::proto::verify::parse_chunks(chunk).unwrap_or_default() {
                carried.insert(c.hash());
            }
        }
    }
    working
        .get_changes(&doc.get_heads())
        .iter()
        .any(|c| !carried.contains(&c.hash()))
}

/// True if `bytes` is a sync frame that carries a whole document (automerge's
/// `save()`) followed by changes `doc` holds back rather than holds: `save()`
/// keeps held-back changes by default.
pub(super) fn carries_orphans(bytes: &[u8], doc: &automerge::Automerge) -> bool {
    use automerge::sync::Message as AmMessage;
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let Ok(Some(f)) = d.next_frame() else {
        return false;
    };
    let Ok(wire::Message::Sync(m)) = wire::Message::decode(&f) else {
        return false;
    };
    let Ok(am) = AmMessage::decode(&m.message) else {
        return false;
    };
    // A whole document starts with a document chunk (type 0 after the magic
    // bytes and the checksum); only then can held-back changes ride along.
    am.changes.iter().any(|chunk| {
        chunk.get(8) == Some(&0)
            && crate::proto::verify::parse_chunks(chunk)
                .unwrap_or_default()
                .iter()
                .any(|c| doc.get_change_meta_by_hash(&c.hash()).is_none())
    })
}

/// The sync frames `received` by a session, decoded: their attestations and
/// the changes they carried.
fn carried(received: &[Frame]) -> (Vec<duet_model::Attestation>, Vec<automerge::Change>) {
    use automerge::sync::Message as AmMessage;
    let (mut atts, mut changes) = (Vec::new(), Vec::new());
    for f in received {
        let Ok(wire::Message::Sync(m)) = wire::Message::decode(f) else {
            continue;
        };
        atts.extend(m.attestations);
        let Ok(am) = AmMessage::decode(&m.message) else {
            continue;
        };
        for chunk in am.changes.iter() {
            changes.extend(crate::proto::verify::parse_chunks(chunk).unwrap_or_default());
        }
    }
    (atts, changes)
}

/// True when `err` is the known bug of a gap in a chain: the session refused
/// changes by a device as unsigned while it had received an attestation of a
/// later change of that device that would reach them, but that change, or
/// one between it and them, is one this device has neither received nor held
/// yet.
pub(super) fn gap_refusal(err: &SyncError, working: &automerge::Automerge, received: &[Frame]) -> bool {
    let SyncError::Refused(VerifyError::Unsigned(who)) = err else {
        return false;
    };
    let by_who = |actor: &automerge::ActorId| {
        duet_model::DeviceId::from_actor(actor).is_some_and(|d| d.short() == *who)
    };
    let (atts, changes) = carried(received);
    let mut present: std::collections::BTreeSet<u64> = working
        .get_changes_meta(&[])
        .iter()
        .filter(|c| by_who(&c.actor))
        .map(|c| c.seq)
        .collect();
    present.extend(changes.iter().filter(|c| by_who(c.actor_id())).map(|c| c.seq()));
    atts.iter().filter(|a| a.device.short() == *who).any(|a| {
        match changes.iter().find(|c| c.hash() == a.hash) {
            Some(tip) => (1..tip.seq()).any(|k| !present.contains(&k)),
            None => working.get_change_meta_by_hash(&a.hash).is_none(),
        }
    })
}
