#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Random membership histories: devices added (each joining with a copy of
//! its adder's document), revoked (concurrently too), editing after their
//! revocation, syncing with whoever still lets them in, and hostile writes by
//! members. Every replica's membership must equal a small reference model
//! evaluated over the membership events the replica knows, in causal order;
//! no honest exchange is ever refused; every hostile write is.

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{Automerge, Change, ObjType, ROOT, ReadDoc};
use duet_model::authority::Judge;
use duet_model::{ChangeRefusal, DeviceId, DeviceSecret, Editor, Founder, Membership, Seat, space};
use proptest::prelude::*;

const DEVICES: usize = 5;

fn key(i: usize) -> DeviceSecret {
    DeviceSecret::from_bytes(&[i as u8 + 1; 32])
}

fn id(i: usize) -> DeviceId {
    key(i).device_id()
}

/// The seat each device belongs to: the founder's and one more in seat a,
/// the rest in seat b.
fn home_seat(i: usize) -> Seat {
    if i.is_multiple_of(2) { Seat::A } else { Seat::B }
}

/// A membership event, with the events its author knew when it wrote it.
#[derive(Debug, Clone)]
struct Event {
    by: usize,
    target: usize,
    revoke: bool,
    past: BTreeSet<usize>,
}

struct Replica {
    doc: Option<Automerge>,
    known: BTreeSet<usize>,
}

/// The reference: membership over the events `known`, in causal order. An
/// add counts when its author is a member and no revocation of its author
/// that counts was written without knowing of it (its author was cut off
/// before it); a revocation counts when its author is a member; the founder
/// is a member from the start. Repeated until nothing moves.
fn reference(events: &[Event], known: &BTreeSet<usize>) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut revocations: BTreeSet<usize> = BTreeSet::new();
    let mut members = BTreeSet::new();
    for _ in 0..16 {
        members = BTreeSet::from([0]);
        let mut grew = true;
        while grew {
            grew = false;
            for &e in known {
                let ev = &events[e];
                if ev.revoke || members.contains(&ev.target) || !members.contains(&ev.by) {
                    continue;
                }
                let cut_off = revocations
                    .iter()
                    .any(|&r| events[r].target == ev.by && !events[r].past.contains(&e));
                if !cut_off {
                    members.insert(ev.target);
                    grew = true;
                }
            }
        }
        let next: BTreeSet<usize> = known
            .iter()
            .copied()
            .filter(|&e| events[e].revoke && members.contains(&events[e].by))
            .collect();
        if next == revocations {
            break;
        }
        revocations = next;
    }
    let revoked: BTreeSet<usize> = revocations.iter().map(|&r| events[r].target).collect();
    let active = members.difference(&revoked).copied().collect();
    // Devices added by a member after its cut-off (or by such a device) are
    // listed, as revoked from the start.
    let mut listed = members.clone();
    let mut grew = true;
    while grew {
        grew = false;
        for &e in known {
            let ev = &events[e];
            if !ev.revoke && listed.contains(&ev.by) && listed.insert(ev.target) {
                grew = true;
            }
        }
    }
    (listed, active)
}

fn view(doc: &Automerge) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let m = Membership::pinned(doc, id(0));
    let index = |d: &DeviceId| (0..DEVICES).find(|i| id(*i) == *d).expect("a known device");
    (
        m.members().iter().map(|x| index(&x.id)).collect(),
        m.active().iter().map(index).collect(),
    )
}

fn active_in(doc: &Automerge, i: usize) -> bool {
    Membership::pinned(doc, id(0)).is_active(&id(i))
}

/// What a device receiving `from`'s document would do: judge every change it
/// lacks, as delivered by `deliverer`, and keep them all or none.
fn deliver(to: &Automerge, from: &Automerge, deliverer: usize) -> Result<Automerge, ChangeRefusal> {
    let mut next = to.clone();
    let new: Vec<Change> = from
        .get_changes(&[])
        .into_iter()
        .filter(|c| to.get_change_by_hash(&c.hash()).is_none())
        .collect();
    if new.is_empty() {
        return Ok(next);
    }
    next.apply_changes(new.clone()).unwrap();
    let mut judge = Judge::new(&next, id(0));
    for c in &new {
        match judge.membership().check_change(c.actor_id(), c.seq()) {
            Err(ChangeRefusal::Revoked(_)) if !id(deliverer).is_actor(c.actor_id()) => {}
            other => other?,
        }
        judge.check(c)?;
    }
    Ok(next)
}

