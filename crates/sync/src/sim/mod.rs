//! A seeded, deterministic simulator of one couple's devices syncing through a
//! faulty network, over the sans-IO [`Session`](crate::proto::session::Session).
//!
//! [`Sim::run`] takes a seed and a [`Config`] and replays exactly: all
//! randomness comes from one ChaCha generator seeded with the seed, time is
//! virtual (milliseconds, advanced by a discrete event queue), and nothing runs
//! on another thread, touches a socket or reads a clock.
//!
//! # A run
//! 1. **Setup.** The founding device makes the space and a little shared
//!    history; of the others (three or four devices in all: two per partner at
//!    most), some are added now (each by a device of its own seat, or the
//!    partner's first device by the founder, as pairing does) and start from a
//!    copy of the document, and up to [`Config::joins`] join later. Each device
//!    has a store: its document as of the last accepted write, the newest
//!    attestation per device, and a saved sync state per peer.
//! 2. **Chaos.** For a virtual minute (by default), partners edit at random
//!    times (issues, titles, bodies, statuses, tags, notes, steps, check-ins,
//!    agreements), sometimes several devices the same field or the same week's
//!    check-in at the same moment. Every device dials random peers now and then;
//!    each connection carries each direction's frames as a reliable, ordered
//!    stream (sessions assume QUIC streams), and the dialling side closes once
//!    both hold the same heads. Frames are applied the way the store does it: in
//!    a write that is kept only if the session accepts the frame. A local edit
//!    or an applied frame lets every open session of that device send (live
//!    push). Faults (see below) are injected all along. Meanwhile the couple's
//!    devices change:
//!    - a device **joins**: a device of its seat that is up adds it (or the
//!      founder's side, for a seat nobody holds yet, as the host of a
//!      pairing), and the new device, its store empty, dials that device for
//!      its first sync (a whole document, judged change by change);
//!    - a device **revokes** another it lists as active (up to
//!      [`Config::revocations`] a run); with [`Config::mutual`], the revoked
//!      device, not knowing, revokes its revoker at the same moment. The
//!      revoked device goes on editing and dialling; a device refuses a
//!      session with a device it knows is revoked, or does not know yet;
//!    - the last device runs a modified client and, [`Config::attacks`] times,
//!      offers another device a change it has no right to write.
//! 3. **Drain.** Faults stop, partitions heal, crashed devices come back; the
//!    open sessions finish or time out.
//! 4. **Heal.** Rounds in which every pair of devices syncs, all at once, with
//!    no faults, until a round moves no change. Every heal session must end
//!    cleanly (Bye after equal heads).
//! 5. **Checks.** The couple is the devices the record lists as active (as a
//!    device nobody revoked reads it). A device revoked by a device still in
//!    the couple is out; a device no revocation named, nor added through one,
//!    is in. Every device of the couple holds the same heads and reads the same
//!    record (issues, check-ins, agreements, devices, compared as JSON), and
//!    every issue, note, step, acceptance, completion, tag, check-in entry,
//!    agenda item, logged minute and agreement written by a device of the
//!    couple, or by a revoked device up to its cut-off, is there exactly once;
//!    what a revoked device wrote after its cut-off shows at most once (it
//!    travels on only through a member that took it before it heard of the
//!    revocation). Anywhere in the run, these fail a run: a frame refused
//!    between honest devices (unless it is one of the known bugs below; a
//!    refusal of a device the refusing device's record shows is not an active
//!    member is right), a change a device took from a device it knew was
//!    revoked that was made after its cut-off, a hostile write accepted, a new
//!    device pinning another founder, and a panic.
//!
//! # Faults
//! | kind | what happens |
//! | ---- | ------------ |
//! | delay | a frame is held back by up to [`Faults::max_delay_ms`] (later frames of its stream wait behind it) |
//! | cut | the connection is cut after a delivery: both sessions end, in-flight frames are lost, both sync states are saved as the driver does |
//! | stall | one direction silently loses every frame from now on (a dropped message on a stream that then hangs); the idle timeout ends the sessions |
//! | duplicate | a sync message is delivered twice in a row |
//! | replay | a sync message sent earlier (usually in an earlier session of the same two devices) is slipped into the stream after Hello |
//! | interleave | frames of concurrent sessions of one device arrive in random order (counted: deliveries that switch between open sessions) |
//! | crossed dial | two devices dial each other at once: two sessions of the same pair run side by side, both resuming the same saved state |
//! | partition | devices split into two groups: crossing connections are cut or stall, and dials across fail until the partition heals |
//! | restart | a device crashes: its sessions vanish without saving their state, its peers see the connection drop, and it comes back later reloaded from its store |
//!
//! # Former bugs
//! Every refusal between honest devices fails a run. The simulator found six
//! protocol bugs that refused honest messages; all are fixed, and each is
//! replayed by hand in `crates/sync/tests/sim.rs`. It still recognises their
//! patterns, so that a regression is named in [`Report::known_refusals`] (and
//! fails the run unless [`Config::strict`] is turned off, which only makes
//! sense while a known regression is being worked on):
//!
//! - [`KNOWN_RELEASED`]: automerge held back a change for a missing
//!   dependency in the document itself; another session released it without
//!   having seen its signature.
//! - [`KNOWN_GAP`]: a sender vouches with its newest attestation of each
//!   device, while automerge may send an older change of that device first;
//!   the attestation could not reach it within the message.
//! - [`KNOWN_UNVOUCHED`]: changes vouched for only through a held-back change
//!   were applied without a stored attestation, so relaying them failed.
//! - [`KNOWN_ORPHANS`]: whole-document messages (`save()`) carried held-back,
//!   unverified changes.
//! - [`KNOWN_POISONED`]: a sync state advanced by a refused frame was saved.
//! - [`KNOWN_EARLY_BYE`]: a Bye crossing a change of the other side's heads
//!   was refused.
//!
//! The first four had one root: coverage was checked per message against what
//! automerge applied. Now received changes wait in their session until
//! [`verify::place`](crate::proto::verify::place) finds their dependencies and
//! a signature that reaches them, and automerge gets only those, so it never
//! holds anything back.
//!
//! # Layout
//! - `device`: a device's store and the random edits made on it;
//! - `world`: the event queue, the connections, the faults, the heal rounds;
//! - `check`: the convergence and "nothing lost" checks;
//! - [`report`]: per-run [`Report`]s and the [`Summary`] of many runs.

