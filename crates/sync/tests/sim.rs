//! The deterministic simulator (`duet_sync::sim`) as a test: a few hundred
//! seeds of three or four devices editing through a faulty network, joining
//! and revoking each other, with a hostile member among them, must converge
//! to identical heads and content without losing an honest edit or taking a
//! hostile one.
//!
//! - `DUET_SIM_SEEDS=n` runs `n` seeds per test instead of the default;
//! - `DUET_SIM_SEED=s` runs only seed `s` (what a failure prints);
//! - `cargo run --release -p duet-sync --example sim --features sim -- --seeds 10000`
//!   runs any number with a summary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::ReadDoc;
use duet_model::Seat;
use duet_sync::sim::{Config, Faults, Sim, Summary};

/// Seeds per test (four tests share the default CI run of 300 seeds, so that
/// the test harness spreads them over the cores).
const SEEDS_PER_TEST: u64 = 75;

fn seeds(block: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("DUET_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return if block == 0 { vec![one] } else { Vec::new() };
    }
    let n = std::env::var("DUET_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_PER_TEST);
    (block * n..(block + 1) * n).collect()
}

fn run_block(block: u64) {
    let config = Config::default();
    let mut summary = Summary::default();
    for seed in seeds(block) {
        let outcome = Sim::run(seed, &config);
        if let Err(f) = &outcome {
            eprintln!("{f}\n(or: DUET_SIM_SEED={seed} cargo test -p duet-sync --test sim)\n");
        }
        summary.add(&outcome);
    }
    eprintln!("{summary}");
    assert!(
        summary.failures.is_empty(),
        "{} of {} seeds failed (seeds {:?}); see above for each one's replay command",
        summary.failures.len(),
        summary.seeds,
        summary.failures.iter().map(|f| f.seed).collect::<Vec<_>>()
    );
}

#[test]
fn seeds_block_0() {
    run_block(0);
}

#[test]
fn seeds_block_1() {
    run_block(1);
}

#[test]
fn seeds_block_2() {
    run_block(2);
}

#[test]
fn seeds_block_3() {
    run_block(3);
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config {
        trace: true,
        ..Config::default()
    };
    for seed in [3, 117] {
        let a = Sim::run(seed, &config).map_err(|f| f.to_string()).unwrap();
        let b = Sim::run(seed, &config).map_err(|f| f.to_string()).unwrap();
        assert_eq!(a.trace, b.trace, "seed {seed}: the event traces differ");
        assert_eq!(a, b, "seed {seed}: the reports differ");
        assert!(a.messages > 0 && a.edits > 0, "{a:?}");
    }
    // Different seeds make different runs.
    let a = Sim::run(1, &Config::default()).unwrap();
    let b = Sim::run(2, &Config::default()).unwrap();
    assert_ne!(a.digest, b.digest);
}

#[test]
fn faults_are_injected() {
    let mut summary = Summary::default();
    for seed in 1000..1006 {
        summary.add(&Sim::run(seed, &Config::default()));
    }
    assert!(summary.failures.is_empty(), "{summary}");
    for (kind, n) in summary.faults.kinds() {
        assert!(n > 0, "no {kind} in six runs:\n{summary}");
    }
    assert!(summary.concurrent_edits > 0, "{summary}");
}

/// The couple's devices change during runs: devices join (their first sync
/// takes a whole document), devices are revoked, sometimes two revoke each
/// other at once, and devices refuse sessions with a device they know is
/// revoked or do not know yet. Each is checked in every run; this shows they
/// happen.
#[test]
fn devices_join_and_are_revoked() {
    let mut summary = Summary::default();
    for seed in 0..40 {
        summary.add(&Sim::run(seed, &Config::default()));
    }
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.joins >= 10, "{summary}");
    assert!(summary.first_syncs >= 10, "{summary}");
    assert!(summary.revocations >= 10, "{summary}");
    assert!(summary.mutual_revocations >= 1, "{summary}");
    assert!(summary.outsiders_refused >= 10, "{summary}");
    assert!(summary.attacks_refused >= 40, "{summary}");
}

