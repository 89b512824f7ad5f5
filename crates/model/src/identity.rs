//! Device identity: an ed25519 key pair per device.
//!
//! The public key is the device's id everywhere: it is the automerge actor id of
//! every change the device makes, so attribution needs no lookup table, and (in the
//! sync layer) the key that signs those changes and authenticates connections.
//! Keys are validated on construction; the secret is zeroized on drop and never
//! shown by `Debug`.

use std::fmt;
use std::str::FromStr;

use automerge::{ActorId, ChangeHash};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Serialize, Serializer};

use crate::error::InvalidInput;

/// A device's public key: its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(VerifyingKey);

impl DeviceId {
    /// Validates 32 bytes as an ed25519 public key: a point on the curve that
    /// is not of small order. A weak (small-order) key is refused because
    /// anyone can act as it: signatures by it can be forged, and X25519 with
    /// its Montgomery form gives the same all-zero shared secret whatever the
    /// other side's scalar, so an envelope sealed to it opens for everyone.
    /// Every key duet reads from the network, a document or the disk is
    /// parsed here (or refused by the same check, as TLS does).
    pub fn from_bytes(bytes: &[u8]) -> Option<DeviceId> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        let key = VerifyingKey::from_bytes(&arr).ok()?;
        if key.is_weak() {
            return None;
        }
        Some(DeviceId(key))
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The automerge actor id this device writes as.
    pub fn actor(&self) -> ActorId {
        ActorId::from(self.as_bytes().as_slice())
    }

    /// True if `actor` is this device's actor: a byte comparison, with none of the
    /// curve-point decoding of [`DeviceId::from_actor`].
    pub fn is_actor(&self, actor: &ActorId) -> bool {
        actor.to_bytes() == self.as_bytes().as_slice()
    }

    /// The device that wrote as `actor`, if the actor id is a device key.
    pub fn from_actor(actor: &ActorId) -> Option<DeviceId> {
        DeviceId::from_bytes(actor.to_bytes())
    }

    /// The verifying key, for signature checks.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// A short fingerprint a person can compare by eye: three groups of four hex
    /// digits from the start of the key.
    pub fn fingerprint(&self) -> String {
        let h = hex::encode(&self.as_bytes()[..6]);
        format!("{}-{}-{}", &h[0..4], &h[4..8], &h[8..12])
    }

    /// The first hex digits of the key, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.as_bytes()[..4])
    }

    /// The device's X25519 public key, to which sealed boxes (space key
    /// envelopes) addressed to it are sealed: the Montgomery form of its
    /// ed25519 key, as libsodium's `crypto_sign_ed25519_pk_to_curve25519`.
    /// Its secret half is [`DeviceSecret::x25519_secret`].
    pub fn x25519_public(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s.trim())
            .ok()
            .and_then(|b| DeviceId::from_bytes(&b))
            .ok_or_else(|| InvalidInput::Id(s.to_string()))
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A device's secret key. Zeroized on drop; `Debug` shows only the public half.
pub struct DeviceSecret(SigningKey);

impl DeviceSecret {
    /// Makes the secret from 32 bytes of fresh randomness (or a stored secret).
    pub fn from_bytes(bytes: &[u8; 32]) -> DeviceSecret {
        DeviceSecret(SigningKey::from_bytes(bytes))
    }

    /// Validates a stored secret's length.
    pub fn from_slice(bytes: &[u8]) -> Option<DeviceSecret> {
        let arr: &[u8; 32] = bytes.try_into().ok()?;
        Some(DeviceSecret::from_bytes(arr))
    }

    /// The secret's 32 bytes, for storing. Handle with care.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// The public half: the device id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.0.verifying_key())
    }

    /// The signing key, for the sync layer.
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The X25519 secret that opens sealed boxes (space key envelopes)
    /// addressed to [`DeviceId::x25519_public`]: the scalar of the ed25519
    /// key, as libsodium's `crypto_sign_ed25519_sk_to_curve25519` (X25519
    /// clamps it). The same key is used for signing and for these boxes.
    pub fn x25519_secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_scalar_bytes())
    }
}

