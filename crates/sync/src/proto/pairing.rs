//! Pairing: how a new device joins a couple's space with a short code.
//!
//! The two devices are already connected over QUIC, each presenting its device
//! key in TLS. Neither knows the other's key yet, so TLS accepted any key: this
//! exchange is what authenticates. The host shows a [`PairingCode`]; the joiner's
//! person types it in. Both sides then know the code, their own key, the key the
//! peer presented in TLS, and a 32-byte channel binding exported from the TLS
//! session (quinn's `export_keying_material`).
//!
//! # Messages
//!
//! | type   | name           | sender | payload                                     |
//! |--------|----------------|--------|---------------------------------------------|
//! | `0x20` | [`PAKE`]         | both   | the SPAKE2 symmetric message, exactly 33 bytes |
//! | `0x21` | [`CONFIRM`]      | both   | code tag (32) and transcript tag (32)       |
//! | `0x22` | [`JOIN_REQUEST`] | joiner | postcard [`JoinRequest`], then a 32-byte MAC |
//! | `0x23` | [`JOIN_ACCEPT`]  | host   | postcard [`JoinAccept`], then a 32-byte MAC  |
//! | `0x24` | [`JOIN_REJECT`]  | host   | postcard [`JoinReject`], then a 32-byte MAC  |
//! | `0x2f` | [`ABORT`]        | either | one reason byte: 1 wrong code, 2 channel mismatch, 3 protocol error |
//!
//! Types `0x20..=0x2f` ([`FRAME_TYPES`]) belong to pairing; the rest are unused.
//!
//! # Flow
//!
//! 1. Each side starts SPAKE2 (symmetric, Ed25519 group) with the code as the
//!    password and [`LABEL`] as the identity, and sends `PAKE` at once.
//! 2. On the peer's `PAKE` each side derives keys with HKDF-SHA256 from the
//!    SPAKE2 key: a *code key* (salt [`LABEL`]) and, salted with
//!    SHA-256(transcript), a *confirm key*, a *message key* and the phrase, where
//!    transcript = [`LABEL`] ‖ binding ‖ host key ‖ joiner key. It sends `CONFIRM`:
//!    HMAC(code key, [`LABEL`] ‖ role) ‖ HMAC(confirm key, transcript ‖ role).
//! 3. Each checks the peer's `CONFIRM` (with the peer's role byte, so a reflected
//!    tag fails). A bad code tag is [`PairingError::WrongCode`]. A good code tag
//!    with a bad transcript tag means both typed the same code but see different
//!    TLS sessions or keys: someone relays between two connections, and that is
//!    [`PairingError::ChannelMismatch`]. Whoever detects a failure sends `ABORT`,
//!    so the other side reports the same error.
//! 4. Only after confirmation the joiner sends `JOIN_REQUEST` (its person's name
//!    and its device's name: it asks for no seat) and shows the phrase, four
//!    words from the confirmed key and transcript. The host's caller shows the
//!    same phrase and asks its person whether the joiner's screen shows it; only
//!    on yes does it call [`PairingHost::accept`] (with the seat the *host*
//!    chose), else [`PairingHost::reject`]. The answers ride the TLS channel
//!    just confirmed and also carry an HMAC under the message key.
//!
//! The comparison is what stops a stranger who guessed the code (one guess in
//! 2^32) and what the host's person sees before anything is recorded: the
//! phrase is an input the caller must get from a person, so the machine has
//! no "accept at once" path of its own.
//!
//! Version 2 (ALPN `duet-pair/2`, label `duet pair v2`) dropped the joiner's
//! `same_person` field: in version 1 the joiner chose its seat and the host
//! admitted before anyone compared the phrase.
//!
//! # Driving it
//!
//! Sans-IO, like quinn-proto: feed each received [`Frame`] to `handle`, then send
//! every buffer `poll_transmit` returns, until it returns `None`. There is no
//! clock: the driver owns timeouts. Randomness comes in as bytes (the code's 4,
//! SPAKE2's 32), so a run is reproducible from its inputs. Every error is final:
//! the machine answers every later frame with [`PairingError::Finished`], and any
//! `ABORT` to send is already queued. A host serves one code for one attempt: after
//! a failure the code is spent, and trying again takes a new code and a new
//! [`PairingHost`]. The host needs no other rate limit: one guess in 2^32.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use duet_model::identity::DeviceId;
use hkdf::Hkdf;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use thiserror::Error;
use zeroize::Zeroizing;

use super::frame::{self, Frame};
use super::words;
pub use super::words::{CodeError, PairingCode};

