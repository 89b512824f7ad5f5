//! The part of pairing both roles share: SPAKE2, the keys derived from it,
//! key confirmation, message MACs and aborts (steps 1 to 3 of the flow in the
//! module documentation of [`super`]).

use std::collections::VecDeque;

use duet_model::identity::DeviceId;
use hkdf::Hkdf;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::Zeroizing;

use super::{
    ABORT, CONFIRM, JOIN_ACCEPT, JOIN_REJECT, JOIN_REQUEST, LABEL, MAX_BODY, PAKE, PairingCode, PairingError,
};
use crate::proto::frame::{self, Frame};
use crate::proto::words;

const PAKE_LEN: usize = 33;
const TAG_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Host = 1,
    Joiner = 2,
}

/// Keys derived from one SPAKE2 exchange; wiped on drop.
pub(super) struct Keys {
    code: Zeroizing<[u8; 32]>,
    confirm: Zeroizing<[u8; 32]>,
    messages: Zeroizing<[u8; 32]>,
    phrase: String,
}

fn derive(shared: &[u8], transcript: &[u8]) -> Keys {
    let code = Hkdf::<Sha256>::new(Some(LABEL), shared);
    let bound = Hkdf::<Sha256>::new(Some(Sha256::digest(transcript).as_slice()), shared);
    let p = expand(&bound, b"duet pair v1 phrase");
    Keys {
        code: expand(&code, b"duet pair v1 code"),
        confirm: expand(&bound, b"duet pair v1 confirm"),
        messages: expand(&bound, b"duet pair v1 messages"),
        phrase: words::phrase(&p),
    }
}

fn expand(hk: &Hkdf<Sha256>, info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far under HKDF-SHA256's limit of 255 * 32: this cannot fail.
    let _ = hk.expand(info, &mut *out);
    out
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC zero-pads a short key to the block size (RFC 2104), so padding here
    // gives the same MAC through the constructor that cannot fail.
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    for part in parts {
        mac.update(part);
    }
    mac
}

fn tag(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    hmac(key, parts).finalize().into_bytes().into()
}

/// Constant-time check of a tag.
fn verify(key: &[u8; 32], parts: &[&[u8]], tag: &[u8]) -> bool {
    hmac(key, parts).verify_slice(tag).is_ok()
}

pub(super) enum Phase {
    /// Our SPAKE2 message is sent (kept to refuse it reflected back).
    Pake(Spake2<Ed25519Group>, Vec<u8>),
    /// Keys derived and our confirmation sent.
    Confirm(Keys),
    /// The peer's confirmation checked: messages may flow.
    Open(Keys),
    Over,
}

/// What a frame did to the shared part of the exchange.
pub(super) enum Step {
    Nothing,
    Confirmed,
    /// An authenticated message (its MAC checked and removed).
    Message(u8, Vec<u8>),
}

/// The part both roles share: SPAKE2, confirmation, message MACs, aborts.
pub(super) struct Handshake {
    role: Role,
    pub(super) peer: DeviceId,
    transcript: Vec<u8>,
    pub(super) phase: Phase,
    pub(super) outbox: VecDeque<Vec<u8>>,
}