/// Writes that no member may make, tried on a copy of `doc` as device `by`.
fn hostile(doc: &Automerge, by: usize, kind: u8) -> Option<Change> {
    let mut fork = doc.fork().with_actor(id(by).actor());
    let before = fork.get_heads();
    let other = home_seat(by).other();
    let held = Membership::pinned(doc, id(0)).seat_is_held(other);
    let result = fork.transact::<_, _, automerge::AutomergeError>(|tx| {
        match kind % 4 {
            0 => {
                let d = tx.put_object(ROOT, "devices", ObjType::Map)?;
                let me = tx.put_object(&d, id(by).to_string(), ObjType::Map)?;
                tx.put(&me, "seat", "a")?;
            }
            1 => {
                let c = match tx.get(ROOT, "checkins")? {
                    Some((_, c)) => c,
                    None => tx.put_object(ROOT, "checkins", ObjType::Map)?,
                };
                let w = tx.put_object(&c, "2026-W49", ObjType::Map)?;
                let p = tx.put_object(&w, other.as_str(), ObjType::Map)?;
                tx.put(&p, "rating", 1)?;
            }
            2 if held => {
                let Some((_, d)) = tx.get(ROOT, "devices")? else {
                    return Ok(());
                };
                let e = tx.put_object(&d, id(DEVICES + 3).to_string(), ObjType::Map)?;
                tx.put(&e, "seat", other.as_str())?;
            }
            _ => {
                // Lift any revocation there is.
                let Some((_, d)) = tx.get(ROOT, "devices")? else {
                    return Ok(());
                };
                for k in tx.keys(&d).collect::<Vec<_>>() {
                    if let Some((_, e)) = tx.get(&d, &k)?
                        && tx.get(&e, "revoked_after")?.is_some()
                    {
                        tx.put(&e, "revoked_after", i64::MAX)?;
                    }
                }
            }
        }
        Ok(())
    });
    result.ok()?;
    let mut changes = fork.get_changes(&before);
    (changes.len() == 1).then(|| changes.remove(0))
}

fn run(ops: &[(u8, u8, u8)]) -> Vec<Option<Automerge>> {
    let mut doc = Automerge::new().with_actor(id(0).actor());
    let founder = Founder {
        space_id: "5eed".into(),
        name: "Sam".into(),
        device: id(0),
        device_name: "laptop".into(),
    };
    space::create(&mut doc, &founder, 0).unwrap();
    let mut replicas: Vec<Replica> = (0..DEVICES)
        .map(|_| Replica {
            doc: None,
            known: BTreeSet::new(),
        })
        .collect();
    replicas[0].doc = Some(doc);
    let mut events: Vec<Event> = Vec::new();
    let mut t = 1;
    for &(kind, x, y) in ops {
        // The acting device is one that holds the space.
        let holders: Vec<usize> = (0..DEVICES).filter(|i| replicas[*i].doc.is_some()).collect();
        let x = holders[usize::from(x) % holders.len()];
        let y = usize::from(y) % DEVICES;
        t += 1;
        let Some(dx) = replicas[x].doc.clone() else {
            continue;
        };
        if !active_in(&dx, x) {
            // A revoked device knows, and writes no more membership.
            if kind % 5 == 3 {
                let mut d = dx.clone();
                Editor::new(&mut d, home_seat(x), t).rename("after").unwrap();
                replicas[x].doc = Some(d);
            }
            continue;
        }
        match kind % 5 {
            0 if x != y && Membership::pinned(&dx, id(0)).get(&id(y)).is_none() => {
                // Add y: its own seat, or the other one while it holds no device.
                let seat = home_seat(y);
                if seat != home_seat(x) && Membership::pinned(&dx, id(0)).seat_is_held(seat) {
                    continue;
                }
                let mut d = dx.clone();
                Editor::new(&mut d, home_seat(x), t)
                    .add_device(id(y), seat, "device")
                    .unwrap();
                let e = events.len();
                events.push(Event {
                    by: x,
                    target: y,
                    revoke: false,
                    past: replicas[x].known.clone(),
                });
                replicas[x].known.insert(e);
                replicas[x].doc = Some(d.clone());
                if replicas[y].doc.is_none() {
                    // y joins: its first sync takes the adder's document.
                    replicas[y].doc = Some(d.with_actor(id(y).actor()));
                    replicas[y].known = replicas[x].known.clone();
                }
            }
            1 if x != y && active_in(&dx, y) => {
                let mut d = dx.clone();
                Editor::new(&mut d, home_seat(x), t).revoke_device(id(y)).unwrap();
                let e = events.len();
                events.push(Event {
                    by: x,
                    target: y,
                    revoke: true,
                    past: replicas[x].known.clone(),
                });
                replicas[x].known.insert(e);
                replicas[x].doc = Some(d);
            }
            2 => {
                // Sync, when each lets the other in.
                let Some(dy) = replicas[y].doc.clone() else {
                    continue;
                };
                if x == y || !active_in(&dx, y) || !active_in(&dy, x) {
                    continue;
                }
                let to_x = deliver(&dx, &dy, y).expect("an honest exchange was refused");
                let to_y = deliver(&dy, &dx, x).expect("an honest exchange was refused");
                let union: BTreeSet<usize> = replicas[x].known.union(&replicas[y].known).copied().collect();
                replicas[x].doc = Some(to_x.with_actor(id(x).actor()));
                replicas[y].doc = Some(to_y.with_actor(id(y).actor()));
                replicas[x].known = union.clone();
                replicas[y].known = union;
            }
            3 => {
                let mut d = dx.clone();
                Editor::new(&mut d, home_seat(x), t).rename("edit").unwrap();
                replicas[x].doc = Some(d);
            }
            _ => {
                // A hostile write by x, offered to y.
                let Some(dy) = replicas[y].doc.clone() else {
                    continue;
                };
                if let Some(c) = hostile(&dy, x, y as u8 ^ kind) {
                    let mut next = dy.clone();
                    next.apply_changes(vec![c.clone()]).unwrap();
                    let verdict = Judge::new(&next, id(0)).check(&c);
                    assert!(
                        verdict.is_err(),
                        "a hostile write was accepted: {:?}",
                        c.decode().operations
                    );
                }
            }
        }
        for (i, r) in replicas.iter().enumerate() {
            if let Some(d) = &r.doc {
                assert_eq!(
                    view(d),
                    reference(&events, &r.known),
                    "device {i} after {:?}",
                    (kind % 5, x, y)
                );
            }
        }
    }
    replicas.into_iter().map(|r| r.doc).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_replica_agrees_with_the_reference(ops in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..60)) {
        run(&ops);
    }
}

