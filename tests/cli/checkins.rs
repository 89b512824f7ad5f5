//! `duet checkin ...`: the weekly check-in, by week.

use crate::util::{ME, TestHome, keys, sorted, str_of};

const W: &str = "2026-W10";

#[test]
fn every_entry_lands_in_the_given_week() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    let out = h.ok(&["checkin", "appreciate", "You made dinner", "--week", W]);
    assert_eq!(out, format!("Saved to the check-in of {W}.\n"));
    h.ok(&["checkin", "appreciate", "You called my mum", "--week", W]);
    h.ok(&["checkin", "well", "The walk on Sunday", "--week", W]);
    let out = h.ok(&["checkin", "agenda", &issue, "--week", W]);
    assert_eq!(out, format!("Added to the agenda of {W}.\n"));
    h.ok(&["checkin", "request", "A slow breakfast", "--week", W]);
    h.ok(&["checkin", "rate", "8", "--week", W]);
    h.ok(&["checkin", "time", "date", "120", "--week", W]);
    h.ok(&["checkin", "time", "parting", "15", "--week", W]);
    h.ok(&["checkin", "time", "Date", "30", "--week", W]);

    let c = h.json(&["checkin", "show", "--week", W]);
    assert_eq!(
        keys(&c),
        sorted(&["week", "partners", "total_minutes", "goal_minutes", "conflicts"])
    );
    assert_eq!(c["week"], W);
    assert_eq!(c["total_minutes"], 165);
    assert_eq!(c["goal_minutes"], 360);
    assert_eq!(c["conflicts"], serde_json::json!([]));
    let partners = c["partners"].as_array().unwrap();
    assert_eq!(partners.len(), 2, "seat a's part, then seat b's");
    let me = &partners[0];
    assert_eq!(
        keys(me),
        sorted(&[
            "partner",
            "appreciations",
            "went_well",
            "agenda",
            "request",
            "rating",
            "time"
        ])
    );
    assert_eq!(me["partner"]["name"], ME);
    assert_eq!(
        me["appreciations"],
        serde_json::json!(["You made dinner", "You called my mum"])
    );
    assert_eq!(me["went_well"], serde_json::json!(["The walk on Sunday"]));
    assert_eq!(
        me["agenda"],
        serde_json::json!([{ "issue_id": issue, "title": "Chores" }])
    );
    assert_eq!(me["request"], "A slow breakfast");
    assert_eq!(me["rating"], 8);
    assert_eq!(
        me["time"],
        serde_json::json!([{ "kind": "parting", "minutes": 15 }, { "kind": "date", "minutes": 150 }])
    );
    let other = &partners[1];
    assert_eq!(other["partner"]["seat"], "b");
    assert_eq!(other["appreciations"], serde_json::json!([]));
    assert!(other["rating"].is_null());

    // Nothing went to this week.
    let this_week = h.json(&["status"])["this_week"].clone();
    if this_week["week"] != W {
        assert_eq!(this_week["started"], false);
        assert_eq!(this_week["minutes"], 0);
    }
}

#[test]
fn show_text() {
    let h = TestHome::new();
    let issue = h.add_issue("Chores");
    h.ok(&["checkin", "appreciate", "You made dinner", "--week", W]);
    h.ok(&["checkin", "well", "The walk", "--week", W]);
    h.ok(&["checkin", "agenda", &issue, "--week", W]);
    h.ok(&["checkin", "request", "Breakfast", "--week", W]);
    h.ok(&["checkin", "rate", "7", "--week", W]);
    h.ok(&["checkin", "time", "date", "90", "--week", W]);
    let out = h.ok(&["checkin", "show", "--week", W]);
    for want in [
        format!("Check-in {W}"),
        "Quality time: 1h30 of 6h00".to_string(),
        ME.to_string(),
        "appreciation   You made dinner".to_string(),
        "went well      The walk".to_string(),
        format!("to talk about  Chores ({})", &issue[..6]),
        "request        Breakfast".to_string(),
        "rating         7/10".to_string(),
        "time           date 1h30".to_string(),
        "partner b\n  nothing yet".to_string(),
    ] {
        assert!(out.contains(&want), "`checkin show` lacks {want:?}:\n{out}");
    }
}

#[test]
fn request_and_rating_are_replaced_not_added() {
    let h = TestHome::new();
    h.ok(&["checkin", "rate", "3", "--week", W]);
    h.ok(&["checkin", "rate", "10", "--week", W]);
    h.ok(&["checkin", "request", "first", "--week", W]);
    h.ok(&["checkin", "request", "second", "--week", W]);
    let c = h.json(&["checkin", "show", "--week", W]);
    assert_eq!(c["partners"][0]["rating"], 10);
    assert_eq!(c["partners"][0]["request"], "second");
    assert_eq!(
        c["conflicts"],
        serde_json::json!([]),
        "one device's own edits never conflict"
    );
}

