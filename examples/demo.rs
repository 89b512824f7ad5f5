//! duet's main job on its embedded defaults: one partner's home, created in a
//! temporary folder, with issues, steps, notes, a weekly check-in and an
//! agreement; then the record printed as people read it.
//!
//! Run it with `cargo run -p duet --example demo`. Pass a folder to keep the home
//! (`cargo run -p duet --example demo -- /tmp/our-home`) and explore it with the
//! `duet` command (`duet --home /tmp/our-home status`).

use std::path::PathBuf;

use duet::model::{
    AgreementKind, CheckInEntry, IssueKind, IssueStatus, NewIssue, Outcome, Rating, SoftStartup, TimeKind,
};
use duet::{ExportFormat, Home, InitOptions, Who};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep: Option<PathBuf> = std::env::args_os().nth(1).map(PathBuf::from);
    let temp = tempfile::tempdir()?;
    let dir = keep.clone().unwrap_or_else(|| temp.path().join("home"));

    let mut home = Home::init(
        &dir,
        &InitOptions {
            name: "Sam".into(),
            device_name: Some("laptop".into()),
        },
    )?;

    let dishes = home.add_issue(&NewIssue {
        title: "Who does the dishes".into(),
        body: "The sink fills up and we both feel it is unfair.".into(),
        kind: Some(IssueKind::Solvable),
        startup: SoftStartup {
            feel: Some("worn out".into()),
            about: Some("the dishes piling up after dinner".into()),
            need: Some("us to split them in a way we both find fair".into()),
        },
        tags: vec!["home".into()],
    })?;
    let id = dishes.id.as_str().to_string();
    let mine = home.add_step(
        &id,
        "Wash up Monday, Wednesday and Friday",
        Who::Me,
        Some("2026-12-04"),
    )?;
    home.add_step(&id, "Wash up Tuesday and Thursday", Who::Partner, None)?;
    home.add_note(&id, "Talked it through on Sunday; trying a rota for two weeks.")?;
    home.set_status(&id, IssueStatus::Agreed)?;
    home.complete_step(mine.id.as_str(), Outcome::Kept)?;

    let visits = home.add_issue(&NewIssue {
        title: "How often we see my family".into(),
        kind: Some(IssueKind::Perpetual),
        ..Default::default()
    })?;
    home.set_status(visits.id.as_str(), IssueStatus::Managing)?;

    let week = duet::this_week();
    for entry in [
        CheckInEntry::Appreciation("You cooked on Thursday when I came home late.".into()),
        CheckInEntry::WentWell("The rota for the dishes.".into()),
        CheckInEntry::Request("A walk together on Saturday morning.".into()),
        CheckInEntry::Rating(Rating::new(8)?),
        CheckInEntry::Time(TimeKind::Date, 150),
        CheckInEntry::Time(TimeKind::Meeting, 45),
    ] {
        home.checkin_add(week, &entry)?;
    }
    home.checkin_agenda(week, visits.id.as_str())?;
    home.add_agreement(
        "We take a 20-minute break when a talk gets heated.",
        AgreementKind::ConflictRule,
    )?;
    home.journal_add("Private: I want to bring up the holidays, but not yet.")?;

    let status = home.status()?;
    println!(
        "A home for {} at {} (device {}, fingerprint {}), {} changes in its log.\n",
        status.me.name,
        status.home.display(),
        status.device.name,
        status.device.fingerprint,
        status.changes
    );
    let record = home.export(ExportFormat::Markdown, false)?;
    println!("{}", String::from_utf8_lossy(&record));
    println!("Who did what:");
    for line in home.log(None)?.iter().rev() {
        println!("  {:>3}  {:<10} {}", line.seq, line.author.name, line.message);
    }
    if keep.is_none() {
        println!("\n(The home was temporary; pass a folder to keep it.)");
    }
    Ok(())
}
