//! Crash safety: `duet` processes — writers, one-shot syncs and `serve` — are
//! killed with SIGKILL at random points, many times over, on two paired homes
//! that stay in live sync. After every round each home opens, every edit whose
//! command said it worked is there, and live sync resumes; at the end one clean
//! `duet sync` makes both homes identical. A second test kills `serve` while a
//! big divergent history is being synced; a third restarts a `serve` again and
//! again and checks that its partner lets it back in at once; a fourth kills a
//! new device's `pair join` during its first sync (the whole history stored in
//! one write) and pairs it again.
//!
//! The tests are seeded: the seed is printed first, and `DUET_CRASH_SEED=N`
//! repeats the random choices (where a kill lands, and so what later rounds
//! build on, still depends on the machine). `DUET_CRASH_ROUNDS=N` sets the
//! number of rounds (default [`CI_ROUNDS`]); `scripts/crash.sh` runs them
//! longer and prints the summary lines. `DUET_TEST_LOG=info` keeps the
//! servers' logs, shown when live sync is slow to resume.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Proc, Run, TestHome, couple, error_line, serve, shared, str_of};

mod big_sync;
mod first_sync;
mod soak;

/// Rounds of the writers-and-servers test in `cargo test`.
const CI_ROUNDS: usize = 25;

/// Kills in the big-sync test in `cargo test` (with `DUET_CRASH_ROUNDS=N`,
/// N / 10 if more).
const CI_BIG_KILLS: usize = 3;

/// The longest delay before a kill.
const MAX_DELAY: Duration = Duration::from_millis(300);

/// How long live sync may take to carry an edit across after a round: the
/// bound for "it resumes" (see `a_serve_restarted_again_and_again_gets_back_in_at_once`
/// for how long it should take).
const RESUME_LIMIT: Duration = Duration::from_secs(60);

/// A resume slower than this is reported (and counted in the summary).
const SLOW_RESUME: Duration = Duration::from_secs(3);

/// A small deterministic generator (SplitMix64): no dependency, and the same
/// seed gives the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A duration in `0..=max`.
    fn upto(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }

    /// One of `items` (non-empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` random words: text that compresses poorly.
    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                let len = 2 + self.below(7);
                (0..len)
                    .map(|_| char::from(b'a' + self.below(26) as u8))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The seed: `DUET_CRASH_SEED` (decimal or 0x-hex), or a fresh one.
fn seed() -> u64 {
    match std::env::var("DUET_CRASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("DUET_CRASH_SEED={s} is not a number: {e}"))
        }
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let mut r = Rng(now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32));
            r.next()
        }
    }
}

/// `DUET_CRASH_ROUNDS`, or `default`.
fn rounds(default: usize) -> usize {
    match std::env::var("DUET_CRASH_ROUNDS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("DUET_CRASH_ROUNDS={s} is not a number: {e}")),
        Err(_) => default,
    }
}

/// A UDP port nobody uses right now, for a `serve` that is restarted at the
/// same address after every kill (so its partner can dial it again).
fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket");
    s.local_addr().expect("local address").port()
}

/// The seat of the two homes: Alex hosted the pairing (`a`), Blair joined (`b`).
const SEATS: [&str; 2] = ["a", "b"];
const NAMES: [&str; 2] = ["Alex", "Blair"];

/// An edit a command said it made, as it can be found in an export.
#[derive(Debug, Clone)]
enum Edit {
    Issue {
        id: String,
        title: String,
    },
    Note {
        issue: String,
        text: String,
    },
    Step {
        issue: String,
        id: String,
        text: String,
    },
    StepDone {
        issue: String,
        step: String,
    },
    Checkin {
        week: String,
        seat: &'static str,
        list: &'static str,
        text: String,
    },
    Agreement {
        id: String,
        text: String,
    },
    Journal {
        text: String,
    },
}

impl Edit {
    fn private(&self) -> bool {
        matches!(self, Edit::Journal { .. })
    }
}

/// How an edit became part of the ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// The command exited with success.
    Exited,
    /// The command printed its whole result, then was killed before exiting.
    PrintedThenKilled,
    /// The command was killed without a word, but its edit was found stored:
    /// once seen, it must stay.
    SeenAfterKill,
}

