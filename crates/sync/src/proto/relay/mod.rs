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
mod tests;
