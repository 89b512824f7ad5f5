//! Load: two devices, each making `--rate` edits a second for `--seconds`
//! seconds, kept in sync live by `serve` over loopback QUIC.
//!
//! Both homes run in this process, each with its own `serve` (one dials the
//! other, as `duet serve --peer` does). Each side's editor makes a mix of edits
//! at a steady pace: new issues, notes, steps added and completed, and
//! concurrent edits to one shared issue (notes, its status, its body). Once
//! the editors stop, the run waits for both homes to hold the same heads and
//! checks every edit made is present on both sides, in memory and reopened from
//! disk. Memory (VmRSS, VmHWM from /proc/self/status) is sampled every second;
//! the live latency of each edit (made on one side, present on the other) is
//! measured to within one edit interval.
//!
//! ```sh
//! cargo run --release -p duet --example load                       # 120 s at 50 edits/s per side
//! cargo run --release -p duet --example load -- --seconds 10 --rate 20
//! ```
//!
//! It exits with an error if an edit failed or was lost, or the homes did not
//! converge. `crates/engine/tests/load.rs` runs a short version of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use automerge::{ChangeHash, ReadDoc};
use duet::model::{IssueEdit, IssueFilter, IssueStatus, NewIssue, Outcome};
use duet::{Home, InitOptions, PairHost, ServeOptions, Who, WhoseDevice};

/// Any error of the run.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Shared = Arc<Mutex<Home>>;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long each side edits.
    pub seconds: f64,
    /// Edits per second on each side.
    pub rate: u32,
    /// How long to wait for convergence after the last edit.
    pub converge_timeout: Duration,
    /// The share of edits (percent) both sides make to one shared issue;
    /// the rest go to each side's own issues.
    pub shared_percent: u32,
    /// Print a line every ten seconds while editing.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seconds: 120.0,
            rate: 50,
            converge_timeout: Duration::from_secs(120),
            shared_percent: 40,
            progress: true,
        }
    }
}

/// One memory sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the editors started.
    pub at: f64,
    /// Edits made so far (both sides).
    pub edits: usize,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// How long one kind of edit took (holding its home's lock).
#[derive(Debug, Clone)]
pub struct EditTimes {
    /// The kind of edit.
    pub kind: &'static str,
    /// Every time, sorted.
    pub sorted: Vec<Duration>,
    /// The mean over the first tenth of the run's edits of this kind.
    pub first_tenth: Duration,
    /// The mean over the last tenth: against `first_tenth`, how the cost
    /// grew with the document.
    pub last_tenth: Duration,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The configuration.
    pub config: Config,
    /// Edits made by each side (Sam's, Alex's).
    pub edits: [usize; 2],
    /// Edits that returned an error (none should).
    pub failed: usize,
    /// The first few failures.
    pub failures: Vec<String>,
    /// Edits made but missing from a side at the end.
    pub lost: usize,
    /// The first few lost edits.
    pub lost_examples: Vec<String>,
    /// Notes on the shared issue at the end.
    pub shared_notes: usize,
    /// The records of both sides are equal at the end (issues, check-ins, ...).
    pub same_record: bool,
    /// How long after the last edit both sides held the same heads (`None`:
    /// not within the timeout).
    pub converged_after: Option<Duration>,
    /// How long the editing took, first edit to last.
    pub editing: Duration,
    /// The largest delay of an edit behind its schedule.
    pub max_lag: Duration,
    /// Changes in each side's log at the end.
    pub changes: [i64; 2],
    /// RSS when the editors started, bytes.
    pub rss_start: u64,
    /// The highest RSS sampled, bytes.
    pub rss_peak: u64,
    /// RSS after convergence, bytes.
    pub rss_end: u64,
    /// The process's high-water mark (VmHWM) at the end, bytes.
    pub hwm: u64,
    /// Least-squares growth of RSS over the editing, bytes per 1000 edits.
    pub slope_per_1000: f64,
    /// Every memory sample.
    pub samples: Vec<Sample>,
    /// Live latencies (made on one side, present on the other), sorted.
    pub latencies: Vec<Duration>,
    /// Edits whose arrival on the other side was not seen before convergence
    /// was checked (they arrived; only their latency is unknown).
    pub unmeasured: usize,
    /// How long each kind of edit took, both sides.
    pub edit_times: Vec<EditTimes>,
    /// How long edits waited for their home's lock, sorted.
    pub lock_waits: Vec<Duration>,
}

