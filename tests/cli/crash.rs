//! Crash safety: `duet` processes — writers, one-shot syncs and `serve` — are
//! killed with SIGKILL at random points, many times over, on two paired homes
//! that stay in live sync. After every round each home opens, every edit whose
//! command said it worked is there, and live sync resumes; at the end one clean
//! `duet sync` makes both homes identical. A second test kills `serve` while a
//! big divergent history is being synced; a third (ignored until fixed) shows a
//! `serve` restarted again and again being locked out by its partner.
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

/// Picks what a writer on `home` does in round `round`.
fn pick_op(
    rng: &mut Rng,
    home: usize,
    tag: &str,
    known_issues: &[Vec<String>; 2],
    open_steps: &mut [Vec<(String, String)>; 2],
    ports: [u16; 2],
) -> Op {
    let issues = &known_issues[home];
    loop {
        let op = match rng.below(100) {
            0..30 => Op::IssueAdd {
                title: format!("issue {tag}"),
                body: rng.chance(0.3).then(|| {
                    let n = 20 + rng.below(200) as usize;
                    rng.words(n)
                }),
            },
            30..42 if !issues.is_empty() => Op::Note {
                issue: rng.pick(issues).clone(),
                text: format!("note {tag}"),
            },
            42..56 if !issues.is_empty() => Op::StepAdd {
                issue: rng.pick(issues).clone(),
                text: format!("step {tag}"),
            },
            56..62 if !open_steps[home].is_empty() => {
                let n = rng.below(open_steps[home].len() as u64) as usize;
                let (issue, step) = open_steps[home].swap_remove(n);
                Op::StepDone { issue, step }
            }
            62..74 => Op::Checkin {
                week: rng.pick(&["2026-W10", "2026-W11", "2026-W12"]).to_string(),
                list: if rng.chance(0.5) {
                    "appreciations"
                } else {
                    "went_well"
                },
                text: format!("checkin {tag}"),
            },
            74..82 => Op::Agreement {
                text: format!("agreement {tag}"),
            },
            82..90 => Op::Journal {
                text: format!("journal {tag}"),
            },
            90..100 => Op::Sync {
                addr: format!("127.0.0.1:{}", ports[1 - home]),
            },
            _ => continue,
        };
        return op;
    }
}

/// The state of the main test across rounds.
struct Soak<'a> {
    seed: u64,
    rng: Rng,
    homes: [&'a TestHome; 2],
    ports: [u16; 2],
    servers: [Server; 2],
    /// Every edit known to be stored: the ground truth.
    truth: Vec<Recorded>,
    /// The issues each home is known to hold (for notes and steps).
    known_issues: [Vec<String>; 2],
    /// Steps made on each home that no command was asked to mark done yet.
    open_steps: [Vec<(String, String)>; 2],
    /// How long a writer usually lives, to aim kills at its lifetime (most of
    /// a 300 ms window falls after a quick command has exited).
    typical: Duration,
    t: Tally,
}

