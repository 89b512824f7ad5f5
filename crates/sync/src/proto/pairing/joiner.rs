//! The joiner's side of pairing: [`PairingJoiner`].

use duet_model::identity::DeviceId;

use super::handshake::{Handshake, Phase, Role, Step};
use super::{
    JOIN_ACCEPT, JOIN_REJECT, JOIN_REQUEST, JoinAccept, JoinReject, JoinRequest, JoinerEvent, Paired,
    PairingCode, PairingError, decode, encode,
};
use crate::proto::frame::Frame;

/// The joiner's side: its person typed the code.
///
/// `handle` returns [`JoinerEvent::Confirmed`] when the host has proved the code
/// over this connection (the request goes out then), and [`JoinerEvent::Paired`]
/// when it accepts; a refusal is [`PairingError::Rejected`].
pub struct PairingJoiner {
    pub(super) hs: Handshake,
    request: JoinRequest,
}

impl PairingJoiner {
    /// Starts the joiner side; arguments as for [`PairingHost::new`], with `peer`
    /// the host's key as presented in TLS, and the request to send once the host
    /// is confirmed. Fails only if the request's texts are invalid.
    ///
    /// [`PairingHost::new`]: super::PairingHost::new
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
