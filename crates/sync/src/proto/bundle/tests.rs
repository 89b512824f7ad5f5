//! Tests of [`super`]: the bundle format, sealing and import.

use super::*;
use duet_model::{ChangeRefusal, Editor, Founder, ItemId, NewIssue, Seat, issues, space};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const SPACE: &str = "5eed";

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([7; 32])
}

fn secret(n: u8) -> DeviceSecret {
    DeviceSecret::from_bytes(&[n; 32])
}

/// Device 1 founded every space here.
fn founder() -> DeviceId {
    secret(1).device_id()
}

/// The secret of the device a body names as its sender (devices here are
/// `secret(n)`).
fn sender_of(body: &BundleBody) -> DeviceSecret {
    (0..=u8::MAX)
        .map(secret)
        .find(|k| k.device_id() == body.sender)
        .unwrap_or_else(|| secret(0))
}

/// A device's copy of the space.
struct Dev {
    key: DeviceSecret,
    seat: Seat,
    doc: Automerge,
}

impl Dev {
    /// Adds an issue; returns the change and its author's attestation.
    fn add_issue(&mut self, n: u8, title: &str) -> (Change, Attestation) {
        let before = self.doc.get_heads();
        let new = NewIssue {
            title: title.into(),
            ..Default::default()
        };
        Editor::new(&mut self.doc, self.seat, 0)
            .add_issue(&ItemId::from_random([n; 8]), &new)
            .unwrap();
        let mut changes = self.doc.get_changes(&before);
        assert_eq!(changes.len(), 1);
        let c = changes.remove(0);
        let att = self.key.attest(&c.hash());
        (c, att)
    }

    fn body(&self, changes: &[&Change], attestations: Vec<Attestation>) -> BundleBody {
        BundleBody {
            space_id: SPACE.into(),
            sender: self.key.device_id(),
            created_ms: 1_764_000_000_000,
            automerge: changes.iter().flat_map(|c| c.raw_bytes().to_vec()).collect(),
            attestations,
        }
    }

    fn titles(&self) -> Vec<String> {
        let mut t: Vec<String> = issues::issues(&self.doc, Default::default())
            .into_iter()
            .map(|i| i.title)
            .collect();
        t.sort();
        t
    }
}

/// A space founded by device 1 (seat a) with device 2 (seat b) and a key
/// of generation 1 for both; each device holds a copy.
fn space() -> (Dev, Dev, SpaceKey) {
    let mut rng = rng();
    let (a, b) = (secret(1), secret(2));
    let mut doc = Automerge::new().with_actor(a.device_id().actor());
    let founder = Founder {
        space_id: SPACE.into(),
        name: "Sam".into(),
        device: a.device_id(),
        device_name: "laptop".into(),
    };
    space::create(&mut doc, &founder, 0).unwrap();
    let mut e = Editor::new(&mut doc, Seat::A, 1);
    e.add_device(b.device_id(), Seat::B, "phone").unwrap();
    let key = SpaceKey::generate(1, &mut rng);
    let envelopes: Vec<(DeviceId, Vec<u8>)> = [a.device_id(), b.device_id()]
        .iter()
        .map(|d| (*d, key.envelope_for(d, &mut rng)))
        .collect();
    e.add_space_key(&key.id().to_string(), 1, &envelopes).unwrap();
    let b_doc = doc.fork().with_actor(b.device_id().actor());
    let dev_a = Dev {
        key: a,
        seat: Seat::A,
        doc,
    };
    let dev_b = Dev {
        key: b,
        seat: Seat::B,
        doc: b_doc,
    };
    (dev_a, dev_b, key)
}

/// A sealed bundle of one issue by device a, for both devices.
fn small_bundle() -> (Dev, Dev, SpaceKey, BundleBody, Vec<u8>) {
    let (mut a, b, key) = space();
    let (c, att) = a.add_issue(1, "Who does the dishes");
    let body = a.body(&[&c], vec![att]);
    let bytes = seal(
        &body,
        &sender_of(&body),
        &key,
        &[a.key.device_id(), b.key.device_id()],
        &mut rng(),
    )
    .unwrap();
    (a, b, key, body, bytes)
}

