//! Bundles: signed changes sealed with the space key, the same format for
//! files (sneakernet) and for the relay's mailbox.
//!
//! ```text
//! magic "DUETBNDL" (8 bytes) | format u8 = 2 | header_len u32 BE | header (postcard) | ciphertext
//! Header { space: [u8; 16] (space tag), key: [u8; 16] (key id), nonce: [u8; 24],
//!          envelopes: Vec<Vec<u8>> (<= 32, each <= 128 bytes, no recipient ids) }
//! ciphertext = XChaCha20-Poly1305(key, nonce, postcard(Body) || signature, aad = every byte before it)
//! Body { space_id: String (<= 64), sender: [u8; 32], created_ms: u64,
//!        automerge: Vec<u8> (concatenated automerge chunks),
//!        attestations: Vec<(device [u8; 32], hash [u8; 32], signature [u8; 64])> (<= 1024) }
//! signature = ed25519 by the sender's device key (strict) over
//!             "duet/bundle/v2:" || every byte before the ciphertext || postcard(Body)
//! ```
//!
//! The space key says only that a member device sealed the bundle, and every
//! device that ever held the key (a revoked one too) can seal with it; the
//! sender's signature says which device. A bundle is refused unless its
//! sender is an active member, and no change in it gets the leniency a sync
//! gives a revoked device's edits relayed by a member (see
//! [`verify::check_members`]).
//!
//! The header's envelopes carry the sealing key to the member devices the
//! sender knew, without saying which envelope is whose (a reader tries each),
//! so a device that has not yet synced the key's entry can still open the
//! bundle. Everything before the ciphertext is authenticated with it: any
//! change to any byte is refused.
//!
//! The changes inside are no more trusted than a peer's sync message:
//! [`import`] verifies them exactly as a session does (signatures, placement,
//! membership), and changes whose dependencies are missing wait for a later
//! bundle or sync.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use crypto_box::aead::rand_core::CryptoRngCore;
use duet_model::{Attestation, DeviceId, DeviceSecret, Membership};
use ed25519_dalek::Signer;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use super::keyring::{KeyId, Keyring, SpaceKey, open_envelope, space_tag};
use super::session::{MAX_VERIFIED, MAX_WAITING_BYTES, SyncError, contained};
use super::verify::{self, VerifyError};
use super::wire::MAX_SPACE_ID;

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"DUETBNDL";
/// The bundle format this build writes and reads.
pub const FORMAT: u8 = 2;
/// What the sender's signature covers, after every byte before the
/// ciphertext and the encoded body.
const SIGNATURE_LABEL: &[u8] = b"duet/bundle/v2:";
/// An ed25519 signature.
const SIGNATURE: usize = 64;
/// The largest bundle, in bytes.
pub const MAX_BUNDLE: usize = 32 * 1024 * 1024;
/// The most envelopes a header carries.
pub const MAX_ENVELOPES: usize = 32;
/// The largest envelope, in bytes (one is 84).
pub const MAX_ENVELOPE: usize = 128;
/// The most attestations a body carries.
pub const MAX_ATTESTATIONS: usize = 1024;
/// The largest header: 56 bytes and 32 envelopes of at most 128 bytes, with
/// their lengths, fit well within it.
const MAX_HEADER: usize = 8 * 1024;
/// Magic, format and header length.
const PREFIX: usize = 8 + 1 + 4;
/// The AEAD tag.
const TAG: usize = 16;

/// What a bundle carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleBody {
    /// The space's id.
    pub space_id: String,
    /// The device that made and signed the bundle.
    pub sender: DeviceId,
    /// When it was made (milliseconds since the epoch).
    pub created_ms: u64,
    /// Concatenated automerge chunks: a whole saved document or changes.
    pub automerge: Vec<u8>,
    /// Signatures vouching for the changes (see [`verify`]).
    pub attestations: Vec<Attestation>,
}

