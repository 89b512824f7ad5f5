//! The simulated world: devices, connections between them, a discrete event
//! queue in virtual time, and the faults.
//!
//! Each connection has two ends; `ends[0]` dialled. An end holds its device's
//! session and the frames on their way to it, in stream order: a frame's
//! arrival time is never earlier than the previous one's, so a held-back frame
//! holds back the rest of its stream, as on a QUIC stream. Different
//! connections have no order between them, so frames of concurrent sessions of
//! one device arrive interleaved. Events at the same virtual millisecond run in
//! a random order drawn from the seed.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::proto::frame::{self, Frame, FrameDecoder};
use crate::proto::session::{Event as SessionEvent, Session, SyncError};
use crate::proto::verify::VerifyError;
use crate::proto::wire;

use super::Config;
use super::check;
use super::device::{self, Device, Ledger, SPACE_ID};
use super::report::{
    KNOWN_EARLY_BYE, KNOWN_GAP, KNOWN_ORPHANS, KNOWN_POISONED, KNOWN_RELEASED, KNOWN_UNVOUCHED, Report,
};
use super::rng::Rng;

/// How often the sessions' idle timers are checked, in virtual milliseconds.
const TICK_MS: u64 = 1_000;
/// How long the open sessions may take to finish once the chaos ends.
const DRAIN_MS: u64 = 300_000;
/// How long one heal round may take.
const HEAL_ROUND_MS: u64 = 120_000;
/// Old sync messages kept per ordered pair of devices, for replays.
const ARCHIVE: usize = 16;
/// A run stops collecting problems after this many.
const MAX_PROBLEMS: usize = 50;

/// Something that happens at a moment of virtual time.
#[derive(Debug)]
enum Ev {
    /// A random device makes a random edit.
    Edit,
    /// Several devices edit the same thing at once.
    Concurrent,
    /// A device dials a random peer.
    Dial(usize),
    /// The next frame on a connection's stream reaches end `to`.
    Deliver { conn: u64, to: usize },
    /// The idle timers are checked.
    Tick,
    /// The devices split into two groups.
    Partition,
    /// The partition heals.
    Heal,
    /// A random device crashes.
    Crash,
    /// A crashed device comes back.
    Restart(usize),
    /// The hostile member offers a device a change it has no right to.
    Attack,
}

struct Scheduled {
    time: u64,
    key: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.key, self.seq).cmp(&(other.time, other.key, other.seq))
    }
}

/// What the simulator knows of a frame from when it was first sent, to tell a
/// known bug from a new one if the frame is refused (even replayed later).
#[derive(Debug, Clone, Copy, Default)]
struct Tag {
    /// Its sender held a change no stored attestation vouched for.
    unvouched: bool,
    /// It carries changes its sender held back rather than held.
    orphans: bool,
    /// The network made it up: a duplicate or a replay, not something the
    /// sender's session sent at this point.
    injected: bool,
}

/// A sync message kept for replays: the connection it was sent on, its bytes
/// and its tag.
type Archived = (u64, Vec<u8>, Tag);

/// A frame on its way.
struct InFlight {
    at: u64,
    bytes: Vec<u8>,
    tag: Tag,
}

/// One end of a connection.
struct End {
    device: usize,
    /// The session, until this end is done.
    session: Option<Session>,
    /// Frames on their way to this end, in stream order.
    inbox: VecDeque<InFlight>,
    decoder: FrameDecoder,
    /// When the last frame queued for this end arrives.
    last_at: u64,
    /// Frames to this end are lost from now on.
    stalled: bool,
    /// Frames this end sent.
    sent: u64,
    /// The sync frames this end's session received, to tell a known bug from
    /// a new one when the session refuses one.
    received: Vec<Frame>,
    /// The session resumed a saved sync state naming changes the store does
    /// not hold.
    poisoned: bool,
}

impl End {
    fn new(device: usize, session: Session) -> End {
        End {
            device,
            session: Some(session),
            inbox: VecDeque::new(),
            decoder: FrameDecoder::new(),
            last_at: 0,
            stalled: false,
            sent: 0,
            received: Vec::new(),
            poisoned: false,
        }
    }
}

