//! Human output: aligned tables and short reports. Colour comes from `anstyle`
//! styles written through `anstream`, which drops them when the output is not a
//! terminal or `NO_COLOR` is set.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use comfy_table::{Table, presets::NOTHING};
use duet::model::{Agreement, CheckIn, DeviceId, Issue, Member, Moment, Person, Seat, Step};
use duet::store::JournalEntry;
use duet::{LogLine, Status};
use serde::Serialize;

/// Error label style.
pub const ERROR: Style = AnsiColor::Red.on_default().bold();
const HEAD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const WARN: Style = AnsiColor::Yellow.on_default().bold();

fn styled(style: Style, text: impl std::fmt::Display) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    // Cells stay plain: escape codes inside a cell would throw off the widths
    // whenever anstream strips them.
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

fn finish(t: Table) -> String {
    let mut s = t.to_string();
    // comfy-table pads every line; trailing blanks only get in the way.
    s = s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    s.push('\n');
    s
}

/// A moment as local date and time, to the minute.
pub fn local(m: Moment) -> String {
    jiff::Timestamp::from_millisecond(m.0)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| m.to_string())
}

fn date(m: Moment) -> String {
    local(m).chars().take(10).collect()
}

fn empty(what: &str) -> String {
    format!("{}\n", styled(DIM, format!("No {what} yet.")))
}

/// `duet issue list`
pub fn issues(list: &[Issue]) -> String {
    if list.is_empty() {
        return empty("issues");
    }
    let mut t = table(&["id", "status", "kind", "steps", "raised by", "title"]);
    for i in list {
        let done = i.steps.iter().filter(|s| s.done).count();
        let mut title = i.title.clone();
        if !i.conflicts.is_empty() {
            title.push_str(" (conflicting edits)");
        }
        t.add_row(vec![
            i.id.short().to_string(),
            i.status.to_string(),
            i.kind.to_string(),
            format!("{done}/{}", i.steps.len()),
            i.raised_by.name.clone(),
            title,
        ]);
    }
    finish(t)
}

/// `duet issue show`
pub fn issue(i: &Issue, me: Seat, people: &[Person]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} {}", styled(HEAD, &i.title), styled(DIM, i.id.short()));
    let _ = writeln!(s, "{}", styled(DIM, format!("id {}", i.id)));
    let _ = writeln!(
        s,
        "status {} · kind {} · raised by {} on {}",
        i.status,
        i.kind,
        i.raised_by.name,
        date(i.created_at)
    );
    if !i.tags.is_empty() {
        let _ = writeln!(s, "tags: {}", i.tags.join(", "));
    }
    if let Some(st) = &i.startup {
        let _ = writeln!(s, "\n  \"{}\"", st.sentence());
    }
    if !i.body.is_empty() {
        let _ = writeln!(s);
        for line in i.body.lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    if !i.conflicts.is_empty() {
        let _ = writeln!(
            s,
            "\n{}",
            styled(
                WARN,
                "Set differently at the same time (something to talk about):"
            )
        );
        for c in &i.conflicts {
            let vals: Vec<String> = c
                .values
                .iter()
                .map(|v| format!("\"{}\" by {}", v.value, v.set_by.name))
                .collect();
            let _ = writeln!(s, "  {}: {}", c.field, vals.join(", "));
        }
        let _ = writeln!(s, "{}", styled(DIM, "  Setting the field again settles it."));
    }
    if !i.steps.is_empty() {
        let _ = writeln!(s, "\n{}", styled(HEAD, "Steps"));
        let _ = write!(s, "{}", steps_table(&i.steps, people, Some(me)));
    }
    if !i.notes.is_empty() {
        let _ = writeln!(s, "\n{}", styled(HEAD, "Notes"));
        for n in &i.notes {
            let _ = writeln!(s, "  {} {}: {}", styled(DIM, local(n.at)), n.author.name, n.text);
        }
    }
    s
}

