//! `duet issue ...`: add, list, show, edit, status, note, tag; JSON field names,
//! short id prefixes and filters.

use crate::util::{ME, TestHome, keys, sorted, str_of};

const ISSUE_FIELDS: &[&str] = &[
    "id",
    "title",
    "body",
    "status",
    "kind",
    "raised_by",
    "created_at",
    "startup",
    "tags",
    "steps",
    "notes",
    "conflicts",
];

#[test]
fn add_prints_the_short_id_and_title() {
    let h = TestHome::new();
    let out = h.ok(&["issue", "add", "Screen time at dinner"]);
    let list = h.issues();
    assert_eq!(list.len(), 1);
    let id = str_of(&list[0], "id");
    assert_eq!(
        out,
        format!("Added issue {} \"Screen time at dinner\".\n", &id[..6])
    );
}

#[test]
fn add_json_has_stable_field_names() {
    let h = TestHome::new();
    let v = h.json(&[
        "issue",
        "add",
        "Who does the dishes",
        "--body",
        "Every night the same talk.",
        "--kind",
        "solvable",
        "--tag",
        "Home",
        "--tag",
        "chores",
        "--feel",
        "tired",
        "--about",
        "the dishes",
        "--need",
        "a rota",
    ]);
    assert_eq!(keys(&v), sorted(ISSUE_FIELDS));
    let id = str_of(&v, "id");
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(v["title"], "Who does the dishes");
    assert_eq!(v["body"], "Every night the same talk.");
    assert_eq!(v["status"], "open");
    assert_eq!(v["kind"], "solvable");
    assert_eq!(v["raised_by"], serde_json::json!({ "seat": "a", "name": ME }));
    assert_eq!(
        v["tags"],
        serde_json::json!(["chores", "home"]),
        "tags are lower-cased and sorted"
    );
    assert_eq!(
        v["startup"],
        serde_json::json!({ "feel": "tired", "about": "the dishes", "need": "a rota" })
    );
    assert_eq!(v["steps"], serde_json::json!([]));
    assert_eq!(v["notes"], serde_json::json!([]));
    assert_eq!(v["conflicts"], serde_json::json!([]));
    let created = str_of(&v, "created_at");
    assert!(
        created.ends_with('Z') && created.contains('T'),
        "an RFC 3339 time: {created}"
    );

    // `show` and `list` give the same object.
    assert_eq!(h.json(&["issue", "show", &id]), v);
    assert_eq!(h.issues(), vec![v]);
}

#[test]
fn defaults_and_whitespace() {
    let h = TestHome::new();
    let v = h.json(&["issue", "add", "  Too   much\nwork  "]);
    assert_eq!(
        v["title"], "Too much work",
        "titles are trimmed and made one line"
    );
    assert_eq!(v["kind"], "unclassified");
    assert_eq!(v["status"], "open");
    assert_eq!(v["body"], "");
    assert!(v["startup"].is_null());
    assert_eq!(v["tags"], serde_json::json!([]));
}

#[test]
fn titles_of_300_characters_are_fine() {
    let h = TestHome::new();
    let title = "é".repeat(300);
    let v = h.json(&["issue", "add", &title]);
    assert_eq!(v["title"], title.as_str());
}

#[test]
fn bodies_of_exactly_64_kib_are_fine() {
    let h = TestHome::new();
    let body = "b".repeat(64 * 1024);
    let id = str_of(&h.json(&["issue", "add", "Big", "--body", &body]), "id");
    assert_eq!(h.json(&["issue", "show", &id])["body"], body.as_str());
    let note = "n".repeat(64 * 1024);
    h.ok(&["issue", "note", &id, &note]);
    assert_eq!(h.json(&["issue", "show", &id])["notes"][0]["text"], note.as_str());
}

#[test]
fn list_is_oldest_first_with_a_table() {
    let h = TestHome::new();
    assert_eq!(h.ok(&["issue", "list"]), "No issues yet.\n");
    assert_eq!(h.ok(&["issue", "list", "--json"]).trim(), "[]");
    let titles = ["First", "Second", "Third"];
    let ids: Vec<String> = titles.iter().map(|t| h.add_issue(t)).collect();
    let list = h.issues();
    let got: Vec<&str> = list.iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert_eq!(got, titles);
    for i in &list {
        assert_eq!(keys(i), sorted(ISSUE_FIELDS));
    }

    let out = h.ok(&["issue", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "STATUS", "KIND", "STEPS", "RAISED", "BY", "TITLE"]);
    for (line, (id, title)) in lines[1..].iter().zip(ids.iter().zip(titles)) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [&id[..6], "open", "unclassified", "0/0", ME, title],
            "{out}"
        );
    }
}

