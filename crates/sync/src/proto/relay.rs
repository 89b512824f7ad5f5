//! The mailbox relay's messages: what a device and a relay say to each other
//! (the relay itself is the `duet-relay` crate; devices use its client).
//!
//! One request per bidirectional QUIC stream: the device sends one frame and
//! finishes its side, the relay answers one frame. Frames have the layout of
//! [`super::frame`] (u32 big-endian length, type byte, postcard payload, no
//! trailing bytes), with a larger limit, [`MAX_RELAY_FRAME`], so that a whole
//! [`MAX_RELAY_BUNDLE`] fits in one. Read the 4-byte header, check it with
//! [`announced`], then read exactly that many bytes.
//!
//! | type | message | payload |
//! | ---- | ------- | ------- |
//! | 0x40 | [`Request::Access`] | `space: [u8;16]` |
//! | 0x41 | [`Request::SetAccess`] | a [`SignedAccess`] |
//! | 0x42 | [`Request::Post`] | `space: [u8;16]`, `bundle: bytes` (1 ..= 32 MiB) |
//! | 0x43 | [`Request::Fetch`] | `space: [u8;16]`, `after: u64`, `wait_ms: u32` |
//! | 0x50 | [`Response::Access`] | `Option<SignedAccess>` |
//! | 0x51 | [`Response::Done`] | empty |
//! | 0x52 | [`Response::Posted`] | `seq: u64` |
//! | 0x53 | [`Response::Bundles`] | `items: [(seq: u64, bundle: bytes)]` (ascending seq), `more: bool` |
//! | 0x7f | [`Response::Failure`] | `text: String` (<= 500 bytes), as in [`super::wire`] |
//!
//! The relay is untrusted: bundles are sealed and signed by the couple's
//! devices, so the relay only learns space tags (a hash of the space id),
//! device keys, sizes and timing. The access list is signed by a member
//! device, so a relay cannot invent one that a device would accept either.

use std::fmt;

use duet_model::{DeviceId, DeviceSecret};
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize, Serializer};

use super::frame::{Frame, FrameError};
use super::wire::{FAILURE, Failure, MAX_FAILURE_TEXT, WireError};

/// Frame type of [`Request::Access`].
pub const ACCESS: u8 = 0x40;
/// Frame type of [`Request::SetAccess`].
pub const SET_ACCESS: u8 = 0x41;
/// Frame type of [`Request::Post`].
pub const POST: u8 = 0x42;
/// Frame type of [`Request::Fetch`].
pub const FETCH: u8 = 0x43;
/// Frame type of [`Response::Access`].
pub const ACCESS_LIST: u8 = 0x50;
/// Frame type of [`Response::Done`].
pub const DONE: u8 = 0x51;
/// Frame type of [`Response::Posted`].
pub const POSTED: u8 = 0x52;
/// Frame type of [`Response::Bundles`].
pub const BUNDLES: u8 = 0x53;

/// The largest bundle a relay keeps (32 MiB, the bundle format's own limit).
pub const MAX_RELAY_BUNDLE: usize = 32 * 1024 * 1024;
/// The most devices an access list names.
pub const MAX_ACCESS_DEVICES: usize = 32;
/// The most bundle bytes in one [`Response::Bundles`] (8 MiB); a single
/// bundle larger than that travels alone.
pub const MAX_FETCH_BYTES: usize = 8 * 1024 * 1024;
/// The most bundles in one [`Response::Bundles`] (bounds the per-item
/// overhead of many tiny bundles).
pub const MAX_FETCH_ITEMS: usize = 1024;
/// The longest a relay holds a [`Request::Fetch`] open waiting for a bundle.
pub const MAX_WAIT_MS: u32 = 25_000;
/// The largest relay frame, type byte and payload together: one whole
/// bundle and room for the fields around it (or around up to
/// [`MAX_FETCH_ITEMS`] items).
pub const MAX_RELAY_FRAME: usize = MAX_RELAY_BUNDLE + 64 * 1024;
/// The largest frame of any request other than [`Request::Post`] (the
/// largest, a [`Request::SetAccess`] of 32 devices, is about 1.2 KiB; a relay
/// refuses a larger one from its header).
pub const MAX_CONTROL_FRAME: usize = 4 * 1024;

