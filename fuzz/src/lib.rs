//! duet's fuzz harness: one function per fuzz target.
//!
//! The same functions serve the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`,
//! each a one-line `fuzz_target!`) and the stable regression test
//! (`crates/sync/tests/fuzz_corpus.rs`, which includes this file as a module
//! and replays every committed corpus and regression input through [`TARGETS`]).
//! So a crash found by the fuzzer, once its input is saved under
//! `fuzz/regressions/<target>/`, is replayed by `cargo test` on stable.
//!
//! Every function takes arbitrary bytes and must not panic. Where a property can
//! be stated (a round trip, "a refused message leaves the session closed", "no
//! confirmation without the code"), it is asserted, so a violation is a crash
//! too. Each function documents how it reads its input; the seeds in
//! `fuzz/corpus/` are made by [`seeds()`] (run `cargo run --example seeds` in
//! `fuzz/`).
//!
//! Everything is deterministic: fixed device keys, fixed times, fixed pairing
//! entropy. A recorded peer's bytes therefore replay exactly, which is what
//! lets the seeds reach deep states (a whole sync, a whole pairing) and the
//! fuzzer mutate from there.
//!
//! Each target has its module (`src/<target>.rs`; both pairing targets share
//! `src/pairing.rs`); the fixed world they share (devices, documents, the
//! input cursor, every model read) is in `src/fixtures.rs` and the seeds in
//! `src/seeds.rs`. This file keeps the list of targets, the runner and the
//! known panics, and re-exports every public name at the crate root. The
//! submodules name each other through `super::`, never `crate::`, because
//! the regression test includes this file as a module of its own crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attestation;
mod bundle_open;
mod check_new_changes;
mod document_load;
mod document_ops;
mod fixtures;
mod frame_decoder;
mod inflate;
mod membership;
mod pairing;
mod parse_chunks;
mod relay_wire;
mod seeds;
mod session;
mod store_open;
mod wire_message;

// Every public name at the crate root, as the fuzz targets, the seed example
// and the regression test name them. (The regression test includes this file
// as a private module and uses few of them, hence the allow.)
#[allow(unused_imports)]
pub use {
    attestation::attestation,
    bundle_open::bundle_open,
    check_new_changes::check_new_changes,
    document_load::{document_load, fix_checksums},
    document_ops::document_ops,
    fixtures::{
        BINDING, CODE, FOUNDER, HOST_ENTROPY, JOINER_ENTROPY, KNOWN, OTHER_CODE, PARTNER, SPACE_ID, STRANGER,
        T0, THIRD, as_device, attest_all, device, home, item, missing_object_change, partner_edits,
        read_everything, relay_home, secret, seq_gap_change, seq_gap_change_on, space_key, week, with_third,
    },
    frame_decoder::frame_decoder,
    inflate::inflate_check,
    membership::membership,
    pairing::{
        MISMATCH, REJECT, WRONG_CODE, join_accept, join_request, pairing_host, pairing_joiner, record_pairing,
    },
    parse_chunks::parse_chunks,
    relay_wire::relay_wire,
    seeds::seeds,
    session::{HomeSide, SAVED, SIGN, Scenario, member_sends, member_sends_chunks, record_session, session},
    store_open::store_open,
    wire_message::wire_message,
};

use std::cell::Cell;
use std::sync::{Once, OnceLock};