#[test]
fn every_time_kind_and_the_limits() {
    let h = TestHome::new();
    let kinds = [
        "parting",
        "reunion",
        "appreciation",
        "affection",
        "date",
        "meeting",
    ];
    for k in kinds {
        h.ok(&["checkin", "time", k, "1", "--week", W]);
    }
    h.ok(&["checkin", "time", "date", "1440", "--week", W]);
    let c = h.json(&["checkin", "show", "--week", W]);
    let got: Vec<&str> = c["partners"][0]["time"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(got, kinds);
    assert_eq!(c["total_minutes"], 1446);
}

#[test]
fn the_default_week_is_this_week() {
    let h = TestHome::new();
    let week = str_of(&h.json(&["status"])["this_week"], "week");
    let c = h.json(&["checkin", "appreciate", "Thanks"]);
    assert_eq!(c["week"], week.as_str());
    assert_eq!(h.json(&["checkin", "show"])["week"], week.as_str());
    assert_eq!(
        h.json(&["checkin", "show", "--week", &week])["partners"][0]["appreciations"],
        serde_json::json!(["Thanks"])
    );
    assert_eq!(h.json(&["status"])["this_week"]["started"], true);
}

#[test]
fn weeks_are_normalised() {
    let h = TestHome::new();
    let c = h.json(&["checkin", "rate", "5", "--week", "2026-w5"]);
    assert_eq!(c["week"], "2026-W05");
    let c = h.json(&["checkin", "show", "--week", "2026-W05"]);
    assert_eq!(c["partners"][0]["rating"], 5);
    // 2026 has 53 ISO weeks.
    h.ok(&["checkin", "rate", "5", "--week", "2026-W53"]);
}

#[test]
fn an_empty_week_shows_both_parts_empty() {
    let h = TestHome::new();
    let c = h.json(&["checkin", "show", "--week", "2027-W01"]);
    assert_eq!(c["week"], "2027-W01");
    assert_eq!(c["total_minutes"], 0);
    for p in c["partners"].as_array().unwrap() {
        assert_eq!(p["appreciations"], serde_json::json!([]));
        assert_eq!(p["time"], serde_json::json!([]));
    }
    assert_eq!(
        h.json(&["checkin", "list"]),
        serde_json::json!([]),
        "showing a week does not create it"
    );
    assert_eq!(h.ok(&["checkin", "list"]), "No check-ins yet.\n");
}

#[test]
fn list_is_newest_first() {
    let h = TestHome::new();
    h.ok(&["checkin", "rate", "6", "--week", "2026-W01"]);
    h.ok(&["checkin", "time", "date", "60", "--week", "2026-W48"]);
    h.ok(&["checkin", "appreciate", "x", "--week", "2026-W48"]);
    h.ok(&["checkin", "rate", "9", "--week", "2025-W52"]);
    let v = h.json(&["checkin", "list"]);
    let weeks: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["week"].as_str().unwrap())
        .collect();
    assert_eq!(weeks, ["2026-W48", "2026-W01", "2025-W52"]);

    let out = h.ok(&["checkin", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["WEEK", "RATINGS", "QUALITY", "TIME", "APPRECIATIONS"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, ["2026-W48", "-", "/", "-", "60", "min", "1"], "{out}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row, ["2026-W01", "6", "/", "-", "0", "min", "0"], "{out}");
}

#[test]
fn the_agenda_keeps_an_issue_once() {
    let h = TestHome::new();
    let a = h.add_issue("Chores");
    let b = h.add_issue("Money");
    h.ok(&["checkin", "agenda", &a, "--week", W]);
    h.ok(&["checkin", "agenda", &b, "--week", W]);
    h.ok(&["checkin", "agenda", &a[..4], "--week", W]);
    let c = h.json(&["checkin", "show", "--week", W]);
    let agenda: Vec<&str> = c["partners"][0]["agenda"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["issue_id"].as_str().unwrap())
        .collect();
    assert_eq!(agenda, [a.as_str(), b.as_str()]);
    // The agenda shows the issue's current title.
    h.ok(&["issue", "edit", &b, "--title", "Money, again"]);
    let c = h.json(&["checkin", "show", "--week", W]);
    assert_eq!(c["partners"][0]["agenda"][1]["title"], "Money, again");
}
