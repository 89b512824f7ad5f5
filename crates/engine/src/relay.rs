//! Sync through a mailbox relay, for partners who are rarely online at the
//! same moment.
//!
//! A round with the relay: make sure the relay's access list for this space
//! is the space's active member devices, fetch the bundles the couple's other
//! devices left since the last round (importing each, like a file), then post
//! one bundle of what the relay does not have yet. The relay sees sealed
//! bytes, the space's tag and the devices' public keys; never a name or a word
//! of the record.
//!
//! The relay's address lives in the shared document (`settings.relay`), so
//! setting it on one device is enough: the partner's devices learn it at their
//! next sync.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use duet_relay::client::RelayClient;
use duet_sync::proto::relay::{SignedAccess, SpaceTag};
use serde::Serialize;
use tokio::sync::watch;

use crate::bundle::Since;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::sync::lock;

/// How long a `serve` waits at the relay for a new bundle before asking again.
pub const RELAY_WAIT: Duration = Duration::from_secs(20);

/// What a round with the relay moved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayReport {
    /// The relay's address.
    pub relay: String,
    /// Bundles fetched.
    pub fetched: usize,
    /// Bytes fetched.
    pub bytes_in: usize,
    /// Changes applied from them.
    pub changes_in: usize,
    /// Changes that wait for their dependencies.
    pub waiting: usize,
    /// Bundles this device could not use (sealed with a key it does not hold,
    /// or failing verification): skipped, with a warning in the log.
    pub skipped: usize,
    /// Bundles posted (0 or 1).
    pub posted: usize,
    /// Changes in them.
    pub changes_out: usize,
    /// Bytes posted.
    pub bytes_out: usize,
    /// Milliseconds taken.
    pub millis: u64,
}

fn relay_err(e: impl std::fmt::Display) -> Error {
    Error::Relay(format!("relay: {e}"))
}

/// Resolves `host:port`.
pub async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::Relay(format!(
                "invalid relay address '{addr}' (expected host:port, such as relay.example.org:7490)"
            ))
        })
}

impl Home {
    /// The relay the couple uses, from the shared document.
    pub fn relay(&mut self) -> Result<Option<String>> {
        self.read(duet_model::keys::relay)
    }

    /// Sets (or clears) the couple's relay in the shared document, so that
    /// every device of the space uses it. Writes only if it differs.
    pub fn set_relay(&mut self, addr: Option<&str>) -> Result<()> {
        if self.relay()?.as_deref() == addr {
            return Ok(());
        }
        self.edit(|e| e.set_relay(addr))
    }

    /// The relay's access list this space should have: its active devices.
    fn relay_access(&mut self) -> Result<Vec<duet_model::DeviceId>> {
        let mut active = self.membership()?.active();
        active.sort_by_key(|d| *d.as_bytes());
        Ok(active)
    }
}

/// True if the relay holds everything `doc` does: each of the document's
/// heads is among what the relay has. (A head is nobody's ancestor, so it is
/// covered only by itself; a check of heads, not a walk of the history.)
fn relay_has_all(doc: &automerge::Automerge, has: &[ChangeHash]) -> bool {
    doc.get_heads().iter().all(|h| has.contains(h))
}

/// The serial of a list to replace `current` with. The relay's list is the
/// relay's word: one at `u64::MAX` cannot be followed, and says so rather
/// than overflowing.
fn next_serial(current: Option<&SignedAccess>) -> Result<u64> {
    match current {
        None => Ok(1),
        Some(c) => c.serial.checked_add(1).ok_or_else(|| {
            Error::Relay(
                "relay: the relay's device list for this space has the largest possible serial, so it \
                 can never be replaced; use another relay for this space"
                    .into(),
            )
        }),
    }
}

/// One connection's worth of relay work for a home.
struct Round {
    home: Arc<Mutex<Home>>,
    addr: String,
    client: RelayClient,
    space: SpaceTag,
}

impl Round {
    async fn connect(home: Arc<Mutex<Home>>, addr: &str) -> Result<Round> {
        let socket = resolve(addr).await?;
        let (secret, space_id) = {
            let mut h = lock(&home)?;
            (h.store_mut().device_secret()?, h.space_id()?)
        };
        let client = RelayClient::connect(socket, &secret).await.map_err(relay_err)?;
        Ok(Round {
            home,
            addr: addr.to_string(),
            client,
            space: SpaceTag::of(&space_id),
        })
    }

    /// Makes the relay's access list match the space's active devices.
    async fn update_access(&mut self) -> Result<()> {
        let mut refused = None;
        for _ in 0..3 {
            let current = self.client.access(self.space).await.map_err(relay_err)?;
            let (wanted, secret) = {
                let mut h = lock(&self.home)?;
                (h.relay_access()?, h.store_mut().device_secret()?)
            };
            let me = secret.device_id();
            if let Some(c) = &current {
                let have: HashSet<_> = c.devices.iter().collect();
                if have == wanted.iter().collect::<HashSet<_>>() {
                    return Ok(());
                }
                if !c.devices.contains(&me) {
                    return Err(Error::Relay(
                        "this device is not yet on the relay's list for this space: sync once with \
                         one of the couple's devices that uses the relay"
                            .into(),
                    ));
                }
            }
            if !wanted.contains(&me) {
                return Err(Error::Relay(
                    "this device is no longer a member of the space".into(),
                ));
            }
            let serial = next_serial(current.as_ref())?;
            let signed = SignedAccess::sign(&secret, self.space, serial, wanted).map_err(relay_err)?;
            match self.client.set_access(signed).await {
                Ok(()) => return Ok(()),
                // Another device updated the list meanwhile: read it again.
                // A refusal for good (the relay is full, say) comes back the
                // same each time, and is what the user is told.
                Err(e) => {
                    tracing::info!(error = %e, "the relay refused an access list; retrying");
                    refused = Some(e);
                }
            }
        }
        Err(match refused {
            Some(e) => relay_err(e),
            None => Error::Relay("the relay kept refusing this space's device list".into()),
        })
    }