/// Why a bundle was not made, opened or imported. Nothing from a refused
/// bundle is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle at all (wrong magic bytes).
    #[error("this is not a duet bundle")]
    NotABundle,
    /// A format this build does not know.
    #[error(
        "this bundle was made by a newer duet (bundle format {0}; this duet reads format {FORMAT}): upgrade duet"
    )]
    NewerFormat(u8),
    /// Over [`MAX_BUNDLE`].
    #[error("the bundle is {0} bytes; the limit is 32 MiB")]
    TooLarge(usize),
    /// The bundle belongs to another space.
    #[error("this bundle is for another space")]
    OtherSpace,
    /// Neither a held key nor any of the header's envelopes opens it.
    #[error(
        "this bundle is sealed with a key this device does not hold: sync with one of the couple's other devices first (a revoked device cannot open what was sealed after its revocation)"
    )]
    NoKey,
    /// The authentication failed: some byte was changed.
    #[error("this bundle is damaged or altered; nothing from it was applied")]
    Tampered,
    /// The structure is wrong (cut short, bad lengths, an undecodable body).
    #[error("this bundle is damaged or altered ({0}); nothing from it was applied")]
    Malformed(String),
    /// A format from before bundles were signed by their sender.
    #[error(
        "this bundle was made by an older duet, before bundles were signed: export it again with this version"
    )]
    OlderFormat(u8),
    /// The sender's signature does not verify.
    #[error("this bundle is not signed by the device it names as its sender; nothing from it was applied")]
    BadSignature,
    /// The sender is not an active member of the space.
    #[error(
        "this bundle was made by device {0}, which is not an active member of this space (revoked, or never paired); nothing from it was applied"
    )]
    NotAMember(String),
    /// The changes inside were refused.
    #[error("refused the bundle's changes, nothing from it was applied: {0}")]
    Refused(#[from] VerifyError),
    /// Too many received changes wait for their dependencies.
    #[error(
        "over 64 MiB of changes from bundles wait for changes this device has not received: sync with the other device directly"
    )]
    Backlog,
    /// Too many signatures wait for their changes.
    #[error(
        "over {MAX_VERIFIED} signatures from bundles wait for changes this device has not received: sync with the other device directly"
    )]
    TooManySignatures,
    /// Automerge refused the changes.
    #[error("the bundle's changes do not apply: {0}")]
    Automerge(String),
    /// What was asked to be sealed is over a limit.
    #[error("cannot make the bundle: {0}")]
    Unsealable(String),
}

impl From<SyncError> for BundleError {
    fn from(e: SyncError) -> BundleError {
        match e {
            SyncError::Refused(v) => BundleError::Refused(v),
            other => BundleError::Automerge(other.to_string()),
        }
    }
}

fn damaged(why: &str) -> BundleError {
    BundleError::Malformed(why.to_string())
}

/// A list decoded with at most `N` items, allocating no more than that.
#[derive(Debug)]
struct Bounded<T, const N: usize>(Vec<T>);

impl<T: Serialize, const N: usize> Serialize for Bounded<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                if hint > N {
                    return Err(de::Error::invalid_length(hint, &self));
                }
                let mut out = Vec::with_capacity(hint);
                while let Some(item) = seq.next_element()? {
                    if out.len() == N {
                        return Err(de::Error::invalid_length(N + 1, &self));
                    }
                    out.push(item);
                }
                Ok(Bounded(out))
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}

/// The header as it travels. Byte strings are borrowed from the input; postcard
/// writes a `&[u8]` (as a sequence) exactly as it reads bytes: a varint length,
/// then the bytes.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    space: [u8; 16],
    key: [u8; 16],
    nonce: [u8; 24],
    #[serde(borrow)]
    envelopes: Bounded<&'a [u8], MAX_ENVELOPES>,
}

/// An attestation as it travels: device, change hash, and the 64-byte
/// signature in two halves (postcard writes both exactly as one 64-byte array,
/// which serde cannot derive).
type WireAttestation = ([u8; 32], [u8; 32], ([u8; 32], [u8; 32]));

