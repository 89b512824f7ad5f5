//! What runs did: one [`Report`] per run, and a [`Summary`] of many.

use std::collections::BTreeMap;
use std::fmt;

use super::Failure;

/// Former bug (fixed): a change automerge held back in a device's document is released
/// by a frame of another session, which refuses it as unsigned.
pub const KNOWN_RELEASED: &str = "held-back change released";
/// Former bug (fixed): a session's sync state advanced by a frame whose write was
/// refused (and rolled back) is saved anyway; the next session tells the peer
/// it holds changes it does not, so the peer leaves them out and the
/// receiver refuses what depends on them as unsigned.
pub const KNOWN_POISONED: &str = "sync state saved after a refused write";
/// Former bug (fixed): the side that did not dial refuses the dialler's Bye as "said
/// goodbye before the sync finished" when its own heads moved on after it last
/// told them (a local edit, a change from another session, or a replayed old
/// message) while the Bye was on its way.
pub const KNOWN_EARLY_BYE: &str = "bye raced a change";
/// Former bug (fixed): a sync message that carries a whole document (automerge's
/// `save()`) also carries the changes the sender holds back, which it never
/// verified and has no attestation for; the receiver refuses them as unsigned.
pub const KNOWN_ORPHANS: &str = "held-back changes sent with a document";
/// Former bug (fixed): changes are refused as unsigned because the attestation that
/// would cover them, of a later change of their author, is of a change not
/// received yet, or reaches them only through one (a gap in the chain).
pub const KNOWN_GAP: &str = "gap in an attested chain";
/// Former bug (fixed): a device relays changes whose only attestation it received
/// pointed at a change still held back, so it stored none; the receiver
/// refuses them as unsigned.
pub const KNOWN_UNVOUCHED: &str = "relayed without attestation";

/// Faults injected in one run (or many), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Frames held back.
    pub delayed: u64,
    /// Connections cut after a delivery.
    pub cut: u64,
    /// Stream directions that stalled.
    pub stalled: u64,
    /// Frames lost to stalls (and to partitions that stall).
    pub lost_frames: u64,
    /// Sync messages delivered twice.
    pub duplicated: u64,
    /// Old sync messages replayed into a stream.
    pub replayed: u64,
    /// Deliveries that switched between two open sessions of one device.
    pub interleaved: u64,
    /// Dials that crossed a dial from the same peer.
    pub crossed_dials: u64,
    /// Partitions.
    pub partitions: u64,
    /// Connections cut or stalled by partitions.
    pub partition_breaks: u64,
    /// Dials that failed because of a partition or a device being down.
    pub failed_dials: u64,
    /// Device crashes and restarts.
    pub restarts: u64,
    /// Sessions that vanished in a crash, without saving their state.
    pub crashed_sessions: u64,
    /// Sessions ended by the idle timeout.
    pub timeouts: u64,
}