#[derive(Debug)]
struct Recorded {
    edit: Edit,
    /// The home it was made on.
    home: usize,
    /// Known to have reached the other home by live sync (a later edit of
    /// this home, which depends on it, arrived there).
    synced: bool,
    source: Source,
    /// The command, for messages.
    what: String,
}

/// What a writer is asked to do.
#[derive(Debug, Clone)]
enum Op {
    IssueAdd {
        title: String,
        body: Option<String>,
    },
    Note {
        issue: String,
        text: String,
    },
    StepAdd {
        issue: String,
        text: String,
    },
    StepDone {
        issue: String,
        step: String,
    },
    Checkin {
        week: String,
        list: &'static str,
        text: String,
    },
    Agreement {
        text: String,
    },
    Journal {
        text: String,
    },
    /// A one-shot `duet sync` with the other home's server: always killed.
    Sync {
        addr: String,
    },
}

impl Op {
    fn args(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|a| (*a).to_string()).collect::<Vec<String>>();
        let mut args = match self {
            Op::IssueAdd { title, body } => {
                let mut a = s(&["issue", "add", title]);
                if let Some(b) = body {
                    a.extend(s(&["--body", b]));
                }
                a
            }
            Op::Note { issue, text } => s(&["issue", "note", issue, text]),
            Op::StepAdd { issue, text } => s(&["step", "add", issue, text]),
            Op::StepDone { step, .. } => s(&["step", "done", step]),
            Op::Checkin { week, list, text } => {
                let cmd = if *list == "appreciations" {
                    "appreciate"
                } else {
                    "well"
                };
                s(&["checkin", cmd, text, "--week", week])
            }
            Op::Agreement { text } => s(&["agreement", "add", text, "--kind", "ritual"]),
            Op::Journal { text } => s(&["journal", "add", text]),
            Op::Sync { addr } => s(&["sync", addr]),
        };
        args.push("--json".into());
        args
    }

    /// The edit a whole JSON result (`out`) of this command on the home in
    /// `seat` reports, checked against what was asked.
    fn edit(&self, seat: &'static str, out: &Value) -> Option<Edit> {
        Some(match self {
            Op::IssueAdd { title, .. } => {
                assert_eq!(&str_of(out, "title"), title, "{out:#}");
                Edit::Issue {
                    id: str_of(out, "id"),
                    title: title.clone(),
                }
            }
            Op::Note { issue, text } => {
                assert_eq!(&str_of(out, "id"), issue, "{out:#}");
                assert!(
                    out["notes"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n["text"] == text.as_str())),
                    "{out:#}"
                );
                Edit::Note {
                    issue: issue.clone(),
                    text: text.clone(),
                }
            }
            Op::StepAdd { issue, text } => {
                assert_eq!(&str_of(out, "issue_id"), issue, "{out:#}");
                assert_eq!(&str_of(out, "text"), text, "{out:#}");
                Edit::Step {
                    issue: issue.clone(),
                    id: str_of(out, "id"),
                    text: text.clone(),
                }
            }
            Op::StepDone { issue, step } => {
                assert_eq!(&str_of(out, "id"), step, "{out:#}");
                assert_eq!(out["done"], true, "{out:#}");
                Edit::StepDone {
                    issue: issue.clone(),
                    step: step.clone(),
                }
            }
            Op::Checkin { week, list, text } => {
                assert_eq!(&str_of(out, "week"), week, "{out:#}");
                Edit::Checkin {
                    week: week.clone(),
                    seat,
                    list,
                    text: text.clone(),
                }
            }
            Op::Agreement { text } => {
                assert_eq!(&str_of(out, "text"), text, "{out:#}");
                Edit::Agreement {
                    id: str_of(out, "id"),
                    text: text.clone(),
                }
            }
            Op::Journal { text } => {
                assert_eq!(&str_of(out, "text"), text, "{out:#}");
                Edit::Journal { text: text.clone() }
            }
            Op::Sync { .. } => return None,
        })
    }

    /// The edit of a command killed without printing, if it was stored after
    /// all (found in `ix`, the home's export afterwards).
    fn seen(&self, seat: &'static str, ix: &Index) -> Option<Edit> {
        match self {
            Op::IssueAdd { title, .. } => ix.titles.get(title).map(|id| Edit::Issue {
                id: id.clone(),
                title: title.clone(),
            }),
            Op::Note { issue, text } => {
                ix.issues
                    .get(issue)
                    .filter(|i| i.notes.contains(text))
                    .map(|_| Edit::Note {
                        issue: issue.clone(),
                        text: text.clone(),
                    })
            }
            Op::StepAdd { issue, text } => ix.issues.get(issue).and_then(|i| {
                i.steps
                    .iter()
                    .find(|(_, (t, _))| t == text)
                    .map(|(id, _)| Edit::Step {
                        issue: issue.clone(),
                        id: id.clone(),
                        text: text.clone(),
                    })
            }),
            // Cannot tell a done step from one done by another command.
            Op::StepDone { .. } | Op::Sync { .. } => None,
            Op::Checkin { week, list, text } => {
                let e = Edit::Checkin {
                    week: week.clone(),
                    seat,
                    list,
                    text: text.clone(),
                };
                ix.has(&e).then_some(e)
            }
            Op::Agreement { text } => ix.agreement_texts.get(text).map(|id| Edit::Agreement {
                id: id.clone(),
                text: text.clone(),
            }),
            Op::Journal { text } => ix
                .journal
                .contains(text)
                .then(|| Edit::Journal { text: text.clone() }),
        }
    }
}

