//! Runs one command: opens the home, calls the engine, prints the result.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use duet::model::{
    AgreementKind, CheckInEntry, IssueEdit, IssueFilter, IssueKind, IssueStatus, NewIssue, Outcome, Rating,
    SoftStartup, TimeKind, Week, checkins::parse_minutes,
};
use duet::{ExportFormat, Home, InitOptions, Who};
use serde::Serialize;

use crate::args::{
    AgreementCmd, BundleCmd, CheckinCmd, Cli, Command, DeviceCmd, IssueCmd, JournalCmd, StepCmd, WeekArg,
};
use crate::render;

/// Where the home is: `--home`, `DUET_HOME`, or the platform default.
fn home_dir(cli_home: Option<PathBuf>) -> Result<PathBuf> {
    cli_home
        .or_else(Home::default_dir)
        .ok_or_else(|| anyhow!("no home folder: pass --home DIR or set DUET_HOME"))
}

/// Prints `value` as JSON, or as text with `human`.
fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    let mut out = anstream::stdout();
    if json {
        let s = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
        writeln!(out, "{s}")?;
    } else {
        write!(out, "{}", human(value))?;
    }
    Ok(())
}

fn parse_opt<T: std::str::FromStr>(s: Option<&str>) -> Result<Option<T>, T::Err> {
    s.map(str::parse).transpose()
}

fn week(arg: &WeekArg) -> Result<Week> {
    Ok(match &arg.week {
        Some(w) => w.parse()?,
        None => duet::this_week(),
    })
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let dir = home_dir(cli.home)?;
    let json = cli.json;
    match cli.command {
        Command::Init { name, device_name } => init(&dir, json, name, device_name),
        Command::Pair(cmd) => crate::net::pair(&dir, json, cmd),
        Command::Sync {
            addr,
            relay,
            no_discovery,
        } => crate::net::sync(&dir, json, addr, relay, !no_discovery),
        Command::Serve {
            listen,
            peers,
            relay,
            no_discovery,
        } => crate::net::serve(&dir, json, listen, peers, relay, !no_discovery),
        Command::Relay { listen, data, limits } => crate::net::relay(json, listen, data, limits),
        local => on_home(&dir, json, local),
    }
}

fn init(dir: &Path, json: bool, name: String, device_name: Option<String>) -> Result<()> {
    let mut home = Home::init(dir, &InitOptions { name, device_name })?;
    let status = home.status()?;
    show(json, &status, |s| {
        format!(
            "Created a home for {} at {}.\nDevice {} (fingerprint {}).\n",
            s.me.name,
            s.home.display(),
            s.device.name,
            s.device.fingerprint
        )
    })
}

/// The commands that work on an existing home, offline.
fn on_home(dir: &Path, json: bool, command: Command) -> Result<()> {
    let mut home = Home::open(dir)?;
    match command {
        Command::Init { .. }
        | Command::Pair(_)
        | Command::Sync { .. }
        | Command::Serve { .. }
        | Command::Relay { .. } => Err(anyhow!("this command does not run on an open home")),
        Command::Status => show(json, &home.status()?, render::status),
        Command::Bundle(cmd) => bundle(&mut home, json, cmd),
        Command::Issue(cmd) => issue(&mut home, json, cmd),
        Command::Step(cmd) => step(&mut home, json, cmd),
        Command::Checkin(cmd) => checkin(&mut home, json, cmd),
        Command::Agreement(cmd) => agreement(&mut home, json, cmd),
        Command::Journal(JournalCmd::Add { text }) => {
            let e = home.journal_add(&text)?;
            show(json, &render::JournalJson::from(&e), |_| {
                format!("Journal entry {} saved on this device only.\n", e.id)
            })
        }
        Command::Journal(JournalCmd::List) => {
            let entries: Vec<render::JournalJson> = home.journal()?.iter().map(Into::into).collect();
            show(json, &entries, |e| render::journal(e))
        }
        Command::Review { date, clear } => {
            if clear {
                home.set_review_date(None)?;
            } else if let Some(d) = &date {
                home.set_review_date(Some(d))?;
            }
            let current = home.review_date()?;
            show(
                json,
                &serde_json::json!({ "review_date": current }),
                |_| match &current {
                    Some(d) => {
                        format!("Your private review date: {d} (visible only to you, on this device).\n")
                    }
                    None => "No review date set.\n".to_string(),
                },
            )
        }
        Command::Device(DeviceCmd::Revoke { id }) => {
            let m = home.revoke_device(&id)?;
            show(json, &m, |m| {
                format!(
                    "Revoked device {} ({}): it can no longer connect, and edits it makes from now on are refused.\n",
                    m.id.short(),
                    m.name
                )
            })
        }
        Command::Device(DeviceCmd::List) => {
            let me = home.device_id();
            let devices = home.devices()?;
            let names = home.read(|doc| {
                devices
                    .iter()
                    .map(|d| duet::model::space::person(doc, d.seat).name)
                    .collect::<Vec<_>>()
            })?;
            show(json, &devices, |d| render::devices(d, &names, me))
        }
        Command::Log { limit, all } => {
            let lines = home.log(if all { None } else { Some(limit) })?;
            show(json, &lines, |l| render::log(l))
        }
        Command::Export {
            format,
            output,
            private,
        } => {
            let format: ExportFormat = format.parse()?;
            if private && format == ExportFormat::Automerge {
                return Err(anyhow!(
                    "--private applies to json and markdown exports; the automerge document never holds private data"
                ));
            }
            let bytes = home.export(format, private)?;
            match output {
                Some(path) => {
                    crate::files::write_owner_only(&path, &bytes)?;
                    eprintln!("Exported {} bytes to {}.", bytes.len(), path.display());
                }
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("cannot write to standard output")?,
            }
            Ok(())
        }
    }
}