impl<'a> Soak<'a> {
    fn new(seed: u64, homes: [&'a TestHome; 2]) -> Soak<'a> {
        let ports = [free_port(), free_port()];
        let mut servers = [0, 1].map(|h| Server {
            port: ports[h],
            peer: ports[1 - h],
            proc: None,
            kill_at: None,
        });
        for (s, h) in servers.iter_mut().zip(homes) {
            s.start(h);
        }
        Soak {
            seed,
            rng: Rng(seed),
            homes,
            ports,
            servers,
            truth: Vec::new(),
            known_issues: [Vec::new(), Vec::new()],
            open_steps: [Vec::new(), Vec::new()],
            typical: Duration::from_millis(60),
            t: Tally {
                serves: 2,
                processes: 2,
                ..Tally::default()
            },
        }
    }

    /// Kills server `h` (SIGKILL) and starts it again at once.
    fn restart(&mut self, h: usize, ctx: &str) {
        self.servers[h].kill(ctx);
        self.servers[h].start(self.homes[h]);
        self.t.killed += 1;
        self.t.killed_serves += 1;
        self.t.processes += 1;
        self.t.serves += 1;
    }

    fn record(&mut self, edit: Edit, home: usize, source: Source, what: String) {
        self.truth.push(Recorded {
            edit,
            home,
            synced: false,
            source,
            what,
        });
    }

    fn round(&mut self, round: usize) {
        let ctx = format!("seed {}, round {round}", self.seed);
        let before = self.truth.len();
        let writers = self.start(round, &ctx);
        let writers = self.kill(writers, &ctx);
        let unsure = self.collect(writers, &ctx);
        self.verify(unsure, &ctx);
        self.resume(round, &ctx);

        // What later writers may refer to.
        for (h, known) in self.known_issues.iter_mut().enumerate() {
            known.clear();
            for r in &self.truth {
                if let Edit::Issue { id, .. } = &r.edit
                    && (r.home == h || r.synced)
                {
                    known.push(id.clone());
                }
            }
        }
        for r in &self.truth[before..] {
            if let Edit::Step { issue, id, .. } = &r.edit {
                self.open_steps[r.home].push((issue.clone(), id.clone()));
            }
        }
    }

    /// Starts the round's writers and picks what to kill when.
    fn start(&mut self, round: usize, ctx: &str) -> Vec<Writer> {
        let now = Instant::now();
        for h in 0..2 {
            // Sometimes a server is restarted as the round begins, so that a
            // kill can land while it opens the home and connects.
            if self.rng.chance(0.15) {
                self.restart(h, ctx);
            }
            self.servers[h].kill_at = self.rng.chance(0.3).then(|| now + self.rng.upto(MAX_DELAY));
        }
        let n = 2 + self.rng.below(5) as usize;
        self.t.processes += n;
        (0..n)
            .map(|w| {
                let home = self.rng.below(2) as usize;
                let tag = format!("s{}-r{round}-w{w}", self.seed);
                let op = pick_op(
                    &mut self.rng,
                    home,
                    &tag,
                    &self.known_issues,
                    &mut self.open_steps,
                    self.ports,
                );
                let kill = matches!(op, Op::Sync { .. }) || self.rng.chance(0.5);
                // Where kills land: anywhere in the window, within a writer's
                // usual lifetime, near its end, as soon as the home's log is
                // written to (by this writer's commit, or another's, or a
                // server's), or as soon as the writer starts printing.
                let typical = self.typical;
                let mode = self.rng.below(5);
                let delay = match mode {
                    1 => self.rng.upto(typical.mul_f64(1.5).min(MAX_DELAY)),
                    2 => (typical.mul_f64(0.6) + self.rng.upto(typical.mul_f64(0.6))).min(MAX_DELAY),
                    _ => self.rng.upto(MAX_DELAY),
                };
                let wal = wal_state(self.homes[home]);
                let mut writer = Writer::spawn(self.homes[home], home, op, &format!("r{round}-w{w}"));
                if kill {
                    if mode >= 3 {
                        writer.kill_on_write = (mode == 3).then_some(wal);
                        writer.kill_on_output = mode == 4;
                        writer.kill_at = Some(writer.started + MAX_DELAY);
                    } else {
                        writer.kill_at = Some(writer.started + delay);
                    }
                }
                writer
            })
            .collect()
    }

    /// Fires the kills when due (restarting a killed server at once) and
    /// notes when each writer ends.
    fn kill(&mut self, mut writers: Vec<Writer>, ctx: &str) -> Vec<Writer> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = Instant::now();
            for w in writers.iter_mut().filter(|w| w.ended.is_none()) {
                if w.child.try_wait().expect("cannot wait for duet").is_some() {
                    w.ended = Some(now);
                } else if w.kill_at.is_some_and(|k| k <= now)
                    || w.kill_on_write
                        .is_some_and(|was| wal_state(self.homes[w.home]) != was)
                {
                    // It may exit between the two calls: then the kill finds a
                    // zombie, or an error once reaped, and changes nothing.
                    let _ = w.child.kill();
                    w.kill_sent = true;
                    w.kill_at = None;
                    w.kill_on_write = None;
                }
            }
            for h in 0..2 {
                if self.servers[h].kill_at.is_some_and(|k| k <= now) {
                    self.servers[h].kill_at = None;
                    self.restart(h, ctx);
                }
            }
            if writers.iter().all(|w| w.ended.is_some()) && self.servers.iter().all(|s| s.kill_at.is_none()) {
                return writers;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: writers still running after 60 s: {:?}",
                writers
                    .iter()
                    .filter(|w| w.ended.is_none())
                    .map(|w| &w.op)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records what each writer reported; returns the killed writers that
    /// printed nothing whole (their edit may or may not be stored) as (home,
    /// op, command).
    fn collect(&mut self, writers: Vec<Writer>, ctx: &str) -> Vec<(usize, Op, String)> {
        let mut unsure = Vec::new();
        for w in writers {
            let (home, op, started, ended, kill_at, kill_sent) =
                (w.home, w.op.clone(), w.started, w.ended, w.kill_at, w.kill_sent);
            let run = w.run();
            let seat = SEATS[home];
            let sync = matches!(op, Op::Sync { .. });
            if sync {
                self.t.syncs += 1;
            } else {
                self.t.writers += 1;
            }
            if run.status.signal() == Some(9) {
                self.t.killed += 1;
                if sync {
                    self.t.killed_syncs += 1;
                } else {
                    self.t.killed_writers += 1;
                    // Killed after printing its whole result: the edit was
                    // committed before the result was printed.
                    match whole_json(&run) {
                        Some(out) => {
                            self.t.printed_then_killed += 1;
                            let edit = op.edit(seat, &out).expect("an edit");
                            self.record(edit, home, Source::PrintedThenKilled, run.args.clone());
                        }
                        None => unsure.push((home, op, run.args.clone())),
                    }
                }
                continue;
            }
            if kill_sent {
                self.t.kills_too_late += 1;
            } else if kill_at.is_some() {
                self.t.kills_not_needed += 1;
            }
            if sync {
                // A sync with a server that was just killed may fail; it must
                // fail cleanly.
                if !run.status.success() {
                    error_line(&run);
                    self.t.syncs_failed_cleanly += 1;
                }
                continue;
            }
            let took = ended.expect("ended") - started;
            self.typical = (self.typical * 7 + took) / 8;
            let args = run.args.clone();
            let out = run.success();
            self.t.exited_ok += 1;
            let out: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{ctx}: {e}: {out}"));
            let edit = op.edit(seat, &out).expect("an edit");
            self.record(edit, home, Source::Exited, args);
        }
        unsure
    }

    /// Every home opens and holds every edit known to be stored; a killed
    /// writer's edit found stored joins them.
    fn verify(&mut self, unsure: Vec<(usize, Op, String)>, ctx: &str) {
        let ix = self.homes.map(|h| opens(h, ctx));
        for (home, op, what) in unsure {
            match op.seen(SEATS[home], &ix[home]) {
                Some(edit) => {
                    self.t.killed_stored += 1;
                    self.record(edit, home, Source::SeenAfterKill, what);
                }
                None => self.t.killed_lost += 1,
            }
        }
        check(&self.truth, &ix, ctx, &mut self.t);
    }

    /// Live sync resumes: an edit on each home reaches the other, and with it
    /// (it depends on them) everything made there before.
    fn resume(&mut self, round: usize, ctx: &str) {
        for s in &mut self.servers {
            s.alive(ctx);
        }
        let start = Instant::now();
        let mut marks = Vec::new();
        for (h, name) in NAMES.iter().enumerate() {
            let title = format!("resume {name} s{}-r{round}", self.seed);
            let id = self.homes[h].add_issue(&title);
            let edit = Edit::Issue {
                id,
                title: title.clone(),
            };
            self.record(edit, h, Source::Exited, "resume mark".into());
            marks.push((h, title, self.truth.len()));
        }
        for (h, title, upto) in marks {
            let other = self.homes[1 - h];
            while !other.issues().iter().any(|i| i["title"] == title.as_str()) {
                for s in &mut self.servers {
                    s.alive(ctx);
                }
                assert!(
                    start.elapsed() < RESUME_LIMIT,
                    "{ctx}: live sync did not resume: `{title}` did not reach {} within {RESUME_LIMIT:?}\n\
                     {}'s serve:\n{}\n{}'s serve:\n{}",
                    NAMES[1 - h],
                    NAMES[0],
                    self.servers[0]
                        .proc
                        .as_ref()
                        .map(Proc::stderr)
                        .unwrap_or_default(),
                    NAMES[1],
                    self.servers[1]
                        .proc
                        .as_ref()
                        .map(Proc::stderr)
                        .unwrap_or_default(),
                );
                std::thread::sleep(Duration::from_millis(25));
            }
            for r in self.truth[..upto]
                .iter_mut()
                .filter(|r| r.home == h && !r.edit.private())
            {
                r.synced = true;
            }
        }
        let took = start.elapsed();
        self.t.resume.push(took);
        if took > SLOW_RESUME {
            // The servers' logs tell why (run with DUET_TEST_LOG=info).
            let logs: Vec<String> = (0..2)
                .map(|h| {
                    let text = self.servers[h]
                        .proc
                        .as_ref()
                        .map(Proc::stderr)
                        .unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    format!(
                        "  {}'s serve: {}",
                        NAMES[h],
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                    )
                })
                .collect();
            eprintln!(
                "crash: {ctx}: live sync took {took:?} to resume\n{}",
                logs.join("\n")
            );
        }
    }

    /// The end: both servers killed once more, then one clean sync must make
    /// the homes identical, holding every edit.
    fn converge(&mut self) -> usize {
        let ctx = format!("seed {}, end", self.seed);
        for s in &mut self.servers {
            s.kill(&ctx);
            self.t.killed += 1;
            self.t.killed_serves += 1;
        }
        let [alex, blair] = self.homes;
        let server = serve(alex, &[]);
        blair.ok(&["sync", &server.addr]);
        let again = blair.json(&["sync", &server.addr]);
        assert_eq!(again[0]["changes_in"], 0, "{ctx}: one sync converged: {again:#}");
        let lists = [
            alex.ok(&["issue", "list", "--json"]),
            blair.ok(&["issue", "list", "--json"]),
        ];
        assert_eq!(lists[0], lists[1], "{ctx}: both homes list the same issues");
        assert_eq!(
            shared(alex),
            shared(blair),
            "{ctx}: both homes hold the same record"
        );
        for r in &mut self.truth {
            r.synced = !r.edit.private();
        }
        let ix = self.homes.map(|h| opens(h, &ctx));
        check(&self.truth, &ix, &ctx, &mut self.t);
        server.stop("TERM").success();
        ix[0].issues.len()
    }

    fn summary(&self, rounds: usize, issues: usize, took: Duration) -> String {
        let t = &self.t;
        let count = |s: Source| self.truth.iter().filter(|r| r.source == s).count();
        let mut resume = t.resume.clone();
        resume.sort();
        format!(
            "crash summary: {rounds} rounds, {} processes ({} writers, {} one-shot syncs, {} serves), \
             {} killed while running ({} writers, {} syncs, {} serves); {} writers exited before their \
             kill ({} of them after it was sent); killed writers: {} printed their result, {} stored \
             without a word, {} not stored; {} edits verified ({} acknowledged by exit, {} printed then \
             killed, {} seen after a kill; {} checks); {} syncs failed cleanly; sync resumed within p50 \
             {:?}, max {:?} ({} slower than {SLOW_RESUME:?}); {issues} issues; a writer lived {:?}; {:.1} s; seed {}",
            t.processes,
            t.writers,
            t.syncs,
            t.serves,
            t.killed,
            t.killed_writers,
            t.killed_syncs,
            t.killed_serves,
            t.kills_not_needed + t.kills_too_late,
            t.kills_too_late,
            t.printed_then_killed,
            t.killed_stored,
            t.killed_lost,
            self.truth.len(),
            count(Source::Exited),
            count(Source::PrintedThenKilled),
            count(Source::SeenAfterKill),
            t.checks,
            t.syncs_failed_cleanly,
            resume.get(resume.len() / 2).copied().unwrap_or_default(),
            resume.last().copied().unwrap_or_default(),
            resume.iter().filter(|r| **r > SLOW_RESUME).count(),
            self.typical,
            took.as_secs_f64(),
            self.seed,
        )
    }
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_edit_and_sync_resumes() {
    let started = Instant::now();
    let seed = seed();
    let rounds = rounds(CI_ROUNDS);
    eprintln!("crash: seed {seed} (DUET_CRASH_SEED={seed} repeats it), {rounds} rounds");
    let (alex, blair) = couple(|_| {});
    let mut soak = Soak::new(seed, [&alex, &blair]);
    for round in 0..rounds {
        soak.round(round);
        if (round + 1) % 50 == 0 {
            eprintln!(
                "crash: {} rounds in {:.0} s, {} edits so far",
                round + 1,
                started.elapsed().as_secs_f64(),
                soak.truth.len()
            );
        }
    }
    let issues = soak.converge();
    eprintln!("{}", soak.summary(rounds, issues, started.elapsed()));
}

/// Polls `h` until an issue titled `title` is there; false after `limit`.
fn arrives(h: &TestHome, title: &str, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if h.issues().iter().any(|i| i["title"] == title) {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_serve_restarted_again_and_again_gets_back_in_at_once() {
    // A phone's app killed and restarted by its system several times in a
    // minute: each time it comes back, live sync with the partner resumes.
    let (alex, blair) = couple(|_| {});
    let ports = [free_port(), free_port()];
    let mut servers = [0, 1].map(|h| Server {
        port: ports[h],
        peer: ports[1 - h],
        proc: None,
        kill_at: None,
    });
    servers[0].start(&alex);
    servers[1].start(&blair);
    let limit = Duration::from_secs(5);
    for n in 0..8 {
        let title = format!("Alex, run {n} of serve");
        alex.add_issue(&title);
        assert!(
            arrives(&blair, &title, limit),
            "after {n} kills of Alex's serve, live sync did not resume within {limit:?}\n\
             Alex's serve:\n{}\nBlair's serve:\n{}",
            servers[0].proc.as_ref().map(Proc::stderr).unwrap_or_default(),
            servers[1].proc.as_ref().map(Proc::stderr).unwrap_or_default(),
        );
        servers[0].kill("restart");
        servers[0].start(&alex);
    }
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

/// The files of a home, to put it back as it was.
fn save(h: &TestHome) -> Vec<(PathBuf, Vec<u8>)> {
    h.files()
}

/// Puts back the files `saved` (no process may have the home open): every
/// file now in the folder goes first, so no newer -wal is replayed onto the
/// older database.
fn restore(h: &TestHome, saved: &[(PathBuf, Vec<u8>)]) {
    for (path, _) in h.files() {
        std::fs::remove_file(&path).expect("cannot remove a home file");
    }
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("cannot restore a home file");
    }
}

/// One home's own offline history in the big-sync test.
#[derive(Default)]
struct History {
    /// title -> body
    issues: HashMap<String, String>,
    notes: HashSet<String>,
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

/// The bodies of the big issues a home holds (`ix`) are whole.
#[track_caller]
fn bodies_whole(ix: &Index, all: &HashMap<String, String>, ctx: &str) {
    for i in &ix.list {
        let title = str_of(i, "title");
        let body = all
            .get(&title)
            .unwrap_or_else(|| panic!("{ctx}: an issue from nowhere: {title}"));
        assert!(
            i["body"] == body.as_str(),
            "{ctx}: issue `{title}` is there but its body is not whole ({} of {} bytes)",
            i["body"].as_str().map_or(0, str::len),
            body.len()
        );
    }
}

#[test]
fn killing_serve_during_a_big_divergent_sync_loses_nothing_and_the_next_sync_converges() {
    let started = Instant::now();
    let seed = seed();
    let kills = (rounds(CI_ROUNDS) / 10).max(CI_BIG_KILLS);
    eprintln!("crash (big sync): seed {seed} (DUET_CRASH_SEED={seed} repeats it), {kills} kills");
    let mut rng = Rng(seed ^ 0xb165_c0de);
    let (alex, blair) = couple(|_| {});
    let homes = [&alex, &blair];

    // Each writes a history of its own offline: a few long texts that
    // compress poorly, and many notes on them: more changes than one sync
    // message carries (64), so the sync takes several messages, each stored
    // in its own transaction.
    // The history is written through the engine, in this process: the same
    // changes `duet issue add` and `duet issue note` make, without starting
    // hundreds of processes.
    let (issues, notes) = (4, 300);
    let mut own: [History; 2] = [History::default(), History::default()];
    for (h, home) in homes.iter().enumerate() {
        let mut engine = duet::Home::open(home.path()).expect("open the home in-process");
        let mut ids = Vec::new();
        for k in 0..issues {
            let title = format!("big {} {k}", NAMES[h]);
            let body = rng.words(1500);
            let new = duet::model::NewIssue {
                title: title.clone(),
                body: body.clone(),
                ..Default::default()
            };
            ids.push(
                engine
                    .add_issue(&new)
                    .expect("add an issue")
                    .id
                    .as_str()
                    .to_string(),
            );
            own[h].issues.insert(title, body);
        }
        for k in 0..notes {
            let text = format!("note {} {k} {}", NAMES[h], rng.words(8));
            let id = rng.pick(&ids).clone();
            engine.add_note(&id, &text).expect("add a note");
            own[h].notes.insert(text);
        }
    }
    let all: HashMap<String, String> = own
        .iter()
        .flat_map(|o| &o.issues)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pristine = [save(&alex), save(&blair)];
    let before = [opens(&alex, "before").changes, opens(&blair, "before").changes];

    // How long a whole sync takes here, from starting `duet sync` to its exit.
    let server = serve(&alex, &[]);
    let t0 = Instant::now();
    let report = blair.json(&["sync", &server.addr]);
    let whole = t0.elapsed();
    drop(server);
    let full = opens(&alex, "first sync").changes;
    eprintln!("a whole sync: {whole:?}: {report}; {before:?} changes before, {full} after");
    for (h, home) in homes.iter().enumerate() {
        let ix = opens(home, "first sync");
        assert_eq!(ix.changes, full);
        assert_eq!(holds(&ix, &own[1 - h]), (issues, notes));
    }

    let mut outcomes = Vec::new();
    let mut killed = 0;
    let (mut early, mut apart, mut late) = (0, 0, 0);
    // Kills aimed between the latest delay that moved nothing yet and the
    // earliest that had moved everything (for a one-shot sync and for two
    // servers), learnt as the kills go; one in four anywhere.
    let mut windows = [(Duration::ZERO, whole); 2];
    for n in 0..kills {
        let ctx = format!("seed {seed}, kill {n}");
        restore(&alex, &pristine[0]);
        restore(&blair, &pristine[1]);
        // Who serves, who dials, and when the server is killed.
        let listener = rng.below(2) as usize;
        let dialler = 1 - listener;
        let live = rng.chance(0.5);
        let (nothing, everything) = windows[usize::from(live)];
        // (The two bounds cross when timings jitter: then aim around them.)
        let (low, high) = (
            nothing.min(everything).mul_f64(0.9),
            nothing.max(everything).mul_f64(1.1),
        );
        let delay = if rng.chance(0.25) {
            rng.upto(whole)
        } else {
            low + rng.upto(high - low)
        };
        let server = serve(homes[listener], &[]);
        let mut client = if live {
            homes[dialler].spawn(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--peer",
                &server.addr,
                "--json",
            ])
        } else {
            homes[dialler].spawn(&["sync", &server.addr, "--json"])
        };
        let t0 = Instant::now();
        let done_before = client.wait_timeout(delay).is_some();
        let kill_after = t0.elapsed();
        server.proc.signal("KILL");
        let server_run = server.proc.finish();
        assert_eq!(server_run.status.signal(), Some(9), "{ctx}: {server_run:?}");
        killed += 1;
        // A live dialler is killed too, at once or a little later; a one-shot
        // sync whose server vanished would wait for the idle timeout (30 s).
        let grace = if live { rng.upto(MAX_DELAY) } else { MAX_DELAY };
        if client.wait_timeout(grace).is_none() {
            client.signal("KILL");
        }
        let run = client.finish();
        killed += usize::from(run.status.signal() == Some(9));
        if run.status.code().is_some() && !run.status.success() {
            error_line(&run);
        }

        // Both homes open and hold their own history; what arrived of the
        // other's is whole.
        let ix = [opens(&alex, &ctx), opens(&blair, &ctx)];
        let mut got = [(0, 0); 2];
        for h in 0..2 {
            // Nothing runs now: the list and the export agree.
            assert_eq!(ix[h].list.len(), ix[h].issues.len(), "{ctx}");
            assert_eq!(
                holds(&ix[h], &own[h]),
                (issues, notes),
                "{ctx}: {} lost edits",
                NAMES[h]
            );
            assert!(ix[h].changes >= before[h], "{ctx}: {} lost changes", NAMES[h]);
            bodies_whole(&ix[h], &all, &ctx);
            got[h] = holds(&ix[h], &own[1 - h]);
        }
        if !live && run.status.success() {
            assert_eq!(
                got,
                [(issues, notes); 2],
                "{ctx}: a sync that said it finished moved everything"
            );
        }
        let partial = got.iter().any(|g| *g != (0, 0) && *g != (issues, notes));
        let w = &mut windows[usize::from(live)];
        if got == [(0, 0); 2] {
            w.0 = w.0.max(kill_after);
            early += 1;
        } else if got == [(issues, notes); 2] {
            w.1 = w.1.min(kill_after);
            late += 1;
        } else {
            apart += 1;
        }
        outcomes.push(format!(
            "{}'s serve killed {kill_after:?} after {} started{}: {} {:?}; {} got {:?} of {:?} (issues, notes), {} got {:?}{}",
            NAMES[listener],
            if live { "the other's serve" } else { "the other's `sync`" },
            if done_before { " (which had exited)" } else { "" },
            if live { "serve" } else { "sync" },
            run.status,
            NAMES[listener],
            got[listener],
            (issues, notes),
            NAMES[dialler],
            got[dialler],
            if partial { " (partial)" } else { "" },
        ));

        // The next sync, with a fresh server, converges.
        let server = serve(homes[listener], &[]);
        homes[dialler].ok(&["sync", &server.addr]);
        let ix = [opens(&alex, &ctx), opens(&blair, &ctx)];
        for h in 0..2 {
            assert_eq!(ix[h].changes, full, "{ctx}");
            assert_eq!(holds(&ix[h], &own[1 - h]), (issues, notes), "{ctx}");
            bodies_whole(&ix[h], &all, &ctx);
        }
        assert_eq!(
            ix[0].shared, ix[1].shared,
            "{ctx}: both homes hold the same record"
        );
        server.stop("TERM").success();
    }
    eprintln!("crash (big sync) outcomes: {outcomes:#?}");
    eprintln!(
        "crash summary (big sync): {kills} kills of serve during a sync of {} changes ({} KiB of text) each way; \
         {} before anything moved, {apart} mid-exchange (the homes left apart), {} after everything \
         moved; {killed} processes killed; every home opened, lost nothing and converged on the next sync; whole sync {whole:?}; {:.1} s; seed {seed}",
        report[0]["changes_in"],
        own[0]
            .issues
            .values()
            .chain(&own[0].notes)
            .map(String::len)
            .sum::<usize>()
            / 1024,
        early,
        late,
        started.elapsed().as_secs_f64()
    );
}