mod check;
mod device;
mod hostile;
pub mod report;
mod rng;
mod world;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use report::{
    FaultCounts, KNOWN_EARLY_BYE, KNOWN_GAP, KNOWN_ORPHANS, KNOWN_POISONED, KNOWN_RELEASED, KNOWN_UNVOUCHED,
    Report, Summary,
};

/// The simulator.
#[derive(Debug, Clone, Copy)]
pub struct Sim;

impl Sim {
    /// Runs the simulation for `seed`: the same seed and config always make the
    /// same run. Returns the run's report, or what went wrong (with the seed and
    /// a command that replays it).
    pub fn run(seed: u64, config: &Config) -> Result<Report, Failure> {
        let outcome = catch_unwind(AssertUnwindSafe(|| world::World::new(seed, config).run()));
        let (report, problems) = match outcome {
            Ok(done) => done,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                (Report::new(seed), vec![format!("panicked: {text}")])
            }
        };
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(Failure {
                seed,
                problems,
                replay: config.replay_command(seed),
                report: Box::new(report),
            })
        }
    }
}

/// How a run is shaped. [`Config::default`] is what CI runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The fewest devices (at least 2).
    pub min_devices: usize,
    /// The most devices (at most 4: two per partner).
    pub max_devices: usize,
    /// Edit events during the chaos phase; each is one edit, or a group of
    /// devices editing the same thing at once.
    pub edits: u32,
    /// The share of edit events that are such concurrent groups.
    pub concurrent: f64,
    /// How long the chaos phase lasts, in virtual milliseconds.
    pub chaos_ms: u64,
    /// The most one-way latency of a connection, in milliseconds (each
    /// connection draws its own).
    pub latency_ms: u64,
    /// The faults injected during the chaos phase.
    pub faults: Faults,
    /// The most heal rounds before a run counts as not converging.
    pub max_heal_rounds: u32,
    /// Keep a line per event in [`Report::trace`] (for replaying one seed).
    pub trace: bool,
    /// Fail a run on the former bugs' patterns too (see "Former bugs" above).
    pub strict: bool,
    /// How many times during the chaos phase the last device, running a
    /// modified client, offers another device a change it has no right to
    /// write (the device list replaced, the other partner's check-in,
    /// acceptance or outcome written, a shared issue deleted, a device added
    /// to the other seat). Each must be refused.
    pub attacks: u32,
    /// The most devices per run that join during the run rather than at
    /// setup: added by a device of their seat (or the partner's first device
    /// by the founder), then a first sync from an empty store.
    pub joins: u32,
    /// The most revocations per run: a device revokes another it lists as
    /// active, whose later changes every device that learns of it refuses.
    pub revocations: u32,
    /// The chance that a revoked device, not knowing, revokes its revoker at
    /// the same moment (both end up revoked).
    pub mutual: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            min_devices: 3,
            max_devices: 4,
            edits: 40,
            concurrent: 0.25,
            chaos_ms: 60_000,
            latency_ms: 40,
            faults: Faults::default(),
            max_heal_rounds: 8,
            trace: false,
            strict: true,
            attacks: 3,
            joins: 2,
            revocations: 2,
            mutual: 0.3,
        }
    }
}

