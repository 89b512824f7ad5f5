//! The private journal and review date: kept on this device, out of the shared
//! document and out of exports unless `--private` is given.

use crate::util::{TestHome, contains_bytes, keys, sorted};

const SECRET: &str = "journal-secret-7f3a: I am not sure about us";
const REVIEW: &str = "2031-07-19";

#[test]
fn journal_add_and_list() {
    let h = TestHome::new();
    assert_eq!(h.ok(&["journal", "list"]), "No journal entries yet.\n");
    let out = h.ok(&["journal", "add", "first entry"]);
    assert_eq!(out, "Journal entry 1 saved on this device only.\n");
    let e = h.json(&["journal", "add", "  second entry  "]);
    assert_eq!(keys(&e), sorted(&["id", "written_at", "text"]));
    assert_eq!(e["id"], 2);
    assert_eq!(e["text"], "second entry");

    let list = h.json(&["journal", "list"]);
    let texts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first entry", "second entry"], "oldest first");
    let out = h.ok(&["journal", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].ends_with(" first entry"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("#2 ") && lines[1].ends_with(" second entry"),
        "{out}"
    );
}

#[test]
fn the_journal_is_not_a_change_of_the_shared_record() {
    let h = TestHome::new();
    let before = h.json(&["status"])["changes"].clone();
    h.ok(&["journal", "add", SECRET]);
    h.ok(&["review", REVIEW]);
    assert_eq!(
        h.json(&["status"])["changes"],
        before,
        "private data never enters the document"
    );
    let log = h.ok(&["log", "--all"]);
    assert!(!log.contains("journal-secret"), "{log}");
    let log = h.ok(&["log", "--all", "--json"]);
    assert!(!log.contains("journal-secret") && !log.contains(REVIEW), "{log}");
}

#[test]
fn review_date_set_show_clear() {
    let h = TestHome::new();
    assert_eq!(h.ok(&["review"]), "No review date set.\n");
    assert_eq!(h.json(&["review"]), serde_json::json!({ "review_date": null }));
    let out = h.ok(&["review", REVIEW]);
    assert_eq!(
        out,
        format!("Your private review date: {REVIEW} (visible only to you, on this device).\n")
    );
    assert_eq!(h.json(&["review"]), serde_json::json!({ "review_date": REVIEW }));
    // A new date replaces the old.
    assert_eq!(
        h.json(&["review", " 2031-08-01 "]),
        serde_json::json!({ "review_date": "2031-08-01" })
    );
    assert_eq!(h.ok(&["review", "--clear"]), "No review date set.\n");
    assert_eq!(h.json(&["review"]), serde_json::json!({ "review_date": null }));
}

fn home_with_secrets() -> TestHome {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    h.ok(&["issue", "note", &id, "shared-note-91c2"]);
    h.ok(&["journal", "add", SECRET]);
    h.ok(&["review", REVIEW]);
    h
}

#[test]
fn the_automerge_export_never_holds_private_data() {
    let h = home_with_secrets();
    let r = h.run(&["export", "--format", "automerge"]);
    let bytes = r.raw.clone();
    r.success();
    // A positive control: shared text is there, as automerge stores it.
    assert!(
        contains_bytes(&bytes, "shared-note-91c2"),
        "the shared note should be in the document"
    );
    assert!(
        !contains_bytes(&bytes, "journal-secret"),
        "the journal leaked into the automerge export"
    );
    assert!(
        !contains_bytes(&bytes, REVIEW),
        "the review date leaked into the automerge export"
    );
}

#[test]
fn the_default_json_and_markdown_exports_leave_private_data_out() {
    let h = home_with_secrets();
    let json = h.ok(&["export"]);
    assert!(json.contains("shared-note-91c2"), "{json}");
    assert!(!json.contains("journal-secret"), "{json}");
    assert!(!json.contains(REVIEW), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.get("journal").is_none(), "no journal key without --private");

    let md = h.ok(&["export", "--format", "markdown"]);
    assert!(md.contains("shared-note-91c2"), "{md}");
    assert!(!md.contains("journal-secret"), "{md}");
    assert!(!md.contains("Private journal"), "{md}");
}

#[test]
fn private_exports_include_the_journal() {
    let h = home_with_secrets();
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["export", "--private"])).unwrap();
    let journal = v["journal"].as_array().expect("a journal array with --private");
    assert_eq!(journal.len(), 1);
    assert_eq!(keys(&journal[0]), sorted(&["written_at", "text"]));
    assert_eq!(journal[0]["text"], SECRET);

    let md = h.ok(&["export", "--format", "markdown", "--private"]);
    assert!(md.contains("## Private journal (this device only)"), "{md}");
    assert!(md.contains(SECRET), "{md}");
}

#[test]
fn private_data_stays_out_of_shared_views() {
    let h = home_with_secrets();
    for args in [
        &["issue", "list", "--json"][..],
        &["status", "--json"],
        &["checkin", "list", "--json"],
        &["agreement", "list", "--json"],
        &["device", "list", "--json"],
    ] {
        let out = h.ok(args);
        assert!(
            !out.contains("journal-secret") && !out.contains(REVIEW),
            "{args:?}:\n{out}"
        );
    }
}