    /// Fetches and imports every bundle waiting at the relay, waiting up to
    /// `wait` for the first one.
    async fn fetch(&mut self, wait: Duration, report: &mut RelayReport) -> Result<()> {
        let mut wait = wait;
        loop {
            let after = lock(&self.home)?.store_mut().relay_cursor(&self.addr)?.fetched;
            let (items, more) = self
                .client
                .fetch(self.space, after, wait)
                .await
                .map_err(relay_err)?;
            wait = Duration::ZERO;
            if items.is_empty() {
                return Ok(());
            }
            let mut h = lock(&self.home)?;
            let mut cursor = h.store_mut().relay_cursor(&self.addr)?;
            // Was everything this home holds already at the relay? Then what
            // it holds after importing is too.
            let covered = h.read(|doc| relay_has_all(doc, &cursor.has))?;
            let mut new_heads: Vec<ChangeHash> = Vec::new();
            for (seq, bytes) in items {
                report.fetched += 1;
                report.bytes_in += bytes.len();
                match h.import_bundle(&bytes) {
                    Ok(r) => {
                        report.changes_in += r.applied;
                        report.waiting = r.waiting;
                        new_heads.extend(r.heads);
                    }
                    // A bundle this device cannot use is skipped, not retried
                    // forever: sealed before it joined or after it was
                    // revoked, or altered on the way.
                    Err(Error::Bundle(why)) => {
                        report.skipped += 1;
                        tracing::warn!(seq, %why, "skipped a bundle from the relay");
                    }
                    Err(e) => return Err(e),
                }
                cursor.fetched = cursor.fetched.max(seq);
            }
            cursor.has = if covered {
                h.read(|doc| doc.get_heads())?
            } else {
                let mut has = cursor.has.clone();
                has.extend(new_heads);
                has.sort_unstable();
                has.dedup();
                has
            };
            h.store_mut().set_relay_cursor(&self.addr, &cursor)?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Posts one bundle of what the relay does not have, if anything.
    async fn push(&mut self, report: &mut RelayReport) -> Result<()> {
        let bundle = {
            let mut h = lock(&self.home)?;
            let cursor = h.store_mut().relay_cursor(&self.addr)?;
            let nothing_new = h.read(|doc| relay_has_all(doc, &cursor.has))?;
            if nothing_new {
                return Ok(());
            }
            h.export_bundle(Since::Heads(cursor.has))?
        };
        if bundle.changes == 0 {
            return Ok(());
        }
        self.client
            .post(self.space, bundle.bytes.clone())
            .await
            .map_err(relay_err)?;
        report.posted += 1;
        report.changes_out += bundle.changes;
        report.bytes_out += bundle.bytes.len();
        let mut h = lock(&self.home)?;
        let mut cursor = h.store_mut().relay_cursor(&self.addr)?;
        cursor.has = bundle.heads;
        h.store_mut().set_relay_cursor(&self.addr, &cursor)?;
        Ok(())
    }
}

/// One round with the relay at `addr`: update its access list, fetch and
/// import what the couple's other devices left, post what it lacks.
pub async fn relay_sync(home: Arc<Mutex<Home>>, addr: &str) -> Result<RelayReport> {
    let started = Instant::now();
    let mut report = RelayReport {
        relay: addr.to_string(),
        ..Default::default()
    };
    let mut round = Round::connect(home, addr).await?;
    let result = async {
        round.update_access().await?;
        round.fetch(Duration::ZERO, &mut report).await?;
        round.push(&mut report).await
    }
    .await;
    round.client.close().await;
    result?;
    report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Keeps this home in step with the relay at `addr` until `stop`: posts each
/// change soon after it is made, and waits at the relay for the couple's
/// other devices' bundles. Reconnects with backoff.
pub(crate) async fn relay_forever(
    home: Arc<Mutex<Home>>,
    addr: String,
    mut changed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    while !*stop.borrow() {
        let attempt = async {
            let mut round = Round::connect(home.clone(), &addr).await?;
            round.update_access().await?;
            let mut report = RelayReport::default();
            round.fetch(Duration::ZERO, &mut report).await?;
            round.push(&mut report).await?;
            loop {
                let mut report = RelayReport::default();
                tokio::select! {
                    r = round.fetch(RELAY_WAIT, &mut report) => r?,
                    c = changed.changed() => {
                        if c.is_err() {
                            return Ok(round);
                        }
                        changed.mark_unchanged();
                    }
                    _ = stop.changed() => if *stop.borrow() { return Ok(round) },
                }
                // Membership may have changed (a pairing, a revocation).
                round.update_access().await?;
                round.push(&mut report).await?;
                if report.fetched + report.posted > 0 {
                    tracing::info!(
                        relay = %addr, fetched = report.fetched, changes_in = report.changes_in,
                        posted = report.posted, "relay round"
                    );
                }
            }
        }
        .await;
        match attempt {
            Ok(round) => {
                round.client.close().await;
                return;
            }
            Err::<Round, Error>(e) => {
                tracing::info!(relay = %addr, error = %e, retry_in = ?backoff, "relay unreachable")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
