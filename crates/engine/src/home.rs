//! [`Home`]: one partner's device-local copy of the couple's record.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use automerge::Automerge;
use duet_model::{
    Agreement, AgreementKind, CheckIn, CheckInEntry, DeviceId, DeviceSecret, Editor, Founder, InvalidInput,
    Issue, IssueEdit, IssueFilter, IssueStatus, ItemId, Member, Membership, ModelError, NewIssue, Outcome,
    Owner, Person, SchemaCheck, Seat, Step, Week, agreements, checkins, issues, space,
};
use duet_store::{JournalEntry, NewStore, Store};
use serde::Serialize;

use crate::error::{Error, Result};

/// The longest partner or device name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The `meta` key of the pinned founding device.
const FOUNDER: &str = "founder";

/// Options for [`Home::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The partner's name, as their partner will see it.
    pub name: String,
    /// This device's name ("laptop"). Defaults to the host name.
    pub device_name: Option<String>,
}

/// Who owns a step, as the person typing says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The person typing.
    Me,
    /// Their partner.
    Partner,
    /// Both.
    Both,
}

impl FromStr for Who {
    type Err = InvalidInput;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "me" => Ok(Who::Me),
            "partner" => Ok(Who::Partner),
            "both" => Ok(Who::Both),
            _ => Err(InvalidInput::Word {
                what: "owner",
                got: s.to_string(),
                expected: "me, partner, both".into(),
            }),
        }
    }
}

/// A summary of the home, for `duet status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The home folder.
    pub home: PathBuf,
    /// The space's id.
    pub space_id: String,
    /// The partner using this device.
    pub me: Person,
    /// The other partner, once they have joined.
    pub partner: Option<Person>,
    /// This device.
    pub device: DeviceInfo,
    /// Issues by status.
    pub issues: IssueCounts,
    /// This week's check-in.
    pub this_week: WeekInfo,
    /// Changes in the local log.
    pub changes: i64,
    /// The couple's mailbox relay, if one is set.
    pub relay: Option<String>,
}

/// This device, for `duet status`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Its id (public key, hex).
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// A short fingerprint to compare by eye.
    pub fingerprint: String,
}

/// Issue counts, for `duet status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IssueCounts {
    /// All issues.
    pub total: usize,
    /// Issues still needing attention (not resolved or parked).
    pub active: usize,
    /// Steps not yet done.
    pub open_steps: usize,
}

/// This week's check-in, for `duet status`.
#[derive(Debug, Clone, Serialize)]
pub struct WeekInfo {
    /// The ISO week.
    pub week: Week,
    /// Whether either partner has written anything in it.
    pub started: bool,
    /// Quality time logged so far, in minutes.
    pub minutes: u32,
}

/// One line of `duet log`.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Position in this device's log.
    pub seq: i64,
    /// The change hash (hex).
    pub hash: String,
    /// When the change was made (from the change itself).
    pub time: String,
    /// The partner whose device made it.
    pub author: Person,
    /// The device that made it.
    pub device: Option<String>,
    /// What it did.
    pub message: String,
}