/// The label an access list's signature covers before its fields.
const ACCESS_LABEL: &[u8] = b"duet/relay-access/v1:";

/// A space as the relay knows it: 16 bytes that do not reveal the space id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpaceTag(pub [u8; 16]);

impl SpaceTag {
    /// The tag of `space_id`: `SHA-256("duet/space-tag/v1" || space_id)[..16]`
    /// (the same as in bundle headers, [`super::keyring::space_tag`]).
    pub fn of(space_id: &str) -> SpaceTag {
        SpaceTag(super::keyring::space_tag(space_id))
    }

    /// The first hex digits, for logs.
    pub fn short(&self) -> String {
        hex_of(&self.0[..4])
    }
}

impl fmt::Display for SpaceTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_of(&self.0))
    }
}

impl fmt::Debug for SpaceTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpaceTag({})", self.short())
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which devices may use a space on a relay, signed by one of the space's
/// devices.
///
/// The signature is ed25519 over
/// `"duet/relay-access/v1:" || postcard((space: [u8;16], serial: u64, devices: Vec<[u8;32]>))`.
/// A relay accepts a new list only from a device it lists already, with a
/// larger serial (or, for a space it does not know yet, from a device the new
/// list names).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedAccess {
    /// The space.
    pub space: SpaceTag,
    /// Grows with every new list of the space.
    pub serial: u64,
    /// The devices that may post and fetch (at most [`MAX_ACCESS_DEVICES`]).
    pub devices: Vec<DeviceId>,
    /// The device that signed.
    pub signer: DeviceId,
    /// The signature.
    pub signature: [u8; 64],
}

/// An access list as it travels: raw bytes, validated on decode.
#[derive(Serialize, Deserialize)]
struct WireAccess {
    space: [u8; 16],
    serial: u64,
    devices: Vec<[u8; 32]>,
    signer: [u8; 32],
    signature: Vec<u8>,
}

impl SignedAccess {
    /// Signs a list of `devices` for `space` with `secret` (duplicates are
    /// dropped and the list sorted). Fails only with more than
    /// [`MAX_ACCESS_DEVICES`] devices.
    pub fn sign(
        secret: &DeviceSecret,
        space: SpaceTag,
        serial: u64,
        devices: impl IntoIterator<Item = DeviceId>,
    ) -> Result<SignedAccess, WireError> {
        let mut devices: Vec<DeviceId> = devices.into_iter().collect();
        devices.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        devices.dedup();
        if devices.len() > MAX_ACCESS_DEVICES {
            return Err(WireError::TooLarge("device list"));
        }
        let message = SignedAccess::message(&space, serial, &devices)?;
        let signature = secret.signing_key().sign(&message).to_bytes();
        Ok(SignedAccess {
            space,
            serial,
            devices,
            signer: secret.device_id(),
            signature,
        })
    }

    fn message(space: &SpaceTag, serial: u64, devices: &[DeviceId]) -> Result<Vec<u8>, WireError> {
        let raw: Vec<[u8; 32]> = devices.iter().map(|d| *d.as_bytes()).collect();
        postcard::to_extend(&(space.0, serial, raw), ACCESS_LABEL.to_vec())
            .map_err(|_| WireError::Malformed("access list"))
    }

    /// Checks the signature strictly (no malleable signatures, no weak keys)
    /// and the list's size. It says nothing about whether the signer may
    /// change the list: that is the relay's rule.
    pub fn verify(&self) -> bool {
        if self.devices.len() > MAX_ACCESS_DEVICES {
            return false;
        }
        let Ok(message) = SignedAccess::message(&self.space, self.serial, &self.devices) else {
            return false;
        };
        let sig = Signature::from_bytes(&self.signature);
        self.signer.verifying_key().verify_strict(&message, &sig).is_ok()
    }

    /// Whether the list names `device`.
    pub fn allows(&self, device: &DeviceId) -> bool {
        self.devices.contains(device)
    }