impl FaultCounts {
    /// Every kind with its count, in a fixed order.
    pub fn kinds(&self) -> [(&'static str, u64); 14] {
        [
            ("delayed frames", self.delayed),
            ("connections cut", self.cut),
            ("stalled streams", self.stalled),
            ("frames lost to stalls", self.lost_frames),
            ("duplicated messages", self.duplicated),
            ("replayed old messages", self.replayed),
            ("interleaved deliveries", self.interleaved),
            ("crossed dials", self.crossed_dials),
            ("partitions", self.partitions),
            ("connections broken by partitions", self.partition_breaks),
            ("failed dials (partition, device down)", self.failed_dials),
            ("device restarts", self.restarts),
            ("sessions lost in crashes", self.crashed_sessions),
            ("idle timeouts", self.timeouts),
        ]
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &FaultCounts) {
        self.delayed += other.delayed;
        self.cut += other.cut;
        self.stalled += other.stalled;
        self.lost_frames += other.lost_frames;
        self.duplicated += other.duplicated;
        self.replayed += other.replayed;
        self.interleaved += other.interleaved;
        self.crossed_dials += other.crossed_dials;
        self.partitions += other.partitions;
        self.partition_breaks += other.partition_breaks;
        self.failed_dials += other.failed_dials;
        self.restarts += other.restarts;
        self.crashed_sessions += other.crashed_sessions;
        self.timeouts += other.timeouts;
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// How many devices.
    pub devices: usize,
    /// Edits made (each one automerge change, signed by its device).
    pub edits: u64,
    /// Edits by kind.
    pub edits_by_kind: BTreeMap<&'static str, u64>,
    /// Groups of devices that edited the same thing at the same moment.
    pub concurrent_groups: u64,
    /// Edits made in those groups (counted in `edits` too).
    pub concurrent_edits: u64,
    /// Sessions started.
    pub sessions: u64,
    /// Sessions by how they ended.
    pub session_ends: BTreeMap<&'static str, u64>,
    /// Frames delivered.
    pub frames: u64,
    /// Sync messages delivered.
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Changes applied from received messages (all devices).
    pub changes_applied: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Frames refused between honest devices because of a known bug, by bug
    /// ([`KNOWN_RELEASED`], [`KNOWN_GAP`], [`KNOWN_UNVOUCHED`], [`KNOWN_ORPHANS`],
    /// [`KNOWN_POISONED`], [`KNOWN_EARLY_BYE`]; see the module docs).
    pub known_refusals: BTreeMap<&'static str, u64>,
    /// Duplicated or replayed messages a session refused: the right outcome
    /// (nothing of them is applied), counted apart from the bugs.
    pub injected_refused: u64,
    /// A hostile member's writes the victim refused (the right outcome).
    pub attacks_refused: u64,
    /// Attacks with nothing to attack yet (no step, no agreement), or no
    /// hostile device up with a record.
    pub attacks_idle: u64,
    /// Devices that joined during the run.
    pub joins: u64,
    /// Devices that were to join but found no device of theirs up in time.
    pub joins_missed: u64,
    /// New devices' first syncs that took a whole document at once.
    pub first_syncs: u64,
    /// Revocations written.
    pub revocations: u64,
    /// Pairs of devices that revoked each other at the same moment.
    pub mutual_revocations: u64,
    /// Sessions refused because the peer was not (or no longer) an active
    /// member as the refusing device's record showed (the right outcome).
    pub outsiders_refused: u64,
    /// Devices left in the couple at the end (active, and checked).
    pub couple: usize,
    /// Accepted writes that left a change in a store without a stored
    /// attestation vouching for it (the cause of [`KNOWN_UNVOUCHED`]).
    pub unvouched_writes: u64,
    /// Sync states saved that name changes the store does not hold (the
    /// cause of [`KNOWN_POISONED`]).
    pub poisoned_saves: u64,
    /// Sync messages sent with changes their sender held back (the cause of
    /// [`KNOWN_ORPHANS`]).
    pub orphan_messages: u64,
    /// Heal rounds until a round moved nothing (that quiet round included).
    pub heal_rounds: u32,
    /// Virtual time at the end, in milliseconds.
    pub virtual_ms: u64,
    /// A digest of every delivered frame and the final heads: two runs of one
    /// seed have the same digest.
    pub digest: u64,
    /// One line per event, if the config asked for a trace.
    pub trace: Vec<String>,
}

impl Report {
    /// An empty report for `seed`.
    pub fn new(seed: u64) -> Report {
        Report {
            seed,
            ..Report::default()
        }
    }
}

/// Many runs, added up.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Runs.
    pub seeds: u64,
    /// The failed runs.
    pub failures: Vec<Failure>,
    /// Devices simulated, over all runs.
    pub devices: u64,
    /// Edits.
    pub edits: u64,
    /// Edits by kind.
    pub edits_by_kind: BTreeMap<&'static str, u64>,
    /// Concurrent edit groups.
    pub concurrent_groups: u64,
    /// Edits made in those groups.
    pub concurrent_edits: u64,
    /// Sessions.
    pub sessions: u64,
    /// Sessions by how they ended.
    pub session_ends: BTreeMap<&'static str, u64>,
    /// Frames delivered.
    pub frames: u64,
    /// Sync messages delivered.
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Changes applied.
    pub changes_applied: u64,
    /// Faults by kind.
    pub faults: FaultCounts,
    /// Frames refused because of a known bug, by bug.
    pub known_refusals: BTreeMap<&'static str, u64>,
    /// Runs with at least one such refusal, by bug.
    pub runs_with_known_refusals: BTreeMap<&'static str, u64>,
    /// Duplicated or replayed messages refused (the right outcome).
    pub injected_refused: u64,
    /// A hostile member's writes refused (the right outcome).
    pub attacks_refused: u64,
    /// Devices that joined during a run.
    pub joins: u64,
    /// New devices' first syncs that took a whole document at once.
    pub first_syncs: u64,
    /// Revocations written.
    pub revocations: u64,
    /// Pairs of devices that revoked each other at the same moment.
    pub mutual_revocations: u64,
    /// Sessions refused as no (longer a) member (the right outcome).
    pub outsiders_refused: u64,
    /// Writes that left a change without a stored attestation.
    pub unvouched_writes: u64,
    /// Runs with at least one such write.
    pub runs_with_unvouched_writes: u64,
    /// Sync states saved naming changes the store does not hold.
    pub poisoned_saves: u64,
    /// Runs with at least one such save.
    pub runs_with_poisoned_saves: u64,
    /// Sync messages sent with changes their sender held back.
    pub orphan_messages: u64,
    /// Runs with at least one such message.
    pub runs_with_orphan_messages: u64,
    /// How many runs needed each number of heal rounds.
    pub heal_rounds: BTreeMap<u32, u64>,
    /// Virtual time simulated, in milliseconds.
    pub virtual_ms: u64,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, outcome: &Result<Report, Failure>) {
        self.seeds += 1;
        let report = match outcome {
            Ok(r) => r,
            Err(f) => {
                self.failures.push(f.clone());
                &f.report
            }
        };
        self.devices += report.devices as u64;
        self.edits += report.edits;
        for (k, v) in &report.edits_by_kind {
            *self.edits_by_kind.entry(k).or_default() += v;
        }
        self.concurrent_groups += report.concurrent_groups;
        self.concurrent_edits += report.concurrent_edits;
        self.sessions += report.sessions;
        for (k, v) in &report.session_ends {
            *self.session_ends.entry(k).or_default() += v;
        }
        self.frames += report.frames;
        self.messages += report.messages;
        self.bytes += report.bytes;
        self.changes_applied += report.changes_applied;
        self.faults.add(&report.faults);
        for (k, v) in &report.known_refusals {
            *self.known_refusals.entry(k).or_default() += v;
            *self.runs_with_known_refusals.entry(k).or_default() += 1;
        }
        self.injected_refused += report.injected_refused;
        self.attacks_refused += report.attacks_refused;
        self.joins += report.joins;
        self.first_syncs += report.first_syncs;
        self.revocations += report.revocations;
        self.mutual_revocations += report.mutual_revocations;
        self.outsiders_refused += report.outsiders_refused;
        self.unvouched_writes += report.unvouched_writes;
        self.runs_with_unvouched_writes += u64::from(report.unvouched_writes > 0);
        self.poisoned_saves += report.poisoned_saves;
        self.runs_with_poisoned_saves += u64::from(report.poisoned_saves > 0);
        self.orphan_messages += report.orphan_messages;
        self.runs_with_orphan_messages += u64::from(report.orphan_messages > 0);
        if outcome.is_ok() {
            *self.heal_rounds.entry(report.heal_rounds).or_default() += 1;
        }
        self.virtual_ms += report.virtual_ms;
    }

