//! The relay's rules, without sockets: who may read and change a space's
//! access list, post and fetch; the quota; expiry; the long-poll wait.
//!
//! | request | allowed when | answer |
//! | --- | --- | --- |
//! | `Access` | the space is unknown (answers `None`), or the asking device is in its list | the list |
//! | `SetAccess` | the signature verifies strictly, the signer is the asking device, and either the space is unknown, the signer is in the new list and the registration limits allow it, or the signer is in the current list and the serial grows (by at most [`MAX_SERIAL_STEP`]) | `Done` |
//! | `Post` | the asking device is in the list, and the space's bundles stay within the quota and the relay's within its storage cap | `Posted { seq }` |
//! | `Fetch` | the asking device is in the list | bundles after `after` by other devices (acknowledging up to `after` first) |
//!
//! A device removed from the list loses access at once, including to
//! bundles it has not fetched yet.
//!
//! Registering a space is limited, so that no one can fill the relay with
//! spaces of their own: a device may register [`Limits::max_spaces_per_device`]
//! spaces, an address (an IPv4 host or an IPv6 /64, see [`Source`])
//! [`Limits::max_spaces_per_address`], and no new space is taken once the
//! relay keeps [`Limits::max_storage_bytes`]. Replacing a list is never
//! refused for room: removing a device must always work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duet_model::DeviceId;
use duet_sync::proto::relay::{MAX_FETCH_BYTES, MAX_RELAY_BUNDLE, MAX_WAIT_MS, Request, Response, SpaceTag};
use tokio::sync::Notify;

use crate::store::{Registrant, RelayStore, Source, StoreError};

/// The default storage bound per space: 64 MiB of bundles.
pub const DEFAULT_QUOTA: u64 = 64 * 1024 * 1024;

/// The default retention: bundles are deleted 30 days after they were posted,
/// delivered or not.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The refusal when a post would take a space over its quota.
pub const QUOTA_FULL: &str = "the relay's storage for this space is full";
/// The refusal to a device the space's access list does not name.
pub const NOT_LISTED: &str = "this device is not allowed in this space on the relay";
/// The refusal when the relay does not know the space.
pub const UNKNOWN_SPACE: &str = "the relay does not know this space yet: set its access list first";
/// The refusal when the relay's own storage failed.
pub const STORAGE_FAILED: &str = "the relay could not use its storage; try again later";
/// The refusal when the relay keeps as much as its storage cap allows.
pub const RELAY_FULL: &str = "the relay is full: it takes nothing new until what it keeps is delivered or expires; try again later or use another relay";
/// The refusal when a device registered as many spaces as it may.
pub const TOO_MANY_SPACES_DEVICE: &str = "this device has registered as many spaces as this relay allows";
/// The refusal when an address registered as many spaces as it may.
pub const TOO_MANY_SPACES_ADDRESS: &str = "too many spaces are registered from this address on this relay";
/// The refusal when an access list's serial jumps too far.
pub const SERIAL_TOO_FAR: &str = "the access list's serial jumps too far ahead of the relay's";

/// The default bound on what the relay keeps over all spaces: 4 GiB.
pub const DEFAULT_MAX_STORAGE: u64 = 4 * 1024 * 1024 * 1024;
/// The default number of spaces one device may register (a device joins its
/// couple's space, and perhaps a few more).
pub const DEFAULT_SPACES_PER_DEVICE: u64 = 4;
/// The default number of spaces registered from one address.
pub const DEFAULT_SPACES_PER_ADDRESS: u64 = 16;
/// How far one access list's serial may be ahead of the one it replaces
/// (or, for a new space, of 0). Without it one list at `u64::MAX` would
/// leave no serial for the next, so that the list could never change again;
/// with it, using the serials up takes 2^32 lists in a row.
pub const MAX_SERIAL_STEP: u64 = 1 << 32;

/// Who sent a request: the device its connection proved, and the address
/// it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The device.
    pub device: DeviceId,
    /// Its network source.
    pub source: Source,
}

/// A relay's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of bundles a space may keep.
    pub quota_bytes: u64,
    /// How long a bundle is kept, delivered or not.
    pub retention: Duration,
    /// Bytes of bundles and access lists the relay keeps over all spaces.
    pub max_storage_bytes: u64,
    /// Spaces one device may register.
    pub max_spaces_per_device: u64,
    /// Spaces that may be registered from one address.
    pub max_spaces_per_address: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quota_bytes: DEFAULT_QUOTA,
            retention: DEFAULT_RETENTION,
            max_storage_bytes: DEFAULT_MAX_STORAGE,
            max_spaces_per_device: DEFAULT_SPACES_PER_DEVICE,
            max_spaces_per_address: DEFAULT_SPACES_PER_ADDRESS,
        }
    }
}

/// The relay: the rules over a [`RelayStore`], shared by every connection.
pub struct Relay<S: RelayStore> {
    store: Mutex<S>,
    limits: Limits,
    /// Woken when a bundle is posted to the space, for long-polling fetches.
    waiting: Mutex<HashMap<SpaceTag, Arc<Notify>>>,
}

