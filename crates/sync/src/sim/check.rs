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
    /// one line per problem.
    pub(crate) fn lost(&self, ledger: &Ledger) -> Vec<String> {
        let mut problems = Vec::new();
        let issue = |id: &duet_model::ItemId| self.issues.iter().find(|i| i.id == *id);
        for id in &ledger.issues {
            if issue(id).is_none() {
                problems.push(format!("issue {id} is missing"));
            }
        }
        for (id, text, seat) in &ledger.notes {
            let n = issue(id).map_or(0, |i| {
                i.notes
                    .iter()
                    .filter(|x| x.text == *text && x.author.seat == Some(*seat))
                    .count()
            });
            if n != 1 {
                problems.push(format!("note {text:?} on issue {id} shows {n} times"));
            }
        }
        let step = |i: &duet_model::ItemId, s: &duet_model::ItemId| {
            issue(i).and_then(|x| x.steps.iter().find(|st| st.id == *s))
        };
        for (i, s) in &ledger.steps {
            if step(i, s).is_none() {
                problems.push(format!("step {s} of issue {i} is missing"));
            }
        }
        for (i, s, seat) in &ledger.accepted_steps {
            if !step(i, s).is_some_and(|st| st.accepted_by.contains(seat)) {
                problems.push(format!("step {s}: the acceptance by {seat} is missing"));
            }
        }
        for (i, s) in &ledger.done_steps {
            if !step(i, s).is_some_and(|st| st.done && st.outcome.is_some()) {
                problems.push(format!("step {s} is not shown done"));
            }
        }
        for (i, tag) in &ledger.tags {
            if !issue(i).is_some_and(|x| x.tags.iter().any(|t| t == tag)) {
                problems.push(format!("tag {tag} of issue {i} is missing"));
            }
        }
        let mut want_weeks: Vec<Week> = ledger
            .weeks
            .iter()
            .filter_map(|&w| WEEKS[w].parse().ok())
            .collect();
        want_weeks.sort_by(|a, b| b.cmp(a));
        if self.weeks != want_weeks {
            problems.push(format!(
                "the weeks with a check-in are {:?}, not {want_weeks:?}",
                self.weeks
            ));
        }
        for (w, seat, list, text) in &ledger.lists {
            let n = self.part(*w, *seat).map_or(0, |p| {
                let items = if *list == "appreciations" {
                    &p.appreciations
                } else {
                    &p.went_well
                };
                items.iter().filter(|t| *t == text).count()
            });
            if n != 1 {
                problems.push(format!(
                    "{list} {text:?} of {seat} in {} shows {n} times",
                    WEEKS[*w]
                ));
            }
        }
        for (w, seat, id) in &ledger.agenda {
            let n = self
                .part(*w, *seat)
                .map_or(0, |p| p.agenda.iter().filter(|a| a.issue_id == *id).count());
            if n != 1 {
                problems.push(format!(
                    "agenda item {id} of {seat} in {} shows {n} times",
                    WEEKS[*w]
                ));
            }
        }
        for (w, week) in WEEKS.iter().enumerate() {
            for seat in Seat::ALL {
                let want = ledger.minutes.get(&(w, *seat)).copied().unwrap_or(0);
                let got: u32 = self
                    .part(w, *seat)
                    .map_or(0, |p| p.time.iter().map(|t| t.minutes).sum());
                if got != want {
                    problems.push(format!(
                        "{seat} logged {want} minutes in {week}, the record shows {got}"
                    ));
                }
            }
        }
        for id in &ledger.agreements {
            if !self.agreements.iter().any(|a| a.id == *id) {
                problems.push(format!("agreement {id} is missing"));
            }
        }
        problems
    }
}