    /// The list's postcard encoding (the payload of [`Request::SetAccess`]),
    /// for storing.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        postcard::to_stdvec(&self.to_wire()).map_err(|_| WireError::Malformed("outgoing"))
    }

    /// Decodes [`SignedAccess::to_bytes`]: sizes and keys are checked, the
    /// signature is not (see [`SignedAccess::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedAccess, WireError> {
        SignedAccess::from_wire(decode("access list", bytes)?)
    }

    fn to_wire(&self) -> WireAccess {
        WireAccess {
            space: self.space.0,
            serial: self.serial,
            devices: self.devices.iter().map(|d| *d.as_bytes()).collect(),
            signer: *self.signer.as_bytes(),
            signature: self.signature.to_vec(),
        }
    }

    fn from_wire(w: WireAccess) -> Result<SignedAccess, WireError> {
        if w.devices.len() > MAX_ACCESS_DEVICES {
            return Err(WireError::TooLarge("device list"));
        }
        let devices = w
            .devices
            .iter()
            .map(|d| DeviceId::from_bytes(d).ok_or(WireError::BadKey))
            .collect::<Result<Vec<_>, _>>()?;
        let signer = DeviceId::from_bytes(&w.signer).ok_or(WireError::BadKey)?;
        let signature: [u8; 64] = w
            .signature
            .try_into()
            .map_err(|_| WireError::Malformed("access list"))?;
        Ok(SignedAccess {
            space: SpaceTag(w.space),
            serial: w.serial,
            devices,
            signer,
            signature,
        })
    }
}

impl fmt::Debug for SignedAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedAccess")
            .field("space", &self.space)
            .field("serial", &self.serial)
            .field("devices", &self.devices)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// What a device asks a relay.
// One request lives per stream, briefly: its size does not matter, and the
// lists stay unboxed for the callers' sake.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The space's current access list.
    Access {
        /// The space.
        space: SpaceTag,
    },
    /// Registers a space, or replaces its access list.
    SetAccess(SignedAccess),
    /// Keeps a bundle for the space's other devices.
    Post {
        /// The space.
        space: SpaceTag,
        /// The sealed bundle (opaque to the relay), 1 ..= [`MAX_RELAY_BUNDLE`] bytes.
        bundle: Vec<u8>,
    },
    /// Bundles posted by other devices after `after`; acknowledges everything
    /// up to `after` for the asking device.
    Fetch {
        /// The space.
        space: SpaceTag,
        /// The last sequence number the device holds (0: none).
        after: u64,
        /// How long the relay may wait for a bundle when it has none (capped
        /// at [`MAX_WAIT_MS`]).
        wait_ms: u32,
    },
}

/// What a relay answers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The access list, or `None` for a space the relay does not know.
    Access(Option<SignedAccess>),
    /// The access list was stored.
    Done,
    /// The bundle was stored under `seq`.
    Posted {
        /// The bundle's sequence number in its space (grows, never reused).
        seq: u64,
    },
    /// Bundles in ascending sequence order.
    Bundles {
        /// `(seq, bundle)` pairs: at most [`MAX_FETCH_BYTES`] of bundles
        /// (or one larger bundle alone) and [`MAX_FETCH_ITEMS`] items.
        items: Vec<(u64, Vec<u8>)>,
        /// More bundles wait after the last one.
        more: bool,
    },
    /// The request was refused: a sentence for the user.
    Failure(String),
}

/// Bytes serialized as one postcard byte string (a length and the bytes),
/// without serde's per-element path for slices.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
struct PostOut<'a> {
    space: [u8; 16],
    bundle: Bytes<'a>,
}

#[derive(Deserialize)]
struct PostIn<'a> {
    space: [u8; 16],
    bundle: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct FetchWire {
    space: [u8; 16],
    after: u64,
    wait_ms: u32,
}

#[derive(Serialize)]
struct BundlesOut<'a> {
    items: Vec<(u64, Bytes<'a>)>,
    more: bool,
}

#[derive(Deserialize)]
struct BundlesIn<'a> {
    #[serde(borrow)]
    items: Vec<(u64, &'a [u8])>,
    more: bool,
}