/// One partner's device-local copy of the couple's shared record, plus their
/// private data. Every method that changes the record makes one automerge change,
/// appended to the store's log before the method returns.
#[derive(Debug)]
pub struct Home {
    dir: PathBuf,
    store: Store,
    seat: Seat,
    device: DeviceId,
    /// Ticks when a sync changes the document (set by `serve`).
    notifier: Option<tokio::sync::watch::Sender<u64>>,
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

fn new_id() -> Result<ItemId> {
    Ok(ItemId::from_random(random()?))
}

/// The ISO week of today, in the local time zone.
pub fn this_week() -> Week {
    Week::containing(jiff::ZonedDateTime::now().date())
}

impl Home {
    /// The platform's default home folder (for example `~/.local/share/duet`).
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "duet").map(|d| d.data_dir().to_path_buf())
    }

    /// Creates a new space and home in `dir`, with a fresh device key.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Home> {
        let name = duet_model::short_text("name", &opts.name, MAX_NAME_CHARS)?.to_string();
        let device_name = match &opts.device_name {
            Some(n) => duet_model::short_text("device name", n, MAX_NAME_CHARS)?.to_string(),
            None => default_device_name(),
        };
        let secret = DeviceSecret::from_bytes(&random::<32>()?);
        let device = secret.device_id();
        let space_id = hex_string(&random::<16>()?);
        let now = now_ms();
        let founder = Founder {
            space_id: space_id.clone(),
            name,
            device,
            device_name: device_name.clone(),
        };
        let new = NewStore {
            device: &secret,
            device_name: &device_name,
            meta: &[
                ("seat", Seat::A.as_str()),
                ("space_id", &space_id),
                (FOUNDER, &device.to_string()),
            ],
            now_ms: now,
        };
        let store = Store::create(dir, &new, |doc: &mut Automerge| -> Result<()> {
            space::create_with_key(doc, &founder, Some(&crate::keys::first_key(&device)), now)?;
            Ok(())
        })?;
        Ok(Home {
            dir: dir.to_path_buf(),
            store,
            seat: Seat::A,
            device,
            notifier: None,
        })
    }

    /// Opens the home in `dir`, migrating an older document.
    pub fn open(dir: &Path) -> Result<Home> {
        let mut store = Store::open(dir)?;
        let device = store.device_id()?;
        let seat = store
            .meta_get("seat")?
            .and_then(|s| s.parse::<Seat>().ok())
            .ok_or_else(|| Error::Inconsistent {
                path: dir.display().to_string(),
                detail: "it does not record which partner this device belongs to".into(),
            })?;
        // An empty document belongs to a home that was joining a space when it
        // stopped; it opens so that `pair join` can finish.
        let check = store.read(|doc| {
            if doc.get_heads().is_empty() {
                Ok(SchemaCheck::Current)
            } else {
                space::check_schema(doc)
            }
        })??;
        let mut home = Home {
            dir: dir.to_path_buf(),
            store,
            seat,
            device,
            notifier: None,
        };
        if let SchemaCheck::Older(_) = check {
            home.edit(|e| e.migrate())?;
        }
        Ok(home)
    }

    /// Takes on another space (when joining one at pairing): the shared
    /// document is emptied, to be filled by the first sync; private data stays.
    pub(crate) fn adopt_space(&mut self, space_id: &str, seat: Seat) -> Result<()> {
        self.store
            .reset_space(&[("seat", seat.as_str()), ("space_id", space_id)])?;
        self.seat = seat;
        Ok(())
    }

    /// The device that founded the space, as this home pinned it: itself for
    /// a space it made, the author of the history's beginning for one it
    /// joined (pinned at the first read after the join, and for a home made
    /// before founders were pinned). Membership, and with it every check of
    /// who may connect and write, grows from this device, never from what
    /// the document says about itself.
    pub fn founder(&mut self) -> Result<DeviceId> {
        self.pinned_founder()?.ok_or_else(|| Error::Inconsistent {
            path: self.dir.display().to_string(),
            detail: "it holds no space yet: finish joining with `duet pair join`".into(),
        })
    }

    /// The pinned founder, pinning it on first use; `None` while the home
    /// holds no space yet (joining one).
    pub(crate) fn pinned_founder(&mut self) -> Result<Option<DeviceId>> {
        if let Some(f) = self.store.meta_get(FOUNDER)?.and_then(|s| s.parse().ok()) {
            return Ok(Some(f));
        }
        if self.read(|doc| doc.get_heads().is_empty())? {
            return Ok(None);
        }
        let found = self
            .read(space::founding_device)?
            .ok_or_else(|| Error::Inconsistent {
                path: self.dir.display().to_string(),
                detail: "its space's history does not have one beginning".into(),
            })?;
        self.store.meta_set(FOUNDER, &found.to_string())?;
        Ok(Some(found))
    }

    /// The space's member devices, grown from the pinned founder (none while
    /// the home holds no space yet).
    pub fn membership(&mut self) -> Result<Membership> {
        match self.pinned_founder()? {
            Some(founder) => self.read(|doc| Membership::pinned(doc, founder)),
            None => Ok(Membership::default()),
        }
    }

    /// The home folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seat of the partner using this device.
    pub fn seat(&self) -> Seat {
        self.seat
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The underlying store (for the sync layer and tools).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Reads the current document.
    pub fn read<T>(&mut self, f: impl FnOnce(&Automerge) -> T) -> Result<T> {
        Ok(self.store.read(f)?)
    }

    /// Tells a running `serve` about document changes.
    pub(crate) fn set_notifier(&mut self, tx: tokio::sync::watch::Sender<u64>) {
        self.notifier = Some(tx);
    }

    /// Tells a `serve` running on this home, in this process or another, that
    /// the document changed, so that it pushes the change at once. `Home`'s
    /// own edit methods call it; call it after writing through
    /// [`Home::store_mut`] directly.
    pub fn notify_changed(&self) {
        match &self.notifier {
            Some(tx) => tx.send_modify(|n| *n = n.wrapping_add(1)),
            // Not serving: a `serve` in another process may be.
            None => crate::wake::poke(self.dir()),
        }
    }

    /// Makes one or more changes as this device's partner, now.
    pub(crate) fn edit<T>(
        &mut self,
        f: impl FnOnce(&mut Editor<'_>) -> std::result::Result<T, ModelError>,
    ) -> Result<T> {
        let seat = self.seat;
        let out = self.store.write(|doc| -> Result<T> {
            let mut editor = Editor::new(doc, seat, now_ms());
            Ok(f(&mut editor)?)
        })?;
        // A `serve` running on this home pushes the edit at once.
        self.notify_changed();
        Ok(out)
    }

    /// Resolves an id prefix against the current document, then edits.
    fn edit_resolved<I, T>(
        &mut self,
        resolve: impl FnOnce(&Automerge) -> std::result::Result<I, ModelError>,
        f: impl FnOnce(&mut Editor<'_>, &I) -> std::result::Result<T, ModelError>,
    ) -> Result<(I, T)> {
        let seat = self.seat;
        self.store
            .write(|doc| -> Result<(I, T)> {
                // Resolved inside the write lock, so the id refers to what the edit sees.
                let id = resolve(doc)?;
                let mut editor = Editor::new(doc, seat, now_ms());
                let out = f(&mut editor, &id)?;
                Ok((id, out))
            })
            .inspect(|_| self.notify_changed())
    }

    /// A summary of the home.
    pub fn status(&mut self) -> Result<Status> {
        let seat = self.seat;
        let week = this_week();
        let (space_id, me, partner, all, checkin, relay) = self.read(|doc| {
            (
                space::space_id(doc).unwrap_or_default(),
                space::person(doc, seat),
                space::partner_name(doc, seat.other()).map(|_| space::person(doc, seat.other())),
                issues::issues(doc, IssueFilter::default()),
                checkins::checkin(doc, week),
                duet_model::keys::relay(doc),
            )
        })?;
        let stats = self.store.stats()?;
        Ok(Status {
            home: self.dir.clone(),
            space_id,
            me,
            partner,
            device: DeviceInfo {
                id: self.device,
                name: self.store.device_name()?,
                fingerprint: self.device.fingerprint(),
            },
            issues: IssueCounts {
                total: all.len(),
                active: all.iter().filter(|i| i.status.is_active()).count(),
                open_steps: all.iter().flat_map(|i| &i.steps).filter(|s| !s.done).count(),
            },
            this_week: WeekInfo {
                week,
                started: checkin.partners.iter().any(|p| {
                    !(p.appreciations.is_empty()
                        && p.went_well.is_empty()
                        && p.agenda.is_empty()
                        && p.request.is_none()
                        && p.rating.is_none()
                        && p.time.is_empty())
                }),
                minutes: checkin.total_minutes,
            },
            changes: stats.changes,
            relay,
        })
    }

    /// Both partners, seat a first (a partner who has not joined yet shows with a
    /// placeholder name).
    pub fn people(&mut self) -> Result<Vec<Person>> {
        self.read(|doc| Seat::ALL.iter().map(|s| space::person(doc, *s)).collect())
    }

    /// The space's devices.
    pub fn devices(&mut self) -> Result<Vec<Member>> {
        self.read(space::devices)
    }

    // ---- issues ----

    /// Raises an issue.
    pub fn add_issue(&mut self, new: &NewIssue) -> Result<Issue> {
        let id = new_id()?;
        self.edit(|e| e.add_issue(&id, new))?;
        self.issue(id.as_str())
    }

    /// Issues matching `filter`, oldest first.
    pub fn issues(&mut self, filter: IssueFilter) -> Result<Vec<Issue>> {
        self.read(|doc| issues::issues(doc, filter))
    }

    /// [`Home::issues`] for a list: without each issue's body and notes (left
    /// empty), which on a long history are most of the reading.
    pub fn issue_list(&mut self, filter: IssueFilter) -> Result<Vec<Issue>> {
        self.read(|doc| issues::issue_list(doc, filter))
    }

    /// The issue whose id starts with `prefix`.
    pub fn issue(&mut self, prefix: &str) -> Result<Issue> {
        self.read(|doc| {
            let id = issues::resolve_issue(doc, prefix)?;
            issues::issue(doc, &id).ok_or(ModelError::NotFound {
                what: "issue",
                prefix: prefix.to_string(),
            })
        })?
        .map_err(Error::from)
    }

    /// Changes an issue's title, body or kind.
    pub fn edit_issue(&mut self, prefix: &str, edit: &IssueEdit) -> Result<Issue> {
        let (id, ()) = self.edit_resolved(
            |d| issues::resolve_issue(d, prefix),
            |e, id| e.edit_issue(id, edit),
        )?;
        self.issue(id.as_str())
    }

    /// Sets an issue's status.
    pub fn set_status(&mut self, prefix: &str, status: IssueStatus) -> Result<Issue> {
        let (id, ()) = self.edit_resolved(
            |d| issues::resolve_issue(d, prefix),
            |e, id| e.set_status(id, status),
        )?;
        self.issue(id.as_str())
    }

    /// Adds a tag to an issue.
    pub fn tag_issue(&mut self, prefix: &str, tag: &str) -> Result<Issue> {
        let (id, ()) =
            self.edit_resolved(|d| issues::resolve_issue(d, prefix), |e, id| e.tag_issue(id, tag))?;
        self.issue(id.as_str())
    }

    /// Adds a note to an issue.
    pub fn add_note(&mut self, prefix: &str, text: &str) -> Result<Issue> {
        let (id, ()) =
            self.edit_resolved(|d| issues::resolve_issue(d, prefix), |e, id| e.add_note(id, text))?;
        self.issue(id.as_str())
    }

    // ---- steps ----

    fn owner(&self, who: Who) -> Owner {
        match who {
            Who::Me => Owner::One(self.seat),
            Who::Partner => Owner::One(self.seat.other()),
            Who::Both => Owner::Both,
        }
    }

    /// Adds a step to an issue.
    pub fn add_step(&mut self, issue_prefix: &str, text: &str, who: Who, due: Option<&str>) -> Result<Step> {
        let owner = self.owner(who);
        let step = new_id()?;
        let (issue, ()) = self.edit_resolved(
            |d| issues::resolve_issue(d, issue_prefix),
            |e, issue| e.add_step(issue, &step, text, owner, due),
        )?;
        self.step(&(issue, step))
    }

    fn step(&mut self, (issue, step): &(ItemId, ItemId)) -> Result<Step> {
        let found = self.read(|doc| issues::issue(doc, issue))?;
        found
            .and_then(|i| i.steps.into_iter().find(|s| s.id == *step))
            .ok_or_else(|| {
                ModelError::NotFound {
                    what: "step",
                    prefix: step.to_string(),
                }
                .into()
            })
    }

    /// Accepts a step the partner proposed.
    pub fn accept_step(&mut self, prefix: &str) -> Result<Step> {
        let (ids, ()) =
            self.edit_resolved(|d| issues::resolve_step(d, prefix), |e, ids| e.accept_step(ids))?;
        self.step(&ids)
    }

    /// Marks a step done.
    pub fn complete_step(&mut self, prefix: &str, outcome: Outcome) -> Result<Step> {
        let (ids, ()) = self.edit_resolved(
            |d| issues::resolve_step(d, prefix),
            |e, ids| e.complete_step(ids, outcome),
        )?;
        self.step(&ids)
    }

    // ---- check-ins ----

    /// The check-in of `week`.
    pub fn checkin(&mut self, week: Week) -> Result<CheckIn> {
        self.read(|doc| checkins::checkin(doc, week))
    }

    /// Every check-in, newest first.
    pub fn checkins(&mut self) -> Result<Vec<CheckIn>> {
        self.read(|doc| {
            checkins::weeks(doc)
                .into_iter()
                .map(|w| checkins::checkin(doc, w))
                .collect()
        })
    }

    /// Adds to this partner's part of `week`'s check-in.
    pub fn checkin_add(&mut self, week: Week, entry: &CheckInEntry) -> Result<CheckIn> {
        self.edit(|e| e.checkin(week, entry))?;
        self.checkin(week)
    }

    /// Puts an issue on `week`'s agenda.
    pub fn checkin_agenda(&mut self, week: Week, issue_prefix: &str) -> Result<CheckIn> {
        self.edit_resolved(
            |d| issues::resolve_issue(d, issue_prefix),
            |e, id| e.checkin(week, &CheckInEntry::Agenda(id.clone())),
        )?;
        self.checkin(week)
    }

    // ---- agreements ----

    /// Proposes an agreement.
    pub fn add_agreement(&mut self, text: &str, kind: AgreementKind) -> Result<Agreement> {
        let id = new_id()?;
        self.edit(|e| e.add_agreement(&id, text, kind))?;
        self.agreement(id.as_str())
    }

    /// The agreement whose id starts with `prefix`.
    pub fn agreement(&mut self, prefix: &str) -> Result<Agreement> {
        self.read(|doc| {
            let id = agreements::resolve_agreement(doc, prefix)?;
            agreements::agreement(doc, &id).ok_or(ModelError::NotFound {
                what: "agreement",
                prefix: prefix.to_string(),
            })
        })?
        .map_err(Error::from)
    }

    /// Every agreement.
    pub fn agreements(&mut self) -> Result<Vec<Agreement>> {
        self.read(agreements::agreements)
    }

    /// Accepts an agreement's current version.
    pub fn accept_agreement(&mut self, prefix: &str) -> Result<Agreement> {
        let (id, _) = self.edit_resolved(
            |d| agreements::resolve_agreement(d, prefix),
            |e, id| e.accept_agreement(id),
        )?;
        self.agreement(id.as_str())
    }

    /// Rewrites an agreement as a new version.
    pub fn edit_agreement(&mut self, prefix: &str, text: &str) -> Result<Agreement> {
        let (id, _) = self.edit_resolved(
            |d| agreements::resolve_agreement(d, prefix),
            |e, id| e.edit_agreement(id, text),
        )?;
        self.agreement(id.as_str())
    }

    // ---- private ----

    /// Writes a private journal entry. It never leaves this device.
    pub fn journal_add(&mut self, text: &str) -> Result<JournalEntry> {
        let text = duet_model::required_text("journal entry", text)?;
        let now = now_ms();
        let id = self.store.journal_add(text, now)?;
        Ok(JournalEntry {
            id,
            written_at: now,
            text: text.to_string(),
        })
    }

    /// The private journal, oldest first.
    pub fn journal(&mut self) -> Result<Vec<JournalEntry>> {
        Ok(self.store.journal()?)
    }

    /// The private review date, if set.
    pub fn review_date(&mut self) -> Result<Option<String>> {
        Ok(self.store.private_get("review_date")?)
    }

    /// Sets (or clears) the private review date (`YYYY-MM-DD`).
    pub fn set_review_date(&mut self, date: Option<&str>) -> Result<()> {
        let date = date
            .map(duet_model::vocab::parse_date)
            .transpose()?
            .map(|d| d.to_string());
        Ok(self.store.private_set("review_date", date.as_deref())?)
    }

    // ---- history ----

    /// The change log, newest first, with the author of every change.
    pub fn log(&mut self, limit: Option<usize>) -> Result<Vec<LogLine>> {
        let entries = self.store.log(limit)?;
        self.read(|doc| {
            entries
                .into_iter()
                .map(|e| {
                    let actor = e.device.map(|d| d.actor());
                    LogLine {
                        seq: e.seq,
                        hash: e.hash.to_string(),
                        time: duet_model::Moment(e.time.saturating_mul(1000)).to_string(),
                        author: space::author_of_actor(doc, actor.as_ref()),
                        device: e.device.map(|d| d.short()),
                        message: e.message.unwrap_or_default(),
                    }
                })
                .collect()
        })
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn default_device_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().count() <= MAX_NAME_CHARS)
        .unwrap_or_else(|| "this device".to_string())
}
