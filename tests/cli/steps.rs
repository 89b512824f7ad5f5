//! `duet step ...`: add (owners, due dates), accept, done with outcomes, list.

use crate::util::{ME, TestHome, keys, sorted, str_of};

const STEP_FIELDS: &[&str] = &[
    "id",
    "issue_id",
    "text",
    "owner",
    "due",
    "accepted_by",
    "created_by",
    "created_at",
    "done",
    "outcome",
    "done_at",
    "conflicts",
];

#[test]
fn add_json_has_stable_field_names() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let s = h.json(&["step", "add", &issue, "Make a rota", "--due", "2026-12-01"]);
    assert_eq!(keys(&s), sorted(STEP_FIELDS));
    assert_eq!(s["issue_id"], issue.as_str());
    assert_eq!(s["text"], "Make a rota");
    assert_eq!(s["owner"], "a", "the default owner is me (seat a)");
    assert_eq!(s["due"], "2026-12-01");
    assert_eq!(
        s["accepted_by"],
        serde_json::json!(["a"]),
        "my own step is accepted by me at once"
    );
    assert_eq!(s["created_by"]["name"], ME);
    assert_eq!(s["done"], false);
    assert!(s["outcome"].is_null());
    assert!(s["done_at"].is_null());
    let id = str_of(&s, "id");
    assert_eq!(id.len(), 16);

    let shown = h.json(&["issue", "show", &issue]);
    assert_eq!(shown["steps"], serde_json::json!([s]));
}

#[test]
fn add_prints_step_and_issue() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let out = h.ok(&["step", "add", &issue[..3], "Make a rota"]);
    let step = str_of(&h.json(&["step", "list"])[0], "id");
    assert_eq!(
        out,
        format!("Added step {} to issue {}.\n", &step[..6], &issue[..6])
    );
}

#[test]
fn owners_me_partner_both() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let me = h.json(&["step", "add", &issue, "mine", "--owner", "me"]);
    let partner = h.json(&["step", "add", &issue, "theirs", "--owner", "partner"]);
    let both = h.json(&["step", "add", &issue, "ours", "--owner", "BOTH"]);
    assert_eq!(me["owner"], "a");
    assert_eq!(partner["owner"], "b");
    assert_eq!(both["owner"], "both");
    assert_eq!(me["accepted_by"], serde_json::json!(["a"]));
    assert_eq!(
        partner["accepted_by"],
        serde_json::json!([]),
        "the partner has not accepted yet"
    );
    assert_eq!(
        both["accepted_by"],
        serde_json::json!(["a"]),
        "one of the two owners accepted"
    );
    assert!(me["due"].is_null());

    let out = h.ok(&["issue", "show", &issue]);
    let row = |text: &str| {
        out.lines()
            .find(|l| l.ends_with(text) || l.contains(&format!(" {text} ")))
            .unwrap_or_else(|| panic!("no row for {text}:\n{out}"))
            .to_string()
    };
    assert!(row("mine").contains(ME) && row("mine").contains(" yes "), "{out}");
    assert!(
        row("theirs").contains("partner b"),
        "a partner who has not joined shows as `partner b`:\n{out}"
    );
    assert!(row("theirs").contains("not yet"), "{out}");
    assert!(
        row("ours").contains("both") && row("ours").contains("one of two"),
        "{out}"
    );
}

#[test]
fn accept_is_idempotent_for_my_own_steps() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let s = str_of(&h.json(&["step", "add", &issue, "mine"]), "id");
    let out = h.ok(&["step", "accept", &s[..5]]);
    assert_eq!(out, format!("You accepted step {}.\n", &s[..6]));
    let v = h.json(&["step", "accept", &s]);
    assert_eq!(
        v["accepted_by"],
        serde_json::json!(["a"]),
        "no duplicate acceptance"
    );
}

#[test]
fn accept_a_both_step_keeps_it_one_of_two() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let s = str_of(&h.json(&["step", "add", &issue, "ours", "--owner", "both"]), "id");
    let v = h.json(&["step", "accept", &s]);
    assert_eq!(v["accepted_by"], serde_json::json!(["a"]));
    let out = h.ok(&["step", "list"]);
    assert!(
        out.contains("one of two"),
        "only one of the two owners accepted:\n{out}"
    );
}