fn decode<'a, T: Deserialize<'a>>(what: &'static str, payload: &'a [u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        _ => Err(WireError::Malformed(what)),
    }
}

/// One frame holding `value`, serialized straight after the header.
fn encode_frame<T: Serialize + ?Sized>(kind: u8, value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    let mut out = postcard::to_extend(value, out).map_err(|_| WireError::Malformed("outgoing"))?;
    finish_frame(&mut out)?;
    Ok(out)
}

/// Writes the length of a frame built as header placeholder + type + payload.
fn finish_frame(out: &mut [u8]) -> Result<(), WireError> {
    let len = out.len() - 4;
    if len > MAX_RELAY_FRAME {
        return Err(WireError::TooLarge("relay frame"));
    }
    let len = u32::try_from(len).map_err(|_| WireError::TooLarge("relay frame"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The length announced by a relay frame's header, checked against
/// [`MAX_RELAY_FRAME`] before anything is allocated.
pub fn announced(header: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        Err(WireError::Frame(FrameError::Empty))
    } else if len > MAX_RELAY_FRAME {
        Err(WireError::TooLarge("relay frame"))
    } else {
        Ok(len)
    }
}

fn check_bundle(len: usize) -> Result<(), WireError> {
    if len == 0 {
        Err(WireError::Malformed("post"))
    } else if len > MAX_RELAY_BUNDLE {
        Err(WireError::TooLarge("bundle"))
    } else {
        Ok(())
    }
}

/// Checks an answer's items: ascending seqs and the size limits.
fn check_items<'a>(items: impl ExactSizeIterator<Item = (u64, &'a [u8])>) -> Result<(), WireError> {
    if items.len() > MAX_FETCH_ITEMS {
        return Err(WireError::TooLarge("bundle list"));
    }
    let single = items.len() == 1;
    let mut total = 0usize;
    let mut last: Option<u64> = None;
    for (seq, bundle) in items {
        check_bundle(bundle.len()).map_err(|e| match e {
            WireError::Malformed(_) => WireError::Malformed("bundles"),
            other => other,
        })?;
        if last.is_some_and(|l| seq <= l) {
            return Err(WireError::Malformed("bundles"));
        }
        last = Some(seq);
        total = total.saturating_add(bundle.len());
    }
    if !single && total > MAX_FETCH_BYTES {
        return Err(WireError::TooLarge("bundle list"));
    }
    Ok(())
}

impl Request {
    /// The request's frame type.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Access { .. } => ACCESS,
            Request::SetAccess(_) => SET_ACCESS,
            Request::Post { .. } => POST,
            Request::Fetch { .. } => FETCH,
        }
    }

    /// The space the request is about.
    pub fn space(&self) -> SpaceTag {
        match self {
            Request::Access { space } | Request::Post { space, .. } | Request::Fetch { space, .. } => *space,
            Request::SetAccess(a) => a.space,
        }
    }

    /// Encodes the request as one whole frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Request::Access { space } => encode_frame(ACCESS, &space.0),
            Request::SetAccess(a) => {
                if a.devices.len() > MAX_ACCESS_DEVICES {
                    return Err(WireError::TooLarge("device list"));
                }
                encode_frame(SET_ACCESS, &a.to_wire())
            }
            Request::Post { space, bundle } => Request::encode_post(*space, bundle),
            Request::Fetch {
                space,
                after,
                wait_ms,
            } => encode_frame(
                FETCH,
                &FetchWire {
                    space: space.0,
                    after: *after,
                    wait_ms: *wait_ms,
                },
            ),
        }
    }

    /// Encodes a [`Request::Post`] from borrowed bytes (no copy of the
    /// bundle before the frame's own).
    pub fn encode_post(space: SpaceTag, bundle: &[u8]) -> Result<Vec<u8>, WireError> {
        check_bundle(bundle.len())?;
        encode_frame(
            POST,
            &PostOut {
                space: space.0,
                bundle: Bytes(bundle),
            },
        )
    }

    /// Decodes a frame.
    pub fn decode(frame: &Frame) -> Result<Request, WireError> {
        let p = frame.payload.as_slice();
        match frame.kind {
            ACCESS => Ok(Request::Access {
                space: SpaceTag(decode("access", p)?),
            }),
            SET_ACCESS => Ok(Request::SetAccess(SignedAccess::from_wire(decode(
                "set access",
                p,
            )?)?)),
            POST => {
                let post: PostIn<'_> = decode("post", p)?;
                check_bundle(post.bundle.len())?;
                Ok(Request::Post {
                    space: SpaceTag(post.space),
                    bundle: post.bundle.to_vec(),
                })
            }
            FETCH => {
                let f: FetchWire = decode("fetch", p)?;
                Ok(Request::Fetch {
                    space: SpaceTag(f.space),
                    after: f.after,
                    wait_ms: f.wait_ms,
                })
            }
            other => Err(WireError::UnknownType(other)),
        }
    }
}

