//! The end of a run: the faults stop, heal rounds until nothing moves, and
//! the checks.

use std::collections::BTreeSet;

use super::{HEAL_ROUND_MS, World};
use crate::sim::check;

impl World<'_> {
    /// The faults stop: partitions heal and crashed devices come back.
    pub(super) fn calm_down(&mut self) {
        self.calm = true;
        self.trace(|| "the chaos ends: no more edits or faults".into());
        for d in &mut self.devices {
            d.group = 0;
            d.up = true;
        }
    }

    /// Rounds in which every pair of devices that take each other as members
    /// syncs, all at once, until a round moves nothing. (A device stops
    /// dialling a device it learned was revoked, and refuses it; the heal goes
    /// on until every device has learned what it will.)
    pub(super) fn heal(&mut self) {
        let n = self.devices.len();
        for round in 1..=self.config.max_heal_rounds {
            self.healing = Some(round);
            self.trace(|| format!("heal round {round}"));
            let before = self.report.changes_applied;
            self.round_failures = 0;
            let mut pairs: Vec<(usize, usize)> = (0..n)
                .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                .filter(|&(a, b)| self.takes(a, b) && self.takes(b, a))
                .collect();
            self.rng.shuffle(&mut pairs);
            for (a, b) in pairs {
                if self.rng.chance(0.5) {
                    self.dial(a, b);
                } else {
                    self.dial(b, a);
                }
            }
            if !self.run_until(self.now + HEAL_ROUND_MS, true) {
                self.problem(format!(
                    "heal round {round}: {} sessions still open after {} s",
                    self.conns.len(),
                    HEAL_ROUND_MS / 1000
                ));
                self.healing = None;
                return;
            }
            if self.report.changes_applied == before && self.round_failures == 0 {
                self.report.heal_rounds = round;
                self.healing = None;
                return;
            }
        }
        self.healing = None;
        self.problem(format!(
            "still moving changes after {} heal rounds",
            self.config.max_heal_rounds
        ));
    }

    /// The checks. The couple is the devices the record lists as active, as
    /// a device nobody revoked reads it; every one of them must hold the same
    /// heads and read the same record, holding every edit that must survive.
    /// A device revoked by a device still in the couple is out, and a device
    /// no revocation named (nor added through such a device) is in.
    pub(super) fn check(&mut self) {
        let Some(reference) = (0..self.devices.len()).find(|&d| self.is_safe(d, &self.targets)) else {
            self.problem("no device was left that nobody revoked".into());
            return;
        };
        let founder = self.founder();
        let members = self.devices[reference].membership(founder);
        let couple: BTreeSet<usize> = (0..self.devices.len())
            .filter(|&d| self.devices[d].joined && members.is_active(&self.devices[d].id))
            .collect();
        let mut problems = Vec::new();
        // A revocation by a device that stays in the couple reaches every
        // member. One by a device that was itself revoked at the same moment
        // travels only through members that took it before they heard of that
        // (its author's own delivery is refused): it may be lost.
        for &t in &self.targets {
            let by_member = self
                .revokers
                .get(&t)
                .is_some_and(|by| by.iter().any(|r| couple.contains(r)));
            if couple.contains(&t) && by_member {
                problems.push(format!("device {t} was revoked but is still listed as active"));
            }
        }
        for d in 0..self.devices.len() {
            if self.is_safe(d, &self.targets) && !couple.contains(&d) {
                problems.push(format!(
                    "device {d} was never revoked but is not listed as active"
                ));
            }
        }
        self.report.couple = couple.len();
        // An edit must survive when its author is in the couple, or when it
        // is one of a revoked author's changes up to its cut-off, which a
        // revoker still in the couple holds.
        let must = |n: u64| {
            let Some(&(author, seq)) = self.ledger.authors.get(&n) else {
                return true;
            };
            if couple.contains(&author) {
                return true;
            }
            let cut = members
                .get(&self.devices[author].id)
                .and_then(|m| m.revoked_after);
            let revoker_stays = self
                .revokers
                .get(&author)
                .is_some_and(|by| by.iter().any(|r| couple.contains(r)));
            cut.is_some_and(|cut| seq <= cut) && revoker_stays
        };
        let first = &self.devices[reference];
        let heads = first.heads();
        let first_reads = check::Reads::of(&first.doc);
        let reads = first_reads.json();
        for d in &couple {
            let dev = &self.devices[*d];
            if dev.heads() != heads {
                problems.push(format!(
                    "device {d} holds other heads than device {reference} ({} vs {} heads, {} vs {} changes)",
                    dev.heads().len(),
                    heads.len(),
                    dev.doc.get_changes_meta(&[]).len(),
                    first.doc.get_changes_meta(&[]).len()
                ));
            }
            let r = check::Reads::of(&dev.doc);
            let json = r.json();
            if json != reads {
                let show = |r: &Result<serde_json::Value, String>| match r {
                    Ok(v) => v.to_string(),
                    Err(e) => e.clone(),
                };
                problems.push(format!(
                    "device {d} reads another record than device {reference}:\n    {}\n    vs\n    {}",
                    show(&json),
                    show(&reads)
                ));
            }
            for (n, p) in r.lost(&self.ledger, must) {
                let by = match self.ledger.authors.get(&n) {
                    Some((author, seq)) => format!(" (edit {n}: device {author}'s change {seq})"),
                    None => format!(" (edit {n})"),
                };
                problems.push(format!("device {d}: {p}{by}"));
            }
        }
        for p in problems {
            self.problem(p);
        }
    }
}
