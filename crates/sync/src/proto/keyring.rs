//! Space keys: what seals bundles so that only the couple's devices can read
//! them, and the envelopes that carry them.
//!
//! A space key is 32 random bytes and a generation (1 at the space's creation,
//! one more at each rotation). Its id is
//! `SHA-256("duet/space-key-id/v1" || secret)[..16]`. It travels only as
//! **envelopes**: a libsodium sealed box (X25519, XSalsa20-Poly1305) to one
//! recipient device's X25519 key, derived from its ed25519 device key
//! ([`DeviceId::x25519_public`]). The plaintext is `generation (u32
//! big-endian) || secret` (36 bytes), so an envelope is 84 bytes. Only its
//! recipient can open an envelope; it is safe to forward to anyone.
//!
//! Envelopes live in the document (`duet_model::keys`), so every sync
//! distributes them. A device's [`Keyring`] is every key whose envelope
//! addressed to it opens.

use std::fmt;
use std::str::FromStr;

use automerge::Automerge;
use crypto_box::aead::rand_core::CryptoRngCore;
use duet_model::keys::{KeyEntry, key_entries};
use duet_model::{DeviceId, DeviceSecret};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

const KEY_ID_LABEL: &[u8] = b"duet/space-key-id/v1";
const SPACE_TAG_LABEL: &[u8] = b"duet/space-tag/v1";

/// An envelope's plaintext: generation and secret.
const ENVELOPE_PLAINTEXT: usize = 4 + 32;

/// An envelope's length: the plaintext, an ephemeral X25519 key and a tag.
pub const ENVELOPE_LEN: usize = ENVELOPE_PLAINTEXT + 48;

/// A space key's id: the first 16 bytes of a hash of its secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Text that is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid space key id '{0}' (expected 32 hex digits)")]
pub struct BadKeyId(pub String);

impl FromStr for KeyId {
    type Err = BadKeyId;

    fn from_str(s: &str) -> Result<KeyId, BadKeyId> {
        let bad = || BadKeyId(s.to_string());
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(bad());
        }
        let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(bad());
            };
            out[i] = (hi << 4) | lo;
        }
        Ok(KeyId(out))
    }
}

/// The first 16 bytes of `SHA-256(label || data)`.
fn tag16(label: &[u8], data: &[u8]) -> [u8; 16] {
    let digest = Sha256::new().chain_update(label).chain_update(data).finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The tag naming space `space_id` to a relay and in bundle headers, without
/// revealing the id: `SHA-256("duet/space-tag/v1" || space_id)[..16]`.
pub fn space_tag(space_id: &str) -> [u8; 16] {
    tag16(SPACE_TAG_LABEL, space_id.as_bytes())
}

/// A space key. The secret is zeroized on drop and never shown by `Debug`.
#[derive(Clone)]
pub struct SpaceKey {
    id: KeyId,
    generation: u32,
    secret: Zeroizing<[u8; 32]>,
}

impl SpaceKey {
    /// A new random key of `generation`.
    pub fn generate(generation: u32, rng: &mut impl CryptoRngCore) -> SpaceKey {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        SpaceKey::from_zeroizing(generation, secret)
    }

    /// The key of `generation` with `secret` (as an envelope carries it).
    pub fn from_secret(generation: u32, secret: [u8; 32]) -> SpaceKey {
        let mut secret = secret;
        let key = SpaceKey::from_zeroizing(generation, Zeroizing::new(secret));
        secret.zeroize();
        key
    }

    fn from_zeroizing(generation: u32, secret: Zeroizing<[u8; 32]>) -> SpaceKey {
        SpaceKey {
            id: KeyId(tag16(KEY_ID_LABEL, secret.as_ref())),
            generation,
            secret,
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The secret, for sealing and opening bundles. Handle with care.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// An envelope carrying this key that only `recipient` can open.
    pub fn envelope_for(&self, recipient: &DeviceId, rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let mut plaintext = Zeroizing::new([0u8; ENVELOPE_PLAINTEXT]);
        plaintext[..4].copy_from_slice(&self.generation.to_be_bytes());
        plaintext[4..].copy_from_slice(self.secret.as_ref());
        crypto_box::PublicKey::from(recipient.x25519_public())
            .seal(rng, plaintext.as_ref())
            // Sealing into a Vec cannot fail (the error is for fixed-size
            // buffers); an empty envelope would open for no one.
            .unwrap_or_default()
    }
}

impl fmt::Debug for SpaceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SpaceKey({}, generation {}, redacted)",
            self.id, self.generation
        )
    }
}

