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
/// (or, for a new space, of 0): a listed device cannot spend the serials
/// (every list after one at `u64::MAX` would be refused) in any number of
/// requests it could make.
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::MemoryRelayStore;
    use duet_model::DeviceSecret;
    use duet_sync::proto::relay::SignedAccess;

    const SPACE: SpaceTag = SpaceTag([3; 16]);
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    fn secret(n: u8) -> DeviceSecret {
        DeviceSecret::from_bytes(&[n; 32])
    }

    fn dev(n: u8) -> DeviceId {
        secret(n).device_id()
    }

    /// Device `n`, from 127.0.0.1.
    fn at(n: u8) -> Caller {
        Caller {
            device: dev(n),
            source: Source::of([127, 0, 0, 1].into()),
        }
    }

    fn list(signer: u8, serial: u64, devices: &[u8]) -> SignedAccess {
        list_in(SPACE, signer, serial, devices)
    }

    fn list_in(space: SpaceTag, signer: u8, serial: u64, devices: &[u8]) -> SignedAccess {
        SignedAccess::sign(&secret(signer), space, serial, devices.iter().map(|d| dev(*d))).unwrap()
    }

    fn limited(limits: Limits) -> Relay<MemoryRelayStore> {
        Relay::new(MemoryRelayStore::new(), limits)
    }

    /// Device `n` registers space `k` (of devices `n` and 2) from `source`.
    fn register(r: &Relay<MemoryRelayStore>, n: u8, k: u8, source: [u8; 4]) -> Response {
        let caller = Caller {
            device: dev(n),
            source: Source::of(source.into()),
        };
        r.handle(
            caller,
            Request::SetAccess(list_in(SpaceTag([k; 16]), n, 1, &[n, 2])),
            0,
        )
    }

    fn relay() -> Relay<MemoryRelayStore> {
        Relay::new(MemoryRelayStore::new(), Limits::default())
    }

    fn set(r: &Relay<MemoryRelayStore>, by: u8, a: SignedAccess) -> Response {
        r.handle(at(by), Request::SetAccess(a), 0)
    }

    fn post(r: &Relay<MemoryRelayStore>, by: u8, bytes: &[u8], now: u64) -> Response {
        r.handle(
            at(by),
            Request::Post {
                space: SPACE,
                bundle: bytes.to_vec(),
            },
            now,
        )
    }

    fn fetch(r: &Relay<MemoryRelayStore>, by: u8, after: u64, now: u64) -> Response {
        r.handle(
            at(by),
            Request::Fetch {
                space: SPACE,
                after,
                wait_ms: 0,
            },
            now,
        )
    }

    fn seqs(r: Response) -> Vec<u64> {
        match r {
            Response::Bundles { items, .. } => items.into_iter().map(|i| i.0).collect(),
            other => panic!("expected bundles, got {other:?}"),
        }
    }

    fn failure(r: Response) -> String {
        match r {
            Response::Failure(t) => t,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A space of devices 1 and 2, registered by 1.
    fn couple() -> Relay<MemoryRelayStore> {
        let r = relay();
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2])), Response::Done);
        r
    }

    #[test]
    fn access_is_readable_by_listed_devices_or_for_unknown_spaces() {
        let r = relay();
        let ask = |by| r.handle(at(by), Request::Access { space: SPACE }, 0);
        assert_eq!(
            ask(9),
            Response::Access(None),
            "an unknown space reads as none, to anyone"
        );
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2])), Response::Done);
        assert_eq!(ask(1), Response::Access(Some(list(1, 1, &[1, 2]))));
        assert_eq!(ask(2), Response::Access(Some(list(1, 1, &[1, 2]))));
        assert_eq!(failure(ask(9)), NOT_LISTED);
    }

    #[test]
    fn a_new_space_is_registered_only_by_a_device_it_names() {
        let r = relay();
        assert!(failure(set(&r, 3, list(3, 1, &[1, 2]))).contains("must name the device"));
        assert_eq!(set(&r, 2, list(2, 1, &[1, 2])), Response::Done);
    }

    #[test]
    fn the_signer_must_be_the_connection_device() {
        let r = relay();
        // Device 2 sends a list device 1 signed.
        assert!(failure(set(&r, 2, list(1, 1, &[1, 2]))).contains("signed by the device that sends it"));
        assert_eq!(
            r.handle(at(2), Request::Access { space: SPACE }, 0),
            Response::Access(None)
        );
    }

    #[test]
    fn a_bad_signature_is_refused() {
        let r = relay();
        let mut a = list(1, 1, &[1, 2]);
        a.serial = 2;
        assert!(failure(set(&r, 1, a)).contains("does not verify"));
    }

    #[test]
    fn the_serial_must_grow_and_the_signer_be_listed() {
        let r = couple();
        assert!(failure(set(&r, 2, list(2, 1, &[1, 2, 3]))).contains("newer access list"));
        assert!(failure(set(&r, 1, list(1, 0, &[1]))).contains("newer access list"));
        // A stranger cannot take over, even with a larger serial.
        assert_eq!(failure(set(&r, 3, list(3, 9, &[3]))), NOT_LISTED);
        assert_eq!(set(&r, 2, list(2, 2, &[1, 2, 3])), Response::Done);
        assert_eq!(
            r.handle(at(3), Request::Access { space: SPACE }, 0),
            Response::Access(Some(list(2, 2, &[1, 2, 3])))
        );
    }

    #[test]
    fn one_device_registers_at_most_its_share_of_spaces() {
        let r = limited(Limits {
            max_spaces_per_device: 2,
            ..Limits::default()
        });
        assert_eq!(register(&r, 1, 10, [10, 0, 0, 1]), Response::Done);
        assert_eq!(register(&r, 1, 11, [10, 0, 0, 2]), Response::Done);
        for (space, from) in [(12, [10, 0, 0, 1]), (13, [10, 0, 0, 3])] {
            assert_eq!(
                failure(register(&r, 1, space, from)),
                TOO_MANY_SPACES_DEVICE,
                "whatever address it comes from"
            );
        }
        assert_eq!(
            r.handle(
                at(1),
                Request::Access {
                    space: SpaceTag([12; 16])
                },
                0
            ),
            Response::Access(None),
            "nothing was stored"
        );
        // Its spaces' lists can still be replaced, and other devices register.
        let next = list_in(SpaceTag([10; 16]), 1, 2, &[1, 2, 3]);
        assert_eq!(r.handle(at(1), Request::SetAccess(next), 0), Response::Done);
        assert_eq!(register(&r, 4, 12, [10, 0, 0, 1]), Response::Done);
    }

    #[test]
    fn one_address_registers_at_most_its_share_of_spaces() {
        let r = limited(Limits {
            max_spaces_per_address: 3,
            ..Limits::default()
        });
        // Fresh keys from one address: three spaces, then no more.
        for n in 1..=3 {
            assert_eq!(register(&r, n, n, [10, 0, 0, 1]), Response::Done);
        }
        for n in 4..=6 {
            assert_eq!(
                failure(register(&r, n, n, [10, 0, 0, 1])),
                TOO_MANY_SPACES_ADDRESS
            );
        }
        // Another address is still served.
        assert_eq!(register(&r, 4, 4, [10, 0, 0, 2]), Response::Done);
    }

    #[test]
    fn the_storage_cap_refuses_posts_and_new_spaces_and_keeps_what_is_kept() {
        let list_bytes = list(1, 1, &[1, 2]).to_bytes().unwrap().len() as u64;
        let r = limited(Limits {
            max_storage_bytes: 2 * list_bytes + 100,
            ..Limits::default()
        });
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2])), Response::Done);
        let other = SpaceTag([4; 16]);
        let other_list = Request::SetAccess(list_in(other, 3, 1, &[3, 2]));
        assert_eq!(r.handle(at(3), other_list, 0), Response::Done);
        assert_eq!(post(&r, 1, &[7; 100], 0), Response::Posted { seq: 1 });
        // The relay is full: another space's post is refused, from its
        // header too, and so is a new space.
        let full = r.handle(
            at(3),
            Request::Post {
                space: other,
                bundle: vec![1],
            },
            0,
        );
        assert_eq!(failure(full), RELAY_FULL);
        assert_eq!(
            r.refuse_post_early(&dev(3), &other, 1),
            Some(Response::failure(RELAY_FULL))
        );
        assert_eq!(failure(register(&r, 5, 5, [10, 0, 0, 9])), RELAY_FULL);
        // What was kept is intact, and a list can still be replaced (to
        // remove a device, say).
        let Response::Bundles { items, .. } = fetch(&r, 2, 0, 0) else {
            panic!("expected bundles")
        };
        assert_eq!(items, vec![(1, vec![7; 100])]);
        assert_eq!(set(&r, 1, list(1, 2, &[1, 2])), Response::Done);
        // Once delivered, there is room again.
        assert_eq!(seqs(fetch(&r, 2, 1, 0)), Vec::<u64>::new());
        assert_eq!(post(&r, 1, &[8; 100], 0), Response::Posted { seq: 2 });
    }

    #[test]
    fn an_access_list_cannot_spend_the_serials() {
        let r = relay();
        // A first list at u64::MAX would make every later one refused.
        assert_eq!(failure(set(&r, 1, list(1, u64::MAX, &[1, 2]))), SERIAL_TOO_FAR);
        assert_eq!(set(&r, 1, list(1, MAX_SERIAL_STEP, &[1, 2])), Response::Done);
        assert_eq!(failure(set(&r, 2, list(2, u64::MAX, &[1, 2]))), SERIAL_TOO_FAR);
        assert_eq!(
            set(&r, 2, list(2, 2 * MAX_SERIAL_STEP, &[1, 2, 3])),
            Response::Done
        );
        assert_eq!(
            set(&r, 1, list(1, 2 * MAX_SERIAL_STEP + 1, &[1, 2])),
            Response::Done
        );
    }

    #[test]
    fn strangers_cannot_post_or_fetch() {
        let r = couple();
        assert_eq!(failure(post(&r, 3, b"x", 0)), NOT_LISTED);
        assert_eq!(failure(fetch(&r, 3, 0, 0)), NOT_LISTED);
        assert_eq!(
            r.refuse_post_early(&dev(3), &SPACE, 1),
            Some(Response::failure(NOT_LISTED))
        );
        let unknown = SpaceTag([4; 16]);
        let p = r.handle(
            at(1),
            Request::Post {
                space: unknown,
                bundle: vec![1],
            },
            0,
        );
        assert_eq!(failure(p), UNKNOWN_SPACE);
    }

    #[test]
    fn devices_fetch_what_others_posted() {
        let r = couple();
        assert_eq!(post(&r, 1, b"a", 0), Response::Posted { seq: 1 });
        assert_eq!(post(&r, 2, b"b", 0), Response::Posted { seq: 2 });
        assert_eq!(seqs(fetch(&r, 2, 0, 0)), vec![1]);
        assert_eq!(seqs(fetch(&r, 1, 0, 0)), vec![2]);
        assert_eq!(seqs(fetch(&r, 1, 2, 0)), Vec::<u64>::new());
    }

    #[test]
    fn a_removed_device_can_no_longer_fetch() {
        let r = couple();
        assert_eq!(post(&r, 1, b"before", 0), Response::Posted { seq: 1 });
        assert_eq!(set(&r, 1, list(1, 2, &[1])), Response::Done);
        assert_eq!(
            failure(fetch(&r, 2, 0, 0)),
            NOT_LISTED,
            "not even what it had not fetched yet"
        );
        assert_eq!(failure(post(&r, 2, b"x", 0)), NOT_LISTED);
        assert_eq!(
            failure(r.handle(at(2), Request::Access { space: SPACE }, 0)),
            NOT_LISTED
        );
        assert_eq!(failure(set(&r, 2, list(2, 3, &[1, 2]))), NOT_LISTED);
    }

    #[test]
    fn bundles_expire_once_every_other_listed_device_acknowledged() {
        let r = relay();
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2, 3])), Response::Done);
        assert_eq!(post(&r, 1, b"a", 0), Response::Posted { seq: 1 });
        assert_eq!(seqs(fetch(&r, 2, 1, 0)), Vec::<u64>::new()); // 2 acks 1
        assert_eq!(seqs(fetch(&r, 3, 0, 0)), vec![1], "device 3 has not acked: kept");
        assert_eq!(seqs(fetch(&r, 3, 1, 0)), Vec::<u64>::new()); // 3 acks 1: expired
        assert_eq!(
            seqs(fetch(&r, 2, 0, 0)),
            Vec::<u64>::new(),
            "deleted after the last ack"
        );
        assert_eq!(r.store().usage(&SPACE).unwrap(), 0);
    }

    #[test]
    fn bundles_expire_after_the_retention_time() {
        let r = couple();
        assert_eq!(post(&r, 1, b"a", 0), Response::Posted { seq: 1 });
        assert_eq!(post(&r, 1, b"b", DAY_MS), Response::Posted { seq: 2 });
        assert_eq!(r.expire(30 * DAY_MS - 1).unwrap(), 0);
        assert_eq!(r.expire(30 * DAY_MS).unwrap(), 1);
        assert_eq!(seqs(fetch(&r, 2, 0, 30 * DAY_MS)), vec![2]);
        // A fetch expires too.
        assert_eq!(seqs(fetch(&r, 2, 0, 31 * DAY_MS)), Vec::<u64>::new());
    }

    #[test]
    fn posts_over_the_quota_are_refused_until_bundles_expire() {
        let r = Relay::new(
            MemoryRelayStore::new(),
            Limits {
                quota_bytes: 100,
                ..Limits::default()
            },
        );
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2])), Response::Done);
        assert_eq!(post(&r, 1, &[0; 60], 0), Response::Posted { seq: 1 });
        assert_eq!(post(&r, 1, &[0; 40], 0), Response::Posted { seq: 2 });
        assert_eq!(failure(post(&r, 1, &[0; 1], 0)), QUOTA_FULL);
        assert_eq!(
            r.refuse_post_early(&dev(1), &SPACE, 1),
            Some(Response::failure(QUOTA_FULL))
        );
        assert_eq!(r.refuse_post_early(&dev(1), &SPACE, 0), None);
        // Device 2 takes and acknowledges the first: room again.
        assert_eq!(seqs(fetch(&r, 2, 1, 0)), vec![2]);
        assert_eq!(post(&r, 1, &[0; 60], 0), Response::Posted { seq: 3 });
    }

    #[test]
    fn fetch_answers_are_bounded() {
        let r = Relay::new(
            MemoryRelayStore::new(),
            Limits {
                quota_bytes: u64::MAX,
                ..Limits::default()
            },
        );
        assert_eq!(set(&r, 1, list(1, 1, &[1, 2])), Response::Done);
        let mib = 1024 * 1024;
        for _ in 0..3 {
            assert!(matches!(
                post(&r, 1, &vec![1; 3 * mib], 0),
                Response::Posted { .. }
            ));
        }
        let Response::Bundles { items, more } = fetch(&r, 2, 0, 0) else {
            panic!()
        };
        assert_eq!(items.len(), 2, "two of 3 MiB fit in 8 MiB, three do not");
        assert!(more);
        // The answer encodes within the wire limits.
        assert!(Response::Bundles { items, more }.encode().is_ok());
    }

    #[tokio::test]
    async fn a_waiting_fetch_returns_when_a_bundle_is_posted() {
        let r = Arc::new(couple());
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let a = r
                    .answer(
                        at(2),
                        Request::Fetch {
                            space: SPACE,
                            after: 0,
                            wait_ms: 20_000,
                        },
                    )
                    .await;
                (a, started.elapsed())
            })
        };
        // Wait until the fetch is registered, then post.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.waiting_spaces() == 0 {
            assert!(Instant::now() < deadline, "the fetch never started waiting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Posts by the waiting device itself do not wake it with anything.
        assert_eq!(
            r.answer(at(2), post_req(b"own")).await,
            Response::Posted { seq: 1 }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "its own bundle is not for it");
        assert_eq!(
            r.answer(at(1), post_req(b"new")).await,
            Response::Posted { seq: 2 }
        );
        let (a, took) = waiter.await.unwrap();
        assert_eq!(seqs(a), vec![2]);
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert_eq!(r.waiting_spaces(), 0, "the notifier is forgotten");
    }

    fn post_req(bytes: &[u8]) -> Request {
        Request::Post {
            space: SPACE,
            bundle: bytes.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_waiting_fetch_gives_up_after_its_wait() {
        let r = Arc::new(couple());
        let started = Instant::now();
        let a = r
            .answer(
                at(2),
                Request::Fetch {
                    space: SPACE,
                    after: 0,
                    wait_ms: 300,
                },
            )
            .await;
        assert_eq!(seqs(a), Vec::<u64>::new());
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A stranger is refused at once, without waiting.
        let started = Instant::now();
        let a = r
            .answer(
                at(9),
                Request::Fetch {
                    space: SPACE,
                    after: 0,
                    wait_ms: 20_000,
                },
            )
            .await;
        assert_eq!(failure(a), NOT_LISTED);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