/// The body as it travels.
#[derive(Serialize, Deserialize)]
struct Body<'a> {
    space_id: &'a str,
    sender: [u8; 32],
    created_ms: u64,
    automerge: &'a [u8],
    attestations: Bounded<WireAttestation, MAX_ATTESTATIONS>,
}

fn to_wire(a: &Attestation) -> WireAttestation {
    let mut lo = [0u8; 32];
    let mut hi = [0u8; 32];
    lo.copy_from_slice(&a.signature[..32]);
    hi.copy_from_slice(&a.signature[32..]);
    (*a.device.as_bytes(), a.hash.0, (lo, hi))
}

fn from_wire((device, hash, (lo, hi)): &WireAttestation) -> Option<Attestation> {
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(lo);
    signature[32..].copy_from_slice(hi);
    Some(Attestation {
        device: DeviceId::from_bytes(device)?,
        hash: ChangeHash(*hash),
        signature,
    })
}

/// Seals `body` with `key`, with an envelope of the key for each of
/// `recipients` (at most [`MAX_ENVELOPES`]) in the header, signed by
/// `sender` (the body's sender must be its device).
pub fn seal(
    body: &BundleBody,
    sender: &DeviceSecret,
    key: &SpaceKey,
    recipients: &[DeviceId],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, BundleError> {
    if body.automerge.len() > MAX_BUNDLE {
        return Err(BundleError::TooLarge(body.automerge.len()));
    }
    if body.space_id.len() > MAX_SPACE_ID {
        return Err(BundleError::Unsealable(format!(
            "the space id is over {MAX_SPACE_ID} bytes"
        )));
    }
    if body.attestations.len() > MAX_ATTESTATIONS {
        return Err(BundleError::Unsealable(format!(
            "{} signatures; the limit is {MAX_ATTESTATIONS}",
            body.attestations.len()
        )));
    }
    if body.sender != sender.device_id() {
        return Err(BundleError::Unsealable(
            "the bundle names another device as its sender".into(),
        ));
    }
    if recipients.len() > MAX_ENVELOPES {
        return Err(BundleError::Unsealable(format!(
            "{} recipient devices; the limit is {MAX_ENVELOPES}",
            recipients.len()
        )));
    }
    let envelopes: Vec<Vec<u8>> = recipients.iter().map(|r| key.envelope_for(r, rng)).collect();
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let header = Header {
        space: space_tag(&body.space_id),
        key: key.id().0,
        nonce,
        envelopes: Bounded(envelopes.iter().map(Vec::as_slice).collect()),
    };
    let encoding = |e: postcard::Error| BundleError::Unsealable(format!("encoding failed: {e}"));
    let header = postcard::to_stdvec(&header).map_err(encoding)?;
    let plaintext = Zeroizing::new(encode_body(body)?);
    let total = PREFIX + header.len() + plaintext.len() + SIGNATURE + TAG;
    if total > MAX_BUNDLE {
        return Err(BundleError::TooLarge(total));
    }
    let header_len = u32::try_from(header.len()).map_err(|_| damaged("header too long"))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    let plaintext = Zeroizing::new(signed_plaintext(&out, &plaintext, sender));
    let cipher = XChaCha20Poly1305::new(key.secret().into());
    let ciphertext = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: &plaintext,
                aad: &out,
            },
        )
        .map_err(|_| BundleError::Unsealable("encryption failed".into()))?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// A bundle split into its parts, before any key is used.
