//! The harness: a temporary home and helpers that run the real `duet` binary
//! against it and check what came back.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_duet");

/// The name the home is created with.
pub const ME: &str = "Sam";

/// A `duet` command for `home`, with a clean environment: no `DUET_HOME`, no
/// colour, no log filter, and the platform data folders pointed into `scratch`
/// so that a run without `--home` can never touch the real user's data.
pub fn command_at(home: &Path, scratch: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("DUET_HOME")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .env("HOME", scratch)
        .env("XDG_DATA_HOME", scratch.join("xdg-data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What one run of `duet` gave back.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub args: String,
    /// Standard output as bytes (an automerge export is binary).
    pub raw: Vec<u8>,
    /// Standard output as text.
    pub stdout: String,
    /// Standard error as text.
    pub stderr: String,
    /// The exit status.
    pub status: ExitStatus,
}

impl Run {
    /// Wraps a finished process.
    pub fn new(args: &[&str], out: Output) -> Run {
        let run = Run {
            args: args
                .iter()
                .map(|a| {
                    if a.len() > 60 {
                        format!("<{} bytes>", a.len())
                    } else {
                        (*a).to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw: out.stdout,
            status: out.status,
        };
        // NO_COLOR is set and the output is a pipe: never an escape code.
        assert!(
            !run.stderr.contains('\x1b'),
            "escape code in stderr of `duet {}`:\n{}",
            run.args,
            run.stderr
        );
        if !run.raw.starts_with(&[0x85, 0x6f, 0x4a, 0x83]) {
            assert!(
                !run.stdout.contains('\x1b'),
                "escape code in stdout of `duet {}`",
                run.args
            );
        }
        assert_no_panic(&run);
        run
    }

    /// Asserts success and returns standard output.
    #[track_caller]
    pub fn success(self) -> String {
        assert!(
            self.status.success(),
            "`duet {}` failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts a clean failure — a non-zero exit (not a signal), exactly one line
    /// on stderr starting with `error: `, no panic — and returns that line.
    #[track_caller]
    pub fn failure(self) -> String {
        assert!(
            !self.status.success(),
            "`duet {}` succeeded but should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "`duet {}` was killed by a signal: {:?}\nstderr:\n{}",
            self.args,
            self.status,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`duet {}` should print exactly one line on stderr, got:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "`duet {}`: stderr should start with `error: `, got:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "`duet {}` failed but wrote to stdout:\n{}",
            self.args,
            self.stdout
        );
        lines[0].to_string()
    }
}

fn assert_no_panic(run: &Run) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !run.stderr.contains(bad),
            "`duet {}` panicked:\n{}",
            run.args,
            run.stderr
        );
    }
}

/// Runs `duet --home <home> args...` to completion.
pub fn run_at(home: &Path, scratch: &Path, args: &[&str]) -> Run {
    let out = command_at(home, scratch, args)
        .output()
        .expect("cannot run the duet binary");
    Run::new(args, out)
}

/// A temporary folder holding a home (at `<tmp>/home`), deleted at the end.
pub struct TestHome {
    tmp: TempDir,
    home: PathBuf,
}

impl TestHome {
    /// A temporary folder whose home has not been created.
    pub fn uninit() -> TestHome {
        let tmp = tempfile::Builder::new()
            .prefix("duet-cli-")
            .tempdir()
            .expect("cannot make a temp dir");
        let home = tmp.path().join("home");
        TestHome { tmp, home }
    }

    /// A home created by `duet init --name Sam --device-name laptop`.
    pub fn new() -> TestHome {
        let h = TestHome::uninit();
        h.ok(&["init", "--name", ME, "--device-name", "laptop"]);
        h
    }

    /// The home folder.
    pub fn path(&self) -> &Path {
        &self.home
    }

    /// The temporary folder around the home (a place for other files).
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The home's database file.
    pub fn db(&self) -> PathBuf {
        self.home.join("duet.db")
    }

    /// A prepared command, for spawning several at once.
    pub fn command(&self, args: &[&str]) -> Command {
        command_at(&self.home, self.tmp.path(), args)
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        run_at(&self.home, self.tmp.path(), args)
    }

    /// Runs a command that must succeed; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).success()
    }

    /// Runs a command that must fail cleanly; returns the one error line.
    #[track_caller]
    pub fn fail(&self, args: &[&str]) -> String {
        self.run(args).failure()
    }

    /// Runs a command with `--json` that must succeed; returns the parsed output.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`duet {}` gave invalid JSON ({e}):\n{out}", all.join(" ")))
    }

    /// Raises an issue; returns its full id.
    #[track_caller]
    pub fn add_issue(&self, title: &str) -> String {
        str_of(&self.json(&["issue", "add", title]), "id")
    }

    /// Every issue, as `issue list --json` gives them.
    #[track_caller]
    pub fn issues(&self) -> Vec<Value> {
        self.json(&["issue", "list"])
            .as_array()
            .expect("issue list is an array")
            .clone()
    }

    /// Everything stored in the home, to compare before and after a refused
    /// command: the full private export (without its time stamp), the number of
    /// changes in the log, and the review date.
    #[track_caller]
    pub fn snapshot(&self) -> Value {
        let mut export: Value = serde_json::from_str(&self.ok(&["export", "--format", "json", "--private"]))
            .expect("export is JSON");
        export
            .as_object_mut()
            .expect("export is an object")
            .remove("exported_at");
        let changes = self.json(&["status"])["changes"].clone();
        let log = self.json(&["log", "--all"]);
        let review = self.json(&["review"]);
        serde_json::json!({ "export": export, "changes": changes, "log": log, "review": review })
    }
}

/// `v[key]` as a string.
#[track_caller]
pub fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {v:#}"))
        .to_string()
}

/// The sorted keys of a JSON object.
#[track_caller]
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v:#}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// The sorted list of `names`, for comparing with [`keys`].
pub fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
    k.sort();
    k
}

/// An id of the same shape as `id` that is surely not stored: `id` with its first
/// digit changed. Sixteen hex digits only match themselves.
pub fn other_id(id: &str) -> String {
    let first = id.chars().next().expect("non-empty id");
    let swapped = if first == '0' { '1' } else { '0' };
    format!("{swapped}{}", &id[1..])
}

/// True if `needle` occurs in `haystack` (bytes).
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    !n.is_empty() && haystack.windows(n.len()).any(|w| w == n)
}

