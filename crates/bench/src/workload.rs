//! Seeded couple histories: what two partners write over years of weekly use.
//!
//! A [`Model`] knows what the couple's record holds (issues with their bodies,
//! steps, agreements) and which partner's device can see what: an item made by
//! one partner reaches the other at their next meeting ([`Model::sync`]). It
//! emits [`Edit`]s, each one call of `duet_model::Editor` and so one automerge
//! change, that are valid on the device that makes them.
//!
//! [`Model::week`] plans one week of a history (new issues typed keystroke by
//! keystroke, notes, steps and their progress, status changes, agreements and
//! both partners' check-in); [`Model::take`] draws a stream of everyday edits
//! for one partner (for offline edits, live edits and edit costs).

use automerge::Automerge;
use duet_model::{
    AgreementKind, CheckInEntry, Editor, IssueEdit, IssueKind, IssueStatus, ItemId, ModelError, NewIssue,
    Outcome, Owner, Rating, Seat, SoftStartup, TimeKind, Week,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A small seeded random source.
#[derive(Clone)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.next_u64() % n }
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One of `xs` (which must not be empty).
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// One of `xs` (which must not be empty).
    pub fn word(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Bytes for an id or a key.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.0.fill_bytes(&mut b);
        b
    }

    /// A fresh item id.
    pub fn id(&mut self) -> ItemId {
        ItemId::from_random(self.bytes())
    }

    /// A seat, partner a a little more often.
    pub fn seat(&mut self) -> Seat {
        if self.chance(0.55) { Seat::A } else { Seat::B }
    }
}

/// One edit, as one partner's device makes it.
#[derive(Debug, Clone)]
pub struct Edit {
    /// The partner.
    pub seat: Seat,
    /// When (milliseconds since the epoch).
    pub at_ms: i64,
    /// What.
    pub op: Op,
}

/// One `Editor` call.
#[derive(Debug, Clone)]
pub enum Op {
    /// Raise an issue (its body is then typed keystroke by keystroke).
    AddIssue(ItemId, NewIssue),
    /// One keystroke in an issue's body: the whole body after it.
    TypeBody(ItemId, usize, String),
    /// Set an issue's status.
    Status(ItemId, IssueStatus),
    /// Tag an issue.
    Tag(ItemId, String),
    /// Add a note to an issue.
    Note(ItemId, String),
    /// Add a step to an issue.
    AddStep(ItemId, ItemId, String, Owner, Option<String>),
    /// Accept a step.
    AcceptStep(ItemId, ItemId),
    /// Complete a step.
    CompleteStep(ItemId, ItemId, Outcome),
    /// Add to a week's check-in.
    CheckIn(Week, CheckInEntry),
    /// Propose an agreement.
    AddAgreement(ItemId, String, AgreementKind),
    /// Accept an agreement's current version.
    AcceptAgreement(ItemId),
    /// Rewrite an agreement.
    EditAgreement(ItemId, String),
}

/// Applies `e` to `doc` (whose actor is the device of `e.seat`) as one change.
pub fn apply(doc: &mut Automerge, e: &Edit) -> Result<(), ModelError> {
    let mut ed = Editor::new(doc, e.seat, e.at_ms);
    match &e.op {
        Op::AddIssue(id, new) => ed.add_issue(id, new),
        Op::TypeBody(id, _, body) => ed.edit_issue(
            id,
            &IssueEdit {
                body: Some(body.clone()),
                ..Default::default()
            },
        ),
        Op::Status(id, s) => ed.set_status(id, *s),
        Op::Tag(id, t) => ed.tag_issue(id, t),
        Op::Note(id, t) => ed.add_note(id, t),
        Op::AddStep(issue, step, text, owner, due) => ed.add_step(issue, step, text, *owner, due.as_deref()),
        Op::AcceptStep(issue, step) => ed.accept_step(&(issue.clone(), step.clone())),
        Op::CompleteStep(issue, step, outcome) => ed.complete_step(&(issue.clone(), step.clone()), *outcome),
        Op::CheckIn(week, entry) => ed.checkin(*week, entry),
        Op::AddAgreement(id, text, kind) => ed.add_agreement(id, text, *kind),
        Op::AcceptAgreement(id) => ed.accept_agreement(id).map(|_| ()),
        Op::EditAgreement(id, text) => ed.edit_agreement(id, text).map(|_| ()),
    }
}