fn issue(home: &mut Home, json: bool, cmd: IssueCmd) -> Result<()> {
    let me = home.seat();
    let people = home.people()?;
    let one = |json: bool, i: &duet::model::Issue| show(json, i, |i| render::issue(i, me, &people));
    match cmd {
        IssueCmd::Add {
            title,
            body,
            kind,
            startup,
            tags,
        } => {
            let new = NewIssue {
                title,
                body: body.unwrap_or_default(),
                kind: parse_opt::<IssueKind>(kind.as_deref())?,
                startup: SoftStartup {
                    feel: startup.feel,
                    about: startup.about,
                    need: startup.need,
                },
                tags,
            };
            let i = home.add_issue(&new)?;
            show(json, &i, |i| {
                format!("Added issue {} \"{}\".\n", i.id.short(), i.title)
            })
        }
        IssueCmd::List { status, kind } => {
            let filter = IssueFilter {
                status: parse_opt::<IssueStatus>(status.as_deref())?,
                kind: parse_opt::<IssueKind>(kind.as_deref())?,
            };
            // The JSON list has every field; the table needs no bodies or
            // notes, which are most of the reading on a long history.
            let list = if json {
                home.issues(filter)?
            } else {
                home.issue_list(filter)?
            };
            show(json, &list, |l| render::issues(l))
        }
        IssueCmd::Show { id } => one(json, &home.issue(&id)?),
        IssueCmd::Edit {
            id,
            title,
            body,
            kind,
        } => {
            let edit = IssueEdit {
                title,
                body,
                kind: parse_opt::<IssueKind>(kind.as_deref())?,
            };
            one(json, &home.edit_issue(&id, &edit)?)
        }
        IssueCmd::Status { id, status } => {
            let status: IssueStatus = status.parse()?;
            let i = home.set_status(&id, status)?;
            show(json, &i, |i| {
                format!("Issue {} is now {}.\n", i.id.short(), i.status)
            })
        }
        IssueCmd::Note { id, text } => {
            let i = home.add_note(&id, &text)?;
            show(json, &i, |i| format!("Added a note to issue {}.\n", i.id.short()))
        }
        IssueCmd::Tag { id, tag } => {
            let i = home.tag_issue(&id, &tag)?;
            show(json, &i, |i| {
                format!("Issue {} tags: {}.\n", i.id.short(), i.tags.join(", "))
            })
        }
    }
}

fn step(home: &mut Home, json: bool, cmd: StepCmd) -> Result<()> {
    match cmd {
        StepCmd::Add {
            issue,
            text,
            owner,
            due,
        } => {
            let who: Who = owner.parse()?;
            let s = home.add_step(&issue, &text, who, due.as_deref())?;
            show(json, &s, |s| {
                format!("Added step {} to issue {}.\n", s.id.short(), s.issue_id.short())
            })
        }
        StepCmd::Accept { step } => {
            let s = home.accept_step(&step)?;
            show(json, &s, |s| format!("You accepted step {}.\n", s.id.short()))
        }
        StepCmd::Done { step, outcome } => {
            let outcome: Outcome = outcome.parse()?;
            let s = home.complete_step(&step, outcome)?;
            show(json, &s, |s| {
                format!("Step {} done: {}.\n", s.id.short(), outcome_word(s))
            })
        }
        StepCmd::List { all } => {
            let issues = home.issues(IssueFilter::default())?;
            let steps: Vec<duet::model::Step> = issues
                .into_iter()
                .flat_map(|i| i.steps)
                .filter(|s| all || !s.done)
                .collect();
            let people = home.people()?;
            show(json, &steps, |s| render::steps(s, &people))
        }
    }
}