/// The protocol label: the SPAKE2 identity and the start of every transcript.
pub const LABEL: &[u8] = b"duet pair v2";
/// The frame types reserved for pairing.
pub const FRAME_TYPES: RangeInclusive<u8> = 0x20..=0x2f;
/// Frame type: a SPAKE2 message.
pub const PAKE: u8 = 0x20;
/// Frame type: key confirmation tags.
pub const CONFIRM: u8 = 0x21;
/// Frame type: the joiner's [`JoinRequest`].
pub const JOIN_REQUEST: u8 = 0x22;
/// Frame type: the host's [`JoinAccept`].
pub const JOIN_ACCEPT: u8 = 0x23;
/// Frame type: the host's [`JoinReject`].
pub const JOIN_REJECT: u8 = 0x24;
/// Frame type: the sender gave up; one reason byte.
pub const ABORT: u8 = 0x2f;
/// The longest name, device name, space id, seat or reason, in characters.
pub const MAX_TEXT: usize = 100;

const PAKE_LEN: usize = 33;
const TAG_LEN: usize = 32;
/// Enough for any message whose texts are within [`MAX_TEXT`] (4 bytes a char).
const MAX_BODY: usize = 1024;

/// Why pairing failed. Every variant ends the attempt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PairingError {
    /// The two devices used different codes (or a stranger guessed).
    #[error("the pairing code did not match: check it and start again with a new code")]
    WrongCode,
    /// Same code, different TLS sessions or keys: the connection is intercepted.
    #[error(
        "the code matched but the connection did not: something between the devices is \
         intercepting it; do not pair over this network"
    )]
    ChannelMismatch,
    /// The host declined the request, with its reason.
    #[error("the other device declined: {0}")]
    Rejected(String),
    /// The peer stopped after an error of its own.
    #[error("the other device stopped pairing after a protocol error")]
    PeerFailed,
    /// A frame whose payload is not what its type requires.
    #[error("malformed pairing frame: {0}")]
    Malformed(&'static str),
    /// A frame of a type not expected at this point.
    #[error("unexpected frame type {0:#04x} at this point of pairing")]
    Unexpected(u8),
    /// A text field empty, too long or with control characters.
    #[error("{0} must be 1 to {MAX_TEXT} printable characters")]
    Invalid(&'static str),
    /// `accept` or `reject` with no join request waiting (none came, it was answered, or the attempt ended).
    #[error("no join request is waiting for an answer")]
    NotWaiting,
    /// The attempt is over (paired or failed); a new one needs a new code.
    #[error("this pairing attempt is over; start again with a new code")]
    Finished,
}

/// Who the joiner says it is, sent only after key confirmation. It names no
/// seat: the host decides whose device this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The person's name (used for a partner joining for the first time).
    pub name: String,
    /// This device's name, like "Sam's phone".
    pub device_name: String,
}

/// The host's yes, sent once its person confirmed the phrase: which space to
/// join, in which seat (the host's choice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccept {
    /// The space's id.
    pub space_id: String,
    /// The seat the joiner takes.
    pub seat: String,
}

/// The host's no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReject {
    /// Why, for the joiner's person.
    pub reason: String,
}

/// A message whose texts are checked on both ends.
trait Checked: Serialize + DeserializeOwned {
    fn check(&self) -> Result<(), PairingError>;
}

impl Checked for JoinRequest {
    fn check(&self) -> Result<(), PairingError> {
        check_text("name", &self.name)?;
        check_text("device name", &self.device_name)
    }
}

impl Checked for JoinAccept {
    fn check(&self) -> Result<(), PairingError> {
        check_text("space id", &self.space_id)?;
        check_text("seat", &self.seat)
    }
}

impl Checked for JoinReject {
    fn check(&self) -> Result<(), PairingError> {
        check_text("reason", &self.reason)
    }
}

fn check_text(field: &'static str, s: &str) -> Result<(), PairingError> {
    let ok = !s.trim().is_empty() && s.chars().count() <= MAX_TEXT && !s.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(PairingError::Invalid(field))
    }
}

/// A join request from a confirmed device, waiting for the host's answer: show
/// `phrase` and the joiner's names, and ask the person whether the joiner's
/// screen shows the same phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequested {
    /// The joiner's device key, as confirmed.
    pub peer: DeviceId,
    /// The verification phrase; the joiner shows the same one.
    pub phrase: String,
    /// What it asks.
    pub request: JoinRequest,
}

