//! The connections: dialling, frames on their streams through the faults,
//! sessions ending, timeouts, partitions and crashes.

use super::*;

impl World<'_> {
    // ----- connections -----

    pub(super) fn dial_random(&mut self, from: usize) {
        if !self.devices[from].up || !self.devices[from].joined {
            return;
        }
        // A device dials the members its record lists (a new device, its host).
        let peers: Vec<usize> = (0..self.devices.len()).filter(|&p| self.takes(from, p)).collect();
        let Some(&to) = self.rng.pick(&peers) else { return };
        let to_dev = &self.devices[to];
        if !to_dev.up || to_dev.group != self.devices[from].group {
            self.report.faults.failed_dials += 1;
            self.trace(|| format!("dial {from}->{to} fails (partition or down)"));
            return;
        }
        let same = self
            .conns
            .values()
            .any(|c| c.ends[0].device == from && c.ends[1].device == to);
        if same {
            return;
        }
        let crossed = self
            .conns
            .values()
            .any(|c| c.ends[0].device == to && c.ends[1].device == from);
        if crossed {
            if !self.rng.chance(self.config.faults.crossed) {
                return;
            }
            self.report.faults.crossed_dials += 1;
        }
        self.dial(from, to);
    }

    /// Opens a connection from `from` to `to`: a session on each side, each
    /// resuming the sync state its store saved for the other.
    pub(super) fn dial(&mut self, from: usize, to: usize) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        let now = self.now;
        // Device 0 founded the space; every device pinned it. A device with
        // no record yet joins: it learns the founder from what it receives.
        let founder = self.founder();
        let session = |me: &Device, peer: &Device| {
            if !me.has_record() {
                return Session::joining(peer.id, SPACE_ID, now);
            }
            let saved = me.sync_states.get(&peer.index).map(Vec::as_slice);
            Session::new(peer.id, SPACE_ID, founder, saved, now)
        };
        let a = session(&self.devices[from], &self.devices[to]);
        let b = session(&self.devices[to], &self.devices[from]);
        let poisoned = [
            self.devices[from].state_names_unknown(to),
            self.devices[to].state_names_unknown(from),
        ];
        let latency = self.rng.range(1, self.config.latency_ms.max(1));
        self.conns.insert(
            id,
            Conn {
                ends: [End::new(from, a), End::new(to, b)],
                latency,
                known_failure: false,
                outsider: false,
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.ends[0].poisoned = poisoned[0];
            c.ends[1].poisoned = poisoned[1];
        }
        self.report.sessions += 2;
        self.trace(|| format!("conn {id}: {from} dials {to} (latency {latency} ms)"));
        self.flush(id, 0);
        self.flush(id, 1);
        id
    }

    /// Sends what end `side`'s session queued, through the faults.
    pub(super) fn flush(&mut self, cid: u64, side: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&cid) else {
                return;
            };
            let (from, to) = (conn.ends[side].device, conn.ends[1 - side].device);
            let Some(bytes) = conn.ends[side].session.as_mut().and_then(Session::poll_transmit) else {
                return;
            };
            conn.ends[side].sent += 1;
            let first = conn.ends[side].sent == 1;
            let is_sync = bytes.get(frame::HEADER) == Some(&wire::SYNC);
            // An old sync message slipped in ahead of this frame (never ahead
            // of Hello, which must come first).
            if !self.calm && !first && self.rng.chance(self.config.faults.replay) {
                let old = self.archive.get(&(from, to)).and_then(|a| {
                    let i = self.rng.index(a.len());
                    a.get(i).cloned()
                });
                if let Some((old_conn, old, tag)) = old {
                    self.report.faults.replayed += 1;
                    self.trace(|| format!("conn {cid}: replays a message {from}->{to} of conn {old_conn}"));
                    let tag = Tag {
                        injected: true,
                        ..tag
                    };
                    self.send(cid, 1 - side, old, tag);
                }
            }
            let sender = &self.devices[from];
            let tag = Tag {
                unvouched: sender.has_any_unvouched(),
                orphans: is_sync && bugs::carries_orphans(&bytes, &sender.doc),
                injected: false,
            };
            if tag.orphans {
                self.report.orphan_messages += 1;
                self.trace(|| format!("conn {cid}: device {from} sends changes it holds back"));
            }
            if is_sync {
                let a = self.archive.entry((from, to)).or_default();
                if a.len() >= ARCHIVE {
                    let i = self.rng.index(a.len());
                    a.remove(i);
                }
                a.push_back((cid, bytes.clone(), tag));
            }
            let duplicate = is_sync && !self.calm && self.rng.chance(self.config.faults.duplicate);
            if duplicate {
                self.report.faults.duplicated += 1;
                self.trace(|| format!("conn {cid}: duplicates a message {from}->{to}"));
                let copy = Tag {
                    injected: true,
                    ..tag
                };
                self.send(cid, 1 - side, bytes.clone(), copy);
            }
            self.send(cid, 1 - side, bytes, tag);
        }
    }

    /// Puts `bytes` on the stream towards end `to`.
    pub(super) fn send(&mut self, cid: u64, to: usize, bytes: Vec<u8>, tag: Tag) {
        let jitter = self.rng.range(0, 10);
        let held = if !self.calm && self.rng.chance(self.config.faults.delay) {
            self.rng.range(1, self.config.faults.max_delay_ms.max(1))
        } else {
            0
        };
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let latency = conn.latency;
        let end = &mut conn.ends[to];
        if end.stalled || end.session.is_none() {
            self.report.faults.lost_frames += u64::from(end.stalled);
            return;
        }
        if held > 0 {
            self.report.faults.delayed += 1;
        }
        let at = (now + latency + jitter + held).max(end.last_at);
        end.last_at = at;
        end.inbox.push_back(InFlight { at, bytes, tag });
        self.schedule(at, Ev::Deliver { conn: cid, to });
    }

    pub(super) fn deliver(&mut self, cid: u64, to: usize) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let end = &mut conn.ends[to];
        if end.session.is_none() {
            return;
        }
        let Some(front) = end.inbox.front() else { return };
        if front.at > now {
            return;
        }
        let Some(f) = end.inbox.pop_front() else { return };
        let d = end.device;
        end.decoder.push(&f.bytes);
        let mut frames = Vec::new();
        let mut bad = None;
        loop {
            match end.decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if let Some(last) = self.last_conn[d]
            && last != cid
            && self.conns.contains_key(&last)
        {
            self.report.faults.interleaved += 1;
        }
        self.last_conn[d] = Some(cid);
        self.report.bytes += f.bytes.len() as u64;
        self.digest.add(&cid.to_le_bytes());
        self.digest.add(&f.bytes);
        for frame in frames {
            self.report.frames += 1;
            if frame.kind == wire::SYNC {
                self.report.messages += 1;
            }
            self.trace(|| {
                format!(
                    "conn {cid}: frame {:#04x} ({} B) reaches device {d}",
                    frame.kind,
                    frame.payload.len()
                )
            });
            if frame.kind == wire::SYNC
                && let Some(end) = self.conns.get_mut(&cid).map(|c| &mut c.ends[to])
            {
                end.received.push(frame.clone());
            }
            self.receive(cid, to, &frame, f.tag);
        }
        if let Some(e) = bad {
            let failed = self
                .conns
                .get_mut(&cid)
                .and_then(|c| c.ends[to].session.as_mut())
                .map(|s| s.fail(SyncError::Wire(e.into())));
            if let Some(err) = failed {
                self.problem(format!("device {d} could not read a frame: {err}"));
                self.flush(cid, to);
                self.end_side(cid, to, Ending::Failed(err.to_string()));
            }
        }
        self.check_conn(cid);
        if !self.calm && self.conns.contains_key(&cid) {
            if self.rng.chance(self.config.faults.cut) {
                self.report.faults.cut += 1;
                self.trace(|| format!("conn {cid} is cut"));
                self.end_side(cid, 0, Ending::Cut);
                self.end_side(cid, 1, Ending::Cut);
            } else if self.rng.chance(self.config.faults.stall) {
                let side = self.rng.index(2);
                self.report.faults.stalled += 1;
                self.trace(|| format!("conn {cid}: the stream to end {side} stalls"));
                self.stall(cid, side);
            }
        }
    }

    /// Frames to end `side` of `cid` are lost from now on.
    pub(super) fn stall(&mut self, cid: u64, side: usize) {
        if let Some(conn) = self.conns.get_mut(&cid) {
            let end = &mut conn.ends[side];
            end.stalled = true;
            self.report.faults.lost_frames += end.inbox.len() as u64;
            end.inbox.clear();
        }
    }

    /// The dialling end closes once both hold the same heads (one-shot sync).
    pub(super) fn maybe_close(&mut self, cid: u64) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let d = conn.ends[0].device;
        let Some(session) = conn.ends[0].session.as_mut() else {
            return;
        };
        if !session.is_closed() && session.is_synced(&self.devices[d].doc) {
            session.close();
            self.trace(|| format!("conn {cid}: device {d} is in sync and says bye"));
            self.flush(cid, 0);
        }
        self.check_conn(cid);
    }

    /// Ends the sides that are done: a closed session, or one whose peer is
    /// gone and whose stream holds nothing more.
    pub(super) fn check_conn(&mut self, cid: u64) {
        for side in 0..2 {
            let closed = self
                .conns
                .get(&cid)
                .and_then(|c| c.ends[side].session.as_ref())
                .is_some_and(Session::is_closed);
            if closed {
                self.end_side(cid, side, Ending::Closed);
            }
        }
        for side in 0..2 {
            let gone = self.conns.get(&cid).is_some_and(|c| {
                c.ends[side].session.is_some()
                    && c.ends[1 - side].session.is_none()
                    && c.ends[side].inbox.is_empty()
            });
            if gone {
                self.end_side(cid, side, Ending::PeerGone);
            }
        }
    }

    /// Ends one side of a connection, saving its sync state as the driver does
    /// (unless the device crashed).
    pub(super) fn end_side(&mut self, cid: u64, side: usize, how: Ending) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let (d, peer) = (conn.ends[side].device, conn.ends[1 - side].device);
        let Some(session) = conn.ends[side].session.take() else {
            return;
        };
        conn.ends[side].inbox.clear();
        let both_done = conn.ends.iter().all(|e| e.session.is_none());
        let known = conn.known_failure;
        let outsider = conn.outsider;
        // A new device pins the founder from the history it received.
        if session.is_joining()
            && let Some(f) = session.founder()
            && f != self.devices[0].id
        {
            self.problem(format!("device {d} joined a space founded by {}", f.short()));
        }
        if how != Ending::Crashed {
            self.devices[d].sync_states.insert(peer, session.saved_state());
            if self.devices[d].state_names_unknown(peer) {
                self.report.poisoned_saves += 1;
                self.trace(|| {
                    format!(
                        "conn {cid}: device {d} saved a sync state for {peer} naming changes it does not hold"
                    )
                });
            }
        }
        if both_done {
            self.conns.remove(&cid);
        }
        *self.report.session_ends.entry(how.label()).or_default() += 1;
        self.trace(|| {
            format!(
                "conn {cid}: device {d}'s session with {peer} ends: {}",
                how.label()
            )
        });
        if matches!(how, Ending::Failed(_)) {
            self.round_failures += 1;
        }
        if let Some(round) = self.healing
            && how != Ending::Closed
            && !outsider
            && (!known || self.config.strict)
        {
            let why = match &how {
                Ending::Failed(e) => format!("failed: {e}"),
                other => other.label().to_string(),
            };
            self.problem(format!(
                "heal round {round}: device {d}'s session with device {peer} did not end cleanly ({why})"
            ));
        }
    }

    pub(super) fn tick(&mut self) {
        let now = self.now;
        let mut expired = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            for (side, end) in c.ends.iter_mut().enumerate() {
                if let Some(s) = end.session.as_mut()
                    && s.handle_timeout(now).is_err()
                {
                    expired.push((*id, side));
                }
            }
        }
        for (cid, side) in expired {
            self.report.faults.timeouts += 1;
            self.end_side(cid, side, Ending::Timeout);
            self.check_conn(cid);
        }
    }

    // ----- partitions and crashes -----

    pub(super) fn partition(&mut self) {
        let n = self.devices.len();
        let mut groups: Vec<u8> = (0..n).map(|_| self.rng.below(2) as u8).collect();
        // Two non-empty groups.
        let lone = 1 + self.rng.index(n - 1);
        groups[0] = 0;
        groups[lone] = 1;
        for (d, g) in self.devices.iter_mut().zip(&groups) {
            d.group = *g;
        }
        self.report.faults.partitions += 1;
        self.trace(|| format!("partition: groups {groups:?}"));
        let crossing: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| groups[c.ends[0].device] != groups[c.ends[1].device])
            .map(|(id, _)| *id)
            .collect();
        for cid in crossing {
            self.report.faults.partition_breaks += 1;
            if self.rng.chance(0.5) {
                self.end_side(cid, 0, Ending::Cut);
                self.end_side(cid, 1, Ending::Cut);
            } else {
                self.stall(cid, 0);
                self.stall(cid, 1);
            }
        }
        let heal = self.now + self.rng.range(5_000, 30_000);
        self.schedule(heal, Ev::Heal);
    }

    pub(super) fn crash(&mut self) {
        let up = self.up_devices();
        // Prefer a device in the middle of a sync.
        let busy: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&d| {
                self.conns
                    .values()
                    .any(|c| c.ends.iter().any(|e| e.device == d && e.session.is_some()))
            })
            .collect();
        let pool = if busy.is_empty() { up } else { busy };
        let Some(&d) = self.rng.pick(&pool) else { return };
        self.report.faults.restarts += 1;
        self.trace(|| format!("device {d} crashes"));
        let conns: Vec<(u64, usize)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| (0..2).find(|&s| c.ends[s].device == d).map(|s| (*id, s)))
            .collect();
        for (cid, side) in conns {
            if self
                .conns
                .get(&cid)
                .is_some_and(|c| c.ends[side].session.is_some())
            {
                self.report.faults.crashed_sessions += 1;
            }
            self.end_side(cid, side, Ending::Crashed);
            self.end_side(cid, 1 - side, Ending::PeerGone);
        }
        self.devices[d].up = false;
        if let Err(p) = self.devices[d].reload() {
            self.problem(p);
        }
        let back = self.now + self.rng.range(0, 15_000);
        self.schedule(back, Ev::Restart(d));
    }
}