/// Two devices revoke each other while apart; each then refuses the other,
/// and the founder learns one revocation from each side it hears from.
/// (`members.rs` tests both revocations meeting in one document.)
#[test]
fn concurrent_revocations_of_each_other() {
    // Acting devices are picked among those holding the space, in order of
    // index.
    let docs = run(&[
        (0, 0, 1), // 0 adds 1 (seat b)
        (0, 0, 2), // 0 adds 2 (seat a)
        (2, 0, 1), // 0 and 1 sync: 1 learns of 2
        (1, 2, 1), // 2 revokes 1
        (1, 1, 2), // 1, apart, revokes 2
        (2, 2, 1), // 2 and 1 would sync: each refuses the other
        (2, 2, 0), // 2 and 0 sync: 0 learns 1 is revoked
    ]);
    let at = |i: usize| Membership::pinned(docs[i].as_ref().unwrap(), id(0));
    assert!(!at(2).is_active(&id(1)) && at(2).is_active(&id(2)));
    assert!(!at(1).is_active(&id(2)) && at(1).is_active(&id(1)));
    assert!(!at(0).is_active(&id(1)) && at(0).is_active(&id(2)));
}

/// A device revoked while it adds a device of its own: the add, relayed by
/// a device that had not heard, does not count anywhere.
#[test]
fn an_add_concurrent_with_its_authors_revocation() {
    // Acting devices are picked among those holding the space, in order of
    // index: with 0, 1 and 2 holding it, x = 0, 1, 2 picks them.
    let docs = run(&[
        (0, 0, 1), // 0 adds 1 (seat b)
        (0, 0, 2), // 0 adds 2 (seat a)
        (2, 0, 1), // 0 and 1 sync: 1 learns of 2
        (1, 0, 2), // 0 revokes 2
        (0, 2, 4), // 2, unaware, adds 4
        (2, 1, 2), // 1 and 2 sync: 1 takes 4's entry
        (3, 3, 0), // 4 writes
        (2, 3, 1), // 4 and 1 sync
        (2, 1, 0), // 1 and 0 sync: 0 takes 2's and 4's edits, relayed
    ]);
    let founder = docs[0].as_ref().unwrap();
    let members = Membership::pinned(founder, id(0));
    let four = members.get(&id(4)).expect("device 4 is listed");
    assert_eq!(four.revoked_after, Some(0), "as revoked from its first change");
    assert!(
        founder
            .get_changes(&[])
            .iter()
            .any(|c| id(4).is_actor(c.actor_id())),
        "device 4's edit reached the founder through device 1"
    );
}
