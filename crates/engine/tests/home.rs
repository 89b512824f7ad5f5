//! The engine's API against real homes on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use duet::model::{CheckInEntry, IssueFilter, IssueStatus, NewIssue, Owner, Seat, TimeKind};
use duet::{Error, ExportFormat, Home, InitOptions, Who};

fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::init(
        &dir.path().join("home"),
        &InitOptions {
            name: "Sam".into(),
            device_name: Some("laptop".into()),
        },
    )
    .unwrap();
    (dir, home)
}

fn issue(home: &mut Home, title: &str) -> String {
    home.add_issue(&NewIssue {
        title: title.into(),
        ..Default::default()
    })
    .unwrap()
    .id
    .to_string()
}

#[test]
fn a_home_reopens_with_everything_in_it() {
    let (dir, mut home) = home();
    let id = issue(&mut home, "Chores");
    home.add_step(&id, "Dishes", Who::Partner, Some("2026-12-01"))
        .unwrap();
    home.journal_add("just for me").unwrap();
    let device = home.device_id();
    drop(home);

    let mut home = Home::open(&dir.path().join("home")).unwrap();
    assert_eq!(home.device_id(), device);
    assert_eq!(home.seat(), Seat::A);
    let i = home.issue(&id[..3]).unwrap();
    assert_eq!(
        i.steps[0].owner,
        Owner::One(Seat::B),
        "'partner' is the other seat"
    );
    assert_eq!(home.journal().unwrap()[0].text, "just for me");
    let s = home.status().unwrap();
    assert_eq!(s.me.name, "Sam");
    assert!(s.partner.is_none());
    assert_eq!((s.issues.total, s.issues.open_steps), (1, 1));
    assert_eq!(s.device.name, "laptop");
}

#[test]
fn init_refuses_an_existing_home_and_bad_names() {
    let (dir, home) = home();
    drop(home);
    let again = Home::init(
        &dir.path().join("home"),
        &InitOptions {
            name: "Al".into(),
            device_name: None,
        },
    );
    assert!(matches!(
        again,
        Err(Error::Store(duet::store::StoreError::AlreadyExists(_)))
    ));
    let blank = Home::init(
        &dir.path().join("other"),
        &InitOptions {
            name: " ".into(),
            device_name: None,
        },
    );
    assert!(blank.is_err());
    assert!(
        !dir.path().join("other/duet.db").exists(),
        "a failed init leaves no home"
    );
}

#[test]
fn every_edit_is_logged_with_its_author() {
    let (_dir, mut home) = home();
    let id = issue(&mut home, "Money");
    home.set_status(&id, IssueStatus::Discussing).unwrap();
    let log = home.log(None).unwrap();
    let messages: Vec<&str> = log.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages[0], format!("set status of issue {}", &id[..6]));
    assert_eq!(messages.last().copied(), Some("create space"));
    assert!(log.iter().all(|l| l.author.name == "Sam"));
    assert_eq!(home.log(Some(1)).unwrap().len(), 1);
}

#[test]
fn private_data_never_enters_the_document() {
    let (_dir, mut home) = home();
    home.journal_add("SECRET-JOURNAL-TEXT").unwrap();
    home.set_review_date(Some("2027-03-01")).unwrap();
    assert!(home.set_review_date(Some("March")).is_err());
    let doc = home.export(ExportFormat::Automerge, false).unwrap();
    let json = home.export(ExportFormat::Json, false).unwrap();
    let with_private = home.export(ExportFormat::Json, true).unwrap();
    let contains = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for bytes in [&doc, &json] {
        assert!(!contains(bytes, "SECRET-JOURNAL-TEXT"));
        assert!(!contains(bytes, "2027-03-01"));
    }
    assert!(contains(&with_private, "SECRET-JOURNAL-TEXT"));
    assert_eq!(home.review_date().unwrap().as_deref(), Some("2027-03-01"));
}

#[test]
fn checkins_and_filters() {
    let (_dir, mut home) = home();
    let a = issue(&mut home, "A");
    let b = issue(&mut home, "B");
    home.set_status(&b, IssueStatus::Parked).unwrap();
    let week = "2026-W10".parse().unwrap();
    home.checkin_add(week, &CheckInEntry::Time(TimeKind::Affection, 30))
        .unwrap();
    home.checkin_agenda(week, &a[..4]).unwrap();
    let c = home.checkin(week).unwrap();
    assert_eq!(c.total_minutes, 30);
    assert_eq!(c.partners[0].agenda[0].title.as_deref(), Some("A"));
    assert_eq!(home.checkins().unwrap().len(), 1);
    let parked = home
        .issues(IssueFilter {
            status: Some(IssueStatus::Parked),
            kind: None,
        })
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].id.as_str(), b);
}

#[test]
fn markdown_export_reads_like_a_record() {
    let (_dir, mut home) = home();
    let id = issue(&mut home, "Holidays");
    home.add_step(&id, "Call my sister", Who::Me, None).unwrap();
    let md = String::from_utf8(home.export(ExportFormat::Markdown, false).unwrap()).unwrap();
    assert!(md.starts_with("# duet: Sam"), "{md}");
    assert!(md.contains("### Holidays"));
    assert!(md.contains("- [ ] Call my sister (owner: Sam)"), "{md}");
}
