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