impl TestHome {
    /// A home created by `duet init --name NAME --device-name DEVICE`.
    pub fn named(name: &str, device: &str) -> TestHome {
        let h = TestHome::uninit();
        h.ok(&["init", "--name", name, "--device-name", device]);
        h
    }

    /// Starts a long-running command (`pair host`, `serve`, a slow `sync`) in
    /// the background. Its stdout is read line by line as it comes; its stderr
    /// goes to a file next to the home. It is killed when dropped.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args), args, self.tmp())
    }

    /// The bytes of every file under the home folder (the database, its -wal
    /// and -shm files, anything else), with their paths.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        files_under(&self.home)
    }
}

/// A `duet` process running in the background. Dropping it kills it (SIGKILL)
/// and reaps it, so a failing test never leaves one behind.
pub struct Proc {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    args: String,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    seen: Vec<String>,
    stderr: PathBuf,
}

/// How long to wait for a background process to say something or to exit.
pub const PROC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl Proc {
    fn spawn(mut cmd: Command, args: &[&str], scratch: &Path) -> Proc {
        use std::io::BufRead;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let stderr = scratch.join(format!("stderr-{}.txt", N.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&stderr).expect("cannot create a stderr file");
        if let Ok(filter) = std::env::var("DUET_TEST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("cannot spawn the duet binary");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            stdin,
            args: args.join(" "),
            lines,
            reader: Some(reader),
            seen: Vec::new(),
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to (readable after the process is gone).
    pub fn stderr_path(&self) -> PathBuf {
        self.stderr.clone()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line on stdout; panics if none comes within [`PROC_TIMEOUT`].
    #[track_caller]
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(PROC_TIMEOUT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(e) => panic!(
                "`duet {}` printed no line ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                self.args,
                self.seen.join("\n"),
                self.stderr()
            ),
        }
    }

    /// The next line on stdout, or `None` if the process closed its stdout
    /// (it exited) first; panics if neither happens within [`PROC_TIMEOUT`].
    #[track_caller]
    pub fn try_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PROC_TIMEOUT) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!(
                "`duet {}` printed no line ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                self.args,
                self.seen.join("\n"),
                self.stderr()
            ),
        }
    }

    /// Writes `text` to the process's standard input and closes it (so a
    /// reader sees the end after it).
    #[track_caller]
    pub fn answer(&mut self, text: &str) {
        use std::io::Write;
        let mut stdin = self.stdin.take().expect("stdin was already answered");
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to `duet {}`: {e}", self.args));
    }

    /// The next line on stdout, parsed as JSON.
    #[track_caller]
    pub fn json_line(&mut self) -> Value {
        let l = self.line();
        serde_json::from_str(&l)
            .unwrap_or_else(|e| panic!("`duet {}` printed a line that is not JSON ({e}): {l}", self.args))
    }

    /// Sends a signal (`INT`, `TERM`, `KILL`, ...) with the `kill` command.
    #[track_caller]
    pub fn signal(&self, sig: &str) {
        // A process that already exited is not an error here: the status of
        // `kill` is not checked.
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run kill");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<ExitStatus> {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("cannot wait for duet") {
                return Some(s);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits (up to [`PROC_TIMEOUT`]) for the process to exit and returns
    /// everything it printed, as a [`Run`].
    #[track_caller]
    pub fn finish(mut self) -> Run {
        let Some(status) = self.wait_timeout(PROC_TIMEOUT) else {
            panic!(
                "`duet {}` did not exit within {PROC_TIMEOUT:?}; stdout so far:\n{}\nstderr:\n{}",
                self.args,
                self.seen.join("\n"),
                self.stderr()
            );
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut stdout: Vec<String> = std::mem::take(&mut self.seen);
        stdout.extend(self.lines.try_iter());
        let mut text = stdout.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let stderr = self.stderr();
        let args: Vec<String> = self.args.split(' ').map(str::to_string).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Run::new(
            &args,
            Output {
                status,
                stdout: text.into_bytes(),
                stderr: stderr.into_bytes(),
            },
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The one `error: ` line of a failed run that may have printed on stdout
/// before failing (`pair host` prints its code first): a non-zero exit, not a
/// signal, exactly one line on stderr, no panic.
#[track_caller]
pub fn error_line(run: &Run) -> String {
    assert!(
        run.status.code().is_some_and(|c| c != 0),
        "`duet {}` should have failed with an exit code, got {:?}\nstdout:\n{}\nstderr:\n{}",
        run.args,
        run.status,
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "`duet {}` should print one `error: ` line on stderr, got:\n{}",
        run.args,
        run.stderr
    );
    lines[0].to_string()
}

/// Starts `duet pair host --listen 127.0.0.1:0 --json` on `host` (`extra`
/// goes to it, such as `--own-device`); returns the process, the code and the
/// address from its first line.
#[track_caller]
pub fn pair_host_with(host: &TestHome, extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec!["pair", "host", "--listen", "127.0.0.1:0", "--json"];
    args.extend_from_slice(extra);
    let mut p = host.spawn(&args);
    let first = p.json_line();
    let (code, addr) = (str_of(&first, "code"), str_of(&first, "address"));
    (p, code, addr)
}

/// Runs `pair join ADDR extra...` on `joiner` with `code` written to its
/// standard input, as a person types it (out of other users' sight, unlike a
/// code in the arguments).
pub fn join_with_code(joiner: &TestHome, code: &str, addr: &str, extra: &[&str]) -> Run {
    use std::io::Write;
    let mut args = vec!["pair", "join", addr];
    args.extend_from_slice(extra);
    let mut child = joiner
        .command(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot run the duet binary");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A join that fails before reading may have closed its end already.
    let _ = stdin.write_all(format!("{code}\n").as_bytes());
    drop(stdin);
    Run::new(&args, child.wait_with_output().expect("cannot wait for duet"))
}

/// [`pair_host_with`] for the partner's device.
#[track_caller]
pub fn pair_host(host: &TestHome) -> (Proc, String, String) {
    pair_host_with(host, &[])
}

/// Does what the two people do once both screens show a phrase: reads the
/// host's question and the joiner's phrase (both `--json`), checks they show
/// the same words, and answers `y` on the host. Returns the host's question.
/// `None` if the joiner exited before showing a phrase (the host then asked
/// nothing).
#[track_caller]
pub fn confirm(host: &mut Proc, joiner: &mut Proc) -> Option<Value> {
    let shown: Value = serde_json::from_str(&joiner.try_line()?).expect("the joiner's phrase line is JSON");
    let asked = host.json_line();
    assert_eq!(
        asked["confirm"]["phrase"], shown["phrase"],
        "the two screens show different phrases"
    );
    host.answer("y\n");
    Some(asked["confirm"].clone())
}

/// The last line a finished `--json` run printed, parsed.
#[track_caller]
pub fn last_json(run: Run) -> Value {
    let args = run.args.clone();
    let out = run.success();
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("`duet {args}` gave no JSON outcome ({e}):\n{out}"))
}

/// Pairs `joiner` into `host`'s space as people do: `host_extra` goes to
/// `pair host` (such as `--own-device`), `extra` to `pair join` (such as
/// `--name`); the phrases are compared and the host answers yes. Both must
/// succeed. Returns what each printed last as JSON (host, joiner).
#[track_caller]
pub fn pair_as(host: &TestHome, host_extra: &[&str], joiner: &TestHome, extra: &[&str]) -> (Value, Value) {
    let (mut p, code, addr) = pair_host_with(host, host_extra);
    // The code is typed, as a person does (out of other users' sight).
    let mut args = vec!["pair", "join", addr.as_str(), "--json"];
    args.extend_from_slice(extra);
    let mut j = joiner.spawn(&args);
    j.answer(&format!("{code}\n"));
    if confirm(&mut p, &mut j).is_none() {
        panic!(
            "`pair join` failed before showing a phrase:\n{}",
            j.finish().stderr
        );
    }
    let joined = last_json(j.finish());
    let hosted = last_json(p.finish());
    (hosted, joined)
}

/// Pairs `joiner` into `host`'s space as the partner's device (`extra` goes
/// to `pair join`). See [`pair_as`].
#[track_caller]
pub fn pair(host: &TestHome, joiner: &TestHome, extra: &[&str]) -> (Value, Value) {
    pair_as(host, &[], joiner, extra)
}

/// Pairs another device of `host`'s person (`pair host --own-device`).
#[track_caller]
pub fn pair_own(host: &TestHome, joiner: &TestHome, extra: &[&str]) -> (Value, Value) {
    pair_as(host, &["--own-device"], joiner, extra)
}

/// A running `duet serve --listen 127.0.0.1:0`, and the address it reported.
pub struct Serve {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// `host:port`, from its first line.
    pub addr: String,
    /// When it said it listens.
    pub since: std::time::Instant,
}

/// How long a fresh `serve` may take to install its signal handlers after it
/// says it listens (it says so first: see
/// `serve::serve_stops_cleanly_on_a_signal_sent_as_soon_as_it_listens`).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

impl Serve {
    /// Stops the server with `signal` (`INT` or `TERM`), no sooner than
    /// [`SETTLE`] after it started, and returns how it ended.
    pub fn stop(self, signal: &str) -> Run {
        std::thread::sleep(SETTLE.saturating_sub(self.since.elapsed()));
        self.proc.signal(signal);
        self.proc.finish()
    }
}

/// Starts `duet serve --listen 127.0.0.1:0 --json` on `home` with `extra`
/// arguments (such as `--peer ADDR`), and waits until it listens.
#[track_caller]
pub fn serve(home: &TestHome, extra: &[&str]) -> Serve {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--json"];
    args.extend_from_slice(extra);
    let mut proc = home.spawn(&args);
    let addr = str_of(&proc.json_line(), "listening");
    Serve {
        proc,
        addr,
        since: std::time::Instant::now(),
    }
}

/// Everything a home holds of the shared space, to compare two homes: the
/// JSON export without its time stamp.
#[track_caller]
pub fn shared(home: &TestHome) -> Value {
    let mut export: Value =
        serde_json::from_str(&home.ok(&["export", "--format", "json"])).expect("export is JSON");
    export
        .as_object_mut()
        .expect("export is an object")
        .remove("exported_at");
    export
}

/// This device's id, from `status --json`.
pub fn device_id(h: &TestHome) -> String {
    str_of(&h.json(&["status"])["device"], "id")
}

/// The devices of `h`'s space as (id, seat, name), sorted.
pub fn devices(h: &TestHome) -> std::collections::BTreeSet<(String, String, String)> {
    h.json(&["device", "list"])
        .as_array()
        .expect("device list is an array")
        .iter()
        .map(|d| (str_of(d, "id"), str_of(d, "seat"), str_of(d, "name")))
        .collect()
}

/// The titles of `h`'s issues.
pub fn titles(h: &TestHome) -> std::collections::BTreeSet<String> {
    h.issues().iter().map(|i| str_of(i, "title")).collect()
}

/// Alex (`alex-laptop`, the host) and Blair (`blair-laptop`), paired, with
/// `before` run on each home first (for entries written before pairing).
#[track_caller]
pub fn couple(before: impl Fn(&TestHome)) -> (TestHome, TestHome) {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    before(&alex);
    before(&blair);
    pair(&alex, &blair, &[]);
    (alex, blair)
}

/// The bytes of every file under `dir`, recursively, with their paths.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                // A file can vanish between listing and reading (a -wal
                // checkpointed away); what is left is what counts.
                out.push((p, bytes));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// True if `needle` occurs in `haystack` (raw bytes).
pub fn contains_raw(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A running `duet relay --listen 127.0.0.1:0 --data DIR --json`, and the
/// address it reported.
pub struct RelayProc {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// `host:port`, from its first line.
    pub addr: String,
}

impl RelayProc {
    /// Starts a relay keeping its data in `data` (`extra` goes to `duet relay`,
    /// such as `--quota-mib 1`); its stderr goes to a file in `scratch`, which
    /// must not be inside `data`. Waits until it listens.
    #[track_caller]
    pub fn start(scratch: &Path, data: &Path, extra: &[&str]) -> RelayProc {
        let data = data.to_str().expect("a UTF-8 temporary path");
        let mut args = vec!["relay", "--listen", "127.0.0.1:0", "--data", data, "--json"];
        args.extend_from_slice(extra);
        // `relay` uses no home; the global `--home` points at an unused folder.
        let cmd = command_at(&scratch.join("no-home"), scratch, &args);
        let mut proc = Proc::spawn(cmd, &args, scratch);
        let addr = str_of(&proc.json_line(), "listening");
        RelayProc { proc, addr }
    }

    /// Stops the relay with SIGTERM (it installs its handlers before it says
    /// it listens) and returns how it ended.
    pub fn stop(self) -> Run {
        self.proc.signal("TERM");
        self.proc.finish()
    }
}

/// Polls `check` (every 100 ms) until it gives `Ok`, at most until `within`
/// has passed; panics with `what` and the last attempt's `Err` otherwise.
#[track_caller]
pub fn eventually<T>(
    within: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let end = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() >= end => {
                panic!("{what}: not within {within:?}; last attempt: {last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// A test that cannot run on this machine (no multicast, no tmpfs, no node)
/// says why and passes, unless the variable `require` is set (CI sets each
/// one in `.ci/run`): there a skip would hide a test that never ran, so it
/// fails instead.
pub fn skip(require: &str, why: &str) {
    assert!(
        std::env::var_os(require).is_none(),
        "{why} (and {require} is set: this test must run here)"
    );
    eprintln!("skipped: {why}");
}
