//! Many `duet` processes on one home at once: every write lands, none is refused
//! as "locked", and nothing is lost.

use std::collections::BTreeSet;

use crate::util::{Run, TestHome, str_of};

/// Starts every command before waiting for any; returns their results in order.
fn all_at_once(h: &TestHome, commands: &[Vec<String>]) -> Vec<Run> {
    let children: Vec<(Vec<String>, std::process::Child)> = commands
        .iter()
        .map(|args| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            (args.clone(), h.command(&a).spawn().expect("cannot spawn duet"))
        })
        .collect();
    children
        .into_iter()
        .map(|(args, child)| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            Run::new(&a, child.wait_with_output().expect("cannot wait for duet"))
        })
        .collect()
}

#[track_caller]
fn all_succeed(runs: Vec<Run>) -> Vec<String> {
    runs.into_iter()
        .map(|r| {
            assert!(
                !r.stderr.to_lowercase().contains("locked"),
                "`duet {}`: {}",
                r.args,
                r.stderr
            );
            assert!(
                r.stderr.is_empty(),
                "`duet {}` wrote to stderr: {}",
                r.args,
                r.stderr
            );
            r.success()
        })
        .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn twenty_parallel_issue_adds_all_land() {
    let h = TestHome::new();
    let earlier = h.add_issue("Before the rush");
    let commands: Vec<Vec<String>> = (0..20)
        .map(|n| strings(&["issue", "add", &format!("parallel {n}"), "--json"]))
        .collect();
    let outs = all_succeed(all_at_once(&h, &commands));

    let reported: BTreeSet<String> = outs
        .iter()
        .map(|o| str_of(&serde_json::from_str(o).expect("JSON from issue add"), "id"))
        .collect();
    assert_eq!(reported.len(), 20, "twenty distinct ids");

    let list = h.issues();
    assert_eq!(
        list.len(),
        21,
        "exactly the twenty new issues plus the earlier one"
    );
    let titles: BTreeSet<String> = list.iter().map(|i| str_of(i, "title")).collect();
    for n in 0..20 {
        assert!(titles.contains(&format!("parallel {n}")), "issue {n} lost");
    }
    let ids: BTreeSet<String> = list.iter().map(|i| str_of(i, "id")).collect();
    assert!(ids.contains(&earlier));
    assert!(reported.is_subset(&ids), "every id a command reported is stored");

    // One change per command, in one unbroken log.
    let status = h.json(&["status"]);
    assert_eq!(status["changes"], 22);
    assert_eq!(status["issues"]["total"], 21);
    let log = h.json(&["log", "--all"]);
    let seqs: Vec<i64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=22).rev().collect::<Vec<_>>());
}

#[test]
fn parallel_edits_of_one_issue_all_land() {
    let h = TestHome::new();
    let id = h.add_issue("Busy issue");
    let mut commands = Vec::new();
    for n in 0..12 {
        commands.push(strings(&["issue", "note", &id[..6], &format!("note {n}")]));
    }
    for n in 0..4 {
        commands.push(strings(&["issue", "tag", &id, &format!("tag{n}")]));
    }
    for n in 0..4 {
        commands.push(strings(&["step", "add", &id, &format!("step {n}")]));
    }
    commands.push(strings(&["issue", "status", &id, "discussing"]));
    commands.push(strings(&["checkin", "agenda", &id, "--week", "2026-W10"]));
    let runs = all_at_once(&h, &commands);
    assert_eq!(runs.len(), 22);
    all_succeed(runs);

    let v = h.json(&["issue", "show", &id]);
    let notes: BTreeSet<String> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| str_of(n, "text"))
        .collect();
    let want: BTreeSet<String> = (0..12).map(|n| format!("note {n}")).collect();
    assert_eq!(notes, want, "every note is present");
    assert_eq!(v["notes"].as_array().unwrap().len(), 12, "and none twice");
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["tag0", "tag1", "tag2", "tag3"]);
    let steps: BTreeSet<String> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_of(s, "text"))
        .collect();
    assert_eq!(
        steps,
        (0..4).map(|n| format!("step {n}")).collect::<BTreeSet<_>>()
    );
    assert_eq!(v["status"], "discussing");
    assert_eq!(
        v["conflicts"],
        serde_json::json!([]),
        "one device never conflicts with itself"
    );
    assert_eq!(
        h.json(&["checkin", "show", "--week", "2026-W10"])["partners"][0]["agenda"][0]["issue_id"],
        id.as_str()
    );
    assert_eq!(h.json(&["status"])["changes"], 2 + 22);
}

#[test]
fn readers_and_writers_together() {
    let h = TestHome::new();
    for n in 0..3 {
        h.add_issue(&format!("early {n}"));
    }
    let mut commands = Vec::new();
    for n in 0..10 {
        commands.push(strings(&["issue", "add", &format!("late {n}")]));
        commands.push(strings(&["issue", "list", "--json"]));
        commands.push(strings(&["checkin", "time", "date", "10", "--week", "2026-W10"]));
    }
    let runs = all_at_once(&h, &commands);
    let outs = all_succeed(runs);
    for (cmd, out) in commands.iter().zip(&outs) {
        if cmd[1] == "list" {
            let list: serde_json::Value = serde_json::from_str(out).expect("a reader gets whole JSON");
            let n = list.as_array().unwrap().len();
            assert!(
                (3..=13).contains(&n),
                "a reader sees a consistent state: {n} issues"
            );
        }
    }
    assert_eq!(h.issues().len(), 13);
    let c = h.json(&["checkin", "show", "--week", "2026-W10"]);
    assert_eq!(c["total_minutes"], 100, "ten parallel time entries, none lost");
}

#[test]
fn parallel_journal_entries_all_land() {
    let h = TestHome::new();
    let commands: Vec<Vec<String>> = (0..10)
        .map(|n| strings(&["journal", "add", &format!("entry {n}")]))
        .collect();
    all_succeed(all_at_once(&h, &commands));
    let list = h.json(&["journal", "list"]);
    let texts: BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(e, "text"))
        .collect();
    assert_eq!(
        texts,
        (0..10).map(|n| format!("entry {n}")).collect::<BTreeSet<_>>()
    );
}

#[test]
fn parallel_inits_make_one_home() {
    let h = TestHome::uninit();
    let commands: Vec<Vec<String>> = (0..6)
        .map(|n| strings(&["init", "--name", &format!("Person {n}")]))
        .collect();
    let runs = all_at_once(&h, &commands);
    let mut winners = Vec::new();
    for (n, r) in runs.into_iter().enumerate() {
        if r.status.success() {
            winners.push(n);
        } else {
            let line = r.failure();
            assert!(line.contains("already exists"), "{line}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one init wins: {winners:?}");
    let status = h.json(&["status"]);
    assert_eq!(status["me"]["name"], format!("Person {}", winners[0]));
    assert_eq!(status["changes"], 1);
    h.add_issue("works");
}
