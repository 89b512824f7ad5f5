//! The seeds: a small, valid input for every target but `store_open`, made
//! from real syncs and pairings between the harness's fixed devices and from
//! real documents and bundles. `fuzz/examples/seeds.rs` writes them to
//! `fuzz/corpus/`.

use automerge::transaction::Transactable;
use automerge::{Change, ROOT, ScalarValue};
use duet_model::{Attestation, Editor, Seat};
use duet_sync::proto::bundle;
use duet_sync::proto::frame;
use duet_sync::proto::keyring::Keyring;
use duet_sync::proto::pairing;
use duet_sync::proto::relay::{self as relay_proto, Request, Response};
use duet_sync::proto::wire::{self, Message};

use super::bundle_open::sealed_bundle;
use super::fixtures::{
    FOUNDER, KNOWN, PARTNER, SPACE_ID, STRANGER, T0, THIRD, as_device, device, frames, home, item, own_frame,
    partner_edits, relay_home, secret, space_key, with_third,
};
use super::pairing::{MISMATCH, REJECT, WRONG_CODE, record_pairing};
use super::session::{SAVED, SIGN, Scenario, record_session};

/// A small, valid seed for every target but `store_open` (whose seeds need a
/// real store on disk; see `fuzz/examples/seeds.rs`): `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |t: &'static str, n: &str, b: Vec<u8>| out.push((t, n.to_string(), b));

    // Real sync conversations, as the home received them.
    let mut partner_doc = as_device(&home(), PARTNER);
    partner_edits(&mut partner_doc, T0 + 10_000);
    let partner = record_session(Scenario::Partner, partner_doc.clone());
    let in_sync = record_session(Scenario::Partner, as_device(&home(), PARTNER));
    let joining = record_session(Scenario::Joining, as_device(&home(), FOUNDER));
    let mut third_doc = as_device(&with_third(), THIRD);
    let mut from_partner = partner_doc.fork();
    third_doc.merge(&mut from_partner).expect("merge");
    Editor::new(&mut third_doc, Seat::B, T0 + 20_000)
        .add_note(&item(4), "from the tablet")
        .expect("note");
    let relay = record_session(Scenario::Relay, third_doc);
    let stranger = record_session(Scenario::Stranger, as_device(&home(), STRANGER));

    add(
        "session",
        "partner",
        with_flags(Scenario::Partner as u8, &partner),
    );
    add(
        "session",
        "partner-signed",
        with_flags(Scenario::Partner as u8 | SIGN, &partner),
    );
    add(
        "session",
        "in-sync",
        with_flags(Scenario::Partner as u8, &in_sync),
    );
    add(
        "session",
        "joining",
        with_flags(Scenario::Joining as u8, &joining),
    );
    add("session", "relay", with_flags(Scenario::Relay as u8, &relay));
    add(
        "session",
        "stranger",
        with_flags(Scenario::Stranger as u8, &stranger),
    );
    let mut saved = vec![Scenario::Partner as u8 | SAVED];
    let state = automerge::sync::State::new().encode();
    saved.extend_from_slice(&(state.len() as u16).to_le_bytes());
    saved.extend_from_slice(&state);
    saved.extend_from_slice(&in_sync);
    add("session", "saved-state", saved);

    // Frames and messages from those conversations.
    let all_frames = frames(&partner);
    add(
        "frame_decoder",
        "partner-7",
        pieces(&partner[..partner.len().min(600)], 7),
    );
    add(
        "frame_decoder",
        "joining-200",
        pieces(&joining[..joining.len().min(900)], 200),
    );
    add(
        "frame_decoder",
        "empty-and-huge",
        pieces(&[0, 0, 0, 1, 3, 0xff, 0xff, 0xff, 0xff], 3),
    );
    add("frame_decoder", "too-large", pieces(&[0x02, 0, 0, 1, 1], 2));
    for (i, f) in all_frames.iter().enumerate().take(4) {
        add(
            "wire_message",
            &format!("partner-{i}"),
            with_flags(f.kind, &f.payload),
        );
    }
    let failure = Message::Failure(wire::Failure { text: "nope".into() })
        .encode()
        .expect("encode");
    let f = own_frame(&failure);
    add("wire_message", "failure", with_flags(f.kind, &f.payload));
    add("wire_message", "bye", vec![wire::BYE]);

    // Pairing, both ways.
    let (host_accepts, joiner_sent) = record_pairing(false);
    let (host_rejects, _) = record_pairing(true);
    add("pairing_host", "accept", with_flags(0, &joiner_sent));
    add("pairing_host", "reject", with_flags(REJECT, &joiner_sent));
    add("pairing_host", "wrong-code", with_flags(WRONG_CODE, &joiner_sent));
    add(
        "pairing_host",
        "abort",
        with_flags(0, &framed(pairing::ABORT, &[1])),
    );
    add("pairing_joiner", "accepted", with_flags(0, &host_accepts));
    add("pairing_joiner", "rejected", with_flags(0, &host_rejects));
    add("pairing_joiner", "mismatch", with_flags(MISMATCH, &host_accepts));

    // Changes and documents.
    let new: Vec<Change> = partner_doc.get_changes(&home().get_heads());
    let chunk_data: Vec<u8> = new.iter().flat_map(|c| c.raw_bytes().to_vec()).collect();
    add("parse_chunks", "partner-changes", chunk_data.clone());
    add("parse_chunks", "one-change", new[0].raw_bytes().to_vec());
    let mut compressed = home();
    compressed
        .transact(|tx| tx.put(ROOT, "blob", ScalarValue::Bytes(vec![7; 600])))
        .expect("edit");
    let mut big = compressed.get_changes(&home().get_heads());
    add(
        "parse_chunks",
        "compressed",
        big.iter_mut().flat_map(|c| c.bytes().into_owned()).collect(),
    );
    add("parse_chunks", "document", home().save());

    // check_new_changes: the partner's changes with its real tip signed (spec 1
    // picks change index 4, the last), with its own signature per change (spec
    // 3), and a stranger's change signed by the stranger.
    let tip = (new.len() - 1) as u8;
    let spec_key = |n: u8| (KNOWN.iter().position(|&k| k == n).expect("known") as u8) << 2;
    add(
        "check_new_changes",
        "partner-tip",
        [vec![0, 1, 1 | spec_key(PARTNER), tip], chunk_data.clone()].concat(),
    );
    add(
        "check_new_changes",
        "partner-own",
        [vec![0, 2, 3, 0, 3, tip], chunk_data.clone()].concat(),
    );
    let mut stranger_doc = as_device(&home(), STRANGER);
    Editor::new(&mut stranger_doc, Seat::B, T0)
        .rename("Mallory")
        .expect("rename");
    let stranger_changes: Vec<u8> = stranger_doc
        .get_changes(&home().get_heads())
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    add(
        "check_new_changes",
        "stranger",
        [vec![4, 1, 1 | spec_key(STRANGER), 0], stranger_changes].concat(),
    );
    let mut relayed = vec![1 | 2, 2, 3, tip, 1 | spec_key(THIRD), 0];
    relayed.extend_from_slice(&chunk_data);
    add("check_new_changes", "relayed-revoked", relayed);

    let valid = secret(PARTNER).attest(&new[0].hash());
    let att = |a: &Attestation| [a.device.as_bytes().as_slice(), &a.hash.0, &a.signature].concat();
    add("attestation", "valid", att(&valid));
    let mut forged = valid;
    forged.signature[5] ^= 0x40;
    add("attestation", "forged", att(&forged));
    add(
        "attestation",
        "with-message",
        [att(&valid), vec![0x42, 0, 0, 0]].concat(),
    );

    let docs = [
        ("home", home()),
        ("relay", relay_home()),
        ("partner", partner_doc.clone()),
    ];
    for (name, d) in &docs {
        add("membership", name, with_flags(0, &d.save()));
        add("document_load", name, with_flags(0, &d.save()));
        add(
            "document_load",
            &format!("{name}-raw-fixed"),
            with_flags(1 | 2, &d.save_nocompress()),
        );
    }
    let mut changes_only = Vec::new();
    for c in partner_doc.get_changes(&[]) {
        changes_only.extend_from_slice(c.raw_bytes());
    }
    add("document_load", "changes", with_flags(1, &changes_only));
    add("membership", "changes", with_flags(1, &changes_only));

    // document_ops: a founded space by device 1 (op 0/1 by writer 0), then a
    // device entry written by the stranger (writer 3) and a merge.
    let root = 0u8;
    let ops: Vec<u8> = vec![
        0, // flags: empty document
        0x01, root, 0, 4, 0, // writer 0: put_object ROOT["devices"] = map
        0x00, root, 0, 0, 3, 1, // writer 0: put ROOT["schema"] = Int(1)
        0x01, 1, 0, 0xb0, 0, // writer 0: put_object devices[device 1] = map
        0x00, 2, 0, 11, 0, 8, // writer 0: put entry["seat"] = "a"
        0x66, 0, 0, // writer 3 merges writer 0
        0x61, 1, 0, 0xb1, 0, // writer 3: put_object devices[device 2] = map
        0x60, 3, 0, 11, 0, 9, // writer 3: put entry["seat"] = "b"
        0x06, 0, 3, // writer 0 merges writer 3
    ];
    add("document_ops", "devices", ops);
    let mut on_home = vec![1u8];
    for i in 0..24u8 {
        // Puts of assorted values under assorted keys of the home's objects, by
        // assorted writers.
        on_home.extend_from_slice(&[
            (i % 5) << 5,
            i.wrapping_mul(7),
            0,
            i.wrapping_mul(3),
            i % 12,
            i,
            i,
            i,
            i,
            i,
            i,
            i,
            i,
        ]);
    }
    add("document_ops", "home-puts", on_home);

    // Bundles: the whole home, and the partner's edits after it, signed.
    let whole_home = home();
    let founder_att = {
        let tip = whole_home.get_heads();
        secret(FOUNDER).attest(&tip[0])
    };
    // Mode 0 is a bundle file; mode 1 the plaintext inside its seal.
    let as_file = |file: Vec<u8>| [vec![0], file].concat();
    let whole = sealed_bundle(&whole_home, &[], FOUNDER, vec![founder_att]);
    add("bundle_open", "whole-home", as_file(whole.clone()));
    let mut partner_doc = as_device(&home(), PARTNER);
    partner_edits(&mut partner_doc, T0 + 10_000);
    let partner_tip = partner_doc
        .get_changes(&whole_home.get_heads())
        .iter()
        .filter(|c| device(PARTNER).is_actor(c.actor_id()))
        .max_by_key(|c| c.seq())
        .map(|c| c.hash())
        .expect("the partner made changes");
    let signed = sealed_bundle(
        &partner_doc,
        &whole_home.get_heads(),
        PARTNER,
        vec![secret(PARTNER).attest(&partner_tip)],
    );
    add("bundle_open", "partner-edits", as_file(signed.clone()));
    let unsigned = sealed_bundle(&partner_doc, &whole_home.get_heads(), PARTNER, Vec::new());
    add("bundle_open", "unsigned", as_file(unsigned));
    let mut ring = Keyring::default();
    ring.insert(space_key());
    for (name, file) in [("whole-home-inside", whole), ("partner-edits-inside", signed)] {
        let opened = bundle::open(&file, SPACE_ID, &ring, &secret(PARTNER)).expect("a seed opens");
        let plaintext = bundle::encode_body(&opened.body).expect("a seed encodes");
        add("bundle_open", name, [vec![1], plaintext].concat());
    }

    // Relay frames: every request and answer.
    let space = relay_proto::SpaceTag::of(SPACE_ID);
    let access =
        relay_proto::SignedAccess::sign(&secret(FOUNDER), space, 3, [device(FOUNDER), device(PARTNER)])
            .expect("sign");
    let requests = [
        ("access", Request::Access { space }),
        ("set-access", Request::SetAccess(access.clone())),
        (
            "post",
            Request::Post {
                space,
                bundle: vec![7; 40],
            },
        ),
        (
            "fetch",
            Request::Fetch {
                space,
                after: 9,
                wait_ms: 1000,
            },
        ),
    ];
    for (name, r) in requests {
        let f = own_frame(&r.encode().expect("encode"));
        let mut bytes = vec![f.kind];
        bytes.extend_from_slice(&f.payload);
        add("relay_wire", name, bytes);
    }
    let answers = [
        ("access-list", Response::Access(Some(access))),
        ("done", Response::Done),
        ("posted", Response::Posted { seq: 12 }),
        (
            "bundles",
            Response::Bundles {
                items: vec![(1, vec![1, 2]), (4, vec![3])],
                more: true,
            },
        ),
        ("failure", Response::Failure("not allowed".into())),
    ];
    for (name, r) in answers {
        let f = own_frame(&r.encode().expect("encode"));
        let mut bytes = vec![f.kind];
        bytes.extend_from_slice(&f.payload);
        add("relay_wire", name, bytes);
    }
    out
}

/// A frame's bytes.
fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    frame::encode(kind, payload).expect("a small frame")
}

/// Cuts a stream into the frame decoder target's `[n][n bytes]` pieces.
fn pieces(stream: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in stream.chunks(size.clamp(1, 255)) {
        out.push(p.len() as u8);
        out.extend_from_slice(p);
    }
    out
}

fn with_flags(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(rest);
    v
}
