//! The relay's rules and limits, request by request, over the memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