/// The time, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<S: RelayStore> Relay<S> {
    /// A relay over `store` with `limits`.
    pub fn new(store: S, limits: Limits) -> Relay<S> {
        Relay {
            store: Mutex::new(store),
            limits,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// The relay's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn store(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock leaves the store as its last
        // committed write (SQLite) or a consistent map (memory).
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one request from `caller` at `now_ms`, without waiting: a
    /// [`Request::Fetch`] with nothing to hand out answers an empty list at
    /// once (see [`Relay::answer`] for the wait). Blocks on the store: call
    /// it off the async threads.
    pub fn handle(&self, caller: Caller, req: Request, now_ms: u64) -> Response {
        let kind = req.kind();
        let space = req.space();
        match self.rules(caller, req, now_ms) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, kind, space = %space.short(), "relay storage failed");
                Response::failure(STORAGE_FAILED)
            }
        }
    }

    /// Why a new space of `list_size` bytes may not be registered by
    /// `caller`, if it may not.
    fn refuse_registration(
        &self,
        store: &mut S,
        caller: Caller,
        list_size: u64,
    ) -> Result<Option<&'static str>, StoreError> {
        let by = Registrant {
            device: caller.device,
            source: caller.source,
        };
        let done = store.registered(&by)?;
        let refusal = if done.by_device >= self.limits.max_spaces_per_device {
            Some(TOO_MANY_SPACES_DEVICE)
        } else if done.from_source >= self.limits.max_spaces_per_address {
            Some(TOO_MANY_SPACES_ADDRESS)
        } else if store.total_usage()?.saturating_add(list_size) > self.limits.max_storage_bytes {
            Some(RELAY_FULL)
        } else {
            None
        };
        if let Some(why) = refusal {
            tracing::info!(by = %caller.device.short(), from = %caller.source, devices = done.by_device, address = done.from_source, why, "refused a new space");
        }
        Ok(refusal)
    }

    /// Why a bundle of `len` bytes may not be added to `space`, if it may not.
    fn refuse_room(
        &self,
        store: &mut S,
        space: &SpaceTag,
        len: usize,
    ) -> Result<Option<&'static str>, StoreError> {
        let used = store.usage(space)?;
        if used.saturating_add(len as u64) > self.limits.quota_bytes {
            tracing::info!(space = %space.short(), used, bytes = len, "refused a post over the quota");
            return Ok(Some(QUOTA_FULL));
        }
        let total = store.total_usage()?;
        if total.saturating_add(len as u64) > self.limits.max_storage_bytes {
            tracing::warn!(space = %space.short(), total, bytes = len, "refused a post: the relay is full");
            return Ok(Some(RELAY_FULL));
        }
        Ok(None)
    }

    fn rules(&self, caller: Caller, req: Request, now_ms: u64) -> Result<Response, StoreError> {
        let peer = caller.device;
        let mut store = self.store();
        let answer = Ok;
        match req {
            Request::Access { space } => match store.access(&space)? {
                None => answer(Response::Access(None)),
                Some(a) if a.allows(&peer) => answer(Response::Access(Some(a))),
                Some(_) => answer(Response::failure(NOT_LISTED)),
            },
            Request::SetAccess(new) => {
                if !new.verify() {
                    return answer(Response::failure("the access list's signature does not verify"));
                }
                if new.signer != peer {
                    return answer(Response::failure(
                        "the access list must be signed by the device that sends it",
                    ));
                }
                let current = store.access(&new.space)?;
                let base = current.as_ref().map_or(0, |c| c.serial);
                if new.serial.saturating_sub(base) > MAX_SERIAL_STEP {
                    return answer(Response::failure(SERIAL_TOO_FAR));
                }
                let replaces = match &current {
                    None if new.allows(&peer) => {
                        let size = new.to_bytes().map_or(0, |b| b.len() as u64);
                        if let Some(why) = self.refuse_registration(&mut store, caller, size)? {
                            return answer(Response::failure(why));
                        }
                        None
                    }
                    None => {
                        return answer(Response::failure(
                            "a new space's access list must name the device that sends it",
                        ));
                    }
                    Some(c) if !c.allows(&peer) => return answer(Response::failure(NOT_LISTED)),
                    Some(c) if new.serial <= c.serial => {
                        return answer(Response::failure(format!(
                            "the relay holds a newer access list for this space (serial {}, this one {})",
                            c.serial, new.serial
                        )));
                    }
                    Some(c) => Some(c.serial),
                };
                let by = Registrant {
                    device: peer,
                    source: caller.source,
                };
                if store.set_access(&new, replaces, &by)? {
                    tracing::info!(space = %new.space.short(), serial = new.serial, devices = new.devices.len(), by = %peer.short(), "access list set");
                    answer(Response::Done)
                } else {
                    answer(Response::failure(
                        "the access list changed meanwhile; read it again",
                    ))
                }
            }
            Request::Post { space, bundle } => {
                match store.access(&space)? {
                    None => return answer(Response::failure(UNKNOWN_SPACE)),
                    Some(a) if !a.allows(&peer) => return answer(Response::failure(NOT_LISTED)),
                    Some(_) => {}
                }
                if let Some(why) = self.refuse_room(&mut store, &space, bundle.len())? {
                    return answer(Response::failure(why));
                }
                let seq = store.append(&space, &peer, &bundle, now_ms)?;
                tracing::debug!(space = %space.short(), seq, bytes = bundle.len(), by = %peer.short(), "bundle kept");
                // Committed: the space's waiting fetches may look.
                self.wake(&space);
                answer(Response::Posted { seq })
            }
            Request::Fetch { space, after, .. } => {
                match store.access(&space)? {
                    None => return answer(Response::failure(UNKNOWN_SPACE)),
                    Some(a) if !a.allows(&peer) => return answer(Response::failure(NOT_LISTED)),
                    Some(_) => {}
                }
                store.ack(&space, &peer, after)?;
                let expired = store.expire(Some(&space), now_ms, millis(self.limits.retention))?;
                if expired > 0 {
                    tracing::info!(space = %space.short(), expired, "bundles expired");
                }
                let f = store.fetch(&space, after, &peer, MAX_FETCH_BYTES)?;
                answer(Response::Bundles {
                    items: f.items,
                    more: f.more,
                })
            }
        }
    }

    /// Whether a post of a bundle of `bundle_len` bytes by `peer` would be
    /// refused, judged from a frame's header before its body is read: the
    /// refusal, if so. [`Relay::handle`] checks everything again.
    pub fn refuse_post_early(
        &self,
        peer: &DeviceId,
        space: &SpaceTag,
        bundle_len: usize,
    ) -> Option<Response> {
        let mut store = self.store();
        let mut check = || -> Result<Option<Response>, StoreError> {
            if bundle_len > MAX_RELAY_BUNDLE {
                return Ok(Some(Response::failure(
                    "the bundle is over the relay's size limit",
                )));
            }
            match store.access(space)? {
                None => return Ok(Some(Response::failure(UNKNOWN_SPACE))),
                Some(a) if !a.allows(peer) => return Ok(Some(Response::failure(NOT_LISTED))),
                Some(_) => {}
            }
            Ok(self
                .refuse_room(&mut *store, space, bundle_len)?
                .map(Response::failure))
        };
        check().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "relay storage failed");
            Some(Response::failure(STORAGE_FAILED))
        })
    }

    /// Deletes delivered and too old bundles of every space; returns how many.
    pub fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.store().expire(None, now_ms, millis(self.limits.retention))
    }

    /// The notifier of `space`'s waiting fetches, made if missing.
    fn waiter(&self, space: &SpaceTag) -> Arc<Notify> {
        let mut w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        w.entry(*space).or_default().clone()
    }

    fn wake(&self, space: &SpaceTag) {
        let w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = w.get(space) {
            n.notify_waiters();
        }
    }

    /// Forgets `space`'s notifier once no fetch waits on it.
    fn unwait(&self, space: &SpaceTag, notify: Arc<Notify>) {
        let mut w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Ours and the map's: no one else waits.
        if Arc::strong_count(&notify) <= 2 {
            w.remove(space);
        }
    }

    /// Spaces with a fetch waiting (for tests and logs).
    pub fn waiting_spaces(&self) -> usize {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl<S: RelayStore + 'static> Relay<S> {
    /// Answers one request from `peer` as the server does: the rules run on
    /// tokio's blocking threads, and a [`Request::Fetch`] with nothing to hand
    /// out waits up to `min(wait_ms, 25 s)` for a bundle of another device.
    pub async fn answer(self: &Arc<Self>, peer: Caller, req: Request) -> Response {
        let Request::Fetch {
            space,
            after,
            wait_ms,
        } = req
        else {
            return self.blocking(peer, req).await;
        };
        let fetch = || Request::Fetch {
            space,
            after,
            wait_ms,
        };
        let wait = Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)));
        if wait.is_zero() {
            return self.blocking(peer, fetch()).await;
        }
        let deadline = Instant::now() + wait;
        let notify = self.waiter(&space);
        let answer = loop {
            // Registered before the store is read: a post in between still wakes us.
            let mut notified = Box::pin(notify.clone().notified_owned());
            notified.as_mut().enable();
            let answer = self.blocking(peer, fetch()).await;
            let empty = matches!(&answer, Response::Bundles { items, .. } if items.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if !empty || left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                break answer;
            }
        };
        self.unwait(&space, notify);
        answer
    }

    /// [`Relay::handle`] on tokio's blocking threads.
    async fn blocking(self: &Arc<Self>, peer: Caller, req: Request) -> Response {
        let relay = Arc::clone(self);
        match tokio::task::spawn_blocking(move || relay.handle(peer, req, now_ms())).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "a request's task failed");
                Response::failure(STORAGE_FAILED)
            }
        }
    }
}

#[cfg(test)]
mod tests;
