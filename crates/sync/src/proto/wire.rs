//! The sync protocol's messages and their encoding (postcard inside frames).
//!
//! | type | message | payload |
//! | ---- | ------- | ------- |
//! | 0x01 | [`Hello`] | protocol versions, space id, device |
//! | 0x02 | [`SyncMessage`] | one automerge sync message and the attestations that vouch for its changes |
//! | 0x03 | Bye | empty: "we hold the same heads; closing" |
//! | 0x7f | [`Failure`] | why the sender is ending the session |
//! | 0x20..=0x2f | pairing | see [`super::pairing`] |

use serde::{Deserialize, Serialize};

use automerge::ChangeHash;
use duet_model::{Attestation, DeviceId};

use super::frame::{self, Frame, FrameError};

/// Frame type of [`Hello`].
pub const HELLO: u8 = 0x01;
/// Frame type of [`SyncMessage`].
pub const SYNC: u8 = 0x02;
/// Frame type of Bye.
pub const BYE: u8 = 0x03;
/// Frame type of [`Failure`].
pub const FAILURE: u8 = 0x7f;

/// The newest protocol version this build speaks.
pub const PROTOCOL: u16 = 1;
/// The oldest protocol version this build speaks.
pub const MIN_PROTOCOL: u16 = 1;

/// The most attestations one message may carry (a couple has a handful of
/// devices; this bounds the signature checks a peer can make us do).
pub const MAX_ATTESTATIONS: usize = 64;
/// The longest failure text.
pub const MAX_FAILURE_TEXT: usize = 500;
/// The longest space id.
pub const MAX_SPACE_ID: usize = 64;

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest protocol version the sender speaks.
    pub min_protocol: u16,
    /// The newest protocol version the sender speaks.
    pub max_protocol: u16,
    /// The space the sender syncs.
    pub space_id: String,
}

/// An attestation as it travels: raw bytes, validated on decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireAttestation {
    device: [u8; 32],
    hash: [u8; 32],
    signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireSync {
    message: Vec<u8>,
    attestations: Vec<WireAttestation>,
}

/// One automerge sync message with the attestations that vouch for the changes
/// it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMessage {
    /// The encoded automerge sync message.
    pub message: Vec<u8>,
    /// Signatures by each device over its newest change the sender holds.
    pub attestations: Vec<Attestation>,
}

/// Why the sender ends the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// A sentence for the user on the other side.
    pub text: String,
}

/// A decoded protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`SyncMessage`].
    Sync(SyncMessage),
    /// The sender holds the same heads and is closing.
    Bye,
    /// See [`Failure`].
    Failure(Failure),
}

/// Why bytes are not a valid message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The frame itself is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Unknown frame type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The payload does not decode.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A field is over its limit.
    #[error("{0} is over its limit")]
    TooLarge(&'static str),
    /// An attestation names a key that is not a valid ed25519 point.
    #[error("an attestation names an invalid device key")]
    BadKey,
}

fn decode<'a, T: Deserialize<'a>>(what: &'static str, payload: &'a [u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        _ => Err(WireError::Malformed(what)),
    }
}

fn encode_payload<T: Serialize>(kind: u8, value: &T) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_stdvec(value).map_err(|_| WireError::Malformed("outgoing"))?;
    Ok(frame::encode(kind, &payload)?)
}

impl Message {
    /// Decodes a frame.
    pub fn decode(frame: &Frame) -> Result<Message, WireError> {
        let p = frame.payload.as_slice();
        match frame.kind {
            HELLO => {
                let h: Hello = decode("hello", p)?;
                if h.space_id.len() > MAX_SPACE_ID {
                    return Err(WireError::TooLarge("space id"));
                }
                Ok(Message::Hello(h))
            }
            SYNC => {
                let w: WireSync = decode("sync", p)?;
                if w.attestations.len() > MAX_ATTESTATIONS {
                    return Err(WireError::TooLarge("attestation list"));
                }
                let attestations = w
                    .attestations
                    .into_iter()
                    .map(|a| {
                        let device = DeviceId::from_bytes(&a.device).ok_or(WireError::BadKey)?;
                        let signature: [u8; 64] = a
                            .signature
                            .try_into()
                            .map_err(|_| WireError::Malformed("attestation"))?;
                        Ok(Attestation {
                            device,
                            hash: ChangeHash(a.hash),
                            signature,
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()?;
                Ok(Message::Sync(SyncMessage {
                    message: w.message,
                    attestations,
                }))
            }
            BYE if p.is_empty() => Ok(Message::Bye),
            BYE => Err(WireError::Malformed("bye")),
            FAILURE => {
                let f: Failure = decode("failure", p)?;
                if f.text.len() > MAX_FAILURE_TEXT {
                    return Err(WireError::TooLarge("failure text"));
                }
                Ok(Message::Failure(f))
            }
            other => Err(WireError::UnknownType(other)),
        }
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Message::Hello(h) => encode_payload(HELLO, h),
            Message::Sync(s) => {
                if s.attestations.len() > MAX_ATTESTATIONS {
                    return Err(WireError::TooLarge("attestation list"));
                }
                let w = WireSync {
                    message: s.message.clone(),
                    attestations: s
                        .attestations
                        .iter()
                        .map(|a| WireAttestation {
                            device: *a.device.as_bytes(),
                            hash: a.hash.0,
                            signature: a.signature.to_vec(),
                        })
                        .collect(),
                };
                encode_payload(SYNC, &w)
            }
            Message::Bye => Ok(frame::encode(BYE, &[])?),
            Message::Failure(f) => {
                let mut text = f.text.clone();
                while text.len() > MAX_FAILURE_TEXT {
                    text.pop();
                }
                encode_payload(FAILURE, &Failure { text })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::DeviceSecret;
    use proptest::prelude::*;

    fn round_trip(m: Message) {
        let bytes = m.encode().unwrap();
        let mut d = frame::FrameDecoder::new();
        d.push(&bytes);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(Message::decode(&f).unwrap(), m);
    }

    #[test]
    fn messages_round_trip() {
        round_trip(Message::Hello(Hello {
            min_protocol: 1,
            max_protocol: 3,
            space_id: "ab12".into(),
        }));
        let a = DeviceSecret::from_bytes(&[3; 32]).attest(&ChangeHash([5; 32]));
        round_trip(Message::Sync(SyncMessage {
            message: vec![1, 2, 3],
            attestations: vec![a],
        }));
        round_trip(Message::Bye);
        round_trip(Message::Failure(Failure { text: "nope".into() }));
    }

    #[test]
    fn bad_payloads_are_refused() {
        let f = |kind, payload: Vec<u8>| Frame { kind, payload };
        assert_eq!(
            Message::decode(&f(0x55, vec![])),
            Err(WireError::UnknownType(0x55))
        );
        assert_eq!(
            Message::decode(&f(BYE, vec![1])),
            Err(WireError::Malformed("bye"))
        );
        assert_eq!(
            Message::decode(&f(HELLO, vec![1])),
            Err(WireError::Malformed("hello"))
        );
        // Trailing bytes after a valid payload are refused too.
        let mut hello = postcard::to_stdvec(&Hello {
            min_protocol: 1,
            max_protocol: 1,
            space_id: "x".into(),
        })
        .unwrap();
        hello.push(0);
        assert_eq!(
            Message::decode(&f(HELLO, hello)),
            Err(WireError::Malformed("hello"))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&Frame { kind, payload });
        }
    }
}
