//! Bad input: every refused command prints exactly one `error: ` line, exits
//! non-zero without a panic, and leaves everything stored as it was.

use crate::util::{TestHome, other_id, str_of};

/// A home with one of everything, to aim bad commands at.
struct Fixture {
    h: TestHome,
    issue: String,
    step: String,
    agreement: String,
}

fn fixture() -> Fixture {
    let h = TestHome::new();
    let issue = str_of(
        &h.json(&["issue", "add", "Chores", "--body", "the body", "--tag", "home"]),
        "id",
    );
    h.ok(&["issue", "note", &issue, "first note"]);
    let step = str_of(&h.json(&["step", "add", &issue, "Make a rota"]), "id");
    let agreement = str_of(&h.json(&["agreement", "add", "Knock first"]), "id");
    h.ok(&["checkin", "rate", "7", "--week", "2026-W10"]);
    h.ok(&["journal", "add", "private words"]);
    h.ok(&["review", "2031-01-01"]);
    Fixture {
        h,
        issue,
        step,
        agreement,
    }
}

impl Fixture {
    /// Runs every command in `cases`; each must fail with one error line that
    /// contains its expected words. Afterwards nothing stored has changed.
    #[track_caller]
    fn refuse(&self, cases: &[(Vec<&str>, &str)]) {
        let before = self.h.snapshot();
        for (args, want) in cases {
            let line = self.h.fail(args);
            assert!(
                line.contains(want),
                "`duet {}`: expected {want:?} in:\n{line}",
                args.join(" ")
            );
        }
        let after = self.h.snapshot();
        assert_eq!(after, before, "a refused command changed what is stored");
        // And, more plainly: the one issue is still there, as it was.
        let list = self.h.issues();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["id"], self.issue.as_str());
        assert_eq!(list[0]["title"], "Chores");
        assert_eq!(list[0]["status"], "open");
        assert_eq!(list[0]["notes"].as_array().unwrap().len(), 1);
    }
}

fn v<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.to_vec()
}

#[test]
fn unknown_ids() {
    let f = fixture();
    let (i, s, a) = (other_id(&f.issue), other_id(&f.step), other_id(&f.agreement));
    let no_issue = format!("no issue with id '{i}'");
    let no_step = format!("no step with id '{s}'");
    let no_agreement = format!("no agreement with id '{a}'");
    f.refuse(&[
        (v(&["issue", "show", &i]), &no_issue),
        (v(&["issue", "status", &i, "parked"]), &no_issue),
        (v(&["issue", "note", &i, "hello"]), &no_issue),
        (v(&["issue", "tag", &i, "x"]), &no_issue),
        (v(&["issue", "edit", &i, "--title", "x"]), &no_issue),
        (v(&["step", "add", &i, "x"]), &no_issue),
        (v(&["checkin", "agenda", &i, "--week", "2026-W10"]), &no_issue),
        (v(&["step", "accept", &s]), &no_step),
        (v(&["step", "done", &s]), &no_step),
        (v(&["agreement", "accept", &a]), &no_agreement),
        (v(&["agreement", "edit", &a, "x"]), &no_agreement),
        // An issue id is not a step id, and the other way round.
        (v(&["step", "done", &f.issue]), "no step with id"),
        (v(&["issue", "show", &f.step]), "no issue with id"),
        (v(&["agreement", "accept", &f.issue]), "no agreement with id"),
    ]);
}

#[test]
fn ids_that_are_not_hex() {
    let f = fixture();
    f.refuse(&[
        (v(&["issue", "show", "zz"]), "invalid id 'zz'"),
        (v(&["issue", "show", ""]), "invalid id"),
        (v(&["issue", "show", "   "]), "invalid id"),
        (v(&["issue", "note", "g123", "x"]), "invalid id 'g123'"),
        (v(&["step", "done", "xyz"]), "invalid id 'xyz'"),
        (v(&["agreement", "accept", "!!"]), "invalid id '!!'"),
    ]);
}

