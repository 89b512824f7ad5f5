//! What the harness needs from the machine: the `duet` binary, I/O counters,
//! peak memory of a child process, free ports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `duet` binary next to this one (same target folder and profile),
/// built with `$CARGO build --release -p duet-cli` when running under cargo
/// (a no-op when it is up to date) or when it is missing.
pub fn duet_binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("the harness binary has no folder")?;
    let duet = dir.join(format!("duet{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("making sure the duet binary is built ({})", duet.display());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "-p", "duet-cli"]);
        if let Some(target) = target_dir(dir) {
            cmd.arg("--target-dir").arg(target);
        }
        let status = cmd.status()?;
        if !status.success() {
            bail!("building the duet binary failed");
        }
    }
    if !duet.is_file() {
        bail!(
            "no duet binary at {}: build it with `cargo build --release -p duet-cli`",
            duet.display()
        );
    }
    Ok(duet)
}

/// The target folder that holds `profile_dir` (`.../target/release`).
fn target_dir(profile_dir: &Path) -> Option<PathBuf> {
    let parent = profile_dir.parent()?;
    (profile_dir.file_name()? == "release").then(|| parent.to_path_buf())
}

/// This process's I/O counters from `/proc/self/io`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Io {
    /// Bytes passed to write(2) and friends.
    pub wchar: u64,
}

/// Reads `/proc/self/io` (zeros where it is missing).
pub fn io() -> Io {
    let Ok(text) = std::fs::read_to_string("/proc/self/io") else {
        return Io::default();
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: field("wchar:"),
    }
}

/// Runs `cmd` to completion with its output discarded; returns the wall time.
pub fn run_timed(cmd: &mut Command) -> Result<Duration> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Peak resident memory (bytes) of `program args`, measured by
/// `/usr/bin/time -f %M` (None where that tool is missing).
pub fn peak_memory(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Option<u64>> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return Ok(None);
    }
    let out_file = tempfile::NamedTempFile::new()?;
    let status = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(out_file.path())
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{} failed under /usr/bin/time", program.display());
    }
    let text = std::fs::read_to_string(out_file.path())?;
    let kb: u64 = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .context("/usr/bin/time printed no peak memory")?;
    Ok(Some(kb * 1024))
}

/// A free UDP port on loopback (free when asked; good enough on a quiet
/// machine).
pub fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}
