//! The `pairing_host` and `pairing_joiner` targets: each side of a pairing fed
//! the other side's frames. Input: `[flags]` ([`WRONG_CODE`], [`MISMATCH`],
//! [`REJECT`]), then the other side's byte stream; the seeds are a real
//! pairing's recorded frames ([`record_pairing`]).

use duet_sync::proto::pairing::{
    self, FRAME_TYPES, JoinAccept, JoinRequest, JoinerEvent, PairingCode, PairingError, PairingHost,
    PairingJoiner,
};

use super::fixtures::{
    BINDING, CODE, FOUNDER, HOST_ENTROPY, Input, JOINER_ENTROPY, OTHER_CODE, PARTNER, SPACE_ID, device,
    frames, own_frame,
};

/// Pairing input flag: this side uses [`OTHER_CODE`] (the recorded peer used [`CODE`]).
pub const WRONG_CODE: u8 = 1;
/// Pairing input flag: this side sees another TLS channel binding.
pub const MISMATCH: u8 = 2;
/// Pairing input flag: the host rejects the request instead of accepting it.
pub const REJECT: u8 = 4;

fn code(s: &str) -> PairingCode {
    s.parse().expect("a valid code")
}

/// The request the harness's joiner sends.
pub fn join_request() -> JoinRequest {
    JoinRequest {
        name: "Alex".into(),
        device_name: "Alex's phone".into(),
    }
}

/// The harness host's answer.
pub fn join_accept() -> JoinAccept {
    JoinAccept {
        space_id: SPACE_ID.into(),
        seat: "b".into(),
    }
}

/// The rule both ends apply to pairing texts.
fn valid_text(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= pairing::MAX_TEXT && !s.chars().any(char::is_control)
}

fn pairing_setup(flags: u8) -> (PairingCode, [u8; 32]) {
    let c = if flags & WRONG_CODE != 0 { OTHER_CODE } else { CODE };
    let mut binding = BINDING;
    if flags & MISMATCH != 0 {
        binding[0] ^= 1;
    }
    (code(c), binding)
}

fn pairing_outgoing(next: &mut dyn FnMut() -> Option<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(bytes) = next() {
        let f = own_frame(&bytes);
        assert!(FRAME_TYPES.contains(&f.kind), "pairing sent a non-pairing frame");
        out.push(bytes);
    }
    out
}

/// The pairing host fed arbitrary frames.
///
/// Input: `[flags]` ([`WRONG_CODE`], [`MISMATCH`], [`REJECT`]), then the
/// joiner's byte stream. The host is device 1 with code [`CODE`]; the seeds are
/// a real joiner's recorded frames. Checks: a join request surfaces only when
/// code and channel match (the fuzzer cannot forge the joiner's proof), only
/// once, from the TLS peer, with valid texts; accept and reject then work;
/// every error ends the attempt, and a finished host answers only `Finished`;
/// the host sends only pairing frames.
pub fn pairing_host(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let (c, binding) = pairing_setup(flags);
    let mut host = PairingHost::new(&c, device(FOUNDER), device(PARTNER), binding, HOST_ENTROPY);
    pairing_outgoing(&mut || host.poll_transmit());
    let mut requests = 0;
    for f in frames(input.rest()) {
        let was_finished = host.is_finished();
        match host.handle(&f) {
            Ok(Some(asked)) => {
                requests += 1;
                assert_eq!(requests, 1, "a second join request");
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "a join request without the code or over another channel"
                );
                assert_eq!(asked.peer, device(PARTNER));
                assert!(valid_text(&asked.request.name) && valid_text(&asked.request.device_name));
                assert_eq!(asked.phrase.split(' ').count(), 4);
                if flags & REJECT != 0 {
                    host.reject("not now").expect("reject a waiting request");
                } else {
                    let paired = host.accept(join_accept()).expect("accept a waiting request");
                    assert_eq!(paired.peer, device(PARTNER));
                    assert_eq!(paired.phrase, asked.phrase);
                }
                assert!(host.is_finished());
            }
            Ok(None) => assert!(!was_finished, "a finished host accepted a frame"),
            Err(e) => {
                assert!(host.is_finished(), "an error left the host open");
                if was_finished {
                    assert_eq!(e, PairingError::Finished);
                }
                assert!(host.accept(join_accept()).is_err());
            }
        }
        pairing_outgoing(&mut || host.poll_transmit());
    }
}