#[test]
fn a_perfect_network_converges() {
    let config = Config {
        faults: Faults::none(),
        ..Config::default()
    };
    for seed in 0..5 {
        let r = Sim::run(seed, &config).map_err(|f| f.to_string()).unwrap();
        let f = r.faults;
        assert_eq!(
            (f.delayed, f.cut, f.stalled, f.duplicated, f.replayed),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(
            (f.restarts, f.partitions, f.crossed_dials, f.timeouts),
            (0, 0, 0, 0)
        );
        assert!(r.heal_rounds >= 1);
    }
}

// ----- The protocol bugs the simulator found, each reproduced by hand -----
//
// Each test replays the exact situation that once refused an honest peer's
// message, and checks that it now syncs and converges.

mod by_hand {
    use std::collections::BTreeMap;

    use automerge::sync::{ChunkList, Message as AmMessage};
    use automerge::{Automerge, ChangeHash, ReadDoc};
    use duet_model::{Attestation, DeviceSecret, Editor, Founder, ItemId, NewIssue, Seat, space};
    use duet_sync::proto::frame::{Frame, FrameDecoder};
    use duet_sync::proto::session::{Event, Session, SyncError};
    use duet_sync::proto::wire::{Message, SyncMessage};

    /// A home as the store keeps it: the document and the newest attestation
    /// per device.
    pub struct Home {
        pub key: DeviceSecret,
        pub doc: Automerge,
        atts: BTreeMap<[u8; 32], (u64, Attestation)>,
    }

    impl Home {
        /// One write: `f`'s edit, then this device signs its newest change.
        pub fn edit(&mut self, f: impl FnOnce(&mut Editor<'_>)) -> ChangeHash {
            let before = self.doc.get_heads();
            f(&mut Editor::new(&mut self.doc, Seat::A, 0));
            let tip = self
                .doc
                .get_changes(&before)
                .into_iter()
                .max_by_key(|c| c.seq())
                .unwrap();
            self.put(self.key.attest(&tip.hash()), tip.seq());
            tip.hash()
        }

        pub fn add_issue(&mut self, n: u8) -> ChangeHash {
            let new = NewIssue {
                title: format!("issue {n}"),
                ..Default::default()
            };
            self.edit(|e| e.add_issue(&ItemId::from_random([n; 8]), &new).unwrap())
        }

        fn put(&mut self, a: Attestation, seq: u64) {
            let k = *a.device.as_bytes();
            if self.atts.get(&k).is_none_or(|(s, _)| *s < seq) {
                self.atts.insert(k, (seq, a));
            }
        }

        fn keep(&mut self, atts: &[Attestation]) {
            for a in atts {
                if let Some(c) = self.doc.get_change_by_hash(&a.hash) {
                    let seq = c.seq();
                    self.put(*a, seq);
                }
            }
        }

        fn attestations(&self) -> Vec<Attestation> {
            self.atts.values().map(|(_, a)| *a).collect()
        }

        /// Feeds one frame to `s` the way the store does: on a copy, kept
        /// only if the session accepts it.
        pub fn receive(&mut self, s: &mut Session, bytes: &[u8]) -> Result<Vec<Event>, SyncError> {
            let mut d = FrameDecoder::new();
            d.push(bytes);
            let frame: Frame = d.next_frame().unwrap().unwrap();
            let mut working = self.doc.clone();
            let events = s.handle(&frame, &mut working, 0)?;
            self.doc = working;
            for e in &events {
                if let Event::Applied { attestations, .. } = e {
                    self.keep(attestations);
                }
            }
            s.generate(&self.doc, &self.attestations());
            Ok(events)
        }
    }

    /// A space founded by device 1 with devices 2.. added, a dozen issues of
    /// shared history, and each device starting from a copy of it.
    pub fn couple(n: u8) -> Vec<Home> {
        let key = DeviceSecret::from_bytes(&[1; 32]);
        let mut doc = Automerge::new().with_actor(key.device_id().actor());
        let founder = Founder {
            space_id: "5eed".into(),
            name: "Sam".into(),
            device: key.device_id(),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, 0).unwrap();
        let mut first = Home {
            key,
            doc,
            atts: BTreeMap::new(),
        };
        for i in 2..=n {
            let id = DeviceSecret::from_bytes(&[i; 32]).device_id();
            first.edit(|e| e.add_device(id, Seat::A, "device").unwrap());
        }
        for i in 100..112 {
            first.add_issue(i);
        }
        let mut homes: Vec<Home> = (2..=n)
            .map(|i| {
                let key = DeviceSecret::from_bytes(&[i; 32]);
                Home {
                    doc: first.doc.clone().with_actor(key.device_id().actor()),
                    key,
                    atts: first.atts.clone(),
                }
            })
            .collect();
        homes.insert(0, first);
        homes
    }

    /// Two sessions, `x` dialling `y`, with their Hellos exchanged.
    pub fn connect(x: &mut Home, y: &mut Home) -> (Session, Session) {
        let mut sx = Session::new(y.key.device_id(), "5eed", super::founder(), None, 0);
        let mut sy = Session::new(x.key.device_id(), "5eed", super::founder(), None, 0);
        let hx = sx.poll_transmit().unwrap();
        let hy = sy.poll_transmit().unwrap();
        y.receive(&mut sy, &hx).unwrap();
        x.receive(&mut sx, &hy).unwrap();
        (sx, sy)
    }

    /// Runs a session between `x` (dialling) and `y` to the end; `tamper`
    /// may rewrite what `x` sends.
    pub fn sync(
        x: &mut Home,
        y: &mut Home,
        mut tamper: impl FnMut(Vec<u8>) -> Option<Vec<u8>>,
    ) -> Result<(), SyncError> {
        let (mut sx, mut sy) = connect(x, y);
        for _ in 0..100 {
            let mut moved = false;
            while let Some(b) = sx.poll_transmit() {
                moved = true;
                if let Some(b) = tamper(b) {
                    y.receive(&mut sy, &b)?;
                }
            }
            while let Some(b) = sy.poll_transmit() {
                moved = true;
                x.receive(&mut sx, &b)?;
            }
            if sx.is_synced(&x.doc) {
                return Ok(());
            }
            if !moved {
                return Err(SyncError::Protocol("the test's sync stalled"));
            }
        }
        Err(SyncError::Protocol("the test's sync did not end"))
    }

    /// Runs a session from `x` to `y` in which `x`'s messages leave out the
    /// change `drop`, and cuts it right after `y` accepted the first message
    /// that carried changes.
    pub fn deliver_until_changes(x: &mut Home, y: &mut Home, drop: ChangeHash) {
        let (mut sx, mut sy) = connect(x, y);
        sx.generate(&x.doc, &x.attestations());
        sy.generate(&y.doc, &y.attestations());
        for _ in 0..10 {
            while let Some(m) = sy.poll_transmit() {
                x.receive(&mut sx, &m).unwrap();
            }
            while let Some(m) = sx.poll_transmit() {
                let (m, carried) = without(m, drop);
                y.receive(&mut sy, &m).unwrap();
                if carried > 0 {
                    return;
                }
            }
        }
        panic!("{drop} never went out");
    }

    /// A sync frame without the change `drop` (as if the receiver's Bloom
    /// filter had falsely claimed it), other frames unchanged; and the number
    /// of changes it still carries.
    pub fn without(bytes: Vec<u8>, drop: ChangeHash) -> (Vec<u8>, usize) {
        filtered(bytes, |h| h != drop)
    }

    /// A sync frame with only the changes `keep` accepts, and their number.
    pub fn filtered(bytes: Vec<u8>, keep: impl Fn(ChangeHash) -> bool) -> (Vec<u8>, usize) {
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        let frame = d.next_frame().unwrap().unwrap();
        let Ok(Message::Sync(m)) = Message::decode(&frame) else {
            return (bytes, 0);
        };
        let mut am = AmMessage::decode(&m.message).unwrap();
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for chunk in am.changes.iter() {
            for c in duet_sync::proto::verify::parse_chunks(chunk).unwrap() {
                if keep(c.hash()) {
                    kept.push(c.raw_bytes().to_vec());
                }
            }
        }
        let carried = kept.len();
        am.changes = ChunkList::from(kept);
        let bytes = Message::Sync(SyncMessage {
            message: am.encode(),
            attestations: m.attestations,
        })
        .encode()
        .unwrap();
        (bytes, carried)
    }
}

/// Syncs every pair of `homes` a few times over, and checks they end with the
/// same heads and nothing held back.
fn converge(homes: &mut [by_hand::Home]) {
    for _ in 0..3 {
        for x in 0..homes.len() {
            for y in 0..homes.len() {
                if x != y {
                    let [hx, hy] = homes.get_disjoint_mut([x, y]).unwrap();
                    by_hand::sync(hx, hy, Some).unwrap();
                }
            }
        }
    }
    let heads = homes[0].doc.get_heads();
    for h in homes.iter() {
        assert_eq!(h.doc.get_heads(), heads);
        assert!(h.doc.get_missing_deps(&[]).is_empty(), "nothing held back");
    }
}

/// Once: a change automerge held back for a missing dependency stayed in the
/// document after its session was cut, and when another session brought the
/// dependency, that session (which never saw the change's signature) refused
/// the honest peer's whole message. Now a change waits in its session, never
/// in the document.
#[test]
fn a_change_waiting_in_a_cut_session_does_not_affect_another() {
    use by_hand::*;
    let mut homes = couple(3);
    let [a, b, c] = homes.get_disjoint_mut([0, 1, 2]).unwrap();
    let x = a.add_issue(1);
    sync(b, a, Some).unwrap(); // b now holds a's change x
    let y = b.edit(|e| e.set_partner_name(Seat::B, "Alex").unwrap()); // depends on x
    // b's message to c leaves x out (a Bloom false positive), and the session
    // is cut before c asks for x.
    deliver_until_changes(b, c, x);
    assert!(c.doc.get_change_by_hash(&x).is_none());
    assert!(c.doc.get_change_by_hash(&y).is_none(), "y waited in the session");
    assert!(
        c.doc.get_missing_deps(&[]).is_empty(),
        "the document holds nothing back"
    );
    // a, which holds x but not b's change, syncs with c.
    sync(a, c, Some).unwrap();
    assert!(c.doc.get_change_by_hash(&x).is_some());
    converge(&mut homes);
}

/// Once: a message carrying a whole document (automerge's `save()`) also
/// carried the changes its sender held back, unverified, and the receiver
/// refused them. Now nothing is held back, so a whole document is whole.
#[test]
fn a_whole_document_carries_only_verified_changes() {
    use by_hand::*;
    let mut homes = couple(3);
    let [a, b, c] = homes.get_disjoint_mut([0, 1, 2]).unwrap();
    let x = a.add_issue(1);
    sync(b, a, Some).unwrap();
    b.edit(|e| e.set_partner_name(Seat::B, "Alex").unwrap()); // depends on x
    deliver_until_changes(b, c, x);
    for n in 20..40 {
        c.add_issue(n); // enough that a lacks more than a third of c's document
    }
    let saved = duet_sync::proto::verify::parse_chunks(&c.doc.save()).unwrap();
    assert_eq!(
        saved.len(),
        c.doc.get_changes(&[]).len(),
        "no orphans in what c saves"
    );
    sync(a, c, Some).unwrap();
    converge(&mut homes);
}

/// Once: a device's newest change arriving before an older one, with the one
/// between them missed, made the older one "unsigned" (its attestation could
/// not reach it). Now the older one waits until the chain is complete.
#[test]
fn a_gap_in_a_chain_of_changes_waits_for_the_missing_change() {
    use by_hand::*;
    use duet_sync::proto::session::Event;
    let mut homes = couple(2);
    let [a, r] = homes.get_disjoint_mut([0, 1]).unwrap();
    let a1 = a.add_issue(1);
    let a2 = a.add_issue(2);
    let a3 = a.add_issue(3);
    let (mut sa, mut sr) = connect(a, r);
    sa.generate(&a.doc, &[]);
    sr.generate(&r.doc, &[]);
    // Exchange until a's message carries its changes (first heads, then what
    // each has beyond them); a's message carries a1, a2 and a3; r gets a3
    // first, then a1.
    let mut carrying = None;
    for _ in 0..5 {
        while let Some(m) = sa.poll_transmit() {
            if filtered(m.clone(), |h| h == a3).1 == 1 {
                carrying = Some(m);
                break;
            }
            r.receive(&mut sr, &m).unwrap();
        }
        if carrying.is_some() {
            break;
        }
        while let Some(m) = sr.poll_transmit() {
            a.receive(&mut sa, &m).unwrap();
        }
    }
    let m = carrying.expect("a sent its changes");
    let (newest, n) = filtered(m.clone(), |h| h == a3);
    assert_eq!(n, 1);
    assert!(r.receive(&mut sr, &newest).unwrap().is_empty(), "a3 waits for a2");
    let (oldest, n) = filtered(m.clone(), |h| h == a1);
    assert_eq!(n, 1);
    let events = r.receive(&mut sr, &oldest).unwrap();
    assert!(
        events.is_empty(),
        "a1 waits: only a3's signature reaches it, through a2"
    );
    assert!(r.doc.get_change_by_hash(&a1).is_none());
    let (between, n) = filtered(m, |h| h == a2);
    assert_eq!(n, 1);
    let events = r.receive(&mut sr, &between).unwrap();
    assert!(
        matches!(events.as_slice(), [Event::Applied { changes: 3, .. }]),
        "{events:?}"
    );
    for h in [a1, a2, a3] {
        assert!(r.doc.get_change_by_hash(&h).is_some());
    }
}

/// Once: changes vouched for only through a held-back change were applied
/// without storing any attestation for them, and relaying them failed. Now
/// they wait with it, and whatever is applied is relayed with its signature.
#[test]
fn changes_are_applied_only_with_a_signature_that_can_be_relayed() {
    use by_hand::*;
    let mut homes = couple(4);
    let [a, b, r, c] = homes.get_disjoint_mut([0, 1, 2, 3]).unwrap();
    let b1 = b.add_issue(2);
    let x = a.add_issue(1);
    sync(b, a, Some).unwrap(); // b holds x
    b.add_issue(3); // b2, which depends on x
    // b's message to r leaves x out: b1 is vouched for only through b2, which
    // waits for x, so b1 waits too.
    deliver_until_changes(b, r, x);
    assert!(r.doc.get_change_by_hash(&x).is_none());
    assert!(r.doc.get_change_by_hash(&b1).is_none());
    sync(r, c, Some).unwrap();
    sync(b, r, Some).unwrap();
    sync(r, c, Some).unwrap(); // r relays b's changes, with b's signature
    assert!(c.doc.get_change_by_hash(&b1).is_some());
    converge(&mut homes);
}

/// Once: the dialler's Bye was refused when the other side's heads moved on
/// while it was on its way. Now it ends the session cleanly.
#[test]
fn a_bye_crossing_a_local_edit_ends_the_session() {
    use by_hand::*;
    use duet_sync::proto::session::Event;
    let mut homes = couple(2);
    let [a, b] = homes.get_disjoint_mut([0, 1]).unwrap();
    a.add_issue(1);
    let (mut sa, mut sb) = connect(a, b);
    sa.generate(&a.doc, &[]);
    for _ in 0..10 {
        while let Some(m) = sa.poll_transmit() {
            b.receive(&mut sb, &m).unwrap();
        }
        while let Some(m) = sb.poll_transmit() {
            a.receive(&mut sa, &m).unwrap();
        }
        if sa.is_synced(&a.doc) {
            break;
        }
    }
    assert!(sa.is_synced(&a.doc));
    sa.close();
    let bye = sa.poll_transmit().unwrap();
    b.add_issue(2); // while the Bye is on its way
    let events = b.receive(&mut sb, &bye).unwrap();
    assert_eq!(events, vec![Event::PeerDone]);
}

/// The device that founded every space of these tests.
fn founder() -> duet_model::DeviceId {
    duet_model::DeviceSecret::from_bytes(&[1; 32]).device_id()
}