/// Fault rates. Probabilities are per frame unless said otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Probability that a frame is held back.
    pub delay: f64,
    /// The longest hold-back, in milliseconds.
    pub max_delay_ms: u64,
    /// Probability that a connection is cut right after a delivery.
    pub cut: f64,
    /// Probability that one direction of a connection stalls after a delivery.
    pub stall: f64,
    /// Probability that a sync message is delivered twice.
    pub duplicate: f64,
    /// Probability that an old sync message is replayed before a frame.
    pub replay: f64,
    /// The most partitions per run (each run draws 0 to this many).
    pub partitions: u32,
    /// The most device restarts per run (each run draws 0 to this many).
    pub restarts: u32,
    /// Probability that a dial to a peer that is dialling us goes ahead anyway.
    pub crossed: f64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            delay: 0.1,
            max_delay_ms: 3_000,
            cut: 0.02,
            stall: 0.01,
            duplicate: 0.05,
            replay: 0.03,
            partitions: 2,
            restarts: 3,
            crossed: 0.3,
        }
    }
}

impl Faults {
    /// No faults at all: a perfect network of devices that never crash.
    pub fn none() -> Faults {
        Faults {
            delay: 0.0,
            max_delay_ms: 0,
            cut: 0.0,
            stall: 0.0,
            duplicate: 0.0,
            replay: 0.0,
            partitions: 0,
            restarts: 0,
            crossed: 0.0,
        }
    }
}

impl Config {
    /// The command-line flags that turn the default config into this one.
    pub fn flags(&self) -> Vec<String> {
        let d = Config::default();
        let mut out = Vec::new();
        if !self.strict {
            out.push("--lenient".to_string());
        }
        let mut flag = |name: &str, value: String| {
            out.push(format!("--{name}"));
            out.push(value);
        };
        if (self.min_devices, self.max_devices) != (d.min_devices, d.max_devices) {
            flag("devices", format!("{}..{}", self.min_devices, self.max_devices));
        }
        if self.edits != d.edits {
            flag("edits", self.edits.to_string());
        }
        if self.concurrent != d.concurrent {
            flag("concurrent", self.concurrent.to_string());
        }
        if self.chaos_ms != d.chaos_ms {
            flag("chaos-ms", self.chaos_ms.to_string());
        }
        if self.latency_ms != d.latency_ms {
            flag("latency-ms", self.latency_ms.to_string());
        }
        if self.max_heal_rounds != d.max_heal_rounds {
            flag("max-heal-rounds", self.max_heal_rounds.to_string());
        }
        for (name, v, dv) in [
            ("attacks", self.attacks, d.attacks),
            ("joins", self.joins, d.joins),
            ("revocations", self.revocations, d.revocations),
        ] {
            if v != dv {
                flag(name, v.to_string());
            }
        }
        if self.mutual != d.mutual {
            flag("mutual", self.mutual.to_string());
        }
        let (f, df) = (&self.faults, &d.faults);
        for (name, v, dv) in [
            ("delay", f.delay, df.delay),
            ("cut", f.cut, df.cut),
            ("stall", f.stall, df.stall),
            ("duplicate", f.duplicate, df.duplicate),
            ("replay", f.replay, df.replay),
            ("crossed", f.crossed, df.crossed),
        ] {
            if v != dv {
                flag(name, v.to_string());
            }
        }
        for (name, v, dv) in [
            ("max-delay-ms", f.max_delay_ms, df.max_delay_ms),
            ("partitions", u64::from(f.partitions), u64::from(df.partitions)),
            ("restarts", u64::from(f.restarts), u64::from(df.restarts)),
        ] {
            if v != dv {
                flag(name, v.to_string());
            }
        }
        out
    }