#[test]
fn ambiguous_ids() {
    let f = fixture();
    // Add issues until two share a first hex digit (at most 16 more).
    let mut ids = vec![f.issue.clone()];
    let digit = loop {
        let id = f.h.add_issue(&format!("issue {}", ids.len()));
        let d = id[..1].to_string();
        if ids.iter().any(|x| x.starts_with(&d)) {
            ids.push(id);
            break d;
        }
        ids.push(id);
        assert!(ids.len() <= 17, "pigeonhole");
    };
    let before = f.h.snapshot();
    let sharing: Vec<&String> = ids.iter().filter(|x| x.starts_with(&digit)).collect();
    assert_eq!(sharing.len(), 2);
    for args in [
        v(&["issue", "show", &digit]),
        v(&["issue", "status", &digit, "parked"]),
        v(&["issue", "note", &digit, "which one?"]),
        v(&["issue", "tag", &digit, "x"]),
        v(&["issue", "edit", &digit, "--title", "x"]),
        v(&["step", "add", &digit, "x"]),
        v(&["checkin", "agenda", &digit]),
    ] {
        let line = f.h.fail(&args);
        assert!(line.contains(&format!("ambiguous issue id '{digit}'")), "{line}");
        for id in &sharing {
            assert!(line.contains(&id[..3]), "the candidates are listed: {line}");
        }
    }
    assert_eq!(f.h.snapshot(), before);
    // A longer prefix settles it.
    let longer = &sharing[0][..8];
    assert_eq!(f.h.json(&["issue", "show", longer])["id"], sharing[0].as_str());
    assert_eq!(f.h.issues().len(), ids.len());
}

#[test]
fn invalid_status() {
    let f = fixture();
    let i = f.issue.clone();
    f.refuse(&[
        (
            v(&["issue", "status", &i, "closed"]),
            "invalid status 'closed' (expected one of: open, discussing, agreed, resolved, managing, parked)",
        ),
        (v(&["issue", "status", &i, ""]), "invalid status"),
        (
            v(&["issue", "status", &i, "open-ish"]),
            "invalid status 'open-ish'",
        ),
        (v(&["issue", "list", "--status", "done"]), "invalid status 'done'"),
    ]);
}

#[test]
fn invalid_kind() {
    let f = fixture();
    let i = f.issue.clone();
    f.refuse(&[
        (
            v(&["issue", "add", "New", "--kind", "fixable"]),
            "invalid kind 'fixable' (expected one of: unclassified, solvable, perpetual)",
        ),
        (
            v(&["issue", "edit", &i, "--kind", "forever"]),
            "invalid kind 'forever'",
        ),
        (
            v(&["issue", "edit", &i, "--title", "Renamed", "--kind", "forever"]),
            "invalid kind 'forever'",
        ),
        (v(&["issue", "list", "--kind", "big"]), "invalid kind 'big'"),
        (
            v(&["agreement", "add", "x", "--kind", "rule"]),
            "invalid agreement kind 'rule'",
        ),
        (
            v(&["checkin", "time", "nap", "30"]),
            "invalid quality-time kind 'nap'",
        ),
    ]);
}

#[test]
fn invalid_week() {
    let f = fixture();
    let i = f.issue.clone();
    let mut cases = Vec::new();
    for week in [
        "2026-W54",
        "2025-W53",
        "2026-48",
        "26-W01",
        "2026-W",
        "2026-W0",
        "next week",
        "2026-W100",
        "",
    ] {
        cases.push((vec!["checkin", "rate", "5", "--week", week], "invalid week"));
    }
    cases.push((
        v(&["checkin", "show", "--week", "soon"]),
        "invalid week 'soon' (expected an ISO week such as 2026-W48)",
    ));
    cases.push((
        v(&["checkin", "appreciate", "x", "--week", "W10"]),
        "invalid week 'W10'",
    ));
    cases.push((v(&["checkin", "well", "x", "--week", "W10"]), "invalid week"));
    cases.push((v(&["checkin", "request", "x", "--week", "W10"]), "invalid week"));
    cases.push((
        v(&["checkin", "time", "date", "5", "--week", "W10"]),
        "invalid week",
    ));
    cases.push((v(&["checkin", "agenda", &i, "--week", "W10"]), "invalid week"));
    f.refuse(&cases);
}

