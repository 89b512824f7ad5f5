//! Pairing, both sides against each other: matching and wrong codes, aborts,
//! attackers with and without the code, malformed frames and texts, the
//! host's answers, and codes.

use super::*;
use crate::proto::frame::{Frame, FrameDecoder};
use duet_model::identity::DeviceSecret;
use proptest::prelude::*;

const CODE: &str = "7-guitar-orbit";
/// One side's view of the connection: (my key, the peer's key, binding byte).
type View = (u8, u8, u8);
const H: View = (1, 2, 9);
const J: View = (2, 1, 9);

fn key(n: u8) -> DeviceId {
    DeviceSecret::from_bytes(&[n; 32]).device_id()
}
fn code(s: &str) -> PairingCode {
    s.parse().unwrap()
}
fn fr(kind: u8, payload: Vec<u8>) -> Frame {
    Frame { kind, payload }
}
fn request() -> JoinRequest {
    let text = |s: &str| s.to_string();
    JoinRequest {
        name: text("Sam"),
        device_name: text("Sam's phone"),
    }
}
fn accept() -> JoinAccept {
    JoinAccept {
        space_id: "space-1".into(),
        seat: "b".into(),
    }
}
fn pair(host_code: &str, joiner_code: &str, h: View, j: View) -> (PairingHost, PairingJoiner) {
    let host = PairingHost::new(&code(host_code), key(h.0), key(h.1), [h.2; 32], [11; 32]);
    let joiner = PairingJoiner::new(
        &code(joiner_code),
        key(j.0),
        key(j.1),
        [j.2; 32],
        request(),
        [22; 32],
    );
    (host, joiner.unwrap())
}
fn next(bytes: Option<Vec<u8>>) -> Option<Frame> {
    let mut d = FrameDecoder::new();
    d.push(&bytes?);
    d.next_frame().unwrap()
}
/// Swaps the PAKE messages; the joiner's confirmation is then queued.
fn swap_pake(host: &mut PairingHost, joiner: &mut PairingJoiner) {
    let jp = next(joiner.poll_transmit()).unwrap();
    joiner.handle(&next(host.poll_transmit()).unwrap()).unwrap();
    host.handle(&jp).unwrap();
}

/// Runs to mutual confirmation; the joiner's request is then queued.
fn confirm(host: &mut PairingHost, joiner: &mut PairingJoiner) -> Option<JoinerEvent> {
    swap_pake(host, joiner);
    assert_eq!(host.handle(&next(joiner.poll_transmit()).unwrap()), Ok(None));
    joiner.handle(&next(host.poll_transmit()).unwrap()).unwrap()
}

type Outcome = Result<Option<Paired>, PairingError>;
/// Delivers frames both ways until both sides are quiet; the host accepts any
/// request, and a side stops reading after its first error.
fn run(host: &mut PairingHost, joiner: &mut PairingJoiner) -> (Outcome, Outcome) {
    let (mut hr, mut jr): (Outcome, Outcome) = (Ok(None), Ok(None));
    let mut moved = true;
    while moved {
        moved = false;
        while let Some(f) = next(host.poll_transmit()) {
            moved = true;
            match joiner.handle(&f) {
                _ if jr.is_err() => {}
                Ok(Some(JoinerEvent::Paired(p))) => jr = Ok(Some(*p)),
                Ok(_) => {}
                Err(e) => jr = Err(e),
            }
        }
        while let Some(f) = next(joiner.poll_transmit()) {
            moved = true;
            match host.handle(&f) {
                _ if hr.is_err() => {}
                Ok(Some(asked)) => {
                    hr = host
                        .accept(accept())
                        .map(|p| Some(p).filter(|_| asked.request == request()))
                }
                Ok(None) => {}
                Err(e) => hr = Err(e),
            }
        }
    }
    (hr, jr)
}