/// Applies every edit in order.
pub fn apply_all(doc: &mut Automerge, edits: &[Edit]) -> Result<(), ModelError> {
    edits.iter().try_for_each(|e| apply(doc, e))
}

/// How much a history holds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Weeks (one check-in each).
    pub weeks: usize,
    /// Issues raised.
    pub issues: usize,
    /// Notes written.
    pub notes: usize,
    /// Steps committed to.
    pub steps: usize,
    /// Agreements proposed.
    pub agreements: usize,
}

impl Shape {
    /// Five years is 300 issues, 3,000 notes, 1,500 steps and 260 check-ins;
    /// other lengths scale with the years.
    pub fn years(years: u32) -> Shape {
        let y = years as usize;
        Shape {
            weeks: 52 * y,
            issues: 60 * y,
            notes: 600 * y,
            steps: 300 * y,
            agreements: 4 * y,
        }
    }
}

#[derive(Debug, Clone)]
struct StepSt {
    id: ItemId,
    creator: Seat,
    epoch: usize,
    owner: Owner,
    accepted: [bool; 2],
    done: bool,
}

#[derive(Debug, Clone)]
struct IssueSt {
    id: ItemId,
    creator: Seat,
    epoch: usize,
    kind: IssueKind,
    status: IssueStatus,
    body: String,
    body_lock: Option<Seat>,
    steps: Vec<StepSt>,
    tags: Vec<String>,
}

#[derive(Debug, Clone)]
struct AgreementSt {
    id: ItemId,
    creator: Seat,
    epoch: usize,
    version: u64,
    accepted: [u64; 2],
    /// Who rewrote it last and in which epoch (the other accepts later).
    edited: (Seat, usize),
}

fn ix(seat: Seat) -> usize {
    match seat {
        Seat::A => 0,
        Seat::B => 1,
    }
}

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// What the couple's record holds, as the generator tracks it.
#[derive(Clone)]
pub struct Model {
    rng: Rng,
    issues: Vec<IssueSt>,
    agreements: Vec<AgreementSt>,
    /// Bumped at every meeting of the two devices.
    epoch: usize,
    /// Each partner's clock (ms since the epoch).
    clock: [i64; 2],
    /// Monday 00:00 UTC of the history's first week.
    start_ms: i64,
    /// The current week's index.
    week: usize,
}

/// Monday 00:00 UTC, `weeks` weeks before 2026-01-05.
fn start_of_history(weeks: usize) -> i64 {
    let end = jiff::civil::date(2026, 1, 5)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(1_767_571_200_000);
    end - weeks as i64 * WEEK_MS
}

fn week_of(ms: i64) -> Week {
    let date = jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
        .unwrap_or_else(|_| jiff::civil::date(2026, 1, 5));
    Week::containing(date)
}

impl Model {
    /// An empty record at the start of a history of `weeks` weeks.
    pub fn new(seed: u64, weeks: usize) -> Model {
        let start_ms = start_of_history(weeks);
        Model {
            rng: Rng::new(seed),
            issues: Vec::new(),
            agreements: Vec::new(),
            epoch: 0,
            clock: [start_ms; 2],
            start_ms,
            week: 0,
        }
    }

    /// The generator's random source (for keys and ids outside the record).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The time the history starts.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// Reseeds the generator, so that scenarios drawing from copies of one
    /// model draw different edits.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// The two devices met: everything either made is now on both.
    pub fn sync(&mut self) {
        self.epoch += 1;
        for i in &mut self.issues {
            i.body_lock = None;
        }
    }

    /// A note for partner `seat` to add to an issue both devices hold, with
    /// that issue's id (for edits made through `Home`'s own methods).
    pub fn note_for(&mut self, seat: Seat) -> Option<(ItemId, String)> {
        let mut out = Vec::new();
        self.note(seat, &mut out);
        match out.pop() {
            Some(Edit {
                op: Op::Note(id, text),
                ..
            }) => Some((id, text)),
            _ => None,
        }
    }

    /// Issues raised so far.
    pub fn issue_count(&self) -> usize {
        self.issues.len()
    }

    fn visible(&self, creator: Seat, epoch: usize, seat: Seat) -> bool {
        creator == seat || epoch < self.epoch
    }

    fn tick(&mut self, seat: Seat, lo_ms: u64, hi_ms: u64) -> i64 {
        let d = self.rng.range(lo_ms, hi_ms) as i64;
        self.clock[ix(seat)] += d;
        self.clock[ix(seat)]
    }