#[test]
fn invalid_date() {
    let f = fixture();
    let i = f.issue.clone();
    let mut cases = Vec::new();
    for date in [
        "2026-02-30",
        "2026-13-01",
        "tomorrow",
        "01/12/2026",
        "2026-12-1",
        "20261201",
        "",
    ] {
        cases.push((
            vec!["step", "add", i.as_str(), "x", "--due", date],
            "invalid date",
        ));
    }
    cases.push((
        v(&["review", "2026-02-30"]),
        "invalid date '2026-02-30' (expected YYYY-MM-DD, such as 2026-12-01)",
    ));
    cases.push((v(&["review", "someday"]), "invalid date 'someday'"));
    f.refuse(&cases);
    assert_eq!(
        f.h.json(&["review"])["review_date"],
        "2031-01-01",
        "a bad date keeps the old review date"
    );
}

#[test]
fn invalid_rating() {
    let f = fixture();
    let mut cases = Vec::new();
    for r in ["0", "11", "seven", "7.5", "", "100000000000000000000"] {
        cases.push((vec!["checkin", "rate", r, "--week", "2026-W10"], "invalid rating"));
    }
    cases.push((
        v(&["checkin", "rate", "--week", "2026-W10", "--", "-1"]),
        "invalid rating '-1' (expected a whole number from 1 to 10)",
    ));
    f.refuse(&cases);
    let c = f.h.json(&["checkin", "show", "--week", "2026-W10"]);
    assert_eq!(c["partners"][0]["rating"], 7, "the rating stays");
}

#[test]
fn invalid_minutes() {
    let f = fixture();
    let mut cases = Vec::new();
    for m in ["0", "1441", "abc", "1.5", "", "99999999999"] {
        cases.push((vec!["checkin", "time", "date", m], "invalid minutes"));
    }
    cases.push((
        v(&["checkin", "time", "date", "--", "-5"]),
        "invalid minutes '-5' (expected a whole number from 1 to 1440)",
    ));
    f.refuse(&cases);
}

#[test]
fn negative_numbers_get_the_one_line_error() {
    let f = fixture();
    f.refuse(&[
        (v(&["checkin", "rate", "-1"]), "invalid rating '-1'"),
        (v(&["checkin", "time", "date", "-5"]), "invalid minutes '-5'"),
    ]);
}

#[test]
fn invalid_owner_and_outcome() {
    let f = fixture();
    let (i, s) = (f.issue.clone(), f.step.clone());
    f.refuse(&[
        (
            v(&["step", "add", &i, "x", "--owner", "them"]),
            "invalid owner 'them' (expected one of: me, partner, both)",
        ),
        (v(&["step", "add", &i, "x", "--owner", "a"]), "invalid owner 'a'"),
        (v(&["step", "add", &i, "x", "--owner", ""]), "invalid owner"),
        (
            v(&["step", "done", &s, "--outcome", "great"]),
            "invalid outcome 'great' (expected one of: kept, partly, missed, renegotiated)",
        ),
        (
            v(&["step", "done", &s, "--outcome", "done"]),
            "invalid outcome 'done'",
        ),
    ]);
    let step = &f.h.issues()[0]["steps"][0];
    assert_eq!(step["done"], false, "a bad outcome leaves the step open");
    assert_eq!(step["owner"], "a");
}

