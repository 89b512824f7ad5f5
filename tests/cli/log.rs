//! `duet log`: every change, newest first, with its author and what it did.

use crate::util::{ME, TestHome, keys, sorted, str_of};

/// Makes one change of every kind; returns the messages expected, oldest first.
/// Accepting a step or agreement I already accepted changes nothing, so those two
/// commands (run here too) log nothing: from one home, a step I own and an
/// agreement I proposed or edited are accepted by me already.
fn every_kind_of_change(h: &TestHome) -> Vec<String> {
    let i = h.add_issue("Chores");
    let s = &i[..6];
    h.ok(&["issue", "edit", &i, "--title", "Chores!"]);
    h.ok(&["issue", "status", &i, "discussing"]);
    h.ok(&["issue", "note", &i, "a note"]);
    h.ok(&["issue", "tag", &i, "home"]);
    let step = str_of(&h.json(&["step", "add", &i, "Rota"]), "id");
    let st = &step[..6];
    h.ok(&["step", "accept", &step]);
    h.ok(&["step", "done", &step]);
    h.ok(&["checkin", "rate", "7", "--week", "2026-W10"]);
    h.ok(&["checkin", "agenda", &i, "--week", "2026-W11"]);
    let a = str_of(&h.json(&["agreement", "add", "Knock first"]), "id");
    let ash = &a[..6];
    h.ok(&["agreement", "accept", &a]);
    h.ok(&["agreement", "edit", &a, "Always knock"]);
    [
        "create space".to_string(),
        format!("add issue {s}"),
        format!("edit issue {s}"),
        format!("set status of issue {s}"),
        format!("note on issue {s}"),
        format!("tag issue {s}"),
        format!("add step {st} to issue {s}"),
        format!("complete step {st}"),
        "check-in 2026-W10".to_string(),
        "check-in 2026-W11".to_string(),
        format!("add agreement {ash}"),
        format!("edit agreement {ash}"),
    ]
    .to_vec()
}

#[test]
fn every_change_is_logged_newest_first_with_its_author() {
    let h = TestHome::new();
    let mut expected = every_kind_of_change(&h);
    expected.reverse();
    let log = h.json(&["log", "--all"]);
    let lines = log.as_array().unwrap();
    let messages: Vec<&str> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages, expected);
    let device = h.json(&["status"])["device"]["id"].as_str().unwrap().to_string();
    let mut last_seq = i64::MAX;
    for l in lines {
        assert_eq!(
            keys(l),
            sorted(&["seq", "hash", "time", "author", "device", "message"])
        );
        assert_eq!(l["author"], serde_json::json!({ "seat": "a", "name": ME }), "{l}");
        let d = str_of(l, "device");
        assert!(
            device.starts_with(&d),
            "the log's device {d} is this device {device}"
        );
        let seq = l["seq"].as_i64().unwrap();
        assert!(seq < last_seq, "newest first: {seq} after {last_seq}");
        last_seq = seq;
        assert_eq!(str_of(l, "hash").len(), 64);
        assert!(str_of(l, "time").ends_with('Z'));
    }
    assert_eq!(last_seq, 1);
    assert_eq!(
        lines.len() as i64,
        h.json(&["status"])["changes"].as_i64().unwrap()
    );
}

#[test]
fn text_log_shows_author_and_change() {
    let h = TestHome::new();
    let mut expected = every_kind_of_change(&h);
    expected.reverse();
    let out = h.ok(&["log", "--all"]);
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["#", "TIME", "AUTHOR", "DEVICE", "CHANGE"]);
    assert_eq!(lines.len(), expected.len() + 1, "{out}");
    for (n, (line, message)) in lines[1..].iter().zip(&expected).enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], (expected.len() - n).to_string(), "{out}");
        assert_eq!(cells[3], ME, "{out}");
        assert!(
            line.ends_with(message.as_str()),
            "row {line:?} should end with {message:?}"
        );
    }
}

#[test]
fn limit_counts_from_the_newest() {
    let h = TestHome::new();
    for n in 0..60 {
        h.add_issue(&format!("issue {n}"));
    }
    let default = h.json(&["log"]);
    assert_eq!(default.as_array().unwrap().len(), 50, "the default limit is 50");
    assert_eq!(default[0]["seq"], 61);
    let three = h.json(&["log", "-n", "3"]);
    let seqs: Vec<i64> = three
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [61, 60, 59]);
    assert_eq!(
        h.json(&["log", "--limit", "1"])[0]["message"],
        h.json(&["log", "--all"])[0]["message"]
    );
    assert_eq!(h.json(&["log", "--all"]).as_array().unwrap().len(), 61);
    assert_eq!(h.ok(&["log", "-n", "2"]).lines().count(), 3);
}

#[test]
fn refused_commands_leave_no_log_entry() {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    let before = h.json(&["log", "--all"]);
    h.fail(&["issue", "status", &id, "closed"]);
    h.fail(&["issue", "add", ""]);
    h.fail(&["checkin", "rate", "11"]);
    h.fail(&["issue", "edit", &id]);
    assert_eq!(h.json(&["log", "--all"]), before);
}
