//! The store against real files: persistence, parallel writers, damage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use duet_model::DeviceSecret;
use duet_store::{COMPACT_EVERY, DB_FILE, NewStore, Store, StoreError};

fn create(dir: &Path, key: u8) -> Store {
    let secret = DeviceSecret::from_bytes(&[key; 32]);
    let new = NewStore {
        device: &secret,
        device_name: "laptop",
        meta: &[("seat", "a")],
        now_ms: 0,
    };
    Store::create(dir, &new, |doc: &mut Automerge| {
        doc.transact(|tx| tx.put(ROOT, "n", 0i64))
            .map(|_| ())
            .map_err(|f| StoreError::Damaged {
                path: dir.into(),
                detail: f.error.to_string(),
            })
    })
    .unwrap()
}

fn bump(store: &mut Store) {
    store
        .write(|doc| {
            let n = doc
                .get(ROOT, "n")
                .unwrap()
                .and_then(|(v, _)| v.as_i64())
                .unwrap_or(0);
            doc.transact(|tx| tx.put(ROOT, "n", n + 1))
                .map(|_| ())
                .map_err(|_| StoreError::Busy("x".into()))
        })
        .unwrap();
}

fn n(store: &mut Store) -> i64 {
    store
        .read(|doc| doc.get(ROOT, "n").unwrap().and_then(|(v, _)| v.as_i64()).unwrap())
        .unwrap()
}

#[test]
fn writes_persist_and_the_key_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut s = create(&home, 1);
    bump(&mut s);
    drop(s);
    let mut s = Store::open(&home).unwrap();
    assert_eq!(n(&mut s), 1);
    assert_eq!(s.meta_get("seat").unwrap().as_deref(), Some("a"));
    assert_eq!(
        s.device_id().unwrap(),
        DeviceSecret::from_bytes(&[1; 32]).device_id()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "database must be owner-only, got {mode:o}");
        let mode = std::fs::metadata(&home).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "home must be owner-only, got {mode:o}");
    }
    assert!(matches!(
        Store::create(
            &home,
            &NewStore {
                device: &DeviceSecret::from_bytes(&[2; 32]),
                device_name: "x",
                meta: &[],
                now_ms: 0
            },
            |_| Ok::<_, StoreError>(())
        ),
        Err(StoreError::AlreadyExists(_))
    ));
}

#[test]
fn a_failed_edit_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    let before = s.stats().unwrap().changes;
    let r: Result<(), StoreError> = s.write(|doc| {
        doc.transact(|tx| tx.put(ROOT, "n", 99i64))
            .map_err(|_| StoreError::Busy("x".into()))?;
        Err(StoreError::Busy("refused".into()))
    });
    assert!(r.is_err());
    assert_eq!(s.stats().unwrap().changes, before);
    assert_eq!(n(&mut s), 0, "the half-made change is discarded from memory too");
}

#[test]
fn parallel_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    drop(create(dir.path(), 1));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut s = Store::open(&p).unwrap();
                for _ in 0..10 {
                    bump(&mut s);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(n(&mut s), 80);
}

#[test]
fn compaction_and_a_damaged_snapshot_rebuild_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    for _ in 0..COMPACT_EVERY + 5 {
        bump(&mut s);
    }
    let stats = s.stats().unwrap();
    assert!(stats.snapshot_bytes > 0, "a snapshot was written");
    assert!(stats.since_snapshot < COMPACT_EVERY);
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE snapshots SET bytes = x'00112233'", [])
        .unwrap();
    drop(conn);
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(n(&mut s), COMPACT_EVERY + 5);
}

#[test]
fn damage_is_reported_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    bump(&mut s);
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE changes SET bytes = x'00112233' WHERE seq = 2", [])
        .unwrap();
    drop(conn);
    let mut s = Store::open(dir.path()).unwrap();
    let err = s.read(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(DB_FILE), "{err}");

    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join(DB_FILE), vec![0x42u8; 8192]).unwrap();
    let err = Store::open(garbage.path()).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Store::open(empty.path()), Err(StoreError::NoHome(_))));
}

