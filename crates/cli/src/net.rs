//! The network commands: pair, sync, serve. Each runs the engine's async API on
//! a tokio runtime made for the command.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use duet::{
    CONFIRM_TIMEOUT, Home, InitOptions, PAIR_TIMEOUT, PairHost, PendingJoin, ServeOptions, WhoseDevice,
};

use crate::args::PairCmd;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the network runtime")
}

/// Resolves `host:port`.
pub fn address(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow!("invalid address '{s}' (expected host:port, such as 192.168.1.20:7480)"))
}

fn say(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    let mut out = std::io::stdout();
    if json {
        writeln!(out, "{value}")?;
    } else {
        write!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

fn moved(r: &duet::SyncReport) -> String {
    format!(
        "received {} changes in {} messages ({} bytes), sent {} messages ({} bytes), {} ms",
        r.changes_in, r.messages_in, r.bytes_in, r.messages_out, r.bytes_out, r.millis
    )
}

/// What the host's person answered when asked to compare the phrase.
enum Answer {
    Yes,
    No,
    /// Standard input ended (or failed) before a line came.
    Nothing,
    /// No line within [`CONFIRM_TIMEOUT`].
    Late,
    /// The joining device gave up first.
    Gone,
}

/// The longest answer line read; the rest is not looked at.
const MAX_ANSWER: u64 = 256;

/// Reads one line from standard input (a terminal or a pipe) for up to
/// [`CONFIRM_TIMEOUT`], unless the joining device gives up first. Only `y` or
/// `yes` is a yes.
async fn ask(pending: &PendingJoin) -> Answer {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: a blocking read cannot be cancelled, and a tokio
    // blocking task would hold the runtime open at exit.
    std::thread::spawn(move || {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        let read = std::io::stdin().lock().take(MAX_ANSWER).read_line(&mut line);
        let _ = tx.send(read.map(|n| (n, line)));
    });
    tokio::select! {
        got = tokio::time::timeout(CONFIRM_TIMEOUT, rx) => match got {
            Err(_) => Answer::Late,
            Ok(Ok(Ok((n, line)))) if n > 0 => {
                if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") {
                    Answer::Yes
                } else {
                    Answer::No
                }
            }
            Ok(_) => Answer::Nothing,
        },
        () = pending.cancelled() => Answer::Gone,
    }
}

/// `duet pair host|join`
pub fn pair(dir: &Path, json: bool, cmd: PairCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        PairCmd::Host {
            listen,
            code,
            own_device,
        } => {
            let home = Arc::new(Mutex::new(Home::open(dir)?));
            let code = code
                .map(|c| given_code(c, "--code -"))
                .transpose()?
                .map(|c| c.parse().map_err(|e| anyhow!("invalid pairing code: {e}")))
                .transpose()?;
            let whose = if own_device {
                WhoseDevice::Mine
            } else {
                WhoseDevice::Partner
            };
            let _guard = rt.enter();
            let host = PairHost::bind(home, address(&listen)?, code, whose)?;
            let addr = host.local_addr()?;
            let code = host.code().to_string();
            let pairing = match whose {
                WhoseDevice::Partner => "your partner's device",
                WhoseDevice::Mine => "another device of yours",
            };
            say(
                json,
                serde_json::json!({ "code": code, "address": addr.to_string(), "pairing": whose }),
                format!(
                    "Pairing {pairing}. Pairing code: {code}\nWaiting at {addr} for up to {} minutes. On the other device run\n  duet pair join <this device's address>:{}\nand type the code when asked.\n",
                    PAIR_TIMEOUT.as_secs() / 60,
                    addr.port()
                ),
            )?;
            let pending = rt.block_on(host.wait(PAIR_TIMEOUT))?;
            let (phrase, device) = (pending.phrase().to_string(), pending.device_name().to_string());
            let question = match whose {
                WhoseDevice::Partner => format!(
                    "Does {}'s screen ({device}) show: {phrase}? [y/N] ",
                    pending.name()
                ),
                WhoseDevice::Mine => {
                    format!("Does the screen of your device {device} show: {phrase}? [y/N] ")
                }
            };
            say(
                json,
                serde_json::json!({ "confirm": {
                    "phrase": phrase,
                    "name": pending.name(),
                    "device_name": device,
                    "seat": pending.seat(),
                    "peer": pending.peer(),
                } }),
                format!("A device that knows the code is waiting.\n{question}"),
            )?;
            let no = "the phrase was not confirmed on the other device";
            let answer = rt.block_on(ask(&pending));
            if !json && !std::io::stdin().is_terminal() {
                // The answer came from a pipe, not typed: end the question's line.
                say(json, serde_json::Value::Null, "\n".into())?;
            }
            match answer {
                Answer::Yes => {}
                Answer::No => {
                    rt.block_on(pending.reject(no))?;
                    bail!(
                        "you did not confirm the phrase, so nothing was recorded; if the screens showed \
                         different phrases, something between the devices may be intercepting: pair again \
                         on a network you trust"
                    );
                }
                Answer::Nothing => {
                    rt.block_on(pending.reject(no))?;
                    bail!(
                        "no answer came on standard input, so nothing was recorded; run `duet pair host` \
                         again and answer y once both screens show the same phrase"
                    );
                }
                Answer::Late => {
                    rt.block_on(pending.reject("the phrase was not confirmed in time"))?;
                    bail!(
                        "no answer within {} seconds, so nothing was recorded; run `duet pair host` again",
                        CONFIRM_TIMEOUT.as_secs()
                    );
                }
                Answer::Gone => {
                    bail!("the other device gave up before you answered; nothing was recorded")
                }
            }
            let outcome = rt.block_on(pending.admit())?;
            say(
                json,
                serde_json::to_value(&outcome)?,
                format!(
                    "Paired with {} (partner {}).\n",
                    outcome.device_name, outcome.seat
                ),
            )
        }
        PairCmd::Join {
            code_and_addr,
            same_person,
            name,
        } => {
            if same_person {
                eprintln!(
                    "note: --same-person is ignored: the host chooses whose device this is \
                     (`duet pair host --own-device` pairs another device of its person)"
                );
            }
            let (code, addr) = match <[String; 2]>::try_from(code_and_addr) {
                Ok([code, addr]) => (given_code(code, "-")?, addr),
                Err(only) => {
                    let addr = only.into_iter().next().unwrap_or_default();
                    (read_code()?, addr)
                }
            };
            let home = match (Home::open(dir), name) {
                (Ok(h), _) => h,
                (Err(duet::Error::Store(duet::store::StoreError::NoHome(_))), Some(name)) => Home::init(
                    dir,
                    &InitOptions {
                        name,
                        device_name: None,
                    },
                )?,
                (Err(e), _) => return Err(e.into()),
            };
            let home = Arc::new(Mutex::new(home));
            let addr = address(&addr)?;
            let show = |phrase: &str| {
                // A failed write to stdout shows again at the end; pairing goes on.
                let _ = say(
                    json,
                    serde_json::json!({ "phrase": phrase }),
                    format!(
                        "Verification phrase: {phrase}\nCompare this phrase with the other screen; waiting for it to be confirmed there.\n"
                    ),
                );
            };
            let outcome = rt.block_on(duet::pair_join(home, &code, addr, show))?;
            let summary = outcome.sync.as_ref().map(moved).unwrap_or_default();
            say(
                json,
                serde_json::to_value(&outcome)?,
                format!(
                    "Confirmed. This device is now in the space as partner {}.\nFirst sync: {summary}.\n{}",
                    outcome.seat,
                    if outcome.imported > 0 {
                        format!(
                            "Brought {} of this device's entries into the shared space.\n",
                            outcome.imported
                        )
                    } else {
                        String::new()
                    }
                ),
            )
        }
    }
}

