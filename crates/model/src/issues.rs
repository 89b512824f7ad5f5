//! Issues: what needs to change, with the steps each partner commits to and the
//! notes written along the way.
//!
//! Layout in the document: `issues[id]` is a map with `title`, `body` (a text
//! object, so concurrent edits merge character by character), `kind`, `status`,
//! `raised_by` (a seat), `created_at`, an optional `startup` map (`feel`,
//! `about`, `need`), `tags` (a map used as a set), `steps` (a map by step id)
//! and `notes` (a list of maps).

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::access;
use crate::conflict::{Conflict, Moment, scalar_conflict};
use crate::error::{InvalidInput, ModelError};
use crate::ids::{ItemId, resolve_prefix};
use crate::space::{Editor, People, Person, map_in};
use crate::text::{check_text, check_title, required_text, short_text};
use crate::vocab::{IssueKind, IssueStatus, Outcome, Owner, Seat, parse_date};
use automerge::ROOT;

/// The largest number of tags on one issue.
pub const MAX_TAGS: usize = 32;

/// A gentle opening: "I feel ... about ... and I need ...".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SoftStartup {
    /// "I feel ..."
    pub feel: Option<String>,
    /// "... about ..."
    pub about: Option<String>,
    /// "... and I need ..."
    pub need: Option<String>,
}

impl SoftStartup {
    fn is_empty(&self) -> bool {
        self.feel.is_none() && self.about.is_none() && self.need.is_none()
    }

    /// The sentence, as a person would say it.
    pub fn sentence(&self) -> String {
        let mut s = String::new();
        if let Some(f) = &self.feel {
            s.push_str(&format!("I feel {f}"));
        }
        if let Some(a) = &self.about {
            s.push_str(&format!("{}about {a}", if s.is_empty() { "" } else { " " }));
        }
        if let Some(n) = &self.need {
            s.push_str(&format!("{}I need {n}", if s.is_empty() { "" } else { " and " }));
        }
        s
    }
}

/// What a partner types to raise an issue.
#[derive(Debug, Clone, Default)]
pub struct NewIssue {
    /// One line, at most 300 characters.
    pub title: String,
    /// Free text.
    pub body: String,
    /// Solvable, perpetual or not yet known.
    pub kind: Option<IssueKind>,
    /// An optional soft start-up.
    pub startup: SoftStartup,
    /// Tags.
    pub tags: Vec<String>,
}

/// Changes to an issue's fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct IssueEdit {
    /// A new title.
    pub title: Option<String>,
    /// A new body. Applied as a character diff, so a partner's concurrent edit of
    /// another part of the body survives.
    pub body: Option<String>,
    /// A new kind.
    pub kind: Option<IssueKind>,
}

/// An issue as read from the document.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    /// Its id.
    pub id: ItemId,
    /// Its title (the value shown when the title is in conflict).
    pub title: String,
    /// Its body.
    pub body: String,
    /// Its status.
    pub status: IssueStatus,
    /// Its kind.
    pub kind: IssueKind,
    /// Who raised it.
    pub raised_by: Person,
    /// When.
    pub created_at: Moment,
    /// The soft start-up, if one was given.
    pub startup: Option<SoftStartup>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Steps, oldest first.
    pub steps: Vec<Step>,
    /// Notes, oldest first.
    pub notes: Vec<Note>,
    /// Fields set to different values concurrently, with every value.
    pub conflicts: Vec<Conflict>,
}

/// A step a partner (or both) commits to.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Its id.
    pub id: ItemId,
    /// The issue it belongs to.
    pub issue_id: ItemId,
    /// What will be done.
    pub text: String,
    /// Who will do it.
    pub owner: Owner,
    /// By when, if set (`YYYY-MM-DD`).
    pub due: Option<String>,
    /// Which partners have accepted the step.
    pub accepted_by: Vec<Seat>,
    /// Who proposed it.
    pub created_by: Person,
    /// When.
    pub created_at: Moment,
    /// Whether it has been marked done.
    pub done: bool,
    /// How it turned out.
    pub outcome: Option<Outcome>,
    /// When it was marked done.
    pub done_at: Option<Moment>,
    /// Fields set to different values concurrently.
    pub conflicts: Vec<Conflict>,
}

