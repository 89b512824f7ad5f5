//! Sync through a mailbox relay (`duet relay`), between real processes over
//! loopback QUIC: homes that never run at the same time converge, the relay's
//! files hold nothing readable, only member devices get anything, bundles
//! survive a relay restart, and `serve --relay` posts edits as they happen.
//!
//! A home that joined by `pair join` remembers the pairing host's address as
//! a peer; nothing listens there any more, so each of its `sync` runs spends
//! QUIC's 10 s connect timeout on it before (or after) the relay round. Tests
//! that sync the joiner often make the other home the host where they can.

use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    RelayProc, Run, TestHome, confirm, contains_bytes, contains_raw, couple, device_id, error_line,
    eventually, files_under, pair, pair_host, pair_own, serve, shared, str_of, titles,
};

/// A temporary folder for a relay: its data in `data/`, its stderr beside it.
fn relay_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("duet-relay-")
        .tempdir()
        .expect("cannot make a temp dir")
}

/// Starts a relay on the data in `dir`.
#[track_caller]
fn start_relay(dir: &TempDir) -> RelayProc {
    RelayProc::start(dir.path(), &dir.path().join("data"), &[])
}

/// Stops a relay with SIGTERM; it must exit cleanly, saying so.
#[track_caller]
fn stop_relay(relay: RelayProc) {
    let out = relay.stop().success();
    assert!(out.contains(r#"{"stopped":true}"#), "{out}");
}

/// The one relay report of a `sync --json` output (the reports of direct
/// syncs name a `peer`; a relay round names its `relay`).
#[track_caller]
fn relay_report(out: &str) -> Value {
    let all: Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("sync gave invalid JSON ({e}):\n{out}"));
    let relayed: Vec<&Value> = all
        .as_array()
        .expect("sync --json gives an array of reports")
        .iter()
        .filter(|r| r.get("relay").is_some())
        .collect();
    assert_eq!(relayed.len(), 1, "one relay round expected: {all:#}");
    relayed[0].clone()
}

/// `r[key]` as a number.
#[track_caller]
fn num(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{key}` in {r:#}"))
}

/// Runs `args` on `h`, timing it.
fn timed(h: &TestHome, args: &[&str]) -> (Run, Duration) {
    let start = Instant::now();
    let run = h.run(args);
    (run, start.elapsed())
}

/// Asserts that `stderr` holds only notes saying `addr` could not be reached
/// (at least one).
#[track_caller]
fn only_unreachable_notes(stderr: &str, addr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no note about the unreachable {addr}");
    for l in lines {
        assert!(
            l.starts_with(&format!("note: could not reach {addr} ")),
            "unexpected stderr line (wanted a note about {addr}): {l}"
        );
    }
}

#[test]
fn two_homes_never_running_together_converge_through_the_relay() {
    let dir = relay_dir();
    let relay = start_relay(&dir);
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    // Paired by hand, to know the address Blair remembers (and cannot reach).
    let (mut host, code, pair_addr) = pair_host(&alex);
    let mut join = blair.spawn(&["pair", "join", &code, &pair_addr, "--json"]);
    confirm(&mut host, &mut join).expect("the joiner shows a phrase");
    join.finish().success();
    host.finish().success();

    let weekend = str_of(
        &alex.json(&["issue", "add", "Weekend plans", "--body", "We never plan ahead."]),
        "id",
    );
    alex.ok(&["issue", "note", &weekend, "Saturday mornings are free"]);
    alex.add_issue("Visiting parents");

    // Alex posts; this also makes the relay the space's relay.
    let run = alex.run(&["sync", "--relay", &relay.addr, "--no-discovery", "--json"]);
    assert!(run.stderr.is_empty(), "Alex remembers no device: {}", run.stderr);
    let r = relay_report(&run.success());
    assert_eq!(str_of(&r, "relay"), relay.addr);
    assert_eq!((num(&r, "posted"), num(&r, "fetched")), (1, 0), "{r:#}");
    assert!(num(&r, "changes_out") >= 3, "{r:#}");
    let alex_out = num(&r, "bytes_out");

    // Blair, later (no serve anywhere), fetches. The pairing host's address
    // she remembers is dead: a note, not a failure.
    let (run, took) = timed(
        &blair,
        &["sync", "--no-discovery", "--relay", &relay.addr, "--json"],
    );
    let stderr = run.stderr.clone();
    let r = relay_report(&run.success());
    only_unreachable_notes(&stderr, &pair_addr);
    assert!(num(&r, "fetched") >= 1 && num(&r, "changes_in") >= 3, "{r:#}");
    assert_eq!(num(&r, "skipped"), 0, "{r:#}");
    assert_eq!(num(&r, "waiting"), 0, "{r:#}");
    for t in ["Weekend plans", "Visiting parents"] {
        assert!(titles(&blair).contains(t), "{t} missing on Blair");
    }
    let notes = blair.json(&["issue", "show", &weekend])["notes"].clone();
    assert!(
        notes.to_string().contains("Saturday mornings are free"),
        "{notes:#}"
    );
    eprintln!(
        "Alex posted {alex_out} bytes; Blair's first relay sync took {took:?} (with its dead remembered peer), \
         fetched {} bytes",
        num(&r, "bytes_in")
    );

    // Both show the couple's relay.
    for h in [&alex, &blair] {
        assert_eq!(str_of(&h.json(&["status"]), "relay"), relay.addr);
        assert!(
            h.ok(&["status"])
                .lines()
                .any(|l| l.starts_with("relay") && l.ends_with(&relay.addr))
        );
    }

    // Blair answers; plain `sync`: the relay comes from the space.
    blair.add_issue("Blair's own");
    blair.ok(&["issue", "note", &weekend, "Sunday afternoons too"]);
    let run = blair.run(&["sync", "--no-discovery", "--json"]);
    let stderr = run.stderr.clone();
    let r = relay_report(&run.success());
    only_unreachable_notes(&stderr, &pair_addr);
    assert_eq!(num(&r, "posted"), 1, "{r:#}");

    // Alex, with no --relay either: the address was stored in the space.
    let run = alex.run(&["sync", "--no-discovery", "--json"]);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let r = relay_report(&run.success());
    assert_eq!(str_of(&r, "relay"), relay.addr);
    assert!(num(&r, "changes_in") >= 2, "{r:#}");
    assert!(titles(&alex).contains("Blair's own"));
    assert_eq!(shared(&alex), shared(&blair));

    // Nothing more to move.
    let r = relay_report(&alex.ok(&["sync", "--no-discovery", "--json"]));
    assert_eq!((num(&r, "fetched"), num(&r, "posted")), (0, 0), "{r:#}");
    stop_relay(relay);
}

#[test]
fn the_relays_files_hold_no_plaintext() {
    const QUILLON: &str = "Quillon";
    const MARISABEL: &str = "Marisabel";
    const SECRETS: [&str; 8] = [
        "Zanzibar-holiday-budget-4417",
        "velvet-drawer-argument-3390",
        "the-attic-conversation-8812",
        "lanterns-on-the-balcony-2290",
        "marisabel-phone-7731",
        "quillon-laptop-5518",
        "Nightly-dishes-rota-6604",
        "the-garden-gate-answer-1187",
    ];
    let dir = relay_dir();
    let relay = start_relay(&dir);
    let q = TestHome::named(QUILLON, "quillon-laptop-5518");
    let m = TestHome::named(MARISABEL, "marisabel-phone-7731");
    pair(&q, &m, &[]);
    let space = str_of(&q.json(&["status"]), "space_id");
    assert_eq!(str_of(&m.json(&["status"]), "space_id"), space);

    let budget = str_of(
        &q.json(&[
            "issue",
            "add",
            "Zanzibar-holiday-budget-4417",
            "--body",
            "velvet-drawer-argument-3390",
        ]),
        "id",
    );
    q.ok(&["issue", "note", &budget, "the-attic-conversation-8812"]);
    q.ok(&["checkin", "appreciate", "lanterns-on-the-balcony-2290"]);
    q.ok(&["sync", "--relay", &relay.addr, "--no-discovery"]);
    let dishes = m.add_issue("Nightly-dishes-rota-6604");
    m.ok(&["step", "add", &dishes, "the-garden-gate-answer-1187"]);
    m.ok(&["sync", "--relay", &relay.addr, "--no-discovery"]);
    let r = relay_report(&q.ok(&["sync", "--no-discovery", "--json"]));
    assert!(num(&r, "changes_in") >= 2, "{r:#}");
    assert_eq!(shared(&q), shared(&m));
    // Everything went through the relay, so all of it was sealed there.
    let everything = serde_json::to_string(&shared(&m)).expect("JSON");
    for s in SECRETS {
        assert!(everything.contains(s), "`{s}` never made it through the relay");
    }

    // A bundle file, for comparison: its header carries the space's tag.
    let file = q.tmp().join("all.bundle");
    q.ok(&["bundle", "export", file.to_str().expect("UTF-8 path")]);
    let bundle = std::fs::read(&file).expect("the bundle file");
    assert_eq!(&bundle[..8], b"DUETBNDL");
    let tag = &bundle[13..29];

    // SIGTERM: the relay stops cleanly, so SQLite folds its -wal into the database.
    stop_relay(relay);
    let files = files_under(&dir.path().join("data"));
    assert!(!files.is_empty(), "the relay wrote no file");
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let names: Vec<String> = files
        .iter()
        .map(|(p, b)| format!("{} ({} bytes)", p.display(), b.len()))
        .collect();
    eprintln!("relay files: {names:?}, {total} bytes in all");
    // The search can see what the relay keeps: the sealed bundles (their
    // magic) and the space's tag they are filed under.
    assert!(
        files.iter().any(|(_, b)| contains_bytes(b, "DUETBNDL")),
        "no bundle found in the relay's files: the search proves nothing ({names:?})"
    );
    assert!(
        files.iter().any(|(_, b)| contains_raw(b, tag)),
        "the space's tag is not in the relay's files: the search proves nothing ({names:?})"
    );
    for (path, bytes) in files
        .iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .chain([(file.display().to_string(), &bundle)])
    {
        for s in SECRETS.iter().chain(&[QUILLON, MARISABEL, space.as_str()]) {
            assert!(!contains_bytes(bytes, s), "`{s}` found in {path}");
        }
    }
}

/// Alex's laptop and phone, and Blair's laptop, in a space whose relay the
/// laptop set before the others paired (so they learn it from the space).
fn three_devices_with_a_relay(relay: &str) -> (TestHome, TestHome, TestHome) {
    let laptop = TestHome::named("Alex", "alex-laptop");
    let phone = TestHome::named("Alex", "alex-phone");
    let blair = TestHome::named("Blair", "blair-laptop");
    laptop.add_issue("Chores split");
    laptop.ok(&["sync", "--relay", relay, "--no-discovery"]);
    pair_own(&laptop, &phone, &[]);
    pair(&laptop, &blair, &[]);
    // The laptop tells the relay about the new devices.
    laptop.ok(&["sync", "--no-discovery"]);
    (laptop, phone, blair)
}

#[test]
fn only_member_devices_read_and_a_revoked_device_reads_nothing_sealed_after() {
    let dir = relay_dir();
    let relay = start_relay(&dir);
    let (laptop, phone, blair) = three_devices_with_a_relay(&relay.addr);

    // Before the revocation the phone uses the relay, with no --relay: the
    // address came with the space at pairing.
    let before = laptop.add_issue("Before the revocation");
    laptop.ok(&["sync", "--no-discovery"]);
    let run = phone.run(&["sync", "--no-discovery", "--json"]);
    let r = relay_report(&run.success());
    assert!(num(&r, "changes_in") >= 1, "{r:#}");
    assert!(titles(&phone).contains("Before the revocation"));

    let phone_id = device_id(&phone);
    laptop.ok(&["device", "revoke", &phone_id[..10]]);
    let after = laptop.add_issue("After the revocation");
    laptop.ok(&["issue", "note", &after, "Only for members now"]);
    laptop.ok(&["issue", "note", &before, "A note after the revocation"]);
    let r = relay_report(&laptop.ok(&["sync", "--no-discovery", "--json"]));
    assert_eq!(num(&r, "posted"), 1, "{r:#}");
    let file = laptop.tmp().join("after.bundle");
    laptop.ok(&["bundle", "export", file.to_str().expect("UTF-8 path")]);

    // The phone, lost, still tries: it gets nothing, and what it writes
    // reaches no one.
    phone.add_issue("Written on the lost phone");
    let phone_before = phone.snapshot();
    let run = phone.run(&["sync", "--relay", &relay.addr, "--no-discovery", "--json"]);
    if run.status.success() {
        let r = relay_report(&run.stdout);
        assert_eq!((num(&r, "changes_in"), num(&r, "posted")), (0, 0), "{r:#}");
    } else {
        let err = error_line(&run);
        assert!(err.contains(&relay.addr), "{err}");
        eprintln!("the revoked phone's relay sync: {err}");
    }
    assert!(!titles(&phone).contains("After the revocation"));
    let err = phone.fail(&["bundle", "import", file.to_str().expect("UTF-8 path")]);
    assert_eq!(
        err,
        "error: this bundle is sealed with a key this device does not hold: sync with one of the couple's \
         other devices first (a revoked device cannot open what was sealed after its revocation)"
    );
    assert_eq!(phone.snapshot(), phone_before, "the phone's home is unchanged");

    // Blair, still a member, gets it all, and nothing of the lost phone's.
    let r = relay_report(&blair.ok(&["sync", "--no-discovery", "--json"]));
    assert_eq!(num(&r, "skipped"), 0, "{r:#}");
    assert!(titles(&blair).contains("After the revocation"));
    assert!(
        blair.json(&["issue", "show", &before])["notes"]
            .to_string()
            .contains("A note after the revocation")
    );
    assert!(!titles(&blair).contains("Written on the lost phone"));
    assert!(!titles(&laptop).contains("Written on the lost phone"));
    assert_eq!(shared(&blair), shared(&laptop));

    // A stranger with a space of its own uses the same relay: it gets none of
    // the couple's bundles.
    let eve = TestHome::named("Eve", "eve-laptop");
    eve.add_issue("Eve's own");
    let r = relay_report(&eve.ok(&["sync", "--relay", &relay.addr, "--no-discovery", "--json"]));
    assert_eq!((num(&r, "fetched"), num(&r, "changes_in")), (0, 0), "{r:#}");
    assert_eq!(num(&r, "posted"), 1, "{r:#}");
    assert_eq!(
        titles(&eve),
        ["Eve's own".to_string()].into_iter().collect(),
        "the stranger got something"
    );
    // And the couple gets nothing of the stranger's.
    let r = relay_report(&laptop.ok(&["sync", "--no-discovery", "--json"]));
    assert_eq!((num(&r, "changes_in"), num(&r, "skipped")), (0, 0), "{r:#}");
    assert!(!titles(&laptop).contains("Eve's own"));
}

#[test]
fn a_relay_restart_keeps_undelivered_bundles() {
    let dir = relay_dir();
    let relay = start_relay(&dir);
    let (alex, blair) = couple(|_| {});
    let id = alex.add_issue("Posted before the restart");
    alex.ok(&["issue", "note", &id, "Kept across the restart"]);
    let r = relay_report(&alex.ok(&["sync", "--relay", &relay.addr, "--no-discovery", "--json"]));
    assert_eq!(num(&r, "posted"), 1, "{r:#}");
    let old = relay.addr.clone();
    stop_relay(relay);

    let relay = start_relay(&dir);
    eprintln!("relay restarted: {old} -> {}", relay.addr);
    let r = relay_report(&blair.ok(&["sync", "--relay", &relay.addr, "--no-discovery", "--json"]));
    assert!(num(&r, "fetched") >= 1 && num(&r, "changes_in") >= 2, "{r:#}");
    assert!(titles(&blair).contains("Posted before the restart"));
    assert!(
        blair.json(&["issue", "show", &id])["notes"]
            .to_string()
            .contains("Kept across the restart")
    );
    assert_eq!(shared(&alex), shared(&blair));
    stop_relay(relay);
}

#[test]
fn serve_with_a_relay_posts_each_edit_as_it_happens() {
    let dir = relay_dir();
    let relay = start_relay(&dir);
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    // Blair hosts, so that her polling syncs have no dead address to try.
    pair(&blair, &alex, &[]);

    let alex_serve = serve(&alex, &["--relay", &relay.addr, "--no-discovery"]);
    let made = Instant::now();
    alex.add_issue("Written while Alex serves");
    let polls = std::cell::Cell::new(0);
    eventually(Duration::from_secs(30), "Alex's edit at Blair", || {
        polls.set(polls.get() + 1);
        blair.ok(&["sync", "--relay", &relay.addr, "--no-discovery"]);
        let t = titles(&blair);
        if t.contains("Written while Alex serves") {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    eprintln!(
        "Alex's edit reached Blair through serve --relay in {:?} ({} syncs)",
        made.elapsed(),
        polls.get()
    );
    alex_serve.stop("TERM").success();

    // Later, Blair serves (the relay from the space) while Alex is away.
    let blair_serve = serve(&blair, &["--no-discovery"]);
    let made = Instant::now();
    blair.add_issue("Written while Blair serves");
    eventually(Duration::from_secs(30), "Blair's edit at Alex", || {
        alex.ok(&["sync", "--no-discovery"]);
        let t = titles(&alex);
        if t.contains("Written while Blair serves") {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    eprintln!(
        "Blair's edit reached Alex through serve (relay from the space) in {:?}",
        made.elapsed()
    );
    blair_serve.stop("TERM").success();
    assert_eq!(shared(&alex), shared(&blair));
    stop_relay(relay);
}

#[test]
fn a_relay_refuses_posts_over_its_quota() {
    let dir = relay_dir();
    let relay = RelayProc::start(dir.path(), &dir.path().join("data"), &["--quota-mib", "0"]);
    let alex = TestHome::named("Alex", "alex-laptop");
    alex.add_issue("Too much for this relay");
    let err = alex.fail(&["sync", "--relay", &relay.addr, "--no-discovery"]);
    assert_eq!(
        err,
        format!(
            "error: sync with the relay {} (relay: the relay refused: the relay's storage for this space is full)",
            relay.addr
        )
    );
    stop_relay(relay);
}

#[test]
fn a_full_relay_and_a_relay_at_its_registration_limits_say_so() {
    let dir = relay_dir();
    let relay = RelayProc::start(dir.path(), &dir.path().join("data"), &["--max-storage-mib", "0"]);
    let alex = TestHome::named("Alex", "alex-laptop");
    alex.add_issue("Nowhere to keep this");
    let err = alex.fail(&["sync", "--relay", &relay.addr, "--no-discovery"]);
    assert_eq!(
        err,
        format!(
            "error: sync with the relay {} (relay: the relay refused: {})",
            relay.addr,
            duet::relay_server::service::RELAY_FULL
        )
    );
    stop_relay(relay);

    let dir = relay_dir();
    let relay = RelayProc::start(
        dir.path(),
        &dir.path().join("data"),
        &["--max-spaces-per-address", "0"],
    );
    let err = alex.fail(&["sync", "--relay", &relay.addr, "--no-discovery"]);
    assert_eq!(
        err,
        format!(
            "error: sync with the relay {} (relay: the relay refused: too many spaces are registered from this address on this relay)",
            relay.addr
        )
    );
    stop_relay(relay);
}