#[test]
fn accepting_a_step_i_do_not_own_does_not_make_it_accepted() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let s = str_of(
        &h.json(&["step", "add", &issue, "theirs", "--owner", "partner"]),
        "id",
    );
    // Either refused, or recorded without claiming the owner accepted.
    let r = h.run(&["step", "accept", &s]);
    if r.status.success() {
        let v = h.json(&["issue", "show", &issue]);
        let accepted = &v["steps"][0]["accepted_by"];
        assert!(
            !accepted.as_array().unwrap().iter().any(|x| x == "a"),
            "seat a is not an owner of a partner step, yet accepted_by = {accepted}"
        );
        let out = h.ok(&["step", "list"]);
        assert!(out.contains("not yet"), "{out}");
    } else {
        r.failure();
    }
}

#[test]
fn done_with_every_outcome() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    for outcome in ["kept", "partly", "missed", "renegotiated"] {
        let s = str_of(
            &h.json(&["step", "add", &issue, &format!("step {outcome}")]),
            "id",
        );
        let out = h.ok(&["step", "done", &s, "--outcome", outcome]);
        assert_eq!(out, format!("Step {} done: {outcome}.\n", &s[..6]));
        let v = h.json(&["issue", "show", &issue]);
        let step = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == s.as_str())
            .unwrap()
            .clone();
        assert_eq!(step["done"], true);
        assert_eq!(step["outcome"], outcome);
        assert!(step["done_at"].is_string(), "{step}");
    }
    // The default outcome is kept.
    let s = str_of(&h.json(&["step", "add", &issue, "default"]), "id");
    let v = h.json(&["step", "done", &s]);
    assert_eq!(v["outcome"], "kept");
    let v = h.json(&["step", "add", &issue, "shouting"]);
    let v = h.json(&["step", "done", v["id"].as_str().unwrap(), "--outcome", " PARTLY "]);
    assert_eq!(v["outcome"], "partly");

    let out = h.ok(&["issue", "list"]);
    assert!(out.contains("6/6"), "all six steps done:\n{out}");
}

#[test]
fn list_shows_open_steps_unless_all() {
    let h = TestHome::new();
    assert_eq!(h.ok(&["step", "list"]), "No steps yet.\n");
    let a = h.add_issue("Chores");
    let b = h.add_issue("Money");
    let s1 = str_of(
        &h.json(&["step", "add", &a, "Make a rota", "--due", "2026-12-24"]),
        "id",
    );
    let s2 = str_of(
        &h.json(&["step", "add", &b, "Budget", "--owner", "partner"]),
        "id",
    );
    let s3 = str_of(&h.json(&["step", "add", &b, "Talk", "--owner", "both"]), "id");
    h.ok(&["step", "done", &s1, "--outcome", "missed"]);

    let open: Vec<String> = h
        .json(&["step", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_of(s, "id"))
        .collect();
    assert_eq!(open, [s2.clone(), s3.clone()]);
    let all = h.json(&["step", "list", "--all"]);
    let all_ids: Vec<String> = all.as_array().unwrap().iter().map(|s| str_of(s, "id")).collect();
    assert_eq!(all_ids, [s1.clone(), s2.clone(), s3.clone()]);
    for s in all.as_array().unwrap() {
        assert_eq!(keys(s), sorted(STEP_FIELDS));
    }

    let out = h.ok(&["step", "list", "--all"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "OWNER", "DUE", "ACCEPTED", "STATE", "STEP"]);
    assert!(out.contains("2026-12-24"), "{out}");
    assert!(out.contains("missed"), "{out}");
    // Both partners side by side, never as a score.
    assert!(
        out.contains(&format!("{ME}: 0 kept, 0 partly, 1 missed, 1 open")),
        "{out}"
    );
    assert!(
        out.contains("partner b: 0 kept, 0 partly, 0 missed, 2 open"),
        "{out}"
    );
    let open_text = h.ok(&["step", "list"]);
    assert!(
        !open_text.contains("Make a rota"),
        "done steps are hidden without --all:\n{open_text}"
    );
    assert!(
        open_text.contains("Budget") && open_text.contains("Talk"),
        "{open_text}"
    );
}

#[test]
fn step_ids_take_prefixes() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let s = str_of(&h.json(&["step", "add", &issue, "one"]), "id");
    let v = h.json(&["step", "done", &s[..4].to_ascii_uppercase(), "--outcome", "kept"]);
    assert_eq!(v["id"], s.as_str());
    assert_eq!(v["done"], true);
}
