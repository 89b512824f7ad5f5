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

mod bugs;
mod heal;
mod net;
mod receive;
mod roster;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use crate::proto::frame::{self, Frame, FrameDecoder};
use crate::proto::session::{Event as SessionEvent, Session, SyncError};
use crate::proto::verify::VerifyError;
use crate::proto::wire;
use duet_model::{ChangeRefusal, Membership};

use super::Config;
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
    /// A device not yet part of the couple joins.
    Join(usize),
    /// A device revokes another (sometimes two each other at once).
    Revoke,
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
    /// One end refused the other as no (longer a) member, as its record
    /// showed it then: the right outcome.
    outsider: bool,
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
    /// This device revoked the other and dropped the session.
    Dropped,
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
            Ending::Dropped => "dropped (revoked)",
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
    /// The devices a revocation named: each must be out at the end.
    targets: BTreeSet<usize>,
    /// Who revoked each of them.
    revokers: BTreeMap<usize, BTreeSet<usize>>,
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
            targets: BTreeSet::new(),
            revokers: BTreeMap::new(),
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
        // Devices that join during the run (never the founder).
        let mut late = vec![false; n];
        let mut joining = 0;
        for l in late.iter_mut().skip(1) {
            if joining < self.config.joins && self.rng.chance(0.4) {
                *l = true;
                joining += 1;
            }
        }
        match device::couple(n, &late, &mut self.rng, &mut self.ledger) {
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
        for (i, l) in late.iter().enumerate() {
            let id = self.devices[i].id.short();
            let when = if *l { ", joins later" } else { "" };
            self.trace(|| format!("device {i} is {id}{when}"));
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
        // Joins in the first half, so that the new devices take part.
        for d in 0..self.devices.len() {
            if !self.devices[d].joined {
                let t = self.rng.below(chaos / 2 + 1);
                self.schedule(t, Ev::Join(d));
            }
        }
        let revocations = self.rng.range(0, u64::from(self.config.revocations));
        for _ in 0..revocations {
            let t = self.rng.below(chaos);
            self.schedule(t, Ev::Revoke);
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
            Ev::Join(d) => self.join(d),
            Ev::Revoke => self.revoke(),
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
        let h = &self.devices[hostile];
        if !h.up || !h.joined || !h.has_record() || others.is_empty() {
            self.report.attacks_idle += 1;
            return;
        }
        let victim = others[self.rng.below(others.len() as u64) as usize];
        let kind = self.rng.below(64);
        let heads = self.devices[victim].heads();
        match super::hostile::attack(&self.devices, hostile, victim, kind, self.now) {
            super::hostile::Outcome::Refused(why) => {
                self.trace(|| format!("device {victim} refused device {hostile}'s attack: {why}"));
                if why.contains("no right") || why.contains("not a member") || why.contains("revoked") {
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

    /// The devices that are up and hold the couple's record: they edit.
    fn up_devices(&self) -> Vec<usize> {
        self.devices
            .iter()
            .filter(|d| d.up && d.joined && d.has_record())
            .map(|d| d.index)
            .collect()
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
}