    fn edit(&mut self, seat: Seat, op: Op) -> Edit {
        let at_ms = match &op {
            Op::TypeBody(..) => self.tick(seat, 120, 450),
            _ => self.tick(seat, 20_000, 30 * 60_000),
        };
        Edit { seat, at_ms, op }
    }

    /// Indices of issues `seat` can see, optionally only active ones.
    fn visible_issues(&self, seat: Seat, active_only: bool) -> Vec<usize> {
        self.issues
            .iter()
            .enumerate()
            .filter(|(_, i)| self.visible(i.creator, i.epoch, seat))
            .filter(|(_, i)| !active_only || i.status.is_active())
            .map(|(n, _)| n)
            .collect()
    }

    /// A visible issue, recent and active ones more likely.
    fn pick_issue(&mut self, seat: Seat) -> Option<usize> {
        let active = self.visible_issues(seat, true);
        let pool = if !active.is_empty() && self.rng.chance(0.85) {
            active
        } else {
            self.visible_issues(seat, false)
        };
        if pool.is_empty() {
            return None;
        }
        // Favour the most recent third.
        let n = pool.len() as u64;
        let k = if self.rng.chance(0.6) {
            n - 1 - self.rng.below(n.div_ceil(3))
        } else {
            self.rng.below(n)
        };
        Some(pool[k as usize])
    }

    /// Keystrokes that append `addition` to issue `n`'s body, with the odd
    /// typo corrected at once.
    fn type_into(&mut self, seat: Seat, n: usize, addition: &str, out: &mut Vec<Edit>) {
        let id = self.issues[n].id.clone();
        let mut body = self.issues[n].body.clone();
        for ch in addition.chars() {
            if ch.is_alphabetic() && self.rng.chance(0.03) {
                let typo = *self.rng.pick(&['e', 'r', 't', 'a', 's', 'n', 'o']);
                body.push(typo);
                out.push(self.edit(seat, Op::TypeBody(id.clone(), n, body.clone())));
                body.pop();
                out.push(self.edit(seat, Op::TypeBody(id.clone(), n, body.clone())));
            }
            body.push(ch);
            out.push(self.edit(seat, Op::TypeBody(id.clone(), n, body.clone())));
        }
        self.issues[n].body = body;
    }

    fn raise_issue(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let id = self.rng.id();
        let kind = *self.rng.pick(&[
            IssueKind::Unclassified,
            IssueKind::Solvable,
            IssueKind::Solvable,
            IssueKind::Perpetual,
        ]);
        let mut title = self.rng.pick(TOPICS).to_string();
        if self.rng.chance(0.4) {
            title.push_str(self.rng.word(TITLE_SUFFIXES));
        }
        let startup = if self.rng.chance(0.5) {
            SoftStartup {
                feel: Some(self.rng.pick(FEEL).to_string()),
                about: Some(self.rng.pick(WHEN).to_string()),
                need: Some(self.rng.pick(NEED).to_string()),
            }
        } else {
            SoftStartup::default()
        };
        let tags = if self.rng.chance(0.6) {
            vec![self.rng.pick(TAGS).to_string()]
        } else {
            Vec::new()
        };
        let new = NewIssue {
            title,
            body: String::new(),
            kind: Some(kind),
            startup,
            tags: tags.clone(),
        };
        self.issues.push(IssueSt {
            id: id.clone(),
            creator: seat,
            epoch: self.epoch,
            kind,
            status: IssueStatus::Open,
            body: String::new(),
            body_lock: Some(seat),
            steps: Vec::new(),
            tags,
        });
        let n = self.issues.len() - 1;
        out.push(self.edit(seat, Op::AddIssue(id, new)));
        let body = self.body_text();
        self.type_into(seat, n, &body, out);
    }

    fn body_text(&mut self) -> String {
        let mut s = format!(
            "I feel {} when {}. I need {}.",
            self.rng.pick(FEEL),
            self.rng.pick(WHEN),
            self.rng.pick(NEED)
        );
        for _ in 0..self.rng.range(0, 3) {
            s.push(' ');
            s.push_str(self.rng.word(SENTENCES));
        }
        s
    }

