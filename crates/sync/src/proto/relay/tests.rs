//! Tests of [`super`]: the relay messages.

use super::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn secret(n: u8) -> DeviceSecret {
    DeviceSecret::from_bytes(&[n; 32])
}

fn dev(n: u8) -> DeviceId {
    secret(n).device_id()
}

/// Splits an encoded frame the way a reader does: header, then the body.
fn frame_of(bytes: &[u8]) -> Frame {
    let len = announced(bytes[..4].try_into().unwrap()).unwrap();
    assert_eq!(
        bytes.len(),
        4 + len,
        "the header counts the type byte and payload"
    );
    Frame {
        kind: bytes[4],
        payload: bytes[5..].to_vec(),
    }
}

fn request_round_trip(r: &Request) {
    let f = frame_of(&r.encode().unwrap());
    assert_eq!(f.kind, r.kind());
    assert_eq!(&Request::decode(&f).unwrap(), r);
}

fn response_round_trip(r: &Response) {
    let f = frame_of(&r.encode().unwrap());
    assert_eq!(&Response::decode(&f).unwrap(), r);
}

#[test]
fn space_tags_are_the_documented_hash() {
    let t = SpaceTag::of("abc");
    let mut h = Sha256::new();
    h.update(b"duet/space-tag/v1abc");
    assert_eq!(t.0.as_slice(), &h.finalize()[..16]);
    assert_ne!(SpaceTag::of("abd"), t);
    assert_eq!(t.to_string().len(), 32);
}

#[test]
fn messages_round_trip() {
    let space = SpaceTag([7; 16]);
    let access = SignedAccess::sign(&secret(1), space, 3, [dev(2), dev(1), dev(2)]).unwrap();
    assert_eq!(access.devices.len(), 2, "duplicates are dropped");
    request_round_trip(&Request::Access { space });
    request_round_trip(&Request::SetAccess(access.clone()));
    request_round_trip(&Request::Post {
        space,
        bundle: vec![1, 2, 3],
    });
    request_round_trip(&Request::Fetch {
        space,
        after: u64::MAX,
        wait_ms: 25_000,
    });
    response_round_trip(&Response::Access(None));
    response_round_trip(&Response::Access(Some(access)));
    response_round_trip(&Response::Done);
    response_round_trip(&Response::Posted { seq: 1 << 40 });
    response_round_trip(&Response::Bundles {
        items: vec![(1, vec![9]), (5, vec![8; 300])],
        more: true,
    });
    response_round_trip(&Response::Bundles {
        items: vec![],
        more: false,
    });
    response_round_trip(&Response::Failure("nope".into()));
    // A Post from borrowed bytes is the same frame.
    assert_eq!(
        Request::encode_post(space, &[1, 2, 3]).unwrap(),
        Request::Post {
            space,
            bundle: vec![1, 2, 3]
        }
        .encode()
        .unwrap()
    );
}