/// Opens an envelope addressed to `me`; `None` if it is not addressed to this
/// device, damaged, or not an envelope.
pub fn open_envelope(envelope: &[u8], me: &DeviceSecret) -> Option<SpaceKey> {
    let secret = crypto_box::SecretKey::from_bytes(*me.x25519_secret());
    let plaintext = Zeroizing::new(secret.unseal(envelope).ok()?);
    if plaintext.len() != ENVELOPE_PLAINTEXT {
        return None;
    }
    let generation = u32::from_be_bytes(plaintext[..4].try_into().ok()?);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&plaintext[4..]);
    Some(SpaceKey::from_zeroizing(generation, key))
}

/// The space keys one device holds.
#[derive(Clone, Default)]
pub struct Keyring {
    /// Sorted by id, one per id.
    keys: Vec<SpaceKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

impl Keyring {
    /// Every key in `doc` with an envelope addressed to `me` that opens and
    /// carries the key the entry names (its id and generation).
    pub fn from_document(doc: &Automerge, me: &DeviceSecret) -> Keyring {
        let mine = me.device_id();
        let mut ring = Keyring::default();
        for KeyEntry {
            id,
            generation,
            envelopes,
        } in key_entries(doc)
        {
            let Ok(id) = id.parse::<KeyId>() else { continue };
            let found = envelopes
                .iter()
                .filter(|(to, _)| *to == mine)
                .filter_map(|(_, env)| open_envelope(env, me))
                .find(|k| k.id == id && k.generation == generation);
            if let Some(key) = found {
                ring.insert(key);
            }
        }
        ring
    }

    /// The key to seal with: the highest generation, the smallest id among
    /// keys of that generation.
    pub fn sealing_key(&self) -> Option<&SpaceKey> {
        // Sorted by id: the first of the highest generation wins.
        self.keys.iter().rev().max_by_key(|k| k.generation)
    }

    /// The key `id`, if held.
    pub fn get(&self, id: &KeyId) -> Option<&SpaceKey> {
        self.keys
            .binary_search_by(|k| k.id.cmp(id))
            .ok()
            .map(|i| &self.keys[i])
    }

    /// Adds a key (a key already held stays as it is).
    pub fn insert(&mut self, key: SpaceKey) {
        if let Err(i) = self.keys.binary_search_by(|k| k.id.cmp(&key.id)) {
            self.keys.insert(i, key);
        }
    }