#[test]
fn a_newer_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(create(dir.path(), 1));
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::NewerStore { found: 99, .. })
    ));
}

#[test]
fn private_data_stays_in_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    s.journal_add("dear diary", 5).unwrap();
    s.private_set("review_date", Some("2027-01-01")).unwrap();
    assert_eq!(s.journal().unwrap()[0].text, "dear diary");
    assert_eq!(
        s.private_get("review_date").unwrap().as_deref(),
        Some("2027-01-01")
    );
    s.private_set("review_date", None).unwrap();
    assert_eq!(s.private_get("review_date").unwrap(), None);
    let saved = s.read(|d| d.save()).unwrap();
    assert!(!saved.windows(10).any(|w| w == b"dear diary"));
    assert_eq!(s.log(None).unwrap().len(), 1);
}

/// Whether any file of the store in `dir` (database, WAL, shared memory)
/// holds `text`.
fn on_disk(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .any(|bytes| bytes.windows(text.len()).any(|w| w == text.as_bytes()))
}

#[test]
fn deleted_private_rows_are_gone_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    let kept = s.journal_add("kept: the garden on Sunday", 5).unwrap();
    let gone = s.journal_add("gone: what I never said to Alex", 6).unwrap();
    s.private_set("review_date", Some("review-1999-12-31")).unwrap();
    // More writes after it, so the row is not simply the last thing written.
    bump(&mut s);
    assert!(on_disk(dir.path(), "gone: what I never said"));

    assert!(s.journal_remove(gone).unwrap());
    assert!(!s.journal_remove(gone).unwrap(), "already gone");
    s.private_set("review_date", None).unwrap();
    assert_eq!(
        s.journal().unwrap().iter().map(|e| e.id).collect::<Vec<_>>(),
        [kept]
    );
    assert!(!on_disk(dir.path(), "gone: what I never said"));
    assert!(!on_disk(dir.path(), "review-1999-12-31"));
    drop(s);
    assert!(!on_disk(dir.path(), "gone: what I never said"));
    assert!(
        on_disk(dir.path(), "kept: the garden on Sunday"),
        "the search finds what is there"
    );
}

#[test]
fn every_write_signs_the_devices_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    bump(&mut s);
    bump(&mut s);
    let atts = s.attestations().unwrap();
    assert_eq!(atts.len(), 1);
    let a = atts[0];
    assert!(a.verify());
    assert_eq!(a.device, DeviceSecret::from_bytes(&[1; 32]).device_id());
    let heads = s.read(|d| d.get_heads()).unwrap();
    assert_eq!(vec![a.hash], heads, "the attestation names the newest change");
    let peer = DeviceSecret::from_bytes(&[2; 32]).device_id();
    assert_eq!(s.sync_state(&peer).unwrap(), None);
    s.set_sync_state(&peer, b"state").unwrap();
    assert_eq!(s.sync_state(&peer).unwrap().as_deref(), Some(&b"state"[..]));
    s.set_peer_address(&peer, "127.0.0.1:7000").unwrap();
    assert_eq!(s.peers().unwrap()[0].address, "127.0.0.1:7000");
}

#[test]
fn new_stores_use_small_pages() {
    let dir = tempfile::tempdir().unwrap();
    drop(create(dir.path(), 1));
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(size, 1024);
}