struct Parsed<'a> {
    header: Header<'a>,
    /// Every byte before the ciphertext.
    aad: &'a [u8],
    ciphertext: &'a [u8],
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, BundleError> {
    if bytes.len() > MAX_BUNDLE {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        return Err(BundleError::NotABundle);
    }
    let short = || damaged("it is cut short");
    let format = *bytes.get(8).ok_or_else(short)?;
    if format > FORMAT {
        return Err(BundleError::NewerFormat(format));
    }
    if format == 1 {
        return Err(BundleError::OlderFormat(format));
    }
    if format != FORMAT {
        return Err(damaged("its format byte is wrong"));
    }
    let len: [u8; 4] = bytes
        .get(9..PREFIX)
        .ok_or_else(short)?
        .try_into()
        .map_err(|_| short())?;
    let header_len = u32::from_be_bytes(len) as usize;
    if header_len > MAX_HEADER {
        return Err(damaged("its header is too long"));
    }
    let header_end = PREFIX + header_len;
    let header_bytes = bytes.get(PREFIX..header_end).ok_or_else(short)?;
    let header: Header<'_> = match postcard::take_from_bytes(header_bytes) {
        Ok((h, [])) => h,
        _ => return Err(damaged("its header does not decode")),
    };
    if header.envelopes.0.iter().any(|e| e.len() > MAX_ENVELOPE) {
        return Err(damaged("an envelope is too long"));
    }
    let ciphertext = &bytes[header_end..];
    if ciphertext.len() < TAG {
        return Err(short());
    }
    Ok(Parsed {
        header,
        aad: &bytes[..header_end],
        ciphertext,
    })
}

/// The space tag in a bundle's header, read without any key: to tell which
/// space a bundle is for (a relay, or a check before opening).
pub fn header_space(bytes: &[u8]) -> Result<[u8; 16], BundleError> {
    parse(bytes).map(|p| p.header.space)
}

/// An opened bundle.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What it carries.
    pub body: BundleBody,
    /// The key it was sealed with (held already, or opened from the header:
    /// then the caller may keep it until the document's entry arrives).
    pub key: SpaceKey,
}

/// Opens a bundle of space `space_id` with a key from `keyring` or, failing
/// that, with one of the header's envelopes addressed to `me`. Checks
/// everything but the changes themselves (see [`import`]).
pub fn open(
    bytes: &[u8],
    space_id: &str,
    keyring: &Keyring,
    me: &DeviceSecret,
) -> Result<Opened, BundleError> {
    let p = parse(bytes)?;
    if p.header.space != space_tag(space_id) {
        return Err(BundleError::OtherSpace);
    }
    let id = KeyId(p.header.key);
    let key = match keyring.get(&id) {
        Some(k) => k.clone(),
        None => p
            .header
            .envelopes
            .0
            .iter()
            .filter_map(|e| open_envelope(e, me))
            .find(|k| k.id() == id)
            .ok_or(BundleError::NoKey)?,
    };
    let cipher = XChaCha20Poly1305::new(key.secret().into());
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                (&p.header.nonce).into(),
                Payload {
                    msg: p.ciphertext,
                    aad: p.aad,
                },
            )
            .map_err(|_| BundleError::Tampered)?,
    );
    Ok(Opened {
        body: decode_body(p.aad, &plaintext, space_id)?,
        key,
    })
}

/// The plaintext [`seal`] encrypts: the encoded body `encoded` and
/// `sender`'s signature over it and `aad` (every byte before the
/// ciphertext). For tools that build bundles' insides (fuzzing).
pub fn signed_plaintext(aad: &[u8], encoded: &[u8], sender: &DeviceSecret) -> Vec<u8> {
    let mut out = encoded.to_vec();
    out.extend_from_slice(
        &sender
            .signing_key()
            .sign(&signed_message(aad, encoded))
            .to_bytes(),
    );
    out
}

/// What the sender signs: a label, every byte before the ciphertext, and
/// the encoded body.
fn signed_message(aad: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_LABEL.len() + aad.len() + body.len());
    m.extend_from_slice(SIGNATURE_LABEL);
    m.extend_from_slice(aad);
    m.extend_from_slice(body);
    m
}

