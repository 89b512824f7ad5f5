//! The `check_new_changes` target: `verify::place` and `verify::check_members`
//! with arbitrary changes and attestations. Input: `[flags][count]`, then
//! attestation specs, then chunk data (see [`check_new_changes()`]).

use std::collections::HashMap;

use automerge::{Change, ChangeHash, ReadDoc};
use duet_model::{Attestation, ChangeRefusal, DeviceId, Membership};
use duet_sync::proto::verify;

use super::fixtures::{FOUNDER, Input, KNOWN, PARTNER, STRANGER, THIRD, device, home, relay_home, secret};

/// `verify::place` and `verify::check_members` with arbitrary changes and
/// attestations (the target keeps its old name so its corpus stays put).
///
/// Input: `[flags][count]`, then `count % 8` attestation specs, then chunk
/// data (changes). Flags: bit 0 the relay document ([`relay_home`]) instead of
/// [`home`]; bits 1-2 the delivering peer (devices 2, 3, 9, 1). A spec is a byte:
/// `& 3 == 0` raw (device, hash, signature: 128 bytes follow); `1` a valid
/// signature by known device `KNOWN[(b >> 2) & 3]` over the hash of change
/// `next byte` of the data; `2` the same key over 32 hash bytes that follow;
/// `3` that change's hash signed by the change's own author when known.
///
/// The changes wait, and `place` picks what may be applied. Checks: what it
/// picks applies in order with nothing held back, each picked change is
/// reached from an attestation by its own author naming a picked change, and
/// if the membership check passes, every author may write its change (or is
/// a revoked one relayed by someone else).
pub fn check_new_changes(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let count = input.byte() % 8;
    // (spec byte, raw attestation, hash, change index)
    type Spec = (u8, Option<[u8; 128]>, Option<[u8; 32]>, u8);
    let specs: Vec<Spec> = (0..count)
        .map(|_| {
            let b = input.byte();
            match b & 3 {
                0 => (b, input.array::<128>(), None, 0),
                1 | 3 => (b, None, None, input.byte()),
                _ => (b, None, input.array::<32>(), 0),
            }
        })
        .collect();
    let Ok(changes) = verify::parse_chunks(input.rest()) else {
        return;
    };
    let mut atts = Vec::new();
    for (b, raw, hash, index) in specs {
        let key = KNOWN[usize::from((b >> 2) & 3)];
        let change = changes.get(usize::from(index) % changes.len().max(1));
        let a = match b & 3 {
            0 => raw.and_then(|r| {
                let device = DeviceId::from_bytes(&r[..32])?;
                Some(Attestation {
                    device,
                    hash: ChangeHash(r[32..64].try_into().ok()?),
                    signature: r[64..].try_into().ok()?,
                })
            }),
            1 => change.map(|c| secret(key).attest(&c.hash())),
            2 => hash.map(|h| secret(key).attest(&ChangeHash(h))),
            _ => change.and_then(|c| {
                let n = KNOWN
                    .iter()
                    .copied()
                    .find(|&n| device(n).actor() == *c.actor_id())?;
                Some(secret(n).attest(&c.hash()))
            }),
        };
        atts.extend(a);
    }
    let peer = device([PARTNER, THIRD, STRANGER, FOUNDER][usize::from((flags >> 1) & 3)]);
    let mut doc = if flags & 1 != 0 { relay_home() } else { home() };
    let waiting: HashMap<ChangeHash, Change> = changes.into_iter().map(|c| (c.hash(), c)).collect();
    let placement = verify::place(&doc, &waiting, &atts);
    let ready: Vec<Change> = placement.ready.iter().map(|h| waiting[h].clone()).collect();
    for c in &ready {
        let author = DeviceId::from_actor(c.actor_id());
        assert!(
            placement
                .attestations
                .iter()
                .any(|a| Some(a.device) == author && placement.ready.contains(&a.hash)),
            "a change placed without an attestation by its author among the placed"
        );
    }
    if doc.apply_changes(ready.clone()).is_err() {
        return;
    }
    assert!(
        doc.get_missing_deps(&[]).is_empty(),
        "a placed change was held back"
    );
    let signatures = verify::check_signatures(&atts);
    match verify::check_members(&doc, &ready, device(FOUNDER), Some(&peer)) {
        Ok(()) => {
            let members = Membership::of(&doc);
            for c in &ready {
                let author = DeviceId::from_actor(c.actor_id()).expect("a placed change is by a device");
                match members.check_change(c.actor_id(), c.seq()) {
                    Ok(()) => {}
                    Err(ChangeRefusal::Revoked(_)) => {
                        assert_ne!(author, peer, "a revoked peer's own change accepted")
                    }
                    Err(other) => panic!("a change accepted that does not count: {other}"),
                }
            }
            if signatures.is_ok() {
                // Both checks passed: every author is a device whose key signed.
                for c in &ready {
                    assert!(
                        atts.iter()
                            .any(|a| a.device.actor() == *c.actor_id() && a.verify())
                    );
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