#[derive(Debug, Default)]
struct IssueIx {
    title: String,
    notes: HashSet<String>,
    /// id -> (text, done)
    steps: HashMap<String, (String, bool)>,
}

/// A home's private JSON export, indexed for lookups.
#[derive(Debug, Default)]
struct Index {
    issues: HashMap<String, IssueIx>,
    titles: HashMap<String, String>,
    /// (week, seat, list) -> texts
    checkins: HashMap<(String, String, String), HashSet<String>>,
    agreements: HashMap<String, String>,
    agreement_texts: HashMap<String, String>,
    journal: HashSet<String>,
    /// Changes in the home's log (from `status`).
    changes: u64,
    /// What `issue list --json` gave.
    list: Vec<Value>,
    /// The export without its time stamp and the private journal: what two
    /// homes in sync have alike.
    shared: Value,
}

fn texts(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
}

impl Index {
    fn of(export: &Value) -> Index {
        let mut ix = Index::default();
        for i in export["issues"].as_array().expect("issues") {
            let id = str_of(i, "id");
            let mut e = IssueIx {
                title: str_of(i, "title"),
                ..IssueIx::default()
            };
            for n in i["notes"].as_array().expect("notes") {
                e.notes.insert(str_of(n, "text"));
            }
            for s in i["steps"].as_array().expect("steps") {
                e.steps
                    .insert(str_of(s, "id"), (str_of(s, "text"), s["done"] == true));
            }
            ix.titles.insert(e.title.clone(), id.clone());
            ix.issues.insert(id, e);
        }
        for c in export["checkins"].as_array().expect("checkins") {
            let week = str_of(c, "week");
            for p in c["partners"].as_array().expect("partners") {
                let seat = str_of(&p["partner"], "seat");
                for list in ["appreciations", "went_well"] {
                    ix.checkins
                        .entry((week.clone(), seat.clone(), list.to_string()))
                        .or_default()
                        .extend(texts(&p[list]));
                }
            }
        }
        for a in export["agreements"].as_array().expect("agreements") {
            ix.agreements.insert(str_of(a, "id"), str_of(a, "text"));
            ix.agreement_texts.insert(str_of(a, "text"), str_of(a, "id"));
        }
        for j in export["journal"].as_array().expect("journal") {
            ix.journal.insert(str_of(j, "text"));
        }
        ix
    }

    fn has(&self, e: &Edit) -> bool {
        match e {
            Edit::Issue { id, title } => self.issues.get(id).is_some_and(|i| &i.title == title),
            Edit::Note { issue, text } => self.issues.get(issue).is_some_and(|i| i.notes.contains(text)),
            Edit::Step { issue, id, text } => self
                .issues
                .get(issue)
                .and_then(|i| i.steps.get(id))
                .is_some_and(|(t, _)| t == text),
            Edit::StepDone { issue, step } => self
                .issues
                .get(issue)
                .and_then(|i| i.steps.get(step))
                .is_some_and(|(_, done)| *done),
            Edit::Checkin {
                week,
                seat,
                list,
                text,
            } => self
                .checkins
                .get(&(week.clone(), (*seat).to_string(), (*list).to_string()))
                .is_some_and(|t| t.contains(text)),
            Edit::Agreement { id, text } => self.agreements.get(id) == Some(text),
            Edit::Journal { text } => self.journal.contains(text),
        }
    }
}