impl Response {
    /// A refusal, cut to [`MAX_FAILURE_TEXT`] bytes (at a character boundary).
    pub fn failure(text: impl Into<String>) -> Response {
        let mut text = text.into();
        while text.len() > MAX_FAILURE_TEXT {
            text.pop();
        }
        Response::Failure(text)
    }

    /// Encodes the answer as one whole frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Response::Access(a) => {
                if a.as_ref().is_some_and(|a| a.devices.len() > MAX_ACCESS_DEVICES) {
                    return Err(WireError::TooLarge("device list"));
                }
                encode_frame(ACCESS_LIST, &a.as_ref().map(SignedAccess::to_wire))
            }
            Response::Done => encode_frame(DONE, &()),
            Response::Posted { seq } => encode_frame(POSTED, seq),
            Response::Bundles { items, more } => {
                check_items(items.iter().map(|(s, b)| (*s, b.as_slice())))?;
                encode_frame(
                    BUNDLES,
                    &BundlesOut {
                        items: items.iter().map(|(s, b)| (*s, Bytes(b))).collect(),
                        more: *more,
                    },
                )
            }
            Response::Failure(text) => {
                let Response::Failure(text) = Response::failure(text.clone()) else {
                    return Err(WireError::Malformed("outgoing"));
                };
                encode_frame(FAILURE, &Failure { text })
            }
        }
    }

    /// Decodes a frame.
    pub fn decode(frame: &Frame) -> Result<Response, WireError> {
        let p = frame.payload.as_slice();
        match frame.kind {
            ACCESS_LIST => {
                let a: Option<WireAccess> = decode("access list", p)?;
                Ok(Response::Access(a.map(SignedAccess::from_wire).transpose()?))
            }
            DONE if p.is_empty() => Ok(Response::Done),
            DONE => Err(WireError::Malformed("done")),
            POSTED => Ok(Response::Posted {
                seq: decode("posted", p)?,
            }),
            BUNDLES => {
                let b: BundlesIn<'_> = decode("bundles", p)?;
                check_items(b.items.iter().copied())?;
                Ok(Response::Bundles {
                    items: b.items.into_iter().map(|(s, b)| (s, b.to_vec())).collect(),
                    more: b.more,
                })
            }
            FAILURE => {
                let f: Failure = decode("failure", p)?;
                if f.text.len() > MAX_FAILURE_TEXT {
                    return Err(WireError::TooLarge("failure text"));
                }
                Ok(Response::Failure(f.text))
            }
            other => Err(WireError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn secret(n: u8) -> DeviceSecret {
        DeviceSecret::from_bytes(&[n; 32])
    }

    fn dev(n: u8) -> DeviceId {
        secret(n).device_id()
    }

    /// Splits an encoded frame the way a reader does: header, then the body.
    fn frame_of(bytes: &[u8]) -> Frame {
        let len = announced(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(
            bytes.len(),
            4 + len,
            "the header counts the type byte and payload"
        );
        Frame {
            kind: bytes[4],
            payload: bytes[5..].to_vec(),
        }
    }

    fn request_round_trip(r: &Request) {
        let f = frame_of(&r.encode().unwrap());
        assert_eq!(f.kind, r.kind());
        assert_eq!(&Request::decode(&f).unwrap(), r);
    }

    fn response_round_trip(r: &Response) {
        let f = frame_of(&r.encode().unwrap());
        assert_eq!(&Response::decode(&f).unwrap(), r);
    }

    #[test]
    fn space_tags_are_the_documented_hash() {
        let t = SpaceTag::of("abc");
        let mut h = Sha256::new();
        h.update(b"duet/space-tag/v1abc");
        assert_eq!(t.0.as_slice(), &h.finalize()[..16]);
        assert_ne!(SpaceTag::of("abd"), t);
        assert_eq!(t.to_string().len(), 32);
    }

    #[test]
    fn messages_round_trip() {
        let space = SpaceTag([7; 16]);
        let access = SignedAccess::sign(&secret(1), space, 3, [dev(2), dev(1), dev(2)]).unwrap();
        assert_eq!(access.devices.len(), 2, "duplicates are dropped");
        request_round_trip(&Request::Access { space });
        request_round_trip(&Request::SetAccess(access.clone()));
        request_round_trip(&Request::Post {
            space,
            bundle: vec![1, 2, 3],
        });
        request_round_trip(&Request::Fetch {
            space,
            after: u64::MAX,
            wait_ms: 25_000,
        });
        response_round_trip(&Response::Access(None));
        response_round_trip(&Response::Access(Some(access)));
        response_round_trip(&Response::Done);
        response_round_trip(&Response::Posted { seq: 1 << 40 });
        response_round_trip(&Response::Bundles {
            items: vec![(1, vec![9]), (5, vec![8; 300])],
            more: true,
        });
        response_round_trip(&Response::Bundles {
            items: vec![],
            more: false,
        });
        response_round_trip(&Response::Failure("nope".into()));
        // A Post from borrowed bytes is the same frame.
        assert_eq!(
            Request::encode_post(space, &[1, 2, 3]).unwrap(),
            Request::Post {
                space,
                bundle: vec![1, 2, 3]
            }
            .encode()
            .unwrap()
        );
    }

    #[test]
    fn access_lists_verify_only_unaltered() {
        let space = SpaceTag([1; 16]);
        let a = SignedAccess::sign(&secret(1), space, 2, [dev(1), dev(2)]).unwrap();
        assert!(a.verify());
        assert!(a.allows(&dev(2)) && !a.allows(&dev(3)));
        let mut other = a.clone();
        other.serial = 3;
        assert!(!other.verify(), "serial is signed");
        let mut other = a.clone();
        other.space = SpaceTag([2; 16]);
        assert!(!other.verify(), "space is signed");
        let mut other = a.clone();
        other.devices.push(dev(3));
        assert!(!other.verify(), "devices are signed");
        let mut other = a.clone();
        other.signer = dev(2);
        assert!(!other.verify(), "the signer's key checks the signature");
        let mut other = a.clone();
        other.signature[10] ^= 1;
        assert!(!other.verify());
        // The signature covers exactly the documented message.
        let raw: Vec<[u8; 32]> = a.devices.iter().map(|d| *d.as_bytes()).collect();
        let mut message = b"duet/relay-access/v1:".to_vec();
        message.extend(postcard::to_stdvec(&(space.0, 2u64, raw)).unwrap());
        let sig = Signature::from_bytes(&a.signature);
        assert!(dev(1).verifying_key().verify_strict(&message, &sig).is_ok());
        // Stored form round-trips.
        assert_eq!(SignedAccess::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
    }

    #[test]
    fn access_list_limits() {
        let space = SpaceTag([1; 16]);
        let many: Vec<DeviceId> = (1..=33u8).map(dev).collect();
        assert_eq!(
            SignedAccess::sign(&secret(1), space, 1, many.clone()).unwrap_err(),
            WireError::TooLarge("device list")
        );
        let full = SignedAccess::sign(&secret(1), space, u64::MAX, many[..32].to_vec()).unwrap();
        assert!(full.verify());
        request_round_trip(&Request::SetAccess(full.clone()));
        let largest = Request::SetAccess(full.clone()).encode().unwrap();
        assert!(largest.len() - 4 <= MAX_CONTROL_FRAME, "{} bytes", largest.len());
        // A hand-made list of 33 is refused on decode.
        let mut w = full.to_wire();
        w.devices.push(*dev(33).as_bytes());
        let payload = postcard::to_stdvec(&w).unwrap();
        let f = Frame {
            kind: SET_ACCESS,
            payload,
        };
        assert_eq!(Request::decode(&f), Err(WireError::TooLarge("device list")));
        // A key that is not a curve point is refused.
        let not_a_point = (0..=255u8)
            .map(|n| [n; 32])
            .find(|k| DeviceId::from_bytes(k).is_none())
            .unwrap();
        let mut w = full.to_wire();
        w.devices[0] = not_a_point;
        let f = Frame {
            kind: SET_ACCESS,
            payload: postcard::to_stdvec(&w).unwrap(),
        };
        assert_eq!(Request::decode(&f), Err(WireError::BadKey));
        // A short signature is malformed.
        let mut w = full.to_wire();
        w.signature.pop();
        let f = Frame {
            kind: SET_ACCESS,
            payload: postcard::to_stdvec(&w).unwrap(),
        };
        assert_eq!(Request::decode(&f), Err(WireError::Malformed("access list")));
    }

    #[test]
    fn bundle_and_answer_limits() {
        let space = SpaceTag([1; 16]);
        assert_eq!(
            Request::encode_post(space, &[]),
            Err(WireError::Malformed("post"))
        );
        assert_eq!(
            Request::encode_post(space, &vec![0; MAX_RELAY_BUNDLE + 1]),
            Err(WireError::TooLarge("bundle"))
        );
        // The largest bundle fits in one relay frame (and is over the sync frame limit).
        let big = Request::encode_post(space, &vec![0; MAX_RELAY_BUNDLE]).unwrap();
        assert!(big.len() - 4 > super::super::frame::MAX_FRAME);
        let f = frame_of(&big);
        assert!(
            matches!(Request::decode(&f), Ok(Request::Post { bundle, .. }) if bundle.len() == MAX_RELAY_BUNDLE)
        );
        // One bundle over the answer's byte limit travels alone...
        let alone = Response::Bundles {
            items: vec![(1, vec![0; MAX_FETCH_BYTES + 1])],
            more: true,
        };
        response_round_trip(&alone);
        // ...but two together may not exceed it.
        let two = Response::Bundles {
            items: vec![(1, vec![0; MAX_FETCH_BYTES]), (2, vec![0; 1])],
            more: false,
        };
        assert_eq!(two.encode(), Err(WireError::TooLarge("bundle list")));
        // Sequence numbers must ascend.
        let unordered = Response::Bundles {
            items: vec![(2, vec![1]), (2, vec![1])],
            more: false,
        };
        assert_eq!(unordered.encode(), Err(WireError::Malformed("bundles")));
        let payload = postcard::to_stdvec(&(vec![(3u64, vec![1u8]), (1u64, vec![1u8])], false)).unwrap();
        assert_eq!(
            Response::decode(&Frame {
                kind: BUNDLES,
                payload
            }),
            Err(WireError::Malformed("bundles"))
        );
        // Headers over the limit or empty are refused before reading on.
        assert_eq!(
            announced(((MAX_RELAY_FRAME + 1) as u32).to_be_bytes()),
            Err(WireError::TooLarge("relay frame"))
        );
        assert_eq!(announced([0; 4]), Err(WireError::Frame(FrameError::Empty)));
    }

    #[test]
    fn failure_text_is_bounded() {
        let long = "é".repeat(400);
        let Response::Failure(cut) = Response::failure(long.clone()) else {
            unreachable!()
        };
        assert!(cut.len() <= MAX_FAILURE_TEXT && long.starts_with(&cut));
        // An over-long text is cut when encoded, and refused when decoded.
        let f = frame_of(&Response::Failure(long.clone()).encode().unwrap());
        assert_eq!(Response::decode(&f), Ok(Response::Failure(cut)));
        let payload = postcard::to_stdvec(&Failure { text: long }).unwrap();
        assert_eq!(
            Response::decode(&Frame {
                kind: FAILURE,
                payload
            }),
            Err(WireError::TooLarge("failure text"))
        );
    }

    #[test]
    fn bad_payloads_are_refused() {
        let f = |kind, payload: Vec<u8>| Frame { kind, payload };
        assert_eq!(
            Request::decode(&f(0x55, vec![])),
            Err(WireError::UnknownType(0x55))
        );
        assert_eq!(
            Request::decode(&f(FAILURE, vec![])),
            Err(WireError::UnknownType(FAILURE))
        );
        assert_eq!(
            Response::decode(&f(ACCESS, vec![0; 16])),
            Err(WireError::UnknownType(ACCESS))
        );
        assert_eq!(
            Request::decode(&f(ACCESS, vec![0; 15])),
            Err(WireError::Malformed("access"))
        );
        assert_eq!(
            Request::decode(&f(ACCESS, vec![0; 17])),
            Err(WireError::Malformed("access"))
        );
        assert_eq!(
            Response::decode(&f(DONE, vec![0])),
            Err(WireError::Malformed("done"))
        );
        // A bundle length running past the payload is malformed, not an allocation.
        let mut post = vec![0u8; 16];
        post.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(Request::decode(&f(POST, post)), Err(WireError::Malformed("post")));
    }

    fn arb_space() -> impl Strategy<Value = SpaceTag> {
        any::<[u8; 16]>().prop_map(SpaceTag)
    }

    fn arb_access() -> impl Strategy<Value = SignedAccess> {
        (
            1u8..=255,
            arb_space(),
            any::<u64>(),
            proptest::collection::vec(1u8..=255, 0..6),
        )
            .prop_map(|(signer, space, serial, devices)| {
                SignedAccess::sign(&secret(signer), space, serial, devices.into_iter().map(dev)).unwrap()
            })
    }

    fn arb_bundle() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..200)
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            arb_space().prop_map(|space| Request::Access { space }),
            arb_access().prop_map(Request::SetAccess),
            (arb_space(), arb_bundle()).prop_map(|(space, bundle)| Request::Post { space, bundle }),
            (arb_space(), any::<u64>(), any::<u32>()).prop_map(|(space, after, wait_ms)| Request::Fetch {
                space,
                after,
                wait_ms
            }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        prop_oneof![
            proptest::option::of(arb_access()).prop_map(Response::Access),
            Just(Response::Done),
            any::<u64>().prop_map(|seq| Response::Posted { seq }),
            (
                proptest::collection::btree_map(any::<u64>(), arb_bundle(), 0..5),
                any::<bool>()
            )
                .prop_map(|(items, more)| Response::Bundles {
                    items: items.into_iter().collect(),
                    more
                }),
            "[a-z ]{0,80}".prop_map(Response::Failure),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_frames_never_panic(kind in 0x3fu8..=0x80, payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let f = Frame { kind, payload };
            let _ = Request::decode(&f);
            let _ = Response::decode(&f);
        }

        #[test]
        fn valid_messages_round_trip(req in arb_request(), resp in arb_response()) {
            let f = frame_of(&req.encode().unwrap());
            prop_assert_eq!(Request::decode(&f).unwrap(), req);
            let f = frame_of(&resp.encode().unwrap());
            prop_assert_eq!(Response::decode(&f).unwrap(), resp);
        }

        #[test]
        fn mutated_valid_frames_never_panic(req in arb_request(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = req.encode().unwrap();
            let i = at.index(bytes.len() - 4) + 4;
            bytes[i] = byte;
            let f = Frame { kind: bytes[4], payload: bytes[5..].to_vec() };
            if let (Ok(Request::SetAccess(a)), Request::SetAccess(original)) = (Request::decode(&f), &req) {
                // Whatever still decodes differently no longer verifies.
                prop_assert!(a == *original || !a.verify());
            }
            let _ = Response::decode(&f);
        }
    }
}
