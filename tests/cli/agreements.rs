//! `duet agreement ...`. A home is one partner (seat a), so an agreement made here
//! is never active: that needs the partner's acceptance too.

use crate::util::{ME, TestHome, keys, sorted, str_of};

const AGREEMENT_FIELDS: &[&str] = &[
    "id",
    "text",
    "kind",
    "version",
    "accepted",
    "active",
    "created_by",
    "created_at",
    "conflicts",
];

#[test]
fn add_proposes_and_accepts_for_me_only() {
    let h = TestHome::new();
    let out = h.ok(&["agreement", "add", "No phones at dinner", "--kind", "ritual"]);
    let list = h.json(&["agreement", "list"]);
    let a = &list[0];
    let id = str_of(a, "id");
    assert_eq!(
        out,
        format!("Proposed agreement {}; your partner can accept it.\n", &id[..6])
    );
    assert_eq!(keys(a), sorted(AGREEMENT_FIELDS));
    assert_eq!(a["text"], "No phones at dinner");
    assert_eq!(a["kind"], "ritual");
    assert_eq!(a["version"], 1);
    assert_eq!(
        a["accepted"],
        serde_json::json!([{ "partner": { "seat": "a", "name": ME }, "version": 1 }])
    );
    assert_eq!(a["active"], false, "active only once both partners accept");
    assert_eq!(a["created_by"]["name"], ME);
    assert_eq!(a["conflicts"], serde_json::json!([]));
}

#[test]
fn kinds_default_to_boundary() {
    let h = TestHome::new();
    assert_eq!(h.json(&["agreement", "add", "Knock first"])["kind"], "boundary");
    assert_eq!(
        h.json(&[
            "agreement",
            "add",
            "Take a break at 20 min",
            "--kind",
            "conflict-rule"
        ])["kind"],
        "conflict-rule"
    );
    assert_eq!(
        h.json(&["agreement", "add", "Friday date", "--kind", "RITUAL"])["kind"],
        "ritual"
    );
    let list = h.json(&["agreement", "list"]);
    let texts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Knock first", "Take a break at 20 min", "Friday date"],
        "oldest first"
    );
}

#[test]
fn accepting_alone_does_not_make_it_active() {
    let h = TestHome::new();
    let id = str_of(&h.json(&["agreement", "add", "Knock first"]), "id");
    let out = h.ok(&["agreement", "accept", &id[..4]]);
    assert_eq!(
        out,
        format!(
            "Accepted agreement {} (version 1): waiting for your partner.\n",
            &id[..6]
        )
    );
    let a = h.json(&["agreement", "accept", &id]);
    assert_eq!(a["active"], false);
    assert_eq!(
        a["accepted"].as_array().unwrap().len(),
        1,
        "accepting twice records one acceptance"
    );
    assert_eq!(a["accepted"][0]["partner"]["seat"], "a");
}

#[test]
fn edit_bumps_the_version_and_needs_acceptance_again() {
    let h = TestHome::new();
    let id = str_of(&h.json(&["agreement", "add", "No phones at dinner"]), "id");
    let out = h.ok(&["agreement", "edit", &id[..5], "No phones at meals"]);
    assert_eq!(
        out,
        format!(
            "Agreement {} is now version 2; your partner can accept it.\n",
            &id[..6]
        )
    );
    let a = h.json(&["agreement", "edit", &id, "No phones at meals or in bed"]);
    assert_eq!(a["version"], 3);
    assert_eq!(a["text"], "No phones at meals or in bed");
    assert_eq!(a["active"], false);
    assert_eq!(
        a["accepted"],
        serde_json::json!([{ "partner": { "seat": "a", "name": ME }, "version": 3 }])
    );
    assert_eq!(a["kind"], "boundary", "editing keeps the kind");
    let listed = h.json(&["agreement", "list"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "an edit is a new version, not a new agreement"
    );
    assert_eq!(listed[0], a);
}

#[test]
fn list_text_shows_state() {
    let h = TestHome::new();
    assert_eq!(h.ok(&["agreement", "list"]), "No agreements yet.\n");
    let id = str_of(&h.json(&["agreement", "add", "Knock first"]), "id");
    h.ok(&["agreement", "edit", &id, "Knock first, always"]);
    let out = h.ok(&["agreement", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "KIND", "VERSION", "STATE", "AGREEMENT"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            &id[..6],
            "boundary",
            "v2",
            "accepted",
            "by",
            ME,
            "Knock",
            "first,",
            "always"
        ],
        "{out}"
    );
    assert!(!out.contains("active"), "{out}");
}