/// What a device signs to vouch for its changes: a domain label, then the hash
/// of its latest change. Automerge change hashes chain (each change names its
/// dependencies by hash, and each device's changes form one chain), so one
/// signature over a device's latest change vouches for all of its changes before
/// it: verifying a sync costs one signature per device, not one per change.
const ATTESTATION_LABEL: &[u8] = b"duet/change-attestation/v1:";

/// A device's signature over the hash of one of its changes ("my history up to
/// here is mine").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// The device that signed, whose actor made the change.
    pub device: DeviceId,
    /// The change's hash.
    pub hash: ChangeHash,
    /// The ed25519 signature.
    pub signature: [u8; 64],
}

impl Attestation {
    fn message(hash: &ChangeHash) -> Vec<u8> {
        let mut m = Vec::with_capacity(ATTESTATION_LABEL.len() + 32);
        m.extend_from_slice(ATTESTATION_LABEL);
        m.extend_from_slice(&hash.0);
        m
    }

    /// Checks the signature (strictly: no malleable or weak-key signatures).
    pub fn verify(&self) -> bool {
        let sig = Signature::from_bytes(&self.signature);
        self.device
            .0
            .verify_strict(&Attestation::message(&self.hash), &sig)
            .is_ok()
    }
}

impl fmt::Debug for Attestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attestation({} at {})", self.device.short(), self.hash)
    }
}

impl DeviceSecret {
    /// Signs this device's change `hash`.
    pub fn attest(&self, hash: &ChangeHash) -> Attestation {
        Attestation {
            device: self.device_id(),
            hash: *hash,
            signature: self.0.sign(&Attestation::message(hash)).to_bytes(),
        }
    }
}

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceSecret(for {}, redacted)", self.device_id().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_verify_only_unaltered() {
        let secret = DeviceSecret::from_bytes(&[9u8; 32]);
        let a = secret.attest(&ChangeHash([1; 32]));
        assert!(a.verify());
        let mut other_hash = a;
        other_hash.hash = ChangeHash([2; 32]);
        assert!(!other_hash.verify());
        let mut other_key = a;
        other_key.device = DeviceSecret::from_bytes(&[8u8; 32]).device_id();
        assert!(!other_key.verify());
        let mut bad_sig = a;
        bad_sig.signature[0] ^= 1;
        assert!(!bad_sig.verify());
    }

    /// Encodings of the eight points of small order on the ed25519 curve (the
    /// 8-torsion subgroup), and non-canonical encodings of some of them.
    const WEAK_KEYS: [&str; 11] = [
        // The identity (order 1).
        "0100000000000000000000000000000000000000000000000000000000000000",
        // y = -1 (order 2).
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        // y = 0, both signs of x (order 4).
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        // The four points of order 8.
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        // Non-canonical: the identity with the sign bit, y = p + 1 (the
        // identity again) and y = p - 1 + p (order 2 again, y >= p).
        "0100000000000000000000000000000000000000000000000000000000000080",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    #[test]
    fn small_order_keys_are_never_device_ids() {
        for weak in WEAK_KEYS {
            let bytes = hex::decode(weak).unwrap();
            assert_eq!(DeviceId::from_bytes(&bytes), None, "{weak} was accepted");
            assert!(weak.parse::<DeviceId>().is_err(), "{weak} parsed");
            assert_eq!(DeviceId::from_actor(&ActorId::from(bytes.as_slice())), None);
        }
        // Those that decode at all are refused for their order, not their form.
        let points = WEAK_KEYS
            .iter()
            .filter_map(|w| <[u8; 32]>::try_from(hex::decode(w).unwrap()).ok())
            .filter(|b| VerifyingKey::from_bytes(b).is_ok_and(|k| k.is_weak()))
            .count();
        assert!(points >= 8, "only {points} decode as weak points");
    }

    #[test]
    fn keys_round_trip_and_debug_is_redacted() {
        let secret = DeviceSecret::from_bytes(&[7u8; 32]);
        let id = secret.device_id();
        let parsed: DeviceId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(DeviceId::from_actor(&id.actor()), Some(id));
        let dbg = format!("{secret:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&hex::encode([7u8; 32])));
        assert_eq!(id.fingerprint().len(), 14);
        assert!(DeviceId::from_bytes(&[1, 2, 3]).is_none());
        assert!("not-hex".parse::<DeviceId>().is_err());
    }
}
