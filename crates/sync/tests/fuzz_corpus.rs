//! Replays every committed fuzz input on stable, without cargo-fuzz.
//!
//! The fuzz targets' logic lives in `fuzz/src/` (one module per target under
//! `lib.rs`), included here as a module, so this test runs exactly what the
//! fuzzer runs. Every file under `fuzz/corpus/<target>/` (the seeds) and
//! `fuzz/regressions/<target>/` (inputs that once crashed a target, kept so
//! that they never crash again) goes through its target; one test per target.
//!
//! `fuzz/known-crashes/<target>/` holds inputs that still crash a target
//! because of a known, reported bug in a dependency (see the README there);
//! [`known_crashes_still_crash`] checks that they do, and fails once one is
//! fixed, so that it moves to `fuzz/regressions/` and stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code, missing_docs)]
mod harness;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The inputs of `target` under `fuzz/<kind>/<target>/`, sorted (hidden files
/// skipped).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs every corpus and regression input of `target`; fails listing each
/// input that panicked.
fn replay(target: &str) {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    let mut failed = Vec::new();
    for path in corpus.iter().chain(inputs("regressions", target).iter()) {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on: {failed:#?}");
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($target)),*];
            for (name, _) in harness::TARGETS {
                assert!(tested.contains(name), "fuzz target {name} has no replay test");
            }
        }
    };
}

replay_tests!(
    frame_decoder,
    wire_message,
    session,
    pairing_host,
    pairing_joiner,
    parse_chunks,
    check_new_changes,
    attestation,
    membership,
    document_load,
    document_ops,
    store_open,
    bundle_open,
    relay_wire,
    inflate_check,
);

/// Regression inputs sit under a directory named after a real target.
#[test]
fn regressions_name_real_targets() {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            assert!(
                harness::TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/regressions/{name} is not a fuzz target"
            );
        }
    }
}

/// Every known crash still crashes. When this fails, the bug behind an input
/// is fixed (or worked around): move the input to
/// `fuzz/regressions/<target>/` and drop its line from
/// `fuzz/known-crashes/README.md` (and, if no input needs it any more, from
/// `KNOWN_PANICS` in `fuzz/src/lib.rs`).
#[test]
fn known_crashes_still_crash() {
    let mut fixed = Vec::new();
    for (target, run) in harness::TARGETS {
        for path in inputs("known-crashes", target) {
            // Some crash only where automerge's debug assertions run.
            let debug_only = path.to_string_lossy().ends_with("-debug-only");
            if debug_only && !cfg!(debug_assertions) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_ok() {
                fixed.push(path.display().to_string());
            }
        }
    }
    assert!(
        fixed.is_empty(),
        "these known crashes no longer crash; move them to fuzz/regressions/: {fixed:#?}"
    );
}

/// The bundle seeds are of the format bundles have now: a seed that is
/// refused at its first bytes (an older format, a bad signature) leads the
/// fuzzer nowhere. (Seeds are rewritten by `cd fuzz && cargo run --example
/// seeds`.)
#[test]
fn bundle_seeds_open() {
    let mut ring = duet_sync::proto::keyring::Keyring::default();
    ring.insert(harness::space_key());
    let mut files = 0;
    for path in inputs("corpus", "bundle_open") {
        let data = std::fs::read(&path).unwrap();
        let Some((0, file)) = data.split_first() else {
            continue;
        };
        files += 1;
        if let Err(e) =
            duet_sync::proto::bundle::open(file, harness::SPACE_ID, &ring, &harness::secret(harness::PARTNER))
        {
            panic!("{} does not open: {e}", path.display());
        }
    }
    assert!(files >= 3, "only {files} bundle files among the seeds");
}
