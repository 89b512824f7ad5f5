#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Authority over real QUIC: a paired member's device, running a modified
//! client, signs changes with its own key that write what it has no right to
//! (the device list, the other partner's acceptances, outcomes and check-in)
//! and dials the partner's `serve`. Every one is refused, nothing is stored,
//! and honest syncs go on.

use std::sync::{Arc, Mutex};

use automerge::transaction::{Transactable, Transaction};
use automerge::{AutomergeError, ObjType, ROOT, ReadDoc};
use duet::Who;
use duet::model::{AgreementKind, CheckInEntry, DeviceId, Rating, Week};
use duet_sync::proto::session::Session;

mod common;
use common::forger::{InMemory, dial};
use common::*;

type Attack = fn(&mut Transaction<'_>, &Ids) -> Result<(), AutomergeError>;

/// The object ids an attack writes into, read from the victim's document.
struct Ids {
    devices: automerge::ObjId,
    agreement_accepted: automerge::ObjId,
    step: automerge::ObjId,
    checkins: automerge::ObjId,
    week: String,
}

/// The map at `obj[key]`.
fn map(doc: &impl ReadDoc, obj: &automerge::ObjId, key: &str) -> automerge::ObjId {
    match doc.get(obj, key).unwrap() {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        other => panic!("no map at {key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_writing_what_it_has_no_right_to_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    pair(&sam, &alex, false).await;
    let server = start_serve(&sam).await;
    // Sam proposes an agreement, commits to a step of Sam's own, and rates
    // the week; Alex's device learns all of it.
    let issue = add_issue(&sam, "Dishes", "");
    let rule = lock(&sam)
        .add_agreement("Breaks when a talk gets heated", AgreementKind::ConflictRule)
        .unwrap();
    let step = lock(&sam)
        .add_step(&issue, "Wash up on Mondays", Who::Me, None)
        .unwrap();
    let week = Week::containing(jiff::civil::date(2026, 11, 30));
    lock(&sam)
        .checkin_add(week, &CheckInEntry::Rating(Rating::new(7).unwrap()))
        .unwrap();
    sync(&alex, server.addr).await.unwrap();
    assert_eq!(heads(&sam), heads(&alex));

    let alex_secret = lock(&alex).store_mut().device_secret().unwrap();
    let alex_atts = lock(&alex).store_mut().attestations().unwrap();
    let alex_doc = lock(&alex).read(|d| d.fork()).unwrap();
    let (sam_id, alex_id) = (device_of(&sam), device_of(&alex));
    let space = lock(&sam).space_id().unwrap();
    let founder = lock(&sam).founder().unwrap();
    let ids = {
        let issues = map(&alex_doc, &ROOT, "issues");
        let steps = map(&alex_doc, &map(&alex_doc, &issues, issue.as_str()), "steps");
        let agreements = map(&alex_doc, &ROOT, "agreements");
        Ids {
            devices: map(&alex_doc, &ROOT, "devices"),
            agreement_accepted: map(
                &alex_doc,
                &map(&alex_doc, &agreements, rule.id.as_str()),
                "accepted",
            ),
            step: map(&alex_doc, &steps, step.id.as_str()),
            checkins: map(&alex_doc, &ROOT, "checkins"),
            week: week.to_string(),
        }
    };
    let before = (heads(&sam), log(&sam), lock(&sam).devices().unwrap());

    let attacks: Vec<(&str, Attack)> = vec![
        // Finding 1: a fresh device list holding only the attacker, as a
        // founder in seat a.
        ("replaces the device list", |tx, _| {
            let d = tx.put_object(ROOT, "devices", ObjType::Map)?;
            let me = tx.put_object(&d, "00".repeat(32), ObjType::Map)?;
            tx.put(&me, "seat", "a")
        }),
        ("adds a device to Sam's seat", |tx, ids| {
            let e = tx.put_object(
                &ids.devices,
                "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
                ObjType::Map,
            )?;
            tx.put(&e, "seat", "a")?;
            tx.put(&e, "name", "Sam's other phone")
        }),
        // Finding 3: values that speak for Sam.
        ("accepts Sam's agreement for Sam", |tx, ids| {
            tx.put(&ids.agreement_accepted, "a", 2)
        }),
        ("marks Sam's step missed", |tx, ids| {
            tx.put(&ids.step, "done", true)?;
            tx.put(&ids.step, "outcome", "missed")?;
            tx.put(&ids.step, "done_by", "b")
        }),
        ("rewrites Sam's check-in", |tx, ids| {
            let w = map(&*tx, &ids.checkins, &ids.week);
            let part = map(&*tx, &w, "a");
            tx.put(&part, "rating", 1)
        }),
    ];
    for (what, attack) in attacks {
        let mut forged = alex_doc.fork().with_actor(alex_id.actor());
        let base = forged.get_heads();
        forged.transact(|tx| attack(tx, &ids)).unwrap();
        let changes = forged.get_changes(&base);
        assert_eq!(changes.len(), 1, "{what}");
        // Signed by Alex's own key: the signature is valid, the right is not.
        let mut attestations = alex_atts.clone();
        attestations.push(alex_secret.attest(&changes[0].hash()));
        let forger = Arc::new(Mutex::new(InMemory {
            doc: forged,
            attestations,
            frames: Vec::new(),
        }));
        let session = {
            let space = space.clone();
            move |peer: DeviceId| Session::new(peer, &space, founder, None, 0)
        };
        let attack = within(
            "the attacking session",
            dial(&alex_secret, vec![sam_id], server.addr, forger, session),
        )
        .await;
        let err = attack.expect_err(what).to_string();
        assert!(
            err.contains("no right to") || err.contains("not a member"),
            "{what}: {err}"
        );
        assert_eq!(
            (heads(&sam), log(&sam), lock(&sam).devices().unwrap()),
            before,
            "{what}: nothing stored"
        );
        // A refused session may leave the sync state naming what was refused.
        lock(&sam).store_mut().set_sync_state(&alex_id, &[]).unwrap();
    }
    assert!(!lock(&sam).agreement(&rule.id.to_string()).unwrap().active);
    let step_now = lock(&sam)
        .issue(&issue)
        .unwrap()
        .steps
        .into_iter()
        .find(|s| s.id == step.id)
        .unwrap();
    assert!(!step_now.done && step_now.outcome.is_none());
    assert_eq!(lock(&sam).checkin(week).unwrap().partners[0].rating, Some(7));

    // Honest edits still travel.
    add_issue(&alex, "honest again", "");
    sync(&alex, server.addr).await.unwrap();
    assert!(has_title(&sam, "honest again"));
    server.stop().await;
}