#[test]
fn empty_text() {
    let f = fixture();
    let (i, a) = (f.issue.clone(), f.agreement.clone());
    f.refuse(&[
        (v(&["issue", "add", ""]), "title must not be empty"),
        (v(&["issue", "add", "   \n\t "]), "title must not be empty"),
        (
            v(&["issue", "edit", &i, "--title", " "]),
            "title must not be empty",
        ),
        (v(&["issue", "note", &i, ""]), "note must not be empty"),
        (v(&["issue", "tag", &i, "  "]), "tag must not be empty"),
        (v(&["issue", "add", "x", "--tag", ""]), "tag must not be empty"),
        (v(&["step", "add", &i, " "]), "step must not be empty"),
        (v(&["agreement", "add", ""]), "agreement must not be empty"),
        (v(&["agreement", "edit", &a, " "]), "agreement must not be empty"),
        (v(&["journal", "add", "  "]), "journal entry must not be empty"),
        (
            v(&["checkin", "appreciate", ""]),
            "appreciation must not be empty",
        ),
        (v(&["checkin", "well", " "]), "what went well must not be empty"),
        (v(&["checkin", "request", ""]), "request must not be empty"),
    ]);
}

#[test]
fn nothing_to_edit() {
    let f = fixture();
    let i = f.issue.clone();
    f.refuse(&[(v(&["issue", "edit", &i]), "nothing to change")]);
}

#[test]
fn title_of_301_characters() {
    let f = fixture();
    let i = f.issue.clone();
    let ascii = "t".repeat(301);
    let wide = "é".repeat(301);
    let spaced = format!("  {}  ", "t".repeat(301));
    f.refuse(&[
        (
            v(&["issue", "add", &ascii]),
            "title is 301 characters long; the limit is 300",
        ),
        (v(&["issue", "add", &wide]), "title is 301 characters long"),
        (v(&["issue", "add", &spaced]), "title is 301 characters long"),
        (
            v(&["issue", "edit", &i, "--title", &ascii]),
            "title is 301 characters long",
        ),
    ]);
    // 300 is fine (see issues.rs); the boundary is exactly here.
    let ok = "t".repeat(300);
    f.h.ok(&["issue", "add", &ok]);
}

#[test]
fn text_over_64_kib() {
    let f = fixture();
    let (i, a) = (f.issue.clone(), f.agreement.clone());
    let big = "x".repeat(64 * 1024 + 1);
    let too_long = "65537 bytes long; the limit is 64 KiB";
    f.refuse(&[
        (
            v(&["issue", "add", "New", "--body", &big]),
            &format!("body is {too_long}"),
        ),
        (
            v(&["issue", "edit", &i, "--body", &big]),
            &format!("body is {too_long}"),
        ),
        (v(&["issue", "note", &i, &big]), &format!("note is {too_long}")),
        (v(&["issue", "add", "New", "--feel", &big]), too_long),
        (v(&["issue", "add", "New", "--about", &big]), too_long),
        (v(&["issue", "add", "New", "--need", &big]), too_long),
        (v(&["step", "add", &i, &big]), too_long),
        (v(&["agreement", "add", &big]), too_long),
        (v(&["agreement", "edit", &a, &big]), too_long),
        (v(&["journal", "add", &big]), too_long),
        (v(&["checkin", "appreciate", &big]), too_long),
        (v(&["checkin", "well", &big]), too_long),
        (v(&["checkin", "request", &big]), too_long),
        (v(&["issue", "add", &big]), "title"),
    ]);
}

#[test]
fn long_tags_and_too_many_tags() {
    let f = fixture();
    let i = f.issue.clone();
    let long_tag = "t".repeat(65);
    let mut many = vec!["issue", "add", "Tagged"];
    let tags: Vec<String> = (0..33).map(|n| format!("t{n}")).collect();
    for t in &tags {
        many.push("--tag");
        many.push(t);
    }
    f.refuse(&[
        (v(&["issue", "tag", &i, &long_tag]), "tag"),
        (many, "at most 32 tags"),
    ]);
}