impl Handshake {
    pub(super) fn new(
        role: Role,
        code: &PairingCode,
        me: DeviceId,
        peer: DeviceId,
        binding: [u8; 32],
        entropy: [u8; 32],
    ) -> Handshake {
        let (host, joiner) = match role {
            Role::Host => (me, peer),
            Role::Joiner => (peer, me),
        };
        let mut transcript = Vec::with_capacity(LABEL.len() + 96);
        for part in [LABEL, &binding, host.as_bytes(), joiner.as_bytes()] {
            transcript.extend_from_slice(part);
        }
        let password = Password::new(Zeroizing::new(code.to_string()).as_bytes());
        let (spake, msg) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
            &password,
            &Identity::new(LABEL),
            ChaCha20Rng::from_seed(entropy),
        );
        let mut hs = Handshake {
            role,
            peer,
            transcript,
            phase: Phase::Over,
            outbox: VecDeque::new(),
        };
        hs.queue(PAKE, &msg);
        hs.phase = Phase::Pake(spake, msg);
        hs
    }

    fn queue(&mut self, kind: u8, payload: &[u8]) {
        // Pairing payloads are at most a few KiB, far under frame::MAX_FRAME.
        if let Ok(bytes) = frame::encode(kind, payload) {
            self.outbox.push_back(bytes);
        }
    }

    /// Handles a frame; any error has already ended the exchange.
    pub(super) fn step(&mut self, frame: &Frame) -> Result<Step, PairingError> {
        if matches!(self.phase, Phase::Over) {
            return Err(PairingError::Finished);
        }
        if frame.kind == ABORT {
            let err = match frame.payload.as_slice() {
                [1] => PairingError::WrongCode,
                [2] => PairingError::ChannelMismatch,
                _ => PairingError::PeerFailed,
            };
            return Err(self.end(err));
        }
        self.try_step(frame).map_err(|e| self.fail(e))
    }

    fn try_step(&mut self, frame: &Frame) -> Result<Step, PairingError> {
        let payload = frame.payload.as_slice();
        match (std::mem::replace(&mut self.phase, Phase::Over), frame.kind) {
            (Phase::Pake(spake, mine), PAKE) => {
                if payload.len() != PAKE_LEN {
                    return Err(PairingError::Malformed("SPAKE2 message of the wrong length"));
                }
                if payload == mine.as_slice() {
                    return Err(PairingError::Malformed("our own SPAKE2 message reflected"));
                }
                let shared = Zeroizing::new(
                    spake
                        .finish(payload)
                        .map_err(|_| PairingError::Malformed("invalid SPAKE2 message"))?,
                );
                let keys = derive(&shared, &self.transcript);
                let role = [self.role as u8];
                let mut confirm = tag(&keys.code, &[LABEL, &role]).to_vec();
                confirm.extend(tag(&keys.confirm, &[&self.transcript, &role]));
                self.queue(CONFIRM, &confirm);
                self.phase = Phase::Confirm(keys);
                Ok(Step::Nothing)
            }
            (Phase::Confirm(keys), CONFIRM) => {
                if payload.len() != 2 * TAG_LEN {
                    return Err(PairingError::Malformed("confirmation of the wrong length"));
                }
                let (code_tag, bound_tag) = payload.split_at(TAG_LEN);
                let theirs = [match self.role {
                    Role::Host => Role::Joiner,
                    Role::Joiner => Role::Host,
                } as u8];
                if !verify(&keys.code, &[LABEL, &theirs], code_tag) {
                    return Err(PairingError::WrongCode);
                }
                if !verify(&keys.confirm, &[&self.transcript, &theirs], bound_tag) {
                    return Err(PairingError::ChannelMismatch);
                }
                self.phase = Phase::Open(keys);
                Ok(Step::Confirmed)
            }
            (Phase::Open(keys), kind @ (JOIN_REQUEST | JOIN_ACCEPT | JOIN_REJECT)) => {
                if !(TAG_LEN..=MAX_BODY + TAG_LEN).contains(&payload.len()) {
                    return Err(PairingError::Malformed("message of the wrong size"));
                }
                let (body, mac) = payload.split_at(payload.len() - TAG_LEN);
                if !verify(&keys.messages, &[&[kind], body], mac) {
                    return Err(PairingError::Malformed("message failed authentication"));
                }
                self.phase = Phase::Open(keys);
                Ok(Step::Message(kind, body.to_vec()))
            }
            (_, kind) => Err(PairingError::Unexpected(kind)),
        }
    }

    /// Ends the exchange on a local error, telling the peer why.
    pub(super) fn fail(&mut self, err: PairingError) -> PairingError {
        let reason = match err {
            PairingError::WrongCode => 1,
            PairingError::ChannelMismatch => 2,
            _ => 3,
        };
        let err = self.end(err);
        self.queue(ABORT, &[reason]);
        err
    }

    /// Ends the exchange, dropping whatever was not sent yet.
    pub(super) fn end(&mut self, err: PairingError) -> PairingError {
        self.outbox.clear();
        self.phase = Phase::Over;
        err
    }

    /// Sends an authenticated message; only once the peer is confirmed.
    pub(super) fn send(&mut self, kind: u8, body: &[u8]) {
        let Phase::Open(keys) = &self.phase else {
            return;
        };
        let mut payload = body.to_vec();
        payload.extend(tag(&keys.messages, &[&[kind], body]));
        self.queue(kind, &payload);
    }

    pub(super) fn phrase(&self) -> String {
        match &self.phase {
            Phase::Confirm(keys) | Phase::Open(keys) => keys.phrase.clone(),
            _ => String::new(),
        }
    }
}