#[test]
fn a_sealed_bundle_opens_for_its_space_and_members() {
    let (_, b, key, body, bytes) = small_bundle();
    assert_eq!(&bytes[..8], MAGIC);
    assert_eq!(bytes[8], FORMAT);
    assert_eq!(header_space(&bytes).unwrap(), space_tag(SPACE));
    let ring = Keyring::from_document(&b.doc, &b.key);
    assert!(ring.get(&key.id()).is_some());
    let opened = open(&bytes, SPACE, &ring, &b.key).unwrap();
    assert_eq!(opened.body, body);
    assert_eq!(opened.key.id(), key.id());
    // The plaintext is nowhere in the sealed bytes.
    let needle = b"Who does the dishes";
    assert!(body.automerge.windows(needle.len()).any(|w| w == needle));
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    // Another space.
    assert_eq!(
        open(&bytes, "other", &ring, &b.key).unwrap_err(),
        BundleError::OtherSpace
    );
}

#[test]
fn a_device_without_the_key_opens_through_the_header_or_not_at_all() {
    let (a, b, key, body, _) = small_bundle();
    let empty = Keyring::default();
    // Sealed for both devices: b opens it without any key of its own.
    let for_both = seal(
        &body,
        &sender_of(&body),
        &key,
        &[a.key.device_id(), b.key.device_id()],
        &mut rng(),
    )
    .unwrap();
    let opened = open(&for_both, SPACE, &empty, &b.key).unwrap();
    assert_eq!(opened.key.id(), key.id());
    assert_eq!(opened.key.secret(), key.secret());
    assert_eq!(opened.key.generation(), 1);
    // Sealed for a only: b, holding nothing, cannot.
    let for_a = seal(&body, &sender_of(&body), &key, &[a.key.device_id()], &mut rng()).unwrap();
    assert_eq!(
        open(&for_a, SPACE, &empty, &b.key).unwrap_err(),
        BundleError::NoKey
    );
    // A stranger cannot open either, even with a bundle addressed to everyone.
    assert_eq!(
        open(&for_both, SPACE, &empty, &secret(9)).unwrap_err(),
        BundleError::NoKey
    );
    // A key of another generation in the keyring does not help.
    let mut other = Keyring::default();
    other.insert(SpaceKey::from_secret(2, [4; 32]));
    assert_eq!(
        open(&for_a, SPACE, &other, &b.key).unwrap_err(),
        BundleError::NoKey
    );
    // An envelope for b of another key than the header names is not used:
    // swap a's envelope (at the header's first one) for such a decoy.
    let decoy = SpaceKey::from_secret(1, [3; 32]);
    let env = decoy.envelope_for(&b.key.device_id(), &mut rng());
    let mut forged = for_a.clone();
    let first_envelope = PREFIX + 16 + 16 + 24 + 2; // count, then length
    assert_eq!(
        &forged[first_envelope..first_envelope + env.len()],
        &a_envelope(&for_a)[..]
    );
    forged[first_envelope..first_envelope + env.len()].copy_from_slice(&env);
    assert_eq!(
        open(&forged, SPACE, &empty, &b.key).unwrap_err(),
        BundleError::NoKey
    );
}

/// The first envelope of a bundle's header, as `parse` reads it.
fn a_envelope(bytes: &[u8]) -> Vec<u8> {
    parse(bytes).unwrap().header.envelopes.0[0].to_vec()
}

#[test]
fn every_single_byte_change_is_refused() {
    let (_, b, _, _, bytes) = small_bundle();
    let ring = Keyring::from_document(&b.doc, &b.key);
    let empty = Keyring::default();
    let header_len = u32::from_be_bytes(bytes[9..13].try_into().unwrap()) as usize;
    let header_end = PREFIX + header_len;
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            for (ring, name) in [(&ring, "held"), (&empty, "header")] {
                let err = open(&bad, SPACE, ring, &b.key).expect_err("a changed byte is refused");
                let region = match i {
                    0..8 => "magic",
                    8 => "format",
                    9..13 => "length",
                    13..29 => "space",
                    29..45 => "key",
                    45..69 => "nonce",
                    _ if i < header_end => "envelopes",
                    _ => "ciphertext",
                };
                match region {
                    "magic" => assert_eq!(err, BundleError::NotABundle),
                    "format" => assert!(matches!(
                        err,
                        BundleError::NewerFormat(_) | BundleError::Malformed(_)
                    )),
                    "space" => assert_eq!(err, BundleError::OtherSpace),
                    "key" => assert_eq!(err, BundleError::NoKey, "{name}"),
                    "nonce" | "ciphertext" => assert_eq!(err, BundleError::Tampered, "{name} at {i}"),
                    _ => assert!(
                        matches!(
                            err,
                            BundleError::Tampered | BundleError::Malformed(_) | BundleError::NoKey
                        ),
                        "{region} {name} at {i}: {err}"
                    ),
                }
                *kinds.entry(format!("{region}: {err:?}")).or_default() += 1;
            }
        }
    }
    assert!(bytes.len() > header_end + TAG);
    // Every region was exercised.
    for region in [
        "magic",
        "format",
        "length",
        "space",
        "key",
        "nonce",
        "envelopes",
        "ciphertext",
    ] {
        assert!(kinds.keys().any(|k| k.starts_with(region)), "{region}: {kinds:?}");
    }
}