    /// Appends an update to a visible issue's body, typed keystroke by keystroke.
    fn type_update(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let Some(n) = self.pick_issue(seat) else { return };
        if self.issues[n].body_lock.is_some_and(|s| s != seat) {
            return;
        }
        self.issues[n].body_lock = Some(seat);
        let mut add = format!(" Update: {}", self.rng.pick(SENTENCES));
        if self.rng.chance(0.5) {
            add.push(' ');
            add.push_str(self.rng.word(SENTENCES));
        }
        self.type_into(seat, n, &add, out);
    }

    fn note(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let Some(n) = self.pick_issue(seat) else { return };
        let mut text = self.rng.pick(NOTES).to_string();
        if self.rng.chance(0.4) {
            text.push(' ');
            text.push_str(self.rng.word(SENTENCES));
        }
        let id = self.issues[n].id.clone();
        out.push(self.edit(seat, Op::Note(id, text)));
    }

    fn add_step(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let Some(n) = self.pick_issue(seat) else { return };
        let step = self.rng.id();
        let owner = match self.rng.below(10) {
            0..=3 => Owner::One(seat),
            4..=6 => Owner::One(seat.other()),
            _ => Owner::Both,
        };
        let due = if self.rng.chance(0.5) {
            let at = self.clock[ix(seat)] + self.rng.range(7, 21) as i64 * 24 * HOUR_MS;
            jiff::Timestamp::from_millisecond(at)
                .ok()
                .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string())
        } else {
            None
        };
        let mut accepted = [false; 2];
        if owner.includes(seat) {
            accepted[ix(seat)] = true;
        }
        self.issues[n].steps.push(StepSt {
            id: step.clone(),
            creator: seat,
            epoch: self.epoch,
            owner,
            accepted,
            done: false,
        });
        let issue = self.issues[n].id.clone();
        let text = self.rng.pick(STEPS).to_string();
        out.push(self.edit(seat, Op::AddStep(issue, step, text, owner, due)));
    }

    /// Moves one step on: accepts it or records how it went.
    fn progress_step(&mut self, seat: Seat, n: usize, s: usize, out: &mut Vec<Edit>) {
        let st = &self.issues[n].steps[s];
        if st.done || !st.owner.includes(seat) || !self.visible(st.creator, st.epoch, seat) {
            return;
        }
        let (issue, step) = (self.issues[n].id.clone(), st.id.clone());
        if !st.accepted[ix(seat)] {
            self.issues[n].steps[s].accepted[ix(seat)] = true;
            out.push(self.edit(seat, Op::AcceptStep(issue, step)));
        } else {
            let outcome = match self.rng.below(20) {
                0..=10 => Outcome::Kept,
                11..=14 => Outcome::Partly,
                15..=17 => Outcome::Missed,
                _ => Outcome::Renegotiated,
            };
            self.issues[n].steps[s].done = true;
            out.push(self.edit(seat, Op::CompleteStep(issue, step, outcome)));
        }
    }

    fn advance_status(&mut self, seat: Seat, n: usize, out: &mut Vec<Edit>) {
        let i = &self.issues[n];
        if !self.visible(i.creator, i.epoch, seat)
            || !i.status.is_active()
            || i.status == IssueStatus::Managing
        {
            return;
        }
        let next = match i.status {
            IssueStatus::Open => IssueStatus::Discussing,
            IssueStatus::Discussing => IssueStatus::Agreed,
            _ if self.rng.chance(0.1) => IssueStatus::Parked,
            _ if i.kind == IssueKind::Perpetual => IssueStatus::Managing,
            _ => IssueStatus::Resolved,
        };
        self.issues[n].status = next;
        let id = self.issues[n].id.clone();
        out.push(self.edit(seat, Op::Status(id, next)));
    }

    fn tag(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let Some(n) = self.pick_issue(seat) else { return };
        let tag = self.rng.pick(TAGS).to_string();
        if self.issues[n].tags.contains(&tag) || self.issues[n].tags.len() >= 5 {
            return;
        }
        self.issues[n].tags.push(tag.clone());
        let id = self.issues[n].id.clone();
        out.push(self.edit(seat, Op::Tag(id, tag)));
    }

    fn add_agreement(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let id = self.rng.id();
        let kind = *self.rng.pick(&[
            AgreementKind::Boundary,
            AgreementKind::ConflictRule,
            AgreementKind::Ritual,
        ]);
        let mut accepted = [0; 2];
        accepted[ix(seat)] = 1;
        self.agreements.push(AgreementSt {
            id: id.clone(),
            creator: seat,
            epoch: self.epoch,
            version: 1,
            accepted,
            edited: (seat, self.epoch),
        });
        let text = self.rng.pick(AGREEMENTS).to_string();
        out.push(self.edit(seat, Op::AddAgreement(id, text, kind)));
    }

    /// Accepts or (rarely) rewrites an agreement `seat` can see.
    fn agreement_work(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let epoch = self.epoch;
        let seen: Vec<usize> = (0..self.agreements.len())
            .filter(|&k| {
                let a = &self.agreements[k];
                self.visible(a.creator, a.epoch, seat) && (a.edited.0 == seat || a.edited.1 < epoch)
            })
            .collect();
        if seen.is_empty() {
            return;
        }
        let k = *self.rng.pick(&seen);
        let id = self.agreements[k].id.clone();
        if self.agreements[k].accepted[ix(seat)] < self.agreements[k].version {
            self.agreements[k].accepted[ix(seat)] = self.agreements[k].version;
            out.push(self.edit(seat, Op::AcceptAgreement(id)));
        } else if self.rng.chance(0.3) {
            let a = &mut self.agreements[k];
            a.version += 1;
            a.accepted[ix(seat)] = a.version;
            a.edited = (seat, epoch);
            let mut text = self.rng.pick(AGREEMENTS).to_string();
            text.push_str(" (revised)");
            out.push(self.edit(seat, Op::EditAgreement(id, text)));
        }
    }

    /// One check-in entry of `seat` for the week its clock is in.
    fn checkin_entry(&mut self, seat: Seat, kind: u64, out: &mut Vec<Edit>) {
        let week = week_of(self.clock[ix(seat)]);
        let entry = match kind {
            0 => CheckInEntry::Appreciation(self.rng.pick(APPRECIATIONS).to_string()),
            1 => CheckInEntry::WentWell(self.rng.pick(WENT_WELL).to_string()),
            2 => {
                let active = self.visible_issues(seat, true);
                if active.is_empty() {
                    return;
                }
                let n = *self.rng.pick(&active);
                CheckInEntry::Agenda(self.issues[n].id.clone())
            }
            3 => CheckInEntry::Request(self.rng.pick(REQUESTS).to_string()),
            4 => match Rating::new(self.rng.range(4, 10) as i64) {
                Ok(r) => CheckInEntry::Rating(r),
                Err(_) => return,
            },
            _ => {
                let kind = *self.rng.pick(TimeKind::ALL);
                CheckInEntry::Time(kind, self.rng.range(10, 180) as u32)
            }
        };
        out.push(self.edit(seat, Op::CheckIn(week, entry)));
    }

    /// A partner's whole part of this week's check-in, on Sunday evening.
    fn checkin(&mut self, seat: Seat, out: &mut Vec<Edit>) {
        let sunday = self.start_ms + self.week as i64 * WEEK_MS + 6 * 24 * HOUR_MS + 19 * HOUR_MS;
        self.clock[ix(seat)] = self.clock[ix(seat)].max(sunday);
        for _ in 0..self.rng.range(1, 3) {
            self.checkin_entry(seat, 0, out);
        }
        for _ in 0..self.rng.range(0, 2) {
            self.checkin_entry(seat, 1, out);
        }
        for _ in 0..self.rng.range(0, 2) {
            self.checkin_entry(seat, 2, out);
        }
        if self.rng.chance(0.7) {
            self.checkin_entry(seat, 3, out);
        }
        if self.rng.chance(0.9) {
            self.checkin_entry(seat, 4, out);
        }
        for _ in 0..self.rng.range(1, 4) {
            self.checkin_entry(seat, 5, out);
        }
    }

    /// Plans week `w` of a history of shape `shape`, given how many issues,
    /// notes, steps and agreements fall in it. Returns each partner's edits, in
    /// the order their device makes them; call [`Model::sync`] once both are
    /// applied.
    pub fn week(&mut self, counts: WeekCounts) -> [Vec<Edit>; 2] {
        let monday = self.start_ms + self.week as i64 * WEEK_MS;
        for seat in [Seat::A, Seat::B] {
            let c = &mut self.clock[ix(seat)];
            *c = (*c).max(monday + 7 * HOUR_MS + (self.rng.below(12) as i64) * HOUR_MS);
        }
        let mut out: [Vec<Edit>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..counts.issues {
            let seat = self.rng.seat();
            self.raise_issue(seat, &mut out[ix(seat)]);
        }
        for _ in 0..counts.steps {
            let seat = self.rng.seat();
            self.add_step(seat, &mut out[ix(seat)]);
        }
        for _ in 0..counts.notes {
            let seat = self.rng.seat();
            self.note(seat, &mut out[ix(seat)]);
        }
        // Steps move on: owners accept, and later say how it went.
        for n in 0..self.issues.len() {
            for s in 0..self.issues[n].steps.len() {
                if self.issues[n].steps[s].epoch < self.epoch && self.rng.chance(0.35) {
                    let seat = match self.issues[n].steps[s].owner {
                        Owner::One(seat) => seat,
                        Owner::Both => self.rng.seat(),
                    };
                    self.progress_step(seat, n, s, &mut out[ix(seat)]);
                }
            }
        }
        let weeks = counts.weeks.max(1) as f64;
        for n in 0..self.issues.len() {
            if self.issues[n].epoch >= self.epoch {
                continue;
            }
            if self.rng.chance(0.06) {
                let seat = self.rng.seat();
                self.advance_status(seat, n, &mut out[ix(seat)]);
            }
            if self.rng.chance(0.6 / weeks) {
                let seat = self.rng.seat();
                if self.issues[n].body_lock.is_none_or(|s| s == seat) {
                    self.issues[n].body_lock = Some(seat);
                    let mut add = format!(" Update: {}", self.rng.pick(SENTENCES));
                    if self.rng.chance(0.5) {
                        add.push(' ');
                        add.push_str(self.rng.word(SENTENCES));
                    }
                    self.type_into(seat, n, &add, &mut out[ix(seat)]);
                }
            }
            if self.rng.chance(0.4 / weeks) {
                let seat = self.rng.seat();
                let before = self.issues[n].tags.len();
                let tag = self.rng.pick(TAGS).to_string();
                if !self.issues[n].tags.contains(&tag) && before < 5 {
                    self.issues[n].tags.push(tag.clone());
                    let id = self.issues[n].id.clone();
                    out[ix(seat)].push(self.edit(seat, Op::Tag(id, tag)));
                }
            }
        }
        for _ in 0..counts.agreements {
            let seat = self.rng.seat();
            self.add_agreement(seat, &mut out[ix(seat)]);
        }
        for seat in [Seat::A, Seat::B] {
            if self.rng.chance(0.3) {
                self.agreement_work(seat, &mut out[ix(seat)]);
            }
        }
        for seat in [Seat::A, Seat::B] {
            if self.rng.chance(0.97) {
                self.checkin(seat, &mut out[ix(seat)]);
            }
        }
        self.week += 1;
        out
    }

    /// The next `n` everyday edits by `seat`, valid on its device as it is now
    /// (after earlier streams and meetings): mostly typing into issue bodies,
    /// with notes, steps, statuses and check-in entries between.
    pub fn take(&mut self, seat: Seat, n: usize) -> Vec<Edit> {
        let mut out = Vec::with_capacity(n + 256);
        while out.len() < n {
            match self.rng.below(100) {
                0 => self.raise_issue(seat, &mut out),
                1..=8 => self.type_update(seat, &mut out),
                9..=40 => self.note(seat, &mut out),
                41..=54 => self.add_step(seat, &mut out),
                55..=66 => {
                    let candidates: Vec<(usize, usize)> = self
                        .issues
                        .iter()
                        .enumerate()
                        .flat_map(|(i, iss)| (0..iss.steps.len()).map(move |s| (i, s)))
                        .filter(|&(i, s)| {
                            let st = &self.issues[i].steps[s];
                            !st.done && st.owner.includes(seat) && self.visible(st.creator, st.epoch, seat)
                        })
                        .collect();
                    if !candidates.is_empty() {
                        let (i, s) = *self.rng.pick(&candidates);
                        self.progress_step(seat, i, s, &mut out);
                    }
                }
                67..=74 => {
                    let vis = self.visible_issues(seat, true);
                    if !vis.is_empty() {
                        let i = *self.rng.pick(&vis);
                        self.advance_status(seat, i, &mut out);
                    }
                }
                75..=77 => self.tag(seat, &mut out),
                78..=80 => self.agreement_work(seat, &mut out),
                _ => {
                    let kind = self.rng.below(6);
                    self.checkin_entry(seat, kind, &mut out);
                }
            }
            // A burst (typing) may run past `n`: keep `n` edits, and make the
            // model hold the body as the last kept keystroke left it.
            if out.len() > n {
                out.truncate(n);
                match out.last() {
                    Some(Edit {
                        op: Op::TypeBody(_, i, body),
                        ..
                    }) => {
                        let (i, body) = (*i, body.clone());
                        self.issues[i].body = body;
                    }
                    Some(Edit {
                        op: Op::AddIssue(id, _),
                        ..
                    }) => {
                        let id = id.clone();
                        if let Some(issue) = self.issues.iter_mut().rev().find(|x| x.id == id) {
                            issue.body.clear();
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// How many items fall in one week of a history.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeekCounts {
    /// Weeks in the whole history (spreads rare edits evenly).
    pub weeks: usize,
    /// Issues raised this week.
    pub issues: usize,
    /// Notes written this week.
    pub notes: usize,
    /// Steps added this week.
    pub steps: usize,
    /// Agreements proposed this week.
    pub agreements: usize,
}

/// Spreads a history's items over its weeks (issues from the first week;
/// notes and steps once there is an issue to attach them to).
pub fn plan(shape: &Shape, rng: &mut Rng) -> Vec<WeekCounts> {
    let w = shape.weeks.max(2);
    let mut weeks = vec![
        WeekCounts {
            weeks: w,
            ..Default::default()
        };
        w
    ];
    weeks[0].issues = 1;
    for _ in 1..shape.issues {
        weeks[rng.below(w as u64) as usize].issues += 1;
    }
    for _ in 0..shape.notes {
        weeks[1 + rng.below(w as u64 - 1) as usize].notes += 1;
    }
    for _ in 0..shape.steps {
        weeks[1 + rng.below(w as u64 - 1) as usize].steps += 1;
    }
    for _ in 0..shape.agreements {
        weeks[rng.below(w as u64) as usize].agreements += 1;
    }
    weeks
}

const TOPICS: &[&str] = &[
    "Phones at dinner",
    "Who does the dishes",
    "Money and savings",
    "Visiting my parents",
    "Weekend plans",
    "Screen time in bed",
    "Bedtime routine",
    "Chores rota",
    "Holiday budget",
    "Friends coming over unannounced",
    "Being late",
    "Tone in arguments",
    "Time alone",
    "Work stress coming home",
    "Sharing the car",
    "Moving flats",
    "Getting a dog",
    "Cooking on weeknights",
    "Laundry piling up",
    "Feeling close",
    "Christmas with which family",
    "Posting about us online",
    "Tidiness in the living room",
    "Birthdays and gifts",
    "Texting during the day",
    "Exercising together",
    "Spending on hobbies",
    "Kids someday",
    "Your brother's visits",
    "Drinking at parties",
];

const TITLE_SUFFIXES: &[&str] = &[
    " again",
    " (round two)",
    " on weekdays",
    " in December",
    " when we're tired",
    " after the move",
];

const FEEL: &[&str] = &[
    "hurt",
    "ignored",
    "anxious",
    "frustrated",
    "lonely",
    "overwhelmed",
    "unappreciated",
    "worried",
    "tense",
    "sad",
    "on edge",
    "taken for granted",
];

const WHEN: &[&str] = &[
    "you check your phone while I'm talking",
    "plans change at the last minute",
    "the sink is full when I get home",
    "we don't talk about money until it's a problem",
    "we spend every weekend with friends",
    "I do the laundry on my own",
    "you come home late without a message",
    "we argue in front of other people",
    "the bills are paid late",
    "we go to bed at different times",
    "your mother calls during dinner",
    "I find out about plans from someone else",
];

const NEED: &[&str] = &[
    "a bit more warning",
    "us to plan the week together on Sunday",
    "to hear that you noticed",
    "an hour to myself after work",
    "us to split the chores fairly",
    "a quiet dinner without screens twice a week",
    "to talk before we decide",
    "a hug when I get in",
    "us to keep a little money aside every month",
    "a message if you'll be late",
];

const SENTENCES: &[&str] = &[
    "It has come up a few times this month.",
    "I know you are busy at work right now.",
    "Last Tuesday was a good example.",
    "I don't think either of us means it.",
    "Maybe we can try something small first.",
    "It matters more to me than I let on.",
    "When we talked about it on the walk it felt easier.",
    "I'd like us to try for two weeks and see.",
    "I noticed I get short with you when I'm tired.",
    "We agreed on something similar last year.",
    "This isn't about blame, I just want it to be easier.",
    "Your idea about the calendar could work.",
];

const NOTES: &[&str] = &[
    "Talked about it on Sunday, went better than last time.",
    "Tried the rota this week: two of three days done.",
    "Still feels raw, let's come back to it.",
    "We both got defensive; took a break and it helped.",
    "Good week on this one.",
    "Forgot twice, will set a reminder.",
    "Your mum asked about it, I said we're working on it.",
    "I think we're close to agreeing.",
    "Can we move this to next week's check-in?",
    "Looked at the numbers together, less scary than I thought.",
    "Thank you for bringing it up gently.",
    "This came up again at the party.",
];

const STEPS: &[&str] = &[
    "Wash up on Monday, Wednesday and Friday",
    "Put phones in the drawer at dinner",
    "Plan the weekend together on Thursday",
    "Text if I'll be more than 20 minutes late",
    "Check the joint account every Sunday",
    "Call my parents to set a date",
    "Take a walk together after dinner",
    "Ask before inviting friends over",
    "Book a date night this month",
    "Go to bed at the same time on weeknights",
    "Say when I need an hour alone",
    "Empty the laundry basket on Saturday",
];

const APPRECIATIONS: &[&str] = &[
    "You made coffee every morning.",
    "Thanks for picking me up in the rain.",
    "You listened when I was upset on Wednesday.",
    "You cooked when I was late.",
    "You remembered my meeting and asked how it went.",
    "Thank you for calling my dad.",
    "You were patient with me this week.",
    "The note in my bag made my day.",
];

const WENT_WELL: &[&str] = &[
    "The Sunday walk",
    "No arguments about money",
    "Dinner with your parents was relaxed",
    "We stuck to phones-away at dinner",
    "We planned the week together",
    "We laughed a lot",
];

const REQUESTS: &[&str] = &[
    "Can we have one evening without plans?",
    "Hold my hand when we walk.",
    "Ask me about my day before the news.",
    "Leave me a note now and then.",
    "Let's cook together on Saturday.",
    "Tell me when something bothers you, early.",
];

const AGREEMENTS: &[&str] = &[
    "No big decisions after 10 pm.",
    "Take a 20-minute break when either of us is flooded, then come back.",
    "We each keep some money of our own, no questions asked.",
    "Phones away at dinner.",
    "Sunday evening is for the check-in.",
    "We ask before inviting people to stay.",
    "No name-calling, ever.",
    "One evening a week is just for us.",
];

const TAGS: &[&str] = &[
    "chores", "money", "family", "time", "phones", "health", "work", "home", "friends", "plans",
];

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::{DeviceSecret, Founder, space};

    fn founded(secret: &DeviceSecret) -> Automerge {
        let mut doc = Automerge::new().with_actor(secret.device_id().actor());
        let founder = Founder {
            space_id: "5eed".into(),
            name: "Sam".into(),
            device: secret.device_id(),
            device_name: "laptop".into(),
        };
        assert!(space::create(&mut doc, &founder, 0).is_ok());
        doc
    }

    #[test]
    fn a_year_applies_on_both_devices_and_merges() -> Result<(), Box<dyn std::error::Error>> {
        let (sa, sb) = (
            DeviceSecret::from_bytes(&[1; 32]),
            DeviceSecret::from_bytes(&[2; 32]),
        );
        let mut a = founded(&sa);
        Editor::new(&mut a, Seat::A, 0).add_device(sb.device_id(), Seat::B, "phone")?;
        let mut b = Automerge::new().with_actor(sb.device_id().actor());
        b.merge(&mut a.clone())?;
        let shape = Shape::years(1);
        let mut model = Model::new(7, shape.weeks);
        let weeks = plan(&shape, model.rng());
        for counts in weeks.into_iter().take(12) {
            let [ea, eb] = model.week(counts);
            apply_all(&mut a, &ea)?;
            apply_all(&mut b, &eb)?;
            a.merge(&mut b.clone())?;
            b.merge(&mut a.clone())?;
            model.sync();
        }
        let more_a = model.take(Seat::A, 300);
        let more_b = model.take(Seat::B, 300);
        assert_eq!((more_a.len(), more_b.len()), (300, 300));
        apply_all(&mut a, &more_a)?;
        apply_all(&mut b, &more_b)?;
        a.merge(&mut b.clone())?;
        model.sync();
        let again = model.take(Seat::B, 50);
        apply_all(&mut a, &again)?;
        Ok(())
    }
}
