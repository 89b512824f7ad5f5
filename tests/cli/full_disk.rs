//! A full disk while writing: every refused write is one clear `error: ...`
//! line naming the full disk, nothing already stored is lost, and once space is
//! freed the home opens and takes edits (and syncs) again.
//!
//! The homes live on a small tmpfs mounted for the test, so these tests need
//! root on Linux (CI runs as root). Without it, or if `mount` fails, each test
//! says why on stderr and returns early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{TestHome, pair, serve, shared, str_of};

// ---------------------------------------------------------------------------
// A home on a small tmpfs
// ---------------------------------------------------------------------------

/// A tmpfs mounted at a folder; unmounted when dropped, even when the test
/// failed.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB at `at` (an existing, empty folder).
    fn mount(at: &Path, kib: u64) -> Result<Tmpfs, String> {
        if !cfg!(target_os = "linux") {
            return Err("not Linux".into());
        }
        if !is_root() {
            return Err("not running as root (mounting a tmpfs needs it)".into());
        }
        let opts = format!("size={kib}k,mode=0700");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(at)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { at: at.to_path_buf() })
    }

    /// Bytes free on the tmpfs.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.at)
            .output()
            .expect("cannot run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df gave no number: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that outlived a failed test): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// True when the effective user is root (from /proc, without unsafe code).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A home whose folder is the root of a small tmpfs, holding a filler file
/// written before the home was created: deleting it is "freeing space".
struct DiskHome {
    // Declared first so it is dropped first: unmounted before the temporary
    // folder around it is removed.
    disk: Tmpfs,
    home: TestHome,
    filler: PathBuf,
}

impl DiskHome {
    /// A tmpfs of `kib` KiB with a filler of `filler_kib` KiB, and a home made
    /// by `duet init --name NAME --device-name DEVICE` on it; `None` (after
    /// saying why) where a tmpfs cannot be mounted.
    fn new(kib: u64, filler_kib: u64, name: &str, device: &str) -> Option<DiskHome> {
        let home = TestHome::uninit();
        std::fs::create_dir(home.path()).unwrap();
        let disk = match Tmpfs::mount(home.path(), kib) {
            Ok(d) => d,
            Err(why) => {
                crate::util::skip(
                    "DUET_REQUIRE_TMPFS",
                    &format!("the full-disk test needs a tmpfs: {why}"),
                );
                return None;
            }
        };
        let filler = home.path().join("filler");
        std::fs::write(&filler, vec![0xa5u8; usize::try_from(filler_kib * 1024).unwrap()]).unwrap();
        home.ok(&["init", "--name", name, "--device-name", device]);
        Some(DiskHome { disk, home, filler })
    }

    /// Frees space: deletes the filler.
    fn free_space(&self) {
        let before = self.disk.free();
        std::fs::remove_file(&self.filler).unwrap();
        assert!(self.disk.free() > before, "deleting the filler freed nothing");
    }
}

impl std::ops::Deref for DiskHome {
    type Target = TestHome;
    fn deref(&self) -> &TestHome {
        &self.home
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `len` characters of lowercase words from a fixed seed: text that neither
/// SQLite nor automerge can squeeze much, so it really takes disk space.
fn prose(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = String::with_capacity(len);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = (x % 27) as u8;
        s.push(if c == 26 { ' ' } else { char::from(b'a' + c) });
    }
    s
}

/// Raises `count` issues on `h` titled "Alex's issue N", with bodies of `len`
/// characters, one change each; returns the bytes of text added. Made through
/// the engine in this process: a `duet` process per issue would spend most of
/// the test's time loading a growing document.
fn raise(h: &TestHome, count: u64, len: usize, seed: u64) -> usize {
    let mut home = duet::Home::open(h.path()).unwrap();
    let mut bytes = 0;
    for n in 0..count {
        let body = prose(seed + n, len);
        bytes += body.len();
        home.add_issue(&duet::model::NewIssue {
            title: format!("Alex's issue {n}"),
            body,
            ..Default::default()
        })
        .unwrap();
    }
    bytes
}

/// Asserts that `line` is the one clear error of a write refused for a full
/// disk on `home`.
#[track_caller]
fn assert_disk_full(line: &str, home: &TestHome) {
    assert!(
        line.contains("disk") && line.contains("is full"),
        "the error does not say the disk is full: {line}"
    );
    assert!(
        line.contains(&home.db().display().to_string()),
        "the error does not name the database {}: {line}",
        home.db().display()
    );
    for bad in [
        "SQLITE",
        "code:",
        "Error {",
        "ErrorCode",
        "database or disk is full",
    ] {
        assert!(
            !line.contains(bad),
            "the error shows SQLite's internals ({bad}): {line}"
        );
    }
}

/// The issues of `h`'s shared record, from one JSON export: id → (title, body).
fn issues_by_id(h: &TestHome) -> BTreeMap<String, (String, String)> {
    shared(h)["issues"]
        .as_array()
        .expect("issues is an array")
        .iter()
        .map(|i| (str_of(i, "id"), (str_of(i, "title"), str_of(i, "body"))))
        .collect()
}

/// The home opens, and its change log and status agree.
#[track_caller]
fn assert_opens_consistently(h: &TestHome) {
    let status = h.json(&["status"]);
    let log = h.json(&["log", "--all"]);
    assert_eq!(
        status["changes"].as_u64().expect("status counts changes"),
        log.as_array().expect("log is an array").len() as u64,
        "status and log disagree: {status:#}"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Fills the disk with issues until writes are refused, then frees space: each
/// refusal is one clear line, a refused write leaves the home exactly as it
/// was, every issue reported as added survives, and edits work again.
#[test]
fn a_full_disk_refuses_writes_clearly_and_keeps_everything_stored() {
    let Some(h) = DiskHome::new(1024, 768, "Sam", "laptop") else {
        return;
    };
    let mut added: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    // Big bodies until one is refused, then smaller ones, down to an issue
    // with no body at all: the disk is then as full as an edit can make it.
    let mut size = 20_000;
    let mut full = false;
    for n in 0..200u64 {
        let title = format!("Filler issue {n}");
        let body = prose(n, size);
        let run = h.run(&["issue", "add", &title, "--body", &body, "--json"]);
        if run.status.success() {
            let v: Value = serde_json::from_str(&run.stdout).unwrap();
            added.insert(str_of(&v, "id"), (title, body));
            continue;
        }
        assert_eq!(run.status.code(), Some(1), "{run:?}");
        let line = run.failure();
        assert_disk_full(&line, &h);
        refused.push((title, line));
        if size == 0 {
            full = true;
            break;
        }
        size = if size > 500 { size / 4 } else { 0 };
    }
    assert!(
        full,
        "the disk never filled: {} issues added, {} refused",
        added.len(),
        refused.len()
    );
    assert!(
        added.len() >= 3,
        "only {} issues fit before the disk filled",
        added.len()
    );
    eprintln!(
        "full disk: {} issues added, {} refused, {} bytes free at the end; first refusal: {}",
        added.len(),
        refused.len(),
        h.disk.free(),
        refused[0].1
    );

    // Full: the record still reads, and holds exactly what was reported added.
    let before = h.snapshot();
    let stored = issues_by_id(&h);
    assert_eq!(
        stored, added,
        "what is stored differs from what was reported added"
    );
    // Every kind of write is refused the same way, and changes nothing.
    let first = added.keys().next().unwrap().clone();
    let writes: Vec<Vec<&str>> = vec![
        vec!["issue", "add", "One more"],
        vec!["issue", "note", &first, "A note on a full disk"],
        vec!["issue", "status", &first, "discussing"],
        vec!["step", "add", &first, "A step on a full disk"],
        vec![
            "agreement",
            "add",
            "An agreement on a full disk",
            "--kind",
            "boundary",
        ],
        vec!["checkin", "rate", "7"],
    ];
    for args in &writes {
        let run = h.run(args);
        assert_eq!(
            run.status.code(),
            Some(1),
            "`duet {}` on a full disk: {run:?}",
            args.join(" ")
        );
        assert_disk_full(&run.failure(), &h);
    }
    assert_eq!(h.snapshot(), before, "a refused write changed the home");

    // Space freed: everything is there, the home opens, edits work again.
    h.free_space();
    assert_eq!(
        issues_by_id(&h),
        added,
        "an issue stored before the disk filled was lost"
    );
    for (title, _) in &refused {
        assert!(
            !h.issues().iter().any(|i| str_of(i, "title") == *title),
            "the refused issue {title:?} was stored after all"
        );
    }
    assert_opens_consistently(&h);
    let after = h.add_issue("After freeing space");
    h.ok(&["issue", "note", &first, "A note after freeing space"]);
    h.ok(&["issue", "status", &first, "discussing"]);
    h.ok(&["journal", "add", "Only for me"]);
    let big = prose(999, 20_000);
    let big_id = str_of(&h.json(&["issue", "add", "Big again", "--body", &big]), "id");
    let now = issues_by_id(&h);
    assert_eq!(now.len(), added.len() + 2);
    assert_eq!(now[&big_id].1, big);
    assert!(now.contains_key(&after));
    assert_eq!(h.json(&["issue", "show", &first])["status"], "discussing");
    for (id, issue) in &added {
        assert_eq!(&now[id], issue, "issue {id} changed");
    }
    assert_opens_consistently(&h);
}

/// A one-shot sync receiving a history larger than the free space: the sync
/// fails with one clear line, the home keeps everything it had, the serving
/// partner is unharmed, and a sync after freeing space converges.
#[test]
fn a_sync_that_fills_the_disk_fails_clearly_and_a_later_one_converges() {
    // 2 MiB with 1.7 MiB taken: about 250 KB free for a history of 400 KB.
    let Some(blair) = DiskHome::new(2048, 1700, "Blair", "blair-laptop") else {
        return;
    };
    let alex = TestHome::named("Alex", "alex-laptop");
    pair(&alex, &blair, &[]);
    // Something of Blair's own, not yet synced, that must survive.
    let own = prose(7, 2_000);
    let own_id = str_of(
        &blair.json(&["issue", "add", "Blair's own", "--body", &own]),
        "id",
    );
    let history = raise(&alex, 8, 50_000, 100);
    assert!(
        history as u64 > blair.disk.free(),
        "the history ({history} bytes) fits in the free space"
    );
    let before = issues_by_id(&blair);
    let server = serve(&alex, &[]);

    let run = blair.run(&["sync", &server.addr]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let line = run.failure();
    assert_disk_full(&line, &blair);
    assert!(
        line.contains("sync with"),
        "the error does not say what failed: {line}"
    );
    eprintln!("sync into a full disk: {line}");

    // Everything Blair had is still there, unchanged; the home is consistent
    // (what arrived before the disk filled may have been kept, nothing else).
    let partial = issues_by_id(&blair);
    for (id, issue) in &before {
        assert_eq!(
            partial.get(id),
            Some(issue),
            "issue {id} was lost or changed by the failed sync"
        );
    }
    let alexs = issues_by_id(&alex);
    for (id, issue) in &partial {
        assert!(
            before.get(id) == Some(issue) || alexs.get(id) == Some(issue),
            "the failed sync left an issue that is on neither side: {id}"
        );
    }
    assert_opens_consistently(&blair);
    eprintln!(
        "kept from the failed sync: {} of {} issues",
        partial.len() - before.len(),
        alexs.len()
    );

    // Space freed: the same running serve, a new sync, the same record.
    blair.free_space();
    let report = blair.json(&["sync", &server.addr]);
    eprintln!("the sync after freeing space: {report}");
    assert_eq!(report[0]["changes_in"], 8, "{report}");
    assert_eq!(shared(&blair), shared(&alex), "the homes did not converge");
    assert_eq!(issues_by_id(&alex)[&own_id].1, own);
    assert_eq!(issues_by_id(&blair).len(), 9);
    assert_opens_consistently(&blair);
    // And edits keep flowing both ways.
    let late = blair.add_issue("After freeing space");
    blair.ok(&["sync", &server.addr]);
    assert!(issues_by_id(&alex).contains_key(&late));
    assert_eq!(shared(&blair), shared(&alex));
    server.stop("TERM").success();
}

/// The other way round: a running `serve` whose disk fills while a partner
/// syncs into it. The partner's sync fails cleanly, the serve keeps running
/// and logs why, and once space is freed the next sync converges.
#[test]
fn a_serve_whose_disk_fills_keeps_serving_and_converges_once_space_is_freed() {
    let Some(blair) = DiskHome::new(2048, 1700, "Blair", "blair-laptop") else {
        return;
    };
    let alex = TestHome::named("Alex", "alex-laptop");
    pair(&alex, &blair, &[]);
    let history = raise(&alex, 8, 50_000, 300);
    assert!(history as u64 > blair.disk.free());
    let before = issues_by_id(&blair);
    let alex_before = issues_by_id(&alex);
    let mut server = serve(&blair, &[]);

    let run = alex.run(&["sync", &server.addr]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let line = run.failure();
    eprintln!("a sync into a serve whose disk is full: {line}");
    assert!(line.contains("sync with"), "{line}");
    assert!(
        server.proc.wait_timeout(std::time::Duration::ZERO).is_none(),
        "serve exited when its disk filled:\n{}",
        server.proc.stderr()
    );
    assert_eq!(issues_by_id(&alex), alex_before, "the sending side changed");
    let partial = issues_by_id(&blair);
    for (id, issue) in &before {
        assert_eq!(partial.get(id), Some(issue), "issue {id} was lost or changed");
    }
    assert_opens_consistently(&blair);

    blair.free_space();
    alex.ok(&["sync", &server.addr]);
    assert_eq!(shared(&blair), shared(&alex), "the homes did not converge");
    assert_eq!(issues_by_id(&blair).len(), 8);
    let stopped = server.stop("TERM");
    let log = stopped.stderr.clone();
    stopped.success();
    assert!(
        log.contains("is full"),
        "serve did not say why the session failed:\n{log}"
    );
}

/// After a sync refused for a full disk, the next sync starts from what the home
/// really stored. Today the failed session's sync state is saved although its
/// changes were rolled back; it names changes the home never stored, so the
/// next sync fetches one change per round trip, and a chain of more than 64
/// changes never arrives ("the sync is not making progress"), on every later
/// try.
#[test]
fn a_sync_refused_for_a_full_disk_does_not_poison_the_next_one() {
    let Some(blair) = DiskHome::new(2048, 1700, "Blair", "blair-laptop") else {
        return;
    };
    let alex = TestHome::named("Alex", "alex-laptop");
    pair(&alex, &blair, &[]);
    // 80 changes in one chain (one device's edits), 400 KB: more than Blair's
    // free space.
    raise(&alex, 80, 5_000, 200);
    let server = serve(&alex, &[]);
    assert_disk_full(&blair.fail(&["sync", &server.addr]), &blair);
    blair.free_space();
    let report = blair.json(&["sync", &server.addr]);
    assert_eq!(report[0]["changes_in"], 80, "{report}");
    // A fresh sync of this history takes two or three messages each way.
    let messages = report[0]["messages_in"].as_u64().unwrap();
    assert!(
        messages <= 8,
        "the sync after freeing space took {messages} messages: {report}"
    );
    assert_eq!(shared(&blair), shared(&alex), "the homes did not converge");
    server.stop("TERM").success();
}
