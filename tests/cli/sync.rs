//! `duet sync` against a running `duet serve`, between real processes over
//! loopback QUIC: merging, who may connect, what never leaves a device, and
//! what an interrupted sync leaves behind.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{
    TestHome, contains_bytes, couple, device_id, error_line, pair, pair_own, serve, shared, str_of, titles,
};

/// The values of the conflict on `field` of `issue`, as (value, seat, name).
fn conflict(issue: &Value, field: &str) -> BTreeSet<(String, String, String)> {
    let c = issue["conflicts"]
        .as_array()
        .expect("conflicts is an array")
        .iter()
        .find(|c| c["field"] == field)
        .unwrap_or_else(|| panic!("no conflict on {field} in {issue:#}"));
    c["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            (
                str_of(v, "value"),
                str_of(&v["set_by"], "seat"),
                str_of(&v["set_by"], "name"),
            )
        })
        .collect()
}

/// The one report of a `sync ADDR --json`.
#[track_caller]
fn one_report(v: &Value) -> &Value {
    let all = v.as_array().expect("sync --json gives an array of reports");
    assert_eq!(all.len(), 1, "{v:#}");
    &all[0]
}

#[test]
fn sync_merges_both_sides_and_shows_the_status_conflict() {
    let (alex, blair) = couple(|_| {});
    let weekend = str_of(
        &alex.json(&["issue", "add", "Weekends", "--body", "We never plan the weekend."]),
        "id",
    );
    let server = serve(&alex, &[]);
    blair.ok(&["sync", &server.addr]);
    assert_eq!(
        blair.json(&["issue", "show", &weekend])["body"],
        "We never plan the weekend."
    );

    // Both edit offline: the same body at different places, the same status
    // to different values, and things of their own.
    alex.ok(&[
        "issue",
        "edit",
        &weekend,
        "--body",
        "Honestly, we never plan the weekend.",
    ]);
    blair.ok(&[
        "issue",
        "edit",
        &weekend,
        "--body",
        "We never plan the weekend. Let's try Sundays.",
    ]);
    alex.ok(&["issue", "status", &weekend, "discussing"]);
    blair.ok(&["issue", "status", &weekend, "parked"]);
    alex.add_issue("From Alex");
    blair.add_issue("From Blair");
    alex.ok(&["issue", "note", &weekend, "Alex's note"]);
    blair.ok(&["step", "add", &weekend, "Blair's step"]);

    let report = blair.json(&["sync", &server.addr]);
    let r = one_report(&report);
    assert_eq!(str_of(r, "peer"), device_id(&alex));
    assert!(r["changes_in"].as_u64().is_some_and(|n| n > 0), "{r:#}");

    let on_alex = alex.json(&["issue", "show", &weekend]);
    let on_blair = blair.json(&["issue", "show", &weekend]);
    assert_eq!(on_alex, on_blair);
    assert_eq!(
        on_alex["body"], "Honestly, we never plan the weekend. Let's try Sundays.",
        "both body edits kept, character by character"
    );
    let expected: BTreeSet<(String, String, String)> = [
        ("discussing".into(), "a".into(), "Alex".into()),
        ("parked".into(), "b".into(), "Blair".into()),
    ]
    .into();
    assert_eq!(conflict(&on_alex, "status"), expected, "{on_alex:#}");
    assert!(
        ["discussing", "parked"].contains(&on_alex["status"].as_str().unwrap_or_default()),
        "{on_alex:#}"
    );
    assert_eq!(on_alex["notes"].as_array().map(Vec::len), Some(1));
    assert_eq!(on_alex["steps"].as_array().map(Vec::len), Some(1));
    for t in ["From Alex", "From Blair", "Weekends"] {
        assert!(titles(&alex).contains(t) && titles(&blair).contains(t), "{t}");
    }
    assert_eq!(shared(&alex), shared(&blair));

    // A second sync has nothing to move, in either direction.
    let (alex_log, blair_log) = (alex.json(&["log", "--all"]), blair.json(&["log", "--all"]));
    let again = blair.json(&["sync", &server.addr]);
    assert_eq!(one_report(&again)["changes_in"], 0, "{again:#}");
    assert_eq!(alex.json(&["log", "--all"]), alex_log);
    assert_eq!(blair.json(&["log", "--all"]), blair_log);

    // One of them settles it; `sync` with no address goes to the device synced
    // with before.
    alex.ok(&["issue", "status", &weekend, "agreed"]);
    let remembered = blair.json(&["sync"]);
    assert!(
        one_report(&remembered)["changes_in"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let settled = blair.json(&["issue", "show", &weekend]);
    assert_eq!(settled["status"], "agreed");
    assert_eq!(settled["conflicts"], json!([]), "{settled:#}");
    assert_eq!(shared(&alex), shared(&blair));
}

#[test]
fn a_stranger_cannot_sync_and_changes_nothing() {
    let (alex, _blair) = couple(|h| {
        h.add_issue("Ours");
    });
    let server = serve(&alex, &[]);
    let before = alex.snapshot();

    // A device that never paired, with a home of its own.
    let eve = TestHome::named("Eve", "eve-laptop");
    eve.add_issue("Let me in");
    let eve_before = eve.snapshot();
    let err = eve.fail(&["sync", &server.addr]);
    assert!(err.contains(&server.addr), "{err}");
    assert!(
        err.contains("device"),
        "the error should say the device is not known: {err}"
    );

    assert_eq!(alex.snapshot(), before, "the serving home is unchanged");
    assert_eq!(eve.snapshot(), eve_before);
    assert!(!titles(&alex).contains("Let me in"));

    // Nor does a paired device sync with a stranger's server.
    let stranger = serve(&eve, &[]);
    let err = alex.fail(&["sync", &stranger.addr]);
    assert!(err.contains(&stranger.addr), "{err}");
    assert_eq!(alex.snapshot(), before);
    assert_eq!(eve.snapshot(), eve_before);
}

/// Alex's laptop (host, serving), Alex's phone and Blair's laptop, all synced.
fn three_devices() -> (TestHome, TestHome, TestHome) {
    let laptop = TestHome::named("Alex", "alex-laptop");
    let phone = TestHome::named("Alex", "alex-phone");
    let blair = TestHome::named("Blair", "blair-laptop");
    laptop.add_issue("Chores split");
    pair_own(&laptop, &phone, &[]);
    pair(&laptop, &blair, &[]);
    (laptop, phone, blair)
}

#[test]
fn a_revoked_device_cannot_sync_and_its_new_edits_never_arrive() {
    let (laptop, phone, blair) = three_devices();
    let server = serve(&laptop, &[]);
    phone.ok(&["sync", &server.addr]);
    let before_revoke = phone.add_issue("Before the revocation");
    phone.ok(&["sync", &server.addr]);
    assert!(titles(&laptop).contains("Before the revocation"));

    let phone_dev = device_id(&phone);
    let revoked = laptop.json(&["device", "revoke", &phone_dev[..8]]);
    assert_eq!(str_of(&revoked, "id"), phone_dev);
    assert!(!revoked["revoked_after"].is_null(), "{revoked:#}");

    // The phone, lost, keeps editing and tries to sync.
    phone.add_issue("After the revocation");
    phone.ok(&["issue", "note", &before_revoke, "Sneaky note"]);
    let before = laptop.snapshot();
    for _ in 0..2 {
        phone.fail(&["sync", &server.addr]);
    }
    assert_eq!(
        laptop.snapshot(),
        before,
        "nothing of the phone's reached the laptop"
    );
    assert!(!titles(&laptop).contains("After the revocation"));

    // Blair learns of the revocation from the laptop; from then on her device
    // refuses the phone as well.
    blair.ok(&["sync", &server.addr]);
    let blair_server = serve(&blair, &[]);
    let blair_before = blair.snapshot();
    phone.fail(&["sync", &blair_server.addr]);
    assert_eq!(blair.snapshot(), blair_before);
    assert!(titles(&blair).contains("Before the revocation"));
    assert!(!titles(&blair).contains("After the revocation"));
    assert_eq!(shared(&blair), shared(&laptop));
}

/// docs/protocol.md: a revoked device's later edit that a member's device took
/// before it learned of the revocation is accepted when that member relays it
/// (refusing it would cut the couple's devices apart for good).
#[test]
fn a_revoked_devices_edit_relayed_by_the_partner_does_not_cut_the_partner_off() {
    let (laptop, phone, blair) = three_devices();
    let laptop_server = serve(&laptop, &[]);
    let blair_server = serve(&blair, &[]);
    phone.ok(&["sync", &laptop_server.addr]);

    laptop.ok(&["device", "revoke", &device_id(&phone)]);
    // The phone reaches Blair before Blair hears of the revocation.
    phone.add_issue("After the revocation");
    phone.ok(&["sync", &blair_server.addr]);

    // Blair's own edits still reach the laptop, and so does what she relays.
    blair.add_issue("Blair's own");
    blair.ok(&["sync", &laptop_server.addr]);
    assert!(titles(&laptop).contains("Blair's own"));
    assert!(titles(&laptop).contains("After the revocation"));
    assert_eq!(shared(&laptop), shared(&blair));

    // Now that Blair knows, the phone reaches neither.
    phone.add_issue("Later still");
    phone.fail(&["sync", &blair_server.addr]);
    phone.fail(&["sync", &laptop_server.addr]);
    assert!(!titles(&blair).contains("Later still"));
    assert!(!titles(&laptop).contains("Later still"));
}

#[test]
fn sync_without_an_address_reaches_every_remembered_device_it_can() {
    let (laptop, phone, blair) = three_devices();
    let laptop_server = serve(&laptop, &[]);
    // The phone learns of Blair's device, then serves; Blair syncs with both.
    phone.ok(&["sync", &laptop_server.addr]);
    let phone_server = serve(&phone, &[]);
    blair.ok(&["sync", &phone_server.addr]);
    blair.ok(&["sync", &laptop_server.addr]);

    // The phone goes away; the laptop has news.
    drop(phone_server);
    laptop.add_issue("News from the laptop");
    let run = blair.run(&["sync", "--json"]);
    assert!(
        titles(&blair).contains("News from the laptop"),
        "the laptop was not synced: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&device_id(&laptop)),
        "the sync with the laptop is not reported: stdout {:?}, stderr {:?}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn the_journal_and_review_date_never_reach_the_partner() {
    const JOURNAL_BEFORE: &str = "journal-before-pairing-7f3a91 I keep thinking about leaving";
    const JOURNAL_AFTER: &str = "journal-after-pairing-c02e55 still unsure";
    const REVIEW: &str = "2031-07-19";
    const SHARED: &str = "shared-note-5b8d20 we talked";

    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    blair.ok(&["journal", "add", JOURNAL_BEFORE]);
    blair.ok(&["review", REVIEW]);
    pair(&alex, &blair, &[]);
    let issue = blair.add_issue("Trust");
    blair.ok(&["journal", "add", JOURNAL_AFTER]);
    blair.ok(&["issue", "note", &issue, SHARED]);

    let server = serve(&alex, &[]);
    blair.ok(&["sync", &server.addr]);

    // The journal is still Blair's, on her device.
    let journal = blair.ok(&["journal", "list", "--json"]);
    assert!(journal.contains(JOURNAL_BEFORE) && journal.contains(JOURNAL_AFTER));
    assert_eq!(blair.json(&["review"])["review_date"], REVIEW);

    let search = |when: &str| {
        let files = alex.files();
        assert!(!files.is_empty());
        // The search can see a text of that size: the shared note is there.
        assert!(
            files.iter().any(|(_, b)| contains_bytes(b, "shared-note-5b8d20")),
            "{when}: the shared note is not found in the raw files: the search proves nothing"
        );
        for (path, bytes) in &files {
            for secret in [
                "journal-before-pairing-7f3a91",
                "journal-after-pairing-c02e55",
                "I keep thinking about leaving",
                REVIEW,
            ] {
                assert!(
                    !contains_bytes(bytes, secret),
                    "{when}: `{secret}` found in {}",
                    path.display()
                );
            }
        }
    };
    search("while serving");
    server.stop("TERM").success();
    search("after serving");
    let export = alex.ok(&["export", "--private"]);
    assert!(!export.contains("journal-") && !export.contains(REVIEW));
    assert!(alex.json(&["review"])["review_date"].is_null());
}

/// A text of `n` words, different for each `seed`, that compresses poorly.
fn words(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = 2 + (x >> 60) as usize % 7;
            (0..len)
                .map(|i| char::from(b'a' + ((x >> (8 * i)) % 26) as u8))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Both homes open and read back what they hold, and each still has its own
/// issue titled `"{name} {round}"`.
#[track_caller]
fn both_whole(alex: &TestHome, blair: &TestHome, round: usize) {
    for (h, me) in [(alex, "Alex"), (blair, "Blair")] {
        assert!(
            titles(h).contains(&format!("{me} {round}")),
            "{me} lost round {round}"
        );
    }
}

#[test]
fn an_interrupted_sync_leaves_both_homes_whole_and_the_next_one_converges() {
    let (alex, blair) = couple(|_| {});
    let write = |round: usize| {
        // Something to move both ways, large enough to take a while.
        let body = words(round as u64, 300);
        alex.ok(&["issue", "add", &format!("Alex {round}"), "--body", &body]);
        blair.ok(&["issue", "add", &format!("Blair {round}"), "--body", &body]);
    };

    // How long a whole sync takes here (process start to exit), to kill the
    // next ones at fractions of it.
    write(0);
    let server = serve(&alex, &[]);
    let start = std::time::Instant::now();
    blair.ok(&["sync", &server.addr]);
    let whole = start.elapsed();
    drop(server);
    let fractions = [0.2, 0.5, 0.8];
    let mut outcomes = vec![format!("a whole sync: {whole:?}")];

    // The serving side is killed (SIGKILL) at some point of a sync.
    let mut round = 0;
    for f in fractions {
        round += 1;
        write(round);
        let server = serve(&alex, &[]);
        let mut client = blair.spawn(&["sync", &server.addr, "--json"]);
        std::thread::sleep(whole.mul_f64(f));
        server.proc.signal("KILL");
        // A sync whose server vanished waits for QUIC's idle timeout (30 s):
        // cut it short as well.
        if client.wait_timeout(Duration::from_millis(300)).is_none() {
            client.signal("KILL");
        }
        let run = client.finish();
        if run.status.success() {
            // A sync that said it finished was stored on both sides, even
            // though the server died right after.
            assert!(titles(&alex).contains(&format!("Blair {round}")), "{outcomes:?}");
            assert!(titles(&blair).contains(&format!("Alex {round}")), "{outcomes:?}");
        } else if run.status.code().is_some() {
            error_line(&run);
        }
        outcomes.push(format!("serve killed at {f}: sync {:?}", run.status));
        drop(server);
        both_whole(&alex, &blair, round);
    }

    // The syncing side is killed while the server keeps running.
    let server = serve(&alex, &[]);
    for f in fractions {
        round += 1;
        write(round);
        let client = blair.spawn(&["sync", &server.addr, "--json"]);
        std::thread::sleep(whole.mul_f64(f));
        client.signal("KILL");
        let run = client.finish();
        outcomes.push(format!("sync killed at {f}: {:?}", run.status));
        both_whole(&alex, &blair, round);
    }
    eprintln!("interrupted syncs: {outcomes:#?}");

    // The next sync, with the same server, converges.
    blair.ok(&["sync", &server.addr]);
    for h in [&alex, &blair] {
        h.ok(&["status"]);
        h.ok(&["log", "--all"]);
    }
    let all = titles(&alex);
    for r in 0..=round {
        assert!(all.contains(&format!("Alex {r}")), "{all:?}");
        assert!(all.contains(&format!("Blair {r}")), "{all:?}");
    }
    assert_eq!(shared(&alex), shared(&blair));
    let again = blair.json(&["sync", &server.addr]);
    assert_eq!(one_report(&again)["changes_in"], 0);
    server.stop("INT").success();
}