impl Summary {
    /// Total edits, both sides.
    pub fn total(&self) -> usize {
        self.edits[0] + self.edits[1]
    }

    /// RSS growth from start to end per 1000 edits, bytes.
    pub fn growth_per_1000(&self) -> f64 {
        (self.rss_end as f64 - self.rss_start as f64) / (self.total().max(1) as f64 / 1000.0)
    }

    /// The `p`-th percentile (0..=100) of the live latencies.
    pub fn latency(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p)
    }

    /// True when nothing failed, nothing was lost, and the homes converged.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.lost == 0 && self.same_record && self.converged_after.is_some()
    }
}

/// The `p`-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted.get(i).copied()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "load: 2 devices x {} edits/s for {} s, live sync over loopback QUIC; {}% of edits on one shared issue",
            c.rate, c.seconds, c.shared_percent
        )?;
        writeln!(
            f,
            "  edits        {} (Sam {}, Alex {}) in {:.1} s = {:.1}/s per side; max lag behind schedule {:.0} ms",
            self.total(),
            self.edits[0],
            self.edits[1],
            self.editing.as_secs_f64(),
            self.total() as f64 / 2.0 / self.editing.as_secs_f64().max(1e-9),
            ms(self.max_lag)
        )?;
        writeln!(f, "  failed       {}", self.failed)?;
        for e in &self.failures {
            writeln!(f, "               {e}")?;
        }
        writeln!(f, "  lost         {}", self.lost)?;
        for e in &self.lost_examples {
            writeln!(f, "               {e}")?;
        }
        match self.converged_after {
            Some(d) => writeln!(f, "  converged    {:.0} ms after the last edit", ms(d))?,
            None => writeln!(
                f,
                "  converged    NO (not within {} s)",
                c.converge_timeout.as_secs()
            )?,
        }
        writeln!(
            f,
            "  same record  {} (changes in the logs: {} / {}; the shared issue has {} notes)",
            if self.same_record { "yes" } else { "NO" },
            self.changes[0],
            self.changes[1],
            self.shared_notes
        )?;
        writeln!(
            f,
            "  memory       RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; VmHWM {:.1} MiB",
            mib(self.rss_start),
            mib(self.rss_peak),
            mib(self.rss_end),
            mib(self.hwm)
        )?;
        writeln!(
            f,
            "  growth       {:.2} MiB per 1000 edits (start to end), {:.2} MiB per 1000 edits (slope while editing)",
            self.growth_per_1000() / (1024.0 * 1024.0),
            self.slope_per_1000 / (1024.0 * 1024.0)
        )?;
        match (self.latency(50.0), self.latency(99.0), self.latencies.last()) {
            (Some(p50), Some(p99), Some(max)) => writeln!(
                f,
                "  live latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} edits measured, to within {:.0} ms; {} unmeasured)",
                ms(p50),
                ms(p99),
                ms(*max),
                self.latencies.len(),
                1000.0 / f64::from(c.rate.max(1)),
                self.unmeasured
            )?,
            _ => writeln!(f, "  live latency not measured")?,
        }
        let p = |v: &[Duration], q: f64| percentile(v, q).map_or(0.0, ms);
        writeln!(
            f,
            "  lock wait    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (an edit waiting for the sync to let go of its home)",
            p(&self.lock_waits, 50.0),
            p(&self.lock_waits, 99.0),
            p(&self.lock_waits, 100.0)
        )?;
        for t in &self.edit_times {
            writeln!(
                f,
                "  {:<18} {:>5} edits: p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms; mean {:.1} ms in the first tenth, {:.1} ms in the last",
                t.kind,
                t.sorted.len(),
                p(&t.sorted, 50.0),
                p(&t.sorted, 99.0),
                p(&t.sorted, 100.0),
                ms(t.first_tenth),
                ms(t.last_tenth)
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// (VmRSS, VmHWM) of this process in bytes, where /proc tells.
pub fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Least-squares slope of RSS against edits, bytes per 1000 edits.
fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.edits as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.rss as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for s in samples {
        let dx = s.edits as f64 - mx;
        sxy += dx * (s.rss as f64 - my);
        sxx += dx * dx;
    }
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 1000.0 }
}