fn outcome_word(s: &duet::model::Step) -> &'static str {
    s.outcome.map_or("done", Outcome::as_str)
}

fn checkin(home: &mut Home, json: bool, cmd: CheckinCmd) -> Result<()> {
    let (w, entry) = match cmd {
        CheckinCmd::Show { week: w } => return show(json, &home.checkin(week(&w)?)?, render::checkin),
        CheckinCmd::List => return show(json, &home.checkins()?, |l| render::checkins(l)),
        CheckinCmd::Agenda { issue, week: w } => {
            let c = home.checkin_agenda(week(&w)?, &issue)?;
            return show(json, &c, |c| format!("Added to the agenda of {}.\n", c.week));
        }
        CheckinCmd::Appreciate { text, week: w } => (w, CheckInEntry::Appreciation(text)),
        CheckinCmd::Well { text, week: w } => (w, CheckInEntry::WentWell(text)),
        CheckinCmd::Request { text, week: w } => (w, CheckInEntry::Request(text)),
        CheckinCmd::Rate { rating, week: w } => (w, CheckInEntry::Rating(rating.parse::<Rating>()?)),
        CheckinCmd::Time {
            kind,
            minutes,
            week: w,
        } => (
            w,
            CheckInEntry::Time(kind.parse::<TimeKind>()?, parse_minutes(&minutes)?),
        ),
    };
    let c = home.checkin_add(week(&w)?, &entry)?;
    show(json, &c, |c| format!("Saved to the check-in of {}.\n", c.week))
}

fn agreement(home: &mut Home, json: bool, cmd: AgreementCmd) -> Result<()> {
    match cmd {
        AgreementCmd::Add { text, kind } => {
            let kind: AgreementKind = kind.parse()?;
            let a = home.add_agreement(&text, kind)?;
            show(json, &a, |a| {
                format!(
                    "Proposed agreement {}; your partner can accept it.\n",
                    a.id.short()
                )
            })
        }
        AgreementCmd::Accept { id } => {
            let a = home.accept_agreement(&id)?;
            show(json, &a, |a| {
                let state = if a.active {
                    "now active"
                } else {
                    "waiting for your partner"
                };
                format!(
                    "Accepted agreement {} (version {}): {state}.\n",
                    a.id.short(),
                    a.version
                )
            })
        }
        AgreementCmd::Edit { id, text } => {
            let a = home.edit_agreement(&id, &text)?;
            show(json, &a, |a| {
                format!(
                    "Agreement {} is now version {}; your partner can accept it.\n",
                    a.id.short(),
                    a.version
                )
            })
        }
        AgreementCmd::List => show(json, &home.agreements()?, |l| render::agreements(l)),
    }
}

/// `duet bundle export|import`
fn bundle(home: &mut Home, json: bool, cmd: BundleCmd) -> Result<()> {
    match cmd {
        BundleCmd::Export {
            file,
            since_partner_saw,
        } => {
            let since = if since_partner_saw {
                duet::bundle::Since::PartnerSaw
            } else {
                duet::bundle::Since::Everything
            };
            let b = home.export_bundle(since)?;
            crate::files::write_owner_only(&file, &b.bytes)?;
            show(
                json,
                &serde_json::json!({ "file": file.display().to_string(), "changes": b.changes, "bytes": b.bytes.len() }),
                |_| {
                    format!(
                        "Wrote {} changes ({} bytes), sealed for the couple's devices, to {}.\n",
                        b.changes,
                        b.bytes.len(),
                        file.display()
                    )
                },
            )
        }
        BundleCmd::Import { file } => {
            let bytes = read_bundle_file(&file)?;
            let r = home.import_bundle(&bytes)?;
            show(json, &r, |r| {
                let mut s = format!(
                    "Imported {} from device {}: {} new changes applied, {} already here.\n",
                    file.display(),
                    r.from,
                    r.applied,
                    r.already_had
                );
                if r.waiting > 0 {
                    s.push_str(&format!(
                        "{} changes wait for earlier changes: import the bundles made before this one, or sync.\n",
                        r.waiting
                    ));
                }
                s
            })
        }
    }
}

/// Reads a bundle, refusing anything larger than a bundle can be before
/// reading it into memory.
fn read_bundle_file(file: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let max = duet::sync_proto::bundle::MAX_BUNDLE as u64;
    if len > max {
        return Err(anyhow!(
            "{} is {} MiB, larger than any duet bundle ({} MiB): not a bundle",
            file.display(),
            len / (1024 * 1024),
            max / (1024 * 1024)
        ));
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}