#[test]
fn show_text_has_everything() {
    let h = TestHome::new();
    let id = str_of(
        &h.json(&[
            "issue",
            "add",
            "Money",
            "--body",
            "line one\nline two",
            "--feel",
            "worried",
            "--need",
            "a budget",
            "--tag",
            "money",
        ]),
        "id",
    );
    h.ok(&["issue", "note", &id, "We talked on Sunday"]);
    h.ok(&["step", "add", &id, "Open a joint account", "--due", "2026-12-01"]);
    let out = h.ok(&["issue", "show", &id]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("Money {}", &id[..6]).as_str()),
        "{out}"
    );
    assert_eq!(lines.next(), Some(format!("id {id}").as_str()), "{out}");
    let third = lines.next().unwrap();
    assert!(
        third.starts_with(&format!("status open · kind unclassified · raised by {ME} on ")),
        "{out}"
    );
    for want in [
        "tags: money",
        "\"I feel worried and I need a budget\"",
        "  line one\n  line two",
        "Steps",
        "Open a joint account",
        "2026-12-01",
        "Notes",
        &format!("{ME}: We talked on Sunday"),
    ] {
        assert!(out.contains(want), "`issue show` lacks {want:?}:\n{out}");
    }
}

#[test]
fn short_prefixes_are_accepted_in_any_case() {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    for n in [1, 2, 4, 6, 16] {
        assert_eq!(
            h.json(&["issue", "show", &id[..n]])["id"],
            id.as_str(),
            "prefix of {n}"
        );
    }
    let upper = id[..5].to_ascii_uppercase();
    assert_eq!(h.json(&["issue", "show", &upper])["id"], id.as_str());
    let padded = format!(" {} ", &id[..4]);
    assert_eq!(h.json(&["issue", "show", &padded])["id"], id.as_str());

    // Every command that takes an issue id takes a prefix.
    let p = &id[..4];
    h.ok(&["issue", "status", p, "discussing"]);
    h.ok(&["issue", "note", p, "a note"]);
    h.ok(&["issue", "tag", p, "house"]);
    h.ok(&["issue", "edit", p, "--title", "Chores, again"]);
    h.ok(&["step", "add", p, "A rota"]);
    h.ok(&["checkin", "agenda", p]);
    let v = h.json(&["issue", "show", &id]);
    assert_eq!(v["status"], "discussing");
    assert_eq!(v["notes"][0]["text"], "a note");
    assert_eq!(v["tags"], serde_json::json!(["house"]));
    assert_eq!(v["title"], "Chores, again");
    assert_eq!(v["steps"][0]["text"], "A rota");
    let c = h.json(&["checkin", "show"]);
    assert_eq!(c["partners"][0]["agenda"][0]["issue_id"], id.as_str());
}

#[test]
fn edit_changes_only_what_is_given() {
    let h = TestHome::new();
    let id = str_of(
        &h.json(&["issue", "add", "Old", "--body", "old body", "--kind", "solvable"]),
        "id",
    );

    let v = h.json(&["issue", "edit", &id, "--title", "New"]);
    assert_eq!(
        (v["title"].as_str(), v["body"].as_str(), v["kind"].as_str()),
        (Some("New"), Some("old body"), Some("solvable"))
    );

    let v = h.json(&["issue", "edit", &id, "--body", "new body"]);
    assert_eq!(
        (v["title"].as_str(), v["body"].as_str(), v["kind"].as_str()),
        (Some("New"), Some("new body"), Some("solvable"))
    );

    let v = h.json(&["issue", "edit", &id, "--kind", "Perpetual"]);
    assert_eq!(
        (v["title"].as_str(), v["body"].as_str(), v["kind"].as_str()),
        (Some("New"), Some("new body"), Some("perpetual"))
    );

    let v = h.json(&[
        "issue",
        "edit",
        &id,
        "--title",
        "Newer",
        "--body",
        "",
        "--kind",
        "unclassified",
    ]);
    assert_eq!(
        (v["title"].as_str(), v["body"].as_str(), v["kind"].as_str()),
        (Some("Newer"), Some(""), Some("unclassified"))
    );

    // The text form shows the edited issue.
    let out = h.ok(&["issue", "edit", &id, "--body", "final words"]);
    assert!(out.starts_with("Newer "), "{out}");
    assert!(out.contains("  final words"), "{out}");
    assert_eq!(h.json(&["issue", "show", &id])["body"], "final words");
}