#[test]
fn every_truncation_is_refused() {
    let (_, b, _, _, bytes) = small_bundle();
    let ring = Keyring::from_document(&b.doc, &b.key);
    for n in 0..bytes.len() {
        let cut = &bytes[..n];
        assert!(open(cut, SPACE, &ring, &b.key).is_err(), "cut at {n}");
        assert!(open(cut, SPACE, &Keyring::default(), &b.key).is_err());
        if n < PREFIX + 60 {
            assert!(header_space(cut).is_err(), "cut at {n}");
        }
    }
    // And anything appended is refused too.
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        open(&longer, SPACE, &ring, &b.key).unwrap_err(),
        BundleError::Tampered
    );
}

#[test]
fn foreign_and_oversized_input_is_refused_with_a_reason() {
    let (_, b, _, _, bytes) = small_bundle();
    let ring = Keyring::from_document(&b.doc, &b.key);
    let me = &b.key;
    assert_eq!(
        open(b"hello", SPACE, &ring, me).unwrap_err(),
        BundleError::NotABundle
    );
    assert_eq!(open(b"", SPACE, &ring, me).unwrap_err(), BundleError::NotABundle);
    let mut newer = bytes.clone();
    newer[8] = 3;
    assert_eq!(
        open(&newer, SPACE, &ring, me).unwrap_err(),
        BundleError::NewerFormat(3)
    );
    let mut unsigned_format = bytes.clone();
    unsigned_format[8] = 1;
    assert_eq!(
        open(&unsigned_format, SPACE, &ring, me).unwrap_err(),
        BundleError::OlderFormat(1)
    );
    assert!(
        BundleError::NewerFormat(2)
            .to_string()
            .contains("made by a newer duet")
    );
    let mut huge_header = bytes.clone();
    huge_header[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        open(&huge_header, SPACE, &ring, me),
        Err(BundleError::Malformed(_))
    ));
    let mut big = vec![0u8; MAX_BUNDLE + 1];
    big[..8].copy_from_slice(MAGIC);
    assert_eq!(
        open(&big, SPACE, &ring, me).unwrap_err(),
        BundleError::TooLarge(MAX_BUNDLE + 1)
    );
    assert_eq!(
        header_space(&big).unwrap_err(),
        BundleError::TooLarge(MAX_BUNDLE + 1)
    );
    // Sealing refuses what could not be opened.
    let (a, _, key) = space();
    let mut body = a.body(&[], vec![]);
    body.automerge = vec![0; MAX_BUNDLE];
    assert!(matches!(
        seal(&body, &sender_of(&body), &key, &[], &mut rng()),
        Err(BundleError::TooLarge(_))
    ));
    let body = a.body(&[], vec![]);
    let many: Vec<DeviceId> = (0..33).map(|n| secret(n).device_id()).collect();
    assert!(matches!(
        seal(&body, &sender_of(&body), &key, &many, &mut rng()),
        Err(BundleError::Unsealable(_))
    ));
    let mut long_id = body.clone();
    long_id.space_id = "x".repeat(65);
    assert!(seal(&long_id, &sender_of(&long_id), &key, &[], &mut rng()).is_err());
}

/// Seals with `key` for both devices, opens as `me`.
fn through(body: &BundleBody, key: &SpaceKey, me: &Dev) -> BundleBody {
    let bytes = seal(
        body,
        &sender_of(body),
        key,
        &[secret(1).device_id(), secret(2).device_id()],
        &mut rng(),
    )
    .unwrap();
    open(&bytes, SPACE, &Keyring::from_document(&me.doc, &me.key), &me.key)
        .unwrap()
        .body
}

