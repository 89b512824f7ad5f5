#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Pairing through the engine's API over loopback QUIC: the host chooses the
//! seat, records nothing until its person confirms the phrase, refuses a
//! partner's second device, and a device of another version is told to update.

use std::sync::Arc;

use duet::model::{Membership, Seat};
use duet::{Error, PairHost, WhoseDevice, pair_join};
use duet_sync::net::tls::{self, AnyDevice};
use duet_sync::proto::pairing::PairingError;

mod common;
use common::*;

/// The host's whole record, to see that it did not change.
fn record_of(home: &Shared) -> (Vec<automerge::ChangeHash>, serde_json::Value) {
    (heads(home), record(home))
}

fn members(home: &Shared) -> Vec<(duet::model::DeviceId, Seat)> {
    let m = lock(home).read(Membership::of).unwrap();
    m.members().iter().map(|m| (m.id, m.seat)).collect()
}

#[tokio::test]
async fn nothing_is_recorded_before_the_phrase_is_confirmed_and_a_no_records_nothing() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    add_issue(&sam, "Chores", "who does what");
    let (sam_before, alex_before) = (record_of(&sam), record_of(&alex));

    let (pending, joining, shown) = start_pairing(&sam, &alex, WhoseDevice::Partner);
    let pending = within("pair host", pending).await.unwrap();
    let phrase = within("the joiner's phrase", shown).await.unwrap();
    // Both screens show the phrase; the host asks about Alex's phone, as the partner.
    assert_eq!(pending.phrase(), phrase);
    assert_eq!(phrase.split(' ').count(), 4);
    assert_eq!((pending.name(), pending.device_name()), ("Alex", "phone"));
    assert_eq!((pending.seat(), pending.peer()), (Seat::B, device_of(&alex)));
    // While the person looks, neither home changed and the joiner waits.
    assert_eq!(record_of(&sam), sam_before);
    assert_eq!(record_of(&alex), alex_before);
    assert!(!joining.is_finished());

    // The person says the phrases differ.
    within("reject", pending.reject("the phrase was not confirmed"))
        .await
        .unwrap();
    let refused = within("pair join", joining).await.unwrap().unwrap_err();
    assert!(
        matches!(&refused, Error::Pairing(PairingError::Rejected(r)) if r.contains("not confirmed")),
        "{refused}"
    );
    assert_eq!(record_of(&sam), sam_before, "the host recorded the device");
    assert_eq!(record_of(&alex), alex_before, "the joiner took on the space");
    assert_eq!(members(&sam).len(), 1);
}

#[tokio::test]
async fn a_joiner_that_gives_up_while_the_host_asks_is_not_recorded() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    let before = record_of(&sam);
    let (pending, joining, shown) = start_pairing(&sam, &alex, WhoseDevice::Partner);
    let pending = within("pair host", pending).await.unwrap();
    within("the joiner's phrase", shown).await.unwrap();
    // The joining device goes away (its app closed): its connection drops.
    joining.abort();
    let _ = joining.await;
    within("the joiner's departure", pending.cancelled()).await;
    let err = within("admit", pending.admit()).await.unwrap_err();
    assert!(err.to_string().contains("gave up"), "{err}");
    assert_eq!(record_of(&sam), before);
}

#[tokio::test]
async fn the_host_chooses_the_seat_and_a_partners_second_device_pairs_only_from_the_partner() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    let sam_tablet = init(root.path(), "Sam", "tablet");
    let alex_tablet = init(root.path(), "Alex", "alex-tablet");

    let (hosted, joined) = pair(&sam, &alex, false).await;
    assert_eq!((hosted.seat, joined.seat), (Seat::B, Seat::B));
    let (_, joined) = pair(&sam, &sam_tablet, true).await;
    assert_eq!(joined.seat, Seat::A);

    // Sam's laptop may not add a device to Alex's seat now that Alex has one:
    // refused before any code is shown.
    let refused = PairHost::bind(sam.clone(), loopback(), None, WhoseDevice::Partner).unwrap_err();
    let said = refused.to_string();
    assert!(
        said.contains("Alex already has a device") && said.contains("from one of Alex's own devices"),
        "{said}"
    );
    // From Alex's own phone, Alex's tablet joins Alex's seat.
    let (_, joined) = pair(&alex, &alex_tablet, true).await;
    assert_eq!(joined.seat, Seat::B);
    let on_alex = members(&alex);
    assert!(
        on_alex.contains(&(device_of(&alex_tablet), Seat::B)),
        "{on_alex:?}"
    );
    assert_eq!(on_alex.iter().filter(|(_, s)| *s == Seat::B).count(), 2);
}

#[tokio::test]
async fn a_device_of_another_pairing_version_is_told_to_update_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    let secret = |h: &Shared| lock(h).store_mut().device_secret().unwrap();

    // A joiner that speaks version 1 only, against this host.
    let host = PairHost::bind(sam.clone(), loopback(), None, WhoseDevice::Partner).unwrap();
    let addr = host.local_addr().unwrap();
    let waiting = tokio::spawn(host.wait(STEP));
    let config = tls::client_config(&secret(&alex), Arc::new(AnyDevice), b"duet-pair/1").unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let old = endpoint.connect_with(config, addr, tls::SERVER_NAME).unwrap();
    assert!(within("old joiner", old).await.is_err());
    let err = within("host", waiting).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("update duet"), "{err}");

    // A host that speaks version 1 only, against this joiner.
    let config = tls::server_config(&secret(&sam), Arc::new(AnyDevice), &[b"duet-pair/1"]).unwrap();
    let old_host = quinn::Endpoint::server(config, loopback()).unwrap();
    let addr = old_host.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        if let Some(incoming) = old_host.accept().await {
            let _ = incoming.await;
        }
    });
    let err = within(
        "pair join",
        pair_join(alex.clone(), "7-guitar-orbit", addr, |_| {}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("update duet"), "{err}");
    let _ = serving.await;
}
