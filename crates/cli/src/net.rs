//! The network commands: pair, sync, serve. Each runs the engine's async API on
//! a tokio runtime made for the command.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use duet::{Home, InitOptions, PAIR_TIMEOUT, PairHost, ServeOptions};

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

/// `duet pair host|join`
pub fn pair(dir: &Path, json: bool, cmd: PairCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        PairCmd::Host { listen, code } => {
            let home = Arc::new(Mutex::new(Home::open(dir)?));
            let code = code
                .map(|c| c.parse().map_err(|e| anyhow!("invalid pairing code: {e}")))
                .transpose()?;
            let _guard = rt.enter();
            let host = PairHost::bind(home, address(&listen)?, code)?;
            let addr = host.local_addr()?;
            let code = host.code().to_string();
            say(
                json,
                serde_json::json!({ "code": code, "address": addr.to_string() }),
                format!(
                    "Pairing code: {code}\nWaiting at {addr} for up to {} minutes. On the other device run:\n  duet pair join {code} <this device's address>:{}\n",
                    PAIR_TIMEOUT.as_secs() / 60,
                    addr.port()
                ),
            )?;
            let outcome = rt.block_on(host.run(PAIR_TIMEOUT))?;
            say(
                json,
                serde_json::to_value(&outcome)?,
                format!(
                    "Paired with {} (partner {}).\nVerification phrase: {}\nCheck that the other device shows the same phrase.\n",
                    outcome.device_name, outcome.seat, outcome.phrase
                ),
            )
        }
        PairCmd::Join {
            code,
            addr,
            same_person,
            name,
        } => {
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
            let outcome = rt.block_on(duet::pair_join(home, &code, addr, same_person))?;
            let summary = outcome.sync.as_ref().map(moved).unwrap_or_default();
            say(
                json,
                serde_json::to_value(&outcome)?,
                format!(
                    "Paired: this device is now in the space as partner {}.\nVerification phrase: {}\nCheck that the other device shows the same phrase.\nFirst sync: {summary}.\n{}",
                    outcome.seat,
                    outcome.phrase,
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

/// `duet sync [ADDR]`
pub fn sync(dir: &Path, json: bool, addr: Option<String>) -> Result<()> {
    let rt = runtime()?;
    let mut home = Home::open(dir)?;
    let targets: Vec<SocketAddr> = match addr {
        Some(a) => vec![address(&a)?],
        None => {
            let known: Vec<SocketAddr> = home
                .store_mut()
                .peers()?
                .iter()
                .filter_map(|p| p.address.parse().ok())
                .collect();
            if known.is_empty() {
                return Err(anyhow!(
                    "no device to sync with: give its address (duet sync HOST:PORT)"
                ));
            }
            known
        }
    };
    let home = Arc::new(Mutex::new(home));
    // Every device is tried; one that cannot be reached does not stop the rest.
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for t in &targets {
        match rt.block_on(duet::sync_once(home.clone(), *t)) {
            Ok(r) => reports.push((*t, r)),
            Err(e) => failures.push(format!("{t} ({e})")),
        }
    }
    let text: String = reports
        .iter()
        .map(|(t, r)| format!("Synced with {} at {t}: {}.\n", r.peer.short(), moved(r)))
        .collect();
    let json_reports: Vec<&duet::SyncReport> = reports.iter().map(|(_, r)| r).collect();
    if !reports.is_empty() || failures.is_empty() {
        say(json, serde_json::to_value(&json_reports)?, text)?;
    }
    match failures.as_slice() {
        [] => Ok(()),
        [one] if targets.len() == 1 => Err(anyhow!("sync with {one}")),
        many => Err(anyhow!(
            "could not sync with {} of {} devices: {}",
            many.len(),
            targets.len(),
            many.join("; ")
        )),
    }
}

/// `duet serve`
pub fn serve(dir: &Path, json: bool, listen: String, peers: Vec<String>) -> Result<()> {
    let rt = runtime()?;
    let mut home = Home::open(dir)?;
    let mut dial: Vec<SocketAddr> = peers.iter().map(|p| address(p)).collect::<Result<_>>()?;
    for p in home.store_mut().peers()? {
        if let Ok(a) = p.address.parse::<SocketAddr>()
            && !dial.contains(&a)
        {
            dial.push(a);
        }
    }
    let opts = ServeOptions {
        listen: address(&listen)?,
        peers: dial,
        // Edits by other `duet` processes are noticed by polling SQLite's
        // data_version: a cheap query, so often.
        poll: std::time::Duration::from_millis(25),
    };
    let home = Arc::new(Mutex::new(home));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    rt.block_on(async move {
        // Signal handlers first: a signal sent the moment `serve` says it is
        // listening must already stop it cleanly.
        let stop_signal = stop_signal()?;
        let server = tokio::spawn(duet::serve(home, opts, stop_rx, Some(ready_tx)));
        if let Ok(addr) = ready_rx.await {
            let _ = say(
                json,
                serde_json::json!({ "listening": addr.to_string() }),
                format!("Serving at {addr}; Ctrl-C stops.\n"),
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
            .map_err(anyhow::Error::from)
    })?;
    say(json, serde_json::json!({ "stopped": true }), "Stopped.\n".into())
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