#[test]
fn status_moves_through_every_word() {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    for s in ["discussing", "agreed", "resolved", "managing", "parked", "open"] {
        let out = h.ok(&["issue", "status", &id, s]);
        assert_eq!(out, format!("Issue {} is now {s}.\n", &id[..6]));
        assert_eq!(h.json(&["issue", "show", &id])["status"], s);
    }
    let v = h.json(&["issue", "status", &id, "  MANAGING "]);
    assert_eq!(
        v["status"], "managing",
        "status words are trimmed and case-insensitive"
    );
}

#[test]
fn notes_keep_their_order_and_author() {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    let out = h.ok(&["issue", "note", &id, "first"]);
    assert_eq!(out, format!("Added a note to issue {}.\n", &id[..6]));
    h.ok(&["issue", "note", &id, "second"]);
    let v = h.json(&["issue", "note", &id, "  third  "]);
    let notes = v["notes"].as_array().unwrap();
    let texts: Vec<&str> = notes.iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["first", "second", "third"]);
    for n in notes {
        assert_eq!(keys(n), sorted(&["author", "at", "text"]));
        assert_eq!(n["author"]["name"], ME);
        assert_eq!(n["author"]["seat"], "a");
    }
}

#[test]
fn tags_are_a_set() {
    let h = TestHome::new();
    let id = str_of(&h.json(&["issue", "add", "Chores", "--tag", "home"]), "id");
    let out = h.ok(&["issue", "tag", &id, "Weekend"]);
    assert_eq!(out, format!("Issue {} tags: home, weekend.\n", &id[..6]));
    h.ok(&["issue", "tag", &id, "HOME"]);
    let v = h.json(&["issue", "tag", &id, "evening"]);
    assert_eq!(v["tags"], serde_json::json!(["evening", "home", "weekend"]));
}

#[test]
fn filters_by_status_and_kind() {
    let h = TestHome::new();
    let a = str_of(&h.json(&["issue", "add", "A", "--kind", "solvable"]), "id");
    let b = str_of(&h.json(&["issue", "add", "B", "--kind", "perpetual"]), "id");
    let c = str_of(&h.json(&["issue", "add", "C", "--kind", "perpetual"]), "id");
    let d = h.add_issue("D");
    h.ok(&["issue", "status", &b, "managing"]);
    h.ok(&["issue", "status", &c, "discussing"]);
    h.ok(&["issue", "status", &a, "discussing"]);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["issue", "list"];
        all.extend_from_slice(args);
        h.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|i| str_of(i, "id"))
            .collect()
    };
    assert_eq!(ids(&["--status", "discussing"]), [a.as_str(), c.as_str()]);
    assert_eq!(ids(&["--status", "managing"]), [b.as_str()]);
    assert_eq!(ids(&["--status", "open"]), [d.as_str()]);
    assert!(ids(&["--status", "resolved"]).is_empty());
    assert_eq!(ids(&["--kind", "perpetual"]), [b.as_str(), c.as_str()]);
    assert_eq!(ids(&["--kind", "unclassified"]), [d.as_str()]);
    assert_eq!(
        ids(&["--kind", "perpetual", "--status", "discussing"]),
        [c.as_str()]
    );
    assert_eq!(
        ids(&["--kind", "Solvable", "--status", "DISCUSSING"]),
        [a.as_str()]
    );
    assert_eq!(ids(&[]).len(), 4);

    let out = h.ok(&["issue", "list", "--status", "resolved"]);
    assert_eq!(out, "No issues yet.\n");
    let out = h.ok(&["issue", "list", "--kind", "perpetual"]);
    assert_eq!(out.lines().count(), 3, "header and two rows:\n{out}");
    assert!(
        out.contains(&b[..6]) && out.contains(&c[..6]) && !out.contains(&a[..6]),
        "{out}"
    );
}