/// A home's own history written for a test: issue titles with their bodies,
/// and note texts.
#[derive(Default)]
struct History {
    /// title -> body
    issues: HashMap<String, String>,
    notes: HashSet<String>,
}

/// Writes `issues` issues titled "`prefix` k" with long bodies (text that
/// compresses poorly) and `notes` notes on them to `home`, in this process
/// through the engine: the changes `duet issue add` and `duet issue note`
/// make, without starting hundreds of processes.
fn write_history(home: &TestHome, rng: &mut Rng, prefix: &str, issues: usize, notes: usize) -> History {
    let mut own = History::default();
    let mut engine = duet::Home::open(home.path()).expect("open the home in-process");
    let mut ids = Vec::new();
    for k in 0..issues {
        let title = format!("{prefix} {k}");
        let body = rng.words(1500);
        let new = duet::model::NewIssue {
            title: title.clone(),
            body: body.clone(),
            ..Default::default()
        };
        let added = engine.add_issue(&new).expect("add an issue");
        ids.push(added.id.as_str().to_string());
        own.issues.insert(title, body);
    }
    for k in 0..notes {
        let text = format!("note {prefix} {k} {}", rng.words(8));
        let id = rng.pick(&ids).clone();
        engine.add_note(&id, &text).expect("add a note");
        own.notes.insert(text);
    }
    own
}

/// How much of `own` (a home's history) `ix` holds: (issues, notes).
#[track_caller]
fn holds(ix: &Index, own: &History) -> (usize, usize) {
    let issues = own.issues.keys().filter(|t| ix.titles.contains_key(*t)).count();
    let notes = ix
        .issues
        .values()
        .flat_map(|i| &i.notes)
        .filter(|n| own.notes.contains(*n))
        .count();
    (issues, notes)
}

/// Opens `h` the ways a user would: `status`, `issue list` and a full private
/// export must all succeed. Returns the export, indexed.
#[track_caller]
fn opens(h: &TestHome, ctx: &str) -> Index {
    let mut got = Vec::new();
    for args in [
        &["status", "--json"][..],
        &["issue", "list", "--json"][..],
        &["export", "--format", "json", "--private"][..],
    ] {
        let run = h.run(args);
        assert!(
            run.status.success(),
            "{ctx}: `duet {}` failed after the kills: {}",
            run.args,
            run.stderr
        );
        let v: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{ctx}: `duet {}` gave invalid JSON: {e}", run.args));
        got.push(v);
    }
    let mut ix = Index::of(&got[2]);
    ix.changes = got[0]["changes"]
        .as_u64()
        .expect("status gives the number of changes");
    ix.list = got[1].as_array().expect("issue list is an array").clone();
    let export = got[2].as_object_mut().expect("export is an object");
    export.remove("exported_at");
    export.remove("journal");
    ix.shared = got.swap_remove(2);
    ix
}

/// The whole JSON result a process printed, if it printed one.
fn whole_json(run: &Run) -> Option<Value> {
    serde_json::from_str(&run.stdout).ok()
}

/// A writer (or one-shot sync) started in a round, and when to kill it. Its
/// output goes to files, so a big result never blocks it on a full pipe, and
/// it is killed with `Child::kill` (SIGKILL, at once: no `kill` process).
struct Writer {
    child: std::process::Child,
    args: Vec<String>,
    out: PathBuf,
    err: PathBuf,
    home: usize,
    op: Op,
    started: Instant,
    kill_at: Option<Instant>,
    /// Kill it as soon as the home's write-ahead log differs from this (as it
    /// was when the writer started): when a commit is being written.
    kill_on_write: Option<WalState>,
    /// Kill it as soon as it starts printing its result (its edit committed).
    kill_on_output: bool,
    /// The kill was sent while it ran (it may still have exited first).
    kill_sent: bool,
    ended: Option<Instant>,
}

/// The size and time stamp of a home's `duet.db-wal`.
type WalState = Option<(u64, std::time::SystemTime)>;