    /// The keys, by id.
    pub fn iter(&self) -> impl Iterator<Item = &SpaceKey> {
        self.keys.iter()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The generation of the next key: one more than the highest held (1 when
    /// none is).
    pub fn next_generation(&self) -> u32 {
        self.keys
            .iter()
            .map(|k| k.generation)
            .max()
            .map_or(1, |g| g.saturating_add(1))
    }
}

/// Envelopes by recipient device, as `Editor::add_envelopes` takes them.
pub type Envelopes = Vec<(DeviceId, Vec<u8>)>;

/// Envelopes the document lacks: for every held key the document records, an
/// envelope for every device in `active` that has none for it. Keys the
/// document has no entry for are left out (recording one is
/// `Editor::add_space_key`'s, with its envelopes); keys with nothing missing
/// are listed with no envelopes.
pub fn missing_envelopes(
    doc: &Automerge,
    keyring: &Keyring,
    active: &[DeviceId],
    rng: &mut impl CryptoRngCore,
) -> Vec<(KeyId, Envelopes)> {
    let entries = key_entries(doc);
    let mut out = Vec::new();
    for key in keyring.iter() {
        let id = key.id.to_string();
        let Some(entry) = entries.iter().find(|e| e.id == id) else {
            continue;
        };
        let envelopes: Envelopes = active
            .iter()
            .filter(|d| !entry.envelopes.iter().any(|(to, _)| to == *d))
            .map(|d| (*d, key.envelope_for(d, rng)))
            .collect();
        out.push((key.id, envelopes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::{Editor, Founder, Seat, space};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([42; 32])
    }

    fn secret(n: u8) -> DeviceSecret {
        DeviceSecret::from_bytes(&[n; 32])
    }

    #[test]
    fn an_envelope_opens_only_for_its_recipient() {
        let mut rng = rng();
        let key = SpaceKey::generate(3, &mut rng);
        let env = key.envelope_for(&secret(1).device_id(), &mut rng);
        assert_eq!(env.len(), ENVELOPE_LEN);
        let opened = open_envelope(&env, &secret(1)).unwrap();
        assert_eq!(opened.id(), key.id());
        assert_eq!(opened.generation(), 3);
        assert_eq!(opened.secret(), key.secret());
        assert!(open_envelope(&env, &secret(2)).is_none(), "another device");
        // Any damage, or a cut, is refused.
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert!(open_envelope(&bad, &secret(1)).is_none(), "flip at {i}");
        }
        for n in 0..env.len() {
            assert!(open_envelope(&env[..n], &secret(1)).is_none());
        }
        // Two envelopes of one key differ (fresh ephemeral keys).
        assert_ne!(env, key.envelope_for(&secret(1).device_id(), &mut rng));
        // The same X25519 keys as libsodium's conversion: the device's public
        // key is the public half of its converted secret.
        let sk = crypto_box::SecretKey::from_bytes(*secret(5).x25519_secret());
        assert_eq!(sk.public_key().to_bytes(), secret(5).device_id().x25519_public());
    }

    /// What anyone can do with an envelope sealed to a small-order key, with
    /// no secret at all: the sealer's shared secret is its ephemeral scalar
    /// times a point of order at most 8, so one of at most 5 values (the u
    /// coordinates of that point's multiples), and the sealed box's nonce is
    /// public. Trying a few dozen throwaway secrets (each lands on one of
    /// those values) finds the one the sealer used.
    fn open_without_any_secret(envelope: &[u8], recipient: [u8; 32]) -> Option<Vec<u8>> {
        use blake2::Digest;
        use crypto_box::aead::Aead;
        let (ephemeral, boxed) = envelope.split_at_checked(32)?;
        let recipient = crypto_box::PublicKey::from(recipient);
        let nonce = blake2::Blake2b::<blake2::digest::consts::U24>::new()
            .chain_update(ephemeral)
            .chain_update(recipient.as_bytes())
            .finalize();
        (1..=64u8).find_map(|n| {
            let anyone = crypto_box::SecretKey::from_bytes([n; 32]);
            crypto_box::SalsaBox::new(&recipient, &anyone)
                .decrypt(&nonce, boxed)
                .ok()
        })
    }

    #[test]
    fn no_envelope_is_sealed_to_a_weak_key_which_anyone_could_open() {
        let mut rng = rng();
        let key = SpaceKey::generate(1, &mut rng);
        // The points of order 1, 2, 4 and 8 (see duet_model's identity tests).
        let weak = [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        ];
        for weak in weak {
            let bytes: [u8; 32] =
                std::array::from_fn(|i| u8::from_str_radix(&weak[2 * i..2 * i + 2], 16).unwrap());
            let point = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap();
            assert!(point.is_weak());
            let x25519 = point.to_montgomery().to_bytes();
            // The attack is real: a box sealed straight to such a key opens
            // for someone who holds no secret.
            for _ in 0..4 {
                let sealed = crypto_box::PublicKey::from(x25519)
                    .seal(&mut rng, b"a space key")
                    .unwrap();
                assert_eq!(
                    open_without_any_secret(&sealed, x25519).as_deref(),
                    Some(&b"a space key"[..]),
                    "{weak}"
                );
            }
            // duet cannot seal to one: it is no device id, so no member, so
            // no recipient of `envelope_for` or `missing_envelopes`.
            if let Some(device) = DeviceId::from_bytes(&bytes) {
                let envelope = key.envelope_for(&device, &mut rng);
                let opened = open_without_any_secret(&envelope, device.x25519_public());
                panic!(
                    "{weak} is a device id; an envelope to it opened without a secret: {}",
                    opened.is_some()
                );
            }
        }
        // The check is not vacuous: the same steps fail on a real key.
        let real = secret(1).device_id();
        let envelope = key.envelope_for(&real, &mut rng);
        assert!(open_without_any_secret(&envelope, real.x25519_public()).is_none());
    }

    #[test]
    fn key_ids_are_the_hash_of_the_secret_and_print_as_hex() {
        let key = SpaceKey::from_secret(1, [7; 32]);
        let mut h = Sha256::new();
        h.update(b"duet/space-key-id/v1");
        h.update([7u8; 32]);
        assert_eq!(key.id().0, h.finalize()[..16]);
        let text = key.id().to_string();
        assert_eq!(text.len(), 32);
        assert!(text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert_eq!(text.parse::<KeyId>().unwrap(), key.id());
        assert_eq!(text.to_uppercase().parse::<KeyId>().unwrap(), key.id());
        for bad in [
            "",
            "abc",
            &text[..31],
            &format!("{text}0"),
            &format!("{}zz", &text[..30]),
            "é",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
        assert_ne!(space_tag("a"), space_tag("b"));
    }

    #[test]
    fn debug_is_redacted() {
        let key = SpaceKey::from_secret(2, [0xab; 32]);
        let mut ring = Keyring::default();
        ring.insert(key.clone());
        for text in [format!("{key:?}"), format!("{ring:?}")] {
            assert!(text.contains("redacted"), "{text}");
            assert!(text.contains(&key.id().to_string()));
            assert!(!text.contains("abab"), "{text}");
            assert!(!text.contains("171, 171"), "no decimal bytes either: {text}");
        }
    }

    #[test]
    fn the_sealing_key_is_the_newest_then_the_smallest_id() {
        let mut ring = Keyring::default();
        assert!(ring.is_empty());
        assert!(ring.sealing_key().is_none());
        assert_eq!(ring.next_generation(), 1);
        let keys: Vec<SpaceKey> = (0..6u8)
            .map(|n| SpaceKey::from_secret(if n < 3 { 1 } else { 2 }, [n; 32]))
            .collect();
        let newest_smallest = keys[3..].iter().map(SpaceKey::id).min().unwrap();
        for k in keys.iter().rev() {
            ring.insert(k.clone());
        }
        ring.insert(keys[0].clone());
        assert_eq!(
            ring.iter().count(),
            6,
            "inserting a held key again changes nothing"
        );
        assert_eq!(ring.sealing_key().unwrap().id(), newest_smallest);
        assert_eq!(ring.sealing_key().unwrap().generation(), 2);
        assert_eq!(ring.next_generation(), 3);
        let ids: Vec<KeyId> = ring.iter().map(SpaceKey::id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        for k in &keys {
            assert_eq!(ring.get(&k.id()).unwrap().secret(), k.secret());
        }
        assert!(ring.get(&KeyId([0; 16])).is_none());
        // A lone key of a higher generation wins whatever its id.
        ring.insert(SpaceKey::from_secret(9, [0xff; 32]));
        assert_eq!(ring.sealing_key().unwrap().generation(), 9);
        assert_eq!(ring.next_generation(), 10);
    }

    /// A space founded by device 1 (seat a) with device 2 (seat b).
    fn space() -> Automerge {
        let mut doc = Automerge::new().with_actor(secret(1).device_id().actor());
        let founder = Founder {
            space_id: "5eed".into(),
            name: "Sam".into(),
            device: secret(1).device_id(),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, 0).unwrap();
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(secret(2).device_id(), Seat::B, "phone")
            .unwrap();
        doc
    }

    #[test]
    fn a_keyring_opens_only_the_envelopes_addressed_to_it() {
        let mut rng = rng();
        let mut doc = space();
        let (me, other) = (secret(1), secret(2));
        let (me_id, other_id) = (me.device_id(), other.device_id());
        let both = SpaceKey::generate(1, &mut rng);
        let theirs = SpaceKey::generate(2, &mut rng);
        let mut e = Editor::new(&mut doc, Seat::A, 2);
        e.add_space_key(
            &both.id().to_string(),
            1,
            &[
                (me_id, both.envelope_for(&me_id, &mut rng)),
                (other_id, both.envelope_for(&other_id, &mut rng)),
            ],
        )
        .unwrap();
        e.add_space_key(
            &theirs.id().to_string(),
            2,
            &[(other_id, theirs.envelope_for(&other_id, &mut rng))],
        )
        .unwrap();
        // An entry whose envelope for me carries another key than it names,
        // and one whose envelope for me is sealed to another device.
        let liar = SpaceKey::generate(3, &mut rng);
        let named = SpaceKey::generate(3, &mut rng);
        e.add_space_key(
            &named.id().to_string(),
            3,
            &[(me_id, liar.envelope_for(&me_id, &mut rng))],
        )
        .unwrap();
        let misfiled = SpaceKey::generate(4, &mut rng);
        e.add_space_key(
            &misfiled.id().to_string(),
            4,
            &[(me_id, misfiled.envelope_for(&other_id, &mut rng))],
        )
        .unwrap();
        // An envelope whose generation differs from the entry's.
        let wrong_gen = SpaceKey::generate(5, &mut rng);
        e.add_space_key(
            &wrong_gen.id().to_string(),
            6,
            &[(me_id, wrong_gen.envelope_for(&me_id, &mut rng))],
        )
        .unwrap();

        let mine = Keyring::from_document(&doc, &me);
        assert_eq!(mine.iter().map(SpaceKey::id).collect::<Vec<_>>(), vec![both.id()]);
        assert_eq!(mine.sealing_key().unwrap().secret(), both.secret());
        let ring = Keyring::from_document(&doc, &other);
        let mut want = vec![both.id(), theirs.id()];
        want.sort();
        assert_eq!(ring.iter().map(SpaceKey::id).collect::<Vec<_>>(), want);
        assert_eq!(ring.sealing_key().unwrap().id(), theirs.id());
        assert!(Keyring::from_document(&doc, &secret(3)).is_empty(), "a stranger");
    }

    #[test]
    fn missing_envelopes_are_written_for_active_devices_only() {
        let mut rng = rng();
        let mut doc = space();
        let (me, other) = (secret(1), secret(2));
        let (me_id, other_id) = (me.device_id(), other.device_id());
        let first = SpaceKey::generate(1, &mut rng);
        // Device 2 was added after the key was made: only device 1 has an envelope.
        Editor::new(&mut doc, Seat::A, 2)
            .add_space_key(
                &first.id().to_string(),
                1,
                &[(me_id, first.envelope_for(&me_id, &mut rng))],
            )
            .unwrap();
        let mut ring = Keyring::from_document(&doc, &me);
        // A key this device holds that the document does not record.
        let unrecorded = SpaceKey::generate(2, &mut rng);
        ring.insert(unrecorded.clone());
        assert!(Keyring::from_document(&doc, &other).is_empty());

        let active = [me_id, other_id];
        let missing = missing_envelopes(&doc, &ring, &active, &mut rng);
        assert_eq!(missing.len(), 1, "the unrecorded key is left out: {missing:?}");
        assert_eq!(missing[0].0, first.id());
        assert_eq!(missing[0].1.len(), 1);
        assert_eq!(missing[0].1[0].0, other_id);
        // A device that is not in `active` gets nothing.
        assert!(missing_envelopes(&doc, &ring, &[me_id], &mut rng)[0].1.is_empty());

        for (id, envelopes) in missing {
            Editor::new(&mut doc, Seat::A, 3)
                .add_envelopes(&id.to_string(), &envelopes)
                .unwrap();
        }
        let theirs = Keyring::from_document(&doc, &other);
        assert_eq!(theirs.sealing_key().unwrap().secret(), first.secret());
        let again = missing_envelopes(&doc, &ring, &active, &mut rng);
        assert!(again.iter().all(|(_, e)| e.is_empty()), "nothing left: {again:?}");
    }
}