/// Text that does not compress (snapshots are deflated).
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[test]
fn a_snapshot_waits_until_the_tail_is_worth_it_and_syncs_compact_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    // A document that weighs something, so one snapshot is large.
    s.write(|doc| {
        doc.transact(|tx| tx.put(ROOT, "blob", noise(1_000_000, 1)))
            .map(|_| ())
            .map_err(|_| StoreError::Busy("x".into()))
    })
    .unwrap();
    s.compact().unwrap();
    let first = s.stats().unwrap();
    // 500 tiny changes are far less than an eighth of a 600 KB snapshot.
    for _ in 0..COMPACT_EVERY + 5 {
        bump(&mut s);
    }
    let stats = s.stats().unwrap();
    assert_eq!(stats.snapshot_bytes, first.snapshot_bytes, "no new snapshot yet");
    assert!(stats.since_snapshot > COMPACT_EVERY);
    assert!(!s.compact_if_due().unwrap());
    // A big enough tail makes one due.
    s.write(|doc| {
        doc.transact(|tx| tx.put(ROOT, "blob2", noise(100_000, 2)))
            .map(|_| ())
            .map_err(|_| StoreError::Busy("x".into()))
    })
    .unwrap();
    let stats = s.stats().unwrap();
    assert_eq!(stats.since_snapshot, 0, "the local write compacted");
    assert!(!s.compact_if_due().unwrap(), "nothing more is due");
}

