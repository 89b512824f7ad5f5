//! The couple's devices on the local network: `serve` announces this device
//! (see [`crate::discovery`] for what is announced) and dials the devices it
//! finds; `duet sync` without an address looks for them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::discovery::{Announcer, DiscoveryOptions, Found, Interfaces};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::sync::{dial_forever, lock};

/// How often `serve` looks for the couple's devices on the network.
pub const LOOK_EVERY: Duration = Duration::from_secs(30);

/// How long each look lasts.
const LOOK_FOR: Duration = Duration::from_secs(3);

/// Failed attempts in a row after which a found device counts as gone (it
/// is dialled again once it is found again).
const GONE_AFTER: u32 = 3;

/// Announces this device on the local network under the space key's tag of
/// the day; `None` (logged) if it cannot.
pub(crate) fn announce(home: &Arc<Mutex<Home>>, local: SocketAddr) -> Option<Announcer> {
    let (key, me) = {
        let mut h = lock(home).ok()?;
        let ring = h.ensure_space_keys().ok()?;
        (
            zeroize::Zeroizing::new(*ring.sealing_key()?.secret()),
            h.device_id(),
        )
    };
    // A serve bound to loopback is reachable from this machine only: announce
    // it there, not to the network.
    let opts = DiscoveryOptions {
        interfaces: if local.ip().is_loopback() {
            Interfaces::LoopbackOnly
        } else {
            Interfaces::All
        },
    };
    match Announcer::start_with(&key, &me, local.port(), &opts) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "cannot announce this device on the local network");
            None
        }
    }
}

/// Finds the couple's devices announced on the local network, waiting up to
/// `wait`.
pub async fn discover(home: &Arc<Mutex<Home>>, wait: Duration) -> Result<Vec<Found>> {
    let (keys, me) = {
        let mut h = lock(home)?;
        let ring = h.keyring()?;
        let keys: zeroize::Zeroizing<Vec<[u8; 32]>> =
            zeroize::Zeroizing::new(ring.iter().map(|k| *k.secret()).collect());
        (keys, h.device_id())
    };
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    crate::discovery::browse_devices(&keys, &me, wait, &DiscoveryOptions::default())
        .await
        .map_err(|e| Error::Net(e.to_string()))
}

/// Looks for the couple's devices every [`LOOK_EVERY`] and keeps a live
/// session with each one found, until `stop`. Of two devices that find each
/// other, only the one whose announced marker sorts first dials, so a pair
/// holds one session, not two.
pub(crate) async fn dial_found(
    home: Arc<Mutex<Home>>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    announcer: Arc<Announcer>,
    changed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let dialling: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Dropped (aborting every dial) when `serve` stops this task.
    let mut dials = tokio::task::JoinSet::new();
    let mut first = true;
    while !*stop.borrow() {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => continue,
            }
        }
        first = false;
        let found = match discover(&home, LOOK_FOR).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for devices on the local network");
                continue;
            }
        };
        let Some(mine) = announcer.marker() else { continue };
        for device in found {
            let Some(addr) = device.addrs.first().copied() else {
                continue;
            };
            if device.marker >= mine {
                continue;
            }
            let Ok(mut set) = dialling.lock() else { return };
            if !set.insert(device.marker.clone()) {
                continue;
            }
            drop(set);
            tracing::info!(%addr, "dialling a device found on the local network");
            let (home, endpoint, client) = (home.clone(), endpoint.clone(), client.clone());
            let (changed, stop, dialling) = (changed.clone(), stop.clone(), dialling.clone());
            dials.spawn(async move {
                dial_forever(home, endpoint, client, addr, changed, stop, Some(GONE_AFTER)).await;
                if let Ok(mut set) = dialling.lock() {
                    set.remove(&device.marker);
                }
            });
        }
    }
}