/// A note on an issue.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// Who wrote it.
    pub author: Person,
    /// When.
    pub at: Moment,
    /// What it says.
    pub text: String,
}

/// Filters for [`issues`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IssueFilter {
    /// Only this status.
    pub status: Option<IssueStatus>,
    /// Only this kind.
    pub kind: Option<IssueKind>,
}

/// The map object of issue `id`, if it exists.
fn issue_obj(doc: &impl ReadDoc, id: &ItemId) -> Option<ObjId> {
    access::item(doc, "issues", id)
}

fn issue_ids(doc: &impl ReadDoc) -> Vec<ItemId> {
    access::item_ids(doc, "issues")
}

/// Finds the issue whose id starts with `prefix`.
pub fn resolve_issue(doc: &impl ReadDoc, prefix: &str) -> Result<ItemId, ModelError> {
    resolve_prefix("issue", prefix, &issue_ids(doc))
}

/// Finds the step whose id starts with `prefix`, in any issue; returns the issue's
/// id and the step's.
pub fn resolve_step(doc: &impl ReadDoc, prefix: &str) -> Result<(ItemId, ItemId), ModelError> {
    let mut all = Vec::new();
    for issue in issue_ids(doc) {
        let Some(obj) = issue_obj(doc, &issue) else {
            continue;
        };
        if let Some(steps) = access::object(doc, &obj, "steps", ObjType::Map) {
            for key in access::keys(doc, &steps) {
                if let Some(step) = ItemId::from_stored(&key) {
                    all.push((issue.clone(), step));
                }
            }
        }
    }
    let step = resolve_prefix("step", prefix, all.iter().map(|(_, s)| s))?;
    all.into_iter()
        .find(|(_, s)| *s == step)
        .ok_or(ModelError::NotFound {
            what: "step",
            prefix: prefix.to_string(),
        })
}

/// Reads issue `id`.
pub fn issue(doc: &impl ReadDoc, id: &ItemId) -> Option<Issue> {
    read_issue(doc, id, &issue_obj(doc, id)?, &People::of(doc), Detail::Full)
}

/// Reads every issue matching `filter`, oldest first.
pub fn issues(doc: &impl ReadDoc, filter: IssueFilter) -> Vec<Issue> {
    read_issues(doc, filter, Detail::Full)
}

/// What [`issues`] returns, without each issue's body and notes (left empty,
/// never read): what a list shows. On a long history the bodies (text typed
/// keystroke by keystroke) and the notes are most of the reading.
pub fn issue_list(doc: &impl ReadDoc, filter: IssueFilter) -> Vec<Issue> {
    read_issues(doc, filter, Detail::ForList)
}

/// How much of an issue to read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detail {
    Full,
    ForList,
}

fn read_issues(doc: &impl ReadDoc, filter: IssueFilter, detail: Detail) -> Vec<Issue> {
    let people = People::of(doc);
    let mut out: Vec<Issue> = issue_ids(doc)
        .iter()
        .filter_map(|id| read_issue(doc, id, &issue_obj(doc, id)?, &people, detail))
        .filter(|i| filter.status.is_none_or(|s| i.status == s))
        .filter(|i| filter.kind.is_none_or(|k| i.kind == k))
        .collect();
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    out
}

