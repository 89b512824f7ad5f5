//! The `document_load` target: a document loaded from damaged bytes, then
//! every model read. Input: `[flags]` (fix checksums, skip the heads check,
//! accept a partial load) then document bytes. The loading is shared with the
//! `membership` target.

use automerge::{Automerge, LoadOptions, OnPartialLoad, VerificationMode};
use duet_model::{Editor, Seat, space};
use sha2::{Digest, Sha256};

use super::fixtures::{FOUNDER, Input, T0, device, read_everything};

/// A document loaded from damaged bytes, then every model read.
///
/// Input: `[flags]` then document bytes; flags as for the loading options
/// (bit 0 fix checksums, bit 1 skip the heads check, bit 2 accept a partial
/// load). Checks: no read panics; saving works; an older schema migrates or
/// fails cleanly.
pub fn document_load(data: &[u8]) {
    let Some(doc) = load_damaged(data) else {
        return;
    };
    read_everything(&doc);
    let _ = doc.save();
    if let Ok(space::SchemaCheck::Older(_)) = space::check_schema(&doc) {
        let mut d = doc.with_actor(device(FOUNDER).actor());
        let _ = Editor::new(&mut d, Seat::A, T0).migrate();
        read_everything(&d);
    }
}

/// Loads a document from damaged bytes.
///
/// Input: `[flags]` then the bytes. Flags: bit 0 recompute every chunk's
/// checksum first (so that mutations get past it), bit 1 skip the heads check,
/// bit 2 accept a partial load. With flags 0 this is `Automerge::load`, what
/// the store does with a snapshot.
pub(crate) fn load_damaged(data: &[u8]) -> Option<Automerge> {
    let mut input = Input(data);
    let flags = input.byte();
    let mut bytes = input.rest().to_vec();
    if flags & 1 != 0 {
        fix_checksums(&mut bytes);
    }
    let mut options = LoadOptions::new();
    if flags & 2 != 0 {
        options = options.verification_mode(VerificationMode::DontCheck);
    }
    if flags & 4 != 0 {
        options = options.on_partial_load(OnPartialLoad::Ignore);
    }
    Automerge::load_with_options(&bytes, options).ok()
}

/// Rewrites the checksum of every uncompressed chunk (automerge's storage
/// format: magic, checksum, type, LEB128 length, data; the checksum is the
/// first 4 bytes of SHA-256 over type, length and data).
pub fn fix_checksums(bytes: &mut [u8]) {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut at = 0;
    while bytes.len() >= at + 9 && bytes[at..at + 4] == MAGIC {
        let kind = bytes[at + 8];
        let (mut len, mut used) = (0u64, 0usize);
        for (i, b) in bytes[at + 9..].iter().enumerate().take(10) {
            len |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            used = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let start = at + 9 + used;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return;
        };
        if end > bytes.len() {
            return;
        }
        if kind != 2 {
            let mut h = Sha256::new();
            h.update([kind]);
            let mut l = end - start;
            loop {
                let b = (l & 0x7f) as u8;
                l >>= 7;
                if l == 0 {
                    h.update([b]);
                    break;
                }
                h.update([b | 0x80]);
            }
            h.update(&bytes[start..end]);
            let digest = h.finalize();
            bytes[at + 4..at + 8].copy_from_slice(&digest[..4]);
        }
        at = end;
    }
}