#[test]
fn matching_codes_pair_and_phrases_agree() {
    let (mut host, mut joiner) = pair(CODE, "7 Guitar  ORBIT", H, J);
    let (h, j) = run(&mut host, &mut joiner);
    let (h, j) = (h.unwrap().unwrap(), j.unwrap().unwrap());
    assert_eq!(h.phrase, j.phrase);
    assert_eq!(h.phrase.split(' ').count(), 4);
    assert_eq!((h.peer, j.peer), (key(2), key(1)));
    assert_eq!((&h.request, &h.accept), (&j.request, &j.accept));
    assert!(host.is_finished() && joiner.is_finished());
    assert_eq!(host.handle(&fr(PAKE, vec![0; 33])), Err(PairingError::Finished));
    // Another TLS session (another binding) gets another phrase.
    let (mut host, mut joiner) = pair(CODE, CODE, (1, 2, 8), (2, 1, 8));
    assert_ne!(run(&mut host, &mut joiner).0.unwrap().unwrap().phrase, h.phrase);
    // The same inputs give the same bytes: the core is deterministic.
    assert_eq!(
        pair(CODE, CODE, H, J).0.poll_transmit(),
        pair(CODE, CODE, H, J).0.poll_transmit()
    );
}

#[test]
fn wrong_code_fails_on_both_sides_and_spends_the_host() {
    let (mut host, mut joiner) = pair(CODE, "8-guitar-orbit", H, J);
    assert_eq!(
        run(&mut host, &mut joiner),
        (Err(PairingError::WrongCode), Err(PairingError::WrongCode))
    );
    // The code is spent: a fresh joiner with the right code gets nowhere.
    let first = next(pair(CODE, CODE, H, J).1.poll_transmit()).unwrap();
    assert_eq!(host.handle(&first), Err(PairingError::Finished));
}

#[test]
fn an_abort_makes_the_other_side_report_the_same_error() {
    let (mut host, mut joiner) = pair(CODE, "9-guitar-orbit", H, J);
    swap_pake(&mut host, &mut joiner);
    let confirm = next(joiner.poll_transmit()).unwrap();
    assert_eq!(host.handle(&confirm), Err(PairingError::WrongCode));
    // Only the abort goes out; the joiner never sees the host's confirmation.
    let abort = next(host.poll_transmit()).unwrap();
    assert_eq!((abort.kind, host.poll_transmit()), (ABORT, None));
    assert_eq!(joiner.handle(&abort), Err(PairingError::WrongCode));
    assert_eq!(joiner.poll_transmit(), None, "an abort is not answered");
}

#[test]
fn a_tls_terminating_attacker_without_the_code_fails() {
    // Host 1 and joiner 2 each talk TLS to attacker 3, who guesses a code.
    let (mut host, mut fake_joiner) = pair(CODE, "7-guitar-orange", (1, 3, 5), (3, 1, 5));
    assert_eq!(run(&mut host, &mut fake_joiner).0, Err(PairingError::WrongCode));
    let (mut fake_host, mut joiner) = pair("4-abandon-zoo", CODE, (3, 2, 6), (2, 3, 6));
    assert_eq!(run(&mut fake_host, &mut joiner).1, Err(PairingError::WrongCode));
}

#[test]
fn an_attacker_relaying_between_two_sessions_fails() {
    // The same code, but each side sees the attacker's key and its own session.
    let (mut host, mut joiner) = pair(CODE, CODE, (1, 3, 5), (2, 4, 6));
    let mismatch = Err(PairingError::ChannelMismatch);
    assert_eq!(run(&mut host, &mut joiner), (mismatch.clone(), mismatch.clone()));
    // A substituted key alone is caught too, and so is a binding alone.
    let (mut host, mut joiner) = pair(CODE, CODE, (1, 2, 5), (2, 3, 5));
    assert_eq!(run(&mut host, &mut joiner).0, mismatch);
    let (mut host, mut joiner) = pair(CODE, CODE, (1, 2, 5), (2, 1, 6));
    assert_eq!(run(&mut host, &mut joiner).1, mismatch);
}