/// The pairing code given as an argument: read from standard input for `-`,
/// otherwise taken as it is, with a warning that others can see it
/// (`stdin_form` says how to avoid that).
fn given_code(arg: String, stdin_form: &str) -> Result<String> {
    if arg == "-" {
        return read_code();
    }
    eprintln!(
        "warning: a pairing code on the command line is visible to other users of this computer; use {stdin_form} to type it or pipe it on standard input instead"
    );
    Ok(arg)
}

/// Longest line read as a pairing code (a code is a number and a few words).
const MAX_CODE_LINE: u64 = 256;

/// Reads a pairing code from standard input: asks for it on a terminal, and
/// otherwise takes the first line.
fn read_code() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Pairing code (shown on the other device): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin
        .lock()
        .take(MAX_CODE_LINE)
        .read_line(&mut line)
        .context("cannot read the pairing code from standard input")?;
    let code = line.trim();
    if code.is_empty() {
        return Err(anyhow!(
            "no pairing code on standard input: type the code the other device shows, or pipe it in"
        ));
    }
    Ok(code.to_string())
}

/// How long `duet sync` looks for the couple's devices on the local network.
const DISCOVERY_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// `duet sync [ADDR] [--relay ADDR] [--no-discovery]`
pub fn sync(
    dir: &Path,
    json: bool,
    addr: Option<String>,
    relay: Option<String>,
    discovery: bool,
) -> Result<()> {
    let rt = runtime()?;
    let mut home = Home::open(dir)?;
    if let Some(r) = &relay {
        home.set_relay(Some(r))?;
    }
    // Each target is one device: its addresses, tried in turn.
    let mut targets: Vec<Vec<SocketAddr>> = Vec::new();
    // Devices and relays named on the command line must work; remembered and
    // discovered devices may be away, which is normal for a couple that also
    // syncs through a relay.
    let explicit = addr.is_some();
    let relay_explicit = relay.is_some();
    let mut relay_addr = relay;
    let look_around = discovery && addr.is_none();
    let known = |targets: &[Vec<SocketAddr>], a: &SocketAddr| targets.iter().flatten().any(|t| t == a);
    match addr {
        Some(a) => targets.push(vec![address(&a)?]),
        None => {
            for p in home.store_mut().peers()? {
                if let Ok(a) = p.address.parse::<SocketAddr>()
                    && !known(&targets, &a)
                {
                    targets.push(vec![a]);
                }
            }
            if relay_addr.is_none() {
                relay_addr = home.relay()?;
            }
        }
    }
    let home = Arc::new(Mutex::new(home));
    if look_around {
        match rt.block_on(duet::discover(&home, DISCOVERY_WAIT)) {
            Ok(found) => {
                for device in found {
                    if !device.addrs.iter().any(|a| known(&targets, a)) {
                        targets.push(device.addrs);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "LAN discovery failed"),
        }
    }
    if targets.is_empty() && relay_addr.is_none() {
        return Err(anyhow!(
            "no device to sync with: give its address (duet sync HOST:PORT), or a relay (--relay HOST:PORT); \
             none was found on the local network"
        ));
    }
    // Every device is tried at once, each address in turn; one that cannot be
    // reached does not hold up or stop the rest.
    let attempts = targets.iter().map(|addrs| {
        let home = home.clone();
        async move {
            let mut tried = Vec::new();
            for a in addrs {
                match duet::sync_once(home.clone(), *a).await {
                    Ok(r) => return Ok((*a, r)),
                    Err(e) => tried.push(format!("{a} ({e})")),
                }
            }
            Err(tried.join(", "))
        }
    });
    let outcomes = rt.block_on(futures::future::join_all(attempts));
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    let mut text = String::new();
    for outcome in outcomes {
        match outcome {
            Ok((t, r)) => {
                text.push_str(&format!(
                    "Synced with {} at {t}: {}.\n",
                    r.peer.short(),
                    moved(&r)
                ));
                reports.push(serde_json::to_value(&r)?);
            }
            Err(why) => failures.push((why, explicit)),
        }
    }
    if let Some(r) = &relay_addr {
        match rt.block_on(duet::relay_sync(home.clone(), r)) {
            Ok(rep) => {
                text.push_str(&format!(
                    "Synced through the relay at {r}: fetched {} bundles ({} changes, {} bytes), posted {} ({} changes, {} bytes), {} ms.\n",
                    rep.fetched, rep.changes_in, rep.bytes_in, rep.posted, rep.changes_out, rep.bytes_out, rep.millis
                ));
                if rep.skipped > 0 {
                    text.push_str(&format!(
                        "Skipped {} bundles this device cannot open (sealed before it joined or after it was revoked, or damaged).\n",
                        rep.skipped
                    ));
                }
                if rep.waiting > 0 {
                    text.push_str(&format!("{} changes wait for earlier ones.\n", rep.waiting));
                }
                reports.push(serde_json::to_value(&rep)?);
            }
            Err(e) => failures.push((format!("the relay {r} ({e})"), relay_explicit)),
        }
    }
    let tried = targets.len() + usize::from(relay_addr.is_some());
    if !reports.is_empty() || failures.is_empty() {
        say(json, serde_json::Value::Array(reports.clone()), text)?;
    }
    match failures.as_slice() {
        [] => Ok(()),
        // Something worked and nothing named on the command line failed: the
        // rest were away.
        some if !reports.is_empty() && some.iter().all(|(_, named)| !named) => {
            for (f, _) in some {
                anstream::eprintln!("note: could not reach {f}");
            }
            Ok(())
        }
        [(one, _)] if tried == 1 => Err(anyhow!("sync with {one}")),
        many => Err(anyhow!(
            "could not sync with {} of {} devices and relays: {}",
            many.len(),
            tried,
            many.iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// `duet serve`
pub fn serve(
    dir: &Path,
    json: bool,
    listen: String,
    peers: Vec<String>,
    relay: Option<String>,
    discovery: bool,
) -> Result<()> {
    let mut home = Home::open(dir)?;
    if let Some(r) = &relay {
        home.set_relay(Some(r))?;
    }
    let mut dial: Vec<SocketAddr> = peers.iter().map(|p| address(p)).collect::<Result<_>>()?;
    for p in home.store_mut().peers()? {
        if let Ok(a) = p.address.parse::<SocketAddr>()
            && !dial.contains(&a)
        {
            dial.push(a);
        }
    }
    let opts = ServeOptions {
        peers: dial,
        relay,
        discovery,
        ..ServeOptions::new(address(&listen)?)
    };
    let home = Arc::new(Mutex::new(home));
    run_until_signal(
        json,
        |stop, ready| duet::serve(home, opts, stop, Some(ready)),
        "Serving at",
    )?;
    say(json, serde_json::json!({ "stopped": true }), "Stopped.\n".into())
}

/// `duet relay`
pub fn relay(
    json: bool,
    listen: String,
    data: Option<std::path::PathBuf>,
    limits: crate::args::RelayLimits,
) -> Result<()> {
    let data = match data {
        Some(d) => d,
        None => directories::ProjectDirs::from("", "", "duet-relay")
            .map(|d| d.data_dir().to_path_buf())
            .ok_or_else(|| anyhow!("no data folder for the relay: pass --data DIR"))?,
    };
    const MIB: u64 = 1024 * 1024;
    let opts = duet::relay_server::server::RelayOptions {
        listen: address(&listen)?,
        data: Some(data),
        quota_bytes: limits.quota_mib.saturating_mul(MIB),
        retention: std::time::Duration::from_secs(limits.retention_days.saturating_mul(24 * 3600)),
        max_storage_bytes: limits.max_storage_mib.saturating_mul(MIB),
        max_spaces_per_device: limits.max_spaces_per_key,
        max_spaces_per_address: limits.max_spaces_per_address,
        gate: duet::relay_server::gate::GateLimits {
            connections_per_address: limits.max_connections_per_address,
            handshake_burst: limits.handshake_burst,
            handshakes_per_minute: limits.handshakes_per_minute,
        },
    };
    run_until_signal(
        json,
        |stop, ready| async move {
            duet::relay_server::server::run(opts, stop, Some(ready))
                .await
                .map_err(|e| anyhow!("{e}"))
        },
        "Relay listening at",
    )?;
    say(json, serde_json::json!({ "stopped": true }), "Stopped.\n".into())
}

/// Runs a server until Ctrl-C or SIGTERM: `start` gets the stop signal and a
/// sender for the bound address, announced as "`what` ADDR".
fn run_until_signal<F, Fut, E>(json: bool, start: F, what: &str) -> Result<()>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>, tokio::sync::oneshot::Sender<SocketAddr>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    let rt = runtime()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    rt.block_on(async move {
        // Signal handlers first: a signal sent the moment the server says it
        // is listening must already stop it cleanly.
        let stop_signal = stop_signal()?;
        let server = tokio::spawn(start(stop_rx, ready_tx));
        if let Ok(addr) = ready_rx.await {
            let _ = say(
                json,
                serde_json::json!({ "listening": addr.to_string() }),
                format!("{what} {addr}; Ctrl-C stops.\n"),
            );
        }
        let stopper = async {
            stop_signal.await;
            let _ = stop_tx.send(true);
        };
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r,
            () = stopper => (&mut server).await,
        };
        result
            .map_err(|e| anyhow!("the server task failed: {e}"))?
            .map_err(Into::into)
    })
}

/// A future that resolves on Ctrl-C or SIGTERM; the handlers are installed when
/// this returns.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