fn steps_table(list: &[Step], people: &[Person], me: Option<Seat>) -> String {
    let mut t = table(&["id", "owner", "due", "accepted", "state", "step"]);
    for st in list {
        let accepted = match (st.owner, st.accepted_by.len()) {
            (_, 0) => "not yet".to_string(),
            (duet::model::Owner::Both, 1) => "one of two".to_string(),
            _ => "yes".to_string(),
        };
        let state = match (st.done, st.outcome) {
            (true, Some(o)) => o.to_string(),
            (true, None) => "done".to_string(),
            (false, _) => "open".to_string(),
        };
        let mut text = st.text.clone();
        if me.is_some_and(|m| st.owner.includes(m) && !st.accepted_by.contains(&m)) {
            text.push_str(" (awaiting your acceptance)");
        }
        t.add_row(vec![
            st.id.short().to_string(),
            duet::model::space::owner_name(st.owner, people),
            st.due.clone().unwrap_or_default(),
            accepted,
            state,
            text,
        ]);
    }
    finish(t)
}

/// `duet step list`: both partners' steps side by side, never as a score.
pub fn steps(list: &[Step], people: &[Person]) -> String {
    if list.is_empty() {
        return empty("steps");
    }
    let mut s = steps_table(list, people, None);
    let _ = writeln!(s);
    for p in people {
        let Some(seat) = p.seat else { continue };
        let mine = list.iter().filter(|st| st.owner.includes(seat));
        let (mut kept, mut partly, mut missed, mut open) = (0, 0, 0, 0);
        for st in mine {
            match st.outcome {
                Some(duet::model::Outcome::Kept) => kept += 1,
                Some(duet::model::Outcome::Partly) => partly += 1,
                Some(duet::model::Outcome::Missed) => missed += 1,
                _ if !st.done => open += 1,
                _ => {}
            }
        }
        let _ = writeln!(
            s,
            "{}: {kept} kept, {partly} partly, {missed} missed, {open} open",
            p.name
        );
    }
    s
}

/// `duet checkin show`
pub fn checkin(c: &CheckIn) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", styled(HEAD, format!("Check-in {}", c.week)));
    let hours = |m: u32| format!("{}h{:02}", m / 60, m % 60);
    let _ = writeln!(
        s,
        "Quality time: {} of {}\n",
        hours(c.total_minutes),
        hours(c.goal_minutes)
    );
    for p in &c.partners {
        let _ = writeln!(s, "{}", styled(HEAD, &p.partner.name));
        let mut any = false;
        let mut line = |label: &str, text: String| {
            any = true;
            let _ = writeln!(s, "  {:<14} {text}", label);
        };
        for a in &p.appreciations {
            line("appreciation", a.clone());
        }
        for w in &p.went_well {
            line("went well", w.clone());
        }
        for a in &p.agenda {
            line(
                "to talk about",
                format!(
                    "{} ({})",
                    a.title.as_deref().unwrap_or("unknown issue"),
                    a.issue_id.short()
                ),
            );
        }
        if let Some(r) = &p.request {
            line("request", r.clone());
        }
        if let Some(r) = p.rating {
            line("rating", format!("{r}/10"));
        }
        for t in &p.time {
            line("time", format!("{} {}", t.kind, hours(t.minutes)));
        }
        if !any {
            let _ = writeln!(s, "  {}", styled(DIM, "nothing yet"));
        }
        let _ = writeln!(s);
    }
    for c in &c.conflicts {
        let vals: Vec<String> = c
            .values
            .iter()
            .map(|v| format!("\"{}\" by {}", v.value, v.set_by.name))
            .collect();
        let _ = writeln!(
            s,
            "{} {}: {}",
            styled(WARN, "set differently:"),
            c.field,
            vals.join(", ")
        );
    }
    s
}

/// `duet checkin list`
pub fn checkins(list: &[CheckIn]) -> String {
    if list.is_empty() {
        return empty("check-ins");
    }
    let mut t = table(&["week", "ratings", "quality time", "appreciations"]);
    for c in list {
        let ratings: Vec<String> = c
            .partners
            .iter()
            .map(|p| p.rating.map_or("-".into(), |r| r.to_string()))
            .collect();
        let apps: usize = c.partners.iter().map(|p| p.appreciations.len()).sum();
        t.add_row(vec![
            c.week.to_string(),
            ratings.join(" / "),
            format!("{} min", c.total_minutes),
            apps.to_string(),
        ]);
    }
    finish(t)
}