    /// Adds another summary (of other seeds).
    pub fn merge(&mut self, other: Summary) {
        self.seeds += other.seeds;
        self.failures.extend(other.failures);
        self.devices += other.devices;
        self.edits += other.edits;
        for (k, v) in other.edits_by_kind {
            *self.edits_by_kind.entry(k).or_default() += v;
        }
        self.concurrent_groups += other.concurrent_groups;
        self.concurrent_edits += other.concurrent_edits;
        self.sessions += other.sessions;
        for (k, v) in other.session_ends {
            *self.session_ends.entry(k).or_default() += v;
        }
        self.frames += other.frames;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.changes_applied += other.changes_applied;
        self.faults.add(&other.faults);
        for (k, v) in other.known_refusals {
            *self.known_refusals.entry(k).or_default() += v;
        }
        for (k, v) in other.runs_with_known_refusals {
            *self.runs_with_known_refusals.entry(k).or_default() += v;
        }
        self.injected_refused += other.injected_refused;
        self.attacks_refused += other.attacks_refused;
        self.joins += other.joins;
        self.first_syncs += other.first_syncs;
        self.revocations += other.revocations;
        self.mutual_revocations += other.mutual_revocations;
        self.outsiders_refused += other.outsiders_refused;
        self.unvouched_writes += other.unvouched_writes;
        self.runs_with_unvouched_writes += other.runs_with_unvouched_writes;
        self.poisoned_saves += other.poisoned_saves;
        self.runs_with_poisoned_saves += other.runs_with_poisoned_saves;
        self.orphan_messages += other.orphan_messages;
        self.runs_with_orphan_messages += other.runs_with_orphan_messages;
        for (k, v) in other.heal_rounds {
            *self.heal_rounds.entry(k).or_default() += v;
        }
        self.virtual_ms += other.virtual_ms;
    }