/// Encodes what [`seal`] seals: the inverse of [`decode_body`].
pub fn encode_body(body: &BundleBody) -> Result<Vec<u8>, BundleError> {
    postcard::to_stdvec(&Body {
        space_id: &body.space_id,
        sender: *body.sender.as_bytes(),
        created_ms: body.created_ms,
        automerge: &body.automerge,
        attestations: Bounded(body.attestations.iter().map(to_wire).collect()),
    })
    .map_err(|e| BundleError::Unsealable(format!("encoding failed: {e}")))
}

/// Decodes the plaintext of a bundle of `space_id` (what [`open`] found
/// inside the seal, after the bytes `aad` before the ciphertext): every list
/// with its bound, every key validated, and the sender's signature checked.
pub fn decode_body(aad: &[u8], plaintext: &[u8], space_id: &str) -> Result<BundleBody, BundleError> {
    let Some(split) = plaintext.len().checked_sub(SIGNATURE) else {
        return Err(damaged("it has no signature"));
    };
    let (encoded, signature) = plaintext.split_at(split);
    let body: Body<'_> = match postcard::take_from_bytes(encoded) {
        Ok((b, [])) => b,
        _ => return Err(damaged("its contents do not decode")),
    };
    if body.space_id.len() > MAX_SPACE_ID || body.space_id != space_id {
        return Err(damaged("its contents name another space"));
    }
    let sender =
        DeviceId::from_bytes(&body.sender).ok_or_else(|| damaged("the sender is not a device key"))?;
    let signature: [u8; SIGNATURE] = signature.try_into().map_err(|_| BundleError::BadSignature)?;
    sender
        .verifying_key()
        .verify_strict(
            &signed_message(aad, encoded),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| BundleError::BadSignature)?;
    let attestations = body
        .attestations
        .0
        .iter()
        .map(from_wire)
        .collect::<Option<Vec<Attestation>>>()
        .ok_or_else(|| damaged("a signature names an invalid device key"))?;
    Ok(BundleBody {
        space_id: body.space_id.to_string(),
        sender,
        created_ms: body.created_ms,
        automerge: body.automerge.to_vec(),
        attestations,
    })
}

/// What [`import`] applied.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The changes applied to the document, in the order applied: to store.
    pub applied: Vec<Change>,
    /// The attestations naming applied changes: to store with them.
    pub attestations: Vec<Attestation>,
    /// How many received changes still wait for their dependencies.
    pub waiting: usize,
    /// Changes in the bundle.
    pub received: usize,
    /// Changes in the bundle the document already held.
    pub already_held: usize,
}

/// Verifies and applies a bundle's changes, exactly like a received sync
/// message (see the session), in a space founded by `founder`: refuses a
/// bundle whose sender is not an active member; checks the attestations'
/// signatures; splits the
/// changes (automerge runs contained, so a hostile change cannot crash this
/// device); adds them to `waiting` (changes received earlier whose
/// dependencies or signatures had not arrived); drops those the document
/// already holds; places what can be applied ([`verify::place`]) and applies
/// exactly that; then checks that each applied change's author may write.
///
/// `attestations` holds verified attestations that may vouch for changes yet
/// to come: this bundle's are added, and on success those naming changes the
/// document now holds are dropped from it (the ones naming applied changes are
/// returned in [`Imported::attestations`], to store).
///
/// On error, `waiting` and `attestations` are left as they were, and the
/// caller must discard the document (as after a refused sync message: some
/// changes may have been applied before the refusal).
pub fn import(
    doc: &mut Automerge,
    body: &BundleBody,
    founder: DeviceId,
    waiting: &mut HashMap<ChangeHash, Change>,
    attestations: &mut Vec<Attestation>,
) -> Result<Imported, BundleError> {
    let attestations_before = attestations.len();
    let mut added: HashSet<ChangeHash> = HashSet::new();
    let mut dropped: Vec<Change> = Vec::new();
    let result = import_inner(
        doc,
        body,
        founder,
        waiting,
        attestations,
        &mut added,
        &mut dropped,
    );
    if result.is_err() {
        waiting.retain(|h, _| !added.contains(h));
        for c in dropped {
            if !added.contains(&c.hash()) {
                waiting.insert(c.hash(), c);
            }
        }
        attestations.truncate(attestations_before);
    }
    result
}