// ---------------------------------------------------------------------------
// Editors
// ---------------------------------------------------------------------------

fn lock(home: &Shared) -> Result<MutexGuard<'_, Home>, BoxError> {
    home.lock().map_err(|_| "a home's lock was poisoned".into())
}

/// A small deterministic generator (xorshift64*), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Changes made on one side and not yet seen on the other, with when.
type Pending = Arc<Mutex<Vec<(ChangeHash, Instant)>>>;

/// What one editor did.
#[derive(Default)]
struct Ledger {
    /// Every edit that must be visible at the end, as a token (see [`tokens`]).
    expect: Vec<String>,
    made: usize,
    failures: Vec<String>,
    failed: usize,
    max_lag: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies: Vec<Duration>,
    /// How long each kind of edit took (holding the home's lock).
    times: BTreeMap<&'static str, Vec<(Instant, Duration)>>,
    /// How long each edit waited for the home's lock (held by the sync).
    lock_waits: Vec<Duration>,
}

struct Editor {
    name: &'static str,
    home: Shared,
    hot: String,
    shared_percent: u32,
    rng: Rng,
    /// This side's issues (full ids).
    issues: Vec<String>,
    /// This side's open steps: (id, text).
    steps: Vec<(String, String)>,
    ledger: Ledger,
    /// This side's changes, for the other side to find.
    outgoing: Pending,
    /// The other side's changes, to look for here.
    incoming: Pending,
}

const STATUSES: [IssueStatus; 4] = [
    IssueStatus::Open,
    IssueStatus::Discussing,
    IssueStatus::Agreed,
    IssueStatus::Parked,
];
const OUTCOMES: [Outcome; 4] = [
    Outcome::Kept,
    Outcome::Partly,
    Outcome::Missed,
    Outcome::Renegotiated,
];

impl Editor {
    /// Makes edit number `i`; returns its kind and the token it must leave,
    /// if any.
    fn edit(&mut self, h: &mut Home, i: usize) -> duet::Result<(&'static str, Option<String>)> {
        let name = self.name;
        let shared = self.rng.below(100) < self.shared_percent as usize;
        let roll = self.rng.below(100);
        if shared {
            // Both sides on the same issue at once.
            return Ok(match roll {
                // Notes (a list: both sides' inserts are kept)...
                0..66 => {
                    let text = format!("{name} shared note {i}");
                    h.add_note(&self.hot, &text)?;
                    ("shared: add note", Some(format!("note:{text}")))
                }
                // ... its status (a register: converges, one value wins) ...
                66..83 => {
                    let status = STATUSES[self.rng.below(STATUSES.len())];
                    h.set_status(&self.hot, status)?;
                    ("shared: set status", None)
                }
                // ... and its body (text: both sides' splices merge).
                _ => {
                    let body = format!("The shared issue, last rewritten by {name} at edit {i}.");
                    h.edit_issue(
                        &self.hot,
                        &IssueEdit {
                            body: Some(body),
                            ..Default::default()
                        },
                    )?;
                    ("shared: edit body", None)
                }
            });
        }
        let own_issue = |s: &mut Self| -> String {
            if s.issues.is_empty() {
                s.hot.clone()
            } else {
                let k = s.rng.below(s.issues.len());
                s.issues[k].clone()
            }
        };
        Ok(match roll {
            // A new issue.
            0..25 => {
                let title = format!("{name} issue {i}");
                let issue = h.add_issue(&NewIssue {
                    title: title.clone(),
                    body: format!("Raised by {name} under load."),
                    ..Default::default()
                })?;
                self.issues.push(issue.id.to_string());
                ("add issue", Some(format!("issue:{title}")))
            }
            // A note on one of this side's issues.
            25..60 => {
                let issue = own_issue(self);
                let text = format!("{name} note {i}");
                h.add_note(&issue, &text)?;
                ("add note", Some(format!("note:{text}")))
            }
            // One of this side's steps done.
            85.. if !self.steps.is_empty() => {
                let k = self.rng.below(self.steps.len());
                let (id, text) = self.steps.swap_remove(k);
                let outcome = OUTCOMES[self.rng.below(OUTCOMES.len())];
                h.complete_step(&id, outcome)?;
                ("complete step", Some(format!("done:{text}")))
            }
            // A step.
            _ => {
                let issue = own_issue(self);
                let text = format!("{name} step {i}");
                let step = h.add_step(&issue, &text, Who::Me, None)?;
                self.steps.push((step.id.to_string(), text.clone()));
                ("add step", Some(format!("step:{text}")))
            }
        })
    }