#[test]
fn bundles_imported_out_of_order_converge() {
    let (mut a, mut b, key) = space();
    let base = a.doc.fork();
    // a adds an issue; b receives it and adds one on top.
    let (a1, att_a) = a.add_issue(1, "Dishes");
    b.doc.apply_changes([a1.clone()]).unwrap();
    let (b1, att_b) = b.add_issue(2, "Laundry");
    assert_eq!(b1.deps(), &[a1.hash()]);
    let from_a = through(&a.body(&[&a1], vec![att_a]), &key, &b);
    let from_b = through(&b.body(&[&b1], vec![att_b]), &key, &b);

    // A third copy gets b's bundle first: it waits for a's change.
    let mut doc = base.fork();
    let mut waiting = HashMap::new();
    let mut atts = Vec::new();
    let first = import(&mut doc, &from_b, founder(), &mut waiting, &mut atts).unwrap();
    assert!(first.applied.is_empty());
    assert_eq!(first.waiting, 1);
    assert_eq!(doc.get_heads(), base.get_heads(), "nothing applied yet");
    assert_eq!(atts, vec![att_b], "b's signature waits with its change");
    let second = import(&mut doc, &from_a, founder(), &mut waiting, &mut atts).unwrap();
    assert_eq!(
        second.applied.iter().map(Change::hash).collect::<Vec<_>>(),
        vec![a1.hash(), b1.hash()],
        "both, in dependency order"
    );
    assert_eq!(second.waiting, 0);
    assert!(waiting.is_empty());
    assert!(atts.is_empty(), "nothing left to wait for");
    let mut stored = second.attestations.clone();
    stored.sort_by_key(|a| a.hash);
    let mut want = vec![att_a, att_b];
    want.sort_by_key(|a| a.hash);
    assert_eq!(stored, want);

    // In order, the same document.
    let mut in_order = base.fork();
    let (mut w2, mut atts2) = (HashMap::new(), Vec::new());
    let one = import(&mut in_order, &from_a, founder(), &mut w2, &mut atts2).unwrap();
    assert_eq!(one.applied.len(), 1);
    let two = import(&mut in_order, &from_b, founder(), &mut w2, &mut atts2).unwrap();
    assert_eq!(two.applied.len(), 1);
    let mut heads = doc.get_heads();
    heads.sort();
    let mut heads2 = in_order.get_heads();
    heads2.sort();
    assert_eq!(heads, heads2);
    let mut b_heads = b.doc.get_heads();
    b_heads.sort();
    assert_eq!(heads, b_heads, "the same as b's own copy");
    let view = Dev {
        key: secret(3),
        seat: Seat::A,
        doc,
    };
    assert_eq!(view.titles(), vec!["Dishes", "Laundry"]);

    // Importing again changes nothing.
    let heads_before = view.doc.get_heads();
    let mut doc = view.doc;
    for body in [&from_a, &from_b] {
        let again = import(&mut doc, body, founder(), &mut waiting, &mut atts).unwrap();
        assert!(again.applied.is_empty());
        assert!(again.attestations.is_empty());
        assert_eq!(again.waiting, 0);
    }
    assert_eq!(doc.get_heads(), heads_before);
    assert!(waiting.is_empty() && atts.is_empty());
}

#[test]
fn a_whole_saved_document_imports() {
    let (mut a, _, _) = space();
    let (_, att) = a.add_issue(1, "Dishes");
    let all = a.doc.get_changes(&[]);
    // Every change of a's history, vouched for by a's newest signature.
    let mut body = a.body(&[], vec![att]);
    body.automerge = a.doc.save();
    let mut doc = Automerge::new();
    let (mut w, mut atts) = (HashMap::new(), Vec::new());
    let got = import(&mut doc, &body, founder(), &mut w, &mut atts).unwrap();
    assert_eq!(got.applied.len(), all.len());
    assert_eq!(doc.get_heads(), a.doc.get_heads());
}