    /// Applies one command-line flag (`name` without the dashes). Returns false
    /// for a flag that is not a config flag; an error for a bad value.
    pub fn set_flag(&mut self, name: &str, value: &str) -> Result<bool, String> {
        fn num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("--{name}: {value:?} is not a valid number"))
        }
        fn prob(name: &str, value: &str) -> Result<f64, String> {
            let p: f64 = num(name, value)?;
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(format!("--{name}: a probability is between 0 and 1, not {value}"))
            }
        }
        match name {
            "devices" => {
                let (lo, hi) = match value.split_once("..") {
                    Some((lo, hi)) => (num(name, lo)?, num(name, hi)?),
                    None => {
                        let n = num(name, value)?;
                        (n, n)
                    }
                };
                if !(2..=4).contains(&lo) || !(lo..=4).contains(&hi) {
                    return Err(format!(
                        "--devices: between 2 and 4 devices (a couple, two each at most), not {value}"
                    ));
                }
                self.min_devices = lo;
                self.max_devices = hi;
            }
            "edits" => self.edits = num(name, value)?,
            "concurrent" => self.concurrent = prob(name, value)?,
            "chaos-ms" => self.chaos_ms = num(name, value)?,
            "latency-ms" => self.latency_ms = num(name, value)?,
            "max-heal-rounds" => self.max_heal_rounds = num(name, value)?,
            "attacks" => self.attacks = num(name, value)?,
            "joins" => self.joins = num(name, value)?,
            "revocations" => self.revocations = num(name, value)?,
            "mutual" => self.mutual = prob(name, value)?,
            "delay" => self.faults.delay = prob(name, value)?,
            "max-delay-ms" => self.faults.max_delay_ms = num(name, value)?,
            "cut" => self.faults.cut = prob(name, value)?,
            "stall" => self.faults.stall = prob(name, value)?,
            "duplicate" => self.faults.duplicate = prob(name, value)?,
            "replay" => self.faults.replay = prob(name, value)?,
            "crossed" => self.faults.crossed = prob(name, value)?,
            "partitions" => self.faults.partitions = num(name, value)?,
            "restarts" => self.faults.restarts = num(name, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The command that replays `seed` with this config.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut cmd =
            format!("cargo run --release -p duet-sync --example sim --features sim -- --seed {seed} --trace");
        for f in self.flags() {
            cmd.push(' ');
            cmd.push_str(&f);
        }
        cmd
    }
}

/// A run that broke a guarantee (or panicked).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// What went wrong, one line each.
    pub problems: Vec<String>,
    /// The command that replays it.
    pub replay: String,
    /// What the run did up to there.
    pub report: Box<Report>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed:", self.seed)?;
        for p in self.problems.iter().take(20) {
            writeln!(f, "  - {p}")?;
        }
        if self.problems.len() > 20 {
            writeln!(f, "  ... and {} more", self.problems.len() - 20)?;
        }
        write!(f, "replay: {}", self.replay)
    }
}

impl std::error::Error for Failure {}