#[test]
fn access_lists_verify_only_unaltered() {
    let space = SpaceTag([1; 16]);
    let a = SignedAccess::sign(&secret(1), space, 2, [dev(1), dev(2)]).unwrap();
    assert!(a.verify());
    assert!(a.allows(&dev(2)) && !a.allows(&dev(3)));
    let mut other = a.clone();
    other.serial = 3;
    assert!(!other.verify(), "serial is signed");
    let mut other = a.clone();
    other.space = SpaceTag([2; 16]);
    assert!(!other.verify(), "space is signed");
    let mut other = a.clone();
    other.devices.push(dev(3));
    assert!(!other.verify(), "devices are signed");
    let mut other = a.clone();
    other.signer = dev(2);
    assert!(!other.verify(), "the signer's key checks the signature");
    let mut other = a.clone();
    other.signature[10] ^= 1;
    assert!(!other.verify());
    // The signature covers exactly the documented message.
    let raw: Vec<[u8; 32]> = a.devices.iter().map(|d| *d.as_bytes()).collect();
    let mut message = b"duet/relay-access/v1:".to_vec();
    message.extend(postcard::to_stdvec(&(space.0, 2u64, raw)).unwrap());
    let sig = Signature::from_bytes(&a.signature);
    assert!(dev(1).verifying_key().verify_strict(&message, &sig).is_ok());
    // Stored form round-trips.
    assert_eq!(SignedAccess::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
}

#[test]
fn access_list_limits() {
    let space = SpaceTag([1; 16]);
    let many: Vec<DeviceId> = (1..=33u8).map(dev).collect();
    assert_eq!(
        SignedAccess::sign(&secret(1), space, 1, many.clone()).unwrap_err(),
        WireError::TooLarge("device list")
    );
    let full = SignedAccess::sign(&secret(1), space, u64::MAX, many[..32].to_vec()).unwrap();
    assert!(full.verify());
    request_round_trip(&Request::SetAccess(full.clone()));
    let largest = Request::SetAccess(full.clone()).encode().unwrap();
    assert!(largest.len() - 4 <= MAX_CONTROL_FRAME, "{} bytes", largest.len());
    // A hand-made list of 33 is refused on decode.
    let mut w = full.to_wire();
    w.devices.push(*dev(33).as_bytes());
    let payload = postcard::to_stdvec(&w).unwrap();
    let f = Frame {
        kind: SET_ACCESS,
        payload,
    };
    assert_eq!(Request::decode(&f), Err(WireError::TooLarge("device list")));
    // A key that is not a curve point is refused.
    let not_a_point = (0..=255u8)
        .map(|n| [n; 32])
        .find(|k| DeviceId::from_bytes(k).is_none())
        .unwrap();
    let mut w = full.to_wire();
    w.devices[0] = not_a_point;
    let f = Frame {
        kind: SET_ACCESS,
        payload: postcard::to_stdvec(&w).unwrap(),
    };
    assert_eq!(Request::decode(&f), Err(WireError::BadKey));
    // So is a weak (small-order) key, as a listed device or as the signer:
    // anyone could act as it. The identity point, and a point of order 8.
    let identity: [u8; 32] = std::array::from_fn(|i| u8::from(i == 0));
    let order_8 = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05";
    let order_8: [u8; 32] =
        std::array::from_fn(|i| u8::from_str_radix(&order_8[2 * i..2 * i + 2], 16).unwrap());
    for weak in [identity, order_8] {
        let mut listed = full.to_wire();
        listed.devices[1] = weak;
        let mut signer = full.to_wire();
        signer.signer = weak;
        for w in [listed, signer] {
            let bytes = postcard::to_stdvec(&w).unwrap();
            assert_eq!(SignedAccess::from_bytes(&bytes), Err(WireError::BadKey));
        }
    }
    // A short signature is malformed.
    let mut w = full.to_wire();
    w.signature.pop();
    let f = Frame {
        kind: SET_ACCESS,
        payload: postcard::to_stdvec(&w).unwrap(),
    };
    assert_eq!(Request::decode(&f), Err(WireError::Malformed("access list")));
}

#[test]
fn bundle_and_answer_limits() {
    let space = SpaceTag([1; 16]);
    assert_eq!(
        Request::encode_post(space, &[]),
        Err(WireError::Malformed("post"))
    );
    assert_eq!(
        Request::encode_post(space, &vec![0; MAX_RELAY_BUNDLE + 1]),
        Err(WireError::TooLarge("bundle"))
    );
    // The largest bundle fits in one relay frame (and is over the sync frame limit).
    let big = Request::encode_post(space, &vec![0; MAX_RELAY_BUNDLE]).unwrap();
    assert!(big.len() - 4 > super::super::frame::MAX_FRAME);
    let f = frame_of(&big);
    assert!(
        matches!(Request::decode(&f), Ok(Request::Post { bundle, .. }) if bundle.len() == MAX_RELAY_BUNDLE)
    );
    // One bundle over the answer's byte limit travels alone...
    let alone = Response::Bundles {
        items: vec![(1, vec![0; MAX_FETCH_BYTES + 1])],
        more: true,
    };
    response_round_trip(&alone);
    // ...but two together may not exceed it.
    let two = Response::Bundles {
        items: vec![(1, vec![0; MAX_FETCH_BYTES]), (2, vec![0; 1])],
        more: false,
    };
    assert_eq!(two.encode(), Err(WireError::TooLarge("bundle list")));
    // Sequence numbers must ascend.
    let unordered = Response::Bundles {
        items: vec![(2, vec![1]), (2, vec![1])],
        more: false,
    };
    assert_eq!(unordered.encode(), Err(WireError::Malformed("bundles")));
    let payload = postcard::to_stdvec(&(vec![(3u64, vec![1u8]), (1u64, vec![1u8])], false)).unwrap();
    assert_eq!(
        Response::decode(&Frame {
            kind: BUNDLES,
            payload
        }),
        Err(WireError::Malformed("bundles"))
    );
    // Headers over the limit or empty are refused before reading on.
    assert_eq!(
        announced(((MAX_RELAY_FRAME + 1) as u32).to_be_bytes()),
        Err(WireError::TooLarge("relay frame"))
    );
    assert_eq!(announced([0; 4]), Err(WireError::Frame(FrameError::Empty)));
}

#[test]
fn failure_text_is_bounded() {
    let long = "é".repeat(400);
    let Response::Failure(cut) = Response::failure(long.clone()) else {
        unreachable!()
    };
    assert!(cut.len() <= MAX_FAILURE_TEXT && long.starts_with(&cut));
    // An over-long text is cut when encoded, and refused when decoded.
    let f = frame_of(&Response::Failure(long.clone()).encode().unwrap());
    assert_eq!(Response::decode(&f), Ok(Response::Failure(cut)));
    let payload = postcard::to_stdvec(&Failure { text: long }).unwrap();
    assert_eq!(
        Response::decode(&Frame {
            kind: FAILURE,
            payload
        }),
        Err(WireError::TooLarge("failure text"))
    );
}

#[test]
fn bad_payloads_are_refused() {
    let f = |kind, payload: Vec<u8>| Frame { kind, payload };
    assert_eq!(
        Request::decode(&f(0x55, vec![])),
        Err(WireError::UnknownType(0x55))
    );
    assert_eq!(
        Request::decode(&f(FAILURE, vec![])),
        Err(WireError::UnknownType(FAILURE))
    );
    assert_eq!(
        Response::decode(&f(ACCESS, vec![0; 16])),
        Err(WireError::UnknownType(ACCESS))
    );
    assert_eq!(
        Request::decode(&f(ACCESS, vec![0; 15])),
        Err(WireError::Malformed("access"))
    );
    assert_eq!(
        Request::decode(&f(ACCESS, vec![0; 17])),
        Err(WireError::Malformed("access"))
    );
    assert_eq!(
        Response::decode(&f(DONE, vec![0])),
        Err(WireError::Malformed("done"))
    );
    // A bundle length running past the payload is malformed, not an allocation.
    let mut post = vec![0u8; 16];
    post.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert_eq!(Request::decode(&f(POST, post)), Err(WireError::Malformed("post")));
}

fn arb_space() -> impl Strategy<Value = SpaceTag> {
    any::<[u8; 16]>().prop_map(SpaceTag)
}

fn arb_access() -> impl Strategy<Value = SignedAccess> {
    (
        1u8..=255,
        arb_space(),
        any::<u64>(),
        proptest::collection::vec(1u8..=255, 0..6),
    )
        .prop_map(|(signer, space, serial, devices)| {
            SignedAccess::sign(&secret(signer), space, serial, devices.into_iter().map(dev)).unwrap()
        })
}

fn arb_bundle() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..200)
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        arb_space().prop_map(|space| Request::Access { space }),
        arb_access().prop_map(Request::SetAccess),
        (arb_space(), arb_bundle()).prop_map(|(space, bundle)| Request::Post { space, bundle }),
        (arb_space(), any::<u64>(), any::<u32>()).prop_map(|(space, after, wait_ms)| Request::Fetch {
            space,
            after,
            wait_ms
        }),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        proptest::option::of(arb_access()).prop_map(Response::Access),
        Just(Response::Done),
        any::<u64>().prop_map(|seq| Response::Posted { seq }),
        (
            proptest::collection::btree_map(any::<u64>(), arb_bundle(), 0..5),
            any::<bool>()
        )
            .prop_map(|(items, more)| Response::Bundles {
                items: items.into_iter().collect(),
                more
            }),
        "[a-z ]{0,80}".prop_map(Response::Failure),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_frames_never_panic(kind in 0x3fu8..=0x80, payload in proptest::collection::vec(any::<u8>(), 0..400)) {
        let f = Frame { kind, payload };
        let _ = Request::decode(&f);
        let _ = Response::decode(&f);
    }

    #[test]
    fn valid_messages_round_trip(req in arb_request(), resp in arb_response()) {
        let f = frame_of(&req.encode().unwrap());
        prop_assert_eq!(Request::decode(&f).unwrap(), req);
        let f = frame_of(&resp.encode().unwrap());
        prop_assert_eq!(Response::decode(&f).unwrap(), resp);
    }

    #[test]
    fn mutated_valid_frames_never_panic(req in arb_request(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = req.encode().unwrap();
        let i = at.index(bytes.len() - 4) + 4;
        bytes[i] = byte;
        let f = Frame { kind: bytes[4], payload: bytes[5..].to_vec() };
        if let (Ok(Request::SetAccess(a)), Request::SetAccess(original)) = (Request::decode(&f), &req) {
            // Whatever still decodes differently no longer verifies.
            prop_assert!(a == *original || !a.verify());
        }
        let _ = Response::decode(&f);
    }
}
