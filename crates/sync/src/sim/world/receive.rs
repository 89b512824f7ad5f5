//! A frame reaching a device: applied inside a store write that is kept
//! only if the session accepts it; a refusal sorted into right, known bug,
//! or a new bug; what a change in a document lets every open session send.

use super::*;

impl World<'_> {
    /// Feeds one frame to end `side`'s session, inside a store write.
    pub(super) fn receive(&mut self, cid: u64, side: usize, frame: &Frame, tag: Tag) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let (d, peer) = (conn.ends[side].device, conn.ends[1 - side].device);
        let Some(session) = conn.ends[side].session.as_mut() else {
            return;
        };
        let (founder, peer_id) = (self.devices[0].id, self.devices[peer].id);
        let dev = &mut self.devices[d];
        let mut working = dev.doc.clone();
        match session.handle(frame, &mut working, now) {
            Ok(events) => {
                let before = dev.doc.get_heads();
                let changed = working.get_heads() != before;
                dev.doc = working;
                let mut applied = Vec::new();
                let mut late_from_revoked = false;
                for e in events {
                    if let SessionEvent::Applied {
                        changes,
                        attestations,
                        document,
                        applied: taken,
                    } = e
                    {
                        self.report.first_syncs += u64::from(document.is_some());
                        // A device never takes, from a device it knows is
                        // revoked, a change that device made after its
                        // cut-off.
                        let pid = peer_id;
                        let own_late = taken.iter().any(|c| {
                            pid.is_actor(c.actor_id())
                                && Membership::pinned(&dev.doc, founder)
                                    .check_change(c.actor_id(), c.seq())
                                    .is_err()
                        });
                        if own_late {
                            late_from_revoked = true;
                        }
                        dev.keep(&attestations);
                        self.report.changes_applied += changes as u64;
                        applied.push((changes, attestations));
                    }
                }
                if late_from_revoked {
                    self.problem(format!(
                        "device {d} took from device {peer} a change it made after its revocation"
                    ));
                }
                let dev = &mut self.devices[d];
                if changed && dev.note_unvouched(&before) {
                    self.report.unvouched_writes += 1;
                    self.trace(|| {
                        format!("conn {cid}: device {d} now holds a change no stored attestation vouches for")
                    });
                }
                if self.config.trace {
                    for (changes, atts) in applied {
                        let doc = &self.devices[d].doc;
                        let atts: Vec<String> = atts
                            .iter()
                            .map(|a| {
                                let seq = doc.get_change_meta_by_hash(&a.hash).map_or(0, |c| c.seq);
                                format!("{}@{seq}", a.device.short())
                            })
                            .collect();
                        self.trace(|| {
                            format!("conn {cid}: device {d} applies {changes} changes, keeps {atts:?}")
                        });
                    }
                }
                if changed {
                    self.on_change(d);
                } else {
                    self.generate(cid, side);
                    self.maybe_close(cid);
                }
            }
            Err(e) => {
                self.trace(|| format!("conn {cid}: device {d} ends the session: {e}"));
                if self.config.trace {
                    let lines = bugs::explain(&self.devices[d].doc, &working, frame);
                    self.report.trace.extend(lines);
                }
                let released = self.conns.get(&cid).is_some_and(|c| {
                    bugs::released_refusal(&e, &self.devices[d].doc, &working, &c.ends[side].received)
                });
                let unvouched = match &e {
                    SyncError::Refused(VerifyError::Unsigned(who)) => {
                        tag.unvouched || self.devices[peer].has_unvouched(who)
                    }
                    _ => false,
                };
                let poisoned = self.conns.get(&cid).is_some_and(|c| c.ends[side].poisoned);
                let unsigned = matches!(e, SyncError::Refused(VerifyError::Unsigned(_)));
                let gap = self
                    .conns
                    .get(&cid)
                    .is_some_and(|c| bugs::gap_refusal(&e, &working, &c.ends[side].received));
                let outsider = self.refuses_outsider(d, peer, &e, &working);
                let known = if tag.injected || outsider {
                    None
                } else if released {
                    Some(KNOWN_RELEASED)
                } else if gap {
                    Some(KNOWN_GAP)
                } else if unvouched {
                    Some(KNOWN_UNVOUCHED)
                } else if unsigned && tag.orphans {
                    Some(KNOWN_ORPHANS)
                } else if poisoned && unsigned {
                    Some(KNOWN_POISONED)
                } else if frame.kind == wire::BYE && matches!(e, SyncError::Protocol(_)) {
                    // The simulator's dialler says Bye only once it holds the
                    // heads the other side last told it: a refusal here is the
                    // race, never an early goodbye.
                    Some(KNOWN_EARLY_BYE)
                } else {
                    None
                };
                if outsider {
                    // The peer is not (or no longer) an active member as this
                    // device's record shows: refusing it is right.
                    self.report.outsiders_refused += 1;
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.outsider = true;
                    }
                    self.trace(|| {
                        format!(
                            "  (device {peer} is not an active member for device {d}: refusing it is right)"
                        )
                    });
                } else if tag.injected {
                    // A duplicated or replayed message refused: the expected
                    // outcome (nothing of it was applied), not a bug.
                    self.report.injected_refused += 1;
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.known_failure = true;
                    }
                    self.trace(|| "  (a duplicated or replayed message: refusing it is right)".into());
                } else if let Some(bug) = known {
                    *self.report.known_refusals.entry(bug).or_default() += 1;
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.known_failure = true;
                    }
                    self.trace(|| format!("  (known bug: {bug})"));
                    if self.config.strict {
                        self.problem(format!(
                            "device {d} refused a frame from device {peer}: {e} (known bug: {bug})"
                        ));
                    }
                } else if !matches!(e, SyncError::PeerFailed(_)) {
                    self.problem(format!("device {d} refused a frame from device {peer}: {e}"));
                }
                // The store's write rolled back and its in-memory document was
                // dropped: reload what was stored.
                if let Err(p) = self.devices[d].reload() {
                    self.problem(p);
                }
                self.flush(cid, side);
                self.end_side(cid, side, Ending::Failed(e.to_string()));
            }
        }
    }

    /// True when device `d` refused `peer` because its record shows the
    /// peer, or the author of a change the peer delivered itself, is not an
    /// active member: a revoked device, or a new one this device has not
    /// heard of yet. Its record is the one stored or the one with the refused
    /// message applied (`working`), which may bring the revocation along with
    /// the revoked device's later changes. That refusal is right; any other
    /// is not.
    pub(super) fn refuses_outsider(
        &self,
        d: usize,
        peer: usize,
        e: &SyncError,
        working: &automerge::Automerge,
    ) -> bool {
        let stranger = matches!(
            e,
            SyncError::NotAMember(_)
                | SyncError::Refused(VerifyError::Refused(
                    ChangeRefusal::Revoked(_) | ChangeRefusal::NotAMember(_)
                ))
        );
        let (founder, id) = (self.founder(), self.devices[peer].id);
        stranger
            && (!self.devices[d].membership(founder).is_active(&id)
                || !Membership::pinned(working, founder).is_active(&id))
    }

    /// Lets end `side`'s session queue its next message, and sends it.
    pub(super) fn generate(&mut self, cid: u64, side: usize) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let d = conn.ends[side].device;
        if let Some(session) = conn.ends[side].session.as_mut() {
            let dev = &self.devices[d];
            session.generate(&dev.doc, &dev.attestations());
        }
        self.flush(cid, side);
    }

    /// Device `d`'s document changed: every open session of it may send.
    pub(super) fn on_change(&mut self, d: usize) {
        let ends: Vec<(u64, usize)> = self
            .conns
            .iter()
            .flat_map(|(id, c)| {
                (0..2)
                    .filter(move |&s| c.ends[s].device == d && c.ends[s].session.is_some())
                    .map(move |s| (*id, s))
            })
            .collect();
        for (cid, side) in ends {
            self.generate(cid, side);
            self.maybe_close(cid);
        }
    }
}
