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
//!
//! The code is split by role: `handshake.rs` is the part both sides share
//! (SPAKE2, key derivation, confirmation, message MACs, aborts), `host.rs` and
//! `joiner.rs` the two sides' state machines.
//!
//! [`Frame`]: super::frame::Frame

use std::ops::RangeInclusive;

use duet_model::identity::DeviceId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use super::words::{CodeError, PairingCode};

mod handshake;
mod host;
mod joiner;
#[cfg(test)]
mod tests;

pub use host::PairingHost;
pub use joiner::PairingJoiner;

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
