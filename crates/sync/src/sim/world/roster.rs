//! The couple's devices changing during a run: a device joins (a device of
//! its seat adds it, or the founder pairs the partner's first device, then the
//! new device takes its first sync from an empty store), and a device revokes
//! another (a lost phone; sometimes two devices revoke each other at once,
//! neither knowing of the other's revocation).
//!
//! The world keeps what it expects of these: every device a revocation named
//! is out at the end, every device nobody revoked (nor added through a revoked
//! device) is in. It never lets the couple drop below two such devices, so
//! that there is a couple left to check.

use std::collections::BTreeSet;

use duet_model::DeviceId;

use super::{Ending, Ev, World};

/// How long after its join a device may still be waiting for an adder that
/// is up, in virtual milliseconds, before it tries again.
const JOIN_RETRY_MS: u64 = 2_000;

impl World<'_> {
    /// The founding device every device pinned.
    pub(super) fn founder(&self) -> DeviceId {
        self.devices[0].id
    }

    /// True if device `d` is part of the couple and stays so whatever the
    /// revocations in `targets` do: joined, never named by a revocation, and
    /// added (if it was) by such a device.
    pub(super) fn is_safe(&self, d: usize, targets: &BTreeSet<usize>) -> bool {
        let mut at = Some(d);
        let mut hops = 0;
        while let Some(x) = at {
            let Some(dev) = self.devices.get(x) else {
                return false;
            };
            if !dev.joined || targets.contains(&x) || hops > self.devices.len() {
                return false;
            }
            at = dev.added_by;
            hops += 1;
        }
        true
    }

    pub(super) fn safe_count(&self, targets: &BTreeSet<usize>) -> usize {
        (0..self.devices.len())
            .filter(|&d| self.is_safe(d, targets))
            .count()
    }

    /// True if device `a` would sync with device `b`: `a` lists `b` as an
    /// active member, or `a` has no record yet and `b` is the device that
    /// added it (the host it paired with).
    pub(super) fn takes(&self, a: usize, b: usize) -> bool {
        let (da, db) = (&self.devices[a], &self.devices[b]);
        if !da.joined || !db.joined || a == b {
            return false;
        }
        if !da.has_record() {
            return da.added_by == Some(b);
        }
        da.membership(self.founder()).is_active(&db.id)
    }

    /// Device `j` joins: a device of its seat that is up adds it (or, for a
    /// seat nobody holds yet, a device of the other seat, as the host of a
    /// pairing), then the new device dials it for its first sync.
    pub(super) fn join(&mut self, j: usize) {
        if self.calm || self.devices[j].joined {
            return;
        }
        let founder = self.founder();
        let seat = self.devices[j].seat;
        let adders: Vec<usize> = self
            .up_devices()
            .into_iter()
            .filter(|&a| self.is_safe(a, &self.targets))
            .filter(|&a| {
                let dev = &self.devices[a];
                dev.seat == seat || !dev.membership(founder).seat_is_held(seat)
            })
            .collect();
        let Some(&adder) = self.rng.pick(&adders) else {
            let later = self.now + JOIN_RETRY_MS;
            if later < self.config.chaos_ms {
                self.schedule(later, Ev::Join(j));
            } else {
                self.report.joins_missed += 1;
            }
            return;
        };
        let (id, name, now) = (self.devices[j].id, self.devices[j].name(), self.now);
        if let Err(e) = self.devices[adder].add(id, seat, name, now) {
            self.problem(e);
            return;
        }
        self.devices[j].joined = true;
        self.devices[j].added_by = Some(adder);
        self.last_conn.resize(self.devices.len(), None);
        self.report.joins += 1;
        self.trace(|| format!("device {adder} adds device {j}, which joins"));
        self.on_change(adder);
        self.dial(j, adder);
    }

    /// A device revokes another it lists as active; sometimes that device,
    /// not knowing, revokes the first at the same moment.
    pub(super) fn revoke(&mut self) {
        if self.calm {
            return;
        }
        let founder = self.founder();
        let revokers: Vec<usize> = self
            .up_devices()
            .into_iter()
            .filter(|&r| self.is_safe(r, &self.targets))
            .collect();
        let Some(&r) = self.rng.pick(&revokers) else {
            return;
        };
        let view = self.devices[r].membership(founder);
        let targets: Vec<usize> = (0..self.devices.len())
            .filter(|&t| t != r && self.devices[t].joined && view.is_active(&self.devices[t].id))
            .collect();
        let Some(&t) = self.rng.pick(&targets) else { return };
        let mut after = self.targets.clone();
        after.insert(t);
        if self.safe_count(&after) < 2 {
            return;
        }
        let tdev = &self.devices[t];
        let mutual = self.rng.chance(self.config.mutual)
            && tdev.up
            && tdev.has_record()
            && tdev.membership(founder).is_active(&self.devices[r].id)
            && {
                let mut both = after.clone();
                both.insert(r);
                self.safe_count(&both) >= 2
            };
        let now = self.now;
        let mut pairs = vec![(r, t)];
        if mutual {
            pairs.push((t, r));
            self.report.mutual_revocations += 1;
        }
        for (by, of) in pairs {
            let id = self.devices[of].id;
            if let Err(e) = self.devices[by].revoke(id, now) {
                self.problem(e);
                return;
            }
            self.targets.insert(of);
            self.revokers.entry(of).or_default().insert(by);
            self.report.revocations += 1;
            self.trace(|| format!("device {by} revokes device {of}"));
            // The revoking device drops its sessions with the revoked one.
            let open: Vec<(u64, usize)> = self
                .conns
                .iter()
                .filter_map(|(cid, c)| {
                    let side = (0..2).find(|&s| c.ends[s].device == by)?;
                    (c.ends[1 - side].device == of).then_some((*cid, side))
                })
                .collect();
            for (cid, side) in open {
                self.end_side(cid, side, Ending::Dropped);
                self.end_side(cid, 1 - side, Ending::PeerGone);
            }
        }
        self.on_change(r);
        if mutual {
            self.on_change(t);
        }
    }
}