/// A finished pairing, the same on both sides except for `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// The other device's key, now confirmed: pin it.
    pub peer: DeviceId,
    /// Four words from the confirmed key and transcript, for the people to compare.
    pub phrase: String,
    /// What the joiner asked.
    pub request: JoinRequest,
    /// What the host granted.
    pub accept: JoinAccept,
}

/// What the joiner learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinerEvent {
    /// The host proved it knows the code over this very connection; the request
    /// is on its way. Show the phrase and wait: the host's person compares it
    /// with their screen before the host answers.
    Confirmed {
        /// The verification phrase.
        phrase: String,
    },
    /// The host accepted.
    Paired(Box<Paired>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Host = 1,
    Joiner = 2,
}

/// Keys derived from one SPAKE2 exchange; wiped on drop.
struct Keys {
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

fn encode<T: Checked>(value: &T) -> Result<Vec<u8>, PairingError> {
    value.check()?;
    postcard::to_allocvec(value).map_err(|_| PairingError::Malformed("message would not encode"))
}

/// Decodes and checks a whole body: trailing bytes are an error.
fn decode<T: Checked>(body: &[u8]) -> Result<T, PairingError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => value.check().map(|()| value),
        _ => Err(PairingError::Malformed("undecodable message")),
    }
}

enum Phase {
    /// Our SPAKE2 message is sent (kept to refuse it reflected back).
    Pake(Spake2<Ed25519Group>, Vec<u8>),
    /// Keys derived and our confirmation sent.
    Confirm(Keys),
    /// The peer's confirmation checked: messages may flow.
    Open(Keys),
    Over,
}

/// What a frame did to the shared part of the exchange.
enum Step {
    Nothing,
    Confirmed,
    /// An authenticated message (its MAC checked and removed).
    Message(u8, Vec<u8>),
}

/// The part both roles share: SPAKE2, confirmation, message MACs, aborts.
struct Handshake {
    role: Role,
    peer: DeviceId,
    transcript: Vec<u8>,
    phase: Phase,
    outbox: VecDeque<Vec<u8>>,
}