    /// The most heal rounds any passing run needed.
    pub fn max_heal_rounds(&self) -> u32 {
        self.heal_rounds.keys().copied().max().unwrap_or(0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |n: u64| n as f64 / self.seeds.max(1) as f64;
        writeln!(
            f,
            "seeds: {} ({} passed, {} failed)",
            self.seeds,
            self.seeds - self.failures.len() as u64,
            self.failures.len()
        )?;
        writeln!(f, "devices: {} ({:.2} per run)", self.devices, per(self.devices))?;
        writeln!(
            f,
            "edits: {} ({:.1} per run), {} of them in {} concurrent groups",
            self.edits,
            per(self.edits),
            self.concurrent_edits,
            self.concurrent_groups
        )?;
        let kinds: Vec<String> = self
            .edits_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  by kind: {}", kinds.join(", "))?;
        writeln!(
            f,
            "sessions: {} ({:.1} per run); ended: {}",
            self.sessions,
            per(self.sessions),
            self.session_ends
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "frames delivered: {} ({:.1} per run), sync messages: {} ({:.1} per run), {:.1} MB",
            self.frames,
            per(self.frames),
            self.messages,
            per(self.messages),
            self.bytes as f64 / 1e6
        )?;
        writeln!(f, "changes applied from the network: {}", self.changes_applied)?;
        writeln!(f, "faults injected:")?;
        for (k, v) in self.faults.kinds() {
            writeln!(f, "  {k:<40} {v:>10} ({:.1} per run)", per(v))?;
        }
        writeln!(
            f,
            "duplicated or replayed messages refused (the right outcome, nothing applied): {}",
            self.injected_refused
        )?;
        writeln!(
            f,
            "a hostile member's writes refused (the right outcome, nothing applied): {}",
            self.attacks_refused
        )?;
        writeln!(
            f,
            "devices joined during a run: {} (first syncs of a whole document: {}); revocations: {} ({} pairs revoking each other at once)",
            self.joins, self.first_syncs, self.revocations, self.mutual_revocations
        )?;
        writeln!(
            f,
            "sessions refused as no (longer a) member (the right outcome): {}",
            self.outsiders_refused
        )?;
        writeln!(f, "honest frames refused because of known bugs:")?;
        for bug in [
            KNOWN_RELEASED,
            KNOWN_GAP,
            KNOWN_UNVOUCHED,
            KNOWN_ORPHANS,
            KNOWN_POISONED,
            KNOWN_EARLY_BYE,
        ] {
            writeln!(
                f,
                "  {bug:<40} {:>10} frames in {} runs",
                self.known_refusals.get(bug).copied().unwrap_or(0),
                self.runs_with_known_refusals.get(bug).copied().unwrap_or(0)
            )?;
        }
        writeln!(
            f,
            "  writes leaving a change without a stored attestation: {} in {} runs",
            self.unvouched_writes, self.runs_with_unvouched_writes
        )?;
        writeln!(
            f,
            "  sync states saved naming changes the store does not hold: {} in {} runs",
            self.poisoned_saves, self.runs_with_poisoned_saves
        )?;
        writeln!(
            f,
            "  sync messages sent with held-back changes: {} in {} runs",
            self.orphan_messages, self.runs_with_orphan_messages
        )?;
        writeln!(
            f,
            "heal rounds to converge (the quiet round included): max {}, runs by rounds: {}",
            self.max_heal_rounds(),
            self.heal_rounds
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        write!(
            f,
            "virtual time simulated: {:.1} hours",
            self.virtual_ms as f64 / 3_600_000.0
        )?;
        for fail in self.failures.iter().take(10) {
            write!(f, "\n\n{fail}")?;
        }
        if self.failures.len() > 10 {
            write!(f, "\n\n... and {} more failed seeds", self.failures.len() - 10)?;
        }
        Ok(())
    }
}