#[test]
fn truncated_garbage_and_oversized_frames_are_refused() {
    let bad = |f: Frame| {
        let mut host = pair(CODE, CODE, H, J).0;
        host.poll_transmit();
        let err = host.handle(&f).unwrap_err();
        assert_eq!(next(host.poll_transmit()).unwrap().kind, ABORT);
        assert_eq!(host.handle(&f), Err(PairingError::Finished));
        err
    };
    let malformed = |e| matches!(e, PairingError::Malformed(_));
    assert!(malformed(bad(fr(PAKE, vec![b'S'; 32]))));
    assert!(malformed(bad(fr(PAKE, vec![0xff; 33]))));
    assert!(malformed(bad(fr(PAKE, vec![0; 1 << 20]))));
    let mut host = pair(CODE, CODE, H, J).0;
    let mine = next(host.poll_transmit()).unwrap();
    assert!(malformed(host.handle(&mine).unwrap_err()), "a reflected message");
    assert_eq!(bad(fr(CONFIRM, vec![0; 64])), PairingError::Unexpected(CONFIRM));
    assert_eq!(
        bad(fr(JOIN_REQUEST, vec![0; 64])),
        PairingError::Unexpected(JOIN_REQUEST)
    );
    assert_eq!(bad(fr(0x99, vec![])), PairingError::Unexpected(0x99));
    let mut host = pair(CODE, CODE, H, J).0;
    assert_eq!(host.handle(&fr(ABORT, vec![7, 7])), Err(PairingError::PeerFailed));
    // After confirmation: a short, an oversized and a forged message.
    for payload in [vec![1; 31], vec![0; MAX_BODY + 33], vec![0; 40]] {
        let (mut host, mut joiner) = pair(CODE, CODE, H, J);
        confirm(&mut host, &mut joiner);
        assert!(malformed(host.handle(&fr(JOIN_REQUEST, payload)).unwrap_err()));
    }
}

#[test]
fn invalid_texts_are_refused_on_both_sides() {
    let long = JoinRequest {
        name: "x".repeat(MAX_TEXT + 1),
        ..request()
    };
    let new = |r| PairingJoiner::new(&code(CODE), key(2), key(1), [0; 32], r, [0; 32]).err();
    assert_eq!(new(long.clone()), Some(PairingError::Invalid("name")));
    let escape = JoinRequest {
        device_name: "\u{1b}[2J".into(),
        ..request()
    };
    assert_eq!(new(escape), Some(PairingError::Invalid("device name")));
    // A joiner that sends one anyway (skipping its own check) is stopped by the host.
    let (mut host, mut joiner) = pair(CODE, CODE, H, J);
    confirm(&mut host, &mut joiner);
    joiner.poll_transmit();
    joiner
        .hs
        .send(JOIN_REQUEST, &postcard::to_allocvec(&long).unwrap());
    assert_eq!(
        host.handle(&next(joiner.poll_transmit()).unwrap()),
        Err(PairingError::Invalid("name"))
    );
    assert_eq!(
        joiner.handle(&next(host.poll_transmit()).unwrap()),
        Err(PairingError::PeerFailed)
    );
}

