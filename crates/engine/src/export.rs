//! Full exports: JSON for scripts, Markdown for people, and the raw automerge
//! document, which any automerge implementation can open.

use std::fmt::Write as _;
use std::str::FromStr;

use duet_model::{
    Agreement, CheckIn, InvalidInput, Issue, IssueFilter, Member, Moment, Person, Seat, agreements, checkins,
    issues, space,
};
use duet_store::JournalEntry;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::home::{Home, now_ms};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Everything as one JSON object.
    Json,
    /// A readable Markdown document.
    Markdown,
    /// The raw automerge document (`save()` format).
    Automerge,
}

impl FromStr for ExportFormat {
    type Err = InvalidInput;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(ExportFormat::Json),
            "markdown" | "md" => Ok(ExportFormat::Markdown),
            "automerge" | "am" => Ok(ExportFormat::Automerge),
            _ => Err(InvalidInput::Word {
                what: "export format",
                got: s.to_string(),
                expected: "json, markdown, automerge".into(),
            }),
        }
    }
}

/// Everything in a home, as exported.
#[derive(Debug, Serialize)]
pub struct Export {
    /// The space's id.
    pub space_id: String,
    /// When the export was made.
    pub exported_at: Moment,
    /// The partners who have joined.
    pub partners: Vec<Person>,
    /// Both seats' names, for rendering (a partner not yet joined has a placeholder).
    #[serde(skip)]
    pub people: Vec<Person>,
    /// Their devices.
    pub devices: Vec<Member>,
    /// Every issue.
    pub issues: Vec<Issue>,
    /// Every check-in, newest first.
    pub checkins: Vec<CheckIn>,
    /// Every agreement.
    pub agreements: Vec<Agreement>,
    /// This device's private journal, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<Vec<JournalExport>>,
}

/// A journal entry in an export.
#[derive(Debug, Serialize)]
pub struct JournalExport {
    /// When it was written.
    pub written_at: Moment,
    /// What it says.
    pub text: String,
}

impl Export {
    /// The shared record in `doc` (no private data).
    pub fn of(doc: &automerge::Automerge) -> Export {
        Export {
            space_id: space::space_id(doc).unwrap_or_default(),
            exported_at: Moment(now_ms()),
            partners: Seat::ALL
                .iter()
                .filter(|s| space::partner_name(doc, **s).is_some())
                .map(|s| space::person(doc, *s))
                .collect(),
            people: Seat::ALL.iter().map(|s| space::person(doc, *s)).collect(),
            devices: space::devices(doc),
            issues: issues::issues(doc, IssueFilter::default()),
            checkins: checkins::weeks(doc)
                .into_iter()
                .map(|w| checkins::checkin(doc, w))
                .collect(),
            agreements: agreements::agreements(doc),
            journal: None,
        }
    }
}

impl Home {
    /// Gathers everything for an export. The private journal is included only
    /// when `private` is set, since exports are often shared.
    pub fn export_data(&mut self, private: bool) -> Result<Export> {
        let journal: Option<Vec<JournalEntry>> = if private { Some(self.journal()?) } else { None };
        let mut export = self.read(Export::of)?;
        export.journal = journal.map(|j| {
            j.into_iter()
                .map(|e| JournalExport {
                    written_at: Moment(e.written_at),
                    text: e.text,
                })
                .collect()
        });
        Ok(export)
    }

    /// The export in `format`, as bytes.
    pub fn export(&mut self, format: ExportFormat, private: bool) -> Result<Vec<u8>> {
        match format {
            ExportFormat::Automerge => self.read(|doc| doc.save()),
            ExportFormat::Json => {
                let data = self.export_data(private)?;
                let mut out = serde_json::to_vec_pretty(&data).map_err(|e| Error::Export(e.to_string()))?;
                out.push(b'\n');
                Ok(out)
            }
            ExportFormat::Markdown => Ok(markdown(&self.export_data(private)?).into_bytes()),
        }
    }
}

