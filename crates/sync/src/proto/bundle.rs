//! Bundles: signed changes sealed with the space key, the same format for
//! files (sneakernet) and for the relay's mailbox.
//!
//! ```text
//! magic "DUETBNDL" (8 bytes) | format u8 = 1 | header_len u32 BE | header (postcard) | ciphertext
//! Header { space: [u8; 16] (space tag), key: [u8; 16] (key id), nonce: [u8; 24],
//!          envelopes: Vec<Vec<u8>> (<= 32, each <= 128 bytes, no recipient ids) }
//! ciphertext = XChaCha20-Poly1305(key, nonce, postcard(Body), aad = every byte before it)
//! Body { space_id: String (<= 64), sender: [u8; 32], created_ms: u64,
//!        automerge: Vec<u8> (concatenated automerge chunks),
//!        attestations: Vec<(device [u8; 32], hash [u8; 32], signature [u8; 64])> (<= 1024) }
//! ```
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
use duet_model::{Attestation, DeviceId, DeviceSecret};
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
pub const FORMAT: u8 = 1;
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
    /// The device that made the bundle.
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
/// `recipients` (at most [`MAX_ENVELOPES`]) in the header.
pub fn seal(
    body: &BundleBody,
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
    let plaintext = Zeroizing::new(
        postcard::to_stdvec(&Body {
            space_id: &body.space_id,
            sender: *body.sender.as_bytes(),
            created_ms: body.created_ms,
            automerge: &body.automerge,
            attestations: Bounded(body.attestations.iter().map(to_wire).collect()),
        })
        .map_err(encoding)?,
    );
    let total = PREFIX + header.len() + plaintext.len() + TAG;
    if total > MAX_BUNDLE {
        return Err(BundleError::TooLarge(total));
    }
    let header_len = u32::try_from(header.len()).map_err(|_| damaged("header too long"))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
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
    let body: Body<'_> = match postcard::take_from_bytes(&plaintext) {
        Ok((b, [])) => b,
        _ => return Err(damaged("its contents do not decode")),
    };
    if body.space_id.len() > MAX_SPACE_ID || body.space_id != space_id {
        return Err(damaged("its contents name another space"));
    }
    let sender =
        DeviceId::from_bytes(&body.sender).ok_or_else(|| damaged("the sender is not a device key"))?;
    let attestations = body
        .attestations
        .0
        .iter()
        .map(from_wire)
        .collect::<Option<Vec<Attestation>>>()
        .ok_or_else(|| damaged("a signature names an invalid device key"))?;
    Ok(Opened {
        body: BundleBody {
            space_id: body.space_id.to_string(),
            sender,
            created_ms: body.created_ms,
            automerge: body.automerge.to_vec(),
            attestations,
        },
        key,
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
/// message (see the session): checks the attestations' signatures; splits the
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
    waiting: &mut HashMap<ChangeHash, Change>,
    attestations: &mut Vec<Attestation>,
) -> Result<Imported, BundleError> {
    let attestations_before = attestations.len();
    let mut added: HashSet<ChangeHash> = HashSet::new();
    let mut dropped: Vec<Change> = Vec::new();
    let result = import_inner(doc, body, waiting, attestations, &mut added, &mut dropped);
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
        verify::check_members(doc, &ready, &body.sender)?;
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
mod tests {
    use super::*;
    use duet_model::{ChangeRefusal, Editor, Founder, ItemId, NewIssue, Seat, issues, space};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    const SPACE: &str = "5eed";

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([7; 32])
    }

    fn secret(n: u8) -> DeviceSecret {
        DeviceSecret::from_bytes(&[n; 32])
    }

    /// A device's copy of the space.
    struct Dev {
        key: DeviceSecret,
        seat: Seat,
        doc: Automerge,
    }

    impl Dev {
        /// Adds an issue; returns the change and its author's attestation.
        fn add_issue(&mut self, n: u8, title: &str) -> (Change, Attestation) {
            let before = self.doc.get_heads();
            let new = NewIssue {
                title: title.into(),
                ..Default::default()
            };
            Editor::new(&mut self.doc, self.seat, 0)
                .add_issue(&ItemId::from_random([n; 8]), &new)
                .unwrap();
            let mut changes = self.doc.get_changes(&before);
            assert_eq!(changes.len(), 1);
            let c = changes.remove(0);
            let att = self.key.attest(&c.hash());
            (c, att)
        }

        fn body(&self, changes: &[&Change], attestations: Vec<Attestation>) -> BundleBody {
            BundleBody {
                space_id: SPACE.into(),
                sender: self.key.device_id(),
                created_ms: 1_764_000_000_000,
                automerge: changes.iter().flat_map(|c| c.raw_bytes().to_vec()).collect(),
                attestations,
            }
        }

        fn titles(&self) -> Vec<String> {
            let mut t: Vec<String> = issues::issues(&self.doc, Default::default())
                .into_iter()
                .map(|i| i.title)
                .collect();
            t.sort();
            t
        }
    }

    /// A space founded by device 1 (seat a) with device 2 (seat b) and a key
    /// of generation 1 for both; each device holds a copy.
    fn space() -> (Dev, Dev, SpaceKey) {
        let mut rng = rng();
        let (a, b) = (secret(1), secret(2));
        let mut doc = Automerge::new().with_actor(a.device_id().actor());
        let founder = Founder {
            space_id: SPACE.into(),
            name: "Sam".into(),
            device: a.device_id(),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, 0).unwrap();
        let mut e = Editor::new(&mut doc, Seat::A, 1);
        e.add_device(b.device_id(), Seat::B, "phone").unwrap();
        let key = SpaceKey::generate(1, &mut rng);
        let envelopes: Vec<(DeviceId, Vec<u8>)> = [a.device_id(), b.device_id()]
            .iter()
            .map(|d| (*d, key.envelope_for(d, &mut rng)))
            .collect();
        e.add_space_key(&key.id().to_string(), 1, &envelopes).unwrap();
        let b_doc = doc.fork().with_actor(b.device_id().actor());
        let dev_a = Dev {
            key: a,
            seat: Seat::A,
            doc,
        };
        let dev_b = Dev {
            key: b,
            seat: Seat::B,
            doc: b_doc,
        };
        (dev_a, dev_b, key)
    }

    /// A sealed bundle of one issue by device a, for both devices.
    fn small_bundle() -> (Dev, Dev, SpaceKey, BundleBody, Vec<u8>) {
        let (mut a, b, key) = space();
        let (c, att) = a.add_issue(1, "Who does the dishes");
        let body = a.body(&[&c], vec![att]);
        let bytes = seal(&body, &key, &[a.key.device_id(), b.key.device_id()], &mut rng()).unwrap();
        (a, b, key, body, bytes)
    }

    #[test]
    fn a_sealed_bundle_opens_for_its_space_and_members() {
        let (_, b, key, body, bytes) = small_bundle();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes[8], FORMAT);
        assert_eq!(header_space(&bytes).unwrap(), space_tag(SPACE));
        let ring = Keyring::from_document(&b.doc, &b.key);
        assert!(ring.get(&key.id()).is_some());
        let opened = open(&bytes, SPACE, &ring, &b.key).unwrap();
        assert_eq!(opened.body, body);
        assert_eq!(opened.key.id(), key.id());
        // The plaintext is nowhere in the sealed bytes.
        let needle = b"Who does the dishes";
        assert!(body.automerge.windows(needle.len()).any(|w| w == needle));
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        // Another space.
        assert_eq!(
            open(&bytes, "other", &ring, &b.key).unwrap_err(),
            BundleError::OtherSpace
        );
    }

    #[test]
    fn a_device_without_the_key_opens_through_the_header_or_not_at_all() {
        let (a, b, key, body, _) = small_bundle();
        let empty = Keyring::default();
        // Sealed for both devices: b opens it without any key of its own.
        let for_both = seal(&body, &key, &[a.key.device_id(), b.key.device_id()], &mut rng()).unwrap();
        let opened = open(&for_both, SPACE, &empty, &b.key).unwrap();
        assert_eq!(opened.key.id(), key.id());
        assert_eq!(opened.key.secret(), key.secret());
        assert_eq!(opened.key.generation(), 1);
        // Sealed for a only: b, holding nothing, cannot.
        let for_a = seal(&body, &key, &[a.key.device_id()], &mut rng()).unwrap();
        assert_eq!(
            open(&for_a, SPACE, &empty, &b.key).unwrap_err(),
            BundleError::NoKey
        );
        // A stranger cannot open either, even with a bundle addressed to everyone.
        assert_eq!(
            open(&for_both, SPACE, &empty, &secret(9)).unwrap_err(),
            BundleError::NoKey
        );
        // A key of another generation in the keyring does not help.
        let mut other = Keyring::default();
        other.insert(SpaceKey::from_secret(2, [4; 32]));
        assert_eq!(
            open(&for_a, SPACE, &other, &b.key).unwrap_err(),
            BundleError::NoKey
        );
        // An envelope for b of another key than the header names is not used:
        // swap a's envelope (at the header's first one) for such a decoy.
        let decoy = SpaceKey::from_secret(1, [3; 32]);
        let env = decoy.envelope_for(&b.key.device_id(), &mut rng());
        let mut forged = for_a.clone();
        let first_envelope = PREFIX + 16 + 16 + 24 + 2; // count, then length
        assert_eq!(
            &forged[first_envelope..first_envelope + env.len()],
            &a_envelope(&for_a)[..]
        );
        forged[first_envelope..first_envelope + env.len()].copy_from_slice(&env);
        assert_eq!(
            open(&forged, SPACE, &empty, &b.key).unwrap_err(),
            BundleError::NoKey
        );
    }

    /// The first envelope of a bundle's header, as `parse` reads it.
    fn a_envelope(bytes: &[u8]) -> Vec<u8> {
        parse(bytes).unwrap().header.envelopes.0[0].to_vec()
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let (_, b, _, _, bytes) = small_bundle();
        let ring = Keyring::from_document(&b.doc, &b.key);
        let empty = Keyring::default();
        let header_len = u32::from_be_bytes(bytes[9..13].try_into().unwrap()) as usize;
        let header_end = PREFIX + header_len;
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                for (ring, name) in [(&ring, "held"), (&empty, "header")] {
                    let err = open(&bad, SPACE, ring, &b.key).expect_err("a changed byte is refused");
                    let region = match i {
                        0..8 => "magic",
                        8 => "format",
                        9..13 => "length",
                        13..29 => "space",
                        29..45 => "key",
                        45..69 => "nonce",
                        _ if i < header_end => "envelopes",
                        _ => "ciphertext",
                    };
                    match region {
                        "magic" => assert_eq!(err, BundleError::NotABundle),
                        "format" => assert!(matches!(
                            err,
                            BundleError::NewerFormat(_) | BundleError::Malformed(_)
                        )),
                        "space" => assert_eq!(err, BundleError::OtherSpace),
                        "key" => assert_eq!(err, BundleError::NoKey, "{name}"),
                        "nonce" | "ciphertext" => assert_eq!(err, BundleError::Tampered, "{name} at {i}"),
                        _ => assert!(
                            matches!(
                                err,
                                BundleError::Tampered | BundleError::Malformed(_) | BundleError::NoKey
                            ),
                            "{region} {name} at {i}: {err}"
                        ),
                    }
                    *kinds.entry(format!("{region}: {err:?}")).or_default() += 1;
                }
            }
        }
        assert!(bytes.len() > header_end + TAG);
        // Every region was exercised.
        for region in [
            "magic",
            "format",
            "length",
            "space",
            "key",
            "nonce",
            "envelopes",
            "ciphertext",
        ] {
            assert!(kinds.keys().any(|k| k.starts_with(region)), "{region}: {kinds:?}");
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let (_, b, _, _, bytes) = small_bundle();
        let ring = Keyring::from_document(&b.doc, &b.key);
        for n in 0..bytes.len() {
            let cut = &bytes[..n];
            assert!(open(cut, SPACE, &ring, &b.key).is_err(), "cut at {n}");
            assert!(open(cut, SPACE, &Keyring::default(), &b.key).is_err());
            if n < PREFIX + 60 {
                assert!(header_space(cut).is_err(), "cut at {n}");
            }
        }
        // And anything appended is refused too.
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            open(&longer, SPACE, &ring, &b.key).unwrap_err(),
            BundleError::Tampered
        );
    }

    #[test]
    fn foreign_and_oversized_input_is_refused_with_a_reason() {
        let (_, b, _, _, bytes) = small_bundle();
        let ring = Keyring::from_document(&b.doc, &b.key);
        let me = &b.key;
        assert_eq!(
            open(b"hello", SPACE, &ring, me).unwrap_err(),
            BundleError::NotABundle
        );
        assert_eq!(open(b"", SPACE, &ring, me).unwrap_err(), BundleError::NotABundle);
        let mut newer = bytes.clone();
        newer[8] = 2;
        assert_eq!(
            open(&newer, SPACE, &ring, me).unwrap_err(),
            BundleError::NewerFormat(2)
        );
        assert!(
            BundleError::NewerFormat(2)
                .to_string()
                .contains("made by a newer duet")
        );
        let mut huge_header = bytes.clone();
        huge_header[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            open(&huge_header, SPACE, &ring, me),
            Err(BundleError::Malformed(_))
        ));
        let mut big = vec![0u8; MAX_BUNDLE + 1];
        big[..8].copy_from_slice(MAGIC);
        assert_eq!(
            open(&big, SPACE, &ring, me).unwrap_err(),
            BundleError::TooLarge(MAX_BUNDLE + 1)
        );
        assert_eq!(
            header_space(&big).unwrap_err(),
            BundleError::TooLarge(MAX_BUNDLE + 1)
        );
        // Sealing refuses what could not be opened.
        let (a, _, key) = space();
        let mut body = a.body(&[], vec![]);
        body.automerge = vec![0; MAX_BUNDLE];
        assert!(matches!(
            seal(&body, &key, &[], &mut rng()),
            Err(BundleError::TooLarge(_))
        ));
        let body = a.body(&[], vec![]);
        let many: Vec<DeviceId> = (0..33).map(|n| secret(n).device_id()).collect();
        assert!(matches!(
            seal(&body, &key, &many, &mut rng()),
            Err(BundleError::Unsealable(_))
        ));
        let mut long_id = body.clone();
        long_id.space_id = "x".repeat(65);
        assert!(seal(&long_id, &key, &[], &mut rng()).is_err());
    }

    /// Seals with `key` for both devices, opens as `me`.
    fn through(body: &BundleBody, key: &SpaceKey, me: &Dev) -> BundleBody {
        let bytes = seal(
            body,
            key,
            &[secret(1).device_id(), secret(2).device_id()],
            &mut rng(),
        )
        .unwrap();
        open(&bytes, SPACE, &Keyring::from_document(&me.doc, &me.key), &me.key)
            .unwrap()
            .body
    }

    #[test]
    fn bundles_imported_out_of_order_converge() {
        let (mut a, mut b, key) = space();
        let base = a.doc.fork();
        // a adds an issue; b receives it and adds one on top.
        let (a1, att_a) = a.add_issue(1, "Dishes");
        b.doc.apply_changes([a1.clone()]).unwrap();
        let (b1, att_b) = b.add_issue(2, "Laundry");
        assert_eq!(b1.deps(), &[a1.hash()]);
        let from_a = through(&a.body(&[&a1], vec![att_a]), &key, &b);
        let from_b = through(&b.body(&[&b1], vec![att_b]), &key, &b);

        // A third copy gets b's bundle first: it waits for a's change.
        let mut doc = base.fork();
        let mut waiting = HashMap::new();
        let mut atts = Vec::new();
        let first = import(&mut doc, &from_b, &mut waiting, &mut atts).unwrap();
        assert!(first.applied.is_empty());
        assert_eq!(first.waiting, 1);
        assert_eq!(doc.get_heads(), base.get_heads(), "nothing applied yet");
        assert_eq!(atts, vec![att_b], "b's signature waits with its change");
        let second = import(&mut doc, &from_a, &mut waiting, &mut atts).unwrap();
        assert_eq!(
            second.applied.iter().map(Change::hash).collect::<Vec<_>>(),
            vec![a1.hash(), b1.hash()],
            "both, in dependency order"
        );
        assert_eq!(second.waiting, 0);
        assert!(waiting.is_empty());
        assert!(atts.is_empty(), "nothing left to wait for");
        let mut stored = second.attestations.clone();
        stored.sort_by_key(|a| a.hash);
        let mut want = vec![att_a, att_b];
        want.sort_by_key(|a| a.hash);
        assert_eq!(stored, want);

        // In order, the same document.
        let mut in_order = base.fork();
        let (mut w2, mut atts2) = (HashMap::new(), Vec::new());
        let one = import(&mut in_order, &from_a, &mut w2, &mut atts2).unwrap();
        assert_eq!(one.applied.len(), 1);
        let two = import(&mut in_order, &from_b, &mut w2, &mut atts2).unwrap();
        assert_eq!(two.applied.len(), 1);
        let mut heads = doc.get_heads();
        heads.sort();
        let mut heads2 = in_order.get_heads();
        heads2.sort();
        assert_eq!(heads, heads2);
        let mut b_heads = b.doc.get_heads();
        b_heads.sort();
        assert_eq!(heads, b_heads, "the same as b's own copy");
        let view = Dev {
            key: secret(3),
            seat: Seat::A,
            doc,
        };
        assert_eq!(view.titles(), vec!["Dishes", "Laundry"]);

        // Importing again changes nothing.
        let heads_before = view.doc.get_heads();
        let mut doc = view.doc;
        for body in [&from_a, &from_b] {
            let again = import(&mut doc, body, &mut waiting, &mut atts).unwrap();
            assert!(again.applied.is_empty());
            assert!(again.attestations.is_empty());
            assert_eq!(again.waiting, 0);
        }
        assert_eq!(doc.get_heads(), heads_before);
        assert!(waiting.is_empty() && atts.is_empty());
    }

    #[test]
    fn a_whole_saved_document_imports() {
        let (mut a, _, _) = space();
        let (_, att) = a.add_issue(1, "Dishes");
        let all = a.doc.get_changes(&[]);
        // Every change of a's history, vouched for by a's newest signature.
        let mut body = a.body(&[], vec![att]);
        body.automerge = a.doc.save();
        let mut doc = Automerge::new();
        let (mut w, mut atts) = (HashMap::new(), Vec::new());
        let got = import(&mut doc, &body, &mut w, &mut atts).unwrap();
        assert_eq!(got.applied.len(), all.len());
        assert_eq!(doc.get_heads(), a.doc.get_heads());
    }

    #[test]
    fn unsigned_forged_and_stranger_changes_are_refused() {
        let (mut a, mut b, _) = space();
        let base = a.doc.fork();
        let (a1, att_a) = a.add_issue(1, "Dishes");
        b.doc.apply_changes([a1.clone()]).unwrap();
        let (b1, att_b) = b.add_issue(2, "Laundry");

        // b's change waits for a's in this copy, with its signature.
        let mut doc = base.fork();
        let (mut waiting, mut atts) = (HashMap::new(), Vec::new());
        import(&mut doc, &b.body(&[&b1], vec![att_b]), &mut waiting, &mut atts).unwrap();
        assert_eq!((waiting.len(), atts.len()), (1, 1));

        // a's change without a's signature.
        let unsigned = a.body(&[&a1], vec![]);
        let mut d = doc.fork();
        assert_eq!(
            import(&mut d, &unsigned, &mut waiting, &mut atts).unwrap_err(),
            BundleError::Refused(VerifyError::Unsigned(a.key.device_id().short()))
        );
        assert_eq!((waiting.len(), atts.len()), (1, 1), "left as it was");
        assert!(waiting.contains_key(&b1.hash()));

        // Signed, but by b, not by its author.
        let wrong_author = a.body(&[&a1], vec![b.key.attest(&a1.hash())]);
        let mut d = doc.fork();
        assert!(matches!(
            import(&mut d, &wrong_author, &mut waiting, &mut atts),
            Err(BundleError::Refused(VerifyError::Unsigned(_)))
        ));
        assert_eq!((waiting.len(), atts.len()), (1, 1));

        // A tampered signature.
        let mut forged = att_a;
        forged.signature[5] ^= 0x10;
        let mut d = doc.fork();
        assert!(matches!(
            import(&mut d, &a.body(&[&a1], vec![forged]), &mut waiting, &mut atts),
            Err(BundleError::Refused(VerifyError::BadSignature(_)))
        ));
        assert_eq!(d.get_heads(), doc.get_heads());
        assert_eq!((waiting.len(), atts.len()), (1, 1));

        // A stranger's change, signed by the stranger.
        let mut stranger = Dev {
            key: secret(9),
            seat: Seat::B,
            doc: base.fork().with_actor(secret(9).device_id().actor()),
        };
        let (s1, att_s) = stranger.add_issue(9, "Mallory was here");
        let mut d = doc.fork();
        assert!(matches!(
            import(
                &mut d,
                &stranger.body(&[&s1], vec![att_s]),
                &mut waiting,
                &mut atts
            ),
            Err(BundleError::Refused(VerifyError::Refused(
                ChangeRefusal::NotAMember(_)
            )))
        ));
        assert_eq!((waiting.len(), atts.len()), (1, 1), "left as it was");

        // Garbage where changes belong.
        let mut junk = a.body(&[&a1], vec![att_a]);
        junk.automerge.truncate(junk.automerge.len() - 3);
        let mut d = doc.fork();
        assert!(matches!(
            import(&mut d, &junk, &mut waiting, &mut atts),
            Err(BundleError::Refused(VerifyError::Malformed(_)))
        ));

        // The genuine bundle still completes the waiting change.
        let done = import(&mut doc, &a.body(&[&a1], vec![att_a]), &mut waiting, &mut atts).unwrap();
        assert_eq!(done.applied.len(), 2);
        assert!(waiting.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            prefix in 0usize..3,
            header_len in 0u32..400,
        ) {
            let me = secret(2);
            let mut ring = Keyring::default();
            ring.insert(SpaceKey::from_secret(1, [1; 32]));
            let mut bytes = Vec::new();
            if prefix > 0 {
                bytes.extend_from_slice(MAGIC);
                bytes.push(FORMAT);
            }
            if prefix > 1 {
                bytes.extend_from_slice(&header_len.to_be_bytes());
            }
            bytes.extend_from_slice(&tail);
            prop_assert!(open(&bytes, SPACE, &ring, &me).is_err());
            let _ = header_space(&bytes);
        }

        #[test]
        fn damaged_bundles_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let (_, b, _, _, bytes) = small_bundle();
            let ring = Keyring::from_document(&b.doc, &b.key);
            let mut bad = bytes.clone();
            for (at, byte) in edits {
                let at = at % bad.len();
                bad[at] = byte;
            }
            let result = open(&bad, SPACE, &ring, &b.key);
            prop_assert_eq!(result.is_ok(), bad == bytes);
        }
    }
}
