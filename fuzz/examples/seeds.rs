//! Writes the seed corpora: `fuzz/corpus/<target>/<name>`.
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```
//!
//! Every target's seeds come from `duet_fuzz::seeds` (deterministic: real
//! sync conversations and pairings between the harness's fixed devices,
//! recorded), except `store_open`'s, which are real stores made here and
//! shrunk to 512-byte pages so that they stay small. Existing files of the
//! same name are overwritten; others (such as inputs the fuzzer found and
//! someone chose to keep) are left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use duet_fuzz::{
    FOUNDER, PARTNER, SPACE_ID, T0, as_device, attest_all, device, home, item, partner_edits, secret,
};
use duet_model::{Editor, Founder, Seat, space};
use duet_store::{NewStore, Store, StoreError};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0usize;
    let mut write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("make the corpus directory");
        fs::write(dir.join(name), bytes).expect("write a seed");
        total += bytes.len();
        println!("{target:>18}/{name:<24} {:>7} bytes", bytes.len());
    };
    for (target, name, bytes) in duet_fuzz::seeds() {
        write(target, &name, &bytes);
    }
    write("store_open", "fresh", &store_file(false));
    write("store_open", "lived-in", &store_file(true));
    write(
        "store_open",
        "not-a-database",
        b"SQLite format 3\0 but not really",
    );
    println!("{total} bytes in all");

    // Inputs that crash a target because of a known dependency bug (see
    // known-crashes/README.md), and the ones duet now survives (regressions/,
    // kept so that they never crash again): made here so that how they were
    // made is on record. The session and the store no longer crash on theirs.
    let known = Path::new(env!("CARGO_MANIFEST_DIR")).join("known-crashes");
    let fixed = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let keep = |target: &str, name: &str, bytes: &[u8]| {
        let root = if matches!(target, "session" | "store_open") {
            &fixed
        } else {
            &known
        };
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("make the directory");
        fs::write(dir.join(name), bytes).expect("write a crash input");
        println!("{target:>18}/{name:<24} {:>7} bytes (crash input)", bytes.len());
    };
    let seq_gap = duet_fuzz::seq_gap_change();
    let missing_object = duet_fuzz::missing_object_change();
    keep(
        "session",
        "member-sends-seq-gap-change",
        &duet_fuzz::member_sends(&seq_gap),
    );
    keep(
        "session",
        "member-sends-change-on-missing-object",
        &duet_fuzz::member_sends(&missing_object),
    );
    keep("parse_chunks", "seq-gap-change", seq_gap.raw_bytes());
    keep(
        "parse_chunks",
        "change-on-missing-object",
        missing_object.raw_bytes(),
    );
    keep("store_open", "log-holds-seq-gap-change", &store_with_seq_gap());
    // A change libFuzzer found that `Change::from_bytes` panics on, sent by a member.
    if let Ok(chunk) = fs::read(known.join("parse_chunks/fuzzed-change-from-bytes-obj-id")) {
        let input = duet_fuzz::member_sends_chunks(&chunk, Vec::new());
        keep("session", "member-sends-undecodable-change", &input);
    }
}

/// A fresh home whose change log also holds [`duet_fuzz::seq_gap_change`],
/// with its true hash: the store opens, and reading the document panics.
fn store_with_seq_gap() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("duet.db");
    fs::write(&path, store_file(false)).expect("write the store");
    let mut store = Store::open(dir.path()).expect("open the store");
    let change = store.read(duet_fuzz::seq_gap_change_on).expect("read the store");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open the store file");
    conn.execute(
        "INSERT INTO changes (hash, actor, bytes, stored_at) VALUES (?1, ?2, ?3, 0)",
        rusqlite::params![
            change.hash().0.as_slice(),
            change.actor_id().to_bytes(),
            change.raw_bytes()
        ],
    )
    .expect("insert the change");
    drop(conn);
    fs::read(&path).expect("read the store file")
}

/// A real home's database file, shrunk. `lived_in` adds the partner's
/// changes with their attestation, a snapshot, a journal entry, a peer and a
/// saved sync state.
fn store_file(lived_in: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let home_dir: PathBuf = dir.path().join("home");
    let key = secret(FOUNDER);
    let new = NewStore {
        device: &key,
        device_name: "laptop",
        meta: &[("space_id", SPACE_ID), ("seat", "a")],
        now_ms: T0,
    };
    let mut store = Store::create(&home_dir, &new, |doc| -> Result<(), StoreError> {
        let founder = Founder {
            space_id: SPACE_ID.into(),
            name: "Sam".into(),
            device: device(FOUNDER),
            device_name: "laptop".into(),
        };
        space::create(doc, &founder, T0).expect("found");
        Editor::new(doc, Seat::A, T0 + 1_000)
            .add_device(device(PARTNER), Seat::B, "phone")
            .expect("add device");
        Ok(())
    })
    .expect("create a store");
    if lived_in {
        // The partner's edits arrive as a sync would store them.
        let mut theirs = as_device(&home(), PARTNER);
        partner_edits(&mut theirs, T0 + 10_000);
        store
            .write_with(|w| -> Result<(), StoreError> {
                let before = w.doc.get_heads();
                let changes = theirs.get_changes(&[]);
                w.doc.apply_changes(changes).expect("apply");
                let new = w.doc.get_changes(&before);
                w.attestations = attest_all(&theirs)
                    .into_iter()
                    .filter(|a| new.iter().any(|c| c.hash() == a.hash))
                    .collect();
                Ok(())
            })
            .expect("store the partner's changes");
        store.compact().expect("snapshot");
        store
            .write(|doc| -> Result<(), StoreError> {
                Editor::new(doc, Seat::A, T0 + 20_000)
                    .add_note(&item(1), "after the snapshot")
                    .expect("note");
                Ok(())
            })
            .expect("a change after the snapshot");
        store.journal_add("private words", T0).expect("journal");
        store
            .set_peer_address(&device(PARTNER), "127.0.0.1:4242")
            .expect("peer");
        store
            .set_sync_state(&device(PARTNER), &automerge::sync::State::new().encode())
            .expect("sync state");
        store.private_set("review", Some("2025-12-01")).expect("private");
    }
    let path = store.path().to_path_buf();
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open the store file");
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA page_size = 512; VACUUM;")
        .expect("shrink");
    drop(conn);
    fs::read(&path).expect("read the store file")
}