impl Handshake {
    fn new(
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
    fn step(&mut self, frame: &Frame) -> Result<Step, PairingError> {
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
    fn fail(&mut self, err: PairingError) -> PairingError {
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
    fn end(&mut self, err: PairingError) -> PairingError {
        self.outbox.clear();
        self.phase = Phase::Over;
        err
    }

    /// Sends an authenticated message; only once the peer is confirmed.
    fn send(&mut self, kind: u8, body: &[u8]) {
        let Phase::Open(keys) = &self.phase else {
            return;
        };
        let mut payload = body.to_vec();
        payload.extend(tag(&keys.messages, &[&[kind], body]));
        self.queue(kind, &payload);
    }

    fn phrase(&self) -> String {
        match &self.phase {
            Phase::Confirm(keys) | Phase::Open(keys) => keys.phrase.clone(),
            _ => String::new(),
        }
    }
}

/// The host's side: it showed the code and decides who joins, and as whose device.
///
/// `handle` returns a [`JoinRequested`] once a device that knows the code asks,
/// over this very connection. Nothing is sent to it then: show the phrase, ask
/// the person, and answer with [`accept`](Self::accept) only on their yes, or
/// [`reject`](Self::reject). One object serves one attempt: after any error the
/// code is spent and every later frame gets [`PairingError::Finished`].
pub struct PairingHost {
    hs: Handshake,
    waiting: Option<JoinRequest>,
}

impl PairingHost {
    /// Starts the host side. `me` is this device's key, `peer` the key the joiner
    /// presented in TLS, `binding` the TLS session's exported keying material,
    /// `entropy` 32 fresh random bytes for SPAKE2 (never reused). Its first
    /// message is queued at once.
    pub fn new(
        code: &PairingCode,
        me: DeviceId,
        peer: DeviceId,
        binding: [u8; 32],
        entropy: [u8; 32],
    ) -> PairingHost {
        PairingHost {
            hs: Handshake::new(Role::Host, code, me, peer, binding, entropy),
            waiting: None,
        }
    }

    /// Handles one frame from the joiner.
    pub fn handle(&mut self, frame: &Frame) -> Result<Option<JoinRequested>, PairingError> {
        match self.hs.step(frame)? {
            Step::Nothing | Step::Confirmed => Ok(None),
            Step::Message(JOIN_REQUEST, body) if self.waiting.is_none() => {
                let request: JoinRequest = decode(&body).map_err(|e| self.hs.fail(e))?;
                self.waiting = Some(request.clone());
                Ok(Some(JoinRequested {
                    peer: self.hs.peer,
                    phrase: self.hs.phrase(),
                    request,
                }))
            }
            Step::Message(kind, _) => Err(self.hs.fail(PairingError::Unexpected(kind))),
        }
    }

    /// Lets the waiting joiner in, in the seat `accept` names: call it only once
    /// the host's person confirmed that the joiner's screen shows the phrase.
    /// An invalid `accept` is refused and the request stays waiting.
    pub fn accept(&mut self, accept: JoinAccept) -> Result<Paired, PairingError> {
        let body = encode(&accept)?;
        let Some(request) = self.waiting.take().filter(|_| !self.is_finished()) else {
            return Err(PairingError::NotWaiting);
        };
        self.hs.send(JOIN_ACCEPT, &body);
        let paired = Paired {
            peer: self.hs.peer,
            phrase: self.hs.phrase(),
            request,
            accept,
        };
        self.hs.phase = Phase::Over;
        Ok(paired)
    }

    /// Turns the waiting joiner away (the phrase was not confirmed, or the host
    /// cannot take it). The reason is cut to [`MAX_TEXT`] characters, control
    /// characters dropped.
    pub fn reject(&mut self, reason: &str) -> Result<(), PairingError> {
        if self.waiting.take().filter(|_| !self.is_finished()).is_none() {
            return Err(PairingError::NotWaiting);
        }
        let mut reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_TEXT)
            .collect();
        if reason.trim().is_empty() {
            reason = "no reason given".into();
        }
        let body = encode(&JoinReject { reason })?;
        self.hs.send(JOIN_REJECT, &body);
        self.hs.phase = Phase::Over;
        Ok(())
    }

    /// The next framed bytes to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.hs.outbox.pop_front()
    }

    /// True once the attempt is over, paired or failed (there may still be bytes
    /// to send).
    pub fn is_finished(&self) -> bool {
        matches!(self.hs.phase, Phase::Over)
    }
}

/// The joiner's side: its person typed the code.
///
/// `handle` returns [`JoinerEvent::Confirmed`] when the host has proved the code
/// over this connection (the request goes out then), and [`JoinerEvent::Paired`]
/// when it accepts; a refusal is [`PairingError::Rejected`].
pub struct PairingJoiner {
    hs: Handshake,
    request: JoinRequest,
}

impl PairingJoiner {
    /// Starts the joiner side; arguments as for [`PairingHost::new`], with `peer`
    /// the host's key as presented in TLS, and the request to send once the host
    /// is confirmed. Fails only if the request's texts are invalid.
    pub fn new(
        code: &PairingCode,
        me: DeviceId,
        peer: DeviceId,
        binding: [u8; 32],
        request: JoinRequest,
        entropy: [u8; 32],
    ) -> Result<PairingJoiner, PairingError> {
        encode(&request)?;
        Ok(PairingJoiner {
            hs: Handshake::new(Role::Joiner, code, me, peer, binding, entropy),
            request,
        })
    }

    /// Handles one frame from the host.
    pub fn handle(&mut self, frame: &Frame) -> Result<Option<JoinerEvent>, PairingError> {
        match self.hs.step(frame)? {
            Step::Nothing => Ok(None),
            Step::Confirmed => {
                let body = encode(&self.request).map_err(|e| self.hs.fail(e))?;
                self.hs.send(JOIN_REQUEST, &body);
                Ok(Some(JoinerEvent::Confirmed {
                    phrase: self.hs.phrase(),
                }))
            }
            Step::Message(JOIN_ACCEPT, body) => {
                let accept: JoinAccept = decode(&body).map_err(|e| self.hs.fail(e))?;
                let paired = Paired {
                    peer: self.hs.peer,
                    phrase: self.hs.phrase(),
                    request: self.request.clone(),
                    accept,
                };
                self.hs.phase = Phase::Over;
                Ok(Some(JoinerEvent::Paired(Box::new(paired))))
            }
            Step::Message(JOIN_REJECT, body) => {
                let reject: JoinReject = decode(&body).map_err(|e| self.hs.fail(e))?;
                Err(self.hs.end(PairingError::Rejected(reject.reason)))
            }
            Step::Message(kind, _) => Err(self.hs.fail(PairingError::Unexpected(kind))),
        }
    }

    /// The next framed bytes to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.hs.outbox.pop_front()
    }

    /// True once the attempt is over, paired or failed (there may still be bytes
    /// to send).
    pub fn is_finished(&self) -> bool {
        matches!(self.hs.phase, Phase::Over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::FrameDecoder;
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
}