#[test]
fn home_that_does_not_exist() {
    let h = TestHome::uninit();
    let want = format!("no duet home at {}", h.path().display());
    for args in [
        &["status"][..],
        &["issue", "list"],
        &["issue", "add", "x"],
        &["journal", "add", "x"],
        &["review", "2030-01-01"],
        &["log"],
        &["export"],
    ] {
        let line = h.fail(args);
        assert!(line.contains(&want), "{line}");
        assert!(line.contains("duet init"), "the error says what to do: {line}");
    }
    assert!(
        !h.path().exists(),
        "a failed command must not create the home folder"
    );
}

#[test]
fn home_folder_that_was_never_initialised() {
    let h = TestHome::uninit();
    std::fs::create_dir(h.path()).unwrap();
    std::fs::write(h.path().join("notes.txt"), "mine").unwrap();
    let want = format!("no duet home at {}", h.path().display());
    for args in [
        &["status"][..],
        &["issue", "add", "x"],
        &["export", "-f", "automerge"],
    ] {
        let line = h.fail(args);
        assert!(line.contains(&want), "{line}");
    }
    let names: Vec<String> = std::fs::read_dir(h.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["notes.txt"],
        "nothing is written into a folder that is not a home"
    );
}

#[test]
fn home_path_that_is_a_file() {
    let h = TestHome::uninit();
    std::fs::write(h.path(), "not a folder").unwrap();
    let line = h.fail(&["status"]);
    assert!(line.contains(&h.path().display().to_string()), "{line}");
    let line = h.fail(&["init", "--name", "Sam"]);
    assert!(line.contains(&h.path().display().to_string()), "{line}");
    assert_eq!(std::fs::read_to_string(h.path()).unwrap(), "not a folder");
}

#[test]
fn damaged_database() {
    let h = TestHome::new();
    h.add_issue("Chores");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(h.db(), &garbage).unwrap();
    let path = h.db().display().to_string();
    for args in [
        &["status"][..],
        &["issue", "list"],
        &["issue", "add", "x"],
        &["journal", "list"],
        &["export"],
    ] {
        let line = h.fail(args);
        assert!(line.contains(&path), "the error names the file {path}: {line}");
        assert!(line.contains("damaged"), "{line}");
    }
    assert_eq!(
        std::fs::read(h.db()).unwrap(),
        garbage,
        "a damaged file is left as it was, for recovery"
    );
}

#[test]
fn short_garbage_database() {
    let h = TestHome::new();
    std::fs::write(h.db(), b"garbage").unwrap();
    let line = h.fail(&["issue", "list"]);
    assert!(line.contains(&h.db().display().to_string()), "{line}");
    assert_eq!(std::fs::read(h.db()).unwrap(), b"garbage");
}

#[test]
fn truncated_database() {
    let h = TestHome::new();
    for n in 0..5 {
        h.add_issue(&format!("issue {n}"));
    }
    let bytes = std::fs::read(h.db()).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    std::fs::write(h.db(), &half).unwrap();
    let line = h.fail(&["issue", "list"]);
    assert!(line.contains(&h.db().display().to_string()), "{line}");
}

#[test]
fn init_twice() {
    let h = TestHome::new();
    let id = h.add_issue("Chores");
    let status = h.json(&["status"]);
    let before = h.snapshot();
    let line = h.fail(&["init", "--name", "Someone else"]);
    assert_eq!(
        line,
        format!("error: a duet home already exists at {}", h.path().display())
    );
    let line = h.fail(&["init", "--name", "Sam", "--device-name", "laptop"]);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(h.snapshot(), before);
    let after = h.json(&["status"]);
    assert_eq!(after["space_id"], status["space_id"]);
    assert_eq!(after["device"], status["device"], "the device key is untouched");
    assert_eq!(after["me"]["name"], "Sam");
    assert_eq!(h.json(&["issue", "show", &id])["title"], "Chores");
}

