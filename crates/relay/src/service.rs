//! The relay's rules, without sockets: who may read and change a space's
//! access list, post and fetch; the quota; expiry; the long-poll wait.
//!
//! | request | allowed when | answer |
//! | --- | --- | --- |
//! | `Access` | the space is unknown (answers `None`), or the asking device is in its list | the list |
//! | `SetAccess` | the signature verifies strictly, the signer is the asking device, and either the space is unknown and the signer is in the new list, or the signer is in the current list and the serial grows | `Done` |
//! | `Post` | the asking device is in the list, and the space's bundles stay within the quota | `Posted { seq }` |
//! | `Fetch` | the asking device is in the list | bundles after `after` by other devices (acknowledging up to `after` first) |
//!
//! A device removed from the list loses access at once, including to
//! bundles it has not fetched yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duet_model::DeviceId;
use duet_sync::proto::relay::{MAX_FETCH_BYTES, MAX_RELAY_BUNDLE, MAX_WAIT_MS, Request, Response, SpaceTag};
use tokio::sync::Notify;

use crate::store::{RelayStore, StoreError};

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

/// A relay's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of bundles a space may keep.
    pub quota_bytes: u64,
    /// How long a bundle is kept, delivered or not.
    pub retention: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quota_bytes: DEFAULT_QUOTA,
            retention: DEFAULT_RETENTION,
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

    /// Answers one request from `peer` (the device its connection proved) at
    /// `now_ms`, without waiting: a [`Request::Fetch`] with nothing to hand
    /// out answers an empty list at once (see [`Relay::answer`] for the wait).
    /// Blocks on the store: call it off the async threads.
    pub fn handle(&self, peer: DeviceId, req: Request, now_ms: u64) -> Response {
        let kind = req.kind();
        let space = req.space();
        match self.rules(peer, req, now_ms) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, kind, space = %space.short(), "relay storage failed");
                Response::failure(STORAGE_FAILED)
            }
        }
    }

    fn rules(&self, peer: DeviceId, req: Request, now_ms: u64) -> Result<Response, StoreError> {
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
                let replaces = match &current {
                    None if new.allows(&peer) => None,
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
                if store.set_access(&new, replaces)? {
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
                let used = store.usage(&space)?;
                if used.saturating_add(bundle.len() as u64) > self.limits.quota_bytes {
                    tracing::info!(space = %space.short(), used, bytes = bundle.len(), "refused a post over the quota");
                    return answer(Response::failure(QUOTA_FULL));
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
            let used = store.usage(space)?;
            if used.saturating_add(bundle_len as u64) > self.limits.quota_bytes {
                return Ok(Some(Response::failure(QUOTA_FULL)));
            }
            Ok(None)
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
    pub async fn answer(self: &Arc<Self>, peer: DeviceId, req: Request) -> Response {
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
    async fn blocking(self: &Arc<Self>, peer: DeviceId, req: Request) -> Response {
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

    fn list(signer: u8, serial: u64, devices: &[u8]) -> SignedAccess {
        SignedAccess::sign(&secret(signer), SPACE, serial, devices.iter().map(|d| dev(*d))).unwrap()
    }

    fn relay() -> Relay<MemoryRelayStore> {
        Relay::new(MemoryRelayStore::new(), Limits::default())
    }

    fn set(r: &Relay<MemoryRelayStore>, by: u8, a: SignedAccess) -> Response {
        r.handle(dev(by), Request::SetAccess(a), 0)
    }

    fn post(r: &Relay<MemoryRelayStore>, by: u8, bytes: &[u8], now: u64) -> Response {
        r.handle(
            dev(by),
            Request::Post {
                space: SPACE,
                bundle: bytes.to_vec(),
            },
            now,
        )
    }

    fn fetch(r: &Relay<MemoryRelayStore>, by: u8, after: u64, now: u64) -> Response {
        r.handle(
            dev(by),
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
        let ask = |by| r.handle(dev(by), Request::Access { space: SPACE }, 0);
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
            r.handle(dev(2), Request::Access { space: SPACE }, 0),
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
            r.handle(dev(3), Request::Access { space: SPACE }, 0),
            Response::Access(Some(list(2, 2, &[1, 2, 3])))
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
            dev(1),
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
            failure(r.handle(dev(2), Request::Access { space: SPACE }, 0)),
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
                        dev(2),
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
            r.answer(dev(2), post_req(b"own")).await,
            Response::Posted { seq: 1 }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "its own bundle is not for it");
        assert_eq!(
            r.answer(dev(1), post_req(b"new")).await,
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
                dev(2),
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
                dev(9),
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