/// Renders an export as Markdown.
pub fn markdown(x: &Export) -> String {
    let mut s = String::new();
    let names: Vec<&str> = x.partners.iter().map(|p| p.name.as_str()).collect();
    let _ = writeln!(s, "# duet: {}\n", names.join(" & "));
    let _ = writeln!(s, "Exported {}.\n", x.exported_at);
    let _ = writeln!(s, "## Issues\n");
    if x.issues.is_empty() {
        let _ = writeln!(s, "_None._\n");
    }
    for i in &x.issues {
        let _ = writeln!(s, "### {} `{}`\n", i.title, i.id.short());
        let _ = writeln!(
            s,
            "- status: {} · kind: {} · raised by {} on {}",
            i.status, i.kind, i.raised_by.name, i.created_at
        );
        if !i.tags.is_empty() {
            let _ = writeln!(s, "- tags: {}", i.tags.join(", "));
        }
        if let Some(st) = &i.startup {
            let _ = writeln!(s, "- soft start-up: \"{}\"", st.sentence());
        }
        for c in &i.conflicts {
            let vals: Vec<String> = c
                .values
                .iter()
                .map(|v| format!("{} ({})", v.value, v.set_by.name))
                .collect();
            let _ = writeln!(
                s,
                "- **to talk about**: {} was set to {}",
                c.field,
                vals.join(" and ")
            );
        }
        if !i.body.is_empty() {
            let _ = writeln!(s, "\n{}", i.body);
        }
        if !i.steps.is_empty() {
            let _ = writeln!(s, "\nSteps:\n");
            for st in &i.steps {
                let mark = if st.done { "x" } else { " " };
                let owner = space::owner_name(st.owner, &x.people);
                let mut line = format!("- [{mark}] {} (owner: {owner}", st.text);
                if let Some(d) = &st.due {
                    let _ = write!(line, ", due {d}");
                }
                if let Some(o) = st.outcome {
                    let _ = write!(line, ", {o}");
                }
                line.push(')');
                let _ = writeln!(s, "{line}");
            }
        }
        if !i.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &i.notes {
                let _ = writeln!(s, "- {} ({}, {})", n.text, n.author.name, n.at);
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Check-ins\n");
    if x.checkins.is_empty() {
        let _ = writeln!(s, "_None._\n");
    }
    for c in &x.checkins {
        let _ = writeln!(s, "### {}\n", c.week);
        let _ = writeln!(
            s,
            "Quality time: {} of {} minutes.\n",
            c.total_minutes, c.goal_minutes
        );
        for p in &c.partners {
            let _ = writeln!(s, "**{}**\n", p.partner.name);
            for a in &p.appreciations {
                let _ = writeln!(s, "- appreciates: {a}");
            }
            for w in &p.went_well {
                let _ = writeln!(s, "- went well: {w}");
            }
            for a in &p.agenda {
                let _ = writeln!(
                    s,
                    "- to talk about: {}",
                    a.title.as_deref().unwrap_or(a.issue_id.short())
                );
            }
            if let Some(r) = &p.request {
                let _ = writeln!(s, "- request: {r}");
            }
            if let Some(r) = p.rating {
                let _ = writeln!(s, "- rating: {r}/10");
            }
            for t in &p.time {
                let _ = writeln!(s, "- {}: {} min", t.kind, t.minutes);
            }
            let empty = p.appreciations.is_empty()
                && p.went_well.is_empty()
                && p.agenda.is_empty()
                && p.request.is_none()
                && p.rating.is_none()
                && p.time.is_empty();
            if empty {
                let _ = writeln!(s, "_Nothing yet._");
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(s, "## Agreements\n");
    if x.agreements.is_empty() {
        let _ = writeln!(s, "_None._\n");
    }
    for a in &x.agreements {
        let state = if a.active { "active" } else { "awaiting acceptance" };
        let _ = writeln!(s, "- {} ({}, v{}, {state})", a.text, a.kind, a.version);
    }
    if let Some(j) = &x.journal {
        let _ = writeln!(s, "\n## Private journal (this device only)\n");
        for e in j {
            let _ = writeln!(s, "- {}: {}", e.written_at, e.text);
        }
    }
    s
}