    /// Runs `count` edits at `rate` a second, counting each in `done`.
    fn run(mut self, start: Instant, count: usize, rate: u32, done: &AtomicUsize) -> Ledger {
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        for i in 0..count {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            } else {
                self.ledger.max_lag = self.ledger.max_lag.max(now - due);
            }
            let home = self.home.clone();
            let asked = Instant::now();
            let Ok(mut h) = lock(&home) else {
                self.ledger.failed += 1;
                break;
            };
            let got = Instant::now();
            self.ledger.lock_waits.push(got - asked);
            let before = h.read(|d| d.get_heads()).unwrap_or_default();
            let edited = Instant::now();
            match self.edit(&mut h, i) {
                Ok((kind, token)) => {
                    let at = Instant::now();
                    self.ledger.times.entry(kind).or_default().push((at, at - edited));
                    self.ledger.made += 1;
                    self.ledger.first.get_or_insert(at);
                    self.ledger.last = Some(at);
                    if let Some(t) = token {
                        self.ledger.expect.push(t);
                    }
                    // The edit's change is the new head (an edit that
                    // changed nothing, such as a status set to what it was,
                    // makes none).
                    if let Ok(heads) = h.read(|d| d.get_heads())
                        && let Ok(mut out) = self.outgoing.lock()
                    {
                        out.extend(heads.into_iter().filter(|c| !before.contains(c)).map(|c| (c, at)));
                    }
                }
                Err(e) => {
                    self.ledger.failed += 1;
                    if self.ledger.failures.len() < 5 {
                        self.ledger.failures.push(format!("{} edit {i}: {e}", self.name));
                    }
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
            arrivals(&mut h, &self.incoming, &mut self.ledger.latencies);
        }
        self.ledger
    }
}

/// Moves the changes of `pending` that `h` now holds into `latencies`.
fn arrivals(h: &mut Home, pending: &Pending, latencies: &mut Vec<Duration>) {
    let Ok(mut p) = pending.lock() else { return };
    if p.is_empty() {
        return;
    }
    let now = Instant::now();
    let Ok(present) = h.read(|d| {
        p.iter()
            .map(|(hash, _)| d.get_change_by_hash(hash).is_some())
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    let mut k = 0;
    p.retain(|(_, at)| {
        let arrived = present[k];
        k += 1;
        if arrived {
            latencies.push(now - *at);
        }
        !arrived
    });
}

/// What a home shows of the edits: one token per issue, note, step and done
/// step, as the editors write them in their ledgers.
fn tokens(h: &mut Home) -> duet::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for issue in h.issues(IssueFilter::default())? {
        out.insert(format!("issue:{}", issue.title));
        for n in issue.notes {
            out.insert(format!("note:{}", n.text));
        }
        for s in issue.steps {
            if s.done {
                out.insert(format!("done:{}", s.text));
            }
            out.insert(format!("step:{}", s.text));
        }
    }
    Ok(out)
}

/// Everything a person sees of the shared record, to compare the two homes.
fn record(h: &mut Home) -> Result<serde_json::Value, BoxError> {
    Ok(serde_json::json!({
        "issues": serde_json::to_value(h.issues(IssueFilter::default())?)?,
        "checkins": serde_json::to_value(h.checkins()?)?,
        "agreements": serde_json::to_value(h.agreements()?)?,
        "devices": serde_json::to_value(h.devices()?)?,
    }))
}

fn sorted_heads(home: &Shared) -> Result<Vec<ChangeHash>, BoxError> {
    let mut heads = lock(home)?.read(|d| d.get_heads())?;
    heads.sort();
    Ok(heads)
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Runs the load: sets up two paired homes with live sync, edits, waits for
/// convergence, checks, and measures.
pub fn run(config: &Config) -> Result<Summary, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let init = |name: &str, device: &str| -> Result<Shared, BoxError> {
        let home = Home::init(
            &dir.path().join(device),
            &InitOptions {
                name: name.into(),
                device_name: Some(device.into()),
            },
        )?;
        Ok(Arc::new(Mutex::new(home)))
    };
    let sam = init("Sam", "sam-laptop")?;
    let alex = init("Alex", "alex-laptop")?;
    let dirs = [lock(&sam)?.dir().to_path_buf(), lock(&alex)?.dir().to_path_buf()];

    // Pair, and raise the issue both sides will edit at once.
    rt.block_on(async {
        let host = PairHost::bind(sam.clone(), "127.0.0.1:0".parse()?, None, WhoseDevice::Partner)?;
        let (code, addr) = (host.code().to_string(), host.local_addr()?);
        let (show, shown) = tokio::sync::oneshot::channel();
        let joiner = alex.clone();
        let joining = tokio::spawn(async move {
            duet::pair_join(joiner, &code, addr, move |p: &str| {
                let _ = show.send(p.to_string());
            })
            .await
        });
        let asking = host.wait(Duration::from_secs(60)).await?;
        // Both "screens" are here: admit only if they show the same phrase.
        if shown.await? != asking.phrase() {
            asking.reject("the phrases differ").await?;
            return Err("pairing: the phrases differ".into());
        }
        asking.admit().await?;
        joining.await??;
        Ok::<_, BoxError>(())
    })?;
    let hot = lock(&sam)?
        .add_issue(&NewIssue {
            title: "The shared issue".into(),
            ..Default::default()
        })?
        .id
        .to_string();

    // Serve both; Alex's dials Sam's and keeps the session live.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let start_serve = |home: &Shared, peers: Vec<std::net::SocketAddr>| {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let opts = ServeOptions {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            peers,
            poll: Duration::from_millis(25),
            relay: None,
            discovery: false,
        };
        let task = rt.spawn(duet::serve(home.clone(), opts, stop_rx.clone(), Some(ready_tx)));
        (task, ready_rx)
    };
    let (sam_serve, ready) = start_serve(&sam, Vec::new());
    let sam_addr = rt.block_on(ready)?;
    let (alex_serve, ready) = start_serve(&alex, vec![sam_addr]);
    rt.block_on(ready)?;
    // The shared issue reaches Alex over the live session.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock(&alex)?.issue(&hot).is_err() {
        if Instant::now() > deadline {
            return Err("the shared issue did not reach Alex within 30 s".into());
        }
        thread::sleep(Duration::from_millis(10));
    }

    // Sample memory every second.
    let done = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let rss_start = memory().map_or(0, |m| m.0);
    let start = Instant::now() + Duration::from_millis(50);
    let sampler = {
        let (done, sampling) = (done.clone(), sampling.clone());
        let progress = config.progress;
        thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = start;
            while sampling.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += Duration::from_secs(1);
                let Some((rss, _)) = memory() else { continue };
                let s = Sample {
                    at: now.saturating_duration_since(start).as_secs_f64(),
                    edits: done.load(Ordering::Relaxed),
                    rss,
                };
                if progress && samples.len() % 10 == 9 {
                    println!(
                        "  {:>5.0} s  {:>6} edits  RSS {:.1} MiB",
                        s.at,
                        s.edits,
                        mib(s.rss)
                    );
                }
                samples.push(s);
            }
            samples
        })
    };

    // Edit on both sides at once.
    let count = (config.seconds * f64::from(config.rate)).round() as usize;
    let to_alex: Pending = Arc::default();
    let to_sam: Pending = Arc::default();
    let editors = [
        Editor {
            name: "Sam",
            home: sam.clone(),
            hot: hot.clone(),
            shared_percent: config.shared_percent,
            rng: Rng(0x5a11_0001),
            issues: Vec::new(),
            steps: Vec::new(),
            ledger: Ledger::default(),
            outgoing: to_alex.clone(),
            incoming: to_sam.clone(),
        },
        Editor {
            name: "Alex",
            home: alex.clone(),
            hot: hot.clone(),
            shared_percent: config.shared_percent,
            rng: Rng(0xa1e_0002),
            issues: Vec::new(),
            steps: Vec::new(),
            ledger: Ledger::default(),
            outgoing: to_sam.clone(),
            incoming: to_alex.clone(),
        },
    ];
    let rate = config.rate;
    let handles: Vec<_> = editors
        .into_iter()
        .map(|e| {
            let done = done.clone();
            thread::spawn(move || e.run(start, count, rate, &done))
        })
        .collect();
    let mut ledgers = Vec::new();
    for h in handles {
        ledgers.push(h.join().map_err(|_| "an editor panicked")?);
    }
    let first = ledgers.iter().filter_map(|l| l.first).min().unwrap_or(start);
    let last = ledgers.iter().filter_map(|l| l.last).max().unwrap_or(start);

    // Wait until both hold the same heads, measuring arrivals meanwhile.
    let mut latencies: Vec<Duration> = ledgers.iter_mut().flat_map(|l| l.latencies.drain(..)).collect();
    let wait_until = Instant::now() + config.converge_timeout;
    let converged_after = loop {
        arrivals(&mut *lock(&sam)?, &to_sam, &mut latencies);
        arrivals(&mut *lock(&alex)?, &to_alex, &mut latencies);
        if sorted_heads(&sam)? == sorted_heads(&alex)? {
            break Some(last.elapsed());
        }
        if Instant::now() > wait_until {
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    arrivals(&mut *lock(&sam)?, &to_sam, &mut latencies);
    arrivals(&mut *lock(&alex)?, &to_alex, &mut latencies);
    latencies.sort();
    let unmeasured = to_sam.lock().map_or(0, |p| p.len()) + to_alex.lock().map_or(0, |p| p.len());
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| "the memory sampler panicked")?;
    let (rss_end, hwm) = memory().unwrap_or((0, 0));

    // Stop serving.
    let _ = stop.send(true);
    rt.block_on(async {
        for task in [sam_serve, alex_serve] {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(BoxError::from(format!("serve failed: {e}"))),
                Ok(Err(e)) => return Err(format!("serve panicked: {e}").into()),
                Err(_) => return Err("serve did not stop within 30 s".into()),
            }
        }
        Ok(())
    })?;

    // Every edit is on both sides, in memory and on disk.
    let expect: Vec<&String> = ledgers.iter().flat_map(|l| l.expect.iter()).collect();
    let mut lost = BTreeSet::new();
    let mut views = Vec::new();
    for (name, home) in [("Sam", &sam), ("Alex", &alex)] {
        views.push((format!("{name} (in memory)"), tokens(&mut *lock(home)?)?));
    }
    let mut reopened = Vec::new();
    for (name, d) in [("Sam", &dirs[0]), ("Alex", &dirs[1])] {
        let mut h = Home::open(d)?;
        views.push((format!("{name} (reopened)"), tokens(&mut h)?));
        reopened.push(h);
    }
    for (name, have) in &views {
        for t in &expect {
            if !have.contains(*t) {
                lost.insert(format!("{t} missing on {name}"));
            }
        }
    }
    let same_record = record(&mut reopened[0])? == record(&mut reopened[1])?
        && record(&mut *lock(&sam)?)? == record(&mut reopened[0])?;
    let changes = [reopened[0].status()?.changes, reopened[1].status()?.changes];
    let shared_notes = reopened[0].issue(&hot)?.notes.len();

    let mut edit_times: BTreeMap<&'static str, Vec<(Instant, Duration)>> = BTreeMap::new();
    let mut lock_waits = Vec::new();
    for l in &mut ledgers {
        for (kind, times) in std::mem::take(&mut l.times) {
            edit_times.entry(kind).or_default().extend(times);
        }
        lock_waits.append(&mut l.lock_waits);
    }
    lock_waits.sort();
    let edit_times: Vec<EditTimes> = edit_times
        .into_iter()
        .map(|(kind, mut v)| {
            v.sort();
            let mean = |part: &[(Instant, Duration)]| {
                part.iter().map(|(_, d)| *d).sum::<Duration>() / u32::try_from(part.len().max(1)).unwrap_or(1)
            };
            let tenth = v.len().div_ceil(10);
            let (first_tenth, last_tenth) = (mean(&v[..tenth]), mean(&v[v.len() - tenth..]));
            let mut sorted: Vec<Duration> = v.into_iter().map(|(_, d)| d).collect();
            sorted.sort();
            EditTimes {
                kind,
                sorted,
                first_tenth,
                last_tenth,
            }
        })
        .collect();
    let rss_peak = samples
        .iter()
        .map(|s| s.rss)
        .max()
        .unwrap_or(0)
        .max(rss_start)
        .max(rss_end);
    let during: Vec<Sample> = samples.iter().copied().filter(|s| s.edits > 0).collect();
    Ok(Summary {
        config: config.clone(),
        edits: [ledgers[0].made, ledgers[1].made],
        failed: ledgers.iter().map(|l| l.failed).sum(),
        failures: ledgers.iter().flat_map(|l| l.failures.iter().cloned()).collect(),
        lost: lost.len(),
        lost_examples: lost.into_iter().take(5).collect(),
        shared_notes,
        same_record,
        converged_after,
        editing: last.saturating_duration_since(first),
        max_lag: ledgers.iter().map(|l| l.max_lag).max().unwrap_or_default(),
        changes,
        rss_start,
        rss_peak,
        rss_end,
        hwm,
        slope_per_1000: slope(&during),
        samples,
        latencies,
        unmeasured,
        edit_times,
        lock_waits,
    })
}

fn parse_args() -> Result<Config, BoxError> {
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => config.seconds = value("--seconds")?.parse()?,
            "--rate" => config.rate = value("--rate")?.parse()?,
            "--shared" => config.shared_percent = value("--shared")?.parse()?,
            "--help" | "-h" => {
                println!(
                    "usage: load [--seconds N (120)] [--rate EDITS_PER_SECOND_PER_SIDE (50)] [--shared PERCENT_ON_ONE_ISSUE (40)]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if config.seconds <= 0.0 || config.rate == 0 {
        return Err("--seconds and --rate must be positive".into());
    }
    if config.shared_percent > 100 {
        return Err("--shared is a percentage".into());
    }
    Ok(config)
}

fn main() -> Result<(), BoxError> {
    let config = parse_args()?;
    println!(
        "Two paired homes, each making {} edits/s for {} s with live sync...",
        config.rate, config.seconds
    );
    let summary = run(&config)?;
    print!("{summary}");
    if summary.ok() {
        Ok(())
    } else {
        Err("edits failed or were lost, or the homes did not converge".into())
    }
}