struct Conn {
    ends: [End; 2],
    latency: u64,
    /// One end refused a frame because of a known bug: the other end's
    /// failure follows from it.
    known_failure: bool,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Bye sent or received after equal heads.
    Closed,
    /// The session failed.
    Failed(String),
    /// The other end went away first (its stream ended).
    PeerGone,
    /// The connection was cut.
    Cut,
    /// The idle timer fired.
    Timeout,
    /// This device crashed: the session vanished, its state unsaved.
    Crashed,
}

impl Ending {
    fn label(&self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Failed(_) => "failed",
            Ending::PeerGone => "peer gone",
            Ending::Cut => "cut",
            Ending::Timeout => "timed out",
            Ending::Crashed => "crashed",
        }
    }
}

/// FNV-1a, for the run's digest.
struct Digest(u64);

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One run.
pub(crate) struct World<'c> {
    config: &'c Config,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    devices: Vec<Device>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Sync messages sent from one device to another, with their connection.
    archive: BTreeMap<(usize, usize), VecDeque<Archived>>,
    /// The connection each device last received a frame on.
    last_conn: Vec<Option<u64>>,
    ledger: Ledger,
    /// No more faults (drain and heal).
    calm: bool,
    /// In a heal round: every session must end cleanly.
    healing: Option<u32>,
    /// Sessions that failed in the current heal round.
    round_failures: u64,
    report: Report,
    problems: Vec<String>,
    digest: Digest,
}

impl<'c> World<'c> {
    pub(crate) fn new(seed: u64, config: &'c Config) -> World<'c> {
        World {
            config,
            seed,
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            devices: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            archive: BTreeMap::new(),
            last_conn: Vec::new(),
            ledger: Ledger::default(),
            calm: false,
            healing: None,
            round_failures: 0,
            report: Report::new(seed),
            problems: Vec::new(),
            digest: Digest(0xcbf2_9ce4_8422_2325),
        }
    }

    /// Runs the whole simulation; returns the report and the problems found.
    pub(crate) fn run(mut self) -> (Report, Vec<String>) {
        let lo = self.config.min_devices.clamp(2, 4);
        let hi = self.config.max_devices.clamp(lo, 4);
        let n = self.rng.range(lo as u64, hi as u64) as usize;
        match device::couple(n, &mut self.rng, &mut self.ledger) {
            Ok(devices) => self.devices = devices,
            Err(e) => {
                self.problems.push(format!("setup: {e}"));
                return (self.report, self.problems);
            }
        }
        self.report.devices = n;
        self.last_conn = vec![None; n];
        let seed = self.seed;
        self.trace(|| format!("seed {seed} with {n} devices"));
        for i in 0..n {
            let id = self.devices[i].id.short();
            self.trace(|| format!("device {i} is {id}"));
        }

        self.schedule_chaos();
        self.run_until(self.config.chaos_ms, false);
        self.calm_down();
        if !self.run_until(self.now + DRAIN_MS, true) {
            self.problems.push(format!(
                "{} sessions were still open {} s after the faults stopped",
                self.conns.len(),
                DRAIN_MS / 1000
            ));
        }
        self.heal();
        self.check();
        self.report.virtual_ms = self.now;
        for d in &self.devices {
            for h in d.heads() {
                self.digest.add(&h.0);
            }
        }
        self.report.digest = self.digest.0;
        (self.report, self.problems)
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.config.trace {
            let l = format!("{:>9} {}", self.now, line());
            self.report.trace.push(l);
        }
    }

    fn problem(&mut self, p: String) {
        self.trace(|| format!("PROBLEM {p}"));
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(format!("t={} ms: {p}", self.now));
        }
    }

