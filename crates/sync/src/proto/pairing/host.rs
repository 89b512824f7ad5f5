//! The host's side of pairing: [`PairingHost`].

use duet_model::identity::DeviceId;

use super::handshake::{Handshake, Phase, Role, Step};
use super::{
    JOIN_ACCEPT, JOIN_REJECT, JOIN_REQUEST, JoinAccept, JoinReject, JoinRequest, JoinRequested, MAX_TEXT,
    Paired, PairingCode, PairingError, decode, encode,
};
use crate::proto::frame::Frame;

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
