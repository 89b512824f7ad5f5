//! The end-of-run checks: every device reads the same record, and the record
//! holds every edit any device made.

use automerge::Automerge;
use duet_model::checkins::{self, CheckIn, PartnerCheckIn};
use duet_model::{Agreement, Issue, IssueFilter, Member, Seat, Week, agreements, issues, space};

use super::device::{Ledger, WEEKS};

/// Everything the record shows: the reads an app would make.
pub(crate) struct Reads {
    issues: Vec<Issue>,
    checkins: Vec<CheckIn>,
    weeks: Vec<Week>,
    agreements: Vec<Agreement>,
    devices: Vec<Member>,
}

impl Reads {
    /// Reads `doc`.
    pub(crate) fn of(doc: &Automerge) -> Reads {
        Reads {
            issues: issues::issues(doc, IssueFilter::default()),
            checkins: WEEKS
                .iter()
                .filter_map(|w| w.parse::<Week>().ok())
                .map(|w| checkins::checkin(doc, w))
                .collect(),
            weeks: checkins::weeks(doc),
            agreements: agreements::agreements(doc),
            devices: space::devices(doc),
        }
    }

    /// The reads as JSON, for comparing devices.
    pub(crate) fn json(&self) -> Result<serde_json::Value, String> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| format!("a read does not serialise: {e}"))
        };
        Ok(serde_json::json!({
            "issues": json(serde_json::to_value(&self.issues))?,
            "checkins": json(serde_json::to_value(&self.checkins))?,
            "weeks": json(serde_json::to_value(&self.weeks))?,
            "agreements": json(serde_json::to_value(&self.agreements))?,
            "devices": json(serde_json::to_value(&self.devices))?,
        }))
    }

    fn part(&self, w: usize, seat: Seat) -> Option<&PartnerCheckIn> {
        self.checkins
            .get(w)?
            .partners
            .iter()
            .find(|p| p.partner.seat == Some(seat))
    }

    /// What of `ledger` is missing from the record (or shown more than once),
    /// one line per problem with the number of the edit concerned (0 for
    /// none). `must(n)` says whether edit number `n` must be
    /// there: an edit a revoked device made after its cut-off may travel on
    /// (through a member that took it before it learned of the revocation) or
    /// not, but never shows twice.
    pub(crate) fn lost(&self, ledger: &Ledger, must: impl Fn(u64) -> bool) -> Vec<(u64, String)> {
        let mut problems = Vec::new();
        // How many times something shows, against how many it must.
        let mut count = |n: u64, shown: usize, what: &dyn Fn() -> String| {
            let ok = if must(n) { shown == 1 } else { shown <= 1 };
            if !ok {
                problems.push((n, format!("{} shows {shown} times", what())));
            }
        };
        let issue = |id: &duet_model::ItemId| self.issues.iter().find(|i| i.id == *id);
        for (n, id) in &ledger.issues {
            count(*n, usize::from(issue(id).is_some()), &|| format!("issue {id}"));
        }
        for (n, id, text, seat) in &ledger.notes {
            let shown = issue(id).map_or(0, |i| {
                i.notes
                    .iter()
                    .filter(|x| x.text == *text && x.author.seat == Some(*seat))
                    .count()
            });
            count(*n, shown, &|| format!("note {text:?} on issue {id}"));
        }
        let step = |i: &duet_model::ItemId, s: &duet_model::ItemId| {
            issue(i).and_then(|x| x.steps.iter().find(|st| st.id == *s))
        };
        for (n, i, s) in &ledger.steps {
            count(*n, usize::from(step(i, s).is_some()), &|| {
                format!("step {s} of issue {i}")
            });
        }
        for (n, i, s, seat) in &ledger.accepted_steps {
            let shown = step(i, s).is_some_and(|st| st.accepted_by.contains(seat));
            count(*n, usize::from(shown), &|| {
                format!("step {s}'s acceptance by {seat}")
            });
        }
        for (n, i, s) in &ledger.done_steps {
            let shown = step(i, s).is_some_and(|st| st.done && st.outcome.is_some());
            count(*n, usize::from(shown), &|| format!("step {s} done"));
        }
        for (n, i, tag) in &ledger.tags {
            let shown = issue(i).is_some_and(|x| x.tags.iter().any(|t| t == tag));
            count(*n, usize::from(shown), &|| format!("tag {tag} of issue {i}"));
        }
        for (n, w, seat, list, text) in &ledger.lists {
            let shown = self.part(*w, *seat).map_or(0, |p| {
                let items = if *list == "appreciations" {
                    &p.appreciations
                } else {
                    &p.went_well
                };
                items.iter().filter(|t| *t == text).count()
            });
            count(*n, shown, &|| {
                format!("{list} {text:?} of {seat} in {}", WEEKS[*w])
            });
        }
        for (n, w, seat, id) in &ledger.agenda {
            let shown = self
                .part(*w, *seat)
                .map_or(0, |p| p.agenda.iter().filter(|a| a.issue_id == *id).count());
            count(*n, shown, &|| {
                format!("agenda item {id} of {seat} in {}", WEEKS[*w])
            });
        }
        for (n, id) in &ledger.agreements {
            let shown = self.agreements.iter().filter(|a| a.id == *id).count();
            count(*n, shown, &|| format!("agreement {id}"));
        }
        // The weeks with a check-in: every week an edit that must survive
        // wrote, and only weeks some edit wrote.
        let weeks = |all: bool| -> Vec<Week> {
            let mut w: Vec<Week> = ledger
                .weeks
                .iter()
                .filter(|(n, _)| all || must(*n))
                .filter_map(|(_, w)| WEEKS[*w].parse().ok())
                .collect();
            w.sort_by(|a, b| b.cmp(a));
            w.dedup();
            w
        };
        let (need, may) = (weeks(false), weeks(true));
        if !need.iter().all(|w| self.weeks.contains(w)) || !self.weeks.iter().all(|w| may.contains(w)) {
            problems.push((
                0,
                format!(
                    "the weeks with a check-in are {:?}, not {need:?} (or some of {may:?})",
                    self.weeks
                ),
            ));
        }
        for (w, week) in WEEKS.iter().enumerate() {
            for seat in Seat::ALL {
                let logged = ledger
                    .minutes
                    .iter()
                    .filter(|(_, lw, ls, _)| *lw == w && ls == seat);
                let (least, most) = logged.fold((0, 0), |(lo, hi), (n, _, _, m)| {
                    (if must(*n) { lo + m } else { lo }, hi + m)
                });
                let got: u32 = self
                    .part(w, *seat)
                    .map_or(0, |p| p.time.iter().map(|t| t.minutes).sum());
                if got < least || got > most {
                    problems.push((
                        0,
                        format!("{seat} logged {least} to {most} minutes in {week}, the record shows {got}"),
                    ));
                }
            }
        }
        problems
    }
}
