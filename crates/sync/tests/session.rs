//! The sans-IO session driven in memory: two or three homes, no network,
//! deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use automerge::{Automerge, ReadDoc};
use duet_model::{
    Attestation, DeviceId, DeviceSecret, Editor, Founder, ItemId, NewIssue, Seat, issues, space,
};
use duet_sync::proto::frame::{Frame, FrameDecoder};
use duet_sync::proto::session::{Event, Session, SyncError};

/// A home as the store keeps it: a document and the newest attestation per device.
struct Home {
    key: DeviceSecret,
    seat: Seat,
    doc: Automerge,
    atts: HashMap<DeviceId, (u64, Attestation)>,
}

impl Home {
    fn id(&self) -> DeviceId {
        self.key.device_id()
    }

    fn edit(&mut self, f: impl FnOnce(&mut Editor<'_>)) {
        let before = self.doc.get_heads();
        f(&mut Editor::new(&mut self.doc, self.seat, 0));
        let tip = self
            .doc
            .get_changes(&before)
            .into_iter()
            .max_by_key(|c| c.seq())
            .unwrap();
        self.atts
            .insert(self.id(), (tip.seq(), self.key.attest(&tip.hash())));
    }

    fn add_issue(&mut self, n: u8, title: &str) {
        let new = NewIssue {
            title: title.into(),
            ..Default::default()
        };
        self.edit(|e| e.add_issue(&ItemId::from_random([n; 8]), &new).unwrap());
    }

    fn attestations(&self) -> Vec<Attestation> {
        self.atts.values().map(|(_, a)| *a).collect()
    }

    fn keep(&mut self, atts: Vec<Attestation>) {
        for a in atts {
            let seq = self.doc.get_change_by_hash(&a.hash).unwrap().seq();
            if self.atts.get(&a.device).is_none_or(|(s, _)| *s < seq) {
                self.atts.insert(a.device, (seq, a));
            }
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

/// A founded space (device 1, seat a) plus devices `others` (key byte, seat),
/// each starting from a copy of the founder's document.
fn space_of(others: &[(u8, Seat)]) -> Vec<Home> {
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
        seat: Seat::A,
        doc,
        atts: HashMap::new(),
    };
    // Sign the founding change, as the store does for every write.
    let founding = first.doc.get_heads()[0];
    first.atts.insert(first.id(), (1, first.key.attest(&founding)));
    for (n, seat) in others {
        let id = DeviceSecret::from_bytes(&[*n; 32]).device_id();
        first.edit(|e| e.add_device(id, *seat, "device").unwrap());
    }
    let mut homes = Vec::new();
    for (n, seat) in others {
        let key = DeviceSecret::from_bytes(&[*n; 32]);
        let doc = first.doc.fork().with_actor(key.device_id().actor());
        homes.push(Home {
            key,
            seat: *seat,
            doc,
            atts: first.atts.clone(),
        });
    }
    homes.insert(0, first);
    homes
}

/// Runs a session between `a` (dialling) and `b` until both are synced, or one
/// fails. Frames pass through a decoder in small pieces.
fn sync(a: &mut Home, b: &mut Home) -> Result<(), SyncError> {
    let sa = Session::new(b.id(), "5eed", founder(), None, 0);
    sync_from(a, b, sa)
}

/// [`sync`] with `a`'s session as given (a new device's, joining).
fn sync_from(a: &mut Home, b: &mut Home, mut sa: Session) -> Result<(), SyncError> {
    let mut sb = Session::new(a.id(), "5eed", founder(), None, 0);
    let (mut da, mut db) = (FrameDecoder::new(), FrameDecoder::new());
    for _ in 0..100 {
        let mut moved = false;
        while let Some(bytes) = sa.poll_transmit() {
            moved = true;
            for piece in bytes.chunks(7) {
                db.push(piece);
            }
        }
        while let Some(bytes) = sb.poll_transmit() {
            moved = true;
            for piece in bytes.chunks(7) {
                da.push(piece);
            }
        }
        while let Some(f) = db.next_frame().unwrap() {
            deliver(&mut sb, b, &f)?;
        }
        while let Some(f) = da.next_frame().unwrap() {
            deliver(&mut sa, a, &f)?;
        }
        if sa.is_synced(&a.doc) && sb.is_synced(&b.doc) {
            sa.close();
            return Ok(());
        }
        if !moved && sa.is_closed() {
            return Ok(());
        }
    }
    panic!("no convergence in 100 rounds");
}

/// What a driver does with one frame: apply on a copy (the store's write
/// transaction), keep it only if the session accepted it.
fn deliver(s: &mut Session, home: &mut Home, f: &Frame) -> Result<Vec<Event>, SyncError> {
    let mut working = home.doc.fork().with_actor(home.id().actor());
    match s.handle(f, &mut working, 0) {
        Ok(events) => {
            home.doc = working;
            for e in &events {
                if let Event::Applied { attestations, .. } = e {
                    home.keep(attestations.clone());
                }
            }
            let atts = home.attestations();
            s.generate(&home.doc, &atts);
            Ok(events)
        }
        Err(e) => Err(e),
    }
}

#[test]
fn two_partners_converge_with_every_change_verified() {
    let mut homes = space_of(&[(2, Seat::B)]);
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.add_issue(1, "Dishes");
    b.add_issue(2, "Money");
    b.add_issue(3, "Holidays");
    sync(a, b).unwrap();
    assert_eq!(a.titles(), ["Dishes", "Holidays", "Money"]);
    assert_eq!(a.titles(), b.titles());
    assert_eq!(a.doc.get_heads(), b.doc.get_heads());
    // Both now hold a verified attestation for each other's newest change.
    assert!(a.atts.contains_key(&b.id()));
    assert!(b.atts.contains_key(&a.id()));
    // A second sync moves nothing and still ends cleanly.
    sync(a, b).unwrap();
}

#[test]
fn three_devices_converge_transitively() {
    let mut homes = space_of(&[(2, Seat::A), (3, Seat::B)]);
    homes[0].add_issue(1, "from the laptop");
    homes[1].add_issue(2, "from the phone");
    homes[2].add_issue(3, "from the partner");
    let (left, right) = homes.split_at_mut(2);
    sync(&mut left[0], &mut right[0]).unwrap(); // laptop <-> partner
    let (l0, l1) = left.split_at_mut(1);
    sync(&mut l1[0], &mut l0[0]).unwrap(); // phone <-> laptop: learns the partner's edit through it
    assert_eq!(
        homes[1].titles(),
        ["from the laptop", "from the partner", "from the phone"]
    );
}

#[test]
fn a_forged_change_is_refused_and_nothing_is_applied() {
    let mut homes = space_of(&[(2, Seat::B)]);
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.add_issue(2, "Money");
    // Device b's attestation is replaced by one b never made (signed by a).
    let tip = b.atts[&b.id()].1.hash;
    let forged = a.key.attest(&tip);
    b.atts.insert(b.id(), (99, forged));
    let before = a.doc.get_heads();
    let err = sync(a, b).unwrap_err();
    assert!(err.to_string().contains("not signed"), "{err}");
    assert_eq!(a.doc.get_heads(), before, "nothing applied");
}

#[test]
fn a_tampered_signature_is_refused() {
    let mut homes = space_of(&[(2, Seat::B)]);
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.add_issue(2, "Money");
    let mut att = b.atts[&b.id()].1;
    att.signature[3] ^= 1;
    b.atts.insert(b.id(), (99, att));
    let err = sync(a, b).unwrap_err();
    assert!(matches!(err, SyncError::Refused(_)), "{err}");
    assert_eq!(a.titles(), Vec::<String>::new());
}

#[test]
fn a_revoked_device_is_refused() {
    let mut homes = space_of(&[(2, Seat::B), (3, Seat::B)]);
    let lost = homes[2].id();
    homes[0].edit(|e| {
        e.revoke_device(lost).unwrap();
    });
    // The lost phone writes after the revocation, then tries to sync with the laptop.
    homes[2].add_issue(9, "written by a thief");
    let (left, right) = homes.split_at_mut(2);
    let err = sync(&mut right[0], &mut left[0]).unwrap_err();
    assert!(matches!(err, SyncError::NotAMember(_)), "{err}");
    // The partner's other device learns of the revocation and refuses it too.
    let (l0, l1) = left.split_at_mut(1);
    sync(&mut l0[0], &mut l1[0]).unwrap();
    let err = sync(&mut right[0], &mut l1[0]).unwrap_err();
    assert!(matches!(err, SyncError::NotAMember(_)), "{err}");
    assert!(!homes[1].titles().contains(&"written by a thief".to_string()));
}

#[test]
fn a_different_space_is_refused() {
    let mut homes = space_of(&[(2, Seat::B)]);
    let (a, b) = homes.split_at_mut(1);
    let mut sa = Session::new(b[0].id(), "5eed", founder(), None, 0);
    let mut sb = Session::new(a[0].id(), "other", founder(), None, 0);
    let hello = sb.poll_transmit().unwrap();
    let mut d = FrameDecoder::new();
    d.push(&hello);
    let f = d.next_frame().unwrap().unwrap();
    let err = sa.handle(&f, &mut a[0].doc, 0).unwrap_err();
    assert_eq!(err, SyncError::OtherSpace);
    // The refusal is sent back (after our own Hello) so the other side can say why.
    let _hello = sa.poll_transmit().unwrap();
    let failure = sa.poll_transmit().unwrap();
    let mut d = FrameDecoder::new();
    d.push(&failure);
    let f = d.next_frame().unwrap().unwrap();
    let err = sb.handle(&f, &mut b[0].doc, 0).unwrap_err();
    assert!(matches!(err, SyncError::PeerFailed(_)), "{err}");
}

#[test]
fn a_quiet_peer_times_out() {
    let homes = space_of(&[(2, Seat::B)]);
    let mut s = Session::new(homes[1].id(), "5eed", founder(), None, 0);
    assert!(s.handle_timeout(1_000).is_ok());
    assert_eq!(s.handle_timeout(60_000), Err(SyncError::Timeout));
    assert!(s.is_closed());
}

#[test]
fn garbage_frames_end_the_session_without_panicking() {
    let mut homes = space_of(&[(2, Seat::B)]);
    let mut s = Session::new(homes[1].id(), "5eed", founder(), None, 0);
    let f = Frame {
        kind: 0x02,
        payload: vec![0xff; 40],
    };
    assert!(s.handle(&f, &mut homes[0].doc, 0).is_err());
    assert!(s.is_closed());
}

/// A device that holds nothing gets the whole document once, even though
/// automerge would send it again with every message it answers before the
/// first copy lands.
#[test]
fn a_whole_document_with_an_unsigned_change_is_refused_for_a_new_device() {
    let mut homes = space_of(&[(2, Seat::B), (3, Seat::B)]);
    homes[2].add_issue(3, "written on the third device");
    // The founder takes the third device's change without its signature.
    let third = homes[2].doc.clone();
    homes[0].doc.merge(&mut third.clone()).unwrap();
    homes[0].add_issue(1, "signed by the founder");
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.doc = Automerge::new().with_actor(b.id().actor());
    let joining = Session::joining(a.id(), "5eed", 0);
    let err = sync_from(b, a, joining).unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Refused(duet_sync::proto::verify::VerifyError::Unsigned(_))
        ),
        "{err}"
    );
    assert!(b.doc.get_heads().is_empty(), "nothing was applied");
}

#[test]
fn a_new_device_gets_the_whole_document_once() {
    let mut homes = space_of(&[(2, Seat::B)]);
    for n in 0..150u8 {
        homes[0].add_issue(
            n,
            &format!("issue number {n} with a title long enough to weigh something"),
        );
    }
    // Many small changes: what a filter of every change would weigh.
    for round in 0..10u8 {
        for n in 0..150u8 {
            let status = if round % 2 == 0 {
                duet_model::IssueStatus::Discussing
            } else {
                duet_model::IssueStatus::Open
            };
            homes[0].edit(|e| e.set_status(&ItemId::from_random([n; 8]), status).unwrap());
        }
    }
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.doc = Automerge::new().with_actor(b.id().actor());
    let mut sa = Session::new(b.id(), "5eed", founder(), None, 0);
    let mut sb = Session::joining(a.id(), "5eed", 0);
    // Every frame is delivered only after both sides queued what they had, so
    // that b's second message crosses a's first copy of the document.
    let mut a_sent = 0;
    let mut synced = false;
    let mut b_events = Vec::new();
    for _ in 0..100 {
        let out_a: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let out_b: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        a_sent += out_a.iter().map(Vec::len).sum::<usize>();
        for bytes in out_b {
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            let f = d.next_frame().unwrap().unwrap();
            deliver(&mut sa, a, &f).unwrap();
        }
        for bytes in out_a {
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            let f = d.next_frame().unwrap().unwrap();
            b_events.extend(deliver(&mut sb, b, &f).unwrap());
        }
        if sa.is_synced(&a.doc) && sb.is_synced(&b.doc) {
            synced = true;
            break;
        }
    }
    assert!(synced, "both sides know they hold the same heads");
    assert_eq!(a.doc.get_heads(), b.doc.get_heads());
    // Taken whole: one event, the document's bytes for the store to keep as
    // they came, and no change rebuilt.
    let [
        Event::Applied {
            changes: taken,
            applied,
            document: Some(bytes),
            ..
        },
    ] = b_events.as_slice()
    else {
        panic!("expected one whole document, got {b_events:?}");
    };
    assert!(applied.is_empty());
    assert_eq!(*taken, a.doc.get_changes(&[]).len());
    assert_eq!(Automerge::load(bytes).unwrap().get_heads(), a.doc.get_heads());
    // The document once, plus frames, heads and a signature or two: no second
    // copy, and no filter of every change (1,650 changes would add ~2 KB).
    let whole = a.doc.save().len();
    let changes = a.doc.get_changes(&[]).len();
    assert!(changes > 1_600);
    assert!(
        a_sent < whole + 1_024,
        "a sent {a_sent} bytes for a {whole}-byte document of {changes} changes"
    );
}

/// A new device may have two sessions of its join open at once (it dialled
/// its host and the host dialled it): once one has brought the history, the
/// other takes only what is new, and pins the founder from the history the
/// device now holds. (Found by the simulator's joining devices.)
#[test]
fn a_second_session_of_a_join_takes_only_what_is_new() {
    let mut homes = space_of(&[(2, Seat::B)]);
    homes[0].add_issue(1, "before the join");
    let (a, b) = homes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.doc = Automerge::new().with_actor(b.id().actor());
    sync_from(b, a, Session::joining(a.id(), "5eed", 0)).unwrap();
    assert_eq!(b.titles(), ["before the join"]);
    a.add_issue(2, "after the join");
    sync_from(b, a, Session::joining(a.id(), "5eed", 0)).unwrap();
    assert_eq!(b.titles(), ["after the join", "before the join"]);
    assert_eq!(a.doc.get_heads(), b.doc.get_heads());
}

/// The device that founded every space of these tests.
fn founder() -> duet_model::DeviceId {
    duet_model::DeviceSecret::from_bytes(&[1; 32]).device_id()
}