#[test]
fn unsigned_forged_and_stranger_changes_are_refused() {
    let (mut a, mut b, _) = space();
    let base = a.doc.fork();
    let (a1, att_a) = a.add_issue(1, "Dishes");
    b.doc.apply_changes([a1.clone()]).unwrap();
    let (b1, att_b) = b.add_issue(2, "Laundry");

    // b's change waits for a's in this copy, with its signature.
    let mut doc = base.fork();
    let (mut waiting, mut atts) = (HashMap::new(), Vec::new());
    import(
        &mut doc,
        &b.body(&[&b1], vec![att_b]),
        founder(),
        &mut waiting,
        &mut atts,
    )
    .unwrap();
    assert_eq!((waiting.len(), atts.len()), (1, 1));

    // a's change without a's signature.
    let unsigned = a.body(&[&a1], vec![]);
    let mut d = doc.fork();
    assert_eq!(
        import(&mut d, &unsigned, founder(), &mut waiting, &mut atts).unwrap_err(),
        BundleError::Refused(VerifyError::Unsigned(a.key.device_id().short()))
    );
    assert_eq!((waiting.len(), atts.len()), (1, 1), "left as it was");
    assert!(waiting.contains_key(&b1.hash()));

    // Signed, but by b, not by its author.
    let wrong_author = a.body(&[&a1], vec![b.key.attest(&a1.hash())]);
    let mut d = doc.fork();
    assert!(matches!(
        import(&mut d, &wrong_author, founder(), &mut waiting, &mut atts),
        Err(BundleError::Refused(VerifyError::Unsigned(_)))
    ));
    assert_eq!((waiting.len(), atts.len()), (1, 1));

    // A tampered signature.
    let mut forged = att_a;
    forged.signature[5] ^= 0x10;
    let mut d = doc.fork();
    assert!(matches!(
        import(
            &mut d,
            &a.body(&[&a1], vec![forged]),
            founder(),
            &mut waiting,
            &mut atts
        ),
        Err(BundleError::Refused(VerifyError::BadSignature(_)))
    ));
    assert_eq!(d.get_heads(), doc.get_heads());
    assert_eq!((waiting.len(), atts.len()), (1, 1));

    // A stranger's change, signed by the stranger.
    let mut stranger = Dev {
        key: secret(9),
        seat: Seat::B,
        doc: base.fork().with_actor(secret(9).device_id().actor()),
    };
    let (s1, att_s) = stranger.add_issue(9, "Mallory was here");
    let mut d = doc.fork();
    assert!(matches!(
        import(
            &mut d,
            &stranger.body(&[&s1], vec![att_s]),
            founder(),
            &mut waiting,
            &mut atts
        ),
        Err(BundleError::Refused(VerifyError::Refused(
            ChangeRefusal::NotAMember(_)
        )))
    ));
    assert_eq!((waiting.len(), atts.len()), (1, 1), "left as it was");

    // Garbage where changes belong.
    let mut junk = a.body(&[&a1], vec![att_a]);
    junk.automerge.truncate(junk.automerge.len() - 3);
    let mut d = doc.fork();
    assert!(matches!(
        import(&mut d, &junk, founder(), &mut waiting, &mut atts),
        Err(BundleError::Refused(VerifyError::Malformed(_)))
    ));

    // The genuine bundle still completes the waiting change.
    let done = import(
        &mut doc,
        &a.body(&[&a1], vec![att_a]),
        founder(),
        &mut waiting,
        &mut atts,
    )
    .unwrap();
    assert_eq!(done.applied.len(), 2);
    assert!(waiting.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in 0usize..3,
        header_len in 0u32..400,
    ) {
        let me = secret(2);
        let mut ring = Keyring::default();
        ring.insert(SpaceKey::from_secret(1, [1; 32]));
        let mut bytes = Vec::new();
        if prefix > 0 {
            bytes.extend_from_slice(MAGIC);
            bytes.push(FORMAT);
        }
        if prefix > 1 {
            bytes.extend_from_slice(&header_len.to_be_bytes());
        }
        bytes.extend_from_slice(&tail);
        prop_assert!(open(&bytes, SPACE, &ring, &me).is_err());
        let _ = header_space(&bytes);
    }

    #[test]
    fn damaged_bundles_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (_, b, _, _, bytes) = small_bundle();
        let ring = Keyring::from_document(&b.doc, &b.key);
        let mut bad = bytes.clone();
        for (at, byte) in edits {
            let at = at % bad.len();
            bad[at] = byte;
        }
        let result = open(&bad, SPACE, &ring, &b.key);
        prop_assert_eq!(result.is_ok(), bad == bytes);
    }
}