/// The pairing joiner fed arbitrary frames.
///
/// Input: `[flags]` ([`WRONG_CODE`], [`MISMATCH`]), then the host's byte
/// stream. The joiner is device 2 with code [`CODE`]; the seeds are a real
/// host's recorded frames. Checks: confirmation and pairing happen only when
/// code and channel match, in that order, once each; the pairing names the TLS
/// peer and carries valid texts; a rejection's reason is a valid text; every
/// error ends the attempt; the joiner sends only pairing frames.
pub fn pairing_joiner(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let (c, binding) = pairing_setup(flags);
    let mut joiner = PairingJoiner::new(
        &c,
        device(PARTNER),
        device(FOUNDER),
        binding,
        join_request(),
        JOINER_ENTROPY,
    )
    .expect("a valid request");
    pairing_outgoing(&mut || joiner.poll_transmit());
    let mut confirmed = None;
    let mut paired = false;
    for f in frames(input.rest()) {
        let was_finished = joiner.is_finished();
        match joiner.handle(&f) {
            Ok(Some(JoinerEvent::Confirmed { phrase })) => {
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "confirmed without the code or over another channel"
                );
                assert!(confirmed.is_none(), "confirmed twice");
                assert_eq!(phrase.split(' ').count(), 4);
                confirmed = Some(phrase);
            }
            Ok(Some(JoinerEvent::Paired(p))) => {
                assert_eq!(
                    flags & (WRONG_CODE | MISMATCH),
                    0,
                    "paired without the code or over another channel"
                );
                assert!(!paired, "paired twice");
                assert_eq!(confirmed.as_ref(), Some(&p.phrase), "paired before confirmation");
                assert_eq!(p.peer, device(FOUNDER));
                assert_eq!(p.request, join_request());
                assert!(valid_text(&p.accept.space_id) && valid_text(&p.accept.seat));
                assert!(joiner.is_finished());
                paired = true;
            }
            Ok(None) => assert!(!was_finished, "a finished joiner accepted a frame"),
            Err(e) => {
                assert!(joiner.is_finished(), "an error left the joiner open");
                if was_finished {
                    assert_eq!(e, PairingError::Finished);
                }
                if let PairingError::Rejected(reason) = &e {
                    assert!(confirmed.is_some(), "rejected before confirmation");
                    assert!(valid_text(reason));
                }
            }
        }
        pairing_outgoing(&mut || joiner.poll_transmit());
    }
}

/// A real pairing between the harness's host and joiner, recorded: the bytes
/// the host sent and the bytes the joiner sent. The host accepts unless
/// `reject`.
pub fn record_pairing(reject: bool) -> (Vec<u8>, Vec<u8>) {
    let mut host = PairingHost::new(
        &code(CODE),
        device(FOUNDER),
        device(PARTNER),
        BINDING,
        HOST_ENTROPY,
    );
    let mut joiner = PairingJoiner::new(
        &code(CODE),
        device(PARTNER),
        device(FOUNDER),
        BINDING,
        join_request(),
        JOINER_ENTROPY,
    )
    .expect("a valid request");
    let (mut from_host, mut from_joiner) = (Vec::new(), Vec::new());
    let mut moved = true;
    while moved {
        moved = false;
        while let Some(b) = host.poll_transmit() {
            moved = true;
            from_host.extend_from_slice(&b);
            for f in frames(&b) {
                let _ = joiner.handle(&f);
            }
        }
        while let Some(b) = joiner.poll_transmit() {
            moved = true;
            from_joiner.extend_from_slice(&b);
            for f in frames(&b) {
                if let Ok(Some(_)) = host.handle(&f) {
                    if reject {
                        let _ = host.reject("not now");
                    } else {
                        let _ = host.accept(join_accept());
                    }
                }
            }
        }
    }
    (from_host, from_joiner)
}