#[test]
fn pending_changes_are_replaced_in_the_write_and_rolled_back_with_it() {
    use duet_store::Pending;
    let dir = tempfile::tempdir().unwrap();
    let mut store = create(dir.path(), 1);
    // Two real changes from another document, to keep waiting.
    let mut other = Automerge::new();
    other.transact(|tx| tx.put(ROOT, "x", 1i64)).unwrap();
    other.transact(|tx| tx.put(ROOT, "x", 2i64)).unwrap();
    let changes: Vec<automerge::Change> = other.get_changes(&[]);
    let att = DeviceSecret::from_bytes(&[3; 32]).attest(&changes[1].hash());
    store
        .write_with(|w| -> Result<(), StoreError> {
            w.pending = Some(Pending {
                changes: changes.clone(),
                attestations: vec![att],
            });
            Ok(())
        })
        .unwrap();
    let mut p = store.pending().unwrap();
    p.changes.sort_by_key(|c| c.seq());
    assert_eq!(
        p.changes.iter().map(|c| c.hash()).collect::<Vec<_>>(),
        changes.iter().map(|c| c.hash()).collect::<Vec<_>>()
    );
    assert_eq!(p.attestations, vec![att]);
    // Kept across a reopen.
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.pending().unwrap().changes.len(), 2);

    // A failed write keeps the previous set.
    let failed = store.write_with(|w| -> Result<(), StoreError> {
        w.pending = Some(Pending::default());
        Err(StoreError::Busy("x".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.pending().unwrap().changes.len(), 2);

    store
        .write_with(|w| -> Result<(), StoreError> {
            w.pending = Some(Pending::default());
            Ok(())
        })
        .unwrap();
    let p = store.pending().unwrap();
    assert!(p.changes.is_empty() && p.attestations.is_empty());
}

#[test]
fn relay_cursors_round_trip_per_relay() {
    use duet_store::RelayCursor;
    let dir = tempfile::tempdir().unwrap();
    let mut store = create(dir.path(), 1);
    assert_eq!(store.relay_cursor("r:1").unwrap(), RelayCursor::default());
    let c = RelayCursor {
        fetched: 7,
        has: vec![automerge::ChangeHash([1; 32]), automerge::ChangeHash([2; 32])],
    };
    store.set_relay_cursor("r:1", &c).unwrap();
    store.set_relay_cursor("r:2", &RelayCursor::default()).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.relay_cursor("r:1").unwrap(), c);
    assert_eq!(store.relay_cursor("r:2").unwrap(), RelayCursor::default());
}

/// An empty home, as a new device's is right after pairing.
fn create_empty(dir: &Path) -> Store {
    let secret = DeviceSecret::from_bytes(&[7; 32]);
    let new = NewStore {
        device: &secret,
        device_name: "phone",
        meta: &[("seat", "a")],
        now_ms: 0,
    };
    Store::create(dir, &new, |_: &mut Automerge| Ok::<(), StoreError>(())).unwrap()
}

/// A history of `n` changes by two actors, saved whole.
fn history(n: i64) -> Automerge {
    let mut doc = Automerge::new();
    for i in 0..n {
        doc.set_actor(automerge::ActorId::from([(i % 2) as u8 + 1; 32].as_slice()));
        doc.transact(|tx| tx.put(ROOT, "n", i + 1)).unwrap();
    }
    doc
}

/// Takes a whole saved document as an empty store's document, as a new
/// device's first sync does.
fn take_whole(store: &mut Store, bytes: &[u8]) -> Result<(), StoreError> {
    store.write_with(|w| -> Result<(), StoreError> {
        *w.doc = Automerge::load(bytes).unwrap();
        w.document = Some(bytes.to_vec());
        Ok(())
    })
}

#[test]
fn a_whole_document_is_one_entry_of_the_log_at_every_position_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let source = history(30);
    let bytes = source.save();
    let mut s = create_empty(dir.path());
    take_whole(&mut s, &bytes).unwrap();

    let stats = s.stats().unwrap();
    assert_eq!(stats.changes, 30);
    assert_eq!(stats.since_snapshot, 0, "it is the snapshot too");
    assert_eq!(stats.snapshot_bytes, bytes.len() as i64);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "one entry, not one per change");

    // `duet log` lists every change, newest first, at the positions 1..=30.
    let log = s.log(None).unwrap();
    let mut hashes: Vec<_> = source.get_changes(&[]).iter().map(|c| c.hash()).collect();
    hashes.reverse();
    assert_eq!(log.iter().map(|e| e.hash).collect::<Vec<_>>(), hashes);
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=30).rev().collect::<Vec<_>>()
    );
    let five = s.log(Some(5)).unwrap();
    assert_eq!(
        five.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [30, 29, 28, 27, 26]
    );

    // The next change takes the next position; every process reads the same.
    bump(&mut s);
    assert_eq!(s.log(Some(1)).unwrap()[0].seq, 31);
    assert_eq!(s.stats().unwrap().changes, 31);
    let mut other = Store::open(dir.path()).unwrap();
    assert_eq!(n(&mut other), 31);
    drop((s, other));

    // Without the snapshot, the log alone still holds everything.
    conn.execute("DELETE FROM snapshots", []).unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(n(&mut s), 31);
    let kept = s.read(|doc| doc.get_changes(&[]).len()).unwrap();
    assert_eq!(kept, 31);
    drop(s);

    // A damaged entry is reported, not loaded.
    conn.execute(
        "UPDATE changes SET bytes = CAST(substr(bytes, 1, 40) || x'00' || substr(bytes, 42) AS BLOB) WHERE count > 1",
        [],
    )
    .unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let err = s.read(|_| ()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Damaged { detail, .. } if detail.contains("does not match its hash")),
        "{err}"
    );
    assert!(matches!(s.log(None), Err(StoreError::Damaged { .. })));
}

#[test]
fn a_whole_document_for_a_document_that_is_not_empty_is_stored_change_by_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    let source = history(4);
    let bytes = source.save();
    s.write_with(|w| -> Result<(), StoreError> {
        w.doc.merge(&mut source.clone()).unwrap();
        w.document = Some(bytes.clone());
        Ok(())
    })
    .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let (rows, counted): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(count) FROM changes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, counted), (5, 5), "the founding change and four more");
    drop(s);
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(s.read(|doc| doc.get_changes(&[]).len()).unwrap(), 5);
}

#[test]
fn a_store_of_version_3_gains_whole_document_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = create(dir.path(), 1);
    bump(&mut s);
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("ALTER TABLE changes DROP COLUMN count; PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let mut s = Store::open(dir.path()).unwrap();
    bump(&mut s);
    assert_eq!(n(&mut s), 2);
    assert_eq!(s.stats().unwrap().changes, 3);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, duet_store::STORE_VERSION);
}