#[test]
fn the_host_can_reject_and_checks_its_answer() {
    let (mut host, mut joiner) = pair(CODE, CODE, H, J);
    assert_eq!(host.reject("no"), Err(PairingError::NotWaiting));
    let confirmed = confirm(&mut host, &mut joiner);
    let asked = host
        .handle(&next(joiner.poll_transmit()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(Some(JoinerEvent::Confirmed { phrase: asked.phrase }), confirmed);
    let bad = JoinAccept {
        seat: String::new(),
        ..accept()
    };
    assert_eq!(host.accept(bad), Err(PairingError::Invalid("seat")));
    host.reject("not now\n").unwrap();
    assert_eq!(host.accept(accept()), Err(PairingError::NotWaiting));
    let answer = next(host.poll_transmit()).unwrap();
    assert_eq!(
        joiner.handle(&answer),
        Err(PairingError::Rejected("not now".into()))
    );
}

#[test]
fn the_host_sends_nothing_until_its_person_answers_and_its_seat_decides() {
    let (mut host, mut joiner) = pair(CODE, CODE, H, J);
    let Some(JoinerEvent::Confirmed { phrase }) = confirm(&mut host, &mut joiner) else {
        panic!("the joiner did not confirm the host");
    };
    let asked = host
        .handle(&next(joiner.poll_transmit()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(asked.phrase, phrase, "both screens show the same phrase");
    // While the person compares, nothing goes to the joiner and it waits.
    assert_eq!(host.poll_transmit(), None);
    assert!(!host.is_finished() && !joiner.is_finished());
    // The host's choice of seat is what the joiner gets.
    let mine = JoinAccept {
        seat: "a".into(),
        ..accept()
    };
    let granted = host.accept(mine.clone()).unwrap();
    match joiner.handle(&next(host.poll_transmit()).unwrap()) {
        Ok(Some(JoinerEvent::Paired(p))) => assert_eq!((p.accept, granted.accept), (mine.clone(), mine)),
        other => panic!("not paired: {other:?}"),
    }
}

#[test]
fn a_version_1_request_asking_for_the_hosts_seat_is_refused() {
    // Version 1 put `same_person: true` first; a joiner sending that shape
    // (or any other seat wish) is not understood, let alone granted.
    let (mut host, mut joiner) = pair(CODE, CODE, H, J);
    confirm(&mut host, &mut joiner);
    joiner.poll_transmit();
    let v1 = postcard::to_allocvec(&(true, "Sam", "Sam's phone")).unwrap();
    joiner.hs.send(JOIN_REQUEST, &v1);
    assert!(
        host.handle(&next(joiner.poll_transmit()).unwrap()).is_err(),
        "a request naming a seat was taken"
    );
    assert_eq!(host.accept(accept()), Err(PairingError::NotWaiting));
    assert_eq!(next(host.poll_transmit()).unwrap().kind, ABORT);
}

#[test]
fn a_joiner_that_gives_up_while_the_host_decides_cannot_be_accepted() {
    let (mut host, mut joiner) = pair(CODE, CODE, H, J);
    confirm(&mut host, &mut joiner);
    assert!(
        host.handle(&next(joiner.poll_transmit()).unwrap())
            .unwrap()
            .is_some()
    );
    assert_eq!(host.handle(&fr(ABORT, vec![3])), Err(PairingError::PeerFailed));
    assert_eq!(host.accept(accept()), Err(PairingError::NotWaiting));
    assert_eq!(host.poll_transmit(), None);
}

#[test]
fn codes_round_trip_and_bad_codes_are_rejected() {
    assert_eq!(PairingCode::from_random([0; 4]).to_string(), "1-abandon-abandon");
    assert_eq!(PairingCode::from_random([0xff; 4]).to_string(), "1024-zoo-zoo");
    let messy = PairingCode::from_random([1, 2, 3, 4])
        .to_string()
        .to_uppercase()
        .replace('-', " - ");
    assert_eq!(messy.parse(), Ok(PairingCode::from_random([1, 2, 3, 4])));
    assert_eq!(code(" 7 -- guit  orbi "), code(CODE), "unique prefixes");
    assert_eq!(format!("{:?}", code(CODE)), "PairingCode(redacted)");
    let bad = [
        "",
        "7",
        "7-guitar",
        "7-guitar-orbit-x",
        "guitar-7-orbit",
        "0-zoo-zoo",
        "1025-zoo-zoo",
    ];
    for bad in bad.into_iter().chain(["+7-zoo-zoo", "7-zoo-gui", "7.zoo.zoo"]) {
        assert!(bad.parse::<PairingCode>().is_err(), "{bad}");
    }
    assert_eq!(
        "7-qqqq-zoo".parse::<PairingCode>(),
        Err(CodeError::Word("qqqq".into()))
    );
    assert_eq!(
        "01234-zoo-zoo".parse::<PairingCode>(),
        Err(CodeError::Number("01234".into()))
    );
    assert!("7-zoo-zoo ".repeat(30).parse::<PairingCode>().is_err());
}

proptest! {
    #[test]
    fn codes_from_any_bytes_round_trip(bytes in any::<[u8; 4]>()) {
        let c = PairingCode::from_random(bytes);
        prop_assert_eq!(c.to_string().parse::<PairingCode>(), Ok(c));
    }

    #[test]
    fn random_frames_never_panic(
        typed in proptest::collection::vec((0x1eu8..0x31, proptest::collection::vec(any::<u8>(), 0..80)), 0..8),
        raw in proptest::collection::vec(any::<u8>(), 0..200),
        confirmed in any::<bool>(),
    ) {
        let (mut host, mut joiner) = pair(CODE, CODE, H, J);
        if confirmed {
            swap_pake(&mut host, &mut joiner);
        }
        let mut d = FrameDecoder::new();
        d.push(&raw);
        let mut all: Vec<Frame> = typed.into_iter().map(|(kind, payload)| fr(kind, payload)).collect();
        while let Ok(Some(f)) = d.next_frame() {
            all.push(f);
        }
        for f in &all {
            if host.handle(f).is_err() { prop_assert!(host.is_finished()); }
            if joiner.handle(f).is_err() { prop_assert!(joiner.is_finished()); }
            while host.poll_transmit().is_some() || joiner.poll_transmit().is_some() {}
        }
    }
}