/// `duet agreement list`
pub fn agreements(list: &[Agreement]) -> String {
    if list.is_empty() {
        return empty("agreements");
    }
    let mut t = table(&["id", "kind", "version", "state", "agreement"]);
    for a in list {
        let state = if a.active {
            "active".to_string()
        } else {
            let who: Vec<&str> = a
                .accepted
                .iter()
                .filter(|x| x.version == a.version)
                .map(|x| x.partner.name.as_str())
                .collect();
            if who.is_empty() {
                "proposed".into()
            } else {
                format!("accepted by {}", who.join(", "))
            }
        };
        t.add_row(vec![
            a.id.short().to_string(),
            a.kind.to_string(),
            format!("v{}", a.version),
            state,
            a.text.clone(),
        ]);
    }
    finish(t)
}

/// A journal entry in JSON output.
#[derive(Debug, Serialize)]
pub struct JournalJson {
    id: i64,
    written_at: Moment,
    text: String,
}

impl From<&JournalEntry> for JournalJson {
    fn from(e: &JournalEntry) -> Self {
        JournalJson {
            id: e.id,
            written_at: Moment(e.written_at),
            text: e.text.clone(),
        }
    }
}

/// `duet journal list`
pub fn journal(list: &[JournalJson]) -> String {
    if list.is_empty() {
        return empty("journal entries");
    }
    let mut s = String::new();
    for e in list {
        let _ = writeln!(
            s,
            "{} {}",
            styled(DIM, format!("#{} {}", e.id, local(e.written_at))),
            e.text
        );
    }
    s
}

/// `duet device list`
pub fn devices(list: &[Member], owners: &[String], me: DeviceId) -> String {
    let mut t = table(&["device", "name", "partner", "fingerprint", "added", "state"]);
    for (d, owner) in list.iter().zip(owners) {
        let mut name = d.name.clone();
        if d.id == me {
            name.push_str(" (this device)");
        }
        t.add_row(vec![
            d.id.short(),
            name,
            owner.clone(),
            d.id.fingerprint(),
            date(Moment(d.added_at)),
            if d.is_active() {
                "active".into()
            } else {
                "revoked".to_string()
            },
        ]);
    }
    finish(t)
}

/// `duet log`
pub fn log(lines: &[LogLine]) -> String {
    if lines.is_empty() {
        return empty("changes");
    }
    let mut t = table(&["#", "time", "author", "device", "change"]);
    for l in lines {
        t.add_row(vec![
            l.seq.to_string(),
            l.time.replace('T', " ").trim_end_matches('Z').to_string(),
            l.author.name.clone(),
            l.device.clone().unwrap_or_else(|| "?".into()),
            l.message.clone(),
        ]);
    }
    finish(t)
}

/// `duet status`
pub fn status(s: &Status) -> String {
    let mut out = String::new();
    let partner = s
        .partner
        .as_ref()
        .map_or_else(|| "not paired yet".to_string(), |p| p.name.clone());
    let rows = [
        ("home", s.home.display().to_string()),
        ("you", s.me.name.clone()),
        ("partner", partner),
        ("device", format!("{} ({})", s.device.name, s.device.id.short())),
        ("fingerprint", s.device.fingerprint.clone()),
        (
            "issues",
            format!(
                "{} active of {}, {} open steps",
                s.issues.active, s.issues.total, s.issues.open_steps
            ),
        ),
        (
            "this week",
            format!(
                "{}: {}, {} min of quality time",
                s.this_week.week,
                if s.this_week.started {
                    "check-in started"
                } else {
                    "no check-in yet"
                },
                s.this_week.minutes
            ),
        ),
        ("changes", s.changes.to_string()),
    ];
    let relay = s.relay.as_ref().map(|r| ("relay", r.clone()));
    for (k, v) in rows.into_iter().chain(relay) {
        let _ = writeln!(out, "{} {v}", styled(HEAD, format!("{k:<12}")));
    }
    out
}
