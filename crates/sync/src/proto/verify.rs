//! Checks on what a peer sends before it counts: every change well formed, made
//! by a member device that was not revoked at the time, and vouched for by that
//! device's signature.
//!
//! Signatures are per device, not per change: an [`Attestation`] signs a device's
//! newest change, and automerge changes name their dependencies by hash, so it
//! vouches for every change of that device below it. A received change counts
//! only if an attestation by its own actor reaches it through dependencies among
//! the changes this session has seen but this home did not yet hold.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::{Automerge, Change, ChangeHash};
use duet_model::{Attestation, ChangeRefusal, DeviceId, Membership};

/// Why received changes are refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A chunk of the automerge message is not well formed.
    #[error("malformed change data: {0}")]
    Malformed(String),
    /// An attestation's signature is wrong (forged or tampered).
    #[error("a change signature from device {0} does not verify (forged or tampered)")]
    BadSignature(String),
    /// A change no valid signature vouches for.
    #[error("a change by device {0} is not signed by it")]
    Unsigned(String),
    /// A change by a device that may not write.
    #[error(transparent)]
    Refused(#[from] ChangeRefusal),
}

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// Splits automerge chunk data into its chunks, checking each header, and
/// decodes the change chunks (which also checks their checksums). Document
/// chunks are left to automerge's own checked loading.
pub fn parse_chunks(data: &[u8]) -> Result<Vec<Change>, VerifyError> {
    let bad = |what: &str| VerifyError::Malformed(what.to_string());
    let mut changes = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 9 || rest[..4] != MAGIC {
            return Err(bad("a chunk does not start with automerge's magic bytes"));
        }
        let kind = rest[8];
        let (len, used) = uleb(&rest[9..]).ok_or_else(|| bad("a chunk length is unreadable"))?;
        let header = 9 + used;
        let total = header
            .checked_add(usize::try_from(len).map_err(|_| bad("a chunk is too long"))?)
            .filter(|t| *t <= rest.len())
            .ok_or_else(|| bad("a chunk is longer than the data"))?;
        let chunk = &rest[..total];
        match kind {
            CHUNK_CHANGE | CHUNK_COMPRESSED => {
                let change =
                    Change::from_bytes(chunk.to_vec()).map_err(|e| VerifyError::Malformed(e.to_string()))?;
                changes.push(change);
            }
            CHUNK_DOCUMENT => {}
            other => return Err(VerifyError::Malformed(format!("unknown chunk type {other}"))),
        }
        rest = &rest[total..];
    }
    Ok(changes)
}

/// Reads an unsigned LEB128 number; returns it and the bytes used.
fn uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Checks attestations' signatures; returns the valid ones or the first failure.
pub fn check_signatures(attestations: &[Attestation]) -> Result<(), VerifyError> {
    for a in attestations {
        if !a.verify() {
            return Err(VerifyError::BadSignature(a.device.short()));
        }
    }
    Ok(())
}