/// Re-seals `body` as a modified client would: signed by `signer`, whatever
/// sender the body names, with the space key it holds.
fn forged_seal(body: &BundleBody, signer: &DeviceSecret, key: &SpaceKey) -> Vec<u8> {
    let honest = BundleBody {
        sender: signer.device_id(),
        ..body.clone()
    };
    let bytes = seal(&honest, signer, key, &[secret(1).device_id()], &mut rng()).unwrap();
    let p = parse(&bytes).unwrap();
    let aad = p.aad.to_vec();
    let plaintext = signed_plaintext(&aad, &encode_body(body).unwrap(), signer);
    let cipher = XChaCha20Poly1305::new(key.secret().into());
    let ciphertext = cipher
        .encrypt(
            (&p.header.nonce).into(),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    [aad, ciphertext].concat()
}

/// Finding 2 of the security review: a revoked device still holds the space
/// key it had; it sealed its post-revocation changes (a new device entry for
/// itself) with `sender` set to the partner's device, and the leniency for
/// changes relayed by a member let them in. Now the sender signs, and an
/// inactive sender is refused.
#[test]
fn a_revoked_device_cannot_get_back_in_through_a_bundle() {
    let (mut a, mut b, key) = space();
    Editor::new(&mut a.doc, Seat::A, 5)
        .revoke_device(b.key.device_id())
        .unwrap();
    // b, revoked but holding the key, makes changes after its cut-off.
    let before = b.doc.get_heads();
    Editor::new(&mut b.doc, Seat::B, 6)
        .add_device(secret(8).device_id(), Seat::B, "new phone")
        .unwrap();
    let (_, att) = b.add_issue(7, "Back again");
    let changes = b.doc.get_changes(&before);
    let refs: Vec<&Change> = changes.iter().collect();
    let ring = Keyring::from_document(&a.doc, &a.key);

    // Naming the partner as sender: the signature is b's, not a's.
    let mut as_a = b.body(&refs, vec![att]);
    as_a.sender = a.key.device_id();
    let forged = forged_seal(&as_a, &b.key, &key);
    assert_eq!(
        open(&forged, SPACE, &ring, &a.key).unwrap_err(),
        BundleError::BadSignature
    );

    // Honestly as itself: opens, and is refused for its sender.
    let own = seal(
        &b.body(&refs, vec![att]),
        &b.key,
        &key,
        &[a.key.device_id()],
        &mut rng(),
    )
    .unwrap();
    let opened = open(&own, SPACE, &ring, &a.key).unwrap();
    let heads = a.doc.get_heads();
    let mut doc = a.doc.fork();
    let (mut w, mut atts) = (HashMap::new(), Vec::new());
    let err = import(&mut doc, &opened.body, founder(), &mut w, &mut atts).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::NotAMember(_)
                | BundleError::Refused(VerifyError::Refused(ChangeRefusal::Revoked(_)))
        ),
        "{err:?}"
    );
    assert!(w.is_empty(), "nothing waits");
    assert_eq!(a.doc.get_heads(), heads);

    // Relayed inside a member's honest bundle (a third device that took
    // them before it learned of the revocation): no leniency for bundles.
    let mut c = Dev {
        key: secret(3),
        seat: Seat::A,
        doc: a.doc.fork().with_actor(secret(3).device_id().actor()),
    };
    let mut with_third = a.doc.fork().with_actor(a.key.device_id().actor());
    Editor::new(&mut with_third, Seat::A, 7)
        .add_device(c.key.device_id(), Seat::A, "tablet")
        .unwrap();
    // The third device holds the history before the revocation plus b's
    // later changes.
    let mut third_doc = b.doc.fork().with_actor(c.key.device_id().actor());
    third_doc.merge(&mut with_third.fork()).unwrap();
    c.doc = third_doc;
    let (_, att_c) = c.add_issue(9, "Relayed");
    let all = c.doc.get_changes(&a.doc.get_heads());
    let refs: Vec<&Change> = all.iter().collect();
    let relay_body = c.body(&refs, vec![att, att_c, a.key.attest(&with_third.get_heads()[0])]);
    let sealed = seal(&relay_body, &c.key, &key, &[a.key.device_id()], &mut rng()).unwrap();
    let opened = open(&sealed, SPACE, &ring, &a.key).unwrap();
    let mut doc = a.doc.fork();
    let err = import(
        &mut doc,
        &opened.body,
        founder(),
        &mut HashMap::new(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Refused(VerifyError::Refused(ChangeRefusal::Revoked(_)))
        ),
        "{err:?}"
    );
}