fn import_inner(
    doc: &mut Automerge,
    body: &BundleBody,
    founder: DeviceId,
    waiting: &mut HashMap<ChangeHash, Change>,
    attestations: &mut Vec<Attestation>,
    added: &mut HashSet<ChangeHash>,
    dropped: &mut Vec<Change>,
) -> Result<Imported, BundleError> {
    verify::check_signatures(&body.attestations)?;
    let automerge = &body.automerge;
    let (mut received, mut already_held) = (0, 0);
    for c in contained(|| verify::parse_chunks(automerge))?? {
        let h = c.hash();
        received += 1;
        if doc.get_change_meta_by_hash(&h).is_some() {
            already_held += 1;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = waiting.entry(h) {
            v.insert(c);
            added.insert(h);
        }
    }
    for a in &body.attestations {
        if !attestations.contains(a) {
            attestations.push(*a);
        }
    }
    if attestations.len() > MAX_VERIFIED {
        return Err(BundleError::TooManySignatures);
    }
    // What the document holds already (an earlier bundle, a sync, a whole
    // saved document) no longer waits.
    let held: Vec<ChangeHash> = waiting
        .keys()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    for h in held {
        if let Some(c) = waiting.remove(&h) {
            dropped.push(c);
        }
    }
    let waiting_bytes: usize = waiting.values().map(|c| c.raw_bytes().len()).sum();
    if waiting_bytes > MAX_WAITING_BYTES {
        return Err(BundleError::Backlog);
    }
    // Changes an earlier bundle left waiting whose author was revoked before
    // making them can never come in through a bundle:
    // they are dropped rather than left to refuse every later bundle that
    // completes them.
    let members = Membership::pinned(&*doc, founder);
    let doomed: Vec<ChangeHash> = waiting
        .iter()
        .filter(|(h, c)| {
            !added.contains(*h)
                && matches!(
                    members.check_change(c.actor_id(), c.seq()),
                    Err(duet_model::ChangeRefusal::Revoked(_))
                )
        })
        .map(|(h, _)| *h)
        .collect();
    for h in doomed {
        if let Some(c) = waiting.remove(&h) {
            dropped.push(c);
        }
    }
    let placement = verify::place(doc, waiting, attestations);
    if let Some(device) = placement.unsigned {
        return Err(VerifyError::Unsigned(device.short()).into());
    }
    let ready: Vec<Change> = placement
        .ready
        .iter()
        .filter_map(|h| waiting.get(h).cloned())
        .collect();
    if !ready.is_empty() {
        let to_apply = ready.clone();
        contained(|| doc.apply_changes(to_apply))?.map_err(|e| BundleError::Automerge(e.to_string()))?;
        if !doc.get_missing_deps(&[]).is_empty() {
            return Err(BundleError::Automerge(
                "changes arrived without their dependencies".into(),
            ));
        }
        // Nobody authenticated delivered these (the sender signed the
        // bundle, but changes waiting from earlier bundles come along), so
        // a revoked device's later edits get no leniency here.
        let judged: &Automerge = doc;
        contained(|| verify::check_members(judged, &ready, founder, None))??;
    }
    // The sender signed the bundle: it must be an active member, in the
    // document as this bundle leaves it (the bundle may bring its entry).
    if !Membership::pinned(&*doc, founder).is_active(&body.sender) {
        return Err(BundleError::NotAMember(body.sender.short()));
    }
    for c in &ready {
        waiting.remove(&c.hash());
    }
    attestations.retain(|a| doc.get_change_meta_by_hash(&a.hash).is_none());
    Ok(Imported {
        applied: ready,
        attestations: placement.attestations,
        waiting: waiting.len(),
        received,
        already_held,
    })
}

#[cfg(test)]
mod tests;