fn wal_state(h: &TestHome) -> WalState {
    let m = std::fs::metadata(h.path().join("duet.db-wal")).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl Writer {
    fn spawn(h: &TestHome, home: usize, op: Op, name: &str) -> Writer {
        let args = op.args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, err) = (
            h.tmp().join(format!("{name}.out")),
            h.tmp().join(format!("{name}.err")),
        );
        let mut cmd = h.command(&a);
        cmd.stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"));
        let started = Instant::now();
        let child = cmd.spawn().expect("cannot spawn duet");
        Writer {
            child,
            args,
            out,
            err,
            home,
            op,
            started,
            kill_at: None,
            kill_on_write: None,
            kill_on_output: false,
            kill_sent: false,
            ended: None,
        }
    }

    /// How it ended, once it has.
    fn run(mut self) -> Run {
        let status = self.child.wait().expect("cannot wait for duet");
        let a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let output = std::process::Output {
            status,
            stdout: std::fs::read(&self.out).expect("stdout file"),
            stderr: std::fs::read(&self.err).expect("stderr file"),
        };
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
        Run::new(&a, output)
    }
}

impl Drop for Writer {
    /// A test that fails leaves no writer behind (a no-op once it was reaped).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `duet serve` kept running on one home, at a fixed port, dialling the
/// other home's server; restarted after every kill.
struct Server {
    port: u16,
    peer: u16,
    proc: Option<Proc>,
    kill_at: Option<Instant>,
}

impl Server {
    fn start(&mut self, h: &TestHome) {
        assert!(self.proc.is_none());
        let listen = format!("127.0.0.1:{}", self.port);
        let peer = format!("127.0.0.1:{}", self.peer);
        self.proc = Some(h.spawn(&["serve", "--listen", &listen, "--peer", &peer, "--json"]));
    }

    /// Kills the server; panics if it had stopped by itself.
    fn kill(&mut self, ctx: &str) {
        let mut p = self.proc.take().expect("a running server");
        if let Some(status) = p.wait_timeout(Duration::ZERO) {
            panic!(
                "{ctx}: `duet serve` stopped by itself ({status:?}):\n{}",
                p.stderr()
            );
        }
        p.signal("KILL");
        let run = p.finish();
        assert_eq!(
            run.status.signal(),
            Some(9),
            "{ctx}: `duet serve` ended otherwise: {run:?}"
        );
    }

    /// Panics if the server stopped by itself.
    fn alive(&mut self, ctx: &str) {
        let p = self.proc.as_mut().expect("a running server");
        if let Some(status) = p.wait_timeout(Duration::ZERO) {
            panic!(
                "{ctx}: `duet serve` stopped by itself ({status:?}):\n{}",
                p.stderr()
            );
        }
    }
}

/// What happened over a run, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    processes: usize,
    writers: usize,
    syncs: usize,
    serves: usize,
    killed: usize,
    killed_writers: usize,
    killed_syncs: usize,
    killed_serves: usize,
    kills_too_late: usize,
    kills_not_needed: usize,
    killed_stored: usize,
    killed_lost: usize,
    printed_then_killed: usize,
    exited_ok: usize,
    syncs_failed_cleanly: usize,
    checks: usize,
    resume: Vec<Duration>,
}

/// Every recorded edit is on its home, and on the other home once synced; a
/// journal entry never is.
#[track_caller]
fn check(truth: &[Recorded], ix: &[Index; 2], ctx: &str, t: &mut Tally) {
    for r in truth {
        assert!(
            ix[r.home].has(&r.edit),
            "{ctx}: {}'s home lost an edit ({:?}, {}): {:?}",
            NAMES[r.home],
            r.source,
            r.what,
            r.edit
        );
        t.checks += 1;
        let other = &ix[1 - r.home];
        if r.edit.private() {
            assert!(
                !other.has(&r.edit),
                "{ctx}: a journal entry left its home: {:?}",
                r.edit
            );
        } else if r.synced {
            assert!(
                other.has(&r.edit),
                "{ctx}: {}'s home lost an edit synced from {} ({:?}, {}): {:?}",
                NAMES[1 - r.home],
                NAMES[r.home],
                r.source,
                r.what,
                r.edit
            );
            t.checks += 1;
        }
    }
}