fn read_issue(
    doc: &impl ReadDoc,
    id: &ItemId,
    obj: &ObjId,
    people: &People,
    detail: Detail,
) -> Option<Issue> {
    let title = access::string(doc, obj, "title")?;
    let mut conflicts: Vec<Conflict> = [("title", "title"), ("status", "status"), ("kind", "kind")]
        .iter()
        .filter_map(|(k, f)| scalar_conflict(doc, obj, k, f))
        .collect();
    let startup = access::object(doc, obj, "startup", ObjType::Map).map(|s| SoftStartup {
        feel: access::string(doc, &s, "feel"),
        about: access::string(doc, &s, "about"),
        need: access::string(doc, &s, "need"),
    });
    let mut tags: Vec<String> = access::object(doc, obj, "tags", ObjType::Map)
        .map(|t| access::keys(doc, &t))
        .unwrap_or_default();
    tags.sort();
    let mut steps = Vec::new();
    if let Some(s) = access::object(doc, obj, "steps", ObjType::Map) {
        for key in access::keys(doc, &s) {
            let (Some(step_id), Some(step_obj)) = (
                ItemId::from_stored(&key),
                access::object(doc, &s, &key, ObjType::Map),
            ) else {
                continue;
            };
            if let Some(step) = read_step(doc, id, step_id, &step_obj, people) {
                steps.push(step);
            }
        }
    }
    steps.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    for step in &steps {
        for c in &step.conflicts {
            conflicts.push(Conflict {
                field: format!("steps.{}.{}", step.id.short(), c.field),
                values: c.values.clone(),
            });
        }
    }
    let full = detail == Detail::Full;
    let notes = access::object(doc, obj, "notes", ObjType::List)
        .filter(|_| full)
        .map(|n| read_notes(doc, &n, people))
        .unwrap_or_default();
    Some(Issue {
        id: id.clone(),
        title,
        body: if full {
            access::string(doc, obj, "body").unwrap_or_default()
        } else {
            String::new()
        },
        status: access::string(doc, obj, "status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(IssueStatus::Open),
        kind: access::string(doc, obj, "kind")
            .and_then(|s| s.parse().ok())
            .unwrap_or(IssueKind::Unclassified),
        raised_by: seat_field(doc, obj, "raised_by", people),
        created_at: Moment(access::int(doc, obj, "created_at").unwrap_or(0)),
        startup: startup.filter(|s| !s.is_empty()),
        tags,
        steps,
        notes,
        conflicts,
    })
}

fn seat_field(doc: &impl ReadDoc, obj: &ObjId, key: &str, people: &People) -> Person {
    match access::string(doc, obj, key).and_then(|s| s.parse::<Seat>().ok()) {
        Some(seat) => people.get(seat),
        None => Person {
            seat: None,
            name: "unknown".into(),
        },
    }
}

fn read_step(doc: &impl ReadDoc, issue: &ItemId, id: ItemId, obj: &ObjId, people: &People) -> Option<Step> {
    let text = access::string(doc, obj, "text")?;
    let mut accepted_by: Vec<Seat> = access::object(doc, obj, "accepted_by", ObjType::Map)
        .map(|m| {
            access::keys(doc, &m)
                .iter()
                .filter(|k| access::boolean(doc, &m, k) == Some(true))
                .filter_map(|k| k.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    accepted_by.sort();
    let conflicts = [("outcome", "outcome"), ("text", "text"), ("due", "due")]
        .iter()
        .filter_map(|(k, f)| scalar_conflict(doc, obj, k, f))
        .collect();
    Some(Step {
        id,
        issue_id: issue.clone(),
        text,
        owner: access::string(doc, obj, "owner")
            .and_then(|s| Owner::parse_stored(&s))
            .unwrap_or(Owner::Both),
        due: access::string(doc, obj, "due"),
        accepted_by,
        created_by: seat_field(doc, obj, "created_by", people),
        created_at: Moment(access::int(doc, obj, "created_at").unwrap_or(0)),
        done: access::boolean(doc, obj, "done").unwrap_or(false),
        outcome: access::string(doc, obj, "outcome").and_then(|s| s.parse().ok()),
        done_at: access::int(doc, obj, "done_at").map(Moment),
        conflicts,
    })
}

fn read_notes(doc: &impl ReadDoc, list: &ObjId, people: &People) -> Vec<Note> {
    (0..doc.length(list))
        .filter_map(|i| match doc.get(list, i) {
            Ok(Some((automerge::Value::Object(ObjType::Map), n))) => Some(Note {
                author: seat_field(doc, &n, "author", people),
                at: Moment(access::int(doc, &n, "at").unwrap_or(0)),
                text: access::string(doc, &n, "text")?,
            }),
            _ => None,
        })
        .collect()
}

/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

fn check_tag(tag: &str) -> Result<String, InvalidInput> {
    Ok(short_text("tag", tag, MAX_TAG_CHARS)?.to_lowercase())
}

fn missing_issue(id: &ItemId) -> ModelError {
    ModelError::NotFound {
        what: "issue",
        prefix: id.to_string(),
    }
}

impl Editor<'_> {
    /// Raises a new issue with id `id`.
    pub fn add_issue(&mut self, id: &ItemId, new: &NewIssue) -> Result<(), ModelError> {
        let title = check_title(&new.title)?;
        check_text("body", &new.body)?;
        for part in [&new.startup.feel, &new.startup.about, &new.startup.need]
            .into_iter()
            .flatten()
        {
            check_text("soft start-up", part)?;
        }
        if new.tags.len() > MAX_TAGS {
            return Err(ModelError::Refused(format!("at most {MAX_TAGS} tags per issue")));
        }
        let tags = new
            .tags
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.change(format!("add issue {}", id.short()), |tx, seat, now| {
            let issues = map_in(tx, &ROOT, "issues")?;
            if access::object(&*tx, &issues, id.as_str(), ObjType::Map).is_some() {
                return Err(ModelError::Refused(format!("issue {id} already exists")));
            }
            let obj = tx.put_object(&issues, id.as_str(), ObjType::Map)?;
            tx.put(&obj, "title", title.as_str())?;
            let body = tx.put_object(&obj, "body", ObjType::Text)?;
            tx.splice_text(&body, 0, 0, &new.body)?;
            tx.put(&obj, "kind", new.kind.unwrap_or(IssueKind::Unclassified).as_str())?;
            tx.put(&obj, "status", IssueStatus::Open.as_str())?;
            tx.put(&obj, "raised_by", seat.as_str())?;
            tx.put(&obj, "created_at", ScalarValue::Timestamp(now))?;
            if !new.startup.is_empty() {
                let s = tx.put_object(&obj, "startup", ObjType::Map)?;
                for (k, v) in [
                    ("feel", &new.startup.feel),
                    ("about", &new.startup.about),
                    ("need", &new.startup.need),
                ] {
                    if let Some(v) = v {
                        tx.put(&s, k, v.trim())?;
                    }
                }
            }
            let t = tx.put_object(&obj, "tags", ObjType::Map)?;
            for tag in &tags {
                tx.put(&t, tag.as_str(), true)?;
            }
            tx.put_object(&obj, "steps", ObjType::Map)?;
            tx.put_object(&obj, "notes", ObjType::List)?;
            Ok(())
        })
    }

    /// Changes an issue's title, body or kind.
    pub fn edit_issue(&mut self, id: &ItemId, edit: &IssueEdit) -> Result<(), ModelError> {
        let title = edit.title.as_deref().map(check_title).transpose()?;
        if let Some(body) = &edit.body {
            check_text("body", body)?;
        }
        if title.is_none() && edit.body.is_none() && edit.kind.is_none() {
            return Err(ModelError::Refused(
                "nothing to change: give --title, --body or --kind".into(),
            ));
        }
        self.change(format!("edit issue {}", id.short()), |tx, _, _| {
            let obj = issue_obj(&*tx, id).ok_or_else(|| missing_issue(id))?;
            if let Some(t) = &title {
                tx.put(&obj, "title", t.as_str())?;
            }
            if let Some(k) = edit.kind {
                tx.put(&obj, "kind", k.as_str())?;
            }
            if let Some(body) = &edit.body {
                let text = match access::object(&*tx, &obj, "body", ObjType::Text) {
                    Some(t) => t,
                    None => tx.put_object(&obj, "body", ObjType::Text)?,
                };
                tx.update_text(&text, body)?;
            }
            Ok(())
        })
    }

    /// Sets an issue's status.
    pub fn set_status(&mut self, id: &ItemId, status: IssueStatus) -> Result<(), ModelError> {
        self.change(format!("set status of issue {}", id.short()), |tx, _, _| {
            let obj = issue_obj(&*tx, id).ok_or_else(|| missing_issue(id))?;
            tx.put(&obj, "status", status.as_str())?;
            Ok(())
        })
    }

    /// Adds a tag to an issue.
    pub fn tag_issue(&mut self, id: &ItemId, tag: &str) -> Result<(), ModelError> {
        let tag = check_tag(tag)?;
        self.change(format!("tag issue {}", id.short()), |tx, _, _| {
            let obj = issue_obj(&*tx, id).ok_or_else(|| missing_issue(id))?;
            let tags = map_in(tx, &obj, "tags")?;
            let present = access::keys(&*tx, &tags);
            if !present.contains(&tag) && present.len() >= MAX_TAGS {
                return Err(ModelError::Refused(format!("at most {MAX_TAGS} tags per issue")));
            }
            tx.put(&tags, tag.as_str(), true)?;
            Ok(())
        })
    }

    /// Adds a note to an issue.
    pub fn add_note(&mut self, id: &ItemId, text: &str) -> Result<(), ModelError> {
        let text = required_text("note", text)?;
        self.change(format!("note on issue {}", id.short()), |tx, seat, now| {
            let obj = issue_obj(&*tx, id).ok_or_else(|| missing_issue(id))?;
            let notes = match access::object(&*tx, &obj, "notes", ObjType::List) {
                Some(n) => n,
                None => tx.put_object(&obj, "notes", ObjType::List)?,
            };
            let at = tx.length(&notes);
            let note = tx.insert_object(&notes, at, ObjType::Map)?;
            tx.put(&note, "author", seat.as_str())?;
            tx.put(&note, "at", ScalarValue::Timestamp(now))?;
            tx.put(&note, "text", text)?;
            Ok(())
        })
    }

    /// Adds a step to issue `issue`. The partner who proposes it accepts it at once
    /// when they are among its owners.
    pub fn add_step(
        &mut self,
        issue: &ItemId,
        step: &ItemId,
        text: &str,
        owner: Owner,
        due: Option<&str>,
    ) -> Result<(), ModelError> {
        let text = required_text("step", text)?;
        let due = due.map(parse_date).transpose()?.map(|d| d.to_string());
        self.change(
            format!("add step {} to issue {}", step.short(), issue.short()),
            |tx, seat, now| {
                let obj = issue_obj(&*tx, issue).ok_or_else(|| missing_issue(issue))?;
                let steps = map_in(tx, &obj, "steps")?;
                let s = tx.put_object(&steps, step.as_str(), ObjType::Map)?;
                tx.put(&s, "text", text)?;
                tx.put(&s, "owner", owner.as_str())?;
                if let Some(d) = &due {
                    tx.put(&s, "due", d.as_str())?;
                }
                let accepted = tx.put_object(&s, "accepted_by", ObjType::Map)?;
                if owner.includes(seat) {
                    tx.put(&accepted, seat.as_str(), true)?;
                }
                tx.put(&s, "created_by", seat.as_str())?;
                tx.put(&s, "created_at", ScalarValue::Timestamp(now))?;
                tx.put(&s, "done", false)?;
                Ok(())
            },
        )
    }

    fn with_step<T>(
        &mut self,
        (issue, step): &(ItemId, ItemId),
        verb: &str,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &ObjId, Seat, i64) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        self.change(format!("{verb} step {}", step.short()), |tx, seat, now| {
            let obj = issue_obj(&*tx, issue)
                .and_then(|i| access::object(&*tx, &i, "steps", ObjType::Map))
                .and_then(|s| access::object(&*tx, &s, step.as_str(), ObjType::Map))
                .ok_or_else(|| ModelError::NotFound {
                    what: "step",
                    prefix: step.to_string(),
                })?;
            f(tx, &obj, seat, now)
        })
    }

    /// Records that this partner accepts a step they own (alone or with their
    /// partner).
    pub fn accept_step(&mut self, step: &(ItemId, ItemId)) -> Result<(), ModelError> {
        self.with_step(step, "accept", |tx, obj, seat, _| {
            let owner = access::string(&*tx, obj, "owner").and_then(|s| Owner::parse_stored(&s));
            if owner.is_some_and(|o| !o.includes(seat)) {
                return Err(ModelError::Refused(format!(
                    "step {} is your partner's to accept: only a step's owner accepts it",
                    step.1.short()
                )));
            }
            let accepted = map_in(tx, obj, "accepted_by")?;
            tx.put(&accepted, seat.as_str(), true)?;
            Ok(())
        })
    }

    /// Marks a step done with an outcome.
    pub fn complete_step(&mut self, step: &(ItemId, ItemId), outcome: Outcome) -> Result<(), ModelError> {
        self.with_step(step, "complete", |tx, obj, seat, now| {
            tx.put(obj, "done", true)?;
            tx.put(obj, "outcome", outcome.as_str())?;
            tx.put(obj, "done_at", ScalarValue::Timestamp(now))?;
            tx.put(obj, "done_by", seat.as_str())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::tests::founded;
    use automerge::Automerge;

    fn id(n: u8) -> ItemId {
        ItemId::from_random([n; 8])
    }

    fn add(doc: &mut Automerge, seat: Seat, n: u8, title: &str) -> ItemId {
        let new = NewIssue {
            title: title.into(),
            body: "the body".into(),
            ..Default::default()
        };
        Editor::new(doc, seat, 1_000 * n as i64)
            .add_issue(&id(n), &new)
            .unwrap();
        id(n)
    }

    #[test]
    fn issues_are_added_read_and_filtered() {
        let (mut doc, _) = founded(1);
        let a = add(&mut doc, Seat::A, 1, "Chores");
        let b = add(&mut doc, Seat::A, 2, "Money");
        Editor::new(&mut doc, Seat::A, 5)
            .set_status(&b, IssueStatus::Discussing)
            .unwrap();
        let all = issues(&doc, IssueFilter::default());
        assert_eq!(
            all.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(),
            ["Chores", "Money"]
        );
        let discussing = issues(
            &doc,
            IssueFilter {
                status: Some(IssueStatus::Discussing),
                kind: None,
            },
        );
        assert_eq!(discussing.len(), 1);
        assert_eq!(discussing[0].id, b);
        assert_eq!(issue(&doc, &a).unwrap().raised_by.name, "Sam");
        assert_eq!(resolve_issue(&doc, &a.as_str()[..4]).unwrap(), a);
    }

    #[test]
    fn the_list_is_the_issues_without_bodies_and_notes() {
        let (mut doc, _) = founded(1);
        let a = add(&mut doc, Seat::A, 1, "Chores");
        add(&mut doc, Seat::A, 2, "Money");
        let mut e = Editor::new(&mut doc, Seat::A, 5);
        e.add_note(&a, "talked on sunday").unwrap();
        e.add_step(&a, &id(7), "make a rota", crate::Owner::Both, None)
            .unwrap();
        let full = issues(&doc, IssueFilter::default());
        let list = issue_list(&doc, IssueFilter::default());
        assert_eq!(full[0].notes.len(), 1);
        assert_eq!(full[0].body, "the body");
        let mut expected = full.clone();
        for i in &mut expected {
            i.body.clear();
            i.notes.clear();
        }
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
    }

    #[test]
    fn bad_input_changes_nothing() {
        let (mut doc, _) = founded(1);
        let heads = doc.get_heads();
        let mut e = Editor::new(&mut doc, Seat::A, 0);
        let empty = NewIssue::default();
        assert!(e.add_issue(&id(1), &empty).is_err());
        let long = NewIssue {
            title: "x".repeat(301),
            ..Default::default()
        };
        assert!(e.add_issue(&id(1), &long).is_err());
        assert!(e.set_status(&id(9), IssueStatus::Open).is_err());
        assert!(e.add_note(&id(9), "hello").is_err());
        assert_eq!(doc.get_heads(), heads);
    }

    #[test]
    fn concurrent_body_edits_merge_and_status_conflicts_show() {
        let (mut a, _) = founded(1);
        let issue_id = add(&mut a, Seat::A, 1, "Chores");
        let b_dev = crate::identity::DeviceSecret::from_bytes(&[2; 32]).device_id();
        Editor::new(&mut a, Seat::A, 2)
            .add_device(b_dev, Seat::B, "phone")
            .unwrap();
        let mut b = a.fork().with_actor(b_dev.actor());

        let edit = |body: &str| IssueEdit {
            body: Some(body.into()),
            ..Default::default()
        };
        Editor::new(&mut a, Seat::A, 3)
            .edit_issue(&issue_id, &edit("start: the body"))
            .unwrap();
        Editor::new(&mut b, Seat::B, 3)
            .edit_issue(&issue_id, &edit("the body :end"))
            .unwrap();
        Editor::new(&mut a, Seat::A, 4)
            .set_status(&issue_id, IssueStatus::Discussing)
            .unwrap();
        Editor::new(&mut b, Seat::B, 4)
            .set_status(&issue_id, IssueStatus::Parked)
            .unwrap();
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();

        let ia = issue(&a, &issue_id).unwrap();
        let ib = issue(&b, &issue_id).unwrap();
        assert_eq!(ia.body, "start: the body :end");
        assert_eq!(ia.body, ib.body);
        assert_eq!(ia.status, ib.status);
        let c = ia
            .conflicts
            .iter()
            .find(|c| c.field == "status")
            .expect("status conflict");
        let mut vals: Vec<_> = c
            .values
            .iter()
            .map(|v| (v.value.as_str(), v.set_by.seat))
            .collect();
        vals.sort();
        assert_eq!(vals, [("discussing", Some(Seat::A)), ("parked", Some(Seat::B))]);
        assert_eq!(
            c.values[0].value,
            ia.status.as_str(),
            "the shown value comes first"
        );

        // Setting it again settles the conflict.
        Editor::new(&mut a, Seat::A, 5)
            .set_status(&issue_id, IssueStatus::Agreed)
            .unwrap();
        assert!(issue(&a, &issue_id).unwrap().conflicts.is_empty());
    }

    #[test]
    fn steps_are_proposed_accepted_and_completed() {
        let (mut doc, _) = founded(1);
        let issue_id = add(&mut doc, Seat::A, 1, "Chores");
        let mut e = Editor::new(&mut doc, Seat::A, 10);
        e.add_step(
            &issue_id,
            &id(7),
            "Do dishes",
            Owner::One(Seat::B),
            Some("2026-12-01"),
        )
        .unwrap();
        assert!(
            e.add_step(&issue_id, &id(8), "x", Owner::Both, Some("soon"))
                .is_err()
        );
        let found = resolve_step(&doc, "0707").unwrap();
        assert_eq!(found, (issue_id.clone(), id(7)));
        let step = &issue(&doc, &issue_id).unwrap().steps[0];
        assert!(
            step.accepted_by.is_empty(),
            "a is not an owner, so has not accepted"
        );
        assert_eq!(step.due.as_deref(), Some("2026-12-01"));

        let mut e = Editor::new(&mut doc, Seat::B, 11);
        e.accept_step(&found).unwrap();
        e.complete_step(&found, Outcome::Kept).unwrap();
        e.add_note(&issue_id, "went fine").unwrap();
        let i = issue(&doc, &issue_id).unwrap();
        assert_eq!(i.steps[0].accepted_by, [Seat::B]);
        assert_eq!(i.steps[0].outcome, Some(Outcome::Kept));
        assert!(i.steps[0].done);
        assert_eq!(i.notes.len(), 1);
        assert_eq!(i.notes[0].author.name, "partner b");
    }
}