    fn schedule(&mut self, time: u64, ev: Ev) {
        let key = self.rng.u64();
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            time,
            key,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_chaos(&mut self) {
        let chaos = self.config.chaos_ms.max(1);
        for _ in 0..self.config.edits {
            let t = self.rng.below(chaos);
            let ev = if self.rng.chance(self.config.concurrent) {
                Ev::Concurrent
            } else {
                Ev::Edit
            };
            self.schedule(t, ev);
        }
        for d in 0..self.devices.len() {
            let t = self.rng.range(0, 3_000);
            self.schedule(t, Ev::Dial(d));
        }
        let partitions = self.rng.range(0, u64::from(self.config.faults.partitions));
        for _ in 0..partitions {
            let t = self.rng.below(chaos);
            self.schedule(t, Ev::Partition);
        }
        let crashes = self.rng.range(0, u64::from(self.config.faults.restarts));
        for _ in 0..crashes {
            let t = self.rng.below(chaos);
            self.schedule(t, Ev::Crash);
        }
        for _ in 0..self.config.attacks {
            let t = self.rng.below(chaos);
            self.schedule(t, Ev::Attack);
        }
        self.schedule(TICK_MS, Ev::Tick);
    }

    /// Handles events up to `deadline`. With `until_idle`, stops as soon as no
    /// connection is open and returns true; false if the deadline came first.
    fn run_until(&mut self, deadline: u64, until_idle: bool) -> bool {
        loop {
            if until_idle && self.conns.is_empty() {
                return true;
            }
            if self.problems.len() >= MAX_PROBLEMS {
                return false;
            }
            let due = match self.queue.peek() {
                Some(Reverse(s)) => s.time <= deadline,
                None => false,
            };
            if !due {
                self.now = self.now.max(deadline);
                return until_idle && self.conns.is_empty();
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                return false;
            };
            self.now = s.time;
            self.handle(s.ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Edit => self.edit(),
            Ev::Concurrent => self.concurrent(),
            Ev::Dial(d) => {
                if self.calm {
                    return;
                }
                self.dial_random(d);
                let next = self.now + self.rng.range(500, 6_000);
                self.schedule(next, Ev::Dial(d));
            }
            Ev::Deliver { conn, to } => self.deliver(conn, to),
            Ev::Tick => {
                self.tick();
                self.schedule(self.now + TICK_MS, Ev::Tick);
            }
            Ev::Partition => self.partition(),
            Ev::Heal => {
                self.trace(|| "partition heals".into());
                for d in &mut self.devices {
                    d.group = 0;
                }
            }
            Ev::Crash => self.crash(),
            Ev::Attack => self.attack(),
            Ev::Restart(d) => {
                if let Some(dev) = self.devices.get_mut(d)
                    && !dev.up
                {
                    dev.up = true;
                    self.trace(|| format!("device {d} restarts"));
                }
            }
        }
    }

    // ----- a hostile member -----

    fn attack(&mut self) {
        let hostile = self.devices.len() - 1;
        let others: Vec<usize> = self.up_devices().into_iter().filter(|d| *d != hostile).collect();
        if !self.devices[hostile].up || others.is_empty() {
            return;
        }
        let victim = others[self.rng.below(others.len() as u64) as usize];
        let kind = self.rng.below(64);
        let heads = self.devices[victim].heads();
        match super::hostile::attack(&self.devices, hostile, victim, kind, self.now) {
            super::hostile::Outcome::Refused(why) => {
                self.trace(|| format!("device {victim} refused device {hostile}'s attack: {why}"));
                if why.contains("no right") || why.contains("not a member") {
                    self.report.attacks_refused += 1;
                } else {
                    self.problem(format!(
                        "device {victim} refused an attack for another reason: {why}"
                    ));
                }
            }
            super::hostile::Outcome::Nothing => self.report.attacks_idle += 1,
            super::hostile::Outcome::Accepted(name) => {
                self.problem(format!(
                    "device {victim} accepted a hostile member's write: it {name}"
                ));
            }
        }
        if self.devices[victim].heads() != heads {
            self.problem(format!("device {victim}'s document moved during an attack"));
        }
    }

    // ----- edits -----

    fn up_devices(&self) -> Vec<usize> {
        self.devices.iter().filter(|d| d.up).map(|d| d.index).collect()
    }

    fn edit(&mut self) {
        let up = self.up_devices();
        let Some(&d) = self.rng.pick(&up) else { return };
        let Some(edit) = self.devices[d].random_edit(&mut self.rng) else {
            return;
        };
        self.trace(|| format!("device {d}: {}", edit.label()));
        let now = self.now;
        if let Err(e) = self.devices[d].apply(&edit, &mut self.ledger, &mut self.rng, now) {
            self.problem(e);
            return;
        }
        self.report.edits += 1;
        *self.report.edits_by_kind.entry(edit.label()).or_default() += 1;
        self.on_change(d);
    }

    fn concurrent(&mut self) {
        let mut up = self.up_devices();
        if up.len() < 2 {
            return;
        }
        self.rng.shuffle(&mut up);
        let k = self.rng.range(2, up.len() as u64) as usize;
        up.truncate(k);
        up.sort_unstable();
        let edits = {
            let group: Vec<&Device> = up.iter().map(|&d| &self.devices[d]).collect();
            device::concurrent_edits(&group, &mut self.rng)
        };
        if edits.is_empty() {
            return;
        }
        self.report.concurrent_groups += 1;
        let now = self.now;
        for (&d, edit) in up.iter().zip(&edits) {
            self.trace(|| format!("device {d} (concurrently): {}", edit.label()));
            if let Err(e) = self.devices[d].apply(edit, &mut self.ledger, &mut self.rng, now) {
                self.problem(e);
                return;
            }
            self.report.edits += 1;
            self.report.concurrent_edits += 1;
            *self.report.edits_by_kind.entry(edit.label()).or_default() += 1;
        }
        for &d in &up {
            self.on_change(d);
        }
    }

    // ----- connections -----

    fn dial_random(&mut self, from: usize) {
        if !self.devices[from].up {
            return;
        }
        let peers: Vec<usize> = (0..self.devices.len()).filter(|&p| p != from).collect();
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
    fn dial(&mut self, from: usize, to: usize) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        let now = self.now;
        // Device 0 founded the space; every device pinned it.
        let founder = self.devices[0].id;
        let session = |me: &Device, peer: &Device| {
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
    fn flush(&mut self, cid: u64, side: usize) {
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
                orphans: is_sync && carries_orphans(&bytes, &sender.doc),
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
    fn send(&mut self, cid: u64, to: usize, bytes: Vec<u8>, tag: Tag) {
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

    fn deliver(&mut self, cid: u64, to: usize) {
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
    fn stall(&mut self, cid: u64, side: usize) {
        if let Some(conn) = self.conns.get_mut(&cid) {
            let end = &mut conn.ends[side];
            end.stalled = true;
            self.report.faults.lost_frames += end.inbox.len() as u64;
            end.inbox.clear();
        }
    }

    /// Feeds one frame to end `side`'s session, inside a store write.
    fn receive(&mut self, cid: u64, side: usize, frame: &Frame, tag: Tag) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let (d, peer) = (conn.ends[side].device, conn.ends[1 - side].device);
        let Some(session) = conn.ends[side].session.as_mut() else {
            return;
        };
        let dev = &mut self.devices[d];
        let mut working = dev.doc.clone();
        match session.handle(frame, &mut working, now) {
            Ok(events) => {
                let before = dev.doc.get_heads();
                let changed = working.get_heads() != before;
                dev.doc = working;
                let mut applied = Vec::new();
                for e in events {
                    if let SessionEvent::Applied {
                        changes,
                        attestations,
                        ..
                    } = e
                    {
                        dev.keep(&attestations);
                        self.report.changes_applied += changes as u64;
                        applied.push((changes, attestations));
                    }
                }
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
                    let lines = explain(&self.devices[d].doc, &working, frame);
                    self.report.trace.extend(lines);
                }
                let released = self.conns.get(&cid).is_some_and(|c| {
                    released_refusal(&e, &self.devices[d].doc, &working, &c.ends[side].received)
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
                    .is_some_and(|c| gap_refusal(&e, &working, &c.ends[side].received));
                let known = if tag.injected {
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
                if tag.injected {
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

    /// Lets end `side`'s session queue its next message, and sends it.
    fn generate(&mut self, cid: u64, side: usize) {
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
    fn on_change(&mut self, d: usize) {
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

    /// The dialling end closes once both hold the same heads (one-shot sync).
    fn maybe_close(&mut self, cid: u64) {
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
    fn check_conn(&mut self, cid: u64) {
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
    fn end_side(&mut self, cid: u64, side: usize, how: Ending) {
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

    fn tick(&mut self) {
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

    fn partition(&mut self) {
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

    fn crash(&mut self) {
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

    /// The faults stop: partitions heal and crashed devices come back.
    fn calm_down(&mut self) {
        self.calm = true;
        self.trace(|| "the chaos ends: no more edits or faults".into());
        for d in &mut self.devices {
            d.group = 0;
            d.up = true;
        }
    }

    // ----- heal -----

    /// Rounds in which every pair syncs at once, until one moves nothing.
    fn heal(&mut self) {
        let n = self.devices.len();
        for round in 1..=self.config.max_heal_rounds {
            self.healing = Some(round);
            self.trace(|| format!("heal round {round}"));
            let before = self.report.changes_applied;
            self.round_failures = 0;
            let mut pairs: Vec<(usize, usize)> =
                (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
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

    // ----- checks -----

    fn check(&mut self) {
        let Some(first) = self.devices.first() else { return };
        let heads = first.heads();
        let first_reads = check::Reads::of(&first.doc);
        let reads = first_reads.json();
        let mut problems: Vec<String> = first_reads
            .lost(&self.ledger)
            .into_iter()
            .map(|p| format!("device 0: {p}"))
            .collect();
        for d in &self.devices[1..] {
            if d.heads() != heads {
                problems.push(format!(
                    "device {} holds other heads than device 0 ({} vs {} heads, {} vs {} changes)",
                    d.index,
                    d.heads().len(),
                    heads.len(),
                    d.doc.get_changes(&[]).len(),
                    first.doc.get_changes(&[]).len()
                ));
            }
            let r = check::Reads::of(&d.doc);
            let json = r.json();
            if json != reads {
                let show = |r: &Result<serde_json::Value, String>| match r {
                    Ok(v) => v.to_string(),
                    Err(e) => e.clone(),
                };
                problems.push(format!(
                    "device {} reads another record than device 0:\n    {}\n    vs\n    {}",
                    d.index,
                    show(&json),
                    show(&reads)
                ));
            }
            for p in r.lost(&self.ledger) {
                problems.push(format!("device {}: {p}", d.index));
            }
        }
        for p in problems {
            self.problem(p);
        }
    }
}

/// For a trace: what a refused sync frame carried, against what the device
/// held before (`doc`) and after automerge applied it (`working`).
fn explain(doc: &automerge::Automerge, working: &automerge::Automerge, frame: &Frame) -> Vec<String> {
    use automerge::ReadDoc;
    use automerge::sync::Message as AmMessage;
    let mut out = Vec::new();
    let Ok(wire::Message::Sync(m)) = wire::Message::decode(frame) else {
        return out;
    };
    for a in &m.attestations {
        let seq = working.get_change_by_hash(&a.hash).map(|c| c.seq());
        let held = doc.get_change_by_hash(&a.hash).is_some();
        out.push(format!(
            "          attests {} at {} (seq {seq:?}, held before: {held})",
            a.device.short(),
            a.hash
        ));
    }
    let Ok(am) = AmMessage::decode(&m.message) else {
        return out;
    };
    out.push(format!("          heads {:?} need {:?}", am.heads, am.need));
    for chunk in am.changes.iter() {
        for c in crate::proto::verify::parse_chunks(chunk).unwrap_or_default() {
            let who = duet_model::DeviceId::from_actor(c.actor_id()).map_or("?".into(), |d| d.short());
            out.push(format!(
                "          carries {} seq {} {} deps {:?} (held before: {}, after: {})",
                who,
                c.seq(),
                c.hash(),
                c.deps(),
                doc.get_change_by_hash(&c.hash()).is_some(),
                working.get_change_by_hash(&c.hash()).is_some()
            ));
        }
    }
    let before = doc.get_heads();
    for c in working.get_changes(&before) {
        let who = duet_model::DeviceId::from_actor(c.actor_id()).map_or("?".into(), |d| d.short());
        out.push(format!("          applied {} seq {} {}", who, c.seq(), c.hash()));
    }
    out
}

/// True when `err` is the first known bug in the protocol core: a change automerge
/// held back in this device's document (received earlier, from another session,
/// while one of its dependencies was missing) is released by this frame, and
/// the session, which never saw the change nor an attestation for it, refuses
/// the whole message as unsigned. Recognised by a change applied by the frame
/// that no frame of this session carried.
fn released_refusal(
    err: &SyncError,
    doc: &automerge::Automerge,
    working: &automerge::Automerge,
    received: &[Frame],
) -> bool {
    use automerge::sync::Message as AmMessage;
    if !matches!(
        err,
        SyncError::Refused(crate::proto::verify::VerifyError::Unsigned(_))
    ) {
        return false;
    }
    let mut carried = std::collections::BTreeSet::new();
    for f in received {
        let Ok(wire::Message::Sync(m)) = wire::Message::decode(f) else {
            continue;
        };
        let Ok(am) = AmMessage::decode(&m.message) else {
            continue;
        };
        for chunk in am.changes.iter() {
            for c in crate::proto::verify::parse_chunks(chunk).unwrap_or_default() {
                carried.insert(c.hash());
            }
        }
    }
    working
        .get_changes(&doc.get_heads())
        .iter()
        .any(|c| !carried.contains(&c.hash()))
}

/// True if `bytes` is a sync frame that carries a whole document (automerge's
/// `save()`) followed by changes `doc` holds back rather than holds: `save()`
/// keeps held-back changes by default.
fn carries_orphans(bytes: &[u8], doc: &automerge::Automerge) -> bool {
    use automerge::sync::Message as AmMessage;
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let Ok(Some(f)) = d.next_frame() else {
        return false;
    };
    let Ok(wire::Message::Sync(m)) = wire::Message::decode(&f) else {
        return false;
    };
    let Ok(am) = AmMessage::decode(&m.message) else {
        return false;
    };
    // A whole document starts with a document chunk (type 0 after the magic
    // bytes and the checksum); only then can held-back changes ride along.
    am.changes.iter().any(|chunk| {
        chunk.get(8) == Some(&0)
            && crate::proto::verify::parse_chunks(chunk)
                .unwrap_or_default()
                .iter()
                .any(|c| doc.get_change_meta_by_hash(&c.hash()).is_none())
    })
}

/// The sync frames `received` by a session, decoded: their attestations and
/// the changes they carried.
fn carried(received: &[Frame]) -> (Vec<duet_model::Attestation>, Vec<automerge::Change>) {
    use automerge::sync::Message as AmMessage;
    let (mut atts, mut changes) = (Vec::new(), Vec::new());
    for f in received {
        let Ok(wire::Message::Sync(m)) = wire::Message::decode(f) else {
            continue;
        };
        atts.extend(m.attestations);
        let Ok(am) = AmMessage::decode(&m.message) else {
            continue;
        };
        for chunk in am.changes.iter() {
            changes.extend(crate::proto::verify::parse_chunks(chunk).unwrap_or_default());
        }
    }
    (atts, changes)
}

/// True when `err` is the known bug of a gap in a chain: the session refused
/// changes by a device as unsigned while it had received an attestation of a
/// later change of that device that would reach them, but that change, or
/// one between it and them, is one this device has neither received nor held
/// yet.
fn gap_refusal(err: &SyncError, working: &automerge::Automerge, received: &[Frame]) -> bool {
    let SyncError::Refused(VerifyError::Unsigned(who)) = err else {
        return false;
    };
    let by_who = |actor: &automerge::ActorId| {
        duet_model::DeviceId::from_actor(actor).is_some_and(|d| d.short() == *who)
    };
    let (atts, changes) = carried(received);
    let mut present: std::collections::BTreeSet<u64> = working
        .get_changes_meta(&[])
        .iter()
        .filter(|c| by_who(&c.actor))
        .map(|c| c.seq)
        .collect();
    present.extend(changes.iter().filter(|c| by_who(c.actor_id())).map(|c| c.seq()));
    atts.iter().filter(|a| a.device.short() == *who).any(|a| {
        match changes.iter().find(|c| c.hash() == a.hash) {
            Some(tip) => (1..tip.seq()).any(|k| !present.contains(&k)),
            None => working.get_change_meta_by_hash(&a.hash).is_none(),
        }
    })
}
