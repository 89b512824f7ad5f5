//! The soak: rounds of writers, syncs and serves killed at random points.

use super::*;

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
                    || (w.kill_on_output && std::fs::metadata(&w.out).is_ok_and(|m| m.len() > 0))
                {
                    // It may exit between the two calls: then the kill finds a
                    // zombie, or an error once reaped, and changes nothing.
                    let _ = w.child.kill();
                    w.kill_sent = true;
                    w.kill_at = None;
                    w.kill_on_write = None;
                    w.kill_on_output = false;
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