/// Panics in dependencies that are known, reported, and not yet fixed or
/// worked around (see `fuzz/known-crashes/README.md`): the source file (the
/// end of its path, version included) and line. While fuzzing, an input that
/// ends in one of these is treated as uninteresting rather than as a crash, so
/// that a run goes on looking for new bugs instead of stopping at a known one
/// within seconds. The inputs themselves are kept under
/// `fuzz/known-crashes/<target>/`, and the stable test checks that they still
/// crash (and says to move them to `fuzz/regressions/` once they do not).
/// Set `DUET_FUZZ_STRICT=1` to have the fuzz targets crash on them too.
pub const KNOWN_PANICS: &[(&str, u32)] = &[
    // Applying a change whose actor (or one of its other actors) the document
    // does not know, when the change's seq is not 1: `lookup_actor(..).unwrap()`.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 1121),
    // Applying a change (or loading a document) with an operation on an
    // object that does not exist: `panic!("Obj {:?} Missing from Index")`.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 920),
    // Applying a change whose seq is not one more than its actor's last:
    // `assert_eq!(self.seq_index[actor].len() + 1, change.seq())`.
    ("automerge-0.12.0/src/change_graph.rs", 569),
    // Applying hostile list or text operations: `a.pos.unwrap()` when sorting
    // a sequence's new operations.
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 146),
    // `Change::from_bytes` (so `verify::parse_chunks`) of a change whose
    // operation ids do not fit: `u32::try_from(..).unwrap()` in `ObjId::new`.
    ("automerge-0.12.0/src/types.rs", 464),
    // `get_changes` after applying some hostile changes:
    // `from_build_meta_inner(..).unwrap()` on `MissingOps`.
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 788),
    // Loading a document whose columns end early: hexane's LEB128 decoder
    // unwraps an `UnexpectedEof`.
    ("hexane-1.0.0-alpha.5/src/lib.rs", 354),
    // `get_changes` after applying some hostile changes: a self-check that
    // only runs with debug assertions (`Bundle::for_hashes(..).unwrap()`).
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 753),
    // Found in the last runs, not diagnosed further (see known-crashes/README.md):
    // a change with an author whose seq is not 1 (`assert!(change.seq() == 1)`),
    ("automerge-0.12.0/src/change_graph.rs", 564),
    // `import_ops_to(..).unwrap()` while applying,
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 859),
    // `debug_assert!(doc.ops.validate_op_order())` after applying (debug only),
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 949),
    // `assert!(self.data[index].is_none())` in the change collector,
    ("automerge-0.12.0/src/op_set2/change/collector.rs", 299),
    // hexane's "take past end" assertion while decoding columns,
    ("hexane-1.0.0-alpha.5/src/raw.rs", 622),
    // `assert!(self.entry.is_empty())` while applying,
    ("automerge-0.12.0/src/op_set2/change/batch.rs", 136),
    // an index out of bounds in `write_change_ops` while loading rebuilds
    // the changes of a document,
    ("automerge-0.12.0/src/op_set2/change.rs", 306),
    // and `Change::decode()` (which duet never calls) unwrapping actor lookups.
    ("automerge-0.12.0/src/change.rs", 322),
    ("automerge-0.12.0/src/change.rs", 331),
    // `save()` of a document loaded without checking its heads
    // (`VerificationMode::DontCheck`), whose heads name no change.
    ("automerge-0.12.0/src/change_graph.rs", 144),
];

thread_local! {
    static KNOWN_PANIC_SEEN: Cell<bool> = const { Cell::new(false) };
}

/// Whether a panic at `file:line` is one of [`KNOWN_PANICS`].
pub fn is_known_panic(file: &str, line: u32) -> bool {
    let file = file.replace('\\', "/");
    KNOWN_PANICS.iter().any(|(f, l)| file.ends_with(f) && line == *l)
}

/// Runs `target` on `data` for a cargo-fuzz target: any panic is a crash
/// (libfuzzer-sys's hook aborts), except one of [`KNOWN_PANICS`], after which
/// the input is simply dropped.
pub fn fuzz(target: fn(&[u8]), data: &[u8]) {
    static HOOK: Once = Once::new();
    static STRICT: OnceLock<bool> = OnceLock::new();
    if *STRICT.get_or_init(|| std::env::var_os("DUET_FUZZ_STRICT").is_some_and(|v| v != "0")) {
        target(data);
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location()
                && is_known_panic(at.file(), at.line())
            {
                KNOWN_PANIC_SEEN.with(|k| k.set(true));
                return;
            }
            previous(info);
        }));
    });
    KNOWN_PANIC_SEEN.with(|k| k.set(false));
    if std::panic::catch_unwind(|| target(data)).is_err() && !KNOWN_PANIC_SEEN.with(Cell::get) {
        // The previous hook (libfuzzer-sys's) normally aborted already.
        std::process::abort();
    }
}

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the
/// cargo-fuzz binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("frame_decoder", frame_decoder),
    ("wire_message", wire_message),
    ("session", session),
    ("pairing_host", pairing_host),
    ("pairing_joiner", pairing_joiner),
    ("parse_chunks", parse_chunks),
    ("check_new_changes", check_new_changes),
    ("attestation", attestation),
    ("membership", membership),
    ("document_load", document_load),
    ("document_ops", document_ops),
    ("store_open", store_open),
    ("bundle_open", bundle_open),
    ("relay_wire", relay_wire),
    ("inflate_check", inflate_check),
];