#[test]
fn init_with_a_bad_name() {
    let h = TestHome::uninit();
    let line = h.fail(&["init", "--name", "  "]);
    assert!(line.contains("name must not be empty"), "{line}");
    let long = "n".repeat(101);
    let line = h.fail(&["init", "--name", &long]);
    assert!(
        line.contains("name is 101 characters long; the limit is 100 characters"),
        "{line}"
    );
    // A refused init leaves no half-made home: a good one works afterwards.
    assert!(!h.db().exists(), "no database left behind");
    h.ok(&["init", "--name", &"n".repeat(100)]);
}

#[test]
fn export_format_unknown() {
    let f = fixture();
    let missing = f.h.tmp().join("no-such-folder").join("out.json");
    let missing = missing.to_str().unwrap().to_string();
    f.refuse(&[
        (
            v(&["export", "--format", "pdf"]),
            "invalid export format 'pdf' (expected one of: json, markdown, automerge)",
        ),
        (v(&["export", "-f", ""]), "invalid export format"),
        (
            v(&["export", "-f", "automerge", "--private"]),
            "--private applies to json and markdown",
        ),
        (v(&["export", "-o", &missing]), "cannot write"),
    ]);
    assert!(!f.h.tmp().join("no-such-folder").exists());
}

#[test]
fn exit_code_is_one() {
    let f = fixture();
    let r = f.h.run(&["issue", "status", &f.issue, "closed"]);
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn a_long_tag_is_refused_with_the_right_limit() {
    let f = fixture();
    let long_tag = "t".repeat(65);
    let line = f.h.fail(&["issue", "tag", &f.issue, &long_tag]);
    assert!(
        !line.contains("KiB"),
        "the tag limit is 64 characters, not 64 KiB: {line}"
    );
    assert!(line.contains("64 characters"), "{line}");
}

#[test]
fn issue_tag_keeps_the_32_tag_limit() {
    let h = TestHome::new();
    let tags: Vec<String> = (0..32).map(|n| format!("t{n}")).collect();
    let mut args = vec!["issue", "add", "Tagged"];
    for t in &tags {
        args.push("--tag");
        args.push(t);
    }
    let id = str_of(&h.json(&args), "id");
    let before = h.snapshot();
    let line = h.fail(&["issue", "tag", &id, "one-too-many"]);
    assert!(line.contains("at most 32 tags"), "{line}");
    assert_eq!(h.snapshot(), before);
}

#[test]
fn init_with_a_bad_device_name() {
    let h = TestHome::uninit();
    let line = h.fail(&["init", "--name", "Sam", "--device-name", "  "]);
    assert!(line.contains("must not be empty"), "{line}");
    let big = "d".repeat(64 * 1024 + 1);
    let line = h.fail(&["init", "--name", "Sam", "--device-name", &big]);
    assert!(line.contains("65537 bytes long"), "{line}");
    assert!(!h.db().exists(), "no home is made");
}

#[test]
fn export_to_a_folder_leaves_nothing_behind() {
    let h = TestHome::new();
    let dir = h.tmp().join("out");
    std::fs::create_dir(&dir).unwrap();
    let line = h.fail(&["export", "-o", dir.to_str().unwrap()]);
    assert!(line.contains("cannot write"), "{line}");
    let mut names: Vec<String> = std::fs::read_dir(h.tmp())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["home", "out"], "a failed export leaves no file behind");
}

#[test]
fn json_flag_does_not_change_errors() {
    let f = fixture();
    let line = f.h.fail(&["issue", "show", "zz", "--json"]);
    assert_eq!(line, "error: invalid id 'zz' (ids are hex digits, such as 3fa9)");
    let line = f.h.fail(&["--json", "checkin", "rate", "11"]);
    assert!(line.contains("invalid rating '11'"), "{line}");
}