/// Checks the changes `new` (just applied to `doc`): each by a member allowed to
/// write it, and each reached from an attestation by its own device through
/// dependencies among `new` and `seen` (changes received but not yet applied).
///
/// A change a revoked device made after its cut-off is refused when that device
/// delivers it itself. Relayed by another member (whose device took it before
/// it learned of the revocation), it is accepted: refusing it would cut the
/// couple's devices apart for good, since everything that member wrote since
/// depends on it.
pub fn check_new_changes(
    doc: &Automerge,
    new: &[Change],
    seen: &HashMap<ChangeHash, Change>,
    attestations: &[Attestation],
    peer: &DeviceId,
) -> Result<(), VerifyError> {
    if new.is_empty() {
        return Ok(());
    }
    let members = Membership::of(doc);
    for c in new {
        match members.check_change(c.actor_id(), c.seq()) {
            Err(ChangeRefusal::Revoked(who)) if !peer.is_actor(c.actor_id()) => {
                tracing::warn!(device = %who, "accepting a revoked device's change relayed by a member");
            }
            other => other?,
        }
    }
    // The graph of not-yet-held changes: what was applied now and what waits.
    let mut graph: HashMap<ChangeHash, &Change> = seen.iter().map(|(h, c)| (*h, c)).collect();
    for c in new {
        graph.insert(c.hash(), c);
    }
    let mut covered: HashSet<ChangeHash> = HashSet::new();
    for a in attestations {
        if !graph.contains_key(&a.hash) {
            continue;
        }
        let mut queue = VecDeque::from([a.hash]);
        let mut visited = HashSet::new();
        while let Some(h) = queue.pop_front() {
            if !visited.insert(h) {
                continue;
            }
            let Some(c) = graph.get(&h) else { continue };
            if a.device.is_actor(c.actor_id()) {
                covered.insert(h);
            }
            queue.extend(c.deps().iter().copied());
        }
    }
    for c in new {
        if !covered.contains(&c.hash()) {
            let who = DeviceId::from_actor(c.actor_id()).map_or_else(|| "?".into(), |d| d.short());
            return Err(VerifyError::Unsigned(who));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::{DeviceSecret, Editor, Founder, Seat, space};

    /// The device delivering the changes in these tests: device b itself.
    fn peer() -> DeviceId {
        DeviceSecret::from_bytes(&[2; 32]).device_id()
    }

    fn space_with_partner() -> (Automerge, DeviceSecret, DeviceSecret) {
        let a = DeviceSecret::from_bytes(&[1; 32]);
        let b = DeviceSecret::from_bytes(&[2; 32]);
        let mut doc = Automerge::new().with_actor(a.device_id().actor());
        let founder = Founder {
            space_id: "5eed".into(),
            name: "Sam".into(),
            device: a.device_id(),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, 0).unwrap();
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(b.device_id(), Seat::B, "phone")
            .unwrap();
        (doc, a, b)
    }

    /// Device b makes `n` edits on a fork; returns the fork and its new changes.
    fn edits_by_b(doc: &Automerge, n: usize) -> (Automerge, Vec<Change>) {
        let mut fork = doc
            .fork()
            .with_actor(DeviceSecret::from_bytes(&[2; 32]).device_id().actor());
        let before = fork.get_heads();
        for i in 0..n {
            Editor::new(&mut fork, Seat::B, i as i64)
                .rename(&format!("Alex {i}"))
                .unwrap();
        }
        let changes = fork.get_changes(&before);
        (fork, changes)
    }

    #[test]
    fn one_attestation_vouches_for_a_devices_whole_run() {
        let (mut doc, _, b) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 5);
        let tip = changes.last().unwrap().hash();
        doc.apply_changes(changes.clone()).unwrap();
        let att = [b.attest(&tip)];
        check_signatures(&att).unwrap();
        check_new_changes(&doc, &changes, &HashMap::new(), &att, &peer()).unwrap();
    }

    #[test]
    fn unsigned_forged_and_foreign_changes_are_refused() {
        let (mut doc, a, b) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 2);
        let tip = changes.last().unwrap().hash();
        doc.apply_changes(changes.clone()).unwrap();
        // No attestation at all.
        assert!(matches!(
            check_new_changes(&doc, &changes, &HashMap::new(), &[], &peer()),
            Err(VerifyError::Unsigned(_))
        ));
        // Signed by the wrong device (a member, but not the author).
        assert!(matches!(
            check_new_changes(&doc, &changes, &HashMap::new(), &[a.attest(&tip)], &peer()),
            Err(VerifyError::Unsigned(_))
        ));
        // An attestation covering only the first change leaves the second unsigned.
        assert!(
            check_new_changes(
                &doc,
                &changes,
                &HashMap::new(),
                &[b.attest(&changes[0].hash())],
                &peer()
            )
            .is_err()
        );
        // A tampered signature.
        let mut forged = b.attest(&tip);
        forged.signature[10] ^= 0xff;
        assert!(matches!(
            check_signatures(&[forged]),
            Err(VerifyError::BadSignature(_))
        ));
    }

    #[test]
    fn changes_by_non_members_are_refused_even_when_signed() {
        let (doc, _, _) = space_with_partner();
        let stranger = DeviceSecret::from_bytes(&[7; 32]);
        let mut fork = doc.fork().with_actor(stranger.device_id().actor());
        let before = fork.get_heads();
        Editor::new(&mut fork, Seat::B, 0).rename("Mallory").unwrap();
        let changes = fork.get_changes(&before);
        let att = [stranger.attest(&changes[0].hash())];
        assert!(matches!(
            check_new_changes(&fork, &changes, &HashMap::new(), &att, &peer()),
            Err(VerifyError::Refused(ChangeRefusal::NotAMember(_)))
        ));
    }

    #[test]
    fn chunks_are_split_and_checked() {
        let (doc, _, _) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 3);
        let mut data = Vec::new();
        for c in &changes {
            data.extend_from_slice(c.raw_bytes());
        }
        assert_eq!(parse_chunks(&data).unwrap().len(), 3);
        assert!(
            parse_chunks(&doc.save()).unwrap().is_empty(),
            "document chunks are left to automerge"
        );
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(parse_chunks(&bad).is_err(), "a checksum mismatch is caught");
        assert!(
            parse_chunks(&data[..data.len() - 3]).is_err(),
            "truncation is caught"
        );
        assert!(parse_chunks(&[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 9, 0]).is_err());
    }
}
